//! Hardware-reduced ACPI power registers: sleep control, sleep status and
//! reset.
//!
//! The FADT points the guest's ACPI code at these one-byte I/O registers. Linux
//! enters S5 (poweroff) by writing `SLP_TYP << 2 | SLP_EN` to the sleep control
//! register, and resets by writing the FADT's reset value to the reset
//! register. Each becomes a [`PowerEvent`]; nothing happens to the VM here.

use crate::bus::BusDevice;
use crate::power::{PowerEvent, PowerEventSink};

/// Offset of the sleep control register inside the device's range.
pub const SLEEP_CONTROL_OFFSET: u64 = 0;
/// Offset of the sleep status register inside the device's range.
pub const SLEEP_STATUS_OFFSET: u64 = 1;
/// Offset of the reset register inside the device's range.
pub const RESET_OFFSET: u64 = 4;
/// Size of the device's I/O range.
pub const ACPI_PM_RANGE_LEN: u64 = 5;

/// `SLP_EN`: the write actually enters the sleep state.
const SLP_EN: u8 = 1 << 5;
/// `WAK_STS` in the sleep status register.
const WAK_STS: u8 = 1 << 7;

/// The three ACPI power registers.
pub struct AcpiPmDevice {
    sink: PowerEventSink,
    slp_typ_s5: u8,
    slp_typ_s3: u8,
    reset_value: u8,
    sleep_status: u8,
}

impl AcpiPmDevice {
    /// Creates the registers; `slp_typ_s5`/`slp_typ_s3` and `reset_value` must
    /// match what the DSDT and FADT tell the guest.
    pub fn new(sink: PowerEventSink, slp_typ_s5: u8, slp_typ_s3: u8, reset_value: u8) -> Self {
        Self {
            sink,
            slp_typ_s5,
            slp_typ_s3,
            reset_value,
            sleep_status: 0,
        }
    }

    /// Marks the guest as woken (sets `WAK_STS`), for resume from S3.
    pub fn set_woken(&mut self) {
        self.sleep_status |= WAK_STS;
    }

    fn write_sleep_control(&mut self, value: u8) {
        if value & SLP_EN == 0 {
            return;
        }
        let slp_typ = (value >> 2) & 0x7;
        if slp_typ == self.slp_typ_s5 {
            self.sink.send(PowerEvent::Poweroff);
        } else if slp_typ == self.slp_typ_s3 {
            self.sleep_status &= !WAK_STS;
            self.sink.send(PowerEvent::Suspend);
        } else {
            crate::guest_warn!("guest wrote unknown SLP_TYP {slp_typ}; ignored");
        }
    }
}

impl BusDevice for AcpiPmDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value = match offset {
            SLEEP_STATUS_OFFSET => self.sleep_status,
            _ => 0,
        };
        data.fill(0);
        if let Some(first) = data.first_mut() {
            *first = value;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&value) = data.first() else { return };
        match offset {
            SLEEP_CONTROL_OFFSET => self.write_sleep_control(value),
            // Writing 1 clears a status bit.
            SLEEP_STATUS_OFFSET => self.sleep_status &= !value,
            RESET_OFFSET if value == self.reset_value => self.sink.send(PowerEvent::Reboot),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::{channel, Receiver};

    fn device() -> (AcpiPmDevice, Receiver<PowerEvent>) {
        let (tx, rx) = channel();
        (AcpiPmDevice::new(PowerEventSink::from(tx), 5, 3, 1), rx)
    }

    #[test]
    fn s5_write_requests_poweroff() {
        let (mut dev, rx) = device();
        dev.write(SLEEP_CONTROL_OFFSET, &[(5 << 2) | SLP_EN]);
        assert_eq!(rx.try_recv(), Ok(PowerEvent::Poweroff));
    }

    #[test]
    fn s3_write_requests_suspend_and_clears_wake_status() {
        let (mut dev, rx) = device();
        dev.set_woken();
        dev.write(SLEEP_CONTROL_OFFSET, &[(3 << 2) | SLP_EN]);
        assert_eq!(rx.try_recv(), Ok(PowerEvent::Suspend));
        let mut status = [0xffu8];
        dev.read(SLEEP_STATUS_OFFSET, &mut status);
        assert_eq!(status, [0]);
        dev.set_woken();
        dev.read(SLEEP_STATUS_OFFSET, &mut status);
        assert_eq!(status, [WAK_STS]);
        dev.write(SLEEP_STATUS_OFFSET, &[WAK_STS]);
        dev.read(SLEEP_STATUS_OFFSET, &mut status);
        assert_eq!(status, [0]);
    }

    #[test]
    fn reset_register_requests_reboot_only_with_the_right_value() {
        let (mut dev, rx) = device();
        dev.write(RESET_OFFSET, &[2]);
        assert!(rx.try_recv().is_err());
        dev.write(RESET_OFFSET, &[1]);
        assert_eq!(rx.try_recv(), Ok(PowerEvent::Reboot));
    }

    #[test]
    fn writes_without_slp_en_or_with_unknown_types_do_nothing() {
        let (mut dev, rx) = device();
        dev.write(SLEEP_CONTROL_OFFSET, &[5 << 2]);
        dev.write(SLEEP_CONTROL_OFFSET, &[(7 << 2) | SLP_EN]);
        dev.write(SLEEP_CONTROL_OFFSET, &[]);
        dev.write(99, &[0xff]);
        assert!(rx.try_recv().is_err());
    }
}
