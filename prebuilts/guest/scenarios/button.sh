#!/bin/sh
# Wait for the ACPI power button (GED -> PNP0C0C -> KEY_POWER on an input
# device), then shut down, as an OS reacting to its power key would.
. /lib/vmstack.sh
dev=
for i in $(seq 100); do
    for e in /sys/class/input/event*; do
        # x86: the ACPI button driver's "Power Button"; arm64: gpio-keys.
        if grep -qE "Power Button|gpio.keys" "$e/device/name" 2>/dev/null; then
            dev=/dev/input/${e##*/}
        fi
    done
    [ -n "$dev" ] && [ -e "$dev" ] && break
    sleep 0.1
done
if [ -z "$dev" ]; then
    mark button_device none
    exit 1
fi
mark button_device "$dev"
# One struct input_event (24 bytes on x86_64: timeval, u16 type, u16 code,
# s32 value): the first event of the press.
event=$(dd if="$dev" bs=24 count=1 2>/dev/null | od -An -v -tu2 | tr -s ' \n' ' ')
set -- $event
# Words 9 and 10 (1-based) are type and code.
mark key_event "type=$9 code=${10}"
