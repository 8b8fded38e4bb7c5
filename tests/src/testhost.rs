//! Boots the nested test host and collects per-scenario results.
//!
//! The test host is `qemu-system-x86_64 -accel tcg -cpu max,-erms,-fsrm -smp 1`
//! (or `qemu-system-aarch64 -M virt,virtualization=on -cpu neoverse-n2`) running a
//! Debian kernel and an initramfs built by `cargo xtask images`. Its `/init`
//! loads the KVM modules, prints `VMSTACK-TESTHOST-READY`, then runs each
//! scenario named in `th.scenarios=a,b,c` wrapped in
//! `@@BEGIN <name>` / `@@END <name> rc=<exit code>` console lines, and powers off.
//!
//! [`run`] starts QEMU with a hard timeout (the process is killed on expiry),
//! writes the whole console to a log file, optionally echoes it live, and
//! [`parse_sections`] turns the console into [`ScenarioResult`]s.
//!
//! Past 800 lines: the runner (QEMU command line, watchdog, freeze retries,
//! console sections) is ~960 lines of one concern; its unit tests follow.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::Arch;

/// Console line printed by the test host's `/init` once `/dev/kvm` is usable.
pub const READY_MARKER: &str = "VMSTACK-TESTHOST-READY";
/// Console line printed by the test host's `/init` after the last scenario.
pub const DONE_MARKER: &str = "VMSTACK-TESTHOST-DONE";
/// Prefix of the line that opens a scenario section.
pub const BEGIN_PREFIX: &str = "@@BEGIN ";
/// Prefix of the line that closes a scenario section.
pub const END_PREFIX: &str = "@@END ";
/// File name of the test host kernel inside an images directory.
pub const TESTHOST_KERNEL: &str = "testhost-vmlinuz";
/// File name of the test host initramfs inside an images directory.
pub const TESTHOST_INITRD: &str = "testhost-initramfs.cpio.gz";
/// Directory (a symlink into the cache) inside an images directory: the
/// unpacked Debian packages of the test host's QEMU (`prebuilts/<arch>.lock`,
/// group `qemu`). Without it the system's `qemu-system-x86_64` /
/// `qemu-system-aarch64` is used.
pub const TESTHOST_QEMU_DIR: &str = "testhost-qemu";
/// File name of the build manifest inside an images directory.
pub const MANIFEST: &str = "manifest.json";
/// Per-scenario timeout enforced inside the test host unless configured otherwise.
pub const DEFAULT_SCENARIO_TIMEOUT: Duration = Duration::from_secs(120);
/// CPU model of the x86_64 test host ([`CPU_ENV_X86_64`] overrides it):
/// QEMU's `max` without ERMS and FSRM. With them Linux copies memory with
/// `rep movsb`, which TCG emulates byte by byte: a tmpfs read ran at 371
/// MiB/s with them and 1506 MiB/s without, a unix socket pair at 103 and
/// 282 MiB/s (scenario `copy-speed`, docs/testing.md). Inner guests inherit
/// the model through KVM's supported CPUID.
pub const TESTHOST_CPU: &str = "max,-erms,-fsrm";
/// CPU model of the aarch64 test host under the locked QEMU 10
/// ([`CPU_ENV_AARCH64`] overrides it): Neoverse N2 (Armv9.0) has
/// FEAT_EVT, so pKVM traps the cache ID registers with `HCR_EL2.TID4`
/// instead of `TID2`, which also trapped every guest `CTR_EL0` read (~24 s
/// per inner boot under TCG, docs/notes/2026-12-06-arm64-early-boot.md).
/// Not QEMU 10's `max`: it has FEAT_MOPS, which the inner guests' busybox
/// then uses and pKVM does not enable at EL0 (SIGILL). `pauth-impdef`: a
/// cheap pointer-authentication algorithm, much faster under TCG than the
/// architected QARMA.
pub const TESTHOST_CPU_AARCH64: &str = "neoverse-n2,pauth-impdef=on";
/// CPU model of the aarch64 test host under a QEMU from `PATH` (bookworm's
/// 7.2 has no Neoverse N2).
pub const TESTHOST_CPU_AARCH64_PATH_QEMU: &str = "max,pauth-impdef=on";
/// Environment variable that overrides the x86_64 test host's `-cpu`.
pub const CPU_ENV_X86_64: &str = "VMSTACK_TESTHOST_CPU_X86_64";
/// Environment variable that overrides the aarch64 test host's `-cpu`.
pub const CPU_ENV_AARCH64: &str = "VMSTACK_TESTHOST_CPU_AARCH64";
/// The old, unsuffixed name: still read, for the x86_64 test host only
/// (it once applied to both, and an x86 model breaks the arm64 runs);
/// [`CPU_ENV_X86_64`] wins when both are set.
pub const CPU_ENV_X86_64_OLD: &str = "VMSTACK_TESTHOST_CPU";

/// The `-cpu` override of the `arch` test host, read through `env` (the
/// process environment in [`cpu_override`]); empty values count as unset.
fn cpu_override_from(arch: Arch, env: impl Fn(&str) -> Option<String>) -> Option<String> {
    let names: &[&str] = match arch {
        Arch::X86_64 => &[CPU_ENV_X86_64, CPU_ENV_X86_64_OLD],
        Arch::Aarch64 => &[CPU_ENV_AARCH64],
    };
    names
        .iter()
        .find_map(|name| env(name).filter(|v| !v.is_empty()))
}

/// The `-cpu` model the environment sets for the `arch` test host
/// ([`CPU_ENV_X86_64`] or its old name [`CPU_ENV_X86_64_OLD`];
/// [`CPU_ENV_AARCH64`]), if any.
pub fn cpu_override(arch: Arch) -> Option<String> {
    cpu_override_from(arch, |name| std::env::var(name).ok())
}
/// The x86_64 test host is declared frozen when its heartbeat (a line every
/// 5 s on its second serial port, `th.heartbeat=ttyS1`) stops for this long.
pub const FREEZE_AFTER: Duration = Duration::from_secs(90);
/// After this long without a heartbeat the watchdog first tries to wake the
/// test host: the frozen CPUs it caught all had a deliverable LAPIC timer
/// interrupt pending that QEMU never delivered, so it raises a fresh one
/// (a key press through the QEMU monitor: an i8042 interrupt makes QEMU
/// re-evaluate the LAPIC), then an NMI after twice as long, and records the
/// CPU state and whether the heartbeat came back (docs/testing.md).
pub const KICK_AFTER: Duration = Duration::from_secs(15);
/// Number of console lines shown in failure reports.
pub const REPORT_TAIL_LINES: usize = 200;

