//! Trusty secure storage's client protocol (`interface/storage/storage.h`):
//! `struct storage_msg {u32 cmd, op_id, flags, size; i32 result; u32
//! reserved}` + payload; responses echo `cmd | 1` and `op_id`.

use std::fmt;

use super::{u32_at, u64_at, Channel};

/// `sizeof(struct storage_msg)`.
pub const HEADER_LEN: usize = 24;
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
/// `STORAGE_END_TRANSACTION`.
pub const END_TRANSACTION: u32 = 9 << 1;
/// `STORAGE_MSG_FLAG_TRANSACT_COMPLETE`.
pub const TRANSACT_COMPLETE: u32 = 4;
/// `STORAGE_FILE_OPEN_CREATE`.
pub const OPEN_CREATE: u32 = 1;
/// `STORAGE_FILE_OPEN_TRUNCATE`.
pub const OPEN_TRUNCATE: u32 = 4;
/// `STORAGE_ERR_NOT_VALID`.
pub const ERR_NOT_VALID: i32 = 2;
/// `STORAGE_ERR_NOT_FOUND`.
pub const ERR_NOT_FOUND: i32 = 5;
/// Current AOSP's `STORAGE_ERR_CORRUPTED` (tamper or rollback detected).
pub const ERR_CORRUPTED: i32 = 10;
/// Bytes of data in one write or read message: within both the vsock
/// (3840) and the TEE path's (4096) message limits.
pub const CHUNK: usize = 3072;

/// Why a storage operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageError {
    /// The channel failed (no response).
    Transport(String),
    /// The service answered `op` with a non-zero `result`.
    Result {
        /// `open`, `write`, `read`, `get_size`, `commit`, `close`.
        op: &'static str,
        /// `enum storage_err`.
        result: i32,
    },
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageError::Transport(e) => write!(f, "{e}"),
            StorageError::Result { op, result } => write!(f, "{op}: storage error {result}"),
        }
    }
}

impl From<String> for StorageError {
    fn from(e: String) -> Self {
        StorageError::Transport(e)
    }
}

/// A storage client on a channel: numbers its requests and checks that
/// each response belongs to its request.
pub struct Storage<'a> {
    ch: &'a mut dyn Channel,
    op_id: u32,
}

impl<'a> Storage<'a> {
    /// A client on `ch` (one storage channel: handles and the transaction
    /// live as long as it does).
    pub fn new(ch: &'a mut dyn Channel) -> Self {
        Storage { ch, op_id: 0 }
    }

    /// One request; the response's payload, or the service's result.
    fn call(
        &mut self,
        op: &'static str,
        cmd: u32,
        flags: u32,
        payload: &[u8],
    ) -> Result<Vec<u8>, StorageError> {
        self.op_id += 1;
        let mut m = Vec::with_capacity(HEADER_LEN + payload.len());
        for v in [cmd, self.op_id, flags, 0, 0, 0] {
            m.extend_from_slice(&v.to_le_bytes());
        }
        m.extend_from_slice(payload);
        let r = self.ch.call(&m)?;
        let (rcmd, rop, result) = (u32_at(&r, 0)?, u32_at(&r, 4)?, u32_at(&r, 16)? as i32);
        if rcmd != cmd | 1 || rop != self.op_id {
            return Err(StorageError::Transport(format!(
                "{op}: response cmd {rcmd} op_id {rop} to cmd {cmd} op_id {} (result {result})",
                self.op_id
            )));
        }
        if result != 0 {
            return Err(StorageError::Result { op, result });
        }
        Ok(r[HEADER_LEN..].to_vec())
    }

    /// `FILE_OPEN` with `flags` (`OPEN_*`): the handle.
    pub fn open(&mut self, name: &str, flags: u32) -> Result<u32, StorageError> {
        let mut p = flags.to_le_bytes().to_vec();
        p.extend_from_slice(name.as_bytes());
        let r = self.call("open", FILE_OPEN, 0, &p)?;
        Ok(u32_at(&r, 0)?)
    }

