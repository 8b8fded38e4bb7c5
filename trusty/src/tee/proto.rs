//! Typed messages of the host TEE protocol and their byte encoding.
//!
//! Every multi-byte integer is little endian. A frame is `le32 body_len`
//! and the body; [`Request::encode_frame`] and [`Response::encode_frame`]
//! write whole frames, [`Request::decode`] and [`Response::decode`] read
//! one body (the length prefix already taken off, see
//! [`super::FrameDecoder`]). Decoding checks every length against the
//! bytes present and the protocol's limits; it never allocates more than
//! the body it was given.

use thiserror::Error;

/// The protocol version `HELLO` carries.
pub const PROTOCOL_VERSION: u32 = 1;
/// Largest memref payload, in bytes.
pub const MAX_MEMREF: usize = 1 << 20;
/// Largest frame body: four full memrefs and room for the fixed fields.
pub const MAX_FRAME: usize = 4 * MAX_MEMREF + 64 * 1024;
/// Parameters in every open-session and invoke.
pub const NUM_PARAMS: usize = 4;
/// Set in a response's `op`.
pub const RESPONSE_BIT: u32 = 0x8000_0000;

/// Request operation codes.
pub mod op {
    /// Version handshake, the first frame of a connection.
    pub const HELLO: u32 = 0;
    /// Open a session to a TA by UUID.
    pub const OPEN_SESSION: u32 = 1;
    /// Invoke a command in a session.
    pub const INVOKE: u32 = 2;
    /// Cancel a running invoke.
    pub const CANCEL: u32 = 3;
    /// Close a session.
    pub const CLOSE_SESSION: u32 = 4;
}

/// `TEE_IOCTL_PARAM_ATTR_TYPE_*` values of a parameter's type byte.
pub mod param_type {
    /// Unused parameter.
    pub const NONE: u8 = 0;
    /// Values the TA reads.
    pub const VALUE_INPUT: u8 = 1;
    /// Values the TA writes.
    pub const VALUE_OUTPUT: u8 = 2;
    /// Values the TA reads and writes.
    pub const VALUE_INOUT: u8 = 3;
    /// A buffer the TA reads.
    pub const MEMREF_INPUT: u8 = 5;
    /// A buffer the TA writes.
    pub const MEMREF_OUTPUT: u8 = 6;
    /// A buffer the TA reads and writes.
    pub const MEMREF_INOUT: u8 = 7;
}

/// GlobalPlatform `TEEC_*` result codes used by this protocol.
pub mod result {
    /// The operation succeeded.
    pub const SUCCESS: u32 = 0;
    /// Unspecified failure.
    pub const GENERIC: u32 = 0xFFFF_0000;
    /// The operation was cancelled.
    pub const CANCEL: u32 = 0xFFFF_0002;
    /// Parameters are malformed or of the wrong type.
    pub const BAD_PARAMETERS: u32 = 0xFFFF_0006;
    /// The operation is not valid in the current state.
    pub const BAD_STATE: u32 = 0xFFFF_0007;
    /// No such TA or session.
    pub const ITEM_NOT_FOUND: u32 = 0xFFFF_0008;
    /// Unknown command or protocol version.
    pub const NOT_SUPPORTED: u32 = 0xFFFF_000A;
    /// The service ran out of a resource.
    pub const OUT_OF_MEMORY: u32 = 0xFFFF_000C;
    /// Too many sessions or requests in flight.
    pub const BUSY: u32 = 0xFFFF_000D;
    /// An output buffer is too small; its size says what is needed.
    pub const SHORT_BUFFER: u32 = 0xFFFF_0010;
}

/// GlobalPlatform `TEEC_ORIGIN_*` codes: who produced a result.
pub mod origin {
    /// The frame itself (communication stack).
    pub const COMMS: u32 = 2;
    /// The service (`trustyd`).
    pub const TEE: u32 = 3;
    /// The trusted app.
    pub const TRUSTED_APP: u32 = 4;
}

