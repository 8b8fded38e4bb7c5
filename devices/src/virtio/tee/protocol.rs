//! The virtio-tee wire format (`docs/virtio-tee.md`): constants, typed
//! requests and responses, and their little-endian encodings.
//!
//! [`super::decode`] turns the device-readable bytes of one chain into a
//! typed [`Request`] or a [`Rejection`] (which carries the status the device
//! answers); [`Response::encode`] produces the device-writable bytes. The
//! chain walk around them (descriptor directions, guest memory) is in
//! [`super::chain`].

use std::fmt;

/// Size of `struct virtio_tee_req_hdr`.
pub const REQ_HEADER_SIZE: usize = 16;
/// Size of `struct virtio_tee_resp_hdr`.
pub const RESP_HEADER_SIZE: usize = 16;
/// Size of `struct virtio_tee_param`.
pub const PARAM_SIZE: usize = 32;
/// Parameters of every open-session and invoke request.
pub const NUM_PARAMS: usize = 4;
/// Size of `struct virtio_tee_open_session_req`.
pub const OPEN_SESSION_BODY_SIZE: usize = 40 + NUM_PARAMS * PARAM_SIZE;
/// Size of `struct virtio_tee_invoke_req`.
pub const INVOKE_BODY_SIZE: usize = 8 + NUM_PARAMS * PARAM_SIZE;
/// Size of `struct virtio_tee_close_session_req`.
pub const CLOSE_SESSION_BODY_SIZE: usize = 8;
/// Size of `struct virtio_tee_cancel_req`.
pub const CANCEL_BODY_SIZE: usize = 8;
/// Size of `struct virtio_tee_shm_register_req` (the frames follow it).
pub const SHM_REGISTER_BODY_SIZE: usize = 16;
/// Size of `struct virtio_tee_shm_unregister_req`.
pub const SHM_UNREGISTER_BODY_SIZE: usize = 8;
/// Size of `struct virtio_tee_op_resp`.
pub const OP_RESP_BODY_SIZE: usize = 16 + NUM_PARAMS * PARAM_SIZE;
/// Size of `struct virtio_tee_shm_register_resp`.
pub const SHM_REGISTER_RESP_BODY_SIZE: usize = 8;

/// `VIRTIO_TEE_PARAM_*` type codes (Linux's `TEE_IOCTL_PARAM_ATTR_TYPE_*`).
pub mod param_type {
    /// Unused parameter.
    pub const NONE: u32 = 0;
    /// Value read by the TA.
    pub const VALUE_INPUT: u32 = 1;
    /// Value written by the TA.
    pub const VALUE_OUTPUT: u32 = 2;
    /// Value read and written by the TA.
    pub const VALUE_INOUT: u32 = 3;
    /// Memory reference read by the TA.
    pub const MEMREF_INPUT: u32 = 5;
    /// Memory reference written by the TA.
    pub const MEMREF_OUTPUT: u32 = 6;
    /// Memory reference read and written by the TA.
    pub const MEMREF_INOUT: u32 = 7;
}

/// GlobalPlatform `TEEC_*` result and `TEEC_ORIGIN_*` codes: the ones of
/// the host TEE protocol, which passes them through unchanged.
pub use trusty::tee::proto::{origin, result};

/// `VIRTIO_TEE_REQ_*`: the request types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum RequestType {
    /// Open a session to a TA.
    OpenSession = 1,
    /// Close a session.
    CloseSession = 2,
    /// Invoke a TA command.
    Invoke = 3,
    /// Cancel a pending open-session or invoke request.
    Cancel = 4,
    /// Register a shared-memory region.
    ShmRegister = 5,
    /// Unregister a shared-memory region.
    ShmUnregister = 6,
}

impl RequestType {
    /// The type with wire code `code`.
    pub fn from_code(code: u32) -> Option<Self> {
        Some(match code {
            1 => Self::OpenSession,
            2 => Self::CloseSession,
            3 => Self::Invoke,
            4 => Self::Cancel,
            5 => Self::ShmRegister,
            6 => Self::ShmUnregister,
            _ => return None,
        })
    }

