//! `sysmgr`: the system-manager daemon and its CLI.
//!
//! ```text
//! sysmgr run --policy FILE --state-dir DIR --mcu-socket PATH [--log-sync before-mcu|every-decision]
//!            [--log-compact-bytes N] [--vmm-log-max-bytes N] [--vmm-log-keep K]
//! sysmgr status --state-dir DIR [--policy FILE]
//! sysmgr events --state-dir DIR [--last N] [--guest NAME] [--timers]
//! ```
//!
//! The MCU simulator (`mcu-sim`) and the benchmark (`sysmgr-bench`) are
//! separate binaries of this package, not part of this one.
//!
//! The daemon owns the pure arbiter core (`system_manager::Arbiter`) and
//! connects it to the VMM control sockets, the MCU (protobuf over a unix
//! socket) and the Android guest's VHAL power channel (over vsock). See
//! `docs/system-manager.md`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use sysmgr::{cli, confine, daemon, store, vmm_log};

#[derive(Subcommand)]
enum Cmd {
    /// Run the daemon.
    Run(RunOpts),
    /// The log keeper of one launched VMM (started by `run`, not by hand):
    /// copies stdin into a capped, rotated log file.
    #[command(hide = true)]
    VmmLog {
        /// The log file.
        #[arg(long)]
        path: PathBuf,
        /// Rotate before a file passes this size.
        #[arg(long)]
        max_bytes: u64,
        /// Rotated files kept.
        #[arg(long)]
        keep: u32,
    },
    /// Show the system and guest states.
    Status {
        /// The daemon's state directory.
        #[arg(long)]
        state_dir: PathBuf,
        /// Replay the log with this policy when no daemon runs.
        #[arg(long)]
        policy: Option<PathBuf>,
    },
    /// Show the decision log.
    Events {
        /// The daemon's state directory.
        #[arg(long)]
        state_dir: PathBuf,
        /// Only the last N inputs.
        #[arg(long)]
        last: Option<usize>,
        /// Only inputs and outputs about this guest.
        #[arg(long)]
        guest: Option<String>,
        /// Also show timer settings.
        #[arg(long)]
        timers: bool,
    },
}

// `sysmgr run`'s options (no doc comment: the variant's is the command's help).
#[derive(Args)]
struct RunOpts {
    /// The policy (TOML; see docs/system-manager.md).
    #[arg(long)]
    policy: PathBuf,
    /// Where the decision log and the daemon's socket live.
    #[arg(long)]
    state_dir: PathBuf,
    /// The MCU's unix socket (the daemon connects to it).
    #[arg(long)]
    mcu_socket: PathBuf,
    /// When the decision log reaches the disk: `before-mcu` (every
    /// record is written before its outputs and fsynced in the
    /// background; commands to the MCU wait for the fsync) or
    /// `every-decision` (every output waits for the fsync).
    #[arg(long, value_enum, default_value_t = store::LogSync::BeforeMcu)]
    log_sync: store::LogSync,
    /// Compact the decision log into its snapshot when it grows past
    /// this many bytes (bounds the state directory).
    #[arg(long, default_value_t = store::COMPACT_AT_BYTES)]
    log_compact_bytes: u64,
    /// A uid allowed at the other end of the daemon's sockets (its own
    /// socket, the VMMs' control and vsock sockets, the MCU socket)
    /// besides its own, root and 65534 (the sandbox user of a VMM
    /// started as root); repeatable.
    #[arg(long = "allow-peer-uid")]
    allow_peer_uid: Vec<u32>,
    /// Turn the sandbox off (debugging): no seccomp, no privilege drop,
    /// no landlock, VMMs started by the daemon itself.
    #[arg(long)]
    disable_sandbox: bool,
    /// The uid[:gid] (or user name) a daemon started as root switches
    /// to; default 65534:65534, the VMMs' default (its state directory
    /// is given to it).
    #[arg(long, value_parser = sandbox::Identity::parse)]
    sandbox_user: Option<sandbox::Identity>,
    /// The largest a launched VMM's log (`<guest>.vmm.log`) grows
    /// before it is rotated to `<guest>.vmm.log.1` (at least 1).
    #[arg(long, default_value_t = vmm_log::LogCap::DEFAULT.max_bytes,
          value_parser = clap::value_parser!(u64).range(1..))]
    vmm_log_max_bytes: u64,
    /// How many rotated VMM logs (`.1`, `.2`, ...) are kept per guest
    /// (0 to 100).
    #[arg(long, default_value_t = vmm_log::LogCap::DEFAULT.keep,
          value_parser = clap::value_parser!(u32).range(0..=100))]
    vmm_log_keep: u32,
}

fn main() -> ExitCode {
    let about = "System manager: the hypervisor's power arbiter";
    vmstack_log::cli::run("sysmgr", about, |cmd| match cmd {
        Cmd::Run(opts) => run(opts),
        Cmd::VmmLog {
            path,
            max_bytes,
            keep,
        } => vmm_log::run_keeper(&path, vmm_log::LogCap { max_bytes, keep })
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display())),
        Cmd::Status { state_dir, policy } => {
            cli::status(&state_dir, policy.as_deref()).map(|t| print!("{t}"))
        }
        Cmd::Events {
            state_dir,
            last,
            guest,
            timers,
        } => cli::events(&state_dir, last, guest.as_deref(), timers).map(|t| print!("{t}")),
    })
}

/// `sysmgr run`: caps the VMM logs, sets up the sandbox and runs the daemon.
fn run(o: RunOpts) -> anyhow::Result<()> {
    if let Err(e) = vmm_log::configure(vmm_log::LogCap {
        max_bytes: o.vmm_log_max_bytes,
        keep: o.vmm_log_keep,
    }) {
        tracing::warn!("cannot find this program ({e}): VMM logs will not be capped");
    }
    let confinement = confine::Confinement {
        enabled: !o.disable_sandbox,
        user: o.sandbox_user,
    };
    // The VMMs it launches run as the sandbox user (65534 when
    // started as root): they are peers too.
    let mut extra = o.allow_peer_uid;
    extra.push(sandbox::Identity::NOBODY.uid);
    let (runs_as, switches) = sandbox::Identity::sandboxed(confinement.enabled, confinement.user);
    sandbox::socket::configure_standard(runs_as, switches, &extra);
    let args = daemon::RunArgs {
        policy: o.policy,
        state_dir: o.state_dir,
        mcu_socket: o.mcu_socket,
        log_sync: o.log_sync,
        log_compact_bytes: o.log_compact_bytes,
    };
    confine::prepare(&args, &confinement)
        .and_then(|prepared| runtime().and_then(|rt| rt.block_on(daemon::run(args, prepared))))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}
