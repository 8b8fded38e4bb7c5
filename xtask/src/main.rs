//! `cargo xtask`: project automation.
//!
//! - `cargo xtask images [--arch aarch64]`: build guest and test-host images
//!   from Debian packages.
//! - `cargo xtask test [--all-arch]`: set up a fresh machine, build everything
//!   (x86_64 and aarch64), run unit tests and the nested test-host integration
//!   tests (x86_64 and the arm64 pKVM subset; `--all-arch`: all arm64 tests).
//! - `cargo xtask demo`: the system in the nested test host: `sysmgr` with
//!   an android and a cluster guest, the MCU simulator, the VHAL shutdown
//!   handshake, and a summary (see `docs/system-manager.md`).
//! - `cargo xtask bench boot [--runs N]`: boot time and memory overhead against
//!   QEMU `-M microvm` in the test host (see `docs/benchmarks.md`).
//! - `cargo xtask bench devices [--runs N]`: virtio-blk, virtio-net and vsock
//!   throughput against QEMU microvm and host-side peers in the test host.
//! - `cargo xtask bench adb [--runs N] [--arch aarch64]`: `adb push` through `vmm adb-proxy`
//!   and the guest's adbd next to a raw vsock stream (see `docs/adb.md`).
//! - `cargo xtask bench devices-profile`: where the time of those transfers
//!   goes (`perf` in the test host; a debugging aid).
//! - `cargo xtask bench tee [--runs N]`: invoke round trips through
//!   virtio-tee and libtrusty over vsock against a raw vsock echo.
//! - `cargo xtask fuzz [TARGET] [--runs N]`: build the cargo-fuzz targets in
//!   `fuzz/` with nightly and run them (see `docs/fuzzing.md`).
//!
//! See `docs/testing.md`.

mod adb_client;
mod android;
mod android_check;
mod apt;
mod apt_sources;
mod arm64_program;
mod bench;
mod bench_adb;
mod bench_arbiter;
mod bench_arm64;
mod bench_binder;
mod bench_devices;
mod bench_host;
mod bench_profile;
mod bench_tee;
#[cfg(test)]
mod blueprint;
mod cpio;
mod demo;
mod demo_log;
mod demo_report;
mod fuzz;
mod images;
mod kmod;
mod lock;
mod modules;
mod paths;
mod profile_devices;
mod run;
mod setup;
#[cfg(test)]
mod soong_check;
mod tee_client;
mod util;
mod vmlinux;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Command line of `cargo xtask`.
#[derive(Debug, Parser)]
#[command(
    name = "xtask",
    about = "vmstack project automation (see docs/testing.md)"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

