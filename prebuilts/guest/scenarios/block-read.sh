#!/bin/sh
# virtio-blk, second boot over the image block-write filled (attached
# read-only): print the sha256 of its first 64 MiB.
. /lib/vmstack.sh
mark vda_ro "$(cat /sys/block/vda/ro)"
mark guest_read_sha256 "$(dd if=/dev/vda bs=1M count=64 2>/dev/null | sha256sum | cut -d' ' -f1)"
