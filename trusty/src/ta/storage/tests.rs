//! The storage core against AOSP-format messages (a separate file: the
//! protocol has many commands).

use super::proto::*;
use super::*;
use crate::framing::VSOCK_MAX_MESSAGE;
use crate::store::MemStore;

const COMPLETE: u32 = MSG_FLAG_TRANSACT_COMPLETE;

fn msg(cmd: u32, flags: u32, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::new();
    for v in [cmd, 0x55, flags, 0, 0, 0] {
        m.extend_from_slice(&v.to_le_bytes());
    }
    m.extend_from_slice(payload);
    m
}

fn name_req(flags: u32, name: &str) -> Vec<u8> {
    let mut p = flags.to_le_bytes().to_vec();
    p.extend_from_slice(name.as_bytes());
    p
}

fn result_of(r: &[u8]) -> i32 {
    Header::parse(r).unwrap().result
}

struct T {
    s: StorageSession,
}

impl T {
    fn new() -> Self {
        Self::with_limits(Limits::default())
    }
    /// A channel on a namespace with `limits`.
    fn with_limits(limits: Limits) -> Self {
        T {
            s: StorageSession::new(VSOCK_MAX_MESSAGE, limits),
        }
    }
    /// A channel whose transactions are charged to `budget`.
    fn with_budget(budget: &Arc<TransactionBudget>) -> Self {
        T {
            s: StorageSession::with_budget(VSOCK_MAX_MESSAGE, Limits::default(), budget.clone()),
        }
    }
    /// A store and a channel on it, both with these limits.
    fn on_store_with(max_file_size: u64, max_files: usize, max_total: u64) -> (MemStore, Self) {
        let limits = Limits {
            max_file_size,
            max_files,
            max_total,
        };
        (MemStore::with_limits(limits), Self::with_limits(limits))
    }
    fn send(
        &mut self,
        store: &mut dyn SecureStore,
        cmd: u32,
        flags: u32,
        payload: &[u8],
    ) -> Vec<u8> {
        let r = self.s.on_message(&msg(cmd, flags, payload), store);
        let h = Header::parse(&r).unwrap();
        assert_eq!(h.cmd, cmd | RESP_BIT);
        assert_eq!(h.op_id, 0x55);
        assert_eq!(h.size as usize, r.len());
        r
    }
    fn open(
        &mut self,
        st: &mut dyn SecureStore,
        flags: u32,
        name: &str,
        msg_flags: u32,
    ) -> Result<u32, i32> {
        let r = self.send(st, FILE_OPEN, msg_flags, &name_req(flags, name));
        match result_of(&r) {
            0 => Ok(u32_at(&r, 24).unwrap()),
            e => Err(e),
        }
    }
    fn write(
        &mut self,
        st: &mut dyn SecureStore,
        fh: u32,
        off: u64,
        data: &[u8],
        flags: u32,
    ) -> i32 {
        let mut p = off.to_le_bytes().to_vec();
        p.extend_from_slice(&fh.to_le_bytes());
        p.extend_from_slice(&0u32.to_le_bytes());
        p.extend_from_slice(data);
        result_of(&self.send(st, FILE_WRITE, flags, &p))
    }
    fn read(
        &mut self,
        st: &mut dyn SecureStore,
        fh: u32,
        off: u64,
        size: u32,
    ) -> Result<Vec<u8>, i32> {
        let mut p = fh.to_le_bytes().to_vec();
        p.extend_from_slice(&size.to_le_bytes());
        p.extend_from_slice(&off.to_le_bytes());
        let r = self.send(st, FILE_READ, 0, &p);
        match result_of(&r) {
            0 => Ok(r[24..].to_vec()),
            e => Err(e),
        }
    }
    fn size(&mut self, st: &mut dyn SecureStore, fh: u32) -> Result<u64, i32> {
        let r = self.send(st, FILE_GET_SIZE, 0, &fh.to_le_bytes());
        match result_of(&r) {
            0 => Ok(u64_at(&r, 24).unwrap()),
            e => Err(e),
        }
    }
    fn end(&mut self, st: &mut dyn SecureStore, commit: bool) -> i32 {
        result_of(&self.send(st, END_TRANSACTION, if commit { COMPLETE } else { 0 }, &[]))
    }
}

/// A store with file `name` created and `data` written in a committed
/// (TRANSACT_COMPLETE) write, the channel that wrote it and its handle.
fn committed(name: &str, data: &[u8]) -> (MemStore, T, u32) {
    let mut st = MemStore::new();
    let mut a = T::new();
    let fh = a.open(&mut st, OPEN_CREATE, name, 0).unwrap();
    assert_eq!(a.write(&mut st, fh, 0, data, COMPLETE), err::NO_ERROR);
    (st, a, fh)
}

