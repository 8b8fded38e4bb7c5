//! A kernel that runs in place (an x86_64 ELF `vmlinux`'s segments, an
//! arm64 `Image`) filled into guest memory behind the running guest instead
//! of copied before its first instruction.
//!
//! # Why
//! Copying the kernel before the first `KVM_RUN` puts the whole copy (tens
//! of MB into fresh memory) between the VMM's start and the guest's first
//! instruction. Mapping the file instead is free up front but leaves the
//! guest on 4 KiB page-cache pages, which makes it markedly slower
//! ([`crate::arch::file_map`]). Filling keeps both: the guest's kernel ends
//! up in the same transparent huge pages a copy gives, and the guest starts
//! before the copy is done.
//!
//! # How
//! The 2 MiB-aligned chunks of guest RAM the kernel's file bytes land in are
//! registered with a `userfaultfd` in `MISSING` mode: whoever touches a page
//! of them first (a vCPU through KVM, a device worker, the VMM's main
//! thread) waits until the page is there. One thread (`kernel-fill`) fills
//! every chunk in address order, starting when someone first waits (the
//! vCPU's first instruction, normally; until then it takes no CPU from the
//! VM's set-up): it reads the chunk's file bytes with
//! `pread` into a staging huge page (zeros where the file has no bytes for
//! the chunk) and moves that page into the chunk
//! with `UFFDIO_MOVE`, a page-table move (no second copy) that keeps the
//! huge page whole and wakes the waiters. Between chunks it reads the
//! waiters' fault events and fills their chunks first, so a waiter waits
//! for at most the chunk in progress and its own. The thread runs at the
//! lowest priority (nice 19): where it shares a CPU, the VM's set-up and
//! then the guest's vCPU go first, and a vCPU that waits for a chunk
//! leaves the CPU to it. When every chunk is filled, or when the VM has
//! ended (the [`KernelFill`] handle is dropped: the thread stops after the
//! chunk in progress) or a chunk cannot be put in place, the range is
//! unregistered (anyone still touching it gets zero pages, nobody waits
//! for a fill that no longer runs) and the thread ends; dropping the
//! handle joins it.
//!
//! # When
//! Only when every part holds, else the kernel is copied before the first
//! entry as before (the `debug` log says why):
//! - the kernel runs in place ([`runs_in_place`]: an ELF on x86_64, any
//!   `Image` on arm64) and `VMSTACK_BOOT_FILES` is unset; only then is the
//!   descriptor opened at all;
//! - the host's page size is 4 KiB;
//! - the host kernel has `UFFDIO_MOVE` (Linux 6.8) and lets this process
//!   handle faults raised inside the kernel (KVM's and `copy_to_user`'s):
//!   that takes `CAP_SYS_PTRACE` or `vm.unprivileged_userfaultfd = 1`.
//!   The descriptor is opened once, before the sandbox ([`UserFaults::open`],
//!   kept in the VMM's host resources), and serves every boot;
//! - the kernel's chunks lie in one guest RAM region whose host address is
//!   2 MiB-aligned with its guest address (huge pages line up).
//!
//! `VMSTACK_BOOT_FILES=copy` or `=map` ([`crate::arch::file_map`]) turns
//! filling off.
//!
//! # A kernel file changed after start
//! Each chunk's bytes are read when it is filled, while the guest boots
//! (within seconds of the start), with `pread`: nothing of the file is mapped, so nothing can
//! fault in the VMM. A file replaced by rename or deleted is still read
//! through the open descriptor (the old bytes). A file rewritten in place
//! shows its new bytes in the chunks not yet filled; a file truncated
//! leaves zeros where its bytes are gone (logged as a warning). Either way
//! the guest's kernel may be corrupt and the guest may crash; the VMM keeps
//! running. The rule for users stays: do not modify a kernel while a VM
//! booted from it runs.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::time::Instant;

use sandbox::policy::vmm::{
    UFFDIO_COPY, UFFDIO_MOVE, UFFDIO_REGISTER, UFFDIO_UNREGISTER, UFFDIO_WAKE,
};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

