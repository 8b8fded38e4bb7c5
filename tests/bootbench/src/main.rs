//! `bootbench`: boot benchmark driver, run inside the nested test host by
//! `prebuilts/testhost/scenarios/bench-boot.sh` (see `docs/benchmarks.md`).
//!
//! ```text
//! bootbench [--runs N] [--mem MIB] [--timeout SECS] [--vmm PATH] [--qemu PATH]
//!           [--kernel PATH] [--initrd PATH] [--elf PATH] [--no-bzimage] [--elf-map]
//!           [--elf-copy] [--bzimage-copy]
//! ```
//!
//! `--elf PATH`: our VMM also boots the same kernel as an ELF `vmlinux`
//! (records named `ours-elf`); `--no-bzimage`: our VMM boots only the ELF;
//! `--elf-map`: it also boots the ELF with `VMSTACK_BOOT_FILES=map` (kernel
//! segments mapped copy-on-write too, not copied; records named
//! `ours-elf-map`); `--elf-copy`: it also boots the ELF with
//! `VMSTACK_BOOT_FILES=copy` (segments copied before the first entry, not
//! filled behind the guest; records named `ours-elf-copy`); `--bzimage-copy`: it also boots the bzImage with
//! `VMSTACK_BOOT_FILES=copy` (payload and initrd copied, not mapped;
//! records named `ours-copy`).
//! QEMU always boots the bzImage (its microvm ELF/PVH path froze the test
//! host, docs/benchmarks.md).
//!
//! For each of N rounds it boots the same guest with our VMM and with QEMU
//! (one at a time, 1 vCPU, same kernel, initramfs and kernel command line;
//! `-M microvm` when built for x86_64, `-M virt` when built for aarch64,
//! see [`Platform`]), and prints one `@@BENCH {json}` line per boot with the
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
    self, Failure, Sample, OURS, OURS_COPY, OURS_ELF, OURS_ELF_COPY, OURS_ELF_MAP, QEMU_MICROVM,
    QEMU_VIRT,
};
use bootbench::stats;

use runner::{Probes, VmmCommand};
use tracefs::Instance;

/// What differs between the architectures bootbench is built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Platform {
    /// The tracepoint of the guest's boot-timer write (its `/init`).
    timer_event: &'static str,
    /// Its filter: only the boot-timer write.
    timer_filter: &'static str,
    /// The QEMU peer's record name.
    qemu_name: &'static str,
    /// The QEMU peer's default program.
    qemu_program: &'static str,
    /// QEMU's machine arguments (before the common `-smp 1 -m N ...`).
    qemu_machine: &'static [&'static str],
    /// The kernel command line QEMU's guest gets first: our VMM's defaults
    /// (see `vmm run --help`), with QEMU's console device.
    qemu_cmdline: &'static str,
}

/// x86_64: the boot timer is I/O port 0x4f0; QEMU `-M microvm` with its
/// qboot firmware (`-bios`, the file the xtask copies into the test host).
const X86_64: Platform = Platform {
    timer_event: "kvm/kvm_pio",
    timer_filter: "port == 0x4f0",
    qemu_name: QEMU_MICROVM,
    qemu_program: "/usr/bin/qemu-system-x86_64",
    qemu_machine: &[
        "-M",
        "microvm",
        "-accel",
        "kvm",
        "-cpu",
        "host",
        "-bios",
        "/usr/share/qemu/bios-microvm.bin",
    ],
    qemu_cmdline: "console=ttyS0 reboot=acpi panic=-1 pci=off",
};

/// aarch64: the boot timer is a one-byte MMIO write of 123 to 0x9010000
/// (`kvm_mmio` type 2 is a write; the filter on it and the value keeps
/// other accesses out). QEMU `-M virt` with the in-kernel GICv3, the kernel
/// booted directly (no firmware), console on its PL011 (`ttyAMA0`), and:
/// - `-cpu host,pauth=off,pmu=off,sve=off,kvm-steal-time=off`: the vCPU
///   features our VMM gives its guest (only PSCI 0.2). Pointer
///   authentication must be off in any case: with it the guest dies at its
///   first key-register write (`msr apiakeylo_el1`, an undefined
///   instruction injected by pKVM) and reboots forever;
/// - `initcall_blacklist=pl031_driver_init`: 0x9010000 is the data register
///   of QEMU's PL031 RTC; with its built-in driver bound, the Debian
///   kernel's `CONFIG_IO_STRICT_DEVMEM` refuses `/init`'s `devmem` mapping
///   of it ("mmap: Operation not permitted") and there is no boot-timer
///   write. Unbound, the write reaches QEMU (which ignores a write to the
///   read-only register) through a KVM MMIO exit, as for our VMM.
const AARCH64: Platform = Platform {
    timer_event: "kvm/kvm_mmio",
    timer_filter: "type == 2 && gpa == 0x9010000 && val == 123",
    qemu_name: QEMU_VIRT,
    qemu_program: "/usr/bin/qemu-system-aarch64",
    qemu_machine: &[
        "-M",
        "virt,gic-version=3",
        "-accel",
        "kvm",
        "-cpu",
        "host,pauth=off,pmu=off,sve=off,kvm-steal-time=off",
    ],
    qemu_cmdline: "console=ttyAMA0 panic=-1 initcall_blacklist=pl031_driver_init",
};

/// The platform of the architecture bootbench was built for.
fn platform() -> Platform {
    if cfg!(target_arch = "aarch64") {
        AARCH64
    } else {
        X86_64
    }
}
/// What the benchmark appends to the guest command line: a quiet boot (no
/// console output to pay for while it boots), then the guest scenario
/// `boot-profile` dumps the kernel log (`dmesg`) and powers off.
const BENCH_CMDLINE: &str = "quiet guest.scenario=boot-profile";