#[test]
fn write_read_and_commit_visibility() {
    let mut st = MemStore::new();
    let (mut a, mut b) = (T::new(), T::new());
    let fh = a.open(&mut st, OPEN_CREATE, "f", 0).unwrap();
    assert_eq!(a.write(&mut st, fh, 0, b"hello world", 0), err::NO_ERROR);
    assert_eq!(a.read(&mut st, fh, 6, 100).unwrap(), b"world");
    // Not visible to another channel before the commit.
    assert_eq!(b.open(&mut st, 0, "f", 0), Err(err::NOT_FOUND));
    assert_eq!(a.end(&mut st, true), err::NO_ERROR);
    let fb = b.open(&mut st, 0, "f", 0).unwrap();
    assert_eq!(b.read(&mut st, fb, 0, 100).unwrap(), b"hello world");
    assert_eq!(b.size(&mut st, fb), Ok(11));
}

#[test]
fn transact_complete_flag_commits_and_end_without_it_discards() {
    let (mut st, mut a, fh) = committed("f", b"one");
    assert_eq!(st.read("f").unwrap(), b"one");
    assert_eq!(a.write(&mut st, fh, 0, b"two", 0), err::NO_ERROR);
    assert!(a.s.has_pending());
    assert_eq!(a.end(&mut st, false), err::NO_ERROR);
    assert!(!a.s.has_pending());
    assert_eq!(st.read("f").unwrap(), b"one");
    assert_eq!(a.read(&mut st, fh, 0, 10).unwrap(), b"one");
}

#[test]
fn conflicting_commits_fail_until_end_transaction() {
    let mut st = MemStore::new();
    let mut setup = T::new();
    let fh = setup.open(&mut st, OPEN_CREATE, "f", COMPLETE).unwrap();
    assert_eq!(setup.size(&mut st, fh), Ok(0));
    let (mut a, mut b) = (T::new(), T::new());
    let fa = a.open(&mut st, 0, "f", 0).unwrap();
    let fb = b.open(&mut st, 0, "f", 0).unwrap();
    assert_eq!(a.write(&mut st, fa, 0, b"from a", 0), err::NO_ERROR);
    assert_eq!(b.write(&mut st, fb, 0, b"from b", 0), err::NO_ERROR);
    assert_eq!(a.end(&mut st, true), err::NO_ERROR);
    // b's write with TRANSACT_COMPLETE: its commit conflicts.
    assert_eq!(b.write(&mut st, fb, 6, b"!", COMPLETE), err::GENERIC);
    assert_eq!(st.read("f").unwrap(), b"from a");
    // The transaction is in error until END_TRANSACTION.
    assert_eq!(b.read(&mut st, fb, 0, 10), Err(err::TRANSACT));
    assert_eq!(b.end(&mut st, false), err::NO_ERROR);
    assert_eq!(b.read(&mut st, fb, 0, 10).unwrap(), b"from a");
    // END_TRANSACTION(complete) on a conflict: TRANSACT.
    assert_eq!(a.write(&mut st, fa, 0, b"A", 0), err::NO_ERROR);
    assert_eq!(b.write(&mut st, fb, 0, b"B", COMPLETE), err::NO_ERROR);
    assert_eq!(a.end(&mut st, true), err::TRANSACT);
    assert_eq!(st.read("f").unwrap(), b"Brom a");
}

#[test]
fn open_flags_delete_and_not_found() {
    let mut st = MemStore::new();
    let mut a = T::new();
    assert_eq!(a.open(&mut st, 0, "nope", 0), Err(err::NOT_FOUND));
    let fh = a
        .open(&mut st, OPEN_CREATE | OPEN_CREATE_EXCLUSIVE, "f", 0)
        .unwrap();
    assert_eq!(
        a.open(&mut st, OPEN_CREATE | OPEN_CREATE_EXCLUSIVE, "f", 0),
        Err(err::EXIST)
    );
    assert_eq!(a.write(&mut st, fh, 0, b"data", COMPLETE), 0);
    let t = a.open(&mut st, OPEN_TRUNCATE, "f", COMPLETE).unwrap();
    assert_eq!(a.size(&mut st, t), Ok(0));
    assert_eq!(
        a.open(&mut st, 8, "f", 0),
        Err(err::NOT_VALID),
        "unknown open flag"
    );
    assert_eq!(a.open(&mut st, 0, "bad/name", 0), Err(err::NOT_VALID));
    assert_eq!(
        result_of(&a.send(&mut st, FILE_DELETE, COMPLETE, &name_req(0, "f"))),
        0
    );
    assert_eq!(st.meta("f").unwrap(), None);
    assert_eq!(
        result_of(&a.send(&mut st, FILE_DELETE, 0, &name_req(0, "f"))),
        err::NOT_FOUND
    );
    assert_eq!(
        result_of(&a.send(&mut st, FILE_DELETE, 0, &name_req(1, "f"))),
        err::NOT_VALID
    );
    // The handle of a deleted file is no longer valid.
    assert_eq!(a.size(&mut st, fh), Err(err::NOT_VALID));
}

