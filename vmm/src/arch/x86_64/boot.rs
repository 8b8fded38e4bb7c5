//! Guest memory layout, kernel/initrd loading and the Linux zero page.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use linux_loader::cmdline::Cmdline;
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::loader::{BzImage, KernelLoader};
use vm_memory::{
    Address, ByteValued, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap,
    GuestMemoryRegion,
};

use super::elf::SegmentLoad;
pub use crate::arch::file_map::map_file_into_guest;
use crate::arch::file_map::{BootFileUse, BootFiles};
use crate::arch::kernel_fill::{KernelFill, UserFaults};

use super::layout::{
    ACPI_AREA_END, ACPI_RESET_PORT, ACPI_RESET_VALUE, CMDLINE_MAX_SIZE, CMDLINE_START, EBDA_START,
    HIMEM_START, MMIO_GAP_END, MMIO_GAP_START, RESET_VECTOR, ZERO_PAGE_START,
};

/// Errors loading the kernel or initrd, or writing boot parameters.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// The kernel file is neither an ELF vmlinux nor a bzImage.
    #[error("kernel is not a valid ELF vmlinux or bzImage: {0}")]
    KernelFormat(linux_loader::loader::Error),
    /// The ELF kernel is malformed or does not fit in guest memory.
    #[error(transparent)]
    Elf(#[from] super::elf::ElfError),
    /// Reading a boot file failed.
    #[error("cannot read {what}: {source}")]
    Read {
        /// Which file.
        what: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The initrd does not fit below the kernel's highest allowed address.
    #[error(
        "initrd of {size} bytes does not fit in guest memory; give the VM more memory (--mem)"
    )]
    InitrdTooLarge {
        /// Size of the initrd.
        size: u64,
    },
    /// The kernel command line is invalid or too long.
    #[error("invalid kernel command line: {0}")]
    Cmdline(linux_loader::cmdline::Error),
    /// Writing boot structures into guest memory failed.
    #[error("cannot write {what} into guest memory")]
    Write {
        /// Which structure.
        what: &'static str,
    },
}

// The ACPI tables, the reset stub and the kernel must not overlap.
const _: () = assert!(ACPI_AREA_END <= RESET_VECTOR && RESET_VECTOR + 9 <= HIMEM_START);

/// Bootloader id in `type_of_loader`: "undefined".
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448;
const KERNEL_MIN_ALIGNMENT_BYTES: u32 = 0x100_0000;
/// Offset of the 64-bit entry point from the load address of a bzImage.
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;
const E820_RAM: u32 = 1;
const E820_RESERVED: u32 = 2;

/// Guest RAM ranges for `mem_size` bytes: RAM from 0 up to the 32-bit MMIO
/// gap, and the rest above 4 GiB.
pub fn guest_memory_ranges(mem_size: u64) -> Vec<(GuestAddress, usize)> {
    if mem_size <= MMIO_GAP_START {
        vec![(GuestAddress(0), mem_size as usize)]
    } else {
        vec![
            (GuestAddress(0), MMIO_GAP_START as usize),
            (
                GuestAddress(MMIO_GAP_END),
                (mem_size - MMIO_GAP_START) as usize,
            ),
        ]
    }
}

/// What loading the kernel produced.
pub struct LoadedKernel {
    /// Where the vCPU starts (the kernel's 64-bit entry point).
    pub entry: GuestAddress,
    /// The bzImage setup header, to be copied into the zero page.
    pub setup_header: Option<setup_header>,
    /// An ELF kernel's fill behind the guest, while it runs
    /// ([`crate::arch::kernel_fill`]).
    pub fill: Option<KernelFill>,
}