/// Size and alignment of a chunk: one transparent huge page.
pub const CHUNK: u64 = 2 << 20;
/// The fill thread's nice value (the lowest priority).
const FILL_NICE: libc::c_int = 19;
/// Page size of the fallback copy's steps.
const PAGE: u64 = 4096;

/// `UFFD_API`, the protocol version `UFFDIO_API` asks for.
const UFFD_API: u64 = 0xAA;
/// `UFFD_FEATURE_MOVE` (Linux 6.8).
const UFFD_FEATURE_MOVE: u64 = 1 << 16;
/// `UFFDIO_REGISTER_MODE_MISSING`.
const UFFDIO_REGISTER_MODE_MISSING: u64 = 1;
/// `UFFD_EVENT_PAGEFAULT`.
const UFFD_EVENT_PAGEFAULT: u8 = 0x12;
/// `sizeof(struct uffd_msg)`.
const UFFD_MSG_SIZE: usize = 32;
/// Offset of `arg.pagefault.address` in `struct uffd_msg`.
const UFFD_MSG_ADDRESS: usize = 16;

/// `UFFDIO_API` = `_IOWR(0xAA, 0x3F, struct uffdio_api)` (24 bytes); the
/// other requests are the sandbox policy's, which allows them.
const UFFDIO_API: u64 = 0xC018_AA3F;

/// `struct uffdio_api`.
#[repr(C)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

/// `struct uffdio_range`.
#[repr(C)]
#[derive(Clone, Copy)]
struct UffdioRange {
    start: u64,
    len: u64,
}

/// `struct uffdio_register`.
#[repr(C)]
struct UffdioRegister {
    range: UffdioRange,
    mode: u64,
    ioctls: u64,
}

/// `struct uffdio_move` and `struct uffdio_copy` (same layout: the last
/// field is how many bytes were moved or copied, or a negative errno).
#[repr(C)]
struct UffdioTransfer {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    done: i64,
}

/// `ioctl(fd, request, arg)` for the userfaultfd requests above.
fn uffd_ioctl<T>(fd: RawFd, request: u64, arg: &mut T) -> io::Result<()> {
    // SAFETY: every request used with this function is one of the constants
    // above, whose encoded size is `size_of::<T>()` of the matching
    // `#[repr(C)]` struct passed here; the kernel reads and writes only that
    // struct, which lives for the call.
    let rc = unsafe { libc::ioctl(fd, request as _, arg as *mut T) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A `userfaultfd` with `UFFDIO_MOVE`, able to handle faults the kernel
/// raises on this process's behalf (see the module documentation).
#[derive(Debug)]
pub struct UserFaults {
    fd: OwnedFd,
}

impl UserFaults {
    /// Opens the descriptor, or `None` (logged at `debug`) when the host
    /// kernel or this process's privileges do not allow it.
    pub fn open() -> Option<Self> {
        // SAFETY: `userfaultfd(2)` takes only flags and returns a new
        // descriptor or -1.
        let fd =
            unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | libc::O_NONBLOCK) };
        if fd < 0 {
            tracing::debug!(
                "userfaultfd: {} (needs CAP_SYS_PTRACE or vm.unprivileged_userfaultfd=1): \
                 a kernel that runs in place is copied before the first entry",
                io::Error::last_os_error()
            );
            return None;
        }
        // SAFETY: `fd` was just returned by the kernel and is owned by
        // nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        let mut api = UffdioApi {
            api: UFFD_API,
            features: UFFD_FEATURE_MOVE,
            ioctls: 0,
        };
        if let Err(e) = uffd_ioctl(fd.as_raw_fd(), UFFDIO_API, &mut api) {
            tracing::debug!(
                "userfaultfd without UFFDIO_MOVE ({e}; Linux 6.8 has it): \
                 a kernel that runs in place is copied before the first entry"
            );
            return None;
        }
        Some(Self { fd })
    }
}

/// Whether `kernel` is one that runs in place where it is loaded (an ELF
/// `vmlinux` on x86_64; on arm64 every kernel, an `Image`), so that
/// filling it behind the guest is worth a userfaultfd.
pub fn runs_in_place(kernel: &File) -> bool {
    if cfg!(target_arch = "aarch64") {
        return true;
    }
    let mut magic = [0u8; 4];
    kernel.read_exact_at(&mut magic, 0).is_ok() && magic == *b"\x7fELF"
}

