//! The VMM's side of the host TEE protocol: an incremental frame decoder
//! (for an epoll loop that reads whatever is available) and a blocking
//! client over a unix stream socket (for a device worker thread).
//!
//! ```no_run
//! use trusty::tee::{Param, Request, TeeClient, login};
//! let mut c = TeeClient::connect("/run/trusty/guest.tee".as_ref())?;
//! let r = c.call(&Request::OpenSession {
//!     uuid: [0; 16], login: login::PUBLIC, client: [0; 16], cancel_id: 0,
//!     params: Default::default(),
//! })?;
//! # Ok::<(), trusty::tee::ClientError>(())
//! ```

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use thiserror::Error;

use super::proto::{ProtoError, Request, Response, ResponseBody, MAX_FRAME, PROTOCOL_VERSION};
use super::result;

/// Errors of the blocking client.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The socket failed.
    #[error("TEE socket: {0}")]
    Io(#[from] io::Error),
    /// The service sent something that does not decode.
    #[error("TEE protocol: {0}")]
    Proto(#[from] ProtoError),
    /// The service closed the connection.
    #[error("the Trusty service closed the TEE connection")]
    Closed,
    /// `HELLO` was refused or answered with another version.
    #[error("the Trusty service speaks TEE protocol version {version} (result {ret:#x}); this client speaks {PROTOCOL_VERSION}")]
    Version {
        /// The version the service answered.
        version: u32,
        /// Its result code.
        ret: u32,
    },
    /// A response that does not answer the request it should.
    #[error("unexpected response: {0}")]
    Unexpected(String),
}

/// Splits a byte stream into frame bodies. Feed it what the socket gave
/// ([`FrameDecoder::push`]), then take bodies ([`FrameDecoder::next_body`])
/// until it returns `None`.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
}

impl FrameDecoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the socket.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete body, `None` if more bytes are needed, or an
    /// error if the next frame announces more than [`MAX_FRAME`] bytes
    /// (the stream cannot be trusted after that).
    pub fn next_body(&mut self) -> Result<Option<Vec<u8>>, ProtoError> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_le_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len > MAX_FRAME {
            return Err(ProtoError::FrameTooLong(len));
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let body = self.buf[4..4 + len].to_vec();
        self.buf.drain(..4 + len);
        Ok(Some(body))
    }

    /// Bytes buffered that do not yet form a frame.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

/// Reads one frame body from a blocking reader; `Ok(None)` at a clean EOF
/// between frames.
pub fn read_body(r: &mut impl Read) -> Result<Option<Vec<u8>>, ClientError> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(ClientError::Closed),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(ProtoError::FrameTooLong(len).into());
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            ClientError::Closed
        } else {
            ClientError::Io(e)
        }
    })?;
    Ok(Some(body))
}

/// The sending half: numbers requests and writes their frames.
#[derive(Debug)]
pub struct TeeSender {
    stream: UnixStream,
    next_id: Arc<AtomicU64>,
}

impl TeeSender {
    /// Writes `req` and returns the id its response will carry.
    pub fn send(&mut self, req: &Request) -> Result<u64, ClientError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.stream.write_all(&req.encode_frame(id))?;
        Ok(id)
    }
}

/// The receiving half: reads responses in the order the service sends
/// them (not necessarily request order).
#[derive(Debug)]
pub struct TeeReceiver {
    stream: UnixStream,
}

impl TeeReceiver {
    /// Blocks for the next response.
    pub fn recv(&mut self) -> Result<Response, ClientError> {
        match read_body(&mut self.stream)? {
            Some(body) => Ok(Response::decode(&body)?),
            None => Err(ClientError::Closed),
        }
    }
}

/// What the service answered to `HELLO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Largest frame body it accepts.
    pub max_frame: u32,
    /// Largest memref it accepts.
    pub max_memref: u32,
}

/// A blocking client: one connection to a guest's TEE socket.
#[derive(Debug)]
pub struct TeeClient {
    sender: TeeSender,
    receiver: TeeReceiver,
    /// Responses read while waiting for another one.
    stash: VecDeque<Response>,
    limits: ServerLimits,
}

impl TeeClient {
    /// Connects to `path` and performs the `HELLO` exchange.
    pub fn connect(path: &Path) -> Result<Self, ClientError> {
        Self::from_stream(UnixStream::connect(path)?)
    }

