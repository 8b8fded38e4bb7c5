//! `bootbench`: boot benchmark driver, run inside the nested test host by
//! `prebuilts/testhost/scenarios/bench-boot.sh` (see `docs/benchmarks.md`).
//!
//! ```text
//! bootbench [--runs N] [--mem MIB] [--timeout SECS] [--vmm PATH] [--qemu PATH]
//!           [--kernel PATH] [--initrd PATH] [--elf PATH] [--no-bzimage] [--elf-map]
//!           [--bzimage-copy]
//! ```
//!
//! `--elf PATH`: our VMM also boots the same kernel as an ELF `vmlinux`
//! (records named `ours-elf`); `--no-bzimage`: our VMM boots only the ELF;
//! `--elf-map`: it also boots the ELF with `VMSTACK_BOOT_FILES=map` (kernel
//! segments mapped copy-on-write too, not copied; records named
//! `ours-elf-map`); `--bzimage-copy`: it also boots the bzImage with
//! `VMSTACK_BOOT_FILES=copy` (payload and initrd copied, not mapped;
//! records named `ours-copy`).
//! QEMU always boots the bzImage (its microvm ELF/PVH path froze the test
//! host, docs/benchmarks.md).
//!
//! For each of N rounds it boots the same guest with our VMM and with QEMU
//! `-M microvm` (one at a time, 1 vCPU, same kernel, initramfs and kernel
//! command line), and prints one `@@BENCH {json}` line per boot with the
//! times from process start to the first KVM VM entry and to the guest's
//! boot-timer write (its `/init`), both taken from the test host kernel's
//! tracepoints, and the VMM's resident memory minus guest memory at that
//! moment. Exits 1 if any run produced no measurement.

mod runner;
mod tracefs;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bootbench::record::{
    self, Failure, Sample, OURS, OURS_COPY, OURS_ELF, OURS_ELF_MAP, QEMU_MICROVM,
};
use bootbench::stats;

use runner::{Probes, VmmCommand};
use tracefs::Instance;

/// The guest's boot-timer port (its `/init` writes one byte there).
const BOOT_TIMER_PORT: u16 = 0x4f0;
/// Kernel command line our VMM always puts first (see `vmm run --help`).
const OURS_DEFAULT_CMDLINE: &str = "console=ttyS0 reboot=acpi panic=-1 pci=off";
/// What the benchmark appends to the guest command line: a quiet boot (no
/// console output to pay for while it boots), then the guest scenario
/// `boot-profile` dumps the kernel log (`dmesg`) and powers off.
const BENCH_CMDLINE: &str = "quiet guest.scenario=boot-profile";

/// Command-line options.
#[derive(Debug, Clone)]
struct Options {
    runs: u32,
    mem_mib: u64,
    timeout: Duration,
    vmm: PathBuf,
    qemu: PathBuf,
    kernel: PathBuf,
    initrd: PathBuf,
    /// The same kernel as an ELF vmlinux, booted by our VMM too.
    elf: Option<PathBuf>,
    /// Whether our VMM boots the bzImage (`--no-bzimage` turns it off).
    bzimage: bool,
    /// Whether our VMM also boots the ELF with its boot files mapped.
    elf_map: bool,
    /// Whether our VMM also boots the bzImage with its boot files copied.
    bzimage_copy: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            runs: 5,
            mem_mib: 128,
            timeout: Duration::from_secs(120),
            vmm: "/bin/vmm".into(),
            qemu: "/usr/bin/qemu-system-x86_64".into(),
            kernel: "/guest/vmlinuz".into(),
            initrd: "/guest/initramfs.cpio.gz".into(),
            elf: None,
            bzimage: true,
            elf_map: false,
            bzimage_copy: false,
        }
    }
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Options> {
    let mut o = Options::default();
    let mut it = args.into_iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--runs" => o.runs = value()?.parse().context("--runs")?,
            "--mem" => o.mem_mib = value()?.parse().context("--mem")?,
            "--timeout" => o.timeout = Duration::from_secs(value()?.parse().context("--timeout")?),
            "--vmm" => o.vmm = value()?.into(),
            "--qemu" => o.qemu = value()?.into(),
            "--kernel" => o.kernel = value()?.into(),
            "--initrd" => o.initrd = value()?.into(),
            "--elf" => o.elf = Some(value()?.into()),
            "--no-bzimage" => o.bzimage = false,
            "--elf-map" => o.elf_map = true,
            "--bzimage-copy" => o.bzimage_copy = true,
            "-h" | "--help" => {
                println!(
                    "usage: bootbench [--runs N] [--mem MIB] [--timeout SECS] [--vmm PATH] \
                     [--qemu PATH] [--kernel PATH] [--initrd PATH] [--elf PATH] [--no-bzimage] [--elf-map] \
                     [--bzimage-copy]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (see --help)"),
        }
    }
    if o.runs == 0 {
        bail!("--runs must be at least 1");
    }
    if o.elf_map && o.elf.is_none() {
        bail!("--elf-map needs --elf PATH");
    }
    if o.bzimage_copy && !o.bzimage {
        bail!("--bzimage-copy needs the bzImage booted (drop --no-bzimage)");
    }
    if !o.bzimage && o.elf.is_none() {
        bail!("--no-bzimage needs --elf PATH (our VMM must boot something)");
    }
    Ok(o)
}

