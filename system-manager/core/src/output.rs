//! What the arbiter tells the shell: commands for a guest's Android side, for
//! a VMM and for the MCU, the next timer, and log-only notes. Every output
//! carries a human-readable `reason`, so the decision log explains itself.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::time::Millis;
use crate::vhal::ApPowerStateReq;

/// The arbiter's answer to a held [`crate::Input::GuestPowerRequest`]: the
/// VMM control protocol's decision, sent to the VMM as `decide ID WORD`.
///
/// - `Allow`: carry out what the guest asked: a power-off ends the VM, a
///   suspend lets the VM sleep until `ResumeVm`, a reboot resets it.
/// - `RestartVm`: reset the VM and boot it again, whatever it asked.
/// - `HoldVirtuallyOff`: keep the VM paused at its power step: the guest
///   believes it is off, the real system stays on. A later `ResumeVm` brings
///   it back (see [`Output::ResumeVm`] for what that means after a power-off).
/// - `Refuse`: make the power step fail; the guest keeps running.
pub use vmm_protocol::Decision;

/// How the decision log spells a [`Decision`] (`restart_vm`,
/// `hold_virtually_off`: the log's names predate the protocol crate and
/// stay, so old logs replay).
#[derive(Serialize, Deserialize)]
#[serde(remote = "Decision", rename_all = "snake_case")]
pub(crate) enum DecisionLogWord {
    Allow,
    RestartVm,
    HoldVirtuallyOff,
    Refuse,
}

/// A decision as the log's explanations write it.
fn describe(decision: Decision) -> &'static str {
    match decision {
        Decision::Allow => "allow",
        Decision::RestartVm => "restart VM",
        Decision::HoldVirtuallyOff => "hold virtually off",
        Decision::Refuse => "refuse",
    }
}

/// One output of [`crate::Arbiter::handle`]. The shell executes commands in
/// the order given.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Output {
    /// Set the guest's `AP_POWER_STATE_REQ` (the VHAL property is state: a
    /// guest that is not listening yet reads it when it connects).
    ApPowerStateReq {
        /// The guest's policy name.
        guest: String,
        /// The value to set.
        state: ApPowerStateReq,
        /// Why.
        reason: String,
    },
    /// Answer the guest's held power request `request_id`.
    Decide {
        /// The guest's policy name.
        guest: String,
        /// The id from the request.
        request_id: u64,
        /// The answer.
        #[serde(with = "DecisionLogWord")]
        decision: Decision,
        /// Why.
        reason: String,
    },
    /// Pause the VM (stop its vCPUs; memory and devices kept).
    PauseVm {
        /// The guest's policy name.
        guest: String,
        /// Why.
        reason: String,
    },
    /// Resume a paused or held VM. For a VM held at a suspend this is a wake
    /// (the guest kernel resumes); for a VM held at a power-off the guest OS
    /// has already shut itself down, so the VMM resets it and it boots again.
    ResumeVm {
        /// The guest's policy name.
        guest: String,
        /// Why.
        reason: String,
    },
    /// Kill the VM now, without the guest's consent.
    HardStopVm {
        /// The guest's policy name.
        guest: String,
        /// Why.
        reason: String,
    },
    /// Start the VM (launch its VMM, or cold-boot it).
    StartVm {
        /// The guest's policy name.
        guest: String,
        /// Why.
        reason: String,
    },
    /// Tell the MCU the system may be powered off now.
    SystemPowerOff {
        /// Wake-up time Android asked for with `SHUTDOWN_START`, in seconds.
        wake_after_s: Option<u32>,
        /// Why.
        reason: String,
    },
    /// Tell the MCU the system suspends to RAM now.
    SystemSuspend {
        /// Wake-up time Android asked for with `DEEP_SLEEP_ENTRY`, in seconds.
        wake_after_s: Option<u32>,
        /// Why.
        reason: String,
    },
    /// Tell the MCU the system is (again) on.
    SystemOn {
        /// Why.
        reason: String,
    },
    /// Send a `Tick` at or after `at`. Replaces any earlier timer; an earlier
    /// or extra `Tick` is harmless.
    SetTimer {
        /// When.
        at: Millis,
        /// What is due then.
        reason: String,
    },
    /// Log only: the input was invalid (unknown guest, undefined VHAL value,
    /// impossible in the guest's state) and changed nothing.
    Rejected {
        /// What was wrong.
        reason: String,
    },
    /// Log only: what the arbiter concluded without a command (a state
    /// change, an input with no effect).
    Note {
        /// What happened.
        reason: String,
    },
}

