//! What `cargo xtask demo` shows: the live lines and the closing summary,
//! made from the `demo` scenario's markers (`@@vmstack:demo.<key>=<value>`,
//! printed by `prebuilts/testhost/scenarios/demo.sh`) and the decision log
//! it prints at the end. Pure: console text in, screen text out.
//!
//! | key | value | live |
//! |---|---|---|
//! | `plan` | `N\|title`: the acts, before the first starts | the outline |
//! | `act` | `N\|t\|title`: act N begins | a section header |
//! | `say` | `t\|text`: what happens | a line |
//! | `check` | `PASS\|t\|text` or `FAIL\|t\|text`: an expected step | a line |
//! | `wait` | `t\|text`: a check is still waiting | a line |
//! | `table` | a line of `sysmgr status` / `sysmgr events` | indented |
//! | `act-end` | `N\|t\|PASS` or `FAIL` | - |
//! | `log` | one decision-log record (JSON) | - |
//! | `result` | `PASS` or `FAIL` | - |
//!
//! Times `t` are seconds on the arbiter's clock, like the decision log's.
//! After a failure the scenario also prints the state, the decision log
//! and every log (other markers and `<guest>| ` console lines): kept by
//! source for [`Report::failure_details`].

use std::fmt::Write;

use system_manager::LogRecord;

use crate::demo_log::{decision_lines, timing_lines, Parties};

/// What the test host prints when its nested KVM is ready.
const READY: &str = "VMSTACK-TESTHOST-READY at ";

/// How to draw: ANSI colours, and the width long lines are cut at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Style {
    /// Colour PASS/FAIL and headers.
    pub color: bool,
    /// Cut lines longer than this (a terminal's width); `None`: never.
    pub width: Option<usize>,
}

impl Style {
    /// No colours, no cutting.
    #[cfg(test)]
    pub const PLAIN: Style = Style {
        color: false,
        width: None,
    };