/// Errors of the test host runner.
#[derive(Debug, thiserror::Error)]
pub enum TestHostError {
    /// A required image file is missing.
    #[error(
        "test host image {path} not found: run `cargo xtask test` (or `cargo xtask images`) first"
    )]
    MissingImage {
        /// The missing file.
        path: PathBuf,
    },
    /// QEMU could not be started.
    #[error(
        "cannot start {program}: {source} (install qemu-system-x86, or run `cargo xtask test`)"
    )]
    Spawn {
        /// The program that failed to start.
        program: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// An I/O error on the console log or while supervising QEMU.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Configuration of one test host boot.
#[derive(Debug, Clone)]
pub struct TestHostConfig {
    /// Architecture of the test host (decides the QEMU machine and console).
    pub arch: Arch,
    /// QEMU binary (the locked package's under [`TESTHOST_QEMU_DIR`] if the
    /// images have it, else `qemu-system-x86_64` / `qemu-system-aarch64` from `PATH`).
    pub qemu: PathBuf,
    /// Data directory searched first for firmware and option ROMs (`-L`): the
    /// locked package's `usr/share/qemu`.
    pub qemu_data: Option<PathBuf>,
    /// `-cpu` model: [`TESTHOST_CPU`] / [`TESTHOST_CPU_AARCH64`] (or, with
    /// the `PATH` QEMU, [`TESTHOST_CPU_AARCH64_PATH_QEMU`]), unless the
    /// arch's variable says otherwise ([`cpu_override`]).
    pub cpu: String,
    /// Test host kernel (bzImage).
    pub kernel: PathBuf,
    /// Test host initramfs.
    pub initrd: PathBuf,
    /// Build manifest printed at the start of the run, if present.
    pub manifest: Option<PathBuf>,
    /// Scenarios to run, in order (`th.scenarios=`).
    pub scenarios: Vec<String>,
    /// Timeout of each scenario inside the test host (`th.timeout=`).
    pub scenario_timeout: Duration,
    /// Hard timeout of the whole QEMU process; it is killed on expiry.
    pub timeout: Duration,
    /// Memory of the outer machine in MiB.
    pub memory_mib: u32,
    /// Extra kernel command line words for the outer kernel.
    pub extra_append: Vec<String>,
    /// Where the full console is written.
    pub log_path: PathBuf,
    /// Echo the console live to this process's stdout.
    pub stream: bool,
    /// Echo only what this returns for each console line (`None`: skip the
    /// line) instead of the whole console; takes precedence over `stream`.
    /// The log file and the result still get every line.
    pub stream_filter: Option<StreamFilter>,
    /// Freeze watchdog (x86_64): the test host writes a heartbeat to its
    /// second serial port; if it stops for this long, the runner dumps the
    /// emulated CPU's state from the QEMU monitor and kills QEMU. `None`: off.
    pub freeze_after: Option<Duration>,
    /// With the watchdog on: silence after which it sends the test host a
    /// wake-up ([`KICK_AFTER`]).
    pub kick_after: Duration,
}

impl TestHostConfig {
    /// Configuration for the images in `images_dir` (as built by `cargo xtask images`),
    /// logging to a file in `log_dir` named after the scenarios.
    ///
    /// The hard timeout allows 60 s of outer boot plus each scenario's timeout.
    pub fn from_images_dir(
        images_dir: &Path,
        scenarios: &[&str],
        log_dir: &Path,
    ) -> Result<Self, TestHostError> {
        Self::for_arch(Arch::X86_64, images_dir, scenarios, log_dir)
    }

    /// Like [`Self::from_images_dir`] for the test host of `arch`. The
    /// aarch64 test host is slower (emulated EL2 + pKVM), so it gets 120 s
    /// for its own boot and a `-aarch64` log name.
    pub fn for_arch(
        arch: Arch,
        images_dir: &Path,
        scenarios: &[&str],
        log_dir: &Path,
    ) -> Result<Self, TestHostError> {
        let kernel = images_dir.join(TESTHOST_KERNEL);
        let initrd = images_dir.join(TESTHOST_INITRD);
        for path in [&kernel, &initrd] {
            if !path.is_file() {
                return Err(TestHostError::MissingImage { path: path.clone() });
            }
        }
        let manifest = images_dir.join(MANIFEST);
        let scenario_timeout = DEFAULT_SCENARIO_TIMEOUT;
        let n = u32::try_from(scenarios.len()).unwrap_or(u32::MAX);
        let boot = match arch {
            Arch::X86_64 => Duration::from_secs(60),
            Arch::Aarch64 => Duration::from_secs(120),
        };
        let timeout = boot + (scenario_timeout + Duration::from_secs(10)) * n;
        let suffix = match arch {
            Arch::X86_64 => "",
            Arch::Aarch64 => "-aarch64",
        };
        let log_name = format!("testhost{suffix}-{}.log", log_stem(&scenarios.join("+")));
        let locked_qemu = images_dir.join(TESTHOST_QEMU_DIR);
        let locked_bin = locked_qemu.join("usr/bin").join(arch.qemu());
        let (qemu, qemu_data, cpu) = if locked_bin.is_file() {
            let cpu = match arch {
                Arch::X86_64 => TESTHOST_CPU,
                Arch::Aarch64 => TESTHOST_CPU_AARCH64,
            };
            (locked_bin, Some(locked_qemu.join("usr/share/qemu")), cpu)
        } else {
            let cpu = match arch {
                Arch::X86_64 => TESTHOST_CPU,
                Arch::Aarch64 => TESTHOST_CPU_AARCH64_PATH_QEMU,
            };
            (PathBuf::from(arch.qemu()), None, cpu)
        };
        let cpu = cpu_override(arch).unwrap_or_else(|| cpu.into());
        Ok(Self {
            arch,
            qemu,
            qemu_data,
            cpu,
            kernel,
            initrd,
            manifest: manifest.is_file().then_some(manifest),
            scenarios: scenarios.iter().map(|s| s.to_string()).collect(),
            scenario_timeout,
            timeout,
            memory_mib: match arch {
                Arch::X86_64 => 2048,
                Arch::Aarch64 => 1024,
            },
            extra_append: Vec::new(),
            log_path: log_dir.join(log_name),
            stream: false,
            stream_filter: None,
            freeze_after: match arch {
                Arch::X86_64 => Some(FREEZE_AFTER),
                Arch::Aarch64 => None,
            },
            kick_after: KICK_AFTER,
        })
    }

    /// Gives each scenario `timeout` inside the test host; the hard timeout
    /// of the whole boot grows or shrinks with it (the boot allowance
    /// `for_arch` chose is kept).
    pub fn set_scenario_timeout(&mut self, timeout: Duration) {
        let scenarios = self.scenarios.len() as u32;
        let boot = self
            .timeout
            .saturating_sub((self.scenario_timeout + Duration::from_secs(10)) * scenarios);
        self.scenario_timeout = timeout;
        self.timeout = boot + (timeout + Duration::from_secs(10)) * scenarios;
    }

    /// File the heartbeat serial port writes to.
    pub fn heartbeat_path(&self) -> PathBuf {
        self.run_file("heartbeat")
    }

    /// Unix socket of the QEMU monitor, used after a freeze.
    pub fn monitor_path(&self) -> PathBuf {
        self.run_file("monitor")
    }

    /// `<tmp>/vmstack-<what>-<pid>-<hash of the log path>`: short (a socket
    /// path must stay under 108 bytes, a file name under 255, and log names
    /// grow with the scenario list) and without commas (QEMU options).
    fn run_file(&self, what: &str) -> PathBuf {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.log_path.hash(&mut h);
        std::env::temp_dir().join(format!(
            "vmstack-{what}-{}-{:016x}",
            std::process::id(),
            h.finish()
        ))
    }

    /// The outer kernel command line.
    pub fn append(&self) -> String {
        // x86_64: nested KVM without virtual GIF (kvm_amd.vgif=0, passed
        // to insmod by the test host's /init): the emulated machine has
        // frozen with every interrupt blocked while inner guests ran, and
        // vGIF lets KVM leave GIF handling to the emulated CPU. idle=poll:
        // the freeze watchdog caught the emulated CPU halted (HLT=1, IF=1)
        // with the LAPIC timer vector pending in IRR and deliverable, i.e.
        // a wake-up QEMU lost; a test host that never halts cannot wait
        // for one (docs/testing.md).
        // arm64: the PL011 of `-M virt`, and KVM in protected mode (pKVM).
        let console = match self.arch {
            Arch::X86_64 => "console=ttyS0 kvm_amd.vgif=0 idle=poll",
            Arch::Aarch64 => "console=ttyAMA0 kvm-arm.mode=protected",
        };
        let mut append = format!(
            "{console} panic=-1 th.scenarios={} th.timeout={}",
            self.scenarios.join(","),
            self.scenario_timeout.as_secs().max(1)
        );
        if self.freeze_after.is_some() {
            append.push_str(" th.heartbeat=ttyS1");
        }
        for word in &self.extra_append {
            append.push(' ');
            append.push_str(word);
        }
        append
    }

    /// The QEMU command that boots the test host (`-smp`
    /// [`Arch::testhost_cpus`]; aarch64: `-M virt` with EL2 and a GICv3).
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.qemu);
        if let Some(data) = &self.qemu_data {
            cmd.arg("-L").arg(data);
        }
        if self.arch == Arch::Aarch64 {
            cmd.args(["-M", "virt,virtualization=on,gic-version=3"]);
        }
        cmd.args(["-accel", "tcg", "-cpu"])
            .arg(&self.cpu)
            .arg("-smp")
            .arg(self.arch.testhost_cpus().to_string())
            .arg("-m");
        cmd.arg(self.memory_mib.to_string()).arg("-nographic");
        if self.freeze_after.is_some() {
            // ttyS0 stays the console (on stdio); ttyS1 carries the heartbeat.
            let mut heartbeat = std::ffi::OsString::from("file:");
            heartbeat.push(self.heartbeat_path());
            let mut monitor = std::ffi::OsString::from("unix:");
            monitor.push(self.monitor_path());
            monitor.push(",server=on,wait=off");
            cmd.args(["-serial", "stdio", "-serial"])
                .arg(heartbeat)
                .arg("-monitor")
                .arg(monitor);
        }
        cmd.args(["-no-reboot", "-kernel"])
            .arg(&self.kernel)
            .arg("-initrd")
            .arg(&self.initrd)
            .arg("-append")
            .arg(self.append());
        cmd
    }
}

