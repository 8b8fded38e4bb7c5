//! Unix sockets that trust neither the umask nor the peer.
//!
//! - [`bind_private`]: a listening socket whose file is mode `0600` before
//!   anyone can connect (bind, `chmod`, then `listen`: until `listen`
//!   every `connect` is refused), owned by the sandbox user when a root
//!   process will switch to one; an existing file is replaced only if it
//!   is a socket nobody listens on. With a configured group (one group per
//!   guest, [`SocketSettings::group`]) or through [`bind_for_group`] the
//!   file is `0660` and that group's.
//! - [`check_peer`]: `SO_PEERCRED` of every accepted (or connected)
//!   socket against the process's allowed uids ([`allow_peers`]).
//! - [`remove_socket`]: never deletes anything but a socket.
//! - [`AcceptBackoff`]: an accept loop that runs out of descriptors
//!   (`EMFILE`) waits instead of spinning.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use crate::Identity;

/// Why a socket cannot be bound.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The path exists and is not a socket (it is never deleted).
    #[error("{0} exists and is not a socket; remove it or pick another path")]
    NotSocket(PathBuf),
    /// Another process listens there.
    #[error("{0} is in use by another process")]
    InUse(PathBuf),
    /// A system call failed.
    #[error("cannot create socket {path}: {what}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The step.
        what: &'static str,
        /// The error.
        source: io::Error,
    },
}

/// A peer the process does not serve.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// Its uid is not allowed.
    #[error("peer uid {uid} (pid {pid}) is not allowed (allowed uids: {allowed})")]
    NotAllowed {
        /// The peer's uid.
        uid: u32,
        /// The peer's pid (0 if unknown).
        pid: i32,
        /// The allowed uids, for the log line.
        allowed: String,
    },
    /// A loopback TCP client whose socket's owner is not allowed
    /// (`crate::tcp_peer`).
    #[error("its socket belongs to uid {uid}, which is not allowed (allowed uids: {allowed})")]
    TcpNotAllowed {
        /// The owner of the client's socket.
        uid: u32,
        /// The allowed uids, for the log line.
        allowed: String,
    },
    /// `SO_PEERCRED` failed.
    #[error("cannot read the peer's credentials: {0}")]
    Io(#[from] io::Error),
}

/// Who may talk to this process's sockets, and who owns their files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketSettings {
    /// Peer uids accepted (besides nothing else: root is accepted only if
    /// listed).
    pub allowed_uids: Vec<u32>,
    /// Owner given to socket files this process creates (a root process
    /// that switches to the sandbox user makes its sockets that user's, so
    /// it can still remove them, and its peers of that uid can connect).
    pub owner: Option<Identity>,
    /// Group given access to the socket files this process binds (mode
    /// `0660`, the file's group set to it); `None`: owner only (`0600`).
    /// The process must be root or a member of the group.
    pub group: Option<u32>,
}

static SETTINGS: OnceLock<SocketSettings> = OnceLock::new();

/// The default when nothing was configured: the process's own uid and
/// root.
fn defaults() -> SocketSettings {
    // SAFETY: plain credential queries.
    let (uid, euid) = unsafe { (libc::getuid(), libc::geteuid()) };
    let mut allowed_uids = vec![uid, euid, 0];
    allowed_uids.sort_unstable();
    allowed_uids.dedup();
    SocketSettings {
        allowed_uids,
        owner: None,
        group: None,
    }
}

/// Sets the process's socket settings (once, before any socket is bound
/// or accepted); later calls are ignored and return `false`.
pub fn configure(mut settings: SocketSettings) -> bool {
    settings.allowed_uids.sort_unstable();
    settings.allowed_uids.dedup();
    SETTINGS.set(settings).is_ok()
}

/// The process's socket settings.
pub fn settings() -> &'static SocketSettings {
    SETTINGS.get_or_init(defaults)
}

