//! The arbiter's state as data, for the shell's snapshot of a compacted
//! decision log ([`ArbiterSnapshot`]), and the check that an input changed
//! nothing ([`Arbiter::step_unless_idle`]).
//!
//! A snapshot holds everything [`Arbiter`] folds from its inputs, but not
//! the policy: that comes from the policy file again, and
//! [`Arbiter::from_snapshot`] checks that its guests (names and roles, in
//! order) are the snapshot's.

use serde::{Deserialize, Serialize};

use super::Arbiter;
use crate::input::Input;
use crate::log::{LogError, LogRecord};
use crate::output::Output;
use crate::policy::Policy;
use crate::state::{GuestStatus, SystemState};
use crate::time::Millis;

/// The arbiter's state after some number of inputs, without the policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArbiterSnapshot {
    /// The time of the last input.
    pub now: Millis,
    /// Inputs handled (the sequence number of the last one).
    pub inputs: u64,
    /// The real system's state.
    pub system: SystemState,
    /// Ignition as last reported.
    pub ignition_on: bool,
    /// Vehicle in use as last reported.
    pub vehicle_in_use: bool,
    /// End of the last wake request's hold.
    pub wake_hold_until: Option<Millis>,
    /// Wake-up time Android gave with its final step.
    pub wake_after_s: Option<u32>,
    /// Every guest, in policy order.
    pub guests: Vec<GuestStatus>,
    /// The last timer announced.
    pub timer: Option<Millis>,
}

/// A snapshot that does not fit the policy.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The guests differ (names, roles or order).
    #[error("the snapshot's guests ({snapshot}) are not the policy's ({policy})")]
    Guests {
        /// The snapshot's guests, `name:role` comma-separated.
        snapshot: String,
        /// The policy's guests, `name:role` comma-separated.
        policy: String,
    },
}

/// What [`Arbiter::step_unless_idle`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stepped {
    /// The input changed the state or asked for something: it is handled
    /// and this is its record.
    Logged(LogRecord),
    /// The input changed nothing and asked for nothing (its outputs are
    /// only notes and rejections): the arbiter is as it was (not even its
    /// clock or input count moved), and these are the outputs for the
    /// journal.
    Idle(Vec<Output>),
}

impl Arbiter {
    /// The state, for a snapshot.
    pub fn snapshot(&self) -> ArbiterSnapshot {
        ArbiterSnapshot {
            now: self.now,
            inputs: self.inputs,
            system: self.system,
            ignition_on: self.ignition_on,
            vehicle_in_use: self.vehicle_in_use,
            wake_hold_until: self.wake_hold_until,
            wake_after_s: self.wake_after_s,
            guests: self.guests.clone(),
            timer: self.timer,
        }
    }

    /// The arbiter a snapshot describes, under `policy`, whose guests must
    /// be the snapshot's (names and roles, in order).
    pub fn from_snapshot(policy: Policy, s: ArbiterSnapshot) -> Result<Arbiter, SnapshotError> {
        let describe = |g: &mut dyn Iterator<Item = String>| g.collect::<Vec<_>>().join(",");
        let fits = policy.guests().len() == s.guests.len()
            && policy
                .guests()
                .iter()
                .zip(&s.guests)
                .all(|(p, g)| p.name == g.name && p.role == g.role);
        if !fits {
            return Err(SnapshotError::Guests {
                snapshot: describe(&mut s.guests.iter().map(|g| format!("{}:{}", g.name, g.role))),
                policy: describe(
                    &mut policy
                        .guests()
                        .iter()
                        .map(|g| format!("{}:{}", g.name, g.role)),
                ),
            });
        }
        Ok(Arbiter {
            policy,
            now: s.now,
            inputs: s.inputs,
            system: s.system,
            ignition_on: s.ignition_on,
            vehicle_in_use: s.vehicle_in_use,
            wake_hold_until: s.wake_hold_until,
            wake_after_s: s.wake_after_s,
            guests: s.guests,
            timer: s.timer,
        })
    }

    /// Like [`Arbiter::verify`], from `self` instead of a fresh arbiter:
    /// the records must continue its sequence numbers.
    pub fn verify_from(mut self, records: &[LogRecord]) -> Result<Arbiter, LogError> {
        for record in records {
            let expected = self.inputs_handled().saturating_add(1);
            if record.seq != expected {
                return Err(LogError::Sequence {
                    expected,
                    found: record.seq,
                });
            }
            let replayed = self.step(record.at, record.input.clone());
            if replayed.outputs != record.outputs || replayed.system != record.system {
                return Err(LogError::Mismatch {
                    seq: record.seq,
                    actual: replayed.outputs.len(),
                    logged: record.outputs.len(),
                    system: replayed.system,
                    logged_system: record.system,
                });
            }
        }
        Ok(self)
    }