    /// Size of the fixed body after the header (without a registration's
    /// frames).
    pub fn body_size(self) -> usize {
        match self {
            Self::OpenSession => OPEN_SESSION_BODY_SIZE,
            Self::CloseSession => CLOSE_SESSION_BODY_SIZE,
            Self::Invoke => INVOKE_BODY_SIZE,
            Self::Cancel => CANCEL_BODY_SIZE,
            Self::ShmRegister => SHM_REGISTER_BODY_SIZE,
            Self::ShmUnregister => SHM_UNREGISTER_BODY_SIZE,
        }
    }

    /// Size of the whole response when the status is OK.
    pub fn response_size(self) -> usize {
        RESP_HEADER_SIZE
            + match self {
                Self::OpenSession | Self::Invoke => OP_RESP_BODY_SIZE,
                Self::ShmRegister => SHM_REGISTER_RESP_BODY_SIZE,
                Self::CloseSession | Self::Cancel | Self::ShmUnregister => 0,
            }
    }
}

/// `VIRTIO_TEE_S_*`: what the device answers in the response header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Status {
    /// Carried out.
    Ok = 0,
    /// Malformed request.
    Invalid = 1,
    /// Unknown request type.
    Unsupported = 2,
    /// A registration frame is misaligned, outside guest RAM or overlaps a
    /// virtqueue.
    BadAddress = 3,
    /// A per-device bound (sessions, regions) is reached.
    NoSpace = 4,
    /// A per-request bound (frames, memory-reference size) is exceeded.
    TooLarge = 5,
    /// Unknown session or region id.
    NotFound = 6,
    /// The service behind the device cannot be reached.
    ServiceError = 7,
}

/// A 16-byte UUID in RFC 4122 byte order, as the Linux uapi carries it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Uuid(pub [u8; 16]);

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Which way a parameter's data goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Read by the TA.
    Input,
    /// Written by the TA.
    Output,
    /// Read and written by the TA.
    InOut,
}

impl Direction {
    /// Whether the TA reads the parameter.
    pub fn is_input(self) -> bool {
        matches!(self, Self::Input | Self::InOut)
    }

    /// Whether the TA writes the parameter.
    pub fn is_output(self) -> bool {
        matches!(self, Self::Output | Self::InOut)
    }
}

/// The three integers of a value parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Value {
    /// `a`.
    pub a: u64,
    /// `b`.
    pub b: u64,
    /// `c`.
    pub c: u64,
}

/// Bytes `[offset, offset + size)` of a registered region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemRef {
    /// The region's id.
    pub shm_id: u64,
    /// Byte offset into the region.
    pub offset: u64,
    /// Bytes.
    pub size: u64,
}

/// One of the four parameters of an open-session or invoke request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Param {
    /// Unused.
    #[default]
    None,
    /// A value.
    Value(Direction, Value),
    /// A memory reference.
    MemRef(Direction, MemRef),
}

impl Param {
    /// The wire type code.
    pub fn type_code(&self) -> u32 {
        use param_type::*;
        match self {
            Param::None => NONE,
            Param::Value(Direction::Input, _) => VALUE_INPUT,
            Param::Value(Direction::Output, _) => VALUE_OUTPUT,
            Param::Value(Direction::InOut, _) => VALUE_INOUT,
            Param::MemRef(Direction::Input, _) => MEMREF_INPUT,
            Param::MemRef(Direction::Output, _) => MEMREF_OUTPUT,
            Param::MemRef(Direction::InOut, _) => MEMREF_INOUT,
        }
    }

    /// Whether the TA writes the parameter (an output or in/out value or
    /// memory reference).
    pub fn is_output(&self) -> bool {
        match self {
            Param::None => false,
            Param::Value(d, _) | Param::MemRef(d, _) => d.is_output(),
        }
    }

    /// `struct virtio_tee_param` (a `None` parameter is all zero).
    pub fn encode(&self) -> [u8; PARAM_SIZE] {
        let mut out = [0u8; PARAM_SIZE];
        out[0..4].copy_from_slice(&self.type_code().to_le_bytes());
        let words = match *self {
            Param::None => [0; 3],
            Param::Value(_, v) => [v.a, v.b, v.c],
            Param::MemRef(_, m) => [m.shm_id, m.offset, m.size],
        };
        for (i, w) in words.into_iter().enumerate() {
            out[8 + i * 8..16 + i * 8].copy_from_slice(&w.to_le_bytes());
        }
        out
    }
}

