//! What the VMM does with the guest's own power requests: the pure decision
//! core of the control plane (no threads, no sockets, no KVM).
//!
//! A guest's final power step (ACPI S5, S3, reset) is a *request*. Without an
//! arbiter the VMM acts like a plain VMM (poweroff exits, reboot exits with
//! the reset code, suspend wakes at once). Once an arbiter (the
//! system-manager) is attached, or when the VMM was started with
//! `--power-arbiter`, every request is held, published to the arbiter as an
//! [`Event::PowerRequest`], and carried out only as the arbiter decides:
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

use vmm_protocol::{Decision, Event, ExitReason, PowerRequestKind, VmState};

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
    /// Send this event to every event subscriber.
    Publish(Event),
}

/// Errors from control requests.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// `decide` named no pending request.
    #[error("no pending power request with id {0}")]
    UnknownRequest(u64),
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
    pending: BTreeMap<u64, PowerRequestKind>,
    next_id: u64,
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
    pub fn pending(&self) -> impl Iterator<Item = (u64, PowerRequestKind)> + '_ {
        self.pending.iter().map(|(id, kind)| (*id, *kind))
    }

    fn set_state(&mut self, state: VmState, actions: &mut Vec<Action>) {
        if self.state != state {
            self.state = state;
            actions.push(Action::Publish(Event::State(state)));
        }
    }

    /// The guest asked for `event`.
    pub fn guest_request(&mut self, kind: PowerRequestKind) -> Vec<Action> {
        if !self.arbitrated {
            return match kind {
                PowerRequestKind::Poweroff => vec![Action::Exit(ExitReason::Poweroff)],
                PowerRequestKind::Reboot => vec![Action::Exit(ExitReason::Reboot)],
                PowerRequestKind::Suspend => vec![Action::Wake],
            };
        }
        let id = self.next_id;
        self.next_id += 1;
        self.pending.insert(id, kind);
        // The guest has taken its final power step: nothing of it needs to
        // run while the arbiter decides, and a vCPU left running would only
        // spin on the sleep-status register (or in PSCI) on a host core.
        vec![
            Action::Pause,
            Action::Publish(Event::PowerRequest { id, kind }),
        ]
    }

    /// An arbiter attached: from now on requests are held; every pending
    /// one is (re)published for it.
    pub fn arbiter_attached(&mut self) -> Vec<Action> {
        self.arbitrated = true;
        let mut actions = vec![Action::Publish(Event::State(self.state))];
        actions.extend(self.pending.iter().map(|(id, kind)| {
            Action::Publish(Event::PowerRequest {
                id: *id,
                kind: *kind,
            })
        }));
        actions
    }

    /// The arbiter decided request `id`.
    pub fn decide(&mut self, id: u64, decision: Decision) -> Result<Vec<Action>, PolicyError> {
        let kind = self
            .pending
            .remove(&id)
            .ok_or(PolicyError::UnknownRequest(id))?;
        let mut actions = Vec::new();
        match (decision, kind) {
            (Decision::Allow, PowerRequestKind::Poweroff) => {
                actions.push(Action::Exit(ExitReason::Poweroff))
            }
            (Decision::Allow, PowerRequestKind::Reboot) | (Decision::RestartVm, _) => {
                actions.push(Action::Restart)
            }
            (Decision::Allow, PowerRequestKind::Suspend) => {
                actions.push(Action::Pause);
                self.set_state(VmState::Suspended, &mut actions);
            }
            (Decision::HoldVirtuallyOff, _) => {
                actions.push(Action::Pause);
                self.set_state(VmState::VirtuallyOff, &mut actions);
            }
            (Decision::Refuse, PowerRequestKind::Suspend) => actions.push(Action::Wake),
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
            p.guest_request(PowerRequestKind::Poweroff),
            vec![Action::Exit(ExitReason::Poweroff)]
        );
        assert_eq!(
            p.guest_request(PowerRequestKind::Reboot),
            vec![Action::Exit(ExitReason::Reboot)]
        );
        assert_eq!(
            p.guest_request(PowerRequestKind::Suspend),
            vec![Action::Wake]
        );
        assert_eq!(p.pending().count(), 0);
    }

    #[test]
    fn arbitrated_requests_are_held_until_decided() {
        let mut p = PowerPolicy::new(true);
        assert_eq!(
            p.guest_request(PowerRequestKind::Poweroff),
            vec![
                Action::Pause,
                Action::Publish(Event::PowerRequest {
                    id: 1,
                    kind: PowerRequestKind::Poweroff
                })
            ]
        );
        assert_eq!(
            p.pending().collect::<Vec<_>>(),
            vec![(1, PowerRequestKind::Poweroff)]
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
        p.guest_request(PowerRequestKind::Reboot);
        assert_eq!(p.decide(1, Decision::Allow).unwrap(), vec![Action::Restart]);
        p.restarted();
        p.guest_request(PowerRequestKind::Poweroff);
        assert_eq!(
            p.decide(2, Decision::HoldVirtuallyOff).unwrap(),
            vec![
                Action::Pause,
                Action::Publish(Event::State(VmState::VirtuallyOff))
            ]
        );
        assert_eq!(p.state(), VmState::VirtuallyOff);
        assert_eq!(p.resume().unwrap(), vec![Action::Restart]);
        assert_eq!(
            p.restarted(),
            vec![Action::Publish(Event::State(VmState::Running))]
        );
        p.guest_request(PowerRequestKind::Suspend);
        let a = p.decide(3, Decision::Allow).unwrap();
        assert_eq!(a[0], Action::Pause);
        assert_eq!(p.state(), VmState::Suspended);
        assert_eq!(
            p.resume().unwrap(),
            vec![
                Action::Wake,
                Action::Publish(Event::State(VmState::Running))
            ]
        );
        p.guest_request(PowerRequestKind::Suspend);
        assert_eq!(p.decide(4, Decision::Refuse).unwrap(), vec![Action::Wake]);
        p.guest_request(PowerRequestKind::Poweroff);
        assert_eq!(p.decide(5, Decision::Refuse).unwrap(), vec![Action::Resume]);
        // A VM paused by hand stays paused when a request is refused.
        p.guest_request(PowerRequestKind::Reboot);
        p.pause().unwrap();
        assert_eq!(p.decide(6, Decision::Refuse).unwrap(), vec![]);
        p.resume().unwrap();
        p.guest_request(PowerRequestKind::Suspend);
        assert_eq!(
            p.decide(7, Decision::RestartVm).unwrap(),
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
                Action::Publish(Event::State(VmState::Running))
            ]
        );
        let actions = p.arbiter_attached();
        assert_eq!(
            actions,
            vec![Action::Publish(Event::State(VmState::Running))]
        );
        p.guest_request(PowerRequestKind::Poweroff);
        // A second arbiter (after the first died) sees the held request.
        let again = p.arbiter_attached();
        assert!(again.contains(&Action::Publish(Event::PowerRequest {
            id: 1,
            kind: PowerRequestKind::Poweroff
        })));
    }
}
