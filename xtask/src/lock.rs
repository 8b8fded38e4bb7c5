//! `prebuilts/<arch>.lock` (`x86_64.lock`, `aarch64.lock`): the exact Debian
//! packages the images are built from, and how they are resolved, downloaded
//! and verified.
//!
//! Groups of packages:
//! - `kernel`: resolved through the meta package `linux-image-<debian arch>`
//!   (`linux-image-amd64`, `linux-image-arm64`) in
//!   bookworm-backports: the image it depends on, plus the matching
//!   `linux-headers-<release>`, its `-common` and `linux-kbuild-*` packages;
//! - `busybox`: `busybox-static` from bookworm;
//! - `tee-client` (aarch64 lock only): Debian's OP-TEE client library
//!   `libteec1` with `optee-client-dev` (headers) and the `libc6` it runs on,
//!   from bookworm, for the arm64 guest's TEE client (`xtask/src/tee_client.rs`);
//! - `qemu`: the test host's emulator, `qemu-system-x86` (x86_64 lock) or
//!   `qemu-system-arm` (aarch64 lock) with the `qemu-system-common` and
//!   `qemu-system-data` of the same version from bookworm-backports
//!   (bookworm's 7.2 mis-emulates nested SVM and has no arm64 CPU model
//!   with FEAT_EVT, see docs/testing.md). These are packages of the build
//!   machine ([`BUILD_MACHINE_ARCH`]), resolved in its private apt tree
//!   `apt/` whatever the images' architecture. It runs from its unpacked
//!   root on the build machine; its shared libraries come from the
//!   system's own `qemu-system-x86` / `qemu-system-arm`.
//! - on demand (aarch64 lock only, [`ON_DEMAND_GROUPS`]): a program the
//!   arm64 test host runs for one benchmark, with the library packages it
//!   needs, found by following `Depends:` from its package through every
//!   package of section `libs` (each at its bookworm version;
//!   `xtask/src/arm64_program.rs` checks the closure against the ELF files'
//!   `NEEDED` entries): `qemu-peer`, the arm64 QEMU that `cargo xtask bench
//!   boot --arch aarch64` runs as the peer of our VMM (`qemu-system-arm`
//!   from bookworm, the QEMU 7.2 of the x86_64 peer), and `adb-client`,
//!   Debian's `adb` that `cargo xtask bench adb --arch aarch64` runs.
//!   Resolved and downloaded only by the benchmark that needs it
//!   ([`ensure_group`]);
//!   `cargo xtask images` keeps the entries but does not download them.
//!
//! If the lock exists, its exact versions are used. If a locked version can no
//! longer be found (backports move on) after a fresh `apt-get update`, the group is
//! re-resolved, a warning is printed and the lock is rewritten.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::apt::{self, Apt, PkgInfo};
use crate::util::{self, step, warning};

/// Meta package that selects the kernel for Debian architecture `arch`.
pub fn kernel_meta(arch: &str) -> String {
    format!("linux-image-{arch}")
}
/// Suite the kernel meta package is taken from.
pub const KERNEL_SUITE: &str = "bookworm-backports";
/// Busybox package.
pub const BUSYBOX: &str = "busybox-static";
/// Suite busybox is taken from.
pub const BUSYBOX_SUITE: &str = "bookworm";

/// Packages of the test host's QEMU for images of Debian architecture
/// `arch`, all at the version of the first (the emulator of `arch`).
pub fn qemu_packages(arch: &str) -> [&'static str; 3] {
    let system = if arch == "arm64" {
        "qemu-system-arm"
    } else {
        "qemu-system-x86"
    };
    [system, "qemu-system-common", "qemu-system-data"]
}
/// Debian architecture of the build machine, which runs the test host's
/// QEMU: the [`GROUP_QEMU`] packages are of this architecture.
pub const BUILD_MACHINE_ARCH: &str = "amd64";
/// Suite the test host's QEMU is taken from.
pub const QEMU_SUITE: &str = "bookworm-backports";

