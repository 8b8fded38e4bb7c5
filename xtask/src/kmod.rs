//! Out-of-tree guest kernel modules (the Android "vendor module" shape):
//! `android/kernel/<name>/` (Kbuild + Makefile, GPL-2.0), built against the
//! Debian kernel headers of the image's lock and loaded by the guest's
//! `/init` after their dependencies from the Debian kernel.
//!
//! Debian's headers expect to live in `/usr/src`: the arch package's
//! `Makefile` includes `/usr/src/linux-headers-<ver>-common/Makefile` by
//! absolute path, and `scripts`/`tools` are host binaries of the package's
//! architecture. So the build gets its own object tree,
//! `target/kmod/<arch>/kbuild/`: symlinks to the unpacked arch headers
//! (`.config`, `.kernelvariables`, `Module.symvers`, `arch`, `include`), a
//! one-line `Makefile` that includes the unpacked `-common` one, and
//! `scripts`/`tools` from an **amd64** `linux-kbuild` package of the same
//! version: the kernel root's own for x86_64, a separately unpacked one for
//! arm64 (cross-compiled; the headers' `.kernelvariables` select
//! `aarch64-linux-gnu-gcc-12`). BTF is not generated
//! (`CONFIG_DEBUG_INFO_BTF_MODULES=`): it needs `pahole` and matters only to
//! BPF tools.
//!
//! Each Kbuild sets `-Werror`, and any `warning` line in the build output
//! (modpost's included) fails the build too. The module is stripped of
//! debug info (as `INSTALL_MOD_STRIP=1` does). The result is checked:
//! `vermagic` names the kernel release, `depends=` is what the image's
//! module resolver loads first.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::apt::{Apt, PkgInfo};
use crate::lock::{self, Inputs, LockedPackage};
use crate::modules::{self, Module};
use crate::paths::{self, Arch};
use crate::setup;
use crate::util::{self, step};

/// The modules built for every guest, by directory name under
/// `android/kernel/`.
pub const MODULES: &[&str] = &["virtio_tee"];

/// Bump to rebuild the modules when this builder changes.
const BUILDER_VERSION: &str = "2";

/// Where built modules go inside `lib/modules/<release>/`.
const MODULE_DIR: &str = "extra";

/// Role of the kbuild package in the lock (see `lock::resolve_kernel`).
const ROLE_KBUILD: &str = "kernel-kbuild";

/// Builds every module of [`MODULES`] for `arch` against the kernel root
/// `kroot` (the unpacked kernel group of `inputs`) of `release`.
pub fn build(arch: Arch, kroot: &Path, release: &str, inputs: &Inputs) -> Result<Vec<Module>> {
    // The compilers the headers' .kernelvariables name, and their strip.
    let (host_tools, strip): (&[&str], _) = match arch {
        Arch::X86_64 => (&["make", "gcc-12"], "x86_64-linux-gnu-strip"),
        Arch::Aarch64 => (
            &["make", "gcc-aarch64-linux-gnu"],
            "aarch64-linux-gnu-strip",
        ),
    };
    setup::ensure_packages(host_tools)?;
    let kbuild_pkg = inputs.lock.role(ROLE_KBUILD)?.clone();
    let kbuild_root = match arch {
        Arch::X86_64 => kroot.to_path_buf(),
        Arch::Aarch64 => amd64_kbuild_root(&kbuild_pkg)?,
    };
    let work = paths::target_dir().join("kmod").join(arch.name());
    let objtree = kbuild_tree(&work, kroot, &kbuild_root, release, &kbuild_pkg)?;

    // Inputs of every module: the header and kbuild packages, this builder.
    let mut key = Sha256::new();
    key.update(BUILDER_VERSION);
    for (p, _) in inputs.group_debs(lock::GROUP_KERNEL) {
        if p.role != lock::ROLE_IMAGE {
            key.update(&p.sha256);
        }
    }
    key.update(&kbuild_pkg.name);
    key.update(&kbuild_pkg.version);
    MODULES
        .iter()
        .map(|name| build_one(name, &work, &objtree, release, strip, key.clone()))
        .collect()
}

