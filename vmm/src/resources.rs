//! Everything the VMM takes from the host, opened once before the sandbox
//! is entered and kept for the life of the process: `/dev/kvm`, the
//! kernel and initrd, disk images (locked), taps, the serial and console
//! output files, the control, vsock and console listening sockets, and the
//! `userfaultfd` that fills a kernel behind the guest.
//!
//! Every boot builds its VM from duplicates of these descriptors, so an
//! in-process restart (a reboot decided by the arbiter, a virtually-off VM
//! resumed) needs no path, no privilege and no `open` after start-up: the
//! sandbox can forbid them all (`docs/security.md`).

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use devices::virtio::block::DiskImage;
use devices::virtio::console::ConsoleBackend;
use devices::virtio::net::{Tap, TapError};
use devices::virtio::vsock::{bind_listener, TcpForward, TcpForwards};
use kvm_ioctls::Kvm;
use sandbox::tcp_peer::TcpPeerCheck;

use crate::arch::file_map::BootFiles;
use crate::arch::kernel_fill::UserFaults;
use crate::builder::BuildError;
use crate::config::{ConsoleConfig, SerialOutput, TcpForwardConfig, VmConfig};
use crate::control::{self, ControlError};
use crate::vstate::kvm::open_kvm;

/// The host side of `--console`, kept across boots.
enum ConsoleHost {
    /// `type=stdout`: stdin and stdout.
    Stdio,
    /// `type=sink`.
    Sink,
    /// `type=file`: created (truncated) once; every boot appends.
    File(File),
    /// `type=unix`: the listening socket.
    Unix(PathBuf, UnixListener),
}

/// The VMM's host resources (see the module docs).
pub struct HostResources {
    kvm: Kvm,
    kernel: File,
    initrd: Option<File>,
    serial_file: Option<File>,
    disks: Vec<Arc<DiskImage>>,
    taps: Vec<Tap>,
    vsock: Option<(PathBuf, UnixListener)>,
    /// `--vsock ...,tcp=PORT:GUEST_PORT`: the bound loopback listeners
    /// and the check of who connects to them.
    vsock_tcp: Option<TcpForwards>,
    console: Option<ConsoleHost>,
    control: Option<UnixListener>,
    /// Socket files this VMM created, removed when it exits.
    sockets: Vec<PathBuf>,
    /// Fills a kernel that runs in place behind the guest, where the host
    /// allows it (`crate::arch::kernel_fill`).
    user_faults: Option<UserFaults>,
}

fn open(path: &Path) -> Result<File, BuildError> {
    File::open(path).map_err(|source| BuildError::Open {
        path: path.display().to_string(),
        source,
    })
}

fn dup(file: &File, what: &Path) -> Result<File, BuildError> {
    file.try_clone().map_err(|source| BuildError::Open {
        path: what.display().to_string(),
        source,
    })
}

