//! The disk image: opening, locking and sizing the file, and positional
//! vectored I/O straight between the file and guest memory.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use vm_memory::bitmap::Bitmap;
use vm_memory::GuestMemoryBackend;

use super::request::Segment;
use super::{ID_BYTES, SECTOR_SIZE};
use crate::virtio::GuestMemoryMmap;

/// Errors opening a disk image; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// The file could not be opened.
    #[error("cannot open disk image {path}: {source}{hint}")]
    Open {
        /// The image.
        path: PathBuf,
        /// The error.
        source: io::Error,
        /// Advice appended to the message (may be empty).
        hint: &'static str,
    },
    /// Another process holds a conflicting lock on the image.
    #[error("disk image {0} is in use by another process: stop it (another VMM?) or attach a copy of the image")]
    InUse(PathBuf),
    /// Locking failed for another reason.
    #[error("cannot lock disk image {path}: {source}")]
    Lock {
        /// The image.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// `fstat` failed.
    #[error("cannot read the size of disk image {path}: {source}")]
    Metadata {
        /// The image.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Not a regular file.
    #[error("disk image {0} is not a regular file: give the path of a raw image file")]
    NotAFile(PathBuf),
    /// Smaller than one sector.
    #[error("disk image {path} is {size} bytes, less than one 512-byte sector: use an image of at least 512 bytes")]
    TooSmall {
        /// The image.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// Not a whole number of sectors.
    #[error("disk image {path} is {size} bytes, not a multiple of 512: pad it, e.g. `truncate -s %512 {path}`")]
    NotSectorMultiple {
        /// The image.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
}

/// An open, locked raw disk image.
#[derive(Debug)]
pub struct DiskImage {
    file: File,
    sectors: u64,
    read_only: bool,
    serial: [u8; ID_BYTES],
}

/// Most iovecs one `preadv`/`pwritev` call takes (Linux `UIO_MAXIOV`).
const IOV_MAX: usize = 1024;

/// Most iovecs one `pwritev` call gets. Linux's buffered write path
/// (`generic_perform_write`) pre-faults the source before copying each
/// folio; in 6.12 (the test host's kernel) on tmpfs the pre-fault spans the
/// rest of the call's iovecs (up to the mapping's largest folio size) while
/// the copy covers one page, so one call with an iovec per 4 KiB page costs
/// a `fault_in_readable` per remaining iovec per page: quadratic in the
/// iovecs of the call. A guest request brings one iovec per page. Measured
/// in the test host, 1 MiB as 256 scattered 4 KiB iovecs: 380 MiB/s as one
/// call, 1225 MiB/s as 16-iovec calls, 798 MiB/s as one call per iovec
/// (docs/benchmarks.md). Reads have no pre-fault and stay one call.
const WRITE_IOV_BATCH: usize = 16;

/// Zeroes for the write-zeroes fallback.
static ZEROES: [u8; 64 * 1024] = [0; 64 * 1024];

impl DiskImage {
    /// Opens and locks `path` (read-only: `O_RDONLY` and a shared lock;
    /// read-write: an exclusive lock). `id` is the `GET_ID` serial (at most
    /// 20 bytes; longer is cut); without it the serial is derived from the
    /// file's device and inode numbers.
    pub fn open(path: &Path, read_only: bool, id: Option<&str>) -> Result<Self, DiskError> {
        let file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(|source| {
                let denied = matches!(
                    source.raw_os_error(),
                    Some(libc::EACCES | libc::EROFS | libc::EPERM)
                );
                DiskError::Open {
                    path: path.to_path_buf(),
                    source,
                    hint: if denied && !read_only {
                        " (attach it read-only with --disk, or make it writable)"
                    } else {
                        ""
                    },
                }
            })?;
        let op = if read_only {
            libc::LOCK_SH
        } else {
            libc::LOCK_EX
        };
        // SAFETY: flock on a file descriptor we own; no memory is involved.
        if unsafe { libc::flock(file.as_raw_fd(), op | libc::LOCK_NB) } != 0 {
            let source = io::Error::last_os_error();
            return Err(if source.raw_os_error() == Some(libc::EWOULDBLOCK) {
                DiskError::InUse(path.to_path_buf())
            } else {
                DiskError::Lock {
                    path: path.to_path_buf(),
                    source,
                }
            });
        }
        let meta = file.metadata().map_err(|source| DiskError::Metadata {
            path: path.to_path_buf(),
            source,
        })?;
        if !meta.is_file() {
            return Err(DiskError::NotAFile(path.to_path_buf()));
        }
        let size = meta.len();
        if size < SECTOR_SIZE {
            return Err(DiskError::TooSmall {
                path: path.to_path_buf(),
                size,
            });
        }
        if size % SECTOR_SIZE != 0 {
            return Err(DiskError::NotSectorMultiple {
                path: path.to_path_buf(),
                size,
            });
        }
        let serial = match id {
            Some(id) => serial_bytes(id),
            None => serial_bytes(&derived_serial(meta.dev(), meta.ino())),
        };
        Ok(Self {
            file,
            sectors: size / SECTOR_SIZE,
            read_only,
            serial,
        })
    }

    /// Capacity in 512-byte sectors.
    pub fn sectors(&self) -> u64 {
        self.sectors
    }

    /// Whether the guest may only read.
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// The `GET_ID` answer: the serial, NUL-padded to 20 bytes.
    pub fn serial(&self) -> &[u8; ID_BYTES] {
        &self.serial
    }

    /// Fills the guest buffers `segs` from the file at byte `offset`.
    /// Returns the bytes transferred, and the error that stopped it early.
    pub fn read_to_guest(
        &self,
        mem: &GuestMemoryMmap,
        segs: &[Segment],
        offset: u64,
    ) -> (usize, io::Result<()>) {
        self.transfer(mem, segs, offset, Direction::FileToGuest)
    }

    /// Writes the guest buffers `segs` to the file at byte `offset`. When
    /// this returns `Ok`, the data is in the host kernel (it survives the
    /// VMM dying; [`Self::flush`] makes it survive the host dying).
    pub fn write_from_guest(
        &self,
        mem: &GuestMemoryMmap,
        segs: &[Segment],
        offset: u64,
    ) -> io::Result<()> {
        self.transfer(mem, segs, offset, Direction::GuestToFile).1
    }

    /// Makes every completed write durable (`fdatasync`).
    pub fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Deallocates `len` bytes at `offset` (the data then reads as zeroes).
    /// A file system without hole punching makes this a no-op: a discard is
    /// only a hint. Returns whether space was deallocated.
    pub fn discard(&self, offset: u64, len: u64) -> io::Result<bool> {
        match self.fallocate(
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset,
            len,
        ) {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Makes `len` bytes at `offset` read as zeroes: `FALLOC_FL_ZERO_RANGE`
    /// (or a punched hole if `unmap`), falling back to the other one and
    /// finally to writing zeroes.
    pub fn write_zeroes(&self, offset: u64, len: u64, unmap: bool) -> io::Result<()> {
        let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        let zero = libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE;
        let modes = if unmap { [punch, zero] } else { [zero, punch] };
        for mode in modes {
            match self.fallocate(mode, offset, len) {
                Ok(()) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {}
                Err(e) => return Err(e),
            }
        }
        let mut done = 0;
        while done < len {
            let n = (len - done).min(ZEROES.len() as u64) as usize;
            self.file.write_all_at(&ZEROES[..n], offset + done)?;
            done += n as u64;
        }
        Ok(())
    }

    fn fallocate(&self, mode: libc::c_int, offset: u64, len: u64) -> io::Result<()> {
        let off = libc::off_t::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
        let len = libc::off_t::try_from(len).map_err(|_| io::ErrorKind::InvalidInput)?;
        loop {
            // SAFETY: fallocate on a file descriptor we own; no memory is
            // involved.
            if unsafe { libc::fallocate(self.file.as_raw_fd(), mode, off, len) } == 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    fn transfer(
        &self,
        mem: &GuestMemoryMmap,
        segs: &[Segment],
        offset: u64,
        dir: Direction,
    ) -> (usize, io::Result<()>) {
        // Host views of the guest buffers. A segment crossing a memory
        // region boundary becomes several slices.
        let mut slices = Vec::with_capacity(segs.len());
        for seg in segs {
            for slice in mem.get_slices(seg.addr, seg.len as usize) {
                match slice {
                    Ok(s) => slices.push(s),
                    Err(e) => return (0, Err(io::Error::other(e))),
                }
            }
        }
        // The guards keep the pointers valid for the duration of the calls
        // (they matter for mappings that are established on demand).
        let guards: Vec<_> = slices.iter().map(|s| s.ptr_guard_mut()).collect();
        let mut iovecs: Vec<libc::iovec> = guards
            .iter()
            .zip(&slices)
            .map(|(g, s)| libc::iovec {
                iov_base: g.as_ptr().cast(),
                iov_len: s.len(),
            })
            .collect();
        let result = vectored_at(&self.file, &mut iovecs, offset, dir);
        if dir == Direction::FileToGuest {
            // The kernel wrote guest memory behind vm-memory's back.
            for s in &slices {
                s.bitmap().mark_dirty(0, s.len());
            }
        }
        result
    }
}

/// Which way data moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    FileToGuest,
    GuestToFile,
}

/// `preadv`/`pwritev` until every iovec is done; returns the bytes moved
/// and the error (or end of file) that stopped it early.
fn vectored_at(
    file: &File,
    iovecs: &mut [libc::iovec],
    mut offset: u64,
    dir: Direction,
) -> (usize, io::Result<()>) {
    let mut done = 0usize;
    let mut first = 0usize;
    loop {
        while first < iovecs.len() && iovecs[first].iov_len == 0 {
            first += 1;
        }
        if first == iovecs.len() {
            return (done, Ok(()));
        }
        let Ok(off) = libc::off_t::try_from(offset) else {
            return (done, Err(io::ErrorKind::InvalidInput.into()));
        };
        let batch = &iovecs[first..];
        let most = match dir {
            Direction::FileToGuest => IOV_MAX,
            Direction::GuestToFile => WRITE_IOV_BATCH,
        };
        let count = batch.len().min(most) as libc::c_int;
        // SAFETY: `file` is an open descriptor; the first `count` iovecs of
        // `batch` describe host mappings of guest memory that the caller's
        // slices and pointer guards keep valid (and that were checked to lie
        // inside guest memory), each for `iov_len` bytes. The kernel reads
        // or writes only within them.
        let n = unsafe {
            match dir {
                Direction::FileToGuest => {
                    libc::preadv(file.as_raw_fd(), batch.as_ptr(), count, off)
                }
                Direction::GuestToFile => {
                    libc::pwritev(file.as_raw_fd(), batch.as_ptr(), count, off)
                }
            }
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return (done, Err(e));
        }
        if n == 0 {
            let kind = match dir {
                Direction::FileToGuest => io::ErrorKind::UnexpectedEof,
                Direction::GuestToFile => io::ErrorKind::WriteZero,
            };
            return (done, Err(kind.into()));
        }
        let mut n = n as usize;
        done += n;
        offset += n as u64;
        while n > 0 {
            let iov = &mut iovecs[first];
            if n >= iov.iov_len {
                n -= iov.iov_len;
                iov.iov_len = 0;
                first += 1;
            } else {
                iov.iov_base = iov.iov_base.cast::<u8>().wrapping_add(n).cast();
                iov.iov_len -= n;
                n = 0;
            }
        }
    }
}

/// The default serial: device and inode numbers of the image, in hex,
/// keeping the last 20 characters if longer.
pub fn derived_serial(dev: u64, ino: u64) -> String {
    let s = format!("{dev:x}-{ino:x}");
    let cut = s.len().saturating_sub(ID_BYTES);
    s[cut..].to_string()
}

fn serial_bytes(id: &str) -> [u8; ID_BYTES] {
    let mut out = [0u8; ID_BYTES];
    let n = id.len().min(ID_BYTES);
    out[..n].copy_from_slice(&id.as_bytes()[..n]);
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A temporary image file, removed on drop.
    pub struct TempImage {
        /// Its path.
        pub path: PathBuf,
    }

    impl TempImage {
        /// A new file with `contents`.
        pub fn new(contents: &[u8]) -> Self {
            static N: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "vmstack-blk-test-{}-{}.img",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ));
            std::fs::write(&path, contents).unwrap();
            Self { path }
        }

        /// The file's contents now.
        pub fn contents(&self) -> Vec<u8> {
            std::fs::read(&self.path).unwrap()
        }
    }

    impl Drop for TempImage {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.path);
        }
    }

    #[test]
    fn sizes_are_checked() {
        let tiny = TempImage::new(&[0; 100]);
        let e = DiskImage::open(&tiny.path, true, None).unwrap_err();
        assert!(matches!(e, DiskError::TooSmall { size: 100, .. }), "{e}");
        assert!(e.to_string().contains("at least 512 bytes"));
        let odd = TempImage::new(&[0; 1000]);
        let e = DiskImage::open(&odd.path, false, None).unwrap_err();
        assert!(
            matches!(e, DiskError::NotSectorMultiple { size: 1000, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("truncate -s %512"));
        let ok = TempImage::new(&[0; 4096]);
        assert_eq!(DiskImage::open(&ok.path, false, None).unwrap().sectors(), 8);
    }

    #[test]
    fn missing_file_is_reported() {
        let e = DiskImage::open(Path::new("/nonexistent/vmstack.img"), false, None).unwrap_err();
        assert!(e
            .to_string()
            .starts_with("cannot open disk image /nonexistent/vmstack.img"));
    }

    #[test]
    fn locks_keep_a_second_user_out() {
        let img = TempImage::new(&[0; 512]);
        let rw = DiskImage::open(&img.path, false, None).unwrap();
        for read_only in [false, true] {
            let e = DiskImage::open(&img.path, read_only, None).unwrap_err();
            assert!(matches!(e, DiskError::InUse(_)), "{e}");
            assert!(e.to_string().contains("is in use by another process"));
        }
        drop(rw);
        // Readers share the image, but keep writers out.
        let ro1 = DiskImage::open(&img.path, true, None).unwrap();
        let _ro2 = DiskImage::open(&img.path, true, None).unwrap();
        assert!(matches!(
            DiskImage::open(&img.path, false, None),
            Err(DiskError::InUse(_))
        ));
        assert!(ro1.read_only());
    }

    #[test]
    fn read_only_images_are_opened_read_only() {
        let img = TempImage::new(&[7; 512]);
        let disk = DiskImage::open(&img.path, true, None).unwrap();
        assert!(disk.file.write_at(&[1], 0).is_err(), "O_RDONLY descriptor");
    }

    #[test]
    fn serials() {
        let img = TempImage::new(&[0; 512]);
        let disk = DiskImage::open(&img.path, true, Some("root")).unwrap();
        assert_eq!(&disk.serial()[..5], b"root\0");
        let disk = DiskImage::open(&img.path, true, None).unwrap();
        let meta = std::fs::metadata(&img.path).unwrap();
        let expected = derived_serial(meta.dev(), meta.ino());
        assert_eq!(&disk.serial()[..expected.len()], expected.as_bytes());
        assert_eq!(derived_serial(0x803, 0x1f), "803-1f");
        assert_eq!(
            derived_serial(u64::MAX, u64::MAX),
            "fff-ffffffffffffffff",
            "the last 20 characters"
        );
        assert_eq!(
            &serial_bytes("0123456789abcdefghijKL"),
            b"0123456789abcdefghij"
        );
    }

    #[test]
    fn write_zeroes_and_discard_zero_the_range() {
        let img = TempImage::new(&[0xaa; 64 * 1024]);
        let disk = DiskImage::open(&img.path, false, None).unwrap();
        disk.write_zeroes(4096, 8192, false).unwrap();
        disk.write_zeroes(16384, 4096, true).unwrap();
        disk.discard(32768, 4096).unwrap();
        let data = img.contents();
        assert_eq!(data.len(), 64 * 1024, "size kept");
        assert!(data[..4096].iter().all(|&b| b == 0xaa));
        assert!(data[4096..12288].iter().all(|&b| b == 0));
        assert!(data[12288..16384].iter().all(|&b| b == 0xaa));
        assert!(data[16384..20480].iter().all(|&b| b == 0));
        assert!(data[40960..].iter().all(|&b| b == 0xaa));
    }

    #[test]
    fn vectored_writes_cover_every_iovec_in_batches() {
        // More iovecs than one write batch (and than IOV_MAX), of uneven
        // sizes, so batches end inside and at iovec boundaries alike.
        let lens: Vec<usize> = (0..IOV_MAX + 77).map(|i| 1 + i % 13).collect();
        let total: usize = lens.iter().sum();
        let src: Vec<u8> = (0..total).map(|i| (i % 253) as u8).collect();
        let img = TempImage::new(&vec![0xee; (total + 512).next_multiple_of(512) + 4096]);
        let disk = DiskImage::open(&img.path, false, None).unwrap();
        let mut at = 0;
        let mut iovecs: Vec<libc::iovec> = lens
            .iter()
            .map(|&len| {
                let iov = libc::iovec {
                    iov_base: src[at..].as_ptr().cast_mut().cast(),
                    iov_len: len,
                };
                at += len;
                iov
            })
            .collect();
        let (done, r) = vectored_at(&disk.file, &mut iovecs, 512, Direction::GuestToFile);
        r.unwrap();
        assert_eq!(done, total);
        let data = img.contents();
        assert!(data[..512].iter().all(|&b| b == 0xee));
        assert_eq!(&data[512..512 + total], &src[..]);
        assert!(data[512 + total..].iter().all(|&b| b == 0xee));
    }

    #[test]
    fn vectored_io_crosses_many_iovecs_and_short_transfers() {
        // More iovecs than one preadv takes.
        let n = IOV_MAX + 128; // 4608 bytes: whole sectors
        let contents: Vec<u8> = (0..n * 4).map(|i| (i % 251) as u8).collect();
        let img = TempImage::new(&contents);
        let disk = DiskImage::open(&img.path, false, None).unwrap();
        let mut bufs = vec![[0u8; 4]; n];
        let mut iovecs: Vec<libc::iovec> = bufs
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: 4,
            })
            .collect();
        let (done, r) = vectored_at(&disk.file, &mut iovecs, 0, Direction::FileToGuest);
        r.unwrap();
        assert_eq!(done, n * 4);
        assert_eq!(bufs.concat(), contents);
        // Reading past the end stops with UnexpectedEof.
        let mut buf = [0u8; 8];
        let mut iov = [libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: 8,
        }];
        let (done, r) = vectored_at(
            &disk.file,
            &mut iov,
            (n * 4 - 4) as u64,
            Direction::FileToGuest,
        );
        assert_eq!(done, 4);
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }
}
