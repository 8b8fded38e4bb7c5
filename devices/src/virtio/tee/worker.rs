//! The virtio-tee worker: parses each request chain, keeps the registered
//! regions and the open sessions, forwards open-session, invoke, cancel and
//! close to the TEE service, and completes a chain when its answer is
//! there. Requests complete in any order: a TA that takes its time holds
//! back neither other sessions nor cancels and closes.
//!
//! Every chain popped is returned: at once for malformed requests (their
//! status), registrations, unregistrations and cancels; on the service's
//! reply for the others. The worker holds at most the queue size of chains,
//! and forwards at most one cancel per pending invoke, so what it keeps is
//! bounded by the queue size.
//!
//! The worker never waits for the service: operations go into the
//! backend's bounded outgoing queue, which drains when the connection is
//! writable (the worker watches for that only while something is queued),
//! and replies are read whenever the connection is readable. While the
//! outgoing queue is full the worker takes no new chain: they stay in the
//! avail ring (back-pressure to the guest) until the queue has room again.
//!
//! Past 800 lines only with its unit tests (the worker itself is ~760).

use std::collections::HashMap;
use std::io;
use std::sync::Arc;

use virtio_queue::desc::split::Descriptor;
use virtio_queue::{Queue, QueueT};
use vmm_sys_util::epoll::EventSet;

use super::backend::{HostOp, HostParam, HostParamOut, HostReply, TeeBackend};
use super::chain::{self, ResponseBuffer, Segment};
use super::protocol::{
    Direction, Invoke, MemRef, OpResponse, OpenSession, Param, Request, Response, Status,
    NUM_PARAMS,
};
use super::shm::{self, queue_ranges, GuestRange, ShmTable};
use super::Limits;
use crate::log_limit::LoggedKinds;
use crate::virtio::event_loop::event_token;
use crate::virtio::{GuestMemoryMmap, Interrupt, WaitContext, Worker};

event_token! {
    /// The worker's own event source.
    pub enum Token {
        /// The service's connection has replies (or closed), or takes the
        /// queued operations.
        Backend,
    }
}

/// Kinds of trouble, each logged once per activation.
#[derive(Debug, Clone, Copy)]
enum Problem {
    DroppedChain = 0,
    Rejected = 1,
    Shm = 2,
    Reply = 3,
    UsedRing = 4,
}

/// A chain waiting for its answer.
struct Chain {
    head: u16,
    request_id: u64,
    response: ResponseBuffer,
}

/// Memory references the TA writes: the guest segments of each output
/// parameter.
type Outputs = [Option<Vec<Segment>>; NUM_PARAMS];

/// What an operation sent to the service is waiting for.
enum Pending {
    Open {
        chain: Chain,
        params: [Param; NUM_PARAMS],
        outputs: Outputs,
    },
    Invoke {
        chain: Chain,
        session: u32,
        cancel_id: u32,
        cancel_sent: bool,
        params: [Param; NUM_PARAMS],
        outputs: Outputs,
    },
    Close {
        chain: Chain,
        session: u32,
    },
    /// A forwarded cancel: its reply only acknowledges it.
    CancelAck,
}

/// An open session.
#[derive(Default)]
struct Session {
    /// Invokes the service has not answered.
    invokes: usize,
    /// The guest's close request, once it came: no new invokes; the close
    /// goes to the service when `invokes` is 0.
    close: Option<Chain>,
    /// The close went to the service (its answer is pending): the session
    /// takes no invoke and no second close.
    close_sent: bool,
}

impl Session {
    /// Whether the guest asked to close it (sent to the service or not).
    fn closing(&self) -> bool {
        self.close.is_some() || self.close_sent
    }
}

