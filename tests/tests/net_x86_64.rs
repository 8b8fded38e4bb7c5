//! virtio-net over a tap inside the nested x86_64 test host: the VMM creates
//! the tap, the test host gives it 192.168.100.1, the guest's stock
//! virtio_net driver brings up eth0 (192.168.100.2), pings the host and moves
//! 100 MiB each way over TCP with sha256 computed on both ends. A second
//! scenario restarts the VM in-process and checks that the tap survives.
//! `#[ignore]`d like the boot tests: `cargo xtask test` runs them.

use std::time::Duration;

use vmstack_tests::scenario::{Section, SharedRun};

/// The transfers take about a minute under TCG; leave room.
static RUN: SharedRun = SharedRun::with_timeout(
    &["virtio-net", "virtio-net-restart", "virtio-net-errors"],
    Duration::from_secs(300),
);

/// Feature bits the driver must have acked (`features` in sysfs: one
/// character per bit, bit 0 first).
const ACKED: &[(usize, &str)] = &[
    (0, "CSUM"),
    (1, "GUEST_CSUM"),
    (5, "MAC"),
    (7, "GUEST_TSO4"),
    (8, "GUEST_TSO6"),
    (11, "HOST_TSO4"),
    (12, "HOST_TSO6"),
    (16, "STATUS"),
    (28, "INDIRECT_DESC"),
    (29, "EVENT_IDX"),
    (32, "VERSION_1"),
];

fn section() -> Section<'static> {
    let s = RUN.section("virtio-net", 0);
    s.expect("VMSTACK-GUEST-INIT-OK")
        .expect("host: vmtap0 up")
        .expect("vmm: exit reason: poweroff");
    s
}

/// The value of the first well-formed `key=VALUE` in the output, where it
/// may also sit mid-line: the guest console, the VMM's log and the test
/// host's kernel share one terminal, so a line can be split by another
/// writer. (The guest prints its results twice, as they come and in one
/// block at the end.) VALUE is a run of `[0-9A-Za-z_.:]`.
fn find(s: &Section, key: &str) -> String {
    let out = &s.result.output;
    let pattern = format!("{key}=");
    for (at, _) in out.match_indices(&pattern) {
        let before = out[..at].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let value: String = out[at + pattern.len()..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':'))
            .collect();
        if !value.is_empty() {
            return value;
        }
    }
    s.fail(&format!("no {key}= value"))
}

fn number(s: &Section, key: &str) -> u64 {
    let v = find(s, key);
    v.parse()
        .unwrap_or_else(|_| s.fail(&format!("{key}={v} is not a number")))
}

fn sha(s: &Section, key: &str) -> String {
    let v = find(s, key);
    if v.len() != 64 || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
        s.fail(&format!("{key}={v} is not a sha256"));
    }
    v
}

#[test]
#[ignore = "needs the nested test host: run `cargo xtask test`"]
fn guest_driver_binds_with_offloads() {
    let s = section();
    assert_eq!(find(&s, "net_driver"), "virtio_net");
    assert_eq!(find(&s, "net_mac"), "52:54:00:12:34:56");
    let features = find(&s, "net_features");
    for &(bit, name) in ACKED {
        if features.as_bytes().get(bit) != Some(&b'1') {
            s.fail(&format!("feature {name} (bit {bit}) not acked: {features}"));
        }
    }
    // Never offered, so never acked: mergeable buffers, control queue.
    for bit in [15, 17] {
        if features.as_bytes().get(bit) == Some(&b'1') {
            s.fail(&format!("bit {bit} acked but never offered: {features}"));
        }
    }
}

#[test]
#[ignore = "needs the nested test host: run `cargo xtask test`"]
fn guest_pings_the_host() {
    let s = section();
    s.expect("3 packets transmitted, 3 packets received, 0% packet loss");
}