#[test]
fn reads_sizes_and_gaps() {
    let mut st = MemStore::new();
    let mut a = T::new();
    let fh = a.open(&mut st, OPEN_CREATE, "f", 0).unwrap();
    // A write past the end leaves a zeroed gap.
    assert_eq!(a.write(&mut st, fh, 4, b"xy", 0), 0);
    assert_eq!(a.read(&mut st, fh, 0, 10).unwrap(), b"\0\0\0\0xy");
    assert_eq!(
        a.read(&mut st, fh, 6, 10).unwrap(),
        b"",
        "at the end: empty"
    );
    assert_eq!(a.read(&mut st, fh, 7, 1), Err(err::NOT_VALID));
    // Reads are limited by the message size.
    let max = (VSOCK_MAX_MESSAGE - HEADER_LEN) as u32;
    assert!(a.read(&mut st, fh, 0, max).is_ok());
    assert_eq!(a.read(&mut st, fh, 0, max + 1), Err(err::NOT_VALID));
    // SET_SIZE grows with zeros and shrinks.
    // struct storage_file_set_size_req is 16 bytes with its padding.
    let mut p = 10u64.to_le_bytes().to_vec();
    p.extend_from_slice(&fh.to_le_bytes());
    p.extend_from_slice(&[0; 4]);
    assert_eq!(result_of(&a.send(&mut st, FILE_SET_SIZE, 0, &p)), 0);
    assert_eq!(a.size(&mut st, fh), Ok(10));
    let mut p = 1u64.to_le_bytes().to_vec();
    p.extend_from_slice(&fh.to_le_bytes());
    p.extend_from_slice(&[0; 4]);
    assert_eq!(result_of(&a.send(&mut st, FILE_SET_SIZE, 0, &p)), 0);
    assert_eq!(a.read(&mut st, fh, 0, 10).unwrap(), b"\0");
    // Wrong request sizes.
    assert_eq!(
        result_of(&a.send(&mut st, FILE_GET_SIZE, 0, &[0; 8])),
        err::NOT_VALID
    );
    assert_eq!(
        result_of(&a.send(&mut st, FILE_SET_SIZE, 0, &[0; 12])),
        err::NOT_VALID
    );
    assert_eq!(
        a.write(&mut st, fh, 0, b"", 0),
        err::NOT_VALID,
        "empty write"
    );
}

#[test]
fn handles_are_bounded_and_checked() {
    let mut st = MemStore::new();
    let mut a = T::new();
    let mut hs = Vec::new();
    for i in 0..MAX_OPEN_FILES {
        hs.push(a.open(&mut st, OPEN_CREATE, &format!("f{i}"), 0).unwrap());
    }
    assert_eq!(hs[0], 0);
    assert_eq!(
        a.open(&mut st, OPEN_CREATE, "one-more", 0),
        Err(err::NOT_VALID)
    );
    assert_eq!(
        result_of(&a.send(&mut st, FILE_CLOSE, 0, &hs[3].to_le_bytes())),
        0
    );
    assert_eq!(
        a.open(&mut st, OPEN_CREATE, "one-more", 0),
        Ok(3),
        "lowest free handle"
    );
    assert_eq!(a.size(&mut st, 999), Err(err::NOT_VALID));
    assert_eq!(
        result_of(&a.send(&mut st, FILE_CLOSE, 0, &999u32.to_le_bytes())),
        err::NOT_VALID
    );
}

fn move_req(flags: u32, fh: u32, old: &str, new: &str) -> Vec<u8> {
    let mut p = Vec::new();
    for v in [flags, fh, old.len() as u32] {
        p.extend_from_slice(&v.to_le_bytes());
    }
    p.extend_from_slice(old.as_bytes());
    p.extend_from_slice(new.as_bytes());
    p
}

