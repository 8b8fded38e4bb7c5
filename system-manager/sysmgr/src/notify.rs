//! Delivers `IPowerStateListener` callbacks off the daemon's loop.
//!
//! One [`Listeners`] per binder endpoint (each Android guest, and the
//! host socket) owns the registered listeners, and each listener has its
//! own sender thread, started when it registers: a client that stops
//! reading holds back its own listeners' callbacks only, never another
//! client's. The daemon only queues (never blocks). Each listener keeps at
//! most one pending callback of each kind, the latest `onApPowerStateReq`
//! and the latest `onSystemStateChanged` (a newer one replaces the pending
//! one in its place): both carry the whole current value, so a listener
//! that falls behind skips only stale values and never loses the current
//! request (a `SHUTDOWN_PREPARE` cannot be pushed out by system-state
//! churn). A new listener gets the current request, then the current
//! system state. A send to a client that stops reading is bounded by the
//! endpoints' callback timeout (`binder.rs`), whose expiry ends that
//! client's session.
//!
//! A listener's sender ends when the listener is unregistered, when its
//! session ends (a death notification), when a call to it fails (its peer
//! is gone) or when the endpoint closes; one inside a call ends when that
//! call returns. An endpoint has at most [`MAX_LISTENERS`] senders, those
//! still ending included, so no client can make it start more threads
//! than that (say by registering and unregistering a listener that does
//! not read); an ended listener no longer counts as registered.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use rsbinder::{DeathRecipient, SIBinder, Strong, WIBinder};
use vmstack_aidl::vmstack::sysmgr::IPowerStateListener::IPowerStateListener;
use vmstack_aidl::vmstack::sysmgr::SystemState::SystemState;

/// Most listeners one endpoint may register, which is also the most
/// sender threads it runs (those of removed listeners still ending
/// included).
pub const MAX_LISTENERS: usize = 16;

/// How long a registration waits for senders that are ending: at
/// [`MAX_LISTENERS`] senders, for one of them; or for the previous sender
/// of the same listener, so that its callbacks stay in order. A sender
/// that is not inside a call ends at once; one inside a call to a client
/// that stopped reading may take up to the callback timeout.
const ENDING_WAIT: Duration = Duration::from_secs(1);

/// Locks `m`; a panic while holding it leaves plain data, so go on with it.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One callback.
#[derive(Clone, Debug)]
pub enum Callback {
    /// `onApPowerStateReq(value, param)`.
    Req([i32; 2]),
    /// `onSystemStateChanged(state)`.
    System(Arc<SystemState>),
}

impl Callback {
    fn same_kind(&self, other: &Callback) -> bool {
        matches!(
            (self, other),
            (Callback::Req(_), Callback::Req(_)) | (Callback::System(_), Callback::System(_))
        )
    }

    /// Makes the call on `listener`.
    fn send(&self, listener: &Strong<dyn IPowerStateListener>) -> rsbinder::BinderResult<()> {
        match self {
            Callback::Req([value, param]) => listener.onApPowerStateReq(*value, *param),
            Callback::System(state) => listener.onSystemStateChanged(state),
        }
    }
}

/// One listener's pending callbacks: the endpoint queues them, the
/// listener's sender takes them, and ending the slot ends the sender.
#[derive(Default)]
struct Slot {
    state: Mutex<SlotState>,
    /// Signalled on a new callback and on the end.
    wake: Condvar,
}

#[derive(Default)]
struct SlotState {
    /// Pending callbacks in order, at most one of each kind.
    queue: VecDeque<Callback>,
    /// Unregistered, dead, failed or closed: nothing more is sent.
    ended: bool,
}

impl Slot {
    /// A slot whose first callbacks are `queue`.
    fn new(queue: VecDeque<Callback>) -> Slot {
        Slot {
            state: Mutex::new(SlotState {
                queue,
                ended: false,
            }),
            wake: Condvar::new(),
        }
    }

