//! `cargo xtask bench boot [--runs N]`: boot time and memory overhead of our VMM
//! against QEMU `-M microvm`, both measured in the same test host run.
//!
//! Steps (the runner in `bench_host.rs`): the same set-up as `cargo xtask
//! test` (host packages, musl VMM, images); an extra initramfs with a static
//! `bootbench` (tests/bootbench), the machine's `qemu-system-x86_64`, its
//! shared-library closure (from `ldd`) and the firmware it opens; the test
//! host booted (one vCPU) with it, running the `bench-boot` scenario. `bootbench` prints one `@@BENCH {json}` line per boot; this module
//! parses them, prints medians and ratios with PASS/MISS against the targets,
//! and writes everything to `target/bench/boot.json`.
//!
//! A missed target is a result, not an error. Missing or invalid measurements are.
//! See `docs/benchmarks.md`.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{bail, Result};
use bootbench::record::{
    self, Failure, Record, Sample, OURS, OURS_COPY, OURS_ELF, OURS_ELF_COPY, OURS_ELF_MAP,
    QEMU_MICROVM,
};
use bootbench::stats::{self, Summary};

use crate::bench_host::{self, Bench, Extra, Manifest};
use crate::bench_profile;
use crate::paths::{self, Arch};
use crate::setup;
use crate::util::{self, step};

/// Fewest runs per VMM that give a meaningful median.
pub const MIN_RUNS: u32 = 5;
/// Target: our start→/init at most this fraction of QEMU microvm's.
pub const TARGET_INIT_RATIO: f64 = 0.8;
/// Target: our start→first guest instruction at most this fraction of QEMU microvm's.
pub const TARGET_FIRST_ENTRY_RATIO: f64 = 0.2;
/// Target: our start→first guest instruction with the ELF kernel at most
/// this multiple of the bzImage's.
pub const TARGET_ELF_FIRST_ENTRY_RATIO: f64 = 1.5;
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
/// What bootbench allows a guest after `/init` to dump its log and power off
/// (`runner::AFTER_INIT` in tests/bootbench).
const AFTER_INIT: Duration = Duration::from_secs(60);

/// Entry point of the x86_64 `cargo xtask bench <what> [--runs N]` but
/// `adb` (`runs`: boots per VMM for `boot`, default [`MIN_RUNS`]; rounds
/// for `devices`, default [`crate::bench_devices::DEFAULT_ROUNDS`], and
/// `tee`, default [`crate::bench_tee::DEFAULT_ROUNDS`]).
pub fn bench(what: &str, runs: Option<u32>, kernel: KernelChoice) -> Result<()> {
    match what {
        "boot" => boot(runs.unwrap_or(MIN_RUNS), kernel),
        "arbiter" => crate::bench_arbiter::arbiter(),
        "devices" => {
            crate::bench_devices::devices(runs.unwrap_or(crate::bench_devices::DEFAULT_ROUNDS))
        }
        "devices-profile" => crate::profile_devices::devices_profile(),
        "binder" => crate::bench_binder::binder(),
        "tee" => crate::bench_tee::tee(runs.unwrap_or(crate::bench_tee::DEFAULT_ROUNDS)),
        other => bail!(
            "unknown benchmark {other:?} (known: boot, devices, arbiter, binder, tee, adb; devices-profile for a perf profile)"
        ),
    }
}

/// The extra initramfs of the benchmarks with a QEMU peer: a static
/// `bootbench`, this machine's `qemu-system-x86_64` with its shared
/// libraries and the firmware it opens, and `/etc/vmstack/bench-info`.
pub(crate) fn qemu_peer_extra(info: &str) -> Result<Extra> {
    let bootbench = setup::build_static(Arch::X86_64, "bootbench", "bootbench")?;
    let mut extra = Extra::new();
    extra.file_from("bin/bootbench", 0o755, &bootbench)?;
    let libs = extra.host_program(QEMU)?;
    for fw in QEMU_FIRMWARE {
        extra.host_file(fw, 0o644)?;
    }
    extra.file("etc/vmstack/bench-info", 0o644, info.as_bytes().to_vec())?;
    step!("QEMU peer: {QEMU} with {libs} shared objects");
    Ok(extra)
}