impl Output {
    /// The reason text every output carries.
    pub fn reason(&self) -> &str {
        match self {
            Output::ApPowerStateReq { reason, .. }
            | Output::Decide { reason, .. }
            | Output::PauseVm { reason, .. }
            | Output::ResumeVm { reason, .. }
            | Output::HardStopVm { reason, .. }
            | Output::StartVm { reason, .. }
            | Output::SystemPowerOff { reason, .. }
            | Output::SystemSuspend { reason, .. }
            | Output::SystemOn { reason }
            | Output::SetTimer { reason, .. }
            | Output::Rejected { reason }
            | Output::Note { reason } => reason,
        }
    }

    /// The guest the output is addressed to, if any.
    pub fn guest(&self) -> Option<&str> {
        match self {
            Output::ApPowerStateReq { guest, .. }
            | Output::Decide { guest, .. }
            | Output::PauseVm { guest, .. }
            | Output::ResumeVm { guest, .. }
            | Output::HardStopVm { guest, .. }
            | Output::StartVm { guest, .. } => Some(guest),
            _ => None,
        }
    }

    /// Whether the output is only for the log (no command for the shell).
    pub fn is_log_only(&self) -> bool {
        matches!(self, Output::Rejected { .. } | Output::Note { .. })
    }

    /// Whether carrying the output out leaves everything as it was: a
    /// log-only output, or the refusal of a guest's power request (the VMM
    /// makes the guest's power step fail and the guest runs on). An input
    /// whose outputs all change nothing and that leaves the arbiter's state
    /// alone is idle ([`crate::Arbiter::step_unless_idle`]).
    pub fn changes_nothing(&self) -> bool {
        self.is_log_only()
            || matches!(
                self,
                Output::Decide {
                    decision: Decision::Refuse,
                    ..
                }
            )
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Output::ApPowerStateReq {
                guest,
                state,
                reason,
            } => {
                write!(f, "{guest}: AP_POWER_STATE_REQ {state} ({reason})")
            }
            Output::Decide {
                guest,
                request_id,
                decision,
                reason,
            } => write!(
                f,
                "{guest}: request {request_id}: {} ({reason})",
                describe(*decision)
            ),
            Output::PauseVm { guest, reason } => write!(f, "{guest}: pause VM ({reason})"),
            Output::ResumeVm { guest, reason } => write!(f, "{guest}: resume VM ({reason})"),
            Output::HardStopVm { guest, reason } => write!(f, "{guest}: hard stop ({reason})"),
            Output::StartVm { guest, reason } => write!(f, "{guest}: start VM ({reason})"),
            Output::SystemPowerOff { reason, .. } => write!(f, "MCU: power off ({reason})"),
            Output::SystemSuspend { reason, .. } => write!(f, "MCU: suspend ({reason})"),
            Output::SystemOn { reason } => write!(f, "MCU: on ({reason})"),
            Output::SetTimer { at, reason } => write!(f, "timer {at} ({reason})"),
            Output::Rejected { reason } => write!(f, "rejected: {reason}"),
            Output::Note { reason } => write!(f, "note: {reason}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vhal::ShutdownParam;

    #[test]
    fn json_shape() {
        let o = Output::ApPowerStateReq {
            guest: "android".into(),
            state: ApPowerStateReq::ShutdownPrepare(ShutdownParam::ShutdownOnly),
            reason: "ignition off".into(),
        };
        let s = serde_json::to_string(&o).expect("serializable");
        assert_eq!(
            s,
            r#"{"cmd":"ap_power_state_req","guest":"android","state":{"SHUTDOWN_PREPARE":"SHUTDOWN_ONLY"},"reason":"ignition off"}"#
        );
        assert_eq!(serde_json::from_str::<Output>(&s).ok(), Some(o));
        let d = Output::Decide {
            guest: "a".into(),
            request_id: 3,
            decision: Decision::HoldVirtuallyOff,
            reason: "r".into(),
        };
        let s = serde_json::to_string(&d).expect("serializable");
        assert!(s.contains(r#""decision":"hold_virtually_off""#), "{s}");
    }

    #[test]
    fn accessors() {
        let o = Output::HardStopVm {
            guest: "g".into(),
            reason: "late".into(),
        };
        assert_eq!(
            (o.guest(), o.reason(), o.is_log_only()),
            (Some("g"), "late", false)
        );
        let n = Output::Note { reason: "x".into() };
        assert_eq!((n.guest(), n.is_log_only()), (None, true));
        assert_eq!(o.to_string(), "g: hard stop (late)");
    }
}
