//! The system-manager's arbiter core.
//!
//! In a car the MCU used to own the system power state. Here the hypervisor
//! is the central decision point while every guest still believes it is in
//! charge: the Android guest gets the normal VHAL power handshake
//! (`AP_POWER_STATE_REQ` / `AP_POWER_STATE_REPORT`) from us instead of from the
//! vehicle, and its kernel's final power step (trapped and held by its VMM)
//! becomes a *request* that we allow, hold as "virtually off", turn into a VM
//! restart, or refuse. The safety-critical cluster stays up while the vehicle
//! is in use, whatever Android decided.
//!
//! This crate is only the decision logic: a pure state machine with no I/O,
//! threads or clocks. [`Arbiter::handle`] takes the time and one [`Input`] and
//! returns [`Output`] commands; timers are data ([`Output::SetTimer`] out,
//! [`Input::Tick`] in). The daemon around it (`sysmgr`) talks to the VMM
//! control sockets, the MCU and Android, and persists the decision log
//! ([`LogRecord`]) from which [`Arbiter::replay`] rebuilds the state.
//! What the daemon's observations of a VMM mean (how a VM ended, what to
//! repair after a restart) is decided here too: [`vm_gone_input`],
//! [`start_failed_input`], [`repair_after_attach`].
//!
//! ```
//! use system_manager::{Arbiter, Input, Millis, Output, Policy};
//!
//! let policy = Policy::from_toml_str(
//!     "[[guest]]\nname = \"android\"\nrole = \"android\"\n",
//! )?;
//! let mut arbiter = Arbiter::new(policy);
//! let out = arbiter.handle(Millis(0), Input::IgnitionOn);
//! assert!(matches!(&out[0], Output::SystemOn { .. }));
//! assert!(matches!(&out[1], Output::StartVm { guest, .. } if guest == "android"));
//! # Ok::<(), system_manager::PolicyError>(())
//! ```
//!
//! The full specification (states, transitions, handshake mapping, policy
//! and log formats) is `docs/system-manager.md`.

mod arbiter;
mod input;
mod log;
mod output;
mod policy;
mod state;
#[doc(hidden)]
pub mod testing;
mod time;
pub mod vhal;
mod vmm_facts;

pub use arbiter::{Arbiter, ArbiterSnapshot, SnapshotError, Stepped};
pub use input::{Input, PowerRequestKind, VmExitReason};
pub use log::{LogError, LogRecord, LoggedInput};
pub use output::{Decision, Output};
pub use policy::{
    AndroidChannel, GuestPolicy, Location, Policy, PolicyError, Role, ShutdownKind, SystemPolicy,
    VmmLink, VmmUser, DEFAULT_BINDER_PORT, DEFAULT_FINAL_GRACE_MS, DEFAULT_GARAGE_MODE_MAX_MS,
    DEFAULT_GUEST_DEADLINE_MS, DEFAULT_POSTPONE_WATCHDOG_MS, DEFAULT_POWEROFF_HOLD_MS,
    DEFAULT_SHUTDOWN_DEADLINE_MS, DEFAULT_VHAL_PORT, DEFAULT_VM_EXIT_GRACE_MS,
    DEFAULT_WAKE_HOLD_MS,
};
pub use state::{FinalStep, GuestState, GuestStatus, Hold, ShutdownOrigin, SystemState};
pub use time::Millis;
pub use vhal::{ApPowerStateReport, ApPowerStateReq, ShutdownParam, WakeReason};
pub use vmm_facts::{
    repair_after_attach, start_failed_input, vm_gone_input, Repair, StartFailure, VmmAsked, VmmExit,
};
