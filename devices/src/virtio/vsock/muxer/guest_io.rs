//! Moving bytes from a host socket straight into guest buffers.

use std::io;
use std::os::fd::BorrowedFd;

use vm_memory::{GuestMemoryBackend, ReadVolatile, VolatileMemoryError};

use super::Region;
use crate::virtio::GuestMemoryMmap;

/// Why a read into guest memory stopped.
pub(super) enum ReadResult {
    Data(usize),
    Eof,
    WouldBlock,
    Error(io::Error),
}

pub(super) fn volatile_io_error(e: VolatileMemoryError) -> io::Error {
    match e {
        VolatileMemoryError::IOError(e) => e,
        other => io::Error::other(other.to_string()),
    }
}

/// Reads from `stream` into the guest `regions`, at most `max` bytes.
pub(super) fn read_into(
    mem: &GuestMemoryMmap,
    mut stream: BorrowedFd<'_>,
    regions: &[Region],
    max: usize,
) -> ReadResult {
    let mut total = 0;
    for &(addr, len) in regions {
        let want = len.min(max - total);
        if want == 0 {
            break;
        }
        let mut slice = match mem.get_slice(addr, want) {
            Ok(s) => s,
            Err(e) => {
                if total > 0 {
                    break;
                }
                return ReadResult::Error(io::Error::other(e.to_string()));
            }
        };
        let n = loop {
            match stream.read_volatile(&mut slice) {
                Ok(n) => break n,
                Err(VolatileMemoryError::IOError(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let e = volatile_io_error(e);
                    if total > 0 {
                        return ReadResult::Data(total);
                    }
                    if e.kind() == io::ErrorKind::WouldBlock {
                        return ReadResult::WouldBlock;
                    }
                    return ReadResult::Error(e);
                }
            }
        };
        if n == 0 {
            break;
        }
        total += n;
        if n < want {
            break;
        }
    }
    if total == 0 {
        ReadResult::Eof
    } else {
        ReadResult::Data(total)
    }
}
