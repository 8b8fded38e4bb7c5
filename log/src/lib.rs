//! The one place where vmstack binaries set up logging.
//!
//! Every binary logs with `tracing`. [`Setup::init`] picks the sink by
//! target: on Android the events become `log` records (tracing's `log`
//! feature) that `android_logger` writes to logcat under the binary's tag;
//! elsewhere a `tracing_subscriber` fmt layer writes them to stderr. In both
//! cases the filter comes from the environment variable `<TAG>_LOG`
//! (upper case, `-` as `_`, e.g. `SYSMGR_BINDERD_LOG`), in `EnvFilter`
//! syntax (`info`, `warn,vmm::runner=debug`), with `info` as the default.
//!
//! Lines a guest can trigger go through [`limit`]'s rate limiter
//! ([`guest_warn!`] and friends).

pub mod bucket;
#[cfg(feature = "cli")]
pub mod cli;
pub mod limit;

pub use bucket::LineBucket;

/// How one binary logs; build it with [`Setup::new`], finish with [`Setup::init`].
#[derive(Clone, Debug)]
pub struct Setup {
    tag: String,
    default_filter: String,
    show_target: bool,
    log_tracer: bool,
    plain: bool,
}

impl Setup {
    /// Logging for the binary called `tag` (the logcat tag on Android).
    pub fn new(tag: &str) -> Self {
        Self {
            tag: tag.to_string(),
            default_filter: "info".to_string(),
            show_target: true,
            log_tracer: true,
            plain: false,
        }
    }

    /// Leave the event's module path out of each stderr line (no effect on
    /// Android, where logcat shows the tag).
    pub fn without_target(mut self) -> Self {
        self.show_target = false;
        self
    }

    /// Plain stderr lines: no colours, no timestamps, no target (for a
    /// console that scenarios read; no effect on Android).
    pub fn plain_lines(mut self) -> Self {
        self.plain = true;
        self.show_target = false;
        self
    }

    /// Leave the `log` crate's logger free for the caller (the VMM installs
    /// its rate-limited bridge there); by default `log` records of
    /// dependencies become `tracing` events. No effect on Android, where
    /// `android_logger` is the `log` logger.
    pub fn without_log_tracer(mut self) -> Self {
        self.log_tracer = false;
        self
    }

    /// The environment variable that holds the filter: `<TAG>_LOG`.
    pub fn filter_env(&self) -> String {
        filter_env_for(&self.tag)
    }

    /// The filter in force: the variable's value when set and not empty,
    /// else the default (`info`).
    pub fn filter_spec(&self) -> String {
        match std::env::var(self.filter_env()) {
            Ok(spec) if !spec.trim().is_empty() => spec,
            _ => self.default_filter.clone(),
        }
    }

    /// Install the logger for this process. A second call (or a logger
    /// installed by someone else) is left alone.
    pub fn init(self) {
        sink::install(&self);
    }
}

/// Set up logging for `tag` with the defaults (`<TAG>_LOG`, `info`,
/// targets shown): the one call at the top of a binary's `main`.
pub fn init(tag: &str) {
    Setup::new(tag).init();
}

/// `<TAG>_LOG` for a binary name: upper case, `-` and `.` as `_`.
fn filter_env_for(tag: &str) -> String {
    let mut name: String = tag
        .chars()
        .map(|c| match c {
            '-' | '.' | ' ' => '_',
            c => c.to_ascii_uppercase(),
        })
        .collect();
    name.push_str("_LOG");
    name
}

#[cfg(not(target_os = "android"))]
mod sink {
    use super::Setup;
    use tracing_subscriber::EnvFilter;

    pub(super) fn install(setup: &Setup) {
        let spec = setup.filter_spec();
        let filter = EnvFilter::try_new(&spec).unwrap_or_else(|e| {
            eprintln!(
                "{}: ignoring {}={spec:?} ({e}); logging at {}",
                setup.tag,
                setup.filter_env(),
                setup.default_filter
            );
            EnvFilter::new(&setup.default_filter)
        });
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_target(setup.show_target)
            .with_writer(std::io::stderr);
        if setup.plain {
            let builder = builder.with_ansi(false).without_time();
            if setup.log_tracer {
                let _ = builder.try_init();
            } else {
                let _ = tracing::subscriber::set_global_default(builder.finish());
            }
            return;
        }
        // Both fail only when a subscriber (or `log` logger) is already set
        // (a second call); that one stays.
        if setup.log_tracer {
            // `try_init` also routes `log` records into tracing (LogTracer).
            let _ = builder.try_init();
        } else {
            let _ = tracing::subscriber::set_global_default(builder.finish());
        }
    }
}

#[cfg(target_os = "android")]
mod sink {
    use super::Setup;

    pub(super) fn install(setup: &Setup) {
        let filter = env_filter::Builder::new()
            .parse(&setup.filter_spec())
            .build();
        android_logger::init_once(
            android_logger::Config::default()
                .with_tag(setup.tag.as_str())
                .with_max_level(log::LevelFilter::Trace)
                .with_filter(filter),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_variable_follows_the_binary_name() {
        assert_eq!(filter_env_for("vmm"), "VMM_LOG");
        assert_eq!(filter_env_for("sysmgr"), "SYSMGR_LOG");
        assert_eq!(filter_env_for("sysmgr-binderd"), "SYSMGR_BINDERD_LOG");
        assert_eq!(filter_env_for("trustyd"), "TRUSTYD_LOG");
    }

    #[test]
    fn filter_defaults_to_info_and_reads_the_variable() {
        let setup = Setup::new("vmstack-log-selftest");
        let var = setup.filter_env();
        // No other test reads this variable.
        std::env::remove_var(&var);
        assert_eq!(setup.filter_spec(), "info");
        std::env::set_var(&var, "  ");
        assert_eq!(setup.filter_spec(), "info");
        std::env::set_var(&var, "debug,vmm=trace");
        assert_eq!(setup.filter_spec(), "debug,vmm=trace");
        std::env::remove_var(&var);
    }

    #[test]
    fn init_twice_keeps_the_first_logger() {
        init("vmstack-log-selftest");
        Setup::new("vmstack-log-selftest").without_target().init();
        tracing::info!("still logging");
    }
}
