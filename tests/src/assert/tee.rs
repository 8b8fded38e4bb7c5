//! The guest side of virtio-tee (`docs/virtio-tee.md`): the out-of-tree
//! `virtio_tee` module from `android/kernel/virtio_tee`, built by `cargo
//! xtask images` against the guest kernel's Debian headers.
//!
//! - `tee-load`: without a device the module loads with Debian's `tee.ko`,
//!   registers its virtio driver, unloads and loads again; the TEE clients
//!   run and find no TEE device;
//! - `tee`: with `--tee` and `trustyd` in the test host, `/dev/tee0`
//!   serves echo with values and memory references up to 1 MiB (checked
//!   byte for byte), parallel sessions and cancellation, through the uapi
//!   client and, on arm64, Debian's stock libteec;
//! - `tee-storage`: trustyd with two guests, a and b, and one VMM per VM
//!   run (`a1`, `b1` at the same time, `a2`, `a3`): secure storage across
//!   a VM power-off and a new VMM, gatekeeper and hwkey through
//!   `/dev/tee0` (arm64: also Debian's libteec), isolation between the
//!   guests, a flipped byte and an old copy of a file on the test host's
//!   disk.
//!
//! The clients' result lines are the guest's `tee` (uapi client) and
//! `teec` (libteec client) markers; in `tee-storage`, `tee-test`'s
//! `key=value` lines (`<run>.guest.<tag>_<key>`).

use std::time::Duration;

use super::{guest, VMM};
use crate::scenario::{Section, SharedRun};
use crate::Arch;

/// The scenarios of one shared test host boot.
pub const SCENARIOS: &[&str] = &["tee-load", "tee", "tee-storage"];

/// Time per scenario: `tee-storage` boots four VMs (two at once).
pub const SCENARIO_TIMEOUT: Duration = Duration::from_secs(300);

/// The same on the arm64 test host (inner boots take ~30 s there).
pub const SCENARIO_TIMEOUT_ARM64: Duration = Duration::from_secs(720);

/// The guest's marker `key`.
fn g(key: &str) -> String {
    guest(VMM, key)
}

/// Asserts that the client `key` (`tee`, `teec`) printed a line starting
/// with `prefix`.
fn client_said(s: &Section<'_>, key: &str, prefix: &str) {
    if !s.all(&g(key)).iter().any(|line| line.starts_with(prefix)) {
        s.fail(&format!("no {key} line starting with {prefix:?}"));
    }
}

/// Scenario `name`'s section, checked: the guest booted, reached its
/// marker `done` and powered off.
fn finished<'a>(run: &'a SharedRun, name: &str, done: &str) -> Section<'a> {
    let s = run.section(name, 0);
    s.expect_eq(&g("init"), "ok")
        .expect_eq(&g(done), "1")
        .expect_vmm_exit(VMM, "poweroff", 0);
    s
}

/// Without a device the module loads after `tee.ko`, registers its virtio
/// driver, unloads and loads again cleanly; the clients find no TEE.
pub fn virtio_tee_module_loads_without_a_device(run: &SharedRun) {
    let s = finished(run, "tee-load", "tee_load_done");
    // /init loaded tee.ko (the dependency modinfo names) and then ours.
    s.expect_eq(&g("tee_modules"), "tee virtio_tee")
        .expect_eq(&g("virtio_tee_driver"), "1")
        .expect_eq(&g("tee_class_devices"), "0")
        // Unload and load again.
        .expect_eq(&g("rmmod"), "ok")
        .expect_eq(&g("insmod"), "ok")
        .expect_eq(&g("after_rmmod"), "tee")
        .expect_eq(&g("after_insmod"), "tee virtio_tee")
        .expect_eq(&g("virtio_tee_driver_again"), "1")
        .expect_eq(&g("kernel_warnings"), "0");
    // The uapi client runs and finds no device.
    client_said(&s, "tee", "tee-test: error: cannot open /dev/tee0");
    if run.arch() == Arch::Aarch64 {
        // Debian's libteec (loaded with its libc by the dynamic loader in
        // the initramfs) scans /dev/teeN: TEEC_ERROR_ITEM_NOT_FOUND.
        client_said(&s, "teec", "TEEC-INIT 0xffff0008");
    }
}