/// `TEE_IOCTL_LOGIN_*` values of `OPEN_SESSION`'s `login`.
pub mod login {
    /// No login data.
    pub const PUBLIC: u32 = 0;
    /// The client's user.
    pub const USER: u32 = 1;
    /// The client's group.
    pub const GROUP: u32 = 2;
    /// The client application.
    pub const APPLICATION: u32 = 4;
    /// User and application.
    pub const USER_APPLICATION: u32 = 5;
    /// Group and application.
    pub const GROUP_APPLICATION: u32 = 6;

    /// Whether `login` is one of the methods above.
    pub fn is_known(login: u32) -> bool {
        matches!(
            login,
            PUBLIC | USER | GROUP | APPLICATION | USER_APPLICATION | GROUP_APPLICATION
        )
    }
}

/// Why a body could not be decoded.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ProtoError {
    /// The body ends before a field.
    #[error("truncated frame: {0} missing")]
    Truncated(&'static str),
    /// Bytes after the last field.
    #[error("{0} trailing bytes after the last field")]
    Trailing(usize),
    /// An op code this version does not know.
    #[error("unknown op {0:#x}")]
    UnknownOp(u32),
    /// A parameter type byte that is not a `TEE_IOCTL_PARAM_ATTR_TYPE_*`.
    #[error("unknown parameter type {0}")]
    UnknownParamType(u8),
    /// A memref longer than [`MAX_MEMREF`].
    #[error("memref of {0} bytes is over the limit of {MAX_MEMREF}")]
    MemrefTooLong(usize),
    /// A frame longer than [`MAX_FRAME`].
    #[error("frame of {0} bytes is over the limit of {MAX_FRAME}")]
    FrameTooLong(usize),
    /// A response's memref claims more data than its size.
    #[error("memref data of {data} bytes exceeds its size {size}")]
    DataOverSize {
        /// `n`, the data bytes present.
        data: usize,
        /// `size`, the bytes produced.
        size: u32,
    },
    /// A response op without the response bit, or a request op with it.
    #[error("op {0:#x} has the wrong direction")]
    WrongDirection(u32),
}

/// The three 64-bit values of a value parameter (GP uses `a` and `b`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Value {
    /// First value.
    pub a: u64,
    /// Second value.
    pub b: u64,
    /// Third value (carried for the kernel's ABI; unused by GP).
    pub c: u64,
}

/// A parameter of a request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Param {
    /// Unused.
    #[default]
    None,
    /// Values the TA reads.
    ValueInput(Value),
    /// Values the TA writes.
    ValueOutput,
    /// Values the TA reads and writes.
    ValueInout(Value),
    /// Bytes the TA reads.
    MemrefInput(Vec<u8>),
    /// A buffer of `capacity` bytes the TA writes.
    MemrefOutput {
        /// The guest buffer's size.
        capacity: u32,
    },
    /// Bytes the TA reads and may overwrite (capacity = their length).
    MemrefInout(Vec<u8>),
}

impl Param {
    /// The parameters of a request that uses only the first one.
    pub fn only(first: Param) -> [Param; NUM_PARAMS] {
        [first, Param::None, Param::None, Param::None]
    }

    /// The parameter's type byte.
    pub fn type_byte(&self) -> u8 {
        match self {
            Param::None => param_type::NONE,
            Param::ValueInput(_) => param_type::VALUE_INPUT,
            Param::ValueOutput => param_type::VALUE_OUTPUT,
            Param::ValueInout(_) => param_type::VALUE_INOUT,
            Param::MemrefInput(_) => param_type::MEMREF_INPUT,
            Param::MemrefOutput { .. } => param_type::MEMREF_OUTPUT,
            Param::MemrefInout(_) => param_type::MEMREF_INOUT,
        }
    }

    /// The output capacity of a memref the TA writes, if this is one.
    pub fn output_capacity(&self) -> Option<usize> {
        match self {
            Param::MemrefOutput { capacity } => Some(*capacity as usize),
            Param::MemrefInout(d) => Some(d.len()),
            _ => None,
        }
    }

    /// The bytes a TA reads from a memref, if this is one with input.
    pub fn input_bytes(&self) -> Option<&[u8]> {
        match self {
            Param::MemrefInput(d) | Param::MemrefInout(d) => Some(d),
            _ => None,
        }
    }

