//! Secure storage (`com.android.trusty.storage.client.td`) with the
//! client-facing semantics of Trusty's storage service
//! (`storage/client_tipc.c`): file handles per channel, and a transaction
//! per channel that collects changes until a commit (`docs/trusty.md`,
//! "Secure storage").
//!
//! [`StorageSession`] is the pure core: one channel's handles and
//! transaction, given the namespace's committed state ([`SecureStore`])
//! for each message. The bytes of its open transaction are charged to its
//! guest's [`TransactionBudget`] ([`budget`]), shared by all of that
//! guest's channels.

pub mod budget;
pub mod proto;

use std::collections::BTreeMap;
use std::sync::Arc;

use vmstack_log::{guest_info, guest_warn};

use self::budget::BudgetShare;
pub use self::budget::{TransactionBudget, MAX_GUEST_TRANSACTION_BYTES};
use self::proto::{err, list, Header, HEADER_LEN, MSG_FLAG_TRANSACT_COMPLETE};
use crate::store::{is_valid_name, Change, Limits, SecureStore, StoreError, MAX_NAME_LEN};
use crate::ta::le::{u32_at, u64_at};

/// Most files one channel may have open.
pub const MAX_OPEN_FILES: usize = 64;
/// Most bytes one transaction may hold: its files' new contents plus
/// [`PENDING_ENTRY_OVERHEAD`] and the name for every file it touches. All
/// open transactions of one guest together are held to
/// [`MAX_GUEST_TRANSACTION_BYTES`] as well.
pub const MAX_TRANSACTION_BYTES: usize = 4 << 20;
/// Most files (created, changed, deleted or moved names) one transaction
/// may touch; a namespace with a smaller file limit
/// ([`Limits::max_files`]) caps it at that.
pub const MAX_TRANSACTION_ENTRIES: usize = 512;
/// Bytes charged against [`MAX_TRANSACTION_BYTES`] for each file a
/// transaction touches, on top of its name and contents (the host memory
/// an entry costs, so that empty files are not free).
pub const PENDING_ENTRY_OVERHEAD: usize = 256;
/// Bytes of list entries per `FILE_LIST` response (Trusty's buffer).
const LIST_BUF: usize = 1024;

/// A file's state in the open transaction.
#[derive(Debug, Clone)]
struct Pending {
    /// New contents, or `None` if the transaction deletes the file.
    data: Option<Vec<u8>>,
    /// The committed version when the transaction first touched the
    /// file (`None`: did not exist). A commit fails if it changed since.
    base: Option<u64>,
}

/// An operation's failure: the result code, and whether it also fails
/// the open transaction.
struct OpError {
    code: i32,
    fail_transaction: bool,
}

fn invalid() -> OpError {
    OpError {
        code: err::NOT_VALID,
        fail_transaction: false,
    }
}

fn status(code: i32) -> OpError {
    OpError {
        code,
        fail_transaction: false,
    }
}

impl From<StoreError> for OpError {
    fn from(e: StoreError) -> Self {
        guest_warn!("storage: {e}");
        OpError {
            code: match e {
                StoreError::Integrity(_) => err::CORRUPTED,
                StoreError::Io(_) | StoreError::Quota(_) => err::GENERIC,
            },
            fail_transaction: true,
        }
    }
}

type OpResult<T> = Result<T, OpError>;

/// A transaction over one of its limits (or its guest's budget):
/// `GENERIC`, and the transaction fails (its changes are dropped;
/// `TRANSACT` until `END_TRANSACTION`), as for a store error. Trusty's
/// storage protocol has no out-of-space status: Trusty answers a file
/// system without free blocks the same way.
fn over_limit() -> OpError {
    OpError {
        code: err::GENERIC,
        fail_transaction: true,
    }
}

/// What an entry for `name` with `data_len` bytes of contents counts
/// against [`MAX_TRANSACTION_BYTES`].
fn entry_cost(name: &str, data_len: usize) -> usize {
    PENDING_ENTRY_OVERHEAD
        .saturating_add(name.len())
        .saturating_add(data_len)
}

