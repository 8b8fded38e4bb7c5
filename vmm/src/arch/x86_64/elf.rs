//! Loading an ELF `vmlinux`: its `PT_LOAD` segments filled behind the
//! running guest ([`crate::arch::kernel_fill`]), copied, or (those whose
//! file offset and physical address are page aligned) mapped copy-on-write
//! from the file ([`crate::arch::file_map`]); each module says what a
//! later change of the file does.
//!
//! The parsing is a pure function ([`plan_segments`]) over the header bytes;
//! [`load_elf`] is the I/O shell around it.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileExt;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::arch::file_map::{map_file_into_guest, PAGE_SIZE};
use crate::arch::kernel_fill::{FileRange, KernelFill, UserFaults};

/// Why an ELF kernel cannot be loaded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ElfError {
    /// The file is too short for its headers or segments.
    #[error("ELF kernel is truncated: {0}")]
    Truncated(&'static str),
    /// The header is not a little-endian 64-bit x86_64 ELF.
    #[error("not a 64-bit little-endian x86_64 ELF: {0}")]
    Header(&'static str),
    /// A segment is malformed, overlaps another one or lies outside RAM.
    #[error("ELF kernel segment {index} is invalid: {what}")]
    Segment {
        /// Index of the program header.
        index: usize,
        /// What is wrong.
        what: &'static str,
    },
    /// Reading the file failed.
    #[error("cannot read the ELF kernel: {0}")]
    Read(String),
    /// Writing into guest memory failed.
    #[error("cannot write ELF segment {0} into guest memory")]
    Write(usize),
}

const EHDR_SIZE: usize = 64;
const PHDR_SIZE: usize = 56;
/// More program headers than any kernel has; bounds the work a bad file causes.
const MAX_PHDRS: usize = 64;
const PT_LOAD: u32 = 1;
const EM_X86_64: u16 = 62;

/// One `PT_LOAD` segment to put into guest memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Index of its program header.
    pub index: usize,
    /// Offset of its bytes in the file.
    pub offset: u64,
    /// Guest physical address (`p_paddr`).
    pub addr: u64,
    /// Bytes taken from the file.
    pub file_size: u64,
    /// Bytes in memory (the rest after `file_size` is zero, `.bss`).
    pub mem_size: u64,
}

impl Segment {
    /// Whether it can be mapped from the file instead of copied.
    pub fn mappable(&self) -> bool {
        self.offset % PAGE_SIZE == 0 && self.addr % PAGE_SIZE == 0
    }
}

/// What [`plan_segments`] found: the entry point and the segments sorted by
/// address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfPlan {
    /// The 64-bit entry point (`e_entry`, a physical address in a vmlinux).
    pub entry: u64,
    /// `PT_LOAD` segments with file bytes, sorted by address, not overlapping.
    pub segments: Vec<Segment>,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(bytes)
}

/// Where the program headers are: (offset, count), from the ELF header.
pub fn phdr_table(ehdr: &[u8]) -> Result<(u64, usize), ElfError> {
    if ehdr.len() < EHDR_SIZE {
        return Err(ElfError::Truncated("ELF header"));
    }
    if ehdr[..4] != *b"\x7fELF" {
        return Err(ElfError::Header("bad magic"));
    }
    if ehdr[4] != 2 || ehdr[5] != 1 {
        return Err(ElfError::Header("not ELFCLASS64/ELFDATA2LSB"));
    }
    if u16_at(ehdr, 18) != EM_X86_64 {
        return Err(ElfError::Header("machine is not x86_64"));
    }
    if usize::from(u16_at(ehdr, 54)) != PHDR_SIZE {
        return Err(ElfError::Header("unexpected program header size"));
    }
    let count = usize::from(u16_at(ehdr, 56));
    if count > MAX_PHDRS {
        return Err(ElfError::Header("too many program headers"));
    }
    Ok((u64_at(ehdr, 32), count))
}

