//! vmstack's Android surface: the AIDL interfaces of package
//! `vmstack.sysmgr` (`aidl/vmstack/sysmgr/*.aidl`), generated into Rust at
//! build time by rsbinder-aidl, and the stable-AIDL tooling around them
//! ([`api`]).
//!
//! - [`ISystemManager`](vmstack::sysmgr::ISystemManager): the system
//!   manager as Android sees it (the VHAL power handshake, system and
//!   guest states, listener registration);
//! - [`IPowerStateListener`](vmstack::sysmgr::IPowerStateListener): its
//!   oneway callbacks;
//! - [`SystemState`](vmstack::sysmgr::SystemState),
//!   [`GuestState`](vmstack::sysmgr::GuestState): parcelables.
//!
//! The same generated proxies drive kernel binder and RPC binder
//! (rsbinder's `as_remote()`); the crate enables neither transport.

pub mod api;

#[allow(
    missing_docs,
    clippy::all,
    non_snake_case,
    non_camel_case_types,
    unused
)]
mod generated {
    rsbinder::include_aidl!("vmstack_sysmgr");
}
pub use generated::vmstack;

/// The service name the system manager registers under (kernel binder's
/// service manager in the guest; `list` shows the RPC root under it).
pub const SERVICE_NAME: &str = "sysmgr";

/// The interface's source files, as (path under `aidl/`, text), for
/// tools that marshal calls by method name.
pub const SOURCES: &[(&str, &str)] = &[
    (
        "vmstack/sysmgr/GuestState.aidl",
        include_str!("../aidl/vmstack/sysmgr/GuestState.aidl"),
    ),
    (
        "vmstack/sysmgr/IPowerStateListener.aidl",
        include_str!("../aidl/vmstack/sysmgr/IPowerStateListener.aidl"),
    ),
    (
        "vmstack/sysmgr/ISystemManager.aidl",
        include_str!("../aidl/vmstack/sysmgr/ISystemManager.aidl"),
    ),
    (
        "vmstack/sysmgr/SystemState.aidl",
        include_str!("../aidl/vmstack/sysmgr/SystemState.aidl"),
    ),
];

/// The model of [`SOURCES`].
pub fn source_api() -> Result<api::Api, api::AidlParseError> {
    api::api_from_sources(SOURCES.iter().copied())
}
