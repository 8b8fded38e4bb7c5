//! The virtio-console worker: moves guest output to the backend and host
//! input into the guest's receive buffers. Its event sources besides the
//! queue kicks are the backend's descriptors ([`Source`]), watched only
//! while they could make progress.

use std::sync::Arc;
use std::time::Duration;

use virtio_queue::{DescriptorChain, Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};
use vmm_sys_util::epoll::EventSet;

use super::backend::{ConsoleBackend, InputQueue, Source, Watch};
use super::{MAX_TX_CHAIN_BYTES, TX_QUEUE};
use crate::log_limit::LoggedKinds;
use crate::virtio::{GuestMemoryMmap, Interrupt, WaitContext, Worker};

/// The console's host-side state, kept across device resets.
#[derive(Debug)]
pub struct Port {
    /// Where output goes and input comes from.
    pub backend: ConsoleBackend,
    /// Host input not yet delivered to the guest.
    pub pending: InputQueue,
    /// How often a worker woke up (a spin shows as a huge number).
    pub wakeups: u64,
}

/// Errors in a guest descriptor chain.
#[derive(Debug, thiserror::Error)]
enum ChainError {
    #[error("device-writable descriptor in the transmit queue")]
    WritableInTransmit,
    #[error("read-only descriptor in the receive queue")]
    ReadOnlyInReceive,
    #[error("buffer at {addr:#x} (+{len}) is outside guest memory")]
    OutOfRange { addr: u64, len: u32 },
}

/// Kinds of guest misbehaviour, each logged once per activation.
#[derive(Debug, Clone, Copy)]
enum Warn {
    Transmit,
    Receive,
    Oversize,
    Publish,
}

/// Everything the worker owns; returned when it stops.
pub struct ConsoleWorker {
    mem: GuestMemoryMmap,
    interrupt: Arc<Interrupt>,
    rx: Queue,
    tx: Queue,
    port: Port,
    warned: LoggedKinds,
    /// What is registered in the wait context for each backend source.
    watched: [Option<Watch>; Source::ALL.len()],
}

impl ConsoleWorker {
    /// Creates a worker for an activated device.
    pub fn new(
        mem: GuestMemoryMmap,
        interrupt: Arc<Interrupt>,
        queues: [Queue; 2],
        port: Port,
    ) -> Self {
        let [rx, tx] = queues;
        Self {
            mem,
            interrupt,
            rx,
            tx,
            port,
            warned: LoggedKinds::default(),
            watched: [None; Source::ALL.len()],
        }
    }

    /// Brings the registrations in line with what the backend wants now.
    fn sync_watches(&mut self, ctx: &WaitContext<Source>) {
        let want_input = self.port.pending.room() > 0;
        let backend = &mut self.port.backend;
        for (i, source) in Source::ALL.into_iter().enumerate() {
            let wanted = backend.watch(source, want_input);
            let current = self.watched[i];
            if wanted == current {
                continue;
            }
            match (current, wanted) {
                (Some(cur), Some(new)) if cur.fd == new.fd && cur.generation == new.generation => {
                    if let Err(e) = ctx.modify(&new.fd, new.events, source) {
                        crate::guest_warn!("virtio-console: cannot change a watch: {e}");
                        continue;
                    }
                    self.watched[i] = wanted;
                }
                _ => {
                    if let Some(cur) = current {
                        // Fails harmlessly if the descriptor was already
                        // closed (which removed it from the set).
                        let _ = ctx.delete(&cur.fd);
                        self.watched[i] = None;
                    }
                    if let Some(new) = wanted {
                        match ctx.add(&new.fd, new.events, source) {
                            Ok(()) => self.watched[i] = Some(new),
                            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                                backend.set_unpollable(source);
                            }
                            Err(e) => {
                                crate::guest_warn!("virtio-console: cannot watch {source:?}: {e}")
                            }
                        }
                    }
                }
            }
        }
    }

    /// The host-side state, for the fuzz targets (not a stable API).
    #[doc(hidden)]
    pub fn port_mut(&mut self) -> &mut Port {
        &mut self.port
    }

    fn warn_once(&mut self, kind: Warn, what: &str) {
        if self.warned.first(kind as u32) {
            crate::guest_warn!("virtio-console: {what} (logged once)");
        }
    }

    /// Sends every available transmit chain to the backend and returns it to
    /// the guest at once (the guest may be spinning on it). Returns the
    /// number of chains used.
    pub fn process_tx(&mut self) -> usize {
        let mem = self.mem.clone();
        let mut used = 0;
        while let Some(chain) = self.tx.pop_descriptor_chain(&mem) {
            let head = chain.head_index();
            match read_tx_chain(&mem, chain) {
                Ok((bytes, truncated)) => {
                    if truncated {
                        self.warn_once(
                            Warn::Oversize,
                            &format!(
                                "transmit chain longer than {MAX_TX_CHAIN_BYTES} bytes truncated"
                            ),
                        );
                    }
                    self.port.backend.write_output(&bytes);
                }
                Err(e) => self.warn_once(Warn::Transmit, &format!("dropped transmit chain: {e}")),
            }
            // Transmit buffers are only read: the used length is 0.
            if let Err(e) = self.tx.add_used(&mem, head, 0) {
                self.warn_once(Warn::Publish, &format!("cannot publish used buffer: {e:?}"));
            }
            used += 1;
        }
        if used > 0 {
            self.interrupt.notify_used(&mut self.tx, &self.mem);
        }
        used
    }

    /// Moves pending input into receive buffers, as long as there is input
    /// and the guest has buffers. Returns the number of chains used.
    pub fn deliver_input(&mut self) -> usize {
        let mem = self.mem.clone();
        let mut used = 0;
        while !self.port.pending.is_empty() {
            let Some(chain) = self.rx.pop_descriptor_chain(&mem) else {
                break;
            };
            let head = chain.head_index();
            let written = match write_rx_chain(&mem, chain, &mut self.port.pending) {
                Ok(n) => n,
                Err(e) => {
                    self.warn_once(Warn::Receive, &format!("returned receive chain empty: {e}"));
                    0
                }
            };
            if let Err(e) = self.rx.add_used(&mem, head, written) {
                self.warn_once(Warn::Publish, &format!("cannot publish used buffer: {e:?}"));
            }
            used += 1;
        }
        if used > 0 {
            self.interrupt.notify_used(&mut self.rx, &self.mem);
        }
        used
    }

    /// Delivers input, topping it up from inputs that cannot be watched.
    fn pump_input(&mut self) {
        loop {
            self.deliver_input();
            if !self.port.backend.read_unwatched(&mut self.port.pending) {
                break;
            }
        }
    }
}

