//! The device lifecycle, written once: every device keeps a [`Lifecycle`]
//! and forwards [`VirtioDevice::activate`](super::VirtioDevice::activate)
//! and [`VirtioDevice::reset`](super::VirtioDevice::reset) to it, saying
//! only how its worker is built.
//!
//! ```text
//!                     activate(ctx) ok: the queues pass the checks,
//!                     the device's closure builds the worker (taking B),
//!                     its thread starts
//!   ┌─────────────┐ ─────────────────────────────────────► ┌──────────────────┐
//!   │ Inactive(B) │                                        │ Active(thread)   │
//!   │ B = backend │ ◄───────────────────────────────────── │ the worker owns B│
//!   └─────────────┘   reset(): kill event, W::on_stop,     └──────────────────┘
//!     ▲       │       thread joined, B handed back                   │
//!     └───────┘                                                      │ the worker
//!   activate fails (queue count, a required queue not ready,         │ panicked
//!   the closure or register() failed): stays Inactive, B kept;       ▼ (debug builds)
//!   reset(): nothing to do                                   ┌──────────────────┐
//!                                                            │ Broken: B lost,  │
//!                                                            │ activate refused │
//!                                                            └──────────────────┘
//! ```
//!
//! The queue checks are the same for every device: exactly one queue and
//! one kick eventfd per entry of `queue_max_sizes`, every required queue
//! ready (all of them unless the device marks trailing ones optional), and
//! `VIRTIO_F_RING_EVENT_IDX` applied to every queue as negotiated.
//! Activating an active device (the transport never does) stops its worker
//! first.
//!
//! A reset never waits long on the worker: `reset` runs on the vCPU thread
//! that wrote the status register, and a worker can be stuck in a blocking
//! host call (a disk on a hung file system, a full pipe). It signals the
//! worker and waits at most [`STOP_WAIT`]; a worker still busy then leaves
//! the device `Stopping`: not active, the backend still with the worker.
//! The next activation waits for it again (bounded the same way) and fails
//! (`DEVICE_NEEDS_RESET`) while it is still busy; once the worker has
//! ended the device works again.

use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::EventFd;

use super::event_loop::{self, Stopped, Worker, WorkerThread, STOP_WAIT};
use super::{ActivateContext, ActivateError, GuestMemoryMmap, Interrupt, VIRTIO_RING_F_EVENT_IDX};
use std::time::Duration;

/// What a device's worker is built from when the driver sets `DRIVER_OK`.
pub struct Activation<const N: usize> {
    /// Guest memory.
    pub mem: GuestMemoryMmap,
    /// The device's interrupt.
    pub interrupt: Arc<Interrupt>,
    /// The queues in index order, `EVENT_IDX` set as negotiated. Optional
    /// queues may be not ready: check `ready()` before using one.
    pub queues: [Queue; N],
    /// Features the driver accepted.
    pub acked_features: u64,
}

impl<const N: usize> Activation<N> {
    /// Checks `ctx` against a device with `N` queues of which the first
    /// `required` must be ready; returns the activation and the kick
    /// eventfds.
    fn check(ctx: ActivateContext, required: usize) -> Result<(Self, Vec<EventFd>), ActivateError> {
        let ActivateContext {
            mem,
            interrupt,
            mut queues,
            queue_events,
            acked_features,
        } = ctx;
        let got = queues.len().min(queue_events.len());
        if queues.len() != N || queue_events.len() != N {
            return Err(ActivateError::QueueCount { expected: N, got });
        }
        if let Some(index) = queues.iter().take(required).position(|q| !q.ready()) {
            return Err(ActivateError::QueueNotReady(index));
        }
        let event_idx = acked_features & VIRTIO_RING_F_EVENT_IDX != 0;
        for queue in &mut queues {
            queue.set_event_idx(event_idx);
        }
        let queues = <[Queue; N]>::try_from(queues)
            .map_err(|_| ActivateError::QueueCount { expected: N, got })?;
        let activation = Self {
            mem,
            interrupt,
            queues,
            acked_features,
        };
        Ok((activation, queue_events))
    }
}

/// A device's `start` failed; its backend comes back for the next try.
pub struct StartError<B> {
    /// Why.
    pub error: ActivateError,
    /// The backend `start` was given.
    pub backend: B,
}

