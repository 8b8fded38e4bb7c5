//! `cargo xtask bench boot --arch aarch64 [--runs N]`: boot time and memory
//! overhead of our VMM against QEMU `-M virt` under KVM, both in the same
//! arm64 pKVM test host run (the test host is itself QEMU TCG on this
//! machine, so the absolute times are slow; the ratios are the result).
//!
//! The extra initramfs carries a static aarch64 `bootbench`
//! (tests/bootbench) and Debian's arm64 `qemu-system-aarch64` with its
//! shared-object closure (`arm64_program.rs`, packages locked in the
//! `qemu-peer` group of `prebuilts/aarch64.lock`). The `bench-boot-arm64`
//! scenario runs `bootbench`, which boots the guest N rounds, our VMM then
//! QEMU (`-M virt,gic-version=3 -accel kvm -cpu
//! host,pauth=off,pmu=off,sve=off,kvm-steal-time=off`, 1 vCPU, 256 MiB,
//! the same kernel Image, initramfs and command line but for the console,
//! `ttyAMA0`, QEMU's PL011, and `initcall_blacklist=pl031_driver_init`; why:
//! `AARCH64` in tests/bootbench/src/main.rs and
//! docs/notes/2026-12-06-arm64-qemu-peer.md). Both are measured the same way as on x86_64:
//! the test host kernel's `kvm_entry` (first VM entry) and `kvm_mmio`
//! tracepoints (the guest `/init`'s boot-timer write of 123 to MMIO
//! 0x9010000: our VMM's boot timer, the read-only PL031 data register for
//! QEMU: both exit to the VMM), spawn → exit, and `smaps` at `/init` for
//! the overhead (RSS minus guest RAM). This module prints the x86_64
//! table (medians, ours/QEMU ratios, the targets) and the guest boot
//! profile (`bench_profile.rs`), and writes `target/bench/boot-aarch64.json`.
//!
//! If QEMU does not run at all (every QEMU boot failed, our VMM's did
//! not), the bench says so in one line with QEMU's error and still reports
//! our VMM's figures. See docs/arm64.md and docs/benchmarks.md.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{bail, Result};
use bootbench::record::{Failure, OURS, QEMU_VIRT};
use bootbench::stats::{self, Summary};

use crate::arm64_program;
use crate::bench::{self, Parsed, VmmSummary, MIN_RUNS};
use crate::bench_host::{self, Bench, Extra, Manifest};
use crate::bench_profile;
use crate::lock;
use crate::paths::Arch;
use crate::setup;
use crate::util::{self, step};

/// Scenario in `prebuilts/testhost/scenarios/`.
const SCENARIO: &str = "bench-boot-arm64";
/// Guest RAM of both VMMs, MiB (the scenario passes it to bootbench).
const MEM_MIB: u32 = 256;
/// Time bootbench allows one boot to reach `/init` inside the arm64 test
/// host (the scenario's `--timeout`).
const PER_BOOT: Duration = Duration::from_secs(240);
/// What bootbench allows a guest after `/init` to dump its log and power
/// off (`runner::AFTER_INIT` in tests/bootbench).
const AFTER_INIT: Duration = Duration::from_secs(60);

/// How the QEMU peer fared.
#[derive(Debug, Clone, PartialEq)]
pub enum PeerOutcome {
    /// Every QEMU boot was measured.
    Measured(VmmSummary),
    /// No QEMU boot was: why (the first failure's error and QEMU's last
    /// stderr line).
    DidNotRun(String),
}

/// One line saying why a failed run failed: the error and the VMM's last
/// non-empty stderr line (QEMU's own message).
pub fn failure_reason(f: &Failure) -> String {
    match f.stderr_tail.iter().rev().find(|l| !l.trim().is_empty()) {
        Some(last) => format!("{} ({})", f.error, last.trim()),
        None => f.error.clone(),
    }
}

