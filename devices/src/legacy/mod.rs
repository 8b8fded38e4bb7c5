//! Legacy platform devices a Linux guest expects: those of an x86 PC, and
//! the arm64 power key's GPIO controller (PL061).

pub mod acpi_pm;
pub mod boot_timer;
pub mod i8042;
pub mod pl061;
pub mod power_button;
pub mod serial;

pub use acpi_pm::AcpiPmDevice;
pub use boot_timer::BootTimer;
pub use i8042::I8042Device;
pub use pl061::Pl061;
pub use power_button::PowerButton;
pub use serial::{EventFdTrigger, SerialDevice};
