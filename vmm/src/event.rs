//! What the VMM's event loop reacts to: one channel that the builder's
//! devices and vCPUs, and the control socket, all send into.
//!
//! A leaf module (besides the [`Outbox`] a subscription carries): it names
//! the messages only, so that the modules that produce them (`builder`,
//! `control`) and the one that consumes them (`runner`) depend on it and
//! not on each other.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::Arc;
use std::time::Instant;

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
        reply: Reply,
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

/// Where the response to a [`VmEvent::Control`] request goes. Either way
/// the connection's thread waits for it before it reads the next request
/// (one request in flight per connection), and the VMM's exit waits for
/// the response to be written (at most until its flush deadline).
#[derive(Debug)]
pub enum Reply {
    /// A connection that has not subscribed: its thread writes the
    /// response into the socket, then reports on `written`.
    Direct {
        /// Where the response goes.
        response: Sender<Response>,
        /// Told (or dropped) once the response is written.
        written: Receiver<()>,
    },
    /// A subscribed connection: the loop queues the response into its
    /// outbox itself, before it acts on the request (so the response
    /// precedes the events the request causes, and the exit's flush of the
    /// subscribers writes it), then says whether it was queued.
    Outbox {
        /// The connection's outbox.
        outbox: Outbox,
        /// Told whether the response is queued.
        queued: Sender<bool>,
    },
}

impl Reply {
    /// The subscribed connection's outbox the response goes into, if so.
    pub fn outbox(&self) -> Option<&Outbox> {
        match self {
            Reply::Outbox { outbox, .. } => Some(outbox),
            Reply::Direct { .. } => None,
        }
    }

    /// Hands `response` over; for a direct connection, returns the
    /// [`Unwritten`] response to wait for before the VMM exits.
    pub fn send(self, response: Response) -> Option<Unwritten> {
        match self {
            Reply::Direct {
                response: tx,
                written,
            } => tx.send(response).ok().map(|()| Unwritten::new(written)),
            Reply::Outbox { outbox, queued } => {
                let _ = queued.send(outbox.offer(response).is_ok());
                None
            }
        }
    }
}

/// A response handed to a direct connection's thread and perhaps not yet
/// written into its socket.
#[derive(Debug)]
pub struct Unwritten {
    written: Receiver<()>,
    /// The thread said so (the message is taken) or ended.
    done: bool,
}

impl Unwritten {
    fn new(written: Receiver<()>) -> Self {
        Unwritten {
            written,
            done: false,
        }
    }

    /// Whether the connection's thread has written it (or will not: it
    /// ended).
    pub fn is_done(&mut self) -> bool {
        self.done = self.done || !matches!(self.written.try_recv(), Err(TryRecvError::Empty));
        self.done
    }

    /// Waits until it is written, at most until `deadline`; returns
    /// whether the connection's thread is done with it.
    pub fn wait(&mut self, deadline: Instant) -> bool {
        if !self.done {
            let left = deadline.saturating_duration_since(Instant::now());
            self.done = !matches!(
                self.written.recv_timeout(left),
                Err(RecvTimeoutError::Timeout)
            );
        }
        self.done
    }
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
