//! The storage TA's message parser and transaction logic: two channels
//! on one namespace, messages built from the protocol's commands (or raw
//! bytes), with store failures injected.
//!
//! Oracles: every response is a well-formed `storage_msg` answering the
//! request (`cmd | 1`, `op_id` echoed, `size` = its length, a payload only
//! on success) and fits the channel's message limit; the committed files
//! always respect the namespace limits.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use trusty::framing::VSOCK_MAX_MESSAGE;
use trusty::store::{Limits, MemStore, SecureStore};
use trusty::ta::storage::proto::{self as sp, Header};
use trusty::ta::storage::StorageSession;

const NAMES: [&str; 4] = ["a", "b", "file.1", "x_y-z"];

#[derive(Arbitrary, Debug)]
enum Op {
    Open {
        flags: u8,
        name: u8,
    },
    Close {
        handle: u8,
    },
    Read {
        handle: u8,
        size: u16,
        offset: u16,
    },
    Write {
        handle: u8,
        offset: u16,
        data: Vec<u8>,
    },
    GetSize {
        handle: u8,
    },
    SetSize {
        handle: u8,
        size: u16,
    },
    Delete {
        name: u8,
    },
    Move {
        flags: u8,
        handle: u8,
        old: u8,
        new: u8,
    },
    List {
        max: u8,
        state: u8,
        name: u8,
    },
    End,
    Raw {
        cmd: u8,
        payload: Vec<u8>,
    },
    Short(Vec<u8>),
    Corrupt {
        name: u8,
    },
    FailCommits(bool),
}

#[derive(Arbitrary, Debug)]
struct Step {
    channel: bool,
    complete: bool,
    op: Op,
}

fn name(i: u8) -> &'static str {
    NAMES[usize::from(i) % NAMES.len()]
}

fn le(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fuzz_target!(|steps: Vec<Step>| {
    let limits = Limits {
        max_file_size: 8192,
        max_files: 3,
        max_total: 12_000,
    };
    let mut store = MemStore::with_limits(limits);
    let mut chans = [
        StorageSession::new(VSOCK_MAX_MESSAGE, limits),
        StorageSession::new(4096, limits),
    ];
    for step in steps.into_iter().take(48) {
        let (cmd, payload) = match step.op {
            Op::Open { flags, name: n } => (
                sp::FILE_OPEN,
                le(&[&u32::from(flags % 9).to_le_bytes(), name(n).as_bytes()]),
            ),
            Op::Close { handle } => (sp::FILE_CLOSE, u32::from(handle).to_le_bytes().to_vec()),
            Op::Read {
                handle,
                size,
                offset,
            } => (
                sp::FILE_READ,
                le(&[
                    &u32::from(handle).to_le_bytes(),
                    &u32::from(size).to_le_bytes(),
                    &u64::from(offset).to_le_bytes(),
                ]),
            ),
            Op::Write {
                handle,
                offset,
                data,
            } => (
                sp::FILE_WRITE,
                le(&[
                    &u64::from(offset).to_le_bytes(),
                    &u32::from(handle).to_le_bytes(),
                    &[0; 4],
                    &data,
                ]),
            ),
            Op::GetSize { handle } => (sp::FILE_GET_SIZE, u32::from(handle).to_le_bytes().to_vec()),
            Op::SetSize { handle, size } => (
                sp::FILE_SET_SIZE,
                le(&[
                    &u64::from(size).to_le_bytes(),
                    &u32::from(handle).to_le_bytes(),
                    &[0; 4],
                ]),
            ),
            Op::Delete { name: n } => (sp::FILE_DELETE, le(&[&[0; 4], name(n).as_bytes()])),
            Op::Move {
                flags,
                handle,
                old,
                new,
            } => (
                sp::FILE_MOVE,
                le(&[
                    &u32::from(flags % 9).to_le_bytes(),
                    &u32::from(handle).to_le_bytes(),
                    &(name(old).len() as u32).to_le_bytes(),
                    name(old).as_bytes(),
                    name(new).as_bytes(),
                ]),
            ),
            Op::List {
                max,
                state,
                name: n,
            } => (
                sp::FILE_LIST,
                le(&[&[max % 4, state % 6], name(n).as_bytes()]),
            ),
            Op::End => (sp::END_TRANSACTION, Vec::new()),
            Op::Raw { cmd, payload } => (u32::from(cmd), payload),
            Op::Short(bytes) => {
                let c = usize::from(step.channel);
                let r = chans[c].on_message(&bytes[..bytes.len().min(23)], &mut store);
                assert_eq!(Header::parse(&r).map(|h| h.cmd), Some(sp::RESP_MSG_ERR));
                continue;
            }
            Op::Corrupt { name: n } => {
                store.corrupt.push(name(n).to_string());
                continue;
            }
            Op::FailCommits(on) => {
                store.fail_commits = on;
                continue;
            }
        };
        let flags = if step.complete {
            sp::MSG_FLAG_TRANSACT_COMPLETE
        } else {
            0
        };
        let mut msg = Vec::new();
        for v in [cmd, 0xabcd, flags, 0, 0, 7] {
            msg.extend_from_slice(&v.to_le_bytes());
        }
        msg.extend_from_slice(&payload);
        let c = usize::from(step.channel);
        let r = chans[c].on_message(&msg, &mut store);
        let h = Header::parse(&r).expect("a full header");
        assert_eq!(h.cmd, cmd | sp::RESP_BIT);
        assert_eq!((h.op_id, h.flags, h.reserved), (0xabcd, 0, 7));
        assert_eq!(h.size as usize, r.len());
        assert!(h.result == 0 || r.len() == sp::HEADER_LEN);
        assert!(r.len() <= if c == 0 { VSOCK_MAX_MESSAGE } else { 4096 });
        if !store.fail_commits {
            let files = store.files().expect("mem store lists");
            assert!(files.len() <= limits.max_files);
            assert!(files.iter().map(|(_, m)| m.size).sum::<u64>() <= limits.max_total);
        }
    }
});
