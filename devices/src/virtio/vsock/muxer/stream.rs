//! A connection's host socket: a unix socket of the hybrid listener (or
//! one the VMM connected for the guest), or a TCP socket accepted on a
//! forwarded loopback port.

use std::io;
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixStream;

/// A connection's host socket.
pub(super) enum HostStream {
    /// Hybrid vsock: the `CONNECT`/`OK` lines frame the stream's start.
    Unix(UnixStream),
    /// A forwarded TCP port: the stream is the guest's from its first byte.
    Tcp(TcpStream),
}

impl HostStream {
    /// Ends the socket's write side (the host reads end of file).
    pub(super) fn shutdown_write(&self) -> io::Result<()> {
        match self {
            Self::Unix(s) => s.shutdown(Shutdown::Write),
            Self::Tcp(s) => s.shutdown(Shutdown::Write),
        }
    }
}

impl AsFd for HostStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Self::Unix(s) => s.as_fd(),
            Self::Tcp(s) => s.as_fd(),
        }
    }
}

impl AsRawFd for HostStream {
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

impl io::Write for HostStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Unix(s) => s.write(buf),
            Self::Tcp(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
