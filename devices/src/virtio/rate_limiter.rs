//! Token-bucket rate limiters for virtio-blk, virtio-net and virtio-rng,
//! with Firecracker's semantics.
//!
//! A limiter has up to two buckets: **bandwidth** (tokens are bytes) and
//! **operations** (tokens are requests, frames). Each bucket is
//! [`BucketConfig`] `{ size, one_time_burst, refill_time }`:
//!
//! * it starts full and refills continuously, `size` tokens per
//!   `refill_time`, never above `size`;
//! * `one_time_burst` extra tokens are there once, at the start, and are
//!   spent before the refilling budget;
//! * a request passes when every bucket has its cost; then the cost is
//!   taken from every bucket, otherwise from none;
//! * a request that costs more than a bucket's `size` (it could never fit)
//!   passes once, taking the whole budget and leaving the excess as a debt
//!   that the refill repays before anything else passes (Firecracker's
//!   "over-consumption": the limiter is blocked for `excess / size`
//!   refill times).
//!
//! A limited device stops processing its queue when a request does not
//! pass, puts the request back (it is served first later) and waits for
//! the limiter's timer fd in its event loop, armed for exactly the time
//! until the blocking bucket has the cost ([`RateLimiter::consume`]); it
//! also stops taking the guest's kicks meanwhile (notifications stay
//! disabled). The limiter is the device's backend, so a reset of the
//! device does not refill it.
//!
//! On the command line (`vmm run --rwdisk PATH,bw=...,ops=...`, `--net
//! ...,bw=...`, `--rng=bw=...`) a bucket is `SIZE:REFILL_MS[:BURST]`
//! ([`BucketConfig::from_str`]).

use std::fmt;
use std::io;
use std::os::fd::AsRawFd;
use std::str::FromStr;
use std::time::{Duration, Instant};

use vmm_sys_util::timerfd::TimerFd;

/// One bucket's parameters (Firecracker's `TokenBucket` fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketConfig {
    /// Tokens the bucket holds when full (bytes or operations).
    pub size: u64,
    /// Extra tokens available once, spent first.
    pub one_time_burst: u64,
    /// Time to refill `size` tokens from empty.
    pub refill_time: Duration,
}

/// A malformed bucket specification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid rate limit '{0}': expected SIZE:REFILL_MS[:BURST], e.g. 10M:1000 (SIZE and BURST may end in K, M or G; SIZE and REFILL_MS above 0)")]
pub struct BucketParseError(pub String);

/// A number with an optional binary suffix (`K`, `M`, `G`: 2^10, 2^20,
/// 2^30).
fn parse_size(s: &str) -> Option<u64> {
    let (digits, shift) = match s.as_bytes().last()? {
        b'k' | b'K' => (&s[..s.len() - 1], 10),
        b'm' | b'M' => (&s[..s.len() - 1], 20),
        b'g' | b'G' => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(1 << shift)
}

impl FromStr for BucketConfig {
    type Err = BucketParseError;

    /// `SIZE:REFILL_MS[:BURST]`, e.g. `10M:1000` (10 MiB per second) or
    /// `100:1000:500` (100 per second, 500 more once).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || BucketParseError(s.to_string());
        let mut parts = s.split(':');
        let size = parts.next().and_then(parse_size).ok_or_else(err)?;
        let refill_ms = parts
            .next()
            .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|p| p.parse::<u64>().ok())
            .ok_or_else(err)?;
        let one_time_burst = match parts.next() {
            Some(b) => parse_size(b).ok_or_else(err)?,
            None => 0,
        };
        if parts.next().is_some() || size == 0 || refill_ms == 0 {
            return Err(err());
        }
        Ok(Self {
            size,
            one_time_burst,
            refill_time: Duration::from_millis(refill_ms),
        })
    }
}

impl fmt::Display for BucketConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.size, self.refill_time.as_millis())?;
        if self.one_time_burst > 0 {
            write!(f, ":{}", self.one_time_burst)?;
        }
        Ok(())
    }
}

/// A device's limits: a bandwidth bucket (bytes), an operations bucket, or
/// both; neither means unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimit {
    /// Bytes.
    pub bandwidth: Option<BucketConfig>,
    /// Requests (block, rng) or frames (net).
    pub ops: Option<BucketConfig>,
}

