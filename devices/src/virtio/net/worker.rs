//! The virtio-net worker: moves frames between the backend (tap) and the
//! guest's buffers.
//!
//! Besides the queue kicks its event loop watches the backend fd (readable:
//! a frame is queued; writable: room for a frame that waits). When the guest
//! has no receive buffers the backend is taken out of the set until the
//! guest posts more (its kick brings it back), so the thread sleeps instead
//! of spinning and frames wait in the tap's queue, which drops beyond its
//! length like a NIC's ring would.
//!
//! Rate limiters (`--net ...,bw=...,ops=...`): each direction has its own.
//! A frame costs one operation and its length (the virtio-net header
//! included). Transmit checks before sending: a refused frame stays on the
//! queue. Receive learns a frame's length only from the read, so it checks
//! that one more frame may start, reads, and then takes the frame's cost
//! (which may leave a debt, as in Firecracker); while it is limited the
//! tap is not read and frames wait in its queue. Malformed chains, dropped
//! without touching the tap, cost nothing.

use std::io;
use std::sync::Arc;

use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vmm_sys_util::epoll::EventSet;

use super::iovec::{IoVecError, IoVecs};
use super::tap::NetBackend;
use super::{
    check_tx_header, ETH_HLEN, F_GUEST_CSUM, MAX_FRAME_LEN, QUEUE_SIZE, VNET_HDR_LEN,
    VNET_HDR_NUM_BUFFERS,
};
use super::{RX_QUEUE, TX_QUEUE};
use crate::log_limit::LoggedKinds;
use crate::virtio::event_loop::event_token;
use crate::virtio::rate_limiter::RateLimiter;
use crate::virtio::{GuestMemoryMmap, Interrupt, WaitContext, Worker};

/// Most chains handled per wake-up and queue, so that one busy direction
/// cannot starve the other or delay a kill.
const BATCH: usize = QUEUE_SIZE as usize;

event_token! {
    /// The worker's own event sources.
    pub enum Token {
        /// The backend (tap) is readable or writable.
        Backend,
        /// The receive rate limiter's timer.
        RxLimit,
        /// The transmit rate limiter's timer.
        TxLimit,
    }
}

/// The rate limiters of one card, one per direction; kept across resets
/// with the backend.
#[derive(Debug)]
pub struct NetLimiters {
    /// Frames to the guest.
    pub rx: RateLimiter,
    /// Frames from the guest.
    pub tx: RateLimiter,
}

impl NetLimiters {
    /// No limits.
    pub fn unlimited() -> Self {
        Self {
            rx: RateLimiter::unlimited(),
            tx: RateLimiter::unlimited(),
        }
    }
}

/// Why a chain or frame was dropped; each kind is logged once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DropReason {
    RxReadOnly,
    RxTooSmall,
    RxBadBuffer,
    RxTruncated,
    RxBackend,
    TxWritable,
    TxBadBuffer,
    TxSize,
    TxHeader,
    TxBackend,
    UsedRing,
    AvailIndex,
}

impl DropReason {
    fn describe(self) -> &'static str {
        match self {
            DropReason::RxReadOnly => "receive chain with a device-readable descriptor",
            DropReason::RxTooSmall => "receive chain too small for the virtio-net header",
            DropReason::RxBadBuffer => "receive buffer outside guest memory or too fragmented",
            DropReason::RxTruncated => "received frame larger than the guest buffer",
            DropReason::RxBackend => "backend read failed",
            DropReason::TxWritable => "transmit chain with a device-writable descriptor",
            DropReason::TxBadBuffer => "transmit buffer outside guest memory or too fragmented",
            DropReason::TxSize => {
                "transmit frame shorter than an Ethernet header or larger than 64 KiB"
            }
            DropReason::TxHeader => "transmit header asks for an offload that was not negotiated",
            DropReason::TxBackend => "backend write failed",
            DropReason::UsedRing => "cannot publish a used buffer",
            DropReason::AvailIndex => {
                "avail index more than a queue size ahead; waiting for the next kick"
            }
        }
    }
}

