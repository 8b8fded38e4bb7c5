//! `cargo xtask bench boot --arch aarch64`: our VMM's boot time and memory in
//! the arm64 pKVM test host, median of at least five boots.
//!
//! No peer VMM runs there (QEMU would have to be carried into the arm64 host
//! with its arm64 libraries). The `bench-boot-arm64` scenario boots the
//! guest N times (1 vCPU, 256 MiB, `quiet`; after `/init` the guest prints
//! its kernel log and powers off) and prints per boot the guest's
//! timestamped console lines (`@@BOOTLOG <run> <line>`) and one
//! `@@BENCH-ARM64` line: the VMM's own start→first KVM_RUN and
//! start→boot-timer times, spawn→exit from `/proc/uptime`, and the VMM's RSS
//! with the guest RAM mapping's share at `/init`. This module parses them,
//! prints medians and the guest boot profile (milestones on the guest's
//! clock, time outside it; `bench_profile.rs`) and writes
//! `target/bench/boot-aarch64.json`.
//! See docs/arm64.md.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use bootbench::stats::{self, Summary};

use crate::bench::MIN_RUNS;
use crate::bench_host::{self, Bench};
use crate::bench_profile;
use crate::paths::Arch;
use crate::util::step;

/// Scenario in `prebuilts/testhost/scenarios/`.
const SCENARIO: &str = "bench-boot-arm64";
/// Prefix of one boot's line.
const PREFIX: &str = "@@BENCH-ARM64 ";
/// Prefix of a guest console line of a boot: `@@BOOTLOG <run> <line>`.
const LOG_PREFIX: &str = "@@BOOTLOG ";
/// Time allowed per boot inside the arm64 test host (boot, the guest's log
/// dump, power-off).
const PER_BOOT: Duration = Duration::from_secs(210);

/// One measured boot.
#[derive(Debug, Clone, PartialEq)]
pub struct ArmSample {
    /// Boot number (1-based).
    pub run: u32,
    /// VMM start to its first KVM_RUN, ms.
    pub entry_ms: f64,
    /// VMM start to the guest's boot-timer write (`/init`), ms.
    pub init_ms: f64,
    /// Spawn to process exit, ms (10 ms resolution).
    pub exit_ms: f64,
    /// Resident memory at `/init`, KiB.
    pub rss_kib: u64,
    /// Of which guest RAM, KiB.
    pub guest_kib: u64,
}

impl ArmSample {
    /// RSS minus guest RAM: what the VMM itself costs.
    pub fn overhead_kib(&self) -> u64 {
        self.rss_kib.saturating_sub(self.guest_kib)
    }
}

/// Parses one `@@BENCH-ARM64 k=v ...` line; an error names what is missing
/// (a boot that failed reports `none` values or a non-zero `rc`).
pub fn parse_line(line: &str) -> Result<ArmSample> {
    let rest = line
        .split_once(PREFIX)
        .map(|(_, r)| r)
        .with_context(|| format!("not a {PREFIX}line: {line}"))?;
    let field = |key: &str| -> Result<&str> {
        rest.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
            .with_context(|| format!("{key} missing in: {line}"))
    };
    let num = |key: &str| -> Result<u64> {
        let v = field(key)?;
        v.parse()
            .with_context(|| format!("{key}={v} is not a measurement in: {line}"))
    };
    let run = num("run")? as u32;
    let rc = num("rc")?;
    if rc != 0 {
        bail!("boot {run}: the VMM exited with {rc} (not a guest poweroff)");
    }
    let sample = ArmSample {
        run,
        entry_ms: num("entry_us")? as f64 / 1000.0,
        init_ms: num("init_us")? as f64 / 1000.0,
        exit_ms: num("exit_ms")? as f64,
        rss_kib: num("rss_kib")?,
        guest_kib: num("guest_kib")?,
    };
    if !(sample.entry_ms <= sample.init_ms && sample.init_ms <= sample.exit_ms + 10.0) {
        bail!("boot {run}: times out of order in: {line}");
    }
    if sample.guest_kib > sample.rss_kib {
        bail!("boot {run}: guest RSS above total RSS in: {line}");
    }
    Ok(sample)
}

/// Every boot of a scenario section; fails unless there are `runs` good ones.
pub fn parse_section(output: &str, runs: u32) -> Result<Vec<ArmSample>> {
    let samples = output
        .lines()
        .filter(|l| l.contains(PREFIX))
        .map(parse_line)
        .collect::<Result<Vec<_>>>()?;
    if samples.len() != runs as usize {
        bail!("{} of {runs} boots reported", samples.len());
    }
    Ok(samples)
}