/// Checks the parsed console: our VMM measured in every run, and QEMU in
/// every run or in none (it does not run there). Anything else (invalid
/// records, our VMM failing, QEMU failing in some runs only, no end
/// record) is an error.
pub fn check(p: &Parsed, runs: u32) -> Result<(VmmSummary, PeerOutcome)> {
    let qemu_samples = p.samples.iter().filter(|s| s.vmm == QEMU_VIRT).count();
    let qemu_failures: Vec<&Failure> = p.failures.iter().filter(|f| f.vmm == QEMU_VIRT).collect();
    if qemu_samples == 0 && qemu_failures.len() == runs as usize {
        let ours_only = Parsed {
            failures: p
                .failures
                .iter()
                .filter(|f| f.vmm != QEMU_VIRT)
                .cloned()
                .collect(),
            samples: p.samples.clone(),
            invalid: p.invalid.clone(),
            info: None,
            done: p.done,
        };
        bench::check_complete(&ours_only, runs, &[OURS])?;
        let ours = summary_of(p, OURS)?;
        return Ok((
            ours,
            PeerOutcome::DidNotRun(failure_reason(qemu_failures[0])),
        ));
    }
    bench::check_complete(p, runs, &[OURS, QEMU_VIRT])?;
    Ok((
        summary_of(p, OURS)?,
        PeerOutcome::Measured(summary_of(p, QEMU_VIRT)?),
    ))
}

fn summary_of(p: &Parsed, vmm: &str) -> Result<VmmSummary> {
    match bench::summarize(&p.samples, vmm) {
        Some(s) => Ok(s),
        None => bail!("{vmm}: no finite measurements"),
    }
}

/// Median of what our VMM logged itself (first KVM_RUN, boot-timer write).
fn self_reported(p: &Parsed, f: fn(&bootbench::record::Sample) -> Option<f64>) -> Option<Summary> {
    let v: Vec<f64> = p
        .samples
        .iter()
        .filter(|s| s.vmm == OURS)
        .filter_map(f)
        .collect();
    stats::summarize(&v)
}

/// Our VMM's figures alone (when QEMU did not run).
pub fn ours_table(ours: &VmmSummary, exit: Option<&Summary>, runs: u32) -> String {
    let mut t = String::new();
    let cell =
        |s: &Summary, d: usize| format!("{:.d$} [{:.d$}..{:.d$}]", s.median, s.min, s.max, d = d);
    let _ = writeln!(
        t,
        "{:<30} {:>26}",
        format!("median [min..max] of {runs} runs"),
        OURS
    );
    let mut rows = vec![
        (
            "start -> first VM entry (ms)",
            cell(&ours.first_entry_ms, 1),
        ),
        ("start -> guest /init (ms)", cell(&ours.init_ms, 1)),
    ];
    if let Some(e) = exit {
        rows.push(("start -> exit (ms)", cell(e, 1)));
    }
    rows.extend([
        ("overhead: RSS - guest (MiB)", cell(&ours.overhead_mib, 2)),
        (
            "  of which file-backed (MiB)",
            cell(&ours.overhead_file_mib, 2),
        ),
        ("guest memory touched (MiB)", cell(&ours.guest_rss_mib, 1)),
    ]);
    for (name, c) in rows {
        let _ = writeln!(t, "{name:<30} {c:>26}");
    }
    t
}

