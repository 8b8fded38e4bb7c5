#!/bin/sh
# virtio-console on the VMM's stdin/stdout (guest: console-in, /dev/console
# stays ttyS0). Once the guest's "hvc0-ready" is on stdout, one line is piped
# into the VMM: it must reach hvc0, not the serial port (which gets no stdin
# while the console has it). The VMM's output is printed when it exits.
. /lib/vmstack.sh
out=/tmp/console-stdio.out
rm -f "$out"
(
    i=0
    while ! grep -q hvc0-ready "$out" 2>/dev/null && [ "$i" -lt 900 ]; do
        usleep 100000
        i=$((i + 1))
    done
    echo VMSTACK-STDIN-TO-GUEST-0815
) | VMM_TIMEOUT=100 run_vmm vmm --cpus 1 --mem 256 \
    --initrd /guest/initramfs.cpio.gz --console type=stdout \
    --params "guest.scenario=console-in" /guest/vmlinuz > "$out"
rc=$?
cat "$out"
exit $rc