#[test]
#[ignore = "needs the nested test host: run `cargo xtask test`"]
fn tcp_guest_to_host_is_bit_exact() {
    let s = section();
    assert_eq!(number(&s, "net_g2h_rc"), 0, "guest nc exit status");
    let mib = number(&s, "net_g2h_mib");
    if mib < 100 {
        s.fail(&format!("only {mib} MiB sent"));
    }
    let sent = sha(&s, "guest_tx_sha256");
    let received = sha(&s, "host_rx_sha256");
    if sent != received {
        s.fail(&format!("guest sent {sent}, host received {received}"));
    }
    eprintln!(
        "virtio-net: guest -> host {mib} MiB in {} s (nested, TCG); guest eth0 sent {} frames, received {}",
        find(&s, "net_g2h_seconds"),
        number(&s, "net_after_g2h_tx_packets"),
        number(&s, "net_after_g2h_rx_packets"),
    );
}

#[test]
#[ignore = "needs the nested test host: run `cargo xtask test`"]
fn tcp_host_to_guest_is_bit_exact() {
    let s = section();
    assert_eq!(number(&s, "net_h2g_rc"), 0, "guest nc exit status");
    let mib = number(&s, "net_h2g_mib");
    if mib < 100 {
        s.fail(&format!("only {mib} MiB received"));
    }
    let sent = sha(&s, "host_tx_sha256");
    let received = sha(&s, "guest_rx_sha256");
    if sent != received {
        s.fail(&format!("host sent {sent}, guest received {received}"));
    }
    // Different random data each way: a hash cannot match by echoing.
    if sent == sha(&s, "guest_tx_sha256") {
        s.fail("both directions carried the same data");
    }
    eprintln!(
        "virtio-net: host -> guest {mib} MiB in {} s (nested, TCG); guest eth0 received {} frames, sent {}",
        find(&s, "net_h2g_seconds"),
        number(&s, "net_rx_packets") - number(&s, "net_after_g2h_rx_packets"),
        number(&s, "net_tx_packets") - number(&s, "net_after_g2h_tx_packets"),
    );
}

#[test]
#[ignore = "needs the nested test host: run `cargo xtask test`"]
fn guest_saw_no_receive_errors() {
    let s = section();
    // Truncated or malformed receive buffers show up as length errors.
    assert_eq!(number(&s, "net_rx_errors"), 0, "eth0 rx errors");
    assert_eq!(number(&s, "net_tx_errors"), 0, "eth0 tx errors");
    if number(&s, "net_rx_bytes") < 100 << 20 {
        s.fail("eth0 received less than 100 MiB");
    }
}

#[test]
#[ignore = "needs the nested test host: run `cargo xtask test`"]
fn tap_survives_an_in_process_restart() {
    let s = RUN.section("virtio-net-restart", 0);
    s.expect("decide-1: ")
        .expect("decide-2: ")
        .expect("vmm: exit reason: poweroff");
    let out = &s.result.output;
    let boots = out.matches("VMSTACK-GUEST-INIT-OK").count();
    if boots != 2 {
        s.fail(&format!("{boots} guest boots, expected 2"));
    }
    // Both boots reach the host; the second one only can if the tap kept
    // its address and link state across the restart.
    let pings = out
        .matches("3 packets transmitted, 3 packets received, 0% packet loss")
        .count();
    if pings != 2 {
        s.fail(&format!("{pings} successful ping runs, expected 2"));
    }
    let line = s.value("host: tap ifindex first");
    let (first, second) = line.split_once(" second=").unwrap_or_else(|| s.fail(&line));
    if first.is_empty() || first != second {
        s.fail(&format!(
            "tap interface changed: first={first} second={second}"
        ));
    }
}

#[test]
#[ignore = "needs the nested test host: run `cargo xtask test`"]
fn tap_errors_are_one_line_and_exit_1() {
    let s = RUN.section("virtio-net-errors", 0);
    s.expect("error: cannot attach tap lo (")
        .expect("is it a tap device?")
        .expect("error: tap vmtap2 is busy: another process has it open");
    assert_eq!(number(&s, "rc_not_a_tap"), 1);
    assert_eq!(number(&s, "rc_busy"), 1);
}
