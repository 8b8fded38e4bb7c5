//! The arbiter's state: the real system's power state and each guest's
//! virtual one. All of it is plain data (comparable, printable, serializable),
//! so a replayed log can be checked for equality.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::policy::{Role, ShutdownKind};
use crate::time::Millis;
use crate::vhal::{ApPowerStateReq, ShutdownParam};

/// The real system's power state (what the MCU sees).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum SystemState {
    /// Not running guests; waiting for ignition or a wake request. The
    /// arbiter starts here.
    Off,
    /// Up: the head unit is wanted (ignition on, or a wake request's hold).
    On,
    /// Going down after the head unit stopped being wanted: Android is in the
    /// handshake, other guests run until their deadlines, a needed cluster
    /// stays.
    ShutdownPrepare {
        /// How the system goes down at the end.
        kind: ShutdownKind,
        /// The global deadline: every guest but a needed cluster is off (or
        /// held, or paused) by then.
        deadline: Millis,
    },
    /// Woken only for garage mode: Android runs its maintenance inside a
    /// `SHUTDOWN_PREPARE` and the system goes down again by `deadline`.
    GarageMode {
        /// How the system goes down at the end.
        kind: ShutdownKind,
        /// `garage_mode_max_ms` after the wake.
        deadline: Millis,
    },
    /// Suspended to RAM (`SystemSuspend` sent).
    Suspended,
    /// Powering off (`SystemPowerOff` sent); the MCU removes power.
    PoweringOff,
}

impl SystemState {
    /// The shutdown's deadline, if a shutdown (or garage mode) is running.
    pub fn shutdown_deadline(&self) -> Option<Millis> {
        match self {
            SystemState::ShutdownPrepare { deadline, .. }
            | SystemState::GarageMode { deadline, .. } => Some(*deadline),
            _ => None,
        }
    }

    /// How a running shutdown ends, if one is running.
    pub fn shutdown_kind(&self) -> Option<ShutdownKind> {
        match self {
            SystemState::ShutdownPrepare { kind, .. } | SystemState::GarageMode { kind, .. } => {
                Some(*kind)
            }
            _ => None,
        }
    }

    /// Whether the real system is down or going down for good (off,
    /// suspended or powering off).
    pub fn is_down(&self) -> bool {
        matches!(
            self,
            SystemState::Off | SystemState::Suspended | SystemState::PoweringOff
        )
    }
}

impl fmt::Display for SystemState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SystemState::Off => f.write_str("off"),
            SystemState::On => f.write_str("on"),
            SystemState::ShutdownPrepare { kind, deadline } => {
                write!(f, "shutdown-prepare ({kind}, deadline {deadline})")
            }
            SystemState::GarageMode { kind, deadline } => {
                write!(f, "garage mode ({kind}, deadline {deadline})")
            }
            SystemState::Suspended => f.write_str("suspended"),
            SystemState::PoweringOff => f.write_str("powering off"),
        }
    }
}

/// Which final step an Android guest announced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinalStep {
    /// `SHUTDOWN_START`.
    Shutdown,
    /// `DEEP_SLEEP_ENTRY`.
    DeepSleep,
    /// `HIBERNATION_ENTRY`.
    Hibernation,
}

/// Who started an Android guest's shutdown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShutdownOrigin {
    /// The arbiter, with `SHUTDOWN_PREPARE`.
    Commanded,
    /// The guest itself, while the system was on (e.g. the user switched the
    /// head unit off).
    Own,
    /// It was under way when the system was switched on again; too late to
    /// cancel, so the final request restarts the VM (and if the request does
    /// not come by the deadline, a hard stop and a fresh start do).
    Cancelled,
}

/// Why a VM is virtually off (paused while the guest believes it is off or
/// asleep).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hold {
    /// Held at its power-off step (`HoldVirtuallyOff`).
    Poweroff,
    /// Asleep after an allowed suspend request.
    Suspended,
    /// Paused by the arbiter at its deadline in a suspend-kind shutdown.
    Paused,
}

