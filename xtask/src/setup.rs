//! Machine set-up: Debian packages, the musl Rust target, the static VMM build.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::paths::{self, Arch};
use crate::util::{self, step};

/// Debian packages the nested tests need on the build machine.
pub const HOST_PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "busybox-static",
    "cpio",
    "musl-tools",
    "xz-utils",
    // AOSP's AIDL compiler (Android 10): the conformance and API-dump
    // cross-checks of `aidl/` (crate vmstack-aidl).
    "aidl",
];

/// Extra Debian packages the aarch64 images and tests need: the test host's
/// emulator, the cross linker of the static aarch64 VMM and the user-mode
/// emulator that runs its unit tests (`.cargo/config.toml` names
/// `aarch64-linux-gnu-gcc` as linker and `qemu-aarch64-static` as runner).
pub const AARCH64_HOST_PACKAGES: &[&str] = &[
    "qemu-system-arm",
    "gcc-aarch64-linux-gnu",
    "qemu-user-static",
];

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stdout).trim() == "install ok installed"
        })
        .unwrap_or(false)
}

/// Command prefix for root actions: none as root, else `sudo` if available.
fn privileged(program: &str) -> Result<Command> {
    if util::is_root() {
        Ok(Command::new(program))
    } else if util::on_path("sudo") {
        let mut c = Command::new("sudo");
        c.arg(program);
        Ok(c)
    } else {
        bail!("need root (or sudo) to run {program}")
    }
}

/// Installs the missing [`HOST_PACKAGES`] with `apt-get` (after `apt-get update`).
pub fn ensure_host_packages() -> Result<()> {
    ensure_packages(HOST_PACKAGES)
}

/// Installs the missing `packages` with `apt-get` (after `apt-get update`).
pub fn ensure_packages(packages: &[&str]) -> Result<()> {
    if !util::on_path("dpkg-query") {
        bail!(
            "this is not a Debian-like machine (no dpkg-query); install {} by hand",
            packages.join(" ")
        );
    }
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        step!("host packages present: {}", packages.join(" "));
        return Ok(());
    }
    step!("installing missing host packages: {}", missing.join(" "));
    let mut update = privileged("apt-get")?;
    update.args(["-q", "update"]);
    step!("run: {}", util::show(&update));
    util::run(&mut update)?;
    let mut install = privileged("apt-get")?;
    install
        .args(["-q", "-y", "--no-install-recommends", "install"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive");
    step!("run: {}", util::show(&install));
    util::run(&mut install)?;
    Ok(())
}

/// Adds the musl target with rustup if it is missing.
pub fn ensure_musl_target() -> Result<()> {
    ensure_rust_target(paths::MUSL_TARGET)
}

/// Adds Rust target `target` with rustup if it is missing.
pub fn ensure_rust_target(target: &str) -> Result<()> {
    if util::on_path("rustup") {
        let list = util::output(Command::new("rustup").args(["target", "list", "--installed"]))?;
        if list.lines().any(|l| l.trim() == target) {
            step!("rust target {target} present");
            return Ok(());
        }
        step!("run: rustup target add {target}");
        return util::run(Command::new("rustup").args(["target", "add", target]));
    }
    let sysroot = util::output(Command::new("rustc").args(["--print", "sysroot"]))?;
    let dir = PathBuf::from(sysroot.trim())
        .join("lib/rustlib")
        .join(target);
    if dir.is_dir() {
        step!("rust target {target} present (no rustup)");
        Ok(())
    } else {
        bail!("rust target {target} missing and rustup not found: install the target")
    }
}

/// `cargo` as invoked by `cargo xtask`, in the workspace root.
pub fn cargo() -> Command {
    let program = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut c = Command::new(program);
    c.current_dir(paths::workspace_root());
    c
}

/// Builds the static VMM (`cargo build --release --target x86_64-unknown-linux-musl -p vmm`).
pub fn build_vmm() -> Result<PathBuf> {
    build_vmm_for(Arch::X86_64)
}

/// Builds the static VMM of `arch` (`cargo build --release --target
/// <arch>-unknown-linux-musl -p vmm`; aarch64 is cross-linked by
/// `aarch64-linux-gnu-gcc`, see `.cargo/config.toml`).
pub fn build_vmm_for(arch: Arch) -> Result<PathBuf> {
    let target = arch.musl_target();
    let mut c = cargo();
    c.args(["build", "--release", "--target", target, "-p", "vmm"]);
    step!("run: cargo build --release --target {target} -p vmm");
    let started = std::time::Instant::now();
    util::run(&mut c).context("building the VMM failed")?;
    let bin = paths::vmm_binary(arch);
    if !bin.is_file() {
        bail!("cargo built vmm but {} is missing", bin.display());
    }
    step!(
        "built {} ({:.1} s)",
        bin.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(bin)
}

/// Builds the static guest test tools (`cargo build --release --target
/// x86_64-unknown-linux-musl -p guest-tools`); they go into both initramfs
/// images as `/bin/vsock-test`.
pub fn build_guest_tools(arch: Arch) -> Result<PathBuf> {
    let target = arch.musl_target();
    let mut c = cargo();
    c.args([
        "build",
        "--release",
        "--target",
        target,
        "-p",
        "guest-tools",
    ]);
    step!("run: cargo build --release --target {target} -p guest-tools");
    util::run(&mut c).context("building the guest tools failed")?;
    let bin = paths::guest_tools_binary(arch);
    if !bin.is_file() {
        bail!("cargo built guest-tools but {} is missing", bin.display());
    }
    Ok(bin)
}

/// Builds the static system manager and the MCU simulator (`cargo build
/// --release --target <arch>-unknown-linux-musl -p sysmgr --bin sysmgr
/// --bin mcu-sim`); they go into the test host as `/bin/sysmgr` and
/// `/bin/mcu-sim`. Returns the path of `sysmgr`; `mcu-sim` is beside it.
pub fn build_sysmgr(arch: Arch) -> Result<PathBuf> {
    let target = arch.musl_target();
    let mut c = cargo();
    c.args([
        "build",
        "--release",
        "--target",
        target,
        "-p",
        "sysmgr",
        "--bin",
        "sysmgr",
        "--bin",
        "mcu-sim",
    ]);
    step!("run: cargo build --release --target {target} -p sysmgr --bin sysmgr --bin mcu-sim");
    util::run(&mut c).context("building sysmgr failed")?;
    let bin = paths::target_dir().join(target).join("release/sysmgr");
    for b in [bin.clone(), bin.with_file_name("mcu-sim")] {
        if !b.is_file() {
            bail!("cargo built sysmgr but {} is missing", b.display());
        }
    }
    Ok(bin)
}

/// Everything `test` and `demo` need before booting anything.
pub fn prepare_machine() -> Result<()> {
    ensure_host_packages()?;
    ensure_musl_target()
}

/// [`prepare_machine`] plus what `arch`'s images and test host need (for
/// aarch64: `qemu-system-arm`, the cross linker and the Rust target).
pub fn prepare_machine_for(arch: Arch) -> Result<()> {
    prepare_machine()?;
    if arch == Arch::Aarch64 {
        ensure_packages(AARCH64_HOST_PACKAGES)?;
        ensure_rust_target(arch.musl_target())?;
    }
    Ok(())
}
