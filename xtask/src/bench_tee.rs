//! `cargo xtask bench tee [--runs R]`: the round trip of one invocation
//! with a 4 KiB memory reference through virtio-tee (`/dev/tee0` → our
//! device → `trustyd`'s echo TA), next to libtrusty's echo over vsock and
//! a raw vsock echo (the guest's vsock → our VMM → a unix socket echo
//! server in the test host), all measured in the same guest in the same
//! run.
//!
//! The test host (booted by the runner in `bench_host.rs`, no extra
//! initramfs: `trustyd`, `vsock-test` and the guest tools are in the
//! images) runs the `bench-tee` scenario: R rounds, each timing N round
//! trips of every path in a rotating order. Every sample is a marker
//! (`vmm.guest.<path>_r<k>_us`, comma-separated microseconds); this module
//! pools them per path, prints p50/p99 and the ratios to the raw echo with
//! PASS/MISS against the target (virtio-tee at most 2x the raw echo), and
//! writes everything to `<target dir>/bench/tee.json`.
//!
//! A missed target is a result, not an error; missing samples, a failed
//! round trip or a scenario that did not finish are errors. See
//! `docs/benchmarks.md`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{bail, Result};
use vmstack_tests::marker;

use crate::bench_host::{self, Bench, Manifest};
use crate::paths::Arch;
use crate::util::step;

/// Scenario in `prebuilts/testhost/scenarios/` (and the guest's).
const SCENARIO: &str = "bench-tee";
/// Rounds by default.
pub const DEFAULT_ROUNDS: u32 = 5;
/// Timed round trips per path and round.
pub const ROUND_TRIPS: u32 = 200;
/// Bytes of the memory reference (virtio-tee) and of the raw echo; the
/// libtrusty path sends its largest message, 3840 bytes.
pub const SIZE: u32 = 4096;
/// Target: virtio-tee's round trip at most this many times the raw echo's.
pub const TARGET_RATIO: f64 = 2.0;
/// Test host time for the guest's boot and the set-up.
const BASE_TIME: Duration = Duration::from_secs(180);
/// Test host time allowed per round (3 x 200 round trips of a few ms).
const PER_ROUND: Duration = Duration::from_secs(90);
/// The key prefix of the guest's markers.
const GUEST: &str = "vmm.guest.";

/// The paths measured: marker name and what it is.
pub const PATHS: &[(&str, &str)] = &[
    ("raw", "raw vsock echo (4 KiB)"),
    ("tee", "virtio-tee invoke, 4 KiB memref in + out"),
    ("trusty", "libtrusty echo over vsock (3840 B)"),
];

/// The markers of one run, grouped.
#[derive(Debug, Default)]
pub struct Parsed {
    /// Per path, per round number: the samples in microseconds.
    pub samples: BTreeMap<String, BTreeMap<u32, Vec<u64>>>,
    /// Failures: tool errors, non-zero exit statuses, unparsable samples.
    pub errors: Vec<String>,
    /// Whether the guest finished every round.
    pub done: bool,
    /// The scenario's `bench_info`.
    pub info: String,
}

/// `<path>_r<round>_us` → `(path, round)`.
fn sample_key(key: &str) -> Option<(&str, u32)> {
    let rest = key.strip_prefix(GUEST)?.strip_suffix("_us")?;
    let (path, round) = rest.rsplit_once("_r")?;
    Some((path, round.parse().ok()?))
}

/// Whether marker `key=value` reports a failure: a tool's error, a
/// missing socket, a non-zero exit status.
fn failed(key: &str, value: &str) -> bool {
    key.ends_with("_error")
        || key == "trustyd_no_socket"
        || ((key.ends_with(".rc") || key.ends_with("_rc")) && value != "0")
}

/// Parses the markers of the scenario's section.
pub fn parse(output: &str) -> Parsed {
    let mut p = Parsed::default();
    for m in marker::parse(output) {
        if let Some((path, round)) = sample_key(m.key) {
            let values: Result<Vec<u64>, _> = m.value.split(',').map(str::parse).collect();
            match values {
                Ok(v) => p
                    .samples
                    .entry(path.to_string())
                    .or_default()
                    .entry(round)
                    .or_default()
                    .extend(v),
                Err(_) => p.errors.push(format!("{}: not numbers", m.key)),
            }
        } else if failed(m.key, m.value) {
            p.errors.push(format!("{}={}", m.key, m.value));
        } else if m.key == "vmm.guest.bench_tee_done" {
            p.done = true;
        } else if m.key == "bench_info" {
            p.info = m.value.to_string();
        }
    }
    p
}

/// Percentiles of one path over every round.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PathStats {
    /// Marker name of the path.
    pub path: &'static str,
    /// Samples.
    pub n: usize,
    /// Median, microseconds.
    pub p50_us: u64,
    /// 99th percentile, microseconds.
    pub p99_us: u64,
    /// Fastest, microseconds.
    pub min_us: u64,
    /// Slowest, microseconds.
    pub max_us: u64,
}