/// The allowed peer uids, standard for the stack's programs: the uid that
/// started the process, the uid it runs as now (the sandbox user), root,
/// and `extra`.
pub fn standard_peers(started_as: u32, runs_as: u32, extra: &[u32]) -> Vec<u32> {
    let mut uids = vec![started_as, runs_as, 0];
    uids.extend_from_slice(extra);
    uids.sort_unstable();
    uids.dedup();
    uids
}

/// Configures the standard settings of a stack program that will run as
/// `runs_as` (switching to it if `switches`): the peers are
/// [`standard_peers`] plus `extra_peers`, and its socket files are
/// `runs_as`'s when it switches. Call before any socket is bound; returns
/// what [`configure`] returns.
pub fn configure_standard(runs_as: Identity, switches: bool, extra_peers: &[u32]) -> bool {
    configure_standard_for_group(runs_as, switches, extra_peers, None)
}

/// [`configure_standard`], and the socket files are shared with `group`
/// (`0660`) when it is given.
pub fn configure_standard_for_group(
    runs_as: Identity,
    switches: bool,
    extra_peers: &[u32],
    group: Option<u32>,
) -> bool {
    // SAFETY: plain credential query.
    let started_as = unsafe { libc::getuid() };
    configure(SocketSettings {
        allowed_uids: standard_peers(started_as, runs_as.uid, extra_peers),
        owner: switches.then_some(runs_as),
        group,
    })
}

