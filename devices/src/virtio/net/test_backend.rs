//! A fake network backend for unit tests: one end of a `SOCK_SEQPACKET`
//! socketpair stands in for the tap (message boundaries are frame
//! boundaries, and `MSG_TRUNC` reports a cut frame's full length as a tap
//! does); the test drives the other end.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::iovec::{byte_count, IoVecs};
use super::tap::NetBackend;

/// A backend over one end of a `SOCK_SEQPACKET` socketpair: message
/// boundaries are frame boundaries, and `MSG_TRUNC` reports a cut
/// frame's full length like a tap does.
pub struct PairBackend {
    sock: OwnedFd,
    offload: Arc<AtomicU32>,
}

impl AsRawFd for PairBackend {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

impl NetBackend for PairBackend {
    fn recv(&mut self, bufs: &IoVecs) -> io::Result<usize> {
        // SAFETY: an all-zero msghdr is valid; the fields set below
        // point at `bufs`' entries, which stay alive across the call.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = bufs.as_raw().as_ptr().cast_mut();
        msg.msg_iovlen = bufs.as_raw().len() as _;
        // SAFETY: `bufs` only holds mapped guest memory (IoVecs
        // invariant); the kernel writes at most their lengths.
        let n = unsafe {
            libc::recvmsg(
                self.sock.as_raw_fd(),
                &mut msg,
                libc::MSG_TRUNC | libc::MSG_DONTWAIT,
            )
        };
        byte_count(n)
    }

    fn send(&mut self, bufs: &IoVecs) -> io::Result<usize> {
        bufs.writev_to(self.sock.as_raw_fd())
    }

    fn set_offload(&mut self, flags: u32) -> io::Result<()> {
        self.offload.store(flags, Ordering::SeqCst);
        Ok(())
    }
}

/// The host end of the pair.
pub struct Peer {
    sock: OwnedFd,
    /// The last `set_offload` flags the device gave the backend.
    pub offload: Arc<AtomicU32>,
}

impl Peer {
    pub fn send(&self, frame: &[u8]) {
        // SAFETY: the pointer and length describe `frame`.
        let n = unsafe { libc::send(self.sock.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        assert_eq!(n, frame.len() as isize, "{}", io::Error::last_os_error());
    }

    /// The next frame the device sent, if one comes within `wait`.
    pub fn recv(&self, wait: Duration) -> Option<Vec<u8>> {
        let mut pfd = libc::pollfd {
            fd: self.sock.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the call.
        let r = unsafe { libc::poll(&mut pfd, 1, wait.as_millis() as libc::c_int) };
        if r <= 0 {
            return None;
        }
        let mut buf = vec![0u8; 128 * 1024];
        // SAFETY: the pointer and length describe `buf`.
        let n = unsafe {
            libc::recv(
                self.sock.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        assert!(n >= 0, "{}", io::Error::last_os_error());
        buf.truncate(n as usize);
        Some(buf)
    }
}

pub fn backend_pair() -> (Box<dyn NetBackend>, Peer) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two fds socketpair returns.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    assert_eq!(r, 0);
    for fd in fds {
        let size: libc::c_int = 1 << 20;
        for opt in [libc::SO_SNDBUF, libc::SO_RCVBUF] {
            // SAFETY: the option value is a live c_int of the given size.
            unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    opt,
                    (&size as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
        }
    }
    // SAFETY: both fds were just created and are owned by nothing else.
    let (a, b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let offload = Arc::new(AtomicU32::new(u32::MAX));
    (
        Box::new(PairBackend {
            sock: a,
            offload: offload.clone(),
        }),
        Peer { sock: b, offload },
    )
}
