//! Gatekeeper against AOSP-format messages (a separate file: the flows
//! are longer than the core).

use std::collections::HashMap;

use super::proto::tests::{enroll_msg, verify_msg};
use super::proto::{error, DELETE_USER, ENROLL, RESP_BIT, VERIFY};
use super::*;
use crate::keys::DeviceSecret;
use crate::ta::le::{u32_at, u64_at};

#[derive(Default)]
struct FakeEnv {
    now: u64,
    records: HashMap<u32, FailureRecord>,
    counter: u8,
    fail_writes: bool,
}

impl FakeEnv {
    /// An empty environment whose clock reads `now` ms.
    fn at(now: u64) -> Self {
        Self {
            now,
            ..Default::default()
        }
    }
}

impl GatekeeperEnv for FakeEnv {
    fn now_ms(&self) -> u64 {
        self.now
    }
    fn random(&mut self, buf: &mut [u8]) -> Result<(), String> {
        for b in buf {
            self.counter = self.counter.wrapping_add(17);
            *b = self.counter;
        }
        Ok(())
    }
    fn read_record(&mut self, uid: u32) -> Result<Option<FailureRecord>, String> {
        Ok(self.records.get(&uid).copied())
    }
    fn write_record(&mut self, uid: u32, r: &FailureRecord) -> Result<(), String> {
        if self.fail_writes {
            return Err("disk full".into());
        }
        self.records.insert(uid, *r);
        Ok(())
    }
    fn delete_records(&mut self, uid: Option<u32>) -> Result<(), String> {
        match uid {
            Some(u) => {
                self.records.remove(&u);
            }
            None => self.records.clear(),
        }
        Ok(())
    }
}

fn gk(guest: &str) -> Gatekeeper {
    let k = DeviceSecret::from_bytes([5; 32]).guest_keys(guest);
    Gatekeeper::new(k.gatekeeper_password, k.gatekeeper_auth_token)
}

/// The handle out of an enroll response.
fn handle_of(r: &[u8]) -> Vec<u8> {
    assert_eq!(u32_at(r, 0), Some(ENROLL | RESP_BIT));
    assert_eq!(u32_at(r, 4), Some(error::NONE), "enroll failed: {r:?}");
    let len = u32_at(r, 12).unwrap() as usize;
    assert_eq!(len, HANDLE_LEN);
    r[16..16 + len].to_vec()
}

/// Guest `g`'s gatekeeper with user 0 enrolled (password `pw`) at `now`
/// ms, its environment and the handle.
fn enrolled_at(now: u64) -> (Gatekeeper, FakeEnv, Vec<u8>) {
    let g = gk("g");
    let mut env = FakeEnv::at(now);
    let h = handle_of(&g.handle(&enroll_msg(0, b"pw", b"", b""), &mut env));
    (g, env, h)
}

fn err_of(r: &[u8]) -> u32 {
    u32_at(r, 4).unwrap()
}

fn retry_of(r: &[u8]) -> u32 {
    assert_eq!(err_of(r), error::RETRY, "{r:?}");
    assert_eq!(r.len(), 16);
    u32_at(r, 12).unwrap()
}

#[test]
fn enroll_then_verify_mints_an_auth_token() {
    let g = gk("g");
    let mut env = FakeEnv::at(1000);
    let h = handle_of(&g.handle(&enroll_msg(10, b"1234", b"", b""), &mut env));
    assert_eq!(h[0], HANDLE_VERSION);
    assert_eq!(u64_at(&h, 9), Some(HANDLE_FLAG_THROTTLE_SECURE));
    assert_eq!(h[HANDLE_LEN - 1], 1, "hardware backed");
    env.now = 2000;
    let r = g.handle(&verify_msg(10, 0xabcdef, &h, b"1234"), &mut env);
    assert_eq!(u32_at(&r, 0), Some(VERIFY | RESP_BIT));
    assert_eq!(err_of(&r), error::NONE);
    assert_eq!(u32_at(&r, 8), Some(10));
    let len = u32_at(&r, 12).unwrap() as usize;
    assert_eq!(len, AUTH_TOKEN_LEN);
    let token = &r[16..16 + len];
    assert_eq!(r.len(), 16 + len + 1, "request_reenroll byte");
    assert_eq!(r[16 + len], 0);
    assert_eq!(token[0], 0);
    assert_eq!(u64_at(token, 1), Some(0xabcdef));
    assert_eq!(u64_at(token, 9), u64_at(&h, 1), "secure user id");
    assert_eq!(&token[25..29], &HW_AUTH_PASSWORD.to_be_bytes());
    assert_eq!(&token[29..37], &2000u64.to_be_bytes());
    assert!(g.auth_token_is_valid(token));
    assert!(!gk("other").auth_token_is_valid(token));
}