/// Loads an ELF vmlinux or a bzImage into guest memory, mapping what
/// `files` says is worth mapping ([`crate::arch::file_map`]) and filling
/// an ELF kernel behind the guest with `faults` if `files` says so
/// ([`crate::arch::kernel_fill`]).
pub fn load_kernel(
    mem: &GuestMemoryMmap,
    kernel: &mut File,
    files: BootFiles,
    faults: Option<&UserFaults>,
) -> Result<LoadedKernel, BootError> {
    let mut magic = [0u8; 4];
    kernel
        .seek(SeekFrom::Start(0))
        .and_then(|_| kernel.read_exact(&mut magic))
        .and_then(|_| kernel.seek(SeekFrom::Start(0)))
        .map_err(|source| BootError::Read {
            what: "kernel",
            source,
        })?;
    if magic == *b"\x7fELF" {
        let low_ram_end = mem.find_region(GuestAddress(0)).map_or(0, |r| r.len());
        let how = match faults {
            Some(faults) if files.fills_kernel() => SegmentLoad::Fill(faults),
            _ if files.maps(BootFileUse::Kernel) => SegmentLoad::Map,
            _ => SegmentLoad::Copy,
        };
        let loaded = super::elf::load_elf(mem, kernel, HIMEM_START, low_ram_end, how)?;
        Ok(LoadedKernel {
            entry: loaded.entry,
            setup_header: None,
            fill: loaded.fill,
        })
    } else {
        if let Some(loaded) = map_bzimage(mem, kernel, files) {
            return Ok(loaded);
        }
        let result = BzImage::load(mem, None, kernel, Some(GuestAddress(HIMEM_START)))
            .map_err(BootError::KernelFormat)?;
        Ok(LoadedKernel {
            entry: result.kernel_load.unchecked_add(BZIMAGE_64BIT_ENTRY_OFFSET),
            setup_header: result.setup_header,
            fill: None,
        })
    }
}

/// Loads a bzImage by mapping its protected-mode payload at its load address
/// (see [`map_file_into_guest`]); `None` if the image cannot be mapped that
/// way or `files` says not to (the caller falls back to copying, which also
/// validates it fully).
fn map_bzimage<M: GuestMemoryBackend>(
    mem: &M,
    kernel: &mut File,
    files: BootFiles,
) -> Option<LoadedKernel> {
    if !files.maps(BootFileUse::CompressedKernel) {
        return None;
    }
    let file_len = kernel.metadata().ok()?.len();
    let mut hdr = setup_header::default();
    kernel.seek(SeekFrom::Start(0x1f1)).ok()?;
    kernel.read_exact(hdr.as_mut_slice()).ok()?;
    kernel.seek(SeekFrom::Start(0)).ok()?;
    // Same checks as the copying loader: "HdrS", protocol >= 2.00, loaded
    // high, and a load address at or above 1 MiB.
    if hdr.header != KERNEL_HDR_MAGIC
        || hdr.version < 0x0200
        || hdr.loadflags & 0x1 == 0
        || u64::from(hdr.code32_start) < HIMEM_START
    {
        return None;
    }
    let setup_sects = if hdr.setup_sects == 0 {
        4
    } else {
        u64::from(hdr.setup_sects)
    };
    let payload_offset = (setup_sects + 1) * 512;
    let payload_len = file_len.checked_sub(payload_offset)?;
    let load = GuestAddress(u64::from(hdr.code32_start));
    if !map_file_into_guest(mem, load, kernel, payload_offset, payload_len) {
        return None;
    }
    Some(LoadedKernel {
        entry: load.unchecked_add(BZIMAGE_64BIT_ENTRY_OFFSET),
        setup_header: Some(hdr),
        fill: None,
    })
}

/// Where an initrd was placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitrdRegion {
    /// Guest address of the first byte.
    pub addr: GuestAddress,
    /// Size in bytes.
    pub size: u64,
}

/// Puts the initrd at the top of low memory (below the MMIO gap and the
/// kernel's `initrd_addr_max`), page aligned: copied, or mapped if `files`
/// says so.
pub fn load_initrd<M: GuestMemoryBackend>(
    mem: &M,
    initrd: &mut File,
    initrd_addr_max: u64,
    files: BootFiles,
) -> Result<InitrdRegion, BootError> {
    let read_err = |source| BootError::Read {
        what: "initrd",
        source,
    };
    let size = initrd.metadata().map_err(read_err)?.len();
    let low_mem_end = mem
        .find_region(GuestAddress(0))
        .map(|r| r.len())
        .unwrap_or(0);
    let top = low_mem_end.min(initrd_addr_max.saturating_add(1));
    let addr = top
        .checked_sub(size)
        .map(|a| a & !0xfff)
        .filter(|&a| a >= HIMEM_START)
        .ok_or(BootError::InitrdTooLarge { size })?;
    if !(files.maps(BootFileUse::Initrd)
        && map_file_into_guest(mem, GuestAddress(addr), initrd, 0, size))
    {
        initrd.seek(SeekFrom::Start(0)).map_err(read_err)?;
        mem.read_exact_volatile_from(GuestAddress(addr), initrd, size as usize)
            .map_err(|_| BootError::Write { what: "initrd" })?;
    }
    Ok(InitrdRegion {
        addr: GuestAddress(addr),
        size,
    })
}

