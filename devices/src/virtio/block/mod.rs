//! virtio-blk: a raw disk image as a modern virtio block device.
//!
//! One request queue served by one worker thread. The guest's stock
//! `virtio_blk` driver posts a chain per request: a 16-byte device-readable
//! header (type, reserved, sector), the data buffers (device-readable for
//! writes, device-writable for reads) and a final device-writable status
//! byte. The worker parses the chain ([`request::parse`], a pure function of
//! guest memory) and moves data between the image file and the guest's own
//! buffers with `preadv`/`pwritev` (no bounce buffer).
//!
//! Guarantees:
//! * a write is acknowledged (status byte + used ring) only after `pwritev`
//!   has handed all of its data to the host kernel, and a `FLUSH` only after
//!   `fdatasync` returned: no acknowledged write is lost when the VMM or the
//!   guest dies, and none is lost on host power loss once a later flush was
//!   acknowledged;
//! * a read-only disk (`--disk`) is opened `O_RDONLY`, offers
//!   `VIRTIO_BLK_F_RO`, and answers every write, discard and write-zeroes
//!   with `VIRTIO_BLK_S_IOERR` without touching the file;
//! * the image is `flock`ed (exclusive for read-write, shared for read-only)
//!   so two VMMs cannot write the same image;
//! * every malformed request gets `VIRTIO_BLK_S_IOERR` or `_UNSUPP`, and a
//!   chain without a usable status byte is returned with used length 0; the
//!   worker logs each kind of problem once and keeps serving.

mod device;
mod disk;
pub mod request;
mod worker;

pub use device::Block;
pub use disk::{DiskError, DiskImage};

/// Entry points for the fuzz targets in `fuzz/` (not a stable API): the
/// worker's queue processing without its thread and epoll loop.
#[doc(hidden)]
pub mod fuzzing {
    pub use super::worker::{BlockWorker, Observer};
}

/// Size of the request queue. 512 rather than the usual 256 so that
/// `seg_max` (below) admits a whole 1 MiB request of 4 KiB pages (256 data
/// segments) and the guest's largest request (`max_sectors_kb` 1280, 320
/// pages): with 256 Linux split every 1 MiB O_DIRECT write in two requests
/// (`cargo xtask bench devices` counts them).
pub const QUEUE_SIZE: u16 = 512;
/// Bytes per sector: the unit of `capacity`, of request sectors and of
/// every data length.
pub const SECTOR_SIZE: u64 = 512;
/// `log2(SECTOR_SIZE)`.
pub const SECTOR_SHIFT: u32 = 9;
/// Most data segments (descriptors) in one request (`seg_max`): the queue
/// size minus the header and status descriptors.
pub const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;
/// Largest data segment in bytes (`size_max`).
pub const SIZE_MAX: u32 = 1 << 20;
/// Bytes of the `GET_ID` answer (`VIRTIO_BLK_ID_BYTES`).
pub const ID_BYTES: usize = 20;
/// Most sectors one discard or write-zeroes range may cover.
pub const MAX_DISCARD_SECTORS: u32 = 1 << 16;
/// Most ranges in one discard or write-zeroes request.
pub const MAX_DISCARD_SEGMENTS: u32 = 1;
/// Discard alignment hint in sectors (4 KiB, the usual host block size).
pub const DISCARD_SECTOR_ALIGNMENT: u32 = 8;
