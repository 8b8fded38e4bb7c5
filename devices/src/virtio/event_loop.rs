//! The one event loop every device worker runs: an epoll set with typed
//! tokens, on the worker's own thread.
//!
//! ```text
//!  WaitContext<W::Token> (one epoll set)         the loop calls
//!  ─────────────────────────────────────         ───────────────────────────────
//!  kill eventfd            (the loop's)     ──►  W::on_stop, then returns W
//!  queue i kick eventfd    (the loop's)     ──►  drains it, W::on_queue(i)
//!  the worker's own fds    (W::Token)       ──►  W::on_event(token, events)
//!  nothing before W::timeout()              ──►  W::on_timeout
//!                                 after every wake-up: W::after_events
//! ```
//!
//! The kill event, the queue kicks and `EINTR` are handled here, once, for
//! every device. A worker names its own event sources (a tap, host sockets)
//! with an enum declared through [`event_token!`]: the context only accepts
//! and only returns values of that enum, so a worker's `match` covers every
//! case and an unknown token cannot reach it. Workers that watch only their
//! queues use [`NoToken`], which has no values at all.
//!
//! Why our own loop rather than rust-vmm's `event-manager` (0.4.2 builds
//! with our vmm-sys-util 0.15): see "Event loop" in `docs/devices.md`.
//!
//! Past 800 lines only with its unit tests (the loop itself is ~550).

use std::fmt::Debug;
use std::io;
use std::marker::PhantomData;
use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::time::Duration;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

/// A worker's own event source, as epoll user data.
///
/// Declare token enums with [`event_token!`] rather than implementing this
/// by hand.
pub trait EventToken: Copy + Debug + Send + 'static {
    /// Encodes the token. The top bit must be clear (it marks the loop's own
    /// events); [`WaitContext::add`] refuses tokens that set it.
    fn to_raw(self) -> u64;
    /// Decodes what [`Self::to_raw`] produced; `None` for anything else.
    fn from_raw(raw: u64) -> Option<Self>;
}

/// A value a token variant carries (a connection id, a backend source):
/// 32 bits of the token's encoding.
pub trait TokenPayload: Copy {
    /// Encodes the value.
    fn to_u32(self) -> u32;
    /// Decodes what [`Self::to_u32`] produced.
    fn from_u32(value: u32) -> Option<Self>;
}

impl TokenPayload for u32 {
    fn to_u32(self) -> u32 {
        self
    }
    fn from_u32(value: u32) -> Option<Self> {
        Some(value)
    }
}

/// Declares an enum of event tokens and its [`EventToken`] encoding (the
/// variant's index in the high 32 bits, its payload in the low 32). Variants
/// are units or carry one [`TokenPayload`] (`u32`, or another enum that
/// implements it):
///
/// ```text
/// event_token! {
///     /// What woke the worker.
///     pub enum Token {
///         /// The tap.
///         Backend,
///         /// A connection's socket.
///         Conn(u32),
///     }
/// }
/// ```
///
/// The enum derives `Debug, Clone, Copy, PartialEq, Eq`.
macro_rules! event_token {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident $( ( $payload:ty ) )? ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant $( ( $payload ) )? ),+
        }

        impl $crate::virtio::event_loop::EventToken for $name {
            fn to_raw(self) -> u64 {
                #[allow(dead_code)]
                enum Kind { $( $variant ),+ }
                match self {
                    $(
                        $crate::virtio::event_loop::event_token!(@pattern $name, $variant, value $(, $payload)?)
                            => $crate::virtio::event_loop::event_token!(@encode Kind::$variant as u64, value $(, $payload)?),
                    )+
                }
            }

            fn from_raw(raw: u64) -> Option<Self> {
                #[allow(dead_code)]
                enum Kind { $( $variant ),+ }
                let kind = raw >> 32;
                let low = raw as u32;
                $(
                    if kind == Kind::$variant as u64 {
                        return $crate::virtio::event_loop::event_token!(@decode $name, $variant, low $(, $payload)?);
                    }
                )+
                None
            }
        }
    };
    (@pattern $name:ident, $variant:ident, $value:ident) => { $name::$variant };
    (@pattern $name:ident, $variant:ident, $value:ident, $payload:ty) => { $name::$variant($value) };
    (@encode $kind:expr, $value:ident) => { $kind << 32 };
    (@encode $kind:expr, $value:ident, $payload:ty) => {
        ($kind << 32) | u64::from(<$payload as $crate::virtio::event_loop::TokenPayload>::to_u32($value))
    };
    (@decode $name:ident, $variant:ident, $low:ident) => { ($low == 0).then_some($name::$variant) };
    (@decode $name:ident, $variant:ident, $low:ident, $payload:ty) => {
        <$payload as $crate::virtio::event_loop::TokenPayload>::from_u32($low).map($name::$variant)
    };
}
pub(crate) use event_token;

