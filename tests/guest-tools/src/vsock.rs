//! Raw `AF_VSOCK` stream sockets for the guest tools (`vsock-test`,
//! `vhal-test`): socket, connect, listen and accept on plain fds, no
//! library in between.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The `AF_VSOCK` address of `cid`:`port`.
pub fn addr(cid: u32, port: u32) -> libc::sockaddr_vm {
    // SAFETY: sockaddr_vm is plain old data; all-zero is valid.
    let mut a: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    a.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    a.svm_cid = cid;
    a.svm_port = port;
    a
}

/// A new `AF_VSOCK` stream socket (close-on-exec).
pub fn socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the result is checked.
    let fd = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd this function owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A new socket given the address `cid`:`port` by `call`: `libc::connect`
/// or `libc::bind`.
fn socket_at(
    cid: u32,
    port: u32,
    call: unsafe extern "C" fn(libc::c_int, *const libc::sockaddr, libc::socklen_t) -> libc::c_int,
) -> io::Result<OwnedFd> {
    let fd = socket()?;
    let a = addr(cid, port);
    // SAFETY: `call` is connect(2) or bind(2) on an owned fd; `a` is an
    // initialised sockaddr_vm of the given size.
    let rc = unsafe {
        call(
            fd.as_raw_fd(),
            std::ptr::addr_of!(a).cast(),
            std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// A stream socket connected to `cid`:`port`.
pub fn connect(cid: u32, port: u32) -> io::Result<OwnedFd> {
    socket_at(cid, port, libc::connect)
}

/// A socket listening on `port` of any cid, with room for `backlog`
/// pending connections.
pub fn listen(port: u32, backlog: i32) -> io::Result<OwnedFd> {
    let fd = socket_at(libc::VMADDR_CID_ANY, port, libc::bind)?;
    // SAFETY: listen(2) on an owned, bound socket.
    if unsafe { libc::listen(fd.as_raw_fd(), backlog) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// The next connection on the listening socket `l` (close-on-exec).
pub fn accept(l: &OwnedFd) -> io::Result<OwnedFd> {
    // SAFETY: accept4(2) without an address; the result is checked.
    let c = unsafe {
        libc::accept4(
            l.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_CLOEXEC,
        )
    };
    if c < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd from accept4, owned from here on.
    Ok(unsafe { OwnedFd::from_raw_fd(c) })
}