/// `OPEN_SESSION`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenSession {
    /// The TA.
    pub uuid: Uuid,
    /// The client's identity as the guest claims it.
    pub client_uuid: Uuid,
    /// `TEE_IOCTL_LOGIN_*`.
    pub login: u32,
    /// The operation's parameters.
    pub params: [Param; NUM_PARAMS],
}

/// `INVOKE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invoke {
    /// The session.
    pub session: u32,
    /// The TA's command id.
    pub func: u32,
    /// The operation's parameters.
    pub params: [Param; NUM_PARAMS],
}

/// `SHM_REGISTER`, checked for syntax (frame addresses are checked by
/// [`super::shm::ShmTable::register`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShmRegistration {
    /// Bytes in the region (at least 1).
    pub size: u64,
    /// Offset of byte 0 in the first frame (below 4096).
    pub offset: u32,
    /// Guest-physical frame addresses, exactly `ceil((offset + size) / 4096)`.
    pub frames: Vec<u64>,
}

/// A well-formed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Open a session.
    OpenSession(OpenSession),
    /// Close a session.
    CloseSession {
        /// The session.
        session: u32,
    },
    /// Invoke a command.
    Invoke(Invoke),
    /// Cancel the pending request with this id.
    Cancel {
        /// The `request_id` of the request to cancel.
        request_id: u64,
    },
    /// Register a region.
    ShmRegister(ShmRegistration),
    /// Unregister a region.
    ShmUnregister {
        /// The region.
        shm_id: u64,
    },
}

impl Request {
    /// The request as a driver sends it, header included (the device never
    /// needs this; tests and fuzz targets do).
    pub fn encode(&self, request_id: u64) -> Vec<u8> {
        let ty = self.request_type();
        let header = RequestHeader {
            type_code: ty as u32,
            flags: 0,
            request_id,
        };
        let mut out = header.encode().to_vec();
        let put32 = |out: &mut Vec<u8>, v: u32| out.extend_from_slice(&v.to_le_bytes());
        match self {
            Request::OpenSession(o) => {
                out.extend_from_slice(&o.uuid.0);
                out.extend_from_slice(&o.client_uuid.0);
                put32(&mut out, o.login);
                put32(&mut out, 0);
                o.params
                    .iter()
                    .for_each(|p| out.extend_from_slice(&p.encode()));
            }
            Request::Invoke(i) => {
                put32(&mut out, i.session);
                put32(&mut out, i.func);
                i.params
                    .iter()
                    .for_each(|p| out.extend_from_slice(&p.encode()));
            }
            Request::CloseSession { session } => {
                put32(&mut out, *session);
                put32(&mut out, 0);
            }
            Request::Cancel { request_id } => out.extend_from_slice(&request_id.to_le_bytes()),
            Request::ShmUnregister { shm_id } => out.extend_from_slice(&shm_id.to_le_bytes()),
            Request::ShmRegister(r) => {
                out.extend_from_slice(&r.size.to_le_bytes());
                put32(&mut out, r.offset);
                // A test may build a registration with any number of frames.
                put32(&mut out, u32::try_from(r.frames.len()).unwrap_or(u32::MAX));
                r.frames
                    .iter()
                    .for_each(|f| out.extend_from_slice(&f.to_le_bytes()));
            }
        }
        out
    }

    /// The request's type.
    pub fn request_type(&self) -> RequestType {
        match self {
            Request::OpenSession(_) => RequestType::OpenSession,
            Request::CloseSession { .. } => RequestType::CloseSession,
            Request::Invoke(_) => RequestType::Invoke,
            Request::Cancel { .. } => RequestType::Cancel,
            Request::ShmRegister(_) => RequestType::ShmRegister,
            Request::ShmUnregister { .. } => RequestType::ShmUnregister,
        }
    }
}