/// The token of a worker that watches nothing but its queues: it has no
/// values, so such a worker can never be handed one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoToken {}

impl EventToken for NoToken {
    fn to_raw(self) -> u64 {
        match self {}
    }
    fn from_raw(_raw: u64) -> Option<Self> {
        None
    }
}

/// Epoll data with this bit set belongs to the loop, not to the worker.
const LOOP_BIT: u64 = 1 << 63;
/// The kill event's epoll data.
const KILL_RAW: u64 = LOOP_BIT;

/// Epoll data of queue `index`'s kick eventfd.
fn queue_raw(index: usize) -> u64 {
    LOOP_BIT | (index as u64 + 1)
}

/// What one epoll event is about.
enum Ready<T> {
    Kill,
    Queue(usize),
    Source(T, EventSet),
}

/// Most events handled per wait.
const EVENT_BATCH: usize = 64;

/// One worker's epoll set: its queues' kick eventfds and kill eventfd
/// (the loop's) and its own sources, named by `T`.
pub struct WaitContext<T: EventToken> {
    epoll: Epoll,
    queue_events: Vec<EventFd>,
    /// Kept open so that its registration lives as long as the set.
    _kill: Option<EventFd>,
    _token: PhantomData<fn() -> T>,
}

impl<T: EventToken> WaitContext<T> {
    /// An empty set with no queues and no kill event (tests and fuzz
    /// targets that drive a worker's parts by hand).
    pub fn new() -> io::Result<Self> {
        Ok(Self {
            epoll: Epoll::new()?,
            queue_events: Vec::new(),
            _kill: None,
            _token: PhantomData,
        })
    }

    /// The set a device worker waits on: `queue_events[i]` is queue `i`'s
    /// kick, `kill` ends the loop.
    fn for_worker(queue_events: Vec<EventFd>, kill: EventFd) -> io::Result<Self> {
        let ctx = Self {
            epoll: Epoll::new()?,
            queue_events,
            _kill: None,
            _token: PhantomData,
        };
        for (i, event) in ctx.queue_events.iter().enumerate() {
            ctx.ctl(ControlOperation::Add, event, EventSet::IN, queue_raw(i))?;
        }
        ctx.ctl(ControlOperation::Add, &kill, EventSet::IN, KILL_RAW)?;
        Ok(Self {
            _kill: Some(kill),
            ..ctx
        })
    }

    fn ctl(
        &self,
        op: ControlOperation,
        fd: &impl AsRawFd,
        events: EventSet,
        raw: u64,
    ) -> io::Result<()> {
        self.epoll
            .ctl(op, fd.as_raw_fd(), EpollEvent::new(events, raw))
    }