#[test]
fn move_renames_and_follows_the_handle() {
    let (mut st, mut a, fh) = committed("old", b"x");
    let other = a.open(&mut st, OPEN_CREATE, "other", COMPLETE).unwrap();
    let _ = other;
    // Without CREATE the target must exist.
    let r = a.send(&mut st, FILE_MOVE, 0, &move_req(0, 0, "old", "new"));
    assert_eq!(result_of(&r), err::NOT_FOUND);
    let r = a.send(
        &mut st,
        FILE_MOVE,
        0,
        &move_req(MOVE_CREATE | MOVE_CREATE_EXCLUSIVE, 0, "old", "other"),
    );
    assert_eq!(result_of(&r), err::EXIST);
    let r = a.send(
        &mut st,
        FILE_MOVE,
        COMPLETE,
        &move_req(MOVE_CREATE | MOVE_OPEN_FILE, fh, "old", "new"),
    );
    assert_eq!(result_of(&r), 0);
    assert_eq!(st.meta("old").unwrap(), None);
    assert_eq!(st.read("new").unwrap(), b"x");
    assert_eq!(a.read(&mut st, fh, 0, 5).unwrap(), b"x", "handle follows");
    // The handle must match the old name; lengths must be sane.
    let r = a.send(
        &mut st,
        FILE_MOVE,
        0,
        &move_req(MOVE_OPEN_FILE, fh, "other", "zz"),
    );
    assert_eq!(result_of(&r), err::NOT_VALID);
    let r = a.send(&mut st, FILE_MOVE, 0, &move_req(MOVE_CREATE, 0, "new", ""));
    assert_eq!(result_of(&r), err::NOT_VALID);
}

fn list_items(r: &[u8]) -> Vec<(u8, String)> {
    assert_eq!(result_of(r), 0);
    let mut items = Vec::new();
    let mut p = &r[24..];
    while let Some((&flags, rest)) = p.split_first() {
        if flags == list::END {
            items.push((flags, String::new()));
            break;
        }
        let end = rest.iter().position(|&b| b == 0).unwrap();
        items.push((flags, String::from_utf8(rest[..end].to_vec()).unwrap()));
        p = &rest[end + 1..];
    }
    items
}

#[test]
fn list_shows_committed_added_and_removed_and_resumes() {
    let mut st = MemStore::new();
    let mut a = T::new();
    for n in ["a", "b", "c"] {
        a.open(&mut st, OPEN_CREATE, n, COMPLETE).unwrap();
    }
    assert_eq!(
        result_of(&a.send(&mut st, FILE_DELETE, 0, &name_req(0, "b"))),
        0
    );
    a.open(&mut st, OPEN_CREATE, "d", 0).unwrap();
    let all = list_items(&a.send(&mut st, FILE_LIST, 0, &[0, list::START]));
    assert_eq!(
        all,
        vec![
            (list::COMMITTED, "a".into()),
            (list::REMOVED, "b".into()),
            (list::COMMITTED, "c".into()),
            (list::ADDED, "d".into()),
            (list::END, String::new()),
        ]
    );
    // Two at a time, resuming after the last name and state.
    let first = list_items(&a.send(&mut st, FILE_LIST, 0, &[2, list::START]));
    assert_eq!(
        first,
        vec![(list::COMMITTED, "a".into()), (list::REMOVED, "b".into())]
    );
    let mut req = vec![2, list::REMOVED];
    req.extend_from_slice(b"b");
    let second = list_items(&a.send(&mut st, FILE_LIST, 0, &req));
    assert_eq!(
        second,
        vec![(list::COMMITTED, "c".into()), (list::ADDED, "d".into())]
    );
    let mut req = vec![2, list::ADDED];
    req.extend_from_slice(b"d");
    assert_eq!(
        list_items(&a.send(&mut st, FILE_LIST, 0, &req)),
        vec![(list::END, String::new())]
    );
    assert_eq!(
        result_of(&a.send(&mut st, FILE_LIST, 0, &[0, list::END])),
        err::NOT_VALID
    );
    // Another channel sees only committed files.
    let mut b = T::new();
    let theirs = list_items(&b.send(&mut st, FILE_LIST, 0, &[0, list::START]));
    assert_eq!(theirs.len(), 4);
}

#[test]
fn list_fills_at_most_one_buffer() {
    let mut st = MemStore::new();
    let mut a = T::new();
    for i in 0..40 {
        a.open(&mut st, OPEN_CREATE, &format!("{i:0>60}"), 0)
            .unwrap();
        a.send(&mut st, FILE_CLOSE, 0, &0u32.to_le_bytes());
    }
    a.end(&mut st, true);
    let r = a.send(&mut st, FILE_LIST, 0, &[0, list::START]);
    assert!(r.len() - 24 <= LIST_BUF);
    let items = list_items(&r);
    assert!(items.len() < 40 && items.iter().all(|(f, _)| *f == list::COMMITTED));
}

