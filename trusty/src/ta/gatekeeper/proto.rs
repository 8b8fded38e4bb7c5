//! AOSP gatekeeper messages (`trusty/gatekeeper/gatekeeper_ipc.h` and
//! `system/gatekeeper/gatekeeper_messages.cpp`): `u32 cmd`, then the
//! serialized message `u32 error, u32 user_id` + body; blobs are `u32
//! length` + bytes; little endian.

use super::super::le::{u32_at, u64_at};
use crate::framing::Split;

/// Set in a response's cmd.
pub const RESP_BIT: u32 = 1;
/// `GK_ENROLL`.
pub const ENROLL: u32 = 0;
/// `GK_VERIFY`.
pub const VERIFY: u32 = 2;
/// `GK_DELETE_USER`.
pub const DELETE_USER: u32 = 4;
/// `GK_DELETE_ALL_USERS`.
pub const DELETE_ALL_USERS: u32 = 6;

/// `gatekeeper_error_t`.
pub mod error {
    /// Success.
    pub const NONE: u32 = 0;
    /// Invalid request or wrong password.
    pub const INVALID: u32 = 1;
    /// Throttled: a retry timeout follows.
    pub const RETRY: u32 = 2;
    /// Internal failure.
    pub const UNKNOWN: u32 = 3;
}

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Enroll `desired`; to change an enrolled password, `current` and
    /// its `handle` are given.
    Enroll {
        /// Android user id.
        user_id: u32,
        /// The new password.
        desired: Vec<u8>,
        /// The enrolled password, if re-enrolling.
        current: Vec<u8>,
        /// The enrolled handle, if re-enrolling.
        handle: Vec<u8>,
    },
    /// Check `password` against `handle`.
    Verify {
        /// Android user id.
        user_id: u32,
        /// Bound into the auth token.
        challenge: u64,
        /// The enrolled handle.
        handle: Vec<u8>,
        /// The password to check.
        password: Vec<u8>,
    },
    /// Forget a user's failure record.
    DeleteUser {
        /// Android user id.
        user_id: u32,
    },
    /// Forget every failure record.
    DeleteAllUsers {
        /// Android user id (unused).
        user_id: u32,
    },
}

/// Why a request does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The command word, when present.
    pub cmd: u32,
    /// The user id, when present.
    pub user_id: u32,
}

/// Cursor over a message.
struct Cur<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cur<'a> {
    fn u32(&mut self) -> Option<u32> {
        let v = u32_at(self.b, self.pos)?;
        self.pos += 4;
        Some(v)
    }
    fn u64(&mut self) -> Option<u64> {
        let v = u64_at(self.b, self.pos)?;
        self.pos += 8;
        Some(v)
    }
    fn blob(&mut self) -> Option<&'a [u8]> {
        let len = self.u32()? as usize;
        let end = self.pos.checked_add(len)?;
        let s = self.b.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
}

/// Parses a request message. Trailing bytes are ignored, as AOSP's
/// deserializer does.
pub fn parse(msg: &[u8]) -> Result<Request, ParseError> {
    let mut c = Cur { b: msg, pos: 0 };
    let cmd = c.u32().ok_or(ParseError { cmd: 0, user_id: 0 })?;
    let bad = |user_id| ParseError { cmd, user_id };
    let _error = c.u32().ok_or(bad(0))?;
    let user_id = c.u32().ok_or(bad(0))?;
    let req = match cmd {
        // Fields are read in the order they are written.
        ENROLL => Request::Enroll {
            user_id,
            desired: c.blob().ok_or(bad(user_id))?.to_vec(),
            current: c.blob().ok_or(bad(user_id))?.to_vec(),
            handle: c.blob().ok_or(bad(user_id))?.to_vec(),
        },
        VERIFY => Request::Verify {
            user_id,
            challenge: c.u64().ok_or(bad(user_id))?,
            handle: c.blob().ok_or(bad(user_id))?.to_vec(),
            password: c.blob().ok_or(bad(user_id))?.to_vec(),
        },
        DELETE_USER => Request::DeleteUser { user_id },
        DELETE_ALL_USERS => Request::DeleteAllUsers { user_id },
        _ => return Err(bad(user_id)),
    };
    Ok(req)
}

/// How the framer splits gatekeeper messages: they are self-delimiting.
pub fn split(buf: &[u8]) -> Split {
    let mut c = Cur { b: buf, pos: 0 };
    let Some(cmd) = c.u32() else {
        return Split::NeedMore;
    };
    let blobs = match cmd {
        ENROLL => 3,
        VERIFY => 2,
        DELETE_USER | DELETE_ALL_USERS => 0,
        _ => return Split::Whole,
    };
    if c.u32().is_none() || c.u32().is_none() {
        return Split::NeedMore;
    }
    if cmd == VERIFY && c.u64().is_none() {
        return Split::NeedMore;
    }
    for _ in 0..blobs {
        let Some(len) = c.u32() else {
            return Split::NeedMore;
        };
        if len as usize > crate::framing::TEE_MAX_MESSAGE {
            // Cannot be a message: let the TA reject what arrived.
            return Split::Whole;
        }
        c.pos += len as usize;
        if c.pos > buf.len() {
            return Split::NeedMore;
        }
    }
    Split::Message(c.pos)
}

