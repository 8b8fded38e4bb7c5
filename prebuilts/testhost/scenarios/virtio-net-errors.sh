#!/bin/sh
# virtio-net start-up errors: one `error:` line and exit status 1.
run() {
    /bin/vmm run "$@" --cpus 1 --mem 256 --initrd /guest/initramfs.cpio.gz \
        --params "console=ttyS0 guest.scenario=poweroff" /guest/vmlinuz 2>&1
}
# An interface that is not a tap.
run --net tap=lo
echo "rc_not_a_tap=$?"
# A tap another VMM has open.
run --net tap=vmtap2 > /tmp/net-first.out &
first=$!
n=0
while [ ! -e /sys/class/net/vmtap2 ] && [ "$n" -lt 300 ]; do
    sleep 0.1
    n=$((n + 1))
done
run --net tap=vmtap2
echo "rc_busy=$?"
kill "$first"
wait "$first"
exit 0