/// Builds `android/kernel/<name>` in `work/<name>` (a copy of the sources,
/// so objects stay out of the tree); reuses the last build while its
/// inputs are the same.
fn build_one(
    name: &str,
    work: &Path,
    objtree: &Path,
    release: &str,
    strip: &str,
    mut key: Sha256,
) -> Result<Module> {
    let src = paths::workspace_root().join("android/kernel").join(name);
    let files = source_files(&src)?;
    for f in &files {
        key.update(f.file_name().unwrap_or_default().as_encoded_bytes());
        key.update(std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?);
    }
    let key = util::hex(&key.finalize());
    let dir = work.join(name);
    let ko = dir.join(format!("{name}.ko"));
    let stamp = dir.join(".vmstack-inputs");
    if !(ko.is_file() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(key.as_str())) {
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("cannot clean {}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        for f in &files {
            let to = dir.join(f.file_name().unwrap_or_default());
            std::fs::copy(f, &to).with_context(|| format!("cannot copy {}", f.display()))?;
        }
        let mut make = Command::new("make");
        make.arg("-C")
            .arg(objtree)
            .arg(format!("M={}", dir.display()))
            .arg("CONFIG_DEBUG_INFO_BTF_MODULES=")
            .arg("modules");
        step!(
            "build kernel module {name} for {release}: {}",
            util::show(&make)
        );
        let out = make
            .output()
            .with_context(|| "cannot run make (install make)".to_string())?;
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() {
            bail!(
                "building kernel module {name} failed ({}):\n{log}",
                out.status
            );
        }
        if let Some(line) = log.lines().find(|l| l.to_lowercase().contains("warning")) {
            bail!("building kernel module {name} warned (warnings are errors): {line}\n{log}");
        }
        // What `make modules_install INSTALL_MOD_STRIP=1` does: the debug
        // info is most of the file.
        util::run(Command::new(strip).arg("--strip-debug").arg(&ko))?;
        std::fs::write(&stamp, &key)?;
    } else {
        step!("kernel module {name} up to date ({})", ko.display());
    }
    let data = std::fs::read(&ko).with_context(|| format!("cannot read {}", ko.display()))?;
    let vermagic = modules::modinfo(&data, "vermagic")?
        .ok_or_else(|| anyhow!("{} has no vermagic", ko.display()))?;
    if !vermagic.starts_with(&format!("{release} ")) {
        bail!(
            "{} has vermagic {vermagic:?}, not kernel {release}",
            ko.display()
        );
    }
    let depends = modules::modinfo_depends(&data)?;
    step!(
        "  {name}.ko: {} bytes, vermagic {vermagic:?}, depends={}",
        data.len(),
        depends.join(",")
    );
    Ok(Module {
        name: name.to_string(),
        rel_path: format!("{MODULE_DIR}/{name}.ko"),
        depends,
        data,
    })
}

/// The module's sources: every regular file directly in `src` except
/// build products.
fn source_files(src: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(src)
        .with_context(|| format!("cannot read {}", src.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap_or_default().to_string_lossy();
            n == "Kbuild" || n == "Makefile" || n.ends_with(".c") || n.ends_with(".h")
        })
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("no module sources in {}", src.display());
    }
    Ok(files)
}

/// (Re)creates the object tree `work/kbuild` for `release`.
fn kbuild_tree(
    work: &Path,
    kroot: &Path,
    kbuild_root: &Path,
    release: &str,
    kbuild_pkg: &LockedPackage,
) -> Result<PathBuf> {
    let headers = kroot
        .join("usr/src")
        .join(format!("linux-headers-{release}"));
    let common = common_headers(kroot, &headers)?;
    // linux-kbuild-6.12.95+deb12 installs usr/lib/linux-kbuild-6.12.95+deb12.
    let kbuild = kbuild_root.join("usr/lib").join(&kbuild_pkg.name);
    for d in [&headers, &common, &kbuild] {
        if !d.is_dir() {
            bail!(
                "{} missing: the kernel packages are incomplete",
                d.display()
            );
        }
    }
    let tree = work.join("kbuild");
    if tree.exists() {
        std::fs::remove_dir_all(&tree)
            .with_context(|| format!("cannot clean {}", tree.display()))?;
    }
    std::fs::create_dir_all(&tree).with_context(|| format!("cannot create {}", tree.display()))?;
    let link = |target: &Path, name: &str| -> Result<()> {
        std::os::unix::fs::symlink(target, tree.join(name))
            .with_context(|| format!("cannot link {name} in {}", tree.display()))
    };
    for name in [
        ".config",
        ".kernelvariables",
        "Module.symvers",
        "arch",
        "include",
    ] {
        link(&headers.join(name), name)?;
    }
    link(&kbuild.join("scripts"), "scripts")?;
    link(&kbuild.join("tools"), "tools")?;
    std::fs::write(
        tree.join("Makefile"),
        format!("include {}/Makefile\n", common.display()),
    )?;
    Ok(tree)
}

