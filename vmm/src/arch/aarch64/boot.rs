//! arm64 boot: guest RAM, the `Image` header, where kernel, initrd and
//! device tree go, and the kernel command line.
//!
//! The boot protocol (Documentation/arch/arm64/booting.rst): the kernel
//! `Image` is loaded `text_offset` bytes above a 2 MiB aligned base, the
//! primary vCPU enters its first byte with `x0` = the device tree's address,
//! MMU off, interrupts masked, at EL1. The initrd is announced in the device
//! tree's `/chosen` node.

use linux_loader::cmdline::Cmdline;
use vm_memory::GuestAddress;

use super::layout::{FDT_MAX_SIZE, KERNEL_ALIGN, PAGE_SIZE, RAM_START};

/// Largest kernel command line accepted (arm64 `COMMAND_LINE_SIZE`).
pub const CMDLINE_MAX_SIZE: usize = 2048;
/// `ARM\x64`, little endian, at offset 0x38 of an arm64 `Image`.
pub const IMAGE_MAGIC: u32 = 0x644d_5241;
/// Size of the arm64 `Image` header.
pub const IMAGE_HEADER_SIZE: usize = 64;

/// Errors loading the kernel or initrd, or writing the device tree.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// The kernel file is not an arm64 `Image`.
    #[error("kernel is not an arm64 Image: {0}")]
    KernelFormat(&'static str),
    /// linux-loader refused the kernel.
    #[cfg(target_arch = "aarch64")]
    #[error("cannot load the kernel Image: {0}")]
    KernelLoad(linux_loader::loader::Error),
    /// Reading a boot file failed.
    #[error("cannot read {what}: {source}")]
    Read {
        /// Which file.
        what: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Kernel, initrd and device tree do not fit into guest RAM.
    #[error("kernel ({kernel} bytes) and initrd ({initrd} bytes) do not fit in {mem} bytes of guest memory; give the VM more memory (--mem)")]
    TooLarge {
        /// Bytes the kernel occupies once running (`image_size`).
        kernel: u64,
        /// Size of the initrd.
        initrd: u64,
        /// Guest RAM.
        mem: u64,
    },
    /// The kernel command line is invalid or too long.
    #[error("invalid kernel command line: {0}")]
    Cmdline(linux_loader::cmdline::Error),
    /// Building the device tree failed.
    #[error("cannot build the device tree: {0}")]
    Fdt(#[from] vm_fdt::Error),
    /// The device tree is larger than the 2 MiB the kernel accepts.
    #[error("device tree of {0} bytes exceeds 2 MiB")]
    FdtTooLarge(usize),
    /// Writing into guest memory failed.
    #[error("cannot write {what} into guest memory")]
    Write {
        /// Which structure.
        what: &'static str,
    },
}

/// Guest RAM for `mem_size` bytes: one range from [`RAM_START`].
pub fn guest_memory_ranges(mem_size: u64) -> Vec<(GuestAddress, usize)> {
    vec![(GuestAddress(RAM_START), mem_size as usize)]
}

/// The fields of an arm64 `Image` header the loader needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageHeader {
    /// Offset of the image above its 2 MiB aligned load base.
    pub text_offset: u64,
    /// Bytes the kernel occupies once running (including its BSS).
    pub image_size: u64,
}

fn le_u64(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(b)
}

/// Parses the first [`IMAGE_HEADER_SIZE`] bytes of an arm64 `Image`.
/// `file_size` stands in for `image_size` on pre-3.17 kernels, which leave
/// it 0 (their `text_offset` is then 0x80000 by convention).
pub fn parse_image_header(bytes: &[u8], file_size: u64) -> Result<ImageHeader, BootError> {
    if bytes.len() < IMAGE_HEADER_SIZE {
        return Err(BootError::KernelFormat(
            "shorter than the 64-byte Image header",
        ));
    }
    let mut magic = [0u8; 4];
    magic.copy_from_slice(&bytes[0x38..0x3c]);
    if u32::from_le_bytes(magic) != IMAGE_MAGIC {
        return Err(BootError::KernelFormat(
            "no ARM\\x64 magic at offset 0x38 (a compressed vmlinuz.gz or an EFI zboot image?)",
        ));
    }
    let image_size = le_u64(bytes, 0x10);
    if image_size == 0 {
        return Ok(ImageHeader {
            text_offset: 0x8_0000,
            image_size: file_size,
        });
    }
    let text_offset = le_u64(bytes, 0x08);
    if text_offset >= KERNEL_ALIGN {
        return Err(BootError::KernelFormat("implausible text_offset"));
    }
    Ok(ImageHeader {
        text_offset,
        image_size: image_size.max(file_size),
    })
}

/// Where the boot pieces go in guest RAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootPlan {
    /// Load address of the `Image` (also the entry point).
    pub kernel: u64,
    /// Start and size of the initrd, if any.
    pub initrd: Option<(u64, u64)>,
    /// Address of the device tree (8-byte aligned; the last 2 MiB of RAM).
    pub fdt: u64,
}

