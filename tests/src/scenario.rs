//! Helpers for integration tests that share one test-host boot: run the
//! scenarios once, then let each `#[test]` check its own section.

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use crate::testhost::{self, ScenarioResult, TestHostConfig, TestHostRun};
use crate::Arch;

/// Held while a test host runs: boots in one process happen one after the other.
static BOOT_LOCK: Mutex<()> = Mutex::new(());

/// Boots the test host; if the emulated machine froze (its heartbeat
/// stopped: the outer emulator, not a scenario, stopped running), keeps that
/// log as `<log>.froze.log` and boots it once more. A second freeze is
/// returned like any other failed run. Each retry is announced on stderr and
/// at the top of the console.
fn run_retrying_a_freeze(cfg: &TestHostConfig) -> Result<TestHostRun, String> {
    let first = testhost::run(cfg).map_err(|e| e.to_string())?;
    if !first.froze {
        return Ok(first);
    }
    let kept = cfg.log_path.with_extension("froze.log");
    let _ = std::fs::rename(&cfg.log_path, &kept);
    let note = format!(
        "testhost: the test host froze after {:.0} s (no heartbeat; CPU state at the end of {}); \
         booting it once more",
        first.elapsed.as_secs_f64(),
        kept.display()
    );
    eprintln!("{note}");
    let mut second = testhost::run(cfg).map_err(|e| e.to_string())?;
    second.console = format!("{note}\n{}", second.console);
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
    /// A run of `scenarios` (names of `prebuilts/testhost/scenarios/*.sh`).
    pub const fn new(scenarios: &'static [&'static str]) -> Self {
        Self {
            arch: Arch::X86_64,
            scenarios,
            scenario_timeout: None,
            run: OnceLock::new(),
        }
    }

    /// Like [`Self::new`] for scenarios that need longer than the default
    /// per-scenario timeout (the hard timeout grows accordingly).
    pub const fn with_timeout(
        scenarios: &'static [&'static str],
        scenario_timeout: Duration,
    ) -> Self {
        Self {
            arch: Arch::X86_64,
            scenarios,
            scenario_timeout: Some(scenario_timeout),
            run: OnceLock::new(),
        }
    }

    /// A run of `scenarios` in the test host of `arch`: the x86_64 default
    /// timeout, or 360 s per scenario on aarch64 (inner boots take ~30 s
    /// there and device traffic is several times slower). Test files that
    /// another file re-runs on arm64 use this with `crate::ARCH`.
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

    /// A run of `scenarios` in the test host of `arch` (images from
    /// [`Arch::images_dir`]), with a per-scenario timeout.
    pub const fn for_arch(
        arch: Arch,
        scenarios: &'static [&'static str],
        scenario_timeout: Duration,
    ) -> Self {
        Self {
            arch,
            scenarios,
            scenario_timeout: Some(scenario_timeout),
            run: OnceLock::new(),
        }
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
                // Keep the outer boot allowance `for_arch` chose.
                let per_scenario = cfg.scenario_timeout + Duration::from_secs(10);
                let boot = cfg
                    .timeout
                    .saturating_sub(per_scenario * self.scenarios.len() as u32);
                cfg.scenario_timeout = t;
                cfg.timeout = boot + (t + Duration::from_secs(10)) * self.scenarios.len() as u32;
            }
            // One test host at a time per test binary (a binary with several
            // shared runs, like arm64_virtio.rs, would otherwise boot them in
            // parallel on the test threads).
            let _one_at_a_time = BOOT_LOCK.lock().unwrap_or_else(|p| p.into_inner());
            run_retrying_a_freeze(&cfg)
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
        let section = Section { run, result };
        if result.rc != Some(rc) {
            section.fail(&format!("rc {:?}, expected {rc}", result.rc));
        }
        section
    }
}

/// One scenario's output, with assertions that print the outer console on
/// failure.
pub struct Section<'a> {
    /// The whole run.
    pub run: &'a TestHostRun,
    /// This scenario.
    pub result: &'a ScenarioResult,
}

impl Section<'_> {
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

    /// Asserts that the output contains `needle`.
    pub fn expect(&self, needle: &str) -> &Self {
        if !self.result.contains(needle) {
            self.fail(&format!("{needle:?} not in its output"));
        }
        self
    }

    /// Fails unless the output contains the control-protocol line of
    /// `event` (the VMM logs every event it publishes).
    pub fn expect_event(&self, event: vmm_protocol::Event) -> &Self {
        self.expect(&event.to_string())
    }

    /// The value of the first `key=value` line in the output.
    pub fn value(&self, key: &str) -> String {
        let prefix = format!("{key}=");
        self.result
            .output
            .lines()
            .find_map(|l| l.trim().strip_prefix(&prefix).map(str::to_string))
            .unwrap_or_else(|| self.fail(&format!("no {key}= line")))
    }

    /// The value of `key=` parsed as a number.
    pub fn number(&self, key: &str) -> u64 {
        let v = self.value(key);
        v.trim()
            .parse()
            .unwrap_or_else(|_| self.fail(&format!("{key}={v} is not a number")))
    }
}