/// Checks the headers and the `PT_LOAD` segments of a kernel file of
/// `file_len` bytes that must lie in guest RAM `[ram_start, ram_end)`.
/// `phdrs` is the program header table ([`phdr_table`]).
pub fn plan_segments(
    ehdr: &[u8],
    phdrs: &[u8],
    file_len: u64,
    ram_start: u64,
    ram_end: u64,
) -> Result<ElfPlan, ElfError> {
    let (_, count) = phdr_table(ehdr)?;
    if phdrs.len() < count * PHDR_SIZE {
        return Err(ElfError::Truncated("program headers"));
    }
    let entry = u64_at(ehdr, 24);
    let mut segments = Vec::new();
    for (index, ph) in phdrs.chunks_exact(PHDR_SIZE).take(count).enumerate() {
        let seg = Segment {
            index,
            offset: u64_at(ph, 8),
            addr: u64_at(ph, 24),
            file_size: u64_at(ph, 32),
            mem_size: u64_at(ph, 40),
        };
        if u32_at(ph, 0) != PT_LOAD || seg.file_size == 0 {
            continue;
        }
        let bad = |what| ElfError::Segment { index, what };
        if seg.mem_size < seg.file_size {
            return Err(bad("memory size smaller than file size"));
        }
        if seg
            .offset
            .checked_add(seg.file_size)
            .is_none_or(|end| end > file_len)
        {
            return Err(bad("extends past the end of the file"));
        }
        if seg.addr < ram_start
            || seg
                .addr
                .checked_add(seg.mem_size)
                .is_none_or(|end| end > ram_end)
        {
            return Err(bad("outside guest RAM"));
        }
        segments.push(seg);
    }
    if segments.is_empty() {
        return Err(ElfError::Header("no loadable segment"));
    }
    segments.sort_by_key(|s| s.addr);
    for pair in segments.windows(2) {
        if pair[0].addr + pair[0].mem_size > pair[1].addr {
            return Err(ElfError::Segment {
                index: pair[1].index,
                what: "overlaps another segment",
            });
        }
    }
    if !segments
        .iter()
        .any(|s| entry >= s.addr && entry < s.addr + s.mem_size)
    {
        return Err(ElfError::Header("entry point outside the loaded segments"));
    }
    Ok(ElfPlan { entry, segments })
}

/// How a segment ended up in guest memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Filled behind the running guest.
    Filled,
    /// Mapped copy-on-write from the file.
    Mapped,
    /// Copied (not page aligned, or mapping failed).
    Copied,
}

/// How [`load_elf`] puts the segments into guest memory.
#[derive(Debug, Clone, Copy)]
pub enum SegmentLoad<'a> {
    /// Copied before the first entry.
    Copy,
    /// Mapped copy-on-write where page aligned, else copied.
    Map,
    /// Filled behind the guest with this `userfaultfd`, else copied.
    Fill(&'a UserFaults),
}

/// A loaded ELF kernel.
#[derive(Debug)]
pub struct LoadedElf {
    /// The entry point.
    pub entry: GuestAddress,
    /// How each segment was placed.
    pub placements: Vec<Placement>,
    /// The fill still running behind the guest (with [`Placement::Filled`]).
    pub fill: Option<KernelFill>,
}

