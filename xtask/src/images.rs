//! `cargo xtask images [--arch aarch64]`: guest and test-host images for
//! x86_64 or aarch64, from Debian packages (amd64 or arm64).
//!
//! Outputs in `target/images/<arch>/`:
//! - `guest-vmlinuz`, `guest-initramfs.cpio.gz`: what the VMM boots;
//! - `guest-vmlinux` (x86_64): the same kernel as an ELF, extracted from the
//!   bzImage (`vmlinux.rs`, needs `zstd`);
//! - `testhost-vmlinuz`, `testhost-initramfs.cpio.gz`: the nested test host, which
//!   carries the KVM modules, `/bin/vmm` and the guest images under `/guest/`;
//! - `manifest.json`: exact packages, kernel release, VMM binary and output checksums.
//!
//! Each output is rebuilt only when the hash of its inputs (recorded in a
//! `.<output>.inputs` stamp next to it) changes.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::cpio::Archive;
use crate::lock::{self, Inputs, LockedPackage};
use crate::modules::{self, Module, ModuleTree};
use crate::paths::{self, Arch};
use crate::setup;
use crate::util::{self, step, warning};
use crate::{kmod, tee_client};

/// Bump to force a rebuild of all outputs when the builder itself changes.
const BUILDER_VERSION: &str = "1";

/// Guest kernel output name.
pub const GUEST_KERNEL: &str = "guest-vmlinuz";
/// The guest kernel as an ELF vmlinux (x86_64), extracted from [`GUEST_KERNEL`].
pub const GUEST_VMLINUX: &str = "guest-vmlinux";
/// Guest initramfs output name.
pub const GUEST_INITRD: &str = "guest-initramfs.cpio.gz";

/// Paths of the built images.
#[derive(Debug, Clone)]
pub struct Images {
    /// Output directory (`GUEST_KERNEL`, `GUEST_INITRD`, the test host's
    /// files and the manifest).
    pub dir: PathBuf,
}

/// Unpacks `debs` with `dpkg -x` into one root under the cache (reused while the
/// set of .deb checksums is the same).
pub(crate) fn unpack(
    cache: &Path,
    group: &str,
    debs: &[(&LockedPackage, &Path)],
) -> Result<PathBuf> {
    let mut h = Sha256::new();
    let mut shas: Vec<&str> = debs.iter().map(|(p, _)| p.sha256.as_str()).collect();
    shas.sort_unstable();
    for s in shas {
        h.update(s.as_bytes());
    }
    let key = util::hex(&h.finalize());
    let roots = cache.join("roots");
    let dir = roots.join(format!("{group}-{}", &key[..16]));
    let marker = dir.join(".vmstack-unpacked");
    if marker.is_file() {
        step!("unpacked {group} root up to date ({})", dir.display());
        return Ok(dir);
    }
    let tmp = roots.join(format!("{group}-{}.partial", &key[..16]));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)
            .with_context(|| format!("cannot remove {}", tmp.display()))?;
    }
    std::fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    for (p, deb) in debs {
        step!("unpack {} {} (dpkg -x)", p.name, p.version);
        util::run(Command::new("dpkg").arg("-x").arg(deb).arg(&tmp))?;
    }
    std::fs::write(tmp.join(".vmstack-unpacked"), key.as_bytes())?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    std::fs::rename(&tmp, &dir)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), dir.display()))?;
    // Drop roots of older package sets of the same group (only
    // `<group>-<16 hex>`: `kernel-arm64-...` is not an old `kernel` root).
    if let Ok(entries) = std::fs::read_dir(&roots) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if is_root_of(&name, group) && e.path() != dir {
                step!("removing old unpacked root {}", e.path().display());
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    Ok(dir)
}