/// File bytes that belong at a guest address: `len` bytes from `offset` of
/// the kernel file at `addr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileRange {
    /// Offset in the file.
    pub offset: u64,
    /// Guest physical address of the first byte.
    pub addr: u64,
    /// Number of bytes.
    pub len: u64,
}

/// Why a kernel cannot be filled behind the guest (the caller copies it).
#[derive(Debug, thiserror::Error)]
pub enum FillError {
    /// No file bytes to fill.
    #[error("no file bytes to fill")]
    Empty,
    /// Two ranges overlap.
    #[error("the kernel's file ranges overlap")]
    Overlap,
    /// The host's page size is not 4 KiB (the fill's page-sized steps
    /// assume it).
    #[error("host page size {0} is not 4 KiB")]
    PageSize(u64),
    /// The chunks are not inside one guest RAM region.
    #[error("the kernel's chunks [{start:#x}, {end:#x}) are not inside one guest RAM region")]
    NotInOneRegion {
        /// First byte of the chunks.
        start: u64,
        /// End of the chunks.
        end: u64,
    },
    /// Guest and host addresses of the chunks are not equally aligned, so
    /// huge pages would not line up.
    #[error("guest RAM at {guest:#x} is at host address {host:#x}: not 2 MiB-aligned alike")]
    Unaligned {
        /// Guest address of the first chunk.
        guest: u64,
        /// Its host address.
        host: u64,
    },
    /// A host call failed.
    #[error("{what}: {source}")]
    Host {
        /// What was being done.
        what: &'static str,
        /// The error.
        source: io::Error,
    },
}

fn host_err(what: &'static str) -> impl FnOnce(io::Error) -> FillError {
    move |source| FillError::Host { what, source }
}

/// One huge page's worth of anonymous memory, 2 MiB-aligned, where a
/// chunk is put together before it is moved into guest RAM.
struct Staging {
    /// The whole mapping (twice a chunk, for the alignment).
    base: *mut libc::c_void,
    /// The aligned chunk inside it.
    chunk: u64,
}

// SAFETY: `Staging` is an address range owned by this value; the fill thread
// is the only user of its memory while it runs and `Drop` unmaps it only
// after that thread has been joined.
unsafe impl Send for Staging {}

impl Staging {
    fn new() -> Result<Self, FillError> {
        let len = (2 * CHUNK) as usize;
        // SAFETY: a new private anonymous mapping; no existing memory is
        // touched.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(host_err("staging memory")(io::Error::last_os_error()));
        }
        let chunk = (base as u64).next_multiple_of(CHUNK);
        // SAFETY: the aligned chunk lies inside the mapping just made;
        // MADV_HUGEPAGE changes only how it is backed. Without THP the call
        // fails and the chunk is moved as 4 KiB pages (still correct).
        unsafe {
            libc::madvise(
                chunk as *mut libc::c_void,
                CHUNK as usize,
                libc::MADV_HUGEPAGE,
            )
        };
        Ok(Self { base, chunk })
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        // SAFETY: `base` is the mapping made in `new`, of that length, and
        // nothing uses it any more (see the `Send` impl).
        unsafe { libc::munmap(self.base, (2 * CHUNK) as usize) };
    }
}

/// What a finished fill did (logged when it ends).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FillReport {
    /// Chunks filled.
    pub chunks: u64,
    /// Chunks filled ahead of their turn because someone waited for them.
    pub waited_for: u64,
    /// Chunks moved page by page with `UFFDIO_COPY` because `UFFDIO_MOVE`
    /// failed.
    pub copied: u64,
    /// File bytes that could not be read (a file truncated after start);
    /// zeros stand in for them.
    pub missing_bytes: u64,
}

/// The running fill of one boot's kernel; dropping it waits for the fill to
/// end (see the module documentation).
pub struct KernelFill {
    thread: Option<sandbox::thread::JoinHandle<FillReport>>,
    /// Tells a fill still waiting for its first fault that the VM ends.
    ended: EventFd,
    /// Unmapped after the thread is joined (declared after it).
    _staging: Staging,
}