    fn worker_raw(token: T) -> io::Result<u64> {
        let raw = token.to_raw();
        if raw & LOOP_BIT != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("event token {token:?} sets the loop's bit"),
            ));
        }
        Ok(raw)
    }

    /// Watches `fd` for `events`, reported as `token`.
    pub fn add(&self, fd: &impl AsRawFd, events: EventSet, token: T) -> io::Result<()> {
        self.ctl(ControlOperation::Add, fd, events, Self::worker_raw(token)?)
    }

    /// Changes what `fd` is watched for, and its token.
    pub fn modify(&self, fd: &impl AsRawFd, events: EventSet, token: T) -> io::Result<()> {
        self.ctl(
            ControlOperation::Modify,
            fd,
            events,
            Self::worker_raw(token)?,
        )
    }

    /// Makes `fd`, watched for `*watched` now (empty: not in the set),
    /// watched for `want` as `token`: added, changed or removed (`want`
    /// empty) as needed; `*watched` follows on success.
    pub fn set_watch(
        &self,
        fd: &impl AsRawFd,
        watched: &mut EventSet,
        want: EventSet,
        token: T,
    ) -> io::Result<()> {
        if want == *watched {
            return Ok(());
        }
        if want.is_empty() {
            self.delete(fd)?;
        } else if watched.is_empty() {
            self.add(fd, want, token)?;
        } else {
            self.modify(fd, want, token)?;
        }
        *watched = want;
        Ok(())
    }

    /// Stops watching `fd`. (Closing a descriptor no one else holds removes
    /// it too.)
    pub fn delete(&self, fd: &impl AsRawFd) -> io::Result<()> {
        self.ctl(ControlOperation::Delete, fd, EventSet::empty(), 0)
    }

    /// Makes queue `index` look kicked, so that the loop comes back to it
    /// after the other ready events (a worker that stopped at its batch
    /// limit). Does nothing for a queue the set does not have.
    pub fn kick_queue(&self, index: usize) {
        if let Some(event) = self.queue_events.get(index) {
            if let Err(e) = event.write(1) {
                crate::guest_warn!("cannot re-kick queue {index}: {e}");
            }
        }
    }

    /// Waits until something is ready or `timeout` passes (`None`: no
    /// limit, rounded up to whole milliseconds); retries on `EINTR`.
    fn wait(&self, timeout: Option<Duration>, events: &mut [EpollEvent]) -> io::Result<usize> {
        let ms = timeout.map_or(-1, |t| {
            let ms = t.as_nanos().div_ceil(1_000_000);
            i32::try_from(ms).unwrap_or(i32::MAX)
        });
        loop {
            match self.epoll.wait(ms, events) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                result => return result,
            }
        }
    }

    fn decode(event: &EpollEvent) -> Option<Ready<T>> {
        let raw = event.data();
        if raw == KILL_RAW {
            return Some(Ready::Kill);
        }
        if raw & LOOP_BIT != 0 {
            let index = usize::try_from((raw & !LOOP_BIT) - 1).ok()?;
            return Some(Ready::Queue(index));
        }
        let events = EventSet::from_bits_truncate(event.events());
        T::from_raw(raw).map(|token| Ready::Source(token, events))
    }

    /// The worker's own sources that are ready now, without waiting (tests
    /// and fuzz targets; a worker gets its events from [`run`]).
    pub fn ready_now(&self) -> io::Result<Vec<(T, EventSet)>> {
        let mut events = [EpollEvent::default(); EVENT_BATCH];
        let n = self.wait(Some(Duration::ZERO), &mut events)?;
        Ok(events[..n]
            .iter()
            .filter_map(|e| match Self::decode(e) {
                Some(Ready::Source(token, set)) => Some((token, set)),
                _ => None,
            })
            .collect())
    }

    /// Consumes queue `index`'s pending kicks.
    fn drain_queue(&self, index: usize) {
        if let Some(event) = self.queue_events.get(index) {
            // Nothing to read (a spurious wake-up) is fine.
            let _ = event.read();
        }
    }
}