/// Unpacks the locked QEMU packages (root `root_name`) and points
/// `<out>/testhost-qemu` at the root (replacing an older link); checks that
/// the binary starts. Returns the emulator package (`qemu-system-x86` or
/// `qemu-system-arm`).
fn link_testhost_qemu(
    cache: &Path,
    out: &Path,
    inputs: &Inputs,
    arch: Arch,
    root_name: &str,
) -> Result<LockedPackage> {
    let name = lock::qemu_packages(arch.debian())[0];
    let main = inputs
        .lock
        .group(lock::GROUP_QEMU)
        .into_iter()
        .find(|p| p.name == name)
        .cloned()
        .ok_or_else(|| anyhow!("the {} lock has no {name} package", arch.name()))?;
    let root = unpack(cache, root_name, &inputs.group_debs(lock::GROUP_QEMU))?;
    let bin = root.join("usr/bin").join(arch.qemu());
    let version = Command::new(&bin).arg("--version").output();
    match version {
        Ok(o) if o.status.success() => {
            let text = String::from_utf8_lossy(&o.stdout);
            step!(
                "test host QEMU: {}",
                text.lines().next().unwrap_or_default()
            );
        }
        Ok(o) => bail!(
            "{} --version failed ({}): {} (its shared libraries come from the system's \
             {}: run `cargo xtask test`, which installs it)",
            bin.display(),
            o.status,
            String::from_utf8_lossy(&o.stderr).trim(),
            arch.qemu_package(),
        ),
        Err(e) => bail!("cannot run {}: {e}", bin.display()),
    }
    let link = out.join(vmstack_tests::testhost::TESTHOST_QEMU_DIR);
    if std::fs::read_link(&link).ok().as_deref() != Some(root.as_path()) {
        let tmp = out.join(format!(
            "{}.tmp",
            vmstack_tests::testhost::TESTHOST_QEMU_DIR
        ));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&root, &tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        std::fs::rename(&tmp, &link)
            .with_context(|| format!("cannot rename {} to {}", tmp.display(), link.display()))?;
        step!("linked {} -> {}", link.display(), root.display());
    }
    Ok(main)
}

/// Whether `name` is an unpacked root (`<group>-<16 hex digits>`) of `group`.
fn is_root_of(name: &str, group: &str) -> bool {
    name.strip_prefix(group)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|key| key.len() == 16 && key.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Hash of a prebuilts directory: relative paths, executable bits and contents.
fn hash_tree(h: &mut Sha256, dir: &Path) -> Result<()> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("cannot read {}", d.display()))? {
            let e = e?;
            if e.file_type()?.is_dir() {
                stack.push(e.path());
            } else {
                files.push(e.path());
            }
        }
    }
    files.sort();
    for f in files {
        h.update(
            f.strip_prefix(dir)
                .unwrap_or(&f)
                .to_string_lossy()
                .as_bytes(),
        );
        h.update([0]);
        h.update(std::fs::read(&f).with_context(|| format!("cannot read {}", f.display()))?);
        h.update([0]);
    }
    Ok(())
}

/// Whether `out` exists and was built from `key`.
fn up_to_date(out: &Path, key: &str) -> bool {
    out.is_file() && std::fs::read_to_string(stamp_path(out)).ok().as_deref() == Some(key)
}

fn stamp_path(out: &Path) -> PathBuf {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    out.with_file_name(format!(".{name}.inputs"))
}

fn write_stamp(out: &Path, key: &str) -> Result<()> {
    util::write_atomic(&stamp_path(out), key.as_bytes())
}

/// Builds the initramfs `out` unless its stamp says `key` (the hash of its
/// inputs): the busybox layout of `busybox_root`, the init and scenario
/// scripts of `src`, then what `add` puts in.
fn build_initrd(
    out: &Path,
    key: &str,
    busybox_root: &Path,
    src: &Path,
    add: impl FnOnce(&mut Archive) -> Result<()>,
) -> Result<()> {
    if up_to_date(out, key) {
        step!("up to date: {}", out.display());
        return Ok(());
    }
    step!("build {}", out.display());
    let mut a = Archive::new();
    base_layout(&mut a, busybox_root)?;
    add_scripts(&mut a, src)?;
    add(&mut a)?;
    let size = a.write_gz(out)?;
    step!("  {} entries, {}", a.len(), util::human(size));
    write_stamp(out, key)
}

