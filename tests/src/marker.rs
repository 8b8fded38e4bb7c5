//! Marker lines: what the nested tests read from a scenario's output.
//!
//! A marker is a console line `@@vmstack:<key>=<value>` printed by our own
//! scripts (`mark` in `prebuilts/lib/vmstack.sh`), optionally after a
//! kernel log timestamp (`[   12.345678] @@vmstack:...`, a marker the guest
//! wrote to `/dev/kmsg`). Keys are `[A-Za-z0-9_.-]+`; the value is the rest
//! of the line. A line with the prefix anywhere else is not a marker.
//!
//! A kernel message can land inside a marker line: the kernel writes its
//! console messages straight to the UART, between the chunks in which the
//! tty layer sends a program's line (seen: `=104857600[   33.725918]
//! clocksource: Long readout interval...` on a stalled test host). A value
//! is therefore cut where a kernel timestamp starts inside it (not at its
//! start; not in `*.log` values, which are VMM log lines that may quote
//! anything). A message that splits a value in two leaves a truncated
//! value, which the test's check then reports.
//!
//! Namespaces (set by the scripts, so a guest cannot forge another's):
//! - `<key>`: the test host's scenario itself;
//! - `<tag>.log`: one line of the log (stderr) of the VMM run as `<tag>`
//!   (`run_vmm`), `<tag>.rc`: its exit status;
//! - `<tag>.guest.<key>`: a marker the guest of that VMM printed (its
//!   console passes through `guest_lines`, which prefixes every other guest
//!   line with `<tag>| `).

/// What every marker line starts with.
pub const PREFIX: &str = "@@vmstack:";

/// One marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker<'a> {
    /// The key (`vmm.guest.nproc`).
    pub key: &'a str,
    /// The value (`2`); empty for a bare `@@vmstack:<key>`.
    pub value: &'a str,
    /// Index of the line in the output it came from (for ordering).
    pub line: usize,
}

/// The rest of `line` after a leading kernel log timestamp
/// (`[ 12.345678] `), or `line` itself.
fn after_timestamp(line: &str) -> &str {
    let Some(rest) = line.strip_prefix('[') else {
        return line;
    };
    let Some((stamp, after)) = rest.split_once("] ") else {
        return line;
    };
    let stamp = stamp.trim_start();
    let is_time = !stamp.is_empty() && stamp.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    if is_time {
        after
    } else {
        line
    }
}

/// `value` without a kernel message that landed inside it: cut where a
/// `[ seconds] ` timestamp starts after its first byte.
fn without_kernel_message(value: &str) -> &str {
    let intruder = value
        .match_indices('[')
        .map(|(at, _)| at)
        .find(|&at| at > 0 && !std::ptr::eq(after_timestamp(&value[at..]), &value[at..]));
    match intruder {
        Some(at) => value[..at].trim_end(),
        None => value,
    }
}

/// The key and value of `line` if it is a marker.
pub fn parse_line(line: &str) -> Option<(&str, &str)> {
    let rest = after_timestamp(line).strip_prefix(PREFIX)?;
    let (key, value) = rest.split_once('=').unwrap_or((rest, ""));
    let valid = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    let value = value.trim_end();
    let value = if key.ends_with(".log") {
        value
    } else {
        without_kernel_message(value)
    };
    valid.then_some((key, value))
}

/// Every marker of `output`, in order.
pub fn parse(output: &str) -> Vec<Marker<'_>> {
    output
        .lines()
        .enumerate()
        .filter_map(|(line, text)| parse_line(text).map(|(key, value)| Marker { key, value, line }))
        .collect()
}

/// Whether `line` is a kernel log line (`[ seconds] text`, possibly after
/// a `<tag>| ` prefix) whose text contains `needle`. For the few checks
/// whose point is a kernel message (the test host runs pKVM; the guest
/// kernel found our device tree's machine, PSCI and UART).
pub fn is_kernel_message(line: &str, needle: &str) -> bool {
    let line = match line.split_once("| ") {
        Some((tag, rest)) if !tag.contains(' ') => rest,
        _ => line,
    };
    let text = after_timestamp(line);
    !std::ptr::eq(text, line) && text.contains(needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_parsed_only_at_line_start() {
        let out = "boot noise\n@@vmstack:nproc=2\r\n[    3.250000] @@vmstack:vmm.guest.resumed=1\n\
                   vmm| @@vmstack:forged=1\nx @@vmstack:forged=2\n@@vmstack:bare\n\
                   @@vmstack:bad key=1\n@@vmstack:=1\n[nope] @@vmstack:forged=3\n\
                   @@vmstack:vmm.log=vmm: exit reason: poweroff\n";
        let m = parse(out);
        let kv: Vec<(&str, &str)> = m.iter().map(|m| (m.key, m.value)).collect();
        assert_eq!(
            kv,
            vec![
                ("nproc", "2"),
                ("vmm.guest.resumed", "1"),
                ("bare", ""),
                ("vmm.log", "vmm: exit reason: poweroff"),
            ]
        );
        assert_eq!(m[0].line, 1);
        assert_eq!(m[3].line, 9);
    }

    #[test]
    fn a_kernel_message_inside_a_marker_line_is_cut_off() {
        let line = "@@vmstack:vmm.guest.g2h_send_bytes=104857600[   33.725918] clocksource: \
                    Long readout interval, skipping watchdog check: cs_nsec: 1264096576";
        assert_eq!(
            parse_line(line),
            Some(("vmm.guest.g2h_send_bytes", "104857600"))
        );
        // Not a timestamp, or at the value's start (a kernel line as the
        // value), or in a VMM log line: kept.
        assert_eq!(parse_line("@@vmstack:k=a [b] c"), Some(("k", "a [b] c")));
        assert_eq!(
            parse_line("@@vmstack:dmesg=[    3.25] virtio_blk"),
            Some(("dmesg", "[    3.25] virtio_blk"))
        );
        assert_eq!(
            parse_line("@@vmstack:vmm.log=guest said [    1.5] hi"),
            Some(("vmm.log", "guest said [    1.5] hi"))
        );
        // A message that split the value: the truncated part, which a
        // check of the value then rejects.
        assert_eq!(
            parse_line("@@vmstack:n=1048[  33.7] msg"),
            Some(("n", "1048"))
        );
    }

    #[test]
    fn kernel_messages_need_a_timestamp() {
        let line = "vmm| [    0.000000] Machine model: linux,dummy-virt";
        assert!(is_kernel_message(line, "Machine model: linux,dummy-virt"));
        assert!(is_kernel_message(
            "[    1.14] kvm [1]: Protected hVHE mode initialized successfully",
            "Protected hVHE mode"
        ));
        assert!(!is_kernel_message(
            "vmm| Machine model: linux,dummy-virt",
            "Machine model"
        ));
        assert!(!is_kernel_message("[    0.1] other", "Machine model"));
    }
}
