//! The virtio-blk device: features, configuration space, lifecycle.

use std::path::Path;
use std::sync::Arc;

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO,
    VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_SIZE_MAX, VIRTIO_BLK_F_WRITE_ZEROES,
};
use virtio_bindings::virtio_ring::VIRTIO_RING_F_INDIRECT_DESC;

use super::disk::{DiskError, DiskImage};
use super::worker::BlockWorker;
use super::{
    DISCARD_SECTOR_ALIGNMENT, MAX_DISCARD_SECTORS, MAX_DISCARD_SEGMENTS, QUEUE_SIZE, SECTOR_SIZE,
    SEG_MAX, SIZE_MAX,
};
use crate::virtio::rate_limiter::RateLimiter;
use crate::virtio::{
    device_type, read_config_bytes, ActivateContext, ActivateError, Activation, Lifecycle,
    VirtioDevice, VIRTIO_RING_F_EVENT_IDX,
};

/// Bytes of `struct virtio_blk_config` this device fills (up to and
/// including `write_zeroes_may_unmap` and its padding).
const CONFIG_SIZE: usize = 60;

/// A virtio block device backed by a raw image file.
pub struct Block {
    disk: Arc<DiskImage>,
    features: u64,
    config: [u8; CONFIG_SIZE],
    lifecycle: Lifecycle<BlockWorker>,
}

fn bit(b: u32) -> u64 {
    1 << b
}

impl Block {
    /// Opens `path` (see [`DiskImage::open`]) and creates an inactive
    /// device for it.
    pub fn open(path: &Path, read_only: bool, id: Option<&str>) -> Result<Self, DiskError> {
        Ok(Self::new(DiskImage::open(path, read_only, id)?))
    }

    /// The device with `limiter` for its requests (kept across resets).
    pub fn with_rate_limiter(mut self, limiter: RateLimiter) -> Self {
        self.lifecycle = Lifecycle::new(limiter);
        self
    }

    /// Creates an inactive device for an open image.
    pub fn new(disk: DiskImage) -> Self {
        Self::shared(Arc::new(disk))
    }

    /// Creates an inactive device for an image shared with other owners
    /// (the VMM keeps each disk open across boots and gives every boot's
    /// device the same image).
    pub fn shared(disk: Arc<DiskImage>) -> Self {
        let mut features = VIRTIO_RING_F_EVENT_IDX
            | bit(VIRTIO_RING_F_INDIRECT_DESC)
            | bit(VIRTIO_BLK_F_SIZE_MAX)
            | bit(VIRTIO_BLK_F_SEG_MAX)
            | bit(VIRTIO_BLK_F_BLK_SIZE)
            | bit(VIRTIO_BLK_F_FLUSH);
        if disk.read_only() {
            features |= bit(VIRTIO_BLK_F_RO);
        } else {
            features |= bit(VIRTIO_BLK_F_DISCARD) | bit(VIRTIO_BLK_F_WRITE_ZEROES);
        }
        let config = Self::config_space(&disk);
        Self {
            disk,
            features,
            config,
            lifecycle: Lifecycle::new(RateLimiter::unlimited()),
        }
    }

    /// `struct virtio_blk_config`, little endian.
    fn config_space(disk: &DiskImage) -> [u8; CONFIG_SIZE] {
        let mut c = [0u8; CONFIG_SIZE];
        let mut put = |offset: usize, bytes: &[u8]| {
            c[offset..offset + bytes.len()].copy_from_slice(bytes);
        };
        put(0, &disk.sectors().to_le_bytes()); // capacity
        put(8, &SIZE_MAX.to_le_bytes()); // size_max
        put(12, &SEG_MAX.to_le_bytes()); // seg_max
        put(20, &(SECTOR_SIZE as u32).to_le_bytes()); // blk_size
        put(34, &1u16.to_le_bytes()); // num_queues
        if !disk.read_only() {
            put(36, &MAX_DISCARD_SECTORS.to_le_bytes()); // max_discard_sectors
            put(40, &MAX_DISCARD_SEGMENTS.to_le_bytes()); // max_discard_seg
            put(44, &DISCARD_SECTOR_ALIGNMENT.to_le_bytes()); // discard_sector_alignment
            put(48, &MAX_DISCARD_SECTORS.to_le_bytes()); // max_write_zeroes_sectors
            put(52, &MAX_DISCARD_SEGMENTS.to_le_bytes()); // max_write_zeroes_seg
            put(56, &[1]); // write_zeroes_may_unmap
        }
        c
    }

