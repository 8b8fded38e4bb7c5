//! `cargo xtask bench adb [--runs N] [--arch A]`: `adb push` throughput through our
//! path (Debian's adb client and server, the VMM's forwarded port
//! `--vsock ...,tcp=PORT:5555`, the guest's adbd writing to its rootfs)
//! next to a raw vsock stream of the same size into the same guest
//! (`vsock-test --raw`), N rounds in one test host run (scenario
//! `bench-adb`, the guest's `adbd` scenario). Each round also pushes the
//! file to the guest's `/dev/null` (the path without the guest's file
//! writes: no target, but required like the others), streams it raw to a
//! guest file, and pushes it through `vmm adb-proxy` instead of the
//! forwarded port (both informational), and records the test host's
//! CPU ticks per step (where the time goes; the x86_64 test host has one
//! CPU, the arm64 one two).
//!
//! Prints the medians, the ratio of the medians and the median of the
//! per-round ratios adb/raw, with PASS/MISS of the latter against the
//! target ([`TARGET_RATIO`]): each round's two transfers run back to back,
//! so their ratio is what the test host's changing load (other work on
//! the machine, minutes apart) disturbs least. Writes
//! `<target dir>/bench/adb.json` (`adb-aarch64.json`). A missed target is a result; missing
//! measurements are errors. See docs/adb.md.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Result};
use bootbench::stats::{self, Summary};
use vmstack_tests::marker;

use crate::bench_host::{self, Bench, Extra, Manifest};
use crate::paths::Arch;
use crate::util::step;
use crate::{adb_client, arm64_program, lock};

/// Scenario in `prebuilts/testhost/scenarios/`.
const SCENARIO: &str = "bench-adb";
/// Bytes of each push and each raw stream.
pub const MIB: u32 = 64;
/// Rounds by default.
pub const DEFAULT_ROUNDS: u32 = 3;
/// The guest's vCPUs by default: the x86_64 test host has one CPU (`-smp 1`),
/// and with a second vCPU on it the L1 scheduler's switches between the
/// vCPU threads (each a nested world switch emulated by TCG) make single
/// rounds swing 2x either way; with one, within a few per cent.
pub const DEFAULT_GUEST_CPUS: u32 = 1;
/// Target: adb push MiB/s at least this fraction of the raw stream's.
pub const TARGET_RATIO: f64 = 0.8;
/// Test host time allowed per round (two 64 MiB transfers at ~4 MiB/s).
const PER_ROUND: Duration = Duration::from_secs(180);
/// Test host time for the guest's boot and adb's connection.
const SETUP: Duration = Duration::from_secs(120);

/// The measurements of one run: MiB/s per round of each path, and errors.
#[derive(Debug, Default, PartialEq)]
pub struct Parsed {
    /// `adb push` MiB/s by round.
    pub adb: BTreeMap<u32, f64>,
    /// Raw vsock stream MiB/s by round.
    pub raw: BTreeMap<u32, f64>,
    /// `adb push` to the guest's `/dev/null` MiB/s by round (the path
    /// without the guest's file writes; no target).
    pub null: BTreeMap<u32, f64>,
    /// Raw vsock stream whose guest receiver writes a file in the guest's
    /// rootfs, MiB/s by round (informational: no target).
    pub rawfile: BTreeMap<u32, f64>,
    /// `adb push` through `vmm adb-proxy` MiB/s by round (informational).
    pub proxy: BTreeMap<u32, f64>,
    /// Failed transfers (`<path>_<round>_error` markers).
    pub errors: Vec<String>,
    /// Where the test host's CPU went, by `<path>_<round>` (the
    /// scenario's `busy=.. idle=.. vmm=.. proxy=.. adb_server=..` ticks).
    pub cpu: BTreeMap<String, String>,
}

/// Reads the markers of the scenario's output.
pub fn parse(output: &str) -> Parsed {
    let mut p = Parsed::default();
    for m in marker::parse(output) {
        let mut parts = m.key.splitn(3, '_');
        let (Some(path), Some(round), Some(what)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let Ok(round) = round.parse::<u32>() else {
            continue;
        };
        let table = match path {
            "adb" => &mut p.adb,
            "raw" => &mut p.raw,
            "null" => &mut p.null,
            "rawfile" => &mut p.rawfile,
            "proxy" => &mut p.proxy,
            _ => continue,
        };
        match what {
            "mibps" => {
                if let Ok(v) = m.value.trim().parse::<f64>() {
                    table.insert(round, v);
                }
            }
            "error" => p.errors.push(format!("{path} round {round}: {}", m.value)),
            "cpu" => {
                p.cpu
                    .insert(format!("{path}_{round}"), m.value.trim().to_string());
            }
            _ => {}
        }
    }
    p
}

/// What a run measured.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Verdict {
    /// `adb push` MiB/s.
    pub adb: Summary,
    /// Raw vsock stream MiB/s.
    pub raw: Summary,
    /// Median adb / median raw.
    pub ratio_of_medians: f64,
    /// Per-round adb / raw.
    pub paired_ratio: Summary,
    /// `adb push` to `/dev/null` MiB/s.
    pub null: Summary,
    /// Per-round (push to `/dev/null`) / raw.
    pub null_paired_ratio: Summary,
    /// `paired_ratio.median >= TARGET_RATIO`.
    pub pass: bool,
}

