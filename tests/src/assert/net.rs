//! virtio-net over a tap: the VMM creates the tap, the test host gives it
//! 192.168.100.1, the guest's stock `virtio_net` driver brings up eth0
//! (192.168.100.2), pings the host and moves 100 MiB each way over TCP
//! with sha256 on both ends; an in-process restart keeps the tap; tap
//! errors. Scenarios `virtio-net`, `virtio-net-restart`, `virtio-net-errors`.

use std::time::Duration;

use super::{guest, VMM};
use crate::scenario::{Section, SharedRun};

/// The scenarios of one shared test host boot.
pub const SCENARIOS: &[&str] = &["virtio-net", "virtio-net-restart", "virtio-net-errors"];

/// The transfers take about a minute under TCG; leave room.
pub const SCENARIO_TIMEOUT: Duration = Duration::from_secs(300);

/// What `ping -c 3` says when every packet came back.
const PING_OK: &str = "3 packets transmitted, 3 packets received, 0% packet loss";

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

fn section(run: &SharedRun) -> Section<'_> {
    let s = run.section("virtio-net", 0);
    s.expect_eq(&guest(VMM, "init"), "ok")
        .expect_eq("host_tap", "up")
        .expect_vmm_exit(VMM, "poweroff", 0);
    s
}

/// The guest's result `key` as a number.
fn number(s: &Section<'_>, key: &str) -> u64 {
    s.number(&guest(VMM, key))
}

/// The driver binds and acks the offloads we offer, nothing else.
pub fn guest_driver_binds_with_offloads(run: &SharedRun) {
    let s = section(run);
    s.expect_eq(&guest(VMM, "net_driver"), "virtio_net")
        .expect_eq(&guest(VMM, "net_mac"), "52:54:00:12:34:56");
    let features = s.value(&guest(VMM, "net_features"));
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

/// Every ping of the guest comes back.
pub fn guest_pings_the_host(run: &SharedRun) {
    section(run).expect_eq(&guest(VMM, "net_ping_summary"), PING_OK);
}

/// One TCP transfer `dir` (`g2h`, `h2g`) of the section: the guest's nc
/// ended well, at least 100 MiB went, and the receiver's SHA-256 (marker
/// `received`) is the sender's (marker `sent`). Returns the MiB and the
/// sender's SHA-256.
fn tcp_transfer_is_bit_exact<'a>(
    s: &Section<'a>,
    dir: &str,
    sent: &str,
    received: &str,
) -> (u64, &'a str) {
    assert_eq!(
        number(s, &format!("net_{dir}_rc")),
        0,
        "guest nc exit status"
    );
    let mib = number(s, &format!("net_{dir}_mib"));
    if mib < 100 {
        s.fail(&format!("{dir}: only {mib} MiB transferred"));
    }
    let sent_sha = s.sha256(sent);
    let received_sha = s.sha256(received);
    if sent_sha != received_sha {
        s.fail(&format!(
            "{dir}: {sent}={sent_sha} but {received}={received_sha}"
        ));
    }
    (mib, sent_sha)
}

/// 100 MiB guest to host over TCP arrive bit-exact.
pub fn tcp_guest_to_host_is_bit_exact(run: &SharedRun) {
    let s = section(run);
    tcp_transfer_is_bit_exact(&s, "g2h", &guest(VMM, "guest_tx_sha256"), "host_rx_sha256");
}

/// 100 MiB host to guest over TCP arrive bit-exact.
pub fn tcp_host_to_guest_is_bit_exact(run: &SharedRun) {
    let s = section(run);
    let (mib, sent) =
        tcp_transfer_is_bit_exact(&s, "h2g", "host_tx_sha256", &guest(VMM, "guest_rx_sha256"));
    // Different random data each way: a hash cannot match by echoing.
    if sent == s.sha256(&guest(VMM, "guest_tx_sha256")) {
        s.fail("both directions carried the same data");
    }
    eprintln!(
        "virtio-net: host -> guest {mib} MiB in {} s (nested, TCG); guest eth0 received {} frames, sent {}",
        s.value(&guest(VMM, "net_h2g_seconds")),
        number(&s, "net_rx_packets").saturating_sub(number(&s, "net_after_g2h_rx_packets")),
        number(&s, "net_tx_packets").saturating_sub(number(&s, "net_after_g2h_tx_packets")),
    );
}

/// No receive or transmit errors on the guest's eth0.
pub fn guest_saw_no_receive_errors(run: &SharedRun) {
    let s = section(run);
    // Truncated or malformed receive buffers show up as length errors.
    assert_eq!(number(&s, "net_rx_errors"), 0, "eth0 rx errors");
    assert_eq!(number(&s, "net_tx_errors"), 0, "eth0 tx errors");
    if number(&s, "net_rx_bytes") < 100 << 20 {
        s.fail("eth0 received less than 100 MiB");
    }
}

/// The tap (same interface, still configured) survives a restart of the VM
/// inside the VMM process: both boots ping the host.
pub fn tap_survives_an_in_process_restart(run: &SharedRun) {
    let s = run.section("virtio-net-restart", 0);
    s.expect_contains("decide-1", "")
        .expect_contains("decide-2", "")
        .expect_count(&guest(VMM, "init"), 2)
        .expect_vmm_exit(VMM, "poweroff", 0);
    // Both boots reach the host; the second one only can if the tap kept
    // its address and link state across the restart.
    let pings = s
        .all(&guest(VMM, "net_ping_summary"))
        .into_iter()
        .filter(|v| *v == PING_OK)
        .count();
    if pings != 2 {
        s.fail(&format!("{pings} successful ping runs, expected 2"));
    }
    let (first, second) = (s.value("tap_ifindex_first"), s.value("tap_ifindex_second"));
    if first.is_empty() || first != second {
        s.fail(&format!(
            "tap interface changed: first={first} second={second}"
        ));
    }
}

/// Tap set-up errors are one line and exit status 1.
pub fn tap_errors_are_one_line_and_exit_1(run: &SharedRun) {
    let s = run.section("virtio-net-errors", 0);
    s.expect_log("not_a_tap", "error: cannot attach tap lo (")
        .expect_log("not_a_tap", "is it a tap device?")
        .expect_eq("not_a_tap.rc", "1")
        .expect_log(
            "busy",
            "error: tap vmtap2 is busy: another process has it open",
        )
        .expect_eq("busy.rc", "1");
}
