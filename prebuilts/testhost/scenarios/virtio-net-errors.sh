#!/bin/sh
# virtio-net start-up errors: one `error:` line (marker <tag>.log) and exit
# status 1 (<tag>.rc).
. /lib/vmstack.sh
run() {
    tag=$1
    shift
    run_vmm "$tag" "$@" --cpus 1 --mem 256 --initrd /guest/initramfs.cpio.gz \
        --params "console=ttyS0 guest.scenario=poweroff" /guest/vmlinuz
}
# An interface that is not a tap.
run not_a_tap --net tap=lo
# A tap another VMM has open.
run first --net tap=vmtap2 > /tmp/net-first.out &
first=$!
wait_path -e /sys/class/net/vmtap2 300
run busy --net tap=vmtap2
kill "$first"
wait "$first"
exit 0
