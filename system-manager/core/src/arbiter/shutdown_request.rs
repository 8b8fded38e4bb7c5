//! `Input::ShutdownRequest`: the Android guest asks the vehicle to shut
//! the head unit down (VHAL `SHUTDOWN_REQUEST`, what Android's
//! `CarPowerManager` sends when the user switches the head unit off).
//!
//! The arbiter, playing the vehicle, grants it only when nothing but a
//! wake request's hold keeps the head unit on: the hold ends and the
//! system shutdown begins (`SHUTDOWN_PREPARE` follows as usual). While the
//! ignition is on the head unit stays on, and during a shutdown the
//! request changes nothing; both are noted. Requests from an unknown or
//! non-Android guest, from a VM that is not live, or with an undefined
//! parameter are rejected.

use super::{Arbiter, Output, Role, ShutdownParam};
use crate::state::{GuestState, SystemState};

impl Arbiter {
    pub(super) fn shutdown_request(&mut self, name: &str, param: i32, out: &mut Vec<Output>) {
        let Some(i) = self.index(name) else {
            return Self::reject(out, format!("SHUTDOWN_REQUEST from unknown guest `{name}`"));
        };
        let role = self.state.guests[i].role;
        if role != Role::Android {
            return Self::reject(
                out,
                format!("{name} has role {role}; only the android guest sends SHUTDOWN_REQUEST"),
            );
        }
        let Some(p) = ShutdownParam::from_vhal(param) else {
            return Self::reject(
                out,
                format!("{name}: unknown SHUTDOWN_REQUEST parameter {param} (expected 1..=7)"),
            );
        };
        let state = self.state.guests[i].state;
        if matches!(
            state,
            GuestState::Off | GuestState::Stopping { .. } | GuestState::VirtuallyOff { .. }
        ) {
            return Self::reject(
                out,
                format!("{name} sent SHUTDOWN_REQUEST({p}) while its VM is {state}"),
            );
        }
        match self.state.system {
            SystemState::On if self.state.ignition_on => Self::note(
                out,
                format!("{name} asks for a shutdown ({p}): the ignition is on, so the head unit stays on"),
            ),
            SystemState::On => {
                // Only a wake hold keeps the head unit on: ending it makes
                // `evaluate` begin the shutdown in this same step.
                Self::note(
                    out,
                    format!("{name} asks for a shutdown ({p}): the wake hold ends"),
                );
                self.state.wake_hold_until = Some(self.now);
            }
            s => Self::note(
                out,
                format!("{name} asks for a shutdown ({p}): the system is already {s}"),
            ),
        }
    }
}