const fn align_down(x: u64, align: u64) -> u64 {
    x & !(align - 1)
}

/// Places the kernel at the start of RAM, the device tree in the last
/// 2 MiB block and the initrd (page aligned) right below it.
pub fn plan(
    mem_size: u64,
    header: ImageHeader,
    initrd_size: Option<u64>,
) -> Result<BootPlan, BootError> {
    let too_large = || BootError::TooLarge {
        kernel: header.image_size,
        initrd: initrd_size.unwrap_or(0),
        mem: mem_size,
    };
    let kernel = RAM_START + header.text_offset;
    let kernel_end = kernel
        .checked_add(header.image_size)
        .ok_or_else(too_large)?;
    let ram_end = RAM_START.checked_add(mem_size).ok_or_else(too_large)?;
    let fdt = align_down(
        ram_end.checked_sub(FDT_MAX_SIZE).ok_or_else(too_large)?,
        KERNEL_ALIGN,
    );
    if fdt < kernel_end {
        return Err(too_large());
    }
    let initrd = match initrd_size {
        None => None,
        Some(size) => {
            let start = align_down(fdt.checked_sub(size).ok_or_else(too_large)?, PAGE_SIZE);
            if start < kernel_end {
                return Err(too_large());
            }
            Some((start, size))
        }
    };
    Ok(BootPlan {
        kernel,
        initrd,
        fdt,
    })
}

/// The kernel command line: `default_args`, then the user's parameters.
pub fn build_cmdline(default_args: &str, user_params: &[String]) -> Result<Cmdline, BootError> {
    crate::arch::kernel_cmdline(CMDLINE_MAX_SIZE, default_args, user_params)
        .map_err(BootError::Cmdline)
}

/// Maps the `Image` and the initrd copy-on-write at the places `plan` chose,
/// as far as `files` asks for it (by default neither: see
/// [`crate::arch::file_map`]; nothing mapped is read or
/// copied before the first guest entry; the module documents what a change of either file
/// after start does, and its `SIGBUS` guard keeps a truncation from killing
/// the VMM). Returns whether each was mapped; what was not (a host page size
/// other than 4 KiB, no free guard slot, a failed `mmap`) is left to the
/// caller to copy. The kernel's BSS above the file's end is guest RAM that
/// is still zero (fresh anonymous memory), as the boot protocol expects.
pub fn map_image_and_initrd<M: vm_memory::GuestMemoryBackend>(
    mem: &M,
    plan: &BootPlan,
    kernel: &std::fs::File,
    kernel_size: u64,
    initrd: Option<&std::fs::File>,
    files: crate::arch::file_map::BootFiles,
) -> (bool, bool) {
    use crate::arch::file_map::{map_file_into_guest, BootFileUse};
    let kernel_mapped = files.maps(BootFileUse::Kernel)
        && map_file_into_guest(mem, GuestAddress(plan.kernel), kernel, 0, kernel_size);
    let initrd_mapped = match (initrd, plan.initrd) {
        (Some(file), Some((start, size))) => {
            files.maps(BootFileUse::Initrd)
                && map_file_into_guest(mem, GuestAddress(start), file, 0, size)
        }
        _ => false,
    };
    (kernel_mapped, initrd_mapped)
}

#[cfg(target_arch = "aarch64")]
mod load {
    use std::fs::File;
    use std::io::{Read, Seek, SeekFrom};

    use linux_loader::loader::{KernelLoader, PE};
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    use super::{
        map_image_and_initrd, parse_image_header, plan, BootError, BootPlan, IMAGE_HEADER_SIZE,
    };
    use crate::arch::aarch64::layout::RAM_START;
    use crate::arch::file_map::BootFiles;
    use crate::arch::kernel_fill::{FileRange, KernelFill, UserFaults};