impl std::fmt::Debug for KernelFill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelFill").finish_non_exhaustive()
    }
}

impl KernelFill {
    /// Registers the chunks `ranges` lie in and starts the `kernel-fill`
    /// thread. From here on anyone touching those chunks waits for their
    /// bytes.
    pub fn start(
        faults: &UserFaults,
        mem: &GuestMemoryMmap,
        file: &File,
        ranges: &[FileRange],
    ) -> Result<Self, FillError> {
        // SAFETY: sysconf takes no pointers.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
        if page != PAGE {
            return Err(FillError::PageSize(page));
        }
        let mut ranges: Vec<FileRange> = ranges.iter().copied().filter(|r| r.len > 0).collect();
        ranges.sort_by_key(|r| r.addr);
        if ranges
            .windows(2)
            .any(|w| w[0].addr.saturating_add(w[0].len) > w[1].addr)
        {
            return Err(FillError::Overlap);
        }
        let first = ranges.first().ok_or(FillError::Empty)?.addr;
        let start = first - first % CHUNK;
        // The end of the last chunk (no range may wrap around).
        let end = ranges
            .iter()
            .map(|r| r.addr.checked_add(r.len)?.checked_next_multiple_of(CHUNK))
            .try_fold(start, |end, r| Some(end.max(r?)))
            .ok_or(FillError::NotInOneRegion {
                start,
                end: u64::MAX,
            })?;
        let outside = || FillError::NotInOneRegion { start, end };
        let region = mem.find_region(GuestAddress(start)).ok_or_else(outside)?;
        let region_start = region.start_addr().0;
        if end > region_start + region.len() {
            return Err(outside());
        }
        let host_start = region.as_ptr() as u64 + (start - region_start);
        if host_start % CHUNK != 0 {
            return Err(FillError::Unaligned {
                guest: start,
                host: host_start,
            });
        }
        let staging = Staging::new()?;
        let ended = EventFd::new(libc::EFD_NONBLOCK).map_err(host_err("eventfd"))?;
        let ended_for_job = ended.try_clone().map_err(host_err("eventfd dup"))?;
        let fd = faults.fd.try_clone().map_err(host_err("userfaultfd dup"))?;
        let file = file.try_clone().map_err(host_err("kernel file dup"))?;
        let span = UffdioRange {
            start: host_start,
            len: end - start,
        };
        let mut register = UffdioRegister {
            range: span,
            mode: UFFDIO_REGISTER_MODE_MISSING,
            ioctls: 0,
        };
        uffd_ioctl(fd.as_raw_fd(), UFFDIO_REGISTER, &mut register)
            .map_err(host_err("UFFDIO_REGISTER"))?;
        let job = FillJob {
            fd,
            ended: ended_for_job,
            file,
            _mem: mem.clone(),
            guest_start: start,
            host_start,
            chunks: (end - start) / CHUNK,
            ranges,
            staging: staging.chunk,
        };
        match sandbox::thread::spawn("kernel-fill", move || job.run()) {
            Ok(thread) => Ok(Self {
                thread: Some(thread),
                ended,
                _staging: staging,
            }),
            Err(e) => {
                // Nobody has touched the chunks yet (this thread registered
                // them a moment ago): unregistering leaves them plain RAM.
                let mut range = span;
                let _ = uffd_ioctl(faults.fd.as_raw_fd(), UFFDIO_UNREGISTER, &mut range);
                Err(host_err("kernel-fill thread")(e))
            }
        }
    }

    /// Waits for the fill to end and returns what it did.
    pub fn finish(mut self) -> FillReport {
        self.join()
    }

    fn join(&mut self) -> FillReport {
        if self.thread.is_some() {
            if let Err(e) = self.ended.write(1) {
                tracing::warn!("kernel fill: eventfd write: {e}");
            }
        }
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(report)) => report,
            Some(Err(_)) => {
                tracing::error!("the kernel-fill thread panicked");
                FillReport::default()
            }
            None => FillReport::default(),
        }
    }
}

impl Drop for KernelFill {
    fn drop(&mut self) {
        self.join();
    }
}

