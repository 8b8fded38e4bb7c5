//! `cargo xtask bench ...`: reserved for benchmarks (e.g. `bench boot`: boot-time
//! measurements in the test host via the guest's boot-timer write to port 0x4f0).
//!
//! Not implemented yet; a later task fills this in. The test host scenarios live in
//! `prebuilts/testhost/scenarios/`, and [`crate::run`] shows how to boot them.

use anyhow::{bail, Result};

/// Entry point of `cargo xtask bench <what>`.
pub fn bench(what: &str) -> Result<()> {
    bail!("`cargo xtask bench {what}` is not implemented yet")
}