    fn read_err(what: &'static str) -> impl FnOnce(std::io::Error) -> BootError {
        move |source| BootError::Read { what, source }
    }

    /// Reads the `Image` header, plans the layout and puts kernel and initrd
    /// into guest memory: mapped copy-on-write ([`map_image_and_initrd`]),
    /// the kernel filled behind the guest with `faults`
    /// ([`crate::arch::kernel_fill`]), copied where neither is asked for or
    /// possible. Returns the plan and the kernel's running fill.
    pub fn load_kernel_and_initrd(
        mem: &GuestMemoryMmap,
        mem_size: u64,
        kernel: &mut File,
        initrd: Option<&mut File>,
        files: BootFiles,
        faults: Option<&UserFaults>,
    ) -> Result<(BootPlan, Option<KernelFill>), BootError> {
        let kernel_size = kernel.metadata().map_err(read_err("kernel"))?.len();
        let mut head = [0u8; IMAGE_HEADER_SIZE];
        kernel
            .seek(SeekFrom::Start(0))
            .and_then(|_| kernel.read_exact(&mut head))
            .map_err(read_err("kernel"))?;
        let header = parse_image_header(&head, kernel_size)?;
        let initrd_size = match &initrd {
            Some(f) => Some(f.metadata().map_err(read_err("initrd"))?.len()),
            None => None,
        };
        let plan = plan(mem_size, header, initrd_size)?;
        let (kernel_mapped, initrd_mapped) =
            map_image_and_initrd(mem, &plan, kernel, kernel_size, initrd.as_deref(), files);
        let fill = match faults {
            Some(faults) if !kernel_mapped && files.fills_kernel() => {
                let image = FileRange {
                    offset: 0,
                    addr: plan.kernel,
                    len: kernel_size,
                };
                // Past the file's end is the kernel's BSS: fresh RAM, zero.
                KernelFill::start(faults, mem, kernel, &[image])
                    .map_err(|e| tracing::debug!("Image not filled behind the guest ({e}): copied"))
                    .ok()
            }
            _ => None,
        };
        if !kernel_mapped && fill.is_none() {
            kernel
                .seek(SeekFrom::Start(0))
                .map_err(read_err("kernel"))?;
            let loaded = PE::load(mem, Some(GuestAddress(RAM_START)), kernel, None)
                .map_err(BootError::KernelLoad)?;
            debug_assert_eq!(loaded.kernel_load.0, plan.kernel);
        }
        if let (false, Some(file), Some((start, size))) = (initrd_mapped, initrd, plan.initrd) {
            file.seek(SeekFrom::Start(0)).map_err(read_err("initrd"))?;
            mem.read_exact_volatile_from(GuestAddress(start), file, size as usize)
                .map_err(|_| BootError::Write { what: "initrd" })?;
        }
        tracing::debug!(
            kernel_mapped,
            kernel_filled = fill.is_some(),
            initrd_mapped,
            "boot files in guest memory"
        );
        Ok((plan, fill))
    }
}

#[cfg(target_arch = "aarch64")]
pub use load::load_kernel_and_initrd;

#[cfg(test)]
mod tests {
    use super::*;

    fn header(text_offset: u64, image_size: u64) -> Vec<u8> {
        let mut h = vec![0u8; IMAGE_HEADER_SIZE];
        h[0x08..0x10].copy_from_slice(&text_offset.to_le_bytes());
        h[0x10..0x18].copy_from_slice(&image_size.to_le_bytes());
        h[0x38..0x3c].copy_from_slice(b"ARM\x64");
        h
    }

    #[test]
    fn image_header_is_parsed_and_checked() {
        let h = parse_image_header(&header(0, 40 << 20), 30 << 20).unwrap();
        assert_eq!(
            h,
            ImageHeader {
                text_offset: 0,
                image_size: 40 << 20
            }
        );
        // Old kernels: image_size 0 means text_offset 0x80000 and file size.
        let old = parse_image_header(&header(0x1234, 0), 7 << 20).unwrap();
        assert_eq!(old.text_offset, 0x8_0000);
        assert_eq!(old.image_size, 7 << 20);
        let mut bad = header(0, 1 << 20);
        bad[0x38] = b'X';
        assert!(matches!(
            parse_image_header(&bad, 1 << 20),
            Err(BootError::KernelFormat(_))
        ));
        assert!(parse_image_header(&bad[..10], 10).is_err());
        assert!(parse_image_header(&header(KERNEL_ALIGN, 1 << 20), 1 << 20).is_err());
    }

