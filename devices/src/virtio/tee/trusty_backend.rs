//! The device's backend for vmstack's Trusty service: the host TEE protocol
//! (`docs/trusty.md`) on the guest's TEE socket, with the codec of the
//! `trusty` crate (`trusty::tee`, built without the service).
//!
//! One connection per activation: the first activation uses the connection
//! made (and greeted with `HELLO`) when the VMM started, so a missing
//! service is a start-up error; every later activation connects again,
//! which makes the service close the sessions of the old connection.
//! Frames are written blocking (the service reads each connection without
//! waiting on its own writes) and read without blocking, whatever has
//! arrived, when the event loop says the socket is readable.

use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use trusty::tee::client::read_body;
use trusty::tee::{
    FrameDecoder, Param, ParamOut, Request, Response, ResponseBody, Value, PROTOCOL_VERSION,
};

use super::backend::{HostOp, HostParam, HostParamOut, HostReply, TeeBackend};
use super::protocol::{self, Direction, NUM_PARAMS};

/// Errors connecting to the service.
#[derive(Debug, thiserror::Error)]
pub enum TrustyError {
    /// The socket cannot be reached.
    #[error("cannot reach the Trusty service at {path}: {source} (start trustyd with --guest NAME=...,tee={path})")]
    Connect {
        /// The TEE socket.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The service refused `HELLO` or answered it oddly.
    #[error("the Trusty service at {path} did not accept this VMM: {why}")]
    Hello {
        /// The TEE socket.
        path: PathBuf,
        /// What it answered.
        why: String,
    },
}

/// A connection to `trustyd` for one guest.
pub struct TrustyBackend {
    path: PathBuf,
    stream: UnixStream,
    decoder: FrameDecoder,
    /// The connection has not served an activation yet.
    fresh: bool,
    max_memref: u32,
    buf: Vec<u8>,
}

impl TrustyBackend {
    /// Connects to the guest's TEE socket `path` and greets the service.
    pub fn connect(path: &Path) -> Result<Self, TrustyError> {
        let (stream, max_memref) = hello(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            stream,
            decoder: FrameDecoder::new(),
            fresh: true,
            max_memref,
            buf: vec![0; 64 * 1024],
        })
    }

    /// The largest memory reference the service takes (from `HELLO`).
    pub fn max_memref(&self) -> u32 {
        self.max_memref
    }
}

fn hello(path: &Path) -> Result<(UnixStream, u32), TrustyError> {
    let connect = |source| TrustyError::Connect {
        path: path.to_path_buf(),
        source,
    };
    let refused = |why: String| TrustyError::Hello {
        path: path.to_path_buf(),
        why,
    };
    let mut stream = UnixStream::connect(path).map_err(connect)?;
    let hello = Request::Hello {
        version: PROTOCOL_VERSION,
    };
    stream.write_all(&hello.encode_frame(0)).map_err(connect)?;
    let body = read_body(&mut stream)
        .map_err(|e| refused(e.to_string()))?
        .ok_or_else(|| refused("the connection closed".into()))?;
    let r = Response::decode(&body).map_err(|e| refused(e.to_string()))?;
    match r.body {
        ResponseBody::Hello {
            version,
            max_memref,
            ..
        } if r.ret == 0 && version == PROTOCOL_VERSION => Ok((stream, max_memref)),
        other => Err(refused(format!(
            "result {:#x}, {other:?} (this VMM speaks version {PROTOCOL_VERSION})",
            r.ret
        ))),
    }
}

fn value(v: &protocol::Value) -> Value {
    Value {
        a: v.a,
        b: v.b,
        c: v.c,
    }
}

fn param(p: HostParam) -> Param {
    match p {
        HostParam::None => Param::None,
        HostParam::Value(Direction::Input, v) => Param::ValueInput(value(&v)),
        HostParam::Value(Direction::Output, _) => Param::ValueOutput,
        HostParam::Value(Direction::InOut, v) => Param::ValueInout(value(&v)),
        HostParam::MemRefIn(b) => Param::MemrefInput(b),
        HostParam::MemRefOut { capacity } => Param::MemrefOutput { capacity },
        HostParam::MemRefInOut(b) => Param::MemrefInout(b),
    }
}

