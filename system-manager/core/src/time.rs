//! Time as data: the arbiter never reads a clock.
//!
//! The shell passes `now` with every input, on one monotonic millisecond
//! clock of its own choosing (e.g. `CLOCK_BOOTTIME` since daemon start). The
//! arbiter only compares and adds such values, so a log of inputs replays to
//! the same state on any machine.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A point on the shell's monotonic clock, in milliseconds.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Millis(pub u64);

impl Millis {
    /// The clock's origin.
    pub const ZERO: Millis = Millis(0);

    /// `s` seconds after the origin (saturating).
    pub const fn from_secs(s: u64) -> Self {
        Millis(s.saturating_mul(1000))
    }

    /// The point `ms` milliseconds after `self` (saturating at the end of time).
    pub const fn after(self, ms: u64) -> Self {
        Millis(self.0.saturating_add(ms))
    }

    /// The point `ms` milliseconds before `self` (saturating at the origin).
    pub const fn before(self, ms: u64) -> Self {
        Millis(self.0.saturating_sub(ms))
    }

    /// Milliseconds since the origin.
    pub const fn as_millis(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Millis {
    /// Seconds with millisecond precision, e.g. `t=12.345s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t={}.{:03}s", self.0 / 1000, self.0 % 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        assert_eq!(Millis(u64::MAX).after(1), Millis(u64::MAX));
        assert_eq!(Millis(3).before(5), Millis::ZERO);
        assert_eq!(Millis::from_secs(2).after(5), Millis(2005));
    }

    #[test]
    fn displays_seconds() {
        assert_eq!(Millis(12_345).to_string(), "t=12.345s");
        assert_eq!(Millis(7).to_string(), "t=0.007s");
    }

    #[test]
    fn serializes_as_a_plain_number() {
        assert_eq!(
            serde_json::to_string(&Millis(42)).ok().as_deref(),
            Some("42")
        );
    }
}