#[test]
fn wrong_password_and_forged_handles_are_invalid() {
    let g = gk("g");
    let mut env = FakeEnv::default();
    let h = handle_of(&g.handle(&enroll_msg(0, b"right", b"", b""), &mut env));
    env.now = 10;
    assert_eq!(
        err_of(&g.handle(&verify_msg(0, 0, &h, b"wrong"), &mut env)),
        error::INVALID
    );
    // A flipped bit anywhere in the handle (user id, flags, salt,
    // signature) makes the right password fail.
    for i in [1, 9, 17, 30] {
        let mut forged = h.clone();
        forged[i] ^= 1;
        env.records.clear();
        assert_eq!(
            err_of(&g.handle(&verify_msg(0, 0, &forged, b"right"), &mut env)),
            error::INVALID,
            "byte {i}"
        );
    }
    // Another guest's gatekeeper does not accept the handle.
    env.records.clear();
    assert_eq!(
        err_of(&gk("other").handle(&verify_msg(0, 0, &h, b"right"), &mut env)),
        error::INVALID
    );
    // Wrong lengths and versions.
    assert_eq!(
        err_of(&g.handle(&verify_msg(0, 0, &h[1..], b"right"), &mut env)),
        error::INVALID
    );
    let mut v1 = h.clone();
    v1[0] = 1;
    assert_eq!(
        err_of(&g.handle(&verify_msg(0, 0, &v1, b"right"), &mut env)),
        error::INVALID
    );
    assert_eq!(
        err_of(&g.handle(&verify_msg(0, 0, &h, b""), &mut env)),
        error::INVALID
    );
    assert_eq!(
        err_of(&g.handle(&enroll_msg(0, b"", b"", b""), &mut env)),
        error::INVALID
    );
    // Garbage.
    let r = g.handle(&[1, 2, 3], &mut env);
    assert_eq!(err_of(&r), error::INVALID);
    let r = g.handle(&[8, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0], &mut env);
    assert_eq!(u32_at(&r, 0), Some(9));
    assert_eq!(err_of(&r), error::INVALID);
}

#[test]
fn throttling_follows_aosp() {
    let (g, mut env, h) = enrolled_at(100_000);
    // Failures 1-4: INVALID; the 5th: RETRY 30 s.
    for _ in 0..4 {
        env.now += 1;
        assert_eq!(
            err_of(&g.handle(&verify_msg(0, 0, &h, b"no"), &mut env)),
            error::INVALID
        );
    }
    env.now += 1;
    assert_eq!(
        retry_of(&g.handle(&verify_msg(0, 0, &h, b"no"), &mut env)),
        30_000
    );
    // Inside the window, even the right password gets the remaining time
    // and is not checked (the count does not change).
    env.now += 10_000;
    assert_eq!(
        retry_of(&g.handle(&verify_msg(0, 0, &h, b"pw"), &mut env)),
        20_000
    );
    assert_eq!(env.records[&0].failure_counter, 5);
    // After the window: attempt 6 is checked; the right password clears.
    env.now += 20_000;
    assert_eq!(
        err_of(&g.handle(&verify_msg(0, 0, &h, b"pw"), &mut env)),
        error::NONE
    );
    assert_eq!(env.records[&0].failure_counter, 0);
    // Re-enroll with a wrong current password counts too.
    env.now += 1;
    let r = g.handle(&enroll_msg(0, b"new", b"bad", &h), &mut env);
    assert_eq!(err_of(&r), error::INVALID);
    assert_eq!(env.records[&0].failure_counter, 1);
    // Re-enroll with the right one keeps the secure user id.
    let h2 = handle_of(&g.handle(&enroll_msg(0, b"new", b"pw", &h), &mut env));
    assert_eq!(h2[1..9], h[1..9]);
    assert_eq!(env.records[&0].failure_counter, 0);
}

