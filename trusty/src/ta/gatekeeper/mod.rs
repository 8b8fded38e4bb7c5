//! Gatekeeper (`com.android.trusty.gatekeeper`): AOSP's enroll/verify
//! with HMAC-signed password handles, auth tokens and failure throttling
//! (`system/gatekeeper/gatekeeper.cpp`), over AOSP's message format
//! ([`proto`]). Time, randomness and the failure records come from a
//! [`GatekeeperEnv`]; the keys from the guest.
//!
//! Unlike AOSP, failure records are kept per *secure user id* (the one
//! inside the password handle, covered by its HMAC), not per the Android
//! user id of the request: any guest process can send gatekeeper
//! messages, and a record chosen by the request's user id would give a
//! caller holding a handle a fresh count under every user id it names.
//! The user id is still carried by requests and answers, as in AOSP.

pub mod proto;

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use vmstack_log::guest_warn;

use self::proto::{error, Request, Response};
use crate::keys::Key;
use crate::store::{Change, SecureStore};

/// `HANDLE_VERSION` (with throttling).
pub const HANDLE_VERSION: u8 = 2;
/// `HANDLE_FLAG_THROTTLE_SECURE`: failure records are in secure storage.
pub const HANDLE_FLAG_THROTTLE_SECURE: u64 = 1;
/// `sizeof(password_handle_t)`: version, user id, flags, salt,
/// signature[32], hardware_backed.
pub const HANDLE_LEN: usize = 1 + 8 + 8 + 8 + 32 + 1;
/// `sizeof(hw_auth_token_t)`.
pub const AUTH_TOKEN_LEN: usize = 1 + 8 + 8 + 8 + 4 + 8 + 32;
/// Bytes of the auth token the HMAC covers.
const AUTH_TOKEN_SIGNED: usize = AUTH_TOKEN_LEN - 32;
/// `HW_AUTH_PASSWORD`.
pub const HW_AUTH_PASSWORD: u32 = 1;
/// Base retry timeout.
const FAILURE_TIMEOUT_MS: u32 = 30_000;
/// The longest timeout.
const DAY_MS: u32 = 24 * 60 * 60 * 1000;

/// AOSP's `failure_record_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FailureRecord {
    /// The secure user id the record counts for.
    pub secure_user_id: u64,
    /// When the last attempt was checked (ms since boot).
    pub last_checked_ms: u64,
    /// Failed attempts since the last success.
    pub failure_counter: u32,
}

impl FailureRecord {
    /// The 20-byte packed encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(20);
        b.extend_from_slice(&self.secure_user_id.to_le_bytes());
        b.extend_from_slice(&self.last_checked_ms.to_le_bytes());
        b.extend_from_slice(&self.failure_counter.to_le_bytes());
        b
    }

    /// Decodes [`FailureRecord::encode`]'s bytes.
    pub fn decode(b: &[u8]) -> Option<Self> {
        if b.len() != 20 {
            return None;
        }
        Some(FailureRecord {
            secure_user_id: super::le::u64_at(b, 0)?,
            last_checked_ms: super::le::u64_at(b, 8)?,
            failure_counter: super::le::u32_at(b, 16)?,
        })
    }

    /// The record that throttles at least as hard as both `self` and
    /// `other` (two records of one secure user id): the higher failure
    /// count and the later last attempt, so that neither the count nor
    /// the end of its retry window is ever lowered.
    pub fn stricter(self, other: FailureRecord) -> FailureRecord {
        FailureRecord {
            secure_user_id: self.secure_user_id,
            last_checked_ms: self.last_checked_ms.max(other.last_checked_ms),
            failure_counter: self.failure_counter.max(other.failure_counter),
        }
    }
}

/// What gatekeeper needs from outside.
///
/// Failure records are keyed by the secure user id of the password handle
/// they count attempts against (see the module docs), never by the
/// request's Android user id.
pub trait GatekeeperEnv {
    /// Milliseconds since boot (0 on error, as AOSP allows).
    fn now_ms(&self) -> u64;
    /// Fills `buf` with random bytes.
    fn random(&mut self, buf: &mut [u8]) -> Result<(), String>;
    /// The stored failure record of secure user id `sid`; `None` means no
    /// failure was ever counted (a success leaves a zero record).
    fn read_record(&mut self, sid: u64) -> Result<Option<FailureRecord>, String>;
    /// Stores `sid`'s failure record (durably, before answering).
    fn write_record(&mut self, sid: u64, record: &FailureRecord) -> Result<(), String>;
    /// Deletes `sid`'s record, or every record.
    fn delete_records(&mut self, sid: Option<u64>) -> Result<(), String>;
}

