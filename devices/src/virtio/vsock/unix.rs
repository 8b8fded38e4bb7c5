//! The host side over unix sockets ("hybrid vsock", as in Firecracker).
//!
//! - Host to guest: a host program connects to the listening socket `PATH`
//!   and writes `CONNECT <port>\n`; once the guest accepted, the VMM answers
//!   `OK <host port>\n`, then bytes flow. If the guest refuses (or does not
//!   answer in time) the VMM closes the socket without a reply.
//! - Guest to host: a guest connection to host port `P` is forwarded to the
//!   unix socket `PATH_P`; if nothing accepts there, the guest gets `RST`.
//!
//! See `docs/vsock.md`.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// Longest `CONNECT` line accepted, newline included.
pub const MAX_CONNECT_LINE: usize = 32;

/// What the first bytes of a host connection say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectLine {
    /// `CONNECT <port>\n`, consuming `len` bytes.
    Connect {
        /// Guest port.
        port: u32,
        /// Bytes of the line, newline included.
        len: usize,
    },
    /// No newline yet; wait for more bytes.
    Incomplete,
    /// Not a valid line: close the connection.
    Invalid,
}

/// Parses the start of what a host program sent.
pub fn parse_connect_line(buf: &[u8]) -> ConnectLine {
    let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
        return if buf.len() >= MAX_CONNECT_LINE {
            ConnectLine::Invalid
        } else {
            ConnectLine::Incomplete
        };
    };
    if nl + 1 > MAX_CONNECT_LINE {
        return ConnectLine::Invalid;
    }
    let line = &buf[..nl];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let Some(port) = line.strip_prefix(b"CONNECT ") else {
        return ConnectLine::Invalid;
    };
    if port.is_empty() || !port.iter().all(u8::is_ascii_digit) {
        return ConnectLine::Invalid;
    }
    match std::str::from_utf8(port)
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
    {
        Some(port) => ConnectLine::Connect { port, len: nl + 1 },
        None => ConnectLine::Invalid,
    }
}

/// The reply to a host program whose connection the guest accepted.
pub fn ok_line(local_port: u32) -> Vec<u8> {
    format!("OK {local_port}\n").into_bytes()
}

/// The socket a guest connection to host port `port` goes to: `PATH_port`.
pub fn port_path(base: &Path, port: u32) -> PathBuf {
    let mut s = base.as_os_str().to_owned();
    s.push(format!("_{port}"));
    PathBuf::from(s)
}

/// Reads up to `buf.len()` bytes without consuming them (`MSG_PEEK`).
pub fn peek(stream: &UnixStream, buf: &mut [u8]) -> io::Result<usize> {
    recv_with(stream, buf, libc::MSG_PEEK | libc::MSG_DONTWAIT)
}

/// One `recv(2)` of up to `buf.len()` bytes with `flags`.
pub fn recv_with(stream: &UnixStream, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the
    // duration of the call; the fd is owned by `stream`.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            flags,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Connects to the unix stream socket at `path` without ever blocking:
/// a listener with a full backlog gives `WouldBlock`, like a refusal.
pub fn connect_nonblocking(path: &Path) -> io::Result<UnixStream> {
    // SAFETY: plain socket(2) call; the result is checked below.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh socket this function owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_un is plain old data; all-zero is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    // Leave room for the terminating NUL.
    if bytes.is_empty() || bytes.len() >= addr.sun_path.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "unix socket path too long",
        ));
    }
    for (dst, &src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = src as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    loop {
        // SAFETY: `addr` is an initialised sockaddr_un and `len` does not
        // exceed its size; the fd is valid.
        let rc = unsafe {
            libc::connect(
                fd.as_raw_fd(),
                std::ptr::addr_of!(addr).cast(),
                len as libc::socklen_t,
            )
        };
        if rc == 0 {
            return Ok(UnixStream::from(fd));
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixListener;

    #[test]
    fn connect_lines() {
        assert_eq!(
            parse_connect_line(b"CONNECT 52\n"),
            ConnectLine::Connect { port: 52, len: 11 }
        );
        assert_eq!(
            parse_connect_line(b"CONNECT 4294967295\r\nhello"),
            ConnectLine::Connect {
                port: u32::MAX,
                len: 20
            }
        );
        assert_eq!(parse_connect_line(b"CONNECT 5"), ConnectLine::Incomplete);
        assert_eq!(parse_connect_line(b""), ConnectLine::Incomplete);
        for bad in [
            &b"CONNECT 4294967296\n"[..],
            b"CONNECT -1\n",
            b"CONNECT\n",
            b"CONNECT \n",
            b"connect 5\n",
            b"CONNECT 5 6\n",
            b"CONNECT 00000000000000000000000000005\n",
            &[b'x'; MAX_CONNECT_LINE],
        ] {
            assert_eq!(parse_connect_line(bad), ConnectLine::Invalid, "{bad:?}");
        }
        assert_eq!(ok_line(1 << 30), b"OK 1073741824\n");
    }

    #[test]
    fn port_paths_and_nonblocking_connect() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("v.sock");
        let p = port_path(&base, 5000);
        assert_eq!(p, dir.path().join("v.sock_5000"));
        // Nothing there: refused.
        assert!(connect_nonblocking(&p).is_err());
        let listener = UnixListener::bind(&p).unwrap();
        let mut s = connect_nonblocking(&p).unwrap();
        let (peer, _) = listener.accept().unwrap();
        s.write_all(b"CONNECT 1\nrest").unwrap();
        let mut buf = [0u8; 64];
        // Peeking does not consume.
        assert_eq!(peek(&peer, &mut buf).unwrap(), 14);
        assert_eq!(peek(&peer, &mut buf).unwrap(), 14);
    }
}