/// Group name of the kernel packages.
pub const GROUP_KERNEL: &str = "kernel";
/// Group name of the busybox package.
pub const GROUP_BUSYBOX: &str = "busybox";
/// Group name of the test host's QEMU packages.
pub const GROUP_QEMU: &str = "qemu";
/// Group name of the arm64 guest's TEE client library (arm64 only).
pub const GROUP_TEE_CLIENT: &str = "tee-client";
/// Packages of [`GROUP_TEE_CLIENT`] (each package's role is its name).
pub const TEE_CLIENT_PACKAGES: &[&str] = &["libteec1", "optee-client-dev", "libc6"];
/// Suite the TEE client packages are taken from.
pub const TEE_CLIENT_SUITE: &str = "bookworm";
/// An on-demand group of arm64 packages for one program run inside the
/// arm64 test host: the program's package and, breadth-first, the library
/// packages it depends on ([`peer_dependencies`], [`is_library_section`]),
/// each at its version in `suite`. Not in [`groups`]: resolved and
/// downloaded only by the command that needs it ([`ensure_group`]), kept
/// in the lock by the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgramGroup {
    /// Group name in the lock.
    pub group: &'static str,
    /// The package the group is resolved from.
    pub package: &'static str,
    /// Suite every package of the group is taken from.
    pub suite: &'static str,
}

/// The arm64 QEMU that `cargo xtask bench boot --arch aarch64` runs in the
/// arm64 test host as the peer of our VMM (the QEMU 7.2 of the x86_64
/// peer).
pub const QEMU_PEER: ProgramGroup = ProgramGroup {
    group: "qemu-peer",
    package: "qemu-system-arm",
    suite: "bookworm",
};
/// The stock adb client that `cargo xtask bench adb --arch aarch64` runs
/// in the arm64 test host (the version the x86_64 test host gets from
/// this machine's `adb` package).
pub const ADB_CLIENT: ProgramGroup = ProgramGroup {
    group: "adb-client",
    package: "adb",
    suite: "bookworm",
};
/// Every on-demand group.
pub const ON_DEMAND_GROUPS: &[ProgramGroup] = &[QEMU_PEER, ADB_CLIENT];

/// Role of the kernel image package.
pub const ROLE_IMAGE: &str = "kernel-image";
/// Role of the busybox package.
pub const ROLE_BUSYBOX: &str = "busybox";

/// Lists are considered fresh enough for a new resolution for this long.
const LISTS_MAX_AGE: Duration = Duration::from_secs(3600);

fn header(arch: &str) -> String {
    format!(
        "# Exact Debian packages the {arch} guest and test-host images are built from.
# Written by `cargo xtask images` (see docs/testing.md). Edit only to pin or
# to force a re-resolution (delete a group's entries, or the whole file).
"
    )
}

/// The image architecture of a Debian architecture (for the lock header).
fn arch_of(meta_package: &str) -> &str {
    match meta_package.strip_prefix("linux-image-") {
        Some("arm64") => "aarch64",
        Some("amd64") | None => "x86_64",
        Some(other) => other,
    }
}

/// How the kernel was resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelInfo {
    /// Meta package (`linux-image-amd64`).
    pub meta_package: String,
    /// Version of the meta package at resolution time.
    pub meta_version: String,
    /// Suite of the meta package.
    pub suite: String,
    /// Kernel release (`uname -r`), e.g. `6.12.95+deb12-amd64`.
    pub release: String,
}

/// One locked input package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockedPackage {
    /// Group the package belongs to (`kernel`, `busybox`, `qemu`).
    pub group: String,
    /// What the package is used for.
    pub role: String,
    /// Package name.
    pub name: String,
    /// Exact version.
    pub version: String,
    /// SHA256 of the .deb (from the Packages index).
    pub sha256: String,
    /// Pool path of the .deb.
    pub filename: String,
    /// Size in bytes.
    pub size: u64,
}

impl LockedPackage {
    fn from_info(group: &str, role: &str, p: &PkgInfo) -> Self {
        Self {
            group: group.into(),
            role: role.into(),
            name: p.name.clone(),
            version: p.version.clone(),
            sha256: p.sha256.clone(),
            filename: p.filename.clone(),
            size: p.size,
        }
    }

    fn info(&self) -> PkgInfo {
        PkgInfo {
            name: self.name.clone(),
            version: self.version.clone(),
            sha256: self.sha256.clone(),
            filename: self.filename.clone(),
            size: self.size,
            depends: String::new(),
            section: String::new(),
        }
    }

    /// File name of the .deb in the download cache.
    pub fn deb_name(&self) -> String {
        Path::new(&self.filename)
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| format!("{}_{}.deb", self.name, self.version))
    }
}

