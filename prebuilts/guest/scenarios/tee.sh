#!/bin/sh
# The virtio TEE device (--tee) through the guest kernel's TEE subsystem and
# the virtio_tee module: the uapi client (tee-test) and, on arm64, Debian's
# libteec (tee-client) talk to trustyd's echo TA. Each client's result
# lines become `tee` / `teec` markers.
. /lib/vmstack.sh
mark tee_class_devices "$(ls /sys/class/tee 2>/dev/null | wc -l)"
dmesg | grep -i 'virtio_tee\|tee0' | sed 's/^/dmesg: /'
{
    tee-test version
    tee-test echo 1 4096 4097 65536 1048576
    tee-test sessions 2
    tee-test cancel
} 2>&1 | mark_lines tee
if [ -x /bin/tee-client ]; then
    {
        tee-client echo 1 4096 65536 1048576
        tee-client cancel
    } 2>&1 | mark_lines teec
fi
mark kernel_warnings "$(dmesg | grep -cE 'WARNING:|BUG:|Oops')"
mark tee_done 1