#[test]
fn integrity_errors_are_corrupted_and_fail_the_transaction() {
    let (mut st, mut a, fh) = committed("f", b"data");
    st.corrupt.push("f".into());
    assert_eq!(a.read(&mut st, fh, 0, 4), Err(err::CORRUPTED));
    // A read does not fail the transaction; a write that needs the
    // contents does.
    assert_eq!(a.size(&mut st, fh), Ok(4));
    assert_eq!(a.write(&mut st, fh, 0, b"x", 0), err::CORRUPTED);
    assert_eq!(a.size(&mut st, fh), Err(err::TRANSACT));
    assert_eq!(a.end(&mut st, false), 0);
    assert_eq!(a.size(&mut st, fh), Ok(4));
    // Commit failures of the store: GENERIC, then TRANSACT.
    st.corrupt.clear();
    st.fail_commits = true;
    assert_eq!(a.write(&mut st, fh, 0, b"y", COMPLETE), err::GENERIC);
    assert_eq!(a.size(&mut st, fh), Err(err::TRANSACT));
}

#[test]
fn size_limits() {
    let (mut st, mut a) = T::on_store_with(100, 2, 150);
    let fh = a.open(&mut st, OPEN_CREATE, "f", 0).unwrap();
    assert_eq!(a.write(&mut st, fh, 99, b"x", 0), 0);
    assert_eq!(a.write(&mut st, fh, 100, b"x", 0), err::NOT_VALID);
    assert_eq!(a.write(&mut st, fh, u64::MAX, b"x", 0), err::NOT_VALID);
    let g = a.open(&mut st, OPEN_CREATE, "g", 0).unwrap();
    assert_eq!(a.write(&mut st, g, 0, &[1; 60], 0), 0);
    // 160 bytes in all: over the namespace's total at commit.
    assert_eq!(a.end(&mut st, true), err::TRANSACT);
    assert_eq!(st.files().unwrap().len(), 0);
}

#[test]
fn malformed_and_unknown_messages() {
    let mut st = MemStore::new();
    let mut a = T::new();
    let r = a.s.on_message(&[1, 2, 3], &mut st);
    let h = Header::parse(&r).unwrap();
    assert_eq!((h.cmd, h.result), (RESP_MSG_ERR, err::NOT_VALID));
    assert_eq!(
        result_of(&a.send(&mut st, RPMB_SEND, 0, &[0; 16])),
        err::UNIMPLEMENTED
    );
    assert_eq!(
        result_of(&a.send(&mut st, 0x1000, 0, &[])),
        err::UNIMPLEMENTED
    );
    assert_eq!(
        result_of(&a.send(&mut st, FILE_READ, 0, &[0; 3])),
        err::NOT_VALID
    );
    assert_eq!(
        result_of(&a.send(&mut st, FILE_OPEN, 0, &[])),
        err::NOT_VALID
    );
}

#[test]
fn works_on_the_encrypted_file_store() {
    use crate::keys::{DeviceSecret, NamespaceKeys};
    use crate::store::FileStore;
    let d = tempfile::tempdir().unwrap();
    let keys = || NamespaceKeys::derive(&DeviceSecret::from_bytes([1; 32]), "g", "td");
    let mut st = FileStore::open(d.path(), keys(), Limits::default()).unwrap();
    let mut a = T::new();
    let fh = a.open(&mut st, OPEN_CREATE, "secret", 0).unwrap();
    assert_eq!(a.write(&mut st, fh, 0, b"persisted", COMPLETE), 0);
    drop(st);
    let mut st = FileStore::open(d.path(), keys(), Limits::default()).unwrap();
    let mut b = T::new();
    let fh = b.open(&mut st, 0, "secret", 0).unwrap();
    assert_eq!(b.read(&mut st, fh, 0, 100).unwrap(), b"persisted");
}

fn set_size(a: &mut T, st: &mut dyn SecureStore, fh: u32, size: u64) -> i32 {
    let mut p = size.to_le_bytes().to_vec();
    p.extend_from_slice(&fh.to_le_bytes());
    p.extend_from_slice(&0u32.to_le_bytes());
    result_of(&a.send(st, FILE_SET_SIZE, 0, &p))
}

