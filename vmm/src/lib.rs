//! A crosvm-style KVM virtual machine monitor.
//!
//! The crate is a library with a thin binary (`src/main.rs`) on top:
//!
//! * [`config`]: the user's VM description, validated before KVM is touched.
//! * [`builder`]: assembles a VM in one readable recipe.
//! * [`runner`]: runs it and reports why it ended.
//! * [`event`]: what the runner's event loop reacts to (a leaf: the
//!   builder and the control socket send these, the runner receives them).
//! * [`vstate`]: KVM wrappers (VM, vCPU threads, `/dev/kvm` checks).
//! * [`arch`]: per-architecture memory map, boot protocol, ACPI, registers.
//! * [`control`]: the control socket and its client; the messages are
//!   `vmm_protocol`'s.
//! * [`outbox`]: the queue and writer thread of each subscribed control
//!   connection, so that the event loop never waits for a client.
//! * [`console_client`]: `vmm console`, a client for a unix-socket
//!   virtio-console.
//! * [`vsock_proxy`]: `vmm adb-proxy`, TCP on 127.0.0.1 bridged to a
//!   guest vsock port (adb, docs/adb.md).
//! * [`power`]: what happens to the guest's own power requests (plain VMM
//!   or held for an arbiter).
//! * [`rlimit`]: the file-descriptor limit raised at start.

pub mod arch;
pub mod builder;
pub mod config;
pub mod console_client;
pub mod control;
pub mod event;
pub mod outbox;
pub mod power;
pub mod resources;
pub mod rlimit;
pub mod runner;
pub mod vsock_proxy;
pub mod vstate;
