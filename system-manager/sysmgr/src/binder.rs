//! `ISystemManager` (crate `vmstack-aidl`) served over **RPC binder**
//! (rsbinder, Android 13+ wire profile) on one unix socket per endpoint:
//!
//! - **each Android guest**: `<vsock_socket>_<binder_port>`, the path the
//!   VMM's hybrid vsock connects a guest's `connect(cid 2, binder_port)`
//!   to (`docs/vsock.md`). Which listener accepted the connection is the
//!   guest's identity; nothing the guest sends names it.
//! - **host tools**: `<state-dir>/binder/sysmgr.sock` (directory 0700,
//!   socket 0600, peers of another uid refused), with no guest identity:
//!   queries, `dumpState` and system-state listeners only.
//!
//! The socket's root object is the service (AVF's convention: no service
//! manager over RPC). Calls run on rsbinder's connection threads and reach
//! the daemon's loop as [`BinderRequest`] events: reports and shutdown
//! requests become arbiter inputs exactly as the VHAL line channel's
//! reports do (logged), queries are answered from the arbiter's state and
//! never logged. `AP_POWER_STATE_REQ` outputs go to the guest's
//! [`Listeners`] as `onApPowerStateReq` callbacks; every system state
//! change goes to every endpoint's listeners. A client needs an incoming
//! (callback) connection (`RpcClientConfig::incoming_connections(1)`) for
//! its listeners to be called.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use rsbinder::rpc::RpcServer;
use rsbinder::{ExceptionCode, Interface, Status, Strong};
use system_manager::{
    Arbiter, GuestState as CoreGuest, Output, Policy, SystemState as CoreSystem, VmmUser,
};
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::oneshot;
use vmstack_aidl::vmstack::sysmgr::GuestState::GuestState;
use vmstack_aidl::vmstack::sysmgr::IPowerStateListener::IPowerStateListener;
use vmstack_aidl::vmstack::sysmgr::ISystemManager::{self as ism, BnSystemManager, ISystemManager};
use vmstack_aidl::vmstack::sysmgr::SystemState::SystemState;

use crate::daemon::Event;
use crate::notify::{Listeners, RegisterError};

/// Highest android-13+ RPC wire version offered (2 = Android 16).
pub const RPC_WIRE_VERSION: u32 = 2;
/// Incoming slots per session (callback connections: twice this).
const MAX_THREADS: u32 = 2;
/// Concurrent connections per endpoint (a guest cannot exhaust threads).
const MAX_CONNECTIONS: usize = 16;

/// A binder call the daemon's loop answers.
#[derive(Debug)]
pub enum BinderRequest {
    /// `getSystemState` and friends (not logged).
    State(oneshot::Sender<SystemState>),
    /// `dumpState` (not logged).
    Dump(oneshot::Sender<String>),
    /// `reportApPowerState` from guest `guest`: an input.
    Report {
        /// Guest index.
        guest: usize,
        /// `AP_POWER_STATE_REPORT[0]`.
        value: i32,
        /// `AP_POWER_STATE_REPORT[1]`.
        param: i32,
        /// `Err(reason)` when the arbiter rejected it.
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// `requestShutdown` from guest `guest`: an input.
    ShutdownRequest {
        /// Guest index.
        guest: usize,
        /// `VehicleApPowerStateShutdownParam`.
        param: i32,
        /// `Err(reason)` when the arbiter rejected it.
        reply: oneshot::Sender<Result<(), String>>,
    },
}

/// The `ISystemManager` object of one endpoint.
struct Endpoint {
    /// `(index, name)` of the guest this endpoint belongs to; `None` on the host socket.
    guest: Option<(usize, String)>,
    events: UnboundedSender<Event>,
    listeners: Arc<Listeners>,
}

fn unavailable() -> Status {
    Status::new_service_specific_error(
        ism::ERROR_UNAVAILABLE,
        Some("the system manager is shutting down".into()),
    )
}

impl Endpoint {
    fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> BinderRequest) -> Result<T, Status> {
        let (tx, rx) = oneshot::channel();
        self.events
            .send(Event::Binder(make(tx)))
            .map_err(|_| unavailable())?;
        rx.blocking_recv().map_err(|_| unavailable())
    }