    /// `FILE_WRITE` of `data` at `offset` (at most [`CHUNK`] bytes), into
    /// the channel's transaction.
    pub fn write(&mut self, handle: u32, offset: u64, data: &[u8]) -> Result<(), StorageError> {
        let mut p = offset.to_le_bytes().to_vec();
        p.extend_from_slice(&handle.to_le_bytes());
        p.extend_from_slice(&0u32.to_le_bytes());
        p.extend_from_slice(data);
        self.call("write", FILE_WRITE, 0, &p).map(|_| ())
    }

    /// `FILE_READ` of up to `len` bytes at `offset`.
    pub fn read(&mut self, handle: u32, offset: u64, len: u32) -> Result<Vec<u8>, StorageError> {
        let mut p = handle.to_le_bytes().to_vec();
        p.extend_from_slice(&len.to_le_bytes());
        p.extend_from_slice(&offset.to_le_bytes());
        self.call("read", FILE_READ, 0, &p)
    }

    /// `FILE_GET_SIZE`.
    pub fn size(&mut self, handle: u32) -> Result<u64, StorageError> {
        let r = self.call("get_size", FILE_GET_SIZE, 0, &handle.to_le_bytes())?;
        Ok(u64_at(&r, 0)?)
    }

    /// `END_TRANSACTION` with `TRANSACT_COMPLETE`: commits the channel's
    /// changes.
    pub fn commit(&mut self) -> Result<(), StorageError> {
        self.call("commit", END_TRANSACTION, TRANSACT_COMPLETE, &[])
            .map(|_| ())
    }

    /// `FILE_CLOSE`.
    pub fn close(&mut self, handle: u32) -> Result<(), StorageError> {
        self.call("close", FILE_CLOSE, 0, &handle.to_le_bytes())
            .map(|_| ())
    }

    /// Writes `data` from offset 0 of the open `handle`, in chunks.
    pub fn write_all(&mut self, handle: u32, data: &[u8]) -> Result<(), StorageError> {
        for (i, c) in data.chunks(CHUNK).enumerate() {
            self.write(handle, (i * CHUNK) as u64, c)?;
        }
        Ok(())
    }

    /// Reads the whole open file `handle` (its size, then chunks).
    pub fn read_all(&mut self, handle: u32) -> Result<Vec<u8>, StorageError> {
        let size = self.size(handle)?;
        let mut out = Vec::new();
        while (out.len() as u64) < size {
            let want = (size - out.len() as u64).min(CHUNK as u64) as u32;
            let got = self.read(handle, out.len() as u64, want)?;
            if got.is_empty() {
                return Err(StorageError::Transport(format!(
                    "read: no bytes at offset {} of a {size}-byte file",
                    out.len()
                )));
            }
            out.extend_from_slice(&got);
        }
        Ok(out)
    }

    /// Creates (or truncates) `name`, writes `data`, commits, closes.
    pub fn write_file(&mut self, name: &str, data: &[u8]) -> Result<(), StorageError> {
        let h = self.open(name, OPEN_CREATE | OPEN_TRUNCATE)?;
        self.write_all(h, data)?;
        self.commit()?;
        self.close(h)
    }

    /// Opens `name` (which must exist) and reads all of it.
    pub fn read_file(&mut self, name: &str) -> Result<Vec<u8>, StorageError> {
        let h = self.open(name, 0)?;
        let data = self.read_all(h)?;
        self.close(h)?;
        Ok(data)
    }
}

