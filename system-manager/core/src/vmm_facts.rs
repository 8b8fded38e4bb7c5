//! What a guest's VMM link reports, turned into decisions: how a VM ended
//! (which [`Input`] the arbiter gets), and what to repair on a VMM after a
//! restart of the daemon.
//!
//! The daemon only observes (a process exit status, a closed connection, a
//! state word) and carries out; the meaning of those observations is here,
//! where the tests reach it.
//!
//! | what the link saw | input |
//! |---|---|
//! | exit status known, code 0 ([`VmmExitCode::PoweroffOrStop`]), `allow` sent and no `stop` | `VmExited(poweroff)` |
//! | exit status known, code 0 otherwise | `VmExited(killed)` |
//! | exit status known, code 32 ([`VmmExitCode::Reset`]) | `VmExited(reset)` |
//! | exit status known, a signal after `stop` | `VmExited(killed)` |
//! | exit status known, anything else (33 [`VmmExitCode::Crash`], 1 a set-up failure, a signal nobody asked for) | `VmExited(crash)` |
//! | no exit status, `stop` sent | `VmExited(killed)` |
//! | no exit status, `allow` sent | `VmExited(poweroff)` |
//! | no exit status, nothing asked | `VmLost` |
//! | start failed: the launch created no process | `VmExited(crash)` |
//! | start failed: the launched process ended before it answered | `VmExited(crash)` |
//! | start failed: nothing answered and no process ended | `VmLost` |
//!
//! "No exit status" means the daemon does not know how the VMM ended: it
//! did not launch that VMM process (an earlier daemon did, or someone
//! else), or the process did not end in time. Such a VMM may still run, so
//! it is never called a crash.

use vmm_protocol::{VmState, VmmExitCode};

use crate::input::{Input, VmExitReason};
use crate::state::{GuestState, Hold};

/// How a VMM process ended, as `waitpid` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VmmExit {
    /// The exit code, if it exited.
    pub code: Option<i32>,
    /// The signal, if one killed it.
    pub signal: Option<i32>,
}

/// What the daemon asked of a guest's VMM process since it started it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct VmmAsked {
    /// An `allow` decision was sent (the guest may power off).
    pub allowed: bool,
    /// `stop` was sent (a hard stop; followed by `SIGKILL` if need be).
    pub stop_sent: bool,
}

/// Why a VMM could not be started and attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StartFailure {
    /// The launch command could not be run: no process exists.
    LaunchFailed,
    /// The launched VMM process ended before its control socket answered.
    Exited(VmmExit),
    /// No VMM answered on the control socket in time and no launched
    /// process ended: there is no launch command (someone else starts the
    /// VMM) or the launched process still runs without answering.
    NoAnswer,
}

/// The input for a guest whose VMM went away: its control connection
/// closed (`exit` is the status of the process, when this daemon launched
/// it and it ended), or, at the daemon's start, nothing answered on its
/// control socket (`exit` is `None`). `asked` is what the daemon asked of
/// that VMM process.
pub fn vm_gone_input(guest: &str, exit: Option<VmmExit>, asked: VmmAsked) -> Input {
    let guest = guest.to_string();
    let code = exit.and_then(|e| e.code).and_then(VmmExitCode::from_code);
    let reason = match exit {
        Some(_) if code == Some(VmmExitCode::PoweroffOrStop) => {
            if asked.allowed && !asked.stop_sent {
                VmExitReason::Poweroff
            } else {
                VmExitReason::Killed
            }
        }
        Some(_) if code == Some(VmmExitCode::Reset) => VmExitReason::Reset,
        Some(VmmExit {
            signal: Some(_), ..
        }) if asked.stop_sent => VmExitReason::Killed,
        // 33 (the VM crashed), 1 (the VMM's set-up failed), another code,
        // or a signal nobody asked for.
        Some(_) => VmExitReason::Crash,
        None if asked.stop_sent => VmExitReason::Killed,
        None if asked.allowed => VmExitReason::Poweroff,
        None => return Input::VmLost { guest },
    };
    Input::VmExited { guest, reason }
}