/// Command-line options.
#[derive(Debug, Clone)]
struct Options {
    platform: Platform,
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
    /// Whether our VMM also boots the ELF with its boot files copied.
    elf_copy: bool,
    /// Whether our VMM also boots the bzImage with its boot files copied.
    bzimage_copy: bool,
}

impl Default for Options {
    fn default() -> Self {
        let platform = platform();
        Self {
            platform,
            runs: 5,
            mem_mib: 128,
            timeout: Duration::from_secs(120),
            vmm: "/bin/vmm".into(),
            qemu: platform.qemu_program.into(),
            kernel: "/guest/vmlinuz".into(),
            initrd: "/guest/initramfs.cpio.gz".into(),
            elf: None,
            bzimage: true,
            elf_map: false,
            elf_copy: false,
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
            "--elf-copy" => o.elf_copy = true,
            "--bzimage-copy" => o.bzimage_copy = true,
            "-h" | "--help" => {
                println!(
                    "usage: bootbench [--runs N] [--mem MIB] [--timeout SECS] [--vmm PATH] \
                     [--qemu PATH] [--kernel PATH] [--initrd PATH] [--elf PATH] [--no-bzimage] [--elf-map] \
                     [--elf-copy] [--bzimage-copy]"
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
    if o.elf_copy && o.elf.is_none() {
        bail!("--elf-copy needs --elf PATH");
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
        if o.elf_copy {
            let mut copied = ours_elf(o, elf);
            copied.name = OURS_ELF_COPY;
            copied.env = vec![("VMSTACK_BOOT_FILES".into(), "copy".into())];
            cmds.push(copied);
        }
    }
    cmds.push(qemu(o));
    cmds
}

/// QEMU (`-M microvm`, `-M virt`) with the same guest and the same full
/// kernel command line (but for the console device on aarch64).
fn qemu(o: &Options) -> VmmCommand {
    let s = |x: &str| x.to_string();
    let p = o.platform;
    let mut args: Vec<String> = p.qemu_machine.iter().map(|a| s(a)).collect();
    args.extend([
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
        s("-kernel"),
        o.kernel.display().to_string(),
        s("-initrd"),
        o.initrd.display().to_string(),
        s("-append"),
        format!("{} {BENCH_CMDLINE}", p.qemu_cmdline),
    ]);
    VmmCommand {
        name: p.qemu_name,
        program: o.qemu.clone(),
        args,
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
    for vmm in [
        OURS,
        OURS_COPY,
        OURS_ELF,
        OURS_ELF_MAP,
        OURS_ELF_COPY,
        QEMU_MICROVM,
        QEMU_VIRT,
    ] {
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
    let p = o.platform;
    let probes = Probes {
        entry: Instance::create(&root, "bootbench_entry", "kvm/kvm_entry", None, 16, false)?,
        timer: Instance::create(
            &root,
            "bootbench_timer",
            p.timer_event,
            Some(p.timer_filter),
            64,
            false,
        )?,
        timer_event: p.timer_event.trim_start_matches("kvm/"),
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
                    for l in &e.console_tail {
                        println!("bootbench:   {} console: {l}", cmd.name);
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
        assert!(b.contains(X86_64.qemu_cmdline));
        assert!(a.contains("--cpus 1 --mem 128") && b.contains("-smp 1 -m 128"));
    }

    #[test]
    fn the_aarch64_peer_is_qemu_virt_with_its_console_and_the_mmio_timer() {
        let o = Options {
            platform: AARCH64,
            qemu: AARCH64.qemu_program.into(),
            ..parse_args(["--mem", "256"].map(String::from)).unwrap()
        };
        let (a, q) = (ours(&o), qemu(&o));
        assert_eq!(q.name, QEMU_VIRT);
        let b = q.display();
        assert!(
            b.starts_with(
                "/usr/bin/qemu-system-aarch64 -M virt,gic-version=3 -accel kvm \
                 -cpu host,pauth=off,pmu=off,sve=off,kvm-steal-time=off -smp 1 -m 256"
            ),
            "{b}"
        );
        assert!(!b.contains("bios") && !b.contains("microvm"), "{b}");
        assert!(
            b.contains(&format!(
                "\"console=ttyAMA0 panic=-1 initcall_blacklist=pl031_driver_init {BENCH_CMDLINE}\""
            )),
            "{b}"
        );
        for needle in ["/guest/vmlinuz", "/guest/initramfs.cpio.gz", BENCH_CMDLINE] {
            assert!(
                a.display().contains(needle) && b.contains(needle),
                "{needle}"
            );
        }
        assert!(AARCH64.timer_filter.contains("gpa == 0x9010000"));
        assert_eq!(X86_64.qemu_name, QEMU_MICROVM);
        // The host's own build picks its platform.
        let native = if cfg!(target_arch = "aarch64") {
            AARCH64
        } else {
            X86_64
        };
        assert_eq!(platform(), native);
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
        let fill_ab =
            parse_args(["--elf", "/e", "--no-bzimage", "--elf-copy"].map(String::from)).unwrap();
        let cmds = commands(&fill_ab);
        assert_eq!(
            cmds.iter().map(|c| c.name).collect::<Vec<_>>(),
            [OURS_ELF, OURS_ELF_COPY, QEMU_MICROVM]
        );
        assert_eq!(
            cmds[1].display(),
            format!("VMSTACK_BOOT_FILES=copy {}", cmds[0].display())
        );
        assert!(parse_args(["--elf-copy"].map(String::from)).is_err());
    }
}
