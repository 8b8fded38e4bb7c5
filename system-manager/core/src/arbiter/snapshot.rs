//! The arbiter's state as data, for the shell's snapshot of a compacted
//! decision log ([`ArbiterSnapshot`]), and the check that an input changed
//! nothing ([`Arbiter::step_unless_idle`]).
//!
//! A snapshot holds everything [`Arbiter`] folds from its inputs, but not
//! the policy: that comes from the policy file again, and
//! [`Arbiter::from_snapshot`] checks that its guests (names and roles, in
//! order) are the snapshot's.

use std::sync::Arc;

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
    /// Everything else (flattened: the JSON has one level).
    #[serde(flatten)]
    pub state: ArbiterState,
}

/// What the arbiter folds from its inputs besides the clock and the input
/// count: the one list of these fields, held by [`Arbiter`] and
/// [`ArbiterSnapshot`] alike and compared whole by the idle check. Cheap
/// to clone: the guests are shared until one of them changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArbiterState {
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
    /// Every guest, in policy order (copied on the first change).
    #[serde(with = "shared_guests")]
    pub guests: Arc<Vec<GuestStatus>>,
    /// The last timer announced.
    pub timer: Option<Millis>,
}

/// The guests as a plain list in JSON (without serde's `rc` feature,
/// which not every build of serde has).
mod shared_guests {
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::state::GuestStatus;

    pub fn serialize<S: Serializer>(g: &Arc<Vec<GuestStatus>>, s: S) -> Result<S::Ok, S::Error> {
        g.as_slice().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<Vec<GuestStatus>>, D::Error> {
        Vec::deserialize(d).map(Arc::new)
    }
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
    /// The input changed nothing (its outputs only note, reject or refuse
    /// a guest's power request: [`Output::changes_nothing`]): the arbiter
    /// is as it was (not even its clock or input count moved), and these
    /// are the outputs, for the journal and, a refusal, for the VMM.
    Idle(Vec<Output>),
}

impl Arbiter {
    /// The state, for a snapshot.
    pub fn snapshot(&self) -> ArbiterSnapshot {
        ArbiterSnapshot {
            now: self.now,
            inputs: self.inputs,
            state: self.state.clone(),
        }
    }