/// The fill thread's state.
struct FillJob {
    fd: OwnedFd,
    /// Readable once the [`KernelFill`] is dropped.
    ended: EventFd,
    file: File,
    /// Keeps guest memory mapped while the thread moves pages into it.
    _mem: GuestMemoryMmap,
    guest_start: u64,
    host_start: u64,
    chunks: u64,
    ranges: Vec<FileRange>,
    /// Host address of the staging chunk.
    staging: u64,
}

impl FillJob {
    fn run(self) -> FillReport {
        // The lowest priority: on a busy CPU the guest's vCPU goes first (the
        // fill is for the guest's sake, and a vCPU waiting for a chunk
        // leaves the CPU to it); an idle CPU fills at full speed.
        // SAFETY: takes no pointers; on Linux `PRIO_PROCESS` with `who` 0
        // is the calling thread only.
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, FILL_NICE) } != 0 {
            tracing::debug!("kernel fill: setpriority: {}", io::Error::last_os_error());
        }
        let mut report = FillReport::default();
        if !self.wait_for_first_fault() {
            // The VM ended before anything touched its kernel: nothing
            // needs the bytes (the range is unregistered on drop).
            return report;
        }
        let started = Instant::now();
        let mut filled = vec![false; self.chunks as usize];
        let mut next = 0usize;
        let outcome = 'fill: loop {
            if self.vm_ended() {
                break "the VM ended: the rest is not needed";
            }
            while let Some(address) = self.next_fault() {
                match self.chunk_of(address) {
                    Some(c) if !filled[c] => {
                        if !self.fill(c as u64, &mut report) {
                            break 'fill "a chunk could not be put in place";
                        }
                        filled[c] = true;
                        report.waited_for += 1;
                    }
                    // Filled already (the move woke the waiter; a filled
                    // chunk has every page) or not ours (an event left from
                    // an earlier boot): waking is harmless either way.
                    _ => self.wake(address),
                }
            }
            while next < filled.len() && filled[next] {
                next += 1;
            }
            if next == filled.len() {
                break "done";
            }
            if !self.fill(next as u64, &mut report) {
                break "a chunk could not be put in place";
            }
            filled[next] = true;
        };
        tracing::info!(
            "kernel filled behind the guest: {} of {} MiB in {} ms from the first fault, {} of {} chunks waited for ({outcome})",
            (report.chunks * CHUNK) >> 20,
            (self.chunks * CHUNK) >> 20,
            started.elapsed().as_millis(),
            report.waited_for,
            report.chunks
        );
        if report.copied > 0 {
            tracing::warn!(
                "kernel fill: UFFDIO_MOVE failed for {} chunks, copied instead",
                report.copied
            );
        }
        if report.missing_bytes > 0 {
            tracing::warn!(
                "kernel fill: the kernel file lost {} bytes since start (truncated?): \
                 zeros stand in for them, the guest's kernel is corrupt",
                report.missing_bytes
            );
        }
        report
    }

    /// Whether the [`KernelFill`] was dropped (the VM ended).
    fn vm_ended(&self) -> bool {
        self.ended.read().is_ok()
    }

    /// Waits until someone touches the kernel (the vCPU's first
    /// instruction, normally) or the VM ends (`false`): until then the
    /// thread takes no CPU from the VM's set-up.
    fn wait_for_first_fault(&self) -> bool {
        let mut fds = [
            libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: self.ended.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        loop {
            // SAFETY: `fds` is a valid array of two pollfds for the call.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // Cannot wait: fill right away (correct, only earlier).
                tracing::warn!("kernel fill: poll: {e}");
                return true;
            }
            if fds[0].revents != 0 {
                return true;
            }
            if fds[1].revents != 0 {
                return false;
            }
        }
    }

    fn unregister(&self) {
        let mut span = UffdioRange {
            start: self.host_start,
            len: self.chunks * CHUNK,
        };
        if let Err(e) = uffd_ioctl(self.fd.as_raw_fd(), UFFDIO_UNREGISTER, &mut span) {
            tracing::warn!("kernel fill: UFFDIO_UNREGISTER: {e}");
        }
    }

    /// The address of the next waiter's fault, if one is queued.
    fn next_fault(&self) -> Option<u64> {
        let mut msg = [0u8; UFFD_MSG_SIZE];
        loop {
            // SAFETY: reads at most `msg.len()` bytes into `msg`.
            let n =
                unsafe { libc::read(self.fd.as_raw_fd(), msg.as_mut_ptr().cast(), UFFD_MSG_SIZE) };
            if n == UFFD_MSG_SIZE as isize {
                if msg[0] != UFFD_EVENT_PAGEFAULT {
                    continue;
                }
                let mut address = [0u8; 8];
                address.copy_from_slice(&msg[UFFD_MSG_ADDRESS..UFFD_MSG_ADDRESS + 8]);
                return Some(u64::from_ne_bytes(address));
            }
            if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            // EAGAIN: nobody waits.
            return None;
        }
    }

    fn chunk_of(&self, host_address: u64) -> Option<usize> {
        let offset = host_address.checked_sub(self.host_start)?;
        let chunk = offset / CHUNK;
        (chunk < self.chunks).then_some(chunk as usize)
    }

    fn wake(&self, host_address: u64) {
        let mut range = UffdioRange {
            start: host_address - host_address % PAGE,
            len: PAGE,
        };
        let _ = uffd_ioctl(self.fd.as_raw_fd(), UFFDIO_WAKE, &mut range);
    }

    /// Puts chunk `c` together in the staging chunk and moves it in;
    /// `false` if it could not be put in place.
    fn fill(&self, c: u64, report: &mut FillReport) -> bool {
        let chunk_guest = self.guest_start + c * CHUNK;
        // SAFETY: the staging chunk is `CHUNK` bytes of this job's own
        // anonymous mapping, used by this thread only (see `Staging`); it is
        // not registered with the userfaultfd, so touching it cannot wait.
        let staging =
            unsafe { std::slice::from_raw_parts_mut(self.staging as *mut u8, CHUNK as usize) };
        // Every byte of the staging chunk is written (file bytes, zeros
        // around them), so no stale byte of an earlier chunk can get in and
        // the move finds no hole.
        let mut cursor = 0usize;
        for r in &self.ranges {
            let from = r.addr.max(chunk_guest);
            let to = (r.addr + r.len).min(chunk_guest + CHUNK);
            if from >= to {
                continue;
            }
            let at = (from - chunk_guest) as usize;
            staging[cursor..at].fill(0);
            cursor = at + (to - from) as usize;
            report.missing_bytes +=
                self.read_fully(&mut staging[at..cursor], r.offset + (from - r.addr));
        }
        staging[cursor..].fill(0);
        let mut transfer = UffdioTransfer {
            dst: self.host_start + c * CHUNK,
            src: self.staging,
            len: CHUNK,
            mode: 0,
            done: 0,
        };
        let placed = uffd_ioctl(self.fd.as_raw_fd(), UFFDIO_MOVE, &mut transfer).is_ok()
            || self.copy_pages(c, report);
        if placed {
            report.chunks += 1;
        }
        placed
    }

    /// Reads `buf.len()` bytes from `offset`; returns how many could not be
    /// read (zeros stand in for them).
    fn read_fully(&self, buf: &mut [u8], offset: u64) -> u64 {
        let mut done = 0usize;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::warn!("kernel fill: reading the kernel file: {e}");
                    break;
                }
            }
        }
        // Zeros where the file ended.
        buf[done..].fill(0);
        (buf.len() - done) as u64
    }

    /// The fallback when a move fails: the staging chunk copied into the
    /// chunk's missing pages one page at a time (pages a partial move put
    /// there already are left alone), then the staging chunk's pages
    /// released. `false` if a page could not be copied (tried twice): the
    /// fill then ends, and unregistering gives waiters zero pages instead
    /// of leaving them waiting.
    fn copy_pages(&self, c: u64, report: &mut FillReport) -> bool {
        report.copied += 1;
        let dst = self.host_start + c * CHUNK;
        let copy_page = |at: u64| {
            let mut transfer = UffdioTransfer {
                dst: dst + at,
                src: self.staging + at,
                len: PAGE,
                mode: 0,
                done: 0,
            };
            match uffd_ioctl(self.fd.as_raw_fd(), UFFDIO_COPY, &mut transfer) {
                Err(e) if e.raw_os_error() != Some(libc::EEXIST) => Err(e),
                _ => Ok(()),
            }
        };
        let mut placed = true;
        for at in (0..CHUNK).step_by(PAGE as usize) {
            if let Err(e) = copy_page(at).or_else(|_| copy_page(at)) {
                tracing::error!("kernel fill: UFFDIO_COPY at chunk {c}: {e}");
                placed = false;
                break;
            }
        }
        // SAFETY: the staging chunk belongs to this job (see `Staging`);
        // MADV_DONTNEED drops its pages, which then read as zeros.
        unsafe {
            libc::madvise(
                self.staging as *mut libc::c_void,
                CHUNK as usize,
                libc::MADV_DONTNEED,
            )
        };
        placed
    }
}

