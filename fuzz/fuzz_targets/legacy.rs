//! The legacy bus: every port-I/O and MMIO access a guest can make to the
//! platform devices, dispatched through `devices::Bus` as the vCPU exit
//! path does. The x86 port map of `vmm/src/builder/x86_64.rs` (COM1 16550
//! at 0x3f8, i8042 at 0x60-0x64, ACPI sleep control/status and reset at
//! 0x600-0x604, boot timer at 0x4f0) and the arm64 PL061 power key GPIO
//! (MMIO window at 0x9030000), plus host-side actions: serial input, the
//! power button, the PL061 power-key line.
//!
//! Oracles:
//! - a power request only comes from the write that asks for it, and is
//!   the one asked for: `poweroff` from `SLP_TYP=5 | SLP_EN` and `suspend`
//!   from `SLP_TYP=3 | SLP_EN` on the sleep control port, `reboot` from
//!   the reset value on the reset port or 0xfe on the i8042 command port;
//! - the serial output is exactly the bytes written to the transmit
//!   register while the divisor latch is closed and loopback is off, in
//!   order;
//! - the boot timer fires once, at the first write of its magic value;
//! - the PL061 raises its interrupt at most once per access;
//! - an access outside every device is refused by the bus.

#![no_main]

use std::io::Write;
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use devices::legacy::{AcpiPmDevice, BootTimer, I8042Device, Pl061, PowerButton, SerialDevice};
use devices::{Bus, PowerEvent, PowerEventSink};
use libfuzzer_sys::fuzz_target;
use vmm_sys_util::eventfd::EventFd;

const COM1: u64 = 0x3f8;
const I8042: u64 = 0x60;
const I8042_COMMAND: u64 = 0x64;
const ACPI_SLEEP_CONTROL: u64 = 0x600;
const ACPI_RESET: u64 = 0x604;
const BOOT_TIMER: u64 = 0x4f0;
const BOOT_MAGIC: u8 = 123;
const SLP_TYP_S5: u8 = 5;
const SLP_TYP_S3: u8 = 3;
const RESET_VALUE: u8 = 1;
const PL061_BASE: u64 = 0x903_0000;

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Port {
    Serial(u8),
    I8042(u8),
    Acpi(u8),
    BootTimer,
    Raw(u16),
}