/// Medians of both paths and the verdict; an error for missing rounds.
pub fn summarize(p: &Parsed, rounds: u32) -> Result<Verdict> {
    let mut problems = p.errors.clone();
    for (name, table) in [
        ("adb push", &p.adb),
        ("raw vsock", &p.raw),
        ("adb push to /dev/null", &p.null),
    ] {
        if table.len() != rounds as usize {
            problems.push(format!(
                "{name}: {} of {rounds} rounds measured",
                table.len()
            ));
        }
    }
    bench_host::check_measured(&problems)?;
    let adb = stats::summarize(&p.adb.values().copied().collect::<Vec<_>>());
    let raw = stats::summarize(&p.raw.values().copied().collect::<Vec<_>>());
    let null = stats::summarize(&p.null.values().copied().collect::<Vec<_>>());
    let per_raw = |t: &BTreeMap<u32, f64>| -> Vec<f64> {
        t.iter()
            .filter_map(|(round, a)| p.raw.get(round).map(|r| a / r))
            .collect()
    };
    let (Some(adb), Some(raw), Some(null), Some(paired_ratio), Some(null_paired_ratio)) = (
        adb,
        raw,
        null,
        stats::summarize(&per_raw(&p.adb)),
        stats::summarize(&per_raw(&p.null)),
    ) else {
        bail!("no measurements");
    };
    Ok(Verdict {
        adb,
        raw,
        ratio_of_medians: adb.median / raw.median,
        paired_ratio,
        null,
        null_paired_ratio,
        pass: paired_ratio.median >= TARGET_RATIO,
    })
}