    /// Queues `cb`, replacing a pending callback of its kind in place.
    fn queue(&self, cb: Callback) {
        let mut s = lock(&self.state);
        if s.ended {
            return;
        }
        match s.queue.iter_mut().find(|q| q.same_kind(&cb)) {
            Some(q) => *q = cb,
            None => s.queue.push_back(cb),
        }
        drop(s);
        self.wake.notify_one();
    }

    /// Ends the sender: it sends nothing more (after a call in progress).
    fn end(&self) {
        let mut s = lock(&self.state);
        s.ended = true;
        s.queue.clear();
        drop(s);
        self.wake.notify_one();
    }

    fn ended(&self) -> bool {
        lock(&self.state).ended
    }

    /// Waits for the next callback; `None` once the slot has ended.
    fn next(&self) -> Option<Callback> {
        let mut s = lock(&self.state);
        loop {
            if s.ended {
                return None;
            }
            if let Some(cb) = s.queue.pop_front() {
                return Some(cb);
            }
            s = self.wake.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// Ends a listener's sender when its binder dies (its session ended).
/// It takes the slot's lock only, never the endpoint's: rsbinder may
/// call it while a registration holds the endpoint's lock and links.
struct Death(Arc<Slot>);

impl DeathRecipient for Death {
    fn binder_died(&self, _who: &WIBinder) {
        self.0.end();
    }
}

/// The listener's session has ended already (its link was refused so).
struct AlreadyDead;

/// Links a death recipient that ends `slot` to `binder`. `Ok(None)`:
/// nothing to watch, since only a remote binder can die apart from us and
/// a refused link (a session that would not notice) leaves the listener
/// to a failed call.
fn watch_death(binder: &SIBinder, slot: &Arc<Slot>) -> Result<Option<Arc<Death>>, AlreadyDead> {
    if !binder.is_remote() {
        return Ok(None);
    }
    let death = Arc::new(Death(Arc::clone(slot)));
    match binder.link_to_death_arc(&death) {
        Ok(()) => Ok(Some(death)),
        Err(rsbinder::StatusCode::DeadObject) => Err(AlreadyDead),
        Err(_) => Ok(None),
    }
}

/// A listener's sender thread, from its start until it ends.
struct Sender {
    listener: Strong<dyn IPowerStateListener>,
    slot: Arc<Slot>,
    /// Linked to the listener's death; `None` when nothing is watched
    /// ([`watch_death`]).
    death: Option<Arc<Death>>,
}

impl Sender {
    /// Whether this sender is `binder`'s (ended or not).
    fn is_for(&self, binder: &SIBinder) -> bool {
        self.listener.as_binder() == *binder
    }

    fn unlink(&self) {
        if let Some(d) = &self.death {
            let _ = self.listener.as_binder().unlink_to_death_arc(d);
        }
    }
}

/// A listener's sender thread: sends its callbacks in order until its
/// slot ends or a call fails, then leaves `owner`.
fn run_sender(
    owner: Weak<Listeners>,
    name: String,
    listener: Strong<dyn IPowerStateListener>,
    slot: Arc<Slot>,
) {
    while let Some(cb) = slot.next() {
        if let Err(e) = cb.send(&listener) {
            tracing::info!("{name}: listener gone ({e}); removed");
            slot.end();
        }
    }
    drop(listener);
    if let Some(owner) = owner.upgrade() {
        owner.sender_ended(&slot);
    }
}

#[derive(Default)]
struct Inner {
    /// Every sender that has not ended: one per registered listener, plus
    /// those of removed listeners finishing a call.
    senders: Vec<Sender>,
    /// The current `AP_POWER_STATE_REQ` (a new listener gets it first).
    req: Option<[i32; 2]>,
    /// The last system state sent (a new listener gets it too).
    system: Option<Arc<SystemState>>,
    closed: bool,
}

impl Inner {
    /// What a new listener is sent first: the current request, then the
    /// current system state.
    fn first_callbacks(&self) -> VecDeque<Callback> {
        let req = self.req.map(Callback::Req);
        let system = self.system.clone().map(Callback::System);
        req.into_iter().chain(system).collect()
    }

    /// Queues `cb` for every registered listener.
    fn queue_all(&self, cb: &Callback) {
        for s in &self.senders {
            s.slot.queue(cb.clone());
        }
    }

    /// Whether a registration of `binder` should wait for an ending
    /// sender ([`ENDING_WAIT`]); never once closed.
    fn must_wait(&self, binder: &SIBinder) -> bool {
        let full = self.senders.len() >= MAX_LISTENERS;
        !self.closed
            && self
                .senders
                .iter()
                .any(|s| (full || s.is_for(binder)) && s.slot.ended())
    }
}

/// The listeners of one endpoint.
pub struct Listeners {
    name: String,
    /// Handed to each sender, which leaves the set when it ends.
    me: Weak<Listeners>,
    inner: Mutex<Inner>,
    /// Signalled when a sender has ended.
    sender_ended: Condvar,
}

/// Why a registration failed.
#[derive(Debug, PartialEq, Eq)]
pub enum RegisterError {
    /// [`MAX_LISTENERS`] already (senders still ending included).
    TooMany,
    /// The endpoint is closed (the daemon is ending).
    Closed,
    /// The listener's sender thread could not be started (the reason).
    Spawn(String),
}

impl std::fmt::Display for RegisterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegisterError::TooMany => write!(f, "at most {MAX_LISTENERS} listeners per endpoint"),
            RegisterError::Closed => write!(f, "the endpoint is closed"),
            RegisterError::Spawn(e) => write!(f, "cannot start the listener's sender: {e}"),
        }
    }
}

