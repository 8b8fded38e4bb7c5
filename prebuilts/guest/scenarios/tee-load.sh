#!/bin/sh
# The out-of-tree virtio_tee module (android/kernel/virtio_tee) without a
# virtio-tee device: /init loaded it after Debian's tee.ko; its virtio driver
# is registered and there is no TEE device. It unloads and loads again
# cleanly, and the TEE clients run (and find no device).
. /lib/vmstack.sh
mods() { grep -Eo '^(tee|virtio_tee) ' /proc/modules | sort | tr -d ' ' | tr '\n' ' ' | sed 's/ $//'; }
mark tee_modules "$(mods)"
mark virtio_tee_driver "$(ls -d /sys/bus/virtio/drivers/virtio_tee 2>/dev/null | wc -l)"
mark tee_class_devices "$(ls /sys/class/tee 2>/dev/null | wc -l)"
mark taint "$(cat /proc/sys/kernel/tainted)"
rmmod virtio_tee && mark rmmod ok
mark after_rmmod "$(mods)"
insmod "/lib/modules/$(uname -r)/extra/virtio_tee.ko" && mark insmod ok
mark after_insmod "$(mods)"
mark virtio_tee_driver_again "$(ls -d /sys/bus/virtio/drivers/virtio_tee 2>/dev/null | wc -l)"
# Kernel messages about the TEE modules (oops, warnings, refusals).
dmesg | grep -iE 'virtio_tee|tee:|taint' | sed 's/^/dmesg: /'
mark kernel_warnings "$(dmesg | grep -cE 'WARNING:|BUG:|Oops')"
/bin/tee-test version 2>&1 | mark_lines tee
if [ -x /bin/tee-client ]; then
    /bin/tee-client init 2>&1 | mark_lines teec
fi
mark tee_load_done 1
