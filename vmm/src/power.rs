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
//!
//! A guest cannot flood the arbiter with requests:
//!
//! * **Coalesced**: a request of a kind that is already pending gets no
//!   new id and no event (Linux's reboot path alone writes the reset
//!   register, then pulses the i8042 reset ten times), so at most one
//!   request per kind is pending.
//! * **Rate-limited**: at most [`REQUEST_BURST`] requests are published at
//!   once, then one per [`REQUEST_REFILL`]. A request over the limit is
//!   held (the vCPUs stay paused, as for any held request) and published
//!   when a token is there ([`PowerPolicy::next_release`],
//!   [`PowerPolicy::tick`]); a guest whose requests are refused in a loop
//!   is slowed to that pace instead of making the arbiter log a decision
//!   per millisecond.
//! * **A triple fault is a crash**, not a reboot request
//!   ([`PowerPolicy::triple_fault`]), unless a reboot or poweroff is
//!   pending: then it is the tail of the guest's own reboot path (Linux
//!   falls back to a triple fault when its reset writes seem to do
//!   nothing, which is what a held request looks like) and changes
//!   nothing.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

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

/// Power requests published at once before the rate limit applies.
pub const REQUEST_BURST: u32 = 10;
/// After the burst, one more request is published per this much time.
pub const REQUEST_REFILL: Duration = Duration::from_secs(1);

/// Tokens for publishing requests (a token bucket of whole requests).
#[derive(Debug, Clone)]
struct RequestBudget {
    tokens: u32,
    /// When the last token was added (`None`: never used, full).
    refilled: Option<Instant>,
}

impl RequestBudget {
    fn new() -> Self {
        Self {
            tokens: REQUEST_BURST,
            refilled: None,
        }
    }

    fn refill(&mut self, now: Instant) {
        let last = *self.refilled.get_or_insert(now);
        let periods = now.saturating_duration_since(last).as_nanos() / REQUEST_REFILL.as_nanos();
        if periods > 0 {
            let add = u32::try_from(periods).unwrap_or(u32::MAX);
            self.tokens = self.tokens.saturating_add(add).min(REQUEST_BURST);
            self.refilled = Some(if self.tokens == REQUEST_BURST {
                now
            } else {
                last + REQUEST_REFILL * add
            });
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }

    /// When the next token arrives, if the bucket is empty.
    fn next_token(&self) -> Option<Instant> {
        match (self.tokens, self.refilled) {
            (0, Some(at)) => Some(at + REQUEST_REFILL),
            _ => None,
        }
    }
}

/// The control plane's power state machine.
#[derive(Debug, Clone)]
pub struct PowerPolicy {
    arbitrated: bool,
    state: VmState,
    pending: BTreeMap<u64, PowerRequestKind>,
    /// Held requests not yet published (over the rate limit), oldest
    /// first, at most one per kind.
    deferred: Vec<PowerRequestKind>,
    budget: RequestBudget,
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
            deferred: Vec::new(),
            budget: RequestBudget::new(),
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

    /// Held requests that were published, oldest first.
    pub fn pending(&self) -> impl Iterator<Item = (u64, PowerRequestKind)> + '_ {
        self.pending.iter().map(|(id, kind)| (*id, *kind))
    }

    /// Held requests, published or waiting for the rate limit.
    pub fn held(&self) -> usize {
        self.pending.len() + self.deferred.len()
    }

    fn set_state(&mut self, state: VmState, actions: &mut Vec<Action>) {
        if self.state != state {
            self.state = state;
            actions.push(Action::Publish(Event::State(state)));
        }
    }

