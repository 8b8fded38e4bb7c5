//! virtio-net over a tap inside the nested x86_64 test host: the VMM creates
//! the tap, the test host gives it 192.168.100.1, the guest's stock
//! virtio_net driver brings up eth0 (192.168.100.2), pings the host and moves
//! 100 MiB each way over TCP with sha256 computed on both ends.
//! `#[ignore]`d like the boot tests: `cargo xtask test` runs them.

use std::time::Duration;

use vmstack_tests::scenario::{Section, SharedRun};

/// The transfers take about a minute under TCG; leave room.
static RUN: SharedRun = SharedRun::with_timeout(&["virtio-net"], Duration::from_secs(300));

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

fn sha(s: &Section, key: &str) -> String {
    let v = s.value(key);
    if v.len() != 64 || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
        s.fail(&format!("{key}={v} is not a sha256"));
    }
    v
}

#[test]
#[ignore = "needs the nested test host: run `cargo xtask test`"]
fn guest_driver_binds_with_offloads() {
    let s = section();
    assert_eq!(s.value("net_driver"), "virtio_net");
    assert_eq!(s.value("net_mac"), "52:54:00:12:34:56");
    let features = s.value("net_features");
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
    assert_eq!(s.number("net_g2h_rc"), 0, "guest nc exit status");
    let mib = s.number("net_g2h_mib");
    if mib < 100 {
        s.fail(&format!("only {mib} MiB sent"));
    }
    let sent = sha(&s, "guest_tx_sha256");
    let received = sha(&s, "host_rx_sha256");
    if sent != received {
        s.fail(&format!("guest sent {sent}, host received {received}"));
    }
    eprintln!(
        "virtio-net: guest -> host {mib} MiB in {} s (nested, TCG)",
        s.value("net_g2h_seconds")
    );
}

#[test]
#[ignore = "needs the nested test host: run `cargo xtask test`"]
fn tcp_host_to_guest_is_bit_exact() {
    let s = section();
    assert_eq!(s.number("net_h2g_rc"), 0, "guest nc exit status");
    let mib = s.number("net_h2g_mib");
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
        "virtio-net: host -> guest {mib} MiB in {} s (nested, TCG)",
        s.value("net_h2g_seconds")
    );
}

#[test]
#[ignore = "needs the nested test host: run `cargo xtask test`"]
fn guest_saw_no_receive_errors() {
    let s = section();
    // Truncated or malformed receive buffers show up as length errors.
    assert_eq!(s.number("net_rx_errors"), 0, "eth0 rx errors");
    assert_eq!(s.number("net_tx_errors"), 0, "eth0 tx errors");
    if s.number("net_rx_bytes") < 100 << 20 {
        s.fail("eth0 received less than 100 MiB");
    }
}