/// The scenario list as a file name part: sanitized, and for long lists
/// (a file name has at most 255 bytes) cut to 120 characters plus a hash
/// of the whole list.
fn log_stem(list: &str) -> String {
    use std::hash::{Hash, Hasher};
    let clean = sanitize(list);
    if clean.len() <= 160 {
        return clean;
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    list.hash(&mut h);
    format!("{}-{:016x}", &clean[..120], h.finish())
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '+' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Output of one scenario, taken from between its `@@BEGIN`/`@@END` lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioResult {
    /// Scenario name.
    pub name: String,
    /// Console lines between the markers, joined with `\n`.
    pub output: String,
    /// Exit code from the `@@END` line; `None` if the section never ended.
    pub rc: Option<i32>,
}

impl ScenarioResult {
    /// Whether the scenario's output contains `needle`.
    pub fn contains(&self, needle: &str) -> bool {
        self.output.contains(needle)
    }
}

/// Result of one test host boot.
#[derive(Debug, Clone)]
pub struct TestHostRun {
    /// The whole console (stdout of QEMU, `\r` removed), followed by QEMU's stderr if any.
    pub console: String,
    /// File holding the full console.
    pub log_path: PathBuf,
    /// Wall time from start to exit.
    pub elapsed: Duration,
    /// Whether the hard timeout expired and QEMU was killed.
    pub timed_out: bool,
    /// Whether the freeze watchdog fired (the heartbeat stopped; QEMU was
    /// killed, the monitor's CPU state is at the end of `console`).
    pub froze: bool,
    /// QEMU's exit status (after a kill, the kill's status).
    pub status: Option<ExitStatus>,
    /// Times the heartbeat stopped for `kick_after` and the watchdog sent
    /// the test host a wake-up (each is noted in the console).
    pub kicks: u32,
    /// Scenario sections in console order.
    pub sections: Vec<ScenarioResult>,
    /// Warnings the test host's own kernel printed from its KVM code
    /// ([`host_kvm_warnings`]): the host that runs our VMM was itself
    /// in a state its kernel calls impossible.
    pub host_kvm_warnings: Vec<String>,
}

impl TestHostRun {
    /// The section of scenario `name`, if it was started.
    pub fn scenario(&self, name: &str) -> Option<&ScenarioResult> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// Whether the test host reached `VMSTACK-TESTHOST-READY`.
    pub fn ready(&self) -> bool {
        self.console.lines().any(|l| l.contains(READY_MARKER))
    }

    /// The last `n` console lines.
    pub fn console_tail(&self, n: usize) -> String {
        let lines: Vec<&str> = self.console.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// A failure report: `what`, run facts, the last [`REPORT_TAIL_LINES`]
    /// console lines and the path of the full log.
    pub fn failure_report(&self, what: &str) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "test host failure: {what}");
        let _ = writeln!(
            out,
            "  elapsed {:.1} s, timed out: {}, froze: {}, wake-ups: {}, qemu status: {}, ready marker: {}",
            self.elapsed.as_secs_f64(),
            self.timed_out,
            self.froze,
            self.kicks,
            self.status
                .map(|s| s.to_string())
                .unwrap_or_else(|| "unknown".into()),
            self.ready()
        );
        for w in &self.host_kvm_warnings {
            let _ = writeln!(out, "  the test host's KVM warned: {w}");
        }
        let _ = writeln!(
            out,
            "----- last {REPORT_TAIL_LINES} lines of the outer console -----"
        );
        let _ = writeln!(out, "{}", self.console_tail(REPORT_TAIL_LINES));
        let _ = writeln!(out, "----- end of console tail -----");
        let _ = writeln!(out, "full console log: {}", self.log_path.display());
        out
    }
}

/// The test host kernel's own warnings from its KVM code (`WARNING: CPU: N
/// PID: P at arch/arm64/kvm/...` or `.../virt/kvm/...`), one line each with
/// the printk timestamp removed. Only lines of the test host's kernel
/// count: inner guests' consoles reach the outer console as markers or
/// prefixed lines, never as a bare `WARNING:` line, and inner guests run
/// no KVM.
pub fn host_kvm_warnings(console: &str) -> Vec<String> {
    console
        .lines()
        .filter_map(|line| {
            let line = line.trim_end();
            let body = match line.strip_prefix('[') {
                Some(rest) => rest.split_once("] ")?.1,
                None => line,
            };
            let at = body.strip_prefix("WARNING: CPU: ")?.split_once(" at ")?.1;
            (at.contains("/kvm/")).then(|| body.to_string())
        })
        .collect()
}

/// Splits a console into `@@BEGIN name` / `@@END name rc=N` sections.
///
/// Markers are found anywhere in a line (a kernel message may share the line).
/// A section opened but never closed (timeout, crash, a new `@@BEGIN`) gets `rc: None`.
pub fn parse_sections(console: &str) -> Vec<ScenarioResult> {
    let mut done = Vec::new();
    let mut open: Option<(String, Vec<&str>)> = None;
    for raw in console.lines() {
        let line = raw.trim_end_matches('\r');
        if let Some(pos) = line.find(BEGIN_PREFIX) {
            if let Some((name, lines)) = open.take() {
                done.push(ScenarioResult {
                    name,
                    output: lines.join("\n"),
                    rc: None,
                });
            }
            let name = line[pos + BEGIN_PREFIX.len()..].trim().to_string();
            open = Some((name, Vec::new()));
            continue;
        }
        if let Some(pos) = line.find(END_PREFIX) {
            let rest = line[pos + END_PREFIX.len()..].trim();
            let mut words = rest.split_whitespace();
            let name = words.next().unwrap_or_default();
            let rc = words
                .find_map(|w| w.strip_prefix("rc="))
                .and_then(|v| v.parse::<i32>().ok());
            if let Some((open_name, lines)) = open.take() {
                if open_name == name {
                    done.push(ScenarioResult {
                        name: open_name,
                        output: lines.join("\n"),
                        rc,
                    });
                    continue;
                }
                open = Some((open_name, lines));
            }
        }
        if let Some((_, lines)) = open.as_mut() {
            lines.push(line);
        }
    }
    if let Some((name, lines)) = open {
        done.push(ScenarioResult {
            name,
            output: lines.join("\n"),
            rc: None,
        });
    }
    done
}

/// Key facts of an images `manifest.json` (kernel release, package, version and
/// sha256; VMM sha256), one `testhost:` line each.
pub fn manifest_summary(text: &str) -> String {
    let v: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return format!("testhost: unreadable manifest: {e}\n"),
    };
    let s = |p: &str| {
        v.pointer(p)
            .and_then(|x| x.as_str())
            .unwrap_or("?")
            .to_string()
    };
    let vmm = match v.get("vmm") {
        Some(serde_json::Value::Null) | None => "MISSING".to_string(),
        Some(_) => format!("sha256 {}", s("/vmm/sha256")),
    };
    let mut out = format!(
        "testhost: kernel {} ({} {} sha256 {})\ntesthost: vmm {vmm}\n",
        s("/kernel/release"),
        s("/kernel/package"),
        s("/kernel/version"),
        s("/kernel/sha256"),
    );
    if v.get("testhost_qemu").is_some_and(|q| !q.is_null()) {
        out.push_str(&format!(
            "testhost: qemu {} {} sha256 {}\n",
            s("/testhost_qemu/package"),
            s("/testhost_qemu/version"),
            s("/testhost_qemu/sha256"),
        ));
    }
    out
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> TestHostError {
    let what = what.into();
    move |source| TestHostError::Io { what, source }
}

/// Terminal control sequences SeaBIOS/QEMU print on the serial console (reset,
/// line-wrap off, clear screen); echoed live they would garble the user's terminal.
const TERMINAL_NOISE: &[&[u8]] = &[b"\x1bc", b"\x1b[?7l", b"\x1b[2J", b"\x1b[0m"];

/// Removes `\r` and [`TERMINAL_NOISE`] from a console line.
fn clean_line(line: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(line.len());
    let mut i = 0;
    'outer: while i < line.len() {
        if line[i] == b'\r' {
            i += 1;
            continue;
        }
        for seq in TERMINAL_NOISE {
            if line[i..].starts_with(seq) {
                i += seq.len();
                continue 'outer;
            }
        }
        out.push(line[i]);
        i += 1;
    }
    out
}