/// Contents of `prebuilts/x86_64.lock`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    /// How the kernel was resolved.
    pub kernel: KernelInfo,
    /// All input packages.
    #[serde(rename = "package")]
    pub packages: Vec<LockedPackage>,
}

impl Lock {
    /// Reads a lock file; `None` if it does not exist.
    pub fn read(path: &Path) -> Result<Option<Self>> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let lock =
            toml::from_str(&text).with_context(|| format!("cannot parse {}", path.display()))?;
        Ok(Some(lock))
    }

    /// Serializes the lock with its header comment.
    pub fn render(&self) -> Result<String> {
        Ok(format!(
            "{}\n{}",
            header(arch_of(&self.kernel.meta_package)),
            toml::to_string_pretty(self)?
        ))
    }

    /// Packages of `group`.
    pub fn group(&self, group: &str) -> Vec<&LockedPackage> {
        self.packages.iter().filter(|p| p.group == group).collect()
    }

    /// The package with `role`.
    pub fn role(&self, role: &str) -> Result<&LockedPackage> {
        self.packages
            .iter()
            .find(|p| p.role == role)
            .ok_or_else(|| anyhow!("lock has no package with role {role}"))
    }
}

/// Locked inputs with their verified .debs in the download cache.
pub struct Inputs {
    /// The lock in effect.
    pub lock: Lock,
    /// Verified .deb per package name.
    pub debs: Vec<(LockedPackage, PathBuf)>,
}

impl Inputs {
    /// Verified .debs of `group`.
    pub fn group_debs(&self, group: &str) -> Vec<(&LockedPackage, &Path)> {
        self.debs
            .iter()
            .filter(|(p, _)| p.group == group)
            .map(|(p, d)| (p, d.as_path()))
            .collect()
    }
}

/// Picks the version of `name` in `suite`.
fn version_in_suite(apt: &Apt, name: &str, suite: &str) -> Result<PkgInfo> {
    let versions = apt.madison(name)?;
    let Some((version, _)) = versions.iter().find(|(_, s)| s == suite) else {
        bail!("{name} not found in {suite} (apt-cache madison {name}: {versions:?})");
    };
    apt.show(name, Some(version))?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("apt-cache show {name}={version} found nothing"))
}

/// Picks `name` at `version` if the index has it, else its highest version.
fn exact_or_latest(apt: &Apt, name: &str, version: &str) -> Result<PkgInfo> {
    if let Some(p) = apt.show(name, Some(version))?.into_iter().next() {
        return Ok(p);
    }
    apt.show(name, None)?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("package {name} not found in the package lists"))
}

/// Resolves the kernel group through the meta package.
fn resolve_kernel(apt: &Apt, meta_name: &str) -> Result<(KernelInfo, Vec<LockedPackage>)> {
    let meta = version_in_suite(apt, meta_name, KERNEL_SUITE)?;
    let image_name = apt::depends_names(&meta.depends)
        .into_iter()
        .find(|d| d.starts_with("linux-image-"))
        .ok_or_else(|| anyhow!("{meta_name} {} depends on no linux-image-*", meta.version))?;
    let release = image_name
        .strip_prefix("linux-image-")
        .unwrap_or_default()
        .to_string();
    let image = exact_or_latest(apt, &image_name, &meta.version)?;
    let headers = exact_or_latest(apt, &format!("linux-headers-{release}"), &image.version)?;
    let deps = apt::depends_names(&headers.depends);
    let common_name = deps
        .iter()
        .find(|d| d.starts_with("linux-headers-") && d.ends_with("-common"))
        .ok_or_else(|| anyhow!("{} depends on no linux-headers-*-common", headers.name))?;
    let kbuild_name = deps
        .iter()
        .find(|d| d.starts_with("linux-kbuild-"))
        .ok_or_else(|| anyhow!("{} depends on no linux-kbuild-*", headers.name))?;
    let common = exact_or_latest(apt, common_name, &image.version)?;
    let kbuild = exact_or_latest(apt, kbuild_name, &image.version)?;
    let kernel = KernelInfo {
        meta_package: meta_name.into(),
        meta_version: meta.version.clone(),
        suite: KERNEL_SUITE.into(),
        release,
    };
    let g = GROUP_KERNEL;
    Ok((
        kernel,
        vec![
            LockedPackage::from_info(g, ROLE_IMAGE, &image),
            LockedPackage::from_info(g, "kernel-headers", &headers),
            LockedPackage::from_info(g, "kernel-headers-common", &common),
            LockedPackage::from_info(g, "kernel-kbuild", &kbuild),
        ],
    ))
}

