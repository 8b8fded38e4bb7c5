//! A cap on how fast a guest commits to one of its namespaces.
//!
//! A guest chooses how often it commits (a storage message with
//! `TRANSACT_COMPLETE`, a gatekeeper failure record), and each commit of a
//! [`FileStore`](super::FileStore) costs the host two atomic file writes,
//! two directory fsyncs and a manifest rewrite. [`CommitThrottle`] admits
//! commits through a token bucket ([`vmstack_log::LineBucket`], the one
//! that rate-limits log lines): [`COMMIT_BURST`] at once, then one per
//! [`COMMIT_REFILL`]. A commit over the rate is delayed, not failed (the
//! client sees a slower answer, never an error): the channel's thread
//! waits, holding the namespace's lock, so the guest's other channels on
//! that namespace wait too, and other guests (other locks) do not.

use std::time::{Duration, Instant};

use vmstack_log::LineBucket;

use super::{Change, FileMeta, SecureStore, StoreError};

/// Commits one namespace may make at once.
pub const COMMIT_BURST: u32 = 64;
/// After the burst, one more commit per this much time (20 a second).
pub const COMMIT_REFILL: Duration = Duration::from_millis(50);

/// The time a [`CommitThrottle`] reads and waits in (tests drive a fake).
pub trait Pace: Send {
    /// The current time.
    fn now(&self) -> Instant;
    /// Waits for `d`.
    fn sleep(&mut self, d: Duration);
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealPace;

impl Pace for RealPace {
    fn now(&self) -> Instant {
        Instant::now()
    }
    fn sleep(&mut self, d: Duration) {
        std::thread::sleep(d);
    }
}

/// A store whose commits are rate-limited (see the module docs); reads
/// pass through.
pub struct CommitThrottle<P: Pace = RealPace> {
    inner: Box<dyn SecureStore>,
    bucket: LineBucket,
    pace: P,
}

impl CommitThrottle {
    /// Throttles the commits of `inner` in real time.
    pub fn new(inner: Box<dyn SecureStore>) -> Self {
        Self::with_pace(inner, RealPace)
    }
}

impl<P: Pace> CommitThrottle<P> {
    /// Throttles the commits of `inner` in the time of `pace`.
    pub fn with_pace(inner: Box<dyn SecureStore>, pace: P) -> Self {
        CommitThrottle {
            inner,
            bucket: LineBucket::new(),
            pace,
        }
    }

    /// Takes a commit token, waiting for one if the burst is spent.
    fn wait_turn(&mut self) {
        if self
            .bucket
            .admit(self.pace.now(), COMMIT_BURST, COMMIT_REFILL)
            .is_some()
        {
            return;
        }
        // One period after the last refill adds a token, and nobody else
        // takes it: commits to a namespace hold its lock (`&mut self`).
        self.pace.sleep(COMMIT_REFILL);
        let _ = self
            .bucket
            .admit(self.pace.now(), COMMIT_BURST, COMMIT_REFILL);
    }
}

impl<P: Pace> SecureStore for CommitThrottle<P> {
    fn files(&self) -> Result<Vec<(String, FileMeta)>, StoreError> {
        self.inner.files()
    }
    fn meta(&self, name: &str) -> Result<Option<FileMeta>, StoreError> {
        self.inner.meta(name)
    }
    fn read(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        self.inner.read(name)
    }
    fn commit(&mut self, changes: Vec<Change>) -> Result<(), StoreError> {
        self.wait_turn();
        self.inner.commit(changes)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::store::MemStore;

    /// Fake time: starts at a fixed instant, moves only when slept.
    #[derive(Clone)]
    struct FakePace {
        start: Instant,
        slept: Arc<Mutex<Duration>>,
    }

    impl FakePace {
        fn slept(&self) -> Duration {
            *self.slept.lock().unwrap()
        }
        fn advance(&self, d: Duration) {
            *self.slept.lock().unwrap() += d;
        }
    }

    impl Pace for FakePace {
        fn now(&self) -> Instant {
            self.start + self.slept()
        }
        fn sleep(&mut self, d: Duration) {
            self.advance(d);
        }
    }

    fn change(i: usize) -> Vec<Change> {
        vec![Change {
            name: "f".into(),
            data: Some(i.to_le_bytes().to_vec()),
        }]
    }

    /// A throttled memory store in fake time, and its time.
    fn throttled() -> (CommitThrottle<FakePace>, FakePace) {
        let pace = FakePace {
            start: Instant::now(),
            slept: Arc::default(),
        };
        let s = CommitThrottle::with_pace(Box::new(MemStore::new()), pace.clone());
        (s, pace)
    }

    #[test]
    fn a_commit_flood_is_paced_after_its_burst() {
        let (mut s, pace) = throttled();
        let burst = COMMIT_BURST as usize;
        for i in 0..burst {
            s.commit(change(i)).unwrap();
        }
        assert_eq!(pace.slept(), Duration::ZERO, "the burst is not delayed");
        for i in 0..100 {
            s.commit(change(i)).unwrap();
        }
        assert_eq!(pace.slept(), COMMIT_REFILL * 100, "one commit per period");
        assert_eq!(s.read("f").unwrap(), 99usize.to_le_bytes());
    }

    #[test]
    fn commits_at_the_allowed_rate_never_wait() {
        let (mut s, pace) = throttled();
        for i in 0..1000 {
            s.commit(change(i)).unwrap();
            pace.advance(COMMIT_REFILL);
        }
        assert_eq!(
            pace.slept(),
            COMMIT_REFILL * 1000,
            "only the test's own steps"
        );
    }
}
