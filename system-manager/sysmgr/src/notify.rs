//! Delivers `IPowerStateListener` callbacks off the daemon's loop.
//!
//! One [`Listeners`] per binder endpoint (each Android guest, and the
//! host socket) owns the registered listeners and a thread that sends
//! their callbacks. The daemon only queues (never blocks). Each listener
//! keeps at most one pending callback of each kind, the latest
//! `onApPowerStateReq` and the latest `onSystemStateChanged` (a newer one
//! replaces the pending one in its place): both carry the whole current
//! value, so a listener that falls behind skips only stale values and
//! never loses the current request (a `SHUTDOWN_PREPARE` cannot be pushed
//! out by system-state churn). A new listener gets the current request,
//! then the current system state. A send to a client that stops reading
//! is bounded by the endpoints' callback timeout (`binder.rs`), whose
//! expiry ends that client's session; meanwhile the endpoint's other
//! listeners wait. A listener whose call fails (its peer is gone) is
//! dropped, and so is one whose session has ended (a death notification),
//! before its slot is counted against [`MAX_LISTENERS`].

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use rsbinder::{DeathRecipient, Strong, WIBinder};
use vmstack_aidl::vmstack::sysmgr::IPowerStateListener::IPowerStateListener;
use vmstack_aidl::vmstack::sysmgr::SystemState::SystemState;

/// Most listeners one endpoint may register.
pub const MAX_LISTENERS: usize = 16;

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
}

/// Set when a listener's binder dies (its session ended).
#[derive(Default)]
struct Death(AtomicBool);

impl DeathRecipient for Death {
    fn binder_died(&self, _who: &WIBinder) {
        self.0.store(true, Ordering::SeqCst);
    }
}

struct Entry {
    listener: Strong<dyn IPowerStateListener>,
    /// Pending callbacks in order, at most one of each kind.
    queue: VecDeque<Callback>,
    /// Linked to the listener's death; `None` when it cannot die apart
    /// from us (a local binder) or the link was refused.
    death: Option<Arc<Death>>,
}

impl Entry {
    fn dead(&self) -> bool {
        self.death
            .as_ref()
            .is_some_and(|d| d.0.load(Ordering::SeqCst))
    }

    /// Queues `cb`, replacing a pending callback of its kind in place.
    fn queue(&mut self, cb: Callback) {
        match self.queue.iter_mut().find(|q| q.same_kind(&cb)) {
            Some(q) => *q = cb,
            None => self.queue.push_back(cb),
        }
    }

    fn unlink(&self) {
        if let Some(d) = &self.death {
            let _ = self.listener.as_binder().unlink_to_death_arc(d);
        }
    }
}

impl Inner {
    /// Drops the listeners whose binder died.
    fn prune(&mut self) {
        self.entries.retain(|e| {
            let dead = e.dead();
            if dead {
                e.unlink();
            }
            !dead
        });
    }
}

#[derive(Default)]
struct Inner {
    entries: Vec<Entry>,
    /// The current `AP_POWER_STATE_REQ` (a new listener gets it first).
    req: Option<[i32; 2]>,
    /// The last system state sent (a new listener gets it too).
    system: Option<Arc<SystemState>>,
    closed: bool,
}

/// The listeners of one endpoint.
pub struct Listeners {
    name: String,
    inner: Mutex<Inner>,
    wake: Condvar,
}

/// Why a registration failed.
#[derive(Debug, PartialEq, Eq)]
pub enum RegisterError {
    /// [`MAX_LISTENERS`] already.
    TooMany,
}