    /// The image behind the device.
    pub fn disk(&self) -> &DiskImage {
        &self.disk
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        device_type::BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        self.features
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        let disk = self.disk.clone();
        self.lifecycle.activate(ctx, |act: Activation<1>, limiter| {
            let [queue] = act.queues;
            Ok(BlockWorker::new(act.mem, act.interrupt, queue, disk).with_rate_limiter(limiter))
        })
    }

    fn reset(&mut self) {
        self.lifecycle.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::block::disk::tests::TempImage;
    use crate::virtio::block::ID_BYTES;
    use crate::virtio::test_utils::{
        guest_memory, virtio_lifecycle_tests, DeviceHarness, LifecycleTest, DATA_START, PROBE_AREA,
        TEST_MEM_SIZE, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE,
    };
    use crate::virtio::GuestMemoryMmap;
    use virtio_bindings::virtio_blk::{
        VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_DISCARD,
        VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
        VIRTIO_BLK_T_WRITE_ZEROES,
    };
    use vm_memory::{Bytes, GuestAddress};

    const W: u16 = VRING_DESC_F_WRITE;
    const HDR: u64 = DATA_START;
    const DATA: u64 = DATA_START + 0x1000;
    const STATUS: u64 = DATA_START + 0x40_0000;
    const OK: u8 = VIRTIO_BLK_S_OK as u8;
    const IOERR: u8 = VIRTIO_BLK_S_IOERR as u8;
    const UNSUPP: u8 = VIRTIO_BLK_S_UNSUPP as u8;
    /// Test images: 64 sectors.
    const IMAGE_SIZE: usize = 64 * 512;

    /// 64 sectors; byte i of sector s is `s * 7 + i`.
    fn pattern() -> Vec<u8> {
        (0..IMAGE_SIZE)
            .map(|i| ((i / 512) * 7 + i % 512) as u8)
            .collect()
    }

    /// A device over a fresh patterned image.
    fn device(read_only: bool, id: Option<&str>) -> (Block, TempImage) {
        let img = TempImage::new(&pattern());
        let block = Block::open(&img.path, read_only, id).unwrap();
        (block, img)
    }

    /// Drives one device: counts chains so each waits for its own used
    /// element.
    struct Driver<'a> {
        h: DeviceHarness<'a>,
        mem: &'a GuestMemoryMmap,
        posted: u16,
    }

    impl<'a> Driver<'a> {
        fn new(mem: &'a GuestMemoryMmap, block: &mut Block) -> Self {
            Self {
                h: DeviceHarness::activate(mem, block, QUEUE_SIZE),
                mem,
                posted: 0,
            }
        }

        fn header(&self, kind: u32, sector: u64) {
            let mut h = [0u8; 16];
            h[..4].copy_from_slice(&kind.to_le_bytes());
            h[8..].copy_from_slice(&sector.to_le_bytes());
            self.mem.write_slice(&h, GuestAddress(HDR)).unwrap();
        }

        /// Posts raw `(addr, len, flags, next)` descriptors at table index 0
        /// and returns the used length.
        fn raw(&mut self, descs: &[(u64, u32, u16, u16)]) -> u32 {
            // Poison the status byte so that a write to it shows.
            self.mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
            self.h.add_raw_chain(0, 0, descs);
            self.posted += 1;
            self.h.wait_used(0, self.posted);
            let (id, len) = self.h.used_elem(0, self.posted - 1);
            assert_eq!(id, 0, "used element names the chain head");
            len
        }

        /// Posts `(addr, len, flags)` descriptors linked in order; returns
        /// the used length.
        fn chain(&mut self, descs: &[(u64, u32, u16)]) -> u32 {
            let last = descs.len() - 1;
            let raw: Vec<_> = descs
                .iter()
                .enumerate()
                .map(|(i, &(a, l, f))| {
                    if i < last {
                        (a, l, f | VRING_DESC_F_NEXT, i as u16 + 1)
                    } else {
                        (a, l, f, 0)
                    }
                })
                .collect();
            self.raw(&raw)
        }

