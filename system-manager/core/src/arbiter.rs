//! The arbiter: the hypervisor's central power decision point.
//!
//! [`Arbiter::handle`] folds one input into the state and returns the
//! commands that follow from it. There is no I/O, no clock and no randomness:
//! the same policy and the same inputs (with the same times) always give the
//! same state and outputs, which is what makes the decision log replayable.
//!
//! One call runs in four steps:
//! 1. time: deadlines that passed before `now` fire first (escalations, hard
//!    stops, releases), because they happened before the input did;
//! 2. the input itself;
//! 3. consequences, repeated until nothing changes: more expired deadlines,
//!    starting a shutdown when the head unit is no longer wanted, and ending
//!    one (power-off or suspend) when every guest is out of the way;
//! 4. the timer: a `SetTimer` whenever the earliest pending deadline changed.
//!
//! The rules are specified in `docs/system-manager.md`.

use std::sync::Arc;

use crate::input::{Input, PowerRequestKind, VmExitReason};
use crate::output::{Decision, Output};
use crate::policy::{Policy, Role, ShutdownKind};
use crate::state::{FinalStep, GuestState, GuestStatus, Hold, ShutdownOrigin, SystemState};
use crate::time::Millis;
use crate::vhal::{ApPowerStateReport, ApPowerStateReq, ShutdownParam};

pub use snapshot::{ArbiterSnapshot, ArbiterState, SnapshotError, Stepped};

mod guest_requests;
mod shutdown_request;
mod snapshot;
mod timers;
mod vhal_reports;
mod vm_facts;

/// Rounds of "consequences" per guest before step 3 gives up; every round
/// moves some guest strictly towards off, so this is never reached.
const SETTLE_ROUNDS_PER_GUEST: usize = 8;

/// The arbiter's whole state. Compare two with `==` to check a replay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arbiter {
    policy: Policy,
    now: Millis,
    inputs: u64,
    /// Everything else an input folds in (one list of fields, shared with
    /// the snapshot and the idle check).
    state: ArbiterState,
}

impl Arbiter {
    /// An arbiter for `policy`: system off, ignition off, vehicle not in use,
    /// every guest off.
    pub fn new(policy: Policy) -> Self {
        let guests = policy
            .guests()
            .iter()
            .map(|g| GuestStatus {
                name: g.name.clone(),
                role: g.role,
                state: GuestState::Off,
                release_at: None,
                vhal_req: None,
            })
            .collect();
        Arbiter {
            policy,
            now: Millis::ZERO,
            inputs: 0,
            state: ArbiterState {
                system: SystemState::Off,
                ignition_on: false,
                vehicle_in_use: false,
                wake_hold_until: None,
                wake_after_s: None,
                guests: Arc::new(guests),
                timer: None,
            },
        }
    }

    /// Handles one input at time `now` and returns the resulting commands and
    /// log notes, in the order the shell must carry them out. A `now` earlier
    /// than the last one is treated as the last one (and noted).
    pub fn handle(&mut self, now: Millis, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        if now < self.now {
            out.push(Output::Note {
                reason: format!(
                    "clock went backwards: input at {now} after {}; using {}",
                    self.now, self.now
                ),
            });
        } else {
            self.now = now;
        }
        self.inputs = self.inputs.saturating_add(1);
        self.settle(&mut out);
        self.apply(input, &mut out);
        self.settle(&mut out);
        self.announce_timer(&mut out);
        out
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The real system's state.
    pub fn system(&self) -> &SystemState {
        &self.state.system
    }

    /// Every guest, in policy order.
    pub fn guests(&self) -> &[GuestStatus] {
        &self.state.guests
    }

    /// The guest called `name`.
    pub fn guest(&self, name: &str) -> Option<&GuestStatus> {
        self.state.guests.iter().find(|g| g.name == name)
    }

    /// The time of the last input.
    pub fn now(&self) -> Millis {
        self.now
    }

    /// How many inputs were handled (the sequence number of the last one).
    pub fn inputs_handled(&self) -> u64 {
        self.inputs
    }

    /// Whether the ignition is on, as last reported.
    pub fn ignition_on(&self) -> bool {
        self.state.ignition_on
    }

    /// Whether the vehicle is in use, as last reported.
    pub fn vehicle_in_use(&self) -> bool {
        self.state.vehicle_in_use
    }

    /// Until when the last wake request keeps the head unit on.
    pub fn wake_hold_until(&self) -> Option<Millis> {
        self.state.wake_hold_until
    }

    /// The last timer announced with `SetTimer` (`None` if nothing is due).
    pub fn next_timer(&self) -> Option<Millis> {
        self.state.timer
    }

    // ----- derived facts -------------------------------------------------

    fn index(&self, name: &str) -> Option<usize> {
        self.state.guests.iter().position(|g| g.name == name)
    }

    /// The head unit (Android) is wanted: ignition on, or a wake request's
    /// hold has not run out.
    fn head_unit_wanted(&self) -> bool {
        self.state.ignition_on || self.state.wake_hold_until.is_some_and(|t| t > self.now)
    }

    /// Why the cluster is needed (the ignition is on or the vehicle is in
    /// use), or `None`.
    fn cluster_need(&self) -> Option<&'static str> {
        match (self.state.ignition_on, self.state.vehicle_in_use) {
            (true, true) => Some("ignition on, vehicle in use"),
            (true, false) => Some("ignition on"),
            (false, true) => Some("vehicle in use"),
            (false, false) => None,
        }
    }

