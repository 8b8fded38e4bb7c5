//! One measured boot: spawn a VMM, follow the tracepoints, sample smaps at
//! `/init`, let the guest dump its kernel log and power off, read its boot
//! profile from the console.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bootbench::record::Sample;
use bootbench::{smaps, trace};

use crate::tracefs::Instance;

/// How often the trace buffers are polled.
pub const POLL: Duration = Duration::from_millis(10);
/// How many stderr lines of a VMM are kept for failure reports.
const TAIL_LINES: usize = 30;
/// How many console (stdout) lines of a VMM are kept for the boot profile
/// (a quiet Debian boot logs about 700 lines; the bound keeps a runaway
/// guest from filling the test host's memory).
const CONSOLE_LINES: usize = 20_000;
/// How long the guest may take after `/init` to dump its log and power off.
pub const AFTER_INIT: Duration = Duration::from_secs(60);

/// A VMM command to measure.
#[derive(Debug, Clone)]
pub struct VmmCommand {
    /// Record name ([`bootbench::record::OURS`], [`bootbench::record::OURS_ELF`],
    /// [`bootbench::record::QEMU_MICROVM`], ...).
    pub name: &'static str,
    /// The program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
}

impl VmmCommand {
    /// The command line as one string (for the records).
    pub fn display(&self) -> String {
        let mut s = String::new();
        for (k, v) in &self.env {
            s.push_str(&format!("{k}={v} "));
        }
        s.push_str(&self.program.display().to_string());
        for a in &self.args {
            s.push(' ');
            if a.contains(' ') {
                s.push('"');
                s.push_str(a);
                s.push('"');
            } else {
                s.push_str(a);
            }
        }
        s
    }
}

/// The two tracefs instances: first VM entry and the boot-timer write.
pub struct Probes {
    /// `kvm/kvm_entry`, overwrite off (the first entry survives a full buffer).
    pub entry: Instance,
    /// The boot-timer write: `kvm/kvm_pio` filtered on its port (x86_64) or
    /// `kvm/kvm_mmio` filtered on a write to its address (aarch64).
    pub timer: Instance,
    /// The event name of `timer` in the trace (`kvm_pio`, `kvm_mmio`).
    pub timer_event: &'static str,
}

/// A failed run: the error and the VMM's last stderr lines.
#[derive(Debug)]
pub struct RunError {
    /// What went wrong.
    pub error: anyhow::Error,
    /// The last lines the VMM wrote to stderr.
    pub stderr_tail: Vec<String>,
    /// The last [`FAILED_CONSOLE_LINES`] lines of the guest console (its stdout).
    pub console_tail: Vec<String>,
}

/// How many console lines a failure report keeps.
pub const FAILED_CONSOLE_LINES: usize = 20;

/// `CLOCK_MONOTONIC` in nanoseconds (the clock of tracefs' `mono` trace clock).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// Reads `reader` line by line, keeping the last `keep` lines in `tail`.
fn drain(
    reader: impl Read + Send + 'static,
    tail: Arc<Mutex<VecDeque<String>>>,
    keep: usize,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        // Up to the end of the stream or the first read error.
        for raw in BufReader::new(reader).split(b'\n').map_while(Result::ok) {
            let line = String::from_utf8_lossy(&raw).trim_end().to_string();
            if let Ok(mut t) = tail.lock() {
                if t.len() == keep {
                    t.pop_front();
                }
                t.push_back(line);
            }
        }
    })
}

/// The number before ` us` in a line of ours like
/// `... vcpu0: entering guest after 1234 us`, as ms.
fn self_reported_ms(lines: &[String], marker: &str) -> Option<f64> {
    lines.iter().find_map(|l| {
        let rest = &l[l.find(marker)? + marker.len()..];
        let us: f64 = rest.split_whitespace().next()?.parse().ok()?;
        Some(us / 1000.0)
    })
}

