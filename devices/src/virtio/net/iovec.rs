//! Frame buffers over guest memory: the `iovec`s handed to `readv`/`writev`
//! so that frames move between the host backend and the guest's own buffers
//! without an intermediate copy.

use std::io;
use std::os::fd::RawFd;

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use crate::virtio::GuestMemoryMmap;

/// Most segments one frame may have (the kernel's `UIO_MAXIOV`); longer
/// chains are refused.
pub const MAX_SEGMENTS: usize = 1024;

/// Why a guest buffer cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IoVecError {
    /// The range is not (entirely) inside guest memory.
    #[error("buffer at {0:#x} is outside guest memory")]
    OutOfRange(u64),
    /// The chain has more than [`MAX_SEGMENTS`] segments.
    #[error("more than {MAX_SEGMENTS} buffer segments")]
    TooManySegments,
}

/// A system call's byte count, or its error (`errno`) when negative.
pub(super) fn byte_count(ret: isize) -> io::Result<usize> {
    usize::try_from(ret).map_err(|_| io::Error::last_os_error())
}

/// A list of guest memory ranges as `iovec`s, reused from frame to frame so
/// that the data path does not allocate.
///
/// Invariant: every entry points into a mapped region of `mem`, which this
/// value keeps alive, and covers exactly the bytes of one guest range. This
/// is what makes [`IoVecs::as_raw`] safe to hand to `readv`/`writev`.
pub struct IoVecs {
    mem: GuestMemoryMmap,
    iovs: Vec<libc::iovec>,
    /// Guest address of each entry of `iovs`.
    addrs: Vec<GuestAddress>,
    len: usize,
}

// SAFETY: the raw pointers only refer to guest memory mappings owned by the
// `mem` clone stored alongside; those mappings are shared memory that any
// thread may access, so moving the list to another thread is sound.
unsafe impl Send for IoVecs {}

impl IoVecs {
    /// An empty list over `mem`.
    pub fn new(mem: GuestMemoryMmap) -> Self {
        Self {
            mem,
            iovs: Vec::with_capacity(MAX_SEGMENTS),
            addrs: Vec::with_capacity(MAX_SEGMENTS),
            len: 0,
        }
    }

    /// Forgets every entry (keeps the allocation).
    pub fn clear(&mut self) {
        self.iovs.clear();
        self.addrs.clear();
        self.len = 0;
    }

    /// Total bytes covered.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no byte is covered.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends the guest range `addr..addr+len`. The whole range must be in
    /// guest memory, else nothing is added.
    pub fn push(&mut self, addr: GuestAddress, len: usize) -> Result<(), IoVecError> {
        if len == 0 {
            return Ok(());
        }
        if !self.mem.check_range(addr, len) {
            return Err(IoVecError::OutOfRange(addr.0));
        }
        let start = self.iovs.len();
        let mut next = addr;
        for slice in self.mem.get_slices(addr, len) {
            let Ok(slice) = slice else {
                self.truncate(start);
                return Err(IoVecError::OutOfRange(addr.0));
            };
            if self.iovs.len() == MAX_SEGMENTS {
                self.truncate(start);
                return Err(IoVecError::TooManySegments);
            }
            self.iovs.push(libc::iovec {
                iov_base: slice.ptr_guard_mut().as_ptr().cast(),
                iov_len: slice.len(),
            });
            self.addrs.push(next);
            next = GuestAddress(next.0 + slice.len() as u64);
        }
        self.len += len;
        Ok(())
    }

    fn truncate(&mut self, segments: usize) {
        self.iovs.truncate(segments);
        self.addrs.truncate(segments);
    }

    /// The entries, for `readv`/`writev`. Each one is a valid, mapped range of
    /// guest memory for as long as `self` lives.
    pub fn as_raw(&self) -> &[libc::iovec] {
        &self.iovs
    }

    /// One `readv(fd)` into the entries; returns what it returned (for a
    /// tap, a frame's full length even when it was cut).
    pub fn readv_from(&self, fd: RawFd) -> io::Result<usize> {
        // SAFETY: the entries only point at mapped guest memory kept alive
        // by `self` (type invariant); the kernel writes at most their
        // lengths. MAX_SEGMENTS bounds their count, so it fits a c_int.
        let n = unsafe { libc::readv(fd, self.iovs.as_ptr(), self.iovs.len() as libc::c_int) };
        byte_count(n)
    }