/// Frame counters of one activation.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NetStats {
    /// Frames delivered to the guest.
    pub rx_frames: u64,
    /// Bytes delivered to the guest (headers included).
    pub rx_bytes: u64,
    /// Receive chains returned unused or frames dropped.
    pub rx_dropped: u64,
    /// Frames sent to the backend.
    pub tx_frames: u64,
    /// Bytes sent to the backend (headers included).
    pub tx_bytes: u64,
    /// Transmit chains dropped.
    pub tx_dropped: u64,
}

/// How a receive pass ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxStatus {
    /// The backend has no more frames; keep watching it.
    BackendEmpty,
    /// The guest has no more buffers (notifications are on); stop watching
    /// the backend until the guest kicks the receive queue.
    NoBuffers,
    /// The batch limit was reached; the backend may still be readable.
    Budget,
    /// The rate limiter stops receiving until its timer fires.
    Limited,
}

/// How a transmit pass ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxStatus {
    /// Every posted chain was handled.
    Done,
    /// The batch limit was reached; more chains may wait (the worker kicks
    /// the queue again to come back after the other events).
    More,
    /// The backend has no room; the next frame stays queued until it is
    /// writable.
    Blocked,
    /// The rate limiter refused the next frame; it stays queued until the
    /// limiter's timer fires.
    Limited,
}

/// Everything the worker owns; returned when it stops.
pub struct NetWorker {
    mem: GuestMemoryMmap,
    interrupt: Arc<Interrupt>,
    rx: Queue,
    tx: Queue,
    backend: Box<dyn NetBackend>,
    acked_features: u64,
    iovs: IoVecs,
    warned: LoggedKinds,
    stats: NetStats,
    /// The guest has receive buffers: watch the backend for frames.
    rx_wanted: bool,
    /// A transmit frame waits for room: watch the backend for that.
    tx_blocked: bool,
    /// The backend hung up: stop watching it rather than spin.
    backend_gone: bool,
    /// What the backend is watched for now.
    watched: EventSet,
    /// Kept across resets with the backend.
    limiters: NetLimiters,
}

impl NetWorker {
    /// Creates a worker for an activated device (`queues`: receive,
    /// transmit).
    pub fn new(
        mem: GuestMemoryMmap,
        interrupt: Arc<Interrupt>,
        queues: [Queue; 2],
        backend: Box<dyn NetBackend>,
        acked_features: u64,
    ) -> Self {
        let [rx, tx] = queues;
        let iovs = IoVecs::new(mem.clone());
        Self {
            mem,
            interrupt,
            rx,
            tx,
            backend,
            acked_features,
            iovs,
            warned: LoggedKinds::default(),
            stats: NetStats::default(),
            rx_wanted: false,
            tx_blocked: false,
            backend_gone: false,
            watched: EventSet::empty(),
            limiters: NetLimiters::unlimited(),
        }
    }

    /// The worker with `limiters` (the device's, kept across resets).
    pub fn with_rate_limiters(mut self, limiters: NetLimiters) -> Self {
        self.limiters = limiters;
        self
    }

    /// Receives, and watches the backend afterwards only if frames may
    /// still be there and room and budget remain for them.
    fn serve_rx(&mut self) {
        self.rx_wanted = matches!(self.process_rx(), RxStatus::BackendEmpty | RxStatus::Budget);
    }

    /// Counters so far.
    pub fn stats(&self) -> NetStats {
        self.stats
    }

    /// Sends transmit chains unless a frame already waits for room.
    fn serve_tx(&mut self, ctx: &WaitContext<Token>) {
        if self.tx_blocked {
            return;
        }
        match self.process_tx() {
            TxStatus::Done => {}
            // Come back after the other events.
            TxStatus::More => ctx.kick_queue(TX_QUEUE),
            TxStatus::Blocked => self.tx_blocked = true,
            // The limiter's timer brings it back.
            TxStatus::Limited => {}
        }
    }