fn params(ps: [HostParam; NUM_PARAMS]) -> [Param; NUM_PARAMS] {
    ps.map(param)
}

fn param_out(p: ParamOut) -> HostParamOut {
    match p {
        ParamOut::None | ParamOut::ValueInput | ParamOut::MemrefInput => HostParamOut::None,
        ParamOut::ValueOutput(v) | ParamOut::ValueInout(v) => {
            HostParamOut::Value(protocol::Value {
                a: v.a,
                b: v.b,
                c: v.c,
            })
        }
        ParamOut::MemrefOutput { size, data } | ParamOut::MemrefInout { size, data } => {
            HostParamOut::MemRef { size, bytes: data }
        }
    }
}

/// The protocol's request for `op`.
fn request(op: HostOp) -> Request {
    match op {
        HostOp::OpenSession {
            uuid,
            login,
            client_uuid,
            cancel_id,
            params: ps,
        } => Request::OpenSession {
            uuid: uuid.0,
            login,
            client: client_uuid.0,
            cancel_id,
            params: params(ps),
        },
        HostOp::Invoke {
            session,
            func,
            cancel_id,
            params: ps,
        } => Request::Invoke {
            session,
            func,
            cancel_id,
            params: params(ps),
        },
        HostOp::Cancel { session, cancel_id } => Request::Cancel { session, cancel_id },
        HostOp::CloseSession { session } => Request::CloseSession { session },
    }
}

/// The device's view of a response.
fn reply(r: Response) -> HostReply {
    let (session, ps) = match r.body {
        ResponseBody::OpenSession { session, params } => (session, Some(params)),
        ResponseBody::Invoke { params } => (0, Some(params)),
        ResponseBody::Hello { .. } | ResponseBody::Cancel | ResponseBody::CloseSession => (0, None),
    };
    HostReply {
        id: r.id,
        ret: r.ret,
        ret_origin: r.origin,
        session,
        params: ps.map(|p| p.map(param_out)).unwrap_or_default(),
    }
}

impl AsRawFd for TrustyBackend {
    fn as_raw_fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }
}

impl TeeBackend for TrustyBackend {
    fn restart(&mut self) -> io::Result<()> {
        if self.fresh {
            self.fresh = false;
            return Ok(());
        }
        let (stream, max_memref) = hello(&self.path).map_err(io::Error::other)?;
        self.stream = stream;
        self.max_memref = max_memref;
        self.decoder = FrameDecoder::new();
        Ok(())
    }

    fn send(&mut self, id: u64, op: HostOp) -> io::Result<()> {
        self.stream.write_all(&request(op).encode_frame(id))
    }