/// What a console line becomes on this process's stdout: the text to
/// print (without its newline), or `None` to leave it out.
pub type StreamFilter = fn(&str) -> Option<String>;

/// What [`pump`] echoes to stdout.
#[derive(Clone, Copy)]
enum Echo {
    /// Nothing.
    Off,
    /// Every line.
    All,
    /// What the filter makes of each line.
    Filtered(StreamFilter),
}

impl Echo {
    fn of(cfg: &TestHostConfig) -> Self {
        match (cfg.stream_filter, cfg.stream) {
            (Some(f), _) => Echo::Filtered(f),
            (None, true) => Echo::All,
            (None, false) => Echo::Off,
        }
    }
}

/// Copies `reader` into `sink`, the log file and (per `echo`) stdout, line by line.
fn pump(
    reader: impl Read + Send + 'static,
    sink: Arc<Mutex<Vec<u8>>>,
    log: Arc<Mutex<File>>,
    echo: Echo,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(reader);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let clean = clean_line(&buf);
            if let Ok(mut log) = log.lock() {
                let _ = log.write_all(&clean);
                let _ = log.flush();
            }
            match echo {
                Echo::Off => {}
                Echo::All => {
                    let mut out = std::io::stdout().lock();
                    let _ = out.write_all(&clean);
                    let _ = out.flush();
                }
                Echo::Filtered(filter) => {
                    let text = String::from_utf8_lossy(&clean);
                    if let Some(shown) = filter(text.trim_end_matches('\n')) {
                        let mut out = std::io::stdout().lock();
                        let _ = writeln!(out, "{shown}");
                        let _ = out.flush();
                    }
                }
            }
            if let Ok(mut sink) = sink.lock() {
                sink.extend_from_slice(&clean);
            }
        }
    })
}

