//! `cargo xtask bench devices [--runs N]`: virtio device throughput of our
//! VMM against peers measured in the same test host run.
//!
//! The test host (booted by the runner in `bench_host.rs` as for `bench
//! boot`, with QEMU and its libraries in an extra initramfs) runs the `bench-devices` scenario N rounds. Each
//! round measures the peers in the test host (`dd` on the disk image, a
//! plain unix socket pair with `vsock-test`), then boots the same guest
//! (`guest.scenario=bench-devices`) under our VMM and under QEMU `-M
//! microvm`, each with a virtio-blk disk on the same tmpfs image and a
//! virtio-net card on a tap; ours also gets vsock (QEMU's needs vhost-vsock,
//! so the vsock peer is the unix socket pair). Every result is a
//! `@@BDEV <who>.<metric>=<MiB/s>` line; this module takes the medians over
//! the rounds, prints ours/peer ratios with PASS/MISS against the targets,
//! and writes everything to `<target dir>/bench/devices.json`.
//!
//! A missed target is a result, not an error; missing measurements and
//! failed transfers are errors. See `docs/benchmarks.md`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{bail, Result};
use bootbench::stats::{self, Summary};
use vmstack_tests::testhost;

use crate::bench;
use crate::bench_host::{self, Bench, Manifest};
use crate::paths::Arch;
use crate::util::step;

/// Scenario in `prebuilts/testhost/scenarios/`.
const SCENARIO: &str = "bench-devices";
/// Size of the disk image and of each sequential read and write.
pub const BLK_MIB: u32 = 256;
/// Bytes of each TCP transfer (each direction).
pub const NET_MIB: u32 = 32;
/// Bytes of each vsock stream (each direction) and of the unix pair stream.
pub const VSOCK_MIB: u32 = 64;
/// Rounds by default (medians of 3; about a minute of test host time each).
pub const DEFAULT_ROUNDS: u32 = 3;
/// Test host time allowed per round.
const PER_ROUND: Duration = Duration::from_secs(420);
/// Result line prefixes.
const RESULT: &str = "@@BDEV ";
const INFO: &str = "@@BDEV-INFO ";
const DONE: &str = "@@BDEV-DONE";
/// Suffix of the guest vCPU busy percentages.
const BUSY: &str = "_guest_busy_pct";
/// Suffix of the block requests-per-MiB lines (not MiB/s).
const PER_MIB: &str = "_requests_per_mib";

/// One target: ours / peer must be at least `bound`.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// What is compared.
    pub name: &'static str,
    /// Our metric key.
    pub ours: &'static str,
    /// The peer's metric key.
    pub peer: &'static str,
    /// Lowest acceptable ratio.
    pub bound: f64,
}

/// The targets of issue 3.
pub const TARGETS: &[Target] = &[
    Target {
        name: "blk seq write vs host dd",
        ours: "ours.blk_write_mibps",
        peer: "host.blk_write_mibps",
        bound: 0.9,
    },
    Target {
        name: "blk seq read vs host dd",
        ours: "ours.blk_read_mibps",
        peer: "host.blk_read_mibps",
        bound: 0.9,
    },
    Target {
        name: "blk seq write vs QEMU microvm",
        ours: "ours.blk_write_mibps",
        peer: "qemu.blk_write_mibps",
        bound: 1.0,
    },
    Target {
        name: "blk seq read vs QEMU microvm",
        ours: "ours.blk_read_mibps",
        peer: "qemu.blk_read_mibps",
        bound: 1.0,
    },
    Target {
        name: "vsock guest->host vs unix pair",
        ours: "ours.vsock_g2h_mibps",
        peer: "unix.pair_mibps",
        bound: 0.8,
    },
    Target {
        name: "vsock host->guest vs unix pair",
        ours: "ours.vsock_h2g_mibps",
        peer: "unix.pair_mibps",
        bound: 0.8,
    },
    Target {
        name: "net TCP guest->host vs QEMU",
        ours: "ours.net_g2h_mibps",
        peer: "qemu.net_g2h_mibps",
        bound: 1.0,
    },
    Target {
        name: "net TCP host->guest vs QEMU",
        ours: "ours.net_h2g_mibps",
        peer: "qemu.net_h2g_mibps",
        bound: 1.0,
    },
];

