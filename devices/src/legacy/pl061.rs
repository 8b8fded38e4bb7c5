//! ARM PrimeCell PL061 GPIO controller: 8 lines, the arm64 guest's power
//! key. The VMM drives an input line (the device tree ties line 3 to a
//! `gpio-keys` `KEY_POWER`), the guest's stock `pl061` driver takes the
//! interrupt and `gpio_keys` reports the key, as on QEMU's `virt` machine.
//!
//! Registers (PL061 TRM): `GPIODATA` at 0x000-0x3fc with address bits 9:2 as
//! the bit mask, `DIR` 0x400, `IS` 0x404 (1 = level), `IBE` 0x408 (both
//! edges), `IEV` 0x40c (1 = rising/high), `IE` 0x410, `RIS` 0x414, `MIS`
//! 0x418, `IC` 0x41c (write 1 to clear), `AFSEL` 0x420, and the PrimeCell
//! ID bytes at 0xfe0-0xffc the AMBA bus matches the driver with. The
//! interrupt goes out through an irqfd: one edge each time the masked status
//! becomes non-zero (and again after a clear that leaves bits pending).

use vmm_sys_util::eventfd::EventFd;

use crate::bus::BusDevice;

/// Size of the register window.
pub const PL061_RANGE_LEN: u64 = 0x1000;

const DIR: u64 = 0x400;
const IS: u64 = 0x404;
const IBE: u64 = 0x408;
const IEV: u64 = 0x40c;
const IE: u64 = 0x410;
const RIS: u64 = 0x414;
const MIS: u64 = 0x418;
const IC: u64 = 0x41c;
const AFSEL: u64 = 0x420;
const ID_START: u64 = 0xfe0;
/// PeriphID0-3 (part 0x061, designer ARM, revision 1) and PCellID0-3.
const ID: [u8; 8] = [0x61, 0x10, 0x04, 0x00, 0x0d, 0xf0, 0x05, 0xb1];

/// The GPIO controller.
pub struct Pl061 {
    /// Levels driven by the guest on its output lines.
    data: u8,
    /// Levels on the input lines, driven by the VMM.
    input: u8,
    dir: u8,
    is: u8,
    ibe: u8,
    iev: u8,
    ie: u8,
    ris: u8,
    afsel: u8,
    irq: EventFd,
    /// Whether the interrupt output is asserted (masked status non-zero).
    asserted: bool,
}

impl Pl061 {
    /// A controller with all lines low, inputs, interrupts masked.
    pub fn new(irq: EventFd) -> Self {
        Self {
            data: 0,
            input: 0,
            dir: 0,
            is: 0,
            ibe: 0,
            iev: 0,
            ie: 0,
            ris: 0,
            afsel: 0,
            irq,
            asserted: false,
        }
    }

    /// What the guest reads on the lines: its own outputs, the VMM's inputs.
    fn levels(&self) -> u8 {
        (self.data & self.dir) | (self.input & !self.dir)
    }

    /// Level-sensitive lines keep their raw status while the level matches.
    fn refresh_level_status(&mut self) {
        let levels = self.levels();
        let matching = !(levels ^ self.iev);
        self.ris = (self.ris & !self.is) | (matching & self.is);
    }

    /// Drives input line `pin` (0-7) to `high`; latches edge interrupts.
    pub fn set_input(&mut self, pin: u8, high: bool) {
        if pin > 7 {
            return;
        }
        let bit = 1u8 << pin;
        let old = self.levels();
        if high {
            self.input |= bit;
        } else {
            self.input &= !bit;
        }
        let changed = (old ^ self.levels()) & bit & !self.dir;
        if changed != 0 {
            let rising = self.levels() & bit != 0;
            let edge_fires = self.ibe & bit != 0 || ((self.iev & bit != 0) == rising);
            if self.is & bit == 0 && edge_fires {
                self.ris |= bit;
            }
        }
        self.update_irq(false);
    }

    /// Recomputes the interrupt output; pulses the irqfd on a rising output,
    /// or when `repeat` and the output stays asserted.
    fn update_irq(&mut self, repeat: bool) {
        self.refresh_level_status();
        let active = self.ris & self.ie != 0;
        if active && (!self.asserted || repeat) {
            if let Err(e) = self.irq.write(1) {
                crate::guest_warn!("pl061: cannot raise the interrupt: {e}");
            }
        }
        self.asserted = active;
    }

    fn read_reg(&self, offset: u64) -> u8 {
        match offset {
            0..=0x3fc => self.levels() & ((offset >> 2) as u8),
            DIR => self.dir,
            IS => self.is,
            IBE => self.ibe,
            IEV => self.iev,
            IE => self.ie,
            RIS => self.ris,
            MIS => self.ris & self.ie,
            AFSEL => self.afsel,
            ID_START..=0xffc if offset % 4 == 0 => ID[((offset - ID_START) / 4) as usize],
            _ => 0,
        }
    }

