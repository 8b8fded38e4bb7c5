//! Helpers for integration tests that share one test-host boot: run the
//! scenarios once, then let each `#[test]` check its own section.

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use crate::marker::{self, Marker};
use crate::testhost::{self, ScenarioResult, TestHostConfig, TestHostRun};
use crate::Arch;

/// Held while a test host runs: boots in one process happen one after the other.
static BOOT_LOCK: Mutex<()> = Mutex::new(());

/// Boots the test host; boots it once more when the first run cannot be
/// trusted because the test host itself broke, whatever its scenarios
/// printed:
/// - the emulated machine froze (its heartbeat stopped: the outer
///   emulator, not a scenario, stopped running);
/// - it stalled long enough for the watchdog to wake it (a stall of the
///   whole machine breaks every deadline and every order of events a
///   scenario or its assertions check, whether or not the scenario's own
///   rc noticed);
/// - the test host's kernel warned from its KVM code (e.g. a vCPU thread
///   inside `KVM_RUN` finding no running vCPU on its CPU): the hypervisor
///   our VMM runs on was in a state its own code calls impossible.
///
/// The first log is kept as `<log>.froze.log`, `<log>.stalled.log` or
/// `<log>.kvm-warning.log`. The second run's outcome is the result,
/// whatever it is, except that KVM warnings in both runs fail every test
/// of the run. Each retry is announced on stderr and at the top of the
/// console.
fn run_retrying_a_broken_host(cfg: &TestHostConfig) -> Result<TestHostRun, String> {
    let first = testhost::run(cfg).map_err(|e| e.to_string())?;
    let (what, suffix) = if first.froze {
        ("froze (no heartbeat".to_string(), "froze.log")
    } else if first.kicks > 0 {
        (
            "stalled (no heartbeat until the watchdog woke it".into(),
            "stalled.log",
        )
    } else if let Some(warning) = first.host_kvm_warnings.first() {
        (
            format!(
                "kernel warned from its KVM code ({} warning(s), the first: {warning}",
                first.host_kvm_warnings.len()
            ),
            "kvm-warning.log",
        )
    } else {
        return Ok(first);
    };
    let kept = cfg.log_path.with_extension(suffix);
    let _ = std::fs::rename(&cfg.log_path, &kept);
    let note = format!(
        "testhost: the test host {what}; its log: {}) after {:.0} s; booting it once more",
        kept.display(),
        first.elapsed.as_secs_f64(),
    );
    eprintln!("{note}");
    let mut second = testhost::run(cfg).map_err(|e| e.to_string())?;
    second.console = format!("{note}\n{}", second.console);
    if !first.host_kvm_warnings.is_empty() && !second.host_kvm_warnings.is_empty() {
        // Twice in a row is no accident of the emulator: it is something
        // our VMM makes the host's KVM do, and it fails the tests.
        return Err(second.failure_report(
            "the test host's kernel warned from its KVM code in two boots in a row",
        ));
    }
    Ok(second)
}

/// One outer boot running `scenarios`, started by the first test that asks.
pub struct SharedRun {
    arch: Arch,
    scenarios: &'static [&'static str],
    /// Per-scenario timeout; `None`: the runner's default.
    scenario_timeout: Option<Duration>,
    run: OnceLock<Result<TestHostRun, String>>,
}

impl SharedRun {
    /// A run of `scenarios` (names of `prebuilts/testhost/scenarios/*.sh`)
    /// in the test host of `arch`: the runner's default timeout per
    /// scenario on x86_64, 360 s on aarch64 (inner boots take ~30 s there
    /// and device traffic is several times slower).
    pub const fn on(arch: Arch, scenarios: &'static [&'static str]) -> Self {
        Self {
            arch,
            scenarios,
            scenario_timeout: match arch {
                Arch::X86_64 => None,
                Arch::Aarch64 => Some(Duration::from_secs(360)),
            },
            run: OnceLock::new(),
        }
    }

    /// The same run with `timeout` per scenario (the hard timeout of the
    /// whole boot grows accordingly).
    pub const fn scenario_timeout(mut self, timeout: Duration) -> Self {
        self.scenario_timeout = Some(timeout);
        self
    }

    /// The architecture of the test host.
    pub fn arch(&self) -> Arch {
        self.arch
    }

    /// The finished run; panics (with the reason) if the test host could not
    /// be booted.
    pub fn get(&self) -> &TestHostRun {
        let run = self.run.get_or_init(|| {
            let images = self.arch.images_dir();
            let mut cfg =
                TestHostConfig::for_arch(self.arch, &images, self.scenarios, &crate::log_dir())
                    .map_err(|e| e.to_string())?;
            if let Some(t) = self.scenario_timeout {
                cfg.set_scenario_timeout(t);
            }
            // One test host at a time per test binary (a binary with several
            // shared runs would otherwise boot them in parallel on the test
            // threads).
            let _one_at_a_time = BOOT_LOCK.lock().unwrap_or_else(|p| p.into_inner());
            run_retrying_a_broken_host(&cfg)
        });
        match run {
            Ok(run) => run,
            Err(e) => panic!("{e}"),
        }
    }

    /// The section of scenario `name`, checked to have ended with `rc`.
    pub fn section(&self, name: &str, rc: i32) -> Section<'_> {
        let run = self.get();
        let Some(result) = run.scenario(name) else {
            panic!(
                "{}",
                run.failure_report(&format!("no @@BEGIN {name} section in the console"))
            );
        };
        let section = Section {
            run,
            result,
            arch: self.arch,
        };
        if result.rc != Some(rc) {
            section.fail(&format!("rc {:?}, expected {rc}", result.rc));
        }
        section
    }
}

