//! Facts from the VMMs: a guest's VM started, or its VM is gone (and why).

use super::*;

impl Arbiter {
    pub(super) fn vm_started(&mut self, name: &str, out: &mut Vec<Output>) {
        let Some(i) = self.index(name) else {
            return Self::reject(out, format!("VM of unknown guest `{name}` started"));
        };
        match self.state.guests[i].state {
            GuestState::Starting | GuestState::Restarting => {
                Arc::make_mut(&mut self.state.guests)[i].state = GuestState::Running;
                Self::note(out, format!("{name}'s VM is running"));
            }
            GuestState::Off => {
                Arc::make_mut(&mut self.state.guests)[i].state = GuestState::Running;
                Self::note(
                    out,
                    format!("{name}'s VM started without StartVm; tracking it as running"),
                );
                self.enter_shutdown(i, "the system is shutting down", out);
            }
            s => Self::note(out, format!("{name}'s VM started while {s}; nothing to do")),
        }
    }

    pub(super) fn vm_gone(&mut self, name: &str, what: &str, reset: bool, out: &mut Vec<Output>) {
        let Some(i) = self.index(name) else {
            return Self::reject(out, format!("{what} for unknown guest `{name}`"));
        };
        let state = self.state.guests[i].state;
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
                ) && self.should_run(i);
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