/// Entry point of `cargo xtask bench adb [--arch A]`. x86_64: the test
/// host carries this machine's adb client (the images' own); aarch64:
/// Debian's arm64 `adb` of the same version, from the on-demand lock group
/// [`lock::ADB_CLIENT`], in the benchmark's extra initramfs.
pub fn adb(arch: Arch, rounds: u32, guest_cpus: u32) -> Result<()> {
    if rounds == 0 {
        bail!("--runs 0: at least one round is needed");
    }
    if guest_cpus == 0 {
        bail!("--guest-cpus 0: the guest needs at least one vCPU");
    }
    let images = bench_host::prepare(arch)?;
    let mut extra = None;
    let adb_pkg = match arch {
        Arch::X86_64 => format!("adb {}", bench_host::dpkg_version("adb")?),
        Arch::Aarch64 => {
            let mut e = Extra::new();
            let added = arm64_program::add_to(&mut e, &lock::ADB_CLIENT, adb_client::ADB)?;
            extra = Some(e);
            format!("{} (arm64)", added.package)
        }
    };
    let bench = Bench {
        arch,
        scenario: SCENARIO,
        append: vec![
            format!("bench.rounds={rounds}"),
            format!("bench.mib={MIB}"),
            format!("bench.cpus={guest_cpus}"),
        ],
        scenario_timeout: SETUP + PER_ROUND * rounds,
        stream: true,
    };
    step!("{rounds} round(s) of a {MIB} MiB raw vsock stream and a {MIB} MiB adb push");
    let run = bench.boot(&images, extra.as_ref())?;
    let section = bench_host::section(&run, SCENARIO)?;
    let parsed = parse(&section.output);
    let summary = summarize(&parsed, rounds);
    let m = Manifest::read(&images);
    let json_path = bench_host::write_results(
        match arch {
            Arch::X86_64 => "adb",
            Arch::Aarch64 => "adb-aarch64",
        },
        &serde_json::json!({
            "arch": arch.to_string(),
            "testhost_cpus": arch.testhost_cpus(),
            "rounds": rounds,
            "mib": MIB,
            "guest_cpus": guest_cpus,
            "unix_time": bench_host::unix_time(),
            "versions": {
                "adb_package": adb_pkg,
                "kernel_release": m.get("/kernel/release"),
                "vmm_sha256": m.get("/vmm/sha256"),
            },
            "adb_push_mibps": parsed.adb,
            "raw_vsock_mibps": parsed.raw,
            "adb_push_dev_null_mibps": parsed.null,
            "raw_vsock_to_file_mibps": parsed.rawfile,
            "adb_push_via_proxy_mibps": parsed.proxy,
            "errors": parsed.errors,
            "cpu_ticks": parsed.cpu,
            "summary": summary.as_ref().ok(),
            "target": TARGET_RATIO,
            "console_log": run.log_path.display().to_string(),
            "testhost_elapsed_s": run.elapsed.as_secs_f64(),
        }),
    )?;
    let v = summary?;
    let (adb, raw) = (v.adb, v.raw);
    println!();
    println!(
        "adb benchmark: {MIB} MiB host -> guest, {rounds} round(s), {guest_cpus} guest vCPU(s), KVM in the {arch} test host ({} CPU(s)); {adb_pkg}",
        arch.testhost_cpus()
    );
    println!(
        "  median [min..max] MiB/s: adb push {:.2} [{:.2}..{:.2}], raw vsock stream {:.2} [{:.2}..{:.2}]",
        adb.median, adb.min, adb.max, raw.median, raw.min, raw.max
    );
    println!(
        "  adb/raw per round: median {:.3} [{:.3}..{:.3}] (target >= {TARGET_RATIO}): {}; ratio of the medians {:.3}",
        v.paired_ratio.median,
        v.paired_ratio.min,
        v.paired_ratio.max,
        if v.pass { "PASS" } else { "MISS" },
        v.ratio_of_medians
    );
    println!(
        "  without the guest's file writes (push to /dev/null, no target): {:.2} [{:.2}..{:.2}] MiB/s, /dev/null/raw per round median {:.3} [{:.3}..{:.3}]",
        v.null.median,
        v.null.min,
        v.null.max,
        v.null_paired_ratio.median,
        v.null_paired_ratio.min,
        v.null_paired_ratio.max
    );
    // Informational figures (no target): each with its per-round ratio.
    let per_round = |num: &BTreeMap<u32, f64>, den: &BTreeMap<u32, f64>| -> Vec<f64> {
        num.iter()
            .filter_map(|(round, a)| den.get(round).map(|r| a / r))
            .collect()
    };
    let informational = [
        (
            "raw stream written to a guest file",
            "adb/that",
            &parsed.rawfile,
            per_round(&parsed.adb, &parsed.rawfile),
        ),
        (
            "adb push through vmm adb-proxy",
            "that/raw",
            &parsed.proxy,
            per_round(&parsed.proxy, &parsed.raw),
        ),
    ];
    for (what, ratio_name, table, ratios) in informational {
        if let (Some(t), Some(ratio)) = (
            stats::summarize(&table.values().copied().collect::<Vec<_>>()),
            stats::summarize(&ratios),
        ) {
            println!(
                "  {what} (informational, no target): {:.2} [{:.2}..{:.2}] MiB/s, {ratio_name} per round median {:.3} [{:.3}..{:.3}]",
                t.median, t.min, t.max, ratio.median, ratio.min, ratio.max
            );
        }
    }
    for (step, ticks) in &parsed.cpu {
        println!("  test host CPU ticks, {step}: {ticks}");
    }
    println!(
        "  all rounds: {}; console: {}",
        json_path.display(),
        run.log_path.display()
    );
    bench_host::check_rc(&run, section)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "\
@@vmstack:raw_1_bytes=67108864
@@vmstack:raw_1_mibps=4.0
@@vmstack:adb_1_mibps=3.60
@@vmstack:raw_2_mibps=5.0
@@vmstack:adb_2_mibps=4.50
@@vmstack:null_1_mibps=3.80
@@vmstack:null_2_mibps=5.00
@@vmstack:rawfile_1_mibps=3.90
@@vmstack:proxy_1_mibps=3.20
noise
@@vmstack:adb_1_client=/tmp/x: 1 file pushed
@@vmstack:adb_1_cpu=busy=9 idle=0 vmm=8 proxy=0 adb_server=1
";

    #[test]
    fn rounds_are_parsed_and_compared() {
        let p = parse(OUTPUT);
        assert_eq!(p.adb.len(), 2);
        assert_eq!(p.raw.get(&2), Some(&5.0));
        assert_eq!(p.rawfile.get(&1), Some(&3.9));
        assert_eq!(p.proxy.get(&1), Some(&3.2));
        assert_eq!(
            p.cpu.get("adb_1").map(String::as_str),
            Some("busy=9 idle=0 vmm=8 proxy=0 adb_server=1")
        );
        let v = summarize(&p, 2).unwrap();
        assert_eq!((v.adb.median, v.raw.median), (4.05, 4.5));
        assert!((v.ratio_of_medians - 0.9).abs() < 1e-9);
        // Rounds 3.6/4.0 and 4.5/5.0: both 0.9.
        assert!((v.paired_ratio.median - 0.9).abs() < 1e-9 && v.pass);
        // 3.8/4.0 and 5.0/5.0.
        assert!((v.null_paired_ratio.median - 0.975).abs() < 1e-9);
        let mut slow = p;
        slow.adb.insert(2, 2.0);
        assert!(!summarize(&slow, 2).unwrap().pass);
    }

    #[test]
    fn missing_or_failed_rounds_are_errors() {
        let p = parse(OUTPUT);
        let e = summarize(&p, 3).unwrap_err().to_string();
        assert!(e.contains("adb push: 2 of 3"), "{e}");
        let p = parse(
            "@@vmstack:adb_1_error=adb: error: failed\n@@vmstack:raw_1_mibps=4\n@@vmstack:null_1_mibps=4\n",
        );
        let e = summarize(&p, 1).unwrap_err().to_string();
        assert!(e.contains("adb round 1: adb: error: failed"), "{e}");
    }
}
