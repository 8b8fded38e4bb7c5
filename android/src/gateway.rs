//! `sysmgr-binderd`'s core: a local `ISystemManager` registered on the
//! guest's kernel binder that forwards every call to the host's `sysmgr`
//! over RPC binder (rsbinder's gateway pattern: a local `Bn*` wrapping a
//! remote proxy). Listeners are forwarded the other way: for each
//! kernel-binder listener a local forwarder is registered with the host,
//! and the host's callbacks reach it over the session's callback
//! connection and go on to the guest client as kernel binder oneway calls.
//!
//! The host session is reconnected when it dies (the daemon restarted,
//! the VM was resumed), every call is retried once on the new session,
//! and the listeners are registered again.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{anyhow, Result};
use rsbinder::{BinderResult, Interface, Status, StatusCode, Strong};
use vmstack_aidl::vmstack::sysmgr::GuestState::GuestState;
use vmstack_aidl::vmstack::sysmgr::IPowerStateListener::{
    BnPowerStateListener, IPowerStateListener,
};
use vmstack_aidl::vmstack::sysmgr::ISystemManager::{self as ism, ISystemManager};
use vmstack_aidl::vmstack::sysmgr::SystemState::SystemState;

use crate::conn::{Conn, RpcAddr};

/// The host side: a session and its `ISystemManager`.
struct Host {
    _conn: Conn,
    sm: Strong<dyn ISystemManager>,
}

/// Forwards host callbacks to one guest client's kernel-binder listener.
struct Forwarder {
    target: Strong<dyn IPowerStateListener>,
    dead: Arc<std::sync::atomic::AtomicBool>,
}

impl Interface for Forwarder {}

