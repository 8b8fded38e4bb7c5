#!/bin/sh
# virtio-blk, read-write disk (/dev/vda, 80 MiB): write a 64 MiB pattern (a
# random 1 MiB chunk repeated 64 times), fsync (a FLUSH to the device), print
# its sha256. The test host's block-rw-read boots a second VM that reads it
# back. Also: discard a 1 MiB range written at 72 MiB (the host checks that
# the image's last 16 MiB are zero again).
. /lib/vmstack.sh
mark vda_size_sectors "$(cat /sys/block/vda/size)"
mark vda_ro "$(cat /sys/block/vda/ro)"
mark vda_write_cache "$(cat /sys/block/vda/queue/write_cache)"
mark vda_serial "$(cat /sys/block/vda/serial)"

dd if=/dev/urandom of=/tmp/chunk bs=1024 count=1024 2>/dev/null
pattern() {
    i=0
    while [ "$i" -lt 64 ]; do
        cat /tmp/chunk
        i=$((i + 1))
    done
}
mark guest_pattern_sha256 "$(pattern | sha256sum | cut -d' ' -f1)"
pattern | dd of=/dev/vda bs=1M iflag=fullblock conv=fsync 2>/tmp/dd.err
mark write_rc "$?"
tail -n 1 /tmp/dd.err

# Something to discard beyond the pattern, then the discard itself.
dd if=/tmp/chunk of=/dev/vda bs=1M seek=72 conv=fsync 2>/dev/null
mark tail_write_rc "$?"
blkdiscard -o $((72 * 1024 * 1024)) -l $((1024 * 1024)) /dev/vda
mark discard_rc "$?"
sync
mark sync_rc "$?"
# /sys/block/<dev>/stat: field 12 discards completed, field 16 flushes completed.
set -- $(cat /sys/block/vda/stat)
mark vda_discards "${12}"
mark vda_flushes "${16}"