/// Our VMM's command: 1 vCPU, serial output to stdout (read by bootbench).
fn ours(o: &Options) -> VmmCommand {
    let s = |x: &str| x.to_string();
    VmmCommand {
        name: OURS,
        program: o.vmm.clone(),
        args: vec![
            s("run"),
            s("--cpus"),
            s("1"),
            s("--mem"),
            o.mem_mib.to_string(),
            s("--serial"),
            s("type=stdout"),
            s("--initrd"),
            o.initrd.display().to_string(),
            s("--params"),
            s(BENCH_CMDLINE),
            o.kernel.display().to_string(),
        ],
        env: Vec::new(),
    }
}

/// Our VMM booting the ELF `vmlinux` `elf` instead of the bzImage.
fn ours_elf(o: &Options, elf: &Path) -> VmmCommand {
    let mut cmd = ours(o);
    cmd.name = OURS_ELF;
    if let Some(kernel) = cmd.args.last_mut() {
        *kernel = elf.display().to_string();
    }
    cmd
}

/// The commands of one round, in order: ours (bzImage), ours (ELF), QEMU.
fn commands(o: &Options) -> Vec<VmmCommand> {
    let mut cmds = Vec::new();
    if o.bzimage {
        cmds.push(ours(o));
        if o.bzimage_copy {
            let mut copied = ours(o);
            copied.name = OURS_COPY;
            copied.env = vec![("VMSTACK_BOOT_FILES".into(), "copy".into())];
            cmds.push(copied);
        }
    }
    if let Some(elf) = &o.elf {
        cmds.push(ours_elf(o, elf));
        if o.elf_map {
            let mut mapped = ours_elf(o, elf);
            mapped.name = OURS_ELF_MAP;
            mapped.env = vec![("VMSTACK_BOOT_FILES".into(), "map".into())];
            cmds.push(mapped);
        }
    }
    cmds.push(qemu(o));
    cmds
}

/// QEMU `-M microvm` with the same guest and the same full kernel command line.
fn qemu(o: &Options) -> VmmCommand {
    let s = |x: &str| x.to_string();
    VmmCommand {
        name: QEMU_MICROVM,
        program: o.qemu.clone(),
        args: vec![
            s("-M"),
            s("microvm"),
            s("-accel"),
            s("kvm"),
            s("-cpu"),
            s("host"),
            s("-smp"),
            s("1"),
            s("-m"),
            o.mem_mib.to_string(),
            s("-nodefaults"),
            s("-no-user-config"),
            s("-display"),
            s("none"),
            s("-serial"),
            s("stdio"),
            s("-bios"),
            s("/usr/share/qemu/bios-microvm.bin"),
            s("-kernel"),
            o.kernel.display().to_string(),
            s("-initrd"),
            o.initrd.display().to_string(),
            s("-append"),
            format!("{OURS_DEFAULT_CMDLINE} {BENCH_CMDLINE}"),
        ],
        env: Vec::new(),
    }
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|e| format!("unreadable: {e}"))
}

