//! The system-manager daemon (`sysmgr`): the I/O shell around the pure
//! arbiter core (the `system-manager` crate, `system_manager::Arbiter`).
//!
//! The crate is a library with thin binaries on top:
//!
//! * `sysmgr` (`src/main.rs`): the daemon and its CLI (`run`, `status`,
//!   `events`), the one binary that goes into a product.
//! * `mcu-sim` (`src/bin/mcu-sim.rs`): a vehicle MCU simulator for tests
//!   and driving the daemon by hand.
//! * `sysmgr-bench` (`src/bin/sysmgr-bench.rs`): request -> decision
//!   latency of the real daemon (`cargo xtask bench arbiter`).
//!
//! Modules:
//!
//! * [`daemon`]: `sysmgr run`, the core loop that owns the arbiter.
//! * [`cli`]: `sysmgr status` and `sysmgr events`.
//! * [`store`]: the state directory, the decision log and the clock.
//! * [`vmm`], [`vhal`], [`mcu`]: the links to the VMMs' control sockets,
//!   the Android guest's VHAL channel and the MCU.
//! * [`binder`], [`notify`]: `ISystemManager` over RPC binder for the
//!   Android guests and host tools, and its listeners' callbacks.
//! * [`proto`]: the MCU protocol (protobuf) and its framing.
//! * [`lines`]: a bounded line reader for the text links.
//! * [`guest_log`]: the per-guest rate limit of the log lines a guest can
//!   trigger.
//! * [`pidfd`]: process handles by which VMMs are killed (never a bare pid).
//!
//! See `docs/system-manager.md`.

pub mod binder;
pub mod cli;
pub mod confine;
pub mod daemon;
pub mod guest_log;
pub mod launcher;
pub mod lines;
pub mod mcu;
pub mod notify;
pub mod pidfd;
pub mod proto;
pub mod store;
pub mod vhal;
pub mod vmm;
pub mod vmm_log;

/// A fresh, empty directory `<tmp>/sysmgr-<tag>-<pid>` for a unit test
/// (what an earlier run left there is removed first).
#[cfg(test)]
pub(crate) fn test_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("sysmgr-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
