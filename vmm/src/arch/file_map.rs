//! Boot files (kernel payloads, ELF segments, the initrd) mapped copy-on-write
//! into guest memory instead of copied, and the guard that keeps the VMM alive
//! when such a file is truncated underneath a running VM.
//!
//! # What happens when a mapped file changes after start
//! A `MAP_PRIVATE` mapping shows the file's page cache until the guest writes a
//! page (then that page is a private copy):
//! - **Rewritten in place without truncation** (same inode, `pwrite`, `dd
//!   conv=notrunc`): pages the guest has not written yet show the new bytes.
//!   For the guest that is as if its kernel image changed under it (it may
//!   crash); for the VMM it is only memory, nothing can fault.
//! - **Replaced by rename or deleted** (what build systems and package
//!   managers do): nothing changes, the mapping keeps the old inode alive.
//! - **Truncated**: the kernel drops every page past the new end of file from
//!   the mapping, private copies included (so guest data in pages the guest
//!   has reused, e.g. the freed initrd, is lost too), and the next access to
//!   such a page raises `SIGBUS` while it lies past the end of the file. A
//!   rewrite through `O_TRUNC` (`cp new old`, a shell `>` redirection) is
//!   a truncation followed by writes: once the new bytes are there, a page
//!   the guest had reused reads them instead of its own data, silently. That
//!   is why only the bzImage payload is mapped by default (the guest's
//!   decompressor reads it within its first second); the initrd, which
//!   tools rebuild in place far more often, is copied. Two cases of an
//!   access past the end:
//!   - the VMM itself touches the page (a device reading a buffer the guest
//!     put there): the `SIGBUS` handler installed by [`map_file_into_guest`]
//!     sees that the address lies in a mapped boot file, replaces that page
//!     with a zero-filled anonymous page and returns; the access is retried
//!     and reads zeros. Any other `SIGBUS` ends the VMM with one line on
//!     stderr and exit status 135 (128 + `SIGBUS`): the handler cannot
//!     restore the default action inside the sandbox (`rt_sigaction` is
//!     refused), see `handle_sigbus`.
//!   - the guest touches it: KVM cannot resolve the page and `KVM_RUN` fails
//!     with `EFAULT`; the vCPU thread reports "KVM_RUN failed" and the VMM
//!     shuts the VM down and exits with an error (no signal, no crash).
//!     This half is not exercised by a test (it needs a running guest).
//!
//! The rule for users stays: do not modify a kernel or initrd while a VM
//! booted from it runs.
//!
//! # Which files are mapped
//! Mapping makes the first entry cheap (nothing is read before it), but a
//! guest then runs on 4 KiB page-cache pages wherever it uses the mapped
//! bytes, and each page it writes takes a copy-on-write fault first. That
//! is a good trade for the bzImage's compressed payload, which the guest's
//! decompressor reads once into fresh RAM, and a bad one for a kernel that
//! runs in place (an ELF `vmlinux`'s segments, an arm64 `Image`): under
//! nested virtualization an arm64 guest booted from a mapped `Image`
//! reached `/init` about twice as late as from a copied one, an x86_64 ELF
//! guest 1.3 s later (docs/notes/2026-12-06-arm64-early-boot.md,
//! docs/notes/2026-12-05-boot-profile.md). The initrd is copied too: an
//! arm64 guest unpacked a mapped one ~2 s later than a copied one, and on
//! either architecture the guest reuses its freed pages as RAM, which an
//! `O_TRUNC` rewrite of the file would replace (above); on x86_64 the copy
//! costs the bzImage path ~60 ms before the first entry. Hence the default,
//! [`BootFiles::Recommended`]: only the bzImage payload mapped, and a
//! kernel that runs in place filled behind the guest where the host allows
//! it ([`crate::arch::kernel_fill`]), else copied.
//! `VMSTACK_BOOT_FILES=map` maps everything that can be mapped and
//! `VMSTACK_BOOT_FILES=copy` nothing, for measurements
//! (`cargo xtask bench boot --kernel elf-ab`, docs/benchmarks.md).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once, OnceLock, Weak};

use vm_memory::{
    GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion, GuestRegionMmap,
};