    fn guest(&self, what: &str) -> Result<usize, Status> {
        self.guest.as_ref().map(|(i, _)| *i).ok_or_else(|| {
            Status::new_service_specific_error(
                ism::ERROR_NOT_A_GUEST,
                Some(format!(
                    "{what} needs a guest's connection (this is the host's socket)"
                )),
            )
        })
    }

    fn input(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<(), String>>) -> BinderRequest,
    ) -> Result<(), Status> {
        self.ask(make)?
            .map_err(|reason| Status::new_service_specific_error(ism::ERROR_REJECTED, Some(reason)))
    }
}

impl Interface for Endpoint {}

impl ISystemManager for Endpoint {
    fn getSystemState(&self) -> rsbinder::BinderResult<SystemState> {
        self.ask(BinderRequest::State)
    }

    fn getGuestState(&self, name: &str) -> rsbinder::BinderResult<GuestState> {
        self.ask(BinderRequest::State)?
            .guests
            .into_iter()
            .find(|g| g.name == name)
            .ok_or_else(|| Status::from(ExceptionCode::IllegalArgument))
    }

    fn getApPowerStateReq(&self) -> rsbinder::BinderResult<Vec<i32>> {
        let i = self.guest("getApPowerStateReq")?;
        let s = self.ask(BinderRequest::State)?;
        Ok(match s.guests.get(i) {
            Some(g) if g.hasApPowerStateReq => vec![g.apPowerStateReq, g.apPowerStateReqParam],
            _ => Vec::new(),
        })
    }

    fn reportApPowerState(&self, value: i32, param: i32) -> rsbinder::BinderResult<()> {
        let guest = self.guest("reportApPowerState")?;
        self.input(|reply| BinderRequest::Report {
            guest,
            value,
            param,
            reply,
        })
    }

    fn postponeShutdown(&self, ms: i32) -> rsbinder::BinderResult<()> {
        self.reportApPowerState(ism::REPORT_SHUTDOWN_POSTPONE, ms)
    }

    fn requestShutdown(&self, param: i32) -> rsbinder::BinderResult<()> {
        let guest = self.guest("requestShutdown")?;
        self.input(|reply| BinderRequest::ShutdownRequest {
            guest,
            param,
            reply,
        })
    }

    fn registerListener(
        &self,
        listener: &Strong<dyn IPowerStateListener>,
    ) -> rsbinder::BinderResult<()> {
        self.listeners
            .register(listener.clone())
            .map_err(|e| match e {
                RegisterError::TooMany => Status::new_service_specific_error(
                    ism::ERROR_TOO_MANY_LISTENERS,
                    Some(format!(
                        "at most {} listeners per connection endpoint",
                        crate::notify::MAX_LISTENERS
                    )),
                ),
                RegisterError::Closed => unavailable(),
                RegisterError::Spawn(_) => {
                    Status::new_service_specific_error(ism::ERROR_UNAVAILABLE, Some(e.to_string()))
                }
            })
    }

    fn unregisterListener(
        &self,
        listener: &Strong<dyn IPowerStateListener>,
    ) -> rsbinder::BinderResult<()> {
        self.listeners.unregister(listener);
        Ok(())
    }

    fn dumpState(&self) -> rsbinder::BinderResult<String> {
        self.ask(BinderRequest::Dump)
    }
}

/// The binder side of the daemon: the servers and their listeners.
pub struct BinderEndpoints {
    /// Per guest (policy order): its listeners, if it has a binder endpoint.
    pub guests: Vec<Option<Arc<Listeners>>>,
    /// The host socket's listeners.
    pub host: Arc<Listeners>,
    /// The host socket's path.
    pub host_socket: PathBuf,
    servers: Arc<std::sync::Mutex<Vec<Arc<RpcServer>>>>,
}