/// The `p`-th percentile of sorted `v` by nearest rank (the guest tools'
/// definition).
fn percentile(v: &[u64], p: u64) -> u64 {
    let rank = (p * v.len() as u64).div_ceil(100).max(1) as usize;
    v.get(rank - 1).copied().unwrap_or(0)
}

/// The statistics of every path that has samples.
pub fn stats(p: &Parsed) -> Vec<PathStats> {
    PATHS
        .iter()
        .filter_map(|(path, _)| {
            let mut v: Vec<u64> = p.samples.get(*path)?.values().flatten().copied().collect();
            if v.is_empty() {
                return None;
            }
            v.sort_unstable();
            Some(PathStats {
                path,
                n: v.len(),
                p50_us: percentile(&v, 50),
                p99_us: percentile(&v, 99),
                min_us: v[0],
                max_us: v[v.len() - 1],
            })
        })
        .collect()
}

/// One path's percentile against the raw echo's.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Ratio {
    /// The path compared.
    pub path: &'static str,
    /// `p50` or `p99`.
    pub percentile: &'static str,
    /// The path's value / the raw echo's.
    pub ratio: f64,
    /// Whether this row has a target (virtio-tee), and whether it is met.
    pub pass: Option<bool>,
}

/// Ratios of every other path to the raw echo, at p50 and p99.
pub fn ratios(s: &[PathStats]) -> Vec<Ratio> {
    let Some(raw) = s.iter().find(|x| x.path == "raw") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for x in s.iter().filter(|x| x.path != "raw") {
        for (name, ours, base) in [("p50", x.p50_us, raw.p50_us), ("p99", x.p99_us, raw.p99_us)] {
            let ratio = ours as f64 / base.max(1) as f64;
            out.push(Ratio {
                path: x.path,
                percentile: name,
                ratio,
                pass: (x.path == "tee").then_some(ratio <= TARGET_RATIO),
            });
        }
    }
    out
}

/// Checks that every path has `rounds` rounds of `n` samples, the guest
/// finished, and nothing failed.
pub fn check_complete(p: &Parsed, rounds: u32, n: u32) -> Result<()> {
    let mut problems: Vec<String> = p.errors.iter().map(|e| format!("error: {e}")).collect();
    for (path, _) in PATHS {
        for r in 1..=rounds {
            let got = p
                .samples
                .get(*path)
                .and_then(|m| m.get(&r))
                .map_or(0, Vec::len);
            if got != n as usize {
                problems.push(format!("{path} round {r}: {got} of {n} samples"));
            }
        }
    }
    if !p.done {
        problems.push("no vmm.guest.bench_tee_done marker (the guest did not finish)".into());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        bail!(
            "missing or failed measurements:\n  {}",
            problems.join("\n  ")
        )
    }
}

/// The result table.
pub fn table(s: &[PathStats], r: &[Ratio]) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "{:<44} {:>6} {:>9} {:>9} {:>9} {:>9}",
        "round trip (µs)", "n", "p50", "p99", "min", "max"
    );
    for x in s {
        let what = PATHS
            .iter()
            .find(|(p, _)| *p == x.path)
            .map_or(x.path, |(_, w)| w);
        let _ = writeln!(
            t,
            "{what:<44} {:>6} {:>9} {:>9} {:>9} {:>9}",
            x.n, x.p50_us, x.p99_us, x.min_us, x.max_us
        );
    }
    let _ = writeln!(
        t,
        "{:<44} {:>9} {:>9}  result",
        "ratio to the raw vsock echo", "ratio", "target"
    );
    for x in r {
        let (target, result) = match x.pass {
            Some(pass) => (
                format!("<= {TARGET_RATIO:.1}"),
                if pass { "PASS" } else { "MISS" },
            ),
            None => ("-".to_string(), "-"),
        };
        let _ = writeln!(
            t,
            "{:<44} {:>9.2} {:>9}  {result}",
            format!("{} {}", x.path, x.percentile),
            x.ratio,
            target
        );
    }
    t
}

