//! `cargo xtask android-check`: `cargo check` of the crates that run on
//! Android for both Android targets (rustup's std; no NDK, nothing linked),
//! so `cfg(target_os = "android")` code is compiled. See docs/android.md.
//!
//! One upstream gap is bridged here: kvm-ioctls compares an errno with
//! `libc::EHWPOISON`, which the `libc` crate does not define for Android
//! (bionic does: 133, from the kernel's asm-generic/errno.h). The check
//! builds kvm-ioctls from a copy of its registry source under
//! `target/android-check/` with that one name replaced by bionic's value
//! (`--config patch.crates-io...`), and puts `Cargo.lock` back afterwards.
//! When kvm-ioctls no longer names it, no copy is made.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::paths;
use crate::setup::{self, cargo};
use crate::util::{self, step};

/// The Android targets checked.
pub const ANDROID_TARGETS: &[&str] = &["aarch64-linux-android", "x86_64-linux-android"];

/// The packages checked: the VMM and its devices, the logging switch, the
/// guest daemons and tools, the system manager, Trusty's service and the
/// JNI library. Not `vmstack-adbd`: it is the Linux test guests' adbd (an
/// Android guest runs its own), and it calls glibc/musl's `reboot`, which
/// bionic's `libc` binding lacks.
pub const ANDROID_PACKAGES: &[&str] = &[
    "vmm",
    "vmm-protocol",
    "devices",
    "vmstack-log",
    "vmstack-android",
    "guest-tools",
    "trusty",
    "sysmgr",
    "vmstack-jni",
];

/// The name kvm-ioctls uses that Android's `libc` lacks, and bionic's value.
const EHWPOISON_NAME: &str = "libc::EHWPOISON";
const EHWPOISON_BIONIC: &str = "133 /* EHWPOISON (bionic), missing from libc for android */";

/// `cargo xtask android-check`.
pub fn android_check() -> Result<()> {
    for target in ANDROID_TARGETS {
        setup::ensure_rust_target(target)?;
    }
    let patch = kvm_ioctls_patch().context("preparing kvm-ioctls for the Android check")?;
    let lock = paths::workspace_root().join("Cargo.lock");
    let saved = std::fs::read(&lock).context("reading Cargo.lock")?;
    let mut c = cargo();
    c.arg("check");
    for target in ANDROID_TARGETS {
        c.args(["--target", target]);
    }
    for p in ANDROID_PACKAGES {
        c.args(["-p", p]);
    }
    if let Some(dir) = &patch {
        c.args([
            "--config",
            &format!(
                "patch.crates-io.kvm-ioctls.path={:?}",
                dir.display().to_string()
            ),
        ]);
    }
    step!("run: {}", util::show(&c));
    let result = util::run(&mut c);
    if std::fs::read(&lock).ok().as_deref() != Some(&saved[..]) {
        util::write_atomic(&lock, &saved).context("restoring Cargo.lock")?;
    }
    result.context("cargo check for the Android targets failed")
}

/// A patched copy of the locked kvm-ioctls when it needs one.
fn kvm_ioctls_patch() -> Result<Option<PathBuf>> {
    let mut c = cargo();
    c.args([
        "metadata",
        "--format-version",
        "1",
        "--filter-platform",
        ANDROID_TARGETS[0],
    ]);
    let meta: serde_json::Value =
        serde_json::from_str(&util::output(&mut c)?).context("parsing cargo metadata")?;
    let Some(pkg) = meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == "kvm-ioctls")
    else {
        bail!("kvm-ioctls is not in the workspace's dependencies");
    };
    let manifest = PathBuf::from(pkg["manifest_path"].as_str().unwrap_or_default());
    let version = pkg["version"].as_str().unwrap_or("unknown");
    let src = manifest.parent().context("kvm-ioctls manifest path")?;
    let vcpu = Path::new("src/ioctls/vcpu.rs");
    let text = std::fs::read_to_string(src.join(vcpu))
        .with_context(|| format!("reading {}", src.join(vcpu).display()))?;
    let Some(patched) = replace_ehwpoison(&text) else {
        return Ok(None);
    };
    let dest = paths::target_dir()
        .join("android-check")
        .join(format!("kvm-ioctls-{version}"));
    if std::fs::read_to_string(dest.join(vcpu)).ok().as_deref() != Some(patched.as_str()) {
        step!(
            "copy kvm-ioctls {version} to {} ({EHWPOISON_NAME} -> 133)",
            dest.display()
        );
        if dest.exists() {
            std::fs::remove_dir_all(&dest)?;
        }
        copy_tree(src, &dest)?;
        util::write_atomic(&dest.join(vcpu), patched.as_bytes())?;
    }
    Ok(Some(dest))
}

/// `text` with every `libc::EHWPOISON` replaced by bionic's value, or
/// `None` when it names none.
fn replace_ehwpoison(text: &str) -> Option<String> {
    text.contains(EHWPOISON_NAME)
        .then(|| text.replace(EHWPOISON_NAME, EHWPOISON_BIONIC))
}

/// Copies a source tree (files and directories only).
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let dest = to.join(entry.file_name());
        if kind.is_dir() {
            copy_tree(&entry.path(), &dest)?;
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &dest)
                .with_context(|| format!("copying {}", entry.path().display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ehwpoison_is_replaced_only_where_named() {
        let src = "errno == errno::Error::new(libc::EHWPOISON))";
        let out = replace_ehwpoison(src).unwrap();
        assert!(out.starts_with("errno == errno::Error::new(133 "));
        assert!(!out.contains(EHWPOISON_NAME));
        assert_eq!(replace_ehwpoison("libc::EFAULT"), None);
    }
}
