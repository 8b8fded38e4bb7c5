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
//! tty layer sends a program's line. Seen on a stalled test host:
//! `...g2h_send_bytes=104857600[   33.725918] clocksource: Long readout
//! interval...`, then an empty line (the program's own newline, after the
//! kernel's). [`parse`] cuts such a message off a value only in that shape:
//! a kernel timestamp `[ seconds.micros] ` after the value's first byte
//! and, on the next line, nothing but the newline (or a guest's `<tag>| `).
//! A message that split the value (its rest on the next line) is left in
//! place, so that the value fails the test's check instead of passing as a
//! truncated number.

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

/// Whether `text` starts with a kernel log timestamp as printk writes it:
/// `[`, spaces, seconds, `.`, six digits of microseconds, `] `.
fn starts_with_kernel_stamp(text: &str) -> bool {
    let Some((stamp, _)) = text
        .strip_prefix('[')
        .and_then(|rest| rest.split_once("] "))
    else {
        return false;
    };
    let Some((secs, micros)) = stamp.trim_start().split_once('.') else {
        return false;
    };
    !secs.is_empty()
        && secs.bytes().all(|b| b.is_ascii_digit())
        && micros.len() == 6
        && micros.bytes().all(|b| b.is_ascii_digit())
}

/// `value` without a kernel message that landed inside it: cut where a
/// kernel timestamp starts after its first byte.
fn without_kernel_message(value: &str) -> &str {
    let intruder = value
        .match_indices('[')
        .map(|(at, _)| at)
        .find(|&at| at > 0 && starts_with_kernel_stamp(&value[at..]));
    match intruder {
        Some(at) => value[..at].trim_end(),
        None => value,
    }
}

/// The tag and the rest of a line with the `<tag>| ` prefix (a tag
/// without spaces) that the test host puts before a guest's console lines.
pub fn guest_tag(line: &str) -> Option<(&str, &str)> {
    line.split_once("| ")
        .filter(|(tag, _)| !tag.is_empty() && !tag.contains(' '))
}

/// `line` without its `<tag>| ` prefix ([`guest_tag`]), if it has one.
fn without_guest_tag(line: &str) -> &str {
    guest_tag(line).map_or(line, |(_, rest)| rest)
}

/// Whether `line` holds nothing but what ends a line (possibly behind a
/// guest's `<tag>| ` prefix): the newline of a marker line a kernel
/// message cut in two.
fn is_bare_line_end(line: &str) -> bool {
    without_guest_tag(line).trim_end().is_empty()
}

/// The key and value of `line` if it is a marker.
pub fn parse_line(line: &str) -> Option<(&str, &str)> {
    let rest = after_timestamp(line).strip_prefix(PREFIX)?;
    let (key, value) = rest.split_once('=').unwrap_or((rest, ""));
    let valid = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    valid.then(|| (key, value.trim_end()))
}

/// Every marker of `output`, in order (a kernel message inside a marker
/// line cut off its value, see the module's documentation).
pub fn parse(output: &str) -> Vec<Marker<'_>> {
    let lines: Vec<&str> = output.lines().collect();
    lines
        .iter()
        .enumerate()
        .filter_map(|(line, text)| {
            let (key, value) = parse_line(text)?;
            let ended_alone = lines
                .get(line + 1)
                .is_some_and(|next| is_bare_line_end(next));
            let value = if ended_alone {
                without_kernel_message(value)
            } else {
                value
            };
            Some(Marker { key, value, line })
        })
        .collect()
}

/// Whether `line` is a kernel log line (`[ seconds] text`, possibly after
/// a `<tag>| ` prefix) whose text contains `needle`. For the few checks
/// whose point is a kernel message (the test host runs pKVM; the guest
/// kernel found our device tree's machine, PSCI and UART).
pub fn is_kernel_message(line: &str, needle: &str) -> bool {
    let line = without_guest_tag(line);
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
        let value = |out: &str| parse(out).first().map(|m| m.value.to_string());
        let seen = "@@vmstack:vmm.guest.g2h_send_bytes=104857600[   33.725918] clocksource: \
                    Long readout interval, skipping watchdog check\n\n@@vmstack:next=1\n";
        assert_eq!(value(seen).as_deref(), Some("104857600"));
        // Inside a guest (its newline behind the tag), or in a VMM log line.
        assert_eq!(
            value("@@vmstack:vmm.guest.n=7[    1.500000] msg\nvmm| \r\n").as_deref(),
            Some("7")
        );
        assert_eq!(
            value("@@vmstack:vmm.log=done[    1.500000] msg\n\n").as_deref(),
            Some("done")
        );
    }

    #[test]
    fn a_value_is_kept_unless_the_message_ended_the_line() {
        let value = |out: &str| parse(out).first().map(|m| m.value.to_string());
        // The message split the value: its rest is on the next line, and
        // the value stays whole-but-damaged (no truncated number passes).
        assert_eq!(
            value("@@vmstack:n=1048[   33.725918] msg\n57600\n").as_deref(),
            Some("1048[   33.725918] msg")
        );
        // Last line, no next line: kept.
        assert_eq!(
            value("@@vmstack:n=1048[   33.725918] msg").as_deref(),
            Some("1048[   33.725918] msg")
        );
        // Not a kernel timestamp, or at the value's start: kept.
        for kept in [
            "@@vmstack:k=a [b] c\n\n",
            "@@vmstack:k=a[0] c\n\n",
            "@@vmstack:k=a[ 1.5] c\n\n",
            "@@vmstack:dmesg=[    3.250000] virtio_blk\n\n",
        ] {
            let whole = parse_line(kept.lines().next().unwrap()).unwrap().1;
            assert_eq!(value(kept).as_deref(), Some(whole), "{kept:?}");
        }
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
