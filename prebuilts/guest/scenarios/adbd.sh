#!/bin/sh
# The guest of the adb scenarios (guest.scenario=adbd; docs/adb.md): our
# adbd on vsock port 5555 until the test host stops the VM (or reboots it:
# the next boot runs this again). Its log lines become `adbd` markers
# (vmm.guest.adbd on the test host). Port 5556 is a fake "device" that
# answers with bytes that are no adb packet: the client-side rejection of
# a malformed packet from the device. With `adb.raw_rounds=N` on the
# command line (`cargo xtask bench adb`), port 6000 also takes N raw vsock
# streams (`vsock-test recv --raw`), the baseline of the benchmark, and
# port 6001 N raw streams whose receiver writes them to /data/bench-raw
# (the benchmark's informational figure: the raw stream with a push's file
# writes).
. /lib/vmstack.sh
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        adb.raw_rounds=*)
            vsock-test listen-vsock 6000 recv --raw --count "${arg#adb.raw_rounds=}" \
                --tag raw_recv > /tmp/raw-recv 2>&1 &
            mkdir -p /data
            vsock-test listen-vsock 6001 recv --raw --out /data/bench-raw \
                --count "${arg#adb.raw_rounds=}" --tag rawfile_recv > /tmp/rawfile-recv 2>&1 &
            ;;
    esac
done
mkdir -p /dev/pts /data
mount -t devpts devpts /dev/pts 2>/dev/null || mark adbd_devpts failed
mark adbd_boot_id "$(cat /proc/sys/kernel/random/boot_id)"
vsock-test listen-vsock 5556 send 1 --count 1 --tag fake_device > /tmp/fake-device 2>&1 &
adbd 2>&1 | mark_lines adbd
mark adbd_exited 1
