//! What the VMM's event loop reacts to: one channel that the builder's
//! devices and vCPUs, and the control socket, all send into.
//!
//! A leaf module (besides the [`Outbox`] a subscription carries): it names
//! the messages only, so that the modules that produce them (`builder`,
//! `control`) and the one that consumes them (`runner`) depend on it and
//! not on each other.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;

use devices::PowerEvent;
use vmm_protocol::{Request, Response};

use crate::outbox::Outbox;
use crate::vstate::vcpu::VcpuCrash;

/// Something the VMM's event loop must react to.
#[derive(Debug)]
pub enum VmEvent {
    /// The guest of boot number `boot` asked for a power transition.
    Power {
        /// Which boot of the VM sent it.
        boot: u64,
        /// The request.
        event: PowerEvent,
        /// The boot's gate, to release once the event is taken.
        gate: Arc<PowerGate>,
    },
    /// A vCPU of boot number `boot` failed.
    Vcpu {
        /// Which boot of the VM sent it.
        boot: u64,
        /// What happened.
        crash: VcpuCrash,
    },
    /// A control-socket request (never `attach` or `events`: those come
    /// as [`VmEvent::Subscribe`]); the response goes to `reply`.
    Control {
        /// The request.
        request: Request,
        /// Where the response goes.
        reply: Sender<Response>,
    },
    /// A control connection subscribes to events (as the arbiter or not).
    Subscribe {
        /// Connection id.
        connection: u64,
        /// Where to queue the response and events.
        outbox: Outbox,
        /// Whether it becomes the power arbiter.
        arbiter: bool,
        /// Told whether the response is queued (before the connection's
        /// thread answers anything else).
        queued: Sender<bool>,
    },
    /// A subscribed connection closed.
    Unsubscribe {
        /// Connection id.
        connection: u64,
    },
}

/// Keeps at most one power event of each kind in the event channel: a
/// guest writing its reset register in a loop (or several vCPUs at once)
/// sends one event until the loop has taken it, not one per write.
#[derive(Debug, Default)]
pub struct PowerGate {
    queued: [AtomicBool; 3],
}

impl PowerGate {
    fn slot(&self, event: PowerEvent) -> &AtomicBool {
        &self.queued[match event {
            PowerEvent::Poweroff => 0,
            PowerEvent::Reboot => 1,
            PowerEvent::Suspend => 2,
        }]
    }

    /// Whether `event` may be sent (none of its kind is queued); marks it
    /// queued.
    pub fn admit(&self, event: PowerEvent) -> bool {
        !self.slot(event).swap(true, Ordering::AcqRel)
    }

    /// The event loop took `event`: the next one of its kind may be sent.
    pub fn release(&self, event: PowerEvent) {
        self.slot(event).store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_admits_one_event_per_kind_until_released() {
        let gate = PowerGate::default();
        assert!(gate.admit(PowerEvent::Reboot));
        assert!(!gate.admit(PowerEvent::Reboot));
        assert!(gate.admit(PowerEvent::Poweroff));
        gate.release(PowerEvent::Reboot);
        assert!(gate.admit(PowerEvent::Reboot));
        assert!(!gate.admit(PowerEvent::Poweroff));
    }
}