/// Real-mode code at the reset vector: `mov al, ACPI_RESET_VALUE;
/// mov dx, ACPI_RESET_PORT; out dx, al; hlt; jmp $-1`.
///
/// There is no firmware, yet Linux falls back to a BIOS reboot (jumping to
/// `f000:fff0`) when its other reset methods did not work; with this stub
/// that path still ends in a reset request instead of executing zeros.
pub fn reset_vector_stub() -> [u8; 9] {
    let [port_lo, port_hi] = ACPI_RESET_PORT.to_le_bytes();
    [
        0xb0,
        ACPI_RESET_VALUE,
        0xba,
        port_lo,
        port_hi,
        0xee,
        0xf4,
        0xeb,
        0xfd,
    ]
}

/// Writes [`reset_vector_stub`] at [`RESET_VECTOR`].
pub fn setup_reset_vector<M: GuestMemoryBackend>(mem: &M) -> Result<(), BootError> {
    mem.write_slice(&reset_vector_stub(), GuestAddress(RESET_VECTOR))
        .map_err(|_| BootError::Write {
            what: "reset vector",
        })
}

/// Builds the command line: the VMM's defaults, then the user's parameters.
pub fn build_cmdline(default_args: &str, user_params: &[String]) -> Result<Cmdline, BootError> {
    crate::arch::kernel_cmdline(CMDLINE_MAX_SIZE, default_args, user_params)
        .map_err(BootError::Cmdline)
}