/// Resolves busybox.
fn resolve_busybox(apt: &Apt) -> Result<Vec<LockedPackage>> {
    let p = version_in_suite(apt, BUSYBOX, BUSYBOX_SUITE)?;
    Ok(vec![LockedPackage::from_info(
        GROUP_BUSYBOX,
        ROLE_BUSYBOX,
        &p,
    )])
}

/// Resolves the test host's QEMU for images of Debian architecture `arch`:
/// the packages of [`qemu_packages`] at the version [`QEMU_SUITE`] has of
/// the first, from `apt` (the build machine's tree).
fn resolve_qemu(apt: &Apt, arch: &str) -> Result<Vec<LockedPackage>> {
    let names = qemu_packages(arch);
    let main = version_in_suite(apt, names[0], QEMU_SUITE)?;
    let mut pkgs = vec![LockedPackage::from_info(GROUP_QEMU, names[0], &main)];
    for name in &names[1..] {
        let p = apt
            .show(name, Some(&main.version))?
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("{name} {} not found in the package lists", main.version))?;
        pkgs.push(LockedPackage::from_info(GROUP_QEMU, name, &p));
    }
    Ok(pkgs)
}

/// Resolves the arm64 TEE client packages, each at its bookworm version.
fn resolve_tee_client(apt: &Apt) -> Result<Vec<LockedPackage>> {
    TEE_CLIENT_PACKAGES
        .iter()
        .map(|name| {
            let p = version_in_suite(apt, name, TEE_CLIENT_SUITE)?;
            Ok(LockedPackage::from_info(GROUP_TEE_CLIENT, name, &p))
        })
        .collect()
}

/// The dependencies of a package that the QEMU peer's closure considers:
/// per `Depends:` clause the first alternative `known` to the index.
pub fn peer_dependencies(depends: &str, mut known: impl FnMut(&str) -> bool) -> Vec<String> {
    depends
        .split(',')
        .filter_map(|clause| {
            clause
                .split('|')
                .filter_map(|alt| alt.split_whitespace().next())
                .map(|n| n.split(':').next().unwrap_or(n))
                .find(|n| !n.is_empty() && known(n))
                .map(str::to_string)
        })
        .collect()
}

/// Whether a package of Debian section `section` is a library package
/// (`libs`, `oldlibs`, with or without a component prefix): the QEMU
/// peer's closure follows only those (the others, such as
/// `qemu-system-common`, `adduser` or `debconf`, carry no shared object
/// the emulator loads).
pub fn is_library_section(section: &str) -> bool {
    matches!(section.rsplit('/').next(), Some("libs" | "oldlibs"))
}

/// Resolves the on-demand group `g` ([`ProgramGroup`]).
fn resolve_program_group(apt: &Apt, g: &ProgramGroup) -> Result<Vec<LockedPackage>> {
    let mut queue = std::collections::VecDeque::from([g.package.to_string()]);
    let mut seen = std::collections::BTreeSet::new();
    let mut known = std::collections::HashMap::new();
    let mut out = Vec::new();
    while let Some(name) = queue.pop_front() {
        if !seen.insert(name.clone()) {
            continue;
        }
        let p = version_in_suite(apt, &name, g.suite)?;
        if name != g.package && !is_library_section(&p.section) {
            continue;
        }
        queue.extend(peer_dependencies(&p.depends, |n| {
            *known
                .entry(n.to_string())
                .or_insert_with(|| apt.madison(n).is_ok_and(|v| !v.is_empty()))
        }));
        out.push(LockedPackage::from_info(g.group, &name, &p));
    }
    step!(
        "resolved {} {} ({}) with {} library packages",
        g.package,
        out[0].version,
        g.suite,
        out.len() - 1
    );
    Ok(out)
}

/// Groups locked for Debian architecture `arch`.
fn groups(arch: &str) -> &'static [&'static str] {
    if arch == "amd64" {
        &[GROUP_KERNEL, GROUP_BUSYBOX, GROUP_QEMU]
    } else {
        &[GROUP_KERNEL, GROUP_BUSYBOX, GROUP_TEE_CLIENT, GROUP_QEMU]
    }
}

