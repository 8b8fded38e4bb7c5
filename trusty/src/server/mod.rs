//! The connection servers `trustyd` runs: libtrusty over vsock
//! ([`vsock`]) and the host TEE protocol ([`tee`]), one thread per
//! connection, plus the private unix listeners they accept on.

pub mod tee;
pub mod vsock;

use std::io;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Binds a unix listener at `path` with mode `0600` before it listens
/// (`sandbox::socket::bind_private`: the umask is not trusted; owned by the
/// sandbox user when a root daemon will switch to it). A stale socket file
/// (nobody listens) is replaced; a live one, or a path that is not a
/// socket, is an error that says so.
pub fn bind_private(path: &Path) -> io::Result<UnixListener> {
    sandbox::socket::bind_private(path).map_err(bind_error)
}

/// [`bind_private`] with the file shared with group `gid` (mode `0660`):
/// a guest whose VMM runs as a user of its own (`user=UID:GID`).
pub fn bind_for_group(path: &Path, gid: u32) -> io::Result<UnixListener> {
    sandbox::socket::bind_for_group(path, gid).map_err(bind_error)
}

/// A bind error as one `io::Error` that says what to do.
fn bind_error(e: sandbox::socket::BindError) -> io::Error {
    match e {
        sandbox::socket::BindError::InUse(p) => io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "another process listens on {} (a second trustyd?)",
                p.display()
            ),
        ),
        sandbox::socket::BindError::NotSocket(p) => io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket: remove it or pick another path",
                p.display()
            ),
        ),
        sandbox::socket::BindError::Io { source, .. } => source,
    }
}

/// Counts a guest's open connections of one kind; a slot is released
/// when its [`ConnSlot`] drops.
#[derive(Debug)]
pub struct ConnLimit {
    open: Arc<AtomicUsize>,
    max: usize,
}

/// One counted connection.
#[derive(Debug)]
pub struct ConnSlot(Arc<AtomicUsize>);

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ConnLimit {
    /// At most `max` connections at a time.
    pub fn new(max: usize) -> Self {
        ConnLimit {
            open: Arc::new(AtomicUsize::new(0)),
            max,
        }
    }

    /// A slot, or `None` when all are taken.
    pub fn acquire(&self) -> Option<ConnSlot> {
        let mut cur = self.open.load(Ordering::Acquire);
        loop {
            if cur >= self.max {
                return None;
            }
            match self
                .open
                .compare_exchange(cur, cur + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Some(ConnSlot(self.open.clone())),
                Err(now) => cur = now,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn limit_counts_slots() {
        let l = ConnLimit::new(2);
        let a = l.acquire().unwrap();
        let _b = l.acquire().unwrap();
        assert!(l.acquire().is_none());
        drop(a);
        assert!(l.acquire().is_some());
    }

    #[test]
    fn bind_replaces_stale_and_refuses_live_sockets() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("s");
        let l = bind_private(&p).unwrap();
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let e = bind_private(&p).unwrap_err();
        assert!(e.to_string().contains("another process"), "{e}");
        drop(l);
        bind_private(&p).unwrap();
        let f = d.path().join("file");
        fs::write(&f, b"").unwrap();
        assert!(bind_private(&f)
            .unwrap_err()
            .to_string()
            .contains("not a socket"));
        // A guest's own group: 0660.
        // SAFETY: plain credential query.
        let gid = unsafe { libc::getegid() };
        let p = d.path().join("g");
        let _l = bind_for_group(&p, gid).unwrap();
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
    }
}
