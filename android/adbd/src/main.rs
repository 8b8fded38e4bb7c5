//! `adbd`: a small adb daemon for vmstack's Linux test guests
//! (docs/adb.md). It listens on `AF_VSOCK` port 5555, the port a
//! Cuttlefish guest's own adbd uses, accepts connections from the host
//! (cid 2) only, and serves `shell:`/`shell,v2:`/`exec:`, `sync:` and
//! `reboot:` to the stock adb client, which reaches it through
//! `vmm adb-proxy` on the host.
//!
//! ```text
//! adbd [--port 5555] [--max-connections 4] [--shell /bin/sh] [--product vmstack]
//! ```
//!
//! Authentication: none. A connecting client is online at once, as with
//! a debuggable Android build whose `ro.adb.secure` is 0; who may connect
//! is decided on the host, where the proxy listens on 127.0.0.1 only.

mod conn;
mod files;
mod shell;
#[cfg(test)]
mod test_client;

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use adbd::service::Service;
use anyhow::{bail, Context};
use clap::Parser;
use tracing::{info, warn};

use crate::conn::StreamIo;

/// The host's vsock context id; the only peer served.
const HOST_CID: u32 = 2;

/// Command line.
#[derive(Parser)]
#[command(name = "adbd", about = "A small adb daemon on AF_VSOCK (docs/adb.md)")]
struct Args {
    /// The vsock port to listen on (Cuttlefish's adb port).
    #[arg(long, default_value_t = 5555)]
    port: u32,
    /// Most clients served at once; more connections are closed at once.
    #[arg(long, default_value_t = 4)]
    max_connections: usize,
    /// The shell that runs commands (`SHELL -c CMD`, or interactive).
    #[arg(long, default_value = "/bin/sh")]
    shell: String,
    /// The product name in the banner (`adb devices -l`).
    #[arg(long, default_value = "vmstack")]
    product: String,
    /// Development: listen on this loopback TCP address (e.g.
    /// 127.0.0.1:5555) instead of vsock, to try the daemon with `adb
    /// connect` on any Linux machine.
    #[arg(long, value_name = "ADDR")]
    tcp: Option<std::net::SocketAddr>,
}

/// The receive buffer of each connection (the credit the guest kernel
/// grants the host): two of the adb client's largest `WRTE`s (1 MiB
/// payloads), so the next one can arrive while adbd writes the previous
/// one, instead of the kernel's default 256 KiB (a quarter of one).
const VSOCK_BUFFER_SIZE: u64 = 2 * (adbd::packet::MAX_PAYLOAD as u64 + 64 * 1024);

/// `setsockopt` level and options of `AF_VSOCK` (linux/vm_sockets.h).
const SO_VM_SOCKETS_BUFFER_SIZE: libc::c_int = 0;
const SO_VM_SOCKETS_BUFFER_MAX_SIZE: libc::c_int = 2;

/// Sets a vsock socket's buffer size (inherited by the connections a
/// listener accepts). Best effort: a kernel that refuses keeps its
/// default, which costs speed only.
fn set_vsock_buffer_size(fd: &OwnedFd, size: u64) {
    for option in [SO_VM_SOCKETS_BUFFER_MAX_SIZE, SO_VM_SOCKETS_BUFFER_SIZE] {
        // SAFETY: setsockopt reads a u64 of the given size on a socket
        // this process owns.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::AF_VSOCK,
                option,
                std::ptr::from_ref(&size).cast(),
                std::mem::size_of::<u64>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            warn!(
                "vsock buffer size {size}: {}; keeping the default",
                io::Error::last_os_error()
            );
            return;
        }
    }
}