/// Environment variable that chooses which boot files are mapped
/// (`map`, `copy`; see [`BootFiles`]).
pub const BOOT_FILES_ENV: &str = "VMSTACK_BOOT_FILES";

/// What a boot file is to the guest, which decides whether it is worth
/// mapping (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootFileUse {
    /// A compressed kernel its decompressor reads once (the bzImage
    /// payload).
    CompressedKernel,
    /// A kernel executed and written in place for the guest's whole life
    /// (an ELF kernel's segments, an arm64 `Image`).
    Kernel,
    /// The initrd, which the guest kernel unpacks and frees.
    Initrd,
}

/// Which boot files are mapped copy-on-write instead of copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootFiles {
    /// The default: a compressed kernel mapped, a kernel that runs in place
    /// filled behind the guest where the host allows it
    /// ([`crate::arch::kernel_fill`]), everything else copied.
    Recommended,
    /// Everything that can be mapped is (`VMSTACK_BOOT_FILES=map`).
    MapAll,
    /// Everything is copied (`VMSTACK_BOOT_FILES=copy`).
    CopyAll,
}

impl BootFiles {
    /// The choice a value of [`BOOT_FILES_ENV`] makes: `map`, `copy`, or
    /// the default for anything else.
    pub fn from_value(value: Option<&std::ffi::OsStr>) -> Self {
        match value.and_then(|v| v.to_str()) {
            Some("map") => Self::MapAll,
            Some("copy") => Self::CopyAll,
            _ => Self::Recommended,
        }
    }

    /// The choice of this process's environment (read once).
    pub fn from_env() -> Self {
        static CHOICE: OnceLock<BootFiles> = OnceLock::new();
        *CHOICE.get_or_init(|| {
            let choice = Self::from_value(std::env::var_os(BOOT_FILES_ENV).as_deref());
            if choice != Self::Recommended {
                tracing::info!("{BOOT_FILES_ENV}: boot files: {choice:?}");
            }
            choice
        })
    }

    /// Whether a kernel that runs in place is filled behind the guest
    /// (when the host allows it) instead of copied before the first entry.
    pub fn fills_kernel(self) -> bool {
        self == Self::Recommended
    }

    /// Whether a file used as `usage` is mapped (when it can be).
    pub fn maps(self, usage: BootFileUse) -> bool {
        match self {
            Self::MapAll => true,
            Self::CopyAll => false,
            Self::Recommended => usage == BootFileUse::CompressedKernel,
        }
    }
}

/// Host page size the mappings are aligned to.
pub const PAGE_SIZE: u64 = 4096;

/// How many file mappings the `SIGBUS` guard can track; a mapping that finds
/// no free slot is not made (the caller copies instead).
const MAX_GUARDED_MAPPINGS: usize = 32;

/// Host address ranges (start, length) of the file mappings; a length of 0
/// is a free slot. Plain atomics so the signal handler can read them.
static GUARDED: [(AtomicUsize, AtomicUsize); MAX_GUARDED_MAPPINGS] =
    [const { (AtomicUsize::new(0), AtomicUsize::new(0)) }; MAX_GUARDED_MAPPINGS];

static INSTALL_GUARD: Once = Once::new();
/// Whether the `SIGBUS` handler is installed (set once by [`install_guard`]).
static GUARD_INSTALLED: AtomicUsize = AtomicUsize::new(0);

/// Claims a slot for `start..start + len`; false when every slot is taken.
fn guard_range(start: usize, len: usize) -> bool {
    for (slot_start, slot_len) in &GUARDED {
        if slot_len
            .compare_exchange(0, usize::MAX, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            slot_start.store(start, Ordering::Release);
            slot_len.store(len, Ordering::Release);
            return true;
        }
    }
    false
}

/// Which guest memory region each guarded range lies in, once the builder
/// tied them ([`tie_mappings_to`]): a range stays guarded exactly as long as
/// its region is alive. Never read by the signal handler.
static OWNERS: Mutex<Vec<Owner>> = Mutex::new(Vec::new());

/// A guarded range ([`GUARDED`] slot) and the region it was mapped into.
struct Owner {
    slot: usize,
    region: Weak<GuestRegionMmap>,
}