/// What a device worker does; [`run`] calls it. The worker owns everything
/// it serves with (guest memory, its queues, the interrupt, its backend)
/// and is handed back when it stops.
pub trait Worker: Send + Sized + 'static {
    /// The worker's own event sources (a tap, host sockets), declared with
    /// [`event_token!`]; [`NoToken`] if it watches only its queues.
    type Token: EventToken;
    /// What the device keeps across resets: the worker owns it while it
    /// runs and hands it back when it stops (a tap, a console port). `()`
    /// if the device keeps nothing.
    type Backend: Send + 'static;
    /// Name for log lines, e.g. `virtio-rng`.
    const NAME: &'static str;
    /// Thread name, e.g. `v_rng` (Linux keeps 15 bytes).
    const THREAD_NAME: &'static str;

    /// Adds the worker's own sources. Runs when the device is activated,
    /// before the thread starts: an error fails the activation.
    fn register(&mut self, ctx: &WaitContext<Self::Token>) -> io::Result<()> {
        let _ = ctx;
        Ok(())
    }

    /// The guest kicked queue `index` (the kick is consumed). The loop also
    /// calls this once per queue when it starts: the driver may have posted
    /// buffers before.
    fn on_queue(&mut self, ctx: &WaitContext<Self::Token>, index: usize);

    /// One of the worker's own sources is ready with `events`.
    fn on_event(&mut self, ctx: &WaitContext<Self::Token>, token: Self::Token, events: EventSet);

    /// Nothing happened within [`Self::timeout`].
    fn on_timeout(&mut self, ctx: &WaitContext<Self::Token>) {
        let _ = ctx;
    }

    /// After each wake-up's events (and after the start and a timeout):
    /// work that depends on several events, re-arming watches.
    fn after_events(&mut self, ctx: &WaitContext<Self::Token>) {
        let _ = ctx;
    }

    /// The longest the next wait may take (a deadline); `None`: no limit.
    fn timeout(&self) -> Option<Duration> {
        None
    }

    /// The device is stopping: last work before the worker is handed back.
    fn on_stop(&mut self, ctx: &WaitContext<Self::Token>) {
        let _ = ctx;
    }

    /// Gives the backend back (once the worker stopped).
    fn into_backend(self) -> Self::Backend;
}

/// Serves `worker` until the context's kill event fires, then hands it back.
/// A failing `epoll_wait` (other than `EINTR`) is logged and ends the loop:
/// the guest sees a stalled device, not a VMM crash.
fn run<W: Worker>(mut worker: W, ctx: WaitContext<W::Token>) -> W {
    for index in 0..ctx.queue_events.len() {
        worker.on_queue(&ctx, index);
    }
    worker.after_events(&ctx);
    let mut events = [EpollEvent::default(); EVENT_BATCH];
    loop {
        let n = match ctx.wait(worker.timeout(), &mut events) {
            Ok(n) => n,
            Err(e) => {
                crate::guest_error!("{}: epoll failed, the device stops serving: {e}", W::NAME);
                return worker;
            }
        };
        if n == 0 {
            worker.on_timeout(&ctx);
        }
        for event in &events[..n] {
            match WaitContext::<W::Token>::decode(event) {
                Some(Ready::Kill) => {
                    worker.on_stop(&ctx);
                    return worker;
                }
                Some(Ready::Queue(index)) => {
                    ctx.drain_queue(index);
                    worker.on_queue(&ctx, index);
                }
                Some(Ready::Source(token, set)) => worker.on_event(&ctx, token, set),
                // Only `add`/`modify` put data into the set, and they take a
                // `W::Token`: a decoding failure is a broken `EventToken`.
                None => crate::guest_error!(
                    "{}: undecodable event data {:#x} (a bug in its token type)",
                    W::NAME,
                    event.data()
                ),
            }
        }
        worker.after_events(&ctx);
    }
}

/// Starts `worker` on its own thread named `thread_name`, woken by the
/// `queue_events` (queue `i`'s kick is `queue_events[i]`). The worker's
/// [`Worker::register`] runs here, first. On failure the worker comes back
/// with the error.
pub fn start<W: Worker>(
    mut worker: W,
    queue_events: Vec<EventFd>,
    thread_name: &str,
) -> Result<WorkerThread<W>, (io::Error, W)> {
    let prepared = EventFd::new(libc::EFD_NONBLOCK)
        .and_then(|kill| Ok((kill.try_clone()?, kill)))
        .and_then(|(kill, worker_kill)| {
            Ok((kill, WaitContext::for_worker(queue_events, worker_kill)?))
        });
    let (kill, ctx) = match prepared {
        Ok(p) => p,
        Err(e) => return Err((e, worker)),
    };
    if let Err(e) = worker.register(&ctx) {
        return Err((e, worker));
    }
    WorkerThread::start(thread_name, kill, (worker, ctx), |(worker, ctx)| {
        run(worker, ctx)
    })
    .map_err(|(e, (worker, _ctx))| (e, worker))
}

