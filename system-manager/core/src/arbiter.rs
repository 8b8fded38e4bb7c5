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

use crate::input::{Input, PowerRequestKind, VmExitReason};
use crate::output::{Decision, Output};
use crate::policy::{Policy, Role, ShutdownKind};
use crate::state::{FinalStep, GuestState, GuestStatus, Hold, ShutdownOrigin, SystemState};
use crate::time::Millis;
use crate::vhal::{ApPowerStateReport, ApPowerStateReq, ShutdownParam};

mod shutdown_request;

/// Rounds of "consequences" per guest before step 3 gives up; every round
/// moves some guest strictly towards off, so this is never reached.
const SETTLE_ROUNDS_PER_GUEST: usize = 8;

/// The arbiter's whole state. Compare two with `==` to check a replay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arbiter {
    policy: Policy,
    now: Millis,
    inputs: u64,
    system: SystemState,
    ignition_on: bool,
    vehicle_in_use: bool,
    wake_hold_until: Option<Millis>,
    wake_after_s: Option<u32>,
    guests: Vec<GuestStatus>,
    timer: Option<Millis>,
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
            system: SystemState::Off,
            ignition_on: false,
            vehicle_in_use: false,
            wake_hold_until: None,
            wake_after_s: None,
            guests,
            timer: None,
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
        &self.system
    }

    /// Every guest, in policy order.
    pub fn guests(&self) -> &[GuestStatus] {
        &self.guests
    }

    /// The guest called `name`.
    pub fn guest(&self, name: &str) -> Option<&GuestStatus> {
        self.guests.iter().find(|g| g.name == name)
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
        self.ignition_on
    }

    /// Whether the vehicle is in use, as last reported.
    pub fn vehicle_in_use(&self) -> bool {
        self.vehicle_in_use
    }

    /// Until when the last wake request keeps the head unit on.
    pub fn wake_hold_until(&self) -> Option<Millis> {
        self.wake_hold_until
    }

    /// The last timer announced with `SetTimer` (`None` if nothing is due).
    pub fn next_timer(&self) -> Option<Millis> {
        self.timer
    }

    // ----- derived facts -------------------------------------------------

    fn index(&self, name: &str) -> Option<usize> {
        self.guests.iter().position(|g| g.name == name)
    }

    /// The head unit (Android) is wanted: ignition on, or a wake request's
    /// hold has not run out.
    fn head_unit_wanted(&self) -> bool {
        self.ignition_on || self.wake_hold_until.is_some_and(|t| t > self.now)
    }

    /// The cluster is needed: the vehicle is in use or the ignition is on.
    fn cluster_needed(&self) -> bool {
        self.ignition_on || self.vehicle_in_use
    }

    /// Human-readable reason the cluster is needed.
    fn need(&self) -> &'static str {
        match (self.ignition_on, self.vehicle_in_use) {
            (true, true) => "ignition on, vehicle in use",
            (true, false) => "ignition on",
            (false, true) => "vehicle in use",
            (false, false) => "nothing needs it",
        }
    }

    /// A configured cluster keeps the real system up: the vehicle is in use.
    fn cluster_blocks(&self) -> bool {
        self.vehicle_in_use && self.policy.has_cluster()
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
        let g = &mut self.guests[i];
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
            guest: self.guests[i].name.clone(),
            request_id,
            decision,
            reason,
        });
    }

    fn hard_stop(&mut self, i: usize, reason: String, out: &mut Vec<Output>) {
        let grace = self.now.after(self.policy.system().vm_exit_grace_ms);
        let g = &mut self.guests[i];
        g.state = GuestState::Stopping {
            grace,
            restart: false,
        };
        g.release_at = None;
        out.push(Output::HardStopVm {
            guest: g.name.clone(),
            reason,
        });
    }

    fn restart(&mut self, i: usize, request_id: u64, reason: String, out: &mut Vec<Output>) {
        self.decide(i, request_id, Decision::RestartVm, reason, out);
        let g = &mut self.guests[i];
        g.state = GuestState::Restarting;
        g.vhal_req = None;
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
        let g = &mut self.guests[i];
        g.release_at = None;
        g.state = match kind {
            PowerRequestKind::Suspend => GuestState::VirtuallyOff {
                hold: Hold::Suspended,
            },
            PowerRequestKind::Poweroff | PowerRequestKind::Reboot => GuestState::Stopping {
                grace,
                restart: false,
            },
        };
    }

    fn hold(&mut self, i: usize, request_id: u64, reason: String, out: &mut Vec<Output>) {
        self.decide(i, request_id, Decision::HoldVirtuallyOff, reason, out);
        let g = &mut self.guests[i];
        g.release_at = None;
        g.state = GuestState::VirtuallyOff {
            hold: Hold::Poweroff,
        };
    }

    /// The VM is gone: off, and started again if `restart`.
    fn vm_off(&mut self, i: usize, reason: String, restart: bool, out: &mut Vec<Output>) {
        self.guests[i].state = GuestState::Off;
        Self::note(out, reason);
        if restart {
            self.bring_up(i, "the system is on again", out);
        }
    }

    // ----- power on ------------------------------------------------------

    /// A power-on event (ignition on, a user or remote wake): the system is
    /// on and every guest is brought up.
    fn power_on(&mut self, why: &str, out: &mut Vec<Output>) {
        let before = out.len();
        if self.system != SystemState::On {
            let was = self.system;
            self.system = SystemState::On;
            self.wake_after_s = None;
            out.push(Output::SystemOn {
                reason: format!("{why}: system on (was {was})"),
            });
        }
        for i in 0..self.guests.len() {
            self.bring_up(i, why, out);
        }
        if out.len() == before {
            Self::note(out, format!("{why}: system already on, every guest up"));
        }
    }

    /// Brings guest `i` towards running: start it, resume it, cancel its
    /// shutdown, or have it started once it has stopped.
    fn bring_up(&mut self, i: usize, why: &str, out: &mut Vec<Output>) {
        let system_on = self.system == SystemState::On;
        let now = self.now;
        let final_grace = self.policy.system().final_grace_ms;
        let g = &mut self.guests[i];
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
                g.state = GuestState::Running;
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
        let was = self.system;
        let kind = self.policy.system().shutdown_kind;
        let deadline = self.now.after(self.policy.system().garage_mode_max_ms);
        self.system = SystemState::GarageMode { kind, deadline };
        self.wake_after_s = None;
        out.push(Output::SystemOn {
            reason: format!("wake for garage mode: system on until {deadline} at most (was {was})"),
        });
        for i in 0..self.guests.len() {
            // No user, no cluster: it starts only if the vehicle is in use.
            if self.guests[i].role != Role::Cluster || self.vehicle_in_use {
                self.bring_up(i, "garage mode", out);
            }
        }
        for i in 0..self.guests.len() {
            self.enter_shutdown(i, "garage mode", out);
        }
    }

    // ----- shutdown ------------------------------------------------------

    /// The head unit is no longer wanted: start the system shutdown.
    fn begin_shutdown(&mut self, why: &str, out: &mut Vec<Output>) {
        let kind = self.policy.system().shutdown_kind;
        let deadline = self.now.after(self.policy.system().shutdown_deadline_ms);
        self.system = SystemState::ShutdownPrepare { kind, deadline };
        Self::note(
            out,
            format!("{why}: shutdown begins ({kind}, global deadline {deadline})"),
        );
        for i in 0..self.guests.len() {
            self.enter_shutdown(i, why, out);
        }
    }

    /// Puts guest `i` on the running shutdown's clock: the handshake for a
    /// running Android guest, a release deadline for everything else.
    fn enter_shutdown(&mut self, i: usize, why: &str, out: &mut Vec<Output>) {
        let Some(d) = self.system.shutdown_deadline() else {
            return;
        };
        let now = self.now;
        let grace = self.policy.system().final_grace_ms;
        let own_deadline = self.guest_deadline_ms(i);
        let in_use = self.vehicle_in_use;
        let g = &mut self.guests[i];
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
        let Some(d) = self.system.shutdown_deadline() else {
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
        let g = &mut self.guests[i];
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

    /// Android guest `i`'s watchdog expired in `SHUTDOWN_PREPARE(param)`.
    fn escalate(&mut self, i: usize, param: ShutdownParam, postpones: u32, out: &mut Vec<Output>) {
        let name = self.guests[i].name.clone();
        match self.system.shutdown_deadline() {
            Some(d) if param.can_postpone() && self.now < d => {
                let watchdog = self.now.after(self.policy.system().final_grace_ms).min(d);
                self.guests[i].state = GuestState::Preparing {
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
        let g = &self.guests[i];
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
            && self.system.shutdown_kind() == Some(ShutdownKind::Suspend);
        if pause {
            let g = &mut self.guests[i];
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
        if self.cluster_blocks() || !self.guests.iter().all(|g| g.state.is_done()) {
            return false;
        }
        match kind {
            ShutdownKind::Poweroff => {
                let held: Vec<usize> = (0..self.guests.len())
                    .filter(|&i| matches!(self.guests[i].state, GuestState::VirtuallyOff { .. }))
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
                self.system = SystemState::PoweringOff;
                out.push(Output::SystemPowerOff {
                    wake_after_s: self.wake_after_s,
                    reason: "every guest is off and the vehicle is not in use: power off"
                        .to_string(),
                });
            }
            ShutdownKind::Suspend => {
                self.system = SystemState::Suspended;
                out.push(Output::SystemSuspend {
                    wake_after_s: self.wake_after_s,
                    reason:
                        "every guest is off, asleep or paused and the vehicle is not in use: suspend"
                            .to_string(),
                });
            }
        }
        true
    }

    // ----- time and consequences ----------------------------------------

    /// Fires every guest deadline at or before now. Returns whether any fired.
    fn fire_timers(&mut self, out: &mut Vec<Output>) -> bool {
        let now = self.now;
        let shutting_down = self.system.shutdown_deadline().is_some();
        let mut fired = false;
        for i in 0..self.guests.len() {
            let g = &self.guests[i];
            match g.state {
                GuestState::Preparing {
                    param,
                    watchdog,
                    postpones,
                } if watchdog <= now => {
                    fired = true;
                    self.escalate(i, param, postpones, out);
                }
                GuestState::ShutdownStarted {
                    deadline: Some(d), ..
                } if d <= now => {
                    fired = true;
                    let reason = format!("{} made no final power request by {d}", g.name);
                    self.hard_stop(i, reason, out);
                    if self.system == SystemState::On {
                        // A cancelled shutdown that hung: bring it back.
                        if let GuestState::Stopping { grace, .. } = self.guests[i].state {
                            self.guests[i].state = GuestState::Stopping {
                                grace,
                                restart: true,
                            };
                        }
                    }
                }
                GuestState::Stopping { grace, restart } if grace <= now => {
                    fired = true;
                    let reason = format!(
                        "{}: the VMM did not confirm the exit by {grace}; treating the VM as off",
                        g.name
                    );
                    self.vm_off(i, reason, restart, out);
                }
                GuestState::Running | GuestState::Starting | GuestState::Restarting
                    if shutting_down =>
                {
                    if let Some(at) = g.release_at.filter(|&at| at <= now) {
                        fired = true;
                        self.release(i, at, out);
                    }
                }
                _ => {}
            }
        }
        fired
    }

    /// System-level consequences. Returns whether anything changed.
    fn evaluate(&mut self, out: &mut Vec<Output>) -> bool {
        match self.system {
            SystemState::On if !self.head_unit_wanted() => {
                let why = match self.wake_hold_until {
                    Some(t) => format!("ignition off and the wake hold ended at {t}"),
                    None => "ignition off".to_string(),
                };
                self.wake_hold_until = None;
                self.begin_shutdown(&why, out);
                true
            }
            SystemState::ShutdownPrepare { kind, .. } | SystemState::GarageMode { kind, .. } => {
                self.try_finish(kind, out)
            }
            _ => false,
        }
    }

    fn settle(&mut self, out: &mut Vec<Output>) {
        let rounds = SETTLE_ROUNDS_PER_GUEST * (self.guests.len() + 1);
        for _ in 0..rounds {
            let fired = self.fire_timers(out);
            let changed = self.evaluate(out);
            if !fired && !changed {
                return;
            }
        }
        Self::note(
            out,
            "internal: consequences did not settle; state kept as is".to_string(),
        );
    }

    /// Emits `SetTimer` when the earliest pending deadline changed.
    fn announce_timer(&mut self, out: &mut Vec<Output>) {
        let now = self.now;
        let shutting_down = self.system.shutdown_deadline().is_some();
        let mut next: Option<(Millis, String)> = None;
        let mut consider = |at: Millis, what: String| {
            if at > now && next.as_ref().is_none_or(|(n, _)| at < *n) {
                next = Some((at, what));
            }
        };
        for g in &self.guests {
            match g.state {
                GuestState::Preparing { watchdog, .. } => {
                    consider(watchdog, format!("{}'s SHUTDOWN_PREPARE watchdog", g.name));
                }
                GuestState::ShutdownStarted {
                    deadline: Some(d), ..
                } => consider(d, format!("{}'s final power request deadline", g.name)),
                GuestState::Stopping { grace, .. } => {
                    consider(grace, format!("{}'s exit confirmation", g.name));
                }
                GuestState::Running | GuestState::Starting | GuestState::Restarting
                    if shutting_down =>
                {
                    if let Some(at) = g.release_at {
                        consider(at, format!("{}'s shutdown deadline", g.name));
                    }
                }
                _ => {}
            }
        }
        if self.system == SystemState::On && !self.ignition_on {
            if let Some(t) = self.wake_hold_until {
                consider(t, "end of the wake hold".to_string());
            }
        }
        let at = next.as_ref().map(|(at, _)| *at);
        if at != self.timer {
            self.timer = at;
            if let Some((at, reason)) = next {
                out.push(Output::SetTimer { at, reason });
            }
        }
    }

    // ----- inputs --------------------------------------------------------

    fn apply(&mut self, input: Input, out: &mut Vec<Output>) {
        match input {
            Input::Tick => {}
            Input::IgnitionOn => {
                let why = if self.ignition_on {
                    "ignition on (repeated)"
                } else {
                    "ignition on"
                };
                self.ignition_on = true;
                self.power_on(why, out);
            }
            Input::IgnitionOff => self.ignition_off(out),
            Input::VehicleInUse { in_use } => self.vehicle_use(in_use, out),
            Input::WakeRequest { reason } => {
                if reason == crate::vhal::WakeReason::SystemEnterGarageMode {
                    if self.system.is_down() {
                        self.garage_wake(out);
                    } else {
                        Self::note(
                            out,
                            format!(
                                "wake for garage mode ignored: the system is {}",
                                self.system
                            ),
                        );
                    }
                } else {
                    let until = self.now.after(self.policy.system().wake_hold_ms);
                    let until = self.wake_hold_until.map_or(until, |t| t.max(until));
                    self.wake_hold_until = Some(until);
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
        let already = !self.ignition_on;
        self.ignition_on = false;
        let what = if already {
            "ignition off (repeated)"
        } else {
            "ignition off"
        };
        match self.system {
            // The shutdown itself starts in `evaluate`, which notes it.
            SystemState::On if !self.head_unit_wanted() => {}
            SystemState::On => {
                let until = self.wake_hold_until.unwrap_or(self.now);
                Self::note(
                    out,
                    format!("{what}: the head unit stays on for a wake request until {until}"),
                );
            }
            s => Self::note(out, format!("{what}: the system is {s}")),
        }
    }

    fn vehicle_use(&mut self, in_use: bool, out: &mut Vec<Output>) {
        self.vehicle_in_use = in_use;
        let before = out.len();
        let n = self.guests.len();
        if self.system.is_down() {
            let what = if in_use { "in use" } else { "not in use" };
            Self::note(
                out,
                format!(
                    "vehicle {what}: the system is {}; the MCU wakes it with a wake request",
                    self.system
                ),
            );
            return;
        }
        if in_use {
            for i in 0..n {
                if self.guests[i].role == Role::Cluster {
                    self.bring_up(i, "vehicle in use: the cluster must be up", out);
                }
            }
            if out.len() == before {
                Self::note(out, "vehicle in use".to_string());
            }
            return;
        }
        if self.system.shutdown_deadline().is_some() {
            for i in 0..n {
                if self.guests[i].role == Role::Cluster && self.guests[i].release_at.is_none() {
                    let at = self.now.after(self.guest_deadline_ms(i));
                    self.guests[i].release_at = Some(at);
                    let name = &self.guests[i].name;
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

    fn power_request(
        &mut self,
        name: &str,
        request_id: u64,
        kind: PowerRequestKind,
        out: &mut Vec<Output>,
    ) {
        let Some(i) = self.index(name) else {
            Self::reject(
                out,
                format!("{kind} request {request_id} from unknown guest `{name}`: no such guest in the policy"),
            );
            return;
        };
        let state = self.guests[i].state;
        match state {
            GuestState::Off => {
                return self.decide(
                    i,
                    request_id,
                    Decision::Refuse,
                    format!("{name}'s VM is off as far as the arbiter knows: stale {kind} request"),
                    out,
                )
            }
            GuestState::Stopping { .. } => {
                return self.decide(
                    i,
                    request_id,
                    Decision::Refuse,
                    format!("{name}'s VM is already being stopped"),
                    out,
                )
            }
            GuestState::VirtuallyOff { .. } => {
                return self.decide(
                    i,
                    request_id,
                    Decision::Refuse,
                    format!("{name}'s VM is paused ({state}); a paused VM cannot ask"),
                    out,
                )
            }
            GuestState::Starting | GuestState::Restarting => {
                self.guests[i].state = GuestState::Running;
                Self::note(
                    out,
                    format!("{name} made a power request, so its VM is running"),
                );
            }
            _ => {}
        }
        let role = self.guests[i].role;
        match (kind, role) {
            (PowerRequestKind::Reboot, _) => self.restart(
                i,
                request_id,
                format!("{name} asked to reboot: restart its VM only"),
                out,
            ),
            (_, Role::Android) => self.android_final(i, request_id, kind, out),
            (_, Role::Cluster) if self.cluster_needed() => {
                let need = self.need();
                if kind == PowerRequestKind::Poweroff {
                    self.restart(
                        i,
                        request_id,
                        format!("the cluster must stay up ({need}): restart it instead of powering it off"),
                        out,
                    );
                } else {
                    self.decide(
                        i,
                        request_id,
                        Decision::Refuse,
                        format!("the cluster must stay up ({need}): its suspend fails"),
                        out,
                    );
                }
            }
            (_, Role::Cluster) => self.allow_final(
                i,
                request_id,
                kind,
                format!("the cluster is not needed (ignition off, vehicle not in use): allow its {kind}"),
                out,
            ),
            (_, Role::Other) => self.allow_final(
                i,
                request_id,
                kind,
                format!("{name} may {kind} itself"),
                out,
            ),
        }
    }

    /// The Android guest's final power-off or suspend request.
    fn android_final(
        &mut self,
        i: usize,
        request_id: u64,
        kind: PowerRequestKind,
        out: &mut Vec<Output>,
    ) {
        let name = self.guests[i].name.clone();
        let state = self.guests[i].state;
        let in_handshake = matches!(
            state,
            GuestState::Preparing { .. } | GuestState::ShutdownStarted { .. }
        );
        match self.system {
            SystemState::On => {
                if let GuestState::ShutdownStarted {
                    origin: ShutdownOrigin::Cancelled,
                    ..
                } = state
                {
                    return self.restart(
                        i,
                        request_id,
                        format!("the system is on again but {name} was past the point of cancelling: restart it"),
                        out,
                    );
                }
                if self.cluster_needed() {
                    let need = self.need();
                    if kind == PowerRequestKind::Poweroff {
                        self.hold(
                            i,
                            request_id,
                            format!("the system stays on ({need}): hold {name} virtually off until the next power-on"),
                            out,
                        );
                    } else {
                        self.allow_final(
                            i,
                            request_id,
                            kind,
                            format!("the system stays on ({need}): {name} sleeps until the next power-on"),
                            out,
                        );
                    }
                    if in_handshake {
                        self.set_req(
                            i,
                            ApPowerStateReq::Finished,
                            format!("{name}'s final {kind} is done"),
                            out,
                        );
                    }
                } else {
                    self.allow_final(
                        i,
                        request_id,
                        kind,
                        format!("{name} is the power master and nothing else needs the system: allow its {kind}"),
                        out,
                    );
                    if in_handshake {
                        self.set_req(
                            i,
                            ApPowerStateReq::Finished,
                            format!("{name}'s final {kind} is done"),
                            out,
                        );
                    }
                    self.wake_hold_until = None;
                    self.begin_shutdown(&format!("{name} chose to {kind}"), out);
                }
            }
            SystemState::ShutdownPrepare { .. } | SystemState::GarageMode { .. } => {
                if kind == PowerRequestKind::Poweroff && self.cluster_blocks() {
                    self.hold(
                        i,
                        request_id,
                        format!("the vehicle is in use, so the real system stays on for the cluster: hold {name} virtually off"),
                        out,
                    );
                } else {
                    self.allow_final(
                        i,
                        request_id,
                        kind,
                        format!("shutdown under way: allow {name}'s {kind}"),
                        out,
                    );
                }
                self.set_req(
                    i,
                    ApPowerStateReq::Finished,
                    format!("{name}'s final {kind} is done"),
                    out,
                );
            }
            s => self.allow_final(
                i,
                request_id,
                kind,
                format!("the system is {s}: allow {name}'s {kind}"),
                out,
            ),
        }
    }

    fn report(&mut self, name: &str, value: i32, param: i32, out: &mut Vec<Output>) {
        let Some(i) = self.index(name) else {
            return Self::reject(
                out,
                format!("AP_POWER_STATE_REPORT [{value}, {param}] from unknown guest `{name}`"),
            );
        };
        let role = self.guests[i].role;
        if role != Role::Android {
            return Self::reject(
                out,
                format!("{name} has role {role}; only the android guest speaks the VHAL power handshake"),
            );
        }
        let r = match ApPowerStateReport::from_vhal(value, param) {
            Ok(r) => r,
            Err(e) => return Self::reject(out, format!("{name}: {e}")),
        };
        let state = self.guests[i].state;
        match state {
            GuestState::Off | GuestState::Stopping { .. } | GuestState::VirtuallyOff { .. } => {
                return Self::reject(out, format!("{name} reported {r} while its VM is {state}"));
            }
            GuestState::Starting | GuestState::Restarting => {
                self.guests[i].state = GuestState::Running;
                Self::note(out, format!("{name} reported {r}, so its VM is running"));
            }
            _ => {}
        }
        if self.system.is_down() {
            return Self::note(
                out,
                format!(
                    "{name} reported {r} while the system is {}; nothing to do",
                    self.system
                ),
            );
        }
        match r {
            ApPowerStateReport::WaitForVhal
            | ApPowerStateReport::DeepSleepExit
            | ApPowerStateReport::HibernationExit
            | ApPowerStateReport::ShutdownCancelled => self.answer(i, r, out),
            ApPowerStateReport::On => Self::note(out, format!("{name} reports ON")),
            ApPowerStateReport::ShutdownPostpone { ms } => {
                self.postpone(i, i64::from(ms), &r.to_string(), out)
            }
            ApPowerStateReport::ShutdownPrepare => {
                if matches!(self.guests[i].state, GuestState::Preparing { .. }) {
                    let ms = self.policy.system().postpone_watchdog_ms;
                    let ms = i64::try_from(ms).unwrap_or(i64::MAX);
                    self.postpone(i, ms, "SHUTDOWN_PREPARE (garage mode running)", out);
                } else {
                    Self::note(
                        out,
                        format!("{name} reports SHUTDOWN_PREPARE outside a shutdown"),
                    );
                }
            }
            ApPowerStateReport::ShutdownStart { wake_up_s } => {
                self.final_step(i, FinalStep::Shutdown, wake_up_s, r, out)
            }
            ApPowerStateReport::DeepSleepEntry { wake_up_s } => {
                self.final_step(i, FinalStep::DeepSleep, wake_up_s, r, out)
            }
            ApPowerStateReport::HibernationEntry { wake_up_s } => {
                self.final_step(i, FinalStep::Hibernation, wake_up_s, r, out)
            }
        }
    }

    /// Answers a report that asks for the current request (WAIT_FOR_VHAL,
    /// *_EXIT, SHUTDOWN_CANCELLED): ON if the system is on, the running
    /// shutdown's SHUTDOWN_PREPARE otherwise.
    fn answer(&mut self, i: usize, r: ApPowerStateReport, out: &mut Vec<Output>) {
        if self.system == SystemState::On {
            self.guests[i].state = GuestState::Running;
            return self.set_req(
                i,
                ApPowerStateReq::On,
                format!("answer to {r}: the system is on"),
                out,
            );
        }
        let Some(d) = self.system.shutdown_deadline() else {
            return;
        };
        match self.guests[i].state {
            GuestState::Preparing {
                param,
                watchdog,
                postpones,
            } => {
                let sp = self.policy.system();
                let watchdog = if param.can_postpone() {
                    let limit = d.before(sp.final_grace_ms);
                    watchdog.max(self.now.after(sp.postpone_watchdog_ms).min(limit))
                } else {
                    watchdog
                };
                self.guests[i].state = GuestState::Preparing {
                    param,
                    watchdog,
                    postpones,
                };
                self.set_req(
                    i,
                    ApPowerStateReq::ShutdownPrepare(param),
                    format!("answer to {r}: shutdown under way; postpone or start by {watchdog}"),
                    out,
                );
            }
            _ => self.send_prepare(i, &format!("answer to {r}: shutdown under way"), out),
        }
    }

    fn postpone(&mut self, i: usize, ms: i64, what: &str, out: &mut Vec<Output>) {
        let name = self.guests[i].name.clone();
        let state = self.guests[i].state;
        let GuestState::Preparing {
            param,
            watchdog,
            postpones,
        } = state
        else {
            return Self::reject(
                out,
                format!("{name}: {what} outside SHUTDOWN_PREPARE ({state})"),
            );
        };
        if !param.can_postpone() {
            return Self::reject(
                out,
                format!("{name}: {what} is not allowed after SHUTDOWN_PREPARE({param}); hard stop stays at {watchdog}"),
            );
        }
        let Some(d) = self.system.shutdown_deadline() else {
            return Self::reject(out, format!("{name}: {what} while no shutdown is running"));
        };
        let Ok(asked) = u64::try_from(ms) else {
            return Self::reject(out, format!("{name}: {what} with a negative time"));
        };
        if asked == 0 {
            return Self::reject(out, format!("{name}: {what} without a time"));
        }
        let sp = self.policy.system();
        let granted = asked.min(sp.max_postpone_ms);
        let limit = d.before(sp.final_grace_ms);
        let wanted = self.now.after(granted);
        let new = watchdog.max(wanted.min(limit));
        self.guests[i].state = GuestState::Preparing {
            param,
            watchdog: new,
            postpones: postpones.saturating_add(1),
        };
        let capped = if asked > granted {
            format!(" (asked {asked} ms, at most {granted} ms per postpone)")
        } else {
            String::new()
        };
        let reason = if new >= wanted {
            format!("{name}: {what} granted: watchdog {new}{capped}")
        } else {
            format!(
                "{name}: {what} granted only until {new}: postponing ends {} ms before the deadline {d}{capped}",
                sp.final_grace_ms
            )
        };
        Self::note(out, reason);
    }

    fn final_step(
        &mut self,
        i: usize,
        step: FinalStep,
        wake_up_s: i32,
        r: ApPowerStateReport,
        out: &mut Vec<Output>,
    ) {
        let name = self.guests[i].name.clone();
        let state = self.guests[i].state;
        if let GuestState::ShutdownStarted { .. } = state {
            return Self::note(out, format!("{name} repeated {r}"));
        }
        self.wake_after_s = u32::try_from(wake_up_s).ok().filter(|&s| s > 0);
        match self.system.shutdown_deadline() {
            Some(d) => {
                let deadline = self.now.after(self.policy.system().final_grace_ms).min(d);
                let g = &mut self.guests[i];
                g.state = GuestState::ShutdownStarted {
                    step,
                    origin: ShutdownOrigin::Commanded,
                    deadline: Some(deadline),
                };
                g.release_at = None;
                Self::note(
                    out,
                    format!("{name} reported {r}: its final power request is due by {deadline}"),
                );
            }
            None => {
                self.guests[i].state = GuestState::ShutdownStarted {
                    step,
                    origin: ShutdownOrigin::Own,
                    deadline: None,
                };
                Self::note(
                    out,
                    format!(
                        "{name} reported {r} on its own while the system is {}",
                        self.system
                    ),
                );
            }
        }
    }

    fn vm_started(&mut self, name: &str, out: &mut Vec<Output>) {
        let Some(i) = self.index(name) else {
            return Self::reject(out, format!("VM of unknown guest `{name}` started"));
        };
        match self.guests[i].state {
            GuestState::Starting | GuestState::Restarting => {
                self.guests[i].state = GuestState::Running;
                Self::note(out, format!("{name}'s VM is running"));
            }
            GuestState::Off => {
                self.guests[i].state = GuestState::Running;
                Self::note(
                    out,
                    format!("{name}'s VM started without StartVm; tracking it as running"),
                );
                self.enter_shutdown(i, "the system is shutting down", out);
            }
            s => Self::note(out, format!("{name}'s VM started while {s}; nothing to do")),
        }
    }

    fn vm_gone(&mut self, name: &str, what: &str, reset: bool, out: &mut Vec<Output>) {
        let Some(i) = self.index(name) else {
            return Self::reject(out, format!("{what} for unknown guest `{name}`"));
        };
        let state = self.guests[i].state;
        match state {
            GuestState::Off => Self::note(out, format!("{name}: {what}; it was already off")),
            GuestState::Stopping { restart, .. } => {
                self.vm_off(i, format!("{name}: {what}; it is off"), restart, out);
            }
            GuestState::Restarting if reset => {
                Self::note(out, format!("{name}: {what} as part of its restart"));
            }
            _ => {
                let wanted = matches!(
                    state,
                    GuestState::Starting
                        | GuestState::Running
                        | GuestState::Restarting
                        | GuestState::ShutdownStarted {
                            origin: ShutdownOrigin::Cancelled,
                            ..
                        }
                ) && match self.system {
                    SystemState::On => true,
                    SystemState::ShutdownPrepare { .. } | SystemState::GarageMode { .. } => {
                        self.guests[i].role == Role::Cluster && self.vehicle_in_use
                    }
                    _ => false,
                };
                let restart = wanted && self.restart_on_failure(i);
                let reason = if restart {
                    format!("{name}: {what} unexpectedly while {state}; start it again")
                } else {
                    format!("{name}: {what} while {state}; it is off")
                };
                self.vm_off(i, reason, false, out);
                if restart {
                    self.bring_up(i, &format!("{name} must be running"), out);
                }
            }
        }
    }
}