/// Sub-commands.
#[derive(Debug, Subcommand)]
enum Cmd {
    /// Build the guest and test-host images from Debian packages
    /// (uses whatever musl VMM binary exists; does not build it).
    Images {
        /// VMM binary to put into the test host (default:
        /// target/<arch>-unknown-linux-musl/release/vmm if it exists).
        #[arg(long)]
        vmm: Option<PathBuf>,
        /// Architecture: x86_64 (default) or aarch64 (Debian arm64 packages,
        /// pKVM test host).
        #[arg(long, default_value = "x86_64")]
        arch: paths::Arch,
    },
    /// Install tools if missing, build the VMM and images, run the unit tests
    /// and the nested test-host integration tests.
    Test {
        /// Skip `cargo test --workspace` (unit tests) and run only the nested tests.
        #[arg(long)]
        nested_only: bool,
        /// Also run the slow `all_arch_*` nested tests (the device tests
        /// repeated in the arm64 pKVM test host).
        #[arg(long)]
        all_arch: bool,
    },
    /// The system in the nested test host: sysmgr with an android and a
    /// cluster guest (each its own VMM), the MCU simulator turning the
    /// ignition off and on, and a summary; fails if the system did not
    /// behave as described.
    Demo {
        /// Removed (the demo needs the test host); kept to say so.
        #[arg(long, hide = true)]
        direct: bool,
    },
    /// Boot the test host with arbitrary scenarios (for debugging), streaming the console.
    Testhost {
        /// Comma-separated scenario names (prebuilts/testhost/scenarios/<name>.sh).
        scenarios: String,
        /// Do not build the VMM and images first.
        #[arg(long)]
        no_build: bool,
        /// Test host architecture: x86_64 (default) or aarch64 (pKVM).
        #[arg(long, default_value = "x86_64")]
        arch: paths::Arch,
        /// Seconds each scenario may run (default: the runner's 120 s).
        #[arg(long)]
        scenario_timeout: Option<u64>,
    },
    /// Benchmarks: `boot` (our VMM vs QEMU -M microvm), `devices` (virtio
    /// throughput vs QEMU microvm and host peers), `arbiter`, `tee` (TEE
    /// round trips vs a raw vsock echo); see
    /// docs/benchmarks.md. `devices-profile`: a perf profile of our VMM's
    /// blk and vsock transfers in the test host (debugging).
    Bench {
        /// What to benchmark: `boot`, `devices`, `arbiter`, `binder`, `tee`, `adb` or `devices-profile`.
        what: String,
        /// `boot`: boots per VMM (at least 5, the default); `devices`:
        /// rounds (default 3; the medians are reported); `tee`: rounds
        /// (default 5; percentiles over all of them).
        #[arg(long)]
        runs: Option<u32>,
        /// Test host architecture: x86_64 (default) or aarch64 (`boot`: our
        /// VMM against QEMU in the arm64 pKVM test host, see docs/arm64.md;
        /// `adb`: the same benchmark in the two-CPU arm64 test host).
        #[arg(long, default_value = "x86_64")]
        arch: paths::Arch,
        /// `boot` (x86_64): which kernel our VMM boots: `bzimage`, `elf`
        /// (the same kernel as a vmlinux), `both` (the default), `elf-ab`
        /// (the ELF as by default and with its boot files mapped, to
        /// compare), `elf-fill-ab` (the ELF as by default, filled behind the
        /// guest, and copied before the first entry) or `bzimage-ab` (the
        /// bzImage as by default and with every boot file copied).
        #[arg(long, default_value = "both")]
        kernel: bench::KernelChoice,
        /// `adb`: the guest's vCPUs (default 1: the x86_64 test host has
        /// one CPU, and a second vCPU on it makes single rounds swing 2x).
        #[arg(long)]
        guest_cpus: Option<u32>,
    },
    /// `cargo check` of the VMM, devices, guest daemons, sysmgr and the JNI
    /// library for aarch64-linux-android and x86_64-linux-android (adds
    /// the rustup targets if missing; no NDK needed, nothing is linked).
    AndroidCheck,
    /// Fuzz the device parsers, the virtio-mmio transport, the Trusty service
    /// and the control protocol (cargo-fuzz, nightly; see docs/fuzzing.md).
    Fuzz {
        /// One target (block, vsock, net, rng, console, mmio, trusty_framing,
        /// trusty_storage, trusty_gatekeeper, trusty_hwkey, trusty_tee,
        /// control); default all.
        target: Option<String>,
        /// Executions per target (the acceptance run uses 1000000).
        #[arg(long, default_value_t = fuzz::SMOKE_RUNS)]
        runs: u64,
        /// Time guard per target in seconds (default: runs / 1000, at least 120).
        #[arg(long)]
        max_time: Option<u64>,
    },
}

fn main() {
    let cli = Cli::parse();
    let result: Result<()> = match cli.command {
        Cmd::Images { vmm, arch } => images::build(arch, vmm.as_deref()).map(|_| ()),
        Cmd::Test {
            nested_only,
            all_arch,
        } => run::test(nested_only, all_arch),
        Cmd::Demo { direct } => demo::demo(direct),
        Cmd::AndroidCheck => android_check::android_check(),
        Cmd::Testhost {
            scenarios,
            no_build,
            arch,
            scenario_timeout,
        } => run::testhost(
            &scenarios,
            no_build,
            arch,
            scenario_timeout.map(std::time::Duration::from_secs),
        ),
        Cmd::Bench {
            what,
            runs,
            arch,
            kernel,
            guest_cpus,
        } => match (arch, what.as_str()) {
            (_, other) if other != "adb" && guest_cpus.is_some() => Err(anyhow::anyhow!(
                "--guest-cpus is an option of `bench adb` only, not of `bench {other}`"
            )),
            (paths::Arch::Aarch64, "boot") => bench_arm64::boot(runs.unwrap_or(bench::MIN_RUNS)),
            (arch, "adb") => bench_adb::adb(
                arch,
                runs.unwrap_or(bench_adb::DEFAULT_ROUNDS),
                guest_cpus.unwrap_or(bench_adb::DEFAULT_GUEST_CPUS),
            ),
            (paths::Arch::Aarch64, other) => Err(anyhow::anyhow!(
                "bench {other} has no aarch64 variant (aarch64: boot, adb)"
            )),
            (paths::Arch::X86_64, _) => bench::bench(&what, runs, kernel),
        },
        Cmd::Fuzz {
            target,
            runs,
            max_time,
        } => fuzz::fuzz(target.as_deref(), runs, max_time),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
