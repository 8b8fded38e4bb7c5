//! The guest side of virtio-tee (`docs/virtio-tee.md`): the out-of-tree
//! `virtio_tee` module from `android/kernel/virtio_tee`, built by `cargo
//! xtask images` against the guest kernel's Debian headers.
//!
//! - `tee-load`: without a device the module loads with Debian's `tee.ko`,
//!   registers its virtio driver, unloads and loads again; the TEE clients
//!   run and find no TEE device;
//! - `tee`: with `--tee` and `trustyd` in the test host, `/dev/tee0`
//!   serves echo with values and memory references up to 1 MiB (checked byte
//!   for byte), parallel sessions and cancellation, through the uapi client
//!   and, on arm64, Debian's stock libteec.
//!
//! `#[ignore]`d like the other nested tests: `cargo xtask test` runs them.

use vmstack_tests::scenario::SharedRun;
use vmstack_tests::Arch;

/// This file's test host (`arm64_virtio.rs` re-runs it on arm64).
#[allow(dead_code)]
const ARCH: Arch = Arch::X86_64;

static RUN: SharedRun = SharedRun::on(crate::ARCH, &["tee-load", "tee"]);

#[test]
#[ignore = "needs the nested test host: run `cargo xtask test`"]
fn virtio_tee_module_loads_without_a_device() {
    let s = RUN.section("tee-load", 0);
    s.expect("VMSTACK-GUEST-INIT-OK")
        .expect("TEE-LOAD-DONE")
        .expect("vmm: exit reason: poweroff");
    // /init loaded tee.ko (the dependency modinfo names) and then ours.
    assert_eq!(s.value("tee_modules"), "tee virtio_tee", "loaded modules");
    assert_eq!(s.number("virtio_tee_driver"), 1, "virtio driver registered");
    assert_eq!(s.number("tee_class_devices"), 0, "no device, no /dev/teeN");
    // Unload and load again.
    s.expect("rmmod=ok").expect("insmod=ok");
    assert_eq!(s.value("after_rmmod"), "tee");
    assert_eq!(s.value("after_insmod"), "tee virtio_tee");
    assert_eq!(s.number("virtio_tee_driver_again"), 1);
    assert_eq!(s.number("kernel_warnings"), 0, "WARNING/BUG/Oops in dmesg");
    // The uapi client runs and finds no device.
    s.expect("tee-test: tee-test: error: cannot open /dev/tee0");
    if crate::ARCH == Arch::Aarch64 {
        // Debian's libteec (loaded with its libc by the dynamic loader in
        // the initramfs) scans /dev/teeN: TEEC_ERROR_ITEM_NOT_FOUND.
        s.expect("tee-client: TEEC-INIT 0xffff0008");
    }
}

#[test]
#[ignore = "needs the nested test host: run `cargo xtask test`"]
fn dev_tee0_reaches_trustyds_echo_ta() {
    let s = RUN.section("tee", 0);
    s.expect("VMSTACK-GUEST-INIT-OK")
        .expect("TEE-DONE")
        .expect("vmm: exit reason: poweroff");
    assert_eq!(s.number("vmm_rc"), 0);
    assert_eq!(s.number("tee_class_devices"), 1, "one TEE device");
    s.expect("TEE-VERSION impl_id=0x56544545 impl_caps=0x0 gen_caps=0x5");
    for size in [1, 4096, 4097, 65536, 1048576] {
        s.expect(&format!("TEE-ECHO-OK size={size} "));
    }
    s.expect("TEE-SESSIONS-OK n=2").expect("TEE-CANCEL-OK");
    if crate::ARCH == Arch::Aarch64 {
        for size in [1, 4096, 65536, 1048576] {
            s.expect(&format!("TEEC-ECHO-OK size={size} "));
        }
        s.expect("TEEC-CANCEL-OK");
    }
    assert_eq!(s.number("kernel_warnings"), 0, "WARNING/BUG/Oops in dmesg");
    assert_eq!(s.number("trustyd_rc"), 0, "trustyd stopped cleanly");
}