impl Drop for FillJob {
    /// The range is unregistered however the thread ends (also by an
    /// unwinding panic in a test build): nobody waits for a fill that no
    /// longer runs.
    fn drop(&mut self) {
        self.unregister();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;
    use vm_memory::mmap::MmapRegion;
    use vm_memory::{Bytes, GuestRegionMmap};

    const MIB: u64 = 1 << 20;

    /// The descriptor, or `None` with a note where the host has none for
    /// this process (no privilege, no `UFFDIO_MOVE`, qemu-user).
    pub(crate) fn user_faults() -> Option<UserFaults> {
        let faults = UserFaults::open();
        if faults.is_none() {
            eprintln!("note: no userfaultfd with UFFDIO_MOVE here; the fill is not exercised");
        }
        faults
    }

    /// `size` bytes of guest RAM at guest address 0, 2 MiB-aligned on the
    /// host like the VMM's (the mapping is left to the process's end).
    pub(crate) fn aligned_mem(size: u64) -> GuestMemoryMmap {
        let len = (size + CHUNK) as usize;
        // SAFETY: a new private anonymous mapping.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED);
        let aligned = (base as u64).next_multiple_of(CHUNK) as *mut u8;
        // SAFETY: `aligned` and `size` lie inside the mapping just made,
        // which is never unmapped.
        let region = unsafe {
            MmapRegion::build_raw(
                aligned,
                size as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            )
        }
        .unwrap();
        let region = GuestRegionMmap::new(region, GuestAddress(0)).unwrap();
        GuestMemoryMmap::from_regions(vec![region]).unwrap()
    }

    fn file_of(bytes: &[u8]) -> File {
        let mut f = crate::arch::file_map::tests::tempfile("kernel-fill");
        f.write_all(bytes).unwrap();
        f
    }

    fn byte(mem: &GuestMemoryMmap, addr: u64) -> u8 {
        mem.read_obj(GuestAddress(addr)).unwrap()
    }

    /// 8 MiB of guest RAM and a started fill of `len` bytes from the start
    /// of a file holding `bytes` at guest address 2 MiB.
    fn fill_at_2_mib(faults: &UserFaults, bytes: &[u8], len: u64) -> (GuestMemoryMmap, KernelFill) {
        let mem = aligned_mem(8 * MIB);
        let range = FileRange {
            offset: 0,
            addr: 2 * MIB,
            len,
        };
        let fill = KernelFill::start(faults, &mem, &file_of(bytes), &[range]).unwrap();
        (mem, fill)
    }

    #[test]
    fn filled_chunks_hold_the_file_bytes_and_zeros_around_them() {
        let Some(faults) = user_faults() else { return };
        let mem = aligned_mem(16 * MIB);
        // Two ranges: one inside the chunk at 2 MiB, one spanning the
        // chunks at 4 and 6 MiB; the file's first page is a header.
        let mut bytes = vec![0x11u8; 0x1000];
        bytes.extend(vec![0xaau8; 0x3000]);
        bytes.extend(vec![0xbbu8; (2 * MIB) as usize]);
        let file = file_of(&bytes);
        let ranges = [
            FileRange {
                offset: 0x1000,
                addr: 2 * MIB + 0x5000,
                len: 0x3000,
            },
            FileRange {
                offset: 0x4000,
                addr: 5 * MIB,
                len: 2 * MIB,
            },
        ];
        let fill = KernelFill::start(&faults, &mem, &file, &ranges).unwrap();
        // Read while the fill may still run: a read waits for its chunk.
        assert_eq!(byte(&mem, 7 * MIB - 1), 0xbb);
        assert_eq!(byte(&mem, 2 * MIB + 0x5000), 0xaa);
        assert_eq!(byte(&mem, 2 * MIB + 0x7fff), 0xaa);
        assert_eq!(byte(&mem, 2 * MIB + 0x4fff), 0);
        assert_eq!(byte(&mem, 2 * MIB + 0x8000), 0);
        assert_eq!(byte(&mem, 5 * MIB - 1), 0);
        assert_eq!(byte(&mem, 5 * MIB), 0xbb);
        assert_eq!(byte(&mem, 7 * MIB), 0);
        let report = fill.finish();
        // Chunks 2-4, 4-6 and 6-8 MiB.
        assert_eq!(report.chunks, 3);
        assert_eq!(report.missing_bytes, 0);
        assert_eq!(report.copied, 0);
        // Unregistered: RAM outside and inside the chunks is plain memory.
        mem.write_obj(0x5au8, GuestAddress(3 * MIB)).unwrap();
        assert_eq!(byte(&mem, 3 * MIB), 0x5a);
        assert_eq!(byte(&mem, 12 * MIB), 0);
    }

    #[test]
    fn a_vm_that_ends_before_touching_its_kernel_fills_nothing() {
        let Some(faults) = user_faults() else { return };
        let (mem, fill) = fill_at_2_mib(&faults, &[0x66u8; 0x1000], 0x1000);
        assert_eq!(fill.finish(), FillReport::default());
        // Unregistered: the chunk is plain (zero) RAM, nothing waits.
        assert_eq!(byte(&mem, 2 * MIB), 0);
    }

    #[test]
    fn a_file_shorter_than_its_ranges_leaves_zeros_and_is_reported() {
        let Some(faults) = user_faults() else { return };
        // The range was planned for 1 MiB of file; the file has 4 KiB
        // left (truncated after start).
        let (mem, fill) = fill_at_2_mib(&faults, &[0x77u8; 0x1000], MIB);
        assert_eq!(byte(&mem, 2 * MIB + 0xfff), 0x77);
        assert_eq!(byte(&mem, 2 * MIB + 0x1000), 0);
        let report = fill.finish();
        assert_eq!(report.missing_bytes, MIB - 0x1000);
    }

    #[test]
    fn chunks_outside_one_region_or_overlapping_ranges_are_refused() {
        let Some(faults) = user_faults() else { return };
        let mem = aligned_mem(4 * MIB);
        let file = file_of(&[1u8; 0x1000]);
        let past_end = FileRange {
            offset: 0,
            addr: 3 * MIB,
            len: 2 * MIB,
        };
        assert!(matches!(
            KernelFill::start(&faults, &mem, &file, &[past_end]),
            Err(FillError::NotInOneRegion { start, end }) if start == 2 * MIB && end == 6 * MIB
        ));
        let a = FileRange {
            offset: 0,
            addr: MIB,
            len: 0x2000,
        };
        let b = FileRange {
            addr: MIB + 0x1000,
            ..a
        };
        assert!(matches!(
            KernelFill::start(&faults, &mem, &file, &[a, b]),
            Err(FillError::Overlap)
        ));
        assert!(matches!(
            KernelFill::start(&faults, &mem, &file, &[]),
            Err(FillError::Empty)
        ));
        let wraps = FileRange {
            offset: 0,
            addr: u64::MAX - 0xfff,
            len: 0x2000,
        };
        assert!(matches!(
            KernelFill::start(&faults, &mem, &file, &[wraps]),
            Err(FillError::NotInOneRegion { end: u64::MAX, .. })
        ));
        // Nothing was registered: the memory is plain RAM.
        mem.write_obj(3u8, GuestAddress(MIB)).unwrap();
        assert_eq!(byte(&mem, MIB), 3);
    }
}
