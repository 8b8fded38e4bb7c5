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
//!   client and, on arm64, Debian's stock libteec.
//!
//! The clients' result lines are the guest's `tee` (uapi client) and
//! `teec` (libteec client) markers.

use super::{guest, VMM};
use crate::scenario::{Section, SharedRun};
use crate::Arch;

/// The scenarios of one shared test host boot.
pub const SCENARIOS: &[&str] = &["tee-load", "tee"];

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

/// Without a device the module loads after `tee.ko`, registers its virtio
/// driver, unloads and loads again cleanly; the clients find no TEE.
pub fn virtio_tee_module_loads_without_a_device(run: &SharedRun) {
    let s = run.section("tee-load", 0);
    s.expect_eq(&g("init"), "ok")
        .expect_eq(&g("tee_load_done"), "1")
        .expect_vmm_exit(VMM, "poweroff", 0)
        // /init loaded tee.ko (the dependency modinfo names) and then ours.
        .expect_eq(&g("tee_modules"), "tee virtio_tee")
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
/// parallel, cancellation; on arm64 also through Debian's libteec.
pub fn dev_tee0_reaches_trustyds_echo_ta(run: &SharedRun) {
    let s = run.section("tee", 0);
    s.expect_eq(&g("init"), "ok")
        .expect_eq(&g("tee_done"), "1")
        .expect_vmm_exit(VMM, "poweroff", 0)
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
