//! The virtio-rng worker: fills the buffers of each kick.

use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};
use vmm_sys_util::epoll::EventSet;

use super::MAX_BYTES_PER_REQUEST;
use crate::virtio::{GuestMemoryMmap, Interrupt, NoToken, WaitContext, Worker};

/// Everything the worker owns; returned when it stops.
pub struct RngWorker {
    mem: GuestMemoryMmap,
    interrupt: Arc<Interrupt>,
    queue: Queue,
    warned: bool,
}

impl RngWorker {
    /// Creates a worker for an activated device.
    pub fn new(mem: GuestMemoryMmap, interrupt: Arc<Interrupt>, queue: Queue) -> Self {
        Self {
            mem,
            interrupt,
            queue,
            warned: false,
        }
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
            let mut written = 0usize;
            for desc in chain {
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
            if let Err(e) = self.queue.add_used(&self.mem, head, written as u32) {
                self.warn_once(&format!("cannot publish used buffer: {e:?}"));
            }
            used += 1;
        }
        if used > 0 {
            match self.queue.needs_notification(&self.mem) {
                Ok(true) => self.interrupt.signal_used_queue(),
                Ok(false) => {}
                Err(_) => self.interrupt.signal_used_queue(),
            }
        }
        used
    }
}

impl Worker for RngWorker {
    type Token = NoToken;
    type Backend = ();
    const NAME: &'static str = "virtio-rng";
    const THREAD_NAME: &'static str = "v_rng";

    fn on_queue(&mut self, _ctx: &WaitContext<NoToken>, _index: usize) {
        self.process_queue();
    }

    fn on_event(&mut self, _ctx: &WaitContext<NoToken>, token: NoToken, _events: EventSet) {
        match token {}
    }

    fn into_backend(self) {}
}

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
