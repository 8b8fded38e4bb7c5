//! The Android Automotive power handshake (VHAL `AP_POWER_STATE_*`), as types.
//!
//! The arbiter plays the "vehicle master control unit" behind Android's normal
//! handshake: it *sends* [`ApPowerStateReq`] values and *receives*
//! [`ApPowerStateReport`] values. The numeric values are the VHAL's
//! (`android.hardware.automotive.vehicle`), so the daemon can put them on the
//! wire unchanged: both properties are `int32` vectors, `[0]` the value and
//! `[1]` the parameter.

use std::fmt;

use serde::{Deserialize, Serialize};

/// VHAL property id of `AP_POWER_STATE_REQ` (vehicle to Android).
pub const AP_POWER_STATE_REQ: i32 = 0x1141_0A00;
/// VHAL property id of `AP_POWER_STATE_REPORT` (Android to vehicle).
pub const AP_POWER_STATE_REPORT: i32 = 0x1141_0A01;
/// Longest postponement one `SHUTDOWN_POSTPONE` may ask for, in milliseconds.
pub const MAX_POSTPONE_MS: u64 = 5000;

/// A `AP_POWER_STATE_REPORT` value or boot reason the VHAL does not define.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VhalError {
    /// `AP_POWER_STATE_REPORT[0]` is not one of the VHAL's report values.
    #[error("unknown AP_POWER_STATE_REPORT value {0} (expected 1..=10)")]
    UnknownReport(i32),
    /// A boot/wake reason outside the VHAL's `VehicleApPowerBootupReason`.
    #[error("unknown wake reason {0} (expected 0..=3)")]
    UnknownWakeReason(i32),
}

/// The parameter of `AP_POWER_STATE_REQ` `SHUTDOWN_PREPARE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ShutdownParam {
    /// Shut down now; postponing is not allowed (1).
    ShutdownImmediately,
    /// Deep sleep allowed; postponing allowed (2).
    CanSleep,
    /// Shut down (no sleep); postponing allowed (3).
    ShutdownOnly,
    /// Deep sleep now; postponing is not allowed (4).
    SleepImmediately,
    /// Hibernate now; postponing is not allowed (5).
    HibernateImmediately,
    /// Hibernation allowed; postponing allowed (6).
    CanHibernate,
    /// Emergency shutdown (e.g. low battery); postponing is not allowed (7).
    EmergencyShutdown,
}

impl ShutdownParam {
    /// The VHAL's numeric value.
    pub const fn vhal(self) -> i32 {
        match self {
            ShutdownParam::ShutdownImmediately => 1,
            ShutdownParam::CanSleep => 2,
            ShutdownParam::ShutdownOnly => 3,
            ShutdownParam::SleepImmediately => 4,
            ShutdownParam::HibernateImmediately => 5,
            ShutdownParam::CanHibernate => 6,
            ShutdownParam::EmergencyShutdown => 7,
        }
    }

    /// The parameter with VHAL value `v`, if there is one.
    pub const fn from_vhal(v: i32) -> Option<Self> {
        Some(match v {
            1 => ShutdownParam::ShutdownImmediately,
            2 => ShutdownParam::CanSleep,
            3 => ShutdownParam::ShutdownOnly,
            4 => ShutdownParam::SleepImmediately,
            5 => ShutdownParam::HibernateImmediately,
            6 => ShutdownParam::CanHibernate,
            7 => ShutdownParam::EmergencyShutdown,
            _ => return None,
        })
    }

    /// Whether Android may answer with `SHUTDOWN_POSTPONE` (only for
    /// `CAN_SLEEP`, `SHUTDOWN_ONLY` and `CAN_HIBERNATE`).
    pub const fn can_postpone(self) -> bool {
        matches!(
            self,
            ShutdownParam::CanSleep | ShutdownParam::ShutdownOnly | ShutdownParam::CanHibernate
        )
    }

    /// The VHAL's name, e.g. `SHUTDOWN_ONLY`.
    pub const fn name(self) -> &'static str {
        match self {
            ShutdownParam::ShutdownImmediately => "SHUTDOWN_IMMEDIATELY",
            ShutdownParam::CanSleep => "CAN_SLEEP",
            ShutdownParam::ShutdownOnly => "SHUTDOWN_ONLY",
            ShutdownParam::SleepImmediately => "SLEEP_IMMEDIATELY",
            ShutdownParam::HibernateImmediately => "HIBERNATE_IMMEDIATELY",
            ShutdownParam::CanHibernate => "CAN_HIBERNATE",
            ShutdownParam::EmergencyShutdown => "EMERGENCY_SHUTDOWN",
        }
    }
}

