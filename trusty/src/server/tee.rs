//! One connection of the host TEE protocol (the VMM's virtio-tee device):
//! `HELLO`, then sessions and invokes (`docs/trusty.md`, "The host TEE
//! protocol"). The reading thread decodes frames and answers the quick
//! operations itself; each invoke runs on its own thread so that a
//! waiting invoke does not hold up a `CANCEL` or other sessions; one
//! writer thread writes every response.
//!
//! **No cycle of waits** (a VMM that reads its replies slowly must not stop
//! this side from reading its requests, or both wait for each other):
//! - the reader thread never waits for the writer: it queues its responses
//!   (`HELLO`, `OPEN_SESSION`, `CANCEL`, `CLOSE_SESSION`, and the invokes
//!   it refuses) in the connection's [`Outbox`] under a lock that is never
//!   held across I/O, and it never waits for an invoke thread (a cancel
//!   only sets flags);
//! - invoke threads wait only for their session's TA, then queue their
//!   response the same way;
//! - only the writer thread waits for the peer (a blocking `write_all`),
//!   and nothing waits for the writer.
//!
//! So the peer not reading stops the writer alone, and its writes always
//! go through. Every queue is bounded: an invoke counts as in flight until
//! its response is written (so at most `max_inflight` invoke responses
//! exist; more invokes are answered `BUSY`), and at most
//! [`MAX_QUEUED_QUICK`] of the reader's responses wait: a peer that leaves
//! more unread is not reading at all, and the connection is closed.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Condvar, Mutex};

use vmstack_log::{guest_info, guest_warn};

use crate::ports::TaKind;
use crate::service::Guest;
use crate::ta::{CancelFlag, GpSession};
use crate::tee::client::read_body;
use crate::tee::proto::{
    login, op, origin, result, Param, Request, Response, ResponseBody, MAX_FRAME, MAX_MEMREF,
    PROTOCOL_VERSION,
};

/// Limits of one TEE connection.
#[derive(Debug, Clone, Copy)]
pub struct TeeLimits {
    /// Open sessions.
    pub max_sessions: usize,
    /// Invokes running at once.
    pub max_inflight: usize,
}

impl Default for TeeLimits {
    fn default() -> Self {
        TeeLimits {
            max_sessions: 32,
            max_inflight: 8,
        }
    }
}

/// The most responses of the reader thread that may wait for the writer.
/// The VMM has at most 128 requests (its queue) and a cancel for each of
/// them outstanding, so it never comes near: a peer past it does not read.
pub const MAX_QUEUED_QUICK: usize = 1024;

/// Who queued a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// The reader thread (counted against [`MAX_QUEUED_QUICK`]).
    Reader,
    /// An invoke thread (in flight until written).
    Invoke,
}

/// Responses waiting for the writer thread.
#[derive(Default)]
struct Queue {
    frames: VecDeque<(Vec<u8>, Source)>,
    /// Frames of [`Source::Reader`] in `frames`.
    quick: usize,
    /// The reader ended: the writer writes what is queued, then stops.
    closing: bool,
}

/// The connection's outgoing queue (see the module's invariant).
#[derive(Default)]
struct Outbox {
    queue: Mutex<Queue>,
    ready: Condvar,
}