    /// The guest asked for `kind` at `now`.
    pub fn guest_request(&mut self, kind: PowerRequestKind, now: Instant) -> Vec<Action> {
        if !self.arbitrated {
            return match kind {
                PowerRequestKind::Poweroff => vec![Action::Exit(ExitReason::Poweroff)],
                PowerRequestKind::Reboot => vec![Action::Exit(ExitReason::Reboot)],
                PowerRequestKind::Suspend => vec![Action::Wake],
            };
        }
        // The guest has taken its final power step: nothing of it needs to
        // run while the arbiter decides, and a vCPU left running would only
        // spin on the sleep-status register (or in PSCI) on a host core.
        let mut actions = vec![Action::Pause];
        let held = self.pending.values().chain(&self.deferred);
        if held.clone().any(|k| *k == kind) {
            tracing::debug!("guest power request {kind} coalesced with the pending one");
        } else if self.budget.take(now) {
            actions.push(self.publish_new(kind));
        } else {
            devices::guest_info!(
                "guest power request {kind} held back by the rate limit (at most {REQUEST_BURST} at once, then one per {} ms)",
                REQUEST_REFILL.as_millis()
            );
            self.deferred.push(kind);
        }
        actions
    }

    /// Gives `kind` an id, makes it pending and returns its event.
    fn publish_new(&mut self, kind: PowerRequestKind) -> Action {
        let id = self.next_id;
        self.next_id += 1;
        self.pending.insert(id, kind);
        Action::Publish(Event::PowerRequest { id, kind })
    }

    /// When [`Self::tick`] can publish a request held back by the rate
    /// limit, if one is.
    pub fn next_release(&self) -> Option<Instant> {
        if self.deferred.is_empty() {
            return None;
        }
        // No token time known (never empty): release at once.
        Some(self.budget.next_token().unwrap_or_else(Instant::now))
    }

    /// Publishes the held-back requests the rate limit allows at `now`.
    pub fn tick(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        while !self.deferred.is_empty() && self.budget.take(now) {
            let kind = self.deferred.remove(0);
            actions.push(self.publish_new(kind));
        }
        actions
    }

