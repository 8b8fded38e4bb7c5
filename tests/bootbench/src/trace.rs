//! Parsing of tracefs `trace` output.
//!
//! A line looks like
//! `         vmm-93      [000] d..2.    25.084398: kvm_entry: vcpu 0, rip 0xfff0`:
//! task name and pid (the name may contain spaces), CPU, flags, timestamp in
//! seconds (the instance's `trace_clock`; `mono` is `CLOCK_MONOTONIC`), event
//! name, event fields. Comment lines start with `#`.

/// The timestamp in nanoseconds of `line` if it is an `event` line.
pub fn event_timestamp_ns(line: &str, event: &str) -> Option<u64> {
    if line.trim_start().starts_with('#') {
        return None;
    }
    let marker = format!(": {event}:");
    let pos = line.find(&marker)?;
    // The timestamp is the last word before ": <event>:".
    let stamp = line[..pos].split_whitespace().next_back()?;
    parse_seconds_ns(stamp)
}

/// The timestamp in nanoseconds of the first `event` line in `text`.
pub fn first_event_ns(text: &str, event: &str) -> Option<u64> {
    text.lines().find_map(|l| event_timestamp_ns(l, event))
}

/// Parses `SECONDS[.FRACTION]` (e.g. `25.084398`) into nanoseconds.
pub fn parse_seconds_ns(s: &str) -> Option<u64> {
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    if secs.is_empty()
        || !secs.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || frac.len() > 9
    {
        return None;
    }
    let secs: u64 = secs.parse().ok()?;
    let mut nanos: u64 = 0;
    for i in 0..9 {
        let digit = frac.as_bytes().get(i).map_or(0, |b| u64::from(b - b'0'));
        nanos = nanos * 10 + digit;
    }
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = "\
# tracer: nop
#
# entries-in-buffer/entries-written: 2/2   #P:1
#
#                                _-----=> irqs-off/BH-disabled
#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION
#              | |         |   |||||     |         |
       CPU 0/KVM-212     [000] d..2.    31.207116: kvm_entry: vcpu 0, rip 0xfff0
           vmm-93        [000] d..2.    31.300001: kvm_pio: pio_write at 0x4f0 size 1 count 1 val 0x7b
";

    #[test]
    fn finds_events_and_timestamps() {
        assert_eq!(first_event_ns(TRACE, "kvm_entry"), Some(31_207_116_000));
        assert_eq!(first_event_ns(TRACE, "kvm_pio"), Some(31_300_001_000));
        assert_eq!(first_event_ns(TRACE, "kvm_exit"), None);
        assert_eq!(
            first_event_ns("# kvm_entry: 1.0: kvm_entry: x", "kvm_entry"),
            None
        );
    }

    #[test]
    fn first_of_several() {
        let t = "x-1 [000] .... 2.000001: kvm_entry: a\nx-1 [000] .... 3.5: kvm_entry: b\n";
        assert_eq!(first_event_ns(t, "kvm_entry"), Some(2_000_001_000));
    }

    #[test]
    fn seconds() {
        assert_eq!(parse_seconds_ns("0.000001"), Some(1_000));
        assert_eq!(parse_seconds_ns("12"), Some(12_000_000_000));
        assert_eq!(parse_seconds_ns("1.123456789"), Some(1_123_456_789));
        assert_eq!(parse_seconds_ns("1.1234567891"), None);
        assert_eq!(parse_seconds_ns("[000]"), None);
        assert_eq!(parse_seconds_ns(".5"), None);
        assert_eq!(parse_seconds_ns("1.-5"), None);
    }
}