    /// Brings the backend's registration in line with what the worker
    /// wants from it: IN while the guest has receive buffers, OUT while a
    /// transmit frame waits for room, nothing once it hung up.
    fn watch_backend(&mut self, ctx: &WaitContext<Token>) {
        let mut want = EventSet::empty();
        if !self.backend_gone {
            if self.rx_wanted {
                want |= EventSet::IN;
            }
            if self.tx_blocked {
                want |= EventSet::OUT;
            }
        }
        let fd = self.backend.as_raw_fd();
        if let Err(e) = ctx.set_watch(&fd, &mut self.watched, want, Token::Backend) {
            crate::guest_error!("virtio-net: cannot watch the backend: {e}");
        }
    }

    fn drop_chain(&mut self, why: DropReason) {
        if self.warned.first(why as u32) {
            crate::guest_warn!(
                "virtio-net: dropped: {} (further drops of this kind are not logged)",
                why.describe()
            );
        }
    }

    fn add_used(&mut self, queue: usize, head: u16, len: usize) {
        let q = if queue == RX_QUEUE {
            &mut self.rx
        } else {
            &mut self.tx
        };
        if q.add_used(&self.mem, head, len as u32).is_err() {
            self.drop_chain(DropReason::UsedRing);
        }
    }

    fn notify(&mut self, queue: usize) {
        let q = if queue == RX_QUEUE {
            &mut self.rx
        } else {
            &mut self.tx
        };
        self.interrupt.notify_used(q, &self.mem);
    }

    /// Moves frames from the backend into receive buffers until one side
    /// runs out (or [`BATCH`] chains were used).
    pub fn process_rx(&mut self) -> RxStatus {
        let mut used = 0;
        // Chains used when notifications were last re-enabled.
        let mut used_at_enable = None;
        let status = loop {
            if used == BATCH {
                break RxStatus::Budget;
            }
            if !self.limiters.rx.ready() {
                break RxStatus::Limited;
            }
            let Some(chain) = self.rx.pop_descriptor_chain(&self.mem) else {
                // Out of buffers: ask for a kick, unless some arrived
                // meanwhile.
                match self.rx.enable_notification(&self.mem) {
                    // "More" that cannot be popped (the avail index runs
                    // more than a queue size ahead): stop, don't spin.
                    Ok(true) if used_at_enable == Some(used) => {
                        self.drop_chain(DropReason::AvailIndex);
                        break RxStatus::NoBuffers;
                    }
                    Ok(true) => {
                        used_at_enable = Some(used);
                        continue;
                    }
                    Ok(false) => break RxStatus::NoBuffers,
                    Err(_) => {
                        self.drop_chain(DropReason::UsedRing);
                        break RxStatus::NoBuffers;
                    }
                }
            };
            let head = chain.head_index();
            if let Err(why) = map_rx_chain(&mut self.iovs, chain) {
                self.drop_chain(why);
                self.stats.rx_dropped += 1;
                self.add_used(RX_QUEUE, head, 0);
                used += 1;
                continue;
            }
            match self.backend.recv(&self.iovs) {
                Ok(n) if n > self.iovs.len() => {
                    // A NIC drops what does not fit; the driver sees a
                    // zero-length (error) buffer and reposts it.
                    self.drop_chain(DropReason::RxTruncated);
                    self.stats.rx_dropped += 1;
                    self.add_used(RX_QUEUE, head, 0);
                }
                Ok(n) => {
                    self.limiters.rx.consume_after(1, n as u64);
                    self.fix_rx_header();
                    self.stats.rx_frames += 1;
                    self.stats.rx_bytes += n as u64;
                    self.add_used(RX_QUEUE, head, n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.rx.go_to_previous_position();
                    break RxStatus::BackendEmpty;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    self.rx.go_to_previous_position();
                    continue;
                }
                Err(e) => {
                    tracing::debug!("virtio-net: backend read: {e}");
                    self.drop_chain(DropReason::RxBackend);
                    self.stats.rx_dropped += 1;
                    self.add_used(RX_QUEUE, head, 0);
                }
            }
            used += 1;
        };
        if used > 0 {
            self.notify(RX_QUEUE);
        }
        if status != RxStatus::NoBuffers {
            // While buffers last, the guest need not kick (no-op with
            // EVENT_IDX, where the last enable_notification decides).
            let _ = self.rx.disable_notification(&self.mem);
        }
        status
    }

    /// Header fix-ups the tap does not do: `num_buffers` is 1 (one chain per
    /// frame without MRG_RXBUF) and, when the driver did not ack
    /// GUEST_CSUM, no checksum flags.
    fn fix_rx_header(&mut self) {
        self.iovs
            .write_at(VNET_HDR_NUM_BUFFERS, &1u16.to_le_bytes());
        if self.acked_features & F_GUEST_CSUM == 0 {
            self.iovs.write_at(0, &[0]);
        }
    }

    /// Sends every posted transmit chain, at most [`BATCH`] per call
    /// ([`TxStatus::More`] when it stopped there). A frame the backend has no
    /// room for stays on the queue: [`TxStatus::Blocked`].
    pub fn process_tx(&mut self) -> TxStatus {
        let mut used = 0;
        let mut status = TxStatus::Done;
        'outer: loop {
            let _ = self.tx.disable_notification(&self.mem);
            let before = used;
            while let Some(chain) = self.tx.pop_descriptor_chain(&self.mem) {
                let head = chain.head_index();
                let mapped = map_tx_chain(&mut self.iovs, chain, self.acked_features);
                if mapped.is_ok() && !self.limiters.tx.consume(1, self.iovs.len() as u64) {
                    // Sent first once the limiter's timer fires.
                    self.tx.go_to_previous_position();
                    status = TxStatus::Limited;
                    break 'outer;
                }
                match mapped {
                    Ok(()) => match self.backend.send(&self.iovs) {
                        Ok(n) => {
                            self.stats.tx_frames += 1;
                            self.stats.tx_bytes += n as u64;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            // Like a full NIC ring: keep the frame, wait
                            // until the backend is writable.
                            self.tx.go_to_previous_position();
                            status = TxStatus::Blocked;
                            break 'outer;
                        }
                        Err(e) => {
                            tracing::debug!("virtio-net: backend write: {e}");
                            self.drop_chain(DropReason::TxBackend);
                            self.stats.tx_dropped += 1;
                        }
                    },
                    Err(why) => {
                        self.drop_chain(why);
                        self.stats.tx_dropped += 1;
                    }
                }
                // The device writes nothing into transmit buffers.
                self.add_used(TX_QUEUE, head, 0);
                used += 1;
                if used == BATCH {
                    status = TxStatus::More;
                    break 'outer;
                }
            }
            match self.tx.enable_notification(&self.mem) {
                Ok(true) if used > before => continue,
                // "More" that cannot be popped (the avail index runs more
                // than a queue size ahead): stop, don't spin.
                Ok(true) => {
                    self.drop_chain(DropReason::AvailIndex);
                    break;
                }
                Ok(false) => break,
                Err(_) => {
                    self.drop_chain(DropReason::UsedRing);
                    break;
                }
            }
        }
        if used > 0 {
            self.notify(TX_QUEUE);
        }
        status
    }
}