/// One storage channel: open handles and the open transaction.
#[derive(Debug)]
pub struct StorageSession {
    max_msg: usize,
    limits: Limits,
    handles: Vec<Option<String>>,
    pending: BTreeMap<String, Pending>,
    failed: bool,
    /// What the open transaction is charged in its guest's budget: at
    /// least [`Self::transaction_bytes`] after every message, nothing
    /// once it commits or is discarded, given back when the session is
    /// dropped (the channel closes).
    share: BudgetShare,
}

impl StorageSession {
    /// A channel whose messages are at most `max_msg` bytes, on a
    /// namespace with `limits`, with a [`MAX_GUEST_TRANSACTION_BYTES`]
    /// budget of its own (tests and fuzzing; the service shares one budget
    /// among a guest's channels with [`Self::with_budget`]).
    pub fn new(max_msg: usize, limits: Limits) -> Self {
        Self::with_budget(
            max_msg,
            limits,
            TransactionBudget::new(MAX_GUEST_TRANSACTION_BYTES),
        )
    }

    /// A channel like [`Self::new`] whose open transaction is charged to
    /// `budget`, its guest's.
    pub fn with_budget(max_msg: usize, limits: Limits, budget: Arc<TransactionBudget>) -> Self {
        StorageSession {
            max_msg,
            limits,
            handles: Vec::new(),
            pending: BTreeMap::new(),
            failed: false,
            share: BudgetShare::new(budget),
        }
    }

    /// Whether the channel has uncommitted changes.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Handles one message against the namespace `store`.
    pub fn on_message(&mut self, msg: &[u8], store: &mut dyn SecureStore) -> Vec<u8> {
        let response = self.handle(msg, store);
        // A message that shrank the transaction (a truncate, a delete of
        // a file it wrote) gives the bytes back to the guest's budget.
        let bytes = self.transaction_bytes();
        self.share.shrink_to(bytes);
        debug_assert!(
            self.share.held() >= bytes,
            "every growth is charged by the operation that makes it"
        );
        response
    }

    /// Handles one message; [`Self::on_message`] then settles the
    /// transaction's charge.
    fn handle(&mut self, msg: &[u8], store: &mut dyn SecureStore) -> Vec<u8> {
        let Some(h) = Header::parse(msg) else {
            let h = Header {
                cmd: proto::RESP_MSG_ERR,
                ..Header::default()
            };
            return h.response(err::NOT_VALID, &[]);
        };
        let payload = &msg[HEADER_LEN..];
        let complete = h.flags & MSG_FLAG_TRANSACT_COMPLETE != 0;

        if h.cmd == proto::END_TRANSACTION {
            if complete {
                let ok = if self.failed {
                    self.discard();
                    false
                } else {
                    self.commit(store).is_ok()
                };
                self.failed = false;
                return h.response(if ok { err::NO_ERROR } else { err::TRANSACT }, &[]);
            }
            self.discard();
            self.failed = false;
            return h.response(err::NO_ERROR, &[]);
        }
        if self.failed {
            if complete {
                self.failed = false;
            }
            return h.response(err::TRANSACT, &[]);
        }

        let result: OpResult<Vec<u8>> = match h.cmd {
            proto::FILE_DELETE => self.delete(payload, store).map(|()| Vec::new()),
            proto::FILE_OPEN => self
                .open(payload, store)
                .map(|fh| fh.to_le_bytes().to_vec()),
            proto::FILE_CLOSE => self.close_file(payload).map(|()| Vec::new()),
            proto::FILE_READ => return self.read(&h, payload, store),
            proto::FILE_WRITE => self.write(payload, store).map(|()| Vec::new()),
            proto::FILE_GET_SIZE => return self.get_size(&h, payload, store),
            proto::FILE_SET_SIZE => self.set_size(payload, store).map(|()| Vec::new()),
            proto::FILE_MOVE => self.move_file(payload, store).map(|()| Vec::new()),
            proto::FILE_LIST => return self.list(&h, payload, store),
            _ => Err(status(err::UNIMPLEMENTED)),
        };
        match result {
            Ok(out) => {
                if complete {
                    if let Err(code) = self.commit(store) {
                        guest_info!("storage: commit failed ({code})");
                        self.failed = true;
                        if h.cmd == proto::FILE_OPEN {
                            if let Some(fh) = u32_at(&out, 0) {
                                self.free_handle(fh);
                            }
                        }
                        return h.response(err::GENERIC, &[]);
                    }
                }
                h.response(err::NO_ERROR, &out)
            }
            Err(e) => {
                if e.fail_transaction {
                    self.discard();
                    self.failed = true;
                }
                h.response(e.code, &[])
            }
        }
    }