        /// A standard three-part request; returns (status, used length).
        fn request(&mut self, kind: u32, sector: u64, len: u32, flags: u16) -> (u8, u32) {
            self.header(kind, sector);
            let used = self.chain(&[(HDR, 16, 0), (DATA, len, flags), (STATUS, 1, W)]);
            (self.status(), used)
        }

        fn status(&self) -> u8 {
            self.mem.read_obj(GuestAddress(STATUS)).unwrap()
        }

        fn data(&self, len: usize) -> Vec<u8> {
            self.h.read(DATA, len)
        }

        fn set_data(&self, bytes: &[u8]) {
            self.mem.write_slice(bytes, GuestAddress(DATA)).unwrap();
        }

        /// A good read still works: the device keeps serving.
        fn still_serves(&mut self) {
            self.set_data(&[0; 512]);
            assert_eq!(self.request(VIRTIO_BLK_T_IN, 1, 512, W), (OK, 513));
            assert_eq!(self.data(512), pattern()[512..1024]);
        }
    }

    impl LifecycleTest for Block {
        type Fixture = TempImage;

        fn create() -> (Self, TempImage) {
            device(false, None)
        }

        fn is_active(&self) -> bool {
            self.lifecycle.is_active()
        }

        /// Reads sector 2 through a three-part chain.
        fn assert_serves(_image: &mut TempImage, h: &DeviceHarness) {
            let (hdr, data, status) = (PROBE_AREA, PROBE_AREA + 0x1000, PROBE_AREA + 0x2000);
            let mut header = [0u8; 16];
            header[..4].copy_from_slice(&VIRTIO_BLK_T_IN.to_le_bytes());
            header[8..].copy_from_slice(&2u64.to_le_bytes());
            h.mem.write_slice(&header, GuestAddress(hdr)).unwrap();
            h.mem.write_slice(&[0; 512], GuestAddress(data)).unwrap();
            h.mem.write_obj(0xffu8, GuestAddress(status)).unwrap();
            let head = h.post(0, &[(hdr, 16, 0), (data, 512, W), (status, 1, W)]);
            assert_eq!(h.wait_for_head(0, head), 513);
            assert_eq!(h.read(status, 1), [OK]);
            assert_eq!(h.read(data, 512), pattern()[1024..1536]);
        }
    }

    virtio_lifecycle_tests!(Block);

    fn config_u32(block: &Block, offset: u64) -> u32 {
        let mut b = [0u8; 4];
        block.read_config(offset, &mut b);
        u32::from_le_bytes(b)
    }

    #[test]
    fn features_and_config_space() {
        let (rw, _img) = device(false, None);
        let f = rw.features();
        for b in [
            VIRTIO_BLK_F_FLUSH,
            VIRTIO_BLK_F_SEG_MAX,
            VIRTIO_BLK_F_SIZE_MAX,
            VIRTIO_BLK_F_BLK_SIZE,
            VIRTIO_BLK_F_DISCARD,
            VIRTIO_BLK_F_WRITE_ZEROES,
        ] {
            assert_ne!(f & bit(b), 0, "feature {b}");
        }
        assert_eq!(f & bit(VIRTIO_BLK_F_RO), 0);
        assert_ne!(f & VIRTIO_RING_F_EVENT_IDX, 0);
        let mut cap = [0u8; 8];
        rw.read_config(0, &mut cap);
        assert_eq!(u64::from_le_bytes(cap), 64, "capacity in sectors");
        assert_eq!(config_u32(&rw, 8), SIZE_MAX);
        assert_eq!(config_u32(&rw, 12), SEG_MAX);
        assert_eq!(config_u32(&rw, 20), 512, "blk_size");
        assert_eq!(config_u32(&rw, 36), MAX_DISCARD_SECTORS);
        assert_eq!(config_u32(&rw, 40), 1);
        assert_eq!(config_u32(&rw, 48), MAX_DISCARD_SECTORS);
        assert_eq!(config_u32(&rw, 52), 1);
        let mut unmap = [0u8; 1];
        rw.read_config(56, &mut unmap);
        assert_eq!(unmap, [1]);
        assert_eq!(config_u32(&rw, 60), 0, "beyond the config reads as zero");

        let (ro, _img) = device(true, None);
        let f = ro.features();
        assert_ne!(f & bit(VIRTIO_BLK_F_RO), 0);
        assert_eq!(f & bit(VIRTIO_BLK_F_DISCARD), 0);
        assert_eq!(f & bit(VIRTIO_BLK_F_WRITE_ZEROES), 0);
        assert_eq!(config_u32(&ro, 36), 0);
        assert_eq!(ro.device_type(), device_type::BLOCK);
    }

