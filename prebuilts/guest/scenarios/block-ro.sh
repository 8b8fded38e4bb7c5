#!/bin/sh
# virtio-blk, read-only disk with id=: read its serial (GET_ID) and contents,
# then try to write it. The driver marks the disk read-only
# (VIRTIO_BLK_F_RO), so the write must fail; the VM keeps running and powers
# off normally.
. /lib/vmstack.sh
mark vda_ro "$(cat /sys/block/vda/ro)"
mark vda_serial "$(cat /sys/block/vda/serial)"
mark guest_ro_sha256 "$(dd if=/dev/vda bs=1M 2>/dev/null | sha256sum | cut -d' ' -f1)"
dd if=/dev/zero of=/dev/vda bs=4096 count=16 conv=fsync 2>/tmp/dd.err
mark ro_dd_rc "$?"
mark ro_dd_error "$(head -n 1 /tmp/dd.err)"
sync
mark ro_sync_rc "$?"
# Reads still work after the refused write.
mark guest_ro_sha256_after "$(dd if=/dev/vda bs=1M 2>/dev/null | sha256sum | cut -d' ' -f1)"
# Try harder: clear the bdev read-only flag and bypass the page cache. Linux
# still refuses (the disk itself is read-only because the device offered
# VIRTIO_BLK_F_RO); had a write reached the device it would get
# VIRTIO_BLK_S_IOERR (unit-tested). Either way nothing may change.
blockdev --setrw /dev/vda 2>/tmp/setrw.err
mark setrw_rc "$? $(head -n 1 /tmp/setrw.err)"
dd if=/dev/zero of=/dev/vda bs=4096 count=16 oflag=direct 2>/tmp/dd2.err
mark forced_dd_rc "$?"
mark forced_dd_error "$(head -n 1 /tmp/dd2.err)"
mark guest_ro_sha256_forced "$(dd if=/dev/vda bs=1M iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)"