/// The guest console of boot `run` (its `@@BOOTLOG <run> ` lines, prefix off).
pub fn boot_log(output: &str, run: u32) -> String {
    let tag = format!("{run} ");
    output
        .lines()
        .filter_map(|l| l.split_once(LOG_PREFIX)?.1.strip_prefix(tag.as_str()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The boot-profile column of our VMM's boots.
pub fn profile_column(output: &str, samples: &[ArmSample]) -> bench_profile::Column {
    bench_profile::Column {
        name: "ours (Image)".into(),
        boots: samples
            .iter()
            .map(|s| {
                let p = bootbench::profile::parse(&boot_log(output, s.run));
                bench_profile::Boot {
                    entry_ms: s.entry_ms,
                    init_ms: s.init_ms,
                    exit_ms: Some(s.exit_ms),
                    profile: (p.lines > 0).then_some(p),
                }
            })
            .collect(),
    }
}

fn summary(samples: &[ArmSample], f: fn(&ArmSample) -> f64) -> Result<Summary> {
    stats::summarize(&samples.iter().map(f).collect::<Vec<_>>()).context("no finite measurements")
}

/// `cargo xtask bench boot --arch aarch64 [--runs N]`.
pub fn boot(runs: u32) -> Result<()> {
    if runs < MIN_RUNS {
        bail!("--runs must be at least {MIN_RUNS} for a meaningful median");
    }
    let images = bench_host::prepare(Arch::Aarch64)?;
    let bench = Bench {
        arch: Arch::Aarch64,
        scenario: SCENARIO,
        append: vec![format!("bench.runs={runs}")],
        scenario_timeout: PER_BOOT * runs,
        stream: false,
    };
    let run = bench.boot(&images, None)?;
    let section = bench_host::section(&run, SCENARIO)?;
    let samples = parse_section(&section.output, runs)
        .with_context(|| format!("full console: {}", run.log_path.display()))?;
    let entry = summary(&samples, |s| s.entry_ms)?;
    let init = summary(&samples, |s| s.init_ms)?;
    let exit = summary(&samples, |s| s.exit_ms)?;
    let overhead = summary(&samples, |s| s.overhead_kib() as f64 / 1024.0)?;
    let rss = summary(&samples, |s| s.rss_kib as f64 / 1024.0)?;
    let row = |name: &str, s: &Summary, unit: &str| {
        format!(
            "  {name:<28} median {:>9.1} {unit}  (min {:.1}, max {:.1}, n={})",
            s.median, s.min, s.max, s.n
        )
    };
    let table = [
        "boot benchmark (aarch64): our VMM in the arm64 pKVM test host, 1 vCPU / 256 MiB"
            .to_string(),
        row("start -> first KVM_RUN", &entry, "ms"),
        row("start -> guest /init", &init, "ms"),
        row("start -> exit (poweroff)", &exit, "ms"),
        row("RSS at /init", &rss, "MiB"),
        row("RSS minus guest RAM", &overhead, "MiB"),
    ]
    .join("\n");
    println!("{table}");
    let columns = [profile_column(&section.output, &samples)];
    println!();
    print!("{}", bench_profile::table(&columns));
    let out = bench_host::write_results(
        "boot-aarch64",
        &serde_json::json!({
            "arch": "aarch64",
            "runs": runs,
            "test_host_seconds": run.elapsed.as_secs_f64(),
            "console_log": run.log_path.display().to_string(),
            "median_ms": { "first_entry": entry.median, "init": init.median, "exit": exit.median },
            "median_mib": { "rss": rss.median, "overhead": overhead.median },
            "guest_profile": bench_profile::json(&columns),
            "samples": samples.iter().map(|s| serde_json::json!({
                "run": s.run, "entry_ms": s.entry_ms, "init_ms": s.init_ms, "exit_ms": s.exit_ms,
                "rss_kib": s.rss_kib, "guest_kib": s.guest_kib,
            })).collect::<Vec<_>>(),
        }),
    )?;
    step!(
        "test host run {:.1} s; results in {}",
        run.elapsed.as_secs_f64(),
        out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "@@BENCH-ARM64 run=2 entry_us=363422 init_us=21689800 exit_ms=23450 \
                        rss_kib=70000 guest_kib=60000 rc=0";

    #[test]
    fn a_boot_line_is_parsed() {
        let s = parse_line(GOOD).unwrap();
        assert_eq!(s.run, 2);
        assert!((s.entry_ms - 363.422).abs() < 1e-9);
        assert!((s.init_ms - 21689.8).abs() < 1e-9);
        assert_eq!(s.exit_ms, 23450.0);
        assert_eq!(s.overhead_kib(), 10000);
    }

    #[test]
    fn failed_or_inconsistent_boots_are_errors() {
        let none = GOOD.replace("init_us=21689800", "init_us=none");
        assert!(parse_line(&none)
            .unwrap_err()
            .to_string()
            .contains("init_us=none"));
        let rc = GOOD.replace("rc=0", "rc=33");
        assert!(parse_line(&rc).unwrap_err().to_string().contains("33"));
        let order = GOOD.replace("exit_ms=23450", "exit_ms=100");
        assert!(parse_line(&order).is_err());
        let rss = GOOD.replace("guest_kib=60000", "guest_kib=80000");
        assert!(parse_line(&rss).is_err());
        assert!(parse_line("@@BENCH-ARM64 run=1").is_err());
    }

    #[test]
    fn boot_logs_are_split_per_run_and_profiled() {
        let text = format!(
            "@@BOOTLOG 1 [    0.000000] Booting Linux on physical CPU 0x0\n\
             @@BOOTLOG 1 [   11.361103] Run /init as init process\n\
             @@BOOTLOG 12 [    9.0] Run /init as init process\n\
             [    3.0] a test host line\n\
             @@BOOTLOG 1 [   13.052032] reboot: Power down\n{GOOD}\n"
        );
        assert_eq!(boot_log(&text, 1).lines().count(), 3);
        assert_eq!(boot_log(&text, 12).lines().count(), 1);
        let mut s = parse_line(GOOD).unwrap();
        s.run = 1;
        let col = profile_column(&text, &[s]);
        let p = col.boots[0].profile.as_ref().unwrap();
        assert_eq!(p.at("run-init"), Some(11.361103));
        // exit 23450 ms - last line 13052.032 ms.
        let outside = col.boots[0].outside_ms().unwrap();
        assert!((outside - 10397.968).abs() < 1e-6, "{outside}");
    }

    #[test]
    fn a_section_needs_every_boot() {
        let text = format!("noise\n{GOOD}\n{}\n", GOOD.replace("run=2", "run=3"));
        assert_eq!(parse_section(&text, 2).unwrap().len(), 2);
        assert!(parse_section(&text, 5).is_err());
    }
}