    /// The empty output slot for this parameter (what a response carries
    /// when the TA produced nothing for it).
    pub fn empty_out(&self) -> ParamOut {
        match self {
            Param::None => ParamOut::None,
            Param::ValueInput(_) => ParamOut::ValueInput,
            Param::ValueOutput => ParamOut::ValueOutput(Value::default()),
            Param::ValueInout(v) => ParamOut::ValueInout(*v),
            Param::MemrefInput(_) => ParamOut::MemrefInput,
            Param::MemrefOutput { .. } => ParamOut::MemrefOutput {
                size: 0,
                data: Vec::new(),
            },
            Param::MemrefInout(_) => ParamOut::MemrefInout {
                size: 0,
                data: Vec::new(),
            },
        }
    }
}

/// A parameter of a response: the request's type with what the TA wrote.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ParamOut {
    /// Unused.
    #[default]
    None,
    /// An input value (nothing comes back).
    ValueInput,
    /// Values the TA wrote.
    ValueOutput(Value),
    /// Values the TA wrote back.
    ValueInout(Value),
    /// An input memref (nothing comes back).
    MemrefInput,
    /// Bytes the TA wrote: `size` produced (or needed, with
    /// `SHORT_BUFFER`), `data` the bytes returned.
    MemrefOutput {
        /// Bytes produced or needed.
        size: u32,
        /// Bytes returned (at most `size` and the capacity).
        data: Vec<u8>,
    },
    /// Same as [`ParamOut::MemrefOutput`] for an in/out memref.
    MemrefInout {
        /// Bytes produced or needed.
        size: u32,
        /// Bytes returned.
        data: Vec<u8>,
    },
}

impl ParamOut {
    /// The parameter's type byte.
    pub fn type_byte(&self) -> u8 {
        match self {
            ParamOut::None => param_type::NONE,
            ParamOut::ValueInput => param_type::VALUE_INPUT,
            ParamOut::ValueOutput(_) => param_type::VALUE_OUTPUT,
            ParamOut::ValueInout(_) => param_type::VALUE_INOUT,
            ParamOut::MemrefInput => param_type::MEMREF_INPUT,
            ParamOut::MemrefOutput { .. } => param_type::MEMREF_OUTPUT,
            ParamOut::MemrefInout { .. } => param_type::MEMREF_INOUT,
        }
    }
}

/// A request from the VMM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// The first frame: the protocol version the VMM speaks.
    Hello {
        /// [`PROTOCOL_VERSION`].
        version: u32,
    },
    /// Open a session to the TA with this UUID.
    OpenSession {
        /// TA UUID, RFC 4122 byte order.
        uuid: [u8; 16],
        /// `TEE_IOCTL_LOGIN_*`.
        login: u32,
        /// The client identity the kernel computed for `login`.
        client: [u8; 16],
        /// Lets a `CANCEL` name this open.
        cancel_id: u32,
        /// Open parameters (must be `NONE` for this service's TAs).
        params: [Param; NUM_PARAMS],
    },
    /// Invoke `func` in `session`.
    Invoke {
        /// From the `OPEN_SESSION` response.
        session: u32,
        /// The TA's command id.
        func: u32,
        /// Lets a `CANCEL` name this invoke.
        cancel_id: u32,
        /// The parameters.
        params: [Param; NUM_PARAMS],
    },
    /// Cancel the running invoke of `session` with `cancel_id`.
    Cancel {
        /// The session.
        session: u32,
        /// The invoke's cancel id.
        cancel_id: u32,
    },
    /// Close `session`.
    CloseSession {
        /// The session.
        session: u32,
    },
}

/// The op-specific part of a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseBody {
    /// Answer to `HELLO`.
    Hello {
        /// The version the service speaks.
        version: u32,
        /// Its [`MAX_FRAME`].
        max_frame: u32,
        /// Its [`MAX_MEMREF`].
        max_memref: u32,
    },
    /// Answer to `OPEN_SESSION`.
    OpenSession {
        /// The new session (0 on failure).
        session: u32,
        /// Output parameters.
        params: [ParamOut; NUM_PARAMS],
    },
    /// Answer to `INVOKE`.
    Invoke {
        /// Output parameters.
        params: [ParamOut; NUM_PARAMS],
    },
    /// Answer to `CANCEL`.
    Cancel,
    /// Answer to `CLOSE_SESSION`.
    CloseSession,
}