/// Loads the ELF kernel `file` into `mem` (RAM `[ram_start, ram_end)`, one
/// region) as `how` says (see [`crate::arch::file_map`] for which the VMM
/// chooses).
pub fn load_elf(
    mem: &GuestMemoryMmap,
    file: &File,
    ram_start: u64,
    ram_end: u64,
    how: SegmentLoad<'_>,
) -> Result<LoadedElf, ElfError> {
    let read_err = |e: std::io::Error| ElfError::Read(e.to_string());
    let file_len = file.metadata().map_err(read_err)?.len();
    let mut ehdr = [0u8; EHDR_SIZE];
    if file_len < EHDR_SIZE as u64 {
        return Err(ElfError::Truncated("ELF header"));
    }
    file.read_exact_at(&mut ehdr, 0).map_err(read_err)?;
    let (phoff, count) = phdr_table(&ehdr)?;
    if phoff
        .checked_add((count * PHDR_SIZE) as u64)
        .is_none_or(|end| end > file_len)
    {
        return Err(ElfError::Truncated("program headers"));
    }
    let mut phdrs = vec![0u8; count * PHDR_SIZE];
    file.read_exact_at(&mut phdrs, phoff).map_err(read_err)?;
    let plan = plan_segments(&ehdr, &phdrs, file_len, ram_start, ram_end)?;
    let entry = GuestAddress(plan.entry);

    if let SegmentLoad::Fill(faults) = how {
        let ranges: Vec<FileRange> = plan
            .segments
            .iter()
            .map(|seg| FileRange {
                offset: seg.offset,
                addr: seg.addr,
                len: seg.file_size,
            })
            .collect();
        // Past each segment's file size is `.bss`: fresh guest RAM, zero.
        match KernelFill::start(faults, mem, file, &ranges) {
            Ok(fill) => {
                return Ok(LoadedElf {
                    entry,
                    placements: vec![Placement::Filled; plan.segments.len()],
                    fill: Some(fill),
                })
            }
            Err(e) => tracing::debug!("ELF kernel not filled behind the guest ({e}): copied"),
        }
    }
    let map = matches!(how, SegmentLoad::Map);
    let mut placements = Vec::with_capacity(plan.segments.len());
    for seg in &plan.segments {
        let addr = GuestAddress(seg.addr);
        let mapped = map
            && seg.mappable()
            && map_file_into_guest(mem, addr, file, seg.offset, seg.file_size);
        if mapped {
            // The mapping ends on a page boundary: past `file_size` its last
            // page holds whatever follows in the file, which must read as
            // zeros (`.bss` or the gap to the next segment). Segments are
            // sorted and do not overlap, so no earlier segment lives there
            // and later ones are written after this.
            let end = seg.addr + seg.file_size;
            let tail = end.next_multiple_of(PAGE_SIZE) - end;
            if tail > 0 {
                mem.write_slice(&vec![0u8; tail as usize], GuestAddress(end))
                    .map_err(|_| ElfError::Write(seg.index))?;
            }
            placements.push(Placement::Mapped);
        } else {
            let reason = if !map {
                "copied (the kernel runs in place)"
            } else if !seg.mappable() {
                "not page aligned: copied"
            } else {
                "could not be mapped: copied"
            };
            tracing::debug!(
                "ELF kernel segment {} (file offset {:#x}, address {:#x}, {} bytes): {reason}",
                seg.index,
                seg.offset,
                seg.addr,
                seg.file_size
            );
            // Straight from the file into guest memory, no buffer between.
            let mut src: &File = file;
            src.seek(SeekFrom::Start(seg.offset)).map_err(read_err)?;
            mem.read_exact_volatile_from(addr, &mut src, seg.file_size as usize)
                .map_err(|_| ElfError::Write(seg.index))?;
            placements.push(Placement::Copied);
        }
    }
    Ok(LoadedElf {
        entry,
        placements,
        fill: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use vm_memory::GuestMemoryMmap;

    use crate::arch::file_map::tests::tempfile;

    /// A minimal x86_64 ELF: header, program headers at 64, and for each
    /// `(offset, addr, file_size, mem_size, fill)` the bytes `fill` at
    /// `offset`; `entry` is `e_entry`.
    fn build_elf(entry: u64, segments: &[(u64, u64, u64, u64, u8)], len: usize) -> Vec<u8> {
        let mut f = vec![0u8; len];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 2;
        f[5] = 1;
        f[6] = 1;
        f[16..18].copy_from_slice(&2u16.to_le_bytes());
        f[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
        f[24..32].copy_from_slice(&entry.to_le_bytes());
        f[32..40].copy_from_slice(&64u64.to_le_bytes());
        f[52..54].copy_from_slice(&64u16.to_le_bytes());
        f[54..56].copy_from_slice(&(PHDR_SIZE as u16).to_le_bytes());
        f[56..58].copy_from_slice(&(segments.len() as u16).to_le_bytes());
        for (i, &(offset, addr, file_size, mem_size, fill)) in segments.iter().enumerate() {
            let ph = 64 + i * PHDR_SIZE;
            f[ph..ph + 4].copy_from_slice(&PT_LOAD.to_le_bytes());
            f[ph + 8..ph + 16].copy_from_slice(&offset.to_le_bytes());
            f[ph + 16..ph + 24].copy_from_slice(&addr.to_le_bytes());
            f[ph + 24..ph + 32].copy_from_slice(&addr.to_le_bytes());
            f[ph + 32..ph + 40].copy_from_slice(&file_size.to_le_bytes());
            f[ph + 40..ph + 48].copy_from_slice(&mem_size.to_le_bytes());
            let (o, n) = (offset as usize, file_size as usize);
            f[o..o + n].fill(fill);
        }
        f
    }

    fn file_with(bytes: &[u8]) -> File {
        let mut f = tempfile("elf");
        f.write_all(bytes).unwrap();
        f
    }

    const MIB: u64 = 1 << 20;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 32 << 20)]).unwrap()
    }

    fn byte(m: &GuestMemoryMmap, addr: u64) -> u8 {
        m.read_obj(GuestAddress(addr)).unwrap()
    }

    /// Text at 16 MiB (file 0x1000, 0x1800 bytes of 0xaa; the rest of its
    /// last page in the file is the next segment's 0xbb bytes), data at
    /// 17 MiB (file 0x2800, not page aligned) with 0x3000 bytes of .bss.
    fn text_and_data_elf() -> Vec<u8> {
        build_elf(
            16 * MIB,
            &[
                (0x1000, 16 * MIB, 0x1800, 0x1800, 0xaa),
                (0x2800, 17 * MIB, 0x800, 0x3800, 0xbb),
            ],
            0x3000,
        )
    }

    #[test]
    fn page_aligned_segments_are_mapped_and_bss_reads_as_zero() {
        let f = file_with(&text_and_data_elf());
        let m = mem();
        let loaded = load_elf(&m, &f, MIB, 32 << 20, SegmentLoad::Map).unwrap();
        let (entry, how) = (loaded.entry, loaded.placements);
        assert_eq!(entry, GuestAddress(16 * MIB));
        // The second segment's file offset is not page aligned: copied.
        assert_eq!(how, [Placement::Mapped, Placement::Copied]);
        assert_eq!(byte(&m, 16 * MIB), 0xaa);
        assert_eq!(byte(&m, 16 * MIB + 0x17ff), 0xaa);
        // Past file_size in the mapped page: zero, not the file's 0xbb.
        assert_eq!(byte(&m, 16 * MIB + 0x1800), 0);
        assert_eq!(byte(&m, 16 * MIB + 0x1fff), 0);
        assert_eq!(byte(&m, 17 * MIB + 0x7ff), 0xbb);
        assert_eq!(byte(&m, 17 * MIB + 0x800), 0);
        // Guest writes stay private.
        m.write_obj(0x11u8, GuestAddress(16 * MIB)).unwrap();
        let mut on_disk = [0u8; 1];
        f.read_exact_at(&mut on_disk, 0x1000).unwrap();
        assert_eq!(on_disk, [0xaa]);
    }

    #[test]
    fn all_aligned_segments_are_all_mapped() {
        let image = build_elf(
            16 * MIB + 0x40,
            &[
                (0x1000, 16 * MIB, 0x2000, 0x2000, 1),
                (0x3000, 16 * MIB + 0x2000, 0x1000, 0x1000, 2),
            ],
            0x4000,
        );
        let f = file_with(&image);
        let m = mem();
        let loaded = load_elf(&m, &f, MIB, 32 << 20, SegmentLoad::Map).unwrap();
        let (entry, how) = (loaded.entry, loaded.placements);
        assert_eq!(entry, GuestAddress(16 * MIB + 0x40));
        assert_eq!(how, [Placement::Mapped, Placement::Mapped]);
        assert_eq!(byte(&m, 16 * MIB + 0x1fff), 1);
        assert_eq!(byte(&m, 16 * MIB + 0x2000), 2);
    }

    #[test]
    fn without_map_aligned_segments_are_copied_too() {
        let image = build_elf(16 * MIB, &[(0x1000, 16 * MIB, 0x2000, 0x3000, 7)], 0x3000);
        let f = file_with(&image);
        let m = mem();
        let how = load_elf(&m, &f, MIB, 32 << 20, SegmentLoad::Copy)
            .unwrap()
            .placements;
        assert_eq!(how, [Placement::Copied]);
        assert_eq!(byte(&m, 16 * MIB), 7);
        assert_eq!(byte(&m, 16 * MIB + 0x1fff), 7);
        assert_eq!(byte(&m, 16 * MIB + 0x2000), 0);
    }

    #[test]
    fn with_a_userfaultfd_every_segment_is_filled_behind_the_guest() {
        use crate::arch::kernel_fill::tests::{aligned_mem, user_faults};
        let Some(faults) = user_faults() else { return };
        // An unaligned segment is filled too: the fill reads at any offset.
        let f = file_with(&text_and_data_elf());
        let m = aligned_mem(32 * MIB);
        let loaded = load_elf(&m, &f, MIB, 32 << 20, SegmentLoad::Fill(&faults)).unwrap();
        assert_eq!(loaded.placements, [Placement::Filled, Placement::Filled]);
        assert_eq!(byte(&m, 16 * MIB + 0x17ff), 0xaa);
        assert_eq!(byte(&m, 16 * MIB + 0x1800), 0);
        assert_eq!(byte(&m, 17 * MIB + 0x7ff), 0xbb);
        assert_eq!(byte(&m, 17 * MIB + 0x800), 0);
        let report = loaded.fill.unwrap().finish();
        assert_eq!((report.chunks, report.missing_bytes), (1, 0));
    }

    #[test]
    fn a_segment_at_an_unaligned_address_is_copied() {
        let image = build_elf(
            16 * MIB + 0x10,
            &[(0x1000, 16 * MIB + 0x10, 0x100, 0x100, 7)],
            0x2000,
        );
        let f = file_with(&image);
        let m = mem();
        let how = load_elf(&m, &f, MIB, 32 << 20, SegmentLoad::Map)
            .unwrap()
            .placements;
        assert_eq!(how, [Placement::Copied]);
        assert_eq!(byte(&m, 16 * MIB + 0x10), 7);
        assert_eq!(byte(&m, 16 * MIB + 0x110), 0);
    }

    #[test]
    fn a_file_shorter_than_its_segments_is_rejected_before_mapping() {
        let mut image = build_elf(16 * MIB, &[(0x1000, 16 * MIB, 0x2000, 0x2000, 1)], 0x3000);
        image.truncate(0x2000);
        let f = file_with(&image);
        assert_eq!(
            load_elf(&mem(), &f, MIB, 32 << 20, SegmentLoad::Map).err(),
            Some(ElfError::Segment {
                index: 0,
                what: "extends past the end of the file"
            })
        );
    }

    #[test]
    fn bad_headers_and_segments_are_rejected() {
        let ok = build_elf(16 * MIB, &[(0x1000, 16 * MIB, 0x10, 0x10, 1)], 0x2000);
        let plan = |img: &[u8]| {
            let (phoff, n) = phdr_table(img)?;
            let at = phoff as usize;
            plan_segments(
                img,
                &img[at..at + n * PHDR_SIZE],
                img.len() as u64,
                MIB,
                32 << 20,
            )
        };
        assert!(plan(&ok).is_ok());
        let mut bad = ok.clone();
        bad[18] = 183; // aarch64
        assert_eq!(plan(&bad), Err(ElfError::Header("machine is not x86_64")));
        let mut bad = ok.clone();
        bad[4] = 1;
        assert!(matches!(plan(&bad), Err(ElfError::Header(_))));
        // Below RAM start, past RAM end, overlapping, entry outside.
        for segs in [
            vec![(0x1000, 0x1000, 0x10, 0x10, 1)],
            vec![(0x1000, 32 << 20, 0x10, 0x10, 1)],
            vec![
                (0x1000, 16 * MIB, 0x10, 0x2000, 1),
                (0x1800, 16 * MIB + 0x1000, 0x10, 0x10, 1),
            ],
        ] {
            let img = build_elf(16 * MIB, &segs, 0x2000);
            assert!(
                matches!(plan(&img), Err(ElfError::Segment { .. })),
                "{segs:?}"
            );
        }
        let img = build_elf(20 * MIB, &[(0x1000, 16 * MIB, 0x10, 0x10, 1)], 0x2000);
        assert!(matches!(plan(&img), Err(ElfError::Header(_))));
        assert_eq!(plan(&ok[..40]), Err(ElfError::Truncated("ELF header")));
    }
}
