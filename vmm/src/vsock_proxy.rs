//! `vmm adb-proxy`: a TCP listener on 127.0.0.1 whose every connection is
//! bridged to a guest vsock port (5555, adbd's) through the VMM's hybrid
//! vsock socket (`CONNECT <port>\n` / `OK <host port>\n`, docs/vsock.md).
//! Cuttlefish's `socket_vsock_proxy` plays this role next to crosvm; the
//! stock adb client then reaches the guest with `adb connect
//! 127.0.0.1:PORT` (docs/adb.md).
//!
//! It is a byte bridge: it never parses what it carries, so the adb
//! client and the guest's adbd speak adb end to end and either side's
//! malformed packets are the other side's to reject. It listens on
//! loopback only, serves a bounded number of connections (more are closed
//! at once), and gives each connection two copying threads and
//! [`FDS_PER_CONNECTION`] descriptors, which `RLIMIT_NOFILE` must hold
//! for all of them ([`ensure_fd_limit`], at start). TCP urgent data stays
//! in the stream (`SO_OOBINLINE`): every byte the client sends reaches
//! the guest in order.
//!
//! Once its listener is bound it enters its sandbox ([`Proxy::confine`],
//! policy `sandbox::policy::adb_proxy`, docs/security.md) before it
//! accepts anything: seccomp per thread class, no capability, the vsock
//! socket's owner as its uid when started as root, no file-system right.
//! Then it connects to the vsock socket once, as the uid it now runs as
//! ([`Proxy::check_reachable`]), so that a socket this uid may not reach
//! stops it at start-up with what to change, not at the first adb
//! connection.
//!
//! Past 800 lines only with its unit tests (the proxy itself is ~800: the
//! set-up errors that say what to change, the descriptor budget, and the
//! copy's paths, splice with its urgent-mark check, the buffer fallback
//! and the drain, belong to the one bridge).

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

/// The guest port of adbd (Cuttlefish's convention).
pub const ADB_GUEST_PORT: u32 = 5555;
/// Connections served at once by default.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16;
/// Longest `OK <port>\n` line the VMM sends.
const MAX_REPLY: usize = 32;
/// How long the VMM may take to answer `CONNECT` (it gives the guest 5 s).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Pipe (splice) or copy buffer per direction.
const BUFFER: usize = 256 * 1024;
/// The buffer for what a splice(2) stopped short of (urgent data).
const SPILL: usize = 64 * 1024;
/// Descriptors one bridged connection holds: the client's TCP socket and
/// the unix socket to the VMM, each with the duplicate the other
/// direction's thread uses, and one pipe (two ends) per direction.
pub const FDS_PER_CONNECTION: u64 = 8;
/// Descriptors besides the connections': stdin, stdout and stderr, the
/// listener, a connection over the limit between its accept and its
/// close, the start-up check's socket, and room for whatever the parent
/// left open.
pub const SPARE_FDS: u64 = 64;

/// What the proxy bridges.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The VMM's `--vsock ...,socket=PATH`.
    pub vsock_socket: PathBuf,
    /// TCP port on 127.0.0.1 (0: any free port, for tests).
    pub port: u16,
    /// The guest's vsock port.
    pub guest_port: u32,
    /// Connections served at once.
    pub max_connections: usize,
}

/// Why the proxy could not start.
#[derive(Debug, Error)]
pub enum ProxyError {
    /// The vsock socket does not exist.
    #[error("{0}: no such socket (start the VMM with --vsock cid=N,socket=PATH first)")]
    NoSocket(PathBuf),
    /// The vsock socket's type and owner cannot be read.
    #[error("cannot read the type and owner of {0}: {1} (give the VMM's --vsock socket=PATH)")]
    Stat(PathBuf, io::Error),
    /// The vsock path is not a socket.
    #[error("{0} is not a socket (give the VMM's --vsock socket=PATH)")]
    NotASocket(PathBuf),
    /// The TCP port is taken.
    #[error("127.0.0.1:{0} is in use (pick another --port)")]
    PortInUse(u16),
    /// Another bind error.
    #[error("cannot listen on 127.0.0.1:{0}: {1}")]
    Bind(u16, io::Error),
    /// `--max-connections 0`.
    #[error("--max-connections must be at least 1")]
    NoConnections,
    /// The start-up check could not run.
    #[error("cannot check the vsock socket: {0}")]
    Check(io::Error),
    /// The start-up connection to the vsock socket failed.
    #[error("{0}")]
    Unreachable(Box<Unreachable>),
    /// `RLIMIT_NOFILE` cannot be read.
    #[error("cannot read RLIMIT_NOFILE: {0}")]
    FdLimitUnknown(io::Error),
    /// `RLIMIT_NOFILE` is too low for `--max-connections` and cannot be
    /// raised enough.
    #[error("{0}")]
    FdLimit(Box<FdShortage>),
}

/// `--max-connections` needs more descriptors than `RLIMIT_NOFILE`
/// allows; its message says what to change.
#[derive(Debug)]
pub struct FdShortage {
    /// `--max-connections`.
    pub max_connections: usize,
    /// The descriptors it needs ([`fds_needed`]).
    pub needed: u64,
    /// The limit it could not get past: the hard limit, or the soft one
    /// when raising it failed.
    pub limit: u64,
    /// Why raising the soft limit failed; `None`: the hard limit is too
    /// low.
    pub error: Option<io::Error>,
}

