#!/bin/sh
# Wait for the ACPI power button (GED -> PNP0C0C -> KEY_POWER on an input
# device), then shut down, as an OS reacting to its power key would.
for i in $(seq 50); do [ -e /dev/input/event0 ] && break; sleep 0.1; done
echo READY-FOR-BUTTON
# One struct input_event (24 bytes): the first event of the press.
dd if=/dev/input/event0 bs=24 count=1 2>/dev/null | od -An -tx1 | head -1
echo GOT-POWER-KEY
