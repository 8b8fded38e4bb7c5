//! `vmm`: command-line entry point.
//!
//! `vmm run [-c|--cpus N] [-m|--mem MiB] [-i|--initrd PATH] [-p|--params STR]...
//! [--serial type=stdout|file|sink[,path=FILE]] [-s|--socket PATH] KERNEL`
//! follows crosvm's spelling so launchers carry over.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};
use vmm::config::{
    host_mem_mib, ConsoleConfig, DeviceConfig, DiskConfig, NetConfig, RawVmConfig, RngConfig,
    SerialConfig, TeeConfig, VsockConfig,
};
use vmm::control;
use vmm_protocol::{Decision, ExitReason, Request, VmmExitCode};

#[derive(Parser)]
#[command(
    name = "vmm",
    version,
    about = "A crosvm-style KVM virtual machine monitor"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Boot a Linux kernel in a new VM and run it until it powers off.
    ///
    /// Exit status: 0 guest poweroff or `vmm stop`; 32 guest reboot (start it
    /// again to reboot); 33 VM crash; 1 bad arguments or set-up failure.
    /// The last line on stderr is `vmm: exit reason: <reason>`.
    Run(Box<RunArgs>),
    /// Ask a running VMM to stop its VM (through its --socket).
    Stop {
        /// The VMM's control socket.
        socket: PathBuf,
    },
    /// Print a VMM's state (through its --socket).
    Status {
        /// The VMM's control socket.
        socket: PathBuf,
    },
    /// Park a VMM's vCPUs.
    Pause {
        /// The VMM's control socket.
        socket: PathBuf,
    },
    /// Resume a paused, suspended or virtually-off VM.
    Resume {
        /// The VMM's control socket.
        socket: PathBuf,
    },
    /// Press the guest's ACPI power button (a graceful shutdown request).
    PowerButton {
        /// The VMM's control socket.
        socket: PathBuf,
    },
    /// Answer a held guest power request: allow, restart, hold or refuse.
    Decide {
        /// The VMM's control socket.
        socket: PathBuf,
        /// The request id from `event power-request id=N ...`.
        id: u64,
        /// allow | restart | hold | refuse.
        decision: Decision,
    },
    /// Print the VMM's events as they happen (`--arbiter`: also become the
    /// power arbiter, so guest power requests are held for `vmm decide`).
    Events {
        /// The VMM's control socket.
        socket: PathBuf,
        /// Attach as the power arbiter.
        #[arg(long)]
        arbiter: bool,
    },
    /// Bridge TCP connections on 127.0.0.1:PORT to a guest vsock port
    /// through the VMM's hybrid vsock socket: `adb connect 127.0.0.1:PORT`
    /// reaches the guest's adbd (docs/adb.md). Runs until killed.
    AdbProxy(AdbProxyArgs),
    /// Attach stdin/stdout to a VM's `--console type=unix,path=SOCKET`
    /// (the guest's hvc0) until the VMM closes it; a newer client takes the
    /// console over.
    Console {
        /// The console socket.
        socket: PathBuf,
    },
}

