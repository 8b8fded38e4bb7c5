//! An in-process TEE service for the device's tests: the echo TA of
//! `docs/trusty.md` (func 0 ECHO, func 1 WAIT until cancelled) behind an
//! eventfd, with a handle to watch and break the connection.

use std::collections::{HashSet, VecDeque};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};

use vmm_sys_util::eventfd::EventFd;

use super::backend::{HostOp, HostParamOut, HostReply, TeeBackend};
use super::echo::echo;
use super::protocol::{origin, result, Uuid, NUM_PARAMS};

/// The echo TA's UUID (`com.android.ipc-unittest.srv.echo`).
pub const ECHO_UUID: Uuid = Uuid([
    0xb4, 0x27, 0x0f, 0x96, 0x0a, 0xcb, 0x5e, 0x22, 0x88, 0xf7, 0x2e, 0xa9, 0x45, 0xe7, 0x26, 0x54,
]);

/// What the service saw and what it is told to do.
#[derive(Default)]
pub struct State {
    /// Every operation received, in order.
    pub ops: Vec<HostOp>,
    /// Restarts (activations).
    pub restarts: usize,
    /// Fail every `send` and `replies` from now on.
    pub broken: bool,
    /// The outgoing queue is full: no room for new chains.
    pub full: bool,
    replies: VecDeque<HostReply>,
    next_session: u32,
    sessions: HashSet<u32>,
    /// WAIT invokes not answered yet: `(id, session, cancel_id)`.
    waiting: Vec<(u64, u32, u32)>,
}

/// The test's view of the service.
#[derive(Clone)]
pub struct Handle {
    state: Arc<Mutex<State>>,
    wake: Arc<EventFd>,
}

impl Handle {
    /// The service's state.
    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Breaks the connection and wakes the device, as a service that dies.
    pub fn break_connection(&self) {
        self.state().broken = true;
        self.wake.write(1).expect("eventfd");
    }
}

/// The service end the device owns.
pub struct EchoService {
    state: Handle,
    event: EventFd,
}

impl EchoService {
    /// A service and a handle on it.
    pub fn new() -> (Box<Self>, Handle) {
        let event = EventFd::new(libc::EFD_NONBLOCK).expect("eventfd");
        let state = Handle {
            state: Arc::default(),
            wake: Arc::new(event.try_clone().expect("eventfd clone")),
        };
        let service = Self {
            state: state.clone(),
            event,
        };
        (Box::new(service), state)
    }

    fn reply(&self, st: &mut State, id: u64, ret: u32, origin: u32, session: u32) {
        self.reply_with(st, id, ret, origin, session, Default::default());
    }

    fn reply_with(
        &self,
        st: &mut State,
        id: u64,
        ret: u32,
        ret_origin: u32,
        session: u32,
        params: [HostParamOut; NUM_PARAMS],
    ) {
        st.replies.push_back(HostReply {
            id,
            ret,
            ret_origin,
            session,
            params,
        });
        self.event.write(1).expect("eventfd");
    }
}

impl AsRawFd for EchoService {
    fn as_raw_fd(&self) -> RawFd {
        self.event.as_raw_fd()
    }
}

impl TeeBackend for EchoService {
    fn restart(&mut self) -> io::Result<()> {
        let mut st = self.state.state();
        st.restarts += 1;
        st.sessions.clear();
        st.waiting.clear();
        st.replies.clear();
        Ok(())
    }

    fn send(&mut self, id: u64, op: HostOp) -> io::Result<()> {
        let state = self.state.clone();
        let mut st = state.state();
        if st.broken {
            return Err(io::Error::from(io::ErrorKind::BrokenPipe));
        }
        st.ops.push(op.clone());
        match op {
            HostOp::OpenSession { uuid, .. } if uuid == ECHO_UUID => {
                st.next_session += 1;
                let session = st.next_session;
                st.sessions.insert(session);
                self.reply(&mut st, id, 0, origin::TRUSTED_APP, session);
            }
            HostOp::OpenSession { .. } => {
                self.reply(&mut st, id, result::ITEM_NOT_FOUND, origin::TEE, 0);
            }
            HostOp::Invoke { session, .. } if !st.sessions.contains(&session) => {
                self.reply(&mut st, id, result::ITEM_NOT_FOUND, origin::TEE, 0);
            }
            HostOp::Invoke {
                session,
                func: 1,
                cancel_id,
                ..
            } => st.waiting.push((id, session, cancel_id)),
            HostOp::Invoke { params, .. } => {
                let (ret, out) = echo(&params);
                self.reply_with(&mut st, id, ret, origin::TRUSTED_APP, 0, out);
            }
            HostOp::Cancel { session, cancel_id } => {
                self.reply(&mut st, id, 0, origin::TEE, 0);
                let (done, keep): (Vec<_>, Vec<_>) = st
                    .waiting
                    .drain(..)
                    .partition(|&(_, s, c)| s == session && c == cancel_id);
                st.waiting = keep;
                for (wid, _, _) in done {
                    self.reply(&mut st, wid, result::CANCEL, origin::TEE, 0);
                }
            }
            HostOp::CloseSession { session } => {
                st.sessions.remove(&session);
                self.reply(&mut st, id, 0, origin::TEE, 0);
            }
        }
        Ok(())
    }

    fn wants_write(&self) -> bool {
        self.state.state().full
    }

    fn has_room(&self) -> bool {
        !self.state.state().full
    }

    fn replies(&mut self, out: &mut Vec<HostReply>) -> io::Result<()> {
        let _ = self.event.read();
        let mut st = self.state.state();
        if st.broken {
            return Err(io::Error::from(io::ErrorKind::ConnectionReset));
        }
        out.extend(st.replies.drain(..));
        Ok(())
    }
}
