//! `cargo xtask demo`: the whole system in the nested test host: `sysmgr`
//! with an android-role and a cluster-role guest (each its own VMM), the
//! MCU simulator turning the ignition off and on, Android's VHAL shutdown
//! handshake, and a summary at the end. The scenario is
//! `prebuilts/testhost/scenarios/demo.sh`; what is shown comes from its
//! markers ([`crate::demo_report`]). Exits non-zero when the system did not
//! behave as described.

use std::io::IsTerminal;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{bail, Result};
use vmstack_tests::testhost::{self, TestHostConfig, TestHostRun};

use crate::demo_report::{live_line, Report, Style};
use crate::paths::Arch;
use crate::run;
use crate::util::step;

/// The scenario.
const SCENARIO: &str = "demo";

/// Its timeout in the test host: ~3 min on a quiet machine, more when the
/// machine is shared (the test host is emulated).
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(900);

/// Lines of each log shown after a failure.
const FAILURE_TAIL: usize = 40;

/// Why `--direct` is gone, as its error.
const DIRECT_GONE: &str = "`cargo xtask demo --direct` was removed: the demo is now the whole \
     system (sysmgr, two VMs, the MCU simulator), which runs in the nested test host; run \
     `cargo xtask demo`. To boot one guest on a machine with hardware KVM, see README.md, \
     \"Booting a guest directly\"";

/// How this process's stdout is drawn on (colours and width on a terminal).
fn stdout_style() -> Style {
    static STYLE: OnceLock<Style> = OnceLock::new();
    *STYLE.get_or_init(|| {
        let tty = std::io::stdout().is_terminal();
        Style {
            color: tty && std::env::var_os("NO_COLOR").is_none(),
            width: if tty { terminal_width() } else { None },
        }
    })
}

/// The terminal's columns, if stdout is one.
fn terminal_width() -> Option<usize> {
    // SAFETY: winsize is plain old data; all-zero is a valid value.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes one winsize to the valid pointer we pass;
    // the result is checked.
    let rc = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) };
    (rc == 0 && ws.ws_col > 20).then_some(usize::from(ws.ws_col))
}

/// The live filter of the test host's console.
fn live(line: &str) -> Option<String> {
    live_line(line, stdout_style())
}

/// Boots the test host with the demo scenario, once more if the emulated
/// machine froze (a known QEMU problem, docs/testing.md: not the demo's).
fn boot(images: &std::path::Path) -> Result<TestHostRun> {
    let mut cfg =
        TestHostConfig::for_arch(Arch::X86_64, images, &[SCENARIO], &vmstack_tests::log_dir())?;
    cfg.scenario_timeout = SCENARIO_TIMEOUT;
    cfg.timeout = Duration::from_secs(60) + SCENARIO_TIMEOUT + Duration::from_secs(30);
    cfg.stream_filter = Some(live);
    let first = testhost::run(&cfg)?;
    if !first.froze {
        return Ok(first);
    }
    let kept = cfg.log_path.with_extension("froze.log");
    let _ = std::fs::rename(&cfg.log_path, &kept);
    step!(
        "the emulated test host froze after {:.0} s (a QEMU TCG problem, see docs/testing.md; \
         its log: {}); booting it once more",
        first.elapsed.as_secs_f64(),
        kept.display()
    );
    Ok(testhost::run(&cfg)?)
}

/// `cargo xtask demo [--direct]`.
pub fn demo(direct: bool) -> Result<()> {
    if direct {
        bail!("{DIRECT_GONE}");
    }
    let images = run::prepare(Arch::X86_64)?;
    run_with(&images.dir)
}

/// The demo on images already built (`cargo xtask test` runs it after the
/// nested tests without preparing them again).
pub fn run_with(images: &std::path::Path) -> Result<()> {
    step!(
        "demo: booting the nested test host (QEMU TCG, 1 vCPU); sysmgr, two VMs and the MCU \
         simulator run inside it. This takes a few minutes; the full console goes to {}",
        vmstack_tests::log_dir().display()
    );
    let run = boot(images)?;
    let section = run.scenario(SCENARIO);
    let report = Report::parse(section.map_or("", |s| s.output.as_str()));
    let rc = section.and_then(|s| s.rc);
    let mut problems = report.problems();
    match rc {
        Some(0) => {}
        Some(137) => problems.push("the scenario was killed at its timeout (rc=137)".to_string()),
        Some(n) => problems.push(format!("the scenario ended with rc={n}")),
        None => problems.push("the scenario did not end".to_string()),
    }
    if run.timed_out {
        problems.push("the test host was killed at its hard timeout".to_string());
    }
    if !problems.is_empty() {
        // The logs first, so that the summary ends the screen.
        if section.is_some() {
            print!("{}", report.failure_details(FAILURE_TAIL));
        } else {
            print!("{}", run.failure_report("the demo scenario did not start"));
        }
    }
    print!(
        "{}",
        report.summary(stdout_style(), run.elapsed.as_secs_f64())
    );
    if problems.is_empty() {
        step!("console log: {}", run.log_path.display());
        return Ok(());
    }
    bail!(
        "the demo did not behave as described: {}; full console: {}",
        problems.join("; "),
        run.log_path.display()
    )
}