/// A response from the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The request's id.
    pub id: u64,
    /// `TEEC_*` result ([`result`]).
    pub ret: u32,
    /// `TEEC_ORIGIN_*` ([`origin`]).
    pub origin: u32,
    /// Op-specific fields.
    pub body: ResponseBody,
}

/// Little-endian writer into a frame.
struct Writer(Vec<u8>);

impl Writer {
    /// Starts a frame with a placeholder length.
    fn frame(op: u32, id: u64) -> Self {
        let mut w = Writer(Vec::with_capacity(64));
        w.u32(0);
        w.u32(op);
        w.u64(id);
        w
    }
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }
    fn value(&mut self, v: &Value) {
        self.u64(v.a);
        self.u64(v.b);
        self.u64(v.c);
    }
    /// Fills in the length prefix and returns the frame.
    fn finish(mut self) -> Vec<u8> {
        let len = u32::try_from(self.0.len() - 4).unwrap_or(u32::MAX);
        self.0[..4].copy_from_slice(&len.to_le_bytes());
        self.0
    }
}

/// Little-endian reader over a body.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], ProtoError> {
        if self.0.len() < n {
            return Err(ProtoError::Truncated(what));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, ProtoError> {
        Ok(self.take(1, what)?[0])
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, ProtoError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, ProtoError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn uuid(&mut self, what: &'static str) -> Result<[u8; 16], ProtoError> {
        let mut a = [0u8; 16];
        a.copy_from_slice(self.take(16, what)?);
        Ok(a)
    }
    fn value(&mut self) -> Result<Value, ProtoError> {
        Ok(Value {
            a: self.u64("value a")?,
            b: self.u64("value b")?,
            c: self.u64("value c")?,
        })
    }
    fn memref(&mut self) -> Result<Vec<u8>, ProtoError> {
        let len = self.u32("memref length")? as usize;
        if len > MAX_MEMREF {
            return Err(ProtoError::MemrefTooLong(len));
        }
        Ok(self.take(len, "memref bytes")?.to_vec())
    }
    fn end(&self) -> Result<(), ProtoError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ProtoError::Trailing(self.0.len()))
        }
    }
}

fn write_params(w: &mut Writer, params: &[Param; NUM_PARAMS]) {
    for p in params {
        w.u8(p.type_byte());
        match p {
            Param::None => {}
            Param::ValueInput(v) | Param::ValueInout(v) => w.value(v),
            Param::ValueOutput => w.value(&Value::default()),
            Param::MemrefInput(d) | Param::MemrefInout(d) => {
                w.u32(u32::try_from(d.len()).unwrap_or(u32::MAX));
                w.bytes(d);
            }
            Param::MemrefOutput { capacity } => w.u32(*capacity),
        }
    }
}

fn read_params(r: &mut Reader) -> Result<[Param; NUM_PARAMS], ProtoError> {
    let mut out: [Param; NUM_PARAMS] = Default::default();
    for slot in &mut out {
        *slot = match r.u8("parameter type")? {
            param_type::NONE => Param::None,
            param_type::VALUE_INPUT => Param::ValueInput(r.value()?),
            param_type::VALUE_OUTPUT => {
                r.value()?;
                Param::ValueOutput
            }
            param_type::VALUE_INOUT => Param::ValueInout(r.value()?),
            param_type::MEMREF_INPUT => Param::MemrefInput(r.memref()?),
            param_type::MEMREF_OUTPUT => {
                let capacity = r.u32("memref capacity")?;
                if capacity as usize > MAX_MEMREF {
                    return Err(ProtoError::MemrefTooLong(capacity as usize));
                }
                Param::MemrefOutput { capacity }
            }
            param_type::MEMREF_INOUT => Param::MemrefInout(r.memref()?),
            t => return Err(ProtoError::UnknownParamType(t)),
        };
    }
    Ok(out)
}