/// AOSP's `ComputeRetryTimeout`.
pub fn retry_timeout(failure_counter: u32) -> u32 {
    match failure_counter {
        0 => 0,
        1..=10 if failure_counter % 5 == 0 => FAILURE_TIMEOUT_MS,
        1..=10 => 0,
        11..=29 => FAILURE_TIMEOUT_MS,
        30..=139 => FAILURE_TIMEOUT_MS << ((failure_counter - 30) / 10),
        _ => DAY_MS,
    }
}

/// A parsed, length-checked password handle.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Handle {
    version: u8,
    user_id: u64,
    flags: u64,
    salt: u64,
    signature: [u8; 32],
}

impl Handle {
    fn parse(b: &[u8]) -> Option<Handle> {
        if b.len() != HANDLE_LEN {
            return None;
        }
        let mut signature = [0u8; 32];
        signature.copy_from_slice(&b[25..57]);
        Some(Handle {
            version: b[0],
            user_id: super::le::u64_at(b, 1)?,
            flags: super::le::u64_at(b, 9)?,
            salt: super::le::u64_at(b, 17)?,
            signature,
        })
    }

    fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(HANDLE_LEN);
        b.push(self.version);
        b.extend_from_slice(&self.user_id.to_le_bytes());
        b.extend_from_slice(&self.flags.to_le_bytes());
        b.extend_from_slice(&self.salt.to_le_bytes());
        b.extend_from_slice(&self.signature);
        b.push(1); // hardware_backed: the key never leaves the service
        b
    }
}

/// Outcome of a throttled attempt's bookkeeping.
enum Throttle {
    /// Answer this now.
    Stop(Response),
    /// Go on; this is the timeout if the attempt fails.
    Go(u32),
}

/// One guest's gatekeeper.
#[derive(Debug, Clone)]
pub struct Gatekeeper {
    password_key: Key,
    auth_token_key: Key,
}

fn hmac(key: &Key, parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = match Hmac::<Sha256>::new_from_slice(&key.0) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes a key of any length"),
    };
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

impl Gatekeeper {
    /// Gatekeeper with the guest's two keys.
    pub fn new(password_key: Key, auth_token_key: Key) -> Self {
        Gatekeeper {
            password_key,
            auth_token_key,
        }
    }

    fn signature(
        &self,
        version: u8,
        user_id: u64,
        flags: u64,
        salt: u64,
        password: &[u8],
    ) -> [u8; 32] {
        hmac(
            &self.password_key,
            &[
                &salt.to_le_bytes(),
                &[version],
                &user_id.to_le_bytes(),
                &flags.to_le_bytes(),
                password,
            ],
        )
    }