/// One scenario's output, read through its markers ([`crate::marker`]),
/// with assertions that print the outer console on failure.
pub struct Section<'a> {
    /// The whole run.
    pub run: &'a TestHostRun,
    /// This scenario.
    pub result: &'a ScenarioResult,
    /// The test host's architecture.
    pub arch: Arch,
}

impl<'a> Section<'a> {
    /// Fails the test with `why`, the scenario output and the console tail.
    pub fn fail(&self, why: &str) -> ! {
        panic!(
            "{}",
            self.run.failure_report(&format!(
                "scenario {}: {why}; its output:\n{}",
                self.result.name, self.result.output
            ))
        )
    }

    /// Every marker of the section, in order.
    pub fn markers(&self) -> Vec<Marker<'a>> {
        marker::parse(&self.result.output)
    }

    /// Every value of marker `key`, in order.
    pub fn all(&self, key: &str) -> Vec<&'a str> {
        self.markers()
            .into_iter()
            .filter(|m| m.key == key)
            .map(|m| m.value)
            .collect()
    }

    /// How many `key` markers there are.
    pub fn count(&self, key: &str) -> usize {
        self.all(key).len()
    }

    /// The value of the first `key` marker, if any.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.all(key).first().copied()
    }

    /// The value of the first `key` marker; fails without one.
    pub fn value(&self, key: &str) -> &'a str {
        self.get(key)
            .unwrap_or_else(|| self.fail(&format!("no {key} marker")))
    }

    /// The value of `key` as a number.
    pub fn number(&self, key: &str) -> u64 {
        let v = self.value(key);
        v.trim()
            .parse()
            .unwrap_or_else(|_| self.fail(&format!("{key}={v} is not a number")))
    }

    /// The value of `key`, checked to be a sha256 in hex.
    pub fn sha256(&self, key: &str) -> &'a str {
        let v = self.value(key);
        if v.len() != 64 || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
            self.fail(&format!("{key}={v} is not a sha256"));
        }
        v
    }

    /// Asserts that the first `key` marker has the value `want`.
    pub fn expect_eq(&self, key: &str, want: &str) -> &Self {
        let got = self.value(key);
        if got != want {
            self.fail(&format!("{key}={got}, expected {want}"));
        }
        self
    }

    /// Asserts that some `key` marker's value contains `needle`.
    pub fn expect_contains(&self, key: &str, needle: &str) -> &Self {
        if self.position(key, needle).is_none() {
            self.fail(&format!("no {key} marker containing {needle:?}"));
        }
        self
    }

    /// Asserts that there is no `key` marker.
    pub fn expect_absent(&self, key: &str) -> &Self {
        if let Some(v) = self.get(key) {
            self.fail(&format!("unexpected {key}={v}"));
        }
        self
    }

    /// Asserts that there are exactly `n` `key` markers.
    pub fn expect_count(&self, key: &str, n: usize) -> &Self {
        let got = self.count(key);
        if got != n {
            self.fail(&format!("{got} {key} markers, expected {n}"));
        }
        self
    }

    /// Line of the first `key` marker whose value contains `needle`.
    pub fn position(&self, key: &str, needle: &str) -> Option<usize> {
        self.markers()
            .into_iter()
            .find(|m| m.key == key && m.value.contains(needle))
            .map(|m| m.line)
    }

    /// Asserts that the markers `(key, needle)` appear in this order (each
    /// the first `key` marker whose value contains `needle`).
    pub fn expect_order(&self, order: &[(&str, &str)]) -> &Self {
        let mut last: Option<(usize, &str, &str)> = None;
        for &(key, needle) in order {
            let Some(at) = self.position(key, needle) else {
                self.fail(&format!("no {key} marker containing {needle:?}"));
            };
            if let Some((prev, pk, pn)) = last {
                if at <= prev {
                    self.fail(&format!(
                        "{key} {needle:?} (line {at}) is not after {pk} {pn:?} (line {prev})"
                    ));
                }
            }
            last = Some((at, key, needle));
        }
        self
    }

    /// Asserts that the log of the VMM run as `tag` has a line containing
    /// `needle`.
    pub fn expect_log(&self, tag: &str, needle: &str) -> &Self {
        self.expect_contains(&format!("{tag}.log"), needle)
    }

    /// Asserts that the VMM run as `tag` published `event` (the VMM logs
    /// every control-protocol event line it publishes).
    pub fn expect_event(&self, tag: &str, event: vmm_protocol::Event) -> &Self {
        self.expect_log(tag, &event.to_string())
    }

    /// Asserts that the VMM run as `tag` exited with `rc` and its last log
    /// line is `vmm: exit reason: <reason>`.
    pub fn expect_vmm_exit(&self, tag: &str, reason: &str, rc: i32) -> &Self {
        self.expect_eq(&format!("{tag}.rc"), &rc.to_string());
        let log = self.all(&format!("{tag}.log"));
        let want = format!("vmm: exit reason: {reason}");
        if log.last() != Some(&want.as_str()) {
            self.fail(&format!(
                "the last line of {tag}'s log is {:?}, expected {want:?}",
                log.last()
            ));
        }
        self
    }

    /// Asserts that a kernel log line (`[ seconds] ...`) of the section
    /// contains `needle`: only for checks whose point is a kernel message
    /// (see [`marker::is_kernel_message`]).
    pub fn expect_kernel_message(&self, needle: &str) -> &Self {
        if !self
            .result
            .output
            .lines()
            .any(|l| marker::is_kernel_message(l, needle))
        {
            self.fail(&format!("no kernel message containing {needle:?}"));
        }
        self
    }
}
