//! `cargo xtask bench boot [--runs N]`: boot time and memory overhead of our VMM
//! against QEMU `-M microvm`, both measured in the same test host run.
//!
//! Steps: the same set-up as `cargo xtask test` (host packages, musl VMM,
//! images); a static `bootbench` (tests/bootbench); an extra initramfs
//! (`bench-extra.cpio.gz`) with `bootbench`, the machine's
//! `qemu-system-x86_64`, its shared-library closure (from `ldd`) and the
//! firmware it opens; the test host booted (one vCPU) from the concatenation
//! of `testhost-initramfs.cpio.gz` and that archive, running the `bench-boot`
//! scenario. `bootbench` prints one `@@BENCH {json}` line per boot; this module
//! parses them, prints medians and ratios with PASS/MISS against the targets,
//! and writes everything to `target/bench/boot.json`.
//!
//! A missed target is a result, not an error. Missing or invalid measurements are.
//! See `docs/benchmarks.md`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bootbench::record::{self, Failure, Record, Sample, OURS, QEMU_MICROVM};
use bootbench::stats::{self, Summary};
use vmstack_tests::testhost::{self, TestHostConfig};

use crate::cpio::Archive;
use crate::images;
use crate::paths;
use crate::setup;
use crate::util::{self, step};

/// Fewest runs per VMM that give a meaningful median.
pub const MIN_RUNS: u32 = 5;
/// Target: our start→/init at most this fraction of QEMU microvm's.
pub const TARGET_INIT_RATIO: f64 = 0.8;
/// Target: our start→first guest instruction at most this fraction of QEMU microvm's.
pub const TARGET_FIRST_ENTRY_RATIO: f64 = 0.2;
/// Target: our memory overhead (RSS minus guest memory) at most this many MiB
/// for 1 vCPU / 128 MiB (Firecracker's bar).
pub const TARGET_OVERHEAD_MIB: f64 = 5.0;
/// The QEMU binary copied into the test host.
const QEMU: &str = "/usr/bin/qemu-system-x86_64";
/// Firmware files QEMU `-M microvm -kernel` opens (seen with strace; symlinks are kept).
const QEMU_FIRMWARE: &[&str] = &[
    "/usr/share/qemu/bios-microvm.bin",
    "/usr/share/qemu/linuxboot_dma.bin",
];
/// Scenario in `prebuilts/testhost/scenarios/`.
const SCENARIO: &str = "bench-boot";
/// Per-boot timeout inside the test host (bootbench's default).
const PER_BOOT: Duration = Duration::from_secs(120);

/// Entry point of `cargo xtask bench <what> [--runs N]` (`runs`: boots per
/// VMM for `boot`, default [`MIN_RUNS`]; rounds for `devices`, default
/// [`crate::bench_devices::DEFAULT_ROUNDS`]).
pub fn bench(what: &str, runs: Option<u32>) -> Result<()> {
    match what {
        "boot" => boot(runs.unwrap_or(MIN_RUNS)),
        "arbiter" => crate::bench_arbiter::arbiter(),
        "devices" => {
            crate::bench_devices::devices(runs.unwrap_or(crate::bench_devices::DEFAULT_ROUNDS))
        }
        "devices-profile" => crate::profile_devices::devices_profile(),
        "binder" => crate::bench_binder::binder(),
        other => bail!(
            "unknown benchmark {other:?} (known: boot, devices, arbiter, binder; devices-profile for a perf profile)"
        ),
    }
}

/// Builds `bootbench` as a static musl binary.
pub(crate) fn build_bootbench() -> Result<PathBuf> {
    step!(
        "run: cargo build --release --target {} -p bootbench",
        paths::MUSL_TARGET
    );
    util::run(setup::cargo().args([
        "build",
        "--release",
        "--target",
        paths::MUSL_TARGET,
        "-p",
        "bootbench",
    ]))
    .context("building bootbench failed")?;
    let bin = paths::target_dir()
        .join(paths::MUSL_TARGET)
        .join("release/bootbench");
    if !bin.is_file() {
        bail!("cargo built bootbench but {} is missing", bin.display());
    }
    Ok(bin)
}

/// The absolute paths of the shared objects in `ldd` output (the dynamic
/// loader included, the vDSO skipped); an error for any `not found`.
pub fn parse_ldd(text: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.contains("not found") {
            bail!("ldd: {line}");
        }
        // "libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x...)" or
        // "/lib64/ld-linux-x86-64.so.2 (0x...)" or "linux-vdso.so.1 (0x...)".
        let path = match line.split_once("=>") {
            Some((_, rhs)) => rhs.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            if !out.iter().any(|o| o == p) {
                out.push(p.to_string());
            }
        }
    }
    if out.is_empty() {
        bail!("ldd printed no libraries");
    }
    Ok(out)
}