/// `cargo xtask bench tee [--runs R]`.
pub fn tee(rounds: u32) -> Result<()> {
    if rounds == 0 {
        bail!("--runs 0: at least one round is needed");
    }
    let images = bench_host::prepare(Arch::X86_64)?;
    let bench = Bench {
        arch: Arch::X86_64,
        scenario: SCENARIO,
        append: vec![
            format!("bench.rounds={rounds}"),
            format!("bench.n={ROUND_TRIPS}"),
            format!("bench.size={SIZE}"),
        ],
        scenario_timeout: BASE_TIME + PER_ROUND * rounds,
        stream: true,
    };
    step!("{rounds} round(s) of {ROUND_TRIPS} round trips per path, {SIZE} bytes");
    let run = bench.boot(&images, None)?;
    let section = bench_host::section(&run, SCENARIO)?;
    let parsed = parse(&section.output);
    let path_stats = stats(&parsed);
    let ratio_list = ratios(&path_stats);

    let m = Manifest::read(&images);
    let json_path = bench_host::write_results(
        "tee",
        &serde_json::json!({
            "rounds": rounds,
            "round_trips_per_round": ROUND_TRIPS,
            "size": SIZE,
            "unix_time": bench_host::unix_time(),
            "info": parsed.info,
            "versions": {
                "kernel_release": m.get("/kernel/release"),
                "kernel_package": format!("{} {}", m.get("/kernel/package"), m.get("/kernel/version")),
                "vmm_sha256": m.get("/vmm/sha256"),
                "testhost_qemu": format!("qemu-system-x86 {}", m.get("/testhost_qemu/version")),
            },
            "samples_us": parsed.samples,
            "stats": path_stats,
            "ratios": ratio_list,
            "errors": parsed.errors,
            "console_log": run.log_path.display().to_string(),
            "testhost_elapsed_s": run.elapsed.as_secs_f64(),
        }),
    )?;

    println!();
    println!(
        "TEE benchmark: invoke round trips through virtio-tee and libtrusty-over-vsock vs a raw vsock echo; \
         one 1 vCPU / 256 MiB guest, nested KVM in the test host"
    );
    println!(
        "  kernel {} ({}); {rounds} round(s) x {ROUND_TRIPS} round trips per path, order rotating per round",
        m.get("/kernel/release"),
        m.get("/kernel/version"),
    );
    print!("{}", table(&path_stats, &ratio_list));
    println!(
        "  test host run {:.1} s (timed out: {}); all samples: {}; console: {}",
        run.elapsed.as_secs_f64(),
        run.timed_out,
        json_path.display(),
        run.log_path.display()
    );
    if let Err(e) = check_complete(&parsed, rounds, ROUND_TRIPS) {
        bail!(
            "{e:#}\n(scenario rc={:?}; console {})",
            section.rc,
            run.log_path.display()
        );
    }
    bench_host::check_rc(&run, section)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn console(rounds: u32, n: u32) -> String {
        console_with(rounds, n, 150)
    }

    fn console_with(rounds: u32, n: u32, tee_base: u64) -> String {
        let mut c = String::from("@@vmstack:bench_info=rounds=2\nnoise\n");
        for r in 1..=rounds {
            for (path, base) in [("raw", 100u64), ("tee", tee_base), ("trusty", 400)] {
                let v: Vec<String> = (0..u64::from(n)).map(|i| (base + i).to_string()).collect();
                c.push_str(&format!("@@vmstack:vmm.guest.{path}_r{r}_n={n}\n"));
                c.push_str(&format!(
                    "@@vmstack:vmm.guest.{path}_r{r}_us={}\n",
                    v.join(",")
                ));
            }
        }
        c.push_str(
            "@@vmstack:vmm.guest.bench_tee_done=1\n@@vmstack:vmm.rc=0\n@@vmstack:trustyd_rc=0\n",
        );
        c
    }

    #[test]
    fn complete_run_evaluated() {
        let p = parse(&console(2, 100));
        check_complete(&p, 2, 100).unwrap();
        assert_eq!(p.info, "rounds=2");
        let s = stats(&p);
        assert_eq!(s.len(), 3);
        let raw = &s[0];
        assert_eq!(
            (raw.n, raw.p50_us, raw.p99_us, raw.min_us, raw.max_us),
            (200, 149, 198, 100, 199)
        );
        let r = ratios(&s);
        let tee_p50 = r
            .iter()
            .find(|x| x.path == "tee" && x.percentile == "p50")
            .unwrap();
        assert!((tee_p50.ratio - 199.0 / 149.0).abs() < 1e-9);
        assert_eq!(tee_p50.pass, Some(true));
        let trusty_p50 = r
            .iter()
            .find(|x| x.path == "trusty" && x.percentile == "p50")
            .unwrap();
        assert_eq!(trusty_p50.pass, None, "no target for libtrusty");
        let t = table(&s, &r);
        assert!(t.contains("PASS") && t.contains("1.34"), "{t}");
    }

    #[test]
    fn a_slow_tee_path_is_a_miss_not_an_error() {
        let p = parse(&console_with(1, 10, 900));
        check_complete(&p, 1, 10).unwrap();
        let r = ratios(&stats(&p));
        assert!(r.iter().any(|x| x.path == "tee" && x.pass == Some(false)));
    }

    #[test]
    fn missing_or_failed_measurements_are_errors() {
        let p = parse(&console(1, 10));
        let e = check_complete(&p, 2, 10).unwrap_err().to_string();
        assert!(e.contains("raw round 2: 0 of 10"), "{e}");
        let c = console(1, 10)
            + "@@vmstack:vmm.guest.tee_r2_error=TEE_IOC_INVOKE failed\n@@vmstack:vmm.rc=1\n";
        let e = check_complete(&parse(&c), 1, 10).unwrap_err().to_string();
        assert!(e.contains("tee_r2_error") && e.contains("vmm.rc=1"), "{e}");
        let no_done = console(1, 10).replace("@@vmstack:vmm.guest.bench_tee_done=1\n", "");
        assert!(check_complete(&parse(&no_done), 1, 10).is_err());
        assert_eq!(parse("@@vmstack:vmm.guest.raw_r1_us=1,x\n").errors.len(), 1);
        assert_eq!(sample_key("vmm.guest.trusty_r12_us"), Some(("trusty", 12)));
        assert_eq!(sample_key("vmm.guest.trusty_r12_n"), None);
    }
}
