//! The shape shared by workers that serve one queue under a
//! [`RateLimiter`] (virtio-blk, virtio-rng): each kick and each firing of
//! the limiter's timer processes the queue; the limiter outlives the worker
//! as the device's backend, so a reset does not refill its buckets.
//!
//! Implement [`LimitedQueueWorker`] (for a worker with a `limiter` field,
//! `impl_limited_queue_worker!` writes it); the [`Worker`] implementation
//! follows.

use vmm_sys_util::epoll::EventSet;

use crate::virtio::event_loop::event_token;
use crate::virtio::rate_limiter::RateLimiter;
use crate::virtio::{WaitContext, Worker};

event_token! {
    /// The event source of a [`LimitedQueueWorker`] besides its queue.
    pub enum LimiterToken {
        /// The rate limiter's timer: a refused request may pass now.
        RateLimit,
    }
}

/// A worker of one queue whose requests pass through a [`RateLimiter`].
pub trait LimitedQueueWorker: Send + Sized + 'static {
    /// Name for log lines, e.g. `virtio-rng`.
    const NAME: &'static str;
    /// Thread name, e.g. `v_rng` (Linux keeps 15 bytes).
    const THREAD_NAME: &'static str;

    /// The worker's limiter.
    fn limiter(&mut self) -> &mut RateLimiter;

    /// Gives the limiter back when the worker stops.
    fn into_limiter(self) -> RateLimiter;

    /// Serves the queue until it is empty or the limiter refuses a request
    /// (which goes back on the queue until the timer fires).
    fn process_queue(&mut self);
}

/// Implements [`LimitedQueueWorker`] for `$worker`, a struct with a
/// `limiter: RateLimiter` field and an inherent `process_queue(&mut self)`
/// (whose return value, the chains served, the trait does not need).
macro_rules! impl_limited_queue_worker {
    ($worker:ident, name: $name:literal, thread: $thread:literal) => {
        impl $crate::virtio::limited_worker::LimitedQueueWorker for $worker {
            const NAME: &'static str = $name;
            const THREAD_NAME: &'static str = $thread;

            fn limiter(&mut self) -> &mut $crate::virtio::rate_limiter::RateLimiter {
                &mut self.limiter
            }

            fn into_limiter(self) -> $crate::virtio::rate_limiter::RateLimiter {
                self.limiter
            }

            fn process_queue(&mut self) {
                $worker::process_queue(self);
            }
        }
    };
}
pub(crate) use impl_limited_queue_worker;

impl<W: LimitedQueueWorker> Worker for W {
    type Token = LimiterToken;
    type Backend = RateLimiter;
    const NAME: &'static str = <W as LimitedQueueWorker>::NAME;
    const THREAD_NAME: &'static str = <W as LimitedQueueWorker>::THREAD_NAME;

    fn register(&mut self, ctx: &WaitContext<LimiterToken>) -> std::io::Result<()> {
        match self.limiter().timer() {
            Some(timer) => ctx.add(timer, EventSet::IN, LimiterToken::RateLimit),
            None => Ok(()),
        }
    }

    fn on_queue(&mut self, _ctx: &WaitContext<LimiterToken>, _index: usize) {
        self.process_queue();
    }

    fn on_event(&mut self, _ctx: &WaitContext<LimiterToken>, token: LimiterToken, _: EventSet) {
        match token {
            LimiterToken::RateLimit => {
                self.limiter().on_timer();
                self.process_queue();
            }
        }
    }

    fn into_backend(self) -> RateLimiter {
        self.into_limiter()
    }
}
