//! The device's backend for vmstack's Trusty service: the host TEE protocol
//! (`docs/trusty.md`) on the guest's TEE socket, with the codec of the
//! `trusty` crate (`trusty::tee`, built without the service).
//!
//! One connection per activation: the first activation uses the connection
//! made (and greeted with `HELLO`) when the VMM started, so a missing
//! service is a start-up error; every later activation connects again,
//! which makes the service close the sessions of the old connection.
//!
//! The connection never blocks the device's worker: the socket is
//! non-blocking; requests are encoded whole into an outgoing buffer that
//! is written as far as the socket takes it (again when the event loop says
//! it is writable), and replies are read whenever it is readable, whatever
//! is still queued. The buffer is bounded: it takes new requests only while
//! it holds less than [`OUT_SOFT_LIMIT`] bytes ([`TeeBackend::has_room`]),
//! and the worker leaves the guest's chains in the ring until it has room.
//! Frames go out whole and in order, so a partial write only delays the
//! rest of a frame; a failed write ends the connection. The greeting (connect,
//! `HELLO`, its answer) is bounded by [`HELLO_TIMEOUT`]: a hung service is an
//! error, not a hung vCPU.

use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use trusty::tee::{
    FrameDecoder, Param, ParamOut, Request, Response, ResponseBody, Value, PROTOCOL_VERSION,
};

use super::backend::{HostOp, HostParam, HostParamOut, HostReply, TeeBackend};
use super::protocol::{self, Direction, NUM_PARAMS};
use crate::virtio::vsock::unix::{connect_nonblocking, recv_with};

/// The longest the greeting may take: connecting (a service whose backlog
/// is full), writing `HELLO` and reading its answer. It runs on the thread
/// that activates the device (a vCPU) or at start-up.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(2);

/// The outgoing buffer takes new requests while it holds less than this;
/// so it never holds more than this plus what one guest chain produces
/// (one request of at most `trusty::tee::MAX_FRAME`, or a close's cancels).
pub const OUT_SOFT_LIMIT: usize = 2 << 20;

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
    /// The service did not accept the connection or did not answer `HELLO`
    /// within [`HELLO_TIMEOUT`].
    #[error("the Trusty service at {path} did not {what} within {} ms: is trustyd hung?", after.as_millis())]
    Timeout {
        /// The TEE socket.
        path: PathBuf,
        /// What it did not do in time.
        what: &'static str,
        /// The time it had.
        after: Duration,
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
    /// Whole frames not yet taken by the socket, from `out_pos`.
    out: Vec<u8>,
    out_pos: usize,
}

impl TrustyBackend {
    /// Connects to the guest's TEE socket `path` and greets the service.
    pub fn connect(path: &Path) -> Result<Self, TrustyError> {
        let (stream, max_memref) = hello(path, HELLO_TIMEOUT)?;
        Ok(Self {
            path: path.to_path_buf(),
            stream,
            decoder: FrameDecoder::new(),
            fresh: true,
            max_memref,
            buf: vec![0; 64 * 1024],
            out: Vec::new(),
            out_pos: 0,
        })
    }

    /// The largest memory reference the service takes (from `HELLO`).
    pub fn max_memref(&self) -> u32 {
        self.max_memref
    }

    /// Bytes queued for the service.
    fn queued(&self) -> usize {
        self.out.len() - self.out_pos
    }
}

/// Waits at most until `deadline` for `events` on `stream`; false when the
/// deadline passed.
fn wait_for(stream: &UnixStream, events: libc::c_short, deadline: Instant) -> io::Result<bool> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        let mut fd = libc::pollfd {
            fd: stream.as_raw_fd(),
            events,
            revents: 0,
        };
        let ms = libc::c_int::try_from(left.as_millis().max(1)).unwrap_or(libc::c_int::MAX);
        // SAFETY: `fd` is one valid pollfd for the duration of the call.
        let rc = unsafe { libc::poll(&mut fd, 1, ms) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if rc > 0 {
            return Ok(true);
        }
    }
}

