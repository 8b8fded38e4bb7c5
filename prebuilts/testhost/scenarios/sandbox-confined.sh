#!/bin/sh
# The sandboxed VMM after start-up (started as root, as here): its
# credentials and capabilities, every thread under seccomp, its control
# socket private, and a second local uid refused at the socket file and,
# with the file opened up on purpose, by the SO_PEERCRED check.
. /lib/vmstack.sh
S=/tmp/confined.sock
run_vmm vmm --cpus 2 --mem 256 --socket $S --power-arbiter --rng \
    --initrd /guest/initramfs.cpio.gz \
    --params "console=ttyS0 guest.scenario=poweroff" /guest/vmlinuz &
pid=$!
wait_pending $S $pid || { echo "no power request held"; kill $pid; exit 1; }
vmm_pid=$(pidof vmm)
mark vmm_pids "$vmm_pid"
for f in Uid Gid Groups CapInh CapPrm CapEff CapBnd CapAmb NoNewPrivs Seccomp; do
    mark "status.$f" "$(awk -v k="$f:" '$1 == k { $1 = ""; sub(/^ /, ""); print }' /proc/$vmm_pid/status)"
done
mark threads "$(ls /proc/$vmm_pid/task | wc -l)"
mark threads_seccomp "$(cat /proc/$vmm_pid/task/*/status | grep -c '^Seccomp:[[:space:]]*2')"
mark thread_names "$(cat /proc/$vmm_pid/task/*/comm | sort | tr '\n' ' ')"
mark socket "$(stat -c '%a %u' $S)"
# A second local user.
grep -q '^intruder:' /etc/passwd 2>/dev/null || echo 'intruder:x:1000:1000::/tmp:/bin/sh' >> /etc/passwd
grep -q '^intruder:' /etc/group 2>/dev/null || echo 'intruder:x:1000:' >> /etc/group
mark intruder "$(su -s /bin/sh intruder -c "vmm status $S" 2>&1)"
# The socket file opened up on purpose: the peer check still refuses.
chmod 666 $S
mark intruder_open_socket "$(su -s /bin/sh intruder -c "vmm status $S" 2>&1)"
chmod 600 $S
# The socket's owner (the sandbox user the VMM runs as) may.
mark owner_status "$(as_vmm_user "vmm status $S" 2>&1)"
# Root may; decide only through an attached arbiter (`vmm decide` attaches).
mark status "$(vmm status $S 2>&1)"
mark decide "$(vmm decide $S 1 allow 2>&1)"
wait $pid