/// The input for a guest whose VMM could not be started: a crash when no
/// VMM can be running (the launch failed, or the process ended), a lost
/// VMM when one may still be there.
pub fn start_failed_input(guest: &str, failure: StartFailure) -> Input {
    let guest = guest.to_string();
    match failure {
        StartFailure::LaunchFailed | StartFailure::Exited(_) => Input::VmExited {
            guest,
            reason: VmExitReason::Crash,
        },
        StartFailure::NoAnswer => Input::VmLost { guest },
    }
}

/// A command that brings a VMM back in line with the arbiter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Repair {
    /// `pause`.
    Pause,
    /// `resume`.
    Resume,
    /// `stop` (and a kill if it does not end).
    Stop,
}

/// What to send a VMM the first time it reports its state (`vmm`) after an
/// attach: a `pause`, `resume` or `stop` that was logged but not delivered
/// before the daemon died. The arbiter's view wins over the VMM's.
///
/// Decisions on power requests are not repaired here: the VMM publishes
/// its pending requests again on attach and the logged decision is sent
/// again for each. So a guest held virtually off by a `hold`, or asleep
/// after an allowed suspend, is left to that, and so is a restarting guest
/// (its VMM carries out the re-sent restart).
///
/// Also called when `StartVm` attaches to a VMM that is still there (its
/// control connection had closed, `VmLost`): a parked VMM of a starting
/// guest is resumed, else it would never report a start.
pub fn repair_after_attach(guest: GuestState, vmm: VmState) -> Option<Repair> {
    // Paused, virtually off or suspended: the vCPUs are parked.
    let parked = vmm != VmState::Running;
    match guest {
        GuestState::VirtuallyOff { hold: Hold::Paused } if vmm == VmState::Running => {
            Some(Repair::Pause)
        }
        // Starting: the arbiter wants it running, and a parked VMM (one that
        // outlived its lost control connection) reports no start by itself.
        GuestState::Starting
        | GuestState::Running
        | GuestState::Preparing { .. }
        | GuestState::ShutdownStarted { .. }
            if parked =>
        {
            Some(Repair::Resume)
        }
        GuestState::Stopping { .. } => Some(Repair::Stop),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::state::{FinalStep, ShutdownOrigin};
    use crate::time::Millis;
    use crate::vhal::ShutdownParam;

    const SIGKILL: i32 = 9;
    const STOP: i32 = VmmExitCode::PoweroffOrStop.code() as i32;
    const RESET: i32 = VmmExitCode::Reset.code() as i32;
    const CRASH: i32 = VmmExitCode::Crash.code() as i32;

    fn exited(code: i32) -> Option<VmmExit> {
        Some(VmmExit {
            code: Some(code),
            signal: None,
        })
    }

    fn killed_by(signal: i32) -> Option<VmmExit> {
        Some(VmmExit {
            code: None,
            signal: Some(signal),
        })
    }

    fn reason(input: Input) -> Option<VmExitReason> {
        match input {
            Input::VmExited { guest, reason } => {
                assert_eq!(guest, "g");
                Some(reason)
            }
            Input::VmLost { guest } => {
                assert_eq!(guest, "g");
                None
            }
            other => panic!("not a VM end: {other:?}"),
        }
    }

    const NOTHING: VmmAsked = VmmAsked {
        allowed: false,
        stop_sent: false,
    };
    const ALLOWED: VmmAsked = VmmAsked {
        allowed: true,
        stop_sent: false,
    };
    const STOPPED: VmmAsked = VmmAsked {
        allowed: false,
        stop_sent: true,
    };

    #[test]
    fn the_vmm_exit_codes_are_classified() {
        use VmExitReason::*;
        let cases = [
            (exited(STOP), ALLOWED, Some(Poweroff)),
            (exited(STOP), NOTHING, Some(Killed)),
            (exited(STOP), STOPPED, Some(Killed)),
            (exited(RESET), NOTHING, Some(Reset)),
            (exited(RESET), STOPPED, Some(Reset)),
            (exited(CRASH), NOTHING, Some(Crash)),
            (exited(CRASH), ALLOWED, Some(Crash)),
            (exited(1), NOTHING, Some(Crash)),
            (killed_by(SIGKILL), STOPPED, Some(Killed)),
            (killed_by(SIGKILL), NOTHING, Some(Crash)),
            (killed_by(SIGKILL), ALLOWED, Some(Crash)),
            (None, STOPPED, Some(Killed)),
            (None, ALLOWED, Some(Poweroff)),
            (None, NOTHING, None),
        ];
        for (exit, asked, want) in cases {
            assert_eq!(
                reason(vm_gone_input("g", exit, asked)),
                want,
                "{exit:?} {asked:?}"
            );
        }
    }

    #[test]
    fn a_failed_start_is_a_crash_only_when_no_vmm_can_be_running() {
        assert_eq!(
            reason(start_failed_input("g", StartFailure::LaunchFailed)),
            Some(VmExitReason::Crash)
        );
        for exit in [exited(STOP), exited(CRASH), killed_by(SIGKILL)]
            .into_iter()
            .flatten()
        {
            assert_eq!(
                reason(start_failed_input("g", StartFailure::Exited(exit))),
                Some(VmExitReason::Crash)
            );
        }
        assert_eq!(
            reason(start_failed_input("g", StartFailure::NoAnswer)),
            None
        );
    }

    fn any_exit() -> impl Strategy<Value = Option<VmmExit>> {
        let code = prop_oneof![Just(STOP), Just(RESET), Just(CRASH), Just(1), any::<i32>()];
        prop_oneof![
            Just(None),
            code.prop_map(exited),
            (1i32..65).prop_map(killed_by),
        ]
    }

    fn any_asked() -> impl Strategy<Value = VmmAsked> {
        (any::<bool>(), any::<bool>())
            .prop_map(|(allowed, stop_sent)| VmmAsked { allowed, stop_sent })
    }

    proptest! {
        /// The classification never invents what it does not know.
        #[test]
        fn vm_end_classification_properties(exit in any_exit(), asked in any_asked()) {
            let r = reason(vm_gone_input("g", exit, asked));
            // A poweroff needs an `allow` and no `stop`.
            if r == Some(VmExitReason::Poweroff) {
                prop_assert!(asked.allowed && !asked.stop_sent);
            }
            // A crash needs a known exit status that is not a requested stop.
            if r == Some(VmExitReason::Crash) {
                prop_assert!(exit.is_some());
                prop_assert_ne!(exit.and_then(|e| e.code), Some(STOP));
            }
            // A reset is exactly the VMM's reset code.
            prop_assert_eq!(
                r == Some(VmExitReason::Reset),
                exit.and_then(|e| e.code) == Some(RESET)
            );
            // Lost only when nothing is known and nothing was asked.
            prop_assert_eq!(r.is_none(), exit.is_none() && asked == VmmAsked::default());
            // After a `stop`, an end without a status, code 0 or a signal
            // is the kill that was asked for.
            if asked.stop_sent
                && exit.is_none_or(|e| e.code == Some(STOP) || e.signal.is_some())
            {
                prop_assert_eq!(r, Some(VmExitReason::Killed));
            }
        }
    }

    fn any_guest_state() -> impl Strategy<Value = GuestState> {
        let millis = (0u64..1_000_000).prop_map(Millis);
        let param = prop_oneof![
            Just(ShutdownParam::ShutdownImmediately),
            Just(ShutdownParam::CanSleep),
            Just(ShutdownParam::ShutdownOnly),
        ];
        let step = prop_oneof![
            Just(FinalStep::Shutdown),
            Just(FinalStep::DeepSleep),
            Just(FinalStep::Hibernation),
        ];
        let origin = prop_oneof![
            Just(ShutdownOrigin::Commanded),
            Just(ShutdownOrigin::Own),
            Just(ShutdownOrigin::Cancelled),
        ];
        let hold = prop_oneof![
            Just(Hold::Poweroff),
            Just(Hold::Suspended),
            Just(Hold::Paused),
        ];
        prop_oneof![
            Just(GuestState::Off),
            Just(GuestState::Starting),
            Just(GuestState::Running),
            (param, millis.clone(), 0u32..10).prop_map(|(param, watchdog, postpones)| {
                GuestState::Preparing {
                    param,
                    watchdog,
                    postpones,
                }
            }),
            (step, origin, proptest::option::of(millis.clone())).prop_map(
                |(step, origin, deadline)| GuestState::ShutdownStarted {
                    step,
                    origin,
                    deadline,
                }
            ),
            hold.prop_map(|hold| GuestState::VirtuallyOff { hold }),
            (proptest::option::of(millis), any::<bool>())
                .prop_map(|(grace, restart)| GuestState::Stopping { grace, restart }),
            Just(GuestState::Restarting),
        ]
    }

    fn any_vmm_state() -> impl Strategy<Value = VmState> {
        proptest::sample::select(VmState::ALL)
    }

    #[test]
    fn undelivered_commands_are_repaired() {
        let paused = GuestState::VirtuallyOff { hold: Hold::Paused };
        let stopping = GuestState::Stopping {
            grace: Some(Millis(5)),
            restart: false,
        };
        let cases = [
            (paused, VmState::Running, Some(Repair::Pause)),
            (paused, VmState::Paused, None),
            (GuestState::Running, VmState::Paused, Some(Repair::Resume)),
            (
                GuestState::Running,
                VmState::VirtuallyOff,
                Some(Repair::Resume),
            ),
            (
                GuestState::Running,
                VmState::Suspended,
                Some(Repair::Resume),
            ),
            (GuestState::Running, VmState::Running, None),
            (stopping, VmState::Running, Some(Repair::Stop)),
            (stopping, VmState::Paused, Some(Repair::Stop)),
            // Left to the re-sent decision of the pending request.
            (
                GuestState::VirtuallyOff {
                    hold: Hold::Poweroff,
                },
                VmState::Running,
                None,
            ),
            // A VMM kept through a lost connection, attached again by the
            // next StartVm: the arbiter wants it running.
            (GuestState::Starting, VmState::Paused, Some(Repair::Resume)),
            (
                GuestState::Starting,
                VmState::VirtuallyOff,
                Some(Repair::Resume),
            ),
            (
                GuestState::Starting,
                VmState::Suspended,
                Some(Repair::Resume),
            ),
            (GuestState::Starting, VmState::Running, None),
            (GuestState::Restarting, VmState::VirtuallyOff, None),
            (GuestState::Off, VmState::Running, None),
        ];
        for (guest, vmm, want) in cases {
            assert_eq!(repair_after_attach(guest, vmm), want, "{guest:?} {vmm:?}");
        }
    }

    proptest! {
        /// A repair only moves the VMM towards the arbiter's view, and once
        /// carried out there is nothing left to repair (but a stop, which
        /// stays due until the VM is gone).
        #[test]
        fn repairs_agree_with_the_arbiter(guest in any_guest_state(), vmm in any_vmm_state()) {
            let repair = repair_after_attach(guest, vmm);
            let stopping = matches!(guest, GuestState::Stopping { .. });
            match repair {
                Some(Repair::Stop) => prop_assert!(stopping),
                Some(Repair::Pause) => {
                    prop_assert_eq!(guest, GuestState::VirtuallyOff { hold: Hold::Paused });
                    prop_assert_eq!(
                        repair_after_attach(guest, VmState::Paused),
                        None
                    );
                }
                Some(Repair::Resume) => {
                    prop_assert!(guest.is_live());
                    prop_assert_ne!(vmm, VmState::Running);
                    prop_assert_eq!(
                        repair_after_attach(guest, VmState::Running),
                        None
                    );
                }
                None => {
                    prop_assert!(!stopping);
                    // Nothing is missed: a VMM parked where the arbiter
                    // wants it running, or running where it has it paused,
                    // is repaired.
                    let wants_running = matches!(
                        guest,
                        GuestState::Starting
                            | GuestState::Running
                            | GuestState::Preparing { .. }
                            | GuestState::ShutdownStarted { .. }
                    );
                    prop_assert!(
                        !(wants_running && vmm != VmState::Running),
                        "{:?} left {:?}", guest, vmm
                    );
                    let paused = guest == GuestState::VirtuallyOff { hold: Hold::Paused };
                    prop_assert!(!(paused && vmm == VmState::Running));
                }
            }
        }
    }
}
