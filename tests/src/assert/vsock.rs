//! virtio-vsock end to end: the guest's stock `vmw_vsock_virtio_transport`
//! driver against our device and its hybrid unix-socket host side; both
//! ends run `vsock-test` (tests/guest-tools), whose `key=value` lines are
//! markers: the guest's as `vmm.guest.*`, the test host's unprefixed.
//! Scenario `vsock`.

use super::{guest, VMM};
use crate::scenario::{Section, SharedRun};

/// The scenarios of one shared test host boot.
pub const SCENARIOS: &[&str] = &["vsock"];

/// Bytes of each 100 MiB stream.
const STREAM_BYTES: u64 = 100 * 1024 * 1024;

fn section(run: &SharedRun) -> Section<'_> {
    let s = run.section("vsock", 0);
    s.expect_eq(&guest(VMM, "init"), "ok")
        .expect_vmm_exit(VMM, "poweroff", 0);
    s
}

/// Fails if `vsock-test` reported an error under `tag` (a full key prefix).
fn no_error(s: &Section<'_>, tag: &str) {
    if let Some(e) = s.get(&format!("{tag}_error")) {
        s.fail(&format!("{tag} failed: {e}"));
    }
}

/// Checks a stream: both ends saw the same byte count and checksum, and the
/// sender saw the receiver close after reading everything. `send` and
/// `recv` are the key prefixes of the two ends.
fn check_stream(s: &Section<'_>, send: &str, recv: &str) {
    no_error(s, send);
    no_error(s, recv);
    assert_eq!(s.number(&format!("{send}_bytes")), STREAM_BYTES, "{send}");
    assert_eq!(s.number(&format!("{recv}_bytes")), STREAM_BYTES, "{recv}");
    let (a, b) = (
        s.value(&format!("{send}_sum")),
        s.value(&format!("{recv}_sum")),
    );
    if a != b {
        s.fail(&format!("checksum mismatch: sent {a}, received {b}"));
    }
    // Clean close: the sender half-closed, the receiver read EOF and
    // closed, the sender read EOF (no reset on either side).
    assert_eq!(s.number(&format!("{send}_peer_closed")), 1);
    eprintln!(
        "{send}: {} MiB in {} s ({} MiB/s)",
        STREAM_BYTES >> 20,
        s.value(&format!("{send}_secs")),
        s.value(&format!("{send}_mibps"))
    );
}

/// 100 MiB from a guest socket to a host listener.
pub fn guest_to_host_stream_100_mib(run: &SharedRun) {
    let s = section(run);
    check_stream(&s, &guest(VMM, "g2h_send"), "g2h_recv");
}

/// 100 MiB from the host to a guest listener.
pub fn host_to_guest_stream_100_mib(run: &SharedRun) {
    let s = section(run);
    check_stream(&s, "h2g_send", &guest(VMM, "h2g_recv"));
}

/// 64 connections each way at once, each echoing 256 KiB intact.
pub fn sixty_four_concurrent_connections_each_way(run: &SharedRun) {
    let s = section(run);
    let guest_client = guest(VMM, "g2h_many");
    let guest_server = guest(VMM, "h2g_many_srv");
    for (client, server) in [
        (guest_client.as_str(), "g2h_many_srv"),
        ("h2g_many", guest_server.as_str()),
    ] {
        no_error(&s, client);
        assert_eq!(s.number(&format!("{client}_ok")), 64, "{client}");
        assert_eq!(s.number(&format!("{client}_failed")), 0, "{client}");
        assert_eq!(s.number(&format!("{server}_conns")), 64, "{server}");
        assert_eq!(
            s.number(&format!("{server}_bytes")),
            64 * 256 * 1024,
            "{server}"
        );
    }
}

/// Connections to a port nobody listens on are refused, both ways.
pub fn connections_to_nobody_are_refused_both_ways(run: &SharedRun) {
    let s = section(run);
    // Guest to a host port without a PATH_port listener: RST, so the
    // guest's connect(2) fails with ECONNRESET.
    let g = s.value(&guest(VMM, "g_refused_error"));
    if g != "ECONNRESET" && g != "ECONNREFUSED" {
        s.fail(&format!("guest connect to a dead host port: {g}"));
    }
    // Host CONNECT to a guest port without a listener: closed, no OK line.
    s.expect_eq("h_refused_error", "closed-without-ok");
}

/// The guest's last stream ends cleanly and the VMM removes its socket.
pub fn vmm_cleans_up_its_socket(run: &SharedRun) {
    let s = section(run);
    s.expect_eq(&guest(VMM, "guest_vsock_done"), "1")
        // The host's last step, an empty stream the guest waits for before
        // it powers off: both ends saw it open and close cleanly.
        .expect_eq(&guest(VMM, "h_done_bytes"), "0")
        .expect_eq("h_done_send_peer_closed", "1")
        .expect_absent("socket_left_behind");
    eprintln!("vsock scenario: {} s", s.value("vsock_run_secs"));
}