fn write_params_out(w: &mut Writer, params: &[ParamOut; NUM_PARAMS]) {
    for p in params {
        w.u8(p.type_byte());
        match p {
            ParamOut::None | ParamOut::ValueInput | ParamOut::MemrefInput => {}
            ParamOut::ValueOutput(v) | ParamOut::ValueInout(v) => w.value(v),
            ParamOut::MemrefOutput { size, data } | ParamOut::MemrefInout { size, data } => {
                w.u32(*size);
                w.u32(u32::try_from(data.len()).unwrap_or(u32::MAX));
                w.bytes(data);
            }
        }
    }
}

fn read_params_out(r: &mut Reader) -> Result<[ParamOut; NUM_PARAMS], ProtoError> {
    let mut out: [ParamOut; NUM_PARAMS] = Default::default();
    for slot in &mut out {
        let t = r.u8("parameter type")?;
        *slot = match t {
            param_type::NONE => ParamOut::None,
            param_type::VALUE_INPUT => ParamOut::ValueInput,
            param_type::VALUE_OUTPUT => ParamOut::ValueOutput(r.value()?),
            param_type::VALUE_INOUT => ParamOut::ValueInout(r.value()?),
            param_type::MEMREF_INPUT => ParamOut::MemrefInput,
            param_type::MEMREF_OUTPUT | param_type::MEMREF_INOUT => {
                let size = r.u32("memref size")?;
                let data = r.memref()?;
                if data.len() > size as usize {
                    return Err(ProtoError::DataOverSize {
                        data: data.len(),
                        size,
                    });
                }
                if t == param_type::MEMREF_OUTPUT {
                    ParamOut::MemrefOutput { size, data }
                } else {
                    ParamOut::MemrefInout { size, data }
                }
            }
            t => return Err(ProtoError::UnknownParamType(t)),
        };
    }
    Ok(out)
}

impl Request {
    /// An `OPEN_SESSION` of the TA `uuid` with `login` (a
    /// `TEE_IOCTL_LOGIN_*`), an all-zero client identity, no cancel id and
    /// no parameters.
    pub fn open_session(uuid: [u8; 16], login: u32) -> Self {
        Request::OpenSession {
            uuid,
            login,
            client: [0; 16],
            cancel_id: 0,
            params: Default::default(),
        }
    }

    /// The request's op code.
    pub fn op(&self) -> u32 {
        match self {
            Request::Hello { .. } => op::HELLO,
            Request::OpenSession { .. } => op::OPEN_SESSION,
            Request::Invoke { .. } => op::INVOKE,
            Request::Cancel { .. } => op::CANCEL,
            Request::CloseSession { .. } => op::CLOSE_SESSION,
        }
    }

    /// The whole frame (length prefix included) for request `id`.
    pub fn encode_frame(&self, id: u64) -> Vec<u8> {
        let mut w = Writer::frame(self.op(), id);
        match self {
            Request::Hello { version } => w.u32(*version),
            Request::OpenSession {
                uuid,
                login,
                client,
                cancel_id,
                params,
            } => {
                w.bytes(uuid);
                w.u32(*login);
                w.bytes(client);
                w.u32(*cancel_id);
                write_params(&mut w, params);
            }
            Request::Invoke {
                session,
                func,
                cancel_id,
                params,
            } => {
                w.u32(*session);
                w.u32(*func);
                w.u32(*cancel_id);
                write_params(&mut w, params);
            }
            Request::Cancel { session, cancel_id } => {
                w.u32(*session);
                w.u32(*cancel_id);
            }
            Request::CloseSession { session } => w.u32(*session),
        }
        w.finish()
    }

    /// Decodes a request body: its id and the request.
    pub fn decode(body: &[u8]) -> Result<(u64, Request), ProtoError> {
        let mut r = Reader(body);
        let op = r.u32("op")?;
        let id = r.u64("id")?;
        if op & RESPONSE_BIT != 0 {
            return Err(ProtoError::WrongDirection(op));
        }
        let req = match op {
            op::HELLO => Request::Hello {
                version: r.u32("version")?,
            },
            op::OPEN_SESSION => Request::OpenSession {
                uuid: r.uuid("uuid")?,
                login: r.u32("login")?,
                client: r.uuid("client uuid")?,
                cancel_id: r.u32("cancel id")?,
                params: read_params(&mut r)?,
            },
            op::INVOKE => Request::Invoke {
                session: r.u32("session")?,
                func: r.u32("func")?,
                cancel_id: r.u32("cancel id")?,
                params: read_params(&mut r)?,
            },
            op::CANCEL => Request::Cancel {
                session: r.u32("session")?,
                cancel_id: r.u32("cancel id")?,
            },
            op::CLOSE_SESSION => Request::CloseSession {
                session: r.u32("session")?,
            },
            other => return Err(ProtoError::UnknownOp(other)),
        };
        r.end()?;
        Ok((id, req))
    }
}