/// How a supervised QEMU ended.
enum Ending {
    /// It exited by itself.
    Exited(ExitStatus),
    /// Killed at the hard timeout.
    TimedOut(Option<ExitStatus>),
    /// Killed by the freeze watchdog; the monitor's answers.
    Froze(Option<ExitStatus>, String),
}

/// Waits for QEMU until it exits, the hard timeout passes, or (with
/// `cfg.freeze_after`) its heartbeat file has not grown for that long once
/// it had started. Before that, a heartbeat silent for [`KICK_AFTER`] gets
/// the wake-ups described there; each is written to `note` (the console
/// and the log), with whether the heartbeat resumed.
fn supervise(
    child: &mut Child,
    cfg: &TestHostConfig,
    note: &dyn Fn(&str),
) -> Result<(Ending, u32), TestHostError> {
    let deadline = Instant::now() + cfg.timeout;
    let heartbeat = cfg.heartbeat_path();
    let mut last_size = 0u64;
    let mut last_change = Instant::now();
    // Wake-ups sent during the current silence (0: none) and in total.
    let mut wakeups_now = 0u32;
    let mut kicks = 0u32;
    loop {
        if let Some(status) = child.try_wait().map_err(io_err("waiting for qemu"))? {
            return Ok((Ending::Exited(status), kicks));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let status = child.wait().ok();
            return Ok((Ending::TimedOut(status), kicks));
        }
        if let Some(limit) = cfg.freeze_after {
            let size = std::fs::metadata(&heartbeat).map(|m| m.len()).unwrap_or(0);
            let silent = last_change.elapsed();
            if size != last_size {
                if wakeups_now > 0 {
                    note(&format!(
                        "[testhost: heartbeat resumed after {:.0} s of silence, {wakeups_now} wake-up(s)]",
                        silent.as_secs_f64()
                    ));
                }
                last_size = size;
                last_change = Instant::now();
                wakeups_now = 0;
            } else if size > 0 && silent >= limit {
                let state = monitor_commands(
                    &cfg.monitor_path(),
                    &["info registers", "info lapic", "info pic"],
                );
                let _ = child.kill();
                let status = child.wait().ok();
                return Ok((Ending::Froze(status, state), kicks));
            } else if size > 0 && silent >= cfg.kick_after * (wakeups_now + 1) && wakeups_now < 2 {
                let socket = cfg.monitor_path();
                let (wakeup, state) = if wakeups_now == 0 {
                    let state = monitor_commands(&socket, &["info registers", "info lapic"]);
                    ("sendkey shift", state)
                } else {
                    ("nmi", String::new())
                };
                let answer = monitor_commands(&socket, &[wakeup]);
                wakeups_now += 1;
                if wakeups_now == 1 {
                    kicks += 1;
                }
                note(&format!(
                    "[testhost: no heartbeat for {:.0} s; QEMU monitor `{wakeup}` (a lost-interrupt \
                     workaround, docs/testing.md)]\n{state}{answer}",
                    silent.as_secs_f64()
                ));
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends `commands` to the QEMU monitor at `socket` (e.g. the emulated
/// CPU's registers and local APIC: what a frozen test host was doing) and
/// returns the answers; errors become text.
fn monitor_commands(socket: &Path, commands: &[&str]) -> String {
    use std::os::unix::net::UnixStream;
    let mut out = String::new();
    let mut stream = match UnixStream::connect(socket) {
        Ok(s) => s,
        Err(e) => return format!("cannot connect to the monitor {}: {e}\n", socket.display()),
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(1500)));
    let mut buf = [0u8; 16384];
    let mut read_some = |stream: &mut UnixStream, out: &mut String| loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    };
    let mut greeting = String::new();
    read_some(&mut stream, &mut greeting);
    for command in commands {
        if stream.write_all(format!("{command}\n").as_bytes()).is_err() {
            break;
        }
        let mut answer = String::new();
        read_some(&mut stream, &mut answer);
        // Drop the monitor's line-editing echo (escape sequences) and prompts.
        let _ = writeln!(out, "(qemu) {command}");
        for line in answer.replace('\r', "").lines() {
            if !line.contains('\x1b') && line.trim() != "(qemu)" {
                let _ = writeln!(out, "{line}");
            }
        }
    }
    out
}

/// Boots the test host described by `cfg` and waits for it (at most `cfg.timeout`).
///
/// A timeout is not an error: the returned run has `timed_out` set and whatever
/// console was captured. Errors are only for failing to start QEMU or to write the log.
pub fn run(cfg: &TestHostConfig) -> Result<TestHostRun, TestHostError> {
    if let Some(dir) = cfg.log_path.parent() {
        std::fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
    }
    let log = File::create(&cfg.log_path)
        .map_err(io_err(format!("creating {}", cfg.log_path.display())))?;
    let log = Arc::new(Mutex::new(log));

    let mut header = String::new();
    let cmd = cfg.command();
    let _ = writeln!(header, "testhost: {cmd:?}");
    if let Some(manifest) = &cfg.manifest {
        let _ = writeln!(header, "testhost: images manifest {}", manifest.display());
        match std::fs::read_to_string(manifest) {
            Ok(text) => header.push_str(&manifest_summary(&text)),
            Err(e) => {
                let _ = writeln!(header, "testhost: cannot read {}: {e}", manifest.display());
            }
        }
    }
    let _ = writeln!(header, "testhost: console log {}", cfg.log_path.display());
    eprint!("{header}");
    if let Ok(mut log) = log.lock() {
        log.write_all(header.as_bytes())
            .map_err(io_err(format!("writing {}", cfg.log_path.display())))?;
    }

    let start = Instant::now();
    let mut cmd = cfg.command();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Before QEMU opens it: an old heartbeat must not arm the watchdog, and
    // removing it later would leave QEMU writing to an unlinked file.
    let _ = std::fs::remove_file(cfg.heartbeat_path());
    let mut child = cmd.spawn().map_err(|source| TestHostError::Spawn {
        program: cfg.qemu.display().to_string(),
        source,
    })?;
    let console = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let mut pumps = Vec::new();
    if let Some(out) = child.stdout.take() {
        pumps.push(pump(out, console.clone(), log.clone(), Echo::of(cfg)));
    }
    if let Some(err) = child.stderr.take() {
        pumps.push(pump(err, errors.clone(), log.clone(), Echo::of(cfg)));
    }
    let note = |text: &str| {
        let line = format!("{}\n", text.trim_end());
        eprint!("{line}");
        if let Ok(mut log) = log.lock() {
            let _ = log.write_all(line.as_bytes());
        }
        if let Ok(mut console) = console.lock() {
            console.extend_from_slice(line.as_bytes());
        }
    };
    let ending = supervise(&mut child, cfg, &note);
    let _ = std::fs::remove_file(cfg.monitor_path());
    let _ = std::fs::remove_file(cfg.heartbeat_path());
    let (ending, kicks) = ending?;
    let (status, timed_out, froze, monitor) = match ending {
        Ending::Exited(s) => (Some(s), false, false, None),
        Ending::TimedOut(s) => (s, true, false, None),
        Ending::Froze(s, state) => (s, true, true, Some(state)),
    };
    // QEMU has exited; its pipes close with it. Don't hang if something else
    // still holds them: give the readers a few seconds, then go on.
    let drain_deadline = Instant::now() + Duration::from_secs(5);
    while pumps.iter().any(|p| !p.is_finished()) && Instant::now() < drain_deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    for p in pumps {
        if p.is_finished() {
            let _ = p.join();
        }
    }
    let elapsed = start.elapsed();

    let mut text = console
        .lock()
        .map(|c| String::from_utf8_lossy(&c).into_owned())
        .unwrap_or_default();
    if let Ok(errors) = errors.lock() {
        if !errors.is_empty() {
            text.push_str("\n[qemu stderr]\n");
            text.push_str(&String::from_utf8_lossy(&errors));
        }
    }
    let trailer = format!(
        "\ntesthost: finished in {:.1} s, timed out: {timed_out}, status: {}\n",
        elapsed.as_secs_f64(),
        status
            .map(|s| s.to_string())
            .unwrap_or_else(|| "unknown".into())
    );
    if let Ok(mut log) = log.lock() {
        let _ = log.write_all(trailer.as_bytes());
    }
    if let Some(state) = &monitor {
        let note = format!(
            "\n[testhost: frozen: no heartbeat for {} s; killed after {:.0} s; QEMU monitor:]\n{state}\n",
            cfg.freeze_after.unwrap_or_default().as_secs(),
            elapsed.as_secs_f64()
        );
        text.push_str(&note);
        if let Ok(mut log) = log.lock() {
            let _ = log.write_all(note.as_bytes());
        }
    } else if timed_out {
        text.push_str(&format!(
            "\n[testhost: killed after the {} s hard timeout]\n",
            cfg.timeout.as_secs()
        ));
    }
    let sections = parse_sections(&text);
    let host_kvm_warnings = host_kvm_warnings(&text);
    Ok(TestHostRun {
        console: text,
        log_path: cfg.log_path.clone(),
        elapsed,
        timed_out,
        froze,
        status,
        kicks,
        sections,
        host_kvm_warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sections_and_rc() {
        let console =
            "boot noise\r\n@@BEGIN a\r\nhello\nvmm: exit reason: poweroff\n@@END a rc=0\n\
                       between\n@@BEGIN b\nx\n[  3.1] kernel msg @@END b rc=32\n";
        let s = parse_sections(console);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].name, "a");
        assert_eq!(s[0].rc, Some(0));
        assert_eq!(s[0].output, "hello\nvmm: exit reason: poweroff");
        assert_eq!(s[1].name, "b");
        assert_eq!(s[1].rc, Some(32));
        assert_eq!(s[1].output, "x");
    }

    #[test]
    fn console_noise_is_removed() {
        assert_eq!(
            clean_line(b"\x1bc\x1b[?7l\x1b[2JSeaBIOS\r\n"),
            b"SeaBIOS\n".to_vec()
        );
        assert_eq!(clean_line(b"\x1b[32m INFO"), b"\x1b[32m INFO".to_vec());
    }

    #[test]
    fn unterminated_sections_have_no_rc() {
        let s = parse_sections("@@BEGIN a\none\n@@BEGIN b\ntwo\n");
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].rc, None);
        assert_eq!(s[0].output, "one");
        assert_eq!(s[1].rc, None);
        assert_eq!(s[1].output, "two");
    }

    #[test]
    fn mismatched_end_is_kept_as_output() {
        let s = parse_sections("@@BEGIN a\n@@END b rc=1\n@@END a rc=3\n");
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].rc, Some(3));
        assert_eq!(s[0].output, "@@END b rc=1");
    }

    #[test]
    fn append_and_tail() {
        let dir = std::env::temp_dir();
        let mut cfg = TestHostConfig {
            arch: Arch::X86_64,
            qemu: "q".into(),
            qemu_data: None,
            cpu: TESTHOST_CPU.into(),
            kernel: "k".into(),
            initrd: "i".into(),
            manifest: None,
            scenarios: vec!["boot-poweroff".into(), "boot-reboot".into()],
            scenario_timeout: Duration::from_secs(90),
            timeout: Duration::from_secs(1),
            memory_mib: 2048,
            extra_append: vec!["quiet".into()],
            log_path: dir.join("x.log"),
            stream: false,
            stream_filter: None,
            freeze_after: None,
            kick_after: KICK_AFTER,
        };
        assert_eq!(
            cfg.append(),
            "console=ttyS0 kvm_amd.vgif=0 idle=poll panic=-1 th.scenarios=boot-poweroff,boot-reboot th.timeout=90 quiet"
        );
        cfg.arch = Arch::Aarch64;
        assert!(cfg
            .append()
            .starts_with("console=ttyAMA0 kvm-arm.mode=protected panic=-1 th.scenarios="));
        let args: Vec<String> = cfg
            .command()
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(args
            .iter()
            .any(|a| a == "virt,virtualization=on,gic-version=3"));
        let run = TestHostRun {
            console: "1\n2\n3\n".into(),
            log_path: dir.join("x.log"),
            elapsed: Duration::from_secs(1),
            timed_out: true,
            froze: false,
            status: None,
            kicks: 0,
            host_kvm_warnings: Vec::new(),
            sections: vec![],
        };
        assert_eq!(run.console_tail(2), "2\n3");
        let report = run.failure_report("boom");
        assert!(
            report.contains("boom")
                && report.contains("x.log")
                && report.contains("timed out: true")
        );
    }

    /// The two warnings of a failed arm64 run (the vCPU thread found no
    /// running vCPU on its CPU), between lines that must not count.
    #[test]
    fn the_test_hosts_kvm_warnings_are_found() {
        let console = "\
[    4.351276] ------------[ cut here ]------------
[    4.353569] WARNING: CPU: 1 PID: 191 at arch/arm64/kvm/../../../virt/kvm/kvm_main.c:3614 mark_page_dirty_in_slot+0xc8/0x100
[    4.359068]  mark_page_dirty_in_slot+0xc8/0x100
@@vmstack:step=t=0.1s: mcu: ignition on
android| [    1.000000] WARNING: CPU: 0 PID: 1 at arch/arm64/kvm/x.c:1 f+0x0/0x1
[    5.000000] WARNING: CPU: 0 PID: 7 at mm/page_alloc.c:4000 alloc+0x1/0x2
[   19.005710] WARNING: CPU: 1 PID: 191 at arch/arm64/kvm/arch_timer.c:1486 kvm_arch_timer_get_input_level+0xb4/0x120
";
        assert_eq!(
            host_kvm_warnings(console),
            [
                "WARNING: CPU: 1 PID: 191 at arch/arm64/kvm/../../../virt/kvm/kvm_main.c:3614 mark_page_dirty_in_slot+0xc8/0x100",
                "WARNING: CPU: 1 PID: 191 at arch/arm64/kvm/arch_timer.c:1486 kvm_arch_timer_get_input_level+0xb4/0x120",
            ]
        );
        assert!(host_kvm_warnings("[ 1.0] ok\n@@BEGIN x\n").is_empty());
    }

    #[test]
    fn manifest_is_summarized() {
        let m = r#"{"kernel":{"release":"6.12.95+deb12-amd64","package":"linux-image-x",
                    "version":"1","sha256":"ab"},"vmm":null}"#;
        let s = manifest_summary(m);
        assert!(s.contains("kernel 6.12.95+deb12-amd64 (linux-image-x 1 sha256 ab)"));
        assert!(s.contains("vmm MISSING"));
        assert!(!s.contains("qemu"));
        assert!(manifest_summary("nope").contains("unreadable"));
        let m = r#"{"kernel":{},"vmm":null,
                    "testhost_qemu":{"package":"qemu-system-x86","version":"1:10","sha256":"cd"}}"#;
        assert!(manifest_summary(m).contains("testhost: qemu qemu-system-x86 1:10 sha256 cd"));
    }

    /// Each test host's `-cpu` override comes from its own variable; the
    /// old unsuffixed name reaches the x86_64 one only.
    #[test]
    fn cpu_overrides_are_per_arch() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let old = env(&[(CPU_ENV_X86_64_OLD, "qemu64")]);
        assert_eq!(cpu_override_from(Arch::X86_64, old), Some("qemu64".into()));
        assert_eq!(cpu_override_from(Arch::Aarch64, old), None);
        let both = env(&[
            (CPU_ENV_X86_64_OLD, "qemu64"),
            (CPU_ENV_X86_64, "max"),
            (CPU_ENV_AARCH64, "cortex-a72"),
        ]);
        assert_eq!(cpu_override_from(Arch::X86_64, both), Some("max".into()));
        assert_eq!(
            cpu_override_from(Arch::Aarch64, both),
            Some("cortex-a72".into())
        );
        let arm_only = env(&[(CPU_ENV_AARCH64, "cortex-a72")]);
        assert_eq!(cpu_override_from(Arch::X86_64, arm_only), None);
        let empty = env(&[(CPU_ENV_X86_64, ""), (CPU_ENV_X86_64_OLD, "qemu64")]);
        assert_eq!(
            cpu_override_from(Arch::X86_64, empty),
            Some("qemu64".into())
        );
        assert_eq!(cpu_override_from(Arch::X86_64, env(&[])), None);
    }

    /// Images with a `testhost-qemu` root boot with that QEMU and its data
    /// directory; without one the `PATH` QEMU is used.
    #[test]
    fn locked_qemu_is_preferred() {
        let dir = std::env::temp_dir().join(format!("vmstack-th-qemu-{}", std::process::id()));
        let bin = dir.join(TESTHOST_QEMU_DIR).join("usr/bin");
        std::fs::create_dir_all(&bin).unwrap();
        for f in [TESTHOST_KERNEL, TESTHOST_INITRD] {
            std::fs::write(dir.join(f), b"").unwrap();
        }
        let cfg = TestHostConfig::from_images_dir(&dir, &["a"], &dir).unwrap();
        assert_eq!(cfg.qemu, PathBuf::from("qemu-system-x86_64"));
        assert!(cfg.qemu_data.is_none());
        std::fs::write(bin.join("qemu-system-x86_64"), b"").unwrap();
        let cfg = TestHostConfig::from_images_dir(&dir, &["a"], &dir).unwrap();
        assert_eq!(cfg.qemu, bin.join("qemu-system-x86_64"));
        let cmd = cfg.command();
        let args: Vec<_> = cmd.get_args().collect();
        let data = dir.join(TESTHOST_QEMU_DIR).join("usr/share/qemu");
        assert_eq!(args[0], "-L");
        assert_eq!(args[1], data.as_os_str());
        // aarch64: the locked QEMU 10 with Neoverse N2, the PATH one with `max`.
        let cpu_arg = |cfg: &TestHostConfig| {
            let cmd = cfg.command();
            let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
            let at = args.iter().position(|a| a == "-cpu").unwrap();
            args[at + 1].clone()
        };
        if cpu_override(Arch::Aarch64).is_none() {
            let arm = TestHostConfig::for_arch(Arch::Aarch64, &dir, &["a"], &dir).unwrap();
            assert_eq!(arm.qemu, PathBuf::from("qemu-system-aarch64"));
            assert_eq!(cpu_arg(&arm), TESTHOST_CPU_AARCH64_PATH_QEMU);
            std::fs::write(bin.join("qemu-system-aarch64"), b"").unwrap();
            let arm = TestHostConfig::for_arch(Arch::Aarch64, &dir, &["a"], &dir).unwrap();
            assert_eq!(arm.qemu, bin.join("qemu-system-aarch64"));
            assert_eq!(arm.qemu_data, Some(data.clone()));
            assert_eq!(cpu_arg(&arm), TESTHOST_CPU_AARCH64);
        }
        if cpu_override(Arch::X86_64).is_none() {
            assert_eq!(cpu_arg(&cfg), TESTHOST_CPU);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A configuration that boots `script` as a stand-in "QEMU" (in its own
    /// temporary directory, returned for clean-up).
    fn fake_qemu(tag: &str, script: &str, timeout: Duration) -> (PathBuf, TestHostConfig) {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("vmstack-th-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fake = dir.join("fake-qemu");
        std::fs::write(&fake, script).unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let cfg = TestHostConfig {
            arch: Arch::X86_64,
            qemu: fake,
            qemu_data: None,
            cpu: TESTHOST_CPU.into(),
            kernel: "k".into(),
            initrd: "i".into(),
            manifest: None,
            scenarios: vec!["a".into()],
            scenario_timeout: Duration::from_secs(1),
            timeout,
            memory_mib: 64,
            extra_append: vec![],
            log_path: dir.join("run.log"),
            stream: false,
            stream_filter: None,
            freeze_after: None,
            kick_after: KICK_AFTER,
        };
        (dir, cfg)
    }

    /// A stand-in "QEMU" that ignores its arguments, prints a section and hangs:
    /// the runner must kill it at the hard timeout and keep what it printed.
    #[test]
    fn hard_timeout_kills_and_keeps_console() {
        let (dir, cfg) = fake_qemu(
            "timeout",
            "#!/bin/sh\necho '@@BEGIN a'\necho partial\nexec sleep 30\n",
            Duration::from_millis(1500),
        );
        let run = run(&cfg).unwrap();
        assert!(run.timed_out && !run.froze);
        assert!(run.elapsed < Duration::from_secs(10));
        let a = run.scenario("a").unwrap();
        assert_eq!(a.rc, None);
        assert!(a.contains("partial"));
        let log = std::fs::read_to_string(dir.join("run.log")).unwrap();
        assert!(log.contains("partial") && log.contains("timed out: true"));
        assert!(run.failure_report("x").contains("run.log"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// [`fake_qemu`] with a 25 s hard timeout and the freeze watchdog at
    /// `freeze_after_s`, whose script finds its heartbeat file (the `file:`
    /// serial port) as `$hb`, writes one beat and goes on with `rest`.
    fn heartbeat_qemu(tag: &str, rest: &str, freeze_after_s: u64) -> (PathBuf, TestHostConfig) {
        let script = format!(
            "#!/bin/sh\nfor a; do case $a in file:*) hb=${{a#file:}} ;; esac; done\n\
             echo 1.0 > \"$hb\"\n{rest}"
        );
        let (dir, mut cfg) = fake_qemu(tag, &script, Duration::from_secs(25));
        cfg.freeze_after = Some(Duration::from_secs(freeze_after_s));
        (dir, cfg)
    }

    /// A stand-in "QEMU" that writes one heartbeat to its `file:` serial
    /// port and hangs: the watchdog must declare it frozen long before the
    /// hard timeout.
    #[test]
    fn stopped_heartbeat_is_a_freeze() {
        let (dir, cfg) = heartbeat_qemu("hb", "echo '@@BEGIN a'\nexec sleep 30\n", 1);
        assert!(cfg.append().contains("th.heartbeat=ttyS1"));
        let run = run(&cfg).unwrap();
        assert!(run.froze && run.timed_out);
        assert!(run.elapsed < Duration::from_secs(10), "{:?}", run.elapsed);
        assert!(run.console.contains("frozen: no heartbeat"));
        assert!(run.console.contains("cannot connect to the monitor"));
        assert!(run.failure_report("x").contains("froze: true"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A stand-in "QEMU" whose heartbeat pauses for longer than
    /// `kick_after` and then resumes: the watchdog sends a wake-up, notes
    /// it and the resumption, and lets the run finish.
    #[test]
    fn silent_heartbeat_gets_a_wakeup_and_may_resume() {
        let (dir, mut cfg) = heartbeat_qemu("kick", "sleep 3\necho 2.0 >> \"$hb\"\nsleep 1\n", 20);
        cfg.kick_after = Duration::from_secs(1);
        let run = run(&cfg).unwrap();
        assert!(!run.froze && !run.timed_out, "{}", run.console);
        assert_eq!(run.kicks, 1, "{}", run.console);
        assert!(run.console.contains("`sendkey shift`"), "{}", run.console);
        assert!(run.console.contains("`nmi`"), "{}", run.console);
        assert!(run.console.contains("heartbeat resumed"), "{}", run.console);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn long_scenario_lists_get_short_file_names() {
        let dir = std::env::temp_dir().join(format!("vmstack-th-long-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for f in [TESTHOST_KERNEL, TESTHOST_INITRD] {
            std::fs::write(dir.join(f), b"").unwrap();
        }
        let list = ["sysmgr-deadline"; 20];
        let cfg = TestHostConfig::from_images_dir(&dir, &list, &dir).unwrap();
        let name = cfg.log_path.file_name().unwrap().len();
        assert!(name < 200, "{name}");
        let short = TestHostConfig::from_images_dir(&dir, &["a", "b"], &dir).unwrap();
        assert!(short.log_path.ends_with("testhost-a+b.log"));
        for p in [cfg.heartbeat_path(), cfg.monitor_path()] {
            assert!(p.as_os_str().len() < 100 && !p.to_string_lossy().contains(','));
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn missing_images_are_reported() {
        let dir = std::env::temp_dir().join("vmstack-no-such-images");
        let err = TestHostConfig::from_images_dir(&dir, &["a"], &dir).unwrap_err();
        assert!(err.to_string().contains("cargo xtask test"));
    }
}