impl Worker for ConsoleWorker {
    type Token = Source;
    type Backend = Box<Port>;
    const NAME: &'static str = "virtio-console";
    const THREAD_NAME: &'static str = "v_console";

    fn on_queue(&mut self, _ctx: &WaitContext<Source>, index: usize) {
        // Receive buffers are filled after the wake-up's events.
        if index == TX_QUEUE {
            self.process_tx();
        }
    }

    fn on_event(&mut self, _ctx: &WaitContext<Source>, source: Source, events: EventSet) {
        self.port
            .backend
            .on_ready(source, events, &mut self.port.pending);
    }

    fn on_timeout(&mut self, _ctx: &WaitContext<Source>) {
        self.port.backend.on_timeout();
    }

    fn after_events(&mut self, ctx: &WaitContext<Source>) {
        self.port.wakeups += 1;
        self.pump_input();
        self.sync_watches(ctx);
    }

    fn timeout(&self) -> Option<Duration> {
        self.port.backend.retry_after()
    }

    fn into_backend(self) -> Box<Port> {
        Box::new(self.port)
    }
}

/// Reads a transmit chain (device-readable buffers only, all inside guest
/// memory); returns its bytes (at most [`MAX_TX_CHAIN_BYTES`]) and whether
/// it was longer.
fn read_tx_chain(
    mem: &GuestMemoryMmap,
    chain: DescriptorChain<&GuestMemoryMmap>,
) -> Result<(Vec<u8>, bool), ChainError> {
    let mut descs = Vec::new();
    let mut total = 0usize;
    for desc in chain {
        if desc.is_write_only() {
            return Err(ChainError::WritableInTransmit);
        }
        check(mem, desc.addr(), desc.len())?;
        total = total.saturating_add(desc.len() as usize);
        descs.push((desc.addr(), desc.len() as usize));
    }
    let mut bytes = Vec::with_capacity(total.min(MAX_TX_CHAIN_BYTES));
    for (addr, len) in descs {
        let take = len.min(MAX_TX_CHAIN_BYTES - bytes.len());
        if take == 0 {
            break;
        }
        let start = bytes.len();
        bytes.resize(start + take, 0);
        mem.read_slice(&mut bytes[start..], addr)
            .map_err(|_| ChainError::OutOfRange {
                addr: addr.0,
                len: take as u32,
            })?;
    }
    Ok((bytes, total > MAX_TX_CHAIN_BYTES))
}

/// Fills a receive chain (device-writable buffers only, all inside guest
/// memory) from `pending`; returns the bytes written. A bad chain gets
/// nothing and consumes no input.
fn write_rx_chain(
    mem: &GuestMemoryMmap,
    chain: DescriptorChain<&GuestMemoryMmap>,
    pending: &mut InputQueue,
) -> Result<u32, ChainError> {
    let mut descs = Vec::new();
    for desc in chain {
        if !desc.is_write_only() {
            return Err(ChainError::ReadOnlyInReceive);
        }
        check(mem, desc.addr(), desc.len())?;
        descs.push((desc.addr(), desc.len() as usize));
    }
    let mut written = 0usize;
    for (addr, len) in descs {
        if pending.is_empty() {
            break;
        }
        let data = pending.front(len);
        let n = data.len();
        // Checked above; should the write still fail, the guest gets what
        // was written so far and the rest stays queued.
        if mem.write_slice(data, addr).is_err() {
            break;
        }
        pending.consume(n);
        written += n;
    }
    // At most MAX_PENDING_INPUT bytes were queued, so this fits.
    Ok(u32::try_from(written).unwrap_or(u32::MAX))
}

fn check(mem: &GuestMemoryMmap, addr: GuestAddress, len: u32) -> Result<(), ChainError> {
    if mem.check_range(addr, len as usize) {
        Ok(())
    } else {
        Err(ChainError::OutOfRange { addr: addr.0, len })
    }
}
