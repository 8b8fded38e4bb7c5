//! Gatekeeper's messages (AOSP `trusty/gatekeeper/gatekeeper_ipc.h`,
//! `system/gatekeeper`): `u32 cmd`, then `u32 error, u32 user_id` and the
//! message's fields; blobs are `u32 length` + bytes.

use super::{u32_at, Channel};

/// `GK_ENROLL`.
pub const ENROLL: u32 = 0;
/// `GK_VERIFY`.
pub const VERIFY: u32 = 2;
/// `ERROR_NONE`.
pub const ERROR_NONE: u32 = 0;
/// `ERROR_INVALID`.
pub const ERROR_INVALID: u32 = 1;
/// `ERROR_RETRY`: throttled, a timeout in ms follows.
pub const ERROR_RETRY: u32 = 2;

fn blob(b: &[u8]) -> Vec<u8> {
    let mut v = (b.len() as u32).to_le_bytes().to_vec();
    v.extend_from_slice(b);
    v
}

fn header(cmd: u32, uid: u32) -> Vec<u8> {
    [cmd.to_le_bytes(), 0u32.to_le_bytes(), uid.to_le_bytes()].concat()
}

/// The blob at `off` of a response.
fn blob_at(r: &[u8], off: usize) -> Result<Vec<u8>, String> {
    let len = u32_at(r, off)? as usize;
    r.get(off + 4..off + 4 + len)
        .map(<[u8]>::to_vec)
        .ok_or_else(|| {
            format!(
                "blob of {len} bytes past the end of a {}-byte response",
                r.len()
            )
        })
}

/// `ENROLL` of `password` for Android user `uid` (no current password):
/// `(error, handle)`.
pub fn enroll(ch: &mut dyn Channel, uid: u32, password: &[u8]) -> Result<(u32, Vec<u8>), String> {
    let msg = [header(ENROLL, uid), blob(password), blob(b""), blob(b"")].concat();
    let r = ch.call(&msg)?;
    if u32_at(&r, 0)? != ENROLL | 1 {
        return Err(format!("enroll answered cmd {}", u32_at(&r, 0)?));
    }
    match u32_at(&r, 4)? {
        ERROR_NONE => Ok((ERROR_NONE, blob_at(&r, 12)?)),
        e => Ok((e, Vec::new())),
    }
}

/// `VERIFY` of `password` against `handle`: `(error, retry ms, auth token)`.
pub fn verify(
    ch: &mut dyn Channel,
    uid: u32,
    challenge: u64,
    handle: &[u8],
    password: &[u8],
) -> Result<(u32, u32, Vec<u8>), String> {
    let msg = [
        header(VERIFY, uid),
        challenge.to_le_bytes().to_vec(),
        blob(handle),
        blob(password),
    ]
    .concat();
    let r = ch.call(&msg)?;
    if u32_at(&r, 0)? != VERIFY | 1 {
        return Err(format!("verify answered cmd {}", u32_at(&r, 0)?));
    }
    match u32_at(&r, 4)? {
        ERROR_NONE => Ok((ERROR_NONE, 0, blob_at(&r, 12)?)),
        ERROR_RETRY => Ok((ERROR_RETRY, u32_at(&r, 12)?, Vec::new())),
        e => Ok((e, 0, Vec::new())),
    }
}

/// The nested tests' flow for user `uid`: enroll "1234", verify it, four
/// wrong passwords (`ERROR_INVALID`), the fifth throttled (`ERROR_RETRY`,
/// 30 s), the right one refused inside the window. Each result goes to
/// `out(key, value)` as it happens (keys: `enroll_status`, `handle_len`,
/// `verify_status`, `token_len`, `token_challenge_ok`, `wrong_invalid`,
/// `fifth_wrong_status`, `fifth_wrong_retry_ms`, `right_throttled_status`,
/// `right_throttled_retry_ms`); returns the handle.
pub fn throttle_flow(
    ch: &mut dyn Channel,
    uid: u32,
    out: &mut dyn FnMut(&str, String),
) -> Result<Vec<u8>, String> {
    let (err, handle) = enroll(ch, uid, b"1234")?;
    out("enroll_status", err.to_string());
    out("handle_len", handle.len().to_string());
    let challenge = 0x1122_3344_5566_7788u64;
    let (err, _, token) = verify(ch, uid, challenge, &handle, b"1234")?;
    out("verify_status", err.to_string());
    out("token_len", token.len().to_string());
    let challenge_ok = token.get(1..9) == Some(&challenge.to_le_bytes()[..]);
    out("token_challenge_ok", u8::from(challenge_ok).to_string());
    let mut invalid = 0;
    for _ in 0..4 {
        if verify(ch, uid, 0, &handle, b"0000")?.0 == ERROR_INVALID {
            invalid += 1;
        }
    }
    out("wrong_invalid", invalid.to_string());
    let (err, ms, _) = verify(ch, uid, 0, &handle, b"0000")?;
    out("fifth_wrong_status", err.to_string());
    out("fifth_wrong_retry_ms", ms.to_string());
    let (err, ms, _) = verify(ch, uid, 0, &handle, b"1234")?;
    out("right_throttled_status", err.to_string());
    out("right_throttled_retry_ms", ms.to_string());
    Ok(handle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ta::fake::Scripted;

    fn resp(cmd: u32, error: u32, rest: &[u8]) -> Vec<u8> {
        [
            (cmd | 1).to_le_bytes().to_vec(),
            error.to_le_bytes().to_vec(),
            0u32.to_le_bytes().to_vec(),
            rest.to_vec(),
        ]
        .concat()
    }

    #[test]
    fn enroll_and_verify_messages() {
        let mut ch = Scripted::new(vec![
            resp(ENROLL, 0, &blob(b"HANDLE")),
            resp(VERIFY, ERROR_RETRY, &30_000u32.to_le_bytes()),
            resp(VERIFY, ERROR_INVALID, &[]),
        ]);
        assert_eq!(enroll(&mut ch, 10, b"pw").unwrap(), (0, b"HANDLE".to_vec()));
        assert_eq!(
            ch.sent[0],
            [
                &0u32.to_le_bytes()[..],
                &0u32.to_le_bytes(),
                &10u32.to_le_bytes(),
                &2u32.to_le_bytes(),
                b"pw",
                &0u32.to_le_bytes(),
                &0u32.to_le_bytes()
            ]
            .concat()
        );
        assert_eq!(
            verify(&mut ch, 10, 5, b"H", b"x").unwrap(),
            (2, 30_000, vec![])
        );
        assert_eq!(&ch.sent[1][12..20], &5u64.to_le_bytes());
        assert_eq!(verify(&mut ch, 10, 5, b"H", b"x").unwrap(), (1, 0, vec![]));
        let mut ch = Scripted::new(vec![resp(VERIFY, 0, &[])]);
        assert!(enroll(&mut ch, 1, b"x").is_err(), "wrong response cmd");
        let mut ch = Scripted::new(vec![resp(ENROLL, 0, &100u32.to_le_bytes())]);
        assert!(enroll(&mut ch, 1, b"x").is_err(), "blob past the end");
    }
}
