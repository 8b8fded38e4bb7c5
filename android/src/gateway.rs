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

impl Forwarder {
    /// Marks the client dead when `r` says its process is gone. Any other
    /// failure (a full async buffer's `FAILED_TRANSACTION`, say) loses
    /// this callback only: the next one carries the current state again.
    fn check(&self, r: BinderResult<()>) {
        if let Err(e) = r {
            if e.transaction_error() == StatusCode::DeadObject {
                self.dead.store(true, std::sync::atomic::Ordering::SeqCst);
            } else {
                tracing::debug!("a guest listener's callback failed: {e:?}");
            }
        }
    }
}

impl IPowerStateListener for Forwarder {
    fn onApPowerStateReq(&self, value: i32, param: i32) -> BinderResult<()> {
        self.check(self.target.onApPowerStateReq(value, param));
        Ok(())
    }
    fn onSystemStateChanged(&self, s: &SystemState) -> BinderResult<()> {
        self.check(self.target.onSystemStateChanged(s));
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
    /// Serializes `registerListener` and `unregisterListener` (check, host
    /// call and local update as one step). Never taken by `connect`,
    /// which `call` may run while this is held.
    ops: Mutex<()>,
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
            ops: Mutex::new(()),
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
        let _op = self.0.ops.lock().unwrap_or_else(|p| p.into_inner());
        let binder = listener.as_binder();
        {
            let regs = self.0.regs();
            if regs.iter().any(|r| r.client.as_binder() == binder) {
                return Ok(());
            }
            if regs.len() >= MAX_FORWARDED {
                return Err(Status::new_service_specific_error(
                    ism::ERROR_TOO_MANY_LISTENERS,
                    Some(format!("at most {MAX_FORWARDED} listeners")),
                ));
            }
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
        let _op = self.0.ops.lock().unwrap_or_else(|p| p.into_inner());
        let binder = listener.as_binder();
        let forwarders: Vec<_> = self
            .0
            .regs()
            .iter()
            .filter(|r| r.client.as_binder() == binder)
            .map(|r| r.forwarder.clone())
            .collect();
        for f in forwarders {
            // Forgotten locally only once the host has let it go: on
            // failure it stays (and is registered again on reconnect), so
            // the client may retry.
            self.0.call(|sm| sm.unregisterListener(&f))?;
            let fb = f.as_binder();
            self.0.regs().retain(|r| r.forwarder.as_binder() != fb);
        }
        Ok(())
    }
    fn dumpState(&self) -> BinderResult<String> {
        self.0.call(|sm| sm.dumpState())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use rsbinder::rpc::RpcServer;
    use vmstack_aidl::vmstack::sysmgr::ISystemManager::BnSystemManager;

    /// A guest listener whose callbacks fail with `code`.
    struct Failing(StatusCode);

    impl Interface for Failing {}

    impl IPowerStateListener for Failing {
        fn onApPowerStateReq(&self, _: i32, _: i32) -> BinderResult<()> {
            Err(self.0.into())
        }
        fn onSystemStateChanged(&self, _: &SystemState) -> BinderResult<()> {
            Err(self.0.into())
        }
    }

    fn forwarder(code: StatusCode) -> Forwarder {
        Forwarder {
            target: BnPowerStateListener::new_binder(Failing(code)),
            dead: Arc::new(AtomicBool::new(false)),
        }
    }

    #[test]
    fn only_a_dead_object_marks_the_client_dead() {
        let f = forwarder(StatusCode::FailedTransaction);
        f.onApPowerStateReq(1, 0).unwrap();
        f.onSystemStateChanged(&SystemState::default()).unwrap();
        assert!(!f.dead.load(Ordering::SeqCst), "a full buffer is not death");
        let f = forwarder(StatusCode::DeadObject);
        f.onApPowerStateReq(1, 0).unwrap();
        assert!(f.dead.load(Ordering::SeqCst));
    }

    /// A host whose `unregisterListener` fails while `fail` is set; it
    /// counts the listeners it holds.
    #[derive(Clone, Default)]
    struct Host {
        fail: Arc<AtomicBool>,
        held: Arc<AtomicUsize>,
    }

    impl Interface for Host {}

    impl ISystemManager for Host {
        fn getSystemState(&self) -> BinderResult<SystemState> {
            Ok(SystemState::default())
        }
        fn getGuestState(&self, _: &str) -> BinderResult<GuestState> {
            Ok(GuestState::default())
        }
        fn getApPowerStateReq(&self) -> BinderResult<Vec<i32>> {
            Ok(Vec::new())
        }
        fn reportApPowerState(&self, _: i32, _: i32) -> BinderResult<()> {
            Ok(())
        }
        fn postponeShutdown(&self, _: i32) -> BinderResult<()> {
            Ok(())
        }
        fn requestShutdown(&self, _: i32) -> BinderResult<()> {
            Ok(())
        }
        fn registerListener(&self, _: &Strong<dyn IPowerStateListener>) -> BinderResult<()> {
            self.held.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        fn unregisterListener(&self, _: &Strong<dyn IPowerStateListener>) -> BinderResult<()> {
            if self.fail.load(Ordering::SeqCst) {
                return Err(Status::new_service_specific_error(
                    ism::ERROR_UNAVAILABLE,
                    None,
                ));
            }
            self.held.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        }
        fn dumpState(&self) -> BinderResult<String> {
            Ok(String::new())
        }
    }

    #[test]
    fn a_failed_host_unregister_keeps_the_forwarder_for_a_retry() {
        let dir = std::env::temp_dir().join(format!("gateway-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("host.sock");
        let host = Host::default();
        let server = Arc::new(RpcServer::setup_unix_server(&path).expect("listen"));
        server.set_android13plus(crate::conn::RPC_WIRE_VERSION);
        server
            .set_root(BnSystemManager::new_binder(host.clone()).as_binder())
            .expect("root");
        let _ = server.run_background();

        let gw = Gateway::new(RpcAddr::Unix(path));
        gw.connect().expect("connect");
        let svc = GatewayService(Arc::clone(&gw));
        let client = BnPowerStateListener::new_binder(Failing(StatusCode::Ok));
        svc.registerListener(&client).unwrap();
        svc.registerListener(&client).unwrap();
        assert_eq!(host.held.load(Ordering::SeqCst), 1);

        host.fail.store(true, Ordering::SeqCst);
        assert!(svc.unregisterListener(&client).is_err());
        assert_eq!(
            gw.regs().len(),
            1,
            "forgotten while the host still holds it"
        );
        host.fail.store(false, Ordering::SeqCst);
        svc.unregisterListener(&client).unwrap();
        assert_eq!(
            host.held.load(Ordering::SeqCst),
            0,
            "the retry reached the host"
        );
        assert!(gw.regs().is_empty());
        server.terminate();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