impl HostResources {
    /// Opens everything `config` names. Sockets are bound (mode 0600, see
    /// `sandbox::socket`), but nothing is served yet.
    pub fn open(config: &VmConfig) -> Result<Self, OpenError> {
        let kvm = open_kvm().map_err(BuildError::from)?;
        let kernel = open(&config.kernel)?;
        // Only a kernel that runs in place is filled behind the guest: no
        // userfaultfd (a privileged descriptor) for any other.
        let user_faults = (BootFiles::from_env().fills_kernel()
            && crate::arch::kernel_fill::runs_in_place(&kernel))
        .then(UserFaults::open)
        .flatten();
        let initrd = config.initrd.as_deref().map(open).transpose()?;
        let serial_file = match &config.serial.output {
            SerialOutput::File(path) => {
                Some(
                    File::create(path).map_err(|source| BuildError::SerialOutput {
                        path: path.display().to_string(),
                        source,
                    })?,
                )
            }
            SerialOutput::Stdout | SerialOutput::Sink => None,
        };
        let devs = &config.devices;
        let disks = devs
            .disks
            .iter()
            .map(|d| {
                DiskImage::open(&d.path, d.read_only, d.id.as_deref())
                    .map(Arc::new)
                    .map_err(BuildError::from)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let taps = devs
            .nets
            .iter()
            .map(|n| Tap::open(&n.tap).map_err(BuildError::from))
            .collect::<Result<Vec<_>, _>>()?;
        let mut sockets = Vec::new();
        let control = match &config.socket {
            Some(path) => {
                let listener = control::bind(path)?;
                sockets.push(path.clone());
                Some(listener)
            }
            None => None,
        };
        let vsock = match &devs.vsock {
            Some(v) => {
                let listener = bind_listener(&v.socket).map_err(BuildError::from)?;
                sockets.push(v.socket.clone());
                Some((v.socket.clone(), listener))
            }
            None => None,
        };
        let ports = devs
            .vsock
            .iter()
            .flat_map(|v| &v.tcp)
            .map(|f| {
                Ok(TcpForward {
                    listener: bind_tcp_forward(f)?,
                    port: f.port,
                    guest_port: f.guest_port,
                })
            })
            .collect::<Result<Vec<_>, BuildError>>()?;
        let vsock_tcp = match ports.is_empty() {
            true => None,
            false => Some(TcpForwards {
                ports,
                peers: TcpPeerCheck::new().map_err(BuildError::VsockTcpPeers)?,
            }),
        };
        let console = match &devs.console {
            None => None,
            Some(ConsoleConfig::Stdout) => Some(ConsoleHost::Stdio),
            Some(ConsoleConfig::Sink) => Some(ConsoleHost::Sink),
            Some(ConsoleConfig::File(path)) => {
                Some(ConsoleHost::File(File::create(path).map_err(|source| {
                    BuildError::Console {
                        what: path.display().to_string(),
                        source,
                    }
                })?))
            }
            Some(ConsoleConfig::Unix(path)) => {
                let listener =
                    sandbox::socket::bind_private(path).map_err(|e| BuildError::Console {
                        what: path.display().to_string(),
                        source: std::io::Error::other(e.to_string()),
                    })?;
                sockets.push(path.clone());
                Some(ConsoleHost::Unix(path.clone(), listener))
            }
        };
        Ok(Self {
            kvm,
            kernel,
            initrd,
            serial_file,
            disks,
            taps,
            vsock,
            vsock_tcp,
            console,
            control,
            sockets,
            user_faults,
        })
    }

    /// The `userfaultfd` that fills a kernel behind the guest, if the host
    /// allows one (`crate::arch::kernel_fill`).
    pub fn user_faults(&self) -> Option<&UserFaults> {
        self.user_faults.as_ref()
    }

    /// `/dev/kvm`.
    pub fn kvm(&self) -> &Kvm {
        &self.kvm
    }

    /// The kernel image, rewound.
    pub fn kernel(&self, config: &VmConfig) -> Result<File, BuildError> {
        rewound(&self.kernel, &config.kernel)
    }

    /// The initrd, rewound.
    pub fn initrd(&self, config: &VmConfig) -> Result<Option<File>, BuildError> {
        match (&self.initrd, &config.initrd) {
            (Some(f), Some(path)) => rewound(f, path).map(Some),
            _ => Ok(None),
        }
    }

    /// Where serial output goes this boot (a file keeps growing across
    /// boots of one VMM process).
    pub fn serial_output(&self, config: &VmConfig) -> Result<Box<dyn Write + Send>, BuildError> {
        Ok(match (&config.serial.output, &self.serial_file) {
            (SerialOutput::File(path), Some(file)) => Box::new(file.try_clone().map_err(
                |source| BuildError::SerialOutput {
                    path: path.display().to_string(),
                    source,
                },
            )?),
            (SerialOutput::Sink, _) => Box::new(std::io::sink()),
            _ => Box::new(std::io::stdout()),
        })
    }

    /// The `index`-th disk image.
    pub fn disk(&self, index: usize) -> Option<Arc<DiskImage>> {
        self.disks.get(index).cloned()
    }

    /// A handle on the `index`-th tap (the same interface every boot).
    pub fn tap(&self, index: usize, name: &str) -> Result<Tap, BuildError> {
        let attach = |source| {
            BuildError::Tap(TapError::Attach {
                name: name.to_string(),
                source,
            })
        };
        self.taps
            .get(index)
            .ok_or_else(|| attach(std::io::Error::other("no such tap")))?
            .try_clone()
            .map_err(attach)
    }

    /// The vsock listener (path and a duplicate).
    pub fn vsock(&self) -> Result<Option<(&Path, UnixListener)>, BuildError> {
        match &self.vsock {
            None => Ok(None),
            Some((path, l)) => {
                let listener = l.try_clone().map_err(|source| {
                    BuildError::Vsock(devices::virtio::vsock::VsockError::Bind {
                        path: path.clone(),
                        source,
                    })
                })?;
                Ok(Some((path.as_path(), listener)))
            }
        }
    }

    /// Duplicates of the forwarded TCP ports' listeners and of their
    /// peer check, for a boot's vsock device; `None` without forwards.
    pub fn vsock_tcp_forwards(&self) -> Result<Option<TcpForwards>, BuildError> {
        self.vsock_tcp
            .as_ref()
            .map(TcpForwards::try_clone)
            .transpose()
            .map_err(BuildError::VsockTcpDup)
    }

    /// The console's host side for a boot; `None` if there is no console.
    /// `stdio` builds the stdin/stdout backend (it needs the terminal).
    pub fn console(
        &self,
        stdio: impl FnOnce() -> Result<ConsoleBackend, BuildError>,
    ) -> Result<Option<ConsoleBackend>, BuildError> {
        let err = |what: &Path| {
            let what = what.display().to_string();
            move |source| BuildError::Console { what, source }
        };
        Ok(match &self.console {
            None => None,
            Some(ConsoleHost::Stdio) => Some(stdio()?),
            Some(ConsoleHost::Sink) => Some(ConsoleBackend::output(Box::new(std::io::sink()))),
            Some(ConsoleHost::File(f)) => {
                let file = f.try_clone().map_err(err(Path::new("the console file")))?;
                Some(ConsoleBackend::output(Box::new(file)))
            }
            Some(ConsoleHost::Unix(path, l)) => {
                let listener = l.try_clone().map_err(err(path))?;
                Some(ConsoleBackend::unix_listener(path, listener).map_err(err(path))?)
            }
        })
    }

    /// The control listener, taken to be served.
    pub fn take_control(&mut self) -> Option<UnixListener> {
        self.control.take()
    }

    /// The listening sockets (vsock, console, control) still held here,
    /// to listen on again once the VMM runs as its sandbox user
    /// (`sandbox::Config::relisten`).
    pub fn listener_fds(&self) -> Vec<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        let console = match &self.console {
            Some(ConsoleHost::Unix(_, l)) => Some(l),
            _ => None,
        };
        [
            self.vsock.as_ref().map(|(_, l)| l),
            console,
            self.control.as_ref(),
        ]
        .into_iter()
        .flatten()
        .map(AsRawFd::as_raw_fd)
        .collect()
    }

    /// The directories holding this VMM's sockets (the sandbox lets it
    /// remove its own sockets there when it exits).
    pub fn socket_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = self
            .sockets
            .iter()
            .filter_map(|p| p.parent().map(Path::to_path_buf))
            .map(|d| {
                if d.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    d
                }
            })
            .collect();
        dirs.sort();
        dirs.dedup();
        dirs
    }

    /// Removes the socket files this VMM created (only sockets; a path
    /// that became something else stays).
    pub fn remove_sockets(&self) {
        for path in &self.sockets {
            if let Err(e) = sandbox::socket::remove_socket(path) {
                tracing::debug!("not removing {}: {e}", path.display());
            }
        }
    }
}

