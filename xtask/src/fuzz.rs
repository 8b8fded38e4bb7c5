//! `cargo xtask fuzz [TARGET] [--runs N] [--max-time SECS]`: build the
//! cargo-fuzz targets in `fuzz/` with nightly and run each one.
//!
//! The default is a smoke run (a few thousand executions per target); the
//! acceptance figure is `--runs 1000000`. Each target runs with libFuzzer's
//! `-runs=N`, `-max_total_time` as a guard and a 10 s per-input timeout (a
//! hang is a finding too), on its corpus in `fuzz/corpus/<target>`; a crash,
//! hang or out-of-memory leaves the input in `fuzz/artifacts/<target>/` and
//! fails the command. See `docs/fuzzing.md`.

use std::fmt::Write as _;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::paths;
use crate::util::{self, step};

/// libFuzzer flags one target needs. `sysmgr_rpc` keeps a live RPC server
/// whose connection threads outlive each input: their thread-local
/// destructor records (`__cxa_thread_atexit_impl`) are freed only at thread
/// exit, which LeakSanitizer's per-input check reports as a leak; its
/// oracles are panics, hangs and the liveness probe instead.
fn extra_flags(target: &str) -> &'static [&'static str] {
    match target {
        "sysmgr_rpc" => &["-detect_leaks=0"],
        _ => &[],
    }
}

/// Every fuzz target (`fuzz/fuzz_targets/<name>.rs`).
pub const TARGETS: &[&str] = &[
    "block",
    "vsock",
    "net",
    "rng",
    "console",
    "mmio",
    "tee",
    "tee_parser",
    "trusty_framing",
    "trusty_storage",
    "trusty_gatekeeper",
    "trusty_hwkey",
    "trusty_tee",
    "control",
    "sysmgr_rpc",
    "adbd",
    "vsock_connect",
    "mcu",
    "vhal_lines",
    "legacy",
];
/// Executions per target of the default smoke run.
pub const SMOKE_RUNS: u64 = 5000;
/// Per-input time limit: an input that runs longer is reported as a hang.
const INPUT_TIMEOUT_S: u64 = 10;

/// `cargo` of the nightly toolchain (through rustup, whatever toolchain
/// runs xtask), in `fuzz/`.
fn nightly_cargo() -> Command {
    let mut c = Command::new("rustup");
    c.args(["run", "nightly", "cargo"])
        .current_dir(paths::workspace_root().join("fuzz"))
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO")
        .env_remove("RUSTC");
    c
}

