//! The demo summary's digest of the decision log (`sysmgr`'s
//! `decisions.jsonl`, printed by the demo scenario at its end): what each
//! party did, the arbiter's decisions, and boot and handshake times. Pure.

use system_manager::{ApPowerStateReport, Input, LogRecord, Millis, Output};

/// Seconds of a log time.
fn secs(t: Millis) -> f64 {
    t.as_millis() as f64 / 1000.0
}

/// A decoded VHAL report, or its raw values.
fn report(value: i32, param: i32) -> Result<ApPowerStateReport, String> {
    ApPowerStateReport::from_vhal(value, param).map_err(|_| format!("[{value}, {param}]"))
}

/// The name of a VHAL report without its parameter (`SHUTDOWN_POSTPONE`).
fn report_name(value: i32, param: i32) -> String {
    match report(value, param) {
        Ok(r) => {
            let text = r.to_string();
            text.split('(').next().unwrap_or(&text).to_string()
        }
        Err(raw) => raw,
    }
}

/// An input as a person would say it (VHAL reports decoded).
fn input_text(input: &Input) -> String {
    match input {
        Input::ApPowerStateReport {
            guest,
            value,
            param,
        } => match report(*value, *param) {
            Ok(r) => format!("{guest} reports {r}"),
            Err(raw) => format!("{guest} reports {raw}"),
        },
        other => other.to_string(),
    }
}

/// Whether an output is a command for someone (not a timer or a note).
fn is_command(o: &Output) -> bool {
    !o.is_log_only() && !matches!(o, Output::SetTimer { .. })
}

/// An output as the core writes it, without its ` (reason)`.
fn without_reason(o: &Output) -> String {
    let text = o.to_string();
    let suffix = format!(" ({})", o.reason());
    text.strip_suffix(&suffix).unwrap_or(&text).to_string()
}

/// A decision as the core's explanations write it (`hold virtually off`),
/// from its `<guest>: request <id>: <decision>` text.
fn decision_text(o: &Output) -> String {
    match o {
        Output::Decide {
            guest,
            request_id,
            decision,
            ..
        } => {
            let text = without_reason(o);
            text.strip_prefix(&format!("{guest}: request {request_id}: "))
                .map_or_else(|| decision.to_string(), str::to_string)
        }
        _ => without_reason(o),
    }
}

/// A command without its reason; a decision without its request id (the
/// input names it).
fn command_text(o: &Output) -> String {
    match o {
        Output::Decide { guest, .. } => format!("{guest}: {}", decision_text(o)),
        _ => without_reason(o),
    }
}

/// Whether the reason of an output is worth showing beside it: the
/// arbiter's choices, not what follows from an input by itself.
fn explain(o: &Output) -> bool {
    matches!(
        o,
        Output::Decide { .. }
            | Output::HardStopVm { .. }
            | Output::PauseVm { .. }
            | Output::SystemPowerOff { .. }
            | Output::SystemSuspend { .. }
    )
}

/// The MCU's name of a system command (as `mcu-sim` prints it).
fn mcu_command(o: &Output) -> Option<&'static str> {
    match o {
        Output::SystemOn { .. } => Some("POWER_ON"),
        Output::SystemPowerOff { .. } => Some("POWER_OFF"),
        Output::SystemSuspend { .. } => Some("SUSPEND"),
        _ => None,
    }
}

/// `name xN` counts in first-seen order.
#[derive(Default)]
struct Counts(Vec<(String, usize)>);