    /// A configured cluster keeps the real system up: the vehicle is in use.
    fn cluster_blocks(&self) -> bool {
        self.state.vehicle_in_use && self.policy.has_cluster()
    }

    /// Guest `i` should be running: the system is on, or it is a cluster
    /// needed (vehicle in use) during a shutdown.
    fn should_run(&self, i: usize) -> bool {
        match self.state.system {
            SystemState::On => true,
            SystemState::ShutdownPrepare { .. } | SystemState::GarageMode { .. } => {
                self.state.guests[i].role == Role::Cluster && self.state.vehicle_in_use
            }
            _ => false,
        }
    }

    fn guest_deadline_ms(&self, i: usize) -> u64 {
        self.policy
            .guests()
            .get(i)
            .and_then(|g| g.shutdown_deadline_ms)
            .unwrap_or(self.policy.system().shutdown_deadline_ms)
    }

    fn restart_on_failure(&self, i: usize) -> bool {
        self.policy
            .guests()
            .get(i)
            .is_none_or(|g| g.restart_on_failure)
    }

    fn prepare_param(&self) -> ShutdownParam {
        match self.policy.system().shutdown_kind {
            ShutdownKind::Poweroff => ShutdownParam::ShutdownOnly,
            ShutdownKind::Suspend => ShutdownParam::CanSleep,
        }
    }

    // ----- small actions -------------------------------------------------

    fn note(out: &mut Vec<Output>, reason: String) {
        out.push(Output::Note { reason });
    }

    fn reject(out: &mut Vec<Output>, reason: String) {
        out.push(Output::Rejected { reason });
    }

    fn set_req(&mut self, i: usize, state: ApPowerStateReq, reason: String, out: &mut Vec<Output>) {
        let g = &mut Arc::make_mut(&mut self.state.guests)[i];
        g.vhal_req = Some(state);
        out.push(Output::ApPowerStateReq {
            guest: g.name.clone(),
            state,
            reason,
        });
    }

    fn decide(
        &self,
        i: usize,
        request_id: u64,
        decision: Decision,
        reason: String,
        out: &mut Vec<Output>,
    ) {
        out.push(Output::Decide {
            guest: self.state.guests[i].name.clone(),
            request_id,
            decision,
            reason,
        });
    }

    fn hard_stop(&mut self, i: usize, reason: String, out: &mut Vec<Output>) {
        let grace = self.now.after(self.policy.system().vm_exit_grace_ms);
        let g = &mut Arc::make_mut(&mut self.state.guests)[i];
        g.state = GuestState::Stopping {
            grace: Some(grace),
            restart: false,
        };
        g.release_at = None;
        out.push(Output::HardStopVm {
            guest: g.name.clone(),
            reason,
        });
    }

    /// `RestartVm` for guest `i`. An Android guest restarted during a
    /// shutdown boots outside the handshake, so it gets the global deadline
    /// (its first report brings the handshake back); other roles keep their
    /// release time.
    fn restart(&mut self, i: usize, request_id: u64, reason: String, out: &mut Vec<Output>) {
        self.decide(i, request_id, Decision::RestartVm, reason, out);
        let deadline = self.state.system.shutdown_deadline();
        let g = &mut Arc::make_mut(&mut self.state.guests)[i];
        g.state = GuestState::Restarting;
        g.vhal_req = None;
        if g.role == Role::Android {
            g.release_at = deadline;
        }
    }

