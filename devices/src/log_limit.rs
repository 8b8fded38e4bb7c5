//! Rate-limited logging for everything a guest can trigger.
//!
//! The limiter itself (per-call-site and global token buckets, the
//! [`guest_warn!`](crate::guest_warn) family of macros) lives in
//! [`vmstack_log::limit`], shared with `trustyd`; it is re-exported here and
//! at the crate root so device code keeps writing `crate::guest_warn!`.
//! This module adds what only the VMM needs: [`LoggedKinds`] (a problem
//! logged once per device worker) and the [`LogBridge`] for dependencies
//! that log through the `log` facade (virtio-queue's
//! `error!("Iterator error ...")` fires once per bad chain):
//! [`install_log_bridge`] makes it the `log` crate's logger, which admits
//! each record through a site per level and forwards it to `tracing`.

pub use vmstack_log::limit::{
    suppressed_total, LogSite, GLOBAL_BURST, GLOBAL_REFILL, SITE_BURST, SITE_REFILL,
};
pub use vmstack_log::LineBucket;

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
    fn the_macros_compile_with_captures_and_arguments() {
        let e = "boom";
        for i in 0..100 {
            crate::guest_warn!("test line {i}: {e}");
            crate::guest_error!("test error {}", i);
            crate::guest_info!("test info");
        }
    }
}