/// Which kernel file our VMM boots in `bench boot` (QEMU always boots the bzImage).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelChoice {
    /// Debian's `vmlinuz`.
    Bzimage,
    /// The same kernel as an ELF `vmlinux` (`guest-vmlinux` of the images).
    Elf,
    /// Both, interleaved in every round.
    Both,
    /// The ELF twice: as by default (`ours-elf`: filled behind the guest
    /// where the host allows it) and mapped (`ours-elf-map`,
    /// `VMSTACK_BOOT_FILES=map`).
    ElfAb,
    /// The ELF twice: as by default (`ours-elf`) and copied before the
    /// first entry (`ours-elf-copy`, `VMSTACK_BOOT_FILES=copy`).
    ElfFillAb,
    /// The bzImage twice: as by default (payload mapped, initrd copied:
    /// `ours`) and with every boot file copied (`ours-copy`,
    /// `VMSTACK_BOOT_FILES=copy`).
    BzimageAb,
}

impl std::str::FromStr for KernelChoice {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "bzimage" => Ok(Self::Bzimage),
            "elf" => Ok(Self::Elf),
            "both" => Ok(Self::Both),
            "elf-ab" => Ok(Self::ElfAb),
            "elf-fill-ab" => Ok(Self::ElfFillAb),
            "bzimage-ab" => Ok(Self::BzimageAb),
            other => Err(format!(
                "--kernel {other:?}: use bzimage, elf, both, elf-ab, elf-fill-ab or bzimage-ab"
            )),
        }
    }
}

impl KernelChoice {
    /// The scenario's `bench.kernel=` value.
    fn name(self) -> &'static str {
        match self {
            Self::Bzimage => "bzimage",
            Self::Elf => "elf",
            Self::Both => "both",
            Self::ElfAb => "elf-ab",
            Self::ElfFillAb => "elf-fill-ab",
            Self::BzimageAb => "bzimage-ab",
        }
    }

    /// The record names of our VMM this choice produces.
    pub fn ours(self) -> &'static [&'static str] {
        match self {
            Self::Bzimage => &[OURS],
            Self::Elf => &[OURS_ELF],
            Self::Both => &[OURS, OURS_ELF],
            Self::ElfAb => &[OURS_ELF, OURS_ELF_MAP],
            Self::ElfFillAb => &[OURS_ELF, OURS_ELF_COPY],
            Self::BzimageAb => &[OURS, OURS_COPY],
        }
    }
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

