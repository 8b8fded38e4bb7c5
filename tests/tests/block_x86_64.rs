//! virtio-blk through the guest's stock `virtio_blk` driver, inside the
//! nested x86_64 test host (one outer boot shared by the tests here).
//! `#[ignore]`d like the boot tests: `cargo xtask test` runs them.

use vmstack_tests::scenario::{Section, SharedRun};
use vmstack_tests::Arch;

/// This file's test host. `arm64_virtio.rs` includes this file as a module
/// and re-runs its tests on arm64 under its own `ARCH`.
#[allow(dead_code)]
const ARCH: Arch = Arch::X86_64;

static RUN: SharedRun = SharedRun::on(
    crate::ARCH,
    &[
        "block-rw-write",
        "block-rw-read",
        "block-ro",
        "block-errors",
    ],
);

/// sha256 of 64 MiB of zeroes: what an image the guest never wrote hashes to.
const ZERO_64M_SHA256: &str = "3b6a07d0d404fab4e23b6d34bc6696a6a312dd92821332385e5af7c01c421351";

fn expect_eq(s: &Section<'_>, key: &str, want: &str) {
    let got = s.value(key);
    if got != want {
        s.fail(&format!("{key}={got}, expected {want}"));
    }
}

/// The value of `key`, checked to be a sha256 in hex.
fn sha256(s: &Section<'_>, key: &str) -> String {
    let v = s.value(key);
    if v.len() != 64 || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
        s.fail(&format!("{key}={v} is not a sha256"));
    }
    v
}

#[test]
#[ignore = "needs the nested test host: run `cargo xtask test`"]
fn rw_disk_keeps_a_64_mib_pattern_across_vmm_runs() {
    let w = RUN.section("block-rw-write", 0);
    w.expect("VMSTACK-GUEST-INIT-OK")
        .expect("vmm: exit reason: poweroff");
    expect_eq(&w, "vda_size_sectors", "163840");
    expect_eq(&w, "vda_ro", "0");
    expect_eq(&w, "vda_write_cache", "write back");
    expect_eq(&w, "write_rc", "0");
    expect_eq(&w, "tail_write_rc", "0");
    expect_eq(&w, "discard_rc", "0");
    expect_eq(&w, "sync_rc", "0");
    // conv=fsync twice: the flushes reached the device and completed.
    if w.number("vda_flushes") < 2 {
        w.fail("fewer than 2 flushes completed");
    }
    if w.number("vda_discards") < 1 {
        w.fail("no discard completed");
    }
    let written = sha256(&w, "guest_pattern_sha256");
    if written == ZERO_64M_SHA256 {
        w.fail("the pattern is all zeroes");
    }

    let r = RUN.section("block-rw-read", 0);
    r.expect("VMSTACK-GUEST-INIT-OK")
        .expect("vmm: exit reason: poweroff");
    // Host-side truth, then what a fresh guest reads.
    expect_eq(&r, "host_sha256_64m", &written);
    expect_eq(&r, "guest_read_sha256", &written);
    expect_eq(&r, "host_tail_zero", "yes");
    expect_eq(&r, "vda_ro", "1");
}

#[test]
#[ignore = "needs the nested test host: run `cargo xtask test`"]
fn read_only_disk_refuses_writes_and_stays_unchanged() {
    let s = RUN.section("block-ro", 0);
    s.expect("VMSTACK-GUEST-INIT-OK")
        .expect("vmm: exit reason: poweroff");
    expect_eq(&s, "vda_ro", "1");
    if s.value("ro_dd_rc") == "0" {
        s.fail("dd to the read-only disk succeeded");
    }
    let error = s.value("ro_dd_error");
    if !error.contains("/dev/vda") {
        s.fail(&format!("no write error for /dev/vda printed: {error:?}"));
    }
    let before = sha256(&s, "host_ro_sha256_before");
    expect_eq(&s, "host_ro_sha256_after", &before);
    expect_eq(&s, "guest_ro_sha256", &before);
    expect_eq(&s, "guest_ro_sha256_after", &before);
    // Even with the guest's block-layer read-only flag cleared and the page
    // cache bypassed, the write fails and nothing changes.
    if s.value("forced_dd_rc") == "0" {
        s.fail("a forced direct write to the read-only disk succeeded");
    }
    expect_eq(&s, "guest_ro_sha256_forced", &before);
}

#[test]
#[ignore = "needs the nested test host: run `cargo xtask test`"]
fn get_id_reports_the_serial() {
    // Given with id=, 20 bytes (the most GET_ID carries).
    let ro = RUN.section("block-ro", 0);
    expect_eq(&ro, "vda_serial", "vmstack-ro-disk-0001");
    // Derived from the image's device and inode numbers.
    let rw = RUN.section("block-rw-write", 0);
    let expected = rw.value("host_expected_serial");
    if expected.len() < 3 {
        rw.fail(&format!("host_expected_serial={expected} is too short"));
    }
    expect_eq(&rw, "vda_serial", &expected);
}

#[test]
#[ignore = "needs the nested test host: run `cargo xtask test`"]
fn disk_setup_errors_are_one_line_and_say_what_to_do() {
    let s = RUN.section("block-errors", 0);
    s.expect("error: disk image /tmp/block-locked.img is in use by another process")
        .expect("error: disk image /tmp/block-tiny.img is 100 bytes, less than one 512-byte sector")
        .expect("error: disk image /tmp/block-odd.img is 3000 bytes, not a multiple of 512")
        .expect("first: VMSTACK-GUEST-INIT-OK")
        .expect("first: vmm: exit reason: poweroff");
    expect_eq(&s, "locked_rw_rc", "1");
    expect_eq(&s, "locked_ro_rc", "1");
    expect_eq(&s, "tiny_rc", "1");
    expect_eq(&s, "odd_rc", "1");
    expect_eq(&s, "first_rc", "0");
    let in_use = s
        .result
        .output
        .lines()
        .filter(|l| l.contains("is in use by another process"))
        .count();
    if in_use != 2 {
        s.fail(&format!("{in_use} in-use errors, expected 2 (rw and ro)"));
    }
}