/// Directories, busybox and `/dev/console` common to both initramfs images.
fn base_layout(a: &mut Archive, busybox_root: &Path) -> Result<()> {
    for d in [
        "bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "run", "etc", "root",
    ] {
        a.dir(d, 0o755)?;
    }
    a.dir("tmp", 0o1777)?;
    let busybox = busybox_root.join("bin/busybox");
    a.file_from("bin/busybox", 0o755, &busybox)?;
    a.symlink("bin/sh", "busybox")?;
    // The kernel opens /dev/console for init before anything is mounted.
    a.char_dev("dev/console", 0o600, 5, 1)?;
    a.char_dev("dev/null", 0o666, 1, 3)?;
    Ok(())
}

/// The marker helpers both images' scripts source as `/lib/vmstack.sh`.
const SCRIPT_LIB: &str = "lib/vmstack.sh";

/// Adds `/init` and `scenarios/*.sh` from `src` (`prebuilts/guest` or
/// `prebuilts/testhost`) and `/lib/vmstack.sh` from `prebuilts/lib`.
fn add_scripts(a: &mut Archive, src: &Path) -> Result<()> {
    a.file_from("init", 0o755, &src.join("init"))?;
    a.file_from(SCRIPT_LIB, 0o644, &paths::prebuilts().join(SCRIPT_LIB))?;
    let dir = src.join("scenarios");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "sh"))
        .collect();
    names.sort();
    for p in names {
        let name = p
            .file_name()
            .ok_or_else(|| anyhow!("bad scenario path {}", p.display()))?
            .to_string_lossy()
            .into_owned();
        a.file_from(&format!("scenarios/{name}"), 0o755, &p)?;
    }
    Ok(())
}

/// Adds the modules named in `list` (+ dependencies), decompressed, and the
/// out-of-tree modules `built` (after the Debian modules they depend on),
/// with `modules.dep` and the load order in `etc/vmstack/modules.load`.
fn add_modules(
    a: &mut Archive,
    tree: &ModuleTree,
    release: &str,
    list: &[String],
    built: &[Module],
) -> Result<usize> {
    if list.is_empty() && built.is_empty() {
        return Ok(0);
    }
    let mut names = list.to_vec();
    names.extend(built.iter().flat_map(|m| m.depends.iter().cloned()));
    let mut mods = tree.resolve(&names)?;
    mods.extend(built.iter().cloned());
    let names: Vec<&str> = mods.iter().map(|m| m.name.as_str()).collect();
    step!("  modules (load order): {}", names.join(" "));
    let mut load = String::new();
    for m in &mods {
        a.file(
            &format!("lib/modules/{release}/{}", m.rel_path),
            0o644,
            m.data.clone(),
        )?;
        load.push_str(&m.rel_path);
        load.push('\n');
    }
    a.file(
        &format!("lib/modules/{release}/modules.dep"),
        0o644,
        modules::modules_dep(&mods).into_bytes(),
    )?;
    a.file("etc/vmstack/modules.load", 0o644, load.into_bytes())?;
    Ok(mods.len())
}

fn modules_dir(root: &Path, release: &str) -> Result<PathBuf> {
    for base in ["lib/modules", "usr/lib/modules"] {
        let d = root.join(base).join(release);
        if d.is_dir() {
            return Ok(d);
        }
    }
    bail!("no lib/modules/{release} in {}", root.display())
}

/// Copies `src` to `dst` unless `dst` already has the same content hash.
fn copy_if_changed(src: &Path, dst: &Path, sha: &str) -> Result<()> {
    if up_to_date(dst, sha) {
        step!("up to date: {}", dst.display());
        return Ok(());
    }
    step!("copy {} -> {}", src.display(), dst.display());
    std::fs::copy(src, dst)
        .with_context(|| format!("cannot copy {} to {}", src.display(), dst.display()))?;
    write_stamp(dst, sha)
}

/// Picks the VMM binary for the test host; `None` (with a warning) if there is none.
fn vmm_binary(explicit: Option<&Path>, arch: Arch) -> Result<Option<(PathBuf, String)>> {
    let target = arch.musl_target();
    let path = match explicit {
        Some(p) if !p.is_file() => bail!("VMM binary {} does not exist", p.display()),
        Some(p) => p.to_path_buf(),
        None => {
            let p = paths::static_binary(arch, "vmm");
            if !p.is_file() {
                warning!(
                    "no VMM binary at {}: the test host will have no /bin/vmm and every scenario \
                     will fail (build it with `cargo build --release --target {target} -p vmm`, or run \
                     `cargo xtask test`)",
                    p.display(),
                );
                return Ok(None);
            }
            p
        }
    };
    let data = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    if modules::elf_is_dynamic(&data).with_context(|| format!("{}", path.display()))? {
        bail!(
            "{} is dynamically linked; the test host has no libc (build with --target {target})",
            path.display(),
        );
    }
    Ok(Some((path, util::sha256_bytes(&data))))
}