/// Adds `path` (absolute) from this machine to `a`; a symlink is kept as a
/// symlink and its target (resolved relative to the link) added as well.
pub(crate) fn add_host_file(a: &mut Archive, path: &str, mode: u32) -> Result<()> {
    let meta = std::fs::symlink_metadata(path).with_context(|| format!("{path} is missing"))?;
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(path).with_context(|| format!("readlink {path}"))?;
        let target_str = target.to_string_lossy().into_owned();
        a.symlink(path, &target_str)?;
        let resolved = if target.is_absolute() {
            target
        } else {
            Path::new(path)
                .parent()
                .unwrap_or(Path::new("/"))
                .join(target)
        };
        return add_host_file(a, &resolved.to_string_lossy(), mode);
    }
    a.file_from(path, mode, Path::new(path))
}

/// Version of an installed Debian package.
pub(crate) fn dpkg_version(pkg: &str) -> Result<String> {
    Ok(
        util::output(Command::new("dpkg-query").args(["-W", "-f=${Version}", pkg]))?
            .trim()
            .to_string(),
    )
}

/// Writes `bench-extra.cpio.gz`: bootbench, QEMU + libraries + firmware, bench-info.
pub(crate) fn build_extra(bootbench: &Path, out: &Path, info: &str) -> Result<()> {
    let mut a = Archive::new();
    a.file_from("bin/bootbench", 0o755, bootbench)?;
    a.file_from(QEMU, 0o755, Path::new(QEMU))?;
    let ldd = util::output(Command::new("ldd").arg(QEMU))?;
    let libs = parse_ldd(&ldd)?;
    for lib in &libs {
        add_host_file(&mut a, lib, 0o755)?;
    }
    for fw in QEMU_FIRMWARE {
        add_host_file(&mut a, fw, 0o644)?;
    }
    a.file("etc/vmstack/bench-info", 0o644, info.as_bytes().to_vec())?;
    let size = a.write_gz(out)?;
    step!(
        "built {} ({} shared objects, {} entries, {})",
        out.display(),
        libs.len(),
        a.len(),
        util::human(size)
    );
    Ok(())
}

/// Writes `first` followed by `second` (4-byte aligned) to `out`: the kernel
/// unpacks concatenated initramfs archives in order.
pub(crate) fn concat(first: &Path, second: &Path, out: &Path) -> Result<()> {
    let mut data =
        std::fs::read(first).with_context(|| format!("cannot read {}", first.display()))?;
    data.resize(data.len().next_multiple_of(4), 0);
    data.extend(
        std::fs::read(second).with_context(|| format!("cannot read {}", second.display()))?,
    );
    util::write_atomic(out, &data)
}

/// The records of a bench-boot console, grouped.
#[derive(Debug, Default)]
pub struct Parsed {
    /// Valid samples.
    pub samples: Vec<Sample>,
    /// Failed runs reported by bootbench.
    pub failures: Vec<Failure>,
    /// Lines that could not be used (bad JSON, inconsistent numbers).
    pub invalid: Vec<String>,
    /// The `@@BENCH-INFO` object.
    pub info: Option<serde_json::Value>,
    /// Whether `@@BENCH-DONE` was seen.
    pub done: bool,
}

/// Parses every `@@BENCH*` line of `console`.
pub fn parse_console(console: &str) -> Parsed {
    let mut p = Parsed::default();
    for line in console.lines() {
        match record::parse_line(line) {
            Some(Record::Sample(Ok(s))) => p.samples.push(s),
            Some(Record::Sample(Err(e))) | Some(Record::Failure(Err(e))) => p.invalid.push(e),
            Some(Record::Failure(Ok(f))) => p.failures.push(f),
            Some(Record::Info(v)) => p.info = Some(v),
            Some(Record::Done(_)) => p.done = true,
            None => {}
        }
    }
    p
}

/// Per-VMM summaries of the three metrics.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct VmmSummary {
    /// Start → first VM entry, ms.
    pub first_entry_ms: Summary,
    /// Start → guest /init, ms.
    pub init_ms: Summary,
    /// RSS minus guest memory, MiB.
    pub overhead_mib: Summary,
    /// File-backed part of the overhead (binary, shared libraries), MiB.
    pub overhead_file_mib: Summary,
    /// Part of the overhead backed by transparent huge pages, MiB.
    pub overhead_thp_mib: Summary,
    /// Guest memory touched at /init, MiB.
    pub guest_rss_mib: Summary,
}