/// Checks for nightly and cargo-fuzz (installing cargo-fuzz if missing).
fn ensure_tools() -> Result<()> {
    if !util::on_path("rustup") {
        bail!("cargo xtask fuzz needs rustup and a nightly toolchain (rustup toolchain install nightly)");
    }
    let ok = |c: &mut Command| {
        c.stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !ok(nightly_cargo().arg("--version")) {
        bail!("no nightly toolchain: install it with `rustup toolchain install nightly` (cargo-fuzz needs nightly for the sanitizer and coverage flags)");
    }
    if !ok(nightly_cargo().args(["fuzz", "--version"])) {
        step!("cargo-fuzz missing: run: cargo install cargo-fuzz --locked");
        util::run(nightly_cargo().args(["install", "cargo-fuzz", "--locked"]))
            .context("installing cargo-fuzz failed")?;
    }
    Ok(())
}

/// What one libFuzzer run reported.
#[derive(Debug, Clone, PartialEq)]
pub struct RunStats {
    /// Executions done (`Done N runs`, or the last status line's count).
    pub runs: u64,
    /// `stat::average_exec_per_sec`.
    pub exec_per_sec: Option<u64>,
    /// Coverage (`cov:`) of the last status line.
    pub cov: Option<u64>,
    /// Corpus entries of the last status line.
    pub corpus: Option<u64>,
    /// The crash/hang kind from a `SUMMARY: libFuzzer:` or `ERROR:` line.
    pub failure: Option<String>,
    /// `Test unit written to <path>`.
    pub artifact: Option<String>,
}

fn field(line: &str, key: &str) -> Option<u64> {
    let rest = &line[line.find(key)? + key.len()..];
    let digits: String = rest
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Parses libFuzzer's stderr.
pub fn parse_output(text: &str) -> RunStats {
    let mut s = RunStats {
        runs: 0,
        exec_per_sec: None,
        cov: None,
        corpus: None,
        failure: None,
        artifact: None,
    };
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix('#') {
            // "#123456\tNEW    cov: 10 ft: 20 corp: 5/100b ..."
            if let Some(n) = field(rest, "") {
                s.runs = s.runs.max(n);
            }
            s.cov = field(line, "cov:").or(s.cov);
            s.corpus = field(line, "corp:").or(s.corpus);
        } else if let Some(rest) = line.strip_prefix("Done ") {
            s.runs = field(rest, "").unwrap_or(s.runs);
        } else if let Some(v) = line.strip_prefix("stat::number_of_executed_units:") {
            s.runs = field(v, "").unwrap_or(s.runs);
        } else if let Some(v) = line.strip_prefix("stat::average_exec_per_sec:") {
            s.exec_per_sec = field(v, "");
        } else if let Some(kind) = line.strip_prefix("SUMMARY: libFuzzer: ") {
            s.failure = Some(kind.trim().to_string());
        } else if line.contains("ERROR: libFuzzer:") && s.failure.is_none() {
            s.failure = line
                .split("ERROR: libFuzzer:")
                .nth(1)
                .map(|k| k.trim().to_string());
        } else if let Some(i) = line.find("Test unit written to ") {
            s.artifact = Some(line[i + "Test unit written to ".len()..].trim().to_string());
        }
    }
    s
}

/// Entry point of `cargo xtask fuzz`.
pub fn fuzz(target: Option<&str>, runs: u64, max_time: Option<u64>) -> Result<()> {
    let targets: Vec<&str> = match target {
        Some(t) if TARGETS.contains(&t) => vec![t],
        Some(t) => bail!("unknown fuzz target {t:?} (known: {})", TARGETS.join(", ")),
        None => TARGETS.to_vec(),
    };
    // Time guard: generous for the slowest target (vsock, ~3000 exec/s on a
    // busy 2-core machine), at least 2 minutes.
    let max_time = max_time.unwrap_or_else(|| (runs / 1000).max(120));
    ensure_tools()?;
    step!(
        "run: cargo +nightly fuzz build{} (in fuzz/)",
        target.map(|t| format!(" {t}")).unwrap_or_default()
    );
    let mut build = nightly_cargo();
    build.args(["fuzz", "build"]);
    if let Some(t) = target {
        build.arg(t);
    }
    util::run(&mut build).context("building the fuzz targets failed")?;

    let mut results = Vec::new();
    for t in &targets {
        let started = Instant::now();
        let mut c = nightly_cargo();
        c.args(["fuzz", "run", t, "--"])
            .arg(format!("-runs={runs}"))
            .arg(format!("-max_total_time={max_time}"))
            .arg(format!("-timeout={INPUT_TIMEOUT_S}"))
            .arg("-print_final_stats=1")
            .args(extra_flags(t))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        step!("run: {} (guard {max_time} s)", util::show(&c));
        let out = c
            .output()
            .with_context(|| format!("cannot run cargo fuzz run {t}"))?;
        let text = String::from_utf8_lossy(&out.stderr);
        let log_dir = paths::target_dir().join("fuzz-logs");
        std::fs::create_dir_all(&log_dir)
            .with_context(|| format!("cannot create {}", log_dir.display()))?;
        let log = log_dir.join(format!("{t}.log"));
        util::write_atomic(&log, text.as_bytes())?;
        let stats = parse_output(&text);
        let secs = started.elapsed().as_secs_f64();
        step!(
            "{t}: {} runs in {secs:.0} s{}; log {}",
            stats.runs,
            stats
                .failure
                .as_deref()
                .map(|f| format!(", FAILED: {f}"))
                .unwrap_or_default(),
            log.display()
        );
        if stats.failure.is_none() && !out.status.success() {
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "cargo fuzz run {t} failed ({}) without a libFuzzer report:\n{}",
                out.status,
                tail.join("\n")
            );
        }
        results.push((*t, stats, secs));
    }

    let mut table = String::new();
    let _ = writeln!(
        table,
        "{:<8} {:>10} {:>8} {:>8} {:>6} {:>7}  result",
        "target", "runs", "secs", "exec/s", "cov", "corpus"
    );
    let mut failed = Vec::new();
    for (t, s, secs) in &results {
        let opt = |v: Option<u64>| v.map_or("?".to_string(), |v| v.to_string());
        let result = match (&s.failure, s.runs >= runs) {
            (Some(f), _) => {
                failed.push(format!(
                    "{t}: {f} (input: {})",
                    s.artifact.as_deref().unwrap_or("?")
                ));
                format!("FAIL {f}")
            }
            (None, true) => "ok".to_string(),
            (None, false) => format!("ok, stopped by the {max_time} s guard"),
        };
        let _ = writeln!(
            table,
            "{t:<8} {:>10} {secs:>8.0} {:>8} {:>6} {:>7}  {result}",
            s.runs,
            opt(s.exec_per_sec),
            opt(s.cov),
            opt(s.corpus)
        );
    }
    println!();
    print!("{table}");
    if !failed.is_empty() {
        bail!(
            "fuzzing found problems (reproduce: cd fuzz && cargo +nightly fuzz run <target> <input>):\n  {}",
            failed.join("\n  ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_clean_run() {
        let text = "INFO: Seed: 1\n\
            #2\tINITED cov: 45 ft: 46 corp: 1/1b exec/s: 0 rss: 31Mb\n\
            #3044\tREDUCE cov: 545 ft: 667 corp: 42/513b lim: 17 exec/s: 0 rss: 45Mb\n\
            #1000000\tDONE   cov: 1099 ft: 4686 corp: 754/102Kb lim: 652 exec/s: 10100 rss: 473Mb\n\
            Done 1000000 runs in 99 second(s)\n\
            stat::number_of_executed_units: 1000000\n\
            stat::average_exec_per_sec:     10100\n";
        let s = parse_output(text);
        assert_eq!(s.runs, 1_000_000);
        assert_eq!(s.exec_per_sec, Some(10100));
        assert_eq!((s.cov, s.corpus), (Some(1099), Some(754)));
        assert!(s.failure.is_none() && s.artifact.is_none());
    }

    #[test]
    fn parses_a_hang_and_a_crash() {
        let hang = "#5000\tNEW cov: 10 corp: 3/9b\n\
            ALARM: working on the last Unit for 5 seconds\n\
            artifact_prefix='art/'; Test unit written to fuzz/artifacts/block/timeout-90a3\n\
            ==1799== ERROR: libFuzzer: timeout after 5 seconds\n\
            SUMMARY: libFuzzer: timeout\n";
        let s = parse_output(hang);
        assert_eq!(s.failure.as_deref(), Some("timeout"));
        assert_eq!(
            s.artifact.as_deref(),
            Some("fuzz/artifacts/block/timeout-90a3")
        );
        assert_eq!(s.runs, 5000);
        let crash = "==14022== ERROR: libFuzzer: deadly signal\n";
        assert_eq!(
            parse_output(crash).failure.as_deref(),
            Some("deadly signal")
        );
    }
}