    /// `Allow` for a power-off (the VM ends) or a suspend (the VM sleeps).
    fn allow_final(
        &mut self,
        i: usize,
        request_id: u64,
        kind: PowerRequestKind,
        reason: String,
        out: &mut Vec<Output>,
    ) {
        self.decide(i, request_id, Decision::Allow, reason, out);
        let grace = self.now.after(self.policy.system().vm_exit_grace_ms);
        let g = &mut Arc::make_mut(&mut self.state.guests)[i];
        g.release_at = None;
        g.state = match kind {
            PowerRequestKind::Suspend => GuestState::VirtuallyOff {
                hold: Hold::Suspended,
            },
            PowerRequestKind::Poweroff | PowerRequestKind::Reboot => GuestState::Stopping {
                grace: Some(grace),
                restart: false,
            },
        };
    }

    fn hold(&mut self, i: usize, request_id: u64, reason: String, out: &mut Vec<Output>) {
        self.decide(i, request_id, Decision::HoldVirtuallyOff, reason, out);
        let g = &mut Arc::make_mut(&mut self.state.guests)[i];
        g.release_at = None;
        g.state = GuestState::VirtuallyOff {
            hold: Hold::Poweroff,
        };
    }

    /// The VM is gone: off, and started again if `restart` and it should
    /// still be running (a "start it again once it is off" from an earlier
    /// power-on does not outlive a shutdown that began since).
    fn vm_off(&mut self, i: usize, reason: String, restart: bool, out: &mut Vec<Output>) {
        Arc::make_mut(&mut self.state.guests)[i].state = GuestState::Off;
        Self::note(out, reason);
        if !restart {
            return;
        }
        if self.should_run(i) {
            self.bring_up(i, "the system is on again", out);
        } else {
            let name = &self.state.guests[i].name;
            Self::note(
                out,
                format!(
                    "{name} is not started again: it is not needed any more (the system is {})",
                    self.state.system
                ),
            );
        }
    }

    // ----- power on ------------------------------------------------------

    /// A power-on event (ignition on, a user or remote wake): the system is
    /// on and every guest is brought up.
    fn power_on(&mut self, why: &str, out: &mut Vec<Output>) {
        let before = out.len();
        if self.state.system != SystemState::On {
            let was = self.state.system;
            self.state.system = SystemState::On;
            self.state.wake_after_s = None;
            out.push(Output::SystemOn {
                reason: format!("{why}: system on (was {was})"),
            });
        }
        for i in 0..self.state.guests.len() {
            self.bring_up(i, why, out);
        }
        if out.len() == before {
            Self::note(out, format!("{why}: system already on, every guest up"));
        }
    }

    /// Brings guest `i` towards running: start it, resume it, cancel its
    /// shutdown, or have it started once it has stopped.
    fn bring_up(&mut self, i: usize, why: &str, out: &mut Vec<Output>) {
        let system_on = self.state.system == SystemState::On;
        let now = self.now;
        let final_grace = self.policy.system().final_grace_ms;
        let current = &self.state.guests[i];
        let settled = matches!(
            current.state,
            GuestState::Stopping { restart: true, .. }
                | GuestState::Running
                | GuestState::Starting
                | GuestState::Restarting
                | GuestState::ShutdownStarted {
                    origin: ShutdownOrigin::Cancelled,
                    deadline: Some(_),
                    ..
                }
        );
        if settled && current.release_at.is_none() {
            // Already on its way up: nothing to write (an idle step must
            // not copy the guests).
            return;
        }
        let g = &mut Arc::make_mut(&mut self.state.guests)[i];
        g.release_at = None;
        let name = g.name.clone();
        let android = g.role == Role::Android;
        match g.state {
            GuestState::Off => {
                g.state = GuestState::Starting;
                g.vhal_req = None;
                out.push(Output::StartVm {
                    guest: name,
                    reason: format!("{why}: start it"),
                });
            }
            GuestState::VirtuallyOff { hold } => {
                // Held at its power-off, the VM boots afresh: outside a power
                // on (garage mode) it is starting, so a shutdown gives it its
                // deadline and the handshake waits for its first report.
                g.state = if hold == Hold::Poweroff && !system_on {
                    g.vhal_req = None;
                    GuestState::Starting
                } else {
                    GuestState::Running
                };
                let reason = match hold {
                    Hold::Poweroff => {
                        format!("{why}: bring back the VM held at its power-off (the VMM boots it again)")
                    }
                    Hold::Suspended => format!("{why}: wake it from its suspend"),
                    Hold::Paused => format!("{why}: resume the paused VM"),
                };
                out.push(Output::ResumeVm {
                    guest: name,
                    reason,
                });
                if android && system_on {
                    self.set_req(i, ApPowerStateReq::On, format!("{why}: back on"), out);
                }
            }
            GuestState::Preparing { .. } => {
                g.state = GuestState::Running;
                self.set_req(
                    i,
                    ApPowerStateReq::CancelShutdown,
                    format!("{why}: cancel the shutdown"),
                    out,
                );
            }
            GuestState::ShutdownStarted {
                step,
                origin,
                deadline,
            } => {
                // Too late to cancel; its final request restarts it. If that
                // request never comes, the (unchanged) deadline hard-stops
                // and restarts it.
                g.state = GuestState::ShutdownStarted {
                    step,
                    origin: ShutdownOrigin::Cancelled,
                    deadline: Some(deadline.unwrap_or(now.after(final_grace))),
                };
                if origin != ShutdownOrigin::Cancelled {
                    Self::note(
                        out,
                        format!(
                            "{why}: {name} is past {step:?} start and cannot be cancelled; its final request will restart it"
                        ),
                    );
                }
            }
            GuestState::Stopping {
                grace,
                restart: false,
            } => {
                g.state = GuestState::Stopping {
                    grace,
                    restart: true,
                };
                Self::note(
                    out,
                    format!("{why}: {name} is stopping; start it again once it is off"),
                );
            }
            GuestState::Stopping { restart: true, .. }
            | GuestState::Running
            | GuestState::Starting
            | GuestState::Restarting => {}
        }
    }

