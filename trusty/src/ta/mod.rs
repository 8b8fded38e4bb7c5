//! The trusted apps, each a pure core: a message in, messages out, state
//! behind small traits; the service and the servers are the I/O shells.
//!
//! Two ways in:
//! - [`Channel`]: one Trusty connection (libtrusty over vsock, or a GP
//!   session to a message TA): each message gets zero or more messages
//!   back.
//! - [`GpSession`]: one GlobalPlatform session on the TEE path: invokes
//!   with four parameters ([`gp`] maps them onto channels).

pub mod echo;
pub mod gatekeeper;
pub mod gp;
pub mod hwkey;
pub mod storage;

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::tee::proto::{Param, ParamOut, NUM_PARAMS};

/// One connection to a TA speaking Trusty messages.
pub trait Channel: Send {
    /// Handles one message; returns what the TA sends back, in order.
    fn on_message(&mut self, msg: &[u8]) -> Vec<Vec<u8>>;
}

/// The outcome of a GP invoke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvokeResult {
    /// `TEEC_*` result.
    pub ret: u32,
    /// `TEEC_ORIGIN_*`.
    pub origin: u32,
    /// Output parameters (the request's types).
    pub params: [ParamOut; NUM_PARAMS],
}

/// One GP session.
pub trait GpSession: Send {
    /// Runs command `func`. `cancel` is set when the client cancels this
    /// invoke; long-running commands watch it.
    fn invoke(
        &mut self,
        func: u32,
        params: &[Param; NUM_PARAMS],
        cancel: &CancelFlag,
    ) -> InvokeResult;
}

/// A cancellation request one thread sets and another waits on.
#[derive(Debug, Default)]
pub struct CancelFlag {
    cancelled: Mutex<bool>,
    cond: Condvar,
}

impl CancelFlag {
    /// A flag that is not set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the flag and wakes a waiter.
    pub fn cancel(&self) {
        let mut c = self.cancelled.lock().unwrap_or_else(|p| p.into_inner());
        *c = true;
        self.cond.notify_all();
    }

    /// Whether the flag is set.
    pub fn is_cancelled(&self) -> bool {
        *self.cancelled.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits up to `d`; returns true if cancelled (at once when it is).
    pub fn wait(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        let mut c = self.cancelled.lock().unwrap_or_else(|p| p.into_inner());
        while !*c {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            c = match self.cond.wait_timeout(c, deadline - now) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
        true
    }
}

/// Little-endian field access for the message parsers.
pub(crate) mod le {
    /// `u32` at `off`, if present.
    pub fn u32_at(b: &[u8], off: usize) -> Option<u32> {
        let s = b.get(off..off.checked_add(4)?)?;
        Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    /// `u64` at `off`, if present.
    pub fn u64_at(b: &[u8], off: usize) -> Option<u64> {
        let s = b.get(off..off.checked_add(8)?)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Some(u64::from_le_bytes(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn cancel_wakes_a_waiter() {
        let f = Arc::new(CancelFlag::new());
        assert!(!f.wait(Duration::from_millis(10)));
        let g = f.clone();
        let t = std::thread::spawn(move || g.wait(Duration::from_secs(30)));
        std::thread::sleep(Duration::from_millis(20));
        f.cancel();
        assert!(t.join().unwrap());
        assert!(f.is_cancelled());
    }

    #[test]
    fn le_reads_are_bounds_checked() {
        assert_eq!(le::u32_at(&[1, 0, 0, 0], 0), Some(1));
        assert_eq!(le::u32_at(&[1, 0, 0], 0), None);
        assert_eq!(le::u64_at(&[0; 8], 1), None);
        assert_eq!(le::u32_at(&[0; 8], usize::MAX), None);
    }
}
