//! What the VMM does with the guest's own power requests: the pure decision
//! core of the control plane (no threads, no sockets, no KVM).
//!
//! A guest's final power step (ACPI S5, S3, reset) is a *request*. Without an
//! arbiter the VMM acts like a plain VMM (poweroff exits, reboot exits with
//! the reset code, suspend wakes at once). Once an arbiter (the
//! system-manager) is attached, or when the VMM was started with
//! `--power-arbiter`, every request is held, published to the arbiter as
//! `event power-request id=N kind=K`, and carried out only as the arbiter
//! decides:
//!
//! | decision  | poweroff            | reboot          | suspend                  |
//! |-----------|---------------------|-----------------|--------------------------|
//! | `allow`   | VMM exits (0)       | VM restarts     | VM paused as "suspended" |
//! | `restart` | VM restarts         | VM restarts     | VM restarts              |
//! | `hold`    | paused "virtually off" | paused "virtually off" | paused "virtually off" |
//! | `refuse`  | vCPUs run on (guest stays in its final state) | same | guest wakes at once |
//!
//! While a request waits for its decision the vCPUs are paused: the guest
//! has taken its final step and would only poll the sleep-status register.
//!
//! `resume` brings a paused VM back: a plain pause continues, a suspended
//! guest wakes (its sleep-register write returns, as on a machine that woke
//! up), a virtually-off guest is booted again (its OS had shut down).

use std::collections::BTreeMap;

use devices::PowerEvent;

use crate::runner::ExitReason;

/// The arbiter's answer to a held power request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Let the guest's request happen.
    Allow,
    /// Restart only this VM.
    Restart,
    /// Pause the VM and present it as "virtually off".
    Hold,
    /// Do not carry out the request.
    Refuse,
}

impl std::str::FromStr for Decision {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "allow" => Ok(Self::Allow),
            "restart" => Ok(Self::Restart),
            "hold" => Ok(Self::Hold),
            "refuse" => Ok(Self::Refuse),
            other => Err(PolicyError::UnknownDecision(other.to_string())),
        }
    }
}

/// The VM as the control plane presents it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmState {
    /// The guest runs.
    Running,
    /// Paused by `pause`.
    Paused,
    /// Paused after a held power request: the guest believes it is off.
    VirtuallyOff,
    /// Paused inside the guest's S3 entry, waiting for a wake-up.
    Suspended,
}

impl std::fmt::Display for VmState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VmState::Running => "running",
            VmState::Paused => "paused",
            VmState::VirtuallyOff => "virtually-off",
            VmState::Suspended => "suspended",
        })
    }
}

/// What the runner must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// End the VMM with this reason.
    Exit(ExitReason),
    /// Tear the VM down and boot it again in this process.
    Restart,
    /// Park all vCPUs.
    Pause,
    /// Let parked vCPUs run.
    Resume,
    /// Mark the guest woken from S3 (sleep status `WAK_STS`) and resume.
    Wake,
    /// Send this line to every event subscriber.
    Publish(String),
}

/// Errors from control requests.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// `decide` named no pending request.
    #[error("no pending power request with id {0}")]
    UnknownRequest(u64),
    /// `decide` with an unknown word.
    #[error("unknown decision '{0}' (allow, restart, hold or refuse)")]
    UnknownDecision(String),
    /// A request that makes no sense in the current state.
    #[error("cannot {what} while the VM is {state}")]
    WrongState {
        /// The request.
        what: &'static str,
        /// The current state.
        state: VmState,
    },
}

/// The control plane's power state machine.
#[derive(Debug, Clone)]
pub struct PowerPolicy {
    arbitrated: bool,
    state: VmState,
    pending: BTreeMap<u64, PowerEvent>,
    next_id: u64,
}

fn state_line(state: VmState) -> String {
    format!("event state {state}")
}

impl PowerPolicy {
    /// A policy that holds requests from the start (`--power-arbiter`) or
    /// acts like a plain VMM until an arbiter attaches.
    pub fn new(arbitrated: bool) -> Self {
        Self {
            arbitrated,
            state: VmState::Running,
            pending: BTreeMap::new(),
            next_id: 1,
        }
    }

    /// The current VM state.
    pub fn state(&self) -> VmState {
        self.state
    }

    /// Whether guest requests are held for an arbiter.
    pub fn arbitrated(&self) -> bool {
        self.arbitrated
    }