    /// One `writev(fd)` of the entries; returns the bytes written.
    pub fn writev_to(&self, fd: RawFd) -> io::Result<usize> {
        // SAFETY: the entries only point at mapped guest memory kept alive
        // by `self` (type invariant); the kernel only reads them.
        // MAX_SEGMENTS bounds their count, so it fits a c_int.
        let n = unsafe { libc::writev(fd, self.iovs.as_ptr(), self.iovs.len() as libc::c_int) };
        byte_count(n)
    }

    /// Copies bytes at `offset` (counted across all entries) into `buf`;
    /// returns how many were available.
    pub fn read_at(&self, offset: usize, buf: &mut [u8]) -> usize {
        let mut done = 0;
        self.for_each_range(offset, buf.len(), |addr, at, n| {
            if self.mem.read_slice(&mut buf[at..at + n], addr).is_ok() {
                done += n;
                true
            } else {
                false
            }
        });
        done
    }

    /// Copies `data` to `offset` (counted across all entries); returns how
    /// many bytes fit.
    pub fn write_at(&self, offset: usize, data: &[u8]) -> usize {
        let mut done = 0;
        self.for_each_range(offset, data.len(), |addr, at, n| {
            if self.mem.write_slice(&data[at..at + n], addr).is_ok() {
                done += n;
                true
            } else {
                false
            }
        });
        done
    }

    /// Calls `f(guest address, position in the caller's buffer, length)` for
    /// the pieces of `offset..offset+len`, in order, until `f` returns false.
    fn for_each_range(
        &self,
        offset: usize,
        len: usize,
        mut f: impl FnMut(GuestAddress, usize, usize) -> bool,
    ) {
        let mut skip = offset;
        let mut at = 0;
        for (iov, addr) in self.iovs.iter().zip(&self.addrs) {
            if at == len {
                break;
            }
            if skip >= iov.iov_len {
                skip -= iov.iov_len;
                continue;
            }
            let n = (iov.iov_len - skip).min(len - at);
            if !f(GuestAddress(addr.0 + skip as u64), at, n) {
                break;
            }
            at += n;
            skip = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::test_utils::{guest_memory, TEST_MEM_SIZE};

    #[test]
    fn ranges_outside_memory_are_refused_whole() {
        let mut iovs = IoVecs::new(guest_memory());
        iovs.push(GuestAddress(0x1000), 16).unwrap();
        assert_eq!(
            iovs.push(GuestAddress(TEST_MEM_SIZE as u64 - 8), 16),
            Err(IoVecError::OutOfRange(TEST_MEM_SIZE as u64 - 8))
        );
        assert_eq!(
            iovs.push(GuestAddress(u64::MAX - 4), 16),
            Err(IoVecError::OutOfRange(u64::MAX - 4))
        );
        assert_eq!(iovs.len(), 16);
        assert_eq!(iovs.as_raw().len(), 1);
        // Zero-length ranges add nothing.
        iovs.push(GuestAddress(0x2000), 0).unwrap();
        assert_eq!(iovs.as_raw().len(), 1);
    }

    #[test]
    fn segment_limit() {
        let mut iovs = IoVecs::new(guest_memory());
        for i in 0..MAX_SEGMENTS as u64 {
            iovs.push(GuestAddress(0x1000 + i * 4), 1).unwrap();
        }
        assert_eq!(
            iovs.push(GuestAddress(0x1000), 1),
            Err(IoVecError::TooManySegments)
        );
        iovs.clear();
        assert!(iovs.is_empty());
        assert!(iovs.as_raw().is_empty());
    }

    #[test]
    fn reads_and_writes_span_entries() {
        let mem = guest_memory();
        let mut iovs = IoVecs::new(mem.clone());
        iovs.push(GuestAddress(0x1000), 3).unwrap();
        iovs.push(GuestAddress(0x2000), 5).unwrap();
        assert_eq!(iovs.write_at(1, &[1, 2, 3, 4]), 4);
        let mut a = [0u8; 3];
        let mut b = [0u8; 5];
        mem.read_slice(&mut a, GuestAddress(0x1000)).unwrap();
        mem.read_slice(&mut b, GuestAddress(0x2000)).unwrap();
        assert_eq!(a, [0, 1, 2]);
        assert_eq!(b, [3, 4, 0, 0, 0]);
        let mut back = [0u8; 6];
        assert_eq!(iovs.read_at(0, &mut back), 6);
        assert_eq!(back, [0, 1, 2, 3, 4, 0]);
        // Past the end: only what exists.
        assert_eq!(iovs.write_at(6, &[9, 9, 9, 9]), 2);
        assert_eq!(iovs.read_at(100, &mut back), 0);
    }
}
