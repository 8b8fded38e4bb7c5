//! The part of the i8042 keyboard controller that Linux uses to reset the
//! machine (command 0xfe: pulse the reset line).
//!
//! No keyboard is attached: status reads say "no data", so the guest's i8042
//! driver finds nothing to talk to.

use crate::bus::BusDevice;
use crate::power::{PowerEvent, PowerEventSink};

/// Offset of the command/status port (0x64) from the data port (0x60).
pub const COMMAND_OFFSET: u64 = 4;
/// Size of the device's I/O range (0x60..=0x64).
pub const I8042_RANGE_LEN: u64 = 5;
/// The command that pulses the CPU reset line.
const CMD_RESET_CPU: u8 = 0xfe;

/// A keyboard controller with no keyboard whose only job is reset.
pub struct I8042Device {
    sink: PowerEventSink,
}

impl I8042Device {
    /// Creates the controller; resets are sent to `sink`.
    pub fn new(sink: PowerEventSink) -> Self {
        Self { sink }
    }
}

impl BusDevice for I8042Device {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        // Status 0: output buffer empty, input buffer empty; data reads 0.
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset == COMMAND_OFFSET && data.first() == Some(&CMD_RESET_CPU) {
            self.sink.send(PowerEvent::Reboot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;

    #[test]
    fn reset_command_requests_reboot() {
        let (tx, rx) = channel();
        let mut dev = I8042Device::new(PowerEventSink::from(tx));
        dev.write(0, &[CMD_RESET_CPU]);
        dev.write(COMMAND_OFFSET, &[0xaa]);
        assert!(rx.try_recv().is_err());
        dev.write(COMMAND_OFFSET, &[CMD_RESET_CPU]);
        assert_eq!(rx.try_recv(), Ok(PowerEvent::Reboot));
        let mut status = [0xffu8];
        dev.read(COMMAND_OFFSET, &mut status);
        assert_eq!(status, [0]);
    }
}
