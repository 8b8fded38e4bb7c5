#!/bin/sh
# Boot benchmark in the arm64 pKVM test host (`cargo xtask bench boot --arch
# aarch64`, see docs/arm64.md): N boots of our VMM, 1 vCPU / 256 MiB, quiet
# guest that, after /init, prints its kernel log (guest scenario
# boot-profile: `dmesg`, then poweroff). Per boot, the guest's timestamped
# console lines as `@@BOOTLOG I <line>` (the boot profile, parsed by
# xtask/src/bench_arm64.rs), then one line:
#   @@BENCH-ARM64 run=I entry_us=.. init_us=.. exit_ms=.. rss_kib=.. guest_kib=.. rc=..
# entry_us, init_us: the VMM's own log lines, from its main() to the first
#   KVM_RUN and to the guest's boot-timer write;
# exit_ms: spawn to process exit, from /proc/uptime (10 ms resolution); it
#   includes the guest's log dump (the profile's "outside the guest clock"
#   row takes the guest's last timestamp off);
# rss_kib, guest_kib: /proc/PID/smaps right after the boot-timer line showed
#   up, with the VMM stopped (SIGSTOP): all Rss, and the Rss of the guest RAM
#   (the mapping of the guest memory size, or the adjacent mappings that add
#   up to it when VMSTACK_BOOT_FILES=map maps the boot files). Overhead = the
#   difference.
. /lib/vmstack.sh
runs=$(cmdline_arg bench.runs 5)
mem=256
up_ms() { awk '{ printf "%d", $1 * 1000 }' /proc/uptime; }
i=1
while [ "$i" -le "$runs" ]; do
    log=/tmp/bench-vmm-$i.log
    t0=$(up_ms)
    /bin/vmm run --cpus 1 --mem $mem --serial type=stdout --initrd /guest/initramfs.cpio.gz \
        --params "quiet guest.scenario=boot-profile" /guest/vmlinuz > "$log" 2>&1 &
    pid=$!
    rss=none
    guest=none
    n=0
    while ! grep -q "guest init reached after" "$log"; do
        kill -0 "$pid" 2>/dev/null || break
        n=$((n + 1))
        [ "$n" -gt 6000 ] && break
        usleep 20000
    done
    if grep -q "guest init reached after" "$log" && kill -STOP "$pid" 2>/dev/null; then
        set -- $(awk -v g=$((mem * 1024)) '
            /^[0-9a-f]+-[0-9a-f]+ / {
                n++; split($1, r, "-"); lo[n] = r[1]; hi[n] = r[2]
                # Guest RAM: anonymous, or a boot file mapped into it.
                ok[n] = (NF < 6 || $6 ~ /^\/guest\// || $6 ~ /^\[anon/)
            }
            /^Size:/ { size[n] = $2 }
            /^Rss:/ { rss[n] = $2; total += $2 }
            END {
                # Guest RAM is one mapping of the guest size, or several
                # adjacent ones (the kernel and initrd mapped into it).
                guest = 0
                for (i = 1; i <= n && !guest; i++) {
                    s = 0; t = 0
                    for (j = i; j <= n && ok[j] && (j == i || lo[j] == hi[j - 1]); j++) {
                        s += size[j]; t += rss[j]
                        if (s == g) { guest = t; break }
                        if (s > g) break
                    }
                }
                printf "%d %d\n", total, guest
            }' "/proc/$pid/smaps")
        rss=$1
        guest=$2
        kill -CONT "$pid"
    fi
    wait "$pid"
    rc=$?
    t1=$(up_ms)
    entry=$(sed -n 's/.*entering guest after \([0-9]*\) us.*/\1/p' "$log")
    init=$(sed -n 's/.*guest init reached after \([0-9]*\) us.*/\1/p' "$log")
    grep -F '[' "$log" | sed "s/^/@@BOOTLOG $i /"
    echo "@@BENCH-ARM64 run=$i entry_us=${entry:-none} init_us=${init:-none} exit_ms=$((t1 - t0)) rss_kib=$rss guest_kib=$guest rc=$rc"
    [ "$rc" -eq 0 ] || tail -n 20 "$log"
    i=$((i + 1))
done