impl std::fmt::Display for FdShortage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (max, needed, limit) = (self.max_connections, self.needed, self.limit);
        write!(
            f,
            "--max-connections {max} needs {needed} file descriptors ({FDS_PER_CONNECTION} per \
             connection and {SPARE_FDS} spare) but "
        )?;
        match &self.error {
            None => write!(f, "the hard RLIMIT_NOFILE is {limit}")?,
            Some(e) => write!(
                f,
                "the soft RLIMIT_NOFILE {limit} cannot be raised to that: {e}"
            )?,
        }
        match connections_within(limit) {
            0 => write!(
                f,
                "; raise the limit to at least {needed} (ulimit -Hn, LimitNOFILE=)"
            ),
            fits => write!(
                f,
                "; lower --max-connections to at most {fits}, or raise the limit to at least \
                 {needed} (ulimit -Hn, LimitNOFILE=)"
            ),
        }
    }
}

/// The descriptors `max_connections` bridged connections need at most:
/// [`FDS_PER_CONNECTION`] each plus [`SPARE_FDS`].
pub fn fds_needed(max_connections: usize) -> u64 {
    u64::try_from(max_connections)
        .unwrap_or(u64::MAX)
        .saturating_mul(FDS_PER_CONNECTION)
        .saturating_add(SPARE_FDS)
}

/// The most connections a descriptor limit of `limit` serves.
pub fn connections_within(limit: u64) -> usize {
    let n = limit.saturating_sub(SPARE_FDS) / FDS_PER_CONNECTION;
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// What to do about `RLIMIT_NOFILE` (`soft`, `hard`) for `needed`
/// descriptors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FdPlan {
    /// The soft limit covers it.
    Enough,
    /// Raise the soft limit to this (within the hard limit).
    Raise(u64),
    /// The hard limit is below it.
    TooLow,
}

fn fd_plan(needed: u64, soft: u64, hard: u64) -> FdPlan {
    if soft >= needed {
        FdPlan::Enough
    } else if hard >= needed {
        FdPlan::Raise(needed)
    } else {
        FdPlan::TooLow
    }
}

/// Makes sure `RLIMIT_NOFILE` covers `max_connections` bridged
/// connections ([`fds_needed`]): raises the soft limit within the hard
/// one if it must (never the hard limit), else fails with what to change.
/// Returns the soft limit it leaves.
pub fn ensure_fd_limit(max_connections: usize) -> Result<u64, ProxyError> {
    let needed = fds_needed(max_connections);
    let (soft, hard) = crate::rlimit::fd_limits().map_err(ProxyError::FdLimitUnknown)?;
    let short = |limit, error| {
        ProxyError::FdLimit(Box::new(FdShortage {
            max_connections,
            needed,
            limit,
            error,
        }))
    };
    match fd_plan(needed, soft, hard) {
        FdPlan::Enough => Ok(soft),
        FdPlan::TooLow => Err(short(hard, None)),
        FdPlan::Raise(to) => {
            crate::rlimit::set_soft_fd_limit(to, hard).map_err(|e| short(soft, Some(e)))?;
            tracing::info!(
                "RLIMIT_NOFILE raised from {soft} to {to} for --max-connections {max_connections}"
            );
            Ok(to)
        }
    }
}

/// The start-up connection to the vsock socket failed: the socket, who
/// the proxy runs as, and the error; its message says what to change.
#[derive(Debug)]
pub struct Unreachable {
    /// The vsock socket.
    pub path: PathBuf,
    /// The uid/gid the proxy ran as when it connected.
    pub who: sandbox::Identity,
    /// Whether it switched to `who` from root (`--sandbox-user` applies).
    pub switched: bool,
    /// What `connect(2)` said.
    pub error: io::Error,
}

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (path, e) = (self.path.display(), &self.error);
        let (uid, gid) = (self.who.uid, self.who.gid);
        match e.raw_os_error() {
            Some(libc::EACCES | libc::EPERM) if self.switched => write!(
                f,
                "uid {uid} gid {gid} (switched from root) may not connect to the vsock socket \
                 {path}: {e}; that uid needs write access to the socket and search access to \
                 its directories: fix their owner or mode, or pick another uid with \
                 --sandbox-user UID[:GID]"
            ),
            Some(libc::EACCES | libc::EPERM) if uid == 0 => write!(
                f,
                "root may not connect to the vsock socket {path}: {e}; file modes do not stop \
                 root, so a security module (SELinux, AppArmor) refuses it: allow the proxy \
                 there"
            ),
            Some(libc::EACCES | libc::EPERM) => write!(
                f,
                "uid {uid} gid {gid} may not connect to the vsock socket {path}: {e}; this user \
                 needs write access to the socket and search access to its directories: fix \
                 their owner or mode, or start the proxy as root (it then switches to the \
                 socket's owner)"
            ),
            Some(libc::ECONNREFUSED) => write!(
                f,
                "nothing listens on the vsock socket {path} ({e}): start the VMM with --vsock \
                 cid=N,socket=PATH (a stopped VMM leaves its socket behind)"
            ),
            _ => write!(
                f,
                "cannot connect to the vsock socket {path} as uid {uid} gid {gid}: {e}"
            ),
        }
    }
}

/// Why one bridged connection could not be set up.
#[derive(Debug, Error)]
pub enum ConnectError {
    /// The VMM's socket refused or vanished.
    #[error("cannot reach the VMM at {0}: {1}")]
    Vmm(PathBuf, io::Error),
    /// The VMM closed without `OK`: nothing listens on the guest port.
    #[error("guest port {0} refused the connection (is the guest's adbd running?)")]
    Refused(u32),
    /// No answer within [`CONNECT_TIMEOUT`].
    #[error("no answer from the VMM within 10 s for guest port {0} (is the guest up?)")]
    Timeout(u32),
    /// The VMM's answer was not `OK <port>`.
    #[error("unexpected answer from the VMM: {0:?}")]
    BadReply(String),
    /// Reading or writing the handshake failed.
    #[error("handshake with the VMM failed: {0}")]
    Io(#[from] io::Error),
}

/// Parses the VMM's `OK <host port>` line (without the newline).
pub fn parse_ok_line(line: &[u8]) -> Option<u32> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    std::str::from_utf8(line.strip_prefix(b"OK ")?)
        .ok()?
        .parse()
        .ok()
}

