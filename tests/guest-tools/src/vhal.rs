//! Android's side of the VHAL power handshake as the test stand-ins play it
//! on either channel (`vhal-test client` on the line channel,
//! `vhal-binder-test` in the android crate over binder): the names they
//! print, the report values and the shutdown script.

use std::sync::Mutex;
use std::time::Duration;

/// `AP_POWER_STATE_REPORT` values the stand-ins send (VHAL's
/// `VehicleApPowerStateReport`; `ISystemManager` uses the same numbers).
pub mod report {
    /// `WAIT_FOR_VHAL`.
    pub const WAIT_FOR_VHAL: i32 = 1;
    /// `SHUTDOWN_POSTPONE`, with the milliseconds as its parameter.
    pub const SHUTDOWN_POSTPONE: i32 = 4;
    /// `SHUTDOWN_START`.
    pub const SHUTDOWN_START: i32 = 5;
    /// `ON`.
    pub const ON: i32 = 6;
    /// `SHUTDOWN_CANCELLED`.
    pub const SHUTDOWN_CANCELLED: i32 = 8;
}

/// The script run on the first `SHUTDOWN_PREPARE` when none is given.
pub const DEFAULT_SCRIPT: &str = "postpone:5000,postpone:5000,start";

const REQ_NAMES: [&str; 4] = ["ON", "SHUTDOWN_PREPARE", "CANCEL_SHUTDOWN", "FINISHED"];
const PARAM_NAMES: [&str; 8] = [
    "0",
    "SHUTDOWN_IMMEDIATELY",
    "CAN_SLEEP",
    "SHUTDOWN_ONLY",
    "SLEEP_IMMEDIATELY",
    "HIBERNATE_IMMEDIATELY",
    "CAN_HIBERNATE",
    "EMERGENCY_SHUTDOWN",
];

/// The line printed for an `AP_POWER_STATE_REQ`: `vhal: REQ <NAME>`, with
/// the parameter's name for `SHUTDOWN_PREPARE` (`?` for unknown values).
pub fn req_line(value: usize, param: usize) -> String {
    let name = REQ_NAMES.get(value).copied().unwrap_or("?");
    if value == 1 {
        let param = PARAM_NAMES.get(param).copied().unwrap_or("?");
        format!("vhal: REQ {name}({param})")
    } else {
        format!("vhal: REQ {name}")
    }
}

/// Runs the shutdown script `steps` (`postpone:MS`, `start`, `hang`),
/// sending each report through `report(value, param, what)` and stopping
/// when `cancelled` is set; `start` ends in `poweroff -f`.
pub fn run_script(
    steps: &[String],
    step_ms: u64,
    cancelled: &Mutex<bool>,
    report: impl Fn(i32, i32, &str),
) {
    for step in steps {
        if *cancelled.lock().unwrap_or_else(|e| e.into_inner()) {
            println!("vhal: shutdown cancelled; script stopped");
            return;
        }
        if let Some(ms) = step.strip_prefix("postpone:") {
            let ms: i32 = ms.parse().unwrap_or(5000);
            report(
                report::SHUTDOWN_POSTPONE,
                ms,
                &format!("SHUTDOWN_POSTPONE {ms}"),
            );
            std::thread::sleep(Duration::from_millis(step_ms));
        } else if step == "start" {
            report(report::SHUTDOWN_START, 0, "SHUTDOWN_START");
            std::thread::sleep(Duration::from_secs(1));
            println!("vhal: powering off");
            let _ = std::process::Command::new("sync").status();
            let _ = std::process::Command::new("poweroff").arg("-f").status();
            return;
        } else if step == "hang" {
            println!("vhal: stops answering");
            return;
        } else {
            println!("vhal: unknown step {step:?}; stopping");
            return;
        }
    }
}

/// The value following `name` in `args` (`--port 5` gives `5`).
pub fn opt(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn req_lines_name_the_request_and_the_prepare_parameter() {
        assert_eq!(req_line(0, 0), "vhal: REQ ON");
        assert_eq!(req_line(1, 2), "vhal: REQ SHUTDOWN_PREPARE(CAN_SLEEP)");
        assert_eq!(req_line(1, 99), "vhal: REQ SHUTDOWN_PREPARE(?)");
        assert_eq!(req_line(7, 0), "vhal: REQ ?");
    }

    #[test]
    fn a_cancelled_script_reports_nothing() {
        let sent = Mutex::new(Vec::new());
        let steps = vec!["postpone:1".to_string()];
        run_script(&steps, 0, &Mutex::new(true), |v, p, _| {
            sent.lock().unwrap().push((v, p))
        });
        assert!(sent.lock().unwrap().is_empty());
        run_script(&steps, 0, &Mutex::new(false), |v, p, _| {
            sent.lock().unwrap().push((v, p))
        });
        assert_eq!(*sent.lock().unwrap(), [(report::SHUTDOWN_POSTPONE, 1)]);
    }

    #[test]
    fn opt_takes_the_next_argument() {
        let args: Vec<String> = ["client", "--port", "5"].map(String::from).to_vec();
        assert_eq!(opt(&args, "--port").as_deref(), Some("5"));
        assert_eq!(opt(&args, "--script"), None);
    }
}
