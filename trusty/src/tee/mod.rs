//! The host TEE protocol: how the VMM's virtio-tee device reaches
//! `trustyd` (spec: `docs/trusty.md`, "The host TEE protocol").
//!
//! Frames on a unix stream socket, `le32 body_len` + body; the body starts
//! with `le32 op, le64 id`. [`proto`] has the typed messages and their
//! codec, [`client`] a frame decoder for non-blocking readers and a
//! blocking client ([`TeeClient`]) for a device worker thread. Nothing here
//! uses an async runtime.

pub mod client;
pub mod proto;

pub use client::{ClientError, FrameDecoder, TeeClient, TeeReceiver, TeeSender};
pub use proto::{
    login, origin, param_type, result, Param, ParamOut, ProtoError, Request, Response,
    ResponseBody, Value, MAX_FRAME, MAX_MEMREF, NUM_PARAMS, PROTOCOL_VERSION,
};
