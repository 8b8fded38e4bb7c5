//! Log lines a guest can trigger, rate-limited per guest.
//!
//! A guest decides how often it sends a VHAL report, a `SHUTDOWN_REQUEST`
//! or a power request, reconnects its VHAL channel or reboots; a journal
//! line per event would let it grow `sysmgr`'s log without bound. So each
//! such line goes through [`guest_line!`](crate::guest_line) with that
//! guest's [`GuestLines`]: a token bucket ([`vmstack_log::LineBucket`], the
//! one the VMM's `devices::log_limit` uses) of [`GUEST_BURST`] lines, then
//! one per [`GUEST_REFILL`]. A line that is not admitted is counted, not
//! formatted; the guest's next admitted line says how many were left out
//! (`[N similar lines suppressed]`). One guest's flood does not silence
//! another guest's lines.
//!
//! The daemon keeps one budget per guest in its core loop, and the
//! guest's VHAL and VMM tasks one each: worst case a guest adds three
//! times `GUEST_BURST` lines plus three per `GUEST_REFILL` (5,400 an
//! hour), each an input line with its outputs. A record whose outputs
//! reach beyond the guest is not budgeted ([`budget_of`]).

use std::time::{Duration, Instant};

use vmstack_log::LineBucket;

/// Lines (or journal records) one guest may cause at once: enough for
/// several boots and shutdown handshakes in a row.
pub const GUEST_BURST: u32 = 60;
/// After its burst, one more line per guest per this much time.
pub const GUEST_REFILL: Duration = Duration::from_secs(2);

/// One guest's budget of log lines.
#[derive(Debug, Default, Clone)]
pub struct GuestLines {
    bucket: LineBucket,
}

impl GuestLines {
    /// Whether the guest may log a line now: `Some(n)` with the lines
    /// suppressed since its last one, `None` when this one is suppressed.
    pub fn admit(&mut self) -> Option<u64> {
        self.admit_at(Instant::now())
    }

    fn admit_at(&mut self, now: Instant) -> Option<u64> {
        self.bucket.admit(now, GUEST_BURST, GUEST_REFILL)
    }
}

/// ` [N similar lines suppressed]` after an admitted line that follows
/// suppressed ones, else nothing.
pub fn suppressed_note(suppressed: u64) -> String {
    if suppressed == 0 {
        String::new()
    } else {
        format!(" [{suppressed} similar lines suppressed]")
    }
}

/// The guest whose log budget a decision record's journal lines count
/// against: the guest its input names, unless one of its outputs reaches
/// beyond that guest (an MCU command, another guest's VM or handshake);
/// such a record is always shown.
pub fn budget_of(record: &system_manager::LogRecord) -> Option<&str> {
    let guest = record.input.guest()?;
    record
        .outputs
        .iter()
        .all(|o| {
            o.is_log_only()
                || matches!(o, system_manager::Output::SetTimer { .. })
                || o.guest() == Some(guest)
        })
        .then_some(guest)
}

/// Logs at `level` (`info`, `warn`, ...: a `tracing` macro name) a line
/// guest `lines` (a [`GuestLines`]) caused, if its budget admits it;
/// nothing is formatted otherwise.
#[macro_export]
macro_rules! guest_line {
    ($lines:expr, $level:ident, $($arg:tt)+) => {{
        if let Some(suppressed) = $lines.admit() {
            ::tracing::$level!(
                "{}{}",
                format_args!($($arg)+),
                $crate::guest_log::suppressed_note(suppressed)
            );
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;
    use system_manager::{Input, LogRecord, Millis, Output, SystemState};

    fn record(input: Input, outputs: Vec<Output>) -> LogRecord {
        LogRecord {
            seq: 1,
            at: Millis(0),
            input,
            outputs,
            system: SystemState::On,
        }
    }

    #[test]
    fn a_record_reaching_beyond_its_guest_is_not_budgeted() {
        let exited = Input::VmExited {
            guest: "android".into(),
            reason: system_manager::VmExitReason::Poweroff,
        };
        let start = |g: &str| Output::StartVm {
            guest: g.into(),
            reason: "r".into(),
        };
        let own = record(exited.clone(), vec![start("android")]);
        assert_eq!(budget_of(&own), Some("android"));
        let other = record(exited.clone(), vec![start("cluster")]);
        assert_eq!(budget_of(&other), None);
        let mcu = record(exited, vec![Output::SystemOn { reason: "r".into() }]);
        assert_eq!(budget_of(&mcu), None);
        assert_eq!(budget_of(&record(Input::IgnitionOn, vec![])), None);
    }

    #[test]
    fn a_guest_gets_its_burst_then_one_line_per_refill() {
        let t0 = Instant::now();
        let mut g = GuestLines::default();
        for _ in 0..GUEST_BURST {
            assert_eq!(g.admit_at(t0), Some(0));
        }
        for _ in 0..10_000 {
            assert_eq!(g.admit_at(t0), None);
        }
        assert_eq!(g.admit_at(t0 + GUEST_REFILL), Some(10_000));
        assert_eq!(g.admit_at(t0 + GUEST_REFILL), None);
    }

    #[test]
    fn one_guest_flooding_leaves_the_other_its_lines() {
        let t0 = Instant::now();
        let (mut noisy, mut quiet) = (GuestLines::default(), GuestLines::default());
        let admitted = (0..100_000)
            .filter(|_| noisy.admit_at(t0).is_some())
            .count();
        assert_eq!(admitted, GUEST_BURST as usize);
        assert_eq!(quiet.admit_at(t0), Some(0));
    }

    #[test]
    fn an_hour_of_flooding_stays_within_the_bound() {
        let t0 = Instant::now();
        let mut g = GuestLines::default();
        // One attempt every 10 ms for an hour.
        let admitted = (0..360_000u64)
            .filter(|i| g.admit_at(t0 + Duration::from_millis(i * 10)).is_some())
            .count() as u64;
        let bound = u64::from(GUEST_BURST) + 3600 / GUEST_REFILL.as_secs();
        assert!(admitted <= bound, "{admitted} > {bound}");
        assert!(admitted >= bound - 1, "{admitted}");
    }

    #[test]
    fn the_macro_spends_the_guests_budget() {
        let mut g = GuestLines::default();
        let name = "android";
        for i in 0..1000 {
            crate::guest_line!(g, info, "{name}: line {i}");
        }
        assert_eq!(g.admit(), None);
    }

    #[test]
    fn the_note_counts_the_suppressed_lines() {
        assert_eq!(suppressed_note(0), "");
        assert_eq!(suppressed_note(7), " [7 similar lines suppressed]");
    }
}
