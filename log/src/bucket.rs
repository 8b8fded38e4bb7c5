//! A token bucket of whole log lines, shared by everything that rate-limits
//! the log lines a guest can trigger: the per-call-site limiter
//! ([`crate::limit`], used by the VMM and `trustyd`) and `sysmgr`'s
//! per-guest one; `trustyd` also paces storage commits with it.

use std::time::{Duration, Instant};

/// A token bucket of whole log lines (a pure value: time is passed in).
#[derive(Debug, Clone)]
pub struct LineBucket {
    /// Lines that may be logged now, out of `burst`; `None` until first
    /// use (a `const` constructor cannot read the clock).
    tokens: Option<u32>,
    /// When the last token was added.
    refilled: Option<Instant>,
    /// Lines refused since the last admitted one.
    suppressed: u64,
}

impl LineBucket {
    /// A full bucket.
    pub const fn new() -> Self {
        Self {
            tokens: None,
            refilled: None,
            suppressed: 0,
        }
    }

    /// Refills by whole `period`s since the last refill, up to `burst`.
    fn refill(&mut self, now: Instant, burst: u32, period: Duration) {
        let tokens = self.tokens.get_or_insert(burst);
        let last = *self.refilled.get_or_insert(now);
        let elapsed = now.saturating_duration_since(last);
        let periods = elapsed.as_nanos() / period.as_nanos().max(1);
        if periods == 0 {
            return;
        }
        let add = u32::try_from(periods).unwrap_or(u32::MAX);
        *tokens = tokens.saturating_add(add).min(burst);
        // Keep the remainder so a steady trickle is not rounded away.
        self.refilled = Some(if *tokens == burst {
            now
        } else {
            last + period * add
        });
    }

    /// Whether a token is there (without taking it).
    pub fn peek(&mut self, now: Instant, burst: u32, period: Duration) -> bool {
        self.refill(now, burst, period);
        self.tokens.unwrap_or(burst) > 0
    }

    /// Takes a token; `Some(n)` with the number of lines suppressed since
    /// the last admitted one, or `None` (and counts the line) when empty.
    pub fn admit(&mut self, now: Instant, burst: u32, period: Duration) -> Option<u64> {
        if !self.peek(now, burst, period) {
            self.suppressed += 1;
            return None;
        }
        if let Some(tokens) = &mut self.tokens {
            *tokens -= 1;
        }
        Some(std::mem::take(&mut self.suppressed))
    }

    /// Counts a line refused for another reason (another bucket it also
    /// has to pass was empty).
    pub fn refuse(&mut self) {
        self.suppressed += 1;
    }
}

impl Default for LineBucket {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The refill period of the buckets under test.
    const PERIOD: Duration = Duration::from_secs(10);

    #[test]
    fn a_bucket_admits_its_burst_then_one_per_period() {
        let t0 = Instant::now();
        let mut b = LineBucket::new();
        for _ in 0..3 {
            assert_eq!(b.admit(t0, 3, PERIOD), Some(0));
        }
        assert_eq!(b.admit(t0, 3, PERIOD), None);
        assert_eq!(b.admit(t0 + Duration::from_secs(9), 3, PERIOD), None);
        // One period later: one line, carrying the count.
        assert_eq!(b.admit(t0 + Duration::from_secs(10), 3, PERIOD), Some(2));
        assert_eq!(b.admit(t0 + Duration::from_secs(11), 3, PERIOD), None);
        // A long pause refills at most the burst.
        let later = t0 + Duration::from_secs(1000);
        for _ in 0..3 {
            assert!(b.admit(later, 3, PERIOD).is_some());
        }
        assert_eq!(b.admit(later, 3, PERIOD), None);
    }

    #[test]
    fn a_steady_trickle_keeps_its_remainder() {
        let t0 = Instant::now();
        let mut b = LineBucket::new();
        for _ in 0..3 {
            assert!(b.admit(t0, 3, PERIOD).is_some());
        }
        // 15 s: one token (5 s carried over), 20 s: the next one.
        assert!(b.admit(t0 + Duration::from_secs(15), 3, PERIOD).is_some());
        assert!(b.admit(t0 + Duration::from_secs(20), 3, PERIOD).is_some());
        assert!(b.admit(t0 + Duration::from_secs(21), 3, PERIOD).is_none());
    }
}