/// Connects to guest port `port` through the hybrid vsock socket at
/// `path`; returns the stream (the connection from now on) and the host
/// port the VMM chose.
pub fn connect_guest(path: &Path, port: u32) -> Result<(UnixStream, u32), ConnectError> {
    let mut s = UnixStream::connect(path).map_err(|e| ConnectError::Vmm(path.into(), e))?;
    s.set_read_timeout(Some(CONNECT_TIMEOUT))?;
    s.write_all(format!("CONNECT {port}\n").as_bytes())?;
    // Byte by byte: nothing after the newline belongs to the handshake.
    let mut line = Vec::with_capacity(MAX_REPLY);
    let mut byte = [0u8; 1];
    loop {
        match s.read(&mut byte) {
            Ok(0) if line.is_empty() => return Err(ConnectError::Refused(port)),
            Ok(0) => {
                return Err(ConnectError::BadReply(
                    String::from_utf8_lossy(&line).into(),
                ))
            }
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) if line.len() < MAX_REPLY => line.push(byte[0]),
            Ok(_) => {
                return Err(ConnectError::BadReply(
                    String::from_utf8_lossy(&line).into(),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // A reset right after CONNECT is the VMM closing a refused one.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                return Err(ConnectError::Refused(port))
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(ConnectError::Timeout(port))
            }
            Err(e) => return Err(e.into()),
        }
    }
    let host_port = parse_ok_line(&line)
        .ok_or_else(|| ConnectError::BadReply(String::from_utf8_lossy(&line).into()))?;
    s.set_read_timeout(None)?;
    Ok((s, host_port))
}

/// A bound proxy.
pub struct Proxy {
    listener: TcpListener,
    config: ProxyConfig,
    /// The vsock socket's owner, taken when it was checked.
    owner: sandbox::Identity,
    /// Who the proxy runs as (changed by [`Proxy::confine`]).
    runs_as: sandbox::Identity,
    /// Whether [`Proxy::confine`] switched from root to `runs_as`.
    switched: bool,
    active: Arc<AtomicUsize>,
    next_id: AtomicU64,
}

impl Proxy {
    /// Makes sure `RLIMIT_NOFILE` holds `max_connections` connections
    /// ([`ensure_fd_limit`]), checks the vsock socket (and takes its
    /// owner) and binds 127.0.0.1:`port` with `SO_OOBINLINE`.
    pub fn bind(config: ProxyConfig) -> Result<Self, ProxyError> {
        use std::os::unix::fs::MetadataExt;
        if config.max_connections == 0 {
            return Err(ProxyError::NoConnections);
        }
        ensure_fd_limit(config.max_connections)?;
        let owner = match std::fs::metadata(&config.vsock_socket) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ProxyError::NoSocket(config.vsock_socket.clone()))
            }
            Err(e) => return Err(ProxyError::Stat(config.vsock_socket.clone(), e)),
            Ok(m) if !m.file_type().is_socket() => {
                return Err(ProxyError::NotASocket(config.vsock_socket.clone()))
            }
            Ok(m) => sandbox::Identity {
                uid: m.uid(),
                gid: m.gid(),
            },
        };
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, config.port));
        let listener = TcpListener::bind(addr).map_err(|e| match e.kind() {
            io::ErrorKind::AddrInUse => ProxyError::PortInUse(config.port),
            _ => ProxyError::Bind(config.port, e),
        })?;
        // Accepted sockets inherit it: an urgent byte stays in the stream
        // (before the sandbox, which does not allow this option).
        keep_urgent_data_inline(&listener).map_err(|e| ProxyError::Bind(config.port, e))?;
        // SAFETY: plain credential queries.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        Ok(Self {
            listener,
            config,
            owner,
            runs_as: sandbox::Identity { uid, gid },
            switched: false,
            active: Arc::new(AtomicUsize::new(0)),
            next_id: AtomicU64::new(1),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The vsock socket's owner (numeric uid and gid of the file, no
    /// passwd lookup), as [`Proxy::bind`] found it.
    pub fn owner(&self) -> sandbox::Identity {
        self.owner
    }

    /// Enters the sandbox (the listener is bound, nothing is served yet;
    /// the calling thread must be the only one): the seccomp classes of
    /// `sandbox::policy::adb_proxy`, no capability, no file-system right
    /// (connecting to the vsock socket by path is not a landlock right)
    /// and, when started as root, `user` or else the owner of the vsock
    /// socket ([`Proxy::owner`]), so that the proxy can still connect to
    /// its `0600` file; a root-owned socket leaves it root without any
    /// capability.
    pub fn confine(
        &mut self,
        user: Option<sandbox::Identity>,
    ) -> Result<sandbox::Entered, sandbox::SandboxError> {
        let (user, switches) = sandbox::Identity::sandboxed(true, Some(user.unwrap_or(self.owner)));
        let switch_to = (switches && user.uid != 0).then_some(user);
        let entered = sandbox::enter(sandbox::Config {
            policy: &sandbox::policy::adb_proxy::POLICY,
            user: switch_to,
            groups: Vec::new(),
            relisten: Vec::new(),
            fs: sandbox::fs::FsRules::default(),
        })?;
        if let Some(to) = switch_to {
            (self.runs_as, self.switched) = (to, true);
        }
        Ok(entered)
    }

    /// Connects to the vsock socket once (and closes at once: the VMM
    /// drops a connection that sent no `CONNECT` line without a word), as
    /// the uid the proxy runs as now, from a `conn-0` thread (the `conn`
    /// class, the one that connects). Called after [`Proxy::confine`], it
    /// finds a socket this uid may not reach at start-up.
    pub fn check_reachable(&self) -> Result<(), ProxyError> {
        let path = self.config.vsock_socket.clone();
        let attempt = sandbox::thread::spawn("conn-0", move || UnixStream::connect(path).map(drop))
            .map_err(ProxyError::Check)?
            .join()
            .map_err(|_| ProxyError::Check(io::Error::other("its thread panicked")))?;
        attempt.map_err(|error| {
            ProxyError::Unreachable(Box::new(Unreachable {
                path: self.config.vsock_socket.clone(),
                who: self.runs_as,
                switched: self.switched,
                error,
            }))
        })
    }

    /// Accepts and bridges connections forever.
    pub fn serve(&self) -> ! {
        loop {
            match self.listener.accept() {
                Ok((tcp, peer)) => self.start(tcp, peer),
                Err(e) => {
                    // Rate-limited: a full file table (EMFILE) fails every
                    // 100 ms for as long as it lasts.
                    devices::guest_warn!("accept failed: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    fn start(&self, tcp: TcpStream, peer: SocketAddr) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let max = self.config.max_connections;
        if self.active.fetch_add(1, Ordering::SeqCst) >= max {
            self.active.fetch_sub(1, Ordering::SeqCst);
            devices::guest_warn!(
                "connection {id} from {peer} closed: {max} connections already bridged"
            );
            return;
        }
        let slot = Slot(Arc::clone(&self.active));
        let config = self.config.clone();
        let spawned = sandbox::thread::spawn(format!("conn-{id}"), move || {
            let _slot = slot;
            match bridge(tcp, peer, &config, id) {
                Ok((up, down)) => devices::guest_info!(
                    "connection {id} from {peer} closed: {up} bytes to the guest, {down} bytes from it"
                ),
                Err(e) => devices::guest_warn!("connection {id} from {peer}: {e}"),
            }
        });
        if let Err(e) = spawned {
            devices::guest_warn!("connection {id}: cannot start a thread: {e}");
        }
    }
}

/// Sets `SO_OOBINLINE` on `socket`: TCP urgent ("out-of-band") bytes stay
/// in the stream, in order, as every other byte (else a reader that does
/// not ask for them with `MSG_OOB` never sees them). The proxy has no
/// out-of-band channel to the guest: it carries every byte the client
/// sent. Set on the listener, every accepted socket has it from its
/// start.
fn keep_urgent_data_inline(socket: &impl AsRawFd) -> io::Result<()> {
    sandbox::socket::set_int_option(socket, libc::SOL_SOCKET, libc::SO_OOBINLINE, 1)
}

/// Frees a connection slot when dropped.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Bridges one TCP connection to the guest until both directions ended;
/// returns the bytes copied each way.
fn bridge(
    tcp: TcpStream,
    peer: SocketAddr,
    config: &ProxyConfig,
    id: u64,
) -> Result<(u64, u64), ConnectError> {
    // adb's small OKAY packets must not wait for Nagle.
    tcp.set_nodelay(true)?;
    let (guest, host_port) = connect_guest(&config.vsock_socket, config.guest_port)?;
    devices::guest_info!(
        "bridging {peer} to guest port {} (host port {host_port})",
        config.guest_port
    );
    let (tcp_r, guest_w) = (tcp.try_clone()?, guest.try_clone()?);
    let up = sandbox::thread::spawn(format!("up-{id}"), move || {
        copy(tcp_r, guest_w, OnWriteFailure::DrainSource)
    })?;
    let down = copy(guest, tcp, OnWriteFailure::CloseBoth);
    let up = up.join().unwrap_or(0);
    Ok((up, down))
}

/// A stream socket's half-close and full close.
trait Halves {
    fn shutdown_half(&self, how: Shutdown);
}

impl Halves for TcpStream {
    fn shutdown_half(&self, how: Shutdown) {
        let _ = self.shutdown(how);
    }
}

impl Halves for UnixStream {
    fn shutdown_half(&self, how: Shutdown) {
        let _ = self.shutdown(how);
    }
}

/// How one direction's copy ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// `from` reached EOF; everything read was written.
    Eof,
    /// Reading `from` failed.
    ReadFailed,
    /// Writing `to` failed (its peer no longer reads).
    WriteFailed,
    /// splice(2) does not work for these sockets; nothing was moved.
    Unsupported,
}

/// The pipe splice(2) moves data through.
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl Pipe {
    /// A pipe of [`BUFFER`] bytes (or the system's default if it refuses).
    fn new() -> io::Result<Self> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: pipe2(2) writes two fds into the array it is given.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: two fresh fds from pipe2, owned from here on.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: F_SETPIPE_SZ on our own pipe; failure keeps the default size.
        unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, BUFFER as libc::c_int) };
        Ok(Self { read, write })
    }
}