/// With `--tee` and `trustyd`, `/dev/tee0` reaches trustyd's echo TA:
/// values and memory references from 1 B to 1 MiB, two sessions in
/// parallel, cancellation; on arm64 also through Debian's libteec. The
/// VMM runs as the guest's own user (10021), which reaches trustyd's TEE
/// socket through the group it is shared with (`user=`).
pub fn dev_tee0_reaches_trustyds_echo_ta(run: &SharedRun) {
    let s = finished(run, "tee", "tee_done");
    s.expect_eq("tee_socket", "660 65534 10021")
        .expect_eq(&g("tee_class_devices"), "1")
        .expect_eq(&g("kernel_warnings"), "0")
        .expect_eq("trustyd_rc", "0");
    client_said(
        &s,
        "tee",
        "TEE-VERSION impl_id=0x56544545 impl_caps=0x0 gen_caps=0x5",
    );
    for size in [1, 4096, 4097, 65536, 1048576] {
        client_said(&s, "tee", &format!("TEE-ECHO-OK size={size} "));
    }
    client_said(&s, "tee", "TEE-SESSIONS-OK n=2");
    client_said(&s, "tee", "TEE-CANCEL-OK");
    if run.arch() == Arch::Aarch64 {
        for size in [1, 4096, 65536, 1048576] {
            client_said(&s, "teec", &format!("TEEC-ECHO-OK size={size} "));
        }
        client_said(&s, "teec", "TEEC-CANCEL-OK");
    }
}

/// The VM runs of `tee-storage`: guest a three times (a new VMM process
/// each), guest b once (while a1 runs).
const STORAGE_RUNS: &[&str] = &["a1", "b1", "a2", "a3"];

/// `tee-storage`'s section, with what every check needs: each VM run
/// powered off cleanly and finished its step without a tool failure or a
/// kernel warning; trustyd ended cleanly.
fn storage_section(run: &SharedRun) -> Section<'_> {
    let s = run.section("tee-storage", 0);
    for vm in STORAGE_RUNS {
        s.expect_eq(&guest(vm, "init"), "ok")
            .expect_eq(&guest(vm, "tee_step"), vm)
            .expect_eq(&guest(vm, "tee_storage_done"), "1")
            .expect_eq(&guest(vm, "kernel_warnings"), "0")
            .expect_vmm_exit(vm, "poweroff", 0);
    }
    s.expect_eq("trustyd_rc", "0");
    if let Some(m) = s.markers().iter().find(|m| m.key.ends_with("_error")) {
        s.fail(&format!("a step failed: {}={}", m.key, m.value));
    }
    s
}

/// Asserts that `<vm>.guest.<tag>_result` is `result` (storage's
/// `enum storage_err`: 0 ok, 2 NOT_VALID, 5 NOT_FOUND, 10 CORRUPTED).
fn storage_result(s: &Section<'_>, vm: &str, tag: &str, result: u32) {
    let key = guest(vm, &format!("{tag}_result"));
    if s.number(&key) != u64::from(result) {
        s.fail(&format!(
            "{key}={} (failed operation: {:?}), expected {result}",
            s.value(&key),
            s.get(&guest(vm, &format!("{tag}_op")))
        ));
    }
}

/// Asserts that file `tag` read in run `vm` has the bytes (size and
/// checksum) that run `wrote` wrote as `wrote_tag`.
fn same_bytes(s: &Section<'_>, vm: &str, tag: &str, wrote: &str, wrote_tag: &str) {
    storage_result(s, vm, tag, 0);
    for k in ["size", "sum"] {
        let got = s.value(&guest(vm, &format!("{tag}_{k}")));
        let want = s.value(&guest(wrote, &format!("{wrote_tag}_{k}")));
        if got != want {
            s.fail(&format!(
                "{vm} read {tag} with {k} {got}, {wrote} wrote {wrote_tag} with {want}"
            ));
        }
    }
}

/// Storage through `/dev/tee0`: what one VM wrote before it powered off
/// is read back, byte for byte (size and checksum), by the same guest in
/// a new VMM process; on arm64 also through Debian's libteec.
pub fn storage_survives_a_vm_power_off_and_a_new_vmm(run: &SharedRun) {
    let s = storage_section(run);
    storage_result(&s, "a1", "secret", 0);
    assert_eq!(s.number(&guest("a1", "secret_size")), 10_000);
    same_bytes(&s, "a2", "secret", "a1", "secret");
    same_bytes(&s, "a2", "tamper", "a1", "tamper");
    // Committed by a1's held session after b1 ran.
    same_bytes(&s, "a2", "held", "a1", "hold");
    if run.arch() == Arch::Aarch64 {
        storage_result(&s, "a1", "teec_secret", 0);
        same_bytes(&s, "a2", "teec_secret", "a1", "teec_secret");
    }
}

