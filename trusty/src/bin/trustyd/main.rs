//! `trustyd`: the host's Trusty service (`docs/trusty.md`).
//!
//! ```text
//! trustyd run --state-dir DIR --guest NAME=[VSOCK_SOCKET][,tee=TEE_SOCKET][,user=UID:GID] [--guest ...] [--vsock-port 1]
//! trustyd uuids
//! ```

mod daemon;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

#[derive(Subcommand)]
enum Cmd {
    /// Run the service.
    Run {
        /// Persistent state: device secret, storage, gatekeeper records.
        #[arg(long)]
        state_dir: PathBuf,
        /// A guest: NAME=VSOCK_SOCKET (its VMM's --vsock socket= path;
        /// trustyd listens on VSOCK_SOCKET_<port>), optionally
        /// ,tee=TEE_SOCKET (its VMM's --tee socket) and ,user=UID:GID (its
        /// VMM's own --sandbox-user: the guest's sockets are shared with
        /// GID, mode 0660, and admit UID and root only). Repeatable.
        #[arg(long = "guest", required = true, value_parser = daemon::parse_guest)]
        guests: Vec<daemon::GuestSpec>,
        /// The vsock port of the libtrusty listener (ro.hardware.trusty_ipc_dev=VSOCK:2:<port>).
        #[arg(long, default_value_t = 1)]
        vsock_port: u32,
        /// Turn the sandbox off (debugging): no seccomp, no privilege drop,
        /// no landlock (socket permissions and peer checks stay).
        #[arg(long)]
        disable_sandbox: bool,
        /// The uid[:gid] (or user name) trustyd started as root switches
        /// to; default 65534:65534, the VMMs' default. The state directory
        /// and the sockets are given to it.
        #[arg(long, value_parser = sandbox::Identity::parse)]
        sandbox_user: Option<sandbox::Identity>,
        /// A uid (besides the one that started trustyd, the sandbox user and
        /// root) allowed to connect to its sockets; repeatable.
        #[arg(long = "allow-peer-uid")]
        allow_peer_uid: Vec<u32>,
    },
    /// Print the TA table: port name and GP UUID.
    Uuids,
}

fn main() -> ExitCode {
    let about = "The host's Trusty service: trusted apps for every guest";
    vmstack_log::cli::run("trustyd", about, |cmd| match cmd {
        Cmd::Run {
            state_dir,
            guests,
            vsock_port,
            disable_sandbox,
            sandbox_user,
            allow_peer_uid,
        } => daemon::run(
            &state_dir,
            &guests,
            vsock_port,
            &daemon::Confinement {
                enabled: !disable_sandbox,
                user: sandbox_user,
                allow_uids: allow_peer_uid,
            },
        ),
        Cmd::Uuids => {
            for ta in trusty::ports::TaKind::ALL {
                println!("{}  {}", ta.uuid(), ta.port_name());
            }
            Ok(())
        }
    })
}
