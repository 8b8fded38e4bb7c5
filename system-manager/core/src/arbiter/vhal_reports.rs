//! The Android guest's side of the VHAL power handshake: its
//! `AP_POWER_STATE_REPORT`s, postponements and the final step they lead to.

use super::*;

impl Arbiter {
    pub(super) fn report(&mut self, name: &str, value: i32, param: i32, out: &mut Vec<Output>) {
        let Some(i) = self.index(name) else {
            return Self::reject(
                out,
                format!("AP_POWER_STATE_REPORT [{value}, {param}] from unknown guest `{name}`"),
            );
        };
        let role = self.state.guests[i].role;
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
        let state = self.state.guests[i].state;
        match state {
            GuestState::Off | GuestState::Stopping { .. } | GuestState::VirtuallyOff { .. } => {
                return Self::reject(out, format!("{name} reported {r} while its VM is {state}"));
            }
            GuestState::Starting | GuestState::Restarting => {
                Arc::make_mut(&mut self.state.guests)[i].state = GuestState::Running;
                Self::note(out, format!("{name} reported {r}, so its VM is running"));
            }
            _ => {}
        }
        if self.state.system.is_down() {
            return Self::note(
                out,
                format!(
                    "{name} reported {r} while the system is {}; nothing to do",
                    self.state.system
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
                let cap = self.policy.system().max_postpone_ms;
                self.postpone(i, i64::from(ms), Some(cap), &r.to_string(), out)
            }
            ApPowerStateReport::ShutdownPrepare => {
                if matches!(self.state.guests[i].state, GuestState::Preparing { .. }) {
                    // Not a SHUTDOWN_POSTPONE: no time of its own, so not
                    // under that report's cap; it gets the answer time.
                    let ms = self.policy.system().postpone_watchdog_ms;
                    let ms = i64::try_from(ms).unwrap_or(i64::MAX);
                    self.postpone(i, ms, None, "SHUTDOWN_PREPARE (garage mode running)", out);
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
    /// shutdown's SHUTDOWN_PREPARE otherwise. A guest already preparing
    /// with a postponable param gets `postpone_watchdog_ms` to answer the
    /// repeated request (not counted as a postpone); like a postpone, that
    /// never moves its watchdog past `final_grace_ms` before the deadline,
    /// and after the escalation nothing moves.
    pub(super) fn answer(&mut self, i: usize, r: ApPowerStateReport, out: &mut Vec<Output>) {
        if self.state.system == SystemState::On {
            Arc::make_mut(&mut self.state.guests)[i].state = GuestState::Running;
            return self.set_req(
                i,
                ApPowerStateReq::On,
                format!("answer to {r}: the system is on"),
                out,
            );
        }
        let Some(d) = self.state.system.shutdown_deadline() else {
            return;
        };
        match self.state.guests[i].state {
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
                Arc::make_mut(&mut self.state.guests)[i].state = GuestState::Preparing {
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

    /// Postpones guest `i`'s watchdog by `ms` for report `what`, by at most
    /// `cap` (`SHUTDOWN_POSTPONE`'s `max_postpone_ms`); never past
    /// `final_grace_ms` before the deadline, never earlier than it was.
    pub(super) fn postpone(
        &mut self,
        i: usize,
        ms: i64,
        cap: Option<u64>,
        what: &str,
        out: &mut Vec<Output>,
    ) {
        let (name, state) = self.name_and_state(i);
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
        let Some(d) = self.state.system.shutdown_deadline() else {
            return Self::reject(out, format!("{name}: {what} while no shutdown is running"));
        };
        let Ok(asked) = u64::try_from(ms) else {
            return Self::reject(out, format!("{name}: {what} with a negative time"));
        };
        if asked == 0 {
            return Self::reject(out, format!("{name}: {what} without a time"));
        }
        let sp = self.policy.system();
        let granted = cap.map_or(asked, |cap| asked.min(cap));
        let limit = d.before(sp.final_grace_ms);
        let wanted = self.now.after(granted);
        let new = watchdog.max(wanted.min(limit));
        Arc::make_mut(&mut self.state.guests)[i].state = GuestState::Preparing {
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

    pub(super) fn final_step(
        &mut self,
        i: usize,
        step: FinalStep,
        wake_up_s: i32,
        r: ApPowerStateReport,
        out: &mut Vec<Output>,
    ) {
        let (name, state) = self.name_and_state(i);
        if let GuestState::ShutdownStarted { .. } = state {
            return Self::note(out, format!("{name} repeated {r}"));
        }
        self.state.wake_after_s = u32::try_from(wake_up_s).ok().filter(|&s| s > 0);
        match self.state.system.shutdown_deadline() {
            Some(d) => {
                let deadline = self.now.after(self.policy.system().final_grace_ms).min(d);
                let g = &mut Arc::make_mut(&mut self.state.guests)[i];
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
                Arc::make_mut(&mut self.state.guests)[i].state = GuestState::ShutdownStarted {
                    step,
                    origin: ShutdownOrigin::Own,
                    deadline: None,
                };
                Self::note(
                    out,
                    format!(
                        "{name} reported {r} on its own while the system is {}",
                        self.state.system
                    ),
                );
            }
        }
    }
}
