//! The kernel TEE subsystem's user-space ABI (`<linux/tee.h>`): the
//! ioctls `libteec` sits on, an open `/dev/teeN` with sessions and
//! invocations, and shared memory allocated by the subsystem or registered
//! in place.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

// <linux/tee.h>.
const TEE_IOC_MAGIC: u32 = 0xa4;
const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;
pub(crate) const PARAM_NONE: u64 = 0;
pub(crate) const PARAM_VALUE_INPUT: u64 = 1;
pub(crate) const PARAM_VALUE_OUTPUT: u64 = 2;
pub(crate) const PARAM_MEMREF_INPUT: u64 = 5;
pub(crate) const PARAM_MEMREF_OUTPUT: u64 = 6;
pub(crate) const TEE_IOCTL_LOGIN_PUBLIC: u32 = 0;

const fn ioc(dir: u32, nr: u32, size: usize) -> libc::c_ulong {
    ((dir << 30) | ((size as u32) << 16) | (TEE_IOC_MAGIC << 8) | nr) as libc::c_ulong
}

#[repr(C)]
#[derive(Default)]
pub(crate) struct VersionData {
    pub(crate) impl_id: u32,
    pub(crate) impl_caps: u32,
    pub(crate) gen_caps: u32,
}

#[repr(C)]
#[derive(Default)]
pub(crate) struct ShmAllocData {
    pub(crate) size: u64,
    pub(crate) flags: u32,
    pub(crate) id: i32,
}

#[repr(C)]
#[derive(Default)]
pub(crate) struct ShmRegisterData {
    pub(crate) addr: u64,
    pub(crate) length: u64,
    pub(crate) flags: u32,
    pub(crate) id: i32,
}

#[repr(C)]
pub(crate) struct BufData {
    pub(crate) buf_ptr: u64,
    pub(crate) buf_len: u64,
}

#[repr(C)]
#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Param {
    pub(crate) attr: u64,
    pub(crate) a: u64,
    pub(crate) b: u64,
    pub(crate) c: u64,
}

#[repr(C)]
#[derive(Default)]
pub(crate) struct OpenSessionArg {
    pub(crate) uuid: [u8; 16],
    pub(crate) clnt_uuid: [u8; 16],
    pub(crate) clnt_login: u32,
    pub(crate) cancel_id: u32,
    pub(crate) session: u32,
    pub(crate) ret: u32,
    pub(crate) ret_origin: u32,
    pub(crate) num_params: u32,
    pub(crate) params: [Param; 4],
}

#[repr(C)]
#[derive(Default)]
pub(crate) struct InvokeArg {
    pub(crate) func: u32,
    pub(crate) session: u32,
    pub(crate) cancel_id: u32,
    pub(crate) ret: u32,
    pub(crate) ret_origin: u32,
    pub(crate) num_params: u32,
    pub(crate) params: [Param; 4],
}

#[repr(C)]
pub(crate) struct CancelArg {
    pub(crate) cancel_id: u32,
    pub(crate) session: u32,
}

#[repr(C)]
pub(crate) struct CloseSessionArg {
    pub(crate) session: u32,
}

pub(crate) const TEE_IOC_VERSION: libc::c_ulong =
    ioc(IOC_READ, 0, std::mem::size_of::<VersionData>());
pub(crate) const TEE_IOC_SHM_ALLOC: libc::c_ulong =
    ioc(IOC_READ | IOC_WRITE, 1, std::mem::size_of::<ShmAllocData>());
pub(crate) const TEE_IOC_OPEN_SESSION: libc::c_ulong =
    ioc(IOC_READ, 2, std::mem::size_of::<BufData>());
pub(crate) const TEE_IOC_INVOKE: libc::c_ulong = ioc(IOC_READ, 3, std::mem::size_of::<BufData>());
pub(crate) const TEE_IOC_CANCEL: libc::c_ulong = ioc(IOC_READ, 4, std::mem::size_of::<CancelArg>());
pub(crate) const TEE_IOC_CLOSE_SESSION: libc::c_ulong =
    ioc(IOC_READ, 5, std::mem::size_of::<CloseSessionArg>());
pub(crate) const TEE_IOC_SHM_REGISTER: libc::c_ulong = ioc(
    IOC_READ | IOC_WRITE,
    9,
    std::mem::size_of::<ShmRegisterData>(),
);

pub(crate) type Result<T> = std::result::Result<T, String>;

