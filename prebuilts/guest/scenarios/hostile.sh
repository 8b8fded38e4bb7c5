#!/bin/sh
# A hostile guest (testhost scenario hostile-guest): every boot floods the
# console, unassigned MMIO and I/O ports and the host's vsock ports, asks
# to suspend several times (refused), then to
# reboot (or power off: the arbiter restarts it either way while the
# cluster is needed) and does it all again. It marks what it managed to
# do; the host checks those counts and its own caps.
. /lib/vmstack.sh
mark hostile up
# Console: hostile.console_lines lines of 100 bytes (the VMM's stdout, the
# log sysmgr keeps and rotates).
LINES=$(cmdline_arg hostile.console_lines 1000)
awk -v n="$LINES" 'BEGIN {
    for (i = 0; i < n; i++) printf "flood %06d %s\n", i, "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
}'
mark hostile console_done
# The markers below go through the kernel log (synchronous on the serial
# console): tty output still queued at a suspend or a reboot is lost. The
# host reads them from the VMM logs sysmgr keeps and checks each count.
kmark() { mark "$@" > /dev/kmsg; }
# Unassigned MMIO (the 32-bit gap below the virtio-mmio devices): every
# write is an exit the VMM answers with a rate-limited warning. Counted:
# the writes devmem carried out.
MMIO=$(cmdline_arg hostile.mmio 150)
i=0
ok=0
while [ $i -lt "$MMIO" ]; do
    devmem 0xc0001000 32 0x$i 2>/dev/null && ok=$((ok + 1))
    devmem 0xc0002000 32 >/dev/null 2>&1
    i=$((i + 1))
done
kmark hostile_mmio_writes "$ok"
# Unassigned I/O ports (x86; 0x2f0..0x3ef, below the serial port at
# 0x3f8): each byte written to /dev/port is one port write, an exit the
# VMM answers (rate-limited, at debug level). Counted: the bytes written.
PIO=$(cmdline_arg hostile.pio 40)
bytes=0
if [ -c /dev/port ]; then
    for i in $(seq "$PIO"); do
        dd if=/dev/zero of=/dev/port bs=1 count=256 seek=$((0x2f0)) conv=notrunc 2>/dev/null &&
            bytes=$((bytes + 256))
    done
fi
kmark hostile_pio_bytes "$bytes"
# vsock: connections the host holds open (port 5100), then a loop of
# refused ones (nothing listens on 5101). Counted: the held connections
# still open after 2 s (a failed one ends at once) and the connects that
# vsock-test reports refused.
HELD=$(cmdline_arg hostile.held 48)
pids=""
for i in $(seq "$HELD"); do
    vsock-test connect-vsock 2 5100 recv --tag held >/dev/null 2>&1 &
    pids="$pids $!"
done
sleep 2
held=0
for p in $pids; do kill -0 "$p" 2>/dev/null && held=$((held + 1)); done
kmark hostile_vsock_held "$held"
REFUSED=$(cmdline_arg hostile.refused 60)
refused=0
for i in $(seq "$REFUSED"); do
    case "$(vsock-test connect-vsock 2 5101 recv --tag refused 2>&1)" in
        *refused_error=*) refused=$((refused + 1)) ;;
    esac
done
kmark hostile_vsock_refused "$refused"
kmark hostile_vsock_connects "$((held + refused))"
# Power, several requests per boot: suspends (S3), which the arbiter
# refuses while the vehicle is in use (the cluster must stay up: the VMM
# wakes the guest at once), then the final request.
SUSPENDS=$(cmdline_arg hostile.suspends 6)
# The write returns once the guest woke: a refused request wakes it at
# once; a request left pending would leave it asleep and this loop stuck.
asked=0
woken=0
for i in $(seq "$SUSPENDS"); do
    asked=$((asked + 1))
    echo mem > /sys/power/state 2>/dev/null && woken=$((woken + 1))
done
kmark hostile_suspend_requests "$asked"
kmark hostile_suspend_unanswered "$((asked - woken))"
# Then reboot or power off, by the boot's random id.
case "$(cut -c1 /proc/sys/kernel/random/boot_id)" in
    [0-7]) kmark hostile_power reboot; reboot -f ;;
    *) kmark hostile_power poweroff; poweroff -f ;;
esac
while true; do sleep 60; done