    #[test]
    fn reads_the_image_into_guest_buffers() {
        let (mut block, _img) = device(false, None);
        let mem = guest_memory();
        let mut d = Driver::new(&mem, &mut block);
        assert_eq!(d.request(VIRTIO_BLK_T_IN, 3, 1024, W), (OK, 1025));
        assert_eq!(d.data(1024), pattern()[3 * 512..5 * 512]);
        // Scattered over three buffers, one crossing a page.
        d.header(VIRTIO_BLK_T_IN, 10);
        let used = d.chain(&[
            (HDR, 16, 0),
            (DATA + 0x3000, 512, W),
            (DATA + 0x1f00, 1024, W),
            (DATA + 0x5000, 512, W),
            (STATUS, 1, W),
        ]);
        assert_eq!((d.status(), used), (OK, 2049));
        let p = pattern();
        assert_eq!(d.h.read(DATA + 0x3000, 512), p[10 * 512..11 * 512]);
        assert_eq!(d.h.read(DATA + 0x1f00, 1024), p[11 * 512..13 * 512]);
        assert_eq!(d.h.read(DATA + 0x5000, 512), p[13 * 512..14 * 512]);
        d.h.wait_used_interrupt();
        block.reset();
    }

    #[test]
    fn writes_reach_the_file_before_they_are_acknowledged() {
        let (mut block, img) = device(false, None);
        let mem = guest_memory();
        let mut d = Driver::new(&mem, &mut block);
        let data: Vec<u8> = (0..1536).map(|i| (i * 13 % 256) as u8).collect();
        d.set_data(&data);
        assert_eq!(d.request(VIRTIO_BLK_T_OUT, 5, 1536, 0), (OK, 1));
        // Acknowledged: the file already holds it.
        let file = img.contents();
        assert_eq!(file[5 * 512..8 * 512], data[..]);
        let mut expected = pattern();
        expected[5 * 512..8 * 512].copy_from_slice(&data);
        assert_eq!(file, expected, "nothing else changed");
        // And it reads back through the device.
        d.set_data(&[0; 1536]);
        assert_eq!(d.request(VIRTIO_BLK_T_IN, 5, 1536, W), (OK, 1537));
        assert_eq!(d.data(1536), data);
        // Last sector.
        d.set_data(&[0x5a; 512]);
        assert_eq!(d.request(VIRTIO_BLK_T_OUT, 63, 512, 0), (OK, 1));
        assert_eq!(img.contents()[63 * 512..], [0x5a; 512]);
        block.reset();
    }

    #[test]
    fn flush_and_get_id() {
        let (mut block, _img) = device(false, Some("vmstack-disk-0"));
        let mem = guest_memory();
        let mut d = Driver::new(&mem, &mut block);
        d.header(VIRTIO_BLK_T_FLUSH, 0);
        assert_eq!(d.chain(&[(HDR, 16, 0), (STATUS, 1, W)]), 1);
        assert_eq!(d.status(), OK);
        d.set_data(&[0xff; 32]);
        assert_eq!(d.request(VIRTIO_BLK_T_GET_ID, 0, 20, W), (OK, 21));
        let mut expected = [0u8; ID_BYTES];
        expected[..14].copy_from_slice(b"vmstack-disk-0");
        assert_eq!(d.data(20), expected);
        assert_eq!(d.data(21)[20], 0xff, "nothing beyond the buffer");
        // A short buffer gets what fits.
        d.set_data(&[0xff; 32]);
        assert_eq!(d.request(VIRTIO_BLK_T_GET_ID, 0, 4, W), (OK, 5));
        assert_eq!(d.data(5), b"vmst\xff");
        block.reset();
    }