impl RateLimit {
    /// Whether nothing is limited.
    pub fn is_unlimited(&self) -> bool {
        self.bandwidth.is_none() && self.ops.is_none()
    }
}

/// One token bucket, a pure value: time is passed in.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    config: BucketConfig,
    /// Tokens now; negative while a request larger than `size` is being
    /// paid off.
    budget: i128,
    /// What is left of the one-time burst.
    burst: u64,
    /// The time up to which refills are accounted.
    last_update: Instant,
}

impl TokenBucket {
    /// A full bucket at `now`.
    pub fn new(config: BucketConfig, now: Instant) -> Self {
        Self {
            config,
            budget: i128::from(config.size),
            burst: config.one_time_burst,
            last_update: now,
        }
    }

    fn refill_nanos(&self) -> i128 {
        i128::try_from(self.config.refill_time.as_nanos())
            .unwrap_or(i128::MAX)
            .max(1)
    }

    /// Adds the tokens earned since the last update (whole tokens; the
    /// remainder of time is kept).
    fn refill(&mut self, now: Instant) {
        let size = i128::from(self.config.size);
        if self.budget >= size {
            self.last_update = now;
            return;
        }
        let elapsed = i128::try_from(now.saturating_duration_since(self.last_update).as_nanos())
            .unwrap_or(i128::MAX);
        let refill = self.refill_nanos();
        let tokens = elapsed.saturating_mul(size) / refill;
        if tokens == 0 {
            return;
        }
        self.budget = self.budget.saturating_add(tokens).min(size);
        if self.budget >= size {
            self.last_update = now;
        } else {
            // The time those tokens took, rounded up, so nothing is earned
            // twice.
            let used = (tokens.saturating_mul(refill) + size - 1) / size;
            let used = Duration::from_nanos(u64::try_from(used).unwrap_or(u64::MAX));
            self.last_update += used;
        }
    }

    /// Tokens available now (the burst included); negative while in debt.
    pub fn available(&mut self, now: Instant) -> i128 {
        self.refill(now);
        self.budget + i128::from(self.burst)
    }

    /// Whether `cost` would pass at `now`, and if not, how long until it
    /// would.
    fn check(&mut self, now: Instant, cost: u64) -> Result<(), Duration> {
        let available = self.available(now);
        let size = i128::from(self.config.size);
        let cost = i128::from(cost);
        // A request larger than the bucket passes once the budget is full.
        let needed = cost.min(size + i128::from(self.burst));
        if available >= needed && self.budget >= 0 {
            return Ok(());
        }
        let missing = needed - available;
        let missing = if self.budget < 0 {
            // Repay the debt first.
            missing.max(-self.budget)
        } else {
            missing
        };
        Err(self.time_for(missing))
    }

    /// The time the refill takes to earn `tokens`.
    fn time_for(&self, tokens: i128) -> Duration {
        let size = i128::from(self.config.size).max(1);
        let nanos = (tokens.max(1).saturating_mul(self.refill_nanos()) + size - 1) / size;
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// Takes `cost` (after [`Self::check`] passed, or unconditionally for
    /// a cost known only afterwards): from the burst first, then the
    /// budget, which may go negative (a debt).
    fn take(&mut self, now: Instant, cost: u64) {
        self.refill(now);
        let from_burst = self.burst.min(cost);
        self.burst -= from_burst;
        self.budget -= i128::from(cost - from_burst);
    }
}

/// The buckets of one direction of one device (pure: time is passed in).
#[derive(Debug, Clone)]
pub struct Buckets {
    bandwidth: Option<TokenBucket>,
    ops: Option<TokenBucket>,
}

impl Buckets {
    /// Full buckets for `limit` at `now`.
    pub fn new(limit: RateLimit, now: Instant) -> Self {
        Self {
            bandwidth: limit.bandwidth.map(|c| TokenBucket::new(c, now)),
            ops: limit.ops.map(|c| TokenBucket::new(c, now)),
        }
    }