/// Writes the command line and the zero page (setup header, e820 map, initrd,
/// RSDP pointer).
pub fn setup_zero_page<M: GuestMemoryBackend>(
    mem: &M,
    cmdline: &Cmdline,
    kernel: &LoadedKernel,
    initrd: Option<InitrdRegion>,
    rsdp: GuestAddress,
) -> Result<(), BootError> {
    linux_loader::loader::load_cmdline(mem, GuestAddress(CMDLINE_START), cmdline).map_err(
        |_| BootError::Write {
            what: "command line",
        },
    )?;
    let cmdline_len = cmdline
        .as_cstring()
        .map_err(BootError::Cmdline)?
        .as_bytes()
        .len();

    let mut params = boot_params::default();
    match kernel.setup_header {
        Some(hdr) => params.hdr = hdr,
        None => {
            params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
            params.hdr.header = KERNEL_HDR_MAGIC;
            params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT_BYTES;
        }
    }
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.cmd_line_ptr = CMDLINE_START as u32;
    params.hdr.cmdline_size = cmdline_len as u32;
    if let Some(initrd) = initrd {
        params.hdr.ramdisk_image = initrd.addr.raw_value() as u32;
        params.hdr.ramdisk_size = initrd.size as u32;
    }
    params.acpi_rsdp_addr = rsdp.raw_value();

    let mut e820 = vec![
        (0, EBDA_START, E820_RAM),
        (EBDA_START, HIMEM_START - EBDA_START, E820_RESERVED),
    ];
    for region in mem.iter() {
        let start = region.start_addr().raw_value().max(HIMEM_START);
        let end = region.start_addr().raw_value() + region.len();
        if end > start {
            e820.push((start, end - start, E820_RAM));
        }
    }
    for (i, (addr, size, type_)) in e820.iter().enumerate() {
        params.e820_table[i] = boot_e820_entry {
            addr: *addr,
            size: *size,
            r#type: *type_,
        };
    }
    params.e820_entries = e820.len() as u8;

    mem.write_obj(params, GuestAddress(ZERO_PAGE_START))
        .map_err(|_| BootError::Write { what: "zero page" })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::FileExt;
    use vm_memory::GuestMemoryMmap;

    use crate::arch::file_map::tests::tempfile;

    fn mem(size: u64) -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&guest_memory_ranges(size)).unwrap()
    }

    #[test]
    fn memory_splits_around_the_mmio_gap() {
        assert_eq!(
            guest_memory_ranges(256 << 20),
            vec![(GuestAddress(0), 256 << 20)]
        );
        let big = guest_memory_ranges(4 << 30);
        assert_eq!(big[0], (GuestAddress(0), MMIO_GAP_START as usize));
        assert_eq!(
            big[1],
            (
                GuestAddress(MMIO_GAP_END),
                ((4u64 << 30) - MMIO_GAP_START) as usize
            )
        );
    }

    #[test]
    fn reset_vector_stub_writes_the_acpi_reset_register() {
        let m = mem(2 << 20);
        setup_reset_vector(&m).unwrap();
        let mut code = [0u8; 9];
        m.read_slice(&mut code, GuestAddress(RESET_VECTOR)).unwrap();
        // mov al, 1; mov dx, 0x604; out dx, al; hlt; jmp back to hlt.
        assert_eq!(code, [0xb0, 0x01, 0xba, 0x04, 0x06, 0xee, 0xf4, 0xeb, 0xfd]);
    }

    #[test]
    fn an_overlong_cmdline_is_a_cmdline_error() {
        let long = "x".repeat(CMDLINE_MAX_SIZE);
        assert!(matches!(
            build_cmdline("console=ttyS0", &[long]),
            Err(BootError::Cmdline(_))
        ));
    }

    #[test]
    fn rejects_a_kernel_that_is_neither_elf_nor_bzimage() {
        let m = mem(64 << 20);
        let mut f = tempfile("boot");
        f.write_all(&[0u8; 4096]).unwrap();
        assert!(matches!(
            load_kernel(&m, &mut f, BootFiles::Recommended, None),
            Err(BootError::KernelFormat(_))
        ));
    }

    #[test]
    fn loads_a_minimal_bzimage_with_64bit_entry() {
        // A synthetic bzImage: one setup sector plus the boot sector, header
        // magic, protocol 2.15, loaded high, followed by a payload.
        let mut image = vec![0u8; 1024 + 4096];
        image[0x1f1] = 1; // setup_sects
        image[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
        image[0x202..0x206].copy_from_slice(&KERNEL_HDR_MAGIC.to_le_bytes());
        image[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        image[0x211] = 0x1; // loadflags: LOADED_HIGH
        image[0x214..0x218].copy_from_slice(&(HIMEM_START as u32).to_le_bytes());
        image[1024..1028].copy_from_slice(b"KERN");
        let mut f = tempfile("boot");
        f.write_all(&image).unwrap();
        let m = mem(64 << 20);
        let k = load_kernel(&m, &mut f, BootFiles::Recommended, None).unwrap();
        assert_eq!(k.entry, GuestAddress(HIMEM_START + 0x200));
        let mut payload = [0u8; 4];
        m.read_slice(&mut payload, GuestAddress(HIMEM_START))
            .unwrap();
        assert_eq!(&payload, b"KERN");
    }

    /// A bzImage whose payload starts at 4096 (setup_sects = 7), so it can be
    /// mapped: "KERN" at the payload's start, 0x5a as its last byte.
    fn page_aligned_bzimage() -> (File, usize) {
        let mut image = vec![0u8; 4096 + 3 * 4096 + 100];
        image[0x1f1] = 7;
        image[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
        image[0x202..0x206].copy_from_slice(&KERNEL_HDR_MAGIC.to_le_bytes());
        image[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        image[0x211] = 0x1;
        image[0x214..0x218].copy_from_slice(&(HIMEM_START as u32).to_le_bytes());
        image[4096..4100].copy_from_slice(b"KERN");
        let last = image.len() - 1;
        image[last] = 0x5a;
        let mut f = tempfile("boot");
        f.write_all(&image).unwrap();
        (f, last)
    }

    #[test]
    fn page_aligned_bzimage_payload_is_mapped_copy_on_write() {
        let (mut f, last) = page_aligned_bzimage();
        let m = mem(64 << 20);
        let k = load_kernel(&m, &mut f, BootFiles::Recommended, None).unwrap();
        assert_eq!(k.entry, GuestAddress(HIMEM_START + 0x200));
        assert_eq!(k.setup_header.map(|h| h.setup_sects), Some(7));
        let mut payload = [0u8; 4];
        m.read_slice(&mut payload, GuestAddress(HIMEM_START))
            .unwrap();
        assert_eq!(&payload, b"KERN");
        let tail: u8 = m
            .read_obj(GuestAddress(HIMEM_START + (last - 4096) as u64))
            .unwrap();
        assert_eq!(tail, 0x5a);
        // Past the payload in its last page: zeros.
        let after: u8 = m
            .read_obj(GuestAddress(HIMEM_START + (last - 4096) as u64 + 1))
            .unwrap();
        assert_eq!(after, 0);
        // A mapping, not a copy: an in-place rewrite of a page the guest has
        // not written shows through (a copy would still read "KERN").
        f.write_all_at(b"NEW!", 4096 + 4096).unwrap();
        let mut second_page = [0u8; 4];
        m.read_slice(&mut second_page, GuestAddress(HIMEM_START + 4096))
            .unwrap();
        assert_eq!(&second_page, b"NEW!");
        // Guest writes stay private: the file is unchanged.
        m.write_slice(b"GUEST", GuestAddress(HIMEM_START)).unwrap();
        let mut on_disk = [0u8; 4];
        f.read_exact_at(&mut on_disk, 4096).unwrap();
        assert_eq!(&on_disk, b"KERN");
    }

    #[test]
    fn with_copy_all_the_bzimage_is_copied() {
        let (mut f, _) = page_aligned_bzimage();
        let m = mem(64 << 20);
        let k = load_kernel(&m, &mut f, BootFiles::CopyAll, None).unwrap();
        assert_eq!(k.entry, GuestAddress(HIMEM_START + 0x200));
        f.write_all_at(b"NEW!", 4096).unwrap();
        let mut payload = [0u8; 4];
        m.read_slice(&mut payload, GuestAddress(HIMEM_START))
            .unwrap();
        assert_eq!(&payload, b"KERN", "a copy does not follow the file");
    }

    #[test]
    fn the_initrd_is_copied_unless_map_all_is_asked_for() {
        for (files, follows_file) in [
            (BootFiles::Recommended, false),
            (BootFiles::MapAll, true),
            (BootFiles::CopyAll, false),
        ] {
            let m = mem(64 << 20);
            let mut f = tempfile("boot-initrd");
            f.write_all(&[7u8; 3 * 4096]).unwrap();
            let r = load_initrd(&m, &mut f, 0x7fff_ffff, files).unwrap();
            f.write_all_at(&[9u8; 4], 4096).unwrap();
            let b: u8 = m.read_obj(r.addr.unchecked_add(4096)).unwrap();
            assert_eq!(b == 9, follows_file, "{files:?}");
        }
    }

    #[test]
    fn initrd_goes_to_the_top_of_low_memory_page_aligned() {
        let m = mem(64 << 20);
        let mut f = tempfile("boot");
        f.write_all(&[7u8; 5000]).unwrap();
        f.seek(SeekFrom::Start(0)).unwrap();
        let r = load_initrd(&m, &mut f, 0x7fff_ffff, BootFiles::Recommended).unwrap();
        assert_eq!(r.size, 5000);
        assert_eq!(r.addr.raw_value() % 4096, 0);
        assert!(r.addr.raw_value() + 5000 <= 64 << 20);
        let b: u8 = m.read_obj(r.addr.unchecked_add(4999)).unwrap();
        assert_eq!(b, 7);
    }

    #[test]
    fn initrd_larger_than_memory_is_a_clear_error() {
        let m = mem(4 << 20);
        let mut f = tempfile("boot");
        f.set_len(8 << 20).unwrap();
        assert!(matches!(
            load_initrd(&m, &mut f, 0x7fff_ffff, BootFiles::Recommended),
            Err(BootError::InitrdTooLarge { .. })
        ));
    }

    #[test]
    fn zero_page_has_e820_cmdline_initrd_and_rsdp() {
        let m = mem(128 << 20);
        let cmdline = build_cmdline("console=ttyS0", &[]).unwrap();
        let kernel = LoadedKernel {
            entry: GuestAddress(HIMEM_START),
            setup_header: None,
            fill: None,
        };
        let initrd = InitrdRegion {
            addr: GuestAddress(0x400_0000),
            size: 1234,
        };
        setup_zero_page(&m, &cmdline, &kernel, Some(initrd), GuestAddress(0xe0000)).unwrap();
        let p: boot_params = m.read_obj(GuestAddress(ZERO_PAGE_START)).unwrap();
        assert_eq!({ p.hdr.cmd_line_ptr }, CMDLINE_START as u32);
        assert_eq!({ p.hdr.cmdline_size }, 13);
        assert_eq!({ p.hdr.ramdisk_image }, 0x400_0000);
        assert_eq!({ p.hdr.ramdisk_size }, 1234);
        assert_eq!({ p.hdr.type_of_loader }, KERNEL_LOADER_OTHER);
        assert_eq!({ p.acpi_rsdp_addr }, 0xe0000);
        assert_eq!(p.e820_entries, 3);
        let ram_hi = p.e820_table[2];
        assert_eq!(
            ({ ram_hi.addr }, { ram_hi.size }, { ram_hi.r#type }),
            (HIMEM_START, (128 << 20) - HIMEM_START, E820_RAM)
        );
        let mut cl = [0u8; 14];
        m.read_slice(&mut cl, GuestAddress(CMDLINE_START)).unwrap();
        assert_eq!(&cl, b"console=ttyS0\0");
    }
}
