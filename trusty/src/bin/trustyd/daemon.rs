//! `trustyd run`: the state directory lock, the service, the sockets, the
//! sandbox (`docs/security.md`), one listener thread per socket, one
//! thread per connection, and a clean exit on SIGINT/SIGTERM (sockets
//! removed).

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use trusty::ports::TaKind;
use trusty::server::{self, bind_for_group, bind_private, ConnLimit};
use trusty::service::{is_valid_guest_name, BootClock, Guest, Service};
use vmstack_log::guest_warn;

/// vsock connections per guest at a time.
const MAX_VSOCK_CONNECTIONS: usize = 32;
/// TEE connections per guest at a time.
const MAX_TEE_CONNECTIONS: usize = 4;

/// One `--guest` argument.
#[derive(Debug, Clone)]
pub struct GuestSpec {
    name: String,
    vsock: Option<PathBuf>,
    tee: Option<PathBuf>,
    /// The uid and gid of the guest's VMM when it has a user of its own:
    /// its sockets are shared with the gid and admit that uid only.
    vmm_user: Option<sandbox::Identity>,
}

impl GuestSpec {
    /// The uids that may connect to this guest's sockets: its VMM's uid
    /// and root, or `None` for the process's allowed peers.
    fn own_peers(&self) -> Option<Vec<u32>> {
        self.vmm_user.map(|u| vec![u.uid, 0])
    }
}

/// Parses `NAME=[VSOCK_SOCKET][,tee=TEE_SOCKET][,user=UID:GID]`.
pub fn parse_guest(s: &str) -> Result<GuestSpec, String> {
    const USAGE: &str = "use NAME=VSOCK_SOCKET[,tee=TEE_SOCKET][,user=UID:GID]";
    let Some((name, rest)) = s.split_once('=') else {
        return Err(format!("{s:?} has no '=': {USAGE}"));
    };
    if !is_valid_guest_name(name) {
        return Err(format!(
            "guest name {name:?}: use 1-64 characters of A-Z a-z 0-9 _ -"
        ));
    }
    let mut spec = GuestSpec {
        name: name.to_string(),
        vsock: None,
        tee: None,
        vmm_user: None,
    };
    for (i, part) in rest.split(',').enumerate() {
        if let Some(u) = part.strip_prefix("user=") {
            let user = sandbox::Identity::parse(u).map_err(|e| format!("{s:?}: user={u}: {e}"))?;
            if user.uid == 0 || user.gid == 0 || spec.vmm_user.is_some() {
                return Err(format!(
                    "{s:?}: one user= of the guest's VMM, neither uid nor gid 0: {USAGE}"
                ));
            }
            spec.vmm_user = Some(user);
        } else if let Some(p) = part.strip_prefix("tee=") {
            if p.is_empty() || spec.tee.is_some() {
                return Err(format!("{s:?}: one non-empty tee= path: {USAGE}"));
            }
            spec.tee = Some(PathBuf::from(p));
        } else if i == 0 {
            if !part.is_empty() {
                spec.vsock = Some(PathBuf::from(part));
            }
        } else {
            return Err(format!("{s:?}: unknown part {part:?}: {USAGE}"));
        }
    }
    if spec.vsock.is_none() && spec.tee.is_none() {
        return Err(format!("{s:?} names no socket: {USAGE}"));
    }
    Ok(spec)
}

/// Takes the state directory's lock; held until the process exits.
fn lock_state_dir(dir: &Path) -> Result<File> {
    trusty::keys::create_private_dir(dir)
        .with_context(|| format!("creating the state directory {}", dir.display()))?;
    let path = dir.join("lock");
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: flock on an fd this function owns; no memory is involved.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        bail!(
            "another trustyd uses the state directory {} (stop it or pick another --state-dir)",
            dir.display()
        );
    }
    Ok(f)
}

/// SIGINT and SIGTERM, blocked in every thread and taken with sigwait.
fn termination_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t for these calls.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
    }
    set
}

/// How trustyd confines itself.
#[derive(Debug, Clone)]
pub struct Confinement {
    /// Seccomp, capabilities, uid switch and landlock.
    pub enabled: bool,
    /// The identity a root trustyd switches to (default
    /// [`sandbox::Identity::NOBODY`]).
    pub user: Option<sandbox::Identity>,
    /// Extra peer uids allowed on the sockets.
    pub allow_uids: Vec<u32>,
}

impl Confinement {
    /// The identity trustyd will run as, and whether it switches to it.
    fn identity(&self) -> (sandbox::Identity, bool) {
        sandbox::Identity::sandboxed(self.enabled, self.user)
    }
}

/// Gives `dir` and everything beneath it to `owner` (never following a
/// symlink): the state directory of a root trustyd that switches user.
fn chown_tree(dir: &Path, owner: sandbox::Identity) -> std::io::Result<()> {
    std::os::unix::fs::lchown(dir, Some(owner.uid), Some(owner.gid))?;
    if std::fs::symlink_metadata(dir)?.is_dir() {
        for entry in std::fs::read_dir(dir)? {
            chown_tree(&entry?.path(), owner)?;
        }
    }
    Ok(())
}