/// The module list of an image source dir for `arch`:
/// `modules.<arch>.list` if it exists (the arm64 test host needs no KVM
/// modules), else the shared `modules.list`.
fn modules_list(src: &Path, arch: Arch) -> Result<Vec<String>> {
    let own = src.join(format!("modules.{}.list", arch.name()));
    if own.is_file() {
        modules::read_list(&own)
    } else {
        modules::read_list(&src.join("modules.list"))
    }
}

/// Checks that `kernel` is what the VMM of `arch` boots: an arm64 `Image`
/// (magic `ARM\x64` at offset 0x38, as in Debian's arm64 `vmlinuz`, which is
/// not compressed) or anything for x86_64 (a bzImage, checked by the VMM).
fn check_kernel_format(kernel: &Path, arch: Arch) -> Result<()> {
    if arch != Arch::Aarch64 {
        return Ok(());
    }
    let mut head = [0u8; 64];
    use std::io::Read;
    std::fs::File::open(kernel)
        .and_then(|mut f| f.read_exact(&mut head))
        .with_context(|| format!("cannot read {}", kernel.display()))?;
    if &head[0x38..0x3c] != b"ARM\x64" {
        bail!(
            "{} is not an uncompressed arm64 Image (no ARM\\x64 magic at 0x38)",
            kernel.display()
        );
    }
    Ok(())
}

/// Builds the static guest tools and returns the binary and its sha256.
fn guest_tools(arch: Arch) -> Result<(PathBuf, String)> {
    let path = setup::build_guest_tools(arch)?;
    // `vhal-test`, `tee-test` and `trusty-test` come from the same
    // package; all hashes are the input.
    let mut sha = String::new();
    for p in [
        path.clone(),
        path.with_file_name("vhal-test"),
        path.with_file_name("tee-test"),
        path.with_file_name("trusty-test"),
    ] {
        sha.push_str(&static_binary_sha(&p)?);
    }
    Ok((path, sha))
}

/// Builds the Android guest's binder programs (`vmstack-android`) and
/// `rsb_hub`: the directory of the former, the path of the latter and
/// every hash.
fn android_binaries(arch: Arch) -> Result<(PathBuf, PathBuf, String)> {
    let dir = crate::android::build_android(arch)?;
    let hub = crate::android::build_rsb_hub(arch)?;
    let mut sha = String::new();
    for b in crate::android::ANDROID_BINS {
        sha.push_str(&static_binary_sha(&dir.join(b))?);
    }
    sha.push_str(&static_binary_sha(&hub)?);
    Ok((dir, hub, sha))
}

/// Builds `sysmgr` and `mcu-sim` (one package): the path of `sysmgr` and
/// both hashes.
fn sysmgr_binaries(arch: Arch) -> Result<(PathBuf, String)> {
    let path = setup::build_sysmgr(arch)?;
    let mut sha = String::new();
    for p in [path.clone(), path.with_file_name("mcu-sim")] {
        sha.push_str(&static_binary_sha(&p)?);
    }
    Ok((path, sha))
}

/// The sha256 of a static binary; refuses a dynamically linked one.
fn static_binary_sha(path: &Path) -> Result<String> {
    let data = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if modules::elf_is_dynamic(&data).with_context(|| format!("{}", path.display()))? {
        bail!(
            "{} is dynamically linked; the images have no libc",
            path.display()
        );
    }
    Ok(util::sha256_bytes(&data))
}