    /// A wake for garage mode from a system that is down.
    fn garage_wake(&mut self, out: &mut Vec<Output>) {
        let was = self.state.system;
        let kind = self.policy.system().shutdown_kind;
        let deadline = self.now.after(self.policy.system().garage_mode_max_ms);
        self.state.system = SystemState::GarageMode { kind, deadline };
        self.state.wake_after_s = None;
        out.push(Output::SystemOn {
            reason: format!("wake for garage mode: system on until {deadline} at most (was {was})"),
        });
        for i in 0..self.state.guests.len() {
            // No user, no cluster: it starts only if the vehicle is in use.
            if self.state.guests[i].role != Role::Cluster || self.state.vehicle_in_use {
                self.bring_up(i, "garage mode", out);
            }
        }
        for i in 0..self.state.guests.len() {
            self.enter_shutdown(i, "garage mode", out);
        }
    }

    // ----- shutdown ------------------------------------------------------

    /// The head unit is no longer wanted: start the system shutdown.
    fn begin_shutdown(&mut self, why: &str, out: &mut Vec<Output>) {
        let kind = self.policy.system().shutdown_kind;
        let deadline = self.now.after(self.policy.system().shutdown_deadline_ms);
        self.state.system = SystemState::ShutdownPrepare { kind, deadline };
        Self::note(
            out,
            format!("{why}: shutdown begins ({kind}, global deadline {deadline})"),
        );
        for i in 0..self.state.guests.len() {
            self.enter_shutdown(i, why, out);
        }
    }

    /// Puts guest `i` on the running shutdown's clock: the handshake for a
    /// running Android guest, a release deadline for everything else.
    fn enter_shutdown(&mut self, i: usize, why: &str, out: &mut Vec<Output>) {
        let Some(d) = self.state.system.shutdown_deadline() else {
            return;
        };
        let now = self.now;
        let grace = self.policy.system().final_grace_ms;
        let own_deadline = self.guest_deadline_ms(i);
        let in_use = self.state.vehicle_in_use;
        let g = &mut Arc::make_mut(&mut self.state.guests)[i];
        match g.role {
            Role::Android => match g.state {
                GuestState::Running => self.send_prepare(i, why, out),
                GuestState::Starting | GuestState::Restarting => g.release_at = Some(d),
                GuestState::ShutdownStarted {
                    step,
                    origin,
                    deadline: None,
                } => {
                    g.state = GuestState::ShutdownStarted {
                        step,
                        origin,
                        deadline: Some(d.min(now.after(grace))),
                    };
                }
                _ => {}
            },
            Role::Cluster => g.release_at = (!in_use).then(|| now.after(own_deadline)),
            Role::Other => g.release_at = Some(d.min(now.after(own_deadline))),
        }
    }

