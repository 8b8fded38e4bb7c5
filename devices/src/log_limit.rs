//! Rate-limited logging for everything a guest can trigger.
//!
//! A guest decides how often a device sees a bad chain, an unknown register
//! or a reset; a log line per event would let it fill the host's disk and
//! keep a host core busy formatting. So every log line a guest can cause
//! goes through [`guest_warn!`](crate::guest_warn) (or `guest_error!`,
//! `guest_info!`), which admits it through two token buckets:
//!
//! * one per call site ([`SITE_BURST`] lines at once, then one per
//!   [`SITE_REFILL`]), so one noisy path cannot hide the others;
//! * one for the whole process ([`GLOBAL_BURST`], then one per
//!   [`GLOBAL_REFILL`]), so many paths together stay bounded too.
//!
//! A line that is not admitted is counted, not formatted. The next admitted
//! line of the same site says how many were suppressed before it
//! (`[N similar lines suppressed]`), and [`suppressed_total`] counts them
//! all (the VMM prints it when it exits).
//!
//! Dependencies that log through the `log` facade (virtio-queue's
//! `error!("Iterator error ...")` fires once per bad chain) go through the
//! same limiter: [`install_log_bridge`] makes a [`LogBridge`] the `log`
//! crate's logger, which admits each record through a site per level and
//! forwards it to `tracing`.
//!
//! Worst case, the log a guest can cause grows by at most
//! `GLOBAL_BURST` lines plus one line per `GLOBAL_REFILL`: about 3,600
//! lines (well under 1 MiB) an hour.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Which kinds of problem (numbered 0 to 31) a device worker has logged,
/// so that each kind is logged once per worker however often the guest
/// repeats it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LoggedKinds(u32);

impl LoggedKinds {
    /// Marks `kind` logged (numbers above 31 share the last bit); `true`
    /// only the first time.
    pub fn first(&mut self, kind: u32) -> bool {
        let bit = 1u32 << kind.min(31);
        let first = self.0 & bit == 0;
        self.0 |= bit;
        first
    }
}

/// [`guest_warn!`] the first time a worker meets problem `kind` (a
/// [`LoggedKinds`] number; `logged` is the worker's record); the line adds
/// that further problems of the kind are not logged.
#[macro_export]
macro_rules! guest_warn_first {
    ($logged:expr, $kind:expr, $($arg:tt)+) => {
        if $logged.first($kind) {
            $crate::guest_warn!(
                "{} (further such problems are not logged)",
                format_args!($($arg)+)
            );
        }
    };
}

/// Lines one call site may log at once.
pub const SITE_BURST: u32 = 10;
/// After its burst, one more line per site per this much time.
pub const SITE_REFILL: Duration = Duration::from_secs(10);
/// Lines all sites together may log at once.
pub const GLOBAL_BURST: u32 = 100;
/// After the global burst, one more line per this much time.
pub const GLOBAL_REFILL: Duration = Duration::from_secs(1);

pub use vmstack_log::LineBucket;

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
/// this call site's rate limiter (see [`crate::log_limit`]). Nothing is
/// counted or formatted when the level is disabled.
#[macro_export]
macro_rules! guest_log {
    ($level:expr, $($arg:tt)+) => {{
        if $crate::log_limit::__tracing::enabled!($level) {
            static SITE: $crate::log_limit::LogSite = $crate::log_limit::LogSite::new();
            if let Some(suppressed) = SITE.admit() {
                if suppressed == 0 {
                    $crate::log_limit::__tracing::event!($level, $($arg)+);
                } else {
                    $crate::log_limit::__tracing::event!(
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
/// site and globally (see [`crate::log_limit`]).
#[macro_export]
macro_rules! guest_warn {
    ($($arg:tt)+) => { $crate::guest_log!($crate::log_limit::__tracing::Level::WARN, $($arg)+) };
}

/// `tracing::error!` for a line a guest can trigger, rate-limited.
#[macro_export]
macro_rules! guest_error {
    ($($arg:tt)+) => { $crate::guest_log!($crate::log_limit::__tracing::Level::ERROR, $($arg)+) };
}

/// `tracing::info!` for a line a guest can trigger, rate-limited.
#[macro_export]
macro_rules! guest_info {
    ($($arg:tt)+) => { $crate::guest_log!($crate::log_limit::__tracing::Level::INFO, $($arg)+) };
}

/// `tracing::debug!` for a line a guest can trigger, rate-limited.
#[macro_export]
macro_rules! guest_debug {
    ($($arg:tt)+) => { $crate::guest_log!($crate::log_limit::__tracing::Level::DEBUG, $($arg)+) };
}

/// The `log` crate's logger: admits each record through a rate-limited
/// site per level and forwards it to `tracing` (target and message in the
/// line). Dependencies such as virtio-queue log through `log` on paths a
/// guest drives.
#[derive(Debug, Default)]
pub struct LogBridge;

static BRIDGE: LogBridge = LogBridge;
static BRIDGE_SITES: [LogSite; 5] = [
    LogSite::new(),
    LogSite::new(),
    LogSite::new(),
    LogSite::new(),
    LogSite::new(),
];

impl log::Log for LogBridge {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = record.level();
        let site = &BRIDGE_SITES[level as usize - 1];
        let Some(suppressed) = site.admit() else {
            return;
        };
        let target = record.target();
        let args = record.args();
        let note = if suppressed == 0 {
            String::new()
        } else {
            format!(" [{suppressed} similar lines suppressed]")
        };
        match level {
            log::Level::Error => tracing::error!("{target}: {args}{note}"),
            log::Level::Warn => tracing::warn!("{target}: {args}{note}"),
            log::Level::Info => tracing::info!("{target}: {args}{note}"),
            log::Level::Debug => tracing::debug!("{target}: {args}{note}"),
            log::Level::Trace => tracing::trace!("{target}: {args}{note}"),
        }
    }

    fn flush(&self) {}
}

/// Makes [`LogBridge`] the `log` crate's logger, passing records at
/// `max_level` and above. Call once, after the `tracing` subscriber is
/// installed (and instead of `tracing-log`'s `LogTracer`).
pub fn install_log_bridge(max_level: log::LevelFilter) -> Result<(), log::SetLoggerError> {
    log::set_logger(&BRIDGE)?;
    log::set_max_level(max_level);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_is_first_once() {
        let mut logged = LoggedKinds::default();
        assert!(logged.first(0));
        assert!(logged.first(5));
        assert!(!logged.first(0));
        assert!(!logged.first(5));
        assert!(logged.first(40));
        assert!(!logged.first(31));
    }

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

    #[test]
    fn the_macros_compile_with_captures_and_arguments() {
        let e = "boom";
        for i in 0..100 {
            crate::guest_warn!("test line {i}: {e}");
            crate::guest_error!("test error {}", i);
            crate::guest_info!("test info");
        }
    }
}