impl<B> StartError<B> {
    /// `error`, giving `backend` back.
    pub fn new(error: ActivateError, backend: B) -> Self {
        Self { error, backend }
    }
}

enum State<W: Worker> {
    Inactive(W::Backend),
    Active(WorkerThread<W>),
    /// Reset, but the worker had not stopped within the wait: it has been
    /// told to and still owns the backend.
    Stopping(WorkerThread<W>),
    /// The worker panicked and took the backend with it.
    Broken,
}

/// Where a device is in its lifecycle (see the module docs), and its
/// worker thread while it runs.
pub struct Lifecycle<W: Worker> {
    state: State<W>,
    /// Queues from this index on may be left unset by the driver.
    first_optional: Option<usize>,
    /// How long a reset or activation waits for a worker to stop.
    stop_wait: Duration,
}

impl<W: Worker<Backend = ()>> Default for Lifecycle<W> {
    fn default() -> Self {
        Self::new(())
    }
}

impl<W: Worker> Lifecycle<W> {
    /// An inactive device holding `backend` until its first activation.
    pub fn new(backend: W::Backend) -> Self {
        Self {
            state: State::Inactive(backend),
            first_optional: None,
            stop_wait: STOP_WAIT,
        }
    }

    /// Waits at most `wait` for a worker to stop (tests; the default is
    /// [`STOP_WAIT`]).
    pub fn with_stop_wait(mut self, wait: Duration) -> Self {
        self.stop_wait = wait;
        self
    }

    /// Lets the driver leave the queues from `index` on unset (the device
    /// never needs them); by default every queue is required.
    pub fn with_optional_queues_from(mut self, index: usize) -> Self {
        self.first_optional = Some(index);
        self
    }

    /// Whether the worker runs.
    pub fn is_active(&self) -> bool {
        matches!(self.state, State::Active(_))
    }

    /// Whether a reset left a worker that has not stopped yet.
    pub fn is_stopping(&self) -> bool {
        matches!(self.state, State::Stopping(_))
    }

    /// The backend while the device is inactive.
    pub fn backend_mut(&mut self) -> Option<&mut W::Backend> {
        match &mut self.state {
            State::Inactive(backend) => Some(backend),
            State::Active(_) | State::Stopping(_) | State::Broken => None,
        }
    }

    /// Activates the device: checks the queues, then `start` builds the
    /// worker from the activation and the backend, and its thread starts.
    /// On any error the device stays inactive with its backend.
    pub fn activate<const N: usize>(
        &mut self,
        ctx: ActivateContext,
        start: impl FnOnce(Activation<N>, W::Backend) -> Result<W, StartError<W::Backend>>,
    ) -> Result<(), ActivateError> {
        let required = self.first_optional.unwrap_or(N).min(N);
        let (activation, queue_events) = Activation::<N>::check(ctx, required)?;
        let backend = self.take_backend()?;
        let worker = match start(activation, backend) {
            Ok(worker) => worker,
            Err(StartError { error, backend }) => {
                self.state = State::Inactive(backend);
                return Err(error);
            }
        };
        match event_loop::start(worker, queue_events, W::THREAD_NAME) {
            Ok(thread) => {
                self.state = State::Active(thread);
                Ok(())
            }
            Err((e, worker)) => {
                self.state = State::Inactive(worker.into_backend());
                Err(ActivateError::Worker(e))
            }
        }
    }

    /// Takes the backend for a new worker, stopping a running one first.
    fn take_backend(&mut self) -> Result<W::Backend, ActivateError> {
        match std::mem::replace(&mut self.state, State::Broken) {
            State::Inactive(backend) => Ok(backend),
            State::Active(thread) | State::Stopping(thread) => {
                self.stop(thread);
                match std::mem::replace(&mut self.state, State::Broken) {
                    State::Inactive(backend) => Ok(backend),
                    State::Stopping(thread) => {
                        self.state = State::Stopping(thread);
                        Err(ActivateError::WorkerBusy)
                    }
                    State::Active(_) | State::Broken => Err(ActivateError::WorkerLost),
                }
            }
            State::Broken => Err(ActivateError::WorkerLost),
        }
    }

