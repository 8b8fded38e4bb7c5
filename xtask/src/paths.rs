//! Well-known paths: workspace, cache and output directories.

use std::path::PathBuf;

pub use vmstack_tests::Arch;

/// Root of the workspace (parent of the xtask crate).
pub fn workspace_root() -> PathBuf {
    vmstack_tests::workspace_root()
}

/// Cache directory: `$VMSTACK_CACHE`, else `$XDG_CACHE_HOME/vmstack`, else `~/.cache/vmstack`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("VMSTACK_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("vmstack");
    }
    let home = std::env::var_os("HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".cache/vmstack")
}

/// `prebuilts/` in the workspace.
pub fn prebuilts() -> PathBuf {
    workspace_root().join("prebuilts")
}

/// Cargo's target directory (honours `CARGO_TARGET_DIR`).
pub fn target_dir() -> PathBuf {
    vmstack_tests::target_dir()
}

/// Output directory of the images of `arch` (`<target dir>/images/<arch>`).
pub fn images_dir(arch: Arch) -> PathBuf {
    target_dir().join("images").join(arch.name())
}

/// A static binary built for `arch` (`<target dir>/<arch>-unknown-linux-musl/release/<bin>`).
pub fn static_binary(arch: Arch, bin: &str) -> PathBuf {
    target_dir()
        .join(arch.musl_target())
        .join("release")
        .join(bin)
}

/// The lock file of `arch`'s images (`prebuilts/<arch>.lock`).
pub fn lock_file(arch: Arch) -> PathBuf {
    prebuilts().join(format!("{}.lock", arch.name()))
}