    fn password_matches(&self, h: &Handle, password: &[u8]) -> bool {
        let mut mac = match Hmac::<Sha256>::new_from_slice(&self.password_key.0) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC takes a key of any length"),
        };
        for p in [
            &h.salt.to_le_bytes()[..],
            &[h.version],
            &h.user_id.to_le_bytes(),
            &h.flags.to_le_bytes(),
            password,
        ] {
            mac.update(p);
        }
        // Constant-time comparison.
        mac.verify_slice(&h.signature).is_ok()
    }

    /// AOSP's `hw_auth_token_t` for a verified password.
    fn auth_token(&self, challenge: u64, user_id: u64, timestamp_ms: u64) -> Vec<u8> {
        let mut t = Vec::with_capacity(AUTH_TOKEN_LEN);
        t.push(0); // HW_AUTH_TOKEN_VERSION
        t.extend_from_slice(&challenge.to_le_bytes());
        t.extend_from_slice(&user_id.to_le_bytes());
        t.extend_from_slice(&0u64.to_le_bytes()); // authenticator id
        t.extend_from_slice(&HW_AUTH_PASSWORD.to_be_bytes());
        t.extend_from_slice(&timestamp_ms.to_be_bytes());
        let mac = hmac(&self.auth_token_key, &[&t[..AUTH_TOKEN_SIGNED]]);
        t.extend_from_slice(&mac);
        t
    }

    /// Whether `token` is an auth token this gatekeeper minted.
    pub fn auth_token_is_valid(&self, token: &[u8]) -> bool {
        token.len() == AUTH_TOKEN_LEN
            && hmac(&self.auth_token_key, &[&token[..AUTH_TOKEN_SIGNED]])[..]
                == token[AUTH_TOKEN_SIGNED..]
    }

    /// Handles one request message.
    pub fn handle(&self, msg: &[u8], env: &mut dyn GatekeeperEnv) -> Vec<u8> {
        let req = match proto::parse(msg) {
            Ok(r) => r,
            Err(e) => return Response::error(e.cmd, e.user_id, error::INVALID).encode(),
        };
        match req {
            Request::Enroll {
                user_id,
                desired,
                current,
                handle,
            } => self.enroll(user_id, &desired, &current, &handle, env),
            Request::Verify {
                user_id,
                challenge,
                handle,
                password,
            } => self.verify(user_id, challenge, &handle, &password, env),
            Request::DeleteUser { user_id } => {
                // The records are per secure user id, which the request
                // does not name: nothing is tied to `user_id` to delete.
                // Deleting a record by the caller's word would reset its
                // throttling, and a removed user's records hold only
                // failures not yet cleared (`DELETE_ALL_USERS` drops
                // them).
                tracing::debug!(user_id, "gatekeeper: DELETE_USER keeps the failure records");
                simple(proto::DELETE_USER, user_id, Ok(()))
            }
            Request::DeleteAllUsers { user_id } => {
                simple(proto::DELETE_ALL_USERS, user_id, env.delete_records(None))
            }
        }
        .encode()
    }

    /// AOSP's `GetFailureRecord` + `ThrottleRequest` + `IncrementFailureRecord`:
    /// every attempt counts as a failure until it succeeds. The record is
    /// the one of `secure_user_id` (the handle's); `uid` only goes into
    /// the answer and the logs.
    fn throttle(
        &self,
        cmd: u32,
        uid: u32,
        secure_user_id: u64,
        env: &mut dyn GatekeeperEnv,
    ) -> Throttle {
        let unknown = Response::error(cmd, uid, error::UNKNOWN);
        let now = env.now_ms();
        let mut record = match env.read_record(secure_user_id) {
            // The record of this id, whatever id it says it is for: a
            // mismatch is not a reason to count from 0.
            Ok(Some(r)) => FailureRecord {
                secure_user_id,
                ..r
            },
            Ok(None) => FailureRecord {
                secure_user_id,
                ..Default::default()
            },
            Err(e) => {
                guest_warn!("gatekeeper: uid {uid}: failure record unreadable: {e}");
                return Throttle::Stop(unknown);
            }
        };
        let timeout = retry_timeout(record.failure_counter);
        if timeout > 0 {
            let last = record.last_checked_ms;
            let until = last.saturating_add(u64::from(timeout));
            if now < until && now > last {
                return Throttle::Stop(Response::Retry {
                    cmd,
                    user_id: uid,
                    timeout_ms: (until - now) as u32,
                });
            }
            if now <= last {
                // The clock went back (host reboot): restart the window
                // without counting a failure.
                record.last_checked_ms = now;
                if let Err(e) = env.write_record(secure_user_id, &record) {
                    guest_warn!("gatekeeper: uid {uid}: failure record not written: {e}");
                    return Throttle::Stop(unknown);
                }
                return Throttle::Stop(Response::Retry {
                    cmd,
                    user_id: uid,
                    timeout_ms: timeout,
                });
            }
        }
        record.failure_counter = record.failure_counter.saturating_add(1);
        record.last_checked_ms = now;
        if let Err(e) = env.write_record(secure_user_id, &record) {
            guest_warn!("gatekeeper: uid {uid}: failure record not written: {e}");
            return Throttle::Stop(unknown);
        }
        Throttle::Go(retry_timeout(record.failure_counter))
    }

    /// AOSP's `ClearFailureRecord`: the count of `secure_user_id` back to
    /// 0, by writing a zero record, not by deleting it. An enrolled id so
    /// keeps its file and later attempts only rewrite it: records of
    /// made-up ids (`throttle` writes one before any handle is checked)
    /// filling the namespace up to `max_files` cannot make its attempts
    /// fail with `UNKNOWN`.
    fn clear(&self, secure_user_id: u64, env: &mut dyn GatekeeperEnv) -> Result<(), String> {
        env.write_record(
            secure_user_id,
            &FailureRecord {
                secure_user_id,
                ..Default::default()
            },
        )
    }

    fn wrong(cmd: u32, uid: u32, timeout: u32) -> Response {
        if timeout > 0 {
            Response::Retry {
                cmd,
                user_id: uid,
                timeout_ms: timeout,
            }
        } else {
            Response::error(cmd, uid, error::INVALID)
        }
    }

    fn enroll(
        &self,
        uid: u32,
        desired: &[u8],
        current: &[u8],
        handle: &[u8],
        env: &mut dyn GatekeeperEnv,
    ) -> Response {
        let cmd = proto::ENROLL;
        let unknown = Response::error(cmd, uid, error::UNKNOWN);
        if desired.is_empty() {
            return Response::error(cmd, uid, error::INVALID);
        }
        let secure_user_id = if handle.is_empty() {
            let mut id = [0u8; 8];
            if env.random(&mut id).is_err() {
                return unknown;
            }
            u64::from_le_bytes(id)
        } else {
            match self.check_password(cmd, uid, handle, current, env) {
                Ok(h) => h.user_id,
                Err(r) => return r,
            }
        };
        if let Err(e) = self.clear(secure_user_id, env) {
            guest_warn!("gatekeeper: uid {uid}: failure record not cleared: {e}");
            return unknown;
        }
        let mut salt = [0u8; 8];
        if env.random(&mut salt).is_err() {
            return unknown;
        }
        let salt = u64::from_le_bytes(salt);
        let flags = HANDLE_FLAG_THROTTLE_SECURE;
        let h = Handle {
            version: HANDLE_VERSION,
            user_id: secure_user_id,
            flags,
            salt,
            signature: self.signature(HANDLE_VERSION, secure_user_id, flags, salt, desired),
        };
        let mut body = Vec::new();
        proto::put_blob(&mut body, &h.encode());
        Response::Ok {
            cmd,
            user_id: uid,
            body,
        }
    }

    /// The handle `handle` once `password` matches it; else the answer:
    /// `INVALID` for a malformed handle, or what [`Self::throttle`] and
    /// [`Self::wrong`] answer for a throttled or wrong attempt.
    fn check_password(
        &self,
        cmd: u32,
        uid: u32,
        handle: &[u8],
        password: &[u8],
        env: &mut dyn GatekeeperEnv,
    ) -> Result<Handle, Response> {
        let Some(h) = Handle::parse(handle).filter(|h| h.version == HANDLE_VERSION) else {
            return Err(Response::error(cmd, uid, error::INVALID));
        };
        let timeout = match self.throttle(cmd, uid, h.user_id, env) {
            Throttle::Stop(r) => return Err(r),
            Throttle::Go(t) => t,
        };
        if !self.password_matches(&h, password) {
            return Err(Self::wrong(cmd, uid, timeout));
        }
        Ok(h)
    }

    fn verify(
        &self,
        uid: u32,
        challenge: u64,
        handle: &[u8],
        password: &[u8],
        env: &mut dyn GatekeeperEnv,
    ) -> Response {
        let cmd = proto::VERIFY;
        if password.is_empty() {
            return Response::error(cmd, uid, error::INVALID);
        }
        let h = match self.check_password(cmd, uid, handle, password, env) {
            Ok(h) => h,
            Err(r) => return r,
        };
        let token = self.auth_token(challenge, h.user_id, env.now_ms());
        if let Err(e) = self.clear(h.user_id, env) {
            guest_warn!("gatekeeper: uid {uid}: failure record not cleared: {e}");
        }
        let mut body = Vec::new();
        proto::put_blob(&mut body, &token);
        body.push(0); // request_reenroll: false
        Response::Ok {
            cmd,
            user_id: uid,
            body,
        }
    }
}