    fn replies(&mut self, out: &mut Vec<HostReply>) -> io::Result<()> {
        loop {
            // SAFETY: `buf` is a live, writable buffer of `buf.len()` bytes
            // that recv writes at most that many bytes into; the fd is the
            // stream's, open for the duration of the call.
            let n = unsafe {
                libc::recv(
                    self.stream.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "the Trusty service closed the connection",
                ));
            }
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock => break,
                    io::ErrorKind::Interrupted => continue,
                    _ => return Err(e),
                }
            }
            // 0 < n <= buf.len().
            self.decoder.push(&self.buf[..n as usize]);
        }
        while let Some(body) = self
            .decoder
            .next_body()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
        {
            let r = Response::decode(&body)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            out.push(reply(r));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::unix::net::UnixListener;

    use trusty::tee::proto::{op, origin};

    use super::*;
    use crate::virtio::tee::protocol::Uuid;

    /// A service on a temporary socket that answers HELLO and then runs
    /// `serve` on the connection.
    fn service(
        name: &str,
        serve: impl FnOnce(UnixStream) + Send + 'static,
    ) -> (PathBuf, std::thread::JoinHandle<()>) {
        let path = std::env::temp_dir().join(format!("vtee-{name}-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        let t = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let (id, req) = Request::decode(&read_body(&mut s).unwrap().unwrap()).unwrap();
            assert_eq!(req, Request::Hello { version: 1 });
            let hello = Response {
                id,
                ret: 0,
                origin: origin::TEE,
                body: ResponseBody::Hello {
                    version: 1,
                    max_frame: 4 << 20,
                    max_memref: 1 << 20,
                },
            };
            s.write_all(&hello.encode_frame()).unwrap();
            serve(s);
        });
        (path, t)
    }

    #[test]
    fn operations_and_replies_map_onto_the_protocol() {
        let (path, t) = service("map", |mut s| {
            let (id, req) = Request::decode(&read_body(&mut s).unwrap().unwrap()).unwrap();
            assert_eq!(id, 77);
            assert_eq!(
                req,
                Request::Invoke {
                    session: 3,
                    func: 0,
                    cancel_id: 9,
                    params: [
                        Param::ValueInput(Value { a: 1, b: 2, c: 3 }),
                        Param::ValueOutput,
                        Param::MemrefInput(vec![5; 10]),
                        Param::MemrefOutput { capacity: 10 },
                    ],
                }
            );
            let resp = Response {
                id,
                ret: 0,
                origin: origin::TRUSTED_APP,
                body: ResponseBody::Invoke {
                    params: [
                        ParamOut::ValueInput,
                        ParamOut::ValueOutput(Value { a: 1, b: 2, c: 3 }),
                        ParamOut::MemrefInput,
                        ParamOut::MemrefOutput {
                            size: 10,
                            data: vec![5; 10],
                        },
                    ],
                },
            };
            // Split in two writes: the decoder joins them.
            let frame = resp.encode_frame();
            s.write_all(&frame[..7]).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(50));
            s.write_all(&frame[7..]).unwrap();
            // Then the service goes away.
            let _ = s.read(&mut [0u8; 1]);
        });
        let mut b = TrustyBackend::connect(&path).unwrap();
        assert_eq!(b.max_memref(), 1 << 20);
        b.restart().unwrap();
        let v = protocol::Value { a: 1, b: 2, c: 3 };
        b.send(
            77,
            HostOp::Invoke {
                session: 3,
                func: 0,
                cancel_id: 9,
                params: [
                    HostParam::Value(Direction::Input, v),
                    HostParam::Value(Direction::Output, protocol::Value::default()),
                    HostParam::MemRefIn(vec![5; 10]),
                    HostParam::MemRefOut { capacity: 10 },
                ],
            },
        )
        .unwrap();
        let mut out = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while out.is_empty() {
            b.replies(&mut out).unwrap();
            assert!(std::time::Instant::now() < deadline, "no reply");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(
            out,
            vec![HostReply {
                id: 77,
                ret: 0,
                ret_origin: origin::TRUSTED_APP,
                session: 0,
                params: [
                    HostParamOut::None,
                    HostParamOut::Value(v),
                    HostParamOut::None,
                    HostParamOut::MemRef {
                        size: 10,
                        bytes: vec![5; 10]
                    },
                ],
            }]
        );
        drop(b);
        t.join().unwrap();
        let _ = std::fs::remove_file(&path);
        let _ = op::HELLO;
    }

    #[test]
    fn a_closed_connection_is_an_error_and_a_missing_service_says_what_to_do() {
        let (path, t) = service("closed", drop);
        let mut b = TrustyBackend::connect(&path).unwrap();
        t.join().unwrap();
        let mut out = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let err = loop {
            match b.replies(&mut out) {
                Err(e) => break e,
                Ok(()) => {
                    assert!(std::time::Instant::now() < deadline);
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
        let _ = std::fs::remove_file(&path);
        let e = TrustyBackend::connect(&path).err().unwrap();
        assert!(e.to_string().contains("start trustyd"), "{e}");
        // Unused: a UUID type check that the open maps its fields.
        let r = request(HostOp::OpenSession {
            uuid: Uuid([1; 16]),
            login: 0,
            client_uuid: Uuid([2; 16]),
            cancel_id: 4,
            params: Default::default(),
        });
        assert!(
            matches!(r, Request::OpenSession { uuid, client, cancel_id: 4, .. } if uuid == [1; 16] && client == [2; 16])
        );
    }
}
