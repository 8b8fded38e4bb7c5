//! hwkey's messages (Trusty `interface/hwkey/hwkey.h`): `struct hwkey_msg
//! {u32 cmd, op_id, status, arg1, arg2}` + payload.

use super::{u32_at, Channel};

/// `HWKEY_DERIVE`.
pub const DERIVE: u32 = 2;
/// `HWKEY_KDF_VERSION_BEST`.
pub const KDF_VERSION_BEST: u32 = 0;
/// The seed the nested tests derive from (32 bytes: a 32-byte key).
pub const TEST_SEED: &[u8] = b"vmstack nested test seed 32 byte";

/// `DERIVE` from `seed` with the best KDF: `(KDF version used, key)`.
pub fn derive(ch: &mut dyn Channel, seed: &[u8]) -> Result<(u32, Vec<u8>), String> {
    const OP_ID: u32 = 77;
    let mut msg: Vec<u8> = [DERIVE, OP_ID, 0, KDF_VERSION_BEST, 0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    msg.extend_from_slice(seed);
    let r = ch.call(&msg)?;
    let (cmd, op, status) = (u32_at(&r, 0)?, u32_at(&r, 4)?, u32_at(&r, 8)?);
    if cmd != DERIVE | 1 || op != OP_ID || status != 0 {
        return Err(format!(
            "derive failed: cmd {cmd} op_id {op} status {status}"
        ));
    }
    Ok((u32_at(&r, 12)?, r[20..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ta::fake::Scripted;

    #[test]
    fn derive_message() {
        let mut ok: Vec<u8> = [3u32, 77, 0, 1, 0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        ok.extend_from_slice(&[9; 4]);
        let mut ch = Scripted::new(vec![
            ok,
            [3u32, 77, 3, 0, 0]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ]);
        assert_eq!(derive(&mut ch, b"seed").unwrap(), (1, vec![9; 4]));
        assert_eq!(ch.sent[0].len(), 24);
        assert_eq!(&ch.sent[0][20..], b"seed");
        assert!(derive(&mut ch, b"seed").is_err(), "status BAD_LEN");
    }
}