/// A guest's virtual power state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum GuestState {
    /// No VM (never started, exited, or its VMM was lost).
    Off,
    /// `StartVm` sent; waiting for `VmStarted`.
    Starting,
    /// Running normally.
    Running,
    /// Android got `SHUTDOWN_PREPARE(param)`; it must postpone or start its
    /// shutdown before `watchdog`.
    Preparing {
        /// The parameter sent.
        param: ShutdownParam,
        /// When it is escalated if nothing happens.
        watchdog: Millis,
        /// Postponements granted so far.
        postpones: u32,
    },
    /// Android announced its final step; its power request is due.
    ShutdownStarted {
        /// Which step.
        step: FinalStep,
        /// Who started the shutdown.
        origin: ShutdownOrigin,
        /// When it is hard-stopped if the request does not come (`None` for
        /// a guest's own shutdown while the system is on, which is not timed).
        deadline: Option<Millis>,
    },
    /// Paused: the guest believes it is off or asleep.
    VirtuallyOff {
        /// Why.
        hold: Hold,
    },
    /// Power-off allowed or hard stop sent; waiting for the VMM's
    /// `VmExited` (or `VmLost`). Only that fact makes the VM off: a VMM
    /// process may still run, and its exit must not be taken for the exit
    /// of a VM started after it.
    Stopping {
        /// When the VMM's exit is overdue: then `HardStopVm` is sent (again)
        /// so the shell kills the VMM, and this becomes `None`. `None`: the
        /// kill is under way; no deadline of the arbiter's own is left, the
        /// shell reports the VMM gone in a bounded time (its `SIGKILL` and
        /// reap).
        grace: Option<Millis>,
        /// Start it again once it is off (the system came back on meanwhile).
        restart: bool,
    },
    /// `RestartVm` decided; waiting for `VmStarted`.
    Restarting,
}

impl GuestState {
    /// Whether the VM exists and runs (or is about to): the states in which a
    /// guest can still act and must be dealt with before the system goes down.
    pub fn is_live(&self) -> bool {
        matches!(
            self,
            GuestState::Starting
                | GuestState::Running
                | GuestState::Preparing { .. }
                | GuestState::ShutdownStarted { .. }
                | GuestState::Restarting
        )
    }

    /// Whether the guest is out of the way of a system shutdown (off, or
    /// paused while it believes it is off or asleep).
    pub fn is_done(&self) -> bool {
        matches!(self, GuestState::Off | GuestState::VirtuallyOff { .. })
    }
}

impl fmt::Display for GuestState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GuestState::Off => f.write_str("off"),
            GuestState::Starting => f.write_str("starting"),
            GuestState::Running => f.write_str("running"),
            GuestState::Preparing {
                param, watchdog, ..
            } => write!(f, "preparing ({param}, watchdog {watchdog})"),
            GuestState::ShutdownStarted { step, .. } => write!(f, "shutdown started ({step:?})"),
            GuestState::VirtuallyOff { hold } => write!(f, "virtually off ({hold:?})"),
            GuestState::Stopping { .. } => f.write_str("stopping"),
            GuestState::Restarting => f.write_str("restarting"),
        }
    }
}

/// One guest as the arbiter tracks it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestStatus {
    /// Policy name.
    pub name: String,
    /// Policy role.
    pub role: Role,
    /// Virtual power state.
    pub state: GuestState,
    /// In a shutdown: when a guest outside the VHAL handshake (cluster,
    /// other, or an Android guest that has not reached its handshake yet) is
    /// stopped (or paused) if still live. `None` outside a shutdown and for a
    /// cluster while it is needed.
    pub release_at: Option<Millis>,
    /// The last `AP_POWER_STATE_REQ` set for the guest (Android only).
    pub vhal_req: Option<ApPowerStateReq>,
}
