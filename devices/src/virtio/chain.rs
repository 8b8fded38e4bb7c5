//! What every device checks first in a descriptor chain the queue's walker
//! yielded: that it has descriptors and that the walk reached its end.

use virtio_queue::desc::split::Descriptor;

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
    use vm_memory::GuestAddress;

    use super::*;

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
