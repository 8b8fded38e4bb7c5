//! The virtio-console worker thread: moves guest output to the backend and
//! host input into the guest's receive buffers.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use virtio_queue::{DescriptorChain, Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::backend::{ConsoleBackend, InputQueue, Source, Watch};
use super::MAX_TX_CHAIN_BYTES;
use crate::virtio::{GuestMemoryMmap, Interrupt};

/// What woke the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    RxQueue,
    TxQueue,
    Kill,
    Backend(Source),
}

impl Token {
    fn to_data(self) -> u64 {
        match self {
            Token::RxQueue => 0,
            Token::TxQueue => 1,
            Token::Kill => 2,
            Token::Backend(Source::Input) => 3,
            Token::Backend(Source::Listener) => 4,
            Token::Backend(Source::Client) => 5,
        }
    }

    fn from_data(data: u64) -> Option<Self> {
        Some(match data {
            0 => Token::RxQueue,
            1 => Token::TxQueue,
            2 => Token::Kill,
            3 => Token::Backend(Source::Input),
            4 => Token::Backend(Source::Listener),
            5 => Token::Backend(Source::Client),
            _ => return None,
        })
    }
}

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
    Transmit = 1,
    Receive = 2,
    Oversize = 4,
    Publish = 8,
}

/// Everything the worker owns; returned when it stops.
pub struct ConsoleWorker {
    mem: GuestMemoryMmap,
    interrupt: Arc<Interrupt>,
    rx: Queue,
    tx: Queue,
    rx_event: EventFd,
    tx_event: EventFd,
    port: Port,
    warned: u8,
}

/// The epoll set and what is registered in it for each backend source.
struct Watcher {
    epoll: Epoll,
    current: [Option<Watch>; Source::ALL.len()],
}

impl Watcher {
    fn add(&self, fd: RawFd, events: EventSet, token: Token) -> std::io::Result<()> {
        self.epoll.ctl(
            ControlOperation::Add,
            fd,
            EpollEvent::new(events, token.to_data()),
        )
    }

    /// Brings the registrations in line with what `backend` wants now.
    fn sync(&mut self, backend: &mut ConsoleBackend, want_input: bool) {
        for (i, source) in Source::ALL.into_iter().enumerate() {
            let wanted = backend.watch(source, want_input);
            let current = self.current[i];
            if wanted == current {
                continue;
            }
            let token = Token::Backend(source);
            match (current, wanted) {
                (Some(cur), Some(new)) if cur.fd == new.fd && cur.generation == new.generation => {
                    let event = EpollEvent::new(new.events, token.to_data());
                    if let Err(e) = self.epoll.ctl(ControlOperation::Modify, new.fd, event) {
                        tracing::warn!("virtio-console: cannot change a watch: {e}");
                        continue;
                    }
                    self.current[i] = wanted;
                }
                _ => {
                    if let Some(cur) = current {
                        // Fails harmlessly if the descriptor was already
                        // closed (which removed it from the set).
                        let _ =
                            self.epoll
                                .ctl(ControlOperation::Delete, cur.fd, EpollEvent::default());
                        self.current[i] = None;
                    }
                    if let Some(new) = wanted {
                        match self.add(new.fd, new.events, token) {
                            Ok(()) => self.current[i] = Some(new),
                            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                                backend.set_unpollable(source);
                            }
                            Err(e) => {
                                tracing::warn!("virtio-console: cannot watch {source:?}: {e}")
                            }
                        }
                    }
                }
            }
        }
    }
}

impl ConsoleWorker {
    /// Creates a worker for an activated device.
    pub fn new(
        mem: GuestMemoryMmap,
        interrupt: Arc<Interrupt>,
        queues: [Queue; 2],
        events: [EventFd; 2],
        port: Port,
    ) -> Self {
        let [rx, tx] = queues;
        let [rx_event, tx_event] = events;
        Self {
            mem,
            interrupt,
            rx,
            tx,
            rx_event,
            tx_event,
            port,
            warned: 0,
        }
    }

    /// Gives back the host-side state.
    pub fn into_port(self) -> Port {
        self.port
    }

    /// The host-side state, for the fuzz targets (not a stable API).
    #[doc(hidden)]
    pub fn port_mut(&mut self) -> &mut Port {
        &mut self.port
    }

    /// Serves the queues and the backend until `kill` is signalled.
    pub fn run(mut self, kill: EventFd) -> Self {
        let epoll = match Epoll::new() {
            Ok(e) => e,
            Err(e) => {
                tracing::error!("virtio-console: cannot create epoll: {e}");
                return self;
            }
        };
        let mut watcher = Watcher {
            epoll,
            current: [None; Source::ALL.len()],
        };
        for (fd, token) in [
            (self.rx_event.as_raw_fd(), Token::RxQueue),
            (self.tx_event.as_raw_fd(), Token::TxQueue),
            (kill.as_raw_fd(), Token::Kill),
        ] {
            if let Err(e) = watcher.add(fd, EventSet::IN, token) {
                tracing::error!("virtio-console: cannot watch eventfd: {e}");
                return self;
            }
        }
        // Buffers may have been posted before the worker started.
        self.process_tx();
        self.pump_input();
        let mut events = vec![EpollEvent::default(); 8];
        loop {
            let want_input = self.port.pending.room() > 0;
            watcher.sync(&mut self.port.backend, want_input);
            let timeout = self
                .port
                .backend
                .retry_after()
                .map_or(-1, |d| i32::try_from(d.as_millis()).unwrap_or(i32::MAX));
            let n = match watcher.epoll.wait(timeout, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::error!("virtio-console: epoll failed: {e}");
                    return self;
                }
            };
            self.port.wakeups += 1;
            if n == 0 {
                self.port.backend.on_timeout();
            }
            for event in &events[..n] {
                match Token::from_data(event.data()) {
                    Some(Token::RxQueue) => {
                        // Delivery happens below, after every event.
                        let _ = self.rx_event.read();
                    }
                    Some(Token::TxQueue) => {
                        let _ = self.tx_event.read();
                        self.process_tx();
                    }
                    Some(Token::Kill) => return self,
                    Some(Token::Backend(source)) => {
                        let set = EventSet::from_bits_truncate(event.events());
                        self.port
                            .backend
                            .on_ready(source, set, &mut self.port.pending);
                    }
                    None => {}
                }
            }
            self.pump_input();
        }
    }

    fn warn_once(&mut self, kind: Warn, what: &str) {
        if self.warned & kind as u8 == 0 {
            self.warned |= kind as u8;
            tracing::warn!("virtio-console: {what} (logged once)");
        }
    }

    fn notify(&mut self, queue: usize) {
        let q = if queue == super::RX_QUEUE {
            &mut self.rx
        } else {
            &mut self.tx
        };
        match q.needs_notification(&self.mem) {
            Ok(false) => {}
            Ok(true) | Err(_) => self.interrupt.signal_used_queue(),
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
            self.notify(super::TX_QUEUE);
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
            self.notify(super::RX_QUEUE);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        for token in [
            Token::RxQueue,
            Token::TxQueue,
            Token::Kill,
            Token::Backend(Source::Input),
            Token::Backend(Source::Listener),
            Token::Backend(Source::Client),
        ] {
            assert_eq!(Token::from_data(token.to_data()), Some(token));
        }
        assert_eq!(Token::from_data(99), None);
    }
}
