//! Trusty's storage client protocol (`interface/storage/storage.h`):
//! `struct storage_msg {u32 cmd, op_id, flags, size; i32 result; u32
//! reserved}` + payload, little endian, commands `n << 1`, responses set
//! bit 0.

use crate::framing::Split;
use crate::ta::le::u32_at;

/// `sizeof(struct storage_msg)`.
pub const HEADER_LEN: usize = 24;
/// `STORAGE_RESP_BIT`.
pub const RESP_BIT: u32 = 1;
/// `STORAGE_RESP_MSG_ERR`: the cmd of the answer to an unparseable message.
pub const RESP_MSG_ERR: u32 = 1;
/// `STORAGE_FILE_DELETE`.
pub const FILE_DELETE: u32 = 1 << 1;
/// `STORAGE_FILE_OPEN`.
pub const FILE_OPEN: u32 = 2 << 1;
/// `STORAGE_FILE_CLOSE`.
pub const FILE_CLOSE: u32 = 3 << 1;
/// `STORAGE_FILE_READ`.
pub const FILE_READ: u32 = 4 << 1;
/// `STORAGE_FILE_WRITE`.
pub const FILE_WRITE: u32 = 5 << 1;
/// `STORAGE_FILE_GET_SIZE`.
pub const FILE_GET_SIZE: u32 = 6 << 1;
/// `STORAGE_FILE_SET_SIZE`.
pub const FILE_SET_SIZE: u32 = 7 << 1;
/// `STORAGE_RPMB_SEND` (proxy interface only).
pub const RPMB_SEND: u32 = 8 << 1;
/// `STORAGE_END_TRANSACTION`.
pub const END_TRANSACTION: u32 = 9 << 1;
/// `STORAGE_FILE_MOVE`.
pub const FILE_MOVE: u32 = 10 << 1;
/// `STORAGE_FILE_LIST`.
pub const FILE_LIST: u32 = 11 << 1;

/// `STORAGE_MSG_FLAG_TRANSACT_COMPLETE` (= `POST_COMMIT`).
pub const MSG_FLAG_TRANSACT_COMPLETE: u32 = 0x4;

/// `STORAGE_FILE_OPEN_CREATE`.
pub const OPEN_CREATE: u32 = 1;
/// `STORAGE_FILE_OPEN_CREATE_EXCLUSIVE`.
pub const OPEN_CREATE_EXCLUSIVE: u32 = 2;
/// `STORAGE_FILE_OPEN_TRUNCATE`.
pub const OPEN_TRUNCATE: u32 = 4;
/// `STORAGE_FILE_OPEN_MASK`.
pub const OPEN_MASK: u32 = 7;
/// `STORAGE_FILE_MOVE_CREATE`.
pub const MOVE_CREATE: u32 = 1;
/// `STORAGE_FILE_MOVE_CREATE_EXCLUSIVE`.
pub const MOVE_CREATE_EXCLUSIVE: u32 = 2;
/// `STORAGE_FILE_MOVE_OPEN_FILE`.
pub const MOVE_OPEN_FILE: u32 = 4;
/// `STORAGE_FILE_MOVE_MASK`.
pub const MOVE_MASK: u32 = 7;

/// `enum storage_file_list_flag`.
pub mod list {
    /// Start listing.
    pub const START: u8 = 0;
    /// No more files.
    pub const END: u8 = 1;
    /// Committed, not removed by the transaction.
    pub const COMMITTED: u8 = 2;
    /// Added by the transaction.
    pub const ADDED: u8 = 3;
    /// Removed by the transaction.
    pub const REMOVED: u8 = 4;
    /// The state bits.
    pub const STATE_MASK: u8 = 7;
}

/// `enum storage_err`.
pub mod err {
    /// All OK.
    pub const NO_ERROR: i32 = 0;
    /// Internal failure, or a commit that failed.
    pub const GENERIC: i32 = 1;
    /// Invalid input (handle, size, name, flags).
    pub const NOT_VALID: i32 = 2;
    /// Unknown command.
    pub const UNIMPLEMENTED: i32 = 3;
    /// Not accessible in this mode.
    pub const ACCESS: i32 = 4;
    /// No such file.
    pub const NOT_FOUND: i32 = 5;
    /// The file exists (exclusive create).
    pub const EXIST: i32 = 6;
    /// The transaction is in an error state.
    pub const TRANSACT: i32 = 7;
    /// A pre/post commit failed to sync.
    pub const SYNC_FAILURE: i32 = 8;
    /// Current AOSP: the operation touches corrupted data (tamper or
    /// rollback detected).
    pub const CORRUPTED: i32 = 10;
}