    /// Takes `ops` operations and `bytes` bytes if both buckets have them;
    /// otherwise takes nothing and says how long until they would.
    pub fn try_consume(&mut self, now: Instant, ops: u64, bytes: u64) -> Result<(), Duration> {
        let wait_bw = self.bandwidth.as_mut().map(|b| b.check(now, bytes));
        let wait_ops = self.ops.as_mut().map(|b| b.check(now, ops));
        let wait = [wait_bw, wait_ops]
            .into_iter()
            .flatten()
            .filter_map(Result::err)
            .max();
        if let Some(wait) = wait {
            return Err(wait);
        }
        self.force_consume(now, ops, bytes);
        Ok(())
    }

    /// Takes `ops` and `bytes` whatever the buckets hold (a cost known only
    /// after the fact, like a received frame's length): a shortfall
    /// becomes a debt.
    pub fn force_consume(&mut self, now: Instant, ops: u64, bytes: u64) {
        if let Some(b) = &mut self.bandwidth {
            b.take(now, bytes);
        }
        if let Some(b) = &mut self.ops {
            b.take(now, ops);
        }
    }

    /// How long until one operation of at least one byte could pass
    /// (`None`: now).
    pub fn wait_for_any(&mut self, now: Instant) -> Option<Duration> {
        let bw = self.bandwidth.as_mut().map(|b| b.check(now, 1));
        let ops = self.ops.as_mut().map(|b| b.check(now, 1));
        [bw, ops]
            .into_iter()
            .flatten()
            .filter_map(Result::err)
            .max()
    }
}

/// A device's limiter: its [`Buckets`], the clock and a timer fd that
/// fires when a blocked request may pass. Unlimited limiters have no timer
/// and always pass.
#[derive(Debug)]
pub struct RateLimiter {
    /// Boxed: devices keep the limiter by value, mostly unlimited.
    buckets: Box<Buckets>,
    timer: Option<TimerFd>,
    /// A request did not pass and the timer is armed for it.
    blocked: bool,
}

impl RateLimiter {
    /// A limiter that never limits.
    pub fn unlimited() -> Self {
        Self {
            buckets: Box::new(Buckets::new(RateLimit::default(), Instant::now())),
            timer: None,
            blocked: false,
        }
    }

    /// A limiter for `limit`, with its timer fd (none if unlimited).
    pub fn new(limit: RateLimit) -> io::Result<Self> {
        if limit.is_unlimited() {
            return Ok(Self::unlimited());
        }
        let timer = TimerFd::new().map_err(|e| io::Error::from_raw_os_error(e.errno()))?;
        // Non-blocking, so a read after a spurious wake-up cannot hang.
        // SAFETY: F_SETFL on a descriptor this function owns; no memory is
        // passed.
        let rc = unsafe { libc::fcntl(timer.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            buckets: Box::new(Buckets::new(limit, Instant::now())),
            timer: Some(timer),
            blocked: false,
        })
    }

    /// The timer fd to watch for readability (none if unlimited).
    pub fn timer(&self) -> Option<&TimerFd> {
        self.timer.as_ref()
    }

    /// Whether a request is waiting for the timer.
    pub fn is_blocked(&self) -> bool {
        self.blocked
    }

    /// Takes `ops` and `bytes` if the buckets have them (true). Otherwise
    /// takes nothing, arms the timer for when they will and returns false:
    /// the device stops until [`Self::on_timer`].
    pub fn consume(&mut self, ops: u64, bytes: u64) -> bool {
        if self.timer.is_none() {
            return true;
        }
        if self.blocked {
            return false;
        }
        match self.buckets.try_consume(Instant::now(), ops, bytes) {
            Ok(()) => true,
            Err(wait) => {
                self.block_for(wait);
                false
            }
        }
    }

    /// Takes a cost known only afterwards (a received frame); if that
    /// leaves a bucket empty or in debt, the limiter blocks until it
    /// could pass one more operation.
    pub fn consume_after(&mut self, ops: u64, bytes: u64) {
        if self.timer.is_none() {
            return;
        }
        let now = Instant::now();
        self.buckets.force_consume(now, ops, bytes);
        if let Some(wait) = self.buckets.wait_for_any(now) {
            self.block_for(wait);
        }
    }