/// `ioctl(fd, req, arg)`; the error names `what`.
pub(crate) fn ioctl<T>(
    fd: RawFd,
    req: libc::c_ulong,
    arg: &mut T,
    what: &str,
) -> Result<libc::c_int> {
    // SAFETY: every request above takes a pointer to exactly the struct
    // type its size was computed from, which `arg` is, borrowed mutably for
    // the call; the kernel writes at most that many bytes.
    let rc = unsafe { libc::ioctl(fd, req as _, arg as *mut T) };
    if rc < 0 {
        Err(format!("{what}: {}", std::io::Error::last_os_error()))
    } else {
        Ok(rc)
    }
}

/// An open `/dev/teeN`.
pub(crate) struct Tee {
    fd: OwnedFd,
}

impl Tee {
    pub(crate) fn open() -> Result<Self> {
        let path = std::env::var("TEE_DEV").unwrap_or_else(|_| "/dev/tee0".into());
        let c = CString::new(path.clone()).map_err(|_| format!("bad device path {path:?}"))?;
        // SAFETY: `c` is a NUL-terminated path that lives across the call.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(format!(
                "cannot open {path}: {} (is virtio_tee loaded and the VM started with --tee?)",
                std::io::Error::last_os_error()
            ));
        }
        // SAFETY: `fd` was just opened and is owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { fd })
    }

    pub(crate) fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub(crate) fn version(&self) -> Result<VersionData> {
        let mut v = VersionData::default();
        ioctl(self.raw(), TEE_IOC_VERSION, &mut v, "TEE_IOC_VERSION")?;
        Ok(v)
    }

    /// Opens a session (public login) with `params`; returns the session
    /// or the TEE's error.
    pub(crate) fn open_session(&self, uuid: [u8; 16], params: [Param; 4]) -> Result<u32> {
        let mut arg = OpenSessionArg {
            uuid,
            clnt_login: TEE_IOCTL_LOGIN_PUBLIC,
            num_params: 4,
            params,
            ..Default::default()
        };
        let mut buf = BufData {
            buf_ptr: &mut arg as *mut OpenSessionArg as u64,
            buf_len: std::mem::size_of::<OpenSessionArg>() as u64,
        };
        ioctl(
            self.raw(),
            TEE_IOC_OPEN_SESSION,
            &mut buf,
            "TEE_IOC_OPEN_SESSION",
        )?;
        if arg.ret != 0 {
            return Err(format!(
                "open session: ret {:#x} origin {}",
                arg.ret, arg.ret_origin
            ));
        }
        Ok(arg.session)
    }

    /// Invokes `func`; returns `(ret, ret_origin, params as returned)`.
    pub(crate) fn invoke(
        &self,
        session: u32,
        func: u32,
        cancel_id: u32,
        params: [Param; 4],
    ) -> Result<(u32, u32, [Param; 4])> {
        let mut arg = InvokeArg {
            func,
            session,
            cancel_id,
            num_params: 4,
            params,
            ..Default::default()
        };
        let mut buf = BufData {
            buf_ptr: &mut arg as *mut InvokeArg as u64,
            buf_len: std::mem::size_of::<InvokeArg>() as u64,
        };
        ioctl(self.raw(), TEE_IOC_INVOKE, &mut buf, "TEE_IOC_INVOKE")?;
        Ok((arg.ret, arg.ret_origin, arg.params))
    }

    pub(crate) fn cancel(&self, session: u32, cancel_id: u32) -> Result<()> {
        let mut arg = CancelArg { cancel_id, session };
        ioctl(self.raw(), TEE_IOC_CANCEL, &mut arg, "TEE_IOC_CANCEL").map(|_| ())
    }

    pub(crate) fn close_session(&self, session: u32) -> Result<()> {
        let mut arg = CloseSessionArg { session };
        ioctl(
            self.raw(),
            TEE_IOC_CLOSE_SESSION,
            &mut arg,
            "TEE_IOC_CLOSE_SESSION",
        )
        .map(|_| ())
    }
}

/// A shared-memory object: allocated by the TEE subsystem and mapped
/// (`SHM_ALLOC`), or this program's own memory registered in place
/// (`SHM_REGISTER`). Either way guest memory; the fd keeps it alive.
pub(crate) struct Shm {
    pub(crate) id: i32,
    _fd: OwnedFd,
    ptr: *mut u8,
    len: usize,
    /// Own memory (registered) or the mapping (allocated).
    own: Option<Vec<u8>>,
}

