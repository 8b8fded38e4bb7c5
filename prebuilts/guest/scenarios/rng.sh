#!/bin/sh
# virtio-rng through the stock virtio_rng driver and the hwrng core.
. /lib/vmstack.sh
mark rng_current "$(cat /sys/class/misc/hw_random/rng_current)"
mark hwrng_bytes "$(dd if=/dev/hwrng bs=4096 count=16 2>/dev/null | wc -c)"
mark hwrng_distinct_bytes "$(dd if=/dev/hwrng bs=4096 count=1 2>/dev/null | od -An -v -tx1 | tr -s ' ' '\n' | grep . | sort -u | wc -l)"
