//! The Android guest's binder programs for the images: `sysmgr-binderd`,
//! `vmbinder` and `vhal-binder-test` (crate `vmstack-android`, static musl
//! builds) and rsbinder's service manager `rsb_hub` (crate `rsbinder-tools`
//! from the crate registry, installed with `cargo install` into
//! `target/rsbinder-tools/<arch>`).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::paths::{self, Arch};
use crate::setup::{self, cargo};
use crate::util::{self, step};

/// The `rsbinder-tools` version `rsb_hub` is installed from (the same
/// rsbinder as the workspace's).
pub const RSBINDER_TOOLS_VERSION: &str = "0.12.0";

/// The programs of `vmstack-android` the guest gets.
pub const ANDROID_BINS: &[&str] = &["sysmgr-binderd", "vmbinder", "vhal-binder-test"];

/// Builds `vmstack-android` statically for `arch`; returns the directory
/// holding [`ANDROID_BINS`].
pub fn build_android(arch: Arch) -> Result<PathBuf> {
    let target = arch.musl_target();
    let mut c = setup::cargo_build_static(arch, "vmstack-android");
    step!("run: cargo build --release --target {target} -p vmstack-android");
    util::run(&mut c).context("building vmstack-android failed")?;
    let dir = paths::target_dir().join(target).join("release");
    for b in ANDROID_BINS {
        if !dir.join(b).is_file() {
            bail!(
                "cargo built vmstack-android but {} is missing",
                dir.join(b).display()
            );
        }
    }
    Ok(dir)
}

/// Installs `rsb_hub` for `arch` (cached under the user's cache directory
/// per version, so a fresh clone does not build it again: `cargo install`
/// does nothing when the version is already there); returns its path.
pub fn build_rsb_hub(arch: Arch) -> Result<PathBuf> {
    let target = arch.musl_target();
    let root = paths::cache_dir()
        .join("rsbinder-tools")
        .join(RSBINDER_TOOLS_VERSION)
        .join(arch.name());
    let mut c = cargo();
    c.args([
        "install",
        "--quiet",
        "rsbinder-tools",
        "--version",
        RSBINDER_TOOLS_VERSION,
    ])
    .args(["--target", target, "--bin", "rsb_hub", "--root"])
    .arg(&root)
    .env(
        "CARGO_TARGET_DIR",
        paths::target_dir().join("rsbinder-tools").join("build"),
    );
    if arch == Arch::Aarch64 {
        // `cargo install` does not read the workspace's .cargo/config.toml,
        // which names the cross linker for this target.
        c.env(
            "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER",
            "aarch64-linux-gnu-gcc",
        );
    }
    step!("run: cargo install rsbinder-tools@{RSBINDER_TOOLS_VERSION} --target {target} --bin rsb_hub");
    util::run(&mut c).context("installing rsb_hub (rsbinder-tools) failed")?;
    let bin = root.join("bin/rsb_hub");
    if !bin.is_file() {
        bail!(
            "cargo installed rsbinder-tools but {} is missing",
            bin.display()
        );
    }
    Ok(bin)
}
