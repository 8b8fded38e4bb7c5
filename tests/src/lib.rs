//! Test support for the VMM: the nested KVM "test host" runner.
//!
//! This machine's `/dev/kvm` cannot boot unmodified Linux guests (see
//! `docs/testing.md`), so end-to-end tests run the VMM inside an emulated
//! QEMU/TCG machine that has a real, nested KVM. [`testhost`] boots that machine,
//! captures its console and splits it into per-scenario results.

pub mod arch;
pub mod scenario;
pub mod testhost;

pub use arch::Arch;

use std::path::PathBuf;

/// Root of the cargo workspace this crate belongs to.
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` (so parallel checkouts or
/// developers can keep separate builds and images), else `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        }
        _ => workspace_root().join("target"),
    }
}

/// Default directory of the x86_64 images built by `cargo xtask images`
/// (`<target dir>/images/x86_64`), overridden by `VMSTACK_IMAGES`.
pub fn images_dir_x86_64() -> PathBuf {
    match std::env::var_os("VMSTACK_IMAGES") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => target_dir().join("images/x86_64"),
    }
}

/// Directory for full console logs of test host runs (`<target dir>/testhost`),
/// overridden by `VMSTACK_LOG_DIR`.
pub fn log_dir() -> PathBuf {
    match std::env::var_os("VMSTACK_LOG_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => target_dir().join("testhost"),
    }
}