impl Listeners {
    /// Creates the set and starts its sender thread (`name` is for logs).
    pub fn start(name: &str) -> std::io::Result<Arc<Listeners>> {
        let l = Arc::new(Listeners {
            name: name.to_string(),
            inner: Mutex::new(Inner::default()),
            wake: Condvar::new(),
        });
        let worker = Arc::clone(&l);
        std::thread::Builder::new()
            .name(format!("notify-{name}"))
            .spawn(move || worker.run())?;
        Ok(l)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data; go on with it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a listener; it is sent the current request, then the current
    /// system state. Listeners whose session has ended are dropped first,
    /// so they do not count against [`MAX_LISTENERS`].
    pub fn register(&self, listener: Strong<dyn IPowerStateListener>) -> Result<(), RegisterError> {
        let mut g = self.lock();
        g.prune();
        let binder = listener.as_binder();
        if g.entries.iter().any(|e| e.listener.as_binder() == binder) {
            return Ok(());
        }
        if g.entries.len() >= MAX_LISTENERS {
            return Err(RegisterError::TooMany);
        }
        // Only a remote binder can die; a refused link (a local binder, a
        // session that would not notice) leaves the entry to a failed call.
        let death = binder.is_remote().then(|| Arc::new(Death::default()));
        let death = match death {
            Some(d) => match binder.link_to_death_arc(&d) {
                Ok(()) => Some(d),
                // Its session has ended already.
                Err(rsbinder::StatusCode::DeadObject) => return Ok(()),
                Err(_) => None,
            },
            None => None,
        };
        let mut queue = VecDeque::new();
        if let Some(r) = g.req {
            queue.push_back(Callback::Req(r));
        }
        if let Some(s) = &g.system {
            queue.push_back(Callback::System(Arc::clone(s)));
        }
        g.entries.push(Entry {
            listener,
            queue,
            death,
        });
        drop(g);
        self.wake.notify_one();
        Ok(())
    }

    /// Removes a listener (unknown ones are ignored).
    pub fn unregister(&self, listener: &Strong<dyn IPowerStateListener>) {
        let binder = listener.as_binder();
        self.lock().entries.retain(|e| {
            let keep = e.listener.as_binder() != binder;
            if !keep {
                e.unlink();
            }
            keep
        });
    }

    /// How many live listeners are registered.
    pub fn count(&self) -> usize {
        let mut g = self.lock();
        g.prune();
        g.entries.len()
    }

    /// A new `AP_POWER_STATE_REQ` for every listener.
    pub fn set_req(&self, req: [i32; 2]) {
        let mut g = self.lock();
        g.req = Some(req);
        Self::push(&mut g, Callback::Req(req));
        drop(g);
        self.wake.notify_one();
    }

    /// A new system state for every listener.
    pub fn set_system(&self, state: Arc<SystemState>) {
        let mut g = self.lock();
        g.system = Some(Arc::clone(&state));
        Self::push(&mut g, Callback::System(state));
        drop(g);
        self.wake.notify_one();
    }

    /// Stops the sender thread.
    pub fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_one();
    }

    fn push(g: &mut Inner, cb: Callback) {
        for e in &mut g.entries {
            e.queue(cb.clone());
        }
    }

    fn run(&self) {
        loop {
            // Take one callback per listener, send outside the lock.
            let batch: Vec<(Strong<dyn IPowerStateListener>, Callback)> = {
                let mut g = self.lock();
                loop {
                    if g.closed {
                        return;
                    }
                    g.prune();
                    if g.entries.iter().any(|e| !e.queue.is_empty()) {
                        break;
                    }
                    g = self.wake.wait(g).unwrap_or_else(|p| p.into_inner());
                }
                g.entries
                    .iter_mut()
                    .filter_map(|e| Some((e.listener.clone(), e.queue.pop_front()?)))
                    .collect()
            };
            for (listener, cb) in batch {
                let r = match &cb {
                    Callback::Req([v, p]) => listener.onApPowerStateReq(*v, *p),
                    Callback::System(s) => listener.onSystemStateChanged(s),
                };
                if let Err(e) = r {
                    tracing::info!("{}: listener gone ({e}); removed", self.name);
                    self.unregister(&listener);
                }
            }
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

    /// A client session on `path` that registers one listener.
    fn client(path: &std::path::Path) -> RpcSession {
        let session = RpcSession::setup_client_android13plus_with_config(
            RpcClientConfig::unix(path, crate::binder::RPC_WIRE_VERSION).incoming_connections(1),
        )
        .expect("connect");
        let root = session.get_root().expect("root");
        let sm = <dyn ISystemManager as rsbinder::FromIBinder>::try_from(root).expect("sm");
        let (tx, _rx) = channel();
        let l = BnPowerStateListener::new_binder(Slow {
            tx: Mutex::new(tx),
            gate: Mutex::new(None),
        });
        sm.registerListener(&l).expect("register");
        session
    }

    #[test]
    fn listeners_of_ended_sessions_free_their_slots() {
        let dir = std::env::temp_dir().join(format!("sysmgr-notify-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sm.sock");
        let listeners = Listeners::start("test-dead").unwrap();
        let (events, _rx) = tokio::sync::mpsc::unbounded_channel();
        let server = Arc::new(RpcServer::setup_unix_server(&path).expect("listen"));
        crate::binder::configure(&server);
        server
            .set_root(crate::binder::service_binder(
                None,
                events,
                Arc::clone(&listeners),
            ))
            .expect("root");
        let _ = server.run_background();

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