/// Ties every guarded range inside `mem`'s regions to its region: the
/// range stays guarded while anything (a device worker that outlived its
/// VM included) still holds the region, and [`release_dropped_mappings`]
/// frees it once the region is unmapped. The builder calls it after it
/// loaded the boot files.
pub fn tie_mappings_to(mem: &GuestMemoryMmap) {
    let Ok(mut owners) = OWNERS.lock() else {
        return;
    };
    for region in mem.iter() {
        let Ok(host) = mem.get_host_address(region.start_addr()) else {
            continue;
        };
        let Some(host_end) = (host as usize).checked_add(region.len() as usize) else {
            continue;
        };
        // The collection hands out its `Arc`s only through `remove_region`
        // (which leaves `mem` as it is).
        let Ok((_, arc)) = mem.remove_region(region.start_addr(), region.len()) else {
            continue;
        };
        for (slot, (start, len)) in GUARDED.iter().enumerate() {
            let (start, len) = (start.load(Ordering::Acquire), len.load(Ordering::Acquire));
            let inside = len != 0
                && len != usize::MAX
                && start >= host as usize
                && start.checked_add(len).is_some_and(|end| end <= host_end);
            if inside && !owners.iter().any(|o| o.slot == slot) {
                owners.push(Owner {
                    slot,
                    region: Arc::downgrade(&arc),
                });
            }
        }
    }
}

/// Stops guarding the ranges whose guest memory region is gone. A restart
/// builds a new VM with new guest memory in the same process, so the
/// builder calls this before it loads the next boot's files; a range of the
/// old memory that a stuck device worker still holds stays guarded (its
/// file may be truncated while the worker reads it).
pub fn release_dropped_mappings() {
    let Ok(mut owners) = OWNERS.lock() else {
        return;
    };
    owners.retain(|owner| {
        let alive = owner.region.strong_count() > 0;
        if !alive {
            GUARDED[owner.slot].1.store(0, Ordering::Release);
        }
        alive
    });
}

/// Whether `addr` lies in a guarded file mapping.
fn is_guarded(addr: usize) -> bool {
    GUARDED.iter().any(|(start, len)| {
        let len = len.load(Ordering::Acquire);
        let start = start.load(Ordering::Acquire);
        len != 0 && len != usize::MAX && addr >= start && addr - start < len
    })
}

/// The exit status of a `SIGBUS` the guard does not claim: 128 + `SIGBUS`,
/// what a shell shows for a process killed by it.
pub const UNCLAIMED_SIGBUS_EXIT: i32 = 128 + libc::SIGBUS;
// The report spells the status out.
const _: () = assert!(UNCLAIMED_SIGBUS_EXIT == 135);

/// The line the handler writes for a `SIGBUS` it does not claim: where
/// the fault was (or that another process sent it), and the exit status.
fn unclaimed_report(addr: usize, sent: bool, out: &mut [u8; 128]) -> usize {
    let mut len = 0;
    let mut push = |bytes: &[u8]| {
        let n = bytes.len().min(out.len() - len);
        out[len..len + n].copy_from_slice(&bytes[..n]);
        len += n;
    };
    if sent {
        push(b"vmm: SIGBUS sent by another process");
    } else {
        push(b"vmm: SIGBUS at 0x");
        let mut digits = [0u8; 16];
        for (i, d) in digits.iter_mut().enumerate() {
            let nibble = (addr >> ((15 - i) * 4)) & 0xf;
            *d = b"0123456789abcdef"[nibble];
        }
        push(&digits);
        push(b" (not in a boot file mapping)");
    }
    push(b"; exiting with status ");
    push(b"135");
    push(b"\n");
    len
}

