//! The host's Trusty service: Trusty's trusted apps for every guest, each
//! guest isolated from the others (`docs/trusty.md`).
//!
//! - [`tee`]: the host TEE protocol between the VMM's virtio-tee device and
//!   `trustyd` (types, codec, a blocking client). Always built; with
//!   `default-features = false` it is all this crate contains, so the VMM
//!   links it without the service's dependencies.
//! - With the `service` feature (default): the trusted apps as pure cores
//!   ([`ta`]), the encrypted store behind them ([`store`], [`keys`]), the
//!   libtrusty-over-vsock framing ([`framing`]), the per-guest service
//!   ([`service`]) and the connection servers the daemon runs ([`server`]).

pub mod tee;

#[cfg(feature = "service")]
pub mod framing;
#[cfg(feature = "service")]
pub mod keys;
#[cfg(feature = "service")]
pub mod ports;
#[cfg(feature = "service")]
pub mod server;
#[cfg(feature = "service")]
pub mod service;
#[cfg(feature = "service")]
pub mod store;
#[cfg(feature = "service")]
pub mod ta;