#[derive(clap::Args)]
struct AdbProxyArgs {
    /// The VMM's `--vsock cid=N,socket=PATH` socket.
    #[arg(long)]
    vsock_socket: PathBuf,
    /// TCP port to listen on (127.0.0.1 only).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    port: u16,
    /// The guest's vsock port (adbd's is 5555).
    #[arg(long, default_value_t = vmm::vsock_proxy::ADB_GUEST_PORT)]
    guest_port: u32,
    /// Connections bridged at once; more are closed at once. Each holds
    /// 8 file descriptors: the soft RLIMIT_NOFILE is raised for them
    /// (within the hard limit), or the proxy does not start.
    #[arg(long, default_value_t = vmm::vsock_proxy::DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
    /// Turn the sandbox off (debugging): no seccomp filters, no
    /// privilege drop, no landlock. See docs/security.md.
    #[arg(long = "disable-sandbox")]
    disable_sandbox: bool,
    /// The uid[:gid] (or user name) a proxy started as root switches to
    /// once its listener is bound; default: the owner of the vsock
    /// socket (the VMM's sandbox user; the file's numeric uid and gid, no
    /// passwd entry needed), which it must be able to reach (it connects
    /// once at start-up and exits if it cannot).
    #[arg(long = "sandbox-user", value_parser = sandbox::Identity::parse)]
    sandbox_user: Option<sandbox::Identity>,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Number of vCPUs (1-254); the guest sees this many CPUs.
    #[arg(short = 'c', long = "cpus", default_value_t = 1)]
    cpus: u64,
    /// Guest memory in MiB.
    #[arg(short = 'm', long = "mem", default_value_t = 256)]
    mem: u64,
    /// Initial ramdisk (initramfs) to load next to the kernel.
    #[arg(short = 'i', long = "initrd")]
    initrd: Option<PathBuf>,
    /// Extra kernel command-line parameters; repeatable, appended in order
    /// after the defaults "console=ttyS0 reboot=acpi panic=-1 pci=off".
    #[arg(short = 'p', long = "params")]
    params: Vec<String>,
    /// Serial console (COM1, ttyS0): type=stdout (default; input from stdin),
    /// type=file,path=FILE, or type=sink.
    #[arg(long = "serial", default_value = "type=stdout")]
    serial: SerialConfig,
    /// Control socket to create (see `vmm stop` / `vmm status`).
    #[arg(short = 's', long = "socket")]
    socket: Option<PathBuf>,
    /// Hold the guest's own power requests (poweroff, reboot, suspend) for a
    /// power arbiter on the control socket from the first boot (see
    /// docs/vmm-control.md); without it they are held only once an arbiter
    /// attaches.
    #[arg(long = "power-arbiter", requires = "socket")]
    power_arbiter: bool,
    /// Add a virtio-rng device fed by the host's getrandom(2); the guest's
    /// virtio_rng driver serves it as /dev/hwrng. Rate-limited with
    /// --rng=bw=SIZE:REFILL_MS[:BURST],ops=COUNT:REFILL_MS[:BURST].
    #[arg(long = "rng", num_args = 0..=1, require_equals = true, default_missing_value = "")]
    rng: Option<RngConfig>,
    /// Read-only virtio-blk disk: PATH[,id=ID][,bw=..][,ops=..]; repeatable
    /// (vda, vdb, ...).
    #[arg(long = "disk", value_parser = |s: &str| DiskConfig::parse(s, true))]
    disk: Vec<DiskConfig>,
    /// Read-write virtio-blk disk: PATH[,id=ID][,bw=..][,ops=..]; repeatable.
    #[arg(long = "rwdisk", value_parser = |s: &str| DiskConfig::parse(s, false))]
    rwdisk: Vec<DiskConfig>,
    /// virtio-net on a host tap: tap=NAME[,mac=AA:BB:CC:DD:EE:FF][,bw=..][,ops=..]
    /// (rx_/tx_ prefixes limit one direction); repeatable.
    #[arg(long = "net")]
    net: Vec<NetConfig>,
    /// virtio-vsock: cid=N,socket=PATH[,tcp=PORT:GUEST_PORT]... (host
    /// side: hybrid vsock over unix sockets; each tcp= forwards
    /// 127.0.0.1:PORT to the guest's vsock port, e.g. tcp=6520:5555 for
    /// `adb connect 127.0.0.1:6520`; see docs/vsock.md).
    #[arg(long = "vsock")]
    vsock: Option<VsockConfig>,
    /// virtio-console (guest hvc0): type=stdout|sink, or type=file|unix,path=PATH.
    #[arg(long = "console")]
    console: Option<ConsoleConfig>,
    /// Turn the sandbox off (debugging): no seccomp filters, no privilege
    /// drop, no landlock (socket permissions and peer checks stay). See
    /// docs/security.md.
    #[arg(long = "disable-sandbox")]
    disable_sandbox: bool,
    /// The uid[:gid] (or user name) a VMM started as root switches to once
    /// everything is open; default 65534:65534 (nobody).
    #[arg(long = "sandbox-user", value_parser = sandbox::Identity::parse)]
    sandbox_user: Option<sandbox::Identity>,
    /// A uid (besides the one that started the VMM, the sandbox user and
    /// root) allowed to connect to the VMM's sockets; repeatable.
    #[arg(long = "allow-peer-uid")]
    allow_peer_uid: Vec<u32>,
    /// Share the VMM's sockets with group GID (mode 0660 instead of 0600):
    /// with one `--sandbox-user UID:GID` per guest, the system manager,
    /// a member of every guest's group, reaches each VMM and no VMM
    /// another's (docs/security.md). The VMM must be root or in GID.
    #[arg(long = "socket-group")]
    socket_group: Option<u32>,
    /// virtio TEE device (guest /dev/tee0 through the virtio_tee module):
    /// socket=PATH, the guest's TEE socket of trustyd (docs/virtio-tee.md).
    #[arg(long = "tee")]
    tee: Option<TeeConfig>,
    /// Kernel image: bzImage or ELF vmlinux (64-bit entry).
    kernel: PathBuf,
}

