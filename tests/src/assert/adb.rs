//! adb into a guest the Cuttlefish way (docs/adb.md): Debian's stock adb
//! client in the test host, `vmm adb-proxy` on 127.0.0.1:6520, the VMM's
//! hybrid vsock, and our `adbd` on the guest's vsock port 5555. Scenario
//! `adb` (guest side `guest.scenario=adbd`); the guest's adbd log lines
//! are `vmm.guest.adbd` markers, the arbiter's event lines `arbiter`.

use vmm_protocol::{Event, PowerRequestKind};

use super::{guest, VMM};
use crate::scenario::{Section, SharedRun};

/// The scenarios of one shared test host boot.
pub const SCENARIOS: &[&str] = &["adb"];

/// The scenario (a boot, 64 MiB push and pull, a reboot) takes about 80 s
/// in an idle test host and over 130 s on a loaded machine (the guest's
/// boot alone 2× slower); the default 120 s left too little room.
pub const SCENARIO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// The device as the client names it.
const SERIAL: &str = "127.0.0.1:6520";
/// Bytes pushed and pulled.
const FILE_MIB: f64 = 64.0;

fn section(run: &SharedRun) -> Section<'_> {
    let s = run.section("adb", 0);
    s.expect_eq(&guest(VMM, "init"), "ok")
        .expect_contains("adb_up", "ok after")
        // The scenario stops the VMM at its end: it ran until then.
        .expect_vmm_exit(VMM, "stopped", 0);
    s
}

/// `adb devices -l` lists the guest as an online device with our banner.
pub fn connects_and_lists_the_device(run: &SharedRun) {
    let s = section(run);
    // Then `transport_id:N` (N counts the attempts while the guest booted).
    let want = format!("{SERIAL} device product:vmstack model:vmstack_guest device:vmstack ");
    let devices = s.value("devices");
    if !devices.starts_with(&want) {
        s.fail(&format!("devices={devices}, expected {want}..."));
    }
    eprintln!("adb online: {}", s.value("adb_up"));
}

/// `vmm adb-proxy`, started as root, bridged the whole scenario inside its
/// sandbox (docs/security.md): it runs as the owner of the VMM's vsock
/// socket (the VMM's sandbox user) with every capability set empty,
/// `no_new_privs`, and every thread (the accept loop, the launcher, any
/// connection's) under a seccomp filter; its log says so.
pub fn the_proxy_runs_sandboxed_without_capabilities(run: &SharedRun) {
    let s = section(run);
    let zero = "0000000000000000";
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        s.expect_eq(&format!("proxy.{set}"), zero);
    }
    let owner = s.value("proxy.socket_owner");
    if owner == "0" {
        s.fail("the VMM's vsock socket is root's: the VMM did not switch to its sandbox user");
    }
    let ids = format!("{owner} {owner} {owner} {owner}");
    s.expect_eq("proxy.Uid", &ids)
        .expect_eq("proxy.NoNewPrivs", "1")
        .expect_eq("proxy.Seccomp", "2")
        .expect_contains(
            "adb_proxy",
            &format!(
                "sandbox: seccomp filters for {} thread classes; uid {owner} gid ",
                sandbox::policy::adb_proxy::POLICY.classes.len()
            ),
        );
    let threads = s.number("proxy.threads");
    if threads < 2 || s.number("proxy.threads_seccomp") != threads {
        s.fail("not every thread of the adb proxy is under a seccomp filter");
    }
}

/// `adb shell CMD` returns CMD's exit status, stdout and stderr apart
/// (the shell protocol).
pub fn shell_returns_exit_status_and_both_streams(run: &SharedRun) {
    let s = section(run);
    s.expect_eq("shell_rc", "3")
        .expect_eq("shell_stdout", "hi")
        .expect_eq("shell_stderr", "oops");
}

/// Two `adb shell`s at once, each waiting for the other's file.
pub fn two_shells_run_at_once(run: &SharedRun) {
    let s = section(run);
    s.expect_eq("concurrent_first", "rc=0 first-done")
        .expect_eq("concurrent_second", "rc=0 second-done");
}