/// Gatekeeper through `/dev/tee0`: enroll, verify, four wrong passwords,
/// the fifth throttled for 30 s, the right one refused inside the window;
/// on arm64 also through Debian's libteec (another Android user).
pub fn gatekeeper_enroll_verify_wrong_password_and_throttle(run: &SharedRun) {
    let s = storage_section(run);
    let mut tags = vec!["gk"];
    if run.arch() == Arch::Aarch64 {
        tags.push("teec_gk");
    }
    for tag in tags {
        let n = |k: &str| s.number(&guest("a1", &format!("{tag}_{k}")));
        assert_eq!(n("enroll_status"), 0, "{tag}");
        assert_eq!(n("handle_len"), 58, "{tag}: password_handle_t");
        assert_eq!(n("verify_status"), 0, "{tag}");
        assert_eq!(n("token_len"), 69, "{tag}: hw_auth_token_t");
        assert_eq!(n("token_challenge_ok"), 1, "{tag}");
        assert_eq!(n("wrong_invalid"), 4, "{tag}: failures 1-4 ERROR_INVALID");
        assert_eq!(n("fifth_wrong_status"), 2, "{tag}: the 5th ERROR_RETRY");
        assert_eq!(n("fifth_wrong_retry_ms"), 30_000, "{tag}");
        assert_eq!(n("right_throttled_status"), 2, "{tag}: not checked");
        let left = n("right_throttled_retry_ms");
        assert!(left > 0 && left <= 30_000, "{tag}: {left}");
    }
}

/// hwkey through `/dev/tee0`: the derived key is the same in every run
/// of guest a (and, on arm64, through libteec), and another for guest b.
pub fn hwkey_derives_a_stable_key_per_guest(run: &SharedRun) {
    let s = storage_section(run);
    let a1 = s.value(&guest("a1", "hwkey_key"));
    assert_eq!(a1.len(), 64, "a 32-byte key");
    assert_eq!(s.number(&guest("a1", "hwkey_kdf_version")), 1);
    assert_eq!(s.value(&guest("a2", "hwkey_key")), a1, "a new VMM");
    assert_ne!(s.value(&guest("b1", "hwkey_key")), a1, "another guest");
    if run.arch() == Arch::Aarch64 {
        assert_eq!(s.value(&guest("a1", "teec_hwkey_key")), a1, "libteec");
        assert_eq!(s.value(&guest("a2", "teec_hwkey_key")), a1);
    }
}

/// Two guests with their own VMMs at the same time: while a holds a
/// storage session with an open, uncommitted file, b finds none of a's
/// files under their names, has no file handle 0 in its own session, and
/// the kernel refuses session ids b never opened; b's file of the same
/// name is b's, a's is untouched, and a's held session works on.
pub fn two_guests_cannot_reach_each_others_storage_or_sessions(run: &SharedRun) {
    let s = storage_section(run);
    // b1 ran while a1 held its session.
    s.expect_order(&[
        (&guest("a1", "hold_held"), "1"),
        (&guest("b1", "tee_step"), "b1"),
        ("b1.rc", "0"),
        (&guest("a1", "hold_then_rc"), "0"),
    ]);
    eprintln!(
        "a1's session {} (file handle {}), b1's probe session {}",
        s.value(&guest("a1", "hold_session")),
        s.value(&guest("a1", "hold_handle")),
        s.value(&guest("b1", "probe_session"))
    );
    storage_result(&s, "b1", "secret", 5);
    s.expect_eq(&guest("b1", "secret_op"), "open");
    storage_result(&s, "b1", "held", 5);
    storage_result(&s, "b1", "probe", 2);
    assert_eq!(s.number(&guest("b1", "foreign_refused")), 8);
    storage_result(&s, "b1", "own_secret", 0);
    same_bytes(&s, "b1", "own_secret_back", "b1", "own_secret");
    // a's file of that name is still a's.
    same_bytes(&s, "a2", "secret", "a1", "secret");
    // a's session went on: its uncommitted data intact, then committed.
    s.expect_eq(&guest("a1", "hold_after_result"), "0")
        .expect_eq(&guest("a1", "hold_after_same"), "1")
        .expect_eq(&guest("a1", "hold_commit_result"), "0");
}

/// One bit flipped in a stored file's blob on the test host's disk: the
/// guest's next read of that file fails with CORRUPTED; its other files
/// read as before.
pub fn a_flipped_byte_on_the_host_fails_the_next_read(run: &SharedRun) {
    let s = storage_section(run);
    s.expect_eq("tamper_blobs", "1")
        .expect_eq("tamper_changed", "1");
    same_bytes(&s, "a2", "tamper", "a1", "tamper");
    storage_result(&s, "a3", "tamper", 10);
    same_bytes(&s, "a3", "secret", "a1", "secret");
}

/// An old copy of a file's blob put back over its newer version: the
/// guest's next read fails with CORRUPTED.
pub fn an_old_copy_put_back_is_detected(run: &SharedRun) {
    let s = storage_section(run);
    s.expect_eq("rollback_old_blobs", "1")
        .expect_eq("rollback_new_blobs", "1")
        .expect_eq("rollback_put_back", "1");
    let (old, new) = (s.value("rollback_old"), s.value("rollback_new"));
    assert_ne!(old, new, "a2's write made a new version");
    storage_result(&s, "a2", "rollback", 0);
    storage_result(&s, "a3", "rollback", 10);
}