/// splice(2) of at most `len` bytes from `from` to `to`, retried on EINTR.
fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    loop {
        // SAFETY: splice(2) between two fds we hold open, no offsets (both
        // are a socket or a pipe); it only moves data in the kernel.
        let n = unsafe {
            libc::splice(
                from,
                std::ptr::null_mut(),
                to,
                std::ptr::null_mut(),
                len,
                libc::SPLICE_F_MOVE,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Reads what is in `from` now (`recv(2)` with `MSG_DONTWAIT`), retried on
/// EINTR: 0 at EOF, `WouldBlock` when nothing is there.
fn recv_now(from: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: recv(2) writes at most `buf.len()` bytes into `buf`,
        // which is valid for them, from a socket we hold open.
        let n = unsafe { libc::recv(from, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Copies `from` to `to` in the kernel (socket -> pipe -> socket, no
/// copy through this process: an adb push crosses the proxy as page
/// references), adding to `total`.
///
/// A splice from a TCP socket returns 0 at EOF, but also when urgent
/// data is at the head of the receive queue (Linux's `tcp_splice_read`
/// stops at the urgent mark and moves nothing). So a 0 is only taken as
/// EOF once a non-blocking `recv` of `from` returns 0 as well; bytes it
/// returns instead (with `SO_OOBINLINE`, the urgent byte and what
/// follows; without, what follows) are written with an ordinary write and
/// splicing goes on, now past the mark; `EAGAIN` (nothing readable yet)
/// goes back to splice, which waits for data. Not a `MSG_PEEK`: without
/// `SO_OOBINLINE` a peek at a lone urgent byte returns `EAGAIN` and leaves
/// it there, so splice would return 0 again at once, in a loop, until more
/// data came; the `recv` consumes the mark.
fn splice_copy(
    from: RawFd,
    to: &mut impl Write,
    to_fd: RawFd,
    pipe: &Pipe,
    total: &mut u64,
) -> End {
    let mut spill: Vec<u8> = Vec::new();
    loop {
        let n = match splice(from, pipe.write.as_raw_fd(), BUFFER) {
            Ok(0) => {
                spill.resize(SPILL, 0);
                match recv_now(from, &mut spill) {
                    Ok(0) => return End::Eof,
                    Ok(n) => {
                        if to.write_all(&spill[..n]).is_err() {
                            return End::WriteFailed;
                        }
                        *total += n as u64;
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(_) => return End::ReadFailed,
                }
            }
            Ok(n) => n,
            // The kernel (or a seccomp profile around us) refuses splice
            // for these sockets: nothing was moved yet, copy instead.
            Err(e)
                if *total == 0
                    && matches!(
                        e.raw_os_error(),
                        Some(libc::EINVAL | libc::ENOSYS | libc::EPERM)
                    ) =>
            {
                return End::Unsupported
            }
            Err(_) => return End::ReadFailed,
        };
        let mut left = n;
        while left > 0 {
            match splice(pipe.read.as_raw_fd(), to_fd, left) {
                Ok(0) | Err(_) => return End::WriteFailed,
                Ok(m) => left -= m,
            }
        }
        *total += n as u64;
    }
}

/// Copies `from` to `to` through a buffer, adding to `total`.
fn buffer_copy(from: &mut impl Read, to: &mut impl Write, total: &mut u64) -> End {
    let mut buf = vec![0u8; BUFFER];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return End::Eof,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return End::ReadFailed,
        };
        if to.write_all(&buf[..n]).is_err() {
            return End::WriteFailed;
        }
        *total += n as u64;
    }
}

/// What [`copy`] does when writing its destination fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnWriteFailure {
    /// Close both sockets, so the other direction ends too (the client
    /// is gone: nobody reads what the guest still sends).
    CloseBoth,
    /// The guest side no longer reads (its program closed): read and
    /// drop what the client still sends until it closes, and leave both
    /// sockets to the other direction, which is still delivering the
    /// guest's last bytes. (Closing a socket with unread bytes would
    /// reset it and lose them.)
    DrainSource,
}

/// Copies `from` to `to` until EOF or an error; returns the bytes copied.
/// splice(2) where the kernel allows it, else a buffer.
///
/// - EOF, or a failed read (a reset; a guest program that closed with our
///   bytes unread resets its socket right after its last bytes): `to`
///   is half-closed, so what was written still arrives, then its end;
///   `from` is closed on a failed read.
/// - A failed write: as `on_write_failure` says.
fn copy<R, W>(mut from: R, mut to: W, on_write_failure: OnWriteFailure) -> u64
where
    R: Read + Halves + AsRawFd,
    W: Write + Halves + AsRawFd,
{
    let mut total = 0u64;
    let end = match Pipe::new() {
        Ok(pipe) => {
            let (from_fd, to_fd) = (from.as_raw_fd(), to.as_raw_fd());
            splice_copy(from_fd, &mut to, to_fd, &pipe, &mut total)
        }
        Err(_) => End::Unsupported,
    };
    let end = match end {
        End::Unsupported => buffer_copy(&mut from, &mut to, &mut total),
        end => end,
    };
    match (end, on_write_failure) {
        (End::Eof, _) => to.shutdown_half(Shutdown::Write),
        (End::WriteFailed, OnWriteFailure::DrainSource) => {
            to.shutdown_half(Shutdown::Write);
            if drain(&mut from) != End::Eof {
                from.shutdown_half(Shutdown::Both);
            }
        }
        (End::WriteFailed, OnWriteFailure::CloseBoth) => {
            from.shutdown_half(Shutdown::Both);
            to.shutdown_half(Shutdown::Both);
        }
        _ => {
            from.shutdown_half(Shutdown::Both);
            to.shutdown_half(Shutdown::Write);
        }
    }
    total
}

/// Reads and drops everything from `from` until EOF (or an error).
fn drain(from: &mut impl Read) -> End {
    let mut buf = [0u8; 4096];
    loop {
        match from.read(&mut buf) {
            Ok(0) => return End::Eof,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return End::ReadFailed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::os::unix::net::UnixListener;

    /// A proxy on an ephemeral port for the vsock socket `path`, one
    /// connection at a time.
    fn bind_one(path: &std::path::Path) -> Result<Proxy, ProxyError> {
        Proxy::bind(ProxyConfig {
            vsock_socket: path.to_path_buf(),
            port: 0,
            guest_port: ADB_GUEST_PORT,
            max_connections: 1,
        })
    }

    fn temp_socket(name: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("vmm-proxy-{name}-{}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        p
    }

    /// A fake VMM: answers `CONNECT 5555` with OK and echoes, refuses
    /// every other port by closing.
    fn fake_vmm(path: &Path) {
        let l = UnixListener::bind(path).unwrap();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let s = s.unwrap();
                std::thread::spawn(move || {
                    let mut r = io::BufReader::new(s.try_clone().unwrap());
                    let mut line = String::new();
                    r.read_line(&mut line).unwrap();
                    if line != "CONNECT 5555\n" {
                        return;
                    }
                    let mut w = s;
                    w.write_all(b"OK 1073741824\n").unwrap();
                    let mut buf = Vec::new();
                    r.read_to_end(&mut buf).unwrap();
                    w.write_all(&buf).unwrap();
                });
            }
        });
    }

    fn proxy(path: &Path, guest_port: u32, max: usize) -> SocketAddr {
        let p = Proxy::bind(ProxyConfig {
            vsock_socket: path.into(),
            port: 0,
            guest_port,
            max_connections: max,
        })
        .unwrap();
        let addr = p.local_addr().unwrap();
        std::thread::spawn(move || p.serve());
        addr
    }

    /// The fallback when splice is refused: every byte, then end of file.
    #[test]
    fn the_buffer_copy_moves_every_byte() {
        let data: Vec<u8> = (0..700_000u32).map(|i| (i % 253) as u8).collect();
        let mut to = Vec::new();
        let mut total = 0;
        let end = buffer_copy(&mut &data[..], &mut to, &mut total);
        assert!(end == End::Eof);
        assert_eq!((total, to), (data.len() as u64, data));
    }

    #[test]
    fn bridges_bytes_and_half_close() {
        let path = temp_socket("echo");
        fake_vmm(&path);
        let addr = proxy(&path, ADB_GUEST_PORT, 4);
        let mut c = TcpStream::connect(addr).unwrap();
        let data: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
        let writer = {
            let mut c = c.try_clone().unwrap();
            let data = data.clone();
            std::thread::spawn(move || {
                c.write_all(&data).unwrap();
                c.shutdown(Shutdown::Write).unwrap();
            })
        };
        let mut back = Vec::new();
        c.read_to_end(&mut back).unwrap();
        writer.join().unwrap();
        assert_eq!(back, data);
        let _ = std::fs::remove_file(&path);
    }

    /// Sends `byte` as TCP urgent data (`MSG_OOB`) on `c`.
    fn send_urgent(c: &TcpStream, byte: u8) {
        // SAFETY: send(2) of one byte from a local on a socket we hold.
        let n = unsafe {
            libc::send(
                c.as_raw_fd(),
                std::ptr::addr_of!(byte).cast(),
                1,
                libc::MSG_OOB,
            )
        };
        assert_eq!(n, 1, "{}", io::Error::last_os_error());
    }

    /// An urgent byte in the client's stream: splice(2) returns 0 at the
    /// urgent mark, which is not the end of the client's data. The guest
    /// gets every byte in order (`SO_OOBINLINE`), the urgent one included,
    /// and only then the end.
    #[test]
    fn an_urgent_byte_is_carried_in_order_and_does_not_end_the_stream() {
        let path = temp_socket("urgent");
        fake_vmm(&path);
        let addr = proxy(&path, ADB_GUEST_PORT, 4);
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let before: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let after: Vec<u8> = (0..100_000u32).map(|i| (i % 241) as u8).collect();
        let writer = {
            let mut c = c.try_clone().unwrap();
            let (before, after) = (before.clone(), after.clone());
            std::thread::spawn(move || {
                c.write_all(&before)?;
                send_urgent(&c, b'!');
                // Let the proxy reach the urgent mark with nothing behind it.
                std::thread::sleep(Duration::from_millis(200));
                c.write_all(&after)?;
                c.shutdown(Shutdown::Write)
            })
        };
        let mut back = Vec::new();
        let read = c.read_to_end(&mut back);
        let written = writer.join().unwrap();
        let mut sent = before;
        sent.push(b'!');
        sent.extend_from_slice(&after);
        assert!(read.is_ok() && written.is_ok(), "{read:?} {written:?}");
        assert_eq!(back.len(), sent.len());
        assert!(back == sent, "the echoed stream differs");
        let _ = std::fs::remove_file(&path);
    }

    /// CPU time the calling thread has used.
    fn thread_cpu_time() -> Duration {
        let mut t = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime(2) writes one timespec into `t`.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
        assert_eq!(rc, 0);
        Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
    }

    /// A socket without `SO_OOBINLINE` (a connection accepted before the
    /// listener had it): a lone urgent byte at the head leaves the rest of
    /// the stream to come, and the copy waits for it without spinning
    /// (a `MSG_PEEK` there returns `EAGAIN` and splice 0 again, at once).
    /// TCP leaves that byte out of the stream for such a socket.
    #[test]
    fn without_oobinline_the_copy_skips_a_lone_urgent_byte_and_waits() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (tcp, _) = l.accept().unwrap();
        let (to, mut far) = UnixStream::pair().unwrap();
        let copier = std::thread::spawn(move || {
            let start = thread_cpu_time();
            let total = copy(tcp, to, OnWriteFailure::CloseBoth);
            (total, thread_cpu_time() - start)
        });
        client.write_all(b"before").unwrap();
        send_urgent(&client, b'!');
        std::thread::sleep(Duration::from_millis(500));
        // (The old copy ended at the mark and closed: these fail there.)
        let _ = client.write_all(b"after");
        let _ = client.shutdown(Shutdown::Write);
        let mut got = Vec::new();
        far.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let read = far.read_to_end(&mut got);
        assert!(read.is_ok(), "{read:?}");
        let (total, cpu) = copier.join().unwrap();
        assert_eq!(String::from_utf8_lossy(&got), "beforeafter");
        assert_eq!(total, 11);
        assert!(cpu < Duration::from_millis(100), "the copy spun: {cpu:?}");
    }

    /// Accepted sockets inherit `SO_OOBINLINE` from the proxy's listener.
    #[test]
    fn accepted_sockets_keep_urgent_bytes_inline() {
        let path = temp_socket("inline");
        fake_vmm(&path);
        let p = bind_one(&path).unwrap();
        let _c = TcpStream::connect(p.local_addr().unwrap()).unwrap();
        let (accepted, _) = p.listener.accept().unwrap();
        let on = sandbox::socket::int_option(&accepted, libc::SOL_SOCKET, libc::SO_OOBINLINE);
        assert_eq!(on.unwrap(), 1);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn the_fd_budget_counts_every_connection_and_spares() {
        assert_eq!(fds_needed(1), FDS_PER_CONNECTION + SPARE_FDS);
        assert_eq!(fds_needed(16), 16 * 8 + 64);
        assert_eq!(fds_needed(usize::MAX), u64::MAX);
        assert_eq!(connections_within(fds_needed(16)), 16);
        assert_eq!(connections_within(fds_needed(16) + 7), 16);
        assert_eq!(connections_within(1024), (1024 - 64) / 8);
        assert_eq!(connections_within(10), 0);
        // (needed, soft, hard)
        assert_eq!(fd_plan(192, 1024, 1024), FdPlan::Enough);
        assert_eq!(fd_plan(192, 192, 192), FdPlan::Enough);
        assert_eq!(fd_plan(2112, 1024, 524_288), FdPlan::Raise(2112));
        assert_eq!(fd_plan(2112, 1024, 2112), FdPlan::Raise(2112));
        assert_eq!(fd_plan(2112, 1024, 2111), FdPlan::TooLow);
        assert_eq!(fd_plan(2112, 1024, 1024), FdPlan::TooLow);
    }

    #[test]
    fn too_many_connections_for_the_fd_limit_is_one_line_with_what_to_do() {
        let short = |limit, error| {
            FdShortage {
                max_connections: 500,
                needed: fds_needed(500),
                limit,
                error,
            }
            .to_string()
        };
        assert_eq!(
            short(1024, None),
            "--max-connections 500 needs 4064 file descriptors (8 per connection and 64 spare) \
             but the hard RLIMIT_NOFILE is 1024; lower --max-connections to at most 120, or \
             raise the limit to at least 4064 (ulimit -Hn, LimitNOFILE=)"
        );
        let e = short(1024, Some(io::Error::from_raw_os_error(libc::EPERM)));
        assert!(
            e.contains("the soft RLIMIT_NOFILE 1024 cannot be raised to that: "),
            "{e}"
        );
        assert!(e.contains("lower --max-connections to at most 120"), "{e}");
        let e = short(40, None);
        assert!(
            e.ends_with("; raise the limit to at least 4064 (ulimit -Hn, LimitNOFILE=)"),
            "{e}"
        );
        // Through bind, before anything is bound: more than any hard limit.
        let path = temp_socket("fds");
        fake_vmm(&path);
        let e = Proxy::bind(ProxyConfig {
            vsock_socket: path.clone(),
            port: 0,
            guest_port: ADB_GUEST_PORT,
            max_connections: usize::MAX,
        })
        .err()
        .unwrap();
        assert!(matches!(e, ProxyError::FdLimit(_)), "{e}");
        let e = e.to_string();
        assert!(e.contains("lower --max-connections to at most"), "{e}");
        assert!(!e.contains('\n'), "{e}");
        // A limit within reach is raised (or already there).
        assert!(ensure_fd_limit(4).unwrap() >= fds_needed(4));
        let _ = std::fs::remove_file(&path);
    }

    /// A guest program that writes its last reply and closes while the
    /// client is still sending: the client still gets the whole reply
    /// (the failed write toward the guest must not close the client's
    /// socket under the other direction, nor leave unread client bytes
    /// that would reset it).
    #[test]
    fn a_guest_that_closes_while_the_client_sends_still_delivers_its_reply() {
        const REPLY: usize = 1 << 20;
        let path = temp_socket("closing");
        let l = UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut r = io::BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            let mut w = s;
            w.write_all(b"OK 1073741824\n").unwrap();
            let mut some = [0u8; 4096];
            r.read_exact(&mut some).unwrap();
            w.write_all(&vec![9u8; REPLY]).unwrap();
            // Closed with the client's later bytes unread.
        });
        let addr = proxy(&path, ADB_GUEST_PORT, 4);
        let mut c = TcpStream::connect(addr).unwrap();
        let writer = {
            let mut c = c.try_clone().unwrap();
            std::thread::spawn(move || {
                let chunk = vec![1u8; 64 * 1024];
                for _ in 0..256 {
                    if c.write_all(&chunk).is_err() {
                        break;
                    }
                }
                let _ = c.shutdown(Shutdown::Write);
            })
        };
        // Let the proxy's write toward the closed guest fail first.
        std::thread::sleep(Duration::from_millis(500));
        let mut back = Vec::new();
        let read = c.read_to_end(&mut back);
        writer.join().unwrap();
        assert!(read.is_ok(), "{read:?} after {} bytes", back.len());
        assert_eq!(back.len(), REPLY);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn refused_guest_port_closes_the_client() {
        let path = temp_socket("refuse");
        fake_vmm(&path);
        let addr = proxy(&path, 6000, 4);
        let mut c = TcpStream::connect(addr).unwrap();
        let mut buf = Vec::new();
        c.read_to_end(&mut buf).unwrap();
        assert!(buf.is_empty());
        assert!(matches!(
            connect_guest(&path, 6000),
            Err(ConnectError::Refused(6000))
        ));
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn set_up_errors_are_one_line() {
        let missing = temp_socket("missing");
        let config = |path: &Path, port| ProxyConfig {
            vsock_socket: path.into(),
            port,
            guest_port: 5555,
            max_connections: 1,
        };
        let e = Proxy::bind(config(&missing, 0)).err().unwrap().to_string();
        assert!(e.contains("no such socket"), "{e}");
        let e = Proxy::bind(config(Path::new("/"), 0))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("is not a socket"), "{e}");
        let path = temp_socket("busy");
        fake_vmm(&path);
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let e = Proxy::bind(config(&path, port)).err().unwrap().to_string();
        assert_eq!(
            e,
            format!("127.0.0.1:{port} is in use (pick another --port)")
        );
        let mut zero = config(&path, 0);
        zero.max_connections = 0;
        assert!(matches!(Proxy::bind(zero), Err(ProxyError::NoConnections)));
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn connections_beyond_the_limit_are_closed() {
        let path = temp_socket("limit");
        fake_vmm(&path);
        let addr = proxy(&path, ADB_GUEST_PORT, 1);
        // The accept loop takes them in order: the first holds the only
        // slot (the fake VMM echoes only at EOF, so it stays open).
        let first = TcpStream::connect(addr).unwrap();
        let mut second = TcpStream::connect(addr).unwrap();
        let mut buf = Vec::new();
        second.read_to_end(&mut buf).unwrap();
        assert!(buf.is_empty());
        drop(first);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn bind_takes_the_sockets_numeric_owner() {
        use std::os::unix::fs::MetadataExt;
        let path = temp_socket("owner");
        fake_vmm(&path);
        // SAFETY: a plain credential query.
        let root = unsafe { libc::geteuid() } == 0;
        if root {
            // No passwd or group entry: the ids are taken as they are.
            std::os::unix::fs::chown(&path, Some(4242), Some(4243)).unwrap();
        }
        let meta = std::fs::metadata(&path).unwrap();
        let p = bind_one(&path).unwrap();
        assert_eq!(
            p.owner(),
            sandbox::Identity {
                uid: meta.uid(),
                gid: meta.gid()
            }
        );
        if root {
            assert_eq!(
                p.owner(),
                sandbox::Identity {
                    uid: 4242,
                    gid: 4243
                }
            );
        }
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn the_start_up_check_connects_or_says_what_to_do() {
        let path = temp_socket("check");
        fake_vmm(&path);
        let config = ProxyConfig {
            vsock_socket: path.clone(),
            port: 0,
            guest_port: ADB_GUEST_PORT,
            max_connections: 1,
        };
        let p = Proxy::bind(config.clone()).unwrap();
        p.check_reachable().unwrap();
        // A socket file nobody listens on (a stopped VMM's).
        let stale = temp_socket("stale");
        drop(UnixListener::bind(&stale).unwrap());
        let p = Proxy::bind(ProxyConfig {
            vsock_socket: stale.clone(),
            ..config
        })
        .unwrap();
        let e = p.check_reachable().unwrap_err().to_string();
        assert!(
            e.starts_with(&format!(
                "nothing listens on the vsock socket {}",
                stale.display()
            )),
            "{e}"
        );
        assert!(e.contains("start the VMM with --vsock"), "{e}");
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_file(&stale);
    }

    #[test]
    fn a_refused_uid_is_told_which_socket_uid_and_option() {
        let unreachable_as = |uid, switched| {
            Unreachable {
                path: "/run/vm/vsock.sock".into(),
                who: sandbox::Identity { uid, gid: 4243 },
                switched,
                error: io::Error::from_raw_os_error(libc::EACCES),
            }
            .to_string()
        };
        let unreachable = |switched| unreachable_as(4242, switched);
        let e = unreachable(true);
        assert!(
            e.starts_with(
                "uid 4242 gid 4243 (switched from root) may not connect to the vsock socket \
                 /run/vm/vsock.sock: "
            ),
            "{e}"
        );
        assert!(e.contains("fix their owner or mode"), "{e}");
        assert!(e.contains("--sandbox-user UID[:GID]"), "{e}");
        let e = unreachable(false);
        assert!(e.starts_with("uid 4242 gid 4243 may not connect"), "{e}");
        assert!(e.contains("start the proxy as root"), "{e}");
        assert!(!e.contains("--sandbox-user"), "{e}");
        assert!(!e.contains('\n'), "{e}");
        // Root is not stopped by file modes: no advice to become root.
        let e = unreachable_as(0, false);
        assert!(e.starts_with("root may not connect"), "{e}");
        assert!(
            e.contains("security module") && !e.contains("as root"),
            "{e}"
        );
    }

    #[test]
    fn ok_line_parse() {
        assert_eq!(parse_ok_line(b"OK 1073741824"), Some(1 << 30));
        assert_eq!(parse_ok_line(b"OK 5\r"), Some(5));
        assert_eq!(parse_ok_line(b"OK"), None);
        assert_eq!(parse_ok_line(b"NO 5"), None);
    }
}