/// A 64 MiB `adb push` and `adb pull`: the same sha256 on the host, in the
/// guest and back on the host.
pub fn push_and_pull_64_mib_keep_the_checksum(run: &SharedRun) {
    let s = section(run);
    s.expect_eq("push_rc", "0").expect_eq("pull_rc", "0");
    let src = s.sha256("push_src_sha256");
    for key in ["push_guest_sha256", "pull_sha256"] {
        if s.sha256(key) != src {
            s.fail(&format!(
                "{key}={} differs from the source's {src}",
                s.value(key)
            ));
        }
    }
    for dir in ["push", "pull"] {
        let secs: f64 = s.value(&format!("{dir}_secs")).parse().unwrap_or(0.0);
        eprintln!(
            "adb {dir}: {FILE_MIB} MiB in {secs} s ({:.1} MiB/s); client: {}",
            FILE_MIB / secs.max(0.01),
            s.value(&format!("{dir}_output"))
        );
    }
}

/// The VMM's own forwarded port (`--vsock ...,tcp=6522:5555`, no proxy)
/// reaches the same adbd: a shell, a 16 MiB push and pull with the same
/// sha256 on the host, in the guest and back; a client of another user
/// (uid 4242) is closed before it reaches the guest; and the port still
/// serves after the guest's reboot (the VMM keeps its listener across
/// boots).
pub fn the_vmms_own_forwarded_port_serves_adb(run: &SharedRun) {
    let s = section(run);
    s.expect_eq("direct_shell", "direct-42")
        .expect_eq("direct_other_user", "rc=0 bytes=0")
        .expect_contains(
            &format!("{VMM}.log"),
            "TCP client of 127.0.0.1:6522 refused: its socket belongs to uid 4242, which is not allowed",
        );
    for step in ["direct_push", "direct_pull"] {
        let v = s.value(step);
        if !v.starts_with("rc=0 ") {
            s.fail(&format!("{step}={v}"));
        }
        eprintln!("forwarded port {step}: {v}");
    }
    let src = s.sha256("direct_src_sha256");
    for key in ["direct_guest_sha256", "direct_pull_sha256"] {
        if s.sha256(key) != src {
            s.fail(&format!(
                "{key}={} differs from the source's {src}",
                s.value(key)
            ));
        }
    }
    let after = s.value("direct_after_reboot");
    if after.is_empty() || after != s.value("boot_id_2") {
        s.fail(&format!(
            "after the reboot the forwarded port gave boot id {after:?}, adb through the proxy {:?}",
            s.value("boot_id_2")
        ));
    }
}

/// Malformed packets: a raw client's (bad magic; a 2 GiB payload) make
/// adbd answer the valid `CNXN` before them and close that connection; a
/// fake device's garbage is refused by the client; the VMM and adbd keep
/// serving.
pub fn malformed_packets_close_only_their_connection(run: &SharedRun) {
    let s = section(run);
    for case in ["raw_BAD_MAGIC", "raw_TOO_LONG"] {
        let v = s.value(case);
        // nc ended by itself (not killed by its 60 s timeout) after the
        // CNXN answer: adbd closed the connection.
        if !v.starts_with("rc=0 reply=CNXN bytes=") {
            s.fail(&format!(
                "{case}={v}: expected the CNXN answer, then the close"
            ));
        }
    }
    let adbd = guest(VMM, "adbd");
    s.expect_contains(&adbd, "connection closed: malformed packet: bad magic")
        .expect_contains(
            &adbd,
            "connection closed: malformed packet: payload of 2147483647 bytes exceeds the limit",
        )
        .expect_eq("after_raw", "still-serving")
        .expect_eq("after_fake", "still-serving")
        .expect_contains("vmm_status", "state=running");
    let fake = s.value("fake_device_state");
    if fake == "device" {
        s.fail("the client took the fake device's garbage for a device");
    }
    eprintln!("fake device: {fake}");
}

/// `adb reboot` is the guest's own reboot: a power request the arbiter
/// sees and allows; the same VMM boots the guest again and adb reconnects.
pub fn reboot_is_a_power_request_the_arbiter_allows(run: &SharedRun) {
    let s = section(run);
    let request = Event::PowerRequest {
        id: 1,
        kind: PowerRequestKind::Reboot,
    };
    s.expect_event(VMM, request)
        .expect_contains("arbiter", &request.to_string())
        .expect_eq("decide", "decided")
        .expect_contains("after_reboot", "online after")
        .expect_count(&guest(VMM, "adbd_boot_id"), 2);
    let (a, b) = (s.value("boot_id_1"), s.value("boot_id_2"));
    if a.is_empty() || a == b {
        s.fail(&format!(
            "boot ids before and after the reboot: {a:?}, {b:?}"
        ));
    }
    eprintln!("adb reboot: {}", s.value("after_reboot"));
}