/// The `@@BDEV*` lines of a console, grouped.
#[derive(Debug, Default)]
pub struct Parsed {
    /// Every numeric result, in order of appearance (one per round).
    pub values: BTreeMap<String, Vec<f64>>,
    /// Error results (`*_error`, non-zero `*rc`) and unparsable values.
    pub errors: Vec<String>,
    /// `@@BDEV-INFO` pairs.
    pub info: BTreeMap<String, String>,
    /// Whether `@@BDEV-DONE` was seen.
    pub done: bool,
}

/// Parses every `@@BDEV*` line of `console` (markers may follow other
/// output on the same line: guest and host share the console).
pub fn parse_console(console: &str) -> Parsed {
    let mut p = Parsed::default();
    for line in console.lines() {
        let Some(at) = line.find("@@BDEV") else {
            continue;
        };
        let line = line[at..].trim_end();
        if line.starts_with(DONE) {
            p.done = true;
        } else if let Some(kv) = line.strip_prefix(INFO) {
            if let Some((k, v)) = kv.split_once('=') {
                p.info.insert(k.to_string(), v.to_string());
            }
        } else if let Some(kv) = line.strip_prefix(RESULT) {
            let Some((k, v)) = kv.split_once('=') else {
                p.errors.push(format!("malformed line: {line}"));
                continue;
            };
            if k.ends_with("_error") || k.ends_with("rc") {
                p.errors.push(format!("{k}={v}"));
                continue;
            }
            match v.trim().parse::<f64>() {
                Ok(x) if x.is_finite() => p.values.entry(k.to_string()).or_default().push(x),
                _ => p.errors.push(format!("{k}: not a number: {v}")),
            }
        }
    }
    p
}

/// One evaluated target.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Verdict {
    /// What is compared.
    pub name: &'static str,
    /// Our median, MiB/s.
    pub ours: f64,
    /// The peer's median, MiB/s.
    pub peer: f64,
    /// ours / peer.
    pub ratio: f64,
    /// Lowest acceptable ratio.
    pub bound: f64,
    /// `ratio >= bound`.
    pub pass: bool,
}

/// Medians of every metric.
pub fn summaries(p: &Parsed) -> BTreeMap<String, Summary> {
    p.values
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), stats::summarize(v)?)))
        .collect()
}

/// The targets that have both medians.
pub fn verdicts(s: &BTreeMap<String, Summary>) -> Vec<Verdict> {
    TARGETS
        .iter()
        .filter_map(|t| {
            let ours = s.get(t.ours)?.median;
            let peer = s.get(t.peer)?.median;
            let ratio = ours / peer;
            Some(Verdict {
                name: t.name,
                ours,
                peer,
                ratio,
                bound: t.bound,
                pass: ratio >= t.bound,
            })
        })
        .collect()
}

/// Checks that every metric of every target has `rounds` values, both
/// guests finished every round, and nothing failed.
pub fn check_complete(p: &Parsed, rounds: u32) -> Result<()> {
    let mut problems: Vec<String> = p.errors.iter().map(|e| format!("error: {e}")).collect();
    let mut keys: Vec<&str> = TARGETS.iter().flat_map(|t| [t.ours, t.peer]).collect();
    keys.extend(["ours.done", "qemu.done"]);
    keys.sort_unstable();
    keys.dedup();
    for k in keys {
        let n = p.values.get(k).map_or(0, Vec::len);
        if n != rounds as usize {
            problems.push(format!("{k}: {n} of {rounds} rounds measured"));
        }
    }
    if !p.done {
        problems.push("no @@BDEV-DONE line (the scenario did not finish)".into());
    }
    bench_host::check_measured(&problems)
}

