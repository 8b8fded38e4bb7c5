#!/bin/sh
# Suspend to RAM (ACPI S3) through the kernel's normal path; the VMM holds
# the sleep-register write until it is told to wake the guest.
echo "mem_sleep=$(cat /sys/power/mem_sleep)"
echo SUSPENDING
echo mem > /sys/power/state
echo "suspend_rc=$?"
echo RESUMED
