//! `cargo xtask bench devices-profile`: where the time of our VMM's virtio-blk
//! and vsock transfers goes in the test host (a debugging aid, not a
//! benchmark).
//!
//! The test host gets this machine's `perf` (package `linux-perf`) and its
//! shared libraries in an extra initramfs and runs the `profile-devices`
//! scenario: our VMM boots the `bench-devices` guest twice (blk only, vsock
//! only) under `perf record -a -g`, and the scenario prints `perf script`
//! of each transfer's window (gzip, base64). This module decodes them into
//! `<target dir>/bench/profile-<transfer>.txt` and prints per transfer the
//! share of its time per thread name and per leaf function.
//!
//! `perf` in the test host cannot sample the nested guest while its vCPU is
//! in guest mode, so the samples missing from the expected `freq` per
//! second are, approximately, guest time (docs/benchmarks.md).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Read as _;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::bench_host::{self, Bench, Extra};
use crate::paths::{self, Arch};
use crate::setup;
use crate::util;

/// Scenario in `prebuilts/testhost/scenarios/`.
const SCENARIO: &str = "profile-devices";
/// The profiler, from this machine's `linux-perf`.
const PERF: &str = "/usr/bin/perf";
/// The transfers the scenario profiles, in its order.
const TRANSFERS: [&str; 4] = ["blk_write", "blk_read", "vsock_g2h", "vsock_h2g"];
/// Test host time allowed for the scenario.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(900);

/// One transfer's samples, as `perf script` printed them.
#[derive(Debug)]
pub struct Profile {
    /// Length of the transfer's window in seconds.
    pub window_s: f64,
    /// Samples: thread name and call chain, leaf first (`symbol (dso)`).
    pub samples: Vec<(String, Vec<String>)>,
}

impl Profile {
    /// Parses `perf script -F comm,tid,ip,sym,dso` output with call chains:
    /// a `comm tid` line, then one indented `ip symbol (dso)` line per frame,
    /// then a blank line.
    pub fn parse(window_s: f64, text: &str) -> Self {
        let mut samples: Vec<(String, Vec<String>)> = Vec::new();
        let mut open = false;
        for line in text.lines() {
            if line.trim().is_empty() {
                open = false;
            } else if line.starts_with([' ', '\t']) {
                if open {
                    if let Some((_, chain)) = samples.last_mut() {
                        let frame = line.trim();
                        let frame = frame.split_once(' ').map_or(frame, |(_ip, rest)| rest);
                        chain.push(frame.trim().to_string());
                    }
                }
            } else {
                let comm = line.split_whitespace().next().unwrap_or("?").to_string();
                samples.push((comm, Vec::new()));
                open = true;
            }
        }
        Self { window_s, samples }
    }

    /// The report: samples against the expected count, then shares of the
    /// window's time by thread name and by leaf function.
    pub fn report(&self, name: &str, freq: f64, top: usize) -> String {
        let expected = (self.window_s * freq).max(1.0);
        let n = self.samples.len() as f64;
        let mut t = String::new();
        let _ = writeln!(
            t,
            "{name}: {:.2} s, {} samples of ~{:.0} expected; not sampled (the nested guest running): {:.0} %",
            self.window_s,
            self.samples.len(),
            expected,
            (100.0 * (1.0 - n / expected)).max(0.0)
        );
        let pct = |count: usize| 100.0 * count as f64 / expected;
        let mut by_comm: HashMap<&str, usize> = HashMap::new();
        let mut by_leaf: HashMap<(&str, &str), usize> = HashMap::new();
        for (comm, chain) in &self.samples {
            *by_comm.entry(comm).or_default() += 1;
            let leaf = chain.first().map_or("?", String::as_str);
            *by_leaf.entry((comm, leaf)).or_default() += 1;
        }
        let _ = writeln!(t, "  by thread (% of the window):");
        for (comm, count) in sorted(by_comm).into_iter().take(top) {
            let _ = writeln!(t, "    {:>5.1} %  {comm}", pct(count));
        }
        let _ = writeln!(t, "  by thread and leaf function (% of the window):");
        for ((comm, leaf), count) in sorted(by_leaf).into_iter().take(top) {
            let _ = writeln!(t, "    {:>5.1} %  {comm:<16} {leaf}", pct(count));
        }
        t
    }
}

/// Entries by count, largest first (ties by key, for a stable order).
fn sorted<K: Ord>(m: HashMap<K, usize>) -> Vec<(K, usize)> {
    let mut v: Vec<_> = m.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v
}

/// Standard base64 (RFC 4648, with padding, whitespace ignored).
pub fn base64_decode(text: &str) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes().filter(|c| !c.is_ascii_whitespace()) {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => bail!("invalid base64 character {:?}", c as char),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Ok(out)
}

/// `(name, window seconds, perf script text)` of every transfer in the
/// scenario's output.
pub fn parse_console(console: &str) -> Result<Vec<(String, f64, String)>> {
    let mut windows: HashMap<String, f64> = HashMap::new();
    let mut out = Vec::new();
    for line in console.lines().map(str::trim_end) {
        if let Some(rest) = line.strip_prefix("@@PROF-WINDOW ") {
            let (name, span) = rest.split_once(' ').context("bad @@PROF-WINDOW line")?;
            let (a, b) = span.split_once(',').context("bad @@PROF-WINDOW span")?;
            let len = b.trim().parse::<f64>()? - a.trim().parse::<f64>()?;
            windows.insert(name.to_string(), len);
        } else if let Some(rest) = line.strip_prefix("@@PROF-DATA ") {
            let (name, data) = rest.split_once(' ').unwrap_or((rest, ""));
            let gz = base64_decode(data).with_context(|| format!("{name}: bad base64"))?;
            let mut text = String::new();
            flate2::read::GzDecoder::new(&gz[..])
                .read_to_string(&mut text)
                .with_context(|| format!("{name}: bad gzip"))?;
            let window = *windows
                .get(name)
                .with_context(|| format!("{name}: data without a window"))?;
            out.push((name.to_string(), window, text));
        }
    }
    Ok(out)
}