impl Worker for NetWorker {
    type Token = Token;
    type Backend = (Box<dyn NetBackend>, NetLimiters);
    const NAME: &'static str = "virtio-net";
    const THREAD_NAME: &'static str = "v_net";

    fn register(&mut self, ctx: &WaitContext<Token>) -> io::Result<()> {
        if let Some(timer) = self.limiters.rx.timer() {
            ctx.add(timer, EventSet::IN, Token::RxLimit)?;
        }
        if let Some(timer) = self.limiters.tx.timer() {
            ctx.add(timer, EventSet::IN, Token::TxLimit)?;
        }
        Ok(())
    }

    fn on_queue(&mut self, ctx: &WaitContext<Token>, index: usize) {
        if index == RX_QUEUE {
            self.serve_rx();
        } else {
            self.serve_tx(ctx);
        }
    }

    fn on_event(&mut self, ctx: &WaitContext<Token>, token: Token, events: EventSet) {
        match token {
            Token::Backend => {
                if events.intersects(EventSet::HANG_UP | EventSet::ERROR)
                    && !events.intersects(EventSet::IN | EventSet::OUT)
                {
                    // Nothing more will come; stop watching rather than
                    // spin. Frames sent from now on fail and are dropped.
                    crate::guest_error!("virtio-net: the backend hung up");
                    self.backend_gone = true;
                }
                if events.contains(EventSet::OUT) && self.tx_blocked {
                    self.tx_blocked = false;
                    self.serve_tx(ctx);
                }
                if events.contains(EventSet::IN) && self.rx_wanted {
                    self.serve_rx();
                }
            }
            Token::RxLimit => {
                self.limiters.rx.on_timer();
                self.serve_rx();
            }
            Token::TxLimit => {
                self.limiters.tx.on_timer();
                self.serve_tx(ctx);
            }
        }
    }

