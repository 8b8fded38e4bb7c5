#!/bin/sh
# A system call outside a thread's allowlist kills the VMM with a line naming
# it. The test-only probe (VMSTACK_SANDBOX_PROBE=<class>, in the test image's
# VMM only; docs/security.md) makes a forbidden execve from the first thread
# of that class, right after its filter is installed. One VMM run per class,
# tagged probe-<class>.
. /lib/vmstack.sh
VMM_TIMEOUT=180
GUEST="--initrd /guest/initramfs.cpio.gz --params console=ttyS0 --params guest.scenario=poweroff /guest/vmlinuz"
probe() {
    class=$1
    shift
    export VMSTACK_SANDBOX_PROBE=$class
    # shellcheck disable=SC2086
    run_vmm "probe-$class" --cpus 1 --mem 128 "$@" $GUEST
    unset VMSTACK_SANDBOX_PROBE
}
probe main
probe launcher
probe vcpu
probe control --socket /tmp/probe-control.sock
# virtio-rng's worker starts when the guest's driver activates the device.
probe device-rng --rng
# A control connection: the probe fires when `vmm status` connects.
S=/tmp/probe-conn.sock
export VMSTACK_SANDBOX_PROBE=control-conn
# shellcheck disable=SC2086
run_vmm probe-control-conn --cpus 1 --mem 128 --socket $S --power-arbiter $GUEST &
pid=$!
unset VMSTACK_SANDBOX_PROBE
i=0
while [ ! -S $S ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
mark conn_status "$(vmm status $S 2>&1)"
wait $pid
exit 0
