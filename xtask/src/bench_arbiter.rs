//! `cargo xtask bench arbiter`: the system manager's request -> decision
//! latency, p50/p99 at 1000 requests/s across 8 simulated guests, printed
//! with a unix-socket round trip and an append + fdatasync of the decision
//! log as references. Runs on this machine (no test host): the daemon is
//! the real `sysmgr run`, the guests are fake VMM control sockets inside
//! `sysmgr-bench` (see `system-manager/sysmgr/src/bin/sysmgr-bench.rs`).

use std::process::Command;

use anyhow::{Context, Result};

use crate::paths;
use crate::setup;
use crate::util::{self, step};

/// Builds `sysmgr` and `sysmgr-bench` (release, host) and runs the
/// benchmark on that `sysmgr`.
pub fn arbiter() -> Result<()> {
    step!("run: cargo build --release -p sysmgr --bin sysmgr --bin sysmgr-bench");
    util::run(setup::cargo().args([
        "build",
        "--release",
        "-p",
        "sysmgr",
        "--bin",
        "sysmgr",
        "--bin",
        "sysmgr-bench",
    ]))
    .context("building sysmgr failed")?;
    let release = paths::target_dir().join("release");
    let mut c = Command::new(release.join("sysmgr-bench"));
    c.args([
        "--guests",
        "8",
        "--rate",
        "1000",
        "--seconds",
        "10",
        "--sysmgr",
    ])
    .arg(release.join("sysmgr"));
    step!("run: sysmgr-bench --guests 8 --rate 1000 --seconds 10 --sysmgr target/release/sysmgr");
    util::run(&mut c)
}