impl BinderEndpoints {
    /// Every endpoint's listeners.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Listeners>> {
        self.guests
            .iter()
            .flatten()
            .chain(std::iter::once(&self.host))
    }
}

impl Drop for BinderEndpoints {
    fn drop(&mut self) {
        for s in self
            .servers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            s.terminate();
        }
        for l in self.all() {
            l.close();
        }
    }
}

/// The host socket's path under a state directory.
pub fn host_socket(state_dir: &Path) -> PathBuf {
    state_dir.join("binder").join("sysmgr.sock")
}

/// A guest's endpoint path: `<vsock_socket>_<port>`.
pub fn guest_socket(vsock_socket: &str, port: u32) -> PathBuf {
    PathBuf::from(format!("{vsock_socket}_{port}"))
}

/// The `ISystemManager` binder of one endpoint: `guest` is `(index, name)`
/// of the Android guest it belongs to (`None`: the host's socket); its
/// calls arrive on `events` as [`Event::Binder`]. Exposed for the fuzz
/// target, which serves it exactly as [`start`] does.
pub fn service_binder(
    guest: Option<(usize, String)>,
    events: UnboundedSender<Event>,
    listeners: Arc<Listeners>,
) -> rsbinder::SIBinder {
    BnSystemManager::new_binder(Endpoint {
        guest,
        events,
        listeners,
    })
    .as_binder()
}

/// How long a callback send to a client may go without the client's
/// progress (and a callback's reply wait) before that client's session is
/// ended: a client that stops reading stalls its own listeners' senders
/// ([`Listeners`] runs one per listener; other listeners are not held
/// back) at most this long per callback, then its listeners are dropped.
/// Not an idle timeout: a client that only waits for callbacks is idle
/// and must stay connected.
pub const CALLBACK_TIMEOUT: Duration = Duration::from_secs(5);

/// Applies the endpoints' server settings (android-13+ wire, thread and
/// connection bounds, the [`CALLBACK_TIMEOUT`]).
pub fn configure(server: &RpcServer) {
    server.set_android13plus(RPC_WIRE_VERSION);
    server.set_reply_timeout(Some(CALLBACK_TIMEOUT));
    server.set_max_threads(MAX_THREADS);
    server.set_max_connections(MAX_CONNECTIONS);
}

/// Who may connect to an endpoint besides root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Peers {
    /// The host socket: the daemon's own uid.
    Host,
    /// A guest socket whose VMM runs as the stack's shared sandbox user:
    /// the daemon's own uid and its other allowed peers (the VMMs' user,
    /// `--allow-peer-uid`), since the VMM connects the guest's vsock
    /// connections to it. Which socket accepted is the guest's identity.
    SharedVmmUser,
    /// A guest socket whose VMM has its own `vmm_user`: that uid only,
    /// the file shared with its gid (`0660`).
    Vmm(VmmUser),
}

/// Whether a peer of uid `uid` (`SO_PEERCRED`; `None` when the kernel
/// gave none) may open a connection to an endpoint of `peers`.
fn peer_admitted(uid: Option<u32>, peers: Peers, me: u32, allowed: &[u32]) -> bool {
    match (uid, peers) {
        (None, _) => false,
        (Some(0), _) => true,
        (Some(u), Peers::Host) => u == me,
        (Some(u), Peers::SharedVmmUser) => u == me || sandbox::socket::uid_allowed(u, allowed),
        (Some(u), Peers::Vmm(vmm)) => u == vmm.uid,
    }
}

