//! virtio-rng: an entropy source backed by the host's `getrandom(2)`.
//!
//! One queue (`requestq`); the guest posts device-writable buffers and the
//! device fills them. The guest's stock `virtio_rng` driver registers it with
//! the hwrng core, so `/dev/hwrng` reads come from here.

mod device;
mod worker;

pub use device::Rng;

/// Entry points for the fuzz targets in `fuzz/` (not a stable API): the
/// worker's queue processing without its thread and epoll loop.
#[doc(hidden)]
pub mod fuzzing {
    pub use super::worker::RngWorker;
}

/// Size of the request queue.
pub const QUEUE_SIZE: u16 = 256;
/// Most bytes one request may get; larger buffers are filled only this far
/// so that one guest request cannot keep the worker busy for long.
pub const MAX_BYTES_PER_REQUEST: usize = 64 * 1024;
