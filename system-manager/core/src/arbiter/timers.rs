//! Step 1 and 3 of a call: deadlines that passed, the consequences that
//! follow (a shutdown to start or to end), and step 4, the timer to set.

use super::*;

impl Arbiter {
    /// Fires every guest deadline at or before now. Returns whether any fired.
    pub(super) fn fire_timers(&mut self, out: &mut Vec<Output>) -> bool {
        let now = self.now;
        let shutting_down = self.state.system.shutdown_deadline().is_some();
        let mut fired = false;
        for i in 0..self.state.guests.len() {
            let g = &self.state.guests[i];
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
                    if self.state.system == SystemState::On {
                        // A cancelled shutdown that hung: bring it back.
                        if let GuestState::Stopping { grace, .. } = self.state.guests[i].state {
                            Arc::make_mut(&mut self.state.guests)[i].state = GuestState::Stopping {
                                grace,
                                restart: true,
                            };
                        }
                    }
                }
                GuestState::Stopping {
                    grace: Some(grace),
                    restart,
                } if grace <= now => {
                    fired = true;
                    self.kill_overdue(i, grace, restart, out);
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

    /// Guest `i`'s VMM did not confirm the exit by `grace`. The VM is not
    /// declared off: its VMM may still run (a VMM that ignores `stop` is
    /// killed by the shell only later), and its exit, arriving after a
    /// fresh start, would be taken for the new VM's. Instead `HardStopVm`
    /// (again, after an allowed power-off the first time) makes the shell
    /// kill it, and the guest stays stopping, without a deadline, until
    /// `VmExited` or `VmLost`, which the shell reports in a bounded time.
    fn kill_overdue(&mut self, i: usize, grace: Millis, restart: bool, out: &mut Vec<Output>) {
        let g = &mut Arc::make_mut(&mut self.state.guests)[i];
        g.state = GuestState::Stopping {
            grace: None,
            restart,
        };
        g.release_at = None;
        let then = if restart {
            "; it is started again once it is off"
        } else {
            ""
        };
        out.push(Output::HardStopVm {
            guest: g.name.clone(),
            reason: format!(
                "{}: the VMM did not confirm the exit by {grace}; kill it and wait for its exit{then}",
                g.name
            ),
        });
    }

    /// System-level consequences. Returns whether anything changed.
    pub(super) fn evaluate(&mut self, out: &mut Vec<Output>) -> bool {
        match self.state.system {
            SystemState::On if !self.head_unit_wanted() => {
                let why = match self.state.wake_hold_until {
                    Some(t) => format!("ignition off and the wake hold ended at {t}"),
                    None => "ignition off".to_string(),
                };
                self.state.wake_hold_until = None;
                self.begin_shutdown(&why, out);
                true
            }
            SystemState::ShutdownPrepare { kind, .. } | SystemState::GarageMode { kind, .. } => {
                self.try_finish(kind, out)
            }
            _ => false,
        }
    }

    pub(super) fn settle(&mut self, out: &mut Vec<Output>) {
        let rounds = SETTLE_ROUNDS_PER_GUEST * (self.state.guests.len() + 1);
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
    pub(super) fn announce_timer(&mut self, out: &mut Vec<Output>) {
        let now = self.now;
        let shutting_down = self.state.system.shutdown_deadline().is_some();
        let mut next: Option<(Millis, String)> = None;
        let mut consider = |at: Millis, what: String| {
            if at > now && next.as_ref().is_none_or(|(n, _)| at < *n) {
                next = Some((at, what));
            }
        };
        for g in self.state.guests.iter() {
            match g.state {
                GuestState::Preparing { watchdog, .. } => {
                    consider(watchdog, format!("{}'s SHUTDOWN_PREPARE watchdog", g.name));
                }
                GuestState::ShutdownStarted {
                    deadline: Some(d), ..
                } => consider(d, format!("{}'s final power request deadline", g.name)),
                GuestState::Stopping {
                    grace: Some(grace), ..
                } => {
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
        if self.state.system == SystemState::On && !self.state.ignition_on {
            if let Some(t) = self.state.wake_hold_until {
                consider(t, "end of the wake hold".to_string());
            }
        }
        let at = next.as_ref().map(|(at, _)| *at);
        if at != self.state.timer {
            self.state.timer = at;
            if let Some((at, reason)) = next {
                out.push(Output::SetTimer { at, reason });
            }
        }
    }
}
