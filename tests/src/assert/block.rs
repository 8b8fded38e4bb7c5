//! virtio-blk through the guest's stock `virtio_blk` driver (scenarios
//! `block-rw-write`, `block-rw-read`, `block-ro`, `block-errors`,
//! `block-limited`).

use super::{guest, VMM};
use crate::scenario::{Section, SharedRun};

/// The scenarios of one shared test host boot.
pub const SCENARIOS: &[&str] = &[
    "block-rw-write",
    "block-rw-read",
    "block-ro",
    "block-errors",
    "block-limited",
];

/// sha256 of 64 MiB of zeroes: what an image the guest never wrote hashes to.
const ZERO_64M_SHA256: &str = "3b6a07d0d404fab4e23b6d34bc6696a6a312dd92821332385e5af7c01c421351";

/// The guest's marker `key`.
fn g(key: &str) -> String {
    guest(VMM, key)
}

/// Scenario `name`'s section, checked: the guest booted and powered off.
fn powered_off<'a>(run: &'a SharedRun, name: &str) -> Section<'a> {
    let s = run.section(name, 0);
    s.expect_eq(&g("init"), "ok")
        .expect_vmm_exit(VMM, "poweroff", 0);
    s
}

/// A 64 MiB pattern written through a read-write disk (with flushes and a
/// discard) is what the host and a second VM read back.
pub fn rw_disk_keeps_a_64_mib_pattern_across_vmm_runs(run: &SharedRun) {
    let w = powered_off(run, "block-rw-write");
    w.expect_eq(&g("vda_size_sectors"), "163840")
        .expect_eq(&g("vda_ro"), "0")
        .expect_eq(&g("vda_write_cache"), "write back");
    for step in ["write_rc", "tail_write_rc", "discard_rc", "sync_rc"] {
        w.expect_eq(&g(step), "0");
    }
    // conv=fsync twice: the flushes reached the device and completed.
    if w.number(&g("vda_flushes")) < 2 {
        w.fail("fewer than 2 flushes completed");
    }
    if w.number(&g("vda_discards")) < 1 {
        w.fail("no discard completed");
    }
    let written = w.sha256(&g("guest_pattern_sha256"));
    if written == ZERO_64M_SHA256 {
        w.fail("the pattern is all zeroes");
    }

    let r = powered_off(run, "block-rw-read");
    // Host-side truth, then what a fresh guest reads.
    r.expect_eq("host_sha256_64m", written)
        .expect_eq(&g("guest_read_sha256"), written)
        .expect_eq("host_tail_zero", "yes")
        .expect_eq(&g("vda_ro"), "1");
}

/// A read-only disk refuses writes, even forced ones, and stays unchanged.
pub fn read_only_disk_refuses_writes_and_stays_unchanged(run: &SharedRun) {
    let s = powered_off(run, "block-ro");
    s.expect_eq(&g("vda_ro"), "1");
    if s.value(&g("ro_dd_rc")) == "0" {
        s.fail("dd to the read-only disk succeeded");
    }
    let error = s.value(&g("ro_dd_error"));
    if !error.contains("/dev/vda") {
        s.fail(&format!("no write error for /dev/vda printed: {error:?}"));
    }
    let before = s.sha256("host_ro_sha256_before");
    s.expect_eq("host_ro_sha256_after", before)
        .expect_eq(&g("guest_ro_sha256"), before)
        .expect_eq(&g("guest_ro_sha256_after"), before);
    // Even with the guest's block-layer read-only flag cleared and the page
    // cache bypassed, the write fails and nothing changes.
    if s.value(&g("forced_dd_rc")) == "0" {
        s.fail("a forced direct write to the read-only disk succeeded");
    }
    s.expect_eq(&g("guest_ro_sha256_forced"), before);
}

/// GET_ID reports the serial given with `id=` or derived from the image.
pub fn get_id_reports_the_serial(run: &SharedRun) {
    // Given with id=, 20 bytes (the most GET_ID carries).
    let ro = run.section("block-ro", 0);
    ro.expect_eq(&g("vda_serial"), "vmstack-ro-disk-0001");
    // Derived from the image's device and inode numbers.
    let rw = run.section("block-rw-write", 0);
    let expected = rw.value("host_expected_serial");
    if expected.len() < 3 {
        rw.fail(&format!("host_expected_serial={expected} is too short"));
    }
    rw.expect_eq(&g("vda_serial"), expected);
}

/// Images the VMM cannot use are refused with one `error:` line and exit
/// status 1, and the VMM that holds the image runs on undisturbed.
pub fn disk_setup_errors_are_one_line_and_say_what_to_do(run: &SharedRun) {
    let s = run.section("block-errors", 0);
    for (tag, error) in [
        (
            "locked_rw",
            "error: disk image /tmp/block-locked.img is in use by another process",
        ),
        (
            "locked_ro",
            "error: disk image /tmp/block-locked.img is in use by another process",
        ),
        (
            "tiny",
            "error: disk image /tmp/block-tiny.img is 100 bytes, less than one 512-byte sector",
        ),
        (
            "odd",
            "error: disk image /tmp/block-odd.img is 3000 bytes, not a multiple of 512",
        ),
    ] {
        s.expect_eq(&format!("{tag}.rc"), "1")
            .expect_log(tag, error);
        let errors = s
            .all(&format!("{tag}.log"))
            .iter()
            .filter(|l| l.starts_with("error:"))
            .count();
        if errors != 1 {
            s.fail(&format!("{tag}: {errors} error lines, expected 1"));
        }
    }
    s.expect_eq(&guest("first", "init"), "ok")
        .expect_vmm_exit("first", "poweroff", 0);
}

/// Rate-limited disks are never faster than their limit and close to it:
/// 4 MiB at 1 MiB/s (1 MiB at once) and 200 requests at 50/s (50 at once)
/// each take 3 s at the limit. Faster is a limiter that does not limit;
/// much slower one that stalls. The upper bound leaves room for the
/// emulated test host's own speed (an unlimited read of 4 MiB there takes
/// well under a second).
pub fn limited_disks_run_near_their_limits(run: &SharedRun) {
    let s = powered_off(run, "block-limited");
    s.expect_eq(&g("bw_dd_rc"), "0")
        .expect_eq(&g("ops_dd_rc"), "0")
        // Every byte and request reached the device (no cache in between).
        .expect_eq(&g("bw_sectors"), "8192");
    if s.number(&g("ops_requests")) < 200 {
        s.fail("fewer than 200 requests reached the ops-limited disk");
    }
    for key in ["bw_seconds", "ops_seconds"] {
        let value = s.value(&g(key));
        let Ok(seconds) = value.parse::<f64>() else {
            s.fail(&format!("{key}={value} is not a number"));
        };
        // 3 s at the limit; /proc/uptime has 10 ms steps.
        if !(2.9..=7.0).contains(&seconds) {
            s.fail(&format!(
                "{key}={seconds}: expected 3 s at the limit (2.9 to 7 s)"
            ));
        }
    }
}
