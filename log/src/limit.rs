//! Rate-limited logging for everything a guest can trigger.
//!
//! A guest decides how often a device sees a bad chain, how often it
//! reconnects to a trusted app or how often a storage commit fails; a log
//! line per event would let it fill the host's disk and keep a host core
//! busy formatting. So every log line a guest can cause goes through
//! [`guest_warn!`](crate::guest_warn) (or `guest_error!`, `guest_info!`,
//! `guest_debug!`), which admits it through two token buckets
//! ([`LineBucket`]):
//!
//! * one per call site ([`SITE_BURST`] lines at once, then one per
//!   [`SITE_REFILL`]), so one noisy path cannot hide the others;
//! * one for the whole process ([`GLOBAL_BURST`], then one per
//!   [`GLOBAL_REFILL`]), so many paths together stay bounded too.
//!
//! A line that is not admitted is counted, not formatted. The next admitted
//! line of the same site says how many were suppressed before it
//! (`[N similar lines suppressed]`), and [`suppressed_total`] counts them
//! all.
//!
//! Worst case, the log guests can cause grows by at most `GLOBAL_BURST`
//! lines plus one line per `GLOBAL_REFILL`: about 3,600 lines (well under
//! 1 MiB) an hour. The VMM (`devices::log_limit`, which re-exports this)
//! and `trustyd` use it; in `trustyd`, shared by all guests, a site's
//! budget is shared by all guests too.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::LineBucket;

/// Lines one call site may log at once.
pub const SITE_BURST: u32 = 10;
/// After its burst, one more line per site per this much time.
pub const SITE_REFILL: Duration = Duration::from_secs(10);
/// Lines all sites together may log at once.
pub const GLOBAL_BURST: u32 = 100;
/// After the global burst, one more line per this much time.
pub const GLOBAL_REFILL: Duration = Duration::from_secs(1);

static GLOBAL: Mutex<LineBucket> = Mutex::new(LineBucket::new());
static SUPPRESSED_TOTAL: AtomicU64 = AtomicU64::new(0);

/// Guest-triggered log lines suppressed so far, in the whole process.
pub fn suppressed_total() -> u64 {
    SUPPRESSED_TOTAL.load(Ordering::Relaxed)
}

/// One call site's bucket; the `guest_*!` macros declare one `static` per
/// call site.
#[derive(Debug)]
pub struct LogSite {
    bucket: Mutex<LineBucket>,
}

impl LogSite {
    /// A site that has logged nothing yet.
    pub const fn new() -> Self {
        Self {
            bucket: Mutex::new(LineBucket::new()),
        }
    }

    /// Whether the site may log now: `Some(n)` with the lines it had
    /// suppressed since its last one, `None` if this line is suppressed.
    pub fn admit(&self) -> Option<u64> {
        self.admit_with(&GLOBAL, Instant::now())
    }

    /// [`Self::admit`] against the global bucket `global` at `now`.
    fn admit_with(&self, global: &Mutex<LineBucket>, now: Instant) -> Option<u64> {
        let mut site = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        let mut global = global.lock().unwrap_or_else(|p| p.into_inner());
        // Both buckets must have a token; take from both or from neither.
        let admitted = site.peek(now, SITE_BURST, SITE_REFILL)
            && global.peek(now, GLOBAL_BURST, GLOBAL_REFILL);
        if admitted {
            global.admit(now, GLOBAL_BURST, GLOBAL_REFILL);
            site.admit(now, SITE_BURST, SITE_REFILL)
        } else {
            site.refuse();
            SUPPRESSED_TOTAL.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

impl Default for LogSite {
    fn default() -> Self {
        Self::new()
    }
}

#[doc(hidden)]
pub use tracing as __tracing;

/// Logs a guest-triggerable event at `level` (a `tracing::Level`) through
/// this call site's rate limiter (see [`crate::limit`]). Nothing is
/// counted or formatted when the level is disabled. Takes a format string
/// and its arguments (no `tracing` fields).
#[macro_export]
macro_rules! guest_log {
    ($level:expr, $($arg:tt)+) => {{
        if $crate::limit::__tracing::enabled!($level) {
            static SITE: $crate::limit::LogSite = $crate::limit::LogSite::new();
            if let Some(suppressed) = SITE.admit() {
                if suppressed == 0 {
                    $crate::limit::__tracing::event!($level, $($arg)+);
                } else {
                    $crate::limit::__tracing::event!(
                        $level,
                        "{} [{} similar lines suppressed]",
                        format_args!($($arg)+),
                        suppressed
                    );
                }
            }
        }
    }};
}

/// `tracing::warn!` for a line a guest can trigger, rate-limited per call
/// site and globally (see [`crate::limit`]).
#[macro_export]
macro_rules! guest_warn {
    ($($arg:tt)+) => { $crate::guest_log!($crate::limit::__tracing::Level::WARN, $($arg)+) };
}

/// `tracing::error!` for a line a guest can trigger, rate-limited.
#[macro_export]
macro_rules! guest_error {
    ($($arg:tt)+) => { $crate::guest_log!($crate::limit::__tracing::Level::ERROR, $($arg)+) };
}

/// `tracing::info!` for a line a guest can trigger, rate-limited.
#[macro_export]
macro_rules! guest_info {
    ($($arg:tt)+) => { $crate::guest_log!($crate::limit::__tracing::Level::INFO, $($arg)+) };
}

/// `tracing::debug!` for a line a guest can trigger, rate-limited.
#[macro_export]
macro_rules! guest_debug {
    ($($arg:tt)+) => { $crate::guest_log!($crate::limit::__tracing::Level::DEBUG, $($arg)+) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_from_one_site_is_bounded_and_counted() {
        let site = LogSite::new();
        let global = Mutex::new(LineBucket::new());
        let t0 = Instant::now();
        let before = suppressed_total();
        let admitted = (0..10_000)
            .filter(|_| site.admit_with(&global, t0).is_some())
            .count();
        assert!(admitted <= SITE_BURST as usize, "{admitted} lines admitted");
        assert!(suppressed_total() - before >= 10_000 - SITE_BURST as u64);
        // The next admitted line reports what was suppressed.
        let next = site
            .admit_with(&global, t0 + SITE_REFILL)
            .expect("refilled");
        assert!(next >= 10_000 - SITE_BURST as u64, "{next}");
    }

    #[test]
    fn many_sites_together_are_bounded_by_the_global_bucket() {
        let sites: Vec<LogSite> = (0..50).map(|_| LogSite::new()).collect();
        let global = Mutex::new(LineBucket::new());
        let t = Instant::now();
        let admitted = sites
            .iter()
            .flat_map(|s| (0..SITE_BURST).map(move |_| s))
            .filter(|s| s.admit_with(&global, t).is_some())
            .count();
        assert_eq!(admitted, GLOBAL_BURST as usize);
        // A site refused by the global bucket counts the line too.
        let last = &sites[49];
        assert!(last
            .admit_with(&global, t + GLOBAL_REFILL + SITE_REFILL)
            .is_some_and(|n| n > 0));
    }
}