fn serve(path: &Path, endpoint: Endpoint, peers: Peers) -> Result<Arc<RpcServer>> {
    let server = RpcServer::setup_unix_server(path)
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e:?}", path.display()))?;
    // rsbinder listens before we can chmod: the authorizer, installed
    // before the first accept (`run_background` below), refuses any other
    // uid that connects in between.
    if let Peers::Vmm(vmm) = peers {
        std::os::unix::fs::chown(path, None, Some(vmm.gid)).with_context(|| {
            format!(
                "giving {} to group {} (the guest's vmm_user; sysmgr must be root or in that group)",
                path.display(),
                vmm.gid
            )
        })?;
    }
    let mode = if matches!(peers, Peers::Vmm(_)) {
        0o660
    } else {
        0o600
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))?;
    configure(&server);
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    let allowed = sandbox::socket::settings().allowed_uids.clone();
    server.set_authorizer(move |peer| peer_admitted(peer.uid(), peers, me, &allowed));
    server
        .set_root(BnSystemManager::new_binder(endpoint).as_binder())
        .map_err(|e| anyhow::anyhow!("{}: {e:?}", path.display()))?;
    let _ = server.run_background();
    Ok(server)
}

/// Starts the host socket and every Android guest's endpoint. A guest
/// socket whose directory does not exist yet is retried every second
/// (the VMM may create it later).
pub fn start(
    policy: &Policy,
    state_dir: &Path,
    events: &UnboundedSender<Event>,
) -> Result<BinderEndpoints> {
    let servers = Arc::new(std::sync::Mutex::new(Vec::new()));
    let dir = state_dir.join("binder");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("chmod 0700 {}", dir.display()))?;
    let host = Listeners::start("host").context("listeners")?;
    let host_socket = host_socket(state_dir);
    let server = serve(
        &host_socket,
        Endpoint {
            guest: None,
            events: events.clone(),
            listeners: Arc::clone(&host),
        },
        Peers::Host,
    )?;
    servers
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(server);
    let mut guests = Vec::new();
    for (i, g) in policy.guests().iter().enumerate() {
        let (Some(vsock), system_manager::AndroidChannel::Binder) =
            (&g.vmm.vsock_socket, g.vmm.android_channel)
        else {
            guests.push(None);
            continue;
        };
        let listeners = Listeners::start(&g.name).context("listeners")?;
        let path = guest_socket(vsock, g.vmm.binder_port);
        let name = g.name.clone();
        let peers = g.vmm.vmm_user.map_or(Peers::SharedVmmUser, Peers::Vmm);
        let events = events.clone();
        let l = Arc::clone(&listeners);
        let servers2 = Arc::clone(&servers);
        std::thread::Builder::new()
            .name(format!("binder-{name}"))
            .spawn(move || {
                let mut warned = false;
                loop {
                    let ep = Endpoint {
                        guest: Some((i, name.clone())),
                        events: events.clone(),
                        listeners: Arc::clone(&l),
                    };
                    match serve(&path, ep, peers) {
                        Ok(s) => {
                            tracing::info!(
                                "{name}: ISystemManager on {} (RPC binder)",
                                path.display()
                            );
                            servers2.lock().unwrap_or_else(|p| p.into_inner()).push(s);
                            return;
                        }
                        Err(e) if !warned => {
                            tracing::warn!("{name}: {e:#}; retrying every second");
                            warned = true;
                        }
                        Err(_) => {}
                    }
                    if events.is_closed() {
                        return;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
            })
            .context("binder thread")?;
        guests.push(Some(listeners));
    }
    tracing::info!(
        "host tools: ISystemManager on {} (RPC binder)",
        host_socket.display()
    );
    Ok(BinderEndpoints {
        guests,
        host,
        host_socket,
        servers,
    })
}

/// `SystemState.state` for the arbiter's system state.
pub fn system_code(s: &CoreSystem) -> i32 {
    match s {
        CoreSystem::Off => ism::SYSTEM_OFF,
        CoreSystem::On => ism::SYSTEM_ON,
        CoreSystem::ShutdownPrepare { .. } => ism::SYSTEM_SHUTDOWN_PREPARE,
        CoreSystem::GarageMode { .. } => ism::SYSTEM_GARAGE_MODE,
        CoreSystem::Suspended => ism::SYSTEM_SUSPENDED,
        CoreSystem::PoweringOff => ism::SYSTEM_POWERING_OFF,
    }
}

/// `GuestState.state` for a guest's state.
pub fn guest_code(s: &CoreGuest) -> i32 {
    match s {
        CoreGuest::Off => ism::GUEST_OFF,
        CoreGuest::Starting => ism::GUEST_STARTING,
        CoreGuest::Running => ism::GUEST_RUNNING,
        CoreGuest::Preparing { .. } => ism::GUEST_PREPARING,
        CoreGuest::ShutdownStarted { .. } => ism::GUEST_SHUTDOWN_STARTED,
        CoreGuest::VirtuallyOff { .. } => ism::GUEST_VIRTUALLY_OFF,
        CoreGuest::Stopping { .. } => ism::GUEST_STOPPING,
        CoreGuest::Restarting => ism::GUEST_RESTARTING,
    }
}

/// The answer to a binder call that fed the arbiter: `Ok` unless it
/// rejected the input, then its reasons joined by `; `.
pub fn call_answer(outputs: &[Output]) -> Result<(), String> {
    let rejected: Vec<&str> = outputs
        .iter()
        .filter_map(|o| match o {
            Output::Rejected { reason } => Some(reason.as_str()),
            _ => None,
        })
        .collect();
    if rejected.is_empty() {
        Ok(())
    } else {
        Err(rejected.join("; "))
    }
}

/// The arbiter's state as the parcelable; `connected[i]` says whether
/// guest `i` has a binder listener registered.
pub fn system_parcel(a: &Arbiter, now_ms: u64, connected: &[bool]) -> SystemState {
    let guests = a
        .guests()
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let req = g.vhal_req.map(|r| r.vhal());
            GuestState {
                name: g.name.clone(),
                role: g.role.to_string(),
                state: guest_code(&g.state),
                description: g.state.to_string(),
                hasApPowerStateReq: req.is_some(),
                apPowerStateReq: req.map_or(0, |r| r[0]),
                apPowerStateReqParam: req.map_or(0, |r| r[1]),
                binderConnected: connected.get(i).copied().unwrap_or(false),
            }
        })
        .collect();
    SystemState {
        state: system_code(a.system()),
        description: a.system().to_string(),
        ignitionOn: a.ignition_on(),
        vehicleInUse: a.vehicle_in_use(),
        nowMs: i64::try_from(now_ms).unwrap_or(i64::MAX),
        inputCount: i64::try_from(a.inputs_handled()).unwrap_or(i64::MAX),
        guests,
    }
}