impl Port {
    fn addr(self) -> u64 {
        match self {
            Port::Serial(n) => COM1 + u64::from(n % 10),
            Port::I8042(n) => I8042 + u64::from(n % 6),
            Port::Acpi(n) => ACPI_SLEEP_CONTROL + u64::from(n % 6),
            Port::BootTimer => BOOT_TIMER,
            Port::Raw(p) => u64::from(p),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    PioRead { port: Port, width: u8 },
    PioWrite { port: Port, data: Vec<u8> },
    MmioRead { offset: u16, width: u8 },
    MmioWrite { offset: u16, data: Vec<u8> },
    SerialInput(Vec<u8>),
    PressButton,
    PowerKey { pin: u8, high: bool },
}

/// Collects the serial output.
#[derive(Clone, Default)]
struct Output(Arc<Mutex<Vec<u8>>>);

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Platform {
    pio: Bus,
    mmio: Bus,
    serial: Arc<Mutex<SerialDevice>>,
    pl061: Arc<Mutex<Pl061>>,
    pl061_irq: EventFd,
    button: PowerButton,
    button_irq: EventFd,
    timer: Arc<Mutex<BootTimer>>,
    events: Receiver<PowerEvent>,
    output: Output,
}

fn eventfd() -> EventFd {
    EventFd::new(libc::EFD_NONBLOCK).expect("eventfd")
}

impl Platform {
    fn new() -> Self {
        let (tx, events) = channel();
        let sink = PowerEventSink::from(tx);
        let output = Output::default();
        let serial = Arc::new(Mutex::new(SerialDevice::new(
            eventfd(),
            Box::new(output.clone()),
        )));
        let timer = Arc::new(Mutex::new(BootTimer::new(Instant::now(), BOOT_MAGIC)));
        let mut pio = Bus::new();
        pio.insert(serial.clone(), COM1, 8).unwrap();
        pio.insert(
            Arc::new(Mutex::new(I8042Device::new(sink.clone()))),
            I8042,
            5,
        )
        .unwrap();
        pio.insert(
            Arc::new(Mutex::new(AcpiPmDevice::new(
                sink,
                SLP_TYP_S5,
                SLP_TYP_S3,
                RESET_VALUE,
            ))),
            ACPI_SLEEP_CONTROL,
            5,
        )
        .unwrap();
        pio.insert(timer.clone(), BOOT_TIMER, 1).unwrap();
        let pl061_irq = eventfd();
        let pl061 = Arc::new(Mutex::new(Pl061::new(pl061_irq.try_clone().unwrap())));
        let mut mmio = Bus::new();
        mmio.insert(pl061.clone(), PL061_BASE, 0x1000).unwrap();
        let button_irq = eventfd();
        let button = PowerButton::new(button_irq.try_clone().unwrap());
        Self {
            pio,
            mmio,
            serial,
            pl061,
            pl061_irq,
            button,
            button_irq,
            timer,
            events,
            output,
        }
    }
}

/// The power request a port write asks for, if any.
fn expected_request(addr: u64, data: &[u8]) -> Option<PowerEvent> {
    let value = *data.first()?;
    match addr {
        ACPI_SLEEP_CONTROL if value & 0x20 != 0 => match (value >> 2) & 7 {
            SLP_TYP_S5 => Some(PowerEvent::Poweroff),
            SLP_TYP_S3 => Some(PowerEvent::Suspend),
            _ => None,
        },
        ACPI_RESET if value == RESET_VALUE => Some(PowerEvent::Reboot),
        I8042_COMMAND if value == 0xfe => Some(PowerEvent::Reboot),
        _ => None,
    }
}

fn width(w: u8) -> usize {
    [1, 2, 4, 8, 0, 3][usize::from(w % 6)]
}

fuzz_target!(|ops: Vec<Op>| {
    let p = Platform::new();
    // The UART's transmit model: divisor latch (LCR bit 7), loopback (MCR
    // bit 4).
    let (mut lcr, mut mcr) = (0u8, 0u8);
    let mut expected_output = Vec::new();
    let mut timer_fired: Option<Duration> = None;
    for op in ops.iter().take(512) {
        match op {
            Op::PioRead { port, width: w } => {
                let addr = port.addr();
                let mut data = vec![0u8; width(*w)];
                let hit = p.pio.read(addr, &mut data);
                let mapped = (COM1..COM1 + 8).contains(&addr)
                    || (I8042..I8042 + 5).contains(&addr)
                    || (ACPI_SLEEP_CONTROL..ACPI_SLEEP_CONTROL + 5).contains(&addr)
                    || addr == BOOT_TIMER;
                assert_eq!(hit, mapped, "read of port {addr:#x}");
            }
            Op::PioWrite { port, data } => {
                let addr = port.addr();
                let data = &data[..data.len().min(8)];
                p.pio.write(addr, data);
                if addr == BOOT_TIMER && data.first() == Some(&BOOT_MAGIC) {
                    assert!(
                        p.timer.lock().unwrap().elapsed().is_some(),
                        "the boot timer missed its magic value"
                    );
                }
                let got: Vec<PowerEvent> = p.events.try_iter().collect();
                let want: Vec<PowerEvent> = expected_request(addr, data).into_iter().collect();
                assert_eq!(got, want, "write {data:02x?} to port {addr:#x}");
                if let [value] = data {
                    match addr.checked_sub(COM1) {
                        Some(0) if lcr & 0x80 == 0 && mcr & 0x10 == 0 => {
                            expected_output.push(*value)
                        }
                        Some(3) => lcr = *value,
                        Some(4) => mcr = *value,
                        _ => {}
                    }
                }
            }
            Op::MmioRead { offset, width: w } => {
                let mut data = vec![0u8; width(*w)];
                let offset = u64::from(*offset % 0x1100);
                let hit = p.mmio.read(PL061_BASE + offset, &mut data);
                assert_eq!(hit, offset < 0x1000, "read of PL061 offset {offset:#x}");
            }
            Op::MmioWrite { offset, data } => {
                let _ = p.pl061_irq.read();
                p.mmio.write(
                    PL061_BASE + u64::from(*offset % 0x1100),
                    &data[..data.len().min(8)],
                );
                let raised = p.pl061_irq.read().unwrap_or(0);
                assert!(raised <= 1, "{raised} interrupts from one access");
            }
            Op::SerialInput(bytes) => {
                let bytes = &bytes[..bytes.len().min(128)];
                let taken = p.serial.lock().unwrap().enqueue_input(bytes);
                assert!(taken <= bytes.len());
            }
            Op::PressButton => {
                p.button.press();
                assert_eq!(p.button_irq.read().unwrap_or(0), 1);
            }
            Op::PowerKey { pin, high } => {
                let _ = p.pl061_irq.read();
                p.pl061.lock().unwrap().set_input(*pin, *high);
                assert!(p.pl061_irq.read().unwrap_or(0) <= 1);
            }
        }
        let fired = p.timer.lock().unwrap().elapsed();
        match (timer_fired, fired) {
            (Some(a), Some(b)) => assert_eq!(a, b, "the boot timer fired twice"),
            (None, f) => timer_fired = f,
            (Some(_), None) => panic!("the boot timer forgot it fired"),
        }
    }
    assert!(p
        .serial
        .lock()
        .unwrap()
        .flush_output(Duration::from_secs(10)));
    assert_eq!(
        *p.output.0.lock().unwrap(),
        expected_output,
        "serial output"
    );
});