/// The result table.
pub fn table(v: &[Verdict], s: &BTreeMap<String, Summary>, rounds: u32) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "{:<32} {:>10} {:>10} {:>7} {:>7}  result",
        format!("MiB/s, median of {rounds}"),
        "ours",
        "peer",
        "ratio",
        "target"
    );
    for x in v {
        let _ = writeln!(
            t,
            "{:<32} {:>10.1} {:>10.1} {:>7.3} {:>7}  {}",
            x.name,
            x.ours,
            x.peer,
            x.ratio,
            format!(">= {:.1}", x.bound),
            if x.pass { "PASS" } else { "MISS" }
        );
    }
    let _ = writeln!(t, "all measurements (median [min..max] MiB/s):");
    for (k, m) in s {
        if k.ends_with(".done")
            || k.ends_with("size_mib")
            || k.ends_with(BUSY)
            || k.ends_with(PER_MIB)
            || k.contains(".blk_max_")
        {
            continue;
        }
        let _ = writeln!(
            t,
            "  {k:<28} {:>8.1} [{:.1}..{:.1}]",
            m.median, m.min, m.max
        );
    }
    let _ = writeln!(
        t,
        "guest vCPU busy during each transfer (median [min..max] %; ~100: the guest itself is the bottleneck):"
    );
    for (k, m) in s.iter().filter(|(k, _)| k.ends_with(BUSY)) {
        let name = k.trim_end_matches(BUSY).trim_end_matches("_mibps");
        let _ = writeln!(
            t,
            "  {name:<28} {:>8.0} [{:.0}..{:.0}]",
            m.median, m.min, m.max
        );
    }
    let _ = writeln!(
        t,
        "virtio-blk requests per MiB moved, and the guest queue limits (median [min..max]):"
    );
    for (k, m) in s
        .iter()
        .filter(|(k, _)| k.ends_with(PER_MIB) || k.contains(".blk_max_"))
    {
        let _ = writeln!(
            t,
            "  {k:<28} {:>8.2} [{:.2}..{:.2}]",
            m.median, m.min, m.max
        );
    }
    t
}

/// `cargo xtask bench devices [--runs N]`.
pub fn devices(rounds: u32) -> Result<()> {
    if rounds == 0 {
        bail!("--runs 0: at least one round is needed");
    }
    let images = bench_host::prepare(Arch::X86_64)?;
    let qemu_pkg = bench_host::dpkg_version("qemu-system-x86")?;
    let extra = bench::qemu_peer_extra(&format!("qemu-system-x86 {qemu_pkg}\n"))?;
    let bench = Bench {
        arch: Arch::X86_64,
        scenario: SCENARIO,
        append: vec![
            format!("bench.rounds={rounds}"),
            format!("bench.blk_mib={BLK_MIB}"),
            format!("bench.net_mib={NET_MIB}"),
            format!("bench.vsock_mib={VSOCK_MIB}"),
        ],
        scenario_timeout: PER_ROUND * rounds + Duration::from_secs(60),
        stream: true,
    };
    step!("{rounds} round(s), blk {BLK_MIB} MiB, net {NET_MIB} MiB, vsock {VSOCK_MIB} MiB");
    let run = bench.boot(&images, Some(&extra))?;
    let section = run.scenario(SCENARIO);
    let parsed = parse_console(section.map(|s| s.output.as_str()).unwrap_or(""));
    let sums = summaries(&parsed);
    let verdict_list = verdicts(&sums);

    let m = Manifest::read(&images);
    let json_path = bench_host::write_results(
        "devices",
        &serde_json::json!({
            "rounds": rounds,
            "sizes_mib": { "blk": BLK_MIB, "net": NET_MIB, "vsock": VSOCK_MIB },
            "unix_time": bench_host::unix_time(),
            "versions": {
                "qemu_package": format!("qemu-system-x86 {qemu_pkg}"),
                "kernel_release": m.get("/kernel/release"),
                "kernel_package": format!("{} {}", m.get("/kernel/package"), m.get("/kernel/version")),
                "vmm_sha256": m.get("/vmm/sha256"),
                "testhost_qemu": format!("qemu-system-x86 {}", m.get("/testhost_qemu/version")),
                "testhost_cpu": testhost_cpu(),
            },
            "info": parsed.info,
            "values": parsed.values,
            "summary": sums,
            "verdicts": verdict_list,
            "errors": parsed.errors,
            "console_log": run.log_path.display().to_string(),
            "testhost_elapsed_s": run.elapsed.as_secs_f64(),
        }),
    )?;

    println!();
    println!(
        "device benchmark: our VMM vs QEMU -M microvm and host peers, 1 vCPU / 256 MiB guests, nested KVM in the test host"
    );
    println!(
        "  kernel {} ({}); peer QEMU qemu-system-x86 {qemu_pkg}; test host QEMU {} -cpu {}; {}",
        m.get("/kernel/release"),
        m.get("/kernel/version"),
        m.get("/testhost_qemu/version"),
        testhost_cpu(),
        parsed.info.get("sizes").map(String::as_str).unwrap_or("?")
    );
    print!("{}", table(&verdict_list, &sums, rounds));
    for (k, v) in parsed.info.iter().filter(|(k, _)| k.ends_with(".cpu")) {
        println!("  CPU seconds, {k} (last round, whole VMM run): {v}");
    }
    println!(
        "  test host run {:.1} s (timed out: {})",
        run.elapsed.as_secs_f64(),
        run.timed_out
    );
    println!(
        "  all values: {}; console: {}",
        json_path.display(),
        run.log_path.display()
    );

    let section = bench_host::section(&run, SCENARIO)?;
    bench_host::check_run(&run, section, check_complete(&parsed, rounds))
}