/// The private apt tree of Debian architecture `arch`: `apt/` for amd64
/// (as before), `apt-<arch>/` (own lists) for the others.
fn apt_root(cache: &Path, arch: &str) -> PathBuf {
    if arch == "amd64" {
        cache.join("apt")
    } else {
        cache.join(format!("apt-{arch}"))
    }
}

/// The apt trees of one lock: the images' architecture's, and the build
/// machine's for the [`GROUP_QEMU`] packages (the same tree for amd64
/// images; opened when first needed otherwise).
struct AptTrees {
    images: Apt,
    build_machine: Option<Apt>,
    cache: PathBuf,
    same: bool,
}

impl AptTrees {
    fn new(cache: &Path, arch: &str) -> Result<Self> {
        Ok(Self {
            images: Apt::new(&apt_root(cache, arch), arch)?,
            build_machine: None,
            cache: cache.to_path_buf(),
            same: arch == BUILD_MACHINE_ARCH,
        })
    }

    /// The tree `group`'s packages are resolved and downloaded in.
    fn for_group(&mut self, group: &str) -> Result<&Apt> {
        if group != GROUP_QEMU || self.same {
            return Ok(&self.images);
        }
        let apt = match self.build_machine.take() {
            Some(apt) => apt,
            None => Apt::new(
                &apt_root(&self.cache, BUILD_MACHINE_ARCH),
                BUILD_MACHINE_ARCH,
            )?,
        };
        Ok(self.build_machine.insert(apt))
    }
}

/// Whether a cached .deb exists with the locked checksum (`warn`: say so if it does not match).
fn cached(pkg: &LockedPackage, debs_dir: &Path, warn: bool) -> Result<Option<PathBuf>> {
    let path = debs_dir.join(pkg.deb_name());
    if !path.is_file() {
        return Ok(None);
    }
    if util::sha256_file(&path)? == pkg.sha256 {
        Ok(Some(path))
    } else {
        if warn {
            warning!(
                "cached {} does not match the locked sha256; downloading again",
                path.display()
            );
        }
        Ok(None)
    }
}

/// Checks that every locked package of a group is still in the index with the
/// same checksum. `Ok(false)` if a version is gone; an error if a checksum changed.
fn available(apt: &Apt, pkgs: &[LockedPackage], lock_path: &Path) -> Result<bool> {
    for p in pkgs {
        let Some(info) = apt.show(&p.name, Some(&p.version))?.into_iter().next() else {
            return Ok(false);
        };
        if info.sha256 != p.sha256 {
            bail!(
                "{} {}: the Packages index says sha256 {}, the lock says {}; refusing to continue \
                 (delete the entry from {} to re-resolve)",
                p.name,
                p.version,
                info.sha256,
                p.sha256,
                lock_path.display()
            );
        }
    }
    Ok(true)
}

/// Makes sure every input for Debian architecture `arch` is locked,
/// downloaded and verified; updates the lock file when something had to be
/// (re-)resolved. amd64 keeps the private apt tree `apt/`, other
/// architectures get `apt-<arch>/` (own lists); the test host's QEMU comes
/// from `apt/` for all (see [`AptTrees`]).
pub fn ensure_inputs(lock_path: &Path, cache: &Path, arch: &str) -> Result<Inputs> {
    let old = Lock::read(lock_path)?;
    let debs_dir = cache.join("debs");
    let mut trees = AptTrees::new(cache, arch)?;
    let meta_name = kernel_meta(arch);

    let mut kernel_info = old.as_ref().map(|l| l.kernel.clone());
    let mut packages: Vec<LockedPackage> = Vec::new();
    for &group in groups(arch) {
        let locked: Vec<LockedPackage> = old
            .as_ref()
            .map(|l| l.group(group).into_iter().cloned().collect())
            .unwrap_or_default();
        let apt = trees.for_group(group)?;
        if usable(apt, group, &locked, &debs_dir, lock_path)? {
            packages.extend(locked);
            continue;
        }
        if group == GROUP_KERNEL {
            let (info, pkgs) = resolve_kernel(apt, &meta_name)?;
            step!(
                "resolved {meta_name} {} ({KERNEL_SUITE}) -> kernel {}",
                info.meta_version,
                info.release
            );
            kernel_info = Some(info);
            packages.extend(pkgs);
        } else if group == GROUP_QEMU {
            let pkgs = resolve_qemu(apt, arch)?;
            step!(
                "resolved {} {} ({QEMU_SUITE})",
                pkgs[0].name,
                pkgs[0].version
            );
            packages.extend(pkgs);
        } else if group == GROUP_TEE_CLIENT {
            packages.extend(resolve_tee_client(apt)?);
        } else {
            packages.extend(resolve_busybox(apt)?);
        }
    }
    // On-demand groups stay locked (not downloaded here).
    let on_demand: Vec<LockedPackage> = old
        .iter()
        .flat_map(|l| &l.packages)
        .filter(|p| ON_DEMAND_GROUPS.iter().any(|g| g.group == p.group))
        .cloned()
        .collect();
    packages.extend(on_demand);
    let kernel = kernel_info.ok_or_else(|| anyhow!("kernel group resolved without kernel info"))?;
    let lock = Lock { kernel, packages };
    write_if_changed(lock_path, old.as_ref(), &lock)?;
    let wanted: Vec<LockedPackage> = lock
        .packages
        .iter()
        .filter(|p| groups(arch).contains(&p.group.as_str()))
        .cloned()
        .collect();
    let debs = download(&mut trees, &wanted, &debs_dir)?;
    Ok(Inputs { lock, debs })
}

