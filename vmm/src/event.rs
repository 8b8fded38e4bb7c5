//! What the VMM's event loop reacts to: one channel that the builder's
//! devices and vCPUs, and the control socket, all send into.
//!
//! A leaf module: it names the messages only, so that the modules that
//! produce them (`builder`, `control`) and the one that consumes them
//! (`runner`) depend on it and not on each other.

use std::os::unix::net::UnixStream;
use std::sync::mpsc::Sender;

use devices::PowerEvent;
use vmm_protocol::{Request, Response};

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
        /// Where to write the response and events.
        stream: UnixStream,
        /// Whether it becomes the power arbiter.
        arbiter: bool,
    },
    /// A subscribed connection closed.
    Unsubscribe {
        /// Connection id.
        connection: u64,
    },
}