/// The credentials of the peer of `socket` (`SO_PEERCRED`).
pub fn peer_credentials(socket: &impl AsRawFd) -> io::Result<libc::ucred> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`, which is
    // valid for them; the descriptor is borrowed for the call.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            std::ptr::addr_of_mut!(cred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred)
}

/// Whether `uid` is among `allowed` (the pure part of [`check_peer`]).
pub fn uid_allowed(uid: u32, allowed: &[u32]) -> bool {
    allowed.contains(&uid)
}

/// Checks the peer of `socket` against the allowed uids.
pub fn check_peer(socket: &impl AsRawFd) -> Result<libc::ucred, PeerError> {
    check_peer_among(socket, &settings().allowed_uids)
}

/// Checks the peer of `socket` against `allowed` instead of the process's
/// allowed uids (a socket that belongs to one guest: its VMM's uid).
pub fn check_peer_among(socket: &impl AsRawFd, allowed: &[u32]) -> Result<libc::ucred, PeerError> {
    let cred = peer_credentials(socket)?;
    if uid_allowed(cred.uid, allowed) {
        Ok(cred)
    } else {
        Err(PeerError::NotAllowed {
            uid: cred.uid,
            pid: cred.pid,
            allowed: allowed
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(","),
        })
    }
}

/// Connects to the unix socket at `path` and checks who listens there.
pub fn connect_checked(path: &Path) -> io::Result<UnixStream> {
    let stream = UnixStream::connect(path)?;
    check_peer(&stream).map_err(|e| io::Error::new(io::ErrorKind::PermissionDenied, e))?;
    Ok(stream)
}

/// Removes `path` if it is a socket; anything else stays.
pub fn remove_socket(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} is not a socket; left in place", path.display()),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn sockaddr(path: &Path) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    // SAFETY: sockaddr_un is plain data; all-zero is valid.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    if bytes.is_empty() || bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "a unix socket path must be 1-{} bytes without NUL",
                addr.sun_path.len() - 1
            ),
        ));
    }
    for (dst, &src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = src as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    Ok((addr, len as libc::socklen_t))
}

/// Binds a listening unix stream socket at `path`, mode `0600`, owned by
/// the configured owner (if any), replacing a stale socket nobody listens
/// on. The file's mode is set before `listen`, so no process ever
/// connects while it is more open (the umask is not trusted). With a
/// configured [`SocketSettings::group`], as [`bind_for_group`].
pub fn bind_private(path: &Path) -> Result<UnixListener, BindError> {
    bind_with_access(path, settings().group)
}

/// [`bind_private`] with the file shared with `group`: mode `0660`, the
/// file's group `group` (the process must be root or a member). For a
/// process that serves several guests, one group per guest.
pub fn bind_for_group(path: &Path, group: u32) -> Result<UnixListener, BindError> {
    bind_with_access(path, Some(group))
}

/// The mode of a socket file shared with `group` or private.
fn socket_mode(group: Option<u32>) -> libc::mode_t {
    if group.is_some() {
        0o660
    } else {
        0o600
    }
}

fn bind_with_access(path: &Path, group: Option<u32>) -> Result<UnixListener, BindError> {
    let io_err = |what: &'static str| {
        move |source| BindError::Io {
            path: path.to_path_buf(),
            what,
            source,
        }
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(BindError::NotSocket(path.to_path_buf()))
        }
        Ok(_) => {
            if UnixStream::connect(path).is_ok() {
                return Err(BindError::InUse(path.to_path_buf()));
            }
            remove_socket(path).map_err(io_err("removing the stale socket"))?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("checking the path")(e)),
    }
    let (addr, len) = sockaddr(path).map_err(io_err("the path"))?;
    // SAFETY: plain socket(2); the result is checked.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io_err("socket")(io::Error::last_os_error()));
    }
    // SAFETY: `fd` is a fresh descriptor owned from here on.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: `addr` is an initialised sockaddr_un of `len` bytes.
    let rc = unsafe { libc::bind(fd.as_raw_fd(), std::ptr::addr_of!(addr).cast(), len) };
    if rc != 0 {
        return Err(io_err("bind")(io::Error::last_os_error()));
    }
    let fixup = || -> io::Result<()> {
        let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let owner = settings().owner;
        // `-1` leaves an id as it is.
        let uid = owner.map_or(libc::uid_t::MAX, |o| o.uid);
        let gid = group.or(owner.map(|o| o.gid)).unwrap_or(libc::gid_t::MAX);
        if owner.is_some() || group.is_some() {
            // SAFETY: lchown on a NUL-terminated path (the socket just
            // bound; never follows a symlink).
            if unsafe { libc::lchown(c_path.as_ptr(), uid, gid) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        // SAFETY: chmod on the NUL-terminated path of the socket just bound.
        if unsafe { libc::chmod(c_path.as_ptr(), socket_mode(group)) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    };
    if let Err(e) = fixup() {
        let _ = std::fs::remove_file(path);
        let what = if group.is_some() {
            "setting its owner, group and mode 0660"
        } else {
            "setting its owner and mode 0600"
        };
        return Err(io_err(what)(e));
    }
    // SAFETY: listen on the bound socket.
    if unsafe { libc::listen(fd.as_raw_fd(), 128) } != 0 {
        let e = io::Error::last_os_error();
        let _ = std::fs::remove_file(path);
        return Err(io_err("listen")(e));
    }
    Ok(UnixListener::from(fd))
}

/// Listens again on the listening socket `fd`, so that its peers'
/// `SO_PEERCRED` shows the process's credentials now (Linux copies them
/// at `listen`; a socket a root process bound and listened on before
/// switching user would go on showing root's). The backlog stays 128.
pub fn relisten(fd: std::os::fd::RawFd) -> io::Result<()> {
    // SAFETY: listen(2) on a descriptor the caller owns; the result is
    // checked.
    if unsafe { libc::listen(fd, 128) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets the `int` socket option `level`/`name` of `socket` to `value`
/// (`setsockopt(2)`).
pub fn set_int_option(
    socket: &impl AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: setsockopt(2) reads one c_int from `value`, which outlives
    // the call, on a descriptor the caller holds open.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            std::ptr::addr_of!(value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The `int` socket option `level`/`name` of `socket` (`getsockopt(2)`).
pub fn int_option(
    socket: &impl AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt(2) writes at most `len` bytes into `value`, which
    // outlives the call.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            level,
            name,
            std::ptr::addr_of_mut!(value).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value)
}

/// Whether an `accept` error means the process (or system) ran out of
/// descriptors or memory: retrying at once would spin.
pub fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// The wait of an accept loop after an error: 10 ms after the first,
/// doubling up to 1 s while errors go on; nothing after a success.
#[derive(Debug, Default, Clone)]
pub struct AcceptBackoff {
    delay: Option<Duration>,
}

impl AcceptBackoff {
    /// The first wait.
    pub const FIRST: Duration = Duration::from_millis(10);
    /// The longest wait.
    pub const MAX: Duration = Duration::from_secs(1);

    /// An accept succeeded.
    pub fn success(&mut self) {
        self.delay = None;
    }

    /// An accept failed: how long to wait before the next one.
    pub fn failure(&mut self) -> Duration {
        let next = match self.delay {
            None => Self::FIRST,
            Some(d) => (d * 2).min(Self::MAX),
        };
        self.delay = Some(next);
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A fresh temporary directory and the path `s.sock` in it.
    fn socket_path() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        (dir, path)
    }

    #[test]
    fn sockets_are_0600_whatever_the_umask() {
        let (_dir, path) = socket_path();
        // SAFETY: umask only changes the file-creation mask.
        let old = unsafe { libc::umask(0) };
        let listener = bind_private(&path);
        // SAFETY: as above.
        unsafe { libc::umask(old) };
        let _listener = listener.unwrap();
        let mode = std::fs::symlink_metadata(&path)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(UnixStream::connect(&path).is_ok());
    }

    #[test]
    fn a_socket_for_a_group_is_0660_and_that_groups() {
        use std::os::unix::fs::MetadataExt;
        // SAFETY: plain credential queries.
        let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
        // Root may give any group; anyone else one of their own.
        let groups = if euid == 0 {
            vec![egid, 4242]
        } else {
            vec![egid]
        };
        for group in groups {
            let (_dir, path) = socket_path();
            // SAFETY: umask only changes the file-creation mask.
            let old = unsafe { libc::umask(0o077) };
            let listener = bind_for_group(&path, group);
            // SAFETY: as above.
            unsafe { libc::umask(old) };
            let _listener = listener.unwrap();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, 0o660);
            assert_eq!(meta.gid(), group);
            assert!(UnixStream::connect(&path).is_ok());
        }
    }

    #[test]
    fn a_non_socket_is_never_replaced_nor_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("precious");
        std::fs::write(&path, b"data").unwrap();
        assert!(matches!(bind_private(&path), Err(BindError::NotSocket(_))));
        assert!(remove_socket(&path).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"data");
    }

    #[test]
    fn a_stale_socket_is_replaced_and_a_live_one_refused() {
        let (_dir, path) = socket_path();
        drop(UnixListener::bind(&path).unwrap());
        let live = bind_private(&path).unwrap();
        assert!(matches!(bind_private(&path), Err(BindError::InUse(_))));
        drop(live);
        remove_socket(&path).unwrap();
        assert!(!path.exists());
        remove_socket(&path).unwrap();
    }

    #[test]
    fn peers_are_checked_by_uid() {
        assert!(uid_allowed(0, &[0, 1000]));
        assert!(!uid_allowed(1001, &[0, 1000]));
        assert_eq!(standard_peers(0, 65534, &[1000, 0]), vec![0, 1000, 65534]);
        let (a, b) = UnixStream::pair().unwrap();
        let cred = peer_credentials(&a).unwrap();
        // SAFETY: plain credential query.
        assert_eq!(cred.uid, unsafe { libc::geteuid() });
        assert_eq!(cred.pid as u32, std::process::id());
        // The defaults allow the process's own uid.
        assert!(check_peer(&b).is_ok());
        // A socket's own list replaces them.
        assert!(check_peer_among(&b, &[cred.uid]).is_ok());
        let e = check_peer_among(&b, &[cred.uid.wrapping_add(1)]).unwrap_err();
        assert!(matches!(e, PeerError::NotAllowed { uid, .. } if uid == cred.uid));
    }

    #[test]
    fn another_uid_is_refused_by_the_peer_check() {
        // SAFETY: plain credential query.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root to connect as another uid");
            return;
        }
        let (dir, path) = socket_path();
        let listener = bind_private(&path).unwrap();
        // Let the other uid reach the file, so that only the peer check
        // stands in its way.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let (addr, len) = sockaddr(&path).unwrap();
        // SAFETY: the child only switches uid, connects and _exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // SAFETY: async-signal-safe calls only, then _exit.
            unsafe {
                let ok = libc::setresgid(4242, 4242, 4242) == 0
                    && libc::setresuid(4242, 4242, 4242) == 0;
                let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
                let connected = libc::connect(fd, std::ptr::addr_of!(addr).cast(), len) == 0;
                let mut byte = 0u8;
                // Wait until the server has decided (it closes on refusal).
                libc::read(fd, std::ptr::addr_of_mut!(byte).cast(), 1);
                libc::_exit(if ok && connected { 0 } else { 4 });
            }
        }
        let (stream, _) = listener.accept().unwrap();
        let verdict = check_peer(&stream);
        drop(stream);
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
        match verdict {
            Err(PeerError::NotAllowed { uid: 4242, .. }) => {}
            other => panic!("expected a refusal of uid 4242, got {other:?}"),
        }
    }

    #[test]
    fn a_listener_relistened_after_a_switch_shows_the_new_uid() {
        // SAFETY: plain credential query.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root to switch uid");
            return;
        }
        let (dir, path) = socket_path();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let (addr, len) = sockaddr(&path).unwrap();
        // The listener's uid as a client sees it (SO_PEERCRED), in a child
        // that binds as root and switches to 4242: before and after
        // `relisten`, as the exit code's two bits.
        // SAFETY: the child makes plain system calls and _exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let seen = || -> u32 {
                // SAFETY: a fresh socket connected to `addr` (valid for
                // `len` bytes); its credentials are read, then it closes.
                unsafe {
                    let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
                    if libc::connect(fd, std::ptr::addr_of!(addr).cast(), len) != 0 {
                        libc::_exit(9);
                    }
                    let s = UnixStream::from_raw_fd(fd);
                    peer_credentials(&s).map_or(u32::MAX, |c| c.uid)
                }
            };
            let listener = bind_private(&path).unwrap();
            // Reachable by the child after its switch.
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
            // SAFETY: credential changes with integer arguments.
            if unsafe {
                libc::setresgid(4242, 4242, 4242) != 0 || libc::setresuid(4242, 4242, 4242) != 0
            } {
                // SAFETY: leave the child.
                unsafe { libc::_exit(8) };
            }
            let before = seen() == 0;
            relisten(listener.as_raw_fd()).unwrap();
            let after = seen() == 4242;
            // SAFETY: leave the child.
            unsafe { libc::_exit(i32::from(before) | (i32::from(after) << 1)) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status), "{status}");
        // Root's before, the new uid's after.
        assert_eq!(libc::WEXITSTATUS(status), 0b11);
    }

    #[test]
    fn backoff_doubles_to_a_second_and_resets() {
        let mut b = AcceptBackoff::default();
        assert_eq!(b.failure(), Duration::from_millis(10));
        assert_eq!(b.failure(), Duration::from_millis(20));
        for _ in 0..20 {
            b.failure();
        }
        assert_eq!(b.failure(), Duration::from_secs(1));
        b.success();
        assert_eq!(b.failure(), Duration::from_millis(10));
        assert!(is_resource_exhaustion(&io::Error::from_raw_os_error(
            libc::EMFILE
        )));
        assert!(!is_resource_exhaustion(&io::Error::from_raw_os_error(
            libc::EINTR
        )));
    }
}