fn spawn_acceptor(
    listener: UnixListener,
    guest: Arc<Guest>,
    kind: &'static str,
    own_peers: Option<Vec<u32>>,
    limit: ConnLimit,
    serve: impl Fn(std::os::unix::net::UnixStream, &Arc<Guest>) + Send + Sync + 'static,
) -> Result<()> {
    let serve = Arc::new(serve);
    let name = format!("{kind}-{}", guest.name());
    sandbox::thread::spawn(format!("accept-{name}"), move || {
        // A guest can flood connections: every line here is rate-limited
        // (`vmstack_log::limit`).
        let mut backoff = sandbox::socket::AcceptBackoff::default();
        for conn in listener.incoming() {
            let stream = match conn {
                Ok(s) => {
                    backoff.success();
                    s
                }
                Err(e) => {
                    // Out of descriptors (EMFILE) or anything else:
                    // wait, longer each time, instead of spinning.
                    let wait = backoff.failure();
                    guest_warn!(
                        "{kind} guest {}: accept: {e}; retrying in {wait:?}",
                        guest.name()
                    );
                    std::thread::sleep(wait);
                    continue;
                }
            };
            let checked = match &own_peers {
                Some(uids) => sandbox::socket::check_peer_among(&stream, uids),
                None => sandbox::socket::check_peer(&stream),
            };
            if let Err(e) = checked {
                guest_warn!("{kind} guest {}: connection refused: {e}", guest.name());
                continue;
            }
            let Some(slot) = limit.acquire() else {
                guest_warn!(
                    "{kind} guest {}: connection limit reached; closing new connections",
                    guest.name()
                );
                continue;
            };
            let (g, serve) = (guest.clone(), serve.clone());
            let spawned = sandbox::thread::spawn(name.clone(), move || {
                let _slot = slot;
                serve(stream, &g);
            });
            if let Err(e) = spawned {
                guest_warn!(
                    "{kind} guest {}: no thread for a connection: {e}",
                    guest.name()
                );
            }
        }
    })
    .context("spawning a listener thread")?;
    Ok(())
}