/// Whether the `locked` packages of `group` can be used as they are
/// (cached, or still downloadable); if not, says why and leaves `apt`'s
/// lists fresh for a new resolution.
fn usable(
    apt: &Apt,
    group: &str,
    locked: &[LockedPackage],
    debs_dir: &Path,
    lock_path: &Path,
) -> Result<bool> {
    if !locked.is_empty() {
        let mut all_cached = true;
        for p in locked {
            if cached(p, debs_dir, false)?.is_none() {
                all_cached = false;
            }
        }
        if all_cached {
            return Ok(true);
        }
        apt.ensure_lists(LISTS_MAX_AGE)?;
        if available(apt, locked, lock_path)? {
            return Ok(true);
        }
        if !apt.updated() {
            apt.update()?;
            if available(apt, locked, lock_path)? {
                return Ok(true);
            }
        }
    }
    if locked.is_empty() {
        step!(
            "resolving {group} packages (not in {})",
            lock_path.display()
        );
    } else {
        let list: Vec<String> = locked
            .iter()
            .map(|p| format!("{} {}", p.name, p.version))
            .collect();
        warning!(
            "locked {group} packages are no longer downloadable ({}); re-resolving and updating {}",
            list.join(", "),
            lock_path.display()
        );
    }
    if !apt.updated() {
        apt.update()?;
    }
    Ok(false)
}

/// Writes `lock` to `lock_path` unless it equals `old`.
fn write_if_changed(lock_path: &Path, old: Option<&Lock>, lock: &Lock) -> Result<()> {
    if old == Some(lock) {
        return Ok(());
    }
    util::write_atomic(lock_path, lock.render()?.as_bytes())?;
    step!("wrote {}", lock_path.display());
    for p in &lock.packages {
        step!("  locked {} {} sha256 {}", p.name, p.version, p.sha256);
    }
    Ok(())
}

/// The verified .debs of `packages`, downloaded if not cached.
fn download(
    trees: &mut AptTrees,
    packages: &[LockedPackage],
    debs_dir: &Path,
) -> Result<Vec<(LockedPackage, PathBuf)>> {
    let mut debs = Vec::new();
    for p in packages {
        let path = match cached(p, debs_dir, true)? {
            Some(path) => {
                step!("cached {} {} (sha256 ok)", p.name, p.version);
                path
            }
            None => {
                let apt = trees.for_group(&p.group)?;
                apt.ensure_lists(LISTS_MAX_AGE)?;
                apt.download(&p.info(), debs_dir)?
            }
        };
        debs.push((p.clone(), path));
    }
    Ok(debs)
}

