//! The host side of virtio-net: a frame backend trait and its real
//! implementation, a Linux tap device (`/dev/net/tun`, `IFF_TAP |
//! IFF_NO_PI | IFF_VNET_HDR`).
//!
//! Every frame crossing a backend starts with the 12-byte virtio-net header
//! (`struct virtio_net_hdr_v1`), exactly as the guest's driver lays it out,
//! so the worker hands guest buffers to the backend unchanged.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};

use super::iovec::IoVecs;
use super::VNET_HDR_LEN;

/// Where frames go to and come from on the host.
pub trait NetBackend: AsRawFd + Send {
    /// Reads one frame (header included) into `bufs`. Returns the frame's
    /// full length, which exceeds `bufs.len()` when the frame did not fit
    /// and was cut; `WouldBlock` when no frame is queued. The fd from
    /// [`AsRawFd`] becomes readable when a frame is queued.
    fn recv(&mut self, bufs: &IoVecs) -> io::Result<usize>;
    /// Sends one frame (header included) from `bufs`.
    fn send(&mut self, bufs: &IoVecs) -> io::Result<usize>;
    /// Sets which offloads frames given to [`Self::recv`] may use
    /// (`TUN_F_*` bits; 0: fully checksummed frames of at most the MTU).
    fn set_offload(&mut self, flags: u32) -> io::Result<()>;
}

/// Errors opening a tap device.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// The interface name cannot be a Linux interface name.
    #[error("invalid tap name {0:?}: 1 to 15 bytes, no '/', ':', spaces or NUL")]
    InvalidName(String),
    /// `/dev/net/tun` could not be opened.
    #[error("cannot open /dev/net/tun ({0}): load the tun module (modprobe tun)")]
    OpenTun(io::Error),
    /// Not allowed to create or attach the interface.
    #[error("cannot create or attach tap {name}: permission denied; create it first (ip tuntap add {name} mode tap user $USER vnet_hdr) or run the VMM as root (needs CAP_NET_ADMIN)")]
    Permission {
        /// Interface name.
        name: String,
    },
    /// Another process has the interface open.
    #[error("tap {name} is busy: another process has it open")]
    Busy {
        /// Interface name.
        name: String,
    },
    /// `TUNSETIFF` failed otherwise (for example the name belongs to an
    /// interface that is not a tap).
    #[error("cannot attach tap {name} ({source}); is it a tap device?")]
    Attach {
        /// Interface name.
        name: String,
        /// The error.
        source: io::Error,
    },
    /// The kernel's tun driver lacks a feature we need.
    #[error("tap {name}: the kernel's tun driver cannot {what} ({source})")]
    Feature {
        /// Interface name.
        name: String,
        /// What was asked.
        what: &'static str,
        /// The error.
        source: io::Error,
    },
}

/// `struct ifreq` as `TUNSETIFF` reads it: the name, then the flags.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// A tap interface opened for one virtio-net device.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() < libc::IFNAMSIZ
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace())
}

impl Tap {
    /// Opens (creating it if missing and permitted) the tap interface
    /// `name` with virtio-net headers of [`VNET_HDR_LEN`] bytes and no
    /// offloads. The fd is non-blocking.
    pub fn open(name: &str) -> Result<Self, TapError> {
        if !valid_name(name) {
            return Err(TapError::InvalidName(name.to_string()));
        }
        // SAFETY: the path is a NUL-terminated string literal; the returned
        // fd is checked and owned by a File right after.
        let fd = unsafe {
            libc::open(
                c"/dev/net/tun".as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(TapError::OpenTun(io::Error::last_os_error()));
        }
        // SAFETY: fd was just opened by us and is owned by nothing else.
        let file = unsafe { File::from_raw_fd(fd) };
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: TUNSETIFF reads and writes a `struct ifreq`, which `req`
        // matches in layout and size (40 bytes); it lives across the call.
        let ret = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) };
        if ret < 0 {
            let err = io::Error::last_os_error();
            let name = name.to_string();
            return Err(match err.raw_os_error() {
                Some(libc::EPERM) | Some(libc::EACCES) => TapError::Permission { name },
                Some(libc::EBUSY) => TapError::Busy { name },
                _ => TapError::Attach { name, source: err },
            });
        }
        let tap = Self {
            file,
            name: name.to_string(),
        };
        let hdr_len = VNET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer, which
        // points at a live local.
        let ret = unsafe { libc::ioctl(tap.file.as_raw_fd(), libc::TUNSETVNETHDRSZ, &hdr_len) };
        if ret < 0 {
            return Err(TapError::Feature {
                name: tap.name.clone(),
                what: "use 12-byte virtio-net headers",
                source: io::Error::last_os_error(),
            });
        }
        let mut tap = tap;
        tap.set_offload(0).map_err(|source| TapError::Feature {
            name: name.to_string(),
            what: "turn offloads off",
            source,
        })?;
        Ok(tap)
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Another handle on the same tap queue (a `dup`ed fd). A tap the VMM
    /// created lives as long as any handle is open, so keeping one lets the
    /// interface, and the host's configuration of it, outlive a device.
    pub fn try_clone(&self) -> io::Result<Self> {
        Ok(Self {
            file: self.file.try_clone()?,
            name: self.name.clone(),
        })
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

impl NetBackend for Tap {
    fn recv(&mut self, bufs: &IoVecs) -> io::Result<usize> {
        // A tap returns the frame's full length even when it was cut.
        bufs.readv_from(self.file.as_raw_fd())
    }

    fn send(&mut self, bufs: &IoVecs) -> io::Result<usize> {
        bufs.writev_to(self.file.as_raw_fd())
    }

    fn set_offload(&mut self, flags: u32) -> io::Result<()> {
        // SAFETY: TUNSETOFFLOAD takes its argument by value, no memory is
        // accessed.
        let ret = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                libc::TUNSETOFFLOAD,
                libc::c_ulong::from(flags),
            )
        };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_before_any_syscall() {
        for bad in ["", "a/b", "a:b", "a b", "0123456789abcdef", ".", ".."] {
            assert!(
                matches!(Tap::open(bad), Err(TapError::InvalidName(_))),
                "{bad:?}"
            );
        }
        assert!(valid_name("vmtap0"));
        assert!(valid_name("0123456789abcde"));
    }

    #[test]
    fn permission_error_says_what_to_do() {
        let e = TapError::Permission {
            name: "vmtap0".into(),
        };
        let text = e.to_string();
        assert!(text.contains("ip tuntap add vmtap0 mode tap"), "{text}");
        assert!(text.contains("root"), "{text}");
        assert!(!text.contains('\n'));
    }

    /// Opens a real tap when the test runs with CAP_NET_ADMIN and
    /// /dev/net/tun; elsewhere it checks that the failure is one of the
    /// explained errors.
    #[test]
    fn open_real_tap_or_explain() {
        match Tap::open("vmstest0") {
            Ok(mut tap) => {
                assert_eq!(tap.name(), "vmstest0");
                use libc::{TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6};
                tap.set_offload(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)
                    .unwrap();
                tap.set_offload(0).unwrap();
                // A created tap lives while any handle is open.
                let ifname = std::path::Path::new("/sys/class/net/vmstest0");
                let clone = tap.try_clone().unwrap();
                drop(tap);
                assert!(ifname.exists());
                drop(clone);
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
                while ifname.exists() && std::time::Instant::now() < deadline {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                assert!(!ifname.exists(), "tap still there after the last close");
            }
            Err(TapError::OpenTun(_) | TapError::Permission { .. } | TapError::Busy { .. }) => {}
            Err(e) => panic!("unexpected tap error: {e}"),
        }
    }
}