/// Everything the worker owns; the backend goes back to the device when it
/// stops.
pub struct TeeWorker {
    mem: GuestMemoryMmap,
    interrupt: Arc<Interrupt>,
    queue: Queue,
    queue_ranges: [GuestRange; 3],
    limits: Limits,
    shm: ShmTable,
    backend: Box<dyn TeeBackend>,
    /// False once the connection failed: requests for the service get
    /// `SERVICE_ERROR`.
    backend_ok: bool,
    /// What the backend's fd is watched for (empty: not in the wait
    /// context).
    watching: EventSet,
    /// Chains were left in the ring because the backend's outgoing queue
    /// was full: take them when it has room.
    throttled: bool,
    sessions: HashMap<u32, Session>,
    /// Open-session requests the service has not answered (they count
    /// against `max_sessions`).
    opening: usize,
    pending: HashMap<u64, Pending>,
    next_id: u64,
    used: usize,
    descs: Vec<Descriptor>,
    replies: Vec<HostReply>,
    logged: LoggedKinds,
}

impl TeeWorker {
    /// A worker for an activated device; `backend_ok` says whether the
    /// backend's connection was (re)started.
    pub fn new(
        mem: GuestMemoryMmap,
        interrupt: Arc<Interrupt>,
        queue: Queue,
        limits: Limits,
        backend: Box<dyn TeeBackend>,
        backend_ok: bool,
    ) -> Self {
        let queue_ranges = queue_ranges(&queue);
        Self {
            mem,
            interrupt,
            queue,
            queue_ranges,
            limits,
            shm: ShmTable::new(&limits),
            backend,
            backend_ok,
            watching: EventSet::empty(),
            throttled: false,
            sessions: HashMap::new(),
            opening: 0,
            pending: HashMap::new(),
            next_id: 1,
            used: 0,
            descs: Vec::new(),
            replies: Vec::new(),
            logged: LoggedKinds::default(),
        }
    }

    fn log_once(&mut self, problem: Problem, what: std::fmt::Arguments<'_>) {
        crate::guest_warn_first!(self.logged, problem as u32, "virtio-tee: {what}");
    }

    /// Serves the available chains while the backend takes operations;
    /// returns the number popped.
    pub fn process_requests(&mut self) -> usize {
        let mem = self.mem.clone();
        let mut popped = 0;
        self.throttled = false;
        loop {
            if self.backend_ok && !self.backend.has_room() {
                // The rest waits in the ring until the queue drains.
                self.throttled = true;
                break;
            }
            let Some(chain) = self.queue.pop_descriptor_chain(&mem) else {
                break;
            };
            popped += 1;
            let head = chain.head_index();
            self.descs.clear();
            self.descs.extend(chain);
            match chain::parse(&mem, &self.descs, &self.limits) {
                Err(e) => {
                    self.log_once(Problem::DroppedChain, format_args!("chain {head}: {e}"));
                    self.add_used(head, 0);
                }
                Ok(parsed) => {
                    let chain = Chain {
                        head,
                        request_id: parsed.request_id,
                        response: parsed.response,
                    };
                    match parsed.request {
                        Err(e) => {
                            self.log_once(Problem::Rejected, format_args!("request refused: {e}"));
                            self.respond(chain, Response::Status(e.status()));
                        }
                        Ok(request) => self.handle(chain, request),
                    }
                }
            }
        }
        self.notify();
        popped
    }

    /// Writes what the connection takes of the queued operations (its fd
    /// was writable).
    pub fn process_writable(&mut self) {
        if self.backend_ok {
            if let Err(e) = self.backend.flush() {
                self.backend_failed(e);
                self.notify();
            }
        }
    }

    /// Takes the chains left in the ring once the backend has room again
    /// (or failed: they get their status).
    pub fn resume_if_room(&mut self) {
        if self.throttled && (!self.backend_ok || self.backend.has_room()) {
            self.process_requests();
        }
    }

    /// Handles the service's replies (its fd was readable).
    pub fn process_replies(&mut self) {
        let mut replies = std::mem::take(&mut self.replies);
        if self.backend_ok {
            if let Err(e) = self.backend.replies(&mut replies) {
                self.backend_failed(e);
            }
        }
        for reply in replies.drain(..) {
            self.on_reply(reply);
        }
        self.replies = replies;
        self.notify();
    }

