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
    // Decompresses Debian's zstd bzImage payload into guest-vmlinux (vmlinux.rs).
    "zstd",
    // AOSP's AIDL compiler (Android 10): the conformance and API-dump
    // cross-checks of `aidl/` (crate vmstack-aidl).
    "aidl",
    // javac and java: the JNI library's JVM test (system-manager/sysmgr/tests/jni.rs).
    "openjdk-17-jdk-headless",
    // bpfmt (google/blueprint's parser): the Soong check cross-checks every Android.bp.
    "blueprint-tools",
    // The stock adb client, copied into the x86_64 test host (adb_client.rs).
    "adb",
];

/// Extra Debian packages the aarch64 images and tests need: bookworm's
/// `qemu-system-arm` (the shared libraries of the locked QEMU 10 the test
/// host runs on, and the fallback emulator), the cross linker of the
/// static aarch64 VMM and the user-mode emulator that runs its unit tests
/// (`.cargo/config.toml` names `aarch64-linux-gnu-gcc` as linker and
/// `qemu-aarch64-static` as runner).
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

/// `cargo build --release --target <arch>-unknown-linux-musl -p <package>`,
/// for the caller to add to and run.
pub fn cargo_build_static(arch: Arch, package: &str) -> Command {
    let mut c = cargo();
    c.args([
        "build",
        "--release",
        "--target",
        arch.musl_target(),
        "-p",
        package,
    ]);
    c
}

/// Builds `bin` of `package` as a static release binary for `arch`
/// (`cargo build --release --target <arch>-unknown-linux-musl -p <package>
/// --bin <bin>`; aarch64 is cross-linked by `aarch64-linux-gnu-gcc`, see
/// `.cargo/config.toml`) and returns its path.
pub fn build_static(arch: Arch, package: &str, bin: &str) -> Result<PathBuf> {
    build_static_with(arch, package, bin, &[])
}

/// [`build_static`] with cargo `features` of `package` enabled.
pub fn build_static_with(
    arch: Arch,
    package: &str,
    bin: &str,
    features: &[&str],
) -> Result<PathBuf> {
    let target = arch.musl_target();
    let mut c = cargo_build_static(arch, package);
    c.args(["--bin", bin]);
    if !features.is_empty() {
        c.args(["--features", &features.join(",")]);
    }
    step!("run: {}", util::show(&c));
    let started = std::time::Instant::now();
    util::run(&mut c).with_context(|| format!("building {bin} ({package}, {target}) failed"))?;
    let path = paths::static_binary(arch, bin);
    if !path.is_file() {
        bail!("cargo built {bin} but {} is missing", path.display());
    }
    step!(
        "built {} ({:.1} s)",
        path.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(path)
}

/// The static VMM of `arch` (`/bin/vmm` of the test host), with the
/// sandbox probe (`test-hooks`) the nested sandbox tests use; a production
/// build (`cargo build --release -p vmm`) has none (docs/security.md).
pub fn build_vmm(arch: Arch) -> Result<PathBuf> {
    build_static_with(arch, "vmm", "vmm", &["test-hooks"])
}

/// The static guest test tools of `arch` (`/bin/vsock-test`,
/// `/bin/vhal-test`, `/bin/trusty-test` and `/bin/tee-test` of both
/// images); returns the `vsock-test` path (the others are beside it).
pub fn build_guest_tools(arch: Arch) -> Result<PathBuf> {
    for bin in ["vhal-test", "trusty-test", "tee-test"] {
        build_static(arch, "guest-tools", bin)?;
    }
    build_static(arch, "guest-tools", "vsock-test")
}

/// The static system manager and the MCU simulator of `arch` (the test
/// host's `/bin/sysmgr` and `/bin/mcu-sim`); returns the `sysmgr` path
/// (`mcu-sim` is beside it).
pub fn build_sysmgr(arch: Arch) -> Result<PathBuf> {
    build_static(arch, "sysmgr", "mcu-sim")?;
    build_static(arch, "sysmgr", "sysmgr")
}

/// The static adb daemon of `arch` (the guest's `/bin/adbd`).
pub fn build_adbd(arch: Arch) -> Result<PathBuf> {
    build_static(arch, "vmstack-adbd", "adbd")
}

/// The static Trusty service of `arch` (the test host's `/bin/trustyd`).
pub fn build_trustyd(arch: Arch) -> Result<PathBuf> {
    build_static(arch, "trusty", "trustyd")
}

/// Everything the images and test host of `arch` need before booting
/// anything: the host packages (for aarch64 also `qemu-system-arm`, the
/// cross linker and the user-mode emulator) and the musl Rust target.
pub fn prepare_machine_for(arch: Arch) -> Result<()> {
    ensure_host_packages()?;
    ensure_rust_target(Arch::X86_64.musl_target())?;
    if arch == Arch::Aarch64 {
        ensure_packages(AARCH64_HOST_PACKAGES)?;
        ensure_rust_target(arch.musl_target())?;
    }
    Ok(())
}