impl Counts {
    fn add(&mut self, name: String) {
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some((_, c)) => *c += 1,
            None => self.0.push((name, 1)),
        }
    }

    fn text(&self) -> String {
        self.0
            .iter()
            .map(|(n, c)| format!("{n} x{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// What one guest did and had done to it.
#[derive(Default)]
struct Guest {
    name: String,
    vm: Vec<String>,
    reports: Counts,
    requests: Vec<String>,
    exits: Counts,
}

/// What each party did.
#[derive(Default)]
pub struct Parties {
    mcu_signals: Vec<String>,
    mcu_commands: Vec<String>,
    guests: Vec<Guest>,
    inputs: usize,
    commands: usize,
    rejected: usize,
}

impl Parties {
    fn guest(&mut self, name: &str) -> &mut Guest {
        let i = match self.guests.iter().position(|g| g.name == name) {
            Some(i) => i,
            None => {
                self.guests.push(Guest {
                    name: name.to_string(),
                    ..Guest::default()
                });
                self.guests.len() - 1
            }
        };
        &mut self.guests[i]
    }

    /// Reads the log.
    pub fn from_records(records: &[LogRecord]) -> Parties {
        let mut p = Parties {
            inputs: records.len(),
            ..Parties::default()
        };
        for r in records {
            let at = secs(r.at);
            match &r.input {
                Input::IgnitionOn
                | Input::IgnitionOff
                | Input::VehicleInUse { .. }
                | Input::WakeRequest { .. } => {
                    p.mcu_signals.push(format!("{} {at:.1}", r.input));
                }
                Input::ApPowerStateReport {
                    guest,
                    value,
                    param,
                } => p.guest(guest).reports.add(report_name(*value, *param)),
                Input::VmExited { guest, reason } => {
                    p.guest(guest).exits.add(reason.to_string());
                }
                Input::VmLost { guest } => p.guest(guest).exits.add("VMM lost".into()),
                _ => {}
            }
            for o in &r.outputs {
                if is_command(o) {
                    p.commands += 1;
                }
                if let Some(name) = mcu_command(o) {
                    p.mcu_commands.push(format!("{name} {at:.1}"));
                }
                match o {
                    Output::Rejected { .. } => p.rejected += 1,
                    Output::StartVm { guest, .. } => {
                        p.guest(guest).vm.push(format!("start {at:.1}"))
                    }
                    Output::ResumeVm { guest, .. } => {
                        p.guest(guest).vm.push(format!("resume {at:.1}"));
                    }
                    Output::HardStopVm { guest, .. } => {
                        p.guest(guest).vm.push(format!("hard stop {at:.1}"));
                    }
                    Output::PauseVm { guest, .. } => {
                        p.guest(guest).vm.push(format!("pause {at:.1}"))
                    }
                    Output::Decide { guest, .. } => {
                        let kind = match &r.input {
                            Input::GuestPowerRequest { kind, .. } => kind.to_string(),
                            _ => "request".to_string(),
                        };
                        let decision = decision_text(o);
                        p.guest(guest)
                            .requests
                            .push(format!("{kind} {at:.1} -> {decision}"));
                    }
                    _ => {}
                }
            }
        }
        p
    }

    /// One or two lines per party.
    pub fn lines(&self) -> Vec<String> {
        let mut out = vec![
            format!("MCU      signals: {}", self.mcu_signals.join(", ")),
            format!("         was told: {}", self.mcu_commands.join(", ")),
        ];
        for g in &self.guests {
            let mut first = format!("VM: {}", g.vm.join(", "));
            if !g.exits.0.is_empty() {
                first.push_str(&format!("; VM exits: {}", g.exits.text()));
            }
            out.push(format!("{:<8} {first}", g.name));
            let mut second = Vec::new();
            if !g.reports.0.is_empty() {
                second.push(format!("VHAL reports: {}", g.reports.text()));
            }
            if !g.requests.is_empty() {
                second.push(format!("power requests: {}", g.requests.join(", ")));
            }
            if !second.is_empty() {
                out.push(format!("         {}", second.join("; ")));
            }
        }
        out.push(format!(
            "sysmgr   {} inputs logged, {} commands out, {} inputs rejected",
            self.inputs, self.commands, self.rejected
        ));
        out
    }
}

/// One line per input that led to a command or a granted postpone: `t
/// input -> commands -- why` (the reason of each choice the arbiter made).
/// Repeated postpones are one line.
pub fn decision_lines(records: &[LogRecord]) -> Vec<String> {
    // (times, input, what)
    let mut rows: Vec<(Vec<f64>, String, String)> = Vec::new();
    for r in records {
        let commands: Vec<&Output> = r.outputs.iter().filter(|o| is_command(o)).collect();
        let postpone_granted = matches!(
            &r.input,
            Input::ApPowerStateReport { value, param, .. }
                if matches!(report(*value, *param), Ok(ApPowerStateReport::ShutdownPostpone { .. }))
        ) && !r
            .outputs
            .iter()
            .any(|o| matches!(o, Output::Rejected { .. }));
        let what = if !commands.is_empty() {
            let done: Vec<String> = commands.iter().map(|o| command_text(o)).collect();
            let why: Vec<&str> = commands
                .iter()
                .filter(|o| explain(o))
                .map(|o| o.reason())
                .collect();
            if why.is_empty() {
                done.join("; ")
            } else {
                format!("{} -- {}", done.join("; "), why.join("; "))
            }
        } else if postpone_granted {
            "granted".to_string()
        } else {
            continue;
        };
        let input = input_text(&r.input);
        match rows.last_mut() {
            Some((times, last_input, last_what)) if *last_input == input && *last_what == what => {
                times.push(secs(r.at));
            }
            _ => rows.push((vec![secs(r.at)], input, what)),
        }
    }
    rows.into_iter()
        .map(|(times, input, what)| {
            let repeat = if times.len() > 1 {
                let at: Vec<String> = times.iter().map(|t| format!("{t:.1}")).collect();
                format!(" x{} (t={})", times.len(), at.join(", "))
            } else {
                String::new()
            };
            format!("{:>6.1}  {input}{repeat} -> {what}", times[0])
        })
        .collect()
}

/// Boot times of the guest with a VHAL channel (VM start or resume to its
/// first `WAIT_FOR_VHAL`) and shutdown handshakes (`SHUTDOWN_PREPARE` to
/// the guest's power request).
pub fn timing_lines(records: &[LogRecord]) -> Vec<String> {
    let vhal_guest = records.iter().find_map(|r| match &r.input {
        Input::ApPowerStateReport { guest, .. } => Some(guest.clone()),
        _ => None,
    });
    let Some(android) = vhal_guest else {
        return Vec::new();
    };
    let mut boots = Vec::new();
    let mut handshakes = Vec::new();
    let mut started: Option<Millis> = None;
    let mut prepare: Option<Millis> = None;
    for r in records {
        match &r.input {
            Input::ApPowerStateReport {
                guest,
                value,
                param,
            } if *guest == android
                && matches!(report(*value, *param), Ok(ApPowerStateReport::WaitForVhal)) =>
            {
                if let Some(t) = started.take() {
                    boots.push(format!("{:.1} s", secs(r.at) - secs(t)));
                }
            }
            Input::GuestPowerRequest { guest, .. } if *guest == android => {
                if let Some(t) = prepare.take() {
                    handshakes.push(format!("{:.1} s", secs(r.at) - secs(t)));
                }
            }
            _ => {}
        }
        for o in &r.outputs {
            match o {
                Output::StartVm { guest, .. } | Output::ResumeVm { guest, .. }
                    if *guest == android =>
                {
                    started = Some(r.at);
                }
                Output::ApPowerStateReq { guest, state, .. }
                    if *guest == android
                        && prepare.is_none()
                        && state.to_string().starts_with("SHUTDOWN_PREPARE") =>
                {
                    prepare = Some(r.at);
                }
                _ => {}
            }
        }
    }
    let mut parts = Vec::new();
    if !boots.is_empty() {
        parts.push(format!(
            "{android} boots (VM start to WAIT_FOR_VHAL): {}",
            boots.join(", ")
        ));
    }
    if !handshakes.is_empty() {
        parts.push(format!(
            "shutdown handshakes (SHUTDOWN_PREPARE to {android}'s power request): {}",
            handshakes.join(", ")
        ));
    }
    if parts.is_empty() {
        Vec::new()
    } else {
        vec![parts.join("; ")]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The decision log of a real run (the `demo.log` markers).
    fn records() -> Vec<LogRecord> {
        include_str!("../testdata/demo-section.txt")
            .lines()
            .filter_map(|l| l.strip_prefix("@@vmstack:demo.log="))
            .map(|l| LogRecord::from_json_line(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    #[test]
    fn parties_say_who_did_what() {
        let lines = Parties::from_records(&records()).lines().join("\n");
        for needle in [
            "MCU      signals: vehicle in use",
            "ignition off",
            "was told: POWER_ON",
            "POWER_OFF",
            "android  VM: start",
            "resume",
            "SHUTDOWN_POSTPONE x4",
            "poweroff",
            "-> hold virtually off",
            "-> allow",
            "cluster  VM: start",
            "hard stop",
            "VM exits: killed x1",
            "inputs rejected",
        ] {
            assert!(lines.contains(needle), "{needle:?} not in\n{lines}");
        }
    }

    #[test]
    fn decisions_explain_the_arbiters_choices_and_merge_postpones() {
        let lines = decision_lines(&records());
        let text = lines.join("\n");
        assert!(
            text.contains("android reports SHUTDOWN_POSTPONE(5000 ms) x2 (t="),
            "{text}"
        );
        assert!(
            text.contains("android: hold virtually off; android: AP_POWER_STATE_REQ FINISHED -- ")
        );
        assert!(text.contains("cluster: hard stop -- "));
        assert!(!text.contains("tick ->") || text.contains("hard stop"));
        // Inputs without a command (VM started, notes) are left out.
        assert!(!text.contains("VM started"), "{text}");
    }

    #[test]
    fn timings_measure_boots_and_handshakes() {
        let lines = timing_lines(&records());
        assert_eq!(lines.len(), 1);
        let l = &lines[0];
        assert!(
            l.contains("android boots (VM start to WAIT_FOR_VHAL): "),
            "{l}"
        );
        let durations = l
            .split([',', ';', ':'])
            .filter(|part| {
                part.trim()
                    .strip_suffix(" s")
                    .is_some_and(|n| n.parse::<f64>().is_ok())
            })
            .count();
        assert_eq!(durations, 4, "two boots and two handshakes: {l}");
        assert!(timing_lines(&[]).is_empty());
    }
}