/// A device worker thread that owns its state and hands it back when
/// stopped (crosvm's `WorkerThread`).
///
/// Stopping waits a bounded time ([`WorkerThread::stop_within`]): a worker
/// stuck in a blocking host call (a disk on a hung file system, a full
/// pipe) must not hold the caller, which for a device reset is a vCPU.
pub struct WorkerThread<T: Send + 'static> {
    kill: EventFd,
    handle: Option<sandbox::thread::JoinHandle<Option<T>>>,
    /// Closed (or sent on) when the thread's body has returned.
    done: mpsc::Receiver<()>,
}

/// The result of [`WorkerThread::stop_within`].
pub enum Stopped<T: Send + 'static> {
    /// The thread ended: what it owned, or `None` if it panicked.
    Done(Option<T>),
    /// The thread did not end in time; it was told to stop and is handed
    /// back to be waited for again later.
    Busy(WorkerThread<T>),
}

impl<T: Send + 'static> WorkerThread<T> {
    /// Runs `body(input)` on a new thread named `name`. `body` must return
    /// once `kill` is signalled (the caller wires that up, e.g. with a
    /// clone of `kill` in the thread's [`WaitContext`]). If the thread
    /// cannot start, `input` comes back with the error.
    pub fn start<I: Send + 'static>(
        name: &str,
        kill: EventFd,
        input: I,
        body: impl FnOnce(I) -> T + Send + 'static,
    ) -> Result<Self, (io::Error, I)> {
        // The input travels through a channel so that a failed spawn does
        // not take it (a device's backend) down with the closure.
        let (send, receive) = mpsc::sync_channel::<I>(1);
        let (done_tx, done) = mpsc::channel::<()>();
        // Through the sandbox: the thread is confined to its class's
        // seccomp filter (by its name) before `body` runs.
        let spawned = sandbox::thread::spawn(name, move || {
            let out = receive.recv().ok().map(body);
            // The receiver may be gone (nobody waits any more).
            let _ = done_tx.send(());
            out
        });
        let handle = match spawned {
            Ok(handle) => handle,
            Err(e) => return Err((e, input)),
        };
        if let Err(mpsc::SendError(input)) = send.send(input) {
            // Only possible if the new thread died before receiving.
            let _ = handle.join();
            return Err((io::Error::other("the worker thread ended at once"), input));
        }
        Ok(Self {
            kill,
            handle: Some(handle),
            done,
        })
    }

    /// Stops the worker and returns what it owned (`None` if it panicked),
    /// waiting as long as it takes.
    pub fn stop(mut self) -> Option<T> {
        self.signal();
        self.join()
    }

    /// Tells the worker to stop and waits at most `wait` for it.
    pub fn stop_within(mut self, wait: Duration) -> Stopped<T> {
        self.signal();
        match self.done.recv_timeout(wait) {
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => Stopped::Done(self.join()),
            Err(mpsc::RecvTimeoutError::Timeout) => Stopped::Busy(self),
        }
    }

    fn signal(&self) {
        if let Err(e) = self.kill.write(1) {
            crate::guest_error!("cannot signal worker to stop: {e}");
        }
    }

    fn join(&mut self) -> Option<T> {
        self.handle.take()?.join().ok().flatten()
    }
}

impl<T: Send + 'static> Drop for WorkerThread<T> {
    fn drop(&mut self) {
        if self.handle.is_none() {
            return;
        }
        // Bounded like a reset: a worker that is stuck is left to end on
        // its own (it owns everything it uses, guest memory included).
        self.signal();
        match self.done.recv_timeout(STOP_WAIT) {
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                self.join();
            }
            Err(mpsc::RecvTimeoutError::Timeout) => crate::guest_warn!(
                "a device worker did not stop within {} ms; left to end on its own",
                STOP_WAIT.as_millis()
            ),
        }
    }
}

