//! The virtio-rng worker: fills the buffers of each kick.
//!
//! With a rate limiter (`--rng=bw=...,ops=...`) each request costs one
//! operation and the bytes it asks for (at most
//! [`MAX_BYTES_PER_REQUEST`]); a refused request goes back on the queue
//! until the limiter's timer fires.

use std::sync::Arc;

use virtio_queue::desc::split::Descriptor;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use super::MAX_BYTES_PER_REQUEST;
use crate::virtio::limited_worker::impl_limited_queue_worker;
use crate::virtio::rate_limiter::RateLimiter;
use crate::virtio::{GuestMemoryMmap, Interrupt};

/// Everything the worker owns; returned when it stops.
pub struct RngWorker {
    mem: GuestMemoryMmap,
    interrupt: Arc<Interrupt>,
    queue: Queue,
    warned: bool,
    /// Reused for the descriptors of each chain.
    descs: Vec<Descriptor>,
    /// Kept across resets (the device's backend).
    limiter: RateLimiter,
}

impl RngWorker {
    /// Creates a worker for an activated device.
    pub fn new(mem: GuestMemoryMmap, interrupt: Arc<Interrupt>, queue: Queue) -> Self {
        Self {
            mem,
            interrupt,
            queue,
            warned: false,
            descs: Vec::new(),
            limiter: RateLimiter::unlimited(),
        }
    }

    /// The worker with `limiter` (the device's, kept across resets).
    pub fn with_rate_limiter(mut self, limiter: RateLimiter) -> Self {
        self.limiter = limiter;
        self
    }

    fn warn_once(&mut self, what: &str) {
        if !self.warned {
            self.warned = true;
            crate::guest_warn!("virtio-rng: {what} (logged once)");
        }
    }

    /// Fills every available chain; returns the number of chains used.
    pub fn process_queue(&mut self) -> usize {
        let mut used = 0;
        let mem = self.mem.clone();
        while let Some(chain) = self.queue.pop_descriptor_chain(&mem) {
            let head = chain.head_index();
            self.descs.clear();
            self.descs.extend(chain);
            let asked: u64 = self
                .descs
                .iter()
                .filter(|d| d.is_write_only())
                .map(|d| u64::from(d.len()))
                .sum();
            if !self
                .limiter
                .consume(1, asked.min(MAX_BYTES_PER_REQUEST as u64))
            {
                // Served first once the limiter's timer fires.
                let back = self.queue.next_avail().wrapping_sub(1);
                self.queue.set_next_avail(back);
                break;
            }
            let mut written = 0usize;
            let descs = std::mem::take(&mut self.descs);
            for desc in &descs {
                if !desc.is_write_only() {
                    self.warn_once("guest posted a read-only buffer");
                    continue;
                }
                let room = MAX_BYTES_PER_REQUEST - written;
                let len = (desc.len() as usize).min(room);
                if len == 0 {
                    continue;
                }
                match fill_random(&self.mem, desc.addr(), len) {
                    Ok(()) => written += len,
                    Err(e) => {
                        self.warn_once(&format!("bad buffer: {e}"));
                        break;
                    }
                }
            }
            self.descs = descs;
            if let Err(e) = self.queue.add_used(&self.mem, head, written as u32) {
                self.warn_once(&format!("cannot publish used buffer: {e:?}"));
            }
            used += 1;
        }
        if used > 0 {
            self.interrupt.notify_used(&mut self.queue, &self.mem);
        }
        used
    }
}

impl_limited_queue_worker!(RngWorker, name: "virtio-rng", thread: "v_rng");

/// Errors filling a guest buffer.
#[derive(Debug, thiserror::Error)]
enum FillError {
    #[error("getrandom failed: {0}")]
    Random(std::io::Error),
    #[error("buffer at {0:#x} is outside guest memory")]
    Memory(u64),
}

fn fill_random(mem: &GuestMemoryMmap, addr: GuestAddress, len: usize) -> Result<(), FillError> {
    // Check the whole range first so that a straddling buffer gets nothing.
    if !mem.check_range(addr, len) {
        return Err(FillError::Memory(addr.0));
    }
    let mut buf = vec![0u8; len];
    let mut filled = 0;
    while filled < len {
        // SAFETY: the pointer and length describe the unfilled tail of `buf`,
        // which getrandom writes at most `len - filled` bytes into.
        let n = unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), len - filled, 0) };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(FillError::Random(err));
        }
        filled += n as usize;
    }
    mem.write_slice(&buf, addr)
        .map_err(|_| FillError::Memory(addr.0))
}