impl fmt::Display for ShutdownParam {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A value of `AP_POWER_STATE_REQ`: what the (virtual) vehicle tells Android.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ApPowerStateReq {
    /// Run normally (0).
    On,
    /// Prepare to shut down or sleep, with how (1).
    ShutdownPrepare(ShutdownParam),
    /// The pending shutdown is cancelled; go back to on (2).
    CancelShutdown,
    /// The vehicle acknowledges Android's final step; power goes away (3).
    Finished,
}

impl ApPowerStateReq {
    /// The VHAL encoding: `[value, parameter]` of the `int32` vector.
    pub const fn vhal(self) -> [i32; 2] {
        match self {
            ApPowerStateReq::On => [0, 0],
            ApPowerStateReq::ShutdownPrepare(p) => [1, p.vhal()],
            ApPowerStateReq::CancelShutdown => [2, 0],
            ApPowerStateReq::Finished => [3, 0],
        }
    }
}

impl fmt::Display for ApPowerStateReq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApPowerStateReq::On => f.write_str("ON"),
            ApPowerStateReq::ShutdownPrepare(p) => write!(f, "SHUTDOWN_PREPARE({p})"),
            ApPowerStateReq::CancelShutdown => f.write_str("CANCEL_SHUTDOWN"),
            ApPowerStateReq::Finished => f.write_str("FINISHED"),
        }
    }
}

/// A decoded `AP_POWER_STATE_REPORT`: what Android tells the vehicle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ApPowerStateReport {
    /// Android booted (or woke) and waits for the vehicle's first request (1).
    WaitForVhal,
    /// Android enters deep sleep; wake-up time in seconds, 0 for none (2).
    DeepSleepEntry {
        /// Requested wake-up time in seconds (0: none).
        wake_up_s: i32,
    },
    /// Android left deep sleep (3).
    DeepSleepExit,
    /// Android needs more time in `SHUTDOWN_PREPARE` (4).
    ShutdownPostpone {
        /// Requested extension in milliseconds (the VHAL allows at most 5000).
        ms: i32,
    },
    /// Android starts shutting down; wake-up time in seconds, 0 for none (5).
    ShutdownStart {
        /// Requested wake-up time in seconds (0: none).
        wake_up_s: i32,
    },
    /// Android is on (6).
    On,
    /// Android is in `SHUTDOWN_PREPARE` (garage mode running) (7).
    ShutdownPrepare,
    /// Android cancelled its shutdown after `CANCEL_SHUTDOWN` (8).
    ShutdownCancelled,
    /// Android enters hibernation; wake-up time in seconds, 0 for none (9).
    HibernationEntry {
        /// Requested wake-up time in seconds (0: none).
        wake_up_s: i32,
    },
    /// Android left hibernation (10).
    HibernationExit,
}

impl ApPowerStateReport {
    /// Decodes `[value, parameter]` as sent by Android.
    pub fn from_vhal(value: i32, param: i32) -> Result<Self, VhalError> {
        Ok(match value {
            1 => ApPowerStateReport::WaitForVhal,
            2 => ApPowerStateReport::DeepSleepEntry { wake_up_s: param },
            3 => ApPowerStateReport::DeepSleepExit,
            4 => ApPowerStateReport::ShutdownPostpone { ms: param },
            5 => ApPowerStateReport::ShutdownStart { wake_up_s: param },
            6 => ApPowerStateReport::On,
            7 => ApPowerStateReport::ShutdownPrepare,
            8 => ApPowerStateReport::ShutdownCancelled,
            9 => ApPowerStateReport::HibernationEntry { wake_up_s: param },
            10 => ApPowerStateReport::HibernationExit,
            other => return Err(VhalError::UnknownReport(other)),
        })
    }

    /// The VHAL encoding: `[value, parameter]`.
    pub const fn vhal(self) -> [i32; 2] {
        match self {
            ApPowerStateReport::WaitForVhal => [1, 0],
            ApPowerStateReport::DeepSleepEntry { wake_up_s } => [2, wake_up_s],
            ApPowerStateReport::DeepSleepExit => [3, 0],
            ApPowerStateReport::ShutdownPostpone { ms } => [4, ms],
            ApPowerStateReport::ShutdownStart { wake_up_s } => [5, wake_up_s],
            ApPowerStateReport::On => [6, 0],
            ApPowerStateReport::ShutdownPrepare => [7, 0],
            ApPowerStateReport::ShutdownCancelled => [8, 0],
            ApPowerStateReport::HibernationEntry { wake_up_s } => [9, wake_up_s],
            ApPowerStateReport::HibernationExit => [10, 0],
        }
    }
}