    #[test]
    fn out_of_range_sectors_get_ioerr() {
        let (mut block, img) = device(false, None);
        let mem = guest_memory();
        let mut d = Driver::new(&mem, &mut block);
        assert_eq!(d.request(VIRTIO_BLK_T_IN, 64, 512, W), (IOERR, 1));
        assert_eq!(d.request(VIRTIO_BLK_T_IN, 63, 1024, W), (IOERR, 1));
        assert_eq!(d.request(VIRTIO_BLK_T_IN, u64::MAX, 512, W), (IOERR, 1));
        assert_eq!(d.request(VIRTIO_BLK_T_OUT, 63, 1024, 0), (IOERR, 1));
        assert_eq!(d.request(VIRTIO_BLK_T_OUT, 1 << 55, 512, 0), (IOERR, 1));
        assert_eq!(img.contents(), pattern(), "file unchanged");
        d.still_serves();
        block.reset();
    }

    #[test]
    fn read_only_disks_refuse_every_modification() {
        let (mut block, img) = device(true, None);
        let mem = guest_memory();
        let mut d = Driver::new(&mem, &mut block);
        d.set_data(&[0x11; 512]);
        assert_eq!(d.request(VIRTIO_BLK_T_OUT, 0, 512, 0), (IOERR, 1));
        for kind in [VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_WRITE_ZEROES] {
            let mut range = [0u8; 16];
            range[8..12].copy_from_slice(&8u32.to_le_bytes());
            d.set_data(&range);
            assert_eq!(d.request(kind, 0, 16, 0), (IOERR, 1));
        }
        // Flush is harmless, reads work.
        d.header(VIRTIO_BLK_T_FLUSH, 0);
        d.chain(&[(HDR, 16, 0), (STATUS, 1, W)]);
        assert_eq!(d.status(), OK);
        d.still_serves();
        assert_eq!(img.contents(), pattern(), "file unchanged");
        block.reset();
    }

    #[test]
    fn discard_and_write_zeroes() {
        let (mut block, img) = device(false, None);
        let mem = guest_memory();
        let mut d = Driver::new(&mem, &mut block);
        let range = |sector: u64, sectors: u32, flags: u32| {
            let mut r = [0u8; 16];
            r[..8].copy_from_slice(&sector.to_le_bytes());
            r[8..12].copy_from_slice(&sectors.to_le_bytes());
            r[12..].copy_from_slice(&flags.to_le_bytes());
            r
        };
        d.set_data(&range(8, 8, 0));
        assert_eq!(d.request(VIRTIO_BLK_T_WRITE_ZEROES, 0, 16, 0), (OK, 1));
        d.set_data(&range(24, 8, 1));
        assert_eq!(d.request(VIRTIO_BLK_T_WRITE_ZEROES, 0, 16, 0), (OK, 1));
        d.set_data(&range(40, 8, 0));
        assert_eq!(d.request(VIRTIO_BLK_T_DISCARD, 0, 16, 0), (OK, 1));
        let file = img.contents();
        let p = pattern();
        assert_eq!(file.len(), IMAGE_SIZE);
        assert_eq!(file[..8 * 512], p[..8 * 512]);
        assert!(file[8 * 512..16 * 512].iter().all(|&b| b == 0));
        assert_eq!(file[16 * 512..24 * 512], p[16 * 512..24 * 512]);
        assert!(file[24 * 512..32 * 512].iter().all(|&b| b == 0));
        assert_eq!(file[48 * 512..], p[48 * 512..]);
        // Discard with the unmap flag and unknown flags: UNSUPP.
        d.set_data(&range(0, 8, 1));
        assert_eq!(d.request(VIRTIO_BLK_T_DISCARD, 0, 16, 0), (UNSUPP, 1));
        d.set_data(&range(0, 8, 2));
        assert_eq!(d.request(VIRTIO_BLK_T_WRITE_ZEROES, 0, 16, 0), (UNSUPP, 1));
        d.set_data(&range(60, 8, 0));
        assert_eq!(d.request(VIRTIO_BLK_T_WRITE_ZEROES, 0, 16, 0), (IOERR, 1));
        assert_eq!(img.contents()[48 * 512..], p[48 * 512..]);
        d.still_serves();
        block.reset();
    }