    /// The arbiter a snapshot describes, under `policy`, whose guests must
    /// be the snapshot's (names and roles, in order).
    pub fn from_snapshot(policy: Policy, s: ArbiterSnapshot) -> Result<Arbiter, SnapshotError> {
        let describe = |g: &mut dyn Iterator<Item = String>| g.collect::<Vec<_>>().join(",");
        let guests = &s.state.guests;
        let fits = policy.guests().len() == guests.len()
            && policy
                .guests()
                .iter()
                .zip(guests.iter())
                .all(|(p, g)| p.name == g.name && p.role == g.role);
        if !fits {
            return Err(SnapshotError::Guests {
                snapshot: describe(&mut guests.iter().map(|g| format!("{}:{}", g.name, g.role))),
                policy: describe(
                    &mut policy
                        .guests()
                        .iter()
                        .map(|g| format!("{}:{}", g.name, g.role)),
                ),
            });
        }
        let ArbiterSnapshot { now, inputs, state } = s;
        Ok(Arbiter {
            policy,
            now,
            inputs,
            state,
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
    /// as it was and every output [changes nothing](Output::changes_nothing),
    /// the arbiter is left untouched and the input is not a record. Leaving
    /// such inputs out of the log keeps the replay exact (replay never sees
    /// them, and neither does this arbiter) and keeps a guest that repeats
    /// a pointless report or request from growing the log. The check copies
    /// nothing but a few scalars: the guests are shared with the state
    /// before (copied on write), so an idle step allocates no state.
    pub fn step_unless_idle(&mut self, at: Millis, input: Input) -> Stepped {
        // The state before, without copying: the guests stay shared with
        // `self` unless the step changes one of them.
        let (now, inputs, before) = (self.now, self.inputs, self.state.clone());
        let record = self.step(at, input);
        let only_notes = record.outputs.iter().all(Output::changes_nothing);
        if only_notes && self.state == before {
            // Put back the clock and the count; the state is `before`'s
            // (still sharing its guests, unless the step wrote one with
            // the value it had: the tests check that idle paths do not).
            self.now = now;
            self.inputs = inputs;
            Stepped::Idle(record.outputs)
        } else {
            Stepped::Logged(record)
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::{any, prop_oneof, Just, Strategy};

    use super::*;
    use crate::input::PowerRequestKind;
    use crate::output::Decision;
    use crate::state::GuestState;

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

    fn power(guest: &str, request_id: u64, kind: PowerRequestKind) -> Input {
        Input::GuestPowerRequest {
            guest: guest.into(),
            request_id,
            kind,
        }
    }

    #[test]
    fn an_idle_step_shares_the_guests_instead_of_copying_them() {
        let mut a = running();
        let shared = Arc::clone(&a.state.guests);
        for t in 0..100 {
            assert!(matches!(
                a.step_unless_idle(Millis(50 + t), report(99, 0)),
                Stepped::Idle(_)
            ));
        }
        assert!(Arc::ptr_eq(&shared, &a.state.guests));
        // A step that changes a guest copies them once, leaving the old
        // state as it was.
        a.step_unless_idle(Millis(200), Input::IgnitionOff);
        assert!(!Arc::ptr_eq(&shared, &a.state.guests));
        assert_ne!(*shared, *a.state.guests);
    }

    #[test]
    fn repeated_shutdown_requests_that_change_nothing_are_idle() {
        let mut a = running();
        let before = a.clone();
        let shared = Arc::clone(&a.state.guests);
        // The ignition is on: the head unit stays on, however often asked.
        for t in 0..50 {
            let r = Input::ShutdownRequest {
                guest: "android".into(),
                param: 1,
            };
            match a.step_unless_idle(Millis(50 + t), r) {
                Stepped::Idle(outs) => assert!(
                    matches!(outs.as_slice(), [Output::Note { reason }] if reason.contains("ignition is on")),
                    "{outs:?}"
                ),
                Stepped::Logged(r) => panic!("logged: {r:?}"),
            }
        }
        assert_eq!(a, before);
        assert!(
            Arc::ptr_eq(&shared, &a.state.guests),
            "the guests were copied"
        );
    }

    #[test]
    fn a_refused_power_request_is_idle_but_still_answered() {
        let mut a = running();
        // The cluster asked to suspend while it is needed: refused, its VM
        // runs on. Asking again and again changes nothing.
        let n = a.inputs_handled();
        let shared = Arc::clone(&a.state.guests);
        for id in 1..=20 {
            match a.step_unless_idle(Millis(50), power("cluster", id, PowerRequestKind::Suspend)) {
                Stepped::Idle(outs) => assert!(
                    matches!(
                        outs.as_slice(),
                        [Output::Decide { request_id, decision: Decision::Refuse, .. }] if *request_id == id
                    ),
                    "{outs:?}"
                ),
                Stepped::Logged(r) => panic!("logged: {r:?}"),
            }
        }
        assert_eq!(a.inputs_handled(), n);
        assert!(
            Arc::ptr_eq(&shared, &a.state.guests),
            "the guests were copied"
        );
        // A request that is granted changes the guest: logged.
        assert!(matches!(
            a.step_unless_idle(Millis(60), power("cluster", 21, PowerRequestKind::Reboot)),
            Stepped::Logged(r) if r.seq == n + 1
        ));
        // While it is being restarted its repeated requests are decided
        // (its VM runs again) and logged; once it is stopping, refused and
        // idle.
        a.step(Millis(70), Input::IgnitionOff);
        a.step(Millis(80), Input::VehicleInUse { in_use: false });
        let stopping = |a: &Arbiter| {
            matches!(
                a.guest("cluster").map(|g| g.state),
                Some(GuestState::Stopping { .. })
            )
        };
        let mut id = 22;
        while !stopping(&a) && id < 40 {
            a.step_unless_idle(Millis(90), power("cluster", id, PowerRequestKind::Poweroff));
            id += 1;
        }
        assert!(stopping(&a), "{:?}", a.guest("cluster"));
        let before = a.clone();
        assert!(matches!(
            a.step_unless_idle(Millis(95), power("cluster", id, PowerRequestKind::Poweroff)),
            Stepped::Idle(_)
        ));
        assert_eq!(a, before);
    }

    fn any_input() -> impl Strategy<Value = Input> {
        let guest =
            prop_oneof![Just("android"), Just("cluster"), Just("nobody")].prop_map(String::from);
        let kind = prop_oneof![
            Just(PowerRequestKind::Poweroff),
            Just(PowerRequestKind::Reboot),
            Just(PowerRequestKind::Suspend),
        ];
        prop_oneof![
            2 => Just(Input::Tick),
            1 => Just(Input::IgnitionOn),
            1 => Just(Input::IgnitionOff),
            1 => any::<bool>().prop_map(|in_use| Input::VehicleInUse { in_use }),
            3 => (guest.clone(), 0u64..20, kind).prop_map(|(guest, request_id, kind)| {
                Input::GuestPowerRequest { guest, request_id, kind }
            }),
            4 => (guest.clone(), -1i32..=10, 0i32..3000).prop_map(|(guest, value, param)| {
                Input::ApPowerStateReport { guest, value, param }
            }),
            2 => (guest.clone(), -1i32..=8).prop_map(|(guest, param)| {
                Input::ShutdownRequest { guest, param }
            }),
            2 => guest.clone().prop_map(|guest| Input::VmStarted { guest }),
            1 => guest.prop_map(|guest| Input::VmExited { guest, reason: crate::input::VmExitReason::Reset }),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]

        /// Idle steps are exactly the steps `step` would take without
        /// changing anything, and the logged steps alone replay to the
        /// same arbiter.
        #[test]
        fn idle_steps_change_nothing_and_the_log_replays(
            steps in proptest::collection::vec((0u64..5_000, any_input()), 1..120)
        ) {
            let mut a = Arbiter::new(policy());
            let mut logged = Vec::new();
            let mut t = 0;
            for (dt, input) in steps {
                t += dt;
                let mut plain = a.clone();
                let record = plain.step(Millis(t), input.clone());
                let shared = Arc::clone(&a.state.guests);
                match a.step_unless_idle(Millis(t), input) {
                    Stepped::Idle(outs) => {
                        proptest::prop_assert!(Arc::ptr_eq(&shared, &a.state.guests), "an idle step copied the guests");
                        proptest::prop_assert_eq!(&outs, &record.outputs);
                        proptest::prop_assert!(outs.iter().all(Output::changes_nothing));
                        proptest::prop_assert_eq!(&plain.state, &a.state);
                    }
                    Stepped::Logged(r) => {
                        proptest::prop_assert_eq!(&r, &record);
                        proptest::prop_assert_eq!(&plain, &a);
                        logged.push(r);
                    }
                }
            }
            let replayed = Arbiter::verify(policy(), &logged).expect("the logged steps replay");
            proptest::prop_assert_eq!(replayed, a);
        }
    }
}
