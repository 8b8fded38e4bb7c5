//! Gatekeeper against AOSP-format messages (a separate file: the flows
//! are longer than the core).

use std::collections::HashMap;

use super::proto::tests::{enroll_msg, verify_msg};
use super::proto::{error, DELETE_ALL_USERS, DELETE_USER, ENROLL, RESP_BIT, VERIFY};
use super::*;
use crate::keys::DeviceSecret;
use crate::store::{Limits, MemStore, SecureStore};
use crate::ta::le::{u32_at, u64_at};

#[derive(Default)]
struct FakeEnv {
    now: u64,
    records: HashMap<u64, FailureRecord>,
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
    fn read_record(&mut self, sid: u64) -> Result<Option<FailureRecord>, String> {
        Ok(self.records.get(&sid).copied())
    }
    fn write_record(&mut self, sid: u64, r: &FailureRecord) -> Result<(), String> {
        if self.fail_writes {
            return Err("disk full".into());
        }
        self.records.insert(sid, *r);
        Ok(())
    }
    fn delete_records(&mut self, sid: Option<u64>) -> Result<(), String> {
        match sid {
            Some(s) => {
                self.records.remove(&s);
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

/// The secure user id inside a password handle.
fn sid_of(handle: &[u8]) -> u64 {
    u64_at(handle, 1).unwrap()
}

/// The failure count of `handle`'s secure user id (0 without a record).
fn count_of(env: &FakeEnv, handle: &[u8]) -> u32 {
    env.records
        .get(&sid_of(handle))
        .map_or(0, |r| r.failure_counter)
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
    assert_eq!(count_of(&env, &h), 5);
    // After the window: attempt 6 is checked; the right password clears.
    env.now += 20_000;
    assert_eq!(
        err_of(&g.handle(&verify_msg(0, 0, &h, b"pw"), &mut env)),
        error::NONE
    );
    assert_eq!(count_of(&env, &h), 0);
    assert_eq!(
        env.records.get(&sid_of(&h)),
        Some(&FailureRecord {
            secure_user_id: sid_of(&h),
            ..Default::default()
        }),
        "a cleared record is a zero record, not deleted"
    );
    // Re-enroll with a wrong current password counts too.
    env.now += 1;
    let r = g.handle(&enroll_msg(0, b"new", b"bad", &h), &mut env);
    assert_eq!(err_of(&r), error::INVALID);
    assert_eq!(count_of(&env, &h), 1);
    // Re-enroll with the right one keeps the secure user id.
    let h2 = handle_of(&g.handle(&enroll_msg(0, b"new", b"pw", &h), &mut env));
    assert_eq!(h2[1..9], h[1..9]);
    assert_eq!(count_of(&env, &h), 0);
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
    assert_eq!(count_of(&env, &h), 5, "not counted");
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

/// A DELETE_USER or DELETE_ALL_USERS message.
fn delete_msg(cmd: u32, uid: u32) -> Vec<u8> {
    let mut m = Vec::new();
    for v in [cmd, 0, uid] {
        m.extend_from_slice(&v.to_le_bytes());
    }
    m
}

#[test]
fn records_are_per_secure_user_id_and_only_delete_all_drops_them() {
    let g = gk("g");
    let mut env = FakeEnv::default();
    let h0 = handle_of(&g.handle(&enroll_msg(0, b"a", b"", b""), &mut env));
    let h1 = handle_of(&g.handle(&enroll_msg(1, b"b", b"", b""), &mut env));
    assert_ne!(sid_of(&h0), sid_of(&h1), "fresh secure user ids");
    assert_eq!(env.records.len(), 2, "enrolling writes a zero record");
    assert_eq!(count_of(&env, &h0), 0);
    env.now = 5;
    g.handle(&verify_msg(0, 0, &h0, b"x"), &mut env);
    assert_eq!(count_of(&env, &h0), 1);
    assert_eq!(count_of(&env, &h1), 0);
    // DELETE_USER answers NONE but does not reset a count: the request's
    // user id does not choose records.
    let r = g.handle(&delete_msg(DELETE_USER, 0), &mut env);
    assert_eq!(u32_at(&r, 0), Some(DELETE_USER | RESP_BIT));
    assert_eq!(err_of(&r), error::NONE);
    assert_eq!(count_of(&env, &h0), 1);
    let r = g.handle(&delete_msg(DELETE_ALL_USERS, 0), &mut env);
    assert_eq!(err_of(&r), error::NONE);
    assert!(env.records.is_empty());
}

/// A wrong guess against `h` under each user id of `uids` (the caller
/// picks them freely), all at the environment's time; the answers.
fn guess_under_uids(
    g: &Gatekeeper,
    env: &mut dyn GatekeeperEnv,
    h: &[u8],
    uids: std::ops::Range<u32>,
) -> Vec<Vec<u8>> {
    uids.map(|uid| g.handle(&verify_msg(uid, 0, h, b"guess"), env))
        .collect()
}

#[test]
fn guesses_under_many_user_ids_share_one_failure_count() {
    // An attacker with a handle (enrolled by user 0) names a new Android
    // user id for every guess: the 5th guess is throttled all the same,
    // and so is every guess under yet another id inside the window.
    let (g, mut env, h) = enrolled_at(100_000);
    env.now += 1;
    let answers = guess_under_uids(&g, &mut env, &h, 1000..1005);
    for r in &answers[..4] {
        assert_eq!(err_of(r), error::INVALID);
    }
    assert_eq!(retry_of(&answers[4]), 30_000);
    assert_eq!(u32_at(&answers[4], 8), Some(1004), "answered to its uid");
    for uid in 2000..2010 {
        env.now += 1;
        let r = g.handle(&verify_msg(uid, 0, &h, b"pw"), &mut env);
        assert!(retry_of(&r) < 30_000, "uid {uid} is throttled too");
    }
    assert_eq!(count_of(&env, &h), 5, "refused attempts are not counted");
    assert_eq!(env.records.len(), 1, "one record for the handle");
}

#[test]
fn another_handle_under_the_same_user_id_does_not_reset_the_count() {
    // The attacker enrolls a handle of its own under the victim's user id
    // and verifies it: that clears its own record, not the victim's.
    let (g, mut env, victim) = enrolled_at(100_000);
    env.now += 1;
    for _ in 0..4 {
        g.handle(&verify_msg(0, 0, &victim, b"guess"), &mut env);
    }
    let own = handle_of(&g.handle(&enroll_msg(0, b"mine", b"", b""), &mut env));
    let r = g.handle(&verify_msg(0, 0, &own, b"mine"), &mut env);
    assert_eq!(err_of(&r), error::NONE);
    assert_eq!(count_of(&env, &victim), 4);
    assert_eq!(
        retry_of(&g.handle(&verify_msg(0, 0, &victim, b"guess"), &mut env)),
        30_000
    );
}

#[test]
fn delete_user_does_not_reset_throttling() {
    let (g, mut env, h) = enrolled_at(100_000);
    env.now += 1;
    guess_under_uids(&g, &mut env, &h, 0..5);
    for uid in 0..5 {
        let r = g.handle(&delete_msg(DELETE_USER, uid), &mut env);
        assert_eq!(err_of(&r), error::NONE);
    }
    env.now += 1;
    assert_eq!(
        retry_of(&g.handle(&verify_msg(0, 0, &h, b"pw"), &mut env)),
        29_999
    );
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
    let name = format!("failure.sid.{:016x}", sid_of(&h));
    assert_eq!(store.files().unwrap().len(), 1);
    let rec = FailureRecord::decode(&store.read(&name).unwrap()).unwrap();
    assert_eq!(rec.failure_counter, 5);
    assert_eq!(rec.secure_user_id, sid_of(&h));
    // A fresh env over the same store (a restarted service) still throttles.
    let mut env = StoreEnv {
        store: &mut store,
        now_ms: 1000,
    };
    assert_eq!(
        retry_of(&g.handle(&verify_msg(3, 0, &h, b"pw"), &mut env)),
        29_204
    );
    assert_eq!(
        err_of(&g.handle(&delete_msg(DELETE_ALL_USERS, 0), &mut env)),
        error::NONE
    );
    assert!(store.files().unwrap().is_empty());
}

/// User 0's handle (password `pw`), enrolled into `store` at 100 ms.
fn enrolled_in(g: &Gatekeeper, store: &mut MemStore) -> Vec<u8> {
    let mut env = StoreEnv { store, now_ms: 100 };
    handle_of(&g.handle(&enroll_msg(0, b"pw", b"", b""), &mut env))
}

#[test]
fn the_store_throttles_guesses_under_many_user_ids() {
    // The service's path (records in the namespace), messages only.
    let g = gk("g");
    let mut store = MemStore::new();
    let h = enrolled_in(&g, &mut store);
    let mut env = StoreEnv {
        store: &mut store,
        now_ms: 1000,
    };
    let answers = guess_under_uids(&g, &mut env, &h, 1000..1005);
    for r in &answers[..4] {
        assert_eq!(err_of(r), error::INVALID);
    }
    assert_eq!(retry_of(&answers[4]), 30_000);
    for uid in 5000..5100 {
        let mut env = StoreEnv {
            store: &mut store,
            now_ms: 1000 + u64::from(uid - 4999),
        };
        let r = g.handle(&verify_msg(uid, 0, &h, b"guess"), &mut env);
        assert_eq!(err_of(&r), error::RETRY, "uid {uid} is throttled too");
    }
}

/// Puts records of the old layout (`failure.<uid>`) into `store`.
fn put_uid_records(store: &mut MemStore, records: &[(u32, FailureRecord)]) {
    let changes = records
        .iter()
        .map(|(uid, r)| Change {
            name: format!("failure.{uid}"),
            data: Some(r.encode()),
        })
        .collect();
    store.commit(changes).unwrap();
}

#[test]
fn records_kept_per_user_id_move_to_the_secure_user_id_without_losing_failures() {
    let g = gk("g");
    let mut store = MemStore::new();
    let h = enrolled_in(&g, &mut store);
    let sid = sid_of(&h);
    let at = |last_checked_ms, failure_counter| FailureRecord {
        secure_user_id: sid,
        last_checked_ms,
        failure_counter,
    };
    let other = FailureRecord {
        secure_user_id: 77,
        last_checked_ms: 10,
        failure_counter: 2,
    };
    let zero = FailureRecord {
        secure_user_id: 88,
        last_checked_ms: 9_000,
        failure_counter: 0,
    };
    // Guesses of the old code under three user ids (one the last to be
    // checked, one with the most failures), a zero record (AOSP writes
    // one on success), another id's record, and a record of the new
    // layout with fewer failures (written by this code before a
    // downgrade and upgrade), and a zero record of a third id (kept: its
    // file stays its own when the namespace fills up).
    put_uid_records(
        &mut store,
        &[
            (0, at(5_000, 3)),
            (1000, at(4_000, 12)),
            (1001, at(6_000, 1)),
            (1002, at(7_000, 0)),
            (5, other),
            (6, zero),
        ],
    );
    store
        .commit(vec![Change {
            name: format!("failure.sid.{sid:016x}"),
            data: Some(at(1_000, 7).encode()),
        }])
        .unwrap();
    // A user id none of them had: 12 failures, the window from the latest
    // check (6 s).
    let mut env = StoreEnv {
        store: &mut store,
        now_ms: 16_000,
    };
    assert_eq!(
        retry_of(&g.handle(&verify_msg(4242, 0, &h, b"pw"), &mut env)),
        20_000
    );
    let names: Vec<String> = store.files().unwrap().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "failure.sid.000000000000004d".to_string(),
            "failure.sid.0000000000000058".to_string(),
            format!("failure.sid.{sid:016x}")
        ]
    );
    let moved = FailureRecord::decode(&store.read(&names[2]).unwrap()).unwrap();
    assert_eq!(moved, at(6_000, 12));
    let kept = FailureRecord::decode(&store.read(&names[0]).unwrap()).unwrap();
    assert_eq!(kept, other);
    let zeroed = FailureRecord::decode(&store.read(&names[1]).unwrap()).unwrap();
    assert_eq!(
        zeroed,
        FailureRecord {
            last_checked_ms: 0,
            ..zero
        }
    );
    // After the window the right password clears the one record.
    let mut env = StoreEnv {
        store: &mut store,
        now_ms: 36_000,
    };
    assert_eq!(
        err_of(&g.handle(&verify_msg(0, 0, &h, b"pw"), &mut env)),
        error::NONE
    );
    assert_eq!(store.files().unwrap().len(), 3, "a zero record stays");
    let cleared = FailureRecord::decode(&store.read(&names[2]).unwrap()).unwrap();
    assert_eq!(cleared, at(0, 0));
}

#[test]
fn records_of_made_up_ids_filling_the_namespace_do_not_lock_out_a_user() {
    // A guest process sends VERIFYs with forged handles (made-up secure
    // user ids): each writes a record before the handle is checked, until
    // the namespace holds `max_files`. The enrolled user, which verified
    // before, keeps its record and is still verified and throttled.
    let g = gk("g");
    let mut store = MemStore::new();
    let h = enrolled_in(&g, &mut store);
    let mut env = StoreEnv {
        store: &mut store,
        now_ms: 200,
    };
    assert_eq!(
        err_of(&g.handle(&verify_msg(0, 0, &h, b"pw"), &mut env)),
        error::NONE
    );
    let name = format!("failure.sid.{:016x}", sid_of(&h));
    assert_eq!(
        FailureRecord::decode(&store.read(&name).unwrap()).map(|r| r.failure_counter),
        Some(0),
        "a success leaves a zero record"
    );
    let mut forged = h.clone();
    let mut refused = false;
    for fake in 1..=1000u64 {
        forged[1..9].copy_from_slice(&(sid_of(&h) ^ fake).to_le_bytes());
        let mut env = StoreEnv {
            store: &mut store,
            now_ms: 300,
        };
        let r = g.handle(&verify_msg(1000, 0, &forged, b"x"), &mut env);
        if err_of(&r) == error::UNKNOWN {
            refused = true;
            break;
        }
        assert_eq!(err_of(&r), error::INVALID);
    }
    assert!(refused, "the store refuses new files at some point");
    assert_eq!(store.files().unwrap().len(), Limits::default().max_files);
    let mut env = StoreEnv {
        store: &mut store,
        now_ms: 400,
    };
    assert_eq!(
        err_of(&g.handle(&verify_msg(0, 0, &h, b"pw"), &mut env)),
        error::NONE,
        "the user still unlocks"
    );
    for _ in 0..4 {
        assert_eq!(
            err_of(&g.handle(&verify_msg(0, 0, &h, b"guess"), &mut env)),
            error::INVALID
        );
    }
    assert_eq!(
        retry_of(&g.handle(&verify_msg(0, 0, &h, b"guess"), &mut env)),
        30_000,
        "wrong guesses are still counted"
    );
    assert_eq!(
        FailureRecord::decode(&store.read(&name).unwrap()).map(|r| r.failure_counter),
        Some(5)
    );
}

#[test]
fn an_unreadable_old_record_stops_verifying_until_all_users_are_deleted() {
    let g = gk("g");
    let mut store = MemStore::new();
    let h = enrolled_in(&g, &mut store);
    store
        .commit(vec![Change {
            name: "failure.9".into(),
            data: Some(vec![0; 19]),
        }])
        .unwrap();
    let mut env = StoreEnv {
        store: &mut store,
        now_ms: 1000,
    };
    assert_eq!(
        err_of(&g.handle(&verify_msg(0, 0, &h, b"pw"), &mut env)),
        error::UNKNOWN,
        "it may hold failures of this handle"
    );
    assert_eq!(
        err_of(&g.handle(&delete_msg(DELETE_ALL_USERS, 0), &mut env)),
        error::NONE
    );
    assert_eq!(
        err_of(&g.handle(&verify_msg(0, 0, &h, b"pw"), &mut env)),
        error::NONE
    );
}

#[test]
fn stricter_keeps_the_higher_count_and_the_later_check() {
    let a = FailureRecord {
        secure_user_id: 1,
        last_checked_ms: 10,
        failure_counter: 9,
    };
    let b = FailureRecord {
        secure_user_id: 1,
        last_checked_ms: 20,
        failure_counter: 4,
    };
    let both = FailureRecord {
        secure_user_id: 1,
        last_checked_ms: 20,
        failure_counter: 9,
    };
    assert_eq!(a.stricter(b), both);
    assert_eq!(b.stricter(a), both);
}

#[test]
fn only_decimal_user_ids_are_old_record_names() {
    assert!(is_uid_record_name("failure.0"));
    assert!(is_uid_record_name("failure.4294967295"));
    assert!(!is_uid_record_name("failure."));
    assert!(!is_uid_record_name(&record_name(0)));
    assert!(!is_uid_record_name("failure.1a"));
    assert!(!is_uid_record_name("other.1"));
    assert_eq!(record_name(0xab), "failure.sid.00000000000000ab");
}
