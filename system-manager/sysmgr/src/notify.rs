//! Delivers `IPowerStateListener` callbacks off the daemon's loop.
//!
//! One [`Listeners`] per binder endpoint (each Android guest, and the
//! host socket) owns the registered listeners and a thread that sends
//! their callbacks. The daemon only queues (never blocks): a guest that
//! stops reading stalls its own thread, and its queue is bounded
//! ([`MAX_QUEUED`] per listener, the oldest dropped first). A listener
//! whose call fails (its peer is gone) is dropped.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use rsbinder::Strong;
use vmstack_aidl::vmstack::sysmgr::IPowerStateListener::IPowerStateListener;
use vmstack_aidl::vmstack::sysmgr::SystemState::SystemState;

/// Most listeners one endpoint may register.
pub const MAX_LISTENERS: usize = 16;
/// Most callbacks queued per listener.
pub const MAX_QUEUED: usize = 64;

/// One callback.
#[derive(Clone, Debug)]
pub enum Callback {
    /// `onApPowerStateReq(value, param)`.
    Req([i32; 2]),
    /// `onSystemStateChanged(state)`.
    System(Arc<SystemState>),
}

struct Entry {
    listener: Strong<dyn IPowerStateListener>,
    queue: VecDeque<Callback>,
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

    /// Adds a listener; it is sent the current request and system state.
    pub fn register(&self, listener: Strong<dyn IPowerStateListener>) -> Result<(), RegisterError> {
        let mut g = self.lock();
        let binder = listener.as_binder();
        if g.entries.iter().any(|e| e.listener.as_binder() == binder) {
            return Ok(());
        }
        if g.entries.len() >= MAX_LISTENERS {
            return Err(RegisterError::TooMany);
        }
        let mut queue = VecDeque::new();
        if let Some(r) = g.req {
            queue.push_back(Callback::Req(r));
        }
        if let Some(s) = &g.system {
            queue.push_back(Callback::System(Arc::clone(s)));
        }
        g.entries.push(Entry { listener, queue });
        drop(g);
        self.wake.notify_one();
        Ok(())
    }

    /// Removes a listener (unknown ones are ignored).
    pub fn unregister(&self, listener: &Strong<dyn IPowerStateListener>) {
        let binder = listener.as_binder();
        self.lock()
            .entries
            .retain(|e| e.listener.as_binder() != binder);
    }

    /// How many listeners are registered.
    pub fn count(&self) -> usize {
        self.lock().entries.len()
    }

    /// A new `AP_POWER_STATE_REQ` for every listener.
    pub fn set_req(&self, req: [i32; 2]) {
        let mut g = self.lock();
        g.req = Some(req);
        Self::push(&self.name, &mut g, Callback::Req(req));
        drop(g);
        self.wake.notify_one();
    }

    /// A new system state for every listener.
    pub fn set_system(&self, state: Arc<SystemState>) {
        let mut g = self.lock();
        g.system = Some(Arc::clone(&state));
        Self::push(&self.name, &mut g, Callback::System(state));
        drop(g);
        self.wake.notify_one();
    }

    /// Stops the sender thread.
    pub fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_one();
    }

    fn push(name: &str, g: &mut Inner, cb: Callback) {
        for e in &mut g.entries {
            if e.queue.len() >= MAX_QUEUED {
                tracing::warn!("{name}: a listener is not keeping up; dropped its oldest callback");
                e.queue.pop_front();
            }
            e.queue.push_back(cb.clone());
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