/// How long a device reset (on the vCPU thread) or a teardown waits for a
/// worker to stop. Above the vsock worker's 2 s drain of guest data on
/// stop, so that a healthy worker always stops within it.
pub const STOP_WAIT: Duration = Duration::from_secs(3);

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A payload with two values.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Side {
        Left,
        Right,
    }

    impl TokenPayload for Side {
        fn to_u32(self) -> u32 {
            self as u32
        }
        fn from_u32(value: u32) -> Option<Self> {
            [Side::Left, Side::Right].get(value as usize).copied()
        }
    }

    event_token! {
        /// Every kind of variant the macro supports.
        enum Token {
            /// A unit.
            First,
            /// A number.
            Conn(u32),
            /// Another token-like enum.
            Side(Side),
            /// Another unit.
            Last,
        }
    }

    #[test]
    fn tokens_round_trip_and_nothing_else_decodes() {
        let all = [
            Token::First,
            Token::Conn(0),
            Token::Conn(u32::MAX),
            Token::Side(Side::Left),
            Token::Side(Side::Right),
            Token::Last,
        ];
        for token in all {
            let raw = token.to_raw();
            assert_eq!(raw & LOOP_BIT, 0, "{token:?}");
            assert_eq!(Token::from_raw(raw), Some(token));
        }
        let mut raws: Vec<u64> = all.iter().map(|t| t.to_raw()).collect();
        raws.sort_unstable();
        raws.dedup();
        assert_eq!(raws.len(), all.len(), "distinct encodings");
        // A unit variant with payload bits, an unknown payload, an unknown
        // kind.
        assert_eq!(Token::from_raw(1), None);
        assert_eq!(Token::from_raw((2 << 32) | 7), None);
        assert_eq!(Token::from_raw(9 << 32), None);
        assert_eq!(NoToken::from_raw(0), None);
    }

    #[derive(Default)]
    struct Log(Vec<String>);

    /// A worker that records what the loop calls and watches one eventfd of
    /// its own.
    struct Recorder {
        log: Arc<Mutex<Log>>,
        source: EventFd,
        timeouts: u32,
    }

    impl Recorder {
        fn note(&self, what: String) {
            self.log.lock().unwrap().0.push(what);
        }
    }

    impl Worker for Recorder {
        type Token = Token;
        type Backend = EventFd;
        const NAME: &'static str = "recorder";
        const THREAD_NAME: &'static str = "v_test";

        fn register(&mut self, ctx: &WaitContext<Token>) -> io::Result<()> {
            ctx.add(&self.source, EventSet::IN, Token::Conn(7))
        }
        fn on_queue(&mut self, _ctx: &WaitContext<Token>, index: usize) {
            self.note(format!("queue {index}"));
        }
        fn on_event(&mut self, _ctx: &WaitContext<Token>, token: Token, events: EventSet) {
            let _ = self.source.read();
            assert!(events.contains(EventSet::IN));
            self.note(format!("{token:?}"));
        }
        fn on_timeout(&mut self, _ctx: &WaitContext<Token>) {
            self.timeouts += 1;
            if self.timeouts == 1 {
                self.note("timeout".into());
            }
        }
        fn timeout(&self) -> Option<Duration> {
            // One short timeout, then none.
            (self.timeouts == 0).then_some(Duration::from_millis(1))
        }
        fn on_stop(&mut self, _ctx: &WaitContext<Token>) {
            self.note("stop".into());
        }
        fn into_backend(self) -> EventFd {
            self.source
        }
    }

    fn wait_for(log: &Arc<Mutex<Log>>, entry: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !log.lock().unwrap().0.iter().any(|e| e == entry) {
            assert!(std::time::Instant::now() < deadline, "no {entry}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn the_loop_dispatches_queues_sources_timeouts_and_kill() {
        let log = Arc::new(Mutex::new(Log::default()));
        let source = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let feed = source.try_clone().unwrap();
        let kicks: Vec<EventFd> = (0..2)
            .map(|_| EventFd::new(libc::EFD_NONBLOCK).unwrap())
            .collect();
        let queue_events = kicks.iter().map(|k| k.try_clone().unwrap()).collect();
        let worker = Recorder {
            log: log.clone(),
            source,
            timeouts: 0,
        };
        let Ok(thread) = start(worker, queue_events, "v_test") else {
            panic!("worker did not start");
        };
        wait_for(&log, "timeout");
        kicks[1].write(1).unwrap();
        wait_for(&log, "queue 1");
        feed.write(1).unwrap();
        wait_for(&log, "Conn(7)");
        let backend = thread.stop().expect("worker handed back").into_backend();
        assert_eq!(backend.read().ok(), None, "event consumed by the worker");
        let log = log.lock().unwrap();
        assert_eq!(
            log.0,
            ["queue 0", "queue 1", "timeout", "queue 1", "Conn(7)", "stop"]
        );
    }

    #[test]
    fn tokens_with_the_loop_bit_are_refused() {
        #[derive(Debug, Clone, Copy)]
        struct Bad;
        impl EventToken for Bad {
            fn to_raw(self) -> u64 {
                KILL_RAW
            }
            fn from_raw(_raw: u64) -> Option<Self> {
                Some(Bad)
            }
        }
        let ctx = WaitContext::<Bad>::new().unwrap();
        let fd = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let e = ctx.add(&fd, EventSet::IN, Bad).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn ready_now_reports_only_the_workers_sources() {
        let ctx = WaitContext::<Token>::new().unwrap();
        let a = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let b = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        ctx.add(&a, EventSet::IN, Token::First).unwrap();
        ctx.add(&b, EventSet::IN, Token::Side(Side::Right)).unwrap();
        assert!(ctx.ready_now().unwrap().is_empty());
        b.write(1).unwrap();
        let ready = ctx.ready_now().unwrap();
        assert_eq!(ready.len(), 1);
        assert_eq!(ready[0].0, Token::Side(Side::Right));
        ctx.modify(&b, EventSet::IN, Token::Last).unwrap();
        assert_eq!(ctx.ready_now().unwrap()[0].0, Token::Last);
        ctx.delete(&b).unwrap();
        assert!(ctx.ready_now().unwrap().is_empty());
    }

    #[test]
    fn worker_thread_returns_its_state_on_stop() {
        let kill = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let worker_kill = kill.try_clone().unwrap();
        let worker = WorkerThread::start("test", kill, 40, move |n: i32| {
            // Block until killed, then hand back a value.
            let mut fds = [libc::pollfd {
                fd: worker_kill.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }];
            // SAFETY: fds is a valid array of one pollfd for the call.
            unsafe { libc::poll(fds.as_mut_ptr(), 1, -1) };
            n + 2
        })
        .map_err(|(e, _)| e)
        .unwrap();
        assert_eq!(worker.stop(), Some(42));
    }

    /// A worker whose body ignores the kill, stuck in a "host call" until
    /// the test releases it (or a minute passes: a wait that was not
    /// bounded then shows as the body having finished). Returns the release
    /// handle, whether the body has finished, and the worker (its body
    /// returns 2).
    fn stuck_worker() -> (
        std::sync::mpsc::Sender<()>,
        std::sync::Arc<std::sync::atomic::AtomicBool>,
        WorkerThread<i32>,
    ) {
        use std::sync::atomic::{AtomicBool, Ordering};
        let (release, released) = std::sync::mpsc::channel::<()>();
        let finished = std::sync::Arc::new(AtomicBool::new(false));
        let done = std::sync::Arc::clone(&finished);
        let body = move |n: i32| {
            let _ = released.recv_timeout(Duration::from_secs(60));
            done.store(true, Ordering::SeqCst);
            n + 1
        };
        let kill = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let worker = WorkerThread::start("test", kill, 1, body)
            .map_err(|(e, _)| e)
            .unwrap();
        (release, finished, worker)
    }

    #[test]
    fn stop_within_hands_back_a_busy_worker_to_wait_for_later() {
        use std::sync::atomic::Ordering;
        let (release, finished, worker) = stuck_worker();
        let Stopped::Busy(worker) = worker.stop_within(Duration::from_millis(20)) else {
            panic!("the worker cannot have stopped yet");
        };
        assert!(
            !finished.load(Ordering::SeqCst),
            "stop_within waited for the body"
        );
        release.send(()).unwrap();
        match worker.stop_within(Duration::from_secs(30)) {
            Stopped::Done(value) => assert_eq!(value, Some(2)),
            Stopped::Busy(_) => panic!("the released worker did not end"),
        }
    }

    #[test]
    fn dropping_a_stuck_worker_is_bounded() {
        use std::sync::atomic::Ordering;
        let (_release, finished, worker) = stuck_worker();
        let started = std::time::Instant::now();
        drop(worker);
        let took = started.elapsed();
        assert!(took >= STOP_WAIT, "{took:?}");
        assert!(
            !finished.load(Ordering::SeqCst),
            "the drop waited for the body"
        );
    }
}