/// Summarizes the samples of `vmm`; `None` if it has none.
pub fn summarize(samples: &[Sample], vmm: &str) -> Option<VmmSummary> {
    let of: Vec<&Sample> = samples.iter().filter(|s| s.vmm == vmm).collect();
    let col =
        |f: &dyn Fn(&Sample) -> f64| stats::summarize(&of.iter().map(|s| f(s)).collect::<Vec<_>>());
    Some(VmmSummary {
        first_entry_ms: col(&|s| s.first_entry_ms)?,
        init_ms: col(&|s| s.init_ms)?,
        overhead_mib: col(&|s| s.overhead_kib as f64 / 1024.0)?,
        overhead_file_mib: col(&|s| s.overhead_file_kib as f64 / 1024.0)?,
        overhead_thp_mib: col(&|s| s.overhead_thp_kib as f64 / 1024.0)?,
        guest_rss_mib: col(&|s| s.guest_rss_kib as f64 / 1024.0)?,
    })
}

/// One target check.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Verdict {
    /// What is compared.
    pub metric: &'static str,
    /// The measured value (a ratio, or MiB).
    pub value: f64,
    /// The bound it must not exceed.
    pub target: f64,
    /// `value <= target`.
    pub pass: bool,
}

/// The three target checks from the medians.
pub fn verdicts(ours: &VmmSummary, qemu: &VmmSummary) -> Vec<Verdict> {
    let v = |metric, value: f64, target| Verdict {
        metric,
        value,
        target,
        pass: value <= target,
    };
    vec![
        v(
            "start->first entry, ours/qemu",
            ours.first_entry_ms.median / qemu.first_entry_ms.median,
            TARGET_FIRST_ENTRY_RATIO,
        ),
        v(
            "start->/init, ours/qemu",
            ours.init_ms.median / qemu.init_ms.median,
            TARGET_INIT_RATIO,
        ),
        v(
            "overhead MiB, ours",
            ours.overhead_mib.median,
            TARGET_OVERHEAD_MIB,
        ),
    ]
}

fn cell(s: &Summary, decimals: usize) -> String {
    format!(
        "{:.d$} [{:.d$}..{:.d$}]",
        s.median,
        s.min,
        s.max,
        d = decimals
    )
}

/// The human-readable result table.
pub fn table(ours: &VmmSummary, qemu: &VmmSummary, runs: u32) -> String {
    let mut t = String::new();
    let v = verdicts(ours, qemu);
    let _ = writeln!(
        t,
        "{:<30} {:>26} {:>26} {:>9} {:>9}  result",
        format!("median [min..max] of {runs} runs"),
        OURS,
        QEMU_MICROVM,
        "ours/qemu",
        "target"
    );
    let pf = |p: bool| if p { "PASS" } else { "MISS" };
    let rows = [
        (
            "start -> first VM entry (ms)",
            &ours.first_entry_ms,
            &qemu.first_entry_ms,
            1,
            Some(&v[0]),
        ),
        (
            "start -> guest /init (ms)",
            &ours.init_ms,
            &qemu.init_ms,
            1,
            Some(&v[1]),
        ),
        (
            "overhead: RSS - guest (MiB)",
            &ours.overhead_mib,
            &qemu.overhead_mib,
            2,
            None,
        ),
        (
            "  of which file-backed (MiB)",
            &ours.overhead_file_mib,
            &qemu.overhead_file_mib,
            2,
            None,
        ),
        (
            "  of which THP-backed (MiB)",
            &ours.overhead_thp_mib,
            &qemu.overhead_thp_mib,
            2,
            None,
        ),
        (
            "guest memory touched (MiB)",
            &ours.guest_rss_mib,
            &qemu.guest_rss_mib,
            1,
            None,
        ),
    ];
    for (name, a, b, d, verdict) in rows {
        let ratio = a.median / b.median;
        let (target, result) = match verdict {
            Some(v) => (format!("<= {:.1}", v.target), pf(v.pass).to_string()),
            None => (String::new(), String::new()),
        };
        let _ = writeln!(
            t,
            "{name:<30} {:>26} {:>26} {ratio:>9.3} {target:>9}  {result}",
            cell(a, d),
            cell(b, d)
        );
    }
    let _ = writeln!(
        t,
        "{:<30} {:>26} {:>26} {:>9} {:>9}  {}",
        "overhead target (ours)",
        format!("{:.2} MiB", v[2].value),
        "",
        "",
        format!("<= {:.0} MiB", v[2].target),
        pf(v[2].pass)
    );
    t
}