/// After a transaction failed over a limit: its changes are gone, the
/// channel answers `TRANSACT` until `END_TRANSACTION`, then works again.
fn assert_failed_then_usable(a: &mut T, st: &mut MemStore, committed: usize) {
    assert!(!a.s.has_pending(), "the failed transaction is dropped");
    assert_eq!(a.open(st, OPEN_CREATE, "late", 0), Err(err::TRANSACT));
    assert_eq!(a.end(st, false), err::NO_ERROR);
    let fh = a.open(st, OPEN_CREATE, "after", 0).unwrap();
    assert_eq!(a.write(st, fh, 0, b"ok", COMPLETE), err::NO_ERROR);
    assert_eq!(st.files().unwrap().len(), committed + 1);
    assert_eq!(
        result_of(&a.send(st, FILE_CLOSE, 0, &fh.to_le_bytes())),
        err::NO_ERROR
    );
}

#[test]
fn a_flood_of_created_names_in_one_transaction_is_bounded() {
    // The audit's flood: OPEN_CREATE on a new name, CLOSE, never commit.
    let mut st = MemStore::new();
    let mut a = T::new();
    let limit = MAX_TRANSACTION_ENTRIES.min(Limits::default().max_files);
    let mut refused = None;
    for i in 0..10 * limit {
        match a.open(&mut st, OPEN_CREATE, &format!("flood-{i}"), 0) {
            Ok(fh) => assert_eq!(
                result_of(&a.send(&mut st, FILE_CLOSE, 0, &fh.to_le_bytes())),
                err::NO_ERROR
            ),
            Err(e) => {
                refused = Some((i, e));
                break;
            }
        }
    }
    assert_eq!(refused, Some((limit, err::GENERIC)));
    assert_failed_then_usable(&mut a, &mut st, 0);
}

#[test]
fn deletes_moves_and_writes_count_against_the_entry_limit() {
    let (mut st, mut a) = T::on_store_with(100, 4, 1000);
    for i in 0..3 {
        assert!(a.open(&mut st, OPEN_CREATE, &format!("f{i}"), 0).is_ok());
    }
    assert_eq!(a.end(&mut st, true), err::NO_ERROR);
    // Deletes: three entries, then a created name is the fourth, a
    // fifth is refused.
    for i in 0..3 {
        let r = a.send(&mut st, FILE_DELETE, 0, &name_req(0, &format!("f{i}")));
        assert_eq!(result_of(&r), err::NO_ERROR);
    }
    assert!(a.open(&mut st, OPEN_CREATE, "g0", 0).is_ok());
    assert_eq!(a.open(&mut st, OPEN_CREATE, "g1", 0), Err(err::GENERIC));
    assert_eq!(a.end(&mut st, false), err::NO_ERROR);
    // Moves touch two names each: the second move needs a fifth entry.
    let r = a.send(&mut st, FILE_MOVE, 0, &move_req(MOVE_CREATE, 0, "f0", "m0"));
    assert_eq!(result_of(&r), err::NO_ERROR);
    let r = a.send(&mut st, FILE_MOVE, 0, &move_req(MOVE_CREATE, 0, "f1", "m1"));
    assert_eq!(result_of(&r), err::NO_ERROR);
    let r = a.send(&mut st, FILE_MOVE, 0, &move_req(MOVE_CREATE, 0, "f2", "m2"));
    assert_eq!(result_of(&r), err::GENERIC);
    assert_eq!(a.end(&mut st, false), err::NO_ERROR);
    // Writes to existing files: one created name and three written files
    // fill the transaction; the handles stay open across the failure.
    // (Fresh handles: the moves renamed the old ones.)
    let fhs: Vec<u32> = (0..3)
        .map(|i| a.open(&mut st, 0, &format!("f{i}"), 0).unwrap())
        .collect();
    assert!(a.open(&mut st, OPEN_CREATE, "n0", 0).is_ok());
    for &fh in &fhs {
        assert_eq!(a.write(&mut st, fh, 0, b"w", 0), err::NO_ERROR);
    }
    assert!(a.open(&mut st, OPEN_CREATE, "n1", 0).is_err());
    assert_eq!(a.end(&mut st, false), err::NO_ERROR);
    assert_eq!(a.write(&mut st, fhs[0], 0, b"w", COMPLETE), err::NO_ERROR);
    assert_eq!(st.files().unwrap().len(), 3);
}

#[test]
fn empty_files_are_charged_against_the_size_limit() {
    let mut st = MemStore::new();
    let mut a = T::new();
    let names = ["big0", "big1", "big2", "big3"];
    // Fill the transaction to 100 bytes under its limit.
    let overhead: usize = names.iter().map(|n| PENDING_ENTRY_OVERHEAD + n.len()).sum();
    let mut left = MAX_TRANSACTION_BYTES - overhead - 100;
    for n in names {
        let fh = a.open(&mut st, OPEN_CREATE, n, 0).unwrap();
        let size = left.min(Limits::default().max_file_size as usize);
        assert_eq!(set_size(&mut a, &mut st, fh, size as u64), err::NO_ERROR);
        left -= size;
    }
    assert_eq!(left, 0);
    // An empty file is not free: its entry does not fit in 100 bytes.
    assert_eq!(a.open(&mut st, OPEN_CREATE, "e", 0), Err(err::GENERIC));
    assert_failed_then_usable(&mut a, &mut st, 0);
}