/// Sleeps `d` with `poll` (the threads that greet the service may poll
/// but not sleep).
fn pause(d: Duration) {
    let ms = libc::c_int::try_from(d.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: no descriptors: poll only waits.
    unsafe { libc::poll(std::ptr::null_mut(), 0, ms) };
}

/// Connects to `path` and exchanges `HELLO`, all within `timeout`; the
/// stream comes back non-blocking.
fn hello(path: &Path, timeout: Duration) -> Result<(UnixStream, u32), TrustyError> {
    let deadline = Instant::now() + timeout;
    let connect = |source| TrustyError::Connect {
        path: path.to_path_buf(),
        source,
    };
    let refused = |why: String| TrustyError::Hello {
        path: path.to_path_buf(),
        why,
    };
    let late = |what| TrustyError::Timeout {
        path: path.to_path_buf(),
        what,
        after: timeout,
    };
    // A full backlog (the service does not accept) is `WouldBlock`: retry
    // until the deadline.
    let stream = loop {
        match connect_nonblocking(path) {
            Ok(s) => break s,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Err(late("accept the connection"));
                }
                pause(Duration::from_millis(10));
            }
            Err(e) => return Err(connect(e)),
        }
    };
    // Only trustyd (an allowed uid) may take the guest's TEE traffic, not
    // whoever bound the path first.
    sandbox::socket::check_peer(&stream).map_err(|e| refused(e.to_string()))?;
    let frame = Request::Hello {
        version: PROTOCOL_VERSION,
    }
    .encode_frame(0);
    let mut sent = 0;
    while sent < frame.len() {
        match (&stream).write(&frame[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if !wait_for(&stream, libc::POLLOUT, deadline).map_err(connect)? {
                    return Err(late("take HELLO"));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(connect(e)),
        }
    }
    let mut decoder = FrameDecoder::new();
    let mut buf = [0u8; 256];
    let body = loop {
        if let Some(body) = decoder.next_body().map_err(|e| refused(e.to_string()))? {
            break body;
        }
        match recv(&stream, &mut buf) {
            Ok(0) => return Err(refused("the connection closed".into())),
            Ok(n) => decoder.push(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if !wait_for(&stream, libc::POLLIN, deadline).map_err(connect)? {
                    return Err(late("answer HELLO"));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(refused(e.to_string())),
        }
    };
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

/// One non-blocking read of `stream` into `buf`.
fn recv(stream: &UnixStream, buf: &mut [u8]) -> io::Result<usize> {
    recv_with(stream, buf, libc::MSG_DONTWAIT)
}

/// One non-blocking write of `buf` to `stream` (no `SIGPIPE` if the service
/// is gone).
fn send(stream: &UnixStream, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a live buffer of `buf.len()` bytes that send only
    // reads; the fd is the stream's, open for the duration of the call.
    let n = unsafe {
        libc::send(
            stream.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
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
        // The old connection ends first, whether or not a new one comes:
        // its sessions must not stay open in the service.
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        let (stream, max_memref) = hello(&self.path, HELLO_TIMEOUT).map_err(io::Error::other)?;
        self.stream = stream;
        self.max_memref = max_memref;
        self.decoder = FrameDecoder::new();
        // The new connection starts at a frame boundary.
        self.out.clear();
        self.out_pos = 0;
        Ok(())
    }

    fn send(&mut self, id: u64, op: HostOp) -> io::Result<()> {
        self.out.extend_from_slice(&request(op).encode_frame(id));
        self.flush()
    }

    fn flush(&mut self) -> io::Result<()> {
        while self.out_pos < self.out.len() {
            match send(&self.stream, &self.out[self.out_pos..]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "the Trusty service's connection takes no bytes",
                    ))
                }
                Ok(n) => self.out_pos += n,
                Err(e) => match e.kind() {
                    io::ErrorKind::WouldBlock => break,
                    io::ErrorKind::Interrupted => {}
                    _ => return Err(e),
                },
            }
        }
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        } else if self.out_pos >= self.out.len() / 2 {
            // Keep the buffer from growing by what was already sent.
            self.out.drain(..self.out_pos);
            self.out_pos = 0;
        }
        Ok(())
    }

    fn wants_write(&self) -> bool {
        self.queued() > 0
    }

    fn has_room(&self) -> bool {
        self.queued() < OUT_SOFT_LIMIT
    }

    fn replies(&mut self, out: &mut Vec<HostReply>) -> io::Result<()> {
        loop {
            match recv(&self.stream, &mut self.buf) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionReset,
                        "the Trusty service closed the connection",
                    ))
                }
                Ok(n) => self.decoder.push(&self.buf[..n]),
                Err(e) => match e.kind() {
                    io::ErrorKind::WouldBlock => break,
                    io::ErrorKind::Interrupted => {}
                    _ => return Err(e),
                },
            }
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
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::UnixListener;

    use trusty::tee::client::read_body;

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

    #[test]
    fn a_service_that_does_not_answer_hello_is_a_timeout_not_a_hang() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hung.sock");
        // Listens (the kernel accepts into the backlog) but never answers.
        let listener = UnixListener::bind(&path).unwrap();
        let started = std::time::Instant::now();
        let e = hello(&path, Duration::from_millis(200)).err().unwrap();
        let took = started.elapsed();
        assert!(matches!(e, TrustyError::Timeout { .. }), "{e}");
        assert!(
            e.to_string().contains("did not answer HELLO within 200 ms"),
            "{e}"
        );
        assert!(took >= Duration::from_millis(200), "{took:?}");
        assert!(took < Duration::from_secs(2), "{took:?}");
        drop(listener);
    }

    #[test]
    fn a_socket_another_uid_listens_on_is_refused_before_hello() {
        // SAFETY: plain credential query.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root to listen as another uid");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        let path = dir.path().join("squatted.sock");
        let (ready_r, ready_w) = std::os::unix::net::UnixStream::pair().unwrap();
        // A squatter of uid 4242 binds the path first and listens.
        // SAFETY: the child makes plain system calls and _exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // Only the parent's end may keep the pair open.
            drop(ready_r);
            // SAFETY: credential changes with integer arguments.
            let switched = unsafe {
                libc::setresgid(4242, 4242, 4242) == 0 && libc::setresuid(4242, 4242, 4242) == 0
            };
            let listener = UnixListener::bind(&path);
            let ok = switched && listener.is_ok();
            let _ = (&ready_w).write_all(&[u8::from(ok)]);
            // Until the parent has tried (it closes its end).
            let _ = (&ready_w).read(&mut [0u8; 1]);
            // SAFETY: leave the child.
            unsafe { libc::_exit(0) };
        }
        let mut ok = [0u8];
        (&ready_r).read_exact(&mut ok).unwrap();
        assert_eq!(ok, [1], "the squatter is listening");
        let e = hello(&path, Duration::from_secs(5)).err().unwrap();
        drop(ready_r);
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(matches!(e, TrustyError::Hello { .. }), "{e}");
        assert!(e.to_string().contains("peer uid 4242"), "{e}");
    }

    #[test]
    fn queued_requests_wait_for_a_slow_service_and_arrive_whole() {
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let (got_tx, got) = std::sync::mpsc::channel::<(u64, Request)>();
        let (path, t) = service("slow", move |mut s| {
            // Reads nothing until told to, then four frames.
            let _ = wait.recv();
            for _ in 0..4 {
                let body = read_body(&mut s).unwrap().unwrap();
                got_tx.send(Request::decode(&body).unwrap()).unwrap();
            }
        });
        let mut b = TrustyBackend::connect(&path).unwrap();
        b.restart().unwrap();
        let invoke = |i: u8| HostOp::Invoke {
            session: 1,
            func: 0,
            cancel_id: 0,
            params: [
                HostParam::MemRefIn(vec![i; 1 << 20]),
                HostParam::None,
                HostParam::None,
                HostParam::None,
            ],
        };
        // A small send buffer, so that the 4 MiB cannot all fit in the
        // socket whatever the host's default.
        let small: libc::c_int = 64 * 1024;
        // SAFETY: setsockopt on the backend's live socket with a valid
        // c_int option value and its size.
        let rc = unsafe {
            libc::setsockopt(
                b.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                (&small as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0);
        let started = std::time::Instant::now();
        for i in 0..4u8 {
            b.send(u64::from(i), invoke(i)).unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "send waited for the service"
        );
        assert!(b.wants_write(), "the socket cannot hold 4 MiB");
        assert!(!b.has_room(), "over the bound: the worker takes no chain");
        go.send(()).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while b.wants_write() {
            b.flush().unwrap();
            assert!(std::time::Instant::now() < deadline, "never drained");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(b.has_room());
        for i in 0..4u8 {
            let (id, req) = got.recv_timeout(Duration::from_secs(5)).unwrap();
            assert_eq!(id, u64::from(i), "in order");
            let Request::Invoke { params, .. } = req else {
                panic!("{req:?}");
            };
            assert_eq!(params[0], Param::MemrefInput(vec![i; 1 << 20]), "whole");
        }
        t.join().unwrap();
        let _ = std::fs::remove_file(&path);
    }
}
