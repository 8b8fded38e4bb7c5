//! How a VMM process ends: its exit reason (the last stderr line) and its
//! exit code.

use std::fmt;
use std::str::FromStr;

use crate::error::{quote, ParseError};

/// The VMM's process exit codes, following crosvm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VmmExitCode {
    /// 0: the guest powered off, or `stop` ended the VMM.
    PoweroffOrStop,
    /// 1: bad arguments or a set-up failure before the guest ran.
    SetupFailed,
    /// 32: the guest asked for a reset; a launcher starts the VMM again.
    Reset,
    /// 33: the VM crashed (a vCPU failed).
    Crash,
}

impl VmmExitCode {
    /// Every exit code.
    pub const ALL: [VmmExitCode; 4] = [
        VmmExitCode::PoweroffOrStop,
        VmmExitCode::SetupFailed,
        VmmExitCode::Reset,
        VmmExitCode::Crash,
    ];

    /// The process exit code.
    pub const fn code(self) -> u8 {
        match self {
            VmmExitCode::PoweroffOrStop => 0,
            VmmExitCode::SetupFailed => 1,
            VmmExitCode::Reset => 32,
            VmmExitCode::Crash => 33,
        }
    }

    /// What a process exit code means, if it is one of the VMM's.
    pub fn from_code(code: i32) -> Option<Self> {
        Self::ALL.into_iter().find(|c| i32::from(c.code()) == code)
    }
}

/// Why the VMM ended (`vmm: exit reason: R` on stderr); decides the exit
/// code.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ExitReason {
    /// `poweroff`: the guest powered off.
    Poweroff,
    /// `reboot`: the guest asked for a reset; the launcher may start it again.
    Reboot,
    /// `stopped`: stopped through the control socket.
    Stopped,
    /// `crash (WHY)`: a vCPU failed.
    Crash(String),
}

impl ExitReason {
    /// The process exit code for this reason.
    pub fn exit_code(&self) -> VmmExitCode {
        match self {
            ExitReason::Poweroff | ExitReason::Stopped => VmmExitCode::PoweroffOrStop,
            ExitReason::Reboot => VmmExitCode::Reset,
            ExitReason::Crash(_) => VmmExitCode::Crash,
        }
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::Poweroff => f.write_str("poweroff"),
            ExitReason::Reboot => f.write_str("reboot"),
            ExitReason::Stopped => f.write_str("stopped"),
            ExitReason::Crash(why) => write!(f, "crash ({why})"),
        }
    }
}

impl FromStr for ExitReason {
    type Err = ParseError;

    /// Parses an exit reason (what follows `vmm: exit reason: `).
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let s = s.trim();
        match s {
            "poweroff" => Ok(ExitReason::Poweroff),
            "reboot" => Ok(ExitReason::Reboot),
            "stopped" => Ok(ExitReason::Stopped),
            _ => s
                .strip_prefix("crash (")
                .and_then(|rest| rest.strip_suffix(')'))
                .map(|why| ExitReason::Crash(why.to_string()))
                .ok_or_else(|| ParseError::UnknownExitReason(quote(s))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_crosvm() {
        assert_eq!(ExitReason::Poweroff.exit_code().code(), 0);
        assert_eq!(ExitReason::Stopped.exit_code().code(), 0);
        assert_eq!(ExitReason::Reboot.exit_code().code(), 32);
        assert_eq!(ExitReason::Crash("x".into()).exit_code().code(), 33);
        assert_eq!(VmmExitCode::from_code(32), Some(VmmExitCode::Reset));
        assert_eq!(VmmExitCode::from_code(1), Some(VmmExitCode::SetupFailed));
        assert_eq!(VmmExitCode::from_code(2), None);
        assert_eq!(VmmExitCode::from_code(-1), None);
    }

    #[test]
    fn exit_reasons_parse_and_format() {
        let crash = ExitReason::Crash("vcpu0: triple fault (x)".into());
        assert_eq!(crash.to_string(), "crash (vcpu0: triple fault (x))");
        assert_eq!(crash.to_string().parse(), Ok(crash));
        assert_eq!("reboot\n".parse(), Ok(ExitReason::Reboot));
        assert!("crash".parse::<ExitReason>().is_err());
        assert!("halted".parse::<ExitReason>().is_err());
    }
}