    fn after_events(&mut self, ctx: &WaitContext<Token>) {
        self.watch_backend(ctx);
    }

    fn on_stop(&mut self, _ctx: &WaitContext<Token>) {
        tracing::debug!("virtio-net: stopping, {:?}", self.stats);
    }

    fn into_backend(self) -> (Box<dyn NetBackend>, NetLimiters) {
        (self.backend, self.limiters)
    }
}

/// Maps a receive chain's buffers into `iovs`.
fn map_rx_chain(
    iovs: &mut IoVecs,
    chain: DescriptorChain<&GuestMemoryMmap>,
) -> Result<(), DropReason> {
    iovs.clear();
    for desc in chain {
        if !desc.is_write_only() {
            return Err(DropReason::RxReadOnly);
        }
        iovs.push(desc.addr(), desc.len() as usize)
            .map_err(|_: IoVecError| DropReason::RxBadBuffer)?;
    }
    if iovs.len() < VNET_HDR_LEN {
        return Err(DropReason::RxTooSmall);
    }
    Ok(())
}

/// Maps a transmit chain's buffers into `iovs` and checks the frame against
/// the size limits and the negotiated offloads.
fn map_tx_chain(
    iovs: &mut IoVecs,
    chain: DescriptorChain<&GuestMemoryMmap>,
    acked_features: u64,
) -> Result<(), DropReason> {
    iovs.clear();
    let mut total = 0usize;
    for desc in chain {
        if desc.is_write_only() {
            return Err(DropReason::TxWritable);
        }
        total += desc.len() as usize;
        if total > VNET_HDR_LEN + MAX_FRAME_LEN {
            return Err(DropReason::TxSize);
        }
        iovs.push(desc.addr(), desc.len() as usize)
            .map_err(|_: IoVecError| DropReason::TxBadBuffer)?;
    }
    if total < VNET_HDR_LEN + ETH_HLEN {
        return Err(DropReason::TxSize);
    }
    let mut hdr = [0u8; VNET_HDR_LEN];
    if iovs.read_at(0, &mut hdr) != VNET_HDR_LEN {
        return Err(DropReason::TxBadBuffer);
    }
    check_tx_header(&hdr, acked_features).map_err(|_| DropReason::TxHeader)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::GuestAddress;
    use vmm_sys_util::eventfd::EventFd;

    use super::*;
    use crate::virtio::event_loop;
    use crate::virtio::net::test_backend::backend_pair;
    use crate::virtio::net::OFFERED_FEATURES;
    use crate::virtio::test_utils::{guest_memory, DATA_START, VRING_DESC_F_WRITE};
    use crate::virtio::VIRTIO_F_VERSION_1;

    /// CPU time (user + system, in clock ticks) of thread `tid` of this
    /// process.
    fn cpu_ticks(tid: &str) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
        // Fields after "(comm)": state is field 3, utime 14, stime 15.
        let rest = &stat[stat.rfind(')').unwrap() + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }

    fn find_thread(name: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            for task in std::fs::read_dir("/proc/self/task").unwrap() {
                let task = task.unwrap().path();
                if std::fs::read_to_string(task.join("comm")).is_ok_and(|c| c.trim() == name) {
                    return task.file_name().unwrap().to_string_lossy().into_owned();
                }
            }
            assert!(Instant::now() < deadline, "thread {name} not found");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// With frames waiting in the backend and no receive buffers, the worker
    /// sleeps (the tap leaves the epoll set) instead of spinning; a buffer
    /// posted later gets the frame.
    #[test]
    fn starved_worker_sleeps() {
        let mem = guest_memory();
        let rxq = MockSplitQueue::create(&mem, GuestAddress(0x10_0000), 256);
        let txq = MockSplitQueue::create(&mem, GuestAddress(0x20_0000), 256);
        let mut rx = rxq.create_queue::<Queue>().unwrap();
        let mut tx = txq.create_queue::<Queue>().unwrap();
        rx.set_event_idx(true);
        tx.set_event_idx(true);
        let rx_kick = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let tx_kick = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let interrupt = Arc::new(Interrupt::new(EventFd::new(libc::EFD_NONBLOCK).unwrap()));
        let (backend, peer) = backend_pair();
        let frame: Vec<u8> = (0..100u8).collect();
        for _ in 0..3 {
            peer.send(&frame);
        }
        let worker = NetWorker::new(
            mem.clone(),
            interrupt,
            [rx, tx],
            backend,
            OFFERED_FEATURES | VIRTIO_F_VERSION_1,
        );
        let kicks = vec![rx_kick.try_clone().unwrap(), tx_kick.try_clone().unwrap()];
        let Ok(thread) = event_loop::start(worker, kicks, "vnet-idle-test") else {
            panic!("worker did not start");
        };
        let tid = find_thread("vnet-idle-test");
        std::thread::sleep(Duration::from_millis(100));
        let before = cpu_ticks(&tid);
        std::thread::sleep(Duration::from_millis(1000));
        let spent = cpu_ticks(&tid) - before;
        // A spinning worker would burn about 100 ticks here.
        assert!(spent <= 10, "idle worker used {spent} ticks in 1 s");
        // A buffer posted now gets the first frame.
        let desc = SplitDescriptor::new(DATA_START, 2048, VRING_DESC_F_WRITE, 0);
        rxq.add_desc_chains(&[RawDescriptor::from(desc)], 0)
            .unwrap();
        rx_kick.write(1).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while rxq.used().idx().load() < 1 {
            assert!(Instant::now() < deadline, "frame not delivered");
            std::thread::sleep(Duration::from_millis(1));
        }
        let elem = rxq.used().ring().ref_at(0).unwrap().load();
        assert_eq!((elem.id(), elem.len()), (0, 100));
        let worker = thread.stop().expect("worker handed back");
        assert_eq!(worker.stats().rx_frames, 1);
    }

    /// Found by the `net` fuzz target: an avail index more than a queue
    /// size ahead made `process_tx` and `process_rx` spin forever (nothing
    /// to pop, yet `enable_notification` kept reporting more).
    #[test]
    fn avail_index_far_ahead_does_not_spin() {
        let mem = guest_memory();
        let rxq = MockSplitQueue::create(&mem, GuestAddress(0x10_0000), 16);
        let txq = MockSplitQueue::create(&mem, GuestAddress(0x20_0000), 16);
        let rx = rxq.create_queue::<Queue>().unwrap();
        let tx = txq.create_queue::<Queue>().unwrap();
        rxq.avail().idx().store(200);
        txq.avail().idx().store(200);
        let (backend, peer) = backend_pair();
        peer.send(&[0u8; 100]);
        let mut worker = NetWorker::new(
            mem.clone(),
            Arc::new(Interrupt::new(EventFd::new(libc::EFD_NONBLOCK).unwrap())),
            [rx, tx],
            backend,
            OFFERED_FEATURES | VIRTIO_F_VERSION_1,
        );
        let (done, finished) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let _ = done.send((worker.process_tx(), worker.process_rx()));
            worker
        });
        let (tx_status, rx_status) = finished
            .recv_timeout(Duration::from_secs(5))
            .expect("the worker spun on a bad avail index");
        assert_eq!(
            (tx_status, rx_status),
            (TxStatus::Done, RxStatus::NoBuffers)
        );
        let mut worker = thread.join().unwrap();

        // Once the guest repairs its ring, the waiting frame is delivered.
        rxq.avail().idx().store(0);
        let desc = SplitDescriptor::new(DATA_START, 2048, VRING_DESC_F_WRITE, 0);
        rxq.add_desc_chains(&[RawDescriptor::from(desc)], 0)
            .unwrap();
        worker.process_rx();
        assert_eq!(worker.stats().rx_frames, 1);
        drop(peer);
    }
}
