//! The guest's own power requests, as events for the VMM to decide on.
//!
//! A guest never powers anything off by itself: its last power step (ACPI
//! sleep register, reset register, i8042 reset, triple fault) becomes a
//! [`PowerEvent`] that the device sends through a [`PowerEventSink`]. The VMM
//! (and, later, the system-manager arbiter behind it) decides what happens.

use std::sync::mpsc::Sender;
use std::sync::Arc;

/// A power transition the guest asked for: the control protocol's
/// power-request kind (`poweroff`, `reboot`, `suspend`), so the VMM
/// publishes it as it is.
pub use vmm_protocol::PowerRequestKind as PowerEvent;

/// Where devices deliver [`PowerEvent`]s: a cheap, cloneable callback that
/// the VMM wires to its event loop.
#[derive(Clone)]
pub struct PowerEventSink {
    deliver: Arc<dyn Fn(PowerEvent) + Send + Sync>,
}

impl PowerEventSink {
    /// Delivers events by calling `deliver`.
    pub fn new(deliver: impl Fn(PowerEvent) + Send + Sync + 'static) -> Self {
        Self {
            deliver: Arc::new(deliver),
        }
    }

    /// Delivers `event`.
    pub fn send(&self, event: PowerEvent) {
        crate::guest_info!("guest power request: {event}");
        (self.deliver)(event);
    }
}

impl From<Sender<PowerEvent>> for PowerEventSink {
    /// Delivers events into a channel; if the receiver is gone the VMM is
    /// already shutting down and the event is only logged.
    fn from(sender: Sender<PowerEvent>) -> Self {
        Self::new(move |event| {
            if sender.send(event).is_err() {
                crate::guest_warn!("power request {event} dropped: VMM loop has exited");
            }
        })
    }
}