/// A listening `AF_VSOCK` stream socket.
fn listen(port: u32) -> io::Result<OwnedFd> {
    // SAFETY: socket(2); the result is checked.
    let fd = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd this function owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    set_vsock_buffer_size(&fd, VSOCK_BUFFER_SIZE);
    // SAFETY: sockaddr_vm is plain old data; all-zero is valid.
    let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    addr.svm_cid = libc::VMADDR_CID_ANY;
    addr.svm_port = port;
    // SAFETY: bind(2) with an initialised sockaddr_vm of the given size.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            std::ptr::addr_of!(addr).cast(),
            std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t,
        )
    };
    // SAFETY: listen(2) on the bound socket we own.
    if rc < 0 || unsafe { libc::listen(fd.as_raw_fd(), 16) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// Where connections come from.
enum Listener {
    /// `AF_VSOCK` (the guest's daemon).
    Vsock(OwnedFd),
    /// Loopback TCP (`--tcp`, development).
    Tcp(std::net::TcpListener),
}

/// Accepts one connection: the socket and the peer's cid.
fn accept(listener: &OwnedFd) -> io::Result<(OwnedFd, u32)> {
    // SAFETY: sockaddr_vm is plain old data; all-zero is valid.
    let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t;
    // SAFETY: accept4(2) writes at most `len` bytes of address into `addr`.
    let fd = unsafe {
        libc::accept4(
            listener.as_raw_fd(),
            std::ptr::addr_of_mut!(addr).cast(),
            &mut len,
            libc::SOCK_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd from accept4.
    Ok((unsafe { OwnedFd::from_raw_fd(fd) }, addr.svm_cid))
}

/// Starts the thread of a service.
fn start_service(service: Service, io: StreamIo, shell: Arc<str>, may_reboot: bool) {
    let spawned = std::thread::Builder::new()
        .name("adbd-service".into())
        .spawn(move || match service {
            Service::Shell(request) => shell::run(request, io, &shell),
            Service::Sync => files::serve(io),
            Service::Reboot(target) if may_reboot => reboot(&io, &target),
            Service::Reboot(_) => {
                warn!("reboot refused: --tcp runs on a development machine, not a guest");
                let _ = io.send(b"reboot: refused (adbd --tcp is not a guest's daemon)\n");
            }
        });
    // Without a thread the StreamIo was dropped: the stream is closed.
    if let Err(e) = spawned {
        warn!("cannot start a service thread: {e}");
    }
}

/// `reboot:`: the guest's own reboot(2) after a sync. The stream stays
/// open (the client waits for the device to go away, as with AOSP's
/// adbd); on a VMM with a power arbiter this is a reboot request the
/// arbiter decides.
fn reboot(io: &StreamIo, target: &str) {
    info!("reboot requested (target {target:?})");
    // SAFETY: sync(2) has no arguments and cannot fail.
    unsafe { libc::sync() };
    // Let the OKAY of the open reach the client before the vCPUs stop.
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: reboot(2) either restarts the machine or returns an error.
    let rc = unsafe { libc::reboot(libc::RB_AUTOBOOT) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        warn!("reboot failed: {e}");
        let _ = io.send(format!("reboot failed: {e}\n").as_bytes());
    }
}

/// Decrements the connection count when a connection and its services
/// are gone (held by the connection, `conn::serve`).
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn main() -> anyhow::Result<()> {
    // Plain lines: the guest's console carries them (and scenarios turn
    // them into markers).
    vmstack_log::Setup::new("adbd").plain_lines().init();
    let args = Args::parse();
    if args.max_connections == 0 {
        bail!("--max-connections must be at least 1");
    }
    let listener = match args.tcp {
        Some(addr) if !addr.ip().is_loopback() => {
            bail!("--tcp {addr}: only loopback addresses (127.0.0.1:PORT) are allowed")
        }
        Some(addr) => Listener::Tcp(
            std::net::TcpListener::bind(addr)
                .with_context(|| format!("cannot listen on {addr} (is the port free?)"))?,
        ),
        None => Listener::Vsock(listen(args.port).with_context(|| {
            format!(
                "cannot listen on vsock port {} (is the vsock driver loaded, is the port free?)",
                args.port
            )
        })?),
    };
    let banner = Arc::<str>::from(adbd::banner(&args.product));
    let shell = Arc::<str>::from(args.shell.as_str());
    let active = Arc::new(AtomicUsize::new(0));
    match &args.tcp {
        Some(addr) => info!(
            "listening on tcp {addr} (features {})",
            adbd::FEATURES.join(",")
        ),
        None => info!(
            "listening on vsock port {} (features {})",
            args.port,
            adbd::FEATURES.join(",")
        ),
    }
    loop {
        let accepted = match &listener {
            Listener::Vsock(fd) => accept(fd),
            Listener::Tcp(l) => l.accept().map(|(s, _)| {
                // Small packets (OKAY) must not wait for Nagle.
                let _ = s.set_nodelay(true);
                (OwnedFd::from(s), HOST_CID)
            }),
        };
        let (socket, cid) = match accepted {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                warn!("accept failed: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if cid != HOST_CID {
            warn!(
                "refusing a connection from cid {cid} (only the host, cid {HOST_CID}, is served)"
            );
            continue;
        }
        if active.fetch_add(1, Ordering::SeqCst) >= args.max_connections {
            active.fetch_sub(1, Ordering::SeqCst);
            warn!(
                "refusing a connection: {} already served",
                args.max_connections
            );
            continue;
        }
        let slot = Slot(Arc::clone(&active));
        let (banner, shell) = (Arc::clone(&banner), Arc::clone(&shell));
        let may_reboot = args.tcp.is_none();
        let spawned = std::thread::Builder::new()
            .name("adbd-conn".into())
            .spawn(move || {
                info!("connection from the host");
                // The slot is freed when the connection and every service
                // still running on it are gone.
                conn::serve(socket, &banner, Box::new(slot), &move |service, io| {
                    start_service(service, io, Arc::clone(&shell), may_reboot)
                });
            });
        if let Err(e) = spawned {
            warn!("cannot start a connection thread: {e}");
        }
    }
}