impl Shm {
    pub(crate) fn alloc(tee: &Tee, len: usize) -> Result<Self> {
        let mut d = ShmAllocData {
            size: len as u64,
            ..Default::default()
        };
        let fd = ioctl(tee.raw(), TEE_IOC_SHM_ALLOC, &mut d, "TEE_IOC_SHM_ALLOC")?;
        // SAFETY: the ioctl returned a new fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: maps `len` bytes of the shared-memory fd; the result is
        // checked before use and unmapped in Drop.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(format!(
                "mmap of shared memory: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(Self {
            id: d.id,
            _fd: fd,
            ptr: ptr.cast(),
            len,
            own: None,
        })
    }

    pub(crate) fn register(tee: &Tee, len: usize) -> Result<Self> {
        let mut own = vec![0u8; len];
        let mut d = ShmRegisterData {
            addr: own.as_mut_ptr() as u64,
            length: len as u64,
            ..Default::default()
        };
        let fd = ioctl(
            tee.raw(),
            TEE_IOC_SHM_REGISTER,
            &mut d,
            "TEE_IOC_SHM_REGISTER",
        )?;
        // SAFETY: the ioctl returned a new fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let ptr = own.as_mut_ptr();
        Ok(Self {
            id: d.id,
            _fd: fd,
            ptr,
            len,
            own: Some(own),
        })
    }

    pub(crate) fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` points at `len` bytes this object owns (the mapping
        // or `own`, whose buffer never moves), borrowed through `&mut self`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    pub(crate) fn memref(&self, attr: u64, size: usize) -> Param {
        Param {
            attr,
            a: 0,
            b: size as u64,
            c: self.id as u64,
        }
    }
}

impl Drop for Shm {
    fn drop(&mut self) {
        if self.own.is_none() {
            // SAFETY: unmaps exactly the mapping made in `alloc`.
            unsafe { libc::munmap(self.ptr.cast(), self.len) };
        }
    }
}

// SAFETY: a Shm is plain memory plus an fd; it is used by one thread at a
// time (moved, never shared).
unsafe impl Send for Shm {}

pub(crate) fn parse_uuid(s: &str) -> Result<[u8; 16]> {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    let bytes = parse_hex(&hex)?;
    bytes
        .try_into()
        .map_err(|_| format!("bad UUID {s:?}: want 32 hex digits"))
}

pub(crate) fn parse_hex(s: &str) -> Result<Vec<u8>> {
    if s.len() % 2 != 0 {
        return Err(format!("odd number of hex digits in {s:?}"));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|_| format!("bad hex {s:?}")))
        .collect()
}

pub(crate) fn value(attr: u64, a: u64, b: u64, c: u64) -> Param {
    Param { attr, a, b, c }
}

pub(crate) fn none() -> Param {
    value(PARAM_NONE, 0, 0, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_linux() {
        // Values from <linux/tee.h> as the kernel computes them.
        let ioctls = [
            ("TEE_IOC_VERSION", TEE_IOC_VERSION, 0x800c_a400),
            ("TEE_IOC_SHM_ALLOC", TEE_IOC_SHM_ALLOC, 0xc010_a401),
            ("TEE_IOC_OPEN_SESSION", TEE_IOC_OPEN_SESSION, 0x8010_a402),
            ("TEE_IOC_INVOKE", TEE_IOC_INVOKE, 0x8010_a403),
            ("TEE_IOC_CANCEL", TEE_IOC_CANCEL, 0x8008_a404),
            ("TEE_IOC_CLOSE_SESSION", TEE_IOC_CLOSE_SESSION, 0x8004_a405),
            ("TEE_IOC_SHM_REGISTER", TEE_IOC_SHM_REGISTER, 0xc018_a409),
        ];
        for (name, ours, linux) in ioctls {
            assert_eq!(ours, linux, "{name}");
        }
        assert_eq!(std::mem::size_of::<OpenSessionArg>(), 56 + 128);
        assert_eq!(std::mem::size_of::<InvokeArg>(), 24 + 128);
    }

    #[test]
    fn uuids_and_hex() {
        let u = parse_uuid(guest_tools::ta::uuid::ECHO).unwrap();
        assert_eq!(u[0], 0xb4);
        assert_eq!(u[15], 0x54);
        assert!(parse_uuid("b4270f96").is_err());
        assert!(parse_hex("abc").is_err());
        assert!(parse_hex("zz").is_err());
        assert_eq!(parse_hex("00ff").unwrap(), vec![0, 255]);
    }
}
