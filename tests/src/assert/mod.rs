//! The checks of each nested test scenario, written once for every
//! architecture: a test file (`tests/tests/<feature>.rs`) calls them with
//! the [`SharedRun`](crate::scenario::SharedRun) of its test host (x86_64,
//! arm64), and an architecture's own extra checks sit inside them behind
//! `match run.arch()`.
//!
//! Every check reads markers ([`crate::marker`]); the only raw console
//! text checked is a kernel message where that message is the point
//! ([`Section::expect_kernel_message`](crate::scenario::Section::expect_kernel_message)):
//! the arm64 test host's pKVM line and the arm64 guest kernel's view of our
//! device tree (machine model, PSCI, UART).

pub mod adb;
pub mod binder;
pub mod block;
pub mod boot;
pub mod console;
pub mod control;
pub mod hostile;
pub mod net;
pub mod rng;
pub mod sandbox;
pub mod sysmgr;
pub mod tee;
pub mod trusty;
pub mod vsock;

/// The tag of a scenario's (only) VMM run (`run_vmm vmm ...`).
pub const VMM: &str = "vmm";

/// The key of marker `key` printed by the guest of the VMM run as `tag`.
pub fn guest(tag: &str, key: &str) -> String {
    format!("{tag}.guest.{key}")
}