    /// A vCPU triple-faulted (and left the guest for good). While a reboot
    /// or poweroff is held this is the tail of the guest's own reboot path
    /// and changes nothing; otherwise the VM has crashed.
    pub fn triple_fault(&self) -> Vec<Action> {
        let held = self.pending.values().chain(&self.deferred);
        if held
            .clone()
            .any(|k| matches!(k, PowerRequestKind::Reboot | PowerRequestKind::Poweroff))
        {
            vec![Action::Pause]
        } else {
            vec![Action::Exit(ExitReason::Crash(
                "triple fault (KVM_EXIT_SHUTDOWN)".into(),
            ))]
        }
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
        self.deferred.clear();
        let mut actions = Vec::new();
        self.state = VmState::VirtuallyOff; // force a state event
        self.set_state(VmState::Running, &mut actions);
        actions
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn plain_vmm_acts_at_once() {
        let mut p = PowerPolicy::new(false);
        assert_eq!(
            p.guest_request(PowerRequestKind::Poweroff, Instant::now()),
            vec![Action::Exit(ExitReason::Poweroff)]
        );
        assert_eq!(
            p.guest_request(PowerRequestKind::Reboot, Instant::now()),
            vec![Action::Exit(ExitReason::Reboot)]
        );
        assert_eq!(
            p.guest_request(PowerRequestKind::Suspend, Instant::now()),
            vec![Action::Wake]
        );
        assert_eq!(p.pending().count(), 0);
    }

    #[test]
    fn arbitrated_requests_are_held_until_decided() {
        let mut p = PowerPolicy::new(true);
        assert_eq!(
            p.guest_request(PowerRequestKind::Poweroff, Instant::now()),
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
        p.guest_request(PowerRequestKind::Reboot, Instant::now());
        assert_eq!(p.decide(1, Decision::Allow).unwrap(), vec![Action::Restart]);
        p.restarted();
        p.guest_request(PowerRequestKind::Poweroff, Instant::now());
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
        p.guest_request(PowerRequestKind::Suspend, Instant::now());
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
        p.guest_request(PowerRequestKind::Suspend, Instant::now());
        assert_eq!(p.decide(4, Decision::Refuse).unwrap(), vec![Action::Wake]);
        p.guest_request(PowerRequestKind::Poweroff, Instant::now());
        assert_eq!(p.decide(5, Decision::Refuse).unwrap(), vec![Action::Resume]);
        // A VM paused by hand stays paused when a request is refused.
        p.guest_request(PowerRequestKind::Reboot, Instant::now());
        p.pause().unwrap();
        assert_eq!(p.decide(6, Decision::Refuse).unwrap(), vec![]);
        p.resume().unwrap();
        p.guest_request(PowerRequestKind::Suspend, Instant::now());
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
        p.guest_request(PowerRequestKind::Poweroff, Instant::now());
        // A second arbiter (after the first died) sees the held request.
        let again = p.arbiter_attached();
        assert!(again.contains(&Action::Publish(Event::PowerRequest {
            id: 1,
            kind: PowerRequestKind::Poweroff
        })));
    }

    #[test]
    fn identical_pending_requests_are_coalesced() {
        let mut p = PowerPolicy::new(true);
        let now = Instant::now();
        let first = p.guest_request(PowerRequestKind::Reboot, now);
        assert_eq!(first.len(), 2);
        for _ in 0..1000 {
            assert_eq!(
                p.guest_request(PowerRequestKind::Reboot, now),
                vec![Action::Pause]
            );
        }
        assert_eq!(p.pending().count(), 1);
        // Another kind is its own request.
        let other = p.guest_request(PowerRequestKind::Poweroff, now);
        assert!(matches!(
            other[1],
            Action::Publish(Event::PowerRequest { id: 2, .. })
        ));
        assert_eq!(p.held(), 2);
        // Once decided, the same kind is a new request again.
        p.decide(1, Decision::Refuse).unwrap();
        assert!(matches!(
            p.guest_request(PowerRequestKind::Reboot, now)[1],
            Action::Publish(Event::PowerRequest { id: 3, .. })
        ));
    }

    #[test]
    fn refused_requests_in_a_loop_are_slowed_to_the_rate_limit() {
        let mut p = PowerPolicy::new(true);
        let t0 = Instant::now();
        let mut published = 0;
        let mut id = 0;
        // A guest that asks again the moment each request is refused.
        for _ in 0..1000 {
            let actions = p.guest_request(PowerRequestKind::Suspend, t0);
            if let Some(Action::Publish(Event::PowerRequest { id: n, .. })) = actions.get(1) {
                published += 1;
                id = *n;
                p.decide(id, Decision::Refuse).unwrap();
            } else {
                break;
            }
        }
        assert_eq!(published, REQUEST_BURST);
        assert_eq!(p.held(), 1, "the next one waits");
        assert!(p.tick(t0).is_empty());
        let release = p.next_release().expect("a release time");
        assert_eq!(release, t0 + REQUEST_REFILL);
        assert!(p.tick(release - Duration::from_millis(1)).is_empty());
        assert_eq!(
            p.tick(release),
            vec![Action::Publish(Event::PowerRequest {
                id: id + 1,
                kind: PowerRequestKind::Suspend
            })]
        );
        assert_eq!(p.next_release(), None);
        // A restart forgets what was held back.
        p.guest_request(PowerRequestKind::Poweroff, release);
        assert_eq!(p.held(), 2);
        p.restarted();
        assert_eq!(p.held(), 0);
    }

    #[test]
    fn a_triple_fault_is_a_crash_unless_a_reboot_is_held() {
        let mut p = PowerPolicy::new(true);
        assert!(matches!(
            p.triple_fault().as_slice(),
            [Action::Exit(ExitReason::Crash(_))]
        ));
        p.guest_request(PowerRequestKind::Suspend, Instant::now());
        assert!(matches!(
            p.triple_fault().as_slice(),
            [Action::Exit(ExitReason::Crash(_))]
        ));
        p.guest_request(PowerRequestKind::Reboot, Instant::now());
        assert_eq!(p.triple_fault(), vec![Action::Pause]);
        // A plain VMM exits at the reboot request already; a triple fault
        // without one is a crash there too.
        let plain = PowerPolicy::new(false);
        assert!(matches!(
            plain.triple_fault().as_slice(),
            [Action::Exit(ExitReason::Crash(_))]
        ));
    }
}