    fn handle(&mut self, chain: Chain, request: Request) {
        let answer = match request {
            Request::ShmRegister(reg) => {
                match self.shm.register(&self.mem, reg, &self.queue_ranges) {
                    Ok(shm_id) => Response::Registered { shm_id },
                    Err(e) => self.shm_refused(e),
                }
            }
            Request::ShmUnregister { shm_id } => match self.shm.unregister(shm_id) {
                Ok(()) => Response::Status(Status::Ok),
                Err(e) => self.shm_refused(e),
            },
            Request::Cancel { request_id } => {
                self.cancel(request_id);
                Response::Status(Status::Ok)
            }
            Request::CloseSession { session } => return self.close(chain, session),
            Request::OpenSession(open) => return self.open(chain, open),
            Request::Invoke(invoke) => return self.invoke(chain, invoke),
        };
        self.respond(chain, answer);
    }

    fn shm_refused(&mut self, e: shm::ShmError) -> Response {
        Response::Status(self.shm_status(e))
    }

    fn shm_status(&mut self, e: shm::ShmError) -> Status {
        self.log_once(Problem::Shm, format_args!("shared memory refused: {e}"));
        e.status()
    }

    fn open(&mut self, chain: Chain, open: OpenSession) {
        if !self.backend_ok {
            return self.respond(chain, Response::Status(Status::ServiceError));
        }
        if self.sessions.len() + self.opening >= self.limits.max_sessions as usize {
            return self.respond(chain, Response::Status(Status::NoSpace));
        }
        let (host, outputs) = match self.host_params(&open.params) {
            Ok(p) => p,
            Err(status) => return self.respond(chain, Response::Status(status)),
        };
        let id = self.next_id();
        let op = HostOp::OpenSession {
            uuid: open.uuid,
            login: open.login,
            client_uuid: open.client_uuid,
            cancel_id: id as u32,
            params: host,
        };
        if self.send(id, op) {
            self.opening += 1;
            let params = open.params;
            self.pending.insert(
                id,
                Pending::Open {
                    chain,
                    params,
                    outputs,
                },
            );
        } else {
            self.respond(chain, Response::Status(Status::ServiceError));
        }
    }

    fn invoke(&mut self, chain: Chain, invoke: Invoke) {
        if !self.backend_ok {
            return self.respond(chain, Response::Status(Status::ServiceError));
        }
        let open = self
            .sessions
            .get(&invoke.session)
            .is_some_and(|s| !s.closing());
        if !open {
            return self.respond(chain, Response::Status(Status::NotFound));
        }
        let (host, outputs) = match self.host_params(&invoke.params) {
            Ok(p) => p,
            Err(status) => return self.respond(chain, Response::Status(status)),
        };
        let id = self.next_id();
        let cancel_id = id as u32;
        let op = HostOp::Invoke {
            session: invoke.session,
            func: invoke.func,
            cancel_id,
            params: host,
        };
        if !self.send(id, op) {
            return self.respond(chain, Response::Status(Status::ServiceError));
        }
        if let Some(s) = self.sessions.get_mut(&invoke.session) {
            s.invokes += 1;
        }
        self.pending.insert(
            id,
            Pending::Invoke {
                chain,
                session: invoke.session,
                cancel_id,
                cancel_sent: false,
                params: invoke.params,
                outputs,
            },
        );
    }

    /// Forwards a cancel for the pending invoke the guest sent as
    /// `request_id` (once per invoke; an open session is answered at once
    /// by the service and is not cancelled).
    fn cancel(&mut self, request_id: u64) {
        let targets: Vec<(u32, u32)> = self
            .pending
            .values_mut()
            .filter_map(|p| match p {
                Pending::Invoke {
                    chain,
                    session,
                    cancel_id,
                    cancel_sent,
                    ..
                } if chain.request_id == request_id && !*cancel_sent => {
                    *cancel_sent = true;
                    Some((*session, *cancel_id))
                }
                _ => None,
            })
            .collect();
        for (session, cancel_id) in targets {
            self.send_cancel(session, cancel_id);
        }
    }

    fn send_cancel(&mut self, session: u32, cancel_id: u32) {
        let id = self.next_id();
        if self.send(id, HostOp::Cancel { session, cancel_id }) {
            self.pending.insert(id, Pending::CancelAck);
        }
    }