    fn write_reg(&mut self, offset: u64, value: u8) {
        match offset {
            0..=0x3fc => {
                let mask = (offset >> 2) as u8 & self.dir;
                self.data = (self.data & !mask) | (value & mask);
            }
            DIR => self.dir = value,
            IS => self.is = value,
            IBE => self.ibe = value,
            IEV => self.iev = value,
            IE => self.ie = value,
            IC => {
                self.ris &= !value;
                self.update_irq(true);
                return;
            }
            AFSEL => self.afsel = value,
            _ => return,
        }
        self.update_irq(false);
    }
}

impl BusDevice for Pl061 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        // 8-bit registers on a 32-bit bus: the value in the low byte.
        data.fill(0);
        if let Some(first) = data.first_mut() {
            *first = self.read_reg(offset);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let Some(&value) = data.first() {
            self.write_reg(offset, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev() -> (Pl061, EventFd) {
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let probe = irq.try_clone().unwrap();
        (Pl061::new(irq), probe)
    }

    fn rd(d: &mut Pl061, off: u64) -> u8 {
        let mut b = [0u8; 4];
        d.read(off, &mut b);
        b[0]
    }

    fn pulses(probe: &EventFd) -> u64 {
        probe.read().unwrap_or(0)
    }

    #[test]
    fn primecell_id_is_readable() {
        let (mut d, _) = dev();
        let id: Vec<u8> = (0..8).map(|i| rd(&mut d, 0xfe0 + 4 * i)).collect();
        assert_eq!(id, ID);
    }

    #[test]
    fn both_edges_interrupt_like_gpio_keys_asks() {
        let (mut d, probe) = dev();
        // What Linux's pl061 driver does for IRQ_TYPE_EDGE_BOTH on line 3.
        d.write(IBE, &[0x08]);
        d.write(IE, &[0x08]);
        d.set_input(3, true);
        assert_eq!(pulses(&probe), 1);
        assert_eq!(rd(&mut d, MIS), 0x08);
        // GPIODATA with mask bit 3 (address 0x20) reads the key as pressed.
        assert_eq!(rd(&mut d, 0x20), 0x08);
        assert_eq!(rd(&mut d, 0x10), 0x00, "other lines masked out");
        d.write(IC, &[0x08]);
        assert_eq!(rd(&mut d, RIS), 0);
        assert_eq!(pulses(&probe), 0, "nothing left pending");
        d.set_input(3, false);
        assert_eq!(pulses(&probe), 1, "release is an edge too");
        assert_eq!(rd(&mut d, 0x20), 0);
    }

    #[test]
    fn masked_and_wrong_edge_lines_do_not_interrupt() {
        let (mut d, probe) = dev();
        d.write(IBE, &[0x08]);
        d.set_input(3, true);
        assert_eq!(pulses(&probe), 0, "IE masked");
        assert_eq!(rd(&mut d, RIS), 0x08, "raw status latched anyway");
        assert_eq!(rd(&mut d, MIS), 0);
        // Unmasking a latched event raises the interrupt.
        d.write(IE, &[0x08]);
        assert_eq!(pulses(&probe), 1);
        // Rising-only edge (IEV=1), falling transition: no event.
        let (mut d, probe) = dev();
        d.write(IEV, &[0x08]);
        d.write(IE, &[0x08]);
        d.set_input(3, true);
        assert_eq!(pulses(&probe), 1);
        d.write(IC, &[0x08]);
        d.set_input(3, false);
        assert_eq!(pulses(&probe), 0);
        assert_eq!(rd(&mut d, RIS), 0);
    }

    #[test]
    fn level_interrupts_follow_the_line_and_survive_a_clear() {
        let (mut d, probe) = dev();
        d.write(IS, &[0x08]);
        d.write(IEV, &[0x08]);
        d.write(IE, &[0x08]);
        assert_eq!(pulses(&probe), 0);
        d.set_input(3, true);
        assert_eq!(pulses(&probe), 1);
        // Clearing while the level is still high re-asserts.
        d.write(IC, &[0x08]);
        assert_eq!(rd(&mut d, MIS), 0x08);
        assert_eq!(pulses(&probe), 1);
        d.set_input(3, false);
        assert_eq!(rd(&mut d, MIS), 0);
    }

    #[test]
    fn outputs_are_written_through_the_address_mask() {
        let (mut d, _) = dev();
        d.write(DIR, &[0x01]);
        d.write(0x3fc, &[0xff]);
        assert_eq!(
            rd(&mut d, 0x3fc),
            0x01,
            "only the output line takes the write"
        );
        d.set_input(0, false);
        assert_eq!(rd(&mut d, 0x04), 0x01, "an output ignores the input level");
        d.set_input(9, true);
        d.write(0x800, &[1]);
        assert_eq!(rd(&mut d, 0x800), 0);
        let mut wide = [0xaa; 8];
        d.read(0xfe0, &mut wide);
        assert_eq!(wide, [0x61, 0, 0, 0, 0, 0, 0, 0]);
        d.write(IE, &[]);
    }
}