    /// Sends `SHUTDOWN_PREPARE` to Android guest `i` and starts its watchdog.
    fn send_prepare(&mut self, i: usize, why: &str, out: &mut Vec<Output>) {
        let Some(d) = self.state.system.shutdown_deadline() else {
            return;
        };
        let sp = self.policy.system();
        let limit = d.before(sp.final_grace_ms);
        let (param, watchdog, how) = if limit > self.now {
            (
                self.prepare_param(),
                self.now.after(sp.postpone_watchdog_ms).min(limit),
                "",
            )
        } else {
            (
                ShutdownParam::ShutdownImmediately,
                self.now.after(sp.final_grace_ms).min(d),
                " (too close to the deadline to postpone)",
            )
        };
        let g = &mut Arc::make_mut(&mut self.state.guests)[i];
        g.state = GuestState::Preparing {
            param,
            watchdog,
            postpones: 0,
        };
        g.release_at = None;
        self.set_req(
            i,
            ApPowerStateReq::ShutdownPrepare(param),
            format!("{why}: postpone or start shutting down by {watchdog}{how}"),
            out,
        );
    }

    /// Guest `i`'s name (a copy, for the outputs' reasons) and state.
    fn name_and_state(&self, i: usize) -> (String, GuestState) {
        let g = &self.state.guests[i];
        (g.name.clone(), g.state)
    }

    /// Android guest `i`'s watchdog expired in `SHUTDOWN_PREPARE(param)`.
    fn escalate(&mut self, i: usize, param: ShutdownParam, postpones: u32, out: &mut Vec<Output>) {
        let name = self.state.guests[i].name.clone();
        match self.state.system.shutdown_deadline() {
            Some(d) if param.can_postpone() && self.now < d => {
                let watchdog = self.now.after(self.policy.system().final_grace_ms).min(d);
                Arc::make_mut(&mut self.state.guests)[i].state = GuestState::Preparing {
                    param: ShutdownParam::ShutdownImmediately,
                    watchdog,
                    postpones,
                };
                self.set_req(
                    i,
                    ApPowerStateReq::ShutdownPrepare(ShutdownParam::ShutdownImmediately),
                    format!(
                        "{name} stopped postponing (watchdog expired after {postpones} postpones): shut down now; hard stop at {watchdog}"
                    ),
                    out,
                );
            }
            _ => self.hard_stop(
                i,
                format!(
                    "{name} did not start its shutdown after SHUTDOWN_PREPARE({param}) in time"
                ),
                out,
            ),
        }
    }

    /// Guest `i` outside the handshake reached its release deadline `at`.
    fn release(&mut self, i: usize, at: Millis, out: &mut Vec<Output>) {
        let g = &self.state.guests[i];
        let name = g.name.clone();
        let why = match g.role {
            Role::Android => {
                format!("{name} did not reach the VHAL handshake by the shutdown deadline {at}")
            }
            Role::Cluster => {
                format!("cluster {name}'s deadline {at} passed and the vehicle is not in use")
            }
            Role::Other => format!("{name}'s shutdown deadline {at} passed"),
        };
        let pause = g.role != Role::Android
            && g.state == GuestState::Running
            && self.state.system.shutdown_kind() == Some(ShutdownKind::Suspend);
        if pause {
            let g = &mut Arc::make_mut(&mut self.state.guests)[i];
            g.state = GuestState::VirtuallyOff { hold: Hold::Paused };
            g.release_at = None;
            out.push(Output::PauseVm {
                guest: name,
                reason: format!("{why}: pause it for the suspend"),
            });
        } else {
            self.hard_stop(i, why, out);
        }
    }

    /// The running shutdown may end: every guest is off or virtually off and
    /// no cluster is needed. Returns whether anything changed.
    fn try_finish(&mut self, kind: ShutdownKind, out: &mut Vec<Output>) -> bool {
        if self.cluster_blocks() || !self.state.guests.iter().all(|g| g.state.is_done()) {
            return false;
        }
        match kind {
            ShutdownKind::Poweroff => {
                let held: Vec<usize> = (0..self.state.guests.len())
                    .filter(|&i| {
                        matches!(self.state.guests[i].state, GuestState::VirtuallyOff { .. })
                    })
                    .collect();
                if !held.is_empty() {
                    for i in held {
                        self.hard_stop(
                            i,
                            "the system powers off: discard the VM kept virtually off".to_string(),
                            out,
                        );
                    }
                    return true;
                }
                self.state.system = SystemState::PoweringOff;
                out.push(Output::SystemPowerOff {
                    wake_after_s: self.state.wake_after_s,
                    reason: "every guest is off and the vehicle is not in use: power off"
                        .to_string(),
                });
            }
            ShutdownKind::Suspend => {
                self.state.system = SystemState::Suspended;
                out.push(Output::SystemSuspend {
                    wake_after_s: self.state.wake_after_s,
                    reason:
                        "every guest is off, asleep or paused and the vehicle is not in use: suspend"
                            .to_string(),
                });
            }
        }
        true
    }