impl fmt::Display for ApPowerStateReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApPowerStateReport::WaitForVhal => f.write_str("WAIT_FOR_VHAL"),
            ApPowerStateReport::DeepSleepEntry { wake_up_s } => {
                write!(f, "DEEP_SLEEP_ENTRY(wake in {wake_up_s} s)")
            }
            ApPowerStateReport::DeepSleepExit => f.write_str("DEEP_SLEEP_EXIT"),
            ApPowerStateReport::ShutdownPostpone { ms } => write!(f, "SHUTDOWN_POSTPONE({ms} ms)"),
            ApPowerStateReport::ShutdownStart { wake_up_s } => {
                write!(f, "SHUTDOWN_START(wake in {wake_up_s} s)")
            }
            ApPowerStateReport::On => f.write_str("ON"),
            ApPowerStateReport::ShutdownPrepare => f.write_str("SHUTDOWN_PREPARE"),
            ApPowerStateReport::ShutdownCancelled => f.write_str("SHUTDOWN_CANCELLED"),
            ApPowerStateReport::HibernationEntry { wake_up_s } => {
                write!(f, "HIBERNATION_ENTRY(wake in {wake_up_s} s)")
            }
            ApPowerStateReport::HibernationExit => f.write_str("HIBERNATION_EXIT"),
        }
    }
}

/// Why the MCU woke the system (`VehicleApPowerBootupReason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WakeReason {
    /// The user switched the system on (0).
    UserPowerOn,
    /// A user was detected near or in the vehicle (1).
    SystemUserDetection,
    /// A remote task needs the system (2).
    SystemRemoteAccess,
    /// Wake only to run garage mode, then go back down (3).
    SystemEnterGarageMode,
}

impl WakeReason {
    /// The VHAL's numeric value.
    pub const fn vhal(self) -> i32 {
        match self {
            WakeReason::UserPowerOn => 0,
            WakeReason::SystemUserDetection => 1,
            WakeReason::SystemRemoteAccess => 2,
            WakeReason::SystemEnterGarageMode => 3,
        }
    }

    /// Decodes the VHAL's numeric value.
    pub const fn from_vhal(v: i32) -> Result<Self, VhalError> {
        Ok(match v {
            0 => WakeReason::UserPowerOn,
            1 => WakeReason::SystemUserDetection,
            2 => WakeReason::SystemRemoteAccess,
            3 => WakeReason::SystemEnterGarageMode,
            other => return Err(VhalError::UnknownWakeReason(other)),
        })
    }
}

impl fmt::Display for WakeReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WakeReason::UserPowerOn => "USER_POWER_ON",
            WakeReason::SystemUserDetection => "SYSTEM_USER_DETECTION",
            WakeReason::SystemRemoteAccess => "SYSTEM_REMOTE_ACCESS",
            WakeReason::SystemEnterGarageMode => "SYSTEM_ENTER_GARAGE_MODE",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn property_ids_match_the_vhal() {
        assert_eq!(AP_POWER_STATE_REQ, 0x11410A00);
        assert_eq!(AP_POWER_STATE_REPORT, 0x11410A01);
    }

    #[test]
    fn req_encoding_matches_the_vhal() {
        assert_eq!(ApPowerStateReq::On.vhal(), [0, 0]);
        assert_eq!(
            ApPowerStateReq::ShutdownPrepare(ShutdownParam::CanSleep).vhal(),
            [1, 2]
        );
        assert_eq!(ApPowerStateReq::CancelShutdown.vhal(), [2, 0]);
        assert_eq!(ApPowerStateReq::Finished.vhal(), [3, 0]);
    }

    #[test]
    fn shutdown_params_round_trip_and_postpone_rule() {
        for v in 1..=7 {
            let p = ShutdownParam::from_vhal(v).expect("defined value");
            assert_eq!(p.vhal(), v);
            assert_eq!(p.can_postpone(), matches!(v, 2 | 3 | 6), "{p}");
        }
        assert_eq!(ShutdownParam::from_vhal(0), None);
        assert_eq!(ShutdownParam::from_vhal(8), None);
    }

    #[test]
    fn reports_round_trip() {
        for v in 1..=10 {
            let r = ApPowerStateReport::from_vhal(v, 1234).expect("defined value");
            assert_eq!(r.vhal()[0], v);
            // Only the values with a parameter keep it.
            let keeps = matches!(v, 2 | 4 | 5 | 9);
            assert_eq!(r.vhal()[1] == 1234, keeps, "{r}");
        }
    }

    #[test]
    fn unknown_values_are_errors_not_panics() {
        for v in [i32::MIN, -1, 0, 11, i32::MAX] {
            assert_eq!(
                ApPowerStateReport::from_vhal(v, 0),
                Err(VhalError::UnknownReport(v))
            );
        }
        assert_eq!(
            WakeReason::from_vhal(4),
            Err(VhalError::UnknownWakeReason(4))
        );
        assert_eq!(
            VhalError::UnknownReport(11).to_string(),
            "unknown AP_POWER_STATE_REPORT value 11 (expected 1..=10)"
        );
    }

    #[test]
    fn wake_reasons_round_trip() {
        for v in 0..=3 {
            assert_eq!(WakeReason::from_vhal(v).map(WakeReason::vhal), Ok(v));
        }
        assert_eq!(
            serde_json::to_string(&WakeReason::SystemEnterGarageMode)
                .ok()
                .as_deref(),
            Some("\"SYSTEM_ENTER_GARAGE_MODE\"")
        );
    }
}
