//! What the device needs from the TEE service behind it: one connection
//! per device that carries operations tagged with an id and returns their
//! replies in any order. The operations and parameters are those of the
//! host TEE protocol of `docs/trusty.md` ("The host TEE protocol"): memory
//! references travel as bytes, which the device reads from and writes to
//! the guest's registered frames.
//!
//! vmstack's service is `trustyd`; its client (`trusty::tee`) is what the
//! VMM will put behind this trait for `--tee` once the `trusty` crate is on
//! main. The device's unit tests use an in-process echo service.

use std::io;
use std::os::fd::AsRawFd;

use super::protocol::{Direction, Uuid, Value, NUM_PARAMS};

/// A parameter as the service gets it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum HostParam {
    /// Unused.
    #[default]
    None,
    /// A value, in any direction.
    Value(Direction, Value),
    /// Input bytes (`MEMREF_INPUT`).
    MemRefIn(Vec<u8>),
    /// Room for output bytes (`MEMREF_OUTPUT`).
    MemRefOut {
        /// Bytes the TA may produce.
        capacity: u32,
    },
    /// Input bytes that the TA may replace (`MEMREF_INOUT`; the capacity is
    /// their length).
    MemRefInOut(Vec<u8>),
}

/// A parameter as the service returns it. Input-only parameters come back
/// as anything (they are not looked at).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum HostParamOut {
    /// Nothing (unused or input-only parameters).
    #[default]
    None,
    /// An output value.
    Value(Value),
    /// An output memory reference: the size produced (or, with
    /// `TEEC_ERROR_SHORT_BUFFER`, needed) and the bytes (at most the
    /// capacity).
    MemRef {
        /// Bytes produced or needed.
        size: u32,
        /// The bytes.
        bytes: Vec<u8>,
    },
}

/// An operation for the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostOp {
    /// Open a session with a TA.
    OpenSession {
        /// The TA.
        uuid: Uuid,
        /// `TEE_IOCTL_LOGIN_*`.
        login: u32,
        /// The client's claimed identity.
        client_uuid: Uuid,
        /// Id for cancelling this operation.
        cancel_id: u32,
        /// Parameters.
        params: [HostParam; NUM_PARAMS],
    },
    /// Invoke a TA command.
    Invoke {
        /// The session (as the service numbered it).
        session: u32,
        /// The TA's command.
        func: u32,
        /// Id for cancelling this operation.
        cancel_id: u32,
        /// Parameters.
        params: [HostParam; NUM_PARAMS],
    },
    /// Cancel the running invoke of `session` with `cancel_id` (best effort).
    Cancel {
        /// The session.
        session: u32,
        /// The invoke's cancel id.
        cancel_id: u32,
    },
    /// Close a session.
    CloseSession {
        /// The session.
        session: u32,
    },
}

/// The service's answer to the operation sent with `id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostReply {
    /// The operation's id.
    pub id: u64,
    /// `TEEC_Result`.
    pub ret: u32,
    /// `TEEC_ORIGIN_*`.
    pub ret_origin: u32,
    /// The new session (open session), else 0.
    pub session: u32,
    /// The parameters (open session, invoke), in the request's places.
    pub params: [HostParamOut; NUM_PARAMS],
}

/// A connection to the TEE service. Its file descriptor becomes readable
/// when replies may be waiting, writable when queued operations may go
/// out ([`TeeBackend::wants_write`]).
pub trait TeeBackend: Send + AsRawFd {
    /// Starts a fresh connection with no session (the device is
    /// activated); the service closes every session of the old one.
    fn restart(&mut self) -> io::Result<()>;
    /// Queues `op`, tagged `id`, and writes what the connection takes now;
    /// never waits (for the connection or for the reply). Takes `op` even
    /// without [`Self::has_room`]: the worker asks before it takes a new
    /// chain from the guest, not before the cancels and closes it owes.
    fn send(&mut self, id: u64, op: HostOp) -> io::Result<()>;
    /// Writes what the connection takes of the queued operations, without
    /// waiting (the connection became writable).
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// Operations are queued that the connection has not taken yet: the
    /// worker waits for it to become writable.
    fn wants_write(&self) -> bool {
        false
    }
    /// The queue of operations is below its bound: the worker may take
    /// another chain from the guest (else the chains wait in the ring).
    fn has_room(&self) -> bool {
        true
    }
    /// Appends the replies that have arrived to `out` (none is fine). An
    /// error means the connection is gone.
    fn replies(&mut self, out: &mut Vec<HostReply>) -> io::Result<()>;
}