/// Builds all images of `arch`; `vmm` overrides the VMM binary put into the
/// test host.
pub fn build(arch: Arch, vmm: Option<&Path>) -> Result<Images> {
    let started = std::time::Instant::now();
    let cache = paths::cache_dir();
    let prebuilts = paths::prebuilts();
    let out = paths::images_dir(arch);
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    step!(
        "images: cache {}, output {}",
        cache.display(),
        out.display()
    );

    let inputs: Inputs = lock::ensure_inputs(&paths::lock_file(arch), &cache, arch.debian())?;
    let lock = &inputs.lock;
    let release = lock.kernel.release.clone();
    let image_pkg = lock.role(lock::ROLE_IMAGE)?.clone();
    let busybox_pkg = lock.role(lock::ROLE_BUSYBOX)?.clone();
    step!(
        "kernel {release}: {} {} sha256 {}",
        image_pkg.name,
        image_pkg.version,
        image_pkg.sha256
    );

    // Unpacked roots: `kernel-<hash>` for amd64 (as before), `kernel-arm64-<hash>`.
    let root_name = |group: &str| match arch {
        Arch::X86_64 => group.to_string(),
        other => format!("{group}-{}", other.debian()),
    };
    let kroot = unpack(
        &cache,
        &root_name(lock::GROUP_KERNEL),
        &inputs.group_debs(lock::GROUP_KERNEL),
    )?;
    let broot = unpack(
        &cache,
        &root_name(lock::GROUP_BUSYBOX),
        &inputs.group_debs(lock::GROUP_BUSYBOX),
    )?;
    let vmlinuz = kroot.join(format!("boot/vmlinuz-{release}"));
    if !vmlinuz.is_file() {
        bail!("{} missing from {}", vmlinuz.display(), image_pkg.name);
    }
    check_kernel_format(&vmlinuz, arch)?;
    let moddir = modules_dir(&kroot, &release)?;
    let tree = ModuleTree::open(&moddir)?;
    // Out-of-tree guest modules (virtio_tee) and the arm64 libteec client.
    let guest_kmods = kmod::build(arch, &kroot, &release, &inputs)?;
    let tee_client = tee_client::build(arch, &inputs)?;

    // Kernels: the guest and the test host run the same Debian kernel.
    let guest_kernel = out.join(GUEST_KERNEL);
    let testhost_kernel = out.join(vmstack_tests::testhost::TESTHOST_KERNEL);
    let kernel_key = format!("{BUILDER_VERSION} {}", image_pkg.sha256);
    copy_if_changed(&vmlinuz, &guest_kernel, &kernel_key)?;
    copy_if_changed(&vmlinuz, &testhost_kernel, &kernel_key)?;
    // x86_64: the same kernel as an ELF vmlinux (for `vmm run`, the
    // test host's `boot-elf` scenario as /guest/vmlinux and `cargo xtask
    // bench boot --kernel elf`).
    let guest_vmlinux = (arch == Arch::X86_64).then(|| out.join(GUEST_VMLINUX));
    if let Some(guest_vmlinux) = &guest_vmlinux {
        if up_to_date(guest_vmlinux, &kernel_key) {
            step!("up to date: {}", guest_vmlinux.display());
        } else {
            step!("extract {}", guest_vmlinux.display());
            crate::vmlinux::extract_file(&vmlinuz, guest_vmlinux)?;
            write_stamp(guest_vmlinux, &kernel_key)?;
        }
    }

    // Guest initramfs.
    let guest_src = prebuilts.join("guest");
    let guest_modules = modules_list(&guest_src, arch)?;
    // Test programs for both images (/bin/vsock-test); their hash is an input.
    let (tools, tools_sha) = guest_tools(arch)?;
    // The binder side (/bin/sysmgr-binderd, /bin/vmbinder,
    // /bin/vhal-binder-test, /bin/rsb_hub) and the guest's adb daemon
    // (/bin/adbd); their hashes are an input.
    let (android_dir, rsb_hub, android_sha) = android_binaries(arch)?;
    let adbd = setup::build_adbd(arch)?;
    let adbd_sha = static_binary_sha(&adbd)?;
    let guest_initrd = out.join(GUEST_INITRD);
    let mut h = Sha256::new();
    h.update(format!(
        "{BUILDER_VERSION} {} {} tools={tools_sha} android={android_sha} adbd={adbd_sha}",
        busybox_pkg.sha256, image_pkg.sha256
    ));
    hash_tree(&mut h, &guest_src)?;
    hash_tree(&mut h, &prebuilts.join("lib"))?;
    for m in &guest_kmods {
        h.update(&m.data);
    }
    if let Some(c) = &tee_client {
        h.update(&c.sha256);
    }
    let guest_key = util::hex(&h.finalize());
    build_initrd(&guest_initrd, &guest_key, &broot, &guest_src, |a| {
        add_modules(a, &tree, &release, &guest_modules, &guest_kmods)?;
        a.file_from("bin/vsock-test", 0o755, &tools)?;
        a.file_from("bin/vhal-test", 0o755, &tools.with_file_name("vhal-test"))?;
        a.file_from("bin/tee-test", 0o755, &tools.with_file_name("tee-test"))?;
        a.file_from(
            "bin/trusty-test",
            0o755,
            &tools.with_file_name("trusty-test"),
        )?;
        if let Some(c) = &tee_client {
            c.add_to(a)?;
        }
        for b in crate::android::ANDROID_BINS {
            a.file_from(&format!("bin/{b}"), 0o755, &android_dir.join(b))?;
        }
        a.file_from("bin/rsb_hub", 0o755, &rsb_hub)?;
        a.file_from("bin/adbd", 0o755, &adbd)?;
        Ok(())
    })?;
    let guest_initrd_sha = util::sha256_file(&guest_initrd)?;

    // Test host initramfs.
    let vmm = vmm_binary(vmm, arch)?;
    // The system manager (/bin/sysmgr) and the MCU simulator
    // (/bin/mcu-sim); their hashes are an input.
    let (sysmgr, sysmgr_sha) = sysmgr_binaries(arch)?;
    // The Trusty service (/bin/trustyd); its hash is an input.
    let trustyd = setup::build_trustyd(arch)?;
    let trustyd_sha = static_binary_sha(&trustyd)?;
    // The stock adb client (x86_64 test host only: it is this machine's).
    let adb_client = match arch {
        Arch::X86_64 => crate::adb_client::locate()?,
        Arch::Aarch64 => None,
    };
    let adb_sha = adb_client.as_ref().map_or("none", |c| c.sha256.as_str());
    let th_src = prebuilts.join("testhost");
    let th_modules = modules_list(&th_src, arch)?;
    let th_initrd = out.join(vmstack_tests::testhost::TESTHOST_INITRD);
    let mut h = Sha256::new();
    h.update(format!(
        "{BUILDER_VERSION} {} {} {guest_initrd_sha} tools={tools_sha} sysmgr={sysmgr_sha} trustyd={trustyd_sha} adb={adb_sha} vmm={} vmlinux={}",
        busybox_pkg.sha256,
        image_pkg.sha256,
        vmm.as_ref().map(|(_, s)| s.as_str()).unwrap_or("none"),
        guest_vmlinux.is_some()
    ));
    hash_tree(&mut h, &th_src)?;
    hash_tree(&mut h, &prebuilts.join("lib"))?;
    let th_key = util::hex(&h.finalize());
    let mut build_info = format!(
        "kernel {release} ({} {})\n",
        image_pkg.name, image_pkg.version
    );
    build_info.push_str(&format!("busybox {}\n", busybox_pkg.version));
    match &vmm {
        Some((p, sha)) => build_info.push_str(&format!("vmm {} sha256 {sha}\n", p.display())),
        None => build_info.push_str("vmm MISSING\n"),
    }
    build_initrd(&th_initrd, &th_key, &broot, &th_src, |a| {
        add_modules(a, &tree, &release, &th_modules, &[])?;
        a.file_from("guest/vmlinuz", 0o644, &guest_kernel)?;
        if let Some(vmlinux) = &guest_vmlinux {
            a.file_from("guest/vmlinux", 0o644, vmlinux)?;
        }
        a.file_from("guest/initramfs.cpio.gz", 0o644, &guest_initrd)?;
        a.file_from("bin/vsock-test", 0o755, &tools)?;
        a.file_from("bin/vhal-test", 0o755, &tools.with_file_name("vhal-test"))?;
        a.file_from("bin/sysmgr", 0o755, &sysmgr)?;
        a.file_from("bin/mcu-sim", 0o755, &sysmgr.with_file_name("mcu-sim"))?;
        a.file_from("bin/trustyd", 0o755, &trustyd)?;
        // The binder CLI over RPC for the host side (vmbinder --rpc unix:...).
        a.file_from("bin/vmbinder", 0o755, &android_dir.join("vmbinder"))?;
        if let Some((p, _)) = &vmm {
            a.file_from("bin/vmm", 0o755, p)?;
        }
        if let Some(adb) = &adb_client {
            adb.add_to(a)?;
        }
        a.file(
            "etc/vmstack/build-info",
            0o644,
            build_info.clone().into_bytes(),
        )?;
        Ok(())
    })?;

    // The test host's QEMU: its unpacked packages, linked into the images
    // directory where the test runner looks for it.
    let testhost_qemu =
        link_testhost_qemu(&cache, &out, &inputs, arch, &root_name(lock::GROUP_QEMU))?;

    // Manifest.
    let file_info = |p: &Path| -> Result<serde_json::Value> {
        let size = std::fs::metadata(p)
            .with_context(|| format!("cannot stat {}", p.display()))?
            .len();
        Ok(serde_json::json!({ "sha256": util::sha256_file(p)?, "size": size }))
    };
    let manifest = serde_json::json!({
        "arch": arch.name(),
        "kernel": {
            "release": release,
            "package": image_pkg.name,
            "version": image_pkg.version,
            "sha256": image_pkg.sha256,
            "meta_package": lock.kernel.meta_package,
            "meta_version": lock.kernel.meta_version,
            "suite": lock.kernel.suite,
        },
        "packages": lock.packages.iter().map(|p| serde_json::json!({
            "name": p.name, "version": p.version, "sha256": p.sha256,
            "filename": p.filename, "role": p.role,
        })).collect::<Vec<_>>(),
        "vmm": vmm.as_ref().map(|(p, sha)| serde_json::json!({
            "path": p.display().to_string(), "sha256": sha,
        })),
        "testhost_qemu": {
            "package": testhost_qemu.name, "version": testhost_qemu.version,
            "sha256": testhost_qemu.sha256,
        },
        "guest_tools": { "path": tools.display().to_string(), "sha256": tools_sha },
        "guest_modules": guest_modules,
        "guest_kmods": guest_kmods.iter().map(|m| serde_json::json!({
            "name": m.name, "sha256": util::sha256_bytes(&m.data), "depends": m.depends,
        })).collect::<Vec<_>>(),
        "testhost_modules": th_modules,
        "outputs": {
            GUEST_KERNEL: file_info(&guest_kernel)?,
            GUEST_INITRD: file_info(&guest_initrd)?,
            vmstack_tests::testhost::TESTHOST_KERNEL: file_info(&testhost_kernel)?,
            vmstack_tests::testhost::TESTHOST_INITRD: file_info(&th_initrd)?,
        },
    });
    let manifest_path = out.join(vmstack_tests::testhost::MANIFEST);
    let text = serde_json::to_string_pretty(&manifest)? + "\n";
    if std::fs::read_to_string(&manifest_path).ok().as_deref() != Some(text.as_str()) {
        util::write_atomic(&manifest_path, text.as_bytes())?;
    }
    step!(
        "images ready in {} ({:.1} s); manifest {}",
        out.display(),
        started.elapsed().as_secs_f64(),
        manifest_path.display()
    );
    Ok(Images { dir: out })
}

#[cfg(test)]
mod tests {
    use super::is_root_of;

    #[test]
    fn old_roots_are_matched_per_group_only() {
        assert!(is_root_of("kernel-10566b1dcd734956", "kernel"));
        assert!(!is_root_of("kernel-arm64-10566b1dcd734956", "kernel"));
        assert!(is_root_of("kernel-arm64-10566b1dcd734956", "kernel-arm64"));
        assert!(!is_root_of("kernel-10566b1dcd734956", "kernel-arm64"));
        assert!(!is_root_of("kernel-10566b1dcd734956.partial", "kernel"));
        assert!(!is_root_of("busybox-10566b1dcd734956", "kernel"));
    }
}