/// Checks that every VMM has `runs` valid samples and nothing failed.
pub fn check_complete(p: &Parsed, runs: u32) -> Result<()> {
    let mut problems = Vec::new();
    for e in &p.invalid {
        problems.push(format!("invalid record: {e}"));
    }
    for f in &p.failures {
        problems.push(format!("{} run {} failed: {}", f.vmm, f.run, f.error));
    }
    for vmm in [OURS, QEMU_MICROVM] {
        let n = p.samples.iter().filter(|s| s.vmm == vmm).count();
        if n != runs as usize {
            problems.push(format!("{vmm}: {n} of {runs} runs measured"));
        }
    }
    if !p.done {
        problems.push("no @@BENCH-DONE line (bootbench did not finish)".into());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        bail!(
            "missing or invalid measurements:\n  {}",
            problems.join("\n  ")
        )
    }
}

fn boot(runs: u32) -> Result<()> {
    if runs < MIN_RUNS {
        bail!("--runs {runs}: at least {MIN_RUNS} runs per VMM are needed for a median");
    }
    setup::prepare_machine()?;
    let vmm = setup::build_vmm()?;
    let images = images::build_x86_64(Some(&vmm))?;
    let bootbench = build_bootbench()?;

    let qemu_pkg = dpkg_version("qemu-system-x86")?;
    let manifest_path = images.dir.join(testhost::MANIFEST);
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&manifest_path)
            .with_context(|| format!("cannot read {}", manifest_path.display()))?,
    )
    .with_context(|| format!("cannot parse {}", manifest_path.display()))?;
    let m = |p: &str| {
        manifest
            .pointer(p)
            .and_then(|v| v.as_str())
            .unwrap_or("?")
            .to_string()
    };
    let versions = serde_json::json!({
        "qemu_package": format!("qemu-system-x86 {qemu_pkg}"),
        "kernel_release": m("/kernel/release"),
        "kernel_package": format!("{} {}", m("/kernel/package"), m("/kernel/version")),
        "kernel_sha256": m("/kernel/sha256"),
        "vmm_sha256": m("/vmm/sha256"),
        "bootbench_sha256": util::sha256_file(&bootbench)?,
    });
    let info = format!(
        "qemu-system-x86 {qemu_pkg}\nkernel {} ({} sha256 {})\n",
        m("/kernel/release"),
        m("/kernel/version"),
        m("/kernel/sha256")
    );
    step!(
        "QEMU peer: qemu-system-x86 {qemu_pkg}; kernel {}",
        m("/kernel/release")
    );

    let extra = images.dir.join("bench-extra.cpio.gz");
    build_extra(&bootbench, &extra, &info)?;
    let initrd = images.dir.join("bench-initramfs.cpio.gz");
    concat(&images.dir.join(testhost::TESTHOST_INITRD), &extra, &initrd)?;

    let mut cfg =
        TestHostConfig::from_images_dir(&images.dir, &[SCENARIO], &vmstack_tests::log_dir())?;
    cfg.initrd = initrd;
    cfg.extra_append = vec![format!("bench.runs={runs}")];
    cfg.scenario_timeout =
        (PER_BOOT + Duration::from_secs(10)) * 2 * runs + Duration::from_secs(60);
    cfg.timeout = cfg.scenario_timeout + Duration::from_secs(120);
    cfg.stream = true;
    step!(
        "booting the test host: {} boots of each VMM (timeout {} s); console {}",
        runs,
        cfg.timeout.as_secs(),
        cfg.log_path.display()
    );
    let run = testhost::run(&cfg)?;
    let section = run.scenario(SCENARIO);
    let parsed = parse_console(section.map(|s| s.output.as_str()).unwrap_or(""));

    let ours = summarize(&parsed.samples, OURS);
    let qemu = summarize(&parsed.samples, QEMU_MICROVM);
    let verdict_list = match (&ours, &qemu) {
        (Some(o), Some(q)) => verdicts(o, q),
        _ => Vec::new(),
    };
    let results = serde_json::json!({
        "runs": runs,
        "unix_time": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        "versions": versions,
        "setup": parsed.info,
        "summary": { OURS: ours, QEMU_MICROVM: qemu },
        "verdicts": verdict_list,
        "samples": parsed.samples,
        "failures": parsed.failures,
        "console_log": run.log_path.display().to_string(),
        "testhost_elapsed_s": run.elapsed.as_secs_f64(),
    });
    let out_dir = paths::workspace_root().join("target/bench");
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    let json_path = out_dir.join("boot.json");
    util::write_atomic(
        &json_path,
        (serde_json::to_string_pretty(&results)? + "\n").as_bytes(),
    )?;

    println!();
    println!(
        "boot benchmark: our VMM vs QEMU -M microvm, 1 vCPU / 128 MiB guests, nested KVM in the test host"
    );
    println!(
        "  kernel {} ({} sha256 {}); qemu-system-x86 {qemu_pkg}",
        m("/kernel/release"),
        m("/kernel/version"),
        m("/kernel/sha256")
    );
    if let (Some(o), Some(q)) = (&ours, &qemu) {
        print!("{}", table(o, q, runs));
    }
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

    let Some(section) = section else {
        bail!(
            "{}",
            run.failure_report(&format!("no @@BEGIN {SCENARIO} section"))
        );
    };
    if let Err(e) = check_complete(&parsed, runs) {
        bail!(
            "{e:#}\n(scenario rc={:?}; console {})",
            section.rc,
            run.log_path.display()
        );
    }
    if section.rc != Some(0) {
        bail!(
            "scenario {SCENARIO} ended with rc={:?} although every run was measured; console {}",
            section.rc,
            run.log_path.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LDD: &str = "\
\tlinux-vdso.so.1 (0x00007ffc0a1f3000)
\tlibz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x00007f544a0f4000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f5448db8000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f544b3cc000)
\tlibz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x00007f544a0f4000)
";

    #[test]
    fn ldd_closure() {
        assert_eq!(
            parse_ldd(LDD).unwrap(),
            vec![
                "/lib/x86_64-linux-gnu/libz.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
        );
        assert!(parse_ldd("\tlibfoo.so.1 => not found\n").is_err());
        assert!(parse_ldd("\tstatically linked\n").is_err());
    }

    fn sample(vmm: &str, run: u32, entry: f64, init: f64, overhead_kib: u64) -> Sample {
        Sample {
            vmm: vmm.into(),
            run,
            first_entry_ms: entry,
            init_ms: init,
            rss_total_kib: 16_384 + overhead_kib,
            guest_rss_kib: 16_384,
            overhead_kib,
            overhead_file_kib: overhead_kib / 2,
            overhead_thp_kib: 0,
            self_first_entry_ms: None,
            self_init_ms: None,
        }
    }

    fn console(runs: u32) -> String {
        let mut c = String::from("@@BENCH-INFO {\"runs\":5}\nbootbench: noise\n");
        for r in 1..=runs {
            for s in [
                sample(OURS, r, 10.0 + f64::from(r), 900.0, 3072),
                sample(QEMU_MICROVM, r, 100.0, 1000.0 + f64::from(r), 20480),
            ] {
                c.push_str(&format!(
                    "{}{}\n",
                    record::SAMPLE_PREFIX,
                    serde_json::to_string(&s).unwrap()
                ));
            }
        }
        c.push_str("@@BENCH-DONE {}\n");
        c
    }

    #[test]
    fn complete_run_summarized() {
        let p = parse_console(&console(5));
        assert!(p.done && p.info.is_some() && p.invalid.is_empty());
        check_complete(&p, 5).unwrap();
        let o = summarize(&p.samples, OURS).unwrap();
        let q = summarize(&p.samples, QEMU_MICROVM).unwrap();
        assert_eq!(o.first_entry_ms.median, 13.0);
        assert_eq!((o.first_entry_ms.min, o.first_entry_ms.max), (11.0, 15.0));
        assert_eq!(q.init_ms.median, 1003.0);
        assert_eq!(o.overhead_mib.median, 3.0);
        let v = verdicts(&o, &q);
        assert!(v[0].pass && (v[0].value - 0.13).abs() < 1e-9);
        assert!(!v[1].pass && (v[1].value - 900.0 / 1003.0).abs() < 1e-9);
        assert!(v[2].pass);
        let t = table(&o, &q, 5);
        assert!(t.contains("PASS") && t.contains("MISS") && t.contains("13.0 [11.0..15.0]"));
    }

    #[test]
    fn missing_measurements_fail() {
        let mut c = console(4);
        c.push_str(r#"@@BENCH-FAIL {"vmm":"qemu-microvm","run":5,"error":"timeout"}"#);
        c.push('\n');
        c.push_str("@@BENCH {\"vmm\":\"ours\",\"run\":5}\n");
        let p = parse_console(&c);
        let err = check_complete(&p, 5).unwrap_err().to_string();
        assert!(err.contains("ours: 4 of 5"), "{err}");
        assert!(err.contains("qemu-microvm run 5 failed: timeout"), "{err}");
        assert!(err.contains("invalid record"), "{err}");
        assert!(check_complete(&parse_console(""), 5).is_err());
    }
}