fn simple(cmd: u32, uid: u32, r: Result<(), String>) -> Response {
    match r {
        Ok(()) => Response::Ok {
            cmd,
            user_id: uid,
            body: Vec::new(),
        },
        Err(e) => {
            guest_warn!("gatekeeper: uid {uid}: deleting failure records: {e}");
            Response::error(cmd, uid, error::UNKNOWN)
        }
    }
}

/// The start of every failure record's name in the gatekeeper namespace.
const RECORDS_PREFIX: &str = "failure.";
/// A failure record's name: this, then its secure user id in 16 lowercase
/// hex digits.
const RECORD_PREFIX: &str = "failure.sid.";

/// The name of the failure record of secure user id `sid`.
fn record_name(sid: u64) -> String {
    format!("{RECORD_PREFIX}{sid:016x}")
}

/// Whether `name` is a record of the old layout, kept per Android user id:
/// `failure.` and the user id in decimal.
fn is_uid_record_name(name: &str) -> bool {
    name.strip_prefix(RECORDS_PREFIX)
        .is_some_and(|uid| !uid.is_empty() && uid.bytes().all(|b| b.is_ascii_digit()))
}

/// The decoded record in file `name` of `store`, `None` if there is none.
fn read_record_file(store: &dyn SecureStore, name: &str) -> Result<Option<FailureRecord>, String> {
    if store.meta(name).map_err(|e| e.to_string())?.is_none() {
        return Ok(None);
    }
    let bytes = store.read(name).map_err(|e| e.to_string())?;
    FailureRecord::decode(&bytes)
        .map(Some)
        .ok_or_else(|| format!("{name} has {} bytes", bytes.len()))
}