/// The test host's CPU model as the runner passes it to QEMU.
fn testhost_cpu() -> String {
    testhost::cpu_override(Arch::X86_64).unwrap_or_else(|| testhost::TESTHOST_CPU.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn console(rounds: u32) -> String {
        let mut c = String::from("@@BDEV-INFO sizes=blk:256MiB\nnoise\n");
        for r in 0..rounds {
            let x = f64::from(r);
            for (k, v) in [
                ("host.blk_write_mibps", 400.0 + x),
                ("host.blk_read_mibps", 800.0),
                ("unix.pair_mibps", 300.0),
                ("ours.blk_write_mibps", 380.0),
                ("ours.blk_read_mibps", 500.0),
                ("ours.net_g2h_mibps", 3.0),
                ("ours.net_h2g_mibps", 10.0),
                ("ours.vsock_g2h_mibps", 20.0),
                ("ours.vsock_h2g_mibps", 5.0),
                ("ours.done", 1.0),
                ("ours.blk_read_mibps_guest_busy_pct", 97.0),
                ("qemu.blk_write_mibps", 200.0),
                ("qemu.blk_read_mibps", 600.0),
                ("qemu.net_g2h_mibps", 2.0),
                ("qemu.net_h2g_mibps", 12.0),
                ("qemu.done", 1.0),
            ] {
                // Guest lines can follow other console output.
                c.push_str(&format!("[  1.0] x @@BDEV {k}={v}\n"));
            }
        }
        c.push_str("@@BDEV-DONE\n");
        c
    }

    #[test]
    fn complete_run_evaluated() {
        let p = parse_console(&console(3));
        check_complete(&p, 3).unwrap();
        assert_eq!(p.info["sizes"], "blk:256MiB");
        let s = summaries(&p);
        assert_eq!(s["host.blk_write_mibps"].median, 401.0);
        let v = verdicts(&s);
        assert_eq!(v.len(), TARGETS.len());
        let by = |n: &str| v.iter().find(|x| x.name == n).unwrap().clone();
        let w = by("blk seq write vs host dd");
        assert!((w.ratio - 380.0 / 401.0).abs() < 1e-9 && w.pass);
        assert!(!by("blk seq read vs host dd").pass);
        assert!(by("blk seq write vs QEMU microvm").pass);
        assert!(!by("blk seq read vs QEMU microvm").pass);
        assert!(!by("vsock host->guest vs unix pair").pass);
        assert!(by("net TCP guest->host vs QEMU").pass);
        assert!(!by("net TCP host->guest vs QEMU").pass);
        let t = table(&v, &s, 3);
        assert!(t.contains("PASS") && t.contains("MISS") && t.contains("0.948"));
        assert!(
            t.contains("ours.blk_read") && t.contains("97 [97..97]"),
            "{t}"
        );
    }

    #[test]
    fn missing_or_failed_measurements_are_errors() {
        let mut c = console(2);
        c.push_str("@@BDEV qemu.net_g2h_error=nc_failed\n@@BDEV ours.vmm_rc=1\n");
        let p = parse_console(&c);
        let e = check_complete(&p, 3).unwrap_err().to_string();
        assert!(e.contains("ours.blk_read_mibps: 2 of 3"), "{e}");
        assert!(e.contains("qemu.net_g2h_error=nc_failed"), "{e}");
        assert!(e.contains("ours.vmm_rc=1"), "{e}");
        let no_done = console(1).replace("@@BDEV-DONE\n", "");
        assert!(check_complete(&parse_console(&no_done), 1).is_err());
        assert!(parse_console("@@BDEV x.y=abc\n").errors.len() == 1);
    }
}
