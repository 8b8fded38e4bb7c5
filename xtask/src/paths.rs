//! Well-known paths: workspace, cache and output directories.

use std::path::PathBuf;

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

/// Output directory of the x86_64 images (`<target dir>/images/x86_64`).
pub fn images_x86_64() -> PathBuf {
    target_dir().join("images/x86_64")
}

/// Musl target triple the VMM is built for.
pub const MUSL_TARGET: &str = "x86_64-unknown-linux-musl";

/// The static VMM binary built by `cargo build --release --target x86_64-unknown-linux-musl -p vmm`.
pub fn vmm_musl_binary() -> PathBuf {
    target_dir()
        .join(MUSL_TARGET)
        .join("release/vmm")
}

/// The static guest test tools (`vsock-test`), built by
/// `cargo build --release --target x86_64-unknown-linux-musl -p guest-tools`.
pub fn guest_tools_musl_binary() -> PathBuf {
    target_dir().join(MUSL_TARGET).join("release/vsock-test")
}