#[test]
fn a_clock_that_went_back_restarts_the_window() {
    let (g, mut env, h) = enrolled_at(50_000);
    for _ in 0..5 {
        env.now += 1;
        g.handle(&verify_msg(0, 0, &h, b"no"), &mut env);
    }
    // Host reboot: boot time starts again near 0.
    env.now = 10;
    assert_eq!(
        retry_of(&g.handle(&verify_msg(0, 0, &h, b"pw"), &mut env)),
        30_000
    );
    assert_eq!(env.records[&0].failure_counter, 5, "not counted");
    env.now = 20;
    assert_eq!(
        retry_of(&g.handle(&verify_msg(0, 0, &h, b"pw"), &mut env)),
        29_990
    );
}

#[test]
fn retry_timeouts_match_compute_retry_timeout() {
    let expect = [
        (0, 0),
        (1, 0),
        (4, 0),
        (5, 30_000),
        (6, 0),
        (9, 0),
        (10, 30_000),
        (11, 30_000),
        (29, 30_000),
        (30, 30_000),
        (39, 30_000),
        (40, 60_000),
        (139, 30_000 << 10),
        (140, DAY_MS),
        (u32::MAX, DAY_MS),
    ];
    for (n, t) in expect {
        assert_eq!(retry_timeout(n), t, "count {n}");
    }
}

#[test]
fn records_are_per_user_and_deletable() {
    let g = gk("g");
    let mut env = FakeEnv::default();
    let h0 = handle_of(&g.handle(&enroll_msg(0, b"a", b"", b""), &mut env));
    let h1 = handle_of(&g.handle(&enroll_msg(1, b"b", b"", b""), &mut env));
    assert_ne!(h0[1..9], h1[1..9], "fresh secure user ids");
    env.now = 5;
    g.handle(&verify_msg(0, 0, &h0, b"x"), &mut env);
    assert_eq!(env.records[&0].failure_counter, 1);
    assert_eq!(env.records[&1].failure_counter, 0);
    let mut del = Vec::new();
    for v in [DELETE_USER, 0, 0] {
        del.extend_from_slice(&v.to_le_bytes());
    }
    let r = g.handle(&del, &mut env);
    assert_eq!(u32_at(&r, 0), Some(DELETE_USER | RESP_BIT));
    assert_eq!(err_of(&r), error::NONE);
    assert!(!env.records.contains_key(&0));
}

#[test]
fn unwritable_records_are_unknown_errors_and_nothing_is_verified() {
    let (g, mut env, h) = enrolled_at(0);
    env.fail_writes = true;
    env.now = 9;
    assert_eq!(
        err_of(&g.handle(&verify_msg(0, 0, &h, b"pw"), &mut env)),
        error::UNKNOWN
    );
}

#[test]
fn failure_records_round_trip() {
    let r = FailureRecord {
        secure_user_id: 1,
        last_checked_ms: 2,
        failure_counter: 3,
    };
    assert_eq!(FailureRecord::decode(&r.encode()), Some(r));
    assert_eq!(FailureRecord::decode(&[0; 19]), None);
}

#[test]
fn store_env_keeps_records_in_the_namespace() {
    use crate::store::{MemStore, SecureStore};
    let g = gk("g");
    let mut store = MemStore::new();
    let h = {
        let mut env = StoreEnv {
            store: &mut store,
            now_ms: 100,
        };
        handle_of(&g.handle(&enroll_msg(3, b"pw", b"", b""), &mut env))
    };
    for t in 0..5 {
        let mut env = StoreEnv {
            store: &mut store,
            now_ms: 200 + t,
        };
        g.handle(&verify_msg(3, 0, &h, b"bad"), &mut env);
    }
    let rec = FailureRecord::decode(&store.read("failure.3").unwrap()).unwrap();
    assert_eq!(rec.failure_counter, 5);
    // A fresh env over the same store (a restarted service) still throttles.
    let mut env = StoreEnv {
        store: &mut store,
        now_ms: 1000,
    };
    assert_eq!(
        retry_of(&g.handle(&verify_msg(3, 0, &h, b"pw"), &mut env)),
        29_204
    );
    let mut all = Vec::new();
    for v in [super::proto::DELETE_ALL_USERS, 0, 0] {
        all.extend_from_slice(&v.to_le_bytes());
    }
    assert_eq!(err_of(&g.handle(&all, &mut env)), error::NONE);
    assert!(store.files().unwrap().is_empty());
}
