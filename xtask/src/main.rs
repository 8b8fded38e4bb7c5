//! `cargo xtask`: project automation.
//!
//! - `cargo xtask images`: build guest and test-host images from Debian packages.
//! - `cargo xtask test`: set up a fresh machine, build everything, run unit tests
//!   and the nested test-host integration tests.
//! - `cargo xtask demo [--direct]`: boot the demo guest in the test host (or
//!   directly on this machine's `/dev/kvm`).
//! - `cargo xtask bench boot [--runs N]`: boot time and memory overhead against
//!   QEMU `-M microvm` in the test host (see `docs/benchmarks.md`).
//!
//! See `docs/testing.md`.

mod apt;
mod bench;
mod cpio;
mod images;
mod lock;
mod modules;
mod paths;
mod run;
mod setup;
mod util;

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
    /// Build the x86_64 guest and test-host images from Debian packages
    /// (uses whatever musl VMM binary exists; does not build it).
    Images {
        /// VMM binary to put into the test host (default:
        /// target/x86_64-unknown-linux-musl/release/vmm if it exists).
        #[arg(long)]
        vmm: Option<PathBuf>,
    },
    /// Install tools if missing, build the VMM and images, run the unit tests
    /// and the nested test-host integration tests.
    Test {
        /// Skip `cargo test --workspace` (unit tests) and run only the nested tests.
        #[arg(long)]
        nested_only: bool,
    },
    /// Boot the `demo` guest scenario in the test host, streaming its console.
    Demo {
        /// Run the VMM directly on this machine's /dev/kvm instead of in the test host.
        #[arg(long)]
        direct: bool,
    },
    /// Boot the test host with arbitrary scenarios (for debugging), streaming the console.
    Testhost {
        /// Comma-separated scenario names (prebuilts/testhost/scenarios/<name>.sh).
        scenarios: String,
        /// Do not build the VMM and images first.
        #[arg(long)]
        no_build: bool,
    },
    /// Benchmarks: `boot` (our VMM vs QEMU -M microvm; see docs/benchmarks.md).
    Bench {
        /// What to benchmark: `boot`.
        what: String,
        /// Boots per VMM (at least 5); the medians are reported.
        #[arg(long, default_value_t = bench::MIN_RUNS)]
        runs: u32,
    },
}

fn main() {
    let cli = Cli::parse();
    let result: Result<()> = match cli.command {
        Cmd::Images { vmm } => images::build_x86_64(vmm.as_deref()).map(|_| ()),
        Cmd::Test { nested_only } => run::test(nested_only),
        Cmd::Demo { direct } => run::demo(direct),
        Cmd::Testhost {
            scenarios,
            no_build,
        } => run::testhost(&scenarios, no_build),
        Cmd::Bench { what, runs } => bench::bench(&what, runs),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