    /// Performs the `HELLO` exchange on a connected stream.
    pub fn from_stream(stream: UnixStream) -> Result<Self, ClientError> {
        let mut client = TeeClient {
            sender: TeeSender {
                stream: stream.try_clone()?,
                next_id: Arc::new(AtomicU64::new(1)),
            },
            receiver: TeeReceiver { stream },
            stash: VecDeque::new(),
            limits: ServerLimits {
                max_frame: 0,
                max_memref: 0,
            },
        };
        let r = client.call(&Request::Hello {
            version: PROTOCOL_VERSION,
        })?;
        match r.body {
            ResponseBody::Hello {
                version,
                max_frame,
                max_memref,
            } if r.ret == result::SUCCESS && version == PROTOCOL_VERSION => {
                client.limits = ServerLimits {
                    max_frame,
                    max_memref,
                };
                Ok(client)
            }
            ResponseBody::Hello { version, .. } => Err(ClientError::Version {
                version,
                ret: r.ret,
            }),
            other => Err(ClientError::Unexpected(format!("{other:?} to HELLO"))),
        }
    }

    /// The service's limits from `HELLO`.
    pub fn limits(&self) -> ServerLimits {
        self.limits
    }

    /// Sends `req` without waiting; the response comes from
    /// [`TeeClient::recv`] (or is stashed by a later [`TeeClient::call`]).
    pub fn send(&mut self, req: &Request) -> Result<u64, ClientError> {
        self.sender.send(req)
    }

    /// The next response (stashed ones first).
    pub fn recv(&mut self) -> Result<Response, ClientError> {
        match self.stash.pop_front() {
            Some(r) => Ok(r),
            None => self.receiver.recv(),
        }
    }

    /// Sends `req` and waits for its response; responses to other
    /// requests that arrive first are kept for [`TeeClient::recv`].
    pub fn call(&mut self, req: &Request) -> Result<Response, ClientError> {
        let id = self.sender.send(req)?;
        if let Some(pos) = self.stash.iter().position(|r| r.id == id) {
            if let Some(r) = self.stash.remove(pos) {
                return Ok(r);
            }
        }
        loop {
            let r = self.receiver.recv()?;
            if r.id == id {
                return Ok(r);
            }
            self.stash.push_back(r);
        }
    }

    /// Splits into a sender and a receiver usable from two threads (e.g.
    /// one thread blocked in an invoke's response while another sends a
    /// `CANCEL`). Stashed responses are lost; split before sending.
    pub fn split(self) -> (TeeSender, TeeReceiver) {
        (self.sender, self.receiver)
    }
}

impl AsRawFd for TeeClient {
    fn as_raw_fd(&self) -> RawFd {
        self.receiver.stream.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tee::proto::{op, origin};

    #[test]
    fn decoder_splits_frames_across_pushes() {
        let a = Request::CloseSession { session: 1 }.encode_frame(1);
        let b = Request::Cancel {
            session: 2,
            cancel_id: 3,
        }
        .encode_frame(2);
        let mut all = a.clone();
        all.extend_from_slice(&b);
        let mut d = FrameDecoder::new();
        let mut bodies = Vec::new();
        for byte in &all {
            d.push(std::slice::from_ref(byte));
            while let Some(body) = d.next_body().unwrap() {
                bodies.push(body);
            }
        }
        assert_eq!(bodies, vec![a[4..].to_vec(), b[4..].to_vec()]);
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn decoder_refuses_a_huge_length() {
        let mut d = FrameDecoder::new();
        d.push(&u32::MAX.to_le_bytes());
        assert_eq!(
            d.next_body(),
            Err(ProtoError::FrameTooLong(u32::MAX as usize))
        );
    }

    #[test]
    fn client_stashes_out_of_order_responses() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let server = std::thread::spawn(move || {
            // HELLO
            let body = read_body(&mut b).unwrap().unwrap();
            let (id, _) = Request::decode(&body).unwrap();
            b.write_all(&Response::error(id, op::HELLO, 0, origin::TEE, None).encode_frame())
                .unwrap();
            // Two requests; answered in reverse order.
            let (id1, _) = Request::decode(&read_body(&mut b).unwrap().unwrap()).unwrap();
            let (id2, _) = Request::decode(&read_body(&mut b).unwrap().unwrap()).unwrap();
            for id in [id2, id1] {
                b.write_all(
                    &Response::error(id, op::CLOSE_SESSION, 0, origin::TEE, None).encode_frame(),
                )
                .unwrap();
            }
        });
        let mut c = TeeClient::from_stream(a).unwrap();
        let first = c.send(&Request::CloseSession { session: 1 }).unwrap();
        let second = c.call(&Request::CloseSession { session: 2 }).unwrap();
        assert_eq!(second.id, first + 1);
        assert_eq!(c.recv().unwrap().id, first);
        server.join().unwrap();
        assert!(matches!(c.recv(), Err(ClientError::Closed)));
    }
}