#[cfg(test)]
mod tests {
    use super::{peer_admitted, Peers};
    use system_manager::VmmUser;

    #[test]
    fn endpoints_admit_their_peers_only() {
        let allowed = [0, 1000, 65534];
        let (host, shared) = (Peers::Host, Peers::SharedVmmUser);
        // The host socket: the daemon's own uid and root.
        assert!(peer_admitted(Some(1000), host, 1000, &allowed));
        assert!(peer_admitted(Some(0), host, 1000, &allowed));
        assert!(!peer_admitted(Some(65534), host, 1000, &allowed));
        // A guest socket: also the other allowed peers (the VMMs' user).
        assert!(peer_admitted(Some(65534), shared, 1000, &allowed));
        assert!(peer_admitted(Some(1000), shared, 1000, &allowed));
        // A guest socket of a VMM with its own uid: that uid and root only,
        // not the daemon's own uid nor the shared VMM user.
        let own = Peers::Vmm(VmmUser {
            uid: 10001,
            gid: 10001,
        });
        assert!(peer_admitted(Some(10001), own, 1000, &allowed));
        assert!(peer_admitted(Some(0), own, 1000, &allowed));
        for other in [1000, 65534, 10002] {
            assert!(!peer_admitted(Some(other), own, 1000, &allowed), "{other}");
        }
        // Anyone else, or a peer without credentials, never.
        assert!(!peer_admitted(Some(4242), shared, 1000, &allowed));
        assert!(!peer_admitted(Some(4242), host, 1000, &allowed));
        assert!(!peer_admitted(None, shared, 1000, &allowed));
        assert!(!peer_admitted(None, own, 1000, &allowed));
    }
}
