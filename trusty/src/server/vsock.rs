//! One libtrusty-over-vsock connection: the port-name handshake, the
//! status byte, then messages to and from one channel (`docs/trusty.md`,
//! "libtrusty over vsock"). Blocking I/O on the connection's own thread;
//! the pure rules are in [`crate::framing`].

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vmstack_log::guest_info;

use crate::framing::{
    MessageFramer, NameState, PortNameReader, STATUS_CONNECTED, VSOCK_MAX_MESSAGE,
};
use crate::ports::TaKind;
use crate::service::Guest;

/// Timing of one connection.
#[derive(Debug, Clone, Copy)]
pub struct VsockTiming {
    /// How long the port name may take.
    pub name_timeout: Duration,
    /// How long the rest of a partly read message may take.
    pub partial_timeout: Duration,
    /// The quiet time that completes a name that prefixes another.
    pub quiet: Duration,
}

impl Default for VsockTiming {
    fn default() -> Self {
        VsockTiming {
            name_timeout: Duration::from_secs(10),
            partial_timeout: Duration::from_secs(1),
            quiet: Duration::from_millis(50),
        }
    }
}

/// How a connection ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// The client closed it.
    Closed,
    /// The port name was unknown, too slow or missing.
    NoSuchPort,
    /// The client broke the protocol (a message over the limit).
    ProtocolError,
}

/// One read with a timeout; `Ok(None)` on timeout.
fn read_some(
    s: &mut UnixStream,
    buf: &mut [u8],
    timeout: Option<Duration>,
) -> io::Result<Option<usize>> {
    // A zero timeout means "block forever" to the socket API.
    s.set_read_timeout(timeout.map(|t| t.max(Duration::from_millis(1))))?;
    loop {
        match s.read(buf) {
            Ok(n) => return Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(e),
        }
    }
}

/// Reads the port name; returns the TA and bytes that followed it.
fn handshake(
    s: &mut UnixStream,
    served: &[TaKind],
    t: &VsockTiming,
) -> io::Result<Option<(TaKind, Vec<u8>)>> {
    let deadline = Instant::now() + t.name_timeout;
    let mut names = PortNameReader::new(served);
    let mut buf = vec![0u8; VSOCK_MAX_MESSAGE + 256];
    let mut state = NameState::NeedMore;
    loop {
        let timeout = match state {
            NameState::CompleteIfQuiet(_) => t.quiet,
            _ => deadline.saturating_duration_since(Instant::now()),
        };
        state = match read_some(s, &mut buf, Some(timeout))? {
            Some(0) => return Ok(None),
            Some(n) => names.push(&buf[..n]),
            None => names.on_quiet(),
        };
        match state {
            NameState::Connected { ta, rest } => return Ok(Some((ta, rest))),
            NameState::Unknown => return Ok(None),
            NameState::NeedMore if Instant::now() >= deadline => return Ok(None),
            _ => {}
        }
    }
}

