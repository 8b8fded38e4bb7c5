//! The VMM's sandbox in a real run (scenarios `sandbox-probe`,
//! `sandbox-confined`; `docs/security.md`): a forbidden system call from
//! each thread class kills the VMM with the call named, and after start-up
//! the VMM runs as the sandbox user with no capability, every thread under
//! seccomp, behind a private control socket a second local uid cannot use.

use super::VMM;
use crate::scenario::SharedRun;
use crate::Arch;

/// The scenarios of one shared test host boot.
pub const SCENARIOS: &[&str] = &["sandbox-probe", "sandbox-confined"];

/// The exit status of a VMM killed by its sandbox.
const VIOLATION: i32 = 159;

/// `execve`'s number, the probe's forbidden call.
fn execve(arch: Arch) -> u32 {
    match arch {
        Arch::X86_64 => 59,
        Arch::Aarch64 => 221,
    }
}

/// Each thread class the probe visits, with the thread that makes the call.
const PROBED: &[(&str, &str)] = &[
    ("main", "main"),
    ("launcher", "launcher"),
    ("vcpu", "vcpu0"),
    ("control", "control"),
    ("control-conn", "control-conn"),
    ("device-rng", "v_rng"),
];

/// A forbidden call from any thread class ends the VMM with exit status
/// 159 and one line naming the thread, its class, the call and its first
/// arguments.
pub fn a_forbidden_call_from_each_thread_class_kills_the_vmm_naming_it(run: &SharedRun) {
    let s = run.section("sandbox-probe", 0);
    let nr = execve(run.arch());
    for (class, thread) in PROBED {
        let tag = format!("probe-{class}");
        s.expect_eq(&format!("{tag}.rc"), &VIOLATION.to_string())
            .expect_log(
                &tag,
                &format!(
                    "vmm: sandbox: thread {thread} (class {class}) made a forbidden system call: execve ({nr}, args "
                ),
            );
    }
    // The connection was refused by the death of the VMM, not answered.
    s.expect_contains("conn_status", "error");
}

/// After start-up the VMM (started as root) runs as 65534:65534 with every
/// capability set empty, no_new_privs, every thread under seccomp; its
/// control socket is 0600 and owned by that user; another uid can connect
/// neither through the file's mode nor, with the file opened up, past the
/// SO_PEERCRED check; the socket's owner (the sandbox user) and root can,
/// and `vmm decide` decides as an arbiter.
pub fn the_vmm_holds_no_capability_and_a_second_uid_cannot_connect(run: &SharedRun) {
    let s = run.section("sandbox-confined", 0);
    let zero = "0000000000000000";
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        s.expect_eq(&format!("status.{set}"), zero);
    }
    s.expect_eq("status.Uid", "65534 65534 65534 65534")
        .expect_eq("status.Gid", "65534 65534 65534 65534")
        .expect_eq("status.Groups", "65534")
        .expect_eq("status.NoNewPrivs", "1")
        .expect_eq("status.Seccomp", "2")
        .expect_eq("socket", "600 65534")
        .expect_log(
            VMM,
            &format!(
                "sandbox: seccomp filters for {} thread classes; uid 65534 gid 65534 (switched from root); no capabilities, empty bounding set; no_new_privs; landlock fully enforced",
                sandbox::policy::vmm::POLICY.classes.len()
            ),
        );
    let threads = s.number("threads");
    if threads < 5 || s.number("threads_seccomp") != threads {
        s.fail("not every thread of the VMM is under a seccomp filter");
    }
    let names = s.value("thread_names");
    for t in ["launcher", "vcpu0", "vcpu1", "v_rng", "control", "vmm"] {
        if !names.split(' ').any(|n| n == t) {
            s.fail(&format!("no thread {t} among {names}"));
        }
    }
    s.expect_contains("intruder", "Permission denied")
        .expect_contains("intruder_open_socket", "error: cannot talk to the VMM")
        .expect_log(VMM, "control socket: connection refused: peer uid 1000")
        .expect_contains("owner_status", "pending=1")
        .expect_contains("status", "pending=1")
        .expect_eq("decide", "decided")
        .expect_vmm_exit(VMM, "poweroff", 0);
}