    #[test]
    fn plan_puts_fdt_last_and_initrd_below_it() {
        let h = ImageHeader {
            text_offset: 0,
            image_size: 40 << 20,
        };
        let p = plan(256 << 20, h, Some(3 << 20 | 123)).unwrap();
        assert_eq!(p.kernel, RAM_START);
        assert_eq!(p.fdt, RAM_START + (254 << 20));
        let (start, size) = p.initrd.unwrap();
        assert_eq!(size, 3 << 20 | 123);
        assert_eq!(start % PAGE_SIZE, 0);
        assert!(start + size <= p.fdt);
        assert!(start >= p.kernel + h.image_size);
        // An odd memory size still gets a 2 MiB aligned FDT slot inside RAM.
        let odd = plan(255 << 20, h, None).unwrap();
        assert_eq!(odd.fdt % KERNEL_ALIGN, 0);
        assert!(odd.fdt + FDT_MAX_SIZE <= RAM_START + (255 << 20));
        assert_eq!(odd.initrd, None);
    }

    #[test]
    fn plan_refuses_what_does_not_fit() {
        let h = ImageHeader {
            text_offset: 0,
            image_size: 40 << 20,
        };
        assert!(matches!(
            plan(64 << 20, h, Some(30 << 20)),
            Err(BootError::TooLarge { .. })
        ));
        assert!(plan(1 << 20, h, None).is_err());
        assert!(plan(64 << 20, h, Some(u64::MAX)).is_err());
    }

    /// A small fake `Image`: header, then `len - 64` bytes of a pattern.
    fn image_file(len: usize) -> std::fs::File {
        use std::io::Write;
        let mut f = crate::arch::file_map::tests::tempfile("arm64-image");
        let mut bytes = header(0, 4 << 20);
        bytes.extend((IMAGE_HEADER_SIZE..len).map(|i| (i % 251) as u8));
        f.write_all(&bytes).unwrap();
        f
    }

    fn guest_ram(mem_size: u64) -> vm_memory::GuestMemoryMmap {
        vm_memory::GuestMemoryMmap::from_ranges(&guest_memory_ranges(mem_size)).unwrap()
    }

    #[test]
    fn image_and_initrd_are_mapped_only_with_map_all() {
        use std::os::unix::fs::FileExt;
        use vm_memory::Bytes;
        let mem_size = 64 << 20;
        let mem = guest_ram(mem_size);
        // Not a multiple of the page size: the tail of the last page reads 0.
        let kernel_len = 3 * 4096 + 100;
        let kernel = image_file(kernel_len);
        let mut initrd = crate::arch::file_map::tests::tempfile("arm64-initrd");
        std::io::Write::write_all(&mut initrd, &[0x5a; 5000]).unwrap();
        let h = parse_image_header(&header(0, 4 << 20), kernel_len as u64).unwrap();
        let p = plan(mem_size, h, Some(5000)).unwrap();
        let map = |files| {
            map_image_and_initrd(&mem, &p, &kernel, kernel_len as u64, Some(&initrd), files)
        };
        // By default an arm64 kernel (it runs in place) and the initrd (the
        // guest reuses its pages as RAM) are left to the copying loader.
        use crate::arch::file_map::BootFiles;
        assert_eq!(map(BootFiles::Recommended), (false, false));
        assert_eq!(map(BootFiles::MapAll), (true, true));
        let mut got = vec![0u8; kernel_len];
        mem.read_slice(&mut got, GuestAddress(p.kernel)).unwrap();
        let mut want = vec![0u8; kernel_len];
        kernel.read_exact_at(&mut want, 0).unwrap();
        assert_eq!(got, want);
        assert_eq!(
            mem.read_obj::<u8>(GuestAddress(p.kernel + kernel_len as u64))
                .unwrap(),
            0
        );
        let (start, _) = p.initrd.unwrap();
        assert_eq!(
            mem.read_obj::<u8>(GuestAddress(start + 4999)).unwrap(),
            0x5a
        );
        // A mapping, not a copy: an in-place rewrite of a page the guest
        // has not written shows through.
        kernel.write_all_at(&[0xee; 16], 8192).unwrap();
        assert_eq!(
            mem.read_obj::<u8>(GuestAddress(p.kernel + 8192)).unwrap(),
            0xee
        );
        // The guest's own writes stay private.
        mem.write_obj(0x77u8, GuestAddress(p.kernel + 4096))
            .unwrap();
        let mut byte = [0u8];
        kernel.read_exact_at(&mut byte, 4096).unwrap();
        assert_ne!(byte[0], 0x77);
    }