/// Runs `program args` and returns its first stdout line, or an error with its stderr.
fn first_line(program: &Path, args: &[&str]) -> Result<String> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {}", program.display()))?;
    if !out.status.success() {
        bail!(
            "{} {} failed ({}): {}",
            program.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string())
}

fn print_summary(samples: &[Sample]) {
    for vmm in [OURS, OURS_COPY, OURS_ELF, OURS_ELF_MAP, QEMU_MICROVM] {
        let of: Vec<&Sample> = samples.iter().filter(|s| s.vmm == vmm).collect();
        if of.is_empty() {
            continue;
        }
        let pick = |f: fn(&Sample) -> f64| {
            stats::median(&of.iter().map(|s| f(s)).collect::<Vec<_>>())
                .map(|m| format!("{m:.1}"))
                .unwrap_or_else(|| "-".into())
        };
        println!(
            "bootbench: {vmm}: {} runs, median first entry {} ms, /init {} ms, overhead {} KiB",
            of.len(),
            pick(|s| s.first_entry_ms),
            pick(|s| s.init_ms),
            pick(|s| s.overhead_kib as f64),
        );
    }
}

fn main() {
    if let Err(e) = real_main() {
        println!("bootbench: error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    let o = parse_args(std::env::args().skip(1))?;
    for p in [&o.vmm, &o.qemu, &o.kernel, &o.initrd]
        .into_iter()
        .chain(o.elf.as_ref())
    {
        if !p.is_file() {
            bail!("{} is missing", p.display());
        }
    }
    let qemu_version = first_line(&o.qemu, &["--version"])?;
    let root = tracefs::mount()?;
    let probes = Probes {
        entry: Instance::create(&root, "bootbench_entry", "kvm/kvm_entry", None, 16, false)?,
        pio: Instance::create(
            &root,
            "bootbench_pio",
            "kvm/kvm_pio",
            Some(&format!("port == {BOOT_TIMER_PORT}")),
            64,
            false,
        )?,
    };
    let commands = commands(&o);
    let info = serde_json::json!({
        "runs": o.runs,
        "mem_mib": o.mem_mib,
        "vcpus": 1,
        "host_kernel": read_trimmed("/proc/sys/kernel/osrelease"),
        "host_cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "thp": read_trimmed("/sys/kernel/mm/transparent_hugepage/enabled"),
        "qemu_version": qemu_version,
        "trace_clock": "mono",
        "poll_ms": runner::POLL.as_millis(),
        "timeout_s": o.timeout.as_secs(),
        "commands": commands
            .iter()
            .map(|c| (c.name.to_string(), serde_json::Value::String(c.display())))
            .collect::<serde_json::Map<_, _>>(),
    });
    println!("{}{info}", record::INFO_PREFIX);

    let mut samples = Vec::new();
    let mut failures = 0u32;
    for run in 1..=o.runs {
        for cmd in &commands {
            match runner::measure(cmd, run, &probes, o.mem_mib, o.timeout) {
                Ok(s) => {
                    println!(
                        "bootbench: {} run {run}: first entry {:.1} ms, /init {:.1} ms, \
                         rss {} KiB = guest {} KiB + overhead {} KiB \
                         (file-backed {} KiB, THP {} KiB)",
                        s.vmm,
                        s.first_entry_ms,
                        s.init_ms,
                        s.rss_total_kib,
                        s.guest_rss_kib,
                        s.overhead_kib,
                        s.overhead_file_kib,
                        s.overhead_thp_kib
                    );
                    println!(
                        "{}{}",
                        record::SAMPLE_PREFIX,
                        serde_json::to_string(&s).context("serializing a sample")?
                    );
                    samples.push(s);
                }
                Err(e) => {
                    failures += 1;
                    println!("bootbench: {} run {run} FAILED: {:#}", cmd.name, e.error);
                    for l in &e.stderr_tail {
                        println!("bootbench:   {} stderr: {l}", cmd.name);
                    }
                    let f = Failure {
                        vmm: cmd.name.to_string(),
                        run,
                        error: format!("{:#}", e.error),
                        stderr_tail: e.stderr_tail,
                    };
                    println!(
                        "{}{}",
                        record::FAIL_PREFIX,
                        serde_json::to_string(&f).context("serializing a failure")?
                    );
                }
            }
        }
    }
    print_summary(&samples);
    println!(
        "{}{}",
        record::DONE_PREFIX,
        serde_json::json!({ "runs": o.runs, "samples": samples.len(), "failures": failures })
    );
    if failures > 0 {
        bail!("{failures} run(s) produced no measurement");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args() {
        let o = parse_args(["--runs", "7", "--mem", "256"].map(String::from)).unwrap();
        assert_eq!((o.runs, o.mem_mib), (7, 256));
        assert!(parse_args(["--runs"].map(String::from)).is_err());
        assert!(parse_args(["--runs", "0"].map(String::from)).is_err());
        assert!(parse_args(["--bogus"].map(String::from)).is_err());
    }

    #[test]
    fn both_vmms_get_the_same_guest() {
        let o = Options::default();
        let (a, b) = (ours(&o).display(), qemu(&o).display());
        for needle in ["/guest/vmlinuz", "/guest/initramfs.cpio.gz", BENCH_CMDLINE] {
            assert!(a.contains(needle) && b.contains(needle), "{needle}");
        }
        assert!(b.contains(OURS_DEFAULT_CMDLINE));
        assert!(a.contains("--cpus 1 --mem 128") && b.contains("-smp 1 -m 128"));
    }

    #[test]
    fn elf_variant_boots_the_vmlinux_with_the_same_arguments() {
        let o = parse_args(["--elf", "/guest/vmlinux"].map(String::from)).unwrap();
        let cmds = commands(&o);
        let names: Vec<_> = cmds.iter().map(|c| c.name).collect();
        assert_eq!(names, [OURS, OURS_ELF, QEMU_MICROVM]);
        let (bz, elf) = (cmds[0].display(), cmds[1].display());
        assert!(elf.ends_with(" /guest/vmlinux") && bz.ends_with(" /guest/vmlinuz"));
        assert_eq!(
            bz.trim_end_matches("/guest/vmlinuz"),
            elf.trim_end_matches("/guest/vmlinux")
        );
        let only = parse_args(["--elf", "/e", "--no-bzimage"].map(String::from)).unwrap();
        assert_eq!(
            commands(&only).iter().map(|c| c.name).collect::<Vec<_>>(),
            [OURS_ELF, QEMU_MICROVM]
        );
        assert!(parse_args(["--no-bzimage"].map(String::from)).is_err());
        assert!(parse_args(["--elf-map"].map(String::from)).is_err());
        let ab =
            parse_args(["--elf", "/e", "--no-bzimage", "--elf-map"].map(String::from)).unwrap();
        let cmds = commands(&ab);
        assert_eq!(
            cmds.iter().map(|c| c.name).collect::<Vec<_>>(),
            [OURS_ELF, OURS_ELF_MAP, QEMU_MICROVM]
        );
        assert_eq!(
            cmds[1].display(),
            format!("VMSTACK_BOOT_FILES=map {}", cmds[0].display())
        );
        let copy_ab = parse_args(["--bzimage-copy"].map(String::from)).unwrap();
        let cmds = commands(&copy_ab);
        assert_eq!(
            cmds.iter().map(|c| c.name).collect::<Vec<_>>(),
            [OURS, OURS_COPY, QEMU_MICROVM]
        );
        assert_eq!(
            cmds[1].display(),
            format!("VMSTACK_BOOT_FILES=copy {}", cmds[0].display())
        );
        assert!(
            parse_args(["--elf", "/e", "--no-bzimage", "--bzimage-copy"].map(String::from))
                .is_err()
        );
    }
}