/// `cargo xtask bench devices-profile`.
pub fn devices_profile() -> Result<()> {
    setup::ensure_packages(&["linux-perf"])?;
    let images = bench_host::prepare(Arch::X86_64)?;
    let mut extra = Extra::new();
    extra.host_program(PERF)?;
    let bench = Bench {
        arch: Arch::X86_64,
        scenario: SCENARIO,
        append: Vec::new(),
        scenario_timeout: SCENARIO_TIMEOUT,
        stream: false,
    };
    let run = bench.boot(&images, Some(&extra))?;
    let section = bench_host::section(&run, SCENARIO)?;
    let freq = section
        .output
        .lines()
        .find_map(|l| l.trim().strip_prefix("@@PROF-INFO "))
        .and_then(|info| {
            info.split_whitespace()
                .find_map(|kv| kv.strip_prefix("freq="))
        })
        .and_then(|f| f.parse::<f64>().ok())
        .context("no @@PROF-INFO freq= line")?;
    let transfers = parse_console(&section.output)?;
    if !section.output.contains("@@PROF-DONE") {
        bail!(
            "{}",
            run.failure_report("the profile scenario did not finish")
        );
    }
    let missing: Vec<&str> = TRANSFERS
        .into_iter()
        .filter(|t| !transfers.iter().any(|(name, _, _)| name == t))
        .collect();
    if !missing.is_empty() {
        bail!(
            "{}",
            run.failure_report(&format!("no profile of {}", missing.join(", ")))
        );
    }
    let out_dir = paths::target_dir().join("bench");
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    println!();
    for (name, window, text) in &transfers {
        let path = out_dir.join(format!("profile-{name}.txt"));
        util::write_atomic(&path, text.as_bytes())?;
        print!("{}", Profile::parse(*window, text).report(name, freq, 15));
        println!("  samples with call chains: {}", path.display());
        println!();
    }
    println!("console: {}", run.log_path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_known_vectors() {
        assert_eq!(base64_decode("").unwrap(), b"");
        assert_eq!(base64_decode("Zg==").unwrap(), b"f");
        assert_eq!(base64_decode("Zm8=").unwrap(), b"fo");
        assert_eq!(base64_decode("Zm9v").unwrap(), b"foo");
        assert_eq!(base64_decode("Zm9v\nYmFy").unwrap(), b"foobar");
        assert!(base64_decode("Zm9v!").is_err());
    }

    const SCRIPT: &str = "v_blk   202 \n\tffffffffa137a72b fault_in_readable ([kernel.kallsyms])\n\tffffffffa16a953c generic_perform_write ([kernel.kallsyms])\n\nvcpu0   198 \n\tffffffffa11818c0 vcpu_run ([kernel.kallsyms])\n\nv_blk   202 \n\t           96658 devices::virtio::block::disk::DiskImage::transfer (/bin/vmm)\n\n";

    #[test]
    fn parses_perf_script_samples_with_chains() {
        let p = Profile::parse(0.004, SCRIPT);
        assert_eq!(p.samples.len(), 3);
        assert_eq!(p.samples[0].0, "v_blk");
        assert_eq!(
            p.samples[0].1,
            vec![
                "fault_in_readable ([kernel.kallsyms])",
                "generic_perform_write ([kernel.kallsyms])"
            ]
        );
        assert_eq!(
            p.samples[2].1,
            vec!["devices::virtio::block::disk::DiskImage::transfer (/bin/vmm)"]
        );
    }

    #[test]
    fn report_counts_missing_samples_as_guest_time() {
        // 4 ms at 1000 Hz: 4 expected, 3 sampled.
        let r = Profile::parse(0.004, SCRIPT).report("blk_write", 1000.0, 5);
        assert!(r.contains("3 samples of ~4 expected"), "{r}");
        assert!(
            r.contains("not sampled (the nested guest running): 25 %"),
            "{r}"
        );
        assert!(r.contains(" 50.0 %  v_blk\n"), "{r}");
        assert!(r.contains("fault_in_readable ([kernel.kallsyms])"), "{r}");
    }

    #[test]
    fn console_pairs_windows_with_data() {
        use std::io::Write as _;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(SCRIPT.as_bytes()).unwrap();
        let gz = gz.finish().unwrap();
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut b64 = String::new();
        for chunk in gz.chunks(3) {
            let v = chunk
                .iter()
                .enumerate()
                .fold(0u32, |acc, (i, &b)| acc | u32::from(b) << (16 - 8 * i));
            for i in 0..4 {
                if i <= chunk.len() {
                    b64.push(ALPHABET[(v >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    b64.push('=');
                }
            }
        }
        let console = format!(
            "noise\n@@PROF-WINDOW blk_write 14.520,16.710\n@@PROF-DATA blk_write {b64}\n@@PROF-DONE\n"
        );
        let t = parse_console(&console).unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].0, "blk_write");
        assert!((t[0].1 - 2.19).abs() < 1e-9);
        assert_eq!(t[0].2, SCRIPT);
        assert!(
            parse_console("@@PROF-DATA x AAAA\n").is_err(),
            "data needs a window"
        );
    }
}