/// The host memory the channel's open transaction really holds in file
/// contents (allocated capacity, whatever the accounting says).
fn held_capacity(a: &T) -> usize {
    a.s.pending
        .values()
        .map(|p| p.data.as_ref().map_or(0, Vec::capacity))
        .sum()
}

#[test]
fn shrunk_files_do_not_keep_uncounted_memory() {
    // The audit's sequence, without committing: OPEN_CREATE, SET_SIZE to
    // the largest file, SET_SIZE 0, CLOSE, on new names. Shrinking must
    // not keep the memory: what is held stays within the limit, and is
    // what is counted.
    let mut st = MemStore::new();
    let mut a = T::new();
    let big = Limits::default().max_file_size;
    for i in 0..16 {
        let fh = a
            .open(&mut st, OPEN_CREATE, &format!("grow-{i}"), 0)
            .unwrap();
        let r = set_size(&mut a, &mut st, fh, big);
        if r == err::NO_ERROR {
            assert_eq!(set_size(&mut a, &mut st, fh, 0), err::NO_ERROR);
        }
        let held = held_capacity(&a);
        assert!(held <= MAX_TRANSACTION_BYTES, "{held} bytes held after {i}");
        assert!(a.s.transaction_bytes() >= held);
        if r != err::NO_ERROR {
            assert_eq!(r, err::GENERIC);
            assert_eq!(a.end(&mut st, false), err::NO_ERROR);
            break;
        }
        let r = a.send(&mut st, FILE_CLOSE, 0, &fh.to_le_bytes());
        assert_eq!(result_of(&r), err::NO_ERROR);
    }
}

#[test]
fn growing_writes_are_checked_before_they_allocate() {
    // Fill the transaction to just under its limit, then a write that
    // grows a file past it is refused and nothing stays held.
    let mut st = MemStore::new();
    let mut a = T::new();
    let big = Limits::default().max_file_size as usize;
    for i in 0..3 {
        let fh = a.open(&mut st, OPEN_CREATE, &format!("b{i}"), 0).unwrap();
        assert_eq!(set_size(&mut a, &mut st, fh, big as u64), err::NO_ERROR);
    }
    let fh = a.open(&mut st, OPEN_CREATE, "w", 0).unwrap();
    let room = MAX_TRANSACTION_BYTES - a.s.transaction_bytes();
    assert_eq!(
        set_size(&mut a, &mut st, fh, room as u64 - 10),
        err::NO_ERROR
    );
    let tail = room as u64 - 10;
    assert_eq!(a.write(&mut st, fh, tail, &[7; 10], 0), err::NO_ERROR);
    assert_eq!(a.s.transaction_bytes(), MAX_TRANSACTION_BYTES);
    assert_eq!(held_capacity(&a), 3 * big + room);
    assert_eq!(a.write(&mut st, fh, room as u64, b"x", 0), err::GENERIC);
    assert_eq!(held_capacity(&a), 0);
    assert_failed_then_usable(&mut a, &mut st, 0);
}

/// Creates `files` new files `<prefix><n>` of the largest size in `a`'s
/// open transaction; the first failure's result, else `NO_ERROR`.
fn hold_big_files(a: &mut T, st: &mut MemStore, prefix: &str, files: usize) -> i32 {
    let big = Limits::default().max_file_size;
    for i in 0..files {
        let fh = match a.open(st, OPEN_CREATE, &format!("{prefix}{i}"), 0) {
            Ok(fh) => fh,
            Err(e) => return e,
        };
        let r = set_size(a, st, fh, big);
        if r != err::NO_ERROR {
            return r;
        }
    }
    err::NO_ERROR
}