    // ----- time and consequences ----------------------------------------
    // ----- inputs --------------------------------------------------------

    fn apply(&mut self, input: Input, out: &mut Vec<Output>) {
        match input {
            Input::Tick => {}
            Input::IgnitionOn => {
                let why = if self.state.ignition_on {
                    "ignition on (repeated)"
                } else {
                    "ignition on"
                };
                self.state.ignition_on = true;
                self.power_on(why, out);
            }
            Input::IgnitionOff => self.ignition_off(out),
            Input::VehicleInUse { in_use } => self.vehicle_use(in_use, out),
            Input::WakeRequest { reason } => {
                if reason == crate::vhal::WakeReason::SystemEnterGarageMode {
                    if self.state.system.is_down() {
                        self.garage_wake(out);
                    } else {
                        Self::note(
                            out,
                            format!(
                                "wake for garage mode ignored: the system is {}",
                                self.state.system
                            ),
                        );
                    }
                } else {
                    let until = self.now.after(self.policy.system().wake_hold_ms);
                    let until = self.state.wake_hold_until.map_or(until, |t| t.max(until));
                    self.state.wake_hold_until = Some(until);
                    self.power_on(&format!("wake request {reason} (hold until {until})"), out);
                }
            }
            Input::GuestPowerRequest {
                guest,
                request_id,
                kind,
            } => self.power_request(&guest, request_id, kind, out),
            Input::ApPowerStateReport {
                guest,
                value,
                param,
            } => self.report(&guest, value, param, out),
            Input::ShutdownRequest { guest, param } => self.shutdown_request(&guest, param, out),
            Input::VmStarted { guest } => self.vm_started(&guest, out),
            Input::VmExited { guest, reason } => self.vm_gone(
                &guest,
                &format!("VM exited ({reason})"),
                reason == VmExitReason::Reset,
                out,
            ),
            Input::VmLost { guest } => self.vm_gone(&guest, "VMM lost", false, out),
        }
    }

    fn ignition_off(&mut self, out: &mut Vec<Output>) {
        let already = !self.state.ignition_on;
        self.state.ignition_on = false;
        let what = if already {
            "ignition off (repeated)"
        } else {
            "ignition off"
        };
        match self.state.system {
            // The shutdown itself starts in `evaluate`, which notes it.
            SystemState::On if !self.head_unit_wanted() => {}
            SystemState::On => {
                let until = self.state.wake_hold_until.unwrap_or(self.now);
                Self::note(
                    out,
                    format!("{what}: the head unit stays on for a wake request until {until}"),
                );
            }
            s => Self::note(out, format!("{what}: the system is {s}")),
        }
    }

    fn vehicle_use(&mut self, in_use: bool, out: &mut Vec<Output>) {
        self.state.vehicle_in_use = in_use;
        let before = out.len();
        let n = self.state.guests.len();
        if self.state.system.is_down() {
            let what = if in_use { "in use" } else { "not in use" };
            Self::note(
                out,
                format!(
                    "vehicle {what}: the system is {}; the MCU wakes it with a wake request",
                    self.state.system
                ),
            );
            return;
        }
        if in_use {
            for i in 0..n {
                if self.state.guests[i].role == Role::Cluster {
                    self.bring_up(i, "vehicle in use: the cluster must be up", out);
                }
            }
            if out.len() == before {
                Self::note(out, "vehicle in use".to_string());
            }
            return;
        }
        if self.state.system.shutdown_deadline().is_some() {
            for i in 0..n {
                if self.state.guests[i].role == Role::Cluster
                    && self.state.guests[i].release_at.is_none()
                {
                    let at = self.now.after(self.guest_deadline_ms(i));
                    Arc::make_mut(&mut self.state.guests)[i].release_at = Some(at);
                    let name = &self.state.guests[i].name;
                    Self::note(
                        out,
                        format!("vehicle not in use: cluster {name} may run until {at}"),
                    );
                }
            }
        }
        if out.len() == before {
            Self::note(out, "vehicle not in use".to_string());
        }
    }
}