impl IPowerStateListener for Forwarder {
    fn onApPowerStateReq(&self, value: i32, param: i32) -> BinderResult<()> {
        if self.target.onApPowerStateReq(value, param).is_err() {
            self.dead.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        Ok(())
    }
    fn onSystemStateChanged(&self, s: &SystemState) -> BinderResult<()> {
        if self.target.onSystemStateChanged(s).is_err() {
            self.dead.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        Ok(())
    }
}

struct Registered {
    client: Strong<dyn IPowerStateListener>,
    forwarder: Strong<dyn IPowerStateListener>,
    dead: Arc<std::sync::atomic::AtomicBool>,
}

/// Most guest listeners the gateway forwards.
pub const MAX_FORWARDED: usize = 16;

/// The gateway service.
pub struct Gateway {
    addr: RpcAddr,
    host: Mutex<Option<Host>>,
    listeners: Mutex<Vec<Registered>>,
}

fn unavailable(why: String) -> Status {
    Status::new_service_specific_error(ism::ERROR_UNAVAILABLE, Some(why))
}

impl Gateway {
    /// A gateway to the host at `addr` (not connected yet).
    pub fn new(addr: RpcAddr) -> Arc<Gateway> {
        Arc::new(Gateway {
            addr,
            host: Mutex::new(None),
            listeners: Mutex::new(Vec::new()),
        })
    }

    fn host(&self) -> MutexGuard<'_, Option<Host>> {
        self.host.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn regs(&self) -> MutexGuard<'_, Vec<Registered>> {
        self.listeners.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// (Re)connects to the host and registers the forwarders again.
    pub fn connect(&self) -> Result<()> {
        let conn = Conn::rpc(&self.addr)?;
        let root = match &conn {
            Conn::Rpc { root, .. } => root.clone(),
            Conn::Kernel => return Err(anyhow!("not an RPC connection")),
        };
        let sm = <dyn ISystemManager as rsbinder::FromIBinder>::try_from(root)
            .map_err(|e| anyhow!("the host's root object is not an ISystemManager: {e:?}"))?;
        for r in self.regs().iter() {
            if let Err(e) = sm.registerListener(&r.forwarder) {
                tracing::warn!("re-registering a listener with the host: {e:?}");
            }
        }
        *self.host() = Some(Host { _conn: conn, sm });
        Ok(())
    }

    /// Whether the host answers a ping.
    pub fn alive(&self) -> bool {
        self.host()
            .as_ref()
            .is_some_and(|h| h.sm.as_binder().ping_binder().is_ok())
    }

    /// Runs `f` on the host's `ISystemManager`, reconnecting and retrying
    /// once when the session is dead.
    fn call<T>(&self, f: impl Fn(&dyn ISystemManager) -> BinderResult<T>) -> BinderResult<T> {
        let first = {
            let h = self.host();
            match h.as_ref() {
                Some(h) => f(&*h.sm),
                None => Err(Status::from(StatusCode::DeadObject)),
            }
        };
        match first {
            Err(e) if e.transaction_error() == StatusCode::DeadObject => {
                self.connect().map_err(|e| {
                    unavailable(format!("the host's sysmgr is not reachable: {e:#}"))
                })?;
                let h = self.host();
                match h.as_ref() {
                    Some(h) => f(&*h.sm),
                    None => Err(unavailable("the host's sysmgr is not reachable".into())),
                }
            }
            r => r,
        }
    }

    /// Drops forwarders whose guest listener is gone.
    fn prune(&self) {
        let dead: Vec<Strong<dyn IPowerStateListener>> = {
            let mut regs = self.regs();
            let (dead, live): (Vec<_>, Vec<_>) = regs
                .drain(..)
                .partition(|r| r.dead.load(std::sync::atomic::Ordering::SeqCst));
            *regs = live;
            dead.into_iter().map(|r| r.forwarder).collect()
        };
        for f in dead {
            let _ = self.call(|sm| sm.unregisterListener(&f));
        }
    }

    /// Keeps the host session up: checks every `period`, reconnects.
    pub fn monitor(self: Arc<Self>, period: Duration) {
        loop {
            std::thread::sleep(period);
            self.prune();
            if !self.alive() {
                match self.connect() {
                    Ok(()) => tracing::info!("reconnected to the host's sysmgr"),
                    Err(e) => tracing::debug!("host not reachable yet: {e:#}"),
                }
            }
        }
    }
}

/// The kernel-binder face of a [`Gateway`].
pub struct GatewayService(pub Arc<Gateway>);

impl Interface for GatewayService {}

impl ISystemManager for GatewayService {
    fn getSystemState(&self) -> BinderResult<SystemState> {
        self.0.call(|sm| sm.getSystemState())
    }
    fn getGuestState(&self, name: &str) -> BinderResult<GuestState> {
        self.0.call(|sm| sm.getGuestState(name))
    }
    fn getApPowerStateReq(&self) -> BinderResult<Vec<i32>> {
        self.0.call(|sm| sm.getApPowerStateReq())
    }
    fn reportApPowerState(&self, value: i32, param: i32) -> BinderResult<()> {
        self.0.call(|sm| sm.reportApPowerState(value, param))
    }
    fn postponeShutdown(&self, ms: i32) -> BinderResult<()> {
        self.0.call(|sm| sm.postponeShutdown(ms))
    }
    fn requestShutdown(&self, param: i32) -> BinderResult<()> {
        self.0.call(|sm| sm.requestShutdown(param))
    }
    fn registerListener(&self, listener: &Strong<dyn IPowerStateListener>) -> BinderResult<()> {
        self.0.prune();
        let binder = listener.as_binder();
        if self.0.regs().iter().any(|r| r.client.as_binder() == binder) {
            return Ok(());
        }
        if self.0.regs().len() >= MAX_FORWARDED {
            return Err(Status::new_service_specific_error(
                ism::ERROR_TOO_MANY_LISTENERS,
                Some(format!("at most {MAX_FORWARDED} listeners")),
            ));
        }
        let dead = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let forwarder = BnPowerStateListener::new_binder(Forwarder {
            target: listener.clone(),
            dead: Arc::clone(&dead),
        });
        self.0.call(|sm| sm.registerListener(&forwarder))?;
        self.0.regs().push(Registered {
            client: listener.clone(),
            forwarder,
            dead,
        });
        Ok(())
    }
    fn unregisterListener(&self, listener: &Strong<dyn IPowerStateListener>) -> BinderResult<()> {
        let binder = listener.as_binder();
        let gone: Vec<_> = {
            let mut regs = self.0.regs();
            let (gone, keep): (Vec<_>, Vec<_>) =
                regs.drain(..).partition(|r| r.client.as_binder() == binder);
            *regs = keep;
            gone
        };
        for r in gone {
            self.0.call(|sm| sm.unregisterListener(&r.forwarder))?;
        }
        Ok(())
    }
    fn dumpState(&self) -> BinderResult<String> {
        self.0.call(|sm| sm.dumpState())
    }
}