    #[test]
    fn hostile_chains_are_refused_and_the_device_keeps_serving() {
        let (mut block, img) = device(false, None);
        let mem = guest_memory();
        let mut d = Driver::new(&mem, &mut block);
        let end = TEST_MEM_SIZE as u64;

        // Status descriptor missing: dropped, nothing written anywhere.
        d.header(VIRTIO_BLK_T_IN, 0);
        d.set_data(&[0; 512]);
        assert_eq!(d.chain(&[(HDR, 16, 0)]), 0, "no status");
        assert_eq!(d.chain(&[(HDR, 16, 0), (DATA, 512, 0)]), 0, "no status");
        assert_eq!(d.data(512), [0; 512], "nothing written");
        d.still_serves();
        // Without a separate status descriptor the last data byte is the
        // status (no framing is assumed): 511 data bytes are misaligned.
        d.header(VIRTIO_BLK_T_IN, 0);
        d.set_data(&[0; 512]);
        assert_eq!(d.chain(&[(HDR, 16, 0), (DATA, 512, W)]), 1);
        assert_eq!(d.data(512)[..511], [0; 511], "no data read");
        assert_eq!(d.data(512)[511], IOERR);
        d.still_serves();
        // Status descriptor device-readable.
        assert_eq!(d.chain(&[(HDR, 16, 0), (DATA, 512, W), (STATUS, 1, 0)]), 0);
        assert_eq!(d.status(), 0xff, "status untouched");
        d.still_serves();
        // Status descriptor empty, or outside guest memory.
        assert_eq!(d.chain(&[(HDR, 16, 0), (DATA, 512, W), (STATUS, 0, W)]), 0);
        assert_eq!(d.chain(&[(HDR, 16, 0), (DATA, 512, W), (end, 1, W)]), 0);
        d.still_serves();
        // A descriptor loop: 0 -> 1 -> 0.
        d.header(VIRTIO_BLK_T_IN, 0);
        assert_eq!(
            d.raw(&[
                (HDR, 16, VRING_DESC_F_NEXT, 1),
                (STATUS, 1, W | VRING_DESC_F_NEXT, 0)
            ]),
            0
        );
        d.still_serves();
        // A next index beyond the queue.
        assert_eq!(
            d.raw(&[
                (HDR, 16, VRING_DESC_F_NEXT, 1),
                (STATUS, 1, W | VRING_DESC_F_NEXT, 999)
            ]),
            0
        );
        d.still_serves();
        // Wrong direction: read into device-readable buffers.
        assert_eq!(d.request(VIRTIO_BLK_T_IN, 0, 512, 0), (IOERR, 1));
        // Write from device-writable buffers.
        assert_eq!(d.request(VIRTIO_BLK_T_OUT, 0, 512, W), (IOERR, 1));
        // Misaligned and oversized lengths.
        assert_eq!(d.request(VIRTIO_BLK_T_IN, 0, 511, W), (IOERR, 1));
        assert_eq!(d.request(VIRTIO_BLK_T_OUT, 0, 700, 0), (IOERR, 1));
        d.header(VIRTIO_BLK_T_IN, 0);
        assert_eq!(
            d.chain(&[(HDR, 16, 0), (0, SIZE_MAX + 512, W), (STATUS, 1, W)]),
            1
        );
        assert_eq!(d.status(), IOERR);
        // Data outside guest memory, and straddling its end.
        assert_eq!(d.chain(&[(HDR, 16, 0), (end, 512, W), (STATUS, 1, W)]), 1);
        assert_eq!(d.status(), IOERR);
        d.header(VIRTIO_BLK_T_OUT, 0);
        assert_eq!(
            d.chain(&[(HDR, 16, 0), (end - 256, 512, 0), (STATUS, 1, W)]),
            1
        );
        assert_eq!(d.status(), IOERR);
        // Short header.
        assert_eq!(d.chain(&[(HDR, 8, 0), (STATUS, 1, W)]), 1);
        assert_eq!(d.status(), IOERR);
        // Readable data after writable data.
        d.header(VIRTIO_BLK_T_IN, 0);
        assert_eq!(
            d.chain(&[(HDR, 16, 0), (DATA, 512, W), (DATA, 512, 0), (STATUS, 1, W)]),
            1
        );
        assert_eq!(d.status(), IOERR);
        // Unknown request types.
        for kind in [2, 3, 14, 0x8000_0001] {
            assert_eq!(d.request(kind, 0, 512, W), (UNSUPP, 1), "type {kind}");
        }
        assert_eq!(img.contents(), pattern(), "file unchanged");
        d.still_serves();
        block.reset();
    }

