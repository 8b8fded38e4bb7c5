//! The Android side of vmstack's binder surface:
//!
//! - [`cli`]: `vmbinder`, a `service`-like tool (list, check, raw and
//!   typed calls, watch, dump) on kernel binder or RPC binder;
//! - [`gateway`]: `sysmgr-binderd`, which registers `ISystemManager` on
//!   the guest's kernel binder and forwards every call, and the listeners'
//!   callbacks, over RPC binder over vsock to the host's `sysmgr`.
//!
//! See `docs/android.md`.

pub mod args;
pub mod cli;
pub mod conn;
pub mod gateway;
pub mod typed;