/// The `-common` headers directory the arch headers' Makefile includes.
fn common_headers(kroot: &Path, headers: &Path) -> Result<PathBuf> {
    let makefile = headers.join("Makefile");
    let text = std::fs::read_to_string(&makefile)
        .with_context(|| format!("cannot read {}", makefile.display()))?;
    let included = text
        .lines()
        .find_map(|l| l.strip_prefix("include "))
        .ok_or_else(|| anyhow!("{} includes no common Makefile", makefile.display()))?;
    // `/usr/src/linux-headers-<ver>-common/Makefile`, inside the root.
    let dir = Path::new(included.trim())
        .parent()
        .and_then(|d| d.strip_prefix("/").ok())
        .ok_or_else(|| anyhow!("unexpected include {included:?} in {}", makefile.display()))?;
    Ok(kroot.join(dir))
}

/// An unpacked amd64 `linux-kbuild` package of `pkg`'s version (the arm64
/// lock's): the kbuild tools run on the build machine. Its .deb is the one
/// the x86_64 lock names when both locks have the same kernel, else the
/// amd64 index's (checked against its sha256).
fn amd64_kbuild_root(pkg: &LockedPackage) -> Result<PathBuf> {
    let cache = paths::cache_dir();
    let x86_lock = lock::Lock::read(&paths::lock_file(Arch::X86_64))?;
    let locked = x86_lock.as_ref().and_then(|l| {
        l.packages
            .iter()
            .find(|p| p.name == pkg.name && p.version == pkg.version)
            .cloned()
    });
    let apt = Apt::new(&cache.join("apt"), "amd64")?;
    let info = match locked {
        Some(p) => PkgInfo {
            name: p.name,
            version: p.version,
            sha256: p.sha256,
            filename: p.filename,
            size: p.size,
            depends: String::new(),
            section: String::new(),
        },
        None => {
            apt.ensure_lists(std::time::Duration::from_secs(3600))?;
            apt.show(&pkg.name, Some(&pkg.version))?
                .into_iter()
                .next()
                .ok_or_else(|| {
                    anyhow!(
                        "no amd64 {} {} in the package index (needed to cross-build arm64 modules); \
                         re-resolve prebuilts/aarch64.lock",
                        pkg.name,
                        pkg.version
                    )
                })?
        }
    };
    let debs = cache.join("debs");
    std::fs::create_dir_all(&debs)?;
    let name = Path::new(&info.filename)
        .file_name()
        .ok_or_else(|| anyhow!("bad pool file name {}", info.filename))?;
    let deb = debs.join(name);
    if !(deb.is_file() && util::sha256_file(&deb)? == info.sha256) {
        apt.ensure_lists(std::time::Duration::from_secs(3600))?;
        apt.download(&info, &debs)?;
    }
    let root = cache
        .join("roots")
        .join(format!("kbuild-amd64-{}", &info.sha256[..16]));
    let marker = root.join(".vmstack-unpacked");
    if !marker.is_file() {
        let tmp = root.with_extension("partial");
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp)?;
        step!("unpack {} {} (amd64, dpkg -x)", info.name, info.version);
        util::run(Command::new("dpkg").arg("-x").arg(&deb).arg(&tmp))?;
        std::fs::write(tmp.join(".vmstack-unpacked"), &info.sha256)?;
        let _ = std::fs::remove_dir_all(&root);
        std::fs::rename(&tmp, &root)
            .with_context(|| format!("cannot rename {} to {}", tmp.display(), root.display()))?;
    }
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_headers_come_from_the_include_line() {
        let dir = std::env::temp_dir().join(format!("kmod-test-{}", std::process::id()));
        let headers = dir.join("usr/src/linux-headers-6.12.95+deb12-amd64");
        std::fs::create_dir_all(&headers).unwrap();
        std::fs::write(
            headers.join("Makefile"),
            "include /usr/src/linux-headers-6.12.95+deb12-common/Makefile\n",
        )
        .unwrap();
        assert_eq!(
            common_headers(&dir, &headers).unwrap(),
            dir.join("usr/src/linux-headers-6.12.95+deb12-common")
        );
        std::fs::write(headers.join("Makefile"), "all:\n").unwrap();
        assert!(common_headers(&dir, &headers).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn module_sources_exist() {
        for name in MODULES {
            let src = paths::workspace_root().join("android/kernel").join(name);
            let files = source_files(&src).unwrap();
            assert!(
                files.iter().any(|f| f.ends_with("Kbuild")),
                "{name}: no Kbuild"
            );
        }
    }
}