/// Prints the outcome of a storage operation as `key=value` lines:
/// `<tag>_result` (0, or the service's error) and `<tag>_op` (the failed
/// operation), or `<tag>_error` for a transport failure (returned as
/// `Err`: the tool failed, not the storage).
pub fn report<T>(tag: &str, r: Result<T, StorageError>) -> Result<Option<T>, String> {
    match r {
        Ok(v) => {
            println!("{tag}_result=0");
            Ok(Some(v))
        }
        Err(StorageError::Result { op, result }) => {
            println!("{tag}_result={result}");
            println!("{tag}_op={op}");
            Ok(None)
        }
        Err(StorageError::Transport(e)) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ta::fake::Scripted;

    fn resp(cmd: u32, op_id: u32, result: i32, payload: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        for v in [cmd | 1, op_id, 0, 0, result as u32, 0] {
            m.extend_from_slice(&v.to_le_bytes());
        }
        m.extend_from_slice(payload);
        m
    }

    #[test]
    fn write_file_sends_open_writes_commit_close() {
        let data = vec![7u8; CHUNK + 10];
        let mut ch = Scripted::new(vec![
            resp(FILE_OPEN, 1, 0, &3u32.to_le_bytes()),
            resp(FILE_WRITE, 2, 0, &[]),
            resp(FILE_WRITE, 3, 0, &[]),
            resp(END_TRANSACTION, 4, 0, &[]),
            resp(FILE_CLOSE, 5, 0, &[]),
        ]);
        Storage::new(&mut ch).write_file("f.x", &data).unwrap();
        let s = &ch.sent;
        assert_eq!(u32_at(&s[0], 0).unwrap(), FILE_OPEN);
        assert_eq!(u32_at(&s[0], 24).unwrap(), OPEN_CREATE | OPEN_TRUNCATE);
        assert_eq!(&s[0][28..], b"f.x");
        // Second write: offset CHUNK, handle 3, reserved 0, 10 bytes.
        assert_eq!(u64_at(&s[2], 24).unwrap(), CHUNK as u64);
        assert_eq!(u32_at(&s[2], 32).unwrap(), 3);
        assert_eq!(s[2].len(), 24 + 16 + 10);
        assert_eq!(u32_at(&s[3], 8).unwrap(), TRANSACT_COMPLETE);
        assert_eq!(u32_at(&s[4], 24).unwrap(), 3);
    }

    #[test]
    fn read_file_reads_the_size_in_chunks() {
        let mut ch = Scripted::new(vec![
            resp(FILE_OPEN, 1, 0, &0u32.to_le_bytes()),
            resp(FILE_GET_SIZE, 2, 0, &5u64.to_le_bytes()),
            resp(FILE_READ, 3, 0, b"hello"),
            resp(FILE_CLOSE, 4, 0, &[]),
        ]);
        assert_eq!(Storage::new(&mut ch).read_file("f").unwrap(), b"hello");
        // READ: handle 0, size 5, offset 0.
        assert_eq!(u32_at(&ch.sent[2], 28).unwrap(), 5);
    }

    #[test]
    fn errors_name_the_operation_or_the_transport() {
        let mut ch = Scripted::new(vec![resp(FILE_OPEN, 1, ERR_NOT_FOUND, &[])]);
        assert_eq!(
            Storage::new(&mut ch).read_file("f"),
            Err(StorageError::Result {
                op: "open",
                result: ERR_NOT_FOUND
            })
        );
        // A response to another request is a transport error.
        let mut ch = Scripted::new(vec![resp(FILE_OPEN, 9, 0, &[0; 4])]);
        assert!(matches!(
            Storage::new(&mut ch).open("f", 0),
            Err(StorageError::Transport(_))
        ));
        let mut ch = Scripted::new(vec![vec![0; 3]]);
        assert!(matches!(
            Storage::new(&mut ch).open("f", 0),
            Err(StorageError::Transport(_))
        ));
        assert_eq!(report("t", Ok::<_, StorageError>(1)), Ok(Some(1)));
        assert_eq!(
            report::<()>(
                "t",
                Err(StorageError::Result {
                    op: "read",
                    result: 10
                })
            ),
            Ok(None)
        );
        assert!(report::<()>("t", Err(StorageError::Transport("x".into()))).is_err());
    }
}