    /// Drops the open transaction and gives its bytes back to the
    /// guest's budget.
    fn discard(&mut self) {
        self.pending.clear();
        self.share.release();
    }

    /// Commits the open transaction: all of it or nothing. A file another
    /// channel committed since this one first touched it is a conflict.
    /// Either way the transaction is over and its bytes go back to the
    /// guest's budget.
    fn commit(&mut self, store: &mut dyn SecureStore) -> Result<(), i32> {
        let pending = std::mem::take(&mut self.pending);
        let result = Self::apply(pending, store);
        self.share.release();
        result
    }

    /// Commits `pending` to `store` unless another channel committed one
    /// of its files since it was first touched.
    fn apply(pending: BTreeMap<String, Pending>, store: &mut dyn SecureStore) -> Result<(), i32> {
        if pending.is_empty() {
            return Ok(());
        }
        for (name, p) in &pending {
            let now = store
                .meta(name)
                .map_err(|e| OpError::from(e).code)?
                .map(|m| m.version);
            if now != p.base {
                guest_info!(
                    "storage: transaction conflicts with a commit of another channel ({name})"
                );
                return Err(err::GENERIC);
            }
        }
        let changes = pending
            .into_iter()
            .map(|(name, p)| Change { name, data: p.data })
            .collect();
        store.commit(changes).map_err(|e| OpError::from(e).code)
    }

    // ---- the transaction's view of the namespace ----

    /// The size of `name` as this channel sees it, `None` if absent.
    fn size_of(&self, name: &str, store: &dyn SecureStore) -> OpResult<Option<u64>> {
        Ok(match self.pending.get(name) {
            Some(p) => p.data.as_ref().map(|d| d.len() as u64),
            None => store.meta(name)?.map(|m| m.size),
        })
    }

    /// The contents of an existing `name` as this channel sees it.
    fn contents(&self, name: &str, store: &dyn SecureStore) -> OpResult<Vec<u8>> {
        match self.pending.get(name) {
            Some(Pending { data: Some(d), .. }) => Ok(d.clone()),
            Some(Pending { data: None, .. }) => Err(invalid()),
            None => Ok(store.read(name)?),
        }
    }

    /// `name`'s entry in the transaction, loaded from the store on first
    /// touch.
    ///
    /// A new entry must fit the transaction's limits (entries and bytes):
    /// if not, the transaction fails (`GENERIC`, as for its size).
    fn touch(&mut self, name: &str, store: &dyn SecureStore) -> OpResult<&mut Pending> {
        if !self.pending.contains_key(name) {
            if self.pending.len() >= self.max_entries() {
                guest_info!(
                    "storage: transaction over its limit of {} files",
                    self.max_entries()
                );
                return Err(over_limit());
            }
            // The contents an entry keeps are checked by the operation
            // that keeps them (write, set-size, move).
            self.reserve(self.transaction_bytes().saturating_add(entry_cost(name, 0)))?;
            let meta = store.meta(name)?;
            let data = match meta {
                Some(_) => {
                    let mut d = store.read(name)?;
                    // Charged by capacity: keep no slack.
                    d.shrink_to_fit();
                    Some(d)
                }
                None => None,
            };
            self.pending.insert(
                name.to_string(),
                Pending {
                    data,
                    base: meta.map(|m| m.version),
                },
            );
        }
        match self.pending.get_mut(name) {
            Some(p) => Ok(p),
            None => Err(status(err::GENERIC)),
        }
    }

    /// The most files this channel's transaction may touch.
    fn max_entries(&self) -> usize {
        MAX_TRANSACTION_ENTRIES.min(self.limits.max_files)
    }

    /// The bytes the open transaction holds, as counted against
    /// [`MAX_TRANSACTION_BYTES`]: the allocated capacity of every entry's
    /// contents (not their length: a shrunk buffer that kept its memory
    /// still counts it), plus each entry's overhead and name.
    fn transaction_bytes(&self) -> usize {
        self.pending
            .iter()
            .map(|(name, p)| entry_cost(name, p.data.as_ref().map_or(0, Vec::capacity)))
            .fold(0, usize::saturating_add)
    }