impl std::error::Error for RegisterError {}

impl Listeners {
    /// Creates the (empty) set; `name` is for logs and thread names. Each
    /// listener's sender thread starts when it registers, so this does not
    /// fail today; the `Result` stays for callers that start it as they
    /// did a thread.
    pub fn start(name: &str) -> std::io::Result<Arc<Listeners>> {
        Ok(Arc::new_cyclic(|me| Listeners {
            name: name.to_string(),
            me: me.clone(),
            inner: Mutex::new(Inner::default()),
            sender_ended: Condvar::new(),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// Adds a listener and starts its sender; it is sent the current
    /// request, then the current system state. A listener registered
    /// already is left as it is; one whose session has ended is not added.
    pub fn register(&self, listener: Strong<dyn IPowerStateListener>) -> Result<(), RegisterError> {
        let binder = listener.as_binder();
        let mut g = self.wait_for_ending(self.lock(), &binder);
        if g.closed {
            return Err(RegisterError::Closed);
        }
        if g.senders
            .iter()
            .any(|s| s.is_for(&binder) && !s.slot.ended())
        {
            return Ok(());
        }
        if g.senders.len() >= MAX_LISTENERS {
            return Err(RegisterError::TooMany);
        }
        let slot = Arc::new(Slot::new(g.first_callbacks()));
        let Ok(death) = watch_death(&binder, &slot) else {
            return Ok(());
        };
        let sender = Sender {
            listener,
            slot,
            death,
        };
        // The sender leaves the set under this lock: not before it is in.
        if let Err(e) = self.spawn(&sender) {
            drop(g);
            tracing::warn!("{}: cannot start a listener's sender: {e}", self.name);
            sender.unlink();
            return Err(RegisterError::Spawn(e.to_string()));
        }
        g.senders.push(sender);
        Ok(())
    }

    /// Waits up to [`ENDING_WAIT`] while [`Inner::must_wait`].
    fn wait_for_ending<'a>(
        &self,
        mut g: MutexGuard<'a, Inner>,
        binder: &SIBinder,
    ) -> MutexGuard<'a, Inner> {
        let end = Instant::now() + ENDING_WAIT;
        while g.must_wait(binder) {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            g = match self.sender_ended.wait_timeout(g, left) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
        g
    }

    /// Starts `sender`'s thread.
    fn spawn(&self, sender: &Sender) -> std::io::Result<()> {
        let owner = Weak::clone(&self.me);
        let name = self.name.clone();
        let listener = sender.listener.clone();
        let slot = Arc::clone(&sender.slot);
        std::thread::Builder::new()
            .name(format!("notify-{}", self.name))
            .spawn(move || run_sender(owner, name, listener, slot))
            .map(drop)
    }

    /// Removes the ended sender of `slot` (and its death link).
    fn sender_ended(&self, slot: &Arc<Slot>) {
        let mut g = self.lock();
        let sender = g
            .senders
            .iter()
            .position(|s| Arc::ptr_eq(&s.slot, slot))
            .map(|i| g.senders.remove(i));
        drop(g);
        self.sender_ended.notify_all();
        if let Some(s) = sender {
            s.unlink();
        }
    }

    /// Removes a listener (unknown ones are ignored): its sender ends
    /// (after a call in progress).
    pub fn unregister(&self, listener: &Strong<dyn IPowerStateListener>) {
        let binder = listener.as_binder();
        for s in self.lock().senders.iter().filter(|s| s.is_for(&binder)) {
            s.slot.end();
        }
    }

    /// How many live listeners are registered (not ended: unregistered,
    /// dead or failed).
    pub fn count(&self) -> usize {
        let g = self.lock();
        g.senders.iter().filter(|s| !s.slot.ended()).count()
    }

    /// A new `AP_POWER_STATE_REQ` for every listener.
    pub fn set_req(&self, req: [i32; 2]) {
        let mut g = self.lock();
        g.req = Some(req);
        g.queue_all(&Callback::Req(req));
    }

    /// A new system state for every listener.
    pub fn set_system(&self, state: Arc<SystemState>) {
        let mut g = self.lock();
        g.system = Some(Arc::clone(&state));
        g.queue_all(&Callback::System(state));
    }

    /// Ends every sender (one inside a call ends when that call returns,
    /// not waited for) and refuses new listeners, waking registrations
    /// waiting for an ending sender.
    pub fn close(&self) {
        let mut g = self.lock();
        g.closed = true;
        for s in &g.senders {
            s.slot.end();
        }
        drop(g);
        self.sender_ended.notify_all();
    }
}

impl Drop for Listeners {
    fn drop(&mut self) {
        // Senders hold no strong reference to the set: end them with it.
        let g = self.inner.get_mut().unwrap_or_else(|p| p.into_inner());
        for s in &g.senders {
            s.slot.end();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::{channel, Receiver, Sender};
    use std::time::{Duration, Instant};

    use rsbinder::rpc::{RpcClientConfig, RpcServer, RpcSession};
    use rsbinder::Interface;
    use vmstack_aidl::vmstack::sysmgr::IPowerStateListener::BnPowerStateListener;
    use vmstack_aidl::vmstack::sysmgr::ISystemManager::ISystemManager;

    /// Records callbacks; the first `onSystemStateChanged` waits for `gate`.
    struct Slow {
        tx: Mutex<Sender<String>>,
        gate: Mutex<Option<Receiver<()>>>,
    }

    impl Interface for Slow {}

    impl IPowerStateListener for Slow {
        fn onApPowerStateReq(&self, value: i32, param: i32) -> rsbinder::BinderResult<()> {
            let _ = self.tx.lock().unwrap().send(format!("req {value} {param}"));
            Ok(())
        }
        fn onSystemStateChanged(&self, s: &SystemState) -> rsbinder::BinderResult<()> {
            if let Some(gate) = self.gate.lock().unwrap().take() {
                let _ = gate.recv();
            }
            let _ = self.tx.lock().unwrap().send(format!("system {}", s.nowMs));
            Ok(())
        }
    }

    fn state(now_ms: i64) -> Arc<SystemState> {
        Arc::new(SystemState {
            nowMs: now_ms,
            ..Default::default()
        })
    }

    #[test]
    fn a_slow_listener_never_loses_the_current_request() {
        let l = Listeners::start("test-slow").unwrap();
        let (tx, rx) = channel();
        let (open, gate) = channel();
        l.register(BnPowerStateListener::new_binder(Slow {
            tx: Mutex::new(tx),
            gate: Mutex::new(Some(gate)),
        }))
        .unwrap();
        // The sender is stuck in the first callback while more arrive:
        // the request (SHUTDOWN_PREPARE = 1) among a flood of states.
        l.set_system(state(0));
        std::thread::sleep(Duration::from_millis(100));
        for i in 1..100 {
            l.set_system(state(i));
        }
        l.set_req([1, 7]);
        for i in 100..200 {
            l.set_system(state(i));
        }
        open.send(()).unwrap();
        let mut got = Vec::new();
        while let Ok(e) = rx.recv_timeout(Duration::from_secs(2)) {
            got.push(e);
        }
        assert!(
            got.contains(&"req 1 7".to_string()),
            "lost the request: {got:?}"
        );
        assert!(
            got.contains(&"system 199".to_string()),
            "not the latest: {got:?}"
        );
        assert!(
            got.len() <= 4,
            "stale callbacks were not coalesced: {got:?}"
        );
        l.close();
    }

    #[test]
    fn a_new_listener_gets_the_request_then_the_system_state() {
        let l = Listeners::start("test-order").unwrap();
        l.set_system(state(5));
        l.set_req([2, 0]);
        let (tx, rx) = channel();
        l.register(BnPowerStateListener::new_binder(Slow {
            tx: Mutex::new(tx),
            gate: Mutex::new(None),
        }))
        .unwrap();
        let first = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        let second = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!((first.as_str(), second.as_str()), ("req 2 0", "system 5"));
        l.close();
    }

    /// A listener that records into `tx` and, with a `gate`, blocks in its
    /// first `onSystemStateChanged` until the gate opens (or is dropped).
    fn slow(tx: Sender<String>, gate: Option<Receiver<()>>) -> Strong<dyn IPowerStateListener> {
        BnPowerStateListener::new_binder(Slow {
            tx: Mutex::new(tx),
            gate: Mutex::new(gate),
        })
    }

    /// The next callback `rx` records that starts with `want`, skipping
    /// others, within `within`.
    fn wait_for(rx: &Receiver<String>, want: &str, within: Duration) -> Option<String> {
        let end = Instant::now() + within;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(got) if got.starts_with(want) => return Some(got),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    #[test]
    fn a_listener_stuck_in_a_callback_does_not_delay_the_others() {
        let l = Listeners::start("test-stuck").unwrap();
        // Registered first: the old single sender called it first.
        let (stuck_tx, stuck_rx) = channel();
        let (open, gate) = channel();
        l.register(slow(stuck_tx, Some(gate))).unwrap();
        let (tx, rx) = channel();
        l.register(slow(tx, None)).unwrap();
        l.set_system(state(1));
        // The first listener never returns from this callback until the
        // gate opens; the other's must arrive long before that.
        let got = wait_for(&rx, "system", Duration::from_secs(2));
        open.send(()).unwrap();
        assert_eq!(
            got.as_deref(),
            Some("system 1"),
            "a stuck listener held back the other's callback"
        );
        // Once released, the stuck one gets its callback too.
        assert_eq!(
            wait_for(&stuck_rx, "system", Duration::from_secs(5)).as_deref(),
            Some("system 1")
        );
        l.close();
    }

    /// Says `entered` on each call, then blocks until `gate` gives or is
    /// dropped.
    struct Stuck {
        entered: Mutex<Sender<()>>,
        gate: Mutex<Receiver<()>>,
    }

    impl Stuck {
        fn wait(&self) -> rsbinder::BinderResult<()> {
            let _ = self.entered.lock().unwrap().send(());
            let _ = self.gate.lock().unwrap().recv();
            Ok(())
        }
    }

    impl Interface for Stuck {}

    impl IPowerStateListener for Stuck {
        fn onApPowerStateReq(&self, _value: i32, _param: i32) -> rsbinder::BinderResult<()> {
            self.wait()
        }
        fn onSystemStateChanged(&self, _s: &SystemState) -> rsbinder::BinderResult<()> {
            self.wait()
        }
    }

    /// How many sender threads have not ended.
    fn senders(l: &Listeners) -> usize {
        l.lock().senders.len()
    }

    /// Waits up to 10 s until `l` has `n` senders.
    fn wait_for_senders(l: &Listeners, n: usize) -> usize {
        let end = Instant::now() + Duration::from_secs(10);
        while senders(l) != n && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
        senders(l)
    }

    #[test]
    fn a_listeners_sender_ends_when_it_is_unregistered_and_on_close() {
        let l = Listeners::start("test-end").unwrap();
        let (tx, rx) = channel();
        let gone = slow(tx.clone(), None);
        l.register(gone.clone()).unwrap();
        let kept = slow(tx, None);
        l.register(kept.clone()).unwrap();
        // Registering again changes nothing.
        l.register(kept.clone()).unwrap();
        assert_eq!((l.count(), senders(&l)), (2, 2));
        l.unregister(&gone);
        assert_eq!(l.count(), 1);
        assert_eq!(
            wait_for_senders(&l, 1),
            1,
            "the sender outlived its listener"
        );
        l.set_req([1, 0]);
        assert_eq!(
            wait_for(&rx, "req", Duration::from_secs(5)).as_deref(),
            Some("req 1 0")
        );
        assert!(
            rx.recv_timeout(Duration::from_millis(200)).is_err(),
            "an unregistered listener was called"
        );
        l.close();
        assert_eq!(wait_for_senders(&l, 0), 0, "close left a sender running");
        assert_eq!(l.register(kept), Err(RegisterError::Closed));
    }

    /// Registers `MAX_LISTENERS` listeners, gets each stuck in a call and
    /// unregisters it: every sender is ending but not gone until its gate
    /// (returned) opens or is dropped.
    fn fill_with_ending_senders(l: &Listeners) -> Vec<Sender<()>> {
        let (entered_tx, entered) = channel();
        let mut gates = Vec::new();
        for i in 0..MAX_LISTENERS {
            let (open, gate) = channel();
            gates.push(open);
            let stuck = BnPowerStateListener::new_binder(Stuck {
                entered: Mutex::new(entered_tx.clone()),
                gate: Mutex::new(gate),
            });
            l.register(stuck.clone()).unwrap();
            l.set_system(state(i64::try_from(i).unwrap()));
            entered.recv_timeout(Duration::from_secs(5)).unwrap();
            l.unregister(&stuck);
        }
        gates
    }

    #[test]
    fn senders_of_removed_listeners_count_until_they_end() {
        let l = Listeners::start("test-bound").unwrap();
        // A client that registers a listener, gets it stuck in a call and
        // unregisters it, again and again: each sender stays until its
        // call returns, and counts.
        let gates = fill_with_ending_senders(&l);
        assert_eq!((l.count(), senders(&l)), (0, MAX_LISTENERS));
        let (tx, rx) = channel();
        let next = slow(tx, None);
        assert_eq!(l.register(next.clone()), Err(RegisterError::TooMany));
        assert_eq!(senders(&l), MAX_LISTENERS);
        // Their calls return: they end, and there is room again.
        drop(gates);
        assert_eq!(l.register(next), Ok(()));
        assert_eq!(
            wait_for(&rx, "system", Duration::from_secs(5)).as_deref(),
            Some(format!("system {}", MAX_LISTENERS - 1).as_str())
        );
        assert_eq!(wait_for_senders(&l, 1), 1);
        l.close();
    }

    #[test]
    fn close_wakes_a_registration_waiting_for_an_ending_sender() {
        let l = Listeners::start("test-close-wakes").unwrap();
        // The set is full of senders stuck in a call (ended, not gone).
        let gates = fill_with_ending_senders(&l);
        // A registration waits (up to ENDING_WAIT) for one of them to end.
        let (tx, _rx) = channel();
        let next = slow(tx, None);
        let (done_tx, done) = channel();
        let waiter = {
            let l = Arc::clone(&l);
            std::thread::spawn(move || {
                let r = l.register(next);
                done_tx.send(Instant::now()).unwrap();
                r
            })
        };
        std::thread::sleep(Duration::from_millis(100));
        let closed = Instant::now();
        l.close();
        let returned = done.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(waiter.join().unwrap(), Err(RegisterError::Closed));
        let took = returned.saturating_duration_since(closed);
        assert!(
            took < ENDING_WAIT / 2,
            "the registration waited {took:?} after close"
        );
        drop(gates);
    }

    /// A client session on `path` that registers `listener`.
    fn client_with(
        path: &std::path::Path,
        listener: Strong<dyn IPowerStateListener>,
    ) -> RpcSession {
        let session = RpcSession::setup_client_android13plus_with_config(
            RpcClientConfig::unix(path, crate::binder::RPC_WIRE_VERSION).incoming_connections(1),
        )
        .expect("connect");
        let root = session.get_root().expect("root");
        let sm = <dyn ISystemManager as rsbinder::FromIBinder>::try_from(root).expect("sm");
        sm.registerListener(&listener).expect("register");
        session
    }

    /// A client session on `path` that registers one listener.
    fn client(path: &std::path::Path) -> RpcSession {
        let (tx, _rx) = channel();
        client_with(path, slow(tx, None))
    }

    /// A fresh directory for a test's socket.
    fn test_dir(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("sysmgr-notify-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Serves one endpoint whose listeners are `listeners` on `path`,
    /// configured as the daemon's endpoints are.
    fn serve(path: &std::path::Path, listeners: &Arc<Listeners>) -> Arc<RpcServer> {
        let (events, _rx) = tokio::sync::mpsc::unbounded_channel();
        let server = RpcServer::setup_unix_server(path).expect("listen");
        crate::binder::configure(&server);
        server
            .set_root(crate::binder::service_binder(
                None,
                events,
                Arc::clone(listeners),
            ))
            .expect("root");
        let _ = server.run_background();
        server
    }

    /// A system state whose parcel is about 128 KiB.
    fn big_state(now_ms: i64) -> Arc<SystemState> {
        Arc::new(SystemState {
            nowMs: now_ms,
            description: "x".repeat(64 * 1024),
            ..Default::default()
        })
    }

    #[test]
    fn a_client_that_stops_reading_does_not_delay_the_others() {
        let dir = test_dir("stop");
        let path = dir.join("sm.sock");
        let listeners = Listeners::start("test-stop").unwrap();
        let server = serve(&path, &listeners);
        // A's callback thread blocks in its first callback: A reads
        // nothing more, so sends to it wait for room once its socket is
        // full, until the callback timeout ends its session.
        let (a_tx, _a_rx) = channel();
        let (open, gate) = channel();
        let a = client_with(&path, slow(a_tx, Some(gate)));
        let (b_tx, b_rx) = channel();
        let b = client_with(&path, slow(b_tx, None));
        listeners.set_system(state(0));
        assert!(wait_for(&b_rx, "system 0", Duration::from_secs(5)).is_some());
        // Far more than a unix socket's buffer (about 200 KiB by default).
        for i in 1..=16 {
            listeners.set_system(big_state(i));
            std::thread::sleep(Duration::from_millis(20));
        }
        let sent = Instant::now();
        listeners.set_system(state(1000));
        let got = wait_for(&b_rx, "system 1000", crate::binder::CALLBACK_TIMEOUT * 2);
        let took = sent.elapsed();
        let _ = open.send(());
        a.close_session();
        b.close_session();
        server.terminate();
        listeners.close();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(got.is_some(), "B never got the last state");
        // The old single sender held it behind A's send for up to the
        // callback timeout (5 s).
        assert!(
            took < crate::binder::CALLBACK_TIMEOUT / 2,
            "B waited {took:?} behind a client that stopped reading"
        );
    }

    #[test]
    fn listeners_of_ended_sessions_free_their_slots() {
        let dir = test_dir("dead");
        let path = dir.join("sm.sock");
        let listeners = Listeners::start("test-dead").unwrap();
        let server = serve(&path, &listeners);

        for _ in 0..MAX_LISTENERS {
            client(&path).close_session();
        }
        let end = Instant::now() + Duration::from_secs(10);
        while listeners.count() > 0 && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(listeners.count(), 0, "dead listeners kept their slots");
        // And a new client may register.
        let live = client(&path);
        assert_eq!(listeners.count(), 1);
        live.close_session();
        server.terminate();
        listeners.close();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
