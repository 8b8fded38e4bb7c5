//! `cargo xtask test` and `testhost`: build, then boot (the demo: `demo.rs`).

use std::time::Instant;

use anyhow::{bail, Context, Result};
use vmstack_tests::testhost::{self, TestHostConfig};

use crate::images::{self, Images};
use crate::paths::{self, Arch};
use crate::setup;
use crate::util::{self, step};

/// Set-up, the static VMM and the images of `arch` (what every command
/// that boots a test host needs first).
pub fn prepare(arch: Arch) -> Result<Images> {
    setup::prepare_machine_for(arch)?;
    let vmm = setup::build_vmm(arch)?;
    images::build(arch, Some(&vmm))
}

/// Prefix of the nested test modules that only `cargo xtask test
/// --all-arch` runs (`all_arch_arm64::*`: the slow arm64 runs of the device
/// tests); see docs/arm64.md.
pub const ALL_ARCH_PREFIX: &str = "all_arch_";

/// `cargo xtask test [--all-arch]`: both architectures' VMMs and images,
/// then every test file and the demo; without `--all-arch` the
/// `all_arch_*` tests are skipped.
pub fn test(nested_only: bool, all_arch: bool) -> Result<()> {
    let started = Instant::now();
    let images = prepare(Arch::X86_64)?;
    let arm64_images = prepare(Arch::Aarch64)?;
    if !nested_only {
        step!("run: cargo test --workspace (unit tests)");
        util::run(setup::cargo().args(["test", "--workspace"])).context("unit tests failed")?;
        let target = Arch::Aarch64.musl_target();
        // `--lib`: the library unit tests only. Integration tests such as
        // vmm/tests/adb_proxy_sandbox.rs spawn the built binary, which
        // qemu-aarch64-static (the cargo runner) does not run for them.
        step!("run: cargo test --target {target} -p vmm -p devices --lib (aarch64 unit tests under qemu-aarch64-static)");
        util::run(setup::cargo().args([
            "test", "--target", target, "-p", "vmm", "-p", "devices", "--lib",
        ]))
        .context("aarch64 unit tests failed")?;
        step!("run: cargo xtask android-check (cargo check for the Android targets)");
        crate::android_check::android_check()?;
    }
    step!("run: nested test host integration tests (tests/tests/*.rs)");
    let nested = Instant::now();
    let mut c = setup::cargo();
    c.args([
        "test",
        "-p",
        "vmstack-tests",
        "--tests",
        "--",
        "--include-ignored",
        "--nocapture",
    ])
    .env("VMSTACK_IMAGES", &images.dir)
    .env("VMSTACK_IMAGES_AARCH64", &arm64_images.dir);
    if !all_arch {
        step!("skipping {ALL_ARCH_PREFIX}* tests (run them with --all-arch)");
        c.args(["--skip", ALL_ARCH_PREFIX]);
    }
    util::run(&mut c).context("nested test host tests failed")?;
    // The README's main command is tested too: it boots its own test host
    // and fails unless every act of the demo passed.
    step!("run: cargo xtask demo (the system demo, checked like a test)");
    crate::demo::run_with(&images.dir).context("the demo failed")?;
    step!(
        "all tests passed (nested and demo {:.1} s, total {:.1} s)",
        nested.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Boots the test host with `scenarios`, streaming the console; fails unless every
/// scenario ended with rc=0.
fn boot_streaming(
    images: &std::path::Path,
    scenarios: &[&str],
    arch: Arch,
    scenario_timeout: Option<std::time::Duration>,
) -> Result<()> {
    let mut cfg = TestHostConfig::for_arch(arch, images, scenarios, &vmstack_tests::log_dir())?;
    cfg.stream = true;
    if let Some(t) = scenario_timeout {
        cfg.set_scenario_timeout(t);
    }
    let run = testhost::run(&cfg)?;
    step!(
        "test host finished in {:.1} s (timed out: {}); console log {}",
        run.elapsed.as_secs_f64(),
        run.timed_out,
        run.log_path.display()
    );
    for w in &run.host_kvm_warnings {
        step!("the test host's KVM warned (its result cannot be trusted): {w}");
    }
    let mut failed = Vec::new();
    for s in scenarios {
        match run.scenario(s) {
            Some(r) if r.rc == Some(0) => step!("scenario {s}: rc=0"),
            Some(r) => {
                step!("scenario {s}: rc={:?}", r.rc);
                failed.push(*s);
            }
            None => {
                step!("scenario {s}: no @@BEGIN/@@END section");
                failed.push(*s);
            }
        }
    }
    if !failed.is_empty() {
        bail!(
            "scenario(s) {} failed; full console: {}",
            failed.join(","),
            run.log_path.display()
        );
    }
    Ok(())
}

/// `cargo xtask testhost <scenarios>`.
pub fn testhost(
    scenarios: &str,
    no_build: bool,
    arch: Arch,
    scenario_timeout: Option<std::time::Duration>,
) -> Result<()> {
    let dir = if no_build {
        paths::images_dir(arch)
    } else {
        prepare(arch)?.dir
    };
    let list: Vec<&str> = scenarios.split(',').filter(|s| !s.is_empty()).collect();
    boot_streaming(&dir, &list, arch, scenario_timeout)
}