#[test]
fn one_guests_sessions_share_a_budget_of_uncommitted_bytes() {
    // A budget of 6 files of the largest size: two sessions of one guest
    // each within the transaction limit (3 files) but over it together.
    let big = Limits::default().max_file_size as usize;
    let guest = TransactionBudget::new(6 * big);
    let other_guest = TransactionBudget::new(6 * big);
    let mut st = MemStore::new();
    let mut other_st = MemStore::new();
    let mut a = T::with_budget(&guest);
    let mut b = T::with_budget(&guest);
    assert_eq!(hold_big_files(&mut a, &mut st, "a", 3), err::NO_ERROR);
    assert_eq!(guest.held(), a.s.transaction_bytes());
    // B's third file would take the guest over its budget: refused before
    // it is allocated, and B's transaction fails (its bytes go back).
    assert_eq!(hold_big_files(&mut b, &mut st, "b", 3), err::GENERIC);
    assert_eq!(guest.held(), a.s.transaction_bytes());
    assert_failed_then_usable(&mut b, &mut st, 0);
    // Another guest's session still holds as much as it likes.
    let mut c = T::with_budget(&other_guest);
    assert_eq!(hold_big_files(&mut c, &mut other_st, "c", 3), err::NO_ERROR);
    // A's abort frees the budget for B.
    assert_eq!(a.end(&mut st, false), err::NO_ERROR);
    assert_eq!(guest.held(), 0);
    assert_eq!(hold_big_files(&mut b, &mut st, "b", 3), err::NO_ERROR);
    assert_eq!(hold_big_files(&mut a, &mut st, "a", 3), err::GENERIC);
    assert_eq!(a.end(&mut st, false), err::NO_ERROR);
    // B's close (the session dropped) frees it for A.
    drop(b);
    assert_eq!(guest.held(), 0);
    assert_eq!(hold_big_files(&mut a, &mut st, "a", 3), err::NO_ERROR);
    // So does a commit.
    assert_eq!(a.end(&mut st, true), err::NO_ERROR);
    assert_eq!(guest.held(), 0);
    assert_eq!(st.files().unwrap().len(), 3 + 1);
}

#[test]
fn a_shrunk_transaction_gives_its_bytes_back_to_the_budget() {
    let big = Limits::default().max_file_size;
    let guest = TransactionBudget::new(MAX_GUEST_TRANSACTION_BYTES);
    let mut st = MemStore::new();
    let mut a = T::with_budget(&guest);
    let fh = a.open(&mut st, OPEN_CREATE, "f", 0).unwrap();
    assert_eq!(set_size(&mut a, &mut st, fh, big), err::NO_ERROR);
    assert!(guest.held() > big as usize);
    // A truncating open and a delete shrink without a size check.
    assert!(a.open(&mut st, OPEN_CREATE | OPEN_TRUNCATE, "f", 0).is_ok());
    assert_eq!(guest.held(), a.s.transaction_bytes());
    assert!(guest.held() < 1024);
    assert_eq!(set_size(&mut a, &mut st, fh, big), err::NO_ERROR);
    let r = a.send(&mut st, FILE_DELETE, 0, &name_req(0, "f"));
    assert_eq!(result_of(&r), err::NO_ERROR);
    assert_eq!(guest.held(), a.s.transaction_bytes());
    assert!(guest.held() < 1024);
}

/// Counts the events of its thread (`tracing::subscriber::with_default`)
/// whose message contains `needle`.
struct CountLines {
    needle: &'static str,
    count: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl tracing::Subscriber for CountLines {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        struct Message(String);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                if f.name() == "message" {
                    self.0 = format!("{v:?}");
                }
            }
        }
        let mut m = Message(String::new());
        event.record(&mut m);
        if m.0.contains(self.needle) {
            self.count
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[test]
fn a_flood_of_one_guest_triggered_line_is_capped() {
    // Each round: a transaction over its file limit (one log line), then
    // END_TRANSACTION; a guest can repeat that as fast as it likes.
    let (mut st, mut a) = T::on_store_with(100, 1, 1000);
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = CountLines {
        needle: "transaction over its limit",
        count: count.clone(),
    };
    let rounds = 1000;
    tracing::subscriber::with_default(counter, || {
        for _ in 0..rounds {
            let fh = a.open(&mut st, OPEN_CREATE, "a", 0).unwrap();
            let r = a.send(&mut st, FILE_CLOSE, 0, &fh.to_le_bytes());
            assert_eq!(result_of(&r), err::NO_ERROR);
            assert_eq!(a.open(&mut st, OPEN_CREATE, "b", 0), Err(err::GENERIC));
            assert_eq!(a.end(&mut st, false), err::NO_ERROR);
        }
    });
    let logged = count.load(std::sync::atomic::Ordering::Relaxed);
    // The site's burst, plus a refill if the loop took over SITE_REFILL.
    let cap = vmstack_log::limit::SITE_BURST as usize + 1;
    assert!(logged >= 1, "the first lines are logged");
    assert!(logged <= cap, "{logged} of {rounds} lines logged");
}
