//! Initial vCPU state for the Linux 64-bit boot protocol: flat GDT, identity
//! page tables for the first GiB, long mode, and the boot registers.

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_segment, kvm_sregs};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use super::layout::{
    BOOT_GDT_START, BOOT_IDT_START, BOOT_STACK_POINTER, PDE_START, PDPTE_START, PML4_START,
    ZERO_PAGE_START,
};

/// Errors writing boot-time structures into guest memory.
#[derive(Debug, thiserror::Error)]
pub enum RegsError {
    /// A GDT, IDT or page-table write fell outside guest memory.
    #[error("cannot write boot {what} into guest memory: {source}")]
    Write {
        /// Which structure failed.
        what: &'static str,
        /// The memory error.
        source: vm_memory::GuestMemoryError,
    },
}

const X86_CR0_PE: u64 = 0x1;
const X86_CR0_ET: u64 = 0x10;
const X86_CR0_PG: u64 = 0x8000_0000;
const X86_CR4_PAE: u64 = 0x20;
const EFER_LME: u64 = 0x100;
const EFER_LMA: u64 = 0x400;

/// GDT entries: null, 64-bit code, data, TSS.
const GDT: [u64; 4] = [
    gdt_entry(0, 0, 0),
    gdt_entry(0xa09b, 0, 0xfffff),
    gdt_entry(0xc093, 0, 0xfffff),
    gdt_entry(0x808b, 0, 0xfffff),
];

/// Packs a GDT descriptor from access/flags bits, base and limit.
const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << (56 - 24))
        | ((flags as u64 & 0x0000_f0ff) << 40)
        | ((limit as u64 & 0x000f_0000) << (48 - 16))
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
}

/// Expands GDT descriptor `index` into the segment KVM wants.
fn segment_from_gdt(entry: u64, index: u8) -> kvm_segment {
    let base = ((entry >> 16) & 0x00ff_ffff) | ((entry >> 32) & 0xff00_0000);
    let raw_limit = ((entry & 0xffff) | ((entry >> 32) & 0x000f_0000)) as u32;
    let granularity = ((entry >> 55) & 1) as u8;
    let limit = if granularity == 1 {
        (raw_limit << 12) | 0xfff
    } else {
        raw_limit
    };
    kvm_segment {
        base,
        limit,
        selector: u16::from(index) * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present: ((entry >> 47) & 1) as u8,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g: granularity,
        avl: ((entry >> 52) & 1) as u8,
        unusable: u8::from(((entry >> 47) & 1) == 0),
        padding: 0,
    }
}

fn write<M: GuestMemoryBackend, T: vm_memory::ByteValued>(
    mem: &M,
    value: T,
    addr: u64,
    what: &'static str,
) -> Result<(), RegsError> {
    mem.write_obj(value, GuestAddress(addr))
        .map_err(|source| RegsError::Write { what, source })
}

/// Writes the GDT, IDT and identity page tables, and returns the special
/// registers for a vCPU entering the kernel in 64-bit mode.
pub fn setup_sregs<M: GuestMemoryBackend>(
    mem: &M,
    mut sregs: kvm_sregs,
) -> Result<kvm_sregs, RegsError> {
    for (i, entry) in GDT.iter().enumerate() {
        write(mem, *entry, BOOT_GDT_START + i as u64 * 8, "GDT")?;
    }
    write(mem, 0u64, BOOT_IDT_START, "IDT")?;

    let code = segment_from_gdt(GDT[1], 1);
    let data = segment_from_gdt(GDT[2], 2);
    let tss = segment_from_gdt(GDT[3], 3);
    sregs.gdt.base = BOOT_GDT_START;
    sregs.gdt.limit = (std::mem::size_of_val(&GDT) - 1) as u16;
    sregs.idt.base = BOOT_IDT_START;
    sregs.idt.limit = 7;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;

    // Identity-map the first GiB with 2 MiB pages: PML4[0] -> PDPT[0] -> PD.
    write(mem, PDPTE_START | 0x03, PML4_START, "PML4")?;
    write(mem, PDE_START | 0x03, PDPTE_START, "PDPTE")?;
    for i in 0..512u64 {
        write(mem, (i << 21) | 0x83, PDE_START + i * 8, "PDE")?;
    }
    sregs.cr3 = PML4_START;
    sregs.cr4 |= X86_CR4_PAE;
    sregs.cr0 |= X86_CR0_PE | X86_CR0_ET | X86_CR0_PG;
    sregs.efer |= EFER_LME | EFER_LMA;
    Ok(sregs)
}

/// General registers at the kernel's 64-bit entry point.
pub fn boot_regs(entry: GuestAddress) -> kvm_regs {
    kvm_regs {
        rflags: 0x2,
        rip: entry.0,
        rsp: BOOT_STACK_POINTER,
        rbp: BOOT_STACK_POINTER,
        rsi: ZERO_PAGE_START,
        ..Default::default()
    }
}

/// FPU state after reset (x87 control word 0x37f, MXCSR 0x1f80).
pub fn boot_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
    }

    #[test]
    fn gdt_segments_round_trip() {
        let code = segment_from_gdt(GDT[1], 1);
        assert_eq!(code.selector, 0x8);
        assert_eq!(code.l, 1, "64-bit code segment");
        assert_eq!(code.type_, 0xb);
        assert_eq!(code.limit, 0xffff_ffff);
        assert_eq!(code.present, 1);
        let data = segment_from_gdt(GDT[2], 2);
        assert_eq!((data.selector, data.db, data.type_), (0x10, 1, 3));
        assert_eq!(segment_from_gdt(GDT[0], 0).unusable, 1);
    }

    #[test]
    fn long_mode_with_identity_map() {
        let m = mem();
        let sregs = setup_sregs(&m, kvm_sregs::default()).unwrap();
        assert_eq!(sregs.cr3, PML4_START);
        assert_ne!(sregs.cr0 & X86_CR0_PG, 0);
        assert_ne!(sregs.cr4 & X86_CR4_PAE, 0);
        assert_eq!(sregs.efer & (EFER_LME | EFER_LMA), EFER_LME | EFER_LMA);
        let pml4: u64 = m.read_obj(GuestAddress(PML4_START)).unwrap();
        assert_eq!(pml4, PDPTE_START | 3);
        let last_pde: u64 = m.read_obj(GuestAddress(PDE_START + 511 * 8)).unwrap();
        assert_eq!(last_pde, (511 << 21) | 0x83);
        let gdt1: u64 = m.read_obj(GuestAddress(BOOT_GDT_START + 8)).unwrap();
        assert_eq!(gdt1, GDT[1]);
    }

    #[test]
    fn sregs_fail_cleanly_without_low_memory() {
        let m = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0x10_0000), 0x1000)]).unwrap();
        assert!(setup_sregs(&m, kvm_sregs::default()).is_err());
    }

    #[test]
    fn boot_regs_point_at_entry_and_zero_page() {
        let regs = boot_regs(GuestAddress(0x20_0200));
        assert_eq!(regs.rip, 0x20_0200);
        assert_eq!(regs.rsi, ZERO_PAGE_START);
        assert_eq!(regs.rflags, 2);
    }
}