fn run(args: RunArgs, start: Instant) -> anyhow::Result<ExitReason> {
    let arbitrated = args.power_arbiter;
    let confinement = vmm::runner::SandboxOptions {
        enabled: !args.disable_sandbox,
        user: args.sandbox_user,
        allow_uids: args.allow_peer_uid,
        socket_group: args.socket_group,
    };
    let config = RawVmConfig {
        kernel: args.kernel,
        initrd: args.initrd,
        cpus: args.cpus,
        mem_mib: args.mem,
        params: args.params,
        serial: args.serial,
        socket: args.socket,
        devices: DeviceConfig {
            rng: args.rng,
            // Disks keep command-line order within each flag; read-only ones
            // come first.
            disks: args.disk.into_iter().chain(args.rwdisk).collect(),
            nets: args.net,
            vsock: args.vsock,
            console: args.console,
            tee: args.tee,
        },
    }
    .validate(host_mem_mib())?;
    Ok(vmm::runner::run_vmm(
        &config,
        start,
        arbitrated,
        &confinement,
    )?)
}

fn main() -> ExitCode {
    let start = Instant::now();
    vmstack_log::Setup::new("vmm").without_log_tracer().init();
    // Dependencies' `log` records (virtio-queue's, on guest-driven paths)
    // go through the guest-log rate limiter, not straight to `tracing`. On
    // Android `android_logger` is the `log` logger (vmstack-log) and takes
    // tracing's events too, so the bridge (which feeds `tracing`) stays out.
    #[cfg(not(target_os = "android"))]
    let _ = devices::log_limit::install_log_bridge(log::LevelFilter::Info);
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(*args, start).map(|reason| {
            eprintln!("vmm: exit reason: {reason}");
            ExitCode::from(reason.exit_code().code())
        }),
        Command::Stop { socket } => one_shot(&socket, Request::Stop),
        Command::Status { socket } => one_shot(&socket, Request::Status),
        Command::Pause { socket } => one_shot(&socket, Request::Pause),
        Command::Resume { socket } => one_shot(&socket, Request::Resume),
        Command::PowerButton { socket } => one_shot(&socket, Request::PowerButton),
        Command::Decide {
            socket,
            id,
            decision,
        } => control::decide(&socket, id, decision)
            .map(|answer| {
                println!("{answer}");
                ExitCode::SUCCESS
            })
            .map_err(Into::into),
        Command::Events { socket, arbiter } => control::watch(&socket, arbiter, |event| {
            println!("{event}");
        })
        .map(|()| ExitCode::SUCCESS)
        .map_err(Into::into),
        Command::AdbProxy(args) => adb_proxy(args),
        Command::Console { socket } => vmm::console_client::attach(&socket)
            .map(|()| ExitCode::SUCCESS)
            .map_err(|e| anyhow::anyhow!("console socket {}: {e}", socket.display())),
    };
    result.unwrap_or_else(|e| {
        eprintln!("error: {}", one_line(&e));
        ExitCode::from(VmmExitCode::SetupFailed.code())
    })
}

/// `vmm adb-proxy`: binds, enters the sandbox (unless disabled), checks
/// that it still reaches the vsock socket, then serves until killed.
fn adb_proxy(args: AdbProxyArgs) -> anyhow::Result<ExitCode> {
    let (port, guest_port) = (args.port, args.guest_port);
    let mut proxy = vmm::vsock_proxy::Proxy::bind(vmm::vsock_proxy::ProxyConfig {
        vsock_socket: args.vsock_socket,
        port,
        guest_port,
        max_connections: args.max_connections,
    })?;
    if args.disable_sandbox {
        tracing::warn!(
            "sandbox disabled (--disable-sandbox): no seccomp, no privilege drop, no landlock"
        );
    } else {
        let entered = proxy
            .confine(args.sandbox_user)
            .map_err(|e| anyhow::anyhow!("{e} (or run with --disable-sandbox)"))?;
        tracing::info!("sandbox: {entered}");
    }
    // As the uid it now runs as: a socket it may not reach stops it here.
    proxy.check_reachable()?;
    eprintln!("vmm adb-proxy: 127.0.0.1:{port} -> guest vsock port {guest_port}");
    proxy.serve()
}

/// Sends one control request and prints the answer.
fn one_shot(socket: &std::path::Path, request: Request) -> anyhow::Result<ExitCode> {
    let answer = control::send(socket, request)?;
    println!("{answer}");
    Ok(ExitCode::SUCCESS)
}

/// Joins an error and its causes into one line, skipping causes whose text
/// the message before already contains (most of ours embed their source).
fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
    }
    line
}