    /// Writes an indirect descriptor table at `at`.
    fn indirect_table(mem: &GuestMemoryMmap, at: u64, descs: &[(u64, u32, u16, u16)]) {
        for (i, &(addr, len, flags, next)) in descs.iter().enumerate() {
            let mut d = [0u8; 16];
            d[..8].copy_from_slice(&addr.to_le_bytes());
            d[8..12].copy_from_slice(&len.to_le_bytes());
            d[12..14].copy_from_slice(&flags.to_le_bytes());
            d[14..].copy_from_slice(&next.to_le_bytes());
            mem.write_slice(&d, GuestAddress(at + 16 * i as u64))
                .unwrap();
        }
    }

    #[test]
    fn indirect_chains() {
        const INDIRECT: u16 = 4;
        const TABLE: u64 = DATA_START + 0x20_0000;
        let (mut block, _img) = device(false, None);
        let mem = guest_memory();
        let mut d = Driver::new(&mem, &mut block);
        d.header(VIRTIO_BLK_T_IN, 4);
        indirect_table(
            &mem,
            TABLE,
            &[
                (HDR, 16, VRING_DESC_F_NEXT, 1),
                (DATA, 1024, W | VRING_DESC_F_NEXT, 2),
                (STATUS, 1, W, 0),
            ],
        );
        assert_eq!(d.chain(&[(TABLE, 48, INDIRECT)]), 1025);
        assert_eq!(d.status(), OK);
        assert_eq!(d.data(1024), pattern()[4 * 512..6 * 512]);
        // An indirect table that points into another one: dropped.
        indirect_table(
            &mem,
            TABLE,
            &[(HDR, 16, VRING_DESC_F_NEXT, 1), (TABLE, 48, INDIRECT, 0)],
        );
        assert_eq!(d.chain(&[(TABLE, 32, INDIRECT)]), 0);
        // A table whose last entry links beyond the table: dropped.
        indirect_table(
            &mem,
            TABLE,
            &[
                (HDR, 16, VRING_DESC_F_NEXT, 1),
                (STATUS, 1, W | VRING_DESC_F_NEXT, 7),
            ],
        );
        assert_eq!(d.chain(&[(TABLE, 32, INDIRECT)]), 0);
        // A table length that is not whole descriptors, and one outside
        // guest memory: dropped.
        assert_eq!(d.chain(&[(TABLE, 40, INDIRECT)]), 0);
        assert_eq!(d.chain(&[(TEST_MEM_SIZE as u64, 48, INDIRECT)]), 0);
        d.still_serves();
        block.reset();
    }