/// Serves one connection of `guest` until it ends.
pub fn serve(
    mut s: UnixStream,
    guest: &Arc<Guest>,
    served: &[TaKind],
    t: &VsockTiming,
) -> io::Result<Ended> {
    let Some((ta, rest)) = handshake(&mut s, served, t)? else {
        guest_info!(
            "vsock: guest {}: unknown or missing port name; closed without a status byte",
            guest.name()
        );
        return Ok(Ended::NoSuchPort);
    };
    s.write_all(&[STATUS_CONNECTED])?;
    tracing::debug!(
        guest = guest.name(),
        port = ta.port_name(),
        "vsock: connected"
    );
    let mut channel = guest.channel(ta, VSOCK_MAX_MESSAGE);
    let mut framer = MessageFramer::new(ta, VSOCK_MAX_MESSAGE);
    let mut buf = vec![0u8; VSOCK_MAX_MESSAGE + 1];
    let mut chunk = rest;
    loop {
        let messages = if chunk.is_empty() {
            let timeout = framer.has_partial().then_some(t.partial_timeout);
            match read_some(&mut s, &mut buf, timeout)? {
                Some(0) => return Ok(Ended::Closed),
                Some(n) => framer.push_read(&buf[..n]),
                None => Ok(framer.take_partial().into_iter().collect()),
            }
        } else {
            framer.push_read(&std::mem::take(&mut chunk))
        };
        let messages = match messages {
            Ok(m) => m,
            Err(e) => {
                guest_info!(
                    "vsock: guest {}, port {}: {e}; closing",
                    guest.name(),
                    ta.port_name()
                );
                return Ok(Ended::ProtocolError);
            }
        };
        for m in messages {
            for reply in channel.on_message(&m) {
                debug_assert!(reply.len() <= VSOCK_MAX_MESSAGE);
                s.write_all(&reply)?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::{BootClock, Service};

    fn guest() -> (tempfile::TempDir, Arc<Guest>) {
        let d = tempfile::tempdir().unwrap();
        let s = Service::open(d.path(), Arc::new(BootClock)).unwrap();
        let g = s.guest("g").unwrap();
        (d, g)
    }

    fn fast() -> VsockTiming {
        VsockTiming {
            name_timeout: Duration::from_millis(300),
            partial_timeout: Duration::from_millis(100),
            quiet: Duration::from_millis(20),
        }
    }

    fn start(g: &Arc<Guest>) -> (UnixStream, std::thread::JoinHandle<io::Result<Ended>>) {
        let (a, b) = UnixStream::pair().unwrap();
        let g = g.clone();
        let t = std::thread::spawn(move || serve(b, &g, &TaKind::ALL, &fast()));
        (a, t)
    }

    /// [`start`], then names `port` and reads the status byte, which must
    /// say connected.
    fn connect(
        g: &Arc<Guest>,
        port: &str,
    ) -> (UnixStream, std::thread::JoinHandle<io::Result<Ended>>) {
        let (mut c, t) = start(g);
        c.write_all(port.as_bytes()).unwrap();
        let mut status = [9u8];
        c.read_exact(&mut status).unwrap();
        assert_eq!(status, [STATUS_CONNECTED]);
        (c, t)
    }

    #[test]
    fn echo_after_the_status_byte() {
        let (_d, g) = guest();
        let (mut c, t) = connect(&g, "com.android.ipc-unittest.srv.echo");
        for msg in [&b"hello"[..], &[7u8; VSOCK_MAX_MESSAGE]] {
            c.write_all(msg).unwrap();
            let mut back = vec![0; msg.len()];
            c.read_exact(&mut back).unwrap();
            assert_eq!(back, msg);
        }
        drop(c);
        assert_eq!(t.join().unwrap().unwrap(), Ended::Closed);
    }

    #[test]
    fn unknown_port_closes_without_a_status_byte() {
        let (_d, g) = guest();
        let (mut c, t) = start(&g);
        c.write_all(b"com.android.trusty.keymint").unwrap();
        let mut b = [0u8; 1];
        assert_eq!(c.read(&mut b).unwrap(), 0);
        assert_eq!(t.join().unwrap().unwrap(), Ended::NoSuchPort);
        // Silence: closed after the name timeout.
        let (mut c, t) = start(&g);
        assert_eq!(c.read(&mut b).unwrap(), 0);
        assert_eq!(t.join().unwrap().unwrap(), Ended::NoSuchPort);
    }

    #[test]
    fn an_oversized_message_closes_the_connection() {
        let (_d, g) = guest();
        let (mut c, t) = connect(&g, "com.android.ipc-unittest.srv.datasink");
        c.write_all(&[0; VSOCK_MAX_MESSAGE + 1]).unwrap();
        assert_eq!(t.join().unwrap().unwrap(), Ended::ProtocolError);
    }

    #[test]
    fn a_truncated_gatekeeper_message_is_answered_after_the_timeout() {
        let (_d, g) = guest();
        let (mut c, t) = connect(&g, "com.android.trusty.gatekeeper");
        // cmd VERIFY, header, then nothing.
        c.write_all(&[2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]).unwrap();
        let mut r = [0u8; 12];
        c.read_exact(&mut r).unwrap();
        assert_eq!(&r[..4], &3u32.to_le_bytes());
        assert_eq!(&r[4..8], &1u32.to_le_bytes(), "ERROR_INVALID");
        drop(c);
        t.join().unwrap().unwrap();
    }
}
