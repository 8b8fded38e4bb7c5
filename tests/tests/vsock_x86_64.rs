//! virtio-vsock end to end: the guest's stock `vmw_vsock_virtio_transport`
//! driver against our device and its hybrid unix-socket host side, inside
//! the nested x86_64 test host (one outer boot shared by the tests here).
//! Both ends run `/bin/vsock-test` (tests/guest-tools): AF_VSOCK in the
//! guest, `CONNECT`/`OK` and `PATH_port` sockets in the test host.
//! `#[ignore]`d like the other nested tests: `cargo xtask test` runs them.

use vmstack_tests::scenario::{Section, SharedRun};
use vmstack_tests::Arch;

/// This file's test host. `arm64_virtio.rs` includes this file as a module
/// and re-runs its tests on arm64 under its own `ARCH`.
#[allow(dead_code)]
const ARCH: Arch = Arch::X86_64;

static RUN: SharedRun = SharedRun::on(crate::ARCH, &["vsock"]);

/// Bytes of each 100 MiB stream.
const STREAM_BYTES: u64 = 100 * 1024 * 1024;

fn section() -> Section<'static> {
    let s = RUN.section("vsock", 0);
    s.expect("VMSTACK-GUEST-INIT-OK")
        .expect("vmm_rc=0")
        .expect("vmm: exit reason: poweroff");
    s
}

/// Checks a stream: both ends saw the same byte count and checksum, and the
/// sender saw the receiver close after reading everything.
fn check_stream(s: &Section, send: &str, recv: &str) {
    for tag in [send, recv] {
        if s.result.contains(&format!("{tag}_error=")) {
            s.fail(&format!(
                "{tag} failed: {}",
                s.value(&format!("{tag}_error"))
            ));
        }
    }
    assert_eq!(
        s.number(&format!("{send}_bytes")),
        STREAM_BYTES,
        "{send} bytes"
    );
    assert_eq!(
        s.number(&format!("{recv}_bytes")),
        STREAM_BYTES,
        "{recv} bytes"
    );
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

#[test]
#[ignore = "needs the nested test host: run `cargo xtask test`"]
fn guest_to_host_stream_100_mib() {
    let s = section();
    check_stream(&s, "g2h_send", "g2h_recv");
}

#[test]
#[ignore = "needs the nested test host: run `cargo xtask test`"]
fn host_to_guest_stream_100_mib() {
    let s = section();
    check_stream(&s, "h2g_send", "h2g_recv");
}

#[test]
#[ignore = "needs the nested test host: run `cargo xtask test`"]
fn sixty_four_concurrent_connections_each_way() {
    let s = section();
    for (client, server) in [("g2h_many", "g2h_many_srv"), ("h2g_many", "h2g_many_srv")] {
        if s.result.contains(&format!("{client}_error=")) {
            s.fail(&format!(
                "{client}: {}",
                s.value(&format!("{client}_error"))
            ));
        }
        // Every connection echoed its 256 KiB intact.
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

#[test]
#[ignore = "needs the nested test host: run `cargo xtask test`"]
fn connections_to_nobody_are_refused_both_ways() {
    let s = section();
    // Guest to a host port without a PATH_port listener: RST, so the
    // guest's connect(2) fails with ECONNRESET.
    let g = s.value("g_refused_error");
    if g != "ECONNRESET" && g != "ECONNREFUSED" {
        s.fail(&format!("guest connect to a dead host port: {g}"));
    }
    // Host CONNECT to a guest port without a listener: closed, no OK line.
    assert_eq!(s.value("h_refused_error"), "closed-without-ok");
}

#[test]
#[ignore = "needs the nested test host: run `cargo xtask test`"]
fn vmm_cleans_up_its_socket() {
    let s = section();
    s.expect("guest_vsock_done=1");
    // The host's last step, an empty stream the guest waits for before it
    // powers off: both ends saw it open and close cleanly.
    assert_eq!(s.value("h_done_bytes"), "0");
    assert_eq!(s.value("h_done_send_peer_closed"), "1");
    if s.result.contains("socket_left_behind=1") {
        s.fail("the VMM left its vsock socket behind");
    }
    eprintln!("vsock scenario: {} s", s.value("vsock_run_secs"));
}
