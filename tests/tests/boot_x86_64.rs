//! End-to-end boot tests of the VMM inside the nested x86_64 test host.
//!
//! These tests are `#[ignore]`d so that plain `cargo test --workspace` stays a
//! unit-test run; `cargo xtask test` builds the VMM and the images and runs them
//! with `--include-ignored`. Run by hand (after `cargo xtask images`):
//! `cargo test -p vmstack-tests --test boot_x86_64 -- --include-ignored`.
//! Without images they fail with an instruction to run `cargo xtask test`.
//!
//! One outer boot runs the scenarios `boot-poweroff,boot-reboot` and is shared
//! by all tests here.

use std::sync::OnceLock;

use vmstack_tests::testhost::{self, ScenarioResult, TestHostConfig, TestHostRun};

const SCENARIOS: &[&str] = &["boot-poweroff", "boot-reboot"];

static OUTER: OnceLock<Result<TestHostRun, String>> = OnceLock::new();

fn outer() -> &'static TestHostRun {
    let run = OUTER.get_or_init(|| {
        let images = vmstack_tests::images_dir_x86_64();
        let cfg = TestHostConfig::from_images_dir(&images, SCENARIOS, &vmstack_tests::log_dir())
            .map_err(|e| e.to_string())?;
        testhost::run(&cfg).map_err(|e| e.to_string())
    });
    match run {
        Ok(run) => run,
        Err(e) => panic!("{e}"),
    }
}

/// The section of `name`, or a panic with the outer console.
fn section<'a>(run: &'a TestHostRun, name: &str) -> &'a ScenarioResult {
    match run.scenario(name) {
        Some(s) => s,
        None => panic!(
            "{}",
            run.failure_report(&format!("no @@BEGIN {name} section in the console"))
        ),
    }
}

fn expect(run: &TestHostRun, sec: &ScenarioResult, needle: &str) {
    if !sec.contains(needle) {
        panic!(
            "{}",
            run.failure_report(&format!(
                "scenario {}: {needle:?} not in its output:\n{}",
                sec.name, sec.output
            ))
        );
    }
}

fn expect_rc(run: &TestHostRun, sec: &ScenarioResult, rc: i32) {
    if sec.rc != Some(rc) {
        panic!(
            "{}",
            run.failure_report(&format!(
                "scenario {}: rc {:?}, expected {rc}; its output:\n{}",
                sec.name, sec.rc, sec.output
            ))
        );
    }
}

#[test]
#[ignore = "needs the nested test host: run `cargo xtask test`"]
fn poweroff() {
    let run = outer();
    let sec = section(run, "boot-poweroff");
    expect(run, sec, "VMSTACK-GUEST-INIT-OK");
    expect(run, sec, "nproc=2");
    expect(run, sec, "vmm: exit reason: poweroff");
    expect_rc(run, sec, 0);
    eprintln!(
        "boot-poweroff ok (outer run {:.1} s, log {})",
        run.elapsed.as_secs_f64(),
        run.log_path.display()
    );
}

#[test]
#[ignore = "needs the nested test host: run `cargo xtask test`"]
fn reboot() {
    let run = outer();
    let sec = section(run, "boot-reboot");
    expect(run, sec, "VMSTACK-GUEST-INIT-OK");
    expect(run, sec, "vmm: exit reason: reboot");
    expect_rc(run, sec, 32);
    eprintln!(
        "boot-reboot ok (outer run {:.1} s, log {})",
        run.elapsed.as_secs_f64(),
        run.log_path.display()
    );
}