    /// Stops `thread` within the wait and sets the state from the result.
    fn stop(&mut self, thread: WorkerThread<W>) {
        self.state = match thread.stop_within(self.stop_wait) {
            Stopped::Done(Some(worker)) => State::Inactive(worker.into_backend()),
            Stopped::Done(None) => {
                crate::guest_error!("{}: the worker panicked; the device is unusable", W::NAME);
                State::Broken
            }
            Stopped::Busy(thread) => {
                crate::guest_warn!(
                    "{}: the worker did not stop within {} ms (stuck in a host call?); the device works again once it has",
                    W::NAME,
                    self.stop_wait.as_millis()
                );
                State::Stopping(thread)
            }
        };
    }

    /// Stops the worker (the driver reset the device) and keeps its
    /// backend for the next activation; nothing to do when inactive. Waits
    /// at most the stop wait (see the module docs).
    pub fn reset(&mut self) {
        if !self.is_active() {
            return;
        }
        if let State::Active(thread) = std::mem::replace(&mut self.state, State::Broken) {
            self.stop(thread);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use vmm_sys_util::epoll::EventSet;

    use super::*;
    use crate::virtio::event_loop::{NoToken, WaitContext};
    use crate::virtio::test_utils::{guest_memory, DeviceHarness};

    /// A worker whose backend counts its workers.
    struct Counting {
        backend: Arc<AtomicUsize>,
        /// Panic when the loop starts.
        panic: bool,
    }

    impl Worker for Counting {
        type Token = NoToken;
        type Backend = Arc<AtomicUsize>;
        const NAME: &'static str = "counting";
        const THREAD_NAME: &'static str = "v_count";
        fn on_queue(&mut self, _ctx: &WaitContext<NoToken>, _index: usize) {
            assert!(!self.panic, "the test's way to panic the worker");
        }
        fn on_event(&mut self, _ctx: &WaitContext<NoToken>, token: NoToken, _: EventSet) {
            match token {}
        }
        fn into_backend(self) -> Arc<AtomicUsize> {
            self.backend
        }
    }

    fn start(
        _act: Activation<2>,
        backend: Arc<AtomicUsize>,
    ) -> Result<Counting, StartError<Arc<AtomicUsize>>> {
        backend.fetch_add(1, Ordering::SeqCst);
        Ok(Counting {
            backend,
            panic: false,
        })
    }

    /// An inactive [`Counting`] device and its backend (no workers yet).
    fn counting() -> (Arc<AtomicUsize>, Lifecycle<Counting>) {
        let backend = Arc::new(AtomicUsize::new(0));
        (backend.clone(), Lifecycle::new(backend))
    }

    #[test]
    fn checks_queues_before_touching_the_state() {
        let mem = guest_memory();
        let h = DeviceHarness::new(&mem, 2, 16);
        let mut life = Lifecycle::<Counting>::new(Arc::default());
        let mut ctx = h.context(0);
        ctx.queues.pop();
        let e = life.activate(ctx, start).unwrap_err();
        assert_eq!(e.to_string(), "expected 2 queues, got 1");
        let mut ctx = h.context(0);
        ctx.queue_events.clear();
        assert!(matches!(
            life.activate(ctx, start),
            Err(ActivateError::QueueCount {
                expected: 2,
                got: 0
            })
        ));
        let mut ctx = h.context(0);
        ctx.queues[1].set_ready(false);
        let e = life.activate(ctx, start).unwrap_err();
        assert_eq!(e.to_string(), "queue 1 is not ready");
        // Optional queues may stay unset.
        let mut life = life.with_optional_queues_from(1);
        let mut ctx = h.context(0);
        ctx.queues[1].set_ready(false);
        life.activate(ctx, start).unwrap();
        assert!(life.is_active());
    }

    #[test]
    fn start_errors_keep_the_backend() {
        let mem = guest_memory();
        let h = DeviceHarness::new(&mem, 2, 16);
        let (backend, mut life) = counting();
        let e = life
            .activate(h.context(0), |_act: Activation<2>, b| {
                Err(StartError::new(
                    ActivateError::Worker(std::io::Error::other("no")),
                    b,
                ))
            })
            .unwrap_err();
        assert!(matches!(e, ActivateError::Worker(_)));
        assert!(!life.is_active());
        assert!(Arc::ptr_eq(life.backend_mut().unwrap(), &backend));
        life.activate(h.context(0), start).unwrap();
        assert_eq!(backend.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn reactivation_stops_the_running_worker_and_reuses_the_backend() {
        let mem = guest_memory();
        let h = DeviceHarness::new(&mem, 2, 16);
        let (backend, mut life) = counting();
        life.reset();
        assert!(!life.is_active(), "reset of an inactive device");
        life.activate(h.context(0), start).unwrap();
        assert!(life.backend_mut().is_none());
        life.activate(h.context(0), start).unwrap();
        life.reset();
        life.reset();
        assert!(!life.is_active());
        assert_eq!(backend.load(Ordering::SeqCst), 2);
        assert_eq!(Arc::strong_count(&backend), 2, "one backend, handed back");
    }

    #[test]
    fn a_panicked_worker_leaves_the_device_broken() {
        let mem = guest_memory();
        let h = DeviceHarness::new(&mem, 2, 16);
        let mut life = Lifecycle::<Counting>::new(Arc::default());
        life.activate(h.context(0), |_act: Activation<2>, backend| {
            Ok(Counting {
                backend,
                panic: true,
            })
        })
        .unwrap();
        life.reset();
        assert!(!life.is_active());
        assert!(life.backend_mut().is_none());
        assert!(matches!(
            life.activate(h.context(0), start),
            Err(ActivateError::WorkerLost)
        ));
    }

    /// A gate the test opens: until then a [`Slow`] worker's `on_stop`
    /// blocks (a host call that does not return).
    #[derive(Default)]
    struct Gate {
        open: std::sync::Mutex<bool>,
        opened: std::sync::Condvar,
    }

    impl Gate {
        fn open(&self) {
            *self.open.lock().unwrap() = true;
            self.opened.notify_all();
        }
        fn is_open(&self) -> bool {
            *self.open.lock().unwrap()
        }
        fn wait(&self) {
            let mut open = self.open.lock().unwrap();
            while !*open {
                open = self.opened.wait(open).unwrap();
            }
        }
    }

    /// A worker whose `on_stop` blocks until its gate opens.
    struct Slow {
        gate: std::sync::Arc<Gate>,
    }

    impl Worker for Slow {
        type Token = NoToken;
        type Backend = ();
        const NAME: &'static str = "slow";
        const THREAD_NAME: &'static str = "v_slow";
        fn on_queue(&mut self, _ctx: &WaitContext<NoToken>, _index: usize) {}
        fn on_event(&mut self, _ctx: &WaitContext<NoToken>, token: NoToken, _: EventSet) {
            match token {}
        }
        fn on_stop(&mut self, _ctx: &WaitContext<NoToken>) {
            self.gate.wait();
        }
        fn into_backend(self) {}
    }

    #[test]
    fn a_reset_waits_a_bounded_time_for_a_stuck_worker() {
        use std::sync::Arc;
        use std::time::{Duration, Instant};
        let mem = guest_memory();
        let h = DeviceHarness::new(&mem, 2, 16);
        let mut life = Lifecycle::<Slow>::default().with_stop_wait(Duration::from_millis(50));
        let stuck = Arc::new(Gate::default());
        let worker = |gate: &Arc<Gate>| {
            let gate = Arc::clone(gate);
            move |_act: Activation<2>, ()| Ok(Slow { gate })
        };
        life.activate(h.context(0), worker(&stuck)).unwrap();
        // If reset waited for the worker, only this watchdog would let it
        // return, and the gate would then be open.
        let watchdog = {
            let gate = Arc::clone(&stuck);
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_secs(60));
                gate.open();
            })
        };
        life.reset();
        assert!(!stuck.is_open(), "reset waited for the stuck worker");
        assert!(!life.is_active() && life.is_stopping());
        // Activating while the old worker is still busy fails cleanly.
        assert!(matches!(
            life.activate(h.context(0), worker(&stuck)),
            Err(ActivateError::WorkerBusy)
        ));
        assert!(life.is_stopping());
        // Once it has stopped, the device works again.
        stuck.open();
        let free = Arc::new(Gate::default());
        free.open();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match life.activate(h.context(0), worker(&free)) {
                Ok(()) => break,
                Err(ActivateError::WorkerBusy) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Err(e) => panic!("activation after the worker stopped: {e:?}"),
            }
        }
        assert!(life.is_active());
        drop(watchdog);
        life.reset();
        assert!(!life.is_active() && !life.is_stopping());
    }
}