/// `SIGBUS` handler: a fault in a guarded file mapping (its file was
/// truncated) gets a zero page instead; any other `SIGBUS` (a fault
/// elsewhere, or one sent with `kill`) ends the process with one line on
/// stderr and exit status 135 ([`UNCLAIMED_SIGBUS_EXIT`]).
///
/// Sandbox-safe: it makes only `mmap` (anonymous, without `PROT_EXEC`),
/// `write` and `exit_group`, which every thread class of the VMM allows
/// (`RUNTIME` group). Restoring the default action and raising the signal
/// again would need `rt_sigaction` and `tkill`/`tgkill` with `SIGBUS`,
/// which the sandbox refuses: the handler would then die with a report
/// of a forbidden call instead of the fault.
extern "C" fn handle_sigbus(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler;
    // `si_addr` is the faulting address for SIGBUS.
    let (addr, code) = unsafe { ((*info).si_addr() as usize, (*info).si_code) };
    let sent = code <= 0;
    if !sent && is_guarded(addr) {
        let page = addr & !(PAGE_SIZE as usize - 1);
        // SAFETY: `page` is inside a guarded file mapping that lies within a
        // guest memory region this process owns for its whole life; replacing
        // that one page with a private anonymous zero page keeps the range
        // mapped and writable. mmap is a plain system call, safe in a signal
        // handler.
        let mapped = unsafe {
            libc::mmap(
                page as *mut libc::c_void,
                PAGE_SIZE as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if mapped != libc::MAP_FAILED {
            return;
        }
    }
    let mut line = [0u8; 128];
    let len = unclaimed_report(addr, sent, &mut line);
    // SAFETY: write(2) of a local buffer and _exit(2) are async-signal-safe
    // and end the process without running anything else of it.
    unsafe {
        libc::write(2, line.as_ptr().cast(), len);
        libc::_exit(UNCLAIMED_SIGBUS_EXIT);
    }
}

/// Installs the `SIGBUS` handler once; false if that failed. The VMM calls
/// it before it enters its sandbox (whose filters refuse `rt_sigaction`);
/// the first mapping calls it too.
pub fn install_guard() -> bool {
    INSTALL_GUARD.call_once(|| {
        // SAFETY: a zeroed sigaction is a valid starting point; the handler
        // has the SA_SIGINFO signature and only calls async-signal-safe
        // system calls and reads atomics.
        let ok = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = handle_sigbus as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut()) == 0
        };
        GUARD_INSTALLED.store(usize::from(ok), Ordering::Release);
    });
    GUARD_INSTALLED.load(Ordering::Acquire) == 1
}

