//! The ACPI power button, as hardware-reduced ACPI spells it: a Generic Event
//! Device (GED, `ACPI0013`) whose interrupt makes the guest run `_EVT`, which
//! notifies the power button device (`PNP0C0C`) with 0x80 ("pressed").
//!
//! The guest's stock ACPI button driver turns that into a `KEY_POWER` input
//! event, so the guest shuts down the way it would on real hardware (on
//! Android: the normal power-key path). The DSDT side is in the VMM's ACPI
//! code; this is the button itself: one edge on an irqfd.

use std::sync::Arc;

use vmm_sys_util::eventfd::EventFd;

/// A press-only power button wired to the GED's interrupt.
#[derive(Clone, Debug)]
pub struct PowerButton {
    irqfd: Arc<EventFd>,
}

impl PowerButton {
    /// A button that raises the GED interrupt through `irqfd`.
    pub fn new(irqfd: EventFd) -> Self {
        Self {
            irqfd: Arc::new(irqfd),
        }
    }

    /// Presses the button once.
    pub fn press(&self) {
        tracing::info!("power button pressed");
        if let Err(e) = self.irqfd.write(1) {
            tracing::warn!("cannot raise the power button interrupt: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn press_raises_the_interrupt() {
        let irqfd = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let probe = irqfd.try_clone().unwrap();
        let button = PowerButton::new(irqfd);
        button.clone().press();
        assert_eq!(probe.read().unwrap(), 1);
    }
}
