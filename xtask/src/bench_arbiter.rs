//! `cargo xtask bench arbiter`: the system manager's request -> decision
//! latency, p50/p99 at 1000 requests/s across 8 simulated guests, printed
//! with a unix-socket round trip and an append + fdatasync of the decision
//! log as references. Runs on this machine (no test host): the daemon is
//! the real `sysmgr run`, the guests are fake VMM control sockets inside
//! `sysmgr bench` (see `system-manager/src/bin/sysmgr/bench.rs`).

use std::process::Command;

use anyhow::{Context, Result};

use crate::paths;
use crate::setup;
use crate::util::{self, step};

/// Builds `sysmgr` (release, host) and runs its benchmark.
pub fn arbiter() -> Result<()> {
    step!("run: cargo build --release -p system-manager --bin sysmgr");
    util::run(setup::cargo().args([
        "build",
        "--release",
        "-p",
        "system-manager",
        "--bin",
        "sysmgr",
    ]))
    .context("building sysmgr failed")?;
    let bin = paths::target_dir().join("release/sysmgr");
    let mut c = Command::new(bin);
    c.args([
        "bench",
        "--guests",
        "8",
        "--rate",
        "1000",
        "--seconds",
        "10",
    ]);
    step!("run: sysmgr bench --guests 8 --rate 1000 --seconds 10");
    util::run(&mut c)
}
