#!/bin/sh
# Profile of an arm64 guest's early boot, before its clock starts
# (docs/notes/2026-12-06-arm64-early-boot.md). Per guest RAM size in
# early.mems (MiB, comma-separated, default 256): one boot of our VMM, 1 vCPU, with
# `earlycon` on the guest's UART (the 16550A of our device tree, found
# through /chosen/stdout-path) and `ignore_loglevel`, so every printk line
# reaches the console when it is logged, also the ones before the guest
# clock runs (`[0.000000]`). Every line the VMM writes (guest console on
# stdout, its own log on stderr) is printed as
#   @@EARLY <mem> <host uptime s> <line>
# and, with early.trace=1 (default), the test host's KVM trace events of
# the boot (kvm_exit, kvm_guest_fault, kvm_mmio; trace clock `mono`, the
# clock of /proc/uptime) are summed per second as
#   @@EARLYTRACE <mem> <second> exits=<n> faults=<n> mmio=<n>
# per exit class as @@EARLYEXIT <mem> <class> <n>, and the trapped system
# register accesses (kvm_sys_access) seen at least early.min (100) times as
# @@EARLYSYSREG <mem> <register and access> <n>, the guest PCs of those
# traps (kvm_exit SYS64) as @@EARLYSYSPC <mem> <pc> <n>, the last 40 exits
# and trapped accesses as @@EARLYLAST <mem> <trace line>. early.params:
# more guest command line words, comma-separated (default nokaslr: the PCs
# are then fixed offsets from `_text`, named as @@EARLYSYM <mem> <pc>
# <symbol+offset> <n> from the test host's /proc/kallsyms, the same kernel).
. /lib/vmstack.sh
mems=$(cmdline_arg early.mems 256 | tr "," " ")
trace=$(cmdline_arg early.trace 1)
# Trapped registers and PCs are listed from this many traps on.
min=$(cmdline_arg early.min 100)
extra=$(cmdline_arg early.params nokaslr | tr "," " ")
# The guest kernel's `_text` without KASLR (arm64 KIMAGE_VADDR, 48-bit
# minimum VA): the base of the PCs printed below.
gtext=ffff800080000000
T=/sys/kernel/tracing
if [ "$trace" = 1 ]; then
    [ -e $T/trace ] || mount -t tracefs nodev $T 2>/dev/null
    [ -e $T/trace ] || { mount -t debugfs nodev /sys/kernel/debug && T=/sys/kernel/debug/tracing; }
    [ -e $T/events/kvm/kvm_exit/enable ] || { echo "no kvm trace events"; trace=0; }
fi
stamp() {
    awk -v mem="$1" '{
        getline u < "/proc/uptime"; close("/proc/uptime"); split(u, a, " ")
        print "@@EARLY " mem " " a[1] " " $0; fflush()
    }'
}
for mem in $mems; do
    if [ "$trace" = 1 ]; then
        echo 0 > $T/tracing_on
        echo > $T/trace
        echo mono > $T/trace_clock
        echo 32768 > $T/buffer_size_kb
        for e in kvm_exit kvm_guest_fault kvm_mmio kvm_sys_access; do
            [ -e $T/events/kvm/$e/enable ] && echo 1 > $T/events/kvm/$e/enable
        done
        echo 1 > $T/tracing_on
    fi
    echo "@@EARLY $mem $(cut -d' ' -f1 /proc/uptime) spawn"
    /bin/vmm run --cpus 1 --mem "$mem" --serial type=stdout --initrd /guest/initramfs.cpio.gz \
        --params "earlycon ignore_loglevel $extra guest.scenario=poweroff" /guest/vmlinuz 2>&1 | stamp "$mem"
    echo "@@EARLY $mem $(cut -d' ' -f1 /proc/uptime) exit"
    if [ "$trace" = 1 ]; then
        echo 0 > $T/tracing_on
        awk -v mem="$mem" -v min="$min" '
            /kvm_sys_access:/ {
                r = $0; sub(/.*kvm_sys_access: PC: [0-9a-fx]+ /, "", r); reg[r]++
            }
            /kvm_exit:|kvm_guest_fault:|kvm_mmio:/ {
                for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+\.[0-9]+:$/) { t = int($i); break }
                if (/kvm_exit:/) {
                    ex[t]++
                    c = $0; sub(/.*kvm_exit: /, "", c); k = c; sub(/:.*/, "", k)
                    sub(/.*HSR_EC: 0x[0-9a-f]+ \(/, "", c); sub(/\).*/, "", c); cls[k "/" c]++
                    if (c == "SYS64") { p = $0; sub(/.*PC: /, "", p); pc[p]++ }
                } else if (/kvm_guest_fault:/) fa[t]++
                else if (/kvm_mmio:/) mm[t]++
                if (t < lo || lo == "") lo = t
                if (t > hi) hi = t
            }
            END {
                for (s = lo; s <= hi; s++)
                    printf "@@EARLYTRACE %s %d exits=%d faults=%d mmio=%d\n", mem, s, ex[s], fa[s], mm[s]
                for (c in cls) printf "@@EARLYEXIT %s %s %d\n", mem, c, cls[c]
                for (p in pc) if (pc[p] >= min) printf "@@EARLYSYSPC %s %s %d\n", mem, p, pc[p]
                for (r in reg) if (reg[r] >= min) printf "@@EARLYSYSREG %s %s %d\n", mem, r, reg[r]
            }' $T/trace | tee /tmp/early-$mem.out
        # The guest PCs as symbol+offset: the test host runs the same kernel,
        # so an offset from the guest's `_text` names the same code in the
        # test host's /proc/kallsyms (offsets from its `_text`; 36 low bits,
        # exact in awk's doubles).
        sed -n "s/^@@EARLYSYSPC $mem //p" /tmp/early-$mem.out > /tmp/early-pcs-$mem
        [ -s /tmp/early-pcs-$mem ] && awk -v mem="$mem" -v gtext="$gtext" '
            function rel(a,   i, n, c) {
                a = substr(a, length(a) - 8); n = 0
                for (i = 1; i <= 9; i++) { c = index("0123456789abcdef", substr(a, i, 1)) - 1; n = n * 16 + c }
                return n
            }
            FILENAME == ARGV[1] { want[$1] = $2; next }
            $2 !~ /^[tT]$/ { next }
            $3 == "_text" { base = rel($1) }
            { addr[++n] = $1; name[n] = $3 }
            END {
                g = rel(gtext); span = 68719476736
                for (i = 1; i <= n; i++) off[i] = (rel(addr[i]) - base + span) % span
                for (p in want) {
                    o = (rel(p) - g + span) % span; best = ""; bo = -1
                    for (i = 1; i <= n; i++) if (off[i] <= o && off[i] > bo && off[i] < 268435456) { bo = off[i]; best = name[i] }
                    printf "@@EARLYSYM %s %s %s+0x%x %d\n", mem, p, best, o - bo, want[p]
                }
            }' /tmp/early-pcs-$mem /proc/kallsyms
        # The last exits of the boot (what ended it, e.g. a guest panic).
        grep -E "kvm_exit:|kvm_sys_access:" $T/trace | tail -n 40 | sed "s/^/@@EARLYLAST $mem /"
        cat $T/per_cpu/cpu*/stats 2>/dev/null | grep -E "overrun|entries" | sed "s/^/@@EARLYSTATS $mem /"
    fi
done