    /// Charges the open transaction at `bytes` (what it holds, or is
    /// about to): within [`MAX_TRANSACTION_BYTES`], and growth only as far
    /// as the guest's budget has room. Over either, the transaction fails
    /// ([`over_limit`]).
    fn reserve(&mut self, bytes: usize) -> OpResult<()> {
        if bytes > MAX_TRANSACTION_BYTES {
            guest_info!("storage: transaction over its size limit ({bytes} bytes)");
            return Err(over_limit());
        }
        if let Err(e) = self.share.set(bytes) {
            guest_info!("storage: transaction over the guest's budget: {e}");
            return Err(over_limit());
        }
        Ok(())
    }

    /// Makes the contents of `name` (an entry of the transaction that
    /// exists) `new_len` bytes long, zero-filling any growth.
    ///
    /// Growth is checked against [`MAX_TRANSACTION_BYTES`] and the guest's
    /// budget *before* it is allocated (over either: the transaction
    /// fails, as for [`Self::check_transaction_size`]); a shrink gives the
    /// memory back, so that what the transaction holds is what it is
    /// charged for.
    fn resize_entry(&mut self, name: &str, new_len: usize) -> OpResult<&mut Vec<u8>> {
        let held = self.transaction_bytes();
        let Some(capacity) = self.entry_capacity(name) else {
            return Err(status(err::GENERIC));
        };
        if new_len > capacity {
            self.reserve(held.saturating_sub(capacity).saturating_add(new_len))?;
        }
        let Some(file) = self.pending.get_mut(name).and_then(|p| p.data.as_mut()) else {
            return Err(status(err::GENERIC));
        };
        if new_len > file.capacity() {
            file.reserve_exact(new_len - file.len());
        }
        file.resize(new_len, 0);
        if file.capacity() > new_len {
            file.shrink_to_fit();
        }
        Ok(file)
    }

    /// The allocated capacity of the contents of `name`, an entry of the
    /// transaction that exists.
    fn entry_capacity(&self, name: &str) -> Option<usize> {
        self.pending
            .get(name)
            .and_then(|p| p.data.as_ref())
            .map(Vec::capacity)
    }

    /// Charges the transaction for what it holds now (see
    /// [`Self::reserve`]).
    fn check_transaction_size(&mut self) -> OpResult<()> {
        self.reserve(self.transaction_bytes())
    }

    // ---- handles ----

    fn handle_name(&self, fh: u32) -> OpResult<String> {
        self.handles
            .get(fh as usize)
            .and_then(|h| h.clone())
            .ok_or_else(invalid)
    }

    /// The name behind an open handle whose file still exists.
    fn live_handle(&self, fh: u32, store: &dyn SecureStore) -> OpResult<(String, u64)> {
        let name = self.handle_name(fh)?;
        match self.size_of(&name, store)? {
            Some(size) => Ok((name, size)),
            None => Err(invalid()),
        }
    }

    fn alloc_handle(&mut self, name: &str) -> OpResult<u32> {
        let slot = match self.handles.iter().position(Option::is_none) {
            Some(i) => i,
            None if self.handles.len() < MAX_OPEN_FILES => {
                self.handles.push(None);
                self.handles.len() - 1
            }
            None => return Err(invalid()),
        };
        self.handles[slot] = Some(name.to_string());
        Ok(slot as u32)
    }

    fn free_handle(&mut self, fh: u32) {
        if let Some(h) = self.handles.get_mut(fh as usize) {
            *h = None;
        }
        while matches!(self.handles.last(), Some(None)) {
            self.handles.pop();
        }
    }

    // ---- commands ----

    fn name(bytes: &[u8]) -> OpResult<String> {
        if !is_valid_name(bytes) {
            return Err(invalid());
        }
        String::from_utf8(bytes.to_vec()).map_err(|_| invalid())
    }

    fn delete(&mut self, p: &[u8], store: &dyn SecureStore) -> OpResult<()> {
        let flags = u32_at(p, 0).ok_or_else(invalid)?;
        if flags != 0 {
            return Err(invalid());
        }
        let name = Self::name(&p[4..])?;
        if self.size_of(&name, store)?.is_none() {
            return Err(status(err::NOT_FOUND));
        }
        self.touch(&name, store)?.data = None;
        Ok(())
    }

