//! Round-trip timing for `cargo xtask bench tee`: each tool times `n`
//! request/response round trips of its transport (after a few untimed
//! warm-up ones) and prints every sample, so the benchmark computes exact
//! percentiles over all rounds.

use std::time::Instant;

/// Untimed round trips before the timed ones (first-use costs: page
/// faults, connection set-up on the far side, caches).
pub const WARMUP: u64 = 10;

/// The round trips of one run, in microseconds, in the order measured.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Samples(pub Vec<u64>);

impl Samples {
    /// The `p`-th percentile (nearest rank, `p` in 0..=100); `None` if
    /// empty.
    pub fn percentile(&self, p: u32) -> Option<u64> {
        let mut v = self.0.clone();
        v.sort_unstable();
        percentile_sorted(&v, p)
    }

    /// Prints `<tag>_n`, `<tag>_p50_us`, `<tag>_p99_us` and `<tag>_us`
    /// (every sample, comma-separated) as `key=value` lines.
    pub fn print(&self, tag: &str) {
        println!("{tag}_n={}", self.0.len());
        if let (Some(p50), Some(p99)) = (self.percentile(50), self.percentile(99)) {
            println!("{tag}_p50_us={p50}");
            println!("{tag}_p99_us={p99}");
        }
        let all: Vec<String> = self.0.iter().map(u64::to_string).collect();
        println!("{tag}_us={}", all.join(","));
    }
}

/// The `p`-th percentile of sorted `v` by nearest rank.
pub fn percentile_sorted(v: &[u64], p: u32) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    let rank = (u64::from(p.min(100)) * v.len() as u64)
        .div_ceil(100)
        .max(1);
    v.get(rank as usize - 1).copied()
}

/// Runs `round_trip(i)` for `i` in `0..WARMUP + n` and times the last `n`
/// calls; stops at the first error.
pub fn measure<F>(n: u64, mut round_trip: F) -> Result<Samples, String>
where
    F: FnMut(u64) -> Result<(), String>,
{
    let mut out = Vec::with_capacity(n as usize);
    for i in 0..WARMUP + n {
        let t = Instant::now();
        round_trip(i)?;
        let us = t.elapsed().as_micros();
        if i >= WARMUP {
            out.push(u64::try_from(us).unwrap_or(u64::MAX));
        }
    }
    Ok(Samples(out))
}

/// Writes `seq` into the first and last 8 bytes of `buf` (at least 8
/// bytes): the mark a round trip checks on the way back.
pub fn stamp(buf: &mut [u8], seq: u64) {
    let b = seq.to_le_bytes();
    let n = buf.len();
    buf[..8].copy_from_slice(&b);
    buf[n - 8..].copy_from_slice(&b);
}

/// Whether `buf` carries the mark of `seq` (see [`stamp`]).
pub fn stamped(buf: &[u8], seq: u64) -> bool {
    let b = seq.to_le_bytes();
    buf.len() >= 8 && buf[..8] == b && buf[buf.len() - 8..] == b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let s = Samples((1..=100).rev().collect());
        assert_eq!(s.percentile(50), Some(50));
        assert_eq!(s.percentile(99), Some(99));
        assert_eq!(s.percentile(100), Some(100));
        assert_eq!(s.percentile(0), Some(1));
        assert_eq!(Samples(vec![7]).percentile(99), Some(7));
        assert_eq!(Samples::default().percentile(50), None);
        assert_eq!(percentile_sorted(&[1, 2, 3], 50), Some(2));
    }

    #[test]
    fn measure_skips_the_warmup_and_stops_on_errors() {
        let mut seen = Vec::new();
        let s = measure(5, |i| {
            seen.push(i);
            Ok(())
        })
        .unwrap();
        assert_eq!(s.0.len(), 5);
        assert_eq!(seen.len() as u64, WARMUP + 5);
        let e = measure(5, |i| if i == 3 { Err("x".into()) } else { Ok(()) });
        assert_eq!(e, Err("x".to_string()));
    }

    #[test]
    fn stamps() {
        let mut b = vec![0u8; 4096];
        stamp(&mut b, 42);
        assert!(stamped(&b, 42));
        assert!(!stamped(&b, 43));
        b[4095] ^= 1;
        assert!(!stamped(&b, 42));
        assert!(!stamped(&[0u8; 4], 0));
    }
}