/// Why a request is refused; [`Rejection::status`] is what the device
/// answers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// Fewer device-readable bytes than the request header.
    #[error("request of {0} bytes is shorter than the {REQ_HEADER_SIZE}-byte header")]
    ShortHeader(u64),
    /// An unknown request type.
    #[error("unknown request type {0}")]
    UnknownType(u32),
    /// Non-zero header flags.
    #[error("request flags {0:#x} are not 0")]
    Flags(u32),
    /// The request is not exactly as long as its type requires.
    #[error("{ty:?} request of {got} bytes, expected {expected}")]
    Length {
        /// Request type.
        ty: RequestType,
        /// Bytes the type requires.
        expected: u64,
        /// Device-readable bytes in the chain.
        got: u64,
    },
    /// The response buffer cannot hold the type's response.
    #[error("{ty:?} response buffer of {got} bytes, the response needs {expected}")]
    ResponseTooSmall {
        /// Request type.
        ty: RequestType,
        /// Bytes the response needs.
        expected: u64,
        /// Device-writable bytes in the chain.
        got: u64,
    },
    /// A reserved field is not 0.
    #[error("reserved field {0} is not 0")]
    Reserved(&'static str),
    /// An unknown parameter type.
    #[error("parameter {index} has unknown type {ty}")]
    ParamType {
        /// Parameter index.
        index: usize,
        /// Its type code.
        ty: u32,
    },
    /// A memory reference larger than `max_memref_size`.
    #[error("parameter {index}: memory reference of {size} bytes exceeds max_memref_size")]
    MemRefTooLarge {
        /// Parameter index.
        index: usize,
        /// Its size.
        size: u64,
    },
    /// An unknown login method.
    #[error("unknown login method {0:#x}")]
    Login(u32),
    /// A device-readable descriptor after a device-writable one.
    #[error("device-readable descriptor after a device-writable one")]
    ReadableAfterWritable,
    /// A request buffer that is not entirely inside guest memory.
    #[error("request buffer {addr:#x}+{len} is outside guest memory")]
    OutsideMemory {
        /// Guest address.
        addr: u64,
        /// Length.
        len: u32,
    },
    /// A registration of more than `max_shm_frames` frames.
    #[error("registration of {0} frames exceeds max_shm_frames")]
    TooManyFrames(u32),
    /// A registration of 0 bytes.
    #[error("registration of 0 bytes")]
    EmptyRegion,
    /// A first-frame offset of 4096 or more.
    #[error("first-frame offset {0} is not below 4096")]
    FrameOffset(u32),
    /// `num_frames` does not match `offset` and `size`.
    #[error("registration of {size} bytes at offset {offset} needs {needed} frames, got {got}")]
    FrameCount {
        /// Bytes.
        size: u64,
        /// First-frame offset.
        offset: u32,
        /// Frames those need.
        needed: u64,
        /// Frames the request has.
        got: u32,
    },
}

impl Rejection {
    /// The status the device answers.
    pub fn status(&self) -> Status {
        match self {
            Rejection::UnknownType(_) => Status::Unsupported,
            Rejection::MemRefTooLarge { .. } | Rejection::TooManyFrames(_) => Status::TooLarge,
            _ => Status::Invalid,
        }
    }
}

/// The common request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHeader {
    /// Raw type code.
    pub type_code: u32,
    /// Flags (must be 0).
    pub flags: u32,
    /// The driver's id for the request.
    pub request_id: u64,
}

impl RequestHeader {
    /// Encodes the header (for tests and clients).
    pub fn encode(&self) -> [u8; REQ_HEADER_SIZE] {
        let mut out = [0u8; REQ_HEADER_SIZE];
        out[0..4].copy_from_slice(&self.type_code.to_le_bytes());
        out[4..8].copy_from_slice(&self.flags.to_le_bytes());
        out[8..16].copy_from_slice(&self.request_id.to_le_bytes());
        out
    }
}

/// The answer to an open-session or invoke request whose status is OK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpResponse {
    /// `TEEC_Result`.
    pub ret: u32,
    /// `TEEC_ORIGIN_*`.
    pub ret_origin: u32,
    /// The new session (open session with `ret` 0), else 0.
    pub session: u32,
    /// The parameters as the TA left them.
    pub params: [Param; NUM_PARAMS],
}

/// What the device writes into a response buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// Only the header: an error status, or OK for a type without a
    /// response body.
    Status(Status),
    /// OK with an open-session or invoke result.
    Op(OpResponse),
    /// OK for a registration, with the new region's id.
    Registered {
        /// The region's id.
        shm_id: u64,
    },
}