/// Maps `len` bytes of `file` at `offset` copy-on-write over guest memory at
/// `addr` instead of copying them: the guest reads the host's page cache
/// directly and only pages it writes get private copies. Returns false (and
/// changes nothing) when the range is not page aligned, not inside one guest
/// memory region, or past the end of the file; the caller then copies.
///
/// This is what makes "process start to first guest instruction" cheap: a
/// kernel is neither read nor zero-filled before the vCPU starts. What a
/// later change of the file does is described in the module documentation;
/// the `SIGBUS` guard is installed before the first mapping. Whether a file
/// should be mapped at all is the caller's choice ([`BootFiles`]).
pub fn map_file_into_guest<M: GuestMemoryBackend>(
    mem: &M,
    addr: GuestAddress,
    file: &File,
    offset: u64,
    len: u64,
) -> bool {
    if len == 0 || addr.0 % PAGE_SIZE != 0 || offset % PAGE_SIZE != 0 {
        return false;
    }
    // Never map past the end of the file: those pages would fault at once.
    let file_len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if offset.checked_add(len).is_none_or(|end| end > file_len) {
        return false;
    }
    let Some(map_len) = len.checked_next_multiple_of(PAGE_SIZE) else {
        return false;
    };
    let Some(region) = mem.find_region(addr) else {
        return false;
    };
    let region_end = region.start_addr().0 + region.len();
    let (Ok(map_len_usize), Ok(file_offset)) =
        (usize::try_from(map_len), libc::off_t::try_from(offset))
    else {
        return false;
    };
    if addr
        .0
        .checked_add(map_len)
        .is_none_or(|end| end > region_end)
    {
        return false;
    }
    let Ok(host) = mem.get_host_address(addr) else {
        return false;
    };
    if !install_guard() || !guard_range(host as usize, map_len_usize) {
        return false;
    }
    // SAFETY: `host..host + map_len` lies inside one live guest memory
    // mapping owned by `mem` (checked against the region bounds above), page
    // aligned, and no vCPU runs yet, so replacing those pages with a private
    // file mapping of the same size cannot pull memory from under anyone;
    // KVM's MMU notifier sees the change. The mapping stays inside the
    // region, so unmapping the region later also unmaps it.
    let mapped = unsafe {
        libc::mmap(
            host.cast(),
            map_len_usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_FIXED,
            file.as_raw_fd(),
            file_offset,
        )
    };
    if mapped == libc::MAP_FAILED {
        tracing::debug!(
            "mapping boot file failed ({}); copying instead",
            std::io::Error::last_os_error()
        );
        // The range stays guarded: harmless, it is anonymous memory again.
        return false;
    }
    true
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;
    use vm_memory::{Bytes, GuestMemoryMmap};

    /// An open, already unlinked, empty file for a test (`tag` names it).
    pub(crate) fn tempfile(tag: &str) -> File {
        let path = std::env::temp_dir().join(format!(
            "vmm-file-map-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let f = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        f
    }

    fn mem(size: usize) -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size)]).unwrap()
    }

    #[test]
    fn refuses_unaligned_out_of_region_or_past_eof_ranges() {
        let m = mem(1 << 20);
        let mut f = tempfile("refuse");
        f.write_all(&[1u8; 8192]).unwrap();
        assert!(!map_file_into_guest(&m, GuestAddress(0x1001), &f, 0, 10));
        assert!(!map_file_into_guest(&m, GuestAddress(0x1000), &f, 10, 10));
        assert!(!map_file_into_guest(&m, GuestAddress(0x1000), &f, 0, 0));
        // Longer than the file.
        assert!(!map_file_into_guest(
            &m,
            GuestAddress(0x1000),
            &f,
            4096,
            8192
        ));
        assert!(!map_file_into_guest(
            &m,
            GuestAddress((1 << 20) - 4096),
            &f,
            0,
            8192
        ));
        assert!(map_file_into_guest(
            &m,
            GuestAddress((1 << 20) - 8192),
            &f,
            0,
            8192
        ));
    }

    #[test]
    fn a_file_truncated_after_mapping_reads_as_zeros_instead_of_sigbus() {
        let m = mem(1 << 20);
        let mut f = tempfile("truncate");
        f.write_all(&[0xabu8; 3 * 4096]).unwrap();
        assert!(map_file_into_guest(
            &m,
            GuestAddress(0x4000),
            &f,
            0,
            3 * 4096
        ));
        // The guest wrote the first page (a private copy), then the file is
        // truncated to one page: the kernel drops pages 1 and 2 (and even the
        // private copy of page 0 survives only because it is inside the file).
        m.write_obj(0x11u8, GuestAddress(0x4000)).unwrap();
        f.set_len(4096).unwrap();
        // Without the guard this read kills the test process with SIGBUS.
        let past_eof: u8 = m.read_obj(GuestAddress(0x5000 + 7)).unwrap();
        assert_eq!(past_eof, 0);
        let mut page = [0xffu8; 4096];
        m.read_slice(&mut page, GuestAddress(0x6000)).unwrap();
        assert!(page.iter().all(|&b| b == 0));
        // The page still inside the file keeps the guest's write.
        assert_eq!(m.read_obj::<u8>(GuestAddress(0x4000)).unwrap(), 0x11);
        // A page the guest wrote is dropped too when it lies past the new
        // end: truncation discards private copies as well.
        m.write_obj(0x33u8, GuestAddress(0x5000)).unwrap();
        f.set_len(0).unwrap();
        assert_eq!(m.read_obj::<u8>(GuestAddress(0x4000)).unwrap(), 0);
        // The replaced page is ordinary writable memory.
        m.write_obj(0x22u8, GuestAddress(0x5000)).unwrap();
        assert_eq!(m.read_obj::<u8>(GuestAddress(0x5000)).unwrap(), 0x22);
    }

    /// Whether a slot guards exactly `start..start + len`.
    fn guards_exactly(start: usize, len: usize) -> bool {
        GUARDED
            .iter()
            .any(|(s, l)| s.load(Ordering::Acquire) == start && l.load(Ordering::Acquire) == len)
    }

    #[test]
    fn a_mapping_stays_guarded_while_a_worker_that_outlived_its_vm_holds_the_memory() {
        let m = mem(1 << 20);
        let mut f = tempfile("outlived");
        let len = 5 * 4096;
        f.write_all(&[0x5au8; 5 * 4096]).unwrap();
        assert!(map_file_into_guest(
            &m,
            GuestAddress(0x10000),
            &f,
            0,
            len as u64
        ));
        tie_mappings_to(&m);
        let host = m.get_host_address(GuestAddress(0x10000)).unwrap() as usize;
        // A restart: the VM drops its memory, a stuck device worker still
        // holds a clone, the next boot's build releases dropped mappings.
        let worker = m.clone();
        drop(m);
        release_dropped_mappings();
        assert!(guards_exactly(host, len));
        f.set_len(0).unwrap();
        // Without the guard this read kills the test process with SIGBUS.
        assert_eq!(worker.read_obj::<u8>(GuestAddress(0x12000)).unwrap(), 0);
        // Once the worker ends, the range is unmapped and no longer guarded
        // (its addresses may be reused by anything).
        drop(worker);
        release_dropped_mappings();
        assert!(!guards_exactly(host, len));
    }

    #[test]
    fn a_file_rewritten_in_place_shows_through_pages_the_guest_did_not_write() {
        let m = mem(1 << 20);
        let mut f = tempfile("rewrite");
        f.write_all(&[1u8; 2 * 4096]).unwrap();
        assert!(map_file_into_guest(
            &m,
            GuestAddress(0x8000),
            &f,
            0,
            2 * 4096
        ));
        m.write_obj(9u8, GuestAddress(0x8000)).unwrap();
        f.write_all_at_start(&[2u8; 2 * 4096]);
        assert_eq!(m.read_obj::<u8>(GuestAddress(0x8000)).unwrap(), 9);
        assert_eq!(m.read_obj::<u8>(GuestAddress(0x9000)).unwrap(), 2);
    }

    trait WriteAt {
        fn write_all_at_start(&mut self, data: &[u8]);
    }

    impl WriteAt for File {
        fn write_all_at_start(&mut self, data: &[u8]) {
            std::os::unix::fs::FileExt::write_all_at(self, data, 0).unwrap();
        }
    }

    /// Runs `body` in a forked child and returns its wait status.
    fn in_child(body: impl FnOnce()) -> libc::c_int {
        // SAFETY: the test child only runs `body` (async-signal-safe calls
        // and plain memory accesses) and then _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            body();
            // SAFETY: leave the child without running the test harness.
            unsafe { libc::_exit(0) };
        }
        let mut status = 0;
        // SAFETY: `pid` is our child; `status` is a valid out pointer.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        status
    }

    /// A seccomp filter that kills the process on `rt_sigaction`, `tkill`
    /// and `tgkill` (what restoring and raising SIGBUS would need; the
    /// VMM's sandbox refuses them) and allows everything else.
    ///
    /// # Safety
    /// Only in a forked child: the filter is permanent.
    unsafe fn refuse_signal_calls() {
        let nr = |n: libc::c_long| n as u32;
        let jeq_kill = |n: u32, to_kill: u8| libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: to_kill,
            jf: 0,
            k: n,
        };
        let filter = [
            libc::sock_filter {
                code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
                jt: 0,
                jf: 0,
                k: 0, // seccomp_data.nr
            },
            jeq_kill(nr(libc::SYS_rt_sigaction), 3),
            jeq_kill(nr(libc::SYS_tkill), 2),
            jeq_kill(nr(libc::SYS_tgkill), 1),
            libc::sock_filter {
                code: (libc::BPF_RET | libc::BPF_K) as u16,
                jt: 0,
                jf: 0,
                k: libc::SECCOMP_RET_ALLOW,
            },
            libc::sock_filter {
                code: (libc::BPF_RET | libc::BPF_K) as u16,
                jt: 0,
                jf: 0,
                k: libc::SECCOMP_RET_KILL_PROCESS,
            },
        ];
        let prog = libc::sock_fprog {
            len: filter.len() as u16,
            filter: filter.as_ptr().cast_mut(),
        };
        // SAFETY: a valid filter program that outlives the calls.
        unsafe {
            assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
            assert_eq!(
                libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog),
                0
            );
        }
    }

    #[test]
    #[cfg_attr(
        target_arch = "aarch64",
        ignore = "needs a native kernel: under qemu-user, how `cargo xtask test` runs the aarch64 unit tests, seccomp filters and signal delivery are emulated (run with --ignored on an arm64 host)"
    )]
    fn a_sigbus_sent_with_kill_ends_the_process_with_status_135() {
        assert!(install_guard());
        let status = in_child(|| {
            // SAFETY: the filter is installed in the forked child only.
            unsafe { refuse_signal_calls() };
            // SAFETY: a signal to the own process.
            unsafe { libc::kill(libc::getpid(), libc::SIGBUS) };
            // The handler runs before kill returns (a signal to oneself).
        });
        assert!(libc::WIFEXITED(status), "child ended with {status:#x}");
        assert_eq!(libc::WEXITSTATUS(status), UNCLAIMED_SIGBUS_EXIT);
    }

    #[test]
    #[cfg_attr(
        target_arch = "aarch64",
        ignore = "needs a native kernel: under qemu-user, how `cargo xtask test` runs the aarch64 unit tests, seccomp filters and signal delivery are emulated (run with --ignored on an arm64 host)"
    )]
    fn an_unclaimed_fault_ends_the_process_with_status_135_under_a_sandbox_filter() {
        assert!(install_guard());
        let f = tempfile("unclaimed");
        let status = in_child(|| {
            // SAFETY: the filter is installed in the forked child only.
            unsafe { refuse_signal_calls() };
            // SAFETY: a shared mapping of one page of an empty file: the
            // read below faults with SIGBUS (past the end of the file),
            // at an address the guard does not claim.
            unsafe {
                let p = libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_READ,
                    libc::MAP_SHARED,
                    f.as_raw_fd(),
                    0,
                );
                assert_ne!(p, libc::MAP_FAILED);
                std::ptr::read_volatile(p.cast::<u8>());
            }
        });
        // With signal() + raise() in the handler the filter would have
        // killed the child with SIGSYS instead.
        assert!(libc::WIFEXITED(status), "child ended with {status:#x}");
        assert_eq!(libc::WEXITSTATUS(status), UNCLAIMED_SIGBUS_EXIT);
    }

    #[test]
    fn the_unclaimed_report_names_the_address_or_the_sender() {
        let mut buf = [0u8; 128];
        let n = unclaimed_report(0xdead_b000, false, &mut buf);
        assert_eq!(
            std::str::from_utf8(&buf[..n]).unwrap(),
            "vmm: SIGBUS at 0x00000000deadb000 (not in a boot file mapping); exiting with status 135\n"
        );
        let n = unclaimed_report(0, true, &mut buf);
        assert_eq!(
            std::str::from_utf8(&buf[..n]).unwrap(),
            "vmm: SIGBUS sent by another process; exiting with status 135\n"
        );
    }

    #[test]
    fn by_default_only_a_compressed_kernel_is_mapped() {
        use std::ffi::OsStr;
        use BootFileUse::{CompressedKernel, Initrd, Kernel};
        let default = BootFiles::from_value(None);
        assert_eq!(default, BootFiles::Recommended);
        assert!(default.maps(CompressedKernel));
        assert!(!default.maps(Kernel) && !default.maps(Initrd));
        let all = BootFiles::from_value(Some(OsStr::new("map")));
        assert!([CompressedKernel, Kernel, Initrd]
            .iter()
            .all(|&u| all.maps(u)));
        let none = BootFiles::from_value(Some(OsStr::new("copy")));
        assert!(![CompressedKernel, Kernel, Initrd]
            .iter()
            .any(|&u| none.maps(u)));
        for other in ["", "MAP", "COPY", "copy ", "yes"] {
            assert_eq!(
                BootFiles::from_value(Some(OsStr::new(other))),
                BootFiles::Recommended,
                "{other:?}"
            );
        }
    }

    #[test]
    fn faults_outside_guarded_ranges_are_not_claimed() {
        assert!(!is_guarded(0));
        assert!(!is_guarded(usize::MAX));
    }
}