fn signal(child: &Child, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our
        // un-reaped child, so it cannot have been recycled.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Boots `cmd` once and measures it (see the crate docs and `docs/benchmarks.md`).
pub fn measure(
    cmd: &VmmCommand,
    run: u32,
    probes: &Probes,
    guest_mib: u64,
    timeout: Duration,
) -> Result<Sample, RunError> {
    let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
    let console = Arc::new(Mutex::new(VecDeque::new()));
    let result = measure_inner(cmd, run, probes, guest_mib, timeout, &stderr_tail, &console);
    let tail: Vec<String> = stderr_tail
        .lock()
        .map(|t| t.iter().cloned().collect())
        .unwrap_or_default();
    match result {
        Ok(mut sample) => {
            let text = console
                .lock()
                .map(|c| c.iter().cloned().collect::<Vec<_>>().join("\n"))
                .unwrap_or_default();
            let profile = bootbench::profile::parse(&text);
            if profile.lines > 0 {
                sample.guest = Some(profile);
            }
            if !bootbench::record::is_qemu(cmd.name) {
                sample.self_first_entry_ms = self_reported_ms(&tail, "entering guest after ");
                sample.self_init_ms = self_reported_ms(&tail, "guest init reached after ");
            }
            Ok(sample)
        }
        Err(error) => Err(RunError {
            error,
            stderr_tail: tail,
            console_tail: console
                .lock()
                .map(|c| {
                    let skip = c.len().saturating_sub(FAILED_CONSOLE_LINES);
                    c.iter().skip(skip).cloned().collect()
                })
                .unwrap_or_default(),
        }),
    }
}

fn measure_inner(
    cmd: &VmmCommand,
    run: u32,
    probes: &Probes,
    guest_mib: u64,
    timeout: Duration,
    stderr_tail: &Arc<Mutex<VecDeque<String>>>,
    console: &Arc<Mutex<VecDeque<String>>>,
) -> Result<Sample> {
    for p in [&probes.entry, &probes.timer] {
        p.set_enabled(false)?;
        p.clear()?;
        p.set_enabled(true)?;
    }
    let mut command = Command::new(&cmd.program);
    command
        .args(&cmd.args)
        .envs(cmd.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());

    let t0 = monotonic_ns();
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start {}", cmd.program.display()))?;
    let mut drains = Vec::new();
    if let Some(out) = child.stdout.take() {
        drains.push(drain(out, console.clone(), CONSOLE_LINES));
    }
    if let Some(err) = child.stderr.take() {
        drains.push(drain(err, stderr_tail.clone(), TAIL_LINES));
    }

    let outcome = follow(&mut child, t0, probes, guest_mib, timeout);
    let exit_ns = match &outcome {
        // Measured: the guest goes on to dump its kernel log and power off.
        Ok(_) => {
            signal(&child, libc::SIGCONT);
            wait_exit(&mut child, AFTER_INIT)
        }
        Err(_) => None,
    };
    // Whatever happened: the VMM is gone now (a guest that did not power off
    // in time is killed; its profile is what its console had by then).
    // `Child::kill` sends nothing once the child was reaped (its pid may
    // have been reused by then).
    let _ = child.kill();
    let _ = child.wait();
    for d in drains {
        let _ = d.join();
    }
    for p in [&probes.entry, &probes.timer] {
        let _ = p.set_enabled(false);
    }
    let (entry_ns, init_ns, mem) = outcome?;
    let ms = |ns: u64| -> Result<f64> {
        let d = ns
            .checked_sub(t0)
            .ok_or_else(|| anyhow!("trace event at {ns} ns precedes the spawn at {t0} ns"))?;
        Ok(d as f64 / 1e6)
    };
    let sample = Sample {
        vmm: cmd.name.to_string(),
        run,
        first_entry_ms: ms(entry_ns)?,
        init_ms: ms(init_ns)?,
        rss_total_kib: mem.total_rss_kib,
        guest_rss_kib: mem.guest_rss_kib,
        overhead_kib: mem.overhead_kib(),
        overhead_file_kib: mem.overhead_file_kib,
        overhead_thp_kib: mem.overhead_thp_kib,
        self_first_entry_ms: None,
        self_init_ms: None,
        exit_ms: exit_ns.map(ms).transpose()?,
        guest: None,
    };
    sample
        .validate()
        .map_err(|e| anyhow!("inconsistent measurement: {e}"))?;
    Ok(sample)
}

/// Waits up to `limit` for `child` to exit; its exit time (ns, this
/// process's `CLOCK_MONOTONIC`, [`POLL`] resolution) or `None`.
fn wait_exit(child: &mut Child, limit: Duration) -> Option<u64> {
    let deadline = monotonic_ns() + u64::try_from(limit.as_nanos()).unwrap_or(u64::MAX);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return Some(monotonic_ns()),
            Ok(None) if monotonic_ns() < deadline => std::thread::sleep(POLL),
            _ => return None,
        }
    }
}