/// `cargo xtask bench boot --arch aarch64`.
pub fn boot(runs: u32) -> Result<()> {
    if runs < MIN_RUNS {
        bail!("--runs {runs}: at least {MIN_RUNS} runs per VMM are needed for a median");
    }
    let images = bench_host::prepare(Arch::Aarch64)?;
    let m = Manifest::read(&images);
    let bootbench = setup::build_static(Arch::Aarch64, "bootbench", "bootbench")?;
    let mut extra = Extra::new();
    extra.file_from("bin/bootbench", 0o755, &bootbench)?;
    let peer = arm64_program::add_to(
        &mut extra,
        &lock::QEMU_PEER,
        arm64_program::QEMU_PEER_PROGRAM,
    )?;
    let info = format!(
        "{} (arm64)\nkernel {} ({} sha256 {})\n",
        peer.package,
        m.get("/kernel/release"),
        m.get("/kernel/version"),
        m.get("/kernel/sha256")
    );
    extra.file("etc/vmstack/bench-info", 0o644, info.into_bytes())?;
    let versions = serde_json::json!({
        "qemu_package": format!("{} (arm64)", peer.package),
        "qemu_peer_packages": peer.packages,
        "qemu_peer_shared_objects": peer.libraries,
        "kernel_release": m.get("/kernel/release"),
        "kernel_package": format!("{} {}", m.get("/kernel/package"), m.get("/kernel/version")),
        "kernel_sha256": m.get("/kernel/sha256"),
        "vmm_sha256": m.get("/vmm/sha256"),
        "bootbench_sha256": util::sha256_file(&bootbench)?,
    });
    let bench = Bench {
        arch: Arch::Aarch64,
        scenario: SCENARIO,
        append: vec![
            format!("bench.runs={runs}"),
            format!("bench.mem={MEM_MIB}"),
            format!("bench.timeout={}", PER_BOOT.as_secs()),
        ],
        scenario_timeout: (PER_BOOT + AFTER_INIT + Duration::from_secs(10)) * 2 * runs
            + Duration::from_secs(60),
        stream: true,
    };
    let run = bench.boot(&images, Some(&extra))?;
    let section = bench_host::section(&run, SCENARIO)?;
    let parsed = bench::parse_console(&section.output);
    let checked = check(&parsed, runs);

    let profile_columns = bench::profile_columns(&parsed.samples, &[OURS, QEMU_VIRT]);
    let ours = bench::summarize(&parsed.samples, OURS);
    let qemu = bench::summarize(&parsed.samples, QEMU_VIRT);
    let exit_ours = stats::summarize(
        &parsed
            .samples
            .iter()
            .filter(|s| s.vmm == OURS)
            .filter_map(|s| s.exit_ms)
            .collect::<Vec<_>>(),
    );
    let self_entry = self_reported(&parsed, |s| s.self_first_entry_ms);
    let self_init = self_reported(&parsed, |s| s.self_init_ms);
    let peer_status = match &checked {
        Ok((_, PeerOutcome::Measured(_))) => serde_json::json!({ "ran": true }),
        Ok((_, PeerOutcome::DidNotRun(why))) => {
            serde_json::json!({ "ran": false, "reason": why })
        }
        Err(e) => serde_json::json!({ "ran": null, "error": format!("{e:#}") }),
    };
    let verdicts = match (&ours, &qemu) {
        (Some(o), Some(q)) => serde_json::json!(bench::verdicts(o, q)),
        _ => serde_json::Value::Null,
    };
    let json_path = bench_host::write_results(
        "boot-aarch64",
        &serde_json::json!({
            "arch": "aarch64",
            "runs": runs,
            "mem_mib": MEM_MIB,
            "unix_time": bench_host::unix_time(),
            "versions": versions,
            "setup": parsed.info,
            "qemu_peer": peer_status,
            "summary": { OURS: ours, QEMU_VIRT: qemu },
            "ours_self_reported_ms": { "first_kvm_run": self_entry, "init": self_init },
            "verdicts": verdicts,
            "guest_profile": bench_profile::json(&profile_columns),
            "samples": parsed.samples,
            "failures": parsed.failures,
            "console_log": run.log_path.display().to_string(),
            "testhost_elapsed_s": run.elapsed.as_secs_f64(),
        }),
    )?;

    println!();
    println!(
        "boot benchmark (aarch64): our VMM vs QEMU -M virt, 1 vCPU / {MEM_MIB} MiB guests, \
         KVM in the arm64 pKVM test host (itself QEMU TCG)"
    );
    println!(
        "  kernel {} ({} sha256 {}); {} (arm64); both boot the Image",
        m.get("/kernel/release"),
        m.get("/kernel/version"),
        m.get("/kernel/sha256"),
        peer.package
    );
    match &checked {
        Ok((o, PeerOutcome::Measured(q))) => {
            print!("{}", bench::table(OURS, QEMU_VIRT, o, q, runs))
        }
        Ok((o, PeerOutcome::DidNotRun(why))) => {
            println!("QEMU -M virt did not run under KVM in the pKVM test host: {why}");
            print!("{}", ours_table(o, exit_ours.as_ref(), runs));
        }
        Err(_) => {}
    }
    if let (Some(e), Some(i)) = (&self_entry, &self_init) {
        println!(
            "{:<30} first KVM_RUN {:.1} ms, /init {:.1} ms (medians)",
            "ours, as it logs itself", e.median, i.median
        );
    }
    println!();
    print!("{}", bench_profile::table(&profile_columns));
    println!(
        "  test host run {:.1} s (timed out: {})",
        run.elapsed.as_secs_f64(),
        run.timed_out
    );
    println!(
        "  all runs: {}; console: {}",
        json_path.display(),
        run.log_path.display()
    );
    step!("results in {}", json_path.display());
    match checked {
        Err(e) => bail!(
            "{e:#}\n(scenario rc={:?}; console {})",
            section.rc,
            run.log_path.display()
        ),
        // bootbench exits 1 when a run failed: QEMU's did, all of them.
        Ok((_, PeerOutcome::DidNotRun(_))) => Ok(()),
        Ok((_, PeerOutcome::Measured(_))) => bench_host::check_rc(&run, section),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bootbench::record::{self, Sample};

    fn sample(vmm: &str, run: u32, entry: f64, init: f64) -> Sample {
        Sample {
            vmm: vmm.into(),
            run,
            first_entry_ms: entry,
            init_ms: init,
            rss_total_kib: 40_000,
            guest_rss_kib: 30_000,
            overhead_kib: 10_000,
            overhead_file_kib: 2_000,
            overhead_thp_kib: 0,
            self_first_entry_ms: (vmm == OURS).then_some(entry - 1.0),
            self_init_ms: (vmm == OURS).then_some(init - 1.0),
            exit_ms: Some(init + 5000.0),
            guest: None,
        }
    }

    fn line(s: &Sample) -> String {
        format!(
            "{}{}\n",
            record::SAMPLE_PREFIX,
            serde_json::to_string(s).unwrap()
        )
    }

    fn fail(run: u32) -> String {
        let f = Failure {
            vmm: QEMU_VIRT.into(),
            run,
            error: "the VMM exited (exit status: 1) before the guest's boot-timer write \
                    (first VM entry not seen)"
                .into(),
            stderr_tail: vec![
                "qemu-system-aarch64: kvm_init_vcpu: kvm_arch_init_vcpu failed (0): Invalid argument".into(),
                "".into(),
            ],
        };
        format!(
            "{}{}\n",
            record::FAIL_PREFIX,
            serde_json::to_string(&f).unwrap()
        )
    }

    #[test]
    fn both_measured_give_the_x86_table() {
        let mut c = String::from("@@BENCH-INFO {}\n");
        for r in 1..=5 {
            c += &line(&sample(OURS, r, 300.0 + f64::from(r), 20_000.0));
            c += &line(&sample(QEMU_VIRT, r, 900.0, 25_000.0 + f64::from(r)));
        }
        c += "@@BENCH-DONE {}\n";
        let p = bench::parse_console(&c);
        let (o, outcome) = check(&p, 5).unwrap();
        let PeerOutcome::Measured(q) = outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(o.first_entry_ms.median, 303.0);
        assert_eq!(q.init_ms.median, 25_003.0);
        let t = bench::table(OURS, QEMU_VIRT, &o, &q, 5);
        assert!(t.contains("qemu-virt") && t.contains("0.337"), "{t}");
        assert_eq!(
            self_reported(&p, |s| s.self_init_ms).unwrap().median,
            19_999.0
        );
        assert!(self_reported(&p, |s| s.exit_ms.filter(|_| false)).is_none());
        // A QEMU run missing is an error, not a peer that does not run.
        let partial = c.replace(&line(&sample(QEMU_VIRT, 5, 900.0, 25_005.0)), &fail(5));
        assert!(check(&bench::parse_console(&partial), 5).is_err());
    }

    #[test]
    fn a_peer_that_never_runs_is_reported_with_its_error() {
        let mut c = String::new();
        for r in 1..=5 {
            c += &line(&sample(OURS, r, 300.0, 20_000.0));
            c += &fail(r);
        }
        c += "@@BENCH-DONE {}\n";
        let p = bench::parse_console(&c);
        let (o, outcome) = check(&p, 5).unwrap();
        assert_eq!(o.init_ms.median, 20_000.0);
        let PeerOutcome::DidNotRun(why) = outcome else {
            panic!("{outcome:?}")
        };
        assert!(why.starts_with("the VMM exited (exit status: 1)"), "{why}");
        assert!(why.ends_with("(qemu-system-aarch64: kvm_init_vcpu: kvm_arch_init_vcpu failed (0): Invalid argument)"), "{why}");
        let exit = stats::summarize(&[25_000.0; 5]).unwrap();
        let t = ours_table(&o, Some(&exit), 5);
        assert!(
            t.contains("start -> exit (ms)") && t.contains("25000.0 [25000.0..25000.0]"),
            "{t}"
        );
        // Our VMM must still be complete, and bootbench must have finished.
        let ours_missing = c.replacen(&line(&sample(OURS, 1, 300.0, 20_000.0)), "", 1);
        assert!(check(&bench::parse_console(&ours_missing), 5).is_err());
        let unfinished = c.replace("@@BENCH-DONE {}\n", "");
        assert!(check(&bench::parse_console(&unfinished), 5).is_err());
    }
}
