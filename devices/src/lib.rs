//! Devices that the VMM emulates for its guests.
//!
//! Everything here is pure device logic behind the small [`bus::BusDevice`]
//! trait: a device sees reads and writes at an offset inside its own range and
//! never touches KVM. The VMM maps devices onto the port-I/O and MMIO buses and
//! routes vCPU exits to them.
//!
//! * [`legacy`]: the few platform devices an x86 Linux guest expects (serial
//!   console, i8042 reset line, ACPI power registers, a boot timer).
//! * [`virtio`]: VIRTIO devices and the virtio-mmio transport.
//! * [`log_limit`]: rate-limited logging for every line a guest can
//!   trigger ([`guest_warn!`] and friends).
//! * [`power`]: the guest's own power requests (poweroff, reboot, suspend) as
//!   events for the VMM to decide on.

pub mod bus;
pub mod legacy;
pub mod log_limit;
pub mod power;
pub mod virtio;

pub use bus::{Bus, BusDevice, BusError};
pub use power::{PowerEvent, PowerEventSink};
/// The rate-limited logging macros (`vmstack_log::limit`), at the crate
/// root where device code has always called them.
pub use vmstack_log::{guest_debug, guest_error, guest_info, guest_log, guest_warn};