/// Moves the records of the old layout (one per Android user id, the
/// secure user id inside) to one per secure user id, in one atomic
/// commit; nothing to do once none is left.
///
/// A count is never lowered: records of one secure user id (an attacker's
/// guesses under several user ids, or a record already in the new
/// layout) merge into the [stricter](FailureRecord::stricter) of them.
/// Records with no failures (left by a success) are kept as zero records
/// (the last attempt 0, so they lengthen no window), each id keeping its
/// file as [`Gatekeeper`]'s `clear` does; the commit never adds files, the
/// new records being at most as many as the old ones it removes. An
/// old record that cannot be read fails the migration, and with it every
/// gatekeeper request of the guest that needs a record (`UNKNOWN`), until
/// it is readable or `DELETE_ALL_USERS` removes it: throttling is never
/// skipped for a record that might hold failures.
fn migrate_uid_records(store: &mut dyn SecureStore) -> Result<(), String> {
    let old: Vec<String> = store
        .files()
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| is_uid_record_name(name))
        .collect();
    if old.is_empty() {
        return Ok(());
    }
    let mut merged: BTreeMap<u64, FailureRecord> = BTreeMap::new();
    for name in &old {
        let Some(r) = read_record_file(store, name)? else {
            continue;
        };
        let r = if r.failure_counter == 0 {
            FailureRecord {
                secure_user_id: r.secure_user_id,
                ..Default::default()
            }
        } else {
            r
        };
        let m = merged.entry(r.secure_user_id).or_insert(r);
        *m = m.stricter(r);
    }
    let mut changes = Vec::with_capacity(merged.len() + old.len());
    for (sid, r) in merged {
        let name = record_name(sid);
        let r = match read_record_file(store, &name)? {
            Some(current) => current.stricter(r),
            None => r,
        };
        changes.push(Change {
            name,
            data: Some(r.encode()),
        });
    }
    let moved = changes.len();
    changes.extend(old.iter().map(|name| Change {
        name: name.clone(),
        data: None,
    }));
    store.commit(changes).map_err(|e| e.to_string())?;
    tracing::info!(
        per_user_id = old.len(),
        per_secure_user_id = moved,
        "gatekeeper: failure records moved from Android user ids to secure user ids"
    );
    Ok(())
}

/// A [`GatekeeperEnv`] over a locked namespace of the guest, with the time
/// the message arrived.
///
/// Records are files `failure.sid.<secure user id, 16 hex digits>`. The
/// records of the old layout (`failure.<Android user id>`) are moved to it
/// before any record is read or written: records of one secure user id
/// merge into the [stricter](FailureRecord::stricter) of them, so no
/// failure count is lowered.
pub struct StoreEnv<'a> {
    /// The gatekeeper namespace (locked for the whole message, so two
    /// attempts cannot both read the same failure count).
    pub store: &'a mut dyn SecureStore,
    /// Milliseconds since boot.
    pub now_ms: u64,
}

impl GatekeeperEnv for StoreEnv<'_> {
    fn now_ms(&self) -> u64 {
        self.now_ms
    }

    fn random(&mut self, buf: &mut [u8]) -> Result<(), String> {
        getrandom::fill(buf).map_err(|e| e.to_string())
    }

    fn read_record(&mut self, sid: u64) -> Result<Option<FailureRecord>, String> {
        migrate_uid_records(self.store)?;
        read_record_file(self.store, &record_name(sid))
    }

    fn write_record(&mut self, sid: u64, record: &FailureRecord) -> Result<(), String> {
        migrate_uid_records(self.store)?;
        self.store
            .commit(vec![Change {
                name: record_name(sid),
                data: Some(record.encode()),
            }])
            .map_err(|e| e.to_string())
    }

    fn delete_records(&mut self, sid: Option<u64>) -> Result<(), String> {
        let names: Vec<String> = match sid {
            Some(sid) => {
                // First, or an old record would come back with its count.
                migrate_uid_records(self.store)?;
                let name = record_name(sid);
                match self.store.meta(&name).map_err(|e| e.to_string())? {
                    Some(_) => vec![name],
                    None => Vec::new(),
                }
            }
            // Both layouts.
            None => self
                .store
                .files()
                .map_err(|e| e.to_string())?
                .into_iter()
                .map(|(n, _)| n)
                .filter(|n| n.starts_with(RECORDS_PREFIX))
                .collect(),
        };
        if names.is_empty() {
            return Ok(());
        }
        let changes = names
            .into_iter()
            .map(|name| Change { name, data: None })
            .collect();
        self.store.commit(changes).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests;