    fn open(&mut self, p: &[u8], store: &dyn SecureStore) -> OpResult<u32> {
        let flags = u32_at(p, 0).ok_or_else(invalid)?;
        if flags & !proto::OPEN_MASK != 0 {
            return Err(invalid());
        }
        let name = Self::name(&p[4..])?;
        match self.size_of(&name, store)? {
            None if flags & proto::OPEN_CREATE == 0 => return Err(status(err::NOT_FOUND)),
            None => self.touch(&name, store)?.data = Some(Vec::new()),
            Some(_)
                if flags & proto::OPEN_CREATE != 0 && flags & proto::OPEN_CREATE_EXCLUSIVE != 0 =>
            {
                return Err(status(err::EXIST))
            }
            Some(size) if flags & proto::OPEN_TRUNCATE != 0 && size > 0 => {
                self.touch(&name, store)?.data = Some(Vec::new())
            }
            Some(_) => {}
        }
        self.alloc_handle(&name)
    }

    fn close_file(&mut self, p: &[u8]) -> OpResult<()> {
        let fh = u32_at(p, 0).ok_or_else(invalid)?;
        self.handle_name(fh)?;
        self.free_handle(fh);
        Ok(())
    }

    fn read(&mut self, h: &Header, p: &[u8], store: &mut dyn SecureStore) -> Vec<u8> {
        let r = (|| -> OpResult<Vec<u8>> {
            if p.len() < 16 {
                return Err(invalid());
            }
            let fh = u32_at(p, 0).ok_or_else(invalid)?;
            let want = u32_at(p, 4).ok_or_else(invalid)? as usize;
            let offset = u64_at(p, 8).ok_or_else(invalid)?;
            if want > self.max_msg - HEADER_LEN {
                return Err(invalid());
            }
            let (name, size) = self.live_handle(fh, store)?;
            if offset > size {
                return Err(invalid());
            }
            let data = self.contents(&name, store)?;
            let start = offset as usize;
            let end = start.saturating_add(want).min(data.len());
            Ok(data[start..end].to_vec())
        })();
        match r {
            Ok(d) => h.response(err::NO_ERROR, &d),
            // Reads never fail the transaction.
            Err(e) => h.response(e.code, &[]),
        }
    }

    fn write(&mut self, p: &[u8], store: &dyn SecureStore) -> OpResult<()> {
        if p.len() <= 16 {
            return Err(invalid());
        }
        let offset = u64_at(p, 0).ok_or_else(invalid)?;
        let fh = u32_at(p, 8).ok_or_else(invalid)?;
        let data = &p[16..];
        let (name, _) = self.live_handle(fh, store)?;
        let end = offset.checked_add(data.len() as u64).ok_or_else(invalid)?;
        if end > self.limits.max_file_size {
            return Err(invalid());
        }
        let (start, end) = (offset as usize, end as usize);
        let len = self
            .touch(&name, store)?
            .data
            .get_or_insert_with(Vec::new)
            .len();
        let file = self.resize_entry(&name, len.max(end))?;
        let Some(dst) = file.get_mut(start..end) else {
            return Err(status(err::GENERIC));
        };
        dst.copy_from_slice(data);
        self.check_transaction_size()
    }

    fn get_size(&mut self, h: &Header, p: &[u8], store: &mut dyn SecureStore) -> Vec<u8> {
        let r = (|| -> OpResult<u64> {
            if p.len() != 4 {
                return Err(invalid());
            }
            let fh = u32_at(p, 0).ok_or_else(invalid)?;
            Ok(self.live_handle(fh, store)?.1)
        })();
        match r {
            Ok(size) => h.response(err::NO_ERROR, &size.to_le_bytes()),
            Err(e) => h.response(e.code, &[]),
        }
    }