    fn close(&mut self, chain: Chain, session: u32) {
        match self.sessions.get_mut(&session) {
            Some(s) if !s.closing() => s.close = Some(chain),
            _ => return self.respond(chain, Response::Status(Status::NotFound)),
        }
        // Cancel what still runs on the session; the close follows the last
        // answer.
        let targets: Vec<(u32, u32)> = self
            .pending
            .values_mut()
            .filter_map(|p| match p {
                Pending::Invoke {
                    session: s,
                    cancel_id,
                    cancel_sent,
                    ..
                } if *s == session && !*cancel_sent => {
                    *cancel_sent = true;
                    Some((*s, *cancel_id))
                }
                _ => None,
            })
            .collect();
        for (s, cancel_id) in targets {
            self.send_cancel(s, cancel_id);
        }
        self.close_when_idle(session);
    }

    /// Sends the close of a closing session once nothing runs on it.
    fn close_when_idle(&mut self, session: u32) {
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        if s.invokes > 0 {
            return;
        }
        let Some(chain) = s.close.take() else {
            return;
        };
        s.close_sent = true;
        if !self.backend_ok {
            self.sessions.remove(&session);
            return self.respond(chain, Response::Status(Status::Ok));
        }
        let id = self.next_id();
        if self.send(id, HostOp::CloseSession { session }) {
            self.pending.insert(id, Pending::Close { chain, session });
        } else {
            // The connection is gone, and every session with it.
            self.respond(chain, Response::Status(Status::Ok));
        }
    }

    fn on_reply(&mut self, reply: HostReply) {
        let Some(pending) = self.pending.remove(&reply.id) else {
            self.log_once(
                Problem::Reply,
                format_args!("reply to unknown operation {}", reply.id),
            );
            return;
        };
        match pending {
            Pending::CancelAck => {}
            Pending::Open {
                chain,
                params,
                outputs,
            } => {
                self.opening = self.opening.saturating_sub(1);
                let answer = match self.op_response(&params, &outputs, &reply) {
                    Ok(mut op) if op.ret == 0 => {
                        if reply.session == 0 || self.sessions.contains_key(&reply.session) {
                            self.log_once(
                                Problem::Reply,
                                format_args!("service opened session {} twice", reply.session),
                            );
                            Response::Status(Status::ServiceError)
                        } else {
                            self.sessions.insert(reply.session, Session::default());
                            op.session = reply.session;
                            Response::Op(op)
                        }
                    }
                    Ok(op) => Response::Op(op),
                    Err(status) => Response::Status(status),
                };
                self.respond(chain, answer);
            }
            Pending::Invoke {
                chain,
                session,
                params,
                outputs,
                ..
            } => {
                if let Some(s) = self.sessions.get_mut(&session) {
                    s.invokes = s.invokes.saturating_sub(1);
                }
                let answer = match self.op_response(&params, &outputs, &reply) {
                    Ok(op) => Response::Op(op),
                    Err(status) => Response::Status(status),
                };
                self.respond(chain, answer);
                self.close_when_idle(session);
            }
            Pending::Close { chain, session } => {
                self.sessions.remove(&session);
                if reply.ret != 0 {
                    self.log_once(
                        Problem::Reply,
                        format_args!("service answered close with {:#x}", reply.ret),
                    );
                }
                self.respond(chain, Response::Status(Status::Ok));
            }
        }
    }