/// A response: `cmd | 1`, then `error, user_id` and the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// `ERROR_NONE` with the serialized body that follows the header.
    Ok {
        /// The request's cmd.
        cmd: u32,
        /// The request's user id.
        user_id: u32,
        /// The message-specific fields.
        body: Vec<u8>,
    },
    /// `ERROR_RETRY` with the remaining timeout in ms.
    Retry {
        /// The request's cmd.
        cmd: u32,
        /// The request's user id.
        user_id: u32,
        /// Milliseconds until the next attempt is accepted.
        timeout_ms: u32,
    },
    /// Any other error (header only).
    Error {
        /// The request's cmd.
        cmd: u32,
        /// The request's user id.
        user_id: u32,
        /// `error::INVALID` or `error::UNKNOWN`.
        error: u32,
    },
}

/// Appends a blob.
pub fn put_blob(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

impl Response {
    /// The error answer `error` (`error::INVALID` or `error::UNKNOWN`) to
    /// request `cmd` of `user_id`.
    pub fn error(cmd: u32, user_id: u32, error: u32) -> Self {
        Response::Error {
            cmd,
            user_id,
            error,
        }
    }

    /// The message bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut m = Vec::new();
        let (cmd, error, user_id) = match self {
            Response::Ok { cmd, user_id, .. } => (*cmd, error::NONE, *user_id),
            Response::Retry { cmd, user_id, .. } => (*cmd, error::RETRY, *user_id),
            Response::Error {
                cmd,
                user_id,
                error,
            } => (*cmd, *error, *user_id),
        };
        for v in [cmd | RESP_BIT, error, user_id] {
            m.extend_from_slice(&v.to_le_bytes());
        }
        match self {
            Response::Ok { body, .. } => m.extend_from_slice(body),
            Response::Retry { timeout_ms, .. } => m.extend_from_slice(&timeout_ms.to_le_bytes()),
            Response::Error { .. } => {}
        }
        m
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An AOSP `ENROLL` message.
    pub(crate) fn enroll_msg(uid: u32, desired: &[u8], current: &[u8], handle: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        for v in [ENROLL, 0, uid] {
            m.extend_from_slice(&v.to_le_bytes());
        }
        put_blob(&mut m, desired);
        put_blob(&mut m, current);
        put_blob(&mut m, handle);
        m
    }

    /// An AOSP `VERIFY` message.
    pub(crate) fn verify_msg(user_id: u32, challenge: u64, handle: &[u8], pw: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        for v in [VERIFY, 0, user_id] {
            m.extend_from_slice(&v.to_le_bytes());
        }
        m.extend_from_slice(&challenge.to_le_bytes());
        put_blob(&mut m, handle);
        put_blob(&mut m, pw);
        m
    }

    #[test]
    fn parses_aosp_verify_and_enroll() {
        let m = verify_msg(10, 0x1122334455667788, b"handle", b"pw");
        assert_eq!(
            parse(&m),
            Ok(Request::Verify {
                user_id: 10,
                challenge: 0x1122334455667788,
                handle: b"handle".to_vec(),
                password: b"pw".to_vec()
            })
        );
        assert_eq!(split(&m), Split::Message(m.len()));
        // Distinct blobs: the fields are read in the order they are written.
        let e = enroll_msg(3, b"new", b"cur", b"hdl");
        assert_eq!(
            parse(&e),
            Ok(Request::Enroll {
                user_id: 3,
                desired: b"new".to_vec(),
                current: b"cur".to_vec(),
                handle: b"hdl".to_vec()
            })
        );
    }

    #[test]
    fn truncated_and_lying_messages_do_not_parse() {
        let m = verify_msg(10, 1, b"handle", b"pw");
        for cut in 0..m.len() {
            assert!(parse(&m[..cut]).is_err(), "cut {cut}");
            assert_eq!(split(&m[..cut]), Split::NeedMore, "cut {cut}");
        }
        let mut lie = m.clone();
        // The handle's length claims 4 GiB.
        lie[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse(&lie).is_err());
        assert_eq!(split(&lie), Split::Whole);
        assert_eq!(
            parse(&[9, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0]),
            Err(ParseError { cmd: 9, user_id: 5 })
        );
    }

    #[test]
    fn responses_encode_as_aosp_serializes() {
        let r = Response::Retry {
            cmd: VERIFY,
            user_id: 7,
            timeout_ms: 30_000,
        }
        .encode();
        assert_eq!(r.len(), 16);
        assert_eq!(u32_at(&r, 0), Some(VERIFY | RESP_BIT));
        assert_eq!(u32_at(&r, 4), Some(error::RETRY));
        assert_eq!(u32_at(&r, 8), Some(7));
        assert_eq!(u32_at(&r, 12), Some(30_000));
        let e = Response::Error {
            cmd: ENROLL,
            user_id: 1,
            error: error::INVALID,
        }
        .encode();
        assert_eq!(e.len(), 12);
    }
}