    /// Handles `input` like [`Arbiter::step`], unless it changes nothing:
    /// when the state (everything but the clock and the input count) stays
    /// as it was and every output is a [`Output::Note`] or
    /// [`Output::Rejected`], the arbiter is left untouched and the input is
    /// not a record. Leaving such inputs out of the log keeps the replay
    /// exact (replay never sees them, and neither does this arbiter) and
    /// keeps a guest that repeats a pointless report from growing the log.
    pub fn step_unless_idle(&mut self, at: Millis, input: Input) -> Stepped {
        let mut trial = self.clone();
        let record = trial.step(at, input);
        let only_notes = record
            .outputs
            .iter()
            .all(|o| matches!(o, Output::Note { .. } | Output::Rejected { .. }));
        if only_notes && trial.same_state(self) {
            Stepped::Idle(record.outputs)
        } else {
            *self = trial;
            Stepped::Logged(record)
        }
    }

    /// Equal but for the clock and the input count.
    fn same_state(&self, other: &Arbiter) -> bool {
        self.system == other.system
            && self.ignition_on == other.ignition_on
            && self.vehicle_in_use == other.vehicle_in_use
            && self.wake_hold_until == other.wake_hold_until
            && self.wake_after_s == other.wake_after_s
            && self.guests == other.guests
            && self.timer == other.timer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy::from_toml_str(
            "[[guest]]\nname = \"android\"\nrole = \"android\"\n[[guest]]\nname = \"cluster\"\nrole = \"cluster\"\n",
        )
        .expect("valid policy")
    }

    fn report(value: i32, param: i32) -> Input {
        Input::ApPowerStateReport {
            guest: "android".into(),
            value,
            param,
        }
    }

    fn running() -> Arbiter {
        let mut a = Arbiter::new(policy());
        a.step(Millis(0), Input::IgnitionOn);
        for g in ["android", "cluster"] {
            a.step(Millis(10), Input::VmStarted { guest: g.into() });
        }
        a
    }

    #[test]
    fn a_snapshot_round_trips_through_json_and_goes_on_like_the_original() {
        let mut a = running();
        a.step(Millis(20), Input::IgnitionOff);
        let json = serde_json::to_string(&a.snapshot()).expect("serializable");
        let back: ArbiterSnapshot = serde_json::from_str(&json).expect("parses");
        let mut b = Arbiter::from_snapshot(policy(), back).expect("fits");
        assert_eq!(a, b);
        let next = [report(4, 5000), report(5, 0), Input::Tick];
        for (t, i) in next.into_iter().enumerate() {
            let at = Millis(100 + t as u64 * 20_000);
            assert_eq!(a.step(at, i.clone()), b.step(at, i));
        }
        assert_eq!(a, b);
    }

    #[test]
    fn a_snapshot_of_other_guests_is_refused() {
        let other = Policy::from_toml_str("[[guest]]\nname = \"android\"\nrole = \"android\"\n")
            .expect("valid policy");
        let e = Arbiter::from_snapshot(other, running().snapshot()).expect_err("differs");
        assert_eq!(
            e.to_string(),
            "the snapshot's guests (android:android,cluster:cluster) are not the policy's (android:android)"
        );
    }

    #[test]
    fn verify_from_continues_the_sequence() {
        let a = running();
        let mut b = a.clone();
        let recs = vec![
            b.step(Millis(30), Input::IgnitionOff),
            b.step(Millis(40), report(4, 1000)),
        ];
        assert_eq!(a.clone().verify_from(&recs).expect("replays"), b);
        let e = a.verify_from(&recs[1..]).expect_err("gap");
        assert!(e.to_string().contains("expected sequence number 4"), "{e}");
    }

    #[test]
    fn reports_that_change_nothing_are_idle_and_leave_the_arbiter_alone() {
        let mut a = running();
        let before = a.clone();
        // An undefined value, a postpone outside SHUTDOWN_PREPARE, ON: only
        // rejections and notes, no state change.
        for i in [report(99, 0), report(4, 5000), report(6, 0)] {
            match a.step_unless_idle(Millis(50), i.clone()) {
                Stepped::Idle(outs) => assert!(!outs.is_empty(), "{i:?}"),
                Stepped::Logged(r) => panic!("{i:?} was logged: {r:?}"),
            }
            assert_eq!(a, before, "{i:?}");
        }
        // WAIT_FOR_VHAL asks for an answer: logged.
        assert!(matches!(
            a.step_unless_idle(Millis(60), report(1, 0)),
            Stepped::Logged(r) if r.seq == before.inputs_handled() + 1
        ));
        // A report that moves the handshake is logged too.
        a.step(Millis(70), Input::IgnitionOff);
        let n = a.inputs_handled();
        assert!(matches!(
            a.step_unless_idle(Millis(80), report(4, 5000)),
            Stepped::Logged(r) if r.seq == n + 1
        ));
    }

    #[test]
    fn an_idle_report_after_a_deadline_passed_is_logged() {
        let mut a = running();
        a.step(Millis(100), Input::IgnitionOff);
        let watchdog = a.next_timer().expect("watchdog armed");
        // The report itself is pointless, but the watchdog fires first.
        assert!(matches!(
            a.step_unless_idle(watchdog.after(1), report(99, 0)),
            Stepped::Logged(_)
        ));
    }
}