    /// The parameters as the service gets them, and the output segments;
    /// reads input memory references from the guest's frames.
    fn host_params(
        &mut self,
        params: &[Param; NUM_PARAMS],
    ) -> Result<([HostParam; NUM_PARAMS], Outputs), Status> {
        let resolved = match self.shm.resolve_params(params) {
            Ok(r) => r,
            Err(e) => return Err(self.shm_status(e)),
        };
        let mut host: [HostParam; NUM_PARAMS] = Default::default();
        let mut outputs: Outputs = Default::default();
        for (i, (p, segs)) in params.iter().zip(resolved).enumerate() {
            host[i] = match (p, segs) {
                (Param::None, _) => HostParam::None,
                (Param::Value(dir, v), _) => HostParam::Value(*dir, *v),
                (Param::MemRef(dir, m), Some(segs)) => {
                    let host = match dir {
                        Direction::Output => HostParam::MemRefOut {
                            // At most max_memref_size, a u32.
                            capacity: u32::try_from(m.size).unwrap_or(u32::MAX),
                        },
                        Direction::Input | Direction::InOut => {
                            let mut bytes = Vec::new();
                            if let Err(e) = shm::read_segments(&self.mem, &segs, &mut bytes) {
                                return Err(self.shm_status(e));
                            }
                            if *dir == Direction::Input {
                                HostParam::MemRefIn(bytes)
                            } else {
                                HostParam::MemRefInOut(bytes)
                            }
                        }
                    };
                    if dir.is_output() {
                        outputs[i] = Some(segs);
                    }
                    host
                }
                // resolve_params resolves every memory reference.
                (Param::MemRef(..), None) => return Err(Status::Invalid),
            };
        }
        Ok((host, outputs))
    }

    /// The guest's answer to an open or invoke: output values, output
    /// memory references written into the guest's frames, sizes.
    fn op_response(
        &mut self,
        params: &[Param; NUM_PARAMS],
        outputs: &Outputs,
        reply: &HostReply,
    ) -> Result<OpResponse, Status> {
        let mut out = *params;
        for i in 0..NUM_PARAMS {
            match (&params[i], &reply.params[i]) {
                (Param::Value(dir, _), HostParamOut::Value(v)) if dir.is_output() => {
                    out[i] = Param::Value(*dir, *v);
                }
                (Param::MemRef(dir, m), HostParamOut::MemRef { size, bytes })
                    if dir.is_output() =>
                {
                    let n = bytes.len().min(*size as usize);
                    if let Some(segs) = &outputs[i] {
                        if let Err(e) = shm::write_segments(&self.mem, segs, &bytes[..n]) {
                            self.log_once(Problem::Shm, format_args!("output not written: {e}"));
                            return Err(Status::Invalid);
                        }
                    }
                    out[i] = Param::MemRef(
                        *dir,
                        MemRef {
                            size: u64::from(*size),
                            ..*m
                        },
                    );
                }
                (p, got) if p.is_output() => {
                    self.log_once(
                        Problem::Reply,
                        format_args!("service answered parameter {i} ({p:?}) with {got:?}"),
                    );
                    return Err(Status::ServiceError);
                }
                _ => {}
            }
        }
        Ok(OpResponse {
            ret: reply.ret,
            ret_origin: reply.ret_origin,
            session: 0,
            params: out,
        })
    }

    fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        id
    }

    /// Sends `op`; false (and the connection marked failed) on an error.
    fn send(&mut self, id: u64, op: HostOp) -> bool {
        match self.backend.send(id, op) {
            Ok(()) => true,
            Err(e) => {
                self.backend_failed(e);
                false
            }
        }
    }

    /// The connection is gone: every waiting chain gets `SERVICE_ERROR`
    /// (closes get OK: the session is gone), every session is forgotten.
    fn backend_failed(&mut self, e: io::Error) {
        if self.backend_ok {
            crate::guest_error!("virtio-tee: the TEE service connection failed: {e}; requests for it get SERVICE_ERROR until the device is reset");
        }
        self.backend_ok = false;
        let pending: Vec<Pending> = self.pending.drain().map(|(_, p)| p).collect();
        for p in pending {
            match p {
                Pending::Open { chain, .. } | Pending::Invoke { chain, .. } => {
                    self.respond(chain, Response::Status(Status::ServiceError));
                }
                Pending::Close { chain, .. } => self.respond(chain, Response::Status(Status::Ok)),
                Pending::CancelAck => {}
            }
        }
        let sessions: Vec<Session> = self.sessions.drain().map(|(_, s)| s).collect();
        for chain in sessions.into_iter().filter_map(|s| s.close) {
            self.respond(chain, Response::Status(Status::Ok));
        }
        self.opening = 0;
    }

    fn respond(&mut self, chain: Chain, answer: Response) {
        let bytes = answer.encode(chain.request_id);
        let used = match chain.response.write(&self.mem, &bytes) {
            Ok(n) => n,
            Err(e) => {
                self.log_once(
                    Problem::DroppedChain,
                    format_args!("response not written: {e}"),
                );
                0
            }
        };
        self.add_used(chain.head, used);
    }

    fn add_used(&mut self, head: u16, len: u32) {
        if let Err(e) = self.queue.add_used(&self.mem, head, len) {
            self.log_once(
                Problem::UsedRing,
                format_args!("cannot return chain {head}: {e:?}"),
            );
        }
        self.used += 1;
    }

    fn notify(&mut self) {
        if self.used > 0 {
            self.used = 0;
            self.interrupt.notify_used(&mut self.queue, &self.mem);
        }
    }

    /// Watches the backend's fd for replies, and for room while operations
    /// are queued; removes it once the connection failed.
    fn rewatch(&mut self, ctx: &WaitContext<Token>) {
        let want = match (self.backend_ok, self.backend.wants_write()) {
            (false, _) => EventSet::empty(),
            (true, false) => EventSet::IN,
            (true, true) => EventSet::IN | EventSet::OUT,
        };
        let fd = self.backend.as_raw_fd();
        match ctx.set_watch(&fd, &mut self.watching, want, Token::Backend) {
            Ok(()) => {}
            Err(e) if want.is_empty() => {
                // Closing the fd removes it anyway.
                self.watching = want;
                self.log_once(
                    Problem::Reply,
                    format_args!("cannot unwatch the service: {e}"),
                );
            }
            Err(e) => {
                // Without the watch the connection cannot be served.
                self.backend_failed(e);
                self.notify();
                self.rewatch(ctx);
            }
        }
    }
}

impl Worker for TeeWorker {
    type Token = Token;
    type Backend = Box<dyn TeeBackend>;
    const NAME: &'static str = "virtio-tee";
    const THREAD_NAME: &'static str = "v_tee";

    fn register(&mut self, ctx: &WaitContext<Token>) -> io::Result<()> {
        if self.backend_ok {
            ctx.add(&self.backend.as_raw_fd(), EventSet::IN, Token::Backend)?;
            self.watching = EventSet::IN;
        }
        Ok(())
    }

    fn on_queue(&mut self, _ctx: &WaitContext<Token>, _index: usize) {
        self.process_requests();
    }

    fn on_event(&mut self, _ctx: &WaitContext<Token>, token: Token, events: EventSet) {
        match token {
            Token::Backend => {
                // Replies first: reading never waits for the queued
                // operations to go out.
                if events.intersects(EventSet::IN | EventSet::HANG_UP | EventSet::ERROR) {
                    self.process_replies();
                }
                if events.contains(EventSet::OUT) {
                    self.process_writable();
                }
            }
        }
    }

    /// Re-arms the backend's watch (writability only while operations are
    /// queued; none once the connection failed).
    fn after_events(&mut self, ctx: &WaitContext<Token>) {
        self.resume_if_room();
        self.rewatch(ctx);
    }

    fn into_backend(self) -> Box<dyn TeeBackend> {
        self.backend
    }
}

#[cfg(test)]
mod tests {
    use vm_memory::{Bytes, GuestAddress};

    use super::*;
    use crate::virtio::tee::protocol::Request;
    use crate::virtio::tee::test_backend::{EchoService, Handle};
    use crate::virtio::test_utils::{guest_memory, DeviceHarness, DATA_START, VRING_DESC_F_WRITE};

    /// A worker on `h`'s queue 0 in front of the echo service.
    fn worker(mem: &GuestMemoryMmap, h: &DeviceHarness) -> (TeeWorker, Handle) {
        let queue = h.context(0).queues.remove(0);
        let (service, handle) = EchoService::new();
        let w = TeeWorker::new(
            mem.clone(),
            h.interrupt.clone(),
            queue,
            Limits::DEFAULT,
            service,
            true,
        );
        (w, handle)
    }