fn rewound(file: &File, path: &Path) -> Result<File, BuildError> {
    let mut f = dup(file, path)?;
    f.seek(SeekFrom::Start(0))
        .map_err(|source| BuildError::Open {
            path: path.display().to_string(),
            source,
        })?;
    Ok(f)
}

/// Why the host resources could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// A device, file or socket of the VM.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// The control socket.
    #[error(transparent)]
    Control(#[from] ControlError),
}

/// Binds 127.0.0.1:PORT for `--vsock ...,tcp=PORT:GUEST_PORT`, with the
/// options every accepted socket inherits: `TCP_NODELAY` (adb's small
/// packets must not wait for Nagle) and `SO_OOBINLINE` (an urgent byte
/// stays in the stream, as the guest has no out-of-band channel).
fn bind_tcp_forward(forward: &TcpForwardConfig) -> Result<TcpListener, BuildError> {
    let port = forward.port;
    let err = |source: std::io::Error| match source.kind() {
        std::io::ErrorKind::AddrInUse => BuildError::VsockTcpInUse(port),
        _ => BuildError::VsockTcp { port, source },
    };
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).map_err(err)?;
    sandbox::socket::set_int_option(&listener, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)
        .and_then(|()| {
            sandbox::socket::set_int_option(&listener, libc::SOL_SOCKET, libc::SO_OOBINLINE, 1)
        })
        .map_err(err)?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use std::net::TcpStream;

    use super::*;

    /// A port nobody listens on now (bound, then released).
    fn free_port() -> u16 {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        l.local_addr().unwrap().port()
    }

    #[test]
    fn a_forwarded_port_listens_on_loopback_and_its_sockets_skip_nagle_and_keep_urgent_bytes() {
        let port = free_port();
        let forward = TcpForwardConfig {
            port,
            guest_port: 5555,
        };
        let listener = bind_tcp_forward(&forward).unwrap();
        let addr = listener.local_addr().unwrap();
        assert_eq!(addr, (Ipv4Addr::LOCALHOST, port).into());
        let _client = TcpStream::connect(addr).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        let option = |level, name| sandbox::socket::int_option(&accepted, level, name).unwrap();
        assert_ne!(option(libc::IPPROTO_TCP, libc::TCP_NODELAY), 0);
        assert_ne!(option(libc::SOL_SOCKET, libc::SO_OOBINLINE), 0);
        // A port in use: one line that says what to do.
        let e = bind_tcp_forward(&forward).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "127.0.0.1:{port} is in use (pick another PORT in --vsock ...,tcp=PORT:GUEST_PORT)"
            )
        );
    }
}
