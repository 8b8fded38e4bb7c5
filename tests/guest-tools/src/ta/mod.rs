//! Trusty TA messages (AOSP's formats, `docs/trusty.md`) and the flows the
//! nested tests run over any [`Channel`]: a libtrusty vsock connection
//! (`trusty-test`), a GlobalPlatform session on `/dev/tee0` through the
//! kernel uapi or through Debian's `libteec` (`tee-test`).

pub mod gatekeeper;
pub mod hwkey;
pub mod storage;

/// A request/response channel to one TA: one message out, one back.
pub trait Channel {
    /// Sends `msg` and returns the TA's one response; `Err` for a
    /// transport failure (the TA's own errors are inside the response).
    fn call(&mut self, msg: &[u8]) -> Result<Vec<u8>, String>;
}

/// Trusty port names.
pub mod port {
    /// The echo test service.
    pub const ECHO: &str = "com.android.ipc-unittest.srv.echo";
    /// Secure storage (tamper-proof, persistent).
    pub const STORAGE: &str = "com.android.trusty.storage.client.td";
    /// Gatekeeper.
    pub const GATEKEEPER: &str = "com.android.trusty.gatekeeper";
    /// hwkey.
    pub const HWKEY: &str = "com.android.trusty.hwkey";
}

/// GlobalPlatform UUIDs of the same TAs on the TEE path (UUIDv5 of the
/// port names, `docs/virtio-tee.md`).
pub mod uuid {
    /// echo.
    pub const ECHO: &str = "b4270f96-0acb-5e22-88f7-2ea945e72654";
    /// Secure storage.
    pub const STORAGE: &str = "d342e39f-e90d-5004-971f-876293f95ba4";
    /// Gatekeeper.
    pub const GATEKEEPER: &str = "0306d574-a8fd-56f3-92dd-7fad69ac7969";
    /// hwkey.
    pub const HWKEY: &str = "ef404237-bb58-5147-9ee7-cb1759f24db9";

    /// The UUID of a TA name used on the command line (`storage`,
    /// `gatekeeper`, `hwkey`, `echo`).
    pub fn of(name: &str) -> Option<&'static str> {
        match name {
            "echo" => Some(ECHO),
            "storage" => Some(STORAGE),
            "gatekeeper" => Some(GATEKEEPER),
            "hwkey" => Some(HWKEY),
            _ => None,
        }
    }
}

/// Little-endian `u32` at `off` of a response.
pub fn u32_at(b: &[u8], off: usize) -> Result<u32, String> {
    b.get(off..off + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| format!("response of {} bytes too short", b.len()))
}

/// Little-endian `u64` at `off` of a response.
pub fn u64_at(b: &[u8], off: usize) -> Result<u64, String> {
    b.get(off..off + 8)
        .map(|s| {
            let mut a = [0u8; 8];
            a.copy_from_slice(s);
            u64::from_le_bytes(a)
        })
        .ok_or_else(|| format!("response of {} bytes too short", b.len()))
}

#[cfg(test)]
pub(crate) mod fake {
    //! A scripted channel for the unit tests.

    use super::Channel;

    /// Answers each call with the next scripted response and records the
    /// requests.
    pub struct Scripted {
        /// What each call returns, in order.
        pub answers: Vec<Vec<u8>>,
        /// The requests seen.
        pub sent: Vec<Vec<u8>>,
    }

    impl Scripted {
        pub fn new(answers: Vec<Vec<u8>>) -> Self {
            Scripted {
                answers,
                sent: Vec::new(),
            }
        }
    }

    impl Channel for Scripted {
        fn call(&mut self, msg: &[u8]) -> Result<Vec<u8>, String> {
            self.sent.push(msg.to_vec());
            if self.answers.is_empty() {
                return Err("no more answers".into());
            }
            Ok(self.answers.remove(0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_and_uuids() {
        assert_eq!(u32_at(&[1, 0, 0, 0, 9], 0), Ok(1));
        assert!(u32_at(&[1, 0, 0], 0).is_err());
        assert_eq!(u64_at(&[2, 0, 0, 0, 0, 0, 0, 0], 0), Ok(2));
        assert!(u64_at(&[0; 7], 0).is_err());
        assert_eq!(uuid::of("hwkey"), Some(uuid::HWKEY));
        assert_eq!(uuid::of("x"), None);
    }
}
