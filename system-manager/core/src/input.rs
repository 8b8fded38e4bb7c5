//! What the shell tells the arbiter: vehicle signals, the guests' held power
//! requests and VHAL reports, VM lifecycle facts, and the passing of time.
//!
//! Every field that comes from a guest or the network is taken as is and
//! checked by the arbiter (unknown guest names, undefined VHAL values): a bad
//! input becomes a [`crate::Output::Rejected`] entry, never a panic.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::vhal::WakeReason;

/// One input to [`crate::Arbiter::handle`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Input {
    /// The MCU reports the ignition switched on.
    IgnitionOn,
    /// The MCU reports the ignition switched off.
    IgnitionOff,
    /// The MCU reports whether the vehicle is in use (driver present, doors,
    /// seat sensors, ...): while it is, the cluster must stay up.
    VehicleInUse {
        /// Whether the vehicle is in use now.
        in_use: bool,
    },
    /// The MCU woke the system (or asks it to stay up) for a reason.
    WakeRequest {
        /// The VHAL boot reason.
        reason: WakeReason,
    },
    /// A guest's final power step, trapped and held by its VMM until the
    /// arbiter answers with a `Decide` carrying the same `request_id`.
    GuestPowerRequest {
        /// The guest's policy name.
        guest: String,
        /// The VMM's id for the held request, echoed in the decision.
        request_id: u64,
        /// What the guest's kernel tried to do.
        #[serde(with = "PowerRequestKindLogWord")]
        kind: PowerRequestKind,
    },
    /// An `AP_POWER_STATE_REPORT` from a guest's Android side, undecoded.
    ApPowerStateReport {
        /// The guest's policy name.
        guest: String,
        /// `AP_POWER_STATE_REPORT[0]`.
        value: i32,
        /// `AP_POWER_STATE_REPORT[1]`.
        param: i32,
    },
    /// `SHUTDOWN_REQUEST` (VHAL 0x11410A05, Android 14+): the Android guest
    /// asks the vehicle to shut the head unit down (`param` is a
    /// `VehicleApPowerStateShutdownParam`). The vehicle decides (see
    /// `arbiter/shutdown_request.rs`).
    ShutdownRequest {
        /// The guest (from its binder connection, never its word).
        guest: String,
        /// Raw parameter, checked by the core.
        param: i32,
    },
    /// The guest's VM is running (after `StartVm` or a restart).
    VmStarted {
        /// The guest's policy name.
        guest: String,
    },
    /// The guest's VM ended.
    VmExited {
        /// The guest's policy name.
        guest: String,
        /// How it ended.
        reason: VmExitReason,
    },
    /// The guest's VMM disappeared (its control socket closed unexpectedly).
    VmLost {
        /// The guest's policy name.
        guest: String,
    },
    /// Time passed. The shell sends it at or after the last `SetTimer`.
    Tick,
}

impl Input {
    /// The guest the input is about, if any.
    pub fn guest(&self) -> Option<&str> {
        match self {
            Input::GuestPowerRequest { guest, .. }
            | Input::ApPowerStateReport { guest, .. }
            | Input::ShutdownRequest { guest, .. }
            | Input::VmStarted { guest }
            | Input::VmExited { guest, .. }
            | Input::VmLost { guest } => Some(guest),
            _ => None,
        }
    }
}

impl fmt::Display for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Input::IgnitionOn => f.write_str("ignition on"),
            Input::IgnitionOff => f.write_str("ignition off"),
            Input::VehicleInUse { in_use: true } => f.write_str("vehicle in use"),
            Input::VehicleInUse { in_use: false } => f.write_str("vehicle not in use"),
            Input::WakeRequest { reason } => write!(f, "wake request {reason}"),
            Input::GuestPowerRequest {
                guest,
                request_id,
                kind,
            } => write!(f, "{guest} requests {kind} (request {request_id})"),
            Input::ApPowerStateReport {
                guest,
                value,
                param,
            } => write!(
                f,
                "{guest} reports AP_POWER_STATE_REPORT [{value}, {param}]"
            ),
            Input::ShutdownRequest { guest, param } => {
                write!(f, "{guest} sends SHUTDOWN_REQUEST [{param}]")
            }
            Input::VmStarted { guest } => write!(f, "{guest} VM started"),
            Input::VmExited { guest, reason } => write!(f, "{guest} VM exited ({reason})"),
            Input::VmLost { guest } => write!(f, "{guest} VMM lost"),
            Input::Tick => f.write_str("tick"),
        }
    }
}

/// The final power step a guest kernel attempted (ACPI sleep registers or the
/// i8042 reset on x86, PSCI `SYSTEM_OFF` / `SYSTEM_RESET` / `SYSTEM_SUSPEND`
/// on arm64): the VMM control protocol's power-request kind.
pub use vmm_protocol::PowerRequestKind;

/// How the decision log spells a [`PowerRequestKind`] (the protocol's words).
#[derive(Serialize, Deserialize)]
#[serde(remote = "PowerRequestKind", rename_all = "snake_case")]
pub(crate) enum PowerRequestKindLogWord {
    Poweroff,
    Reboot,
    Suspend,
}

/// How a VM ended, as its VMM saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VmExitReason {
    /// The guest powered off (after an allowed request).
    Poweroff,
    /// The VM was reset (part of a restart).
    Reset,
    /// The VMM failed or the guest crashed.
    Crash,
    /// The VMM killed the VM (after `HardStopVm`).
    Killed,
}

impl fmt::Display for VmExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VmExitReason::Poweroff => "poweroff",
            VmExitReason::Reset => "reset",
            VmExitReason::Crash => "crash",
            VmExitReason::Killed => "killed",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape_is_flat_and_tagged() {
        let i = Input::GuestPowerRequest {
            guest: "android".into(),
            request_id: 7,
            kind: PowerRequestKind::Poweroff,
        };
        let s = serde_json::to_string(&i).expect("serializable");
        assert_eq!(
            s,
            r#"{"type":"guest_power_request","guest":"android","request_id":7,"kind":"poweroff"}"#
        );
        assert_eq!(serde_json::from_str::<Input>(&s).ok(), Some(i));
        assert_eq!(
            serde_json::to_string(&Input::VehicleInUse { in_use: true })
                .ok()
                .as_deref(),
            Some(r#"{"type":"vehicle_in_use","in_use":true}"#)
        );
        assert_eq!(
            serde_json::from_str::<Input>(r#"{"type":"tick"}"#).ok(),
            Some(Input::Tick)
        );
    }

    #[test]
    fn malformed_json_is_an_error() {
        assert!(serde_json::from_str::<Input>(r#"{"type":"launch_missiles"}"#).is_err());
        assert!(serde_json::from_str::<Input>(r#"{"type":"vm_started"}"#).is_err());
    }

    #[test]
    fn guest_accessor() {
        assert_eq!(Input::VmLost { guest: "x".into() }.guest(), Some("x"));
        assert_eq!(Input::Tick.guest(), None);
    }
}