/// The header of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Header {
    /// `enum storage_cmd`.
    pub cmd: u32,
    /// Chosen by the client, echoed.
    pub op_id: u32,
    /// `enum storage_msg_flag`.
    pub flags: u32,
    /// Total size (stock clients leave it 0).
    pub size: u32,
    /// `enum storage_err` (responses).
    pub result: i32,
    /// Echoed.
    pub reserved: u32,
}

impl Header {
    /// Parses the first 24 bytes.
    pub fn parse(msg: &[u8]) -> Option<Header> {
        if msg.len() < HEADER_LEN {
            return None;
        }
        Some(Header {
            cmd: u32_at(msg, 0)?,
            op_id: u32_at(msg, 4)?,
            flags: u32_at(msg, 8)?,
            size: u32_at(msg, 12)?,
            result: u32_at(msg, 16)? as i32,
            reserved: u32_at(msg, 20)?,
        })
    }

    /// The response to this request: `cmd | 1`, flags 0, the size of the
    /// whole message, `result`, and the payload only on success.
    pub fn response(&self, result: i32, payload: &[u8]) -> Vec<u8> {
        let payload = if result == err::NO_ERROR {
            payload
        } else {
            &[]
        };
        let mut m = Vec::with_capacity(HEADER_LEN + payload.len());
        let size = (HEADER_LEN + payload.len()) as u32;
        for v in [
            self.cmd | RESP_BIT,
            self.op_id,
            0,
            size,
            result as u32,
            self.reserved,
        ] {
            m.extend_from_slice(&v.to_le_bytes());
        }
        m.extend_from_slice(payload);
        m
    }
}

/// Bytes of a command's fixed request struct after the header.
pub fn fixed_request_len(cmd: u32) -> usize {
    match cmd {
        FILE_DELETE | FILE_OPEN | FILE_CLOSE | FILE_GET_SIZE => 4,
        FILE_READ | FILE_WRITE | FILE_SET_SIZE => 16,
        FILE_MOVE => 12,
        FILE_LIST => 2,
        _ => 0,
    }
}

/// How the framer splits storage messages: the header and the command's
/// fixed struct must be complete; a set `size` frames exactly.
pub fn split(buf: &[u8]) -> Split {
    let Some(h) = Header::parse(buf) else {
        return Split::NeedMore;
    };
    let size = h.size as usize;
    if size >= HEADER_LEN + fixed_request_len(h.cmd) && size <= crate::framing::TEE_MAX_MESSAGE {
        return if buf.len() >= size {
            Split::Message(size)
        } else {
            Split::NeedMore
        };
    }
    if buf.len() < HEADER_LEN + fixed_request_len(h.cmd) {
        Split::NeedMore
    } else {
        Split::Whole
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_response_shape() {
        let mut m = Vec::new();
        for v in [FILE_READ, 77, MSG_FLAG_TRANSACT_COMPLETE, 0, 0, 5] {
            m.extend_from_slice(&v.to_le_bytes());
        }
        let h = Header::parse(&m).unwrap();
        assert_eq!(h.cmd, FILE_READ);
        assert_eq!(h.op_id, 77);
        let r = h.response(err::NO_ERROR, b"data");
        let rh = Header::parse(&r).unwrap();
        assert_eq!(rh.cmd, FILE_READ | RESP_BIT);
        assert_eq!(rh.op_id, 77);
        assert_eq!(rh.flags, 0);
        assert_eq!(rh.size, 28);
        assert_eq!(rh.reserved, 5);
        assert_eq!(&r[24..], b"data");
        let e = h.response(err::NOT_FOUND, b"ignored");
        assert_eq!(e.len(), HEADER_LEN);
        assert_eq!(Header::parse(&e).unwrap().result, err::NOT_FOUND);
        assert_eq!(Header::parse(&m[..23]), None);
    }

    #[test]
    fn split_uses_fixed_structs_and_size() {
        let mut m = Vec::new();
        for v in [FILE_READ, 0, 0, 0, 0, 0] {
            m.extend_from_slice(&v.to_le_bytes());
        }
        assert_eq!(split(&m), Split::NeedMore);
        m.extend_from_slice(&[0; 16]);
        assert_eq!(split(&m), Split::Whole);
        m[12..16].copy_from_slice(&40u32.to_le_bytes());
        assert_eq!(split(&m), Split::Message(40));
        // A size below the fixed struct is ignored (not trusted).
        m[12..16].copy_from_slice(&30u32.to_le_bytes());
        assert_eq!(split(&m), Split::Whole);
    }
}