    /// Held requests, oldest first.
    pub fn pending(&self) -> impl Iterator<Item = (u64, PowerEvent)> + '_ {
        self.pending.iter().map(|(id, ev)| (*id, *ev))
    }

    fn request_line(id: u64, event: PowerEvent) -> String {
        format!("event power-request id={id} kind={event}")
    }

    fn set_state(&mut self, state: VmState, actions: &mut Vec<Action>) {
        if self.state != state {
            self.state = state;
            actions.push(Action::Publish(state_line(state)));
        }
    }

    /// The guest asked for `event`.
    pub fn guest_request(&mut self, event: PowerEvent) -> Vec<Action> {
        if !self.arbitrated {
            return match event {
                PowerEvent::Poweroff => vec![Action::Exit(ExitReason::Poweroff)],
                PowerEvent::Reboot => vec![Action::Exit(ExitReason::Reboot)],
                PowerEvent::Suspend => vec![Action::Wake],
            };
        }
        let id = self.next_id;
        self.next_id += 1;
        self.pending.insert(id, event);
        // The guest has taken its final power step: nothing of it needs to
        // run while the arbiter decides, and a vCPU left running would only
        // spin on the sleep-status register (or in PSCI) on a host core.
        vec![
            Action::Pause,
            Action::Publish(Self::request_line(id, event)),
        ]
    }

    /// An arbiter attached: from now on requests are held; every pending
    /// one is (re)published for it.
    pub fn arbiter_attached(&mut self) -> Vec<Action> {
        self.arbitrated = true;
        let mut actions = vec![Action::Publish(state_line(self.state))];
        actions.extend(
            self.pending
                .iter()
                .map(|(id, ev)| Action::Publish(Self::request_line(*id, *ev))),
        );
        actions
    }

    /// The arbiter decided request `id`.
    pub fn decide(&mut self, id: u64, decision: Decision) -> Result<Vec<Action>, PolicyError> {
        let event = self
            .pending
            .remove(&id)
            .ok_or(PolicyError::UnknownRequest(id))?;
        let mut actions = Vec::new();
        match (decision, event) {
            (Decision::Allow, PowerEvent::Poweroff) => {
                actions.push(Action::Exit(ExitReason::Poweroff))
            }
            (Decision::Allow, PowerEvent::Reboot) | (Decision::Restart, _) => {
                actions.push(Action::Restart)
            }
            (Decision::Allow, PowerEvent::Suspend) => {
                actions.push(Action::Pause);
                self.set_state(VmState::Suspended, &mut actions);
            }
            (Decision::Hold, _) => {
                actions.push(Action::Pause);
                self.set_state(VmState::VirtuallyOff, &mut actions);
            }
            (Decision::Refuse, PowerEvent::Suspend) => actions.push(Action::Wake),
            // The vCPUs paused for the request run on, unless the VM was
            // paused from the control socket meanwhile.
            (Decision::Refuse, _) if self.state == VmState::Running => actions.push(Action::Resume),
            (Decision::Refuse, _) => {}
        }
        Ok(actions)
    }

    /// `pause` from the control socket.
    pub fn pause(&mut self) -> Result<Vec<Action>, PolicyError> {
        if self.state != VmState::Running {
            return Err(PolicyError::WrongState {
                what: "pause",
                state: self.state,
            });
        }
        let mut actions = vec![Action::Pause];
        self.set_state(VmState::Paused, &mut actions);
        Ok(actions)
    }

    /// `resume` from the control socket (see the module docs).
    pub fn resume(&mut self) -> Result<Vec<Action>, PolicyError> {
        let mut actions = Vec::new();
        match self.state {
            VmState::Running => {
                return Err(PolicyError::WrongState {
                    what: "resume",
                    state: self.state,
                })
            }
            VmState::Paused => actions.push(Action::Resume),
            VmState::Suspended => actions.push(Action::Wake),
            VmState::VirtuallyOff => actions.push(Action::Restart),
        }
        if self.state != VmState::VirtuallyOff {
            self.set_state(VmState::Running, &mut actions);
        }
        Ok(actions)
    }

    /// The VM was booted again: old requests belong to the old guest.
    pub fn restarted(&mut self) -> Vec<Action> {
        self.pending.clear();
        let mut actions = Vec::new();
        self.state = VmState::VirtuallyOff; // force a state event
        self.set_state(VmState::Running, &mut actions);
        actions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_vmm_acts_at_once() {
        let mut p = PowerPolicy::new(false);
        assert_eq!(
            p.guest_request(PowerEvent::Poweroff),
            vec![Action::Exit(ExitReason::Poweroff)]
        );
        assert_eq!(
            p.guest_request(PowerEvent::Reboot),
            vec![Action::Exit(ExitReason::Reboot)]
        );
        assert_eq!(p.guest_request(PowerEvent::Suspend), vec![Action::Wake]);
        assert_eq!(p.pending().count(), 0);
    }

    #[test]
    fn arbitrated_requests_are_held_until_decided() {
        let mut p = PowerPolicy::new(true);
        assert_eq!(
            p.guest_request(PowerEvent::Poweroff),
            vec![
                Action::Pause,
                Action::Publish("event power-request id=1 kind=poweroff".into())
            ]
        );
        assert_eq!(
            p.pending().collect::<Vec<_>>(),
            vec![(1, PowerEvent::Poweroff)]
        );
        assert_eq!(
            p.decide(2, Decision::Allow),
            Err(PolicyError::UnknownRequest(2))
        );
        assert_eq!(
            p.decide(1, Decision::Allow).unwrap(),
            vec![Action::Exit(ExitReason::Poweroff)]
        );
        assert_eq!(
            p.decide(1, Decision::Allow),
            Err(PolicyError::UnknownRequest(1))
        );
    }

    #[test]
    fn decisions_map_to_actions() {
        let mut p = PowerPolicy::new(true);
        p.guest_request(PowerEvent::Reboot);
        assert_eq!(p.decide(1, Decision::Allow).unwrap(), vec![Action::Restart]);
        p.restarted();
        p.guest_request(PowerEvent::Poweroff);
        assert_eq!(
            p.decide(2, Decision::Hold).unwrap(),
            vec![
                Action::Pause,
                Action::Publish("event state virtually-off".into())
            ]
        );
        assert_eq!(p.state(), VmState::VirtuallyOff);
        assert_eq!(p.resume().unwrap(), vec![Action::Restart]);
        assert_eq!(
            p.restarted(),
            vec![Action::Publish("event state running".into())]
        );
        p.guest_request(PowerEvent::Suspend);
        let a = p.decide(3, Decision::Allow).unwrap();
        assert_eq!(a[0], Action::Pause);
        assert_eq!(p.state(), VmState::Suspended);
        assert_eq!(
            p.resume().unwrap(),
            vec![Action::Wake, Action::Publish("event state running".into())]
        );
        p.guest_request(PowerEvent::Suspend);
        assert_eq!(p.decide(4, Decision::Refuse).unwrap(), vec![Action::Wake]);
        p.guest_request(PowerEvent::Poweroff);
        assert_eq!(p.decide(5, Decision::Refuse).unwrap(), vec![Action::Resume]);
        // A VM paused by hand stays paused when a request is refused.
        p.guest_request(PowerEvent::Reboot);
        p.pause().unwrap();
        assert_eq!(p.decide(6, Decision::Refuse).unwrap(), vec![]);
        p.resume().unwrap();
        p.guest_request(PowerEvent::Suspend);
        assert_eq!(
            p.decide(7, Decision::Restart).unwrap(),
            vec![Action::Restart]
        );
    }

    #[test]
    fn late_arbiter_gets_pending_requests_and_pause_resume_checks_state() {
        let mut p = PowerPolicy::new(false);
        assert_eq!(
            p.resume(),
            Err(PolicyError::WrongState {
                what: "resume",
                state: VmState::Running
            })
        );
        p.pause().unwrap();
        assert!(p.pause().is_err());
        assert_eq!(
            p.resume().unwrap(),
            vec![
                Action::Resume,
                Action::Publish("event state running".into())
            ]
        );
        let actions = p.arbiter_attached();
        assert_eq!(actions, vec![Action::Publish("event state running".into())]);
        p.guest_request(PowerEvent::Poweroff);
        // A second arbiter (after the first died) sees the held request.
        let again = p.arbiter_attached();
        assert!(again.contains(&Action::Publish(
            "event power-request id=1 kind=poweroff".into()
        )));
    }

    #[test]
    fn decision_words_parse() {
        assert_eq!("hold".parse::<Decision>(), Ok(Decision::Hold));
        assert!("maybe".parse::<Decision>().is_err());
    }
}