/// Polls the probes until the boot-timer write; then freezes the VMM (SIGSTOP)
/// and reads its smaps. Returns (first entry ns, boot timer ns, memory).
fn follow(
    child: &mut Child,
    t0: u64,
    probes: &Probes,
    guest_mib: u64,
    timeout: Duration,
) -> Result<(u64, u64, smaps::MemoryUse)> {
    let deadline = t0 + u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
    let mut entry: Option<u64> = None;
    loop {
        std::thread::sleep(POLL);
        if entry.is_none() {
            entry = trace::first_event_ns(&probes.entry.read()?, "kvm_entry");
            if entry.is_some() {
                // Only the first entry matters; stop paying for the tracepoint.
                probes.entry.set_enabled(false)?;
            }
        }
        if let Some(init) = trace::first_event_ns(&probes.timer.read()?, probes.timer_event) {
            signal(child, libc::SIGSTOP);
            let path = format!("/proc/{}/smaps", child.id());
            let text =
                std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
            let maps = smaps::parse(&text).with_context(|| format!("parsing {path}"))?;
            let mem = smaps::memory_use(&maps, guest_mib).with_context(|| {
                format!("{path} at /init (did the VMM exit before it could be sampled?)")
            })?;
            if entry.is_none() {
                entry = trace::first_event_ns(&probes.entry.read()?, "kvm_entry");
            }
            let entry = entry.ok_or_else(|| {
                anyhow!("boot-timer write seen but no kvm_entry event was recorded")
            })?;
            return Ok((entry, init, mem));
        }
        if let Some(status) = child.try_wait().context("waiting for the VMM")? {
            bail!(
                "the VMM exited ({status}) before the guest's boot-timer write \
                 (first VM entry {})",
                if entry.is_some() { "seen" } else { "not seen" }
            );
        }
        if monotonic_ns() > deadline {
            bail!(
                "no boot-timer write within {} s (first VM entry {}); killed",
                timeout.as_secs(),
                if entry.is_some() { "seen" } else { "not seen" }
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_reported_times() {
        let lines = vec![
            "2026 INFO vmm::vstate::vcpu: vcpu0: entering guest after 1500 us".to_string(),
            "2026 INFO devices: boot-timer: guest init reached after 812345 us".to_string(),
        ];
        assert_eq!(self_reported_ms(&lines, "entering guest after "), Some(1.5));
        assert_eq!(
            self_reported_ms(&lines, "guest init reached after "),
            Some(812.345)
        );
        assert_eq!(self_reported_ms(&lines, "nothing "), None);
    }

    #[test]
    fn command_display_quotes_spaces() {
        let c = VmmCommand {
            name: "ours",
            program: "/bin/vmm".into(),
            args: vec!["run".into(), "--params".into(), "quiet a=b".into()],
            env: Vec::new(),
        };
        assert_eq!(c.display(), "/bin/vmm run --params \"quiet a=b\"");
    }
}
