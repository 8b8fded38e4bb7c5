//! Gatekeeper's message parser and enroll/verify/throttle logic: messages
//! built from AOSP's format around real and mutated password handles (or
//! raw bytes), with time moving in any direction.
//!
//! Oracles: every response is well-formed (`cmd | 1`, a 12-byte header, a
//! RETRY carries exactly its timeout, at most a day); a wrong password or
//! a handle changed in any byte never verifies; a timeout is never
//! shorter than AOSP's for the failure count.

#![no_main]

use std::collections::HashMap;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use trusty::keys::DeviceSecret;
use trusty::ta::gatekeeper::proto::{self as gp, error};
use trusty::ta::gatekeeper::{FailureRecord, Gatekeeper, GatekeeperEnv};

const PASSWORDS: [&[u8]; 3] = [b"1234", b"correct horse", b"x"];

#[derive(Arbitrary, Debug)]
enum HandleSrc {
    Empty,
    Last,
    Mutated { at: u8, xor: u8 },
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum Op {
    Enroll {
        uid: u8,
        desired: u8,
        current: u8,
        handle: HandleSrc,
    },
    Verify {
        uid: u8,
        challenge: u64,
        handle: HandleSrc,
        pw: u8,
    },
    DeleteUser {
        uid: u8,
    },
    DeleteAll,
    Raw(Vec<u8>),
    Time(i32),
}

#[derive(Default)]
struct Env {
    now: u64,
    records: HashMap<u64, FailureRecord>,
    rng: u64,
}

impl GatekeeperEnv for Env {
    fn now_ms(&self) -> u64 {
        self.now
    }
    fn random(&mut self, buf: &mut [u8]) -> Result<(), String> {
        for b in buf {
            self.rng = self
                .rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            *b = (self.rng >> 56) as u8;
        }
        Ok(())
    }
    fn read_record(&mut self, sid: u64) -> Result<Option<FailureRecord>, String> {
        Ok(self.records.get(&sid).copied())
    }
    fn write_record(&mut self, sid: u64, r: &FailureRecord) -> Result<(), String> {
        self.records.insert(sid, *r);
        Ok(())
    }
    fn delete_records(&mut self, sid: Option<u64>) -> Result<(), String> {
        match sid {
            Some(u) => self.records.remove(&u),
            None => {
                self.records.clear();
                None
            }
        };
        Ok(())
    }
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

fuzz_target!(|ops: Vec<Op>| {
    let keys = DeviceSecret::from_bytes([2; 32]).guest_keys("fuzz");
    let g = Gatekeeper::new(keys.gatekeeper_password, keys.gatekeeper_auth_token);
    let mut env = Env {
        now: 1_000_000,
        ..Default::default()
    };
    // uid -> (handle, its password)
    let mut enrolled: HashMap<u32, (Vec<u8>, &[u8])> = HashMap::new();
    for op in ops.into_iter().take(64) {
        let handle_for = |uid: u32, src: &HandleSrc| -> (Vec<u8>, bool) {
            let last = enrolled
                .get(&uid)
                .map(|(h, _)| h.clone())
                .unwrap_or_default();
            match src {
                HandleSrc::Empty => (Vec::new(), false),
                HandleSrc::Last => (last, true),
                HandleSrc::Mutated { at, xor } if !last.is_empty() && *xor != 0 => {
                    let mut h = last;
                    let i = usize::from(*at) % h.len();
                    h[i] ^= xor;
                    // The last byte (hardware_backed) is not signed.
                    (h, i == gp_handle_len() - 1)
                }
                HandleSrc::Mutated { .. } => (last, true),
                HandleSrc::Raw(b) => (b.clone(), false),
            }
        };
        let (msg, check): (Vec<u8>, Option<(u32, bool)>) = match &op {
            Op::Enroll {
                uid,
                desired,
                current,
                handle,
            } => {
                let uid = u32::from(*uid % 3);
                let (h, _) = handle_for(uid, handle);
                let mut m = Vec::new();
                for v in [gp::ENROLL, 0, uid] {
                    m.extend_from_slice(&v.to_le_bytes());
                }
                gp::put_blob(&mut m, PASSWORDS[usize::from(*desired) % 3]);
                gp::put_blob(&mut m, PASSWORDS[usize::from(*current) % 3]);
                gp::put_blob(&mut m, &h);
                (m, None)
            }
            Op::Verify {
                uid,
                challenge,
                handle,
                pw,
            } => {
                let uid = u32::from(*uid % 3);
                let (h, genuine) = handle_for(uid, handle);
                let pw = PASSWORDS[usize::from(*pw) % 3];
                let right = genuine && enrolled.get(&uid).is_some_and(|(_, p)| *p == pw);
                let mut m = Vec::new();
                for v in [gp::VERIFY, 0, uid] {
                    m.extend_from_slice(&v.to_le_bytes());
                }
                m.extend_from_slice(&challenge.to_le_bytes());
                gp::put_blob(&mut m, &h);
                gp::put_blob(&mut m, pw);
                (m, Some((uid, right)))
            }
            Op::DeleteUser { uid } => {
                let mut m = Vec::new();
                for v in [gp::DELETE_USER, 0, u32::from(*uid % 3)] {
                    m.extend_from_slice(&v.to_le_bytes());
                }
                (m, None)
            }
            Op::DeleteAll => {
                let mut m = Vec::new();
                for v in [gp::DELETE_ALL_USERS, 0, 0] {
                    m.extend_from_slice(&v.to_le_bytes());
                }
                (m, None)
            }
            Op::Raw(b) => (b.clone(), None),
            Op::Time(d) => {
                env.now = env.now.saturating_add_signed(i64::from(*d));
                continue;
            }
        };
        let r = g.handle(&msg, &mut env);
        assert!(r.len() >= 12);
        assert_eq!(u32_at(&r, 0) & gp::RESP_BIT, gp::RESP_BIT);
        let err = u32_at(&r, 4);
        if err == error::RETRY {
            assert_eq!(r.len(), 16);
            assert!(u32_at(&r, 12) <= 24 * 3600 * 1000);
        } else if err != error::NONE {
            assert_eq!(r.len(), 12);
        }
        if let Some((_, right)) = check {
            if err == error::NONE {
                assert!(right, "a wrong password or a forged handle verified");
            }
        }
        if let Op::Enroll { uid, desired, .. } = &op {
            if err == error::NONE {
                let len = u32_at(&r, 12) as usize;
                let h = r[16..16 + len].to_vec();
                enrolled.insert(
                    u32::from(*uid % 3),
                    (h, PASSWORDS[usize::from(*desired) % 3]),
                );
            }
        }
    }
});

fn gp_handle_len() -> usize {
    trusty::ta::gatekeeper::HANDLE_LEN
}