    #[test]
    fn avail_index_far_ahead_does_not_spin() {
        let mem = guest_memory();
        let h = DeviceHarness::new(&mem, 1, 16);
        let (mut w, _handle) = worker(&mem, &h);
        // The guest claims 1000 chains in a queue of 16: nothing can be
        // popped, and the call returns.
        h.queues[0].avail().idx().store(1000);
        assert_eq!(w.process_requests(), 0);
        // The ring repaired, a good request is served.
        h.queues[0].avail().idx().store(0);
        let req = Request::ShmUnregister { shm_id: 1 }.encode(3);
        mem.write_slice(&req, GuestAddress(DATA_START)).unwrap();
        h.post(
            0,
            &[
                (DATA_START, req.len() as u32, 0),
                (DATA_START + 0x1000, 16, VRING_DESC_F_WRITE),
            ],
        );
        assert_eq!(w.process_requests(), 1);
        assert_eq!(h.used_elem(0, 0).1, 16);
    }

    #[test]
    fn a_session_whose_close_went_out_takes_no_second_close_and_no_invoke() {
        use crate::virtio::tee::backend::HostOp;
        use crate::virtio::tee::protocol::{Invoke, OpenSession, Param, Uuid, NUM_PARAMS};
        use crate::virtio::tee::test_backend::ECHO_UUID;

        let mem = guest_memory();
        let h = DeviceHarness::new(&mem, 1, 16);
        let (mut w, handle) = worker(&mem, &h);
        let mut posted = 0u64;
        let mut post = |req: Request| {
            let bytes = req.encode(posted);
            let at = DATA_START + posted * 0x1000;
            mem.write_slice(&bytes, GuestAddress(at)).unwrap();
            h.post(
                0,
                &[
                    (at, bytes.len() as u32, 0),
                    (at + 0x800, 0x800, VRING_DESC_F_WRITE),
                ],
            );
            posted += 1;
        };
        post(Request::OpenSession(OpenSession {
            uuid: ECHO_UUID,
            client_uuid: Uuid::default(),
            login: 0,
            params: [Param::None; NUM_PARAMS],
        }));
        w.process_requests();
        w.process_replies();
        let session = *w.sessions.keys().next().expect("the session opened");
        // The close goes out; a second close and an invoke come before the
        // service's answer (found by the `tee` fuzz target: both went to
        // the service after its close).
        post(Request::CloseSession { session });
        post(Request::CloseSession { session });
        post(Request::Invoke(Invoke {
            session,
            func: 2,
            params: [Param::None; NUM_PARAMS],
        }));
        assert_eq!(w.process_requests(), 3);
        let sent_after_open: Vec<HostOp> = handle.state().ops[1..].to_vec();
        assert!(
            matches!(sent_after_open[..], [HostOp::CloseSession { session: s }] if s == session),
            "the service got {sent_after_open:?}"
        );
        w.process_replies();
        assert!(w.sessions.is_empty());
        assert_eq!(h.queues[0].used().idx().load(), 4, "every chain answered");
    }

    #[test]
    fn chains_wait_in_the_ring_while_the_backend_has_no_room() {
        let mem = guest_memory();
        let h = DeviceHarness::new(&mem, 1, 16);
        let (mut w, handle) = worker(&mem, &h);
        handle.state().full = true;
        for i in 0..3u64 {
            let req = Request::ShmUnregister { shm_id: 1 }.encode(i);
            let at = DATA_START + i * 0x1000;
            mem.write_slice(&req, GuestAddress(at)).unwrap();
            h.post(
                0,
                &[
                    (at, req.len() as u32, 0),
                    (at + 0x800, 16, VRING_DESC_F_WRITE),
                ],
            );
        }
        assert_eq!(w.process_requests(), 0, "nothing taken without room");
        w.resume_if_room();
        assert_eq!(h.queues[0].used().idx().load(), 0);
        handle.state().full = false;
        w.resume_if_room();
        assert_eq!(
            h.queues[0].used().idx().load(),
            3,
            "all taken once there is room"
        );
        // Not throttled any more: nothing is taken twice.
        w.resume_if_room();
        assert_eq!(w.process_requests(), 0);
    }
}