impl Response {
    /// The response bytes for the request with `request_id`.
    pub fn encode(&self, request_id: u64) -> Vec<u8> {
        let status = match self {
            Response::Status(s) => *s,
            Response::Op(_) | Response::Registered { .. } => Status::Ok,
        };
        let mut out = Vec::with_capacity(RESP_HEADER_SIZE + OP_RESP_BODY_SIZE);
        out.extend_from_slice(&(status as u32).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&request_id.to_le_bytes());
        match self {
            Response::Status(_) => {}
            Response::Op(op) => {
                for w in [op.ret, op.ret_origin, op.session, 0] {
                    out.extend_from_slice(&w.to_le_bytes());
                }
                for p in &op.params {
                    out.extend_from_slice(&p.encode());
                }
            }
            Response::Registered { shm_id } => out.extend_from_slice(&shm_id.to_le_bytes()),
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_sizes_match_the_spec() {
        assert_eq!(REQ_HEADER_SIZE + OPEN_SESSION_BODY_SIZE, 184);
        assert_eq!(REQ_HEADER_SIZE + INVOKE_BODY_SIZE, 152);
        assert_eq!(REQ_HEADER_SIZE + CLOSE_SESSION_BODY_SIZE, 24);
        assert_eq!(REQ_HEADER_SIZE + CANCEL_BODY_SIZE, 24);
        assert_eq!(REQ_HEADER_SIZE + SHM_REGISTER_BODY_SIZE, 32);
        assert_eq!(REQ_HEADER_SIZE + SHM_UNREGISTER_BODY_SIZE, 24);
        assert_eq!(RequestType::OpenSession.response_size(), 160);
        assert_eq!(RequestType::Invoke.response_size(), 160);
        assert_eq!(RequestType::ShmRegister.response_size(), 24);
        for ty in [
            RequestType::CloseSession,
            RequestType::Cancel,
            RequestType::ShmUnregister,
        ] {
            assert_eq!(ty.response_size(), 16);
        }
    }

    #[test]
    fn request_type_codes_round_trip() {
        for code in 0..10 {
            match RequestType::from_code(code) {
                Some(ty) => assert_eq!(ty as u32, code),
                None => assert!(code == 0 || code > 6),
            }
        }
    }

    #[test]
    fn responses_encode_as_the_spec_says() {
        let r = Response::Status(Status::NotFound).encode(0x1122_3344_5566_7788);
        assert_eq!(r.len(), RESP_HEADER_SIZE);
        assert_eq!(&r[0..4], &6u32.to_le_bytes());
        assert_eq!(&r[4..8], &[0; 4]);
        assert_eq!(&r[8..16], &0x1122_3344_5566_7788u64.to_le_bytes());

        let r = Response::Registered { shm_id: 42 }.encode(1);
        assert_eq!(r.len(), RequestType::ShmRegister.response_size());
        assert_eq!(&r[0..4], &[0; 4]);
        assert_eq!(&r[16..24], &42u64.to_le_bytes());

        let mut params = [Param::None; NUM_PARAMS];
        params[1] = Param::Value(Direction::Output, Value { a: 1, b: 2, c: 3 });
        params[3] = Param::MemRef(
            Direction::InOut,
            MemRef {
                shm_id: 9,
                offset: 10,
                size: 11,
            },
        );
        let r = Response::Op(OpResponse {
            ret: result::SHORT_BUFFER,
            ret_origin: origin::TRUSTED_APP,
            session: 77,
            params,
        })
        .encode(5);
        assert_eq!(r.len(), RequestType::Invoke.response_size());
        assert_eq!(&r[16..20], &result::SHORT_BUFFER.to_le_bytes());
        assert_eq!(&r[20..24], &4u32.to_le_bytes());
        assert_eq!(&r[24..28], &77u32.to_le_bytes());
        assert_eq!(&r[28..32], &[0; 4]);
        let p1 = &r[32 + 32..32 + 64];
        assert_eq!(&p1[0..4], &param_type::VALUE_OUTPUT.to_le_bytes());
        assert_eq!(&p1[8..16], &1u64.to_le_bytes());
        let p3 = &r[32 + 96..32 + 128];
        assert_eq!(&p3[0..4], &param_type::MEMREF_INOUT.to_le_bytes());
        assert_eq!(&p3[24..32], &11u64.to_le_bytes());
    }

    #[test]
    fn uuid_displays_like_rfc_4122() {
        let u = Uuid([
            0xb4, 0x27, 0x0f, 0x96, 0x0a, 0xcb, 0x5e, 0x22, 0x88, 0xf7, 0x2e, 0xa9, 0x45, 0xe7,
            0x26, 0x54,
        ]);
        assert_eq!(u.to_string(), "b4270f96-0acb-5e22-88f7-2ea945e72654");
    }
}