    /// Whether one more operation could start now; if not, blocks (arms
    /// the timer) like a failed [`Self::consume`].
    pub fn ready(&mut self) -> bool {
        if self.timer.is_none() {
            return true;
        }
        if self.blocked {
            return false;
        }
        match self.buckets.wait_for_any(Instant::now()) {
            None => true,
            Some(wait) => {
                self.block_for(wait);
                false
            }
        }
    }

    fn block_for(&mut self, wait: Duration) {
        let Some(timer) = &mut self.timer else {
            return;
        };
        // A zero duration would disarm the timer.
        let wait = wait.max(Duration::from_micros(1));
        match timer.reset(wait, None) {
            Ok(()) => self.blocked = true,
            // Without a timer nothing would wake the device: let the
            // request pass rather than stall the guest forever.
            Err(e) => crate::guest_error!("rate limiter: cannot arm its timer: {e}"),
        }
    }

    /// The timer fired: the blocked request may be tried again.
    pub fn on_timer(&mut self) {
        if let Some(timer) = &mut self.timer {
            // Nothing to read (a spurious wake-up) is fine.
            let _ = timer.wait();
        }
        self.blocked = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(size: u64, refill_ms: u64, burst: u64) -> BucketConfig {
        BucketConfig {
            size,
            one_time_burst: burst,
            refill_time: Duration::from_millis(refill_ms),
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn specs_parse_and_print() {
        assert_eq!("10M:1000".parse(), Ok(bucket(10 << 20, 1000, 0)));
        assert_eq!("100:1000:500".parse(), Ok(bucket(100, 1000, 500)));
        assert_eq!("4k:10:1G".parse(), Ok(bucket(4096, 10, 1 << 30)));
        assert_eq!(bucket(100, 1000, 500).to_string(), "100:1000:500");
        assert_eq!(bucket(100, 1000, 0).to_string(), "100:1000");
        for bad in [
            "",
            "10",
            "10:",
            ":10",
            "0:10",
            "10:0",
            "x:10",
            "10:1s",
            "10:10:10:10",
            "10M:-1",
            "99999999999G:1",
            "1:1:x",
        ] {
            assert!(bad.parse::<BucketConfig>().is_err(), "{bad}");
        }
        let e = "x".parse::<BucketConfig>().unwrap_err().to_string();
        assert!(e.contains("SIZE:REFILL_MS[:BURST]"), "{e}");
    }

    #[test]
    fn a_full_bucket_passes_its_size_then_refills_at_its_rate() {
        let t0 = Instant::now();
        let mut b = Buckets::new(
            RateLimit {
                bandwidth: Some(bucket(1000, 1000, 0)),
                ops: None,
            },
            t0,
        );
        assert_eq!(b.try_consume(t0, 1, 600), Ok(()));
        assert_eq!(b.try_consume(t0, 1, 400), Ok(()));
        // Empty: 100 bytes take 100 ms.
        assert_eq!(b.try_consume(t0, 1, 100), Err(ms(100)));
        assert_eq!(b.try_consume(t0 + ms(50), 1, 100), Err(ms(50)));
        assert_eq!(b.try_consume(t0 + ms(100), 1, 100), Ok(()));
        // Never above the size, however long it waits.
        assert_eq!(b.try_consume(t0 + ms(100_000), 1, 1000), Ok(()));
        assert!(b.try_consume(t0 + ms(100_000), 1, 1).is_err());
    }

    #[test]
    fn the_one_time_burst_is_spent_first_and_once() {
        let t0 = Instant::now();
        let mut b = Buckets::new(
            RateLimit {
                bandwidth: None,
                ops: Some(bucket(10, 1000, 5)),
            },
            t0,
        );
        for _ in 0..15 {
            assert_eq!(b.try_consume(t0, 1, 0), Ok(()));
        }
        assert_eq!(b.try_consume(t0, 1, 0), Err(ms(100)));
        // A refill never brings the burst back.
        let later = t0 + ms(10_000);
        for _ in 0..10 {
            assert_eq!(b.try_consume(later, 1, 0), Ok(()));
        }
        assert!(b.try_consume(later, 1, 0).is_err());
    }

    #[test]
    fn both_buckets_or_neither() {
        let t0 = Instant::now();
        let mut b = Buckets::new(
            RateLimit {
                bandwidth: Some(bucket(1000, 1000, 0)),
                ops: Some(bucket(2, 1000, 0)),
            },
            t0,
        );
        assert_eq!(b.try_consume(t0, 1, 100), Ok(()));
        // Bandwidth refuses: the operation is not taken either.
        assert_eq!(b.try_consume(t0, 1, 1000), Err(ms(100)));
        assert_eq!(b.try_consume(t0, 1, 100), Ok(()));
        // Operations refuse: the bytes are not taken either.
        assert_eq!(b.try_consume(t0, 1, 100), Err(ms(500)));
        assert_eq!(b.try_consume(t0 + ms(500), 1, 900), Ok(()));
    }

    #[test]
    fn a_request_larger_than_the_bucket_passes_once_and_leaves_a_debt() {
        let t0 = Instant::now();
        let mut b = Buckets::new(
            RateLimit {
                bandwidth: Some(bucket(1000, 1000, 0)),
                ops: None,
            },
            t0,
        );
        assert_eq!(b.try_consume(t0, 1, 500), Ok(()));
        // 3000 > size: waits for a full bucket (500 ms), then passes.
        assert_eq!(b.try_consume(t0, 1, 3000), Err(ms(500)));
        assert_eq!(b.try_consume(t0 + ms(500), 1, 3000), Ok(()));
        // 2000 bytes of debt: nothing passes for 2 s, then 1 byte does.
        assert_eq!(b.try_consume(t0 + ms(500), 1, 1), Err(ms(2001)));
        assert!(b.try_consume(t0 + ms(2500), 1, 1).is_err());
        assert_eq!(b.try_consume(t0 + ms(2501), 1, 1), Ok(()));
    }

    #[test]
    fn a_cost_known_afterwards_may_leave_a_debt() {
        let t0 = Instant::now();
        let mut b = Buckets::new(
            RateLimit {
                bandwidth: Some(bucket(1000, 1000, 0)),
                ops: None,
            },
            t0,
        );
        assert_eq!(b.wait_for_any(t0), None);
        b.force_consume(t0, 1, 1500);
        assert_eq!(b.wait_for_any(t0), Some(ms(501)));
        assert_eq!(b.wait_for_any(t0 + ms(501)), None);
    }

    #[test]
    fn the_long_run_rate_is_the_configured_rate() {
        // 1 MiB/s, requests of 128 KiB, served whenever allowed, for 10 s
        // of simulated time: about 10 MiB (+ the initial full bucket).
        let t0 = Instant::now();
        let mut b = Buckets::new(
            RateLimit {
                bandwidth: Some(bucket(1 << 20, 1000, 0)),
                ops: None,
            },
            t0,
        );
        let mut now = t0;
        let mut served = 0u64;
        while now < t0 + Duration::from_secs(10) {
            match b.try_consume(now, 1, 128 << 10) {
                Ok(()) => served += 128 << 10,
                Err(wait) => now += wait,
            }
        }
        let mib = served as f64 / f64::from(1 << 20);
        assert!((10.0..=11.2).contains(&mib), "{mib} MiB in 10 s");
    }

    #[test]
    fn the_limiter_blocks_arms_its_timer_and_unblocks_on_it() {
        let mut l = RateLimiter::new(RateLimit {
            bandwidth: None,
            ops: Some(bucket(2, 100, 0)),
        })
        .unwrap();
        assert!(l.consume(1, 0) && l.consume(1, 0));
        assert!(!l.consume(1, 0));
        assert!(l.is_blocked());
        assert!(!l.consume(1, 0), "blocked until the timer");
        // The timer fires within the refill time of one op (50 ms).
        let fd = l.timer().unwrap().as_raw_fd();
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&mut pfd, 1, 2000) };
        assert_eq!(n, 1, "the timer fired");
        l.on_timer();
        assert!(!l.is_blocked());
        assert!(l.consume(1, 0));
        // A spurious timer event does not hang.
        l.on_timer();
        let mut u = RateLimiter::unlimited();
        assert!(u.timer().is_none());
        assert!((0..10_000).all(|_| u.consume(1, 1 << 30)));
        u.consume_after(1, u64::MAX);
        assert!(u.ready());
    }
}