    /// The loader passes the choice on: copied by default (a rewrite of the
    /// file does not show), mapped with `MapAll` (it does).
    #[cfg(target_arch = "aarch64")]
    #[test]
    fn the_loader_copies_or_maps_as_told() {
        use crate::arch::file_map::BootFiles;
        use std::os::unix::fs::FileExt;
        use vm_memory::Bytes;
        for (files, follows_file) in [(BootFiles::Recommended, false), (BootFiles::MapAll, true)] {
            let mem_size = 64 << 20;
            let mem = guest_ram(mem_size);
            let mut kernel = image_file(4 * 4096);
            let mut initrd = crate::arch::file_map::tests::tempfile("arm64-loader");
            std::io::Write::write_all(&mut initrd, &[0x5a; 8192]).unwrap();
            let (p, _) = load::load_kernel_and_initrd(
                &mem,
                mem_size,
                &mut kernel,
                Some(&mut initrd),
                files,
                None,
            )
            .unwrap();
            kernel.write_all_at(&[0xee; 4], 8192).unwrap();
            initrd.write_all_at(&[0xee; 4], 4096).unwrap();
            let (start, _) = p.initrd.unwrap();
            let k: u8 = mem.read_obj(GuestAddress(p.kernel + 8192)).unwrap();
            let i: u8 = mem.read_obj(GuestAddress(start + 4096)).unwrap();
            assert_eq!(
                (k == 0xee, i == 0xee),
                (follows_file, follows_file),
                "{files:?}"
            );
        }
    }

    #[test]
    fn a_truncated_image_reads_zeros_instead_of_killing_the_vmm() {
        use vm_memory::Bytes;
        let mem_size = 64 << 20;
        let mem = guest_ram(mem_size);
        let kernel_len = 4 * 4096;
        let kernel = image_file(kernel_len);
        let h = parse_image_header(&header(0, 4 << 20), kernel_len as u64).unwrap();
        let p = plan(mem_size, h, None).unwrap();
        assert_eq!(
            map_image_and_initrd(
                &mem,
                &p,
                &kernel,
                kernel_len as u64,
                None,
                crate::arch::file_map::BootFiles::MapAll
            ),
            (true, false)
        );
        kernel.set_len(4096).unwrap();
        // A device model reading guest memory past the new end of file: the
        // SIGBUS guard gives it zeros (without it the test process dies).
        let mut page = [0xffu8; 4096];
        mem.read_slice(&mut page, GuestAddress(p.kernel + 2 * 4096))
            .unwrap();
        assert!(page.iter().all(|&b| b == 0));
        // What is still inside the file is still the kernel.
        assert_eq!(
            &mem.read_obj::<[u8; 4]>(GuestAddress(p.kernel + 0x38))
                .unwrap(),
            b"ARM\x64"
        );
    }

    #[test]
    fn what_cannot_be_mapped_is_left_to_the_copying_loader() {
        let mem_size = 64 << 20;
        let mem = guest_ram(mem_size);
        let kernel = image_file(8192);
        // A plan whose kernel address is not page aligned (text_offset 0x80
        // is legal for the header check but cannot be mapped).
        let h = ImageHeader {
            text_offset: 0x80,
            image_size: 8192,
        };
        let p = plan(mem_size, h, None).unwrap();
        assert_eq!(
            map_image_and_initrd(
                &mem,
                &p,
                &kernel,
                8192,
                None,
                crate::arch::file_map::BootFiles::MapAll
            ),
            (false, false)
        );
        // Longer than the file: not mapped either.
        let p = plan(
            mem_size,
            ImageHeader {
                text_offset: 0,
                image_size: 8192,
            },
            None,
        )
        .unwrap();
        assert_eq!(
            map_image_and_initrd(
                &mem,
                &p,
                &kernel,
                16384,
                None,
                crate::arch::file_map::BootFiles::MapAll
            ),
            (false, false)
        );
    }
}