impl Outbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `frame`; never waits. False (nothing queued) when the reader
    /// already has [`MAX_QUEUED_QUICK`] responses waiting.
    fn push(&self, frame: Vec<u8>, source: Source) -> bool {
        let mut q = self.lock();
        if source == Source::Reader {
            if q.quick >= MAX_QUEUED_QUICK {
                return false;
            }
            q.quick += 1;
        }
        q.frames.push_back((frame, source));
        drop(q);
        self.ready.notify_one();
        true
    }

    /// The writer's next frame; `None` once closing and empty.
    fn next(&self) -> Option<(Vec<u8>, Source)> {
        let mut q = self.lock();
        loop {
            if let Some((frame, source)) = q.frames.pop_front() {
                if source == Source::Reader {
                    q.quick -= 1;
                }
                return Some((frame, source));
            }
            if q.closing {
                return None;
            }
            q = self.ready.wait(q).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn close(&self) {
        self.lock().closing = true;
        self.ready.notify_one();
    }
}

/// The writer thread: writes the queued responses in order until the
/// reader ended and the queue is empty. After a failed write (the peer is
/// gone) it only empties the queue.
fn write_responses(outbox: &Outbox, inflight: &AtomicUsize, mut stream: UnixStream, guest: &str) {
    let mut broken = false;
    while let Some((frame, source)) = outbox.next() {
        if !broken {
            if let Err(e) = stream.write_all(&frame) {
                tracing::debug!(guest, "tee: response not sent: {e}");
                broken = true;
            }
        }
        if source == Source::Invoke {
            inflight.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// How long one response may wait for the peer to read.
const WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// How long a refused peer's queued answers may take to be read.
const REFUSED_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// The peer leaves too many responses unread.
fn not_reading() -> io::Error {
    io::Error::other(format!(
        "the peer leaves more than {MAX_QUEUED_QUICK} responses unread; closing"
    ))
}

/// An open session.
struct Session {
    ta: TaKind,
    gp: Mutex<Box<dyn GpSession>>,
    /// Running invokes by cancel id.
    running: Mutex<HashMap<u32, Vec<Arc<CancelFlag>>>>,
}

impl Session {
    fn cancel(&self, cancel_id: Option<u32>) {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        for (id, flags) in running.iter() {
            if cancel_id.is_none_or(|c| c == *id) {
                flags.iter().for_each(|f| f.cancel());
            }
        }
    }
}

/// The connection's shared state.
struct Conn {
    guest: Arc<Guest>,
    limits: TeeLimits,
    outbox: Arc<Outbox>,
    sessions: Mutex<HashMap<u32, Arc<Session>>>,
    next_session: Mutex<u32>,
    inflight: Arc<AtomicUsize>,
}

impl Conn {
    /// Queues a response of the reader thread; never waits. An error when
    /// the peer leaves too many unread (the connection ends).
    fn send(&self, r: &Response) -> io::Result<()> {
        if self.outbox.push(r.encode_frame(), Source::Reader) {
            Ok(())
        } else {
            let e = not_reading();
            guest_info!("tee: guest {}: {e}", self.guest.name());
            Err(e)
        }
    }

    fn session(&self, id: u32) -> Option<Arc<Session>> {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }

    fn open_session(
        &self,
        id: u64,
        uuid: [u8; 16],
        login_method: u32,
        params: &[Param; 4],
    ) -> Response {
        let fail = |ret| Response::error(id, op::OPEN_SESSION, ret, origin::TEE, Some(params));
        if !login::is_known(login_method) {
            return fail(result::BAD_PARAMETERS);
        }
        let Some(ta) = TaKind::from_uuid(&uuid) else {
            return fail(result::ITEM_NOT_FOUND);
        };
        if params.iter().any(|p| *p != Param::None) {
            return fail(result::BAD_PARAMETERS);
        }
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if sessions.len() >= self.limits.max_sessions {
            return fail(result::BUSY);
        }
        let mut next = self.next_session.lock().unwrap_or_else(|p| p.into_inner());
        *next = next.checked_add(1).unwrap_or(1);
        while sessions.contains_key(&*next) {
            *next = next.checked_add(1).unwrap_or(1);
        }
        let sid = *next;
        sessions.insert(
            sid,
            Arc::new(Session {
                ta,
                gp: Mutex::new(self.guest.gp_session(ta)),
                running: Mutex::new(HashMap::new()),
            }),
        );
        tracing::debug!(
            guest = self.guest.name(),
            session = sid,
            port = ta.port_name(),
            login_method,
            "tee: session opened"
        );
        Response {
            id,
            ret: result::SUCCESS,
            origin: origin::TRUSTED_APP,
            body: ResponseBody::OpenSession {
                session: sid,
                params: Default::default(),
            },
        }
    }

    /// Starts an invoke on its own thread, or answers at once. The invoke
    /// stays in flight until the writer wrote its response.
    fn invoke(
        self: &Arc<Self>,
        id: u64,
        sid: u32,
        func: u32,
        cancel_id: u32,
        params: [Param; 4],
    ) -> io::Result<()> {
        let Some(session) = self.session(sid) else {
            return self.send(&Response::error(
                id,
                op::INVOKE,
                result::ITEM_NOT_FOUND,
                origin::TEE,
                Some(&params),
            ));
        };
        if self.inflight.fetch_add(1, Ordering::AcqRel) >= self.limits.max_inflight {
            self.inflight.fetch_sub(1, Ordering::AcqRel);
            return self.send(&Response::error(
                id,
                op::INVOKE,
                result::BUSY,
                origin::TEE,
                Some(&params),
            ));
        }
        // Registered before the thread starts: a CANCEL read right after
        // this INVOKE finds it.
        let flag = Arc::new(CancelFlag::new());
        session
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(cancel_id)
            .or_default()
            .push(flag.clone());
        let conn = self.clone();
        let busy = Response::error(id, op::INVOKE, result::BUSY, origin::TEE, Some(&params));
        let worker = move || {
            let r = {
                let mut gp = session.gp.lock().unwrap_or_else(|p| p.into_inner());
                gp.invoke(func, &params, &flag)
            };
            {
                let mut running = session.running.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(v) = running.get_mut(&cancel_id) {
                    v.retain(|f| !Arc::ptr_eq(f, &flag));
                    if v.is_empty() {
                        running.remove(&cancel_id);
                    }
                }
            }
            tracing::trace!(
                session = sid,
                port = session.ta.port_name(),
                func,
                ret = r.ret,
                "tee: invoke done"
            );
            let frame = Response {
                id,
                ret: r.ret,
                origin: r.origin,
                body: ResponseBody::Invoke { params: r.params },
            }
            .encode_frame();
            // Never refused: invoke responses are bounded by max_inflight.
            conn.outbox.push(frame, Source::Invoke);
        };
        if let Err(e) = sandbox::thread::spawn("tee-invoke", worker) {
            guest_warn!("tee: no thread for an invoke: {e}");
            self.inflight.fetch_sub(1, Ordering::AcqRel);
            return self.send(&busy);
        }
        Ok(())
    }

    fn close_all(&self) {
        let sessions =
            std::mem::take(&mut *self.sessions.lock().unwrap_or_else(|p| p.into_inner()));
        for s in sessions.values() {
            s.cancel(None);
        }
    }
}

/// Serves one TEE connection of `guest` until it ends. Protocol errors
/// (a frame that does not decode, a first frame other than `HELLO`) end
/// the connection and every session on it.
///
/// The responses go out through a writer thread (`tee-writer`), which ends
/// once it has written what was queued when the reading ended (or the peer
/// went away); it is joined before this returns (see the end of the
/// function for the bounds).
pub fn serve(stream: UnixStream, guest: &Arc<Guest>, limits: TeeLimits) -> io::Result<()> {
    // A peer that reads nothing for this long loses the connection (the
    // VMM's backend reads whenever its socket is readable).
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let mut reader = stream.try_clone()?;
    let outbox = Arc::new(Outbox::default());
    let inflight = Arc::new(AtomicUsize::new(0));
    // The writer drops `written` when it ends.
    let (written, writer_ended) = std::sync::mpsc::channel::<()>();
    let writer = {
        let (outbox, inflight) = (outbox.clone(), inflight.clone());
        let name = guest.name().to_string();
        sandbox::thread::spawn("tee-writer", move || {
            let _written = written;
            write_responses(&outbox, &inflight, stream, &name);
        })?
    };
    let conn = Arc::new(Conn {
        guest: guest.clone(),
        limits,
        outbox,
        sessions: Mutex::new(HashMap::new()),
        next_session: Mutex::new(0),
        inflight,
    });
    let result = serve_frames(&conn, &mut reader);
    conn.close_all();
    conn.outbox.close();
    // The writer delivers what is queued (a refusal's answer included),
    // then ends. A peer that closed its sending side gets up to the write
    // timeout for it; a refused peer or one that broke the protocol
    // [`REFUSED_GRACE`], after which the shutdown wakes a writer blocked
    // on it (EPIPE: it drains its queue and ends). The connection's slot is
    // held until then, so no writer outlives its connection.
    let grace = match result {
        Ok(Ended::PeerDone) => WRITE_TIMEOUT,
        _ => REFUSED_GRACE,
    };
    if writer_ended.recv_timeout(grace) == Err(RecvTimeoutError::Timeout) {
        let _ = reader.shutdown(std::net::Shutdown::Both);
    }
    let _ = writer.join();
    result.map(|_| ())
}

/// How the reading of a connection ended without an I/O error.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// The peer closed its sending side: it may still read what is queued.
    PeerDone,
    /// This side refused the peer (a protocol error): nothing more for it.
    Refused,
}

fn serve_frames(conn: &Arc<Conn>, reader: &mut UnixStream) -> io::Result<Ended> {
    let name = conn.guest.name().to_string();
    let mut hello = false;
    loop {
        let body = match read_body(reader) {
            Ok(Some(b)) => b,
            Ok(None) => return Ok(Ended::PeerDone),
            Err(crate::tee::ClientError::Io(e)) => return Err(e),
            Err(e) => {
                guest_info!("tee: guest {name}: {e}; closing");
                return Ok(Ended::Refused);
            }
        };
        let (id, req) = match Request::decode(&body) {
            Ok(r) => r,
            Err(e) => {
                guest_info!("tee: guest {name}: undecodable frame ({e}); closing");
                return Ok(Ended::Refused);
            }
        };
        if !hello {
            match req {
                Request::Hello { version } if version == PROTOCOL_VERSION => {
                    hello = true;
                    conn.send(&Response::error(
                        id,
                        op::HELLO,
                        result::SUCCESS,
                        origin::TEE,
                        None,
                    ))?;
                    continue;
                }
                Request::Hello { version } => {
                    guest_info!("tee: guest {name}: unsupported protocol version {version}");
                    conn.send(&Response {
                        id,
                        ret: result::NOT_SUPPORTED,
                        origin: origin::TEE,
                        body: ResponseBody::Hello {
                            version: PROTOCOL_VERSION,
                            max_frame: MAX_FRAME as u32,
                            max_memref: MAX_MEMREF as u32,
                        },
                    })?;
                    return Ok(Ended::Refused);
                }
                _ => {
                    guest_info!("tee: guest {name}: first frame is not HELLO; closing");
                    return Ok(Ended::Refused);
                }
            }
        }
        match req {
            Request::Hello { .. } => {
                conn.send(&Response::error(
                    id,
                    op::HELLO,
                    result::BAD_STATE,
                    origin::TEE,
                    None,
                ))?;
            }
            Request::OpenSession {
                uuid,
                login,
                client: _,
                cancel_id: _,
                params,
            } => conn.send(&conn.open_session(id, uuid, login, &params))?,
            Request::Invoke {
                session,
                func,
                cancel_id,
                params,
            } => conn.invoke(id, session, func, cancel_id, params)?,
            Request::Cancel { session, cancel_id } => {
                let ret = match conn.session(session) {
                    Some(s) => {
                        s.cancel(Some(cancel_id));
                        result::SUCCESS
                    }
                    None => result::ITEM_NOT_FOUND,
                };
                conn.send(&Response::error(id, op::CANCEL, ret, origin::TEE, None))?;
            }
            Request::CloseSession { session } => {
                let removed = conn
                    .sessions
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&session);
                let ret = match removed {
                    Some(s) => {
                        s.cancel(None);
                        result::SUCCESS
                    }
                    None => result::ITEM_NOT_FOUND,
                };
                conn.send(&Response::error(
                    id,
                    op::CLOSE_SESSION,
                    ret,
                    origin::TEE,
                    None,
                ))?;
            }
        }
    }
}

#[cfg(test)]
mod tests;