impl ResponseBody {
    /// The op code of the request this answers.
    pub fn op(&self) -> u32 {
        match self {
            ResponseBody::Hello { .. } => op::HELLO,
            ResponseBody::OpenSession { .. } => op::OPEN_SESSION,
            ResponseBody::Invoke { .. } => op::INVOKE,
            ResponseBody::Cancel => op::CANCEL,
            ResponseBody::CloseSession => op::CLOSE_SESSION,
        }
    }
}

impl Response {
    /// The whole frame (length prefix included).
    pub fn encode_frame(&self) -> Vec<u8> {
        let mut w = Writer::frame(self.body.op() | RESPONSE_BIT, self.id);
        w.u32(self.ret);
        w.u32(self.origin);
        match &self.body {
            ResponseBody::Hello {
                version,
                max_frame,
                max_memref,
            } => {
                w.u32(*version);
                w.u32(*max_frame);
                w.u32(*max_memref);
            }
            ResponseBody::OpenSession { session, params } => {
                w.u32(*session);
                write_params_out(&mut w, params);
            }
            ResponseBody::Invoke { params } => write_params_out(&mut w, params),
            ResponseBody::Cancel | ResponseBody::CloseSession => {}
        }
        w.finish()
    }

    /// Decodes a response body.
    pub fn decode(body: &[u8]) -> Result<Response, ProtoError> {
        let mut r = Reader(body);
        let op_code = r.u32("op")?;
        let id = r.u64("id")?;
        if op_code & RESPONSE_BIT == 0 {
            return Err(ProtoError::WrongDirection(op_code));
        }
        let ret = r.u32("ret")?;
        let origin = r.u32("ret origin")?;
        let body = match op_code & !RESPONSE_BIT {
            op::HELLO => ResponseBody::Hello {
                version: r.u32("version")?,
                max_frame: r.u32("max frame")?,
                max_memref: r.u32("max memref")?,
            },
            op::OPEN_SESSION => ResponseBody::OpenSession {
                session: r.u32("session")?,
                params: read_params_out(&mut r)?,
            },
            op::INVOKE => ResponseBody::Invoke {
                params: read_params_out(&mut r)?,
            },
            op::CANCEL => ResponseBody::Cancel,
            op::CLOSE_SESSION => ResponseBody::CloseSession,
            other => return Err(ProtoError::UnknownOp(other)),
        };
        r.end()?;
        Ok(Response {
            id,
            ret,
            origin,
            body,
        })
    }

    /// A response of `body`'s kind with only a result (no session, empty
    /// output parameters shaped like `params` when given).
    pub fn error(
        id: u64,
        op_code: u32,
        ret: u32,
        origin: u32,
        params: Option<&[Param; NUM_PARAMS]>,
    ) -> Response {
        let outs = || -> [ParamOut; NUM_PARAMS] {
            match params {
                Some(p) => [
                    p[0].empty_out(),
                    p[1].empty_out(),
                    p[2].empty_out(),
                    p[3].empty_out(),
                ],
                None => Default::default(),
            }
        };
        let body = match op_code {
            op::HELLO => ResponseBody::Hello {
                version: PROTOCOL_VERSION,
                max_frame: MAX_FRAME as u32,
                max_memref: MAX_MEMREF as u32,
            },
            op::OPEN_SESSION => ResponseBody::OpenSession {
                session: 0,
                params: outs(),
            },
            op::INVOKE => ResponseBody::Invoke { params: outs() },
            op::CANCEL => ResponseBody::Cancel,
            _ => ResponseBody::CloseSession,
        };
        Response {
            id,
            ret,
            origin,
            body,
        }
    }
}

#[cfg(test)]
mod tests;
