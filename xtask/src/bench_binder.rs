//! `cargo xtask bench binder`: guest -> host `getSystemState` round trips
//! through kernel binder (the guest's `rsb_hub` and `sysmgr-binderd`) and
//! RPC binder over vsock to the real `sysmgr`, next to a raw vsock echo of
//! a message about the reply's size, measured in the same guest boot in
//! the nested test host (scenario `bench-binder`). Target: binder p50 and
//! p99 at most 3x the echo's. A benchmark, not a test: it prints, and
//! fails only when a measurement is missing.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Result};

use crate::bench_host::{self, Bench};
use crate::paths::Arch;
use crate::util::step;

const SCENARIO: &str = "bench-binder";
/// Round trips per measurement.
pub const COUNT: u32 = 1000;
/// The target ratio binder / raw vsock echo.
pub const TARGET_RATIO: f64 = 3.0;

/// `name -> (p50, p99, max)` in µs from the `bench: ...` lines.
pub fn parse(console: &str) -> BTreeMap<String, (u64, u64, u64)> {
    let mut out = BTreeMap::new();
    for line in console.lines() {
        let Some(rest) = line.split("bench: ").nth(1) else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let Some(name) = words.next() else { continue };
        let kv: BTreeMap<&str, u64> = words
            .filter_map(|w| w.split_once('='))
            .filter_map(|(k, v)| Some((k, v.parse().ok()?)))
            .collect();
        if let (Some(p50), Some(p99), Some(max)) =
            (kv.get("p50_us"), kv.get("p99_us"), kv.get("max_us"))
        {
            out.insert(name.to_string(), (*p50, *p99, *max));
        }
    }
    out
}

/// The result table, with the ratios and the verdict.
pub fn table(m: &BTreeMap<String, (u64, u64, u64)>) -> Result<String> {
    let binder = m.get("binder_getSystemState");
    let echo = m.iter().find(|(k, _)| k.starts_with("vsock_echo_"));
    let (Some(b), Some((echo_name, e))) = (binder, echo) else {
        bail!(
            "missing measurements: got {:?} (need binder_getSystemState and vsock_echo_*)",
            m.keys().collect::<Vec<_>>()
        );
    };
    let ratio = |x: u64, y: u64| x as f64 / (y.max(1)) as f64;
    let mut t =
        String::from("ROUND TRIP (guest -> host)                    p50 µs   p99 µs   max µs\n");
    t.push_str(&format!(
        "getSystemState (kernel binder + RPC binder) {:>8} {:>8} {:>8}\n",
        b.0, b.1, b.2
    ));
    t.push_str(&format!(
        "{echo_name:<44} {:>8} {:>8} {:>8}\n",
        e.0, e.1, e.2
    ));
    let (r50, r99) = (ratio(b.0, e.0), ratio(b.1, e.1));
    t.push_str(&format!(
        "binder / echo: p50 {r50:.2}x, p99 {r99:.2}x (target <= {TARGET_RATIO}x): {}\n",
        if r50 <= TARGET_RATIO && r99 <= TARGET_RATIO {
            "met"
        } else {
            "NOT met"
        }
    ));
    Ok(t)
}

/// `cargo xtask bench binder`.
pub fn binder() -> Result<()> {
    let images = bench_host::prepare(Arch::X86_64)?;
    let bench = Bench {
        arch: Arch::X86_64,
        scenario: SCENARIO,
        append: vec![format!("bench.count={COUNT}")],
        scenario_timeout: Duration::from_secs(600),
        stream: true,
    };
    step!("{COUNT} round trips each");
    let run = bench.boot(&images, None)?;
    let section = bench_host::section(&run, SCENARIO)?;
    let m = parse(&section.output);
    println!("{}", table(&m)?);
    bench_host::check_rc(&run, section)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_judges() {
        let m = parse("x| bench: binder_getSystemState n=1000 p50_us=300 p99_us=900 max_us=2000\nbench: vsock_echo_512B n=1000 p50_us=120 p99_us=250 max_us=800\n");
        let t = table(&m).expect("complete");
        assert!(
            t.contains("p50 2.50x, p99 3.60x") && t.contains("NOT met"),
            "{t}"
        );
        assert!(table(&parse(
            "bench: vsock_echo_512B n=1 p50_us=1 p99_us=1 max_us=1"
        ))
        .is_err());
    }
}
