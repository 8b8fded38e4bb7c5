//! The guest side of virtio-tee without the device (`docs/virtio-tee.md`):
//! the out-of-tree `virtio_tee` module from `android/kernel/virtio_tee`,
//! built by `cargo xtask images` against the guest kernel's Debian headers,
//! loads with Debian's `tee.ko`, registers its virtio driver, unloads and
//! loads again; the TEE clients run and find no TEE device. `#[ignore]`d
//! like the other nested tests: `cargo xtask test` runs them.

use vmstack_tests::scenario::SharedRun;
use vmstack_tests::Arch;

/// This file's test host (`arm64_virtio.rs` re-runs it on arm64).
#[allow(dead_code)]
const ARCH: Arch = Arch::X86_64;

static RUN: SharedRun = SharedRun::on(crate::ARCH, &["tee-load"]);

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