/// The human-readable result table of our VMM's variant `name` against
/// the QEMU peer `peer` (`qemu-microvm`, `qemu-virt`).
pub fn table(name: &str, peer: &str, ours: &VmmSummary, qemu: &VmmSummary, runs: u32) -> String {
    let mut t = String::new();
    let v = verdicts(ours, qemu);
    let _ = writeln!(
        t,
        "{:<30} {:>26} {:>26} {:>9} {:>9}  result",
        format!("median [min..max] of {runs} runs"),
        name,
        peer,
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

/// Checks that every VMM in `vmms` has `runs` valid samples and nothing failed.
pub fn check_complete(p: &Parsed, runs: u32, vmms: &[&str]) -> Result<()> {
    let mut problems = Vec::new();
    for e in &p.invalid {
        problems.push(format!("invalid record: {e}"));
    }
    for f in &p.failures {
        problems.push(format!("{} run {} failed: {}", f.vmm, f.run, f.error));
    }
    for &vmm in vmms {
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

fn boot(runs: u32, kernel: KernelChoice) -> Result<()> {
    if runs < MIN_RUNS {
        bail!("--runs {runs}: at least {MIN_RUNS} runs per VMM are needed for a median");
    }
    let images = bench_host::prepare(Arch::X86_64)?;
    let qemu_pkg = bench_host::dpkg_version("qemu-system-x86")?;
    let m = Manifest::read(&images);
    let info = format!(
        "qemu-system-x86 {qemu_pkg}\nkernel {} ({} sha256 {})\n",
        m.get("/kernel/release"),
        m.get("/kernel/version"),
        m.get("/kernel/sha256")
    );
    // The test host's initramfs has the ELF kernel (/guest/vmlinux).
    let extra = qemu_peer_extra(&info)?;
    let bootbench = paths::static_binary(Arch::X86_64, "bootbench");
    let versions = serde_json::json!({
        "qemu_package": format!("qemu-system-x86 {qemu_pkg}"),
        "kernel_release": m.get("/kernel/release"),
        "kernel_package": format!("{} {}", m.get("/kernel/package"), m.get("/kernel/version")),
        "kernel_sha256": m.get("/kernel/sha256"),
        "vmm_sha256": m.get("/vmm/sha256"),
        "bootbench_sha256": util::sha256_file(&bootbench)?,
    });

    let ours_names = kernel.ours();
    let boots_per_round = ours_names.len() as u32 + 1;
    let bench = Bench {
        arch: Arch::X86_64,
        scenario: SCENARIO,
        append: vec![
            format!("bench.runs={runs}"),
            format!("bench.kernel={}", kernel.name()),
        ],
        scenario_timeout: (PER_BOOT + AFTER_INIT + Duration::from_secs(10))
            * boots_per_round
            * runs
            + Duration::from_secs(60),
        stream: true,
    };
    let run = bench.boot(&images, Some(&extra))?;
    let section = run.scenario(SCENARIO);
    let parsed = parse_console(section.map(|s| s.output.as_str()).unwrap_or(""));

    let qemu = summarize(&parsed.samples, QEMU_MICROVM);
    let ours: Vec<(&str, Option<VmmSummary>)> = ours_names
        .iter()
        .map(|&name| (name, summarize(&parsed.samples, name)))
        .collect();
    let mut verdict_list = Vec::new();
    let mut summary = serde_json::Map::new();
    summary.insert(QEMU_MICROVM.into(), serde_json::json!(qemu));
    for (name, o) in &ours {
        summary.insert((*name).into(), serde_json::json!(o));
        if let (Some(o), Some(q)) = (o, &qemu) {
            verdict_list.push(serde_json::json!({ "vmm": name, "verdicts": verdicts(o, q) }));
        }
    }
    let elf_verdict = match (
        summarize(&parsed.samples, OURS),
        summarize(&parsed.samples, OURS_ELF),
    ) {
        (Some(bz), Some(elf)) => Some(elf_first_entry_verdict(&bz, &elf)),
        _ => None,
    };
    let mut profile_names: Vec<&str> = ours_names.to_vec();
    profile_names.push(QEMU_MICROVM);
    let profile_columns = profile_columns(&parsed.samples, &profile_names);
    let json_path = bench_host::write_results(
        "boot",
        &serde_json::json!({
            "runs": runs,
            "kernel": kernel.name(),
            "unix_time": bench_host::unix_time(),
            "versions": versions,
            "setup": parsed.info,
            "summary": summary,
            "verdicts": verdict_list,
            "elf_verdict": elf_verdict,
            "guest_profile": bench_profile::json(&profile_columns),
            "samples": parsed.samples,
            "failures": parsed.failures,
            "console_log": run.log_path.display().to_string(),
            "testhost_elapsed_s": run.elapsed.as_secs_f64(),
        }),
    )?;

    println!();
    println!(
        "boot benchmark: our VMM vs QEMU -M microvm, 1 vCPU / 128 MiB guests, nested KVM in the test host"
    );
    println!(
        "  kernel {} ({} sha256 {}); qemu-system-x86 {qemu_pkg}; QEMU boots the bzImage",
        m.get("/kernel/release"),
        m.get("/kernel/version"),
        m.get("/kernel/sha256")
    );
    for (name, o) in &ours {
        if let (Some(o), Some(q)) = (o, &qemu) {
            print!("{}", table(name, QEMU_MICROVM, o, q, runs));
        }
    }
    if let Some(v) = &elf_verdict {
        println!(
            "{:<30} {:>9.3} {:>9}  {}",
            "first entry ours-elf/ours",
            v.value,
            format!("<= {:.1}", v.target),
            if v.pass { "PASS" } else { "MISS" }
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

    let section = bench_host::section(&run, SCENARIO)?;
    let mut expected = ours_names.to_vec();
    expected.push(QEMU_MICROVM);
    if let Err(e) = check_complete(&parsed, runs, &expected) {
        bail!(
            "{e:#}\n(scenario rc={:?}; console {})",
            section.rc,
            run.log_path.display()
        );
    }
    bench_host::check_rc(&run, section)
}

/// The boot-profile columns of `names` (each VMM's boots in run order).
pub fn profile_columns(samples: &[Sample], names: &[&str]) -> Vec<bench_profile::Column> {
    names
        .iter()
        .map(|&name| bench_profile::Column {
            name: name.to_string(),
            boots: samples
                .iter()
                .filter(|s| s.vmm == name)
                .map(|s| bench_profile::Boot {
                    entry_ms: s.first_entry_ms,
                    init_ms: s.init_ms,
                    exit_ms: s.exit_ms,
                    profile: s.guest.clone(),
                })
                .collect(),
        })
        .collect()
}

/// Target check: start → first entry with the ELF kernel against the bzImage.
pub fn elf_first_entry_verdict(bzimage: &VmmSummary, elf: &VmmSummary) -> Verdict {
    let value = elf.first_entry_ms.median / bzimage.first_entry_ms.median;
    Verdict {
        metric: "start->first entry, ours-elf/ours",
        value,
        target: TARGET_ELF_FIRST_ENTRY_RATIO,
        pass: value <= TARGET_ELF_FIRST_ENTRY_RATIO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            exit_ms: None,
            guest: None,
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
        check_complete(&p, 5, &[OURS, QEMU_MICROVM]).unwrap();
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
        let t = table(OURS, QEMU_MICROVM, &o, &q, 5);
        assert!(t.contains("PASS") && t.contains("MISS") && t.contains("13.0 [11.0..15.0]"));
    }

    #[test]
    fn missing_measurements_fail() {
        let mut c = console(4);
        c.push_str(r#"@@BENCH-FAIL {"vmm":"qemu-microvm","run":5,"error":"timeout"}"#);
        c.push('\n');
        c.push_str("@@BENCH {\"vmm\":\"ours\",\"run\":5}\n");
        let p = parse_console(&c);
        let err = check_complete(&p, 5, &[OURS, QEMU_MICROVM])
            .unwrap_err()
            .to_string();
        assert!(err.contains("ours: 4 of 5"), "{err}");
        assert!(err.contains("qemu-microvm run 5 failed: timeout"), "{err}");
        assert!(err.contains("invalid record"), "{err}");
        assert!(check_complete(&parse_console(""), 5, &[OURS]).is_err());
    }

    #[test]
    fn kernel_choice_parses_and_names_our_variants() {
        let k: KernelChoice = "both".parse().unwrap();
        assert_eq!(k.ours(), [OURS, OURS_ELF]);
        assert_eq!("elf".parse::<KernelChoice>().unwrap().ours(), [OURS_ELF]);
        assert_eq!(KernelChoice::Bzimage.name(), "bzimage");
        assert!("vmlinux".parse::<KernelChoice>().is_err());
        assert_eq!(
            "elf-ab".parse::<KernelChoice>().unwrap().ours(),
            [OURS_ELF, OURS_ELF_MAP]
        );
        assert_eq!(
            "bzimage-ab".parse::<KernelChoice>().unwrap().ours(),
            [OURS, OURS_COPY]
        );
        assert_eq!(
            "elf-fill-ab".parse::<KernelChoice>().unwrap().ours(),
            [OURS_ELF, OURS_ELF_COPY]
        );
    }

    #[test]
    fn elf_variant_is_checked_for_completeness_and_first_entry() {
        let mut c = console(5);
        for r in 1..=5 {
            let s = sample(OURS_ELF, r, 12.0 + f64::from(r), 880.0, 3072);
            c.push_str(&format!(
                "{}{}\n",
                record::SAMPLE_PREFIX,
                serde_json::to_string(&s).unwrap()
            ));
        }
        let p = parse_console(&c);
        check_complete(&p, 5, &[OURS, OURS_ELF, QEMU_MICROVM]).unwrap();
        let bz = summarize(&p.samples, OURS).unwrap();
        let elf = summarize(&p.samples, OURS_ELF).unwrap();
        let v = elf_first_entry_verdict(&bz, &elf);
        assert!(v.pass && (v.value - 15.0 / 13.0).abs() < 1e-9);
        let only_two = parse_console(&console(5));
        assert!(check_complete(&only_two, 5, &[OURS, OURS_ELF, QEMU_MICROVM]).is_err());
    }
}