/// Runs the daemon until SIGINT/SIGTERM.
pub fn run(
    state_dir: &Path,
    guests: &[GuestSpec],
    vsock_port: u32,
    confinement: &Confinement,
) -> Result<()> {
    // SAFETY: umask only changes this process's file creation mask.
    unsafe { libc::umask(0o077) };
    let mut names = HashSet::new();
    let mut paths = HashSet::new();
    let (mut uids, mut gids) = (HashSet::new(), HashSet::new());
    for g in guests {
        if !names.insert(g.name.clone()) {
            bail!("guest {} is given twice: one --guest per guest", g.name);
        }
        if let Some(u) = g.vmm_user {
            if !uids.insert(u.uid) || !gids.insert(u.gid) {
                bail!(
                    "guest {}: user={}:{} shares its uid or gid with another guest: every guest needs its own",
                    g.name,
                    u.uid,
                    u.gid
                );
            }
        }
        for p in g.vsock.iter().chain(g.tee.iter()) {
            if !paths.insert(p.clone()) {
                bail!(
                    "{} is given twice: every guest needs its own sockets",
                    p.display()
                );
            }
        }
    }
    let (runs_as, switches) = confinement.identity();
    sandbox::socket::configure_standard(runs_as, switches, &confinement.allow_uids);
    let _lock = lock_state_dir(state_dir)?;
    let service = Service::open(state_dir, Arc::new(BootClock)).map_err(anyhow::Error::new)?;

    let set = termination_signals();
    // SAFETY: blocks the signals in this thread; every thread spawned
    // afterwards inherits the mask, so only sigwait below takes them.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        bail!(
            "blocking SIGINT/SIGTERM failed: {}",
            std::io::Error::from_raw_os_error(rc)
        );
    }

    // Every socket is bound before the sandbox; the acceptors start after.
    let mut sockets = Vec::new();
    let mut listeners = Vec::new();
    for g in guests {
        let guest = service.guest(&g.name).map_err(anyhow::Error::new)?;
        // A VMM of its own user reaches the guest's sockets through its
        // group (set while trustyd is still root, or one of its groups).
        let bind = |path: &Path| match g.vmm_user {
            Some(u) => bind_for_group(path, u.gid)
                .with_context(|| format!("sharing it with group {} (user=)", u.gid)),
            None => bind_private(path).map_err(anyhow::Error::new),
        };
        if let Some(base) = &g.vsock {
            let path = PathBuf::from(format!("{}_{vsock_port}", base.display()));
            let l = bind(&path)
                .with_context(|| format!("guest {}: vsock listener {}", g.name, path.display()))?;
            sockets.push(path.clone());
            tracing::info!(guest = g.name, path = %path.display(), "libtrusty over vsock: ro.hardware.trusty_ipc_dev=VSOCK:2:{vsock_port}");
            listeners.push((guest.clone(), "vsock", g.own_peers(), l));
        }
        if let Some(path) = &g.tee {
            let l = bind(path)
                .with_context(|| format!("guest {}: TEE socket {}", g.name, path.display()))?;
            sockets.push(path.clone());
            tracing::info!(guest = g.name, path = %path.display(), "host TEE socket");
            listeners.push((guest.clone(), "tee", g.own_peers(), l));
        }
    }
    if confinement.enabled {
        if switches {
            chown_tree(state_dir, runs_as).with_context(|| {
                format!(
                    "giving the state directory {} to uid {}",
                    state_dir.display(),
                    runs_as.uid
                )
            })?;
        }
        let mut socket_dirs: Vec<PathBuf> = sockets
            .iter()
            .filter_map(|p| p.parent().map(Path::to_path_buf))
            .collect();
        socket_dirs.sort();
        socket_dirs.dedup();
        let entered = sandbox::enter(sandbox::Config {
            policy: &sandbox::policy::trustyd::POLICY,
            user: switches.then_some(runs_as),
            // To remove its sockets at exit from a guest's own 0770
            // directory.
            groups: guests
                .iter()
                .filter_map(|g| g.vmm_user.map(|u| u.gid))
                .collect(),
            relisten: listeners
                .iter()
                .map(|(_, _, _, l)| std::os::fd::AsRawFd::as_raw_fd(l))
                .collect(),
            fs: sandbox::fs::FsRules {
                read_write: vec![state_dir.to_path_buf()],
                remove_in: socket_dirs,
                ..Default::default()
            },
        })
        .context("entering the sandbox (or run with --disable-sandbox)")?;
        tracing::info!("sandbox: {entered}");
    } else {
        tracing::warn!("sandbox disabled (--disable-sandbox)");
    }
    for (guest, kind, own_peers, l) in listeners {
        if kind == "vsock" {
            let timing = server::vsock::VsockTiming::default();
            spawn_acceptor(
                l,
                guest,
                "vsock",
                own_peers,
                ConnLimit::new(MAX_VSOCK_CONNECTIONS),
                move |s, g| match server::vsock::serve(s, g, &TaKind::ALL, &timing) {
                    Ok(end) => tracing::debug!(guest = g.name(), "vsock connection ended: {end:?}"),
                    Err(e) => tracing::debug!(guest = g.name(), "vsock connection: {e}"),
                },
            )?;
        } else {
            spawn_acceptor(
                l,
                guest,
                "tee",
                own_peers,
                ConnLimit::new(MAX_TEE_CONNECTIONS),
                |s, g| {
                    if let Err(e) = server::tee::serve(s, g, server::tee::TeeLimits::default()) {
                        tracing::debug!(guest = g.name(), "tee connection: {e}");
                    }
                },
            )?;
        }
    }
    tracing::info!(guests = guests.len(), state_dir = %state_dir.display(), "trustyd ready");

    let mut sig: libc::c_int = 0;
    // SAFETY: `set` and `sig` are valid for the call.
    let rc = unsafe { libc::sigwait(&set, &mut sig) };
    if rc != 0 {
        bail!("sigwait failed: {}", std::io::Error::from_raw_os_error(rc));
    }
    tracing::info!(signal = sig, "stopping");
    for p in sockets {
        if let Err(e) = sandbox::socket::remove_socket(&p) {
            tracing::debug!("not removing {}: {e}", p.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_specs() {
        let g = parse_guest("android=/run/vm.sock,tee=/run/tee.sock").unwrap();
        assert_eq!(g.name, "android");
        assert_eq!(g.vsock, Some(PathBuf::from("/run/vm.sock")));
        assert_eq!(g.tee, Some(PathBuf::from("/run/tee.sock")));
        let g = parse_guest("a=,tee=/t").unwrap();
        assert_eq!((g.vsock, g.tee), (None, Some(PathBuf::from("/t"))));
        let g = parse_guest("a=/v").unwrap();
        assert_eq!((&g.tee, g.vmm_user, g.own_peers()), (&None, None, None));
        let g = parse_guest("a=,tee=/t,user=10001:10002").unwrap();
        assert_eq!(
            g.vmm_user,
            Some(sandbox::Identity {
                uid: 10001,
                gid: 10002
            })
        );
        assert_eq!(g.own_peers(), Some(vec![10001, 0]));
        for bad in [
            "a=/v,user=0:5",
            "a=/v,user=5:0",
            "a=/v,user=x:y",
            "a=/v,user=5:5,user=6:6",
            "a",
            "a=",
            "../a=/v",
            "a=/v,x=1",
            "a=/v,tee=",
            "a=/v,tee=/t,tee=/u",
        ] {
            let e = parse_guest(bad).unwrap_err();
            assert!(!e.contains('\n'), "one line: {e}");
        }
    }
}
