//! One guest's budget of uncommitted transaction bytes, shared by all of
//! its storage channels (vsock connections and TEE sessions).
//!
//! Each [`StorageSession`](super::StorageSession) holds a [`BudgetShare`]:
//! the bytes its open transaction is charged for (as counted against
//! [`MAX_TRANSACTION_BYTES`](super::MAX_TRANSACTION_BYTES)). A share grows
//! only if the guest's [`TransactionBudget`] has room, and gives its bytes
//! back when the transaction commits, is discarded or the channel closes
//! (the share is dropped). Guests have a budget each, so one guest filling
//! its own does not refuse another guest's growth.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use thiserror::Error;

/// The uncommitted transaction bytes one guest may hold over all of its
/// storage channels at once (16 full transactions of
/// [`MAX_TRANSACTION_BYTES`](super::MAX_TRANSACTION_BYTES)).
pub const MAX_GUEST_TRANSACTION_BYTES: usize = 64 << 20;

/// Growth a guest's budget has no room for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("{wanted} more bytes do not fit: {held} of the guest's {limit} are held")]
pub struct BudgetExceeded {
    /// The bytes asked for.
    pub wanted: usize,
    /// The bytes the guest's channels held when it was refused.
    pub held: usize,
    /// The guest's budget.
    pub limit: usize,
}

/// One guest's budget: the most bytes its open transactions may hold
/// together, and how many they hold.
#[derive(Debug)]
pub struct TransactionBudget {
    limit: usize,
    held: AtomicUsize,
}

impl TransactionBudget {
    /// A budget of `limit` bytes, none of it taken.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(TransactionBudget {
            limit,
            held: AtomicUsize::new(0),
        })
    }

    /// The budget in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The bytes the guest's open transactions hold now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }

    /// Takes `bytes` if they fit (all of them or nothing).
    fn take(&self, bytes: usize) -> Result<(), BudgetExceeded> {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(bytes).filter(|&n| n <= self.limit)
            })
            .map(|_| ())
            .map_err(|held| BudgetExceeded {
                wanted: bytes,
                held,
                limit: self.limit,
            })
    }

    /// Gives back `bytes` taken before.
    fn give_back(&self, bytes: usize) {
        // A share never gives back more than it took; saturate anyway so
        // that a bug cannot wrap the count into a budget that refuses all.
        let _ = self
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                Some(held.saturating_sub(bytes))
            });
    }
}

/// One channel's part of its guest's [`TransactionBudget`]: given back
/// when dropped.
#[derive(Debug)]
pub struct BudgetShare {
    budget: Arc<TransactionBudget>,
    held: usize,
}

impl BudgetShare {
    /// An empty share of `budget`.
    pub fn new(budget: Arc<TransactionBudget>) -> Self {
        BudgetShare { budget, held: 0 }
    }

    /// The bytes this share holds.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Makes this share `bytes`: growth is taken from the guest's budget
    /// if it fits (else the share stays as it was), a shrink is given
    /// back.
    pub fn set(&mut self, bytes: usize) -> Result<(), BudgetExceeded> {
        if bytes > self.held {
            self.budget.take(bytes - self.held)?;
        } else {
            self.budget.give_back(self.held - bytes);
        }
        self.held = bytes;
        Ok(())
    }

    /// Gives back what this share holds above `bytes` (never grows it).
    pub fn shrink_to(&mut self, bytes: usize) {
        if bytes < self.held {
            self.budget.give_back(self.held - bytes);
            self.held = bytes;
        }
    }

    /// Gives back everything this share holds.
    pub fn release(&mut self) {
        self.shrink_to(0);
    }
}

impl Drop for BudgetShare {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_of_one_budget_together_stay_within_it() {
        let budget = TransactionBudget::new(100);
        let mut a = BudgetShare::new(budget.clone());
        let mut b = BudgetShare::new(budget.clone());
        assert_eq!(a.set(60), Ok(()));
        assert_eq!(
            b.set(41),
            Err(BudgetExceeded {
                wanted: 41,
                held: 60,
                limit: 100
            })
        );
        assert_eq!(b.held(), 0, "a refused growth takes nothing");
        assert_eq!(b.set(40), Ok(()));
        assert_eq!(budget.held(), 100);
        // Shrinking gives back; growing again is checked again.
        assert_eq!(a.set(10), Ok(()));
        assert_eq!(budget.held(), 50);
        a.shrink_to(20);
        assert_eq!(a.held(), 10, "shrink_to never grows");
        assert_eq!(b.set(90), Ok(()));
        assert!(a.set(11).is_err());
        b.release();
        assert_eq!(budget.held(), 10);
        drop(a);
        assert_eq!(budget.held(), 0, "a dropped share gives its bytes back");
    }

    #[test]
    fn growth_that_would_overflow_is_refused() {
        let budget = TransactionBudget::new(usize::MAX);
        let mut a = BudgetShare::new(budget.clone());
        let mut b = BudgetShare::new(budget.clone());
        assert_eq!(a.set(usize::MAX - 1), Ok(()));
        assert!(b.set(2).is_err());
        assert_eq!(budget.held(), usize::MAX - 1);
    }
}
