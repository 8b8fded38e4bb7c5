//! What every device checks first in a descriptor chain the queue's walker
//! yielded: that it has descriptors and that the walk reached its end.

use std::ops::Range;

use virtio_queue::desc::split::Descriptor;
use vm_memory::GuestAddress;

/// A contiguous guest buffer of a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Guest physical address.
    pub addr: GuestAddress,
    /// Length in bytes.
    pub len: u32,
}

/// A buffer of `len` bytes laid over `segs` in order: each piece's range
/// in the buffer and the segment it goes to or comes from, until the
/// buffer or the segments end.
pub fn pieces(segs: &[Segment], len: usize) -> impl Iterator<Item = (Range<usize>, Segment)> + '_ {
    let mut done = 0;
    segs.iter().map_while(move |seg| {
        if done == len {
            return None;
        }
        let n = (seg.len as usize).min(len - done);
        let part = done..done + n;
        done += n;
        Some((part, *seg))
    })
}

/// A walked chain that is not whole: the device drops it (used length 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IncompleteChain {
    /// The chain has no descriptors (e.g. a head index beyond the queue).
    #[error("empty descriptor chain")]
    Empty,
    /// The walk stopped at a descriptor that still has `NEXT` set: a loop,
    /// a next index beyond the table, or a bad indirect table.
    #[error("descriptor chain is cut short (loop, bad next index or bad indirect table)")]
    Truncated,
}

/// The last descriptor of `descs`, if the chain is whole.
pub fn last_descriptor(descs: &[Descriptor]) -> Result<&Descriptor, IncompleteChain> {
    let last = descs.last().ok_or(IncompleteChain::Empty)?;
    if last.has_next() {
        return Err(IncompleteChain::Truncated);
    }
    Ok(last)
}

#[cfg(test)]
mod tests {
    use virtio_bindings::virtio_ring::VRING_DESC_F_NEXT;

    use super::*;

    #[test]
    fn pieces_cover_the_buffer_or_the_segments() {
        let seg = |addr, len| Segment {
            addr: GuestAddress(addr),
            len,
        };
        let segs = [seg(0x1000, 4), seg(0x2000, 0), seg(0x3000, 8)];
        let cut: Vec<_> = pieces(&segs, 6).collect();
        assert_eq!(cut, vec![(0..4, segs[0]), (4..4, segs[1]), (4..6, segs[2])]);
        let all: Vec<_> = pieces(&segs, 100).map(|(r, _)| r).collect();
        assert_eq!(all, vec![0..4, 4..4, 4..12]);
        assert_eq!(pieces(&segs, 0).count(), 0);
    }

    #[test]
    fn a_chain_must_have_descriptors_and_end() {
        let next = VRING_DESC_F_NEXT as u16;
        assert_eq!(last_descriptor(&[]).err(), Some(IncompleteChain::Empty));
        let cut = [Descriptor::new(0x1000, 16, next, 1)];
        assert_eq!(
            last_descriptor(&cut).err(),
            Some(IncompleteChain::Truncated)
        );
        let whole = [cut[0], Descriptor::new(0x2000, 16, 0, 0)];
        let last = last_descriptor(&whole).map(|d| d.addr());
        assert_eq!(last.ok(), Some(GuestAddress(0x2000)));
    }
}