    fn set_size(&mut self, p: &[u8], store: &dyn SecureStore) -> OpResult<()> {
        if p.len() != 16 {
            return Err(invalid());
        }
        let size = u64_at(p, 0).ok_or_else(invalid)?;
        let fh = u32_at(p, 8).ok_or_else(invalid)?;
        let (name, current) = self.live_handle(fh, store)?;
        if size > self.limits.max_file_size {
            return Err(invalid());
        }
        if size != current {
            self.touch(&name, store)?.data.get_or_insert_with(Vec::new);
            self.resize_entry(&name, size as usize)?;
        }
        self.check_transaction_size()
    }

    fn move_file(&mut self, p: &[u8], store: &dyn SecureStore) -> OpResult<()> {
        let flags = u32_at(p, 0).ok_or_else(invalid)?;
        let fh = u32_at(p, 4).ok_or_else(invalid)?;
        let old_len = u32_at(p, 8).ok_or_else(invalid)? as usize;
        if flags & !proto::MOVE_MASK != 0 {
            return Err(invalid());
        }
        let names = &p[12..];
        if old_len == 0 || old_len >= names.len() {
            return Err(invalid());
        }
        let old = Self::name(&names[..old_len])?;
        let new = Self::name(&names[old_len..])?;
        if flags & proto::MOVE_OPEN_FILE != 0 && self.handle_name(fh)? != old {
            return Err(invalid());
        }
        if self.size_of(&old, store)?.is_none() {
            return Err(status(err::NOT_FOUND));
        }
        let new_exists = self.size_of(&new, store)?.is_some();
        if flags & proto::MOVE_CREATE == 0 && !new_exists {
            return Err(status(err::NOT_FOUND));
        }
        if flags & proto::MOVE_CREATE != 0
            && flags & proto::MOVE_CREATE_EXCLUSIVE != 0
            && new_exists
        {
            return Err(status(err::EXIST));
        }
        if old == new {
            return Ok(());
        }
        let data = self.contents(&old, store)?;
        self.touch(&new, store)?.data = Some(data);
        self.touch(&old, store)?.data = None;
        for h in self.handles.iter_mut().flatten() {
            if *h == old {
                h.clone_from(&new);
            }
        }
        self.check_transaction_size()
    }

    fn list(&mut self, h: &Header, p: &[u8], store: &mut dyn SecureStore) -> Vec<u8> {
        let r = (|| -> OpResult<Vec<u8>> {
            if p.len() < 2 {
                return Err(invalid());
            }
            let max_count = usize::from(p[0]);
            let last_state = p[1] & list::STATE_MASK;
            let last_name = match last_state {
                list::END => return Err(invalid()),
                list::START => None,
                _ => Some(Self::name(&p[2..])?),
            };
            let committed = store.files()?;
            let mut out = Vec::new();
            let mut count = 0usize;
            let full = |out: &Vec<u8>, count: usize| {
                (max_count != 0 && count >= max_count) || out.len() + MAX_NAME_LEN + 2 > LIST_BUF
            };
            fn add(out: &mut Vec<u8>, count: &mut usize, flags: u8, name: &str) {
                out.push(flags);
                out.extend_from_slice(name.as_bytes());
                out.push(0);
                *count += 1;
            }
            // Committed files (with what this transaction does to them),
            // then the ones it adds; each pass resumes after `last_name`.
            if last_state != list::ADDED {
                for (name, _) in &committed {
                    if last_name.as_ref().is_some_and(|l| name <= l) {
                        continue;
                    }
                    if full(&out, count) {
                        break;
                    }
                    let state = match self.pending.get(name) {
                        Some(Pending { data: None, .. }) => list::REMOVED,
                        _ => list::COMMITTED,
                    };
                    add(&mut out, &mut count, state, name);
                }
            }
            let resume_added = if last_state == list::ADDED {
                last_name.clone()
            } else {
                None
            };
            for (name, pnd) in &self.pending {
                if pnd.data.is_none() || committed.iter().any(|(c, _)| c == name) {
                    continue;
                }
                if resume_added.as_ref().is_some_and(|l| name <= l) {
                    continue;
                }
                if full(&out, count) {
                    break;
                }
                add(&mut out, &mut count, list::ADDED, name);
            }
            if !full(&out, count) {
                out.push(list::END);
            }
            Ok(out)
        })();
        match r {
            Ok(d) => h.response(err::NO_ERROR, &d),
            Err(e) => h.response(e.code, &[]),
        }
    }
}

#[cfg(test)]
mod tests;
