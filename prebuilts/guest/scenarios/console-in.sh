#!/bin/sh
# virtio-console input (guest.scenario=console-in): say "hvc0-ready" on hvc0,
# read one line from it (sent by the host side of the console), answer on
# hvc0 first (synchronous: the device returns each buffer before the write
# completes), then report the line on the serial port.
#
# The host sends only after "hvc0-ready": without VIRTIO_CONSOLE_F_MULTIPORT
# there is no "port open" message, and Linux's virtio_console drops input
# that arrives before its hvc0 port is set up (see docs/devices.md).
. /lib/vmstack.sh
exec 3<>/dev/hvc0
echo hvc0-ready >&3
if read -t 60 -r line <&3; then
    mark hvc0_got "$line" >&3
    mark serial_got "$line" > /dev/ttyS0
else
    mark serial_got "NOTHING (no line on hvc0 within 60 s)" > /dev/ttyS0
fi
