//! The arm64 guest's GlobalPlatform TEE client: `tests/guest-tools/c/tee-client.c`
//! linked against Debian's unmodified `libteec1` (OP-TEE's client library,
//! arm64 only in Debian), cross-compiled with `aarch64-linux-gnu-gcc`.
//!
//! The packages (`libteec1`, `optee-client-dev` for the headers, and the
//! `libc6` the library runs on) are the `tee-client` group of
//! `prebuilts/aarch64.lock`. The guest initramfs gets `/bin/tee-client`
//! and what it needs to run: the dynamic loader, `libc.so.6` and
//! `libteec.so.1`, at Debian's paths (the loader searches the multiarch
//! directories without an `ld.so.cache`). The x86_64 guest has no
//! `libteec` package; it runs `tee-test` (static, on the kernel uapi).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::cpio::Archive;
use crate::images;
use crate::lock::{self, Inputs};
use crate::modules;
use crate::paths::{self, Arch};
use crate::setup;
use crate::util::{self, step};

/// Files of the client, in the initramfs path → host path form.
pub struct TeeClient {
    files: Vec<(&'static str, u32, PathBuf)>,
    /// Hash of every file (an input of the initramfs).
    pub sha256: String,
}

/// Where each runtime file comes from in the unpacked group root, and goes
/// in the initramfs.
const RUNTIME: &[(&str, &str)] = &[
    (
        "lib/ld-linux-aarch64.so.1",
        "lib/aarch64-linux-gnu/ld-linux-aarch64.so.1",
    ),
    (
        "lib/aarch64-linux-gnu/libc.so.6",
        "lib/aarch64-linux-gnu/libc.so.6",
    ),
    (
        "usr/lib/aarch64-linux-gnu/libteec.so.1",
        "usr/lib/aarch64-linux-gnu/libteec.so.1",
    ),
];

/// Builds the client for `arch` (arm64 only; `None` for x86_64).
pub fn build(arch: Arch, inputs: &Inputs) -> Result<Option<TeeClient>> {
    if arch != Arch::Aarch64 {
        return Ok(None);
    }
    setup::ensure_packages(&["gcc-aarch64-linux-gnu", "libc6-dev-arm64-cross"])?;
    let root = images::unpack(
        &paths::cache_dir(),
        "tee-client-arm64",
        &inputs.group_debs(lock::GROUP_TEE_CLIENT),
    )?;
    let src = paths::workspace_root().join("tests/guest-tools/c/tee-client.c");
    let out_dir = paths::target_dir().join("tee-client").join(arch.name());
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    let bin = out_dir.join("tee-client");
    let mut cc = Command::new("aarch64-linux-gnu-gcc");
    cc.args(["-O2", "-Wall", "-Wextra", "-Werror", "-pthread", "-I"])
        .arg(root.join("usr/include"))
        .arg("-o")
        .arg(&bin)
        .arg(&src)
        .arg("-L")
        .arg(root.join("usr/lib/aarch64-linux-gnu"))
        .arg("-lteec");
    step!("build the arm64 TEE client: {}", util::show(&cc));
    let out = cc
        .output()
        .context("cannot run aarch64-linux-gnu-gcc (install gcc-aarch64-linux-gnu)")?;
    let log = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() || !log.trim().is_empty() {
        bail!("building {} failed ({}):\n{log}", src.display(), out.status);
    }
    let data = std::fs::read(&bin).with_context(|| format!("cannot read {}", bin.display()))?;
    if !modules::elf_is_dynamic(&data)? {
        bail!(
            "{} is not dynamically linked against libteec",
            bin.display()
        );
    }
    let mut files = vec![("bin/tee-client", 0o755, bin)];
    for &(to, from) in RUNTIME {
        let p = root.join(from);
        if !p.is_file() {
            bail!("{} missing from the tee-client packages", p.display());
        }
        files.push((to, 0o755, p));
    }
    let mut sha = String::new();
    for (_, _, p) in &files {
        sha.push_str(&util::sha256_file(p)?);
    }
    Ok(Some(TeeClient {
        files,
        sha256: util::sha256_bytes(sha.as_bytes()),
    }))
}

impl TeeClient {
    /// Adds the client and its libraries to a guest initramfs.
    pub fn add_to(&self, a: &mut Archive) -> Result<()> {
        for (to, mode, from) in &self.files {
            a.file_from(to, *mode, Path::new(from))?;
        }
        Ok(())
    }
}