    #[test]
    fn many_requests_in_one_kick() {
        let (mut block, _img) = device(false, None);
        let mem = guest_memory();
        let h = DeviceHarness::activate(&mem, &mut block, QUEUE_SIZE);
        // 32 reads of one sector each, posted before one kick (add_raw_chain
        // kicks every time; the worker may see several per wakeup).
        for i in 0..32u16 {
            let base = DATA + u64::from(i) * 0x1000;
            let mut hdr = [0u8; 16];
            hdr[8..].copy_from_slice(&u64::from(i).to_le_bytes());
            mem.write_slice(&hdr, GuestAddress(base)).unwrap();
            let first = i * 3;
            h.add_raw_chain(
                0,
                first,
                &[
                    (base, 16, VRING_DESC_F_NEXT, first + 1),
                    (base + 0x100, 512, W | VRING_DESC_F_NEXT, first + 2),
                    (base + 0x300, 1, W, 0),
                ],
            );
        }
        h.wait_used(0, 32);
        let p = pattern();
        for i in 0..32u16 {
            let base = DATA + u64::from(i) * 0x1000;
            assert_eq!(h.used_elem(0, i), (u32::from(i) * 3, 513));
            assert_eq!(h.read(base + 0x300, 1), [OK]);
            let s = usize::from(i);
            assert_eq!(h.read(base + 0x100, 512), p[s * 512..(s + 1) * 512]);
        }
        block.reset();
    }

    #[test]
    fn reset_stops_the_worker_and_allows_reactivation() {
        let (mut block, _img) = device(false, None);
        let mem = guest_memory();
        let _ = Driver::new(&mem, &mut block);
        block.reset();
        let mem = guest_memory();
        let mut d = Driver::new(&mem, &mut block);
        d.still_serves();
        block.reset();
        block.reset();
    }

    /// Posts `n` reads of sector 0 (512 bytes each), each its own chain.
    fn post_reads(h: &DeviceHarness, mem: &GuestMemoryMmap, n: u16) {
        let mut header = [0u8; 16];
        header[..4].copy_from_slice(&VIRTIO_BLK_T_IN.to_le_bytes());
        mem.write_slice(&header, GuestAddress(HDR)).unwrap();
        for i in 0..n {
            let base = DATA + u64::from(i % 64) * 0x1000;
            h.post(0, &[(HDR, 16, 0), (base, 512, W), (base + 0x800, 1, W)]);
        }
    }

    fn limited(ops: Option<&str>, bw: Option<&str>) -> (Block, TempImage) {
        let (block, img) = device(false, None);
        let limit = crate::virtio::rate_limiter::RateLimit {
            ops: ops.map(|s| s.parse().unwrap()),
            bandwidth: bw.map(|s| s.parse().unwrap()),
        };
        (
            block.with_rate_limiter(RateLimiter::new(limit).unwrap()),
            img,
        )
    }

    #[test]
    fn an_ops_limit_paces_requests_and_a_reset_does_not_refill_it() {
        use std::time::{Duration, Instant};
        // 3 requests at once, then one per second.
        let (mut block, _img) = limited(Some("3:3000"), None);
        let mem = guest_memory();
        let h = DeviceHarness::activate(&mem, &mut block, QUEUE_SIZE);
        let started = Instant::now();
        post_reads(&h, &mem, 4);
        h.wait_used(0, 3);
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(h.queues[0].used().idx().load(), 3, "the 4th waits");
        h.wait_used(0, 4);
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(900), "4 requests in {took:?}");
        for i in 0..4 {
            assert_eq!(h.used_elem(0, i).1, 513, "request {i} served whole");
        }
        // A reset and a new activation find the bucket as it was (empty),
        // not refilled.
        block.reset();
        let mem = guest_memory();
        let h = DeviceHarness::activate(&mem, &mut block, QUEUE_SIZE);
        post_reads(&h, &mem, 2);
        std::thread::sleep(Duration::from_millis(300));
        assert!(h.queues[0].used().idx().load() <= 1);
        h.wait_used(0, 2);
        block.reset();
    }

    #[test]
    fn a_bandwidth_limit_paces_bytes() {
        use std::time::{Duration, Instant};
        // 2 KiB at once (4 reads), then 512 bytes per 50 ms: 20 reads of
        // 512 bytes take 16 * 50 = 800 ms.
        let (mut block, _img) = limited(None, Some("2K:200"));
        let mem = guest_memory();
        let h = DeviceHarness::activate(&mem, &mut block, QUEUE_SIZE);
        let started = Instant::now();
        post_reads(&h, &mem, 20);
        h.wait_used(0, 20);
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(700) && took < Duration::from_secs(5),
            "{took:?}"
        );
        let p = pattern();
        assert_eq!(h.read(DATA + 19 * 0x1000, 512), p[..512]);
        block.reset();
    }
}