/// Makes sure the on-demand group `g` ([`ON_DEMAND_GROUPS`]) is
/// locked in `lock_path` (which `cargo xtask images` wrote), downloaded and
/// verified, like [`ensure_inputs`] does for the images' groups; returns
/// its packages with their .debs.
pub fn ensure_group(
    lock_path: &Path,
    cache: &Path,
    arch: &str,
    g: &ProgramGroup,
) -> Result<Vec<(LockedPackage, PathBuf)>> {
    if !ON_DEMAND_GROUPS.contains(g) {
        bail!("{} is not an on-demand lock group", g.group);
    }
    let group = g.group;
    let old = Lock::read(lock_path)?.with_context(|| {
        format!(
            "{} is missing (build the images first)",
            lock_path.display()
        )
    })?;
    let debs_dir = cache.join("debs");
    let mut trees = AptTrees::new(cache, arch)?;
    let locked: Vec<LockedPackage> = old.group(group).into_iter().cloned().collect();
    let packages = if usable(
        trees.for_group(group)?,
        group,
        &locked,
        &debs_dir,
        lock_path,
    )? {
        locked
    } else {
        let resolved = resolve_program_group(trees.for_group(group)?, g)?;
        let mut lock = old.clone();
        lock.packages.retain(|p| p.group != group);
        lock.packages.extend(resolved.iter().cloned());
        write_if_changed(lock_path, Some(&old), &lock)?;
        resolved
    };
    download(&mut trees, &packages, &debs_dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_roundtrip() {
        let lock = Lock {
            kernel: KernelInfo {
                meta_package: kernel_meta("amd64"),
                meta_version: "6.12.95-1~bpo12+1".into(),
                suite: KERNEL_SUITE.into(),
                release: "6.12.95+deb12-amd64".into(),
            },
            packages: vec![LockedPackage {
                group: GROUP_BUSYBOX.into(),
                role: ROLE_BUSYBOX.into(),
                name: BUSYBOX.into(),
                version: "1:1.35.0-4+deb12u1+b1".into(),
                sha256: "3d3f".into(),
                filename: "pool/main/b/busybox/busybox-static_1.35.0-4+deb12u1+b1_amd64.deb".into(),
                size: 928188,
            }],
        };
        let text = lock.render().unwrap();
        assert!(text.starts_with("# Exact Debian packages the x86_64 guest"));
        let mut arm = lock.clone();
        arm.kernel.meta_package = kernel_meta("arm64");
        assert!(arm
            .render()
            .unwrap()
            .starts_with("# Exact Debian packages the aarch64 guest"));
        assert!(text.contains("[[package]]"));
        let back: Lock = toml::from_str(&text).unwrap();
        assert_eq!(back, lock);
        assert_eq!(
            back.packages[0].deb_name(),
            "busybox-static_1.35.0-4+deb12u1+b1_amd64.deb"
        );
        assert_eq!(back.role(ROLE_BUSYBOX).unwrap().size, 928188);
    }

    /// Both locks carry the test host's QEMU, each its own emulator with
    /// the shared packages.
    #[test]
    fn qemu_group_per_arch() {
        for arch in ["amd64", "arm64"] {
            assert!(groups(arch).contains(&GROUP_QEMU), "{arch}");
        }
        assert_eq!(qemu_packages("amd64")[0], "qemu-system-x86");
        assert_eq!(qemu_packages("arm64")[0], "qemu-system-arm");
        assert_eq!(qemu_packages("arm64")[1..], qemu_packages("amd64")[1..]);
        let cache = Path::new("/c");
        assert_eq!(apt_root(cache, "amd64"), cache.join("apt"));
        assert_eq!(apt_root(cache, "arm64"), cache.join("apt-arm64"));
    }

    /// The peer closure takes the first alternative the index knows,
    /// without versions or arch qualifiers, and follows library sections.
    #[test]
    fn peer_dependencies_follow_known_library_packages() {
        let depends = "libaio1 (>= 0.3.93), libc6 (>= 2.34), libjack-jackd2-0 (>= 1.9.10+20150825) | libjack-0.125, \
                       libvirt-fake | libpulse0:arm64 (>= 0.99.1), qemu-system-common (= 1:7.2+dfsg-7), \
                       adduser, debconf (>= 0.5) | debconf-2.0, libgone";
        let known = |n: &str| !matches!(n, "libvirt-fake" | "libgone" | "debconf-2.0");
        assert_eq!(
            peer_dependencies(depends, known),
            [
                "libaio1",
                "libc6",
                "libjack-jackd2-0",
                "libpulse0",
                "qemu-system-common",
                "adduser",
                "debconf"
            ]
        );
        assert!(is_library_section("libs") && is_library_section("contrib/oldlibs"));
        assert!(!is_library_section("admin") && !is_library_section(""));
        assert!(peer_dependencies("", |_| true).is_empty());
        assert!(ON_DEMAND_GROUPS
            .iter()
            .all(|g| !groups("arm64").contains(&g.group)));
    }
}
