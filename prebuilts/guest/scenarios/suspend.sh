#!/bin/sh
# Suspend to RAM (ACPI S3) through the kernel's normal path; the VMM holds
# the sleep-register write until it is told to wake the guest.
# The markers before the suspend go through the kernel log, which reaches
# the serial port synchronously: tty output still queued when the kernel
# freezes tasks and suspends consoles would be lost.
. /lib/vmstack.sh
mark mem_sleep "$(cat /sys/power/mem_sleep)" > /dev/kmsg
mark suspending 1 > /dev/kmsg
echo mem > /sys/power/state
# After the wake-up too: /init powers off right after this script, and tty
# output the UART has not drained by then is lost (seen on arm64, where the
# emulated UART interrupt path is slow).
mark suspend_rc "$?" > /dev/kmsg
mark resumed 1 > /dev/kmsg
