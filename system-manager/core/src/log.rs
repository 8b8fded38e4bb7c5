//! The decision log: one JSON line per handled input, with the time, the
//! input, every output (each with its reason) and the system state after it.
//!
//! The state is a pure fold of the inputs, so the log is also the arbiter's
//! persistence: [`Arbiter::replay`] rebuilds the state from the logged inputs,
//! and [`Arbiter::verify`] additionally checks that every recorded output is
//! reproduced (a log written by a different arbiter version, or tampered
//! with, fails at its first differing record).

use serde::{Deserialize, Serialize};

use crate::arbiter::Arbiter;
use crate::input::Input;
use crate::output::Output;
use crate::policy::Policy;
use crate::state::SystemState;
use crate::time::Millis;

/// An input with the time it was handled at: what the shell persists.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggedInput {
    /// The `now` passed to [`Arbiter::handle`].
    pub at: Millis,
    /// The input.
    pub input: Input,
}

/// One line of the decision log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    /// 1-based sequence number of the input.
    pub seq: u64,
    /// The `now` passed with the input.
    pub at: Millis,
    /// The input.
    pub input: Input,
    /// Everything the arbiter emitted for it, in order, each with its reason.
    pub outputs: Vec<Output>,
    /// The system state after the input.
    pub system: SystemState,
}

/// A decision log that does not replay.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A line is not a log record.
    #[error("decision log line {line}: {source}")]
    Parse {
        /// 1-based line number.
        line: usize,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// A record's sequence number is not the next one.
    #[error("decision log record {found}: expected sequence number {expected}")]
    Sequence {
        /// The sequence number replay expected.
        expected: u64,
        /// The one in the record.
        found: u64,
    },
    /// Replaying a record's input gave different outputs or state.
    #[error("decision log record {seq}: replay gives {actual} outputs and system {system}, the log has {logged} outputs and system {logged_system}")]
    Mismatch {
        /// The record's sequence number.
        seq: u64,
        /// Number of outputs replay produced.
        actual: usize,
        /// Number of outputs in the log.
        logged: usize,
        /// System state after replay.
        system: SystemState,
        /// System state in the log.
        logged_system: SystemState,
    },
}

impl LogRecord {
    /// The record as one line of JSON (no trailing newline).
    pub fn to_json_line(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }

    /// Parses one line of JSON.
    pub fn from_json_line(line: &str) -> Result<LogRecord, serde_json::Error> {
        serde_json::from_str(line)
    }

    /// Parses a whole log (blank lines are skipped).
    pub fn parse_log(text: &str) -> Result<Vec<LogRecord>, LogError> {
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(n, l)| {
                LogRecord::from_json_line(l).map_err(|source| LogError::Parse {
                    line: n + 1,
                    source,
                })
            })
            .collect()
    }

    /// The input part, for [`Arbiter::replay`].
    pub fn logged_input(&self) -> LoggedInput {
        LoggedInput {
            at: self.at,
            input: self.input.clone(),
        }
    }
}

impl Arbiter {
    /// Handles one input like [`Arbiter::handle`] and returns it as a
    /// decision-log record.
    pub fn step(&mut self, at: Millis, input: Input) -> LogRecord {
        let outputs = self.handle(at, input.clone());
        LogRecord {
            seq: self.inputs_handled(),
            at,
            input,
            outputs,
            system: *self.system(),
        }
    }

    /// Rebuilds an arbiter from logged inputs: a fresh arbiter for `policy`
    /// that handled each input in order. Returns it and every output it
    /// produced along the way.
    pub fn replay(policy: Policy, log: &[LoggedInput]) -> (Arbiter, Vec<Output>) {
        let mut arbiter = Arbiter::new(policy);
        let mut outputs = Vec::new();
        for entry in log {
            outputs.extend(arbiter.handle(entry.at, entry.input.clone()));
        }
        (arbiter, outputs)
    }

    /// Replays a decision log and checks every record's sequence number,
    /// outputs and system state. Returns the rebuilt arbiter.
    pub fn verify(policy: Policy, records: &[LogRecord]) -> Result<Arbiter, LogError> {
        Arbiter::new(policy).verify_from(records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy::from_toml_str("[[guest]]\nname = \"android\"\nrole = \"android\"\n")
            .expect("valid policy")
    }

    #[test]
    fn records_round_trip_through_json_lines() {
        let mut a = Arbiter::new(policy());
        let recs = vec![
            a.step(Millis(0), Input::IgnitionOn),
            a.step(
                Millis(10),
                Input::VmStarted {
                    guest: "android".into(),
                },
            ),
            a.step(Millis(20), Input::IgnitionOff),
        ];
        let text: String = recs
            .iter()
            .map(|r| r.to_json_line().expect("serializable") + "\n")
            .collect();
        assert_eq!(text.lines().count(), 3);
        let parsed = LogRecord::parse_log(&text).expect("parses");
        assert_eq!(parsed, recs);
        let b = Arbiter::verify(policy(), &parsed).expect("replays");
        assert_eq!(b, a);
    }

    #[test]
    fn bad_lines_and_tampering_are_reported() {
        let e = LogRecord::parse_log("\n{\"seq\":1}\n").expect_err("incomplete");
        assert!(e.to_string().starts_with("decision log line 2: "), "{e}");

        let mut a = Arbiter::new(policy());
        let mut recs = vec![a.step(Millis(0), Input::IgnitionOn)];
        recs[0].outputs.pop();
        let e = Arbiter::verify(policy(), &recs).expect_err("tampered");
        assert!(
            e.to_string()
                .starts_with("decision log record 1: replay gives"),
            "{e}"
        );

        recs[0].seq = 5;
        let e = Arbiter::verify(policy(), &recs).expect_err("bad sequence");
        assert_eq!(
            e.to_string(),
            "decision log record 5: expected sequence number 1"
        );
    }
}
