//! The ACPI power button, as hardware-reduced ACPI spells it: a Generic Event
//! Device (GED, `ACPI0013`) whose interrupt makes the guest run `_EVT`, which
//! notifies the power button device (`PNP0C0C`) with 0x80 ("pressed").
//!
//! The guest's stock ACPI button driver turns that into a `KEY_POWER` input
//! event, so the guest shuts down the way it would on real hardware (on
//! Android: the normal power-key path). The DSDT side is in the VMM's ACPI
//! code; this is the button itself: one edge on an irqfd.
//!
//! On arm64 the same button is a GPIO key (see [`super::pl061`]): a press is
//! whatever the platform does to its power-key line ([`PowerButton::with_action`]).

use std::sync::Arc;

use vmm_sys_util::eventfd::EventFd;

/// What pressing the button does.
#[derive(Clone)]
enum Press {
    /// Raise the GED interrupt (x86 ACPI).
    Irq(Arc<EventFd>),
    /// A platform-specific action (arm64: pulse a GPIO line).
    Action(Arc<dyn Fn() + Send + Sync>),
}

/// A press-only power button wired to the GED's interrupt (or, on arm64,
/// to a GPIO power key).
#[derive(Clone)]
pub struct PowerButton {
    press: Press,
}

impl std::fmt::Debug for PowerButton {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.press {
            Press::Irq(_) => "PowerButton(GED irqfd)",
            Press::Action(_) => "PowerButton(action)",
        })
    }
}

impl PowerButton {
    /// A button that raises the GED interrupt through `irqfd`.
    pub fn new(irqfd: EventFd) -> Self {
        Self {
            press: Press::Irq(Arc::new(irqfd)),
        }
    }

    /// A button whose press runs `action` (e.g. drives a GPIO key line).
    pub fn with_action(action: impl Fn() + Send + Sync + 'static) -> Self {
        Self {
            press: Press::Action(Arc::new(action)),
        }
    }

    /// Presses the button once.
    pub fn press(&self) {
        tracing::info!("power button pressed");
        match &self.press {
            Press::Irq(irqfd) => {
                if let Err(e) = irqfd.write(1) {
                    crate::guest_warn!("cannot raise the power button interrupt: {e}");
                }
            }
            Press::Action(action) => action(),
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

    #[test]
    fn press_runs_the_action() {
        let count = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let seen = count.clone();
        let button = PowerButton::with_action(move || {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        });
        button.press();
        button.clone().press();
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 2);
    }
}
