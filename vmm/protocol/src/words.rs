//! The protocol's vocabularies: decisions, VM states and power-request
//! kinds, each a closed set of words.

use std::fmt;
use std::str::FromStr;

use crate::error::{quote, ParseError};

/// Defines a `Copy` enum whose values are written as one word each, with
/// `ALL`, `word()`, `Display` and `FromStr`.
macro_rules! word_enum {
    (
        $(#[$meta:meta])*
        $name:ident, $what:literal {
            $($(#[$vmeta:meta])* $variant:ident => $word:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];
            /// Every wire word, in declaration order.
            pub const WORDS: &'static [&'static str] = &[$($word,)+];

            /// The value's wire word.
            pub const fn word(self) -> &'static str {
                match self {
                    $($name::$variant => $word,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.word())
            }
        }

        impl FromStr for $name {
            type Err = ParseError;

            fn from_str(s: &str) -> Result<Self, ParseError> {
                Self::ALL
                    .iter()
                    .copied()
                    .find(|v| v.word() == s)
                    .ok_or_else(|| ParseError::UnknownWord {
                        what: $what,
                        word: quote(s),
                        expected: Self::WORDS,
                    })
            }
        }
    };
}

word_enum! {
    /// The arbiter's answer to a held power request (`decide ID DECISION`).
    /// What each does per request kind is tabled in `docs/vmm-control.md`.
    Decision, "decision" {
        /// Carry out what the guest asked: a power-off ends the VMM, a
        /// reboot restarts the VM, a suspend keeps it asleep until `resume`.
        Allow => "allow",
        /// Restart the VM (boot it again in the same VMM), whatever it asked.
        RestartVm => "restart",
        /// Keep the VM paused at its power step, presented as
        /// `virtually-off`: the guest believes it is off; `resume` boots it
        /// again (a held suspend: wakes it).
        HoldVirtuallyOff => "hold",
        /// Do not carry out the request; the guest's step fails or a
        /// suspend wakes at once.
        Refuse => "refuse",
    }
}

word_enum! {
    /// The VM's state as the control plane presents it (`event state S`,
    /// `status`).
    VmState, "state" {
        /// The guest runs.
        Running => "running",
        /// Paused by `pause`.
        Paused => "paused",
        /// Paused after a held power request: the guest believes it is off.
        VirtuallyOff => "virtually-off",
        /// Paused inside the guest's suspend entry, waiting for a wake-up.
        Suspended => "suspended",
    }
}

word_enum! {
    /// The final power step a guest took (`event power-request ... kind=K`):
    /// ACPI S5/S3, the reset register or an i8042 reset on x86; PSCI
    /// `SYSTEM_OFF`/`SYSTEM_RESET`/`SYSTEM_SUSPEND` on arm64. A VMM keeps at
    /// most one request of each kind pending (a repeated one is coalesced)
    /// and publishes them rate-limited (docs/vmm-control.md); a triple
    /// fault is a crash, not a request.
    PowerRequestKind, "power request kind" {
        /// Power off (ACPI S5, PSCI `SYSTEM_OFF`).
        Poweroff => "poweroff",
        /// Reboot (reset register, i8042, PSCI `SYSTEM_RESET`).
        Reboot => "reboot",
        /// Suspend to RAM (ACPI S3, PSCI `SYSTEM_SUSPEND`).
        Suspend => "suspend",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip_and_unknown_words_say_what_is_known() {
        for d in Decision::ALL {
            assert_eq!(d.word().parse::<Decision>(), Ok(*d));
        }
        assert_eq!("hold".parse(), Ok(Decision::HoldVirtuallyOff));
        assert_eq!("virtually-off".parse(), Ok(VmState::VirtuallyOff));
        assert_eq!("suspend".parse(), Ok(PowerRequestKind::Suspend));
        assert_eq!(
            "maybe".parse::<Decision>().unwrap_err().to_string(),
            "unknown decision 'maybe' (allow, restart, hold or refuse)"
        );
        assert!("Running".parse::<VmState>().is_err());
        assert!("".parse::<PowerRequestKind>().is_err());
    }
}
