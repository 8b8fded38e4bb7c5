//! Legacy platform devices of an x86 PC that a Linux guest expects.

pub mod acpi_pm;
pub mod boot_timer;
pub mod i8042;
pub mod power_button;
pub mod serial;

pub use acpi_pm::AcpiPmDevice;
pub use boot_timer::BootTimer;
pub use i8042::I8042Device;
pub use power_button::PowerButton;
pub use serial::{EventFdTrigger, SerialDevice};