    fn paint(self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    fn pass(self) -> String {
        self.paint("1;32", "PASS")
    }

    fn fail(self) -> String {
        self.paint("1;31", "FAIL")
    }

    fn verdict(self, pass: bool) -> String {
        if pass {
            self.pass()
        } else {
            self.fail()
        }
    }

    fn bold(self, text: &str) -> String {
        self.paint("1", text)
    }

    /// `line` cut to the width (with `…` where it was cut).
    fn cut(self, line: &str) -> String {
        self.cut_after(0, line)
    }

    /// `line` cut to fit after `used` columns already printed.
    fn cut_after(self, used: usize, line: &str) -> String {
        match self.width.map(|w| w.saturating_sub(used)) {
            Some(w) if line.chars().count() > w && w > 1 => {
                let mut s: String = line.chars().take(w - 1).collect();
                s.push('…');
                s
            }
            _ => line.to_string(),
        }
    }
}

/// The key (after `demo.`) and value of a demo marker line.
fn marker(line: &str) -> Option<(&str, &str)> {
    let (key, value) = vmstack_tests::marker::parse_line(line)?;
    Some((key.strip_prefix("demo.")?, value))
}

/// Splits `a|b|rest` into at most `n` fields (the last keeps its `|`s).
fn fields(value: &str, n: usize) -> Vec<&str> {
    value.splitn(n, '|').collect()
}

/// A `TIME|TEXT` marker value as `   t=TIMEs  PREFIXTEXT`, cut to the width.
fn timed_line(style: Style, value: &str, prefix: &str) -> String {
    let f = fields(value, 2);
    style.cut(&format!(
        "   t={:>6}s  {prefix}{}",
        f[0],
        f.get(1).copied().unwrap_or_default()
    ))
}

/// What one console line of the test host shows live, if anything: the
/// demo's own markers, the test host's readiness and its errors. Everything
/// else (kernel logs, the guests' consoles) stays in the log file.
pub fn live_line(line: &str, style: Style) -> Option<String> {
    if let Some(rest) = line.strip_prefix(READY) {
        return Some(format!(
            "test host ready at {rest} of its uptime: its kernel loaded kvm_amd, nested KVM is up"
        ));
    }
    if line.starts_with("VMSTACK-TESTHOST-ERROR")
        || line.starts_with("[testhost: frozen")
        || (line.starts_with("testhost: scenario") && line.contains("timed out"))
    {
        return Some(style.paint("1;31", line));
    }
    let (key, value) = marker(line)?;
    let shown = match key {
        "plan" => {
            let f = fields(value, 2);
            let (n, title) = (f[0], f.get(1).copied().unwrap_or_default());
            let head = if n == "1" {
                format!("\n{}\n", style.bold("What happens:"))
            } else {
                String::new()
            };
            format!("{head}  {n}. {title}")
        }
        "act" => {
            let f = fields(value, 3);
            let (n, t, title) = (
                f[0],
                f.get(1).copied().unwrap_or_default(),
                f.get(2).copied().unwrap_or_default(),
            );
            let head = format!("── {n}. {title} ");
            let rule = "─".repeat(
                style
                    .width
                    .unwrap_or(100)
                    .saturating_sub(head.chars().count() + 10)
                    .max(3),
            );
            format!("\n{} t={t}s", style.bold(&format!("{head}{rule}")))
        }
        "say" => timed_line(style, value, ""),
        "check" => {
            let f = fields(value, 3);
            let pass = f[0] == "PASS";
            let text = style.cut_after(
                8,
                &format!(
                    "t={:>6}s  {}",
                    f.get(1).copied().unwrap_or_default(),
                    f.get(2).copied().unwrap_or_default()
                ),
            );
            format!("   {} {text}", style.verdict(pass))
        }
        "wait" => timed_line(style, value, "… "),
        "table" => style.cut(&format!("      {value}")),
        _ => return None,
    };
    Some(shown)
}

/// One check of an act.
#[derive(Clone, Debug, PartialEq)]
pub struct Check {
    /// Whether it held.
    pub pass: bool,
    /// When it became true (or was given up), seconds.
    pub at: f64,
    /// What was expected.
    pub text: String,
}

/// One act that started.
#[derive(Clone, Debug, PartialEq)]
pub struct Act {
    /// 1-based number.
    pub n: usize,
    /// Its title.
    pub title: String,
    /// When it began, seconds.
    pub start: f64,
    /// When it ended and whether it passed; `None`: it never ended.
    pub end: Option<(f64, bool)>,
    /// Its checks in order.
    pub checks: Vec<Check>,
}

/// Everything the `demo` scenario reported.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// The act titles, in order.
    pub plan: Vec<String>,
    /// The acts that started.
    pub acts: Vec<Act>,
    /// The decision log.
    pub records: Vec<LogRecord>,
    /// Decision-log lines that did not parse (with the error).
    pub bad_records: Vec<String>,
    /// The scenario's own verdict (`PASS`/`FAIL`), if it got that far.
    pub result: Option<String>,
    /// Every other line of the section, by source, in first-seen order:
    /// what the scenario prints after a failure (`status`, `events`,
    /// `mcu`, `sysmgr-N`, `android` and `cluster` for a guest's console and
    /// markers) and the test host's own kernel messages (`test host`).
    pub logs: Vec<(String, Vec<String>)>,
}

/// Which log a line that is not a demo marker belongs to: a marker's first
/// key part, a guest console's `<tag>| ` prefix, or the test host.
fn source(line: &str) -> (String, String) {
    if let Some((key, value)) = vmstack_tests::marker::parse_line(line) {
        return match key.split_once('.') {
            Some((name, rest)) => (name.to_string(), format!("{rest}={value}")),
            None => (key.to_string(), value.to_string()),
        };
    }
    match vmstack_tests::marker::guest_tag(line) {
        Some((tag, rest)) => (tag.to_string(), rest.to_string()),
        None => ("test host".to_string(), line.to_string()),
    }
}

