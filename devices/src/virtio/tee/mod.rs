//! virtio-tee (device ID 46): the guest kernel's TEE subsystem talks to
//! trusted applications served outside the guest. The wire format is
//! specified in `docs/virtio-tee.md`.
//!
//! The seed's rules, as they apply here: the guest allocates every shared
//! buffer and describes it as a list of guest-physical 4 KiB frames; the
//! device reads and writes those frames in place; the request queue carries
//! only metadata (requests, responses, frame lists); the device allocates
//! nothing in guest memory and keeps only bounded bookkeeping.
//!
//! The pure core is a function of guest memory and descriptors with no
//! I/O, so that unit tests and a fuzz target drive it:
//! * [`protocol`]: the wire structures, typed requests and responses and
//!   their encodings;
//! * [`chain`]: the request parser (descriptor chain → typed
//!   [`protocol::Request`], or a [`protocol::Rejection`] with its status
//!   code, or no response at all when there is nowhere to write one);
//! * [`shm`]: the table of registered shared-memory regions (frame checks
//!   against guest RAM and the virtqueues, per-device bounds) and the
//!   resolution of memory-reference parameters into guest segments.
//!
//! Around it: [`Tee`] (the device: one request queue of [`QUEUE_SIZE`],
//! no feature bits, the [`Limits`] as configuration space) and its worker,
//! which keeps the regions and sessions of one activation and forwards
//! sessions, invokes, cancels and closes to the TEE service behind a
//! [`TeeBackend`], completing requests in any order; [`TrustyBackend`] is
//! that backend for vmstack's `trustyd` (`--tee socket=PATH`).

mod backend;
pub mod chain;
pub mod decode;
mod device;
pub mod protocol;
pub mod shm;
#[cfg(test)]
mod test_backend;
mod trusty_backend;
mod worker;

pub use backend::{HostOp, HostParam, HostParamOut, HostReply, TeeBackend};
pub use device::Tee;
pub use trusty_backend::{TrustyBackend, TrustyError};

/// Entry points for the fuzz targets in `fuzz/` (not a stable API): the
/// worker's queue processing without its thread and event loop.
#[doc(hidden)]
pub mod fuzzing {
    pub use super::worker::TeeWorker;
}

/// Size of one frame of a shared-memory region: 4 KiB whatever the guest's
/// page size.
pub const FRAME_SIZE: u64 = 4096;

/// Size of the request queue (and so the most requests pending at once).
pub const QUEUE_SIZE: u16 = 128;

/// The device's bounds, published in its configuration space
/// (`struct virtio_tee_config`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Open sessions at the same time.
    pub max_sessions: u32,
    /// Registered shared-memory regions at the same time.
    pub max_shm_regions: u32,
    /// Frames of one region.
    pub max_shm_frames: u32,
    /// Bytes of one memory-reference parameter.
    pub max_memref_size: u32,
}

impl Limits {
    /// vmstack's values: 32 sessions (what `trustyd` allows one device's
    /// connection, `docs/trusty.md`), 256 regions of up to 512 frames
    /// (2 MiB), memory references of up to 1 MiB (`trustyd`'s too).
    pub const DEFAULT: Limits = Limits {
        max_sessions: 32,
        max_shm_regions: 256,
        max_shm_frames: 512,
        max_memref_size: 1 << 20,
    };

    /// The configuration space: four little-endian `u32`s.
    pub fn config_bytes(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        for (i, v) in [
            self.max_sessions,
            self.max_shm_regions,
            self.max_shm_frames,
            self.max_memref_size,
        ]
        .into_iter()
        .enumerate()
        {
            out[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// The longest valid request: a registration of `max_shm_frames` frames.
    pub fn max_request_len(&self) -> u64 {
        protocol::REQ_HEADER_SIZE as u64
            + protocol::SHM_REGISTER_BODY_SIZE as u64
            + 8 * u64::from(self.max_shm_frames)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_layout_is_four_le_u32() {
        let c = Limits::DEFAULT.config_bytes();
        assert_eq!(&c[0..4], &32u32.to_le_bytes());
        assert_eq!(&c[4..8], &256u32.to_le_bytes());
        assert_eq!(&c[8..12], &512u32.to_le_bytes());
        assert_eq!(&c[12..16], &(1u32 << 20).to_le_bytes());
        assert_eq!(Limits::DEFAULT.max_request_len(), 32 + 8 * 512);
    }
}