fn secs(s: &str) -> f64 {
    s.trim().parse().unwrap_or(f64::NAN)
}

impl Report {
    /// Reads the scenario's output (its console section).
    pub fn parse(output: &str) -> Report {
        let mut r = Report::default();
        for line in output.lines() {
            let Some((key, value)) = marker(line) else {
                let (name, text) = source(line);
                match r.logs.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, lines)) => lines.push(text),
                    None => r.logs.push((name, vec![text])),
                }
                continue;
            };
            match key {
                "plan" => r.plan.push(
                    fields(value, 2)
                        .get(1)
                        .copied()
                        .unwrap_or_default()
                        .to_string(),
                ),
                "act" => {
                    let f = fields(value, 3);
                    r.acts.push(Act {
                        n: f[0].parse().unwrap_or(r.acts.len() + 1),
                        title: f.get(2).copied().unwrap_or_default().to_string(),
                        start: secs(f.get(1).copied().unwrap_or_default()),
                        end: None,
                        checks: Vec::new(),
                    });
                }
                "check" => {
                    let f = fields(value, 3);
                    if let Some(act) = r.acts.last_mut() {
                        act.checks.push(Check {
                            pass: f[0] == "PASS",
                            at: secs(f.get(1).copied().unwrap_or_default()),
                            text: f.get(2).copied().unwrap_or_default().to_string(),
                        });
                    }
                }
                "act-end" => {
                    let f = fields(value, 3);
                    if let Some(act) = r.acts.last_mut() {
                        act.end = Some((
                            secs(f.get(1).copied().unwrap_or_default()),
                            f.get(2).copied() == Some("PASS"),
                        ));
                    }
                }
                "log" => match LogRecord::from_json_line(value) {
                    Ok(rec) => r.records.push(rec),
                    Err(e) => r.bad_records.push(format!("{e}: {value}")),
                },
                "result" => r.result = Some(value.to_string()),
                _ => {}
            }
        }
        r
    }

    /// Why the demo did not behave as described, one line each; empty when
    /// it did.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.plan.is_empty() {
            p.push("the scenario printed no plan (did it start?)".to_string());
        }
        for act in &self.acts {
            for c in act.checks.iter().filter(|c| !c.pass) {
                p.push(format!("act {}: {}", act.n, c.text));
            }
            match act.end {
                None => p.push(format!("act {} ({}) never ended", act.n, act.title)),
                Some((_, false)) if act.checks.iter().all(|c| c.pass) => {
                    p.push(format!("act {} ({}) failed", act.n, act.title))
                }
                _ => {}
            }
        }
        for title in self.plan.iter().skip(self.acts.len()) {
            p.push(format!("not reached: {title}"));
        }
        if self.records.is_empty() {
            p.push("no decision log".to_string());
        }
        for bad in &self.bad_records {
            p.push(format!("decision log line does not parse: {bad}"));
        }
        match self.result.as_deref() {
            Some("PASS") => {}
            Some(other) => p.push(format!("the scenario's verdict: {other}")),
            None => p.push("the scenario did not finish (no result)".to_string()),
        }
        p
    }

    /// The closing summary: the acts with their checks, what each party
    /// did, the arbiter's decisions, timings and the verdict.
    pub fn summary(&self, style: Style, testhost_secs: f64) -> String {
        let mut out = String::new();
        let title = " vmstack demo: summary (t = seconds on the arbiter's clock) ";
        let side = "═".repeat(
            style
                .width
                .unwrap_or(100)
                .min(100)
                .saturating_sub(title.len())
                / 2,
        );
        let _ = writeln!(out, "\n{}", style.bold(&format!("{side}{title}{side}")));
        for (i, title) in self.plan.iter().enumerate() {
            let n = i + 1;
            let Some(act) = self.acts.iter().find(|a| a.n == n) else {
                let _ = writeln!(out, " {} {n}. {title} (not reached)", style.fail());
                continue;
            };
            let pass = matches!(act.end, Some((_, true)));
            let span = match act.end {
                Some((end, _)) => format!("t={:.1}-{end:.1}", act.start),
                None => format!("t={:.1}-", act.start),
            };
            let _ = writeln!(
                out,
                " {} {}",
                style.verdict(pass),
                style.cut_after(6, &format!("{n}. {title}  [{span}]"))
            );
            for c in &act.checks {
                let mark = if c.pass { "✓" } else { "✗" };
                let _ = writeln!(
                    out,
                    "{}",
                    style.cut(&format!("      {mark} {:>6.1}  {}", c.at, c.text))
                );
            }
        }
        let _ = writeln!(out, "{}", style.bold("Who did what"));
        for line in Parties::from_records(&self.records).lines() {
            let _ = writeln!(out, "{}", style.cut(&format!("  {line}")));
        }
        let _ = writeln!(
            out,
            "{} (inputs that led to a command -- and why; `sysmgr events` has every input)",
            style.bold("The arbiter's decisions")
        );
        for line in decision_lines(&self.records) {
            let _ = writeln!(out, "{}", style.cut(&format!("  {line}")));
        }
        let _ = writeln!(out, "{}", style.bold("Timings"));
        for line in timing_lines(&self.records) {
            let _ = writeln!(out, "{}", style.cut(&format!("  {line}")));
        }
        let acts = self
            .acts
            .last()
            .and_then(|a| a.end)
            .zip(self.acts.first())
            .map_or("-".to_string(), |((end, _), first)| {
                format!("{:.0} s", end - first.start)
            });
        let _ = writeln!(
            out,
            "{}",
            style.cut(&format!(
                "  the acts {acts}; the test host run {testhost_secs:.0} s in all (emulated: \
                 guests boot far slower than on hardware)"
            ))
        );
        let problems = self.problems();
        let checks: usize = self.acts.iter().map(|a| a.checks.len()).sum();
        let passed: usize = self
            .acts
            .iter()
            .map(|a| a.checks.iter().filter(|c| c.pass).count())
            .sum();
        if problems.is_empty() {
            let _ = writeln!(
                out,
                "{} {}/{} acts, {passed}/{checks} checks: the system behaved as described",
                style.pass(),
                self.acts.len(),
                self.plan.len()
            );
        } else {
            let _ = writeln!(
                out,
                "{} {passed}/{checks} checks passed; {}",
                style.fail(),
                problems.join("; ")
            );
        }
        out
    }

    /// After a failure: the last `tail` lines of each log the scenario
    /// printed (the state, the decision log, the guests' consoles, the
    /// daemons' journals, the MCU, the test host's kernel).
    /// The state and the decision log first, the test host's kernel last.
    pub fn failure_details(&self, tail: usize) -> String {
        let rank = |name: &str| match name {
            "status" => 0,
            "events" => 1,
            "test host" => 3,
            _ => 2,
        };
        let mut logs: Vec<&(String, Vec<String>)> = self.logs.iter().collect();
        logs.sort_by_key(|(name, _)| rank(name));
        let mut out = String::new();
        for (name, lines) in logs {
            let skip = lines.len().saturating_sub(tail);
            let _ = writeln!(
                out,
                "----- {name}: last {} of {} lines -----",
                lines.len() - skip,
                lines.len()
            );
            for l in &lines[skip..] {
                let _ = writeln!(out, "{name}| {l}");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = include_str!("../testdata/demo-section.txt");

    #[test]
    fn live_shows_only_demo_lines_and_test_host_state() {
        let p = Style::PLAIN;
        assert_eq!(
            live_line("[    1.234] kvm: Nested Virtualization enabled", p),
            None
        );
        assert_eq!(live_line("android| vhal: REQ ON", p), None);
        assert_eq!(live_line("@@vmstack:demo.log={}", p), None);
        assert_eq!(live_line("@@vmstack:mcu=mcu: <- POWER_ON", p), None);
        assert_eq!(
            live_line("@@vmstack:demo.check=PASS|12.3|cluster booted", p).as_deref(),
            Some("   PASS t=  12.3s  cluster booted")
        );
        assert_eq!(
            live_line("@@vmstack:demo.say=1.0|mcu: ignition on", p).as_deref(),
            Some("   t=   1.0s  mcu: ignition on")
        );
        assert!(
            live_line("VMSTACK-TESTHOST-READY at 4.1 s", p).is_some_and(|l| l.contains("4.1 s"))
        );
        assert!(live_line("VMSTACK-TESTHOST-ERROR: /dev/kvm missing", p).is_some());
        let narrow = Style {
            color: false,
            width: Some(12),
        };
        assert_eq!(
            live_line("@@vmstack:demo.table=GUEST    ROLE     STATE", narrow).as_deref(),
            Some("      GUEST…")
        );
    }

    #[test]
    fn a_complete_run_passes_and_summarises_the_log() {
        let r = Report::parse(FIXTURE);
        assert_eq!(r.problems(), Vec::<String>::new());
        assert_eq!(r.plan.len(), 5);
        assert_eq!(r.acts.len(), 5);
        let text = r.summary(Style::PLAIN, 180.0);
        for needle in [
            "PASS 5/5 acts",
            "Who did what",
            "The arbiter's decisions",
            "Timings",
            "the test host run 180 s",
        ] {
            assert!(text.contains(needle), "{needle:?} not in\n{text}");
        }
        assert!(text.lines().count() <= 50, "more than a screen:\n{text}");
    }

    #[test]
    fn a_failed_check_fails_and_names_what_was_not_reached() {
        let cut = FIXTURE
            .lines()
            .take_while(|l| !l.starts_with("@@vmstack:demo.act=4|"))
            .collect::<Vec<_>>()
            .join("\n");
        let failed = format!(
            "{cut}\n@@vmstack:demo.act=4|90.0|Ignition on again\n\
             @@vmstack:demo.check=FAIL|390.0|android booted again (not within 300 s)\n\
             @@vmstack:demo.act-end=4|390.0|FAIL\n@@vmstack:events=SEQ  TIME\n\
             @@vmstack:mcu=mcu: <- POWER_ON\nandroid| last words\n\
             @@vmstack:android.guest.vhal=vhal: REQ ON\n[ 9.1] kvm: something\n\
             @@vmstack:demo.result=FAIL\n"
        );
        let r = Report::parse(&failed);
        let p = r.problems();
        assert!(
            p.iter().any(|l| l.contains("android booted again")),
            "{p:?}"
        );
        assert!(p.iter().any(|l| l.starts_with("not reached: ")), "{p:?}");
        assert!(p.iter().any(|l| l.contains("no decision log")), "{p:?}");
        assert!(!r.problems().is_empty());
        assert!(r.summary(Style::PLAIN, 1.0).contains("(not reached)"));
        let details = r.failure_details(10);
        assert!(details.starts_with("----- events:"), "{details}");
        assert!(
            details
                .trim_end()
                .ends_with("test host| [ 9.1] kvm: something"),
            "{details}"
        );
        for needle in [
            "----- events: last 1 of 1 lines -----\nevents| SEQ  TIME",
            "mcu| mcu: <- POWER_ON",
            "----- android: last 2 of 2 lines -----\nandroid| last words\nandroid| guest.vhal=vhal: REQ ON",
            "test host| [ 9.1] kvm: something",
        ] {
            assert!(details.contains(needle), "{needle:?} not in\n{details}");
        }
    }

    #[test]
    fn a_scenario_that_stopped_early_does_not_pass() {
        let r = Report::parse("@@vmstack:demo.plan=1|Start\n@@vmstack:demo.act=1|0.0|Start\n");
        let p = r.problems();
        assert!(p.iter().any(|l| l.contains("never ended")), "{p:?}");
        assert!(p.iter().any(|l| l.contains("did not finish")), "{p:?}");
        assert!(!Report::parse("").problems().is_empty());
    }
}
