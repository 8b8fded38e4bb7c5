//! `tee-test`: a guest client of the kernel TEE subsystem's user-space ABI
//! (`/dev/teeN`, the `TEE_IOC_*` ioctls of `<linux/tee.h>`), the same ABI
//! OP-TEE's stock `libteec` sits on. Built static for the guests; on arm64
//! the tests use Debian's `libteec1` itself (`tests/guest-tools/c/`).
//!
//! ```text
//! tee-test version                print TEE_IOC_VERSION of the device
//! tee-test echo [SIZE...]         echo TA: values and memory references of
//!                                 each SIZE (SHM_ALLOC + mmap in, SHM_REGISTER
//!                                 of user memory out), checked byte for byte
//! tee-test sessions N             N sessions in parallel threads on one fd,
//!                                 each doing 8 checked 4 KiB echoes
//! tee-test cancel                 echo WAIT of 30 s, cancelled after 0.5 s
//! tee-test message UUID HEX       one message to a message TA (storage,
//!                                 gatekeeper, hwkey, datasink); prints the reply
//! ```
//!
//! The device is `$TEE_DEV` or `/dev/tee0`. TA commands follow
//! `docs/trusty.md` ("How an invoke maps onto each TA"). Output: one
//! `TEE-...` line per result; errors: `tee-test: error: ...`, exit status 1.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// The echo TA (`com.android.ipc-unittest.srv.echo`).
const ECHO_UUID: &str = "b4270f96-0acb-5e22-88f7-2ea945e72654";
/// Echo commands.
const ECHO_FUNC_ECHO: u32 = 0;
const ECHO_FUNC_WAIT: u32 = 1;
/// Message TAs' one command.
const FUNC_MESSAGE: u32 = 0;
/// `TEEC_ERROR_CANCEL`.
const TEEC_ERROR_CANCEL: u32 = 0xFFFF_0002;
/// Response buffer of a message TA (Trusty's message size).
const MESSAGE_MAX: usize = 4096;

// <linux/tee.h>.
const TEE_IOC_MAGIC: u32 = 0xa4;
const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;
const PARAM_NONE: u64 = 0;
const PARAM_VALUE_INPUT: u64 = 1;
const PARAM_VALUE_OUTPUT: u64 = 2;
const PARAM_MEMREF_INPUT: u64 = 5;
const PARAM_MEMREF_OUTPUT: u64 = 6;
const TEE_IOCTL_LOGIN_PUBLIC: u32 = 0;

const fn ioc(dir: u32, nr: u32, size: usize) -> libc::c_ulong {
    ((dir << 30) | ((size as u32) << 16) | (TEE_IOC_MAGIC << 8) | nr) as libc::c_ulong
}

#[repr(C)]
#[derive(Default)]
struct VersionData {
    impl_id: u32,
    impl_caps: u32,
    gen_caps: u32,
}

#[repr(C)]
#[derive(Default)]
struct ShmAllocData {
    size: u64,
    flags: u32,
    id: i32,
}

#[repr(C)]
#[derive(Default)]
struct ShmRegisterData {
    addr: u64,
    length: u64,
    flags: u32,
    id: i32,
}

#[repr(C)]
struct BufData {
    buf_ptr: u64,
    buf_len: u64,
}

#[repr(C)]
#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
struct Param {
    attr: u64,
    a: u64,
    b: u64,
    c: u64,
}

#[repr(C)]
#[derive(Default)]
struct OpenSessionArg {
    uuid: [u8; 16],
    clnt_uuid: [u8; 16],
    clnt_login: u32,
    cancel_id: u32,
    session: u32,
    ret: u32,
    ret_origin: u32,
    num_params: u32,
    params: [Param; 4],
}

#[repr(C)]
#[derive(Default)]
struct InvokeArg {
    func: u32,
    session: u32,
    cancel_id: u32,
    ret: u32,
    ret_origin: u32,
    num_params: u32,
    params: [Param; 4],
}

#[repr(C)]
struct CancelArg {
    cancel_id: u32,
    session: u32,
}

#[repr(C)]
struct CloseSessionArg {
    session: u32,
}

const TEE_IOC_VERSION: libc::c_ulong = ioc(IOC_READ, 0, std::mem::size_of::<VersionData>());
const TEE_IOC_SHM_ALLOC: libc::c_ulong =
    ioc(IOC_READ | IOC_WRITE, 1, std::mem::size_of::<ShmAllocData>());
const TEE_IOC_OPEN_SESSION: libc::c_ulong = ioc(IOC_READ, 2, std::mem::size_of::<BufData>());
const TEE_IOC_INVOKE: libc::c_ulong = ioc(IOC_READ, 3, std::mem::size_of::<BufData>());
const TEE_IOC_CANCEL: libc::c_ulong = ioc(IOC_READ, 4, std::mem::size_of::<CancelArg>());
const TEE_IOC_CLOSE_SESSION: libc::c_ulong =
    ioc(IOC_READ, 5, std::mem::size_of::<CloseSessionArg>());
const TEE_IOC_SHM_REGISTER: libc::c_ulong = ioc(
    IOC_READ | IOC_WRITE,
    9,
    std::mem::size_of::<ShmRegisterData>(),
);

type Result<T> = std::result::Result<T, String>;

/// `ioctl(fd, req, arg)`; the error names `what`.
fn ioctl<T>(fd: RawFd, req: libc::c_ulong, arg: &mut T, what: &str) -> Result<libc::c_int> {
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
struct Tee {
    fd: OwnedFd,
}

impl Tee {
    fn open() -> Result<Self> {
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

    fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn version(&self) -> Result<VersionData> {
        let mut v = VersionData::default();
        ioctl(self.raw(), TEE_IOC_VERSION, &mut v, "TEE_IOC_VERSION")?;
        Ok(v)
    }

    /// Opens a session (public login) with `params`; returns the session
    /// or the TEE's error.
    fn open_session(&self, uuid: [u8; 16], params: [Param; 4]) -> Result<u32> {
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
    fn invoke(
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

    fn cancel(&self, session: u32, cancel_id: u32) -> Result<()> {
        let mut arg = CancelArg { cancel_id, session };
        ioctl(self.raw(), TEE_IOC_CANCEL, &mut arg, "TEE_IOC_CANCEL").map(|_| ())
    }

    fn close_session(&self, session: u32) -> Result<()> {
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
struct Shm {
    id: i32,
    _fd: OwnedFd,
    ptr: *mut u8,
    len: usize,
    /// Own memory (registered) or the mapping (allocated).
    own: Option<Vec<u8>>,
}

impl Shm {
    fn alloc(tee: &Tee, len: usize) -> Result<Self> {
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

    fn register(tee: &Tee, len: usize) -> Result<Self> {
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

    fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` points at `len` bytes this object owns (the mapping
        // or `own`, whose buffer never moves), borrowed through `&mut self`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    fn memref(&self, attr: u64, size: usize) -> Param {
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

fn parse_uuid(s: &str) -> Result<[u8; 16]> {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    let bytes = parse_hex(&hex)?;
    bytes
        .try_into()
        .map_err(|_| format!("bad UUID {s:?}: want 32 hex digits"))
}

fn parse_hex(s: &str) -> Result<Vec<u8>> {
    if s.len() % 2 != 0 {
        return Err(format!("odd number of hex digits in {s:?}"));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|_| format!("bad hex {s:?}")))
        .collect()
}

fn value(attr: u64, a: u64, b: u64, c: u64) -> Param {
    Param { attr, a, b, c }
}

fn none() -> Param {
    value(PARAM_NONE, 0, 0, 0)
}

/// A reproducible pattern for `size` and `salt`.
fn pattern(size: usize, salt: u64) -> impl Iterator<Item = u8> {
    let mut x = salt ^ (size as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (0..size).map(move |_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x as u8
    })
}

/// One checked echo of `size` bytes and three values.
fn echo_once(tee: &Tee, session: u32, size: usize, salt: u64) -> Result<()> {
    let mut input = Shm::alloc(tee, size)?;
    for (d, s) in input.bytes().iter_mut().zip(pattern(size, salt)) {
        *d = s;
    }
    let mut output = Shm::register(tee, size)?;
    let values = (size as u64, 0xdead_beef ^ salt, u64::MAX - salt);
    let params = [
        value(PARAM_VALUE_INPUT, values.0, values.1, values.2),
        value(PARAM_VALUE_OUTPUT, 0, 0, 0),
        input.memref(PARAM_MEMREF_INPUT, size),
        output.memref(PARAM_MEMREF_OUTPUT, size),
    ];
    let (ret, origin, out) = tee.invoke(session, ECHO_FUNC_ECHO, 0, params)?;
    if ret != 0 {
        return Err(format!(
            "echo of {size} bytes: ret {ret:#x} origin {origin}"
        ));
    }
    if (out[1].a, out[1].b, out[1].c) != values {
        return Err(format!(
            "echo of {size} bytes: values came back as {:?}",
            out[1]
        ));
    }
    if out[3].b != size as u64 {
        return Err(format!(
            "echo of {size} bytes: output size {} (expected {size})",
            out[3].b
        ));
    }
    if output.bytes() != input.bytes() {
        let first = output
            .bytes()
            .iter()
            .zip(input.bytes().iter())
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        return Err(format!(
            "echo of {size} bytes: output differs from input at byte {first}"
        ));
    }
    Ok(())
}

fn cmd_version() -> Result<()> {
    let v = Tee::open()?.version()?;
    println!(
        "TEE-VERSION impl_id={:#x} impl_caps={:#x} gen_caps={:#x}",
        v.impl_id, v.impl_caps, v.gen_caps
    );
    Ok(())
}

fn cmd_echo(sizes: &[usize]) -> Result<()> {
    let tee = Tee::open()?;
    let session = tee.open_session(parse_uuid(ECHO_UUID)?, [none(); 4])?;
    for (i, &size) in sizes.iter().enumerate() {
        let t = Instant::now();
        echo_once(&tee, session, size, i as u64)?;
        println!("TEE-ECHO-OK size={size} ms={}", t.elapsed().as_millis());
    }
    tee.close_session(session)
}

fn cmd_sessions(n: usize) -> Result<()> {
    let tee = Tee::open()?;
    let uuid = parse_uuid(ECHO_UUID)?;
    let results: Vec<Result<u32>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let tee = &tee;
                s.spawn(move || {
                    let session = tee.open_session(uuid, [none(); 4])?;
                    for k in 0..8 {
                        echo_once(tee, session, 4096, (i * 100 + k) as u64)?;
                    }
                    tee.close_session(session)?;
                    Ok(session)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("thread panicked".into())))
            .collect()
    });
    let mut ids = Vec::new();
    for r in results {
        ids.push(r?);
    }
    ids.sort_unstable();
    ids.dedup();
    if ids.len() != n {
        return Err(format!("{n} sessions got only {} distinct ids", ids.len()));
    }
    println!("TEE-SESSIONS-OK n={n}");
    Ok(())
}

fn cmd_cancel() -> Result<()> {
    let tee = Tee::open()?;
    let session = tee.open_session(parse_uuid(ECHO_UUID)?, [none(); 4])?;
    const CANCEL_ID: u32 = 42;
    let t = Instant::now();
    let outcome = std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            let params = [
                value(PARAM_VALUE_INPUT, 30_000, 0, 0),
                none(),
                none(),
                none(),
            ];
            tee.invoke(session, ECHO_FUNC_WAIT, CANCEL_ID, params)
        });
        std::thread::sleep(Duration::from_millis(500));
        let cancelled = tee.cancel(session, CANCEL_ID);
        let result = waiter
            .join()
            .unwrap_or_else(|_| Err("thread panicked".into()));
        cancelled.and(result)
    })?;
    let ms = t.elapsed().as_millis();
    if outcome.0 != TEEC_ERROR_CANCEL {
        return Err(format!(
            "cancelled WAIT ended with ret {:#x} origin {} after {ms} ms",
            outcome.0, outcome.1
        ));
    }
    tee.close_session(session)?;
    println!("TEE-CANCEL-OK ms={ms}");
    Ok(())
}

fn cmd_message(uuid: &str, hex: &str) -> Result<()> {
    let tee = Tee::open()?;
    let msg = parse_hex(hex)?;
    if msg.is_empty() || msg.len() > MESSAGE_MAX {
        return Err(format!(
            "a message is 1-{MESSAGE_MAX} bytes, got {}",
            msg.len()
        ));
    }
    let session = tee.open_session(parse_uuid(uuid)?, [none(); 4])?;
    let mut input = Shm::alloc(&tee, msg.len())?;
    input.bytes().copy_from_slice(&msg);
    let mut output = Shm::alloc(&tee, MESSAGE_MAX)?;
    let params = [
        input.memref(PARAM_MEMREF_INPUT, msg.len()),
        output.memref(PARAM_MEMREF_OUTPUT, MESSAGE_MAX),
        value(PARAM_VALUE_OUTPUT, 0, 0, 0),
        none(),
    ];
    let (ret, origin, out) = tee.invoke(session, FUNC_MESSAGE, 0, params)?;
    if ret != 0 {
        return Err(format!("message: ret {ret:#x} origin {origin}"));
    }
    let len = usize::try_from(out[1].b)
        .unwrap_or(usize::MAX)
        .min(MESSAGE_MAX);
    let reply: String = output.bytes()[..len]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    println!(
        "TEE-MESSAGE len={} responses={} reply={reply}",
        out[2].a, out[2].b
    );
    tee.close_session(session)
}

const USAGE: &str =
    "usage: tee-test version | echo [SIZE...] | sessions N | cancel | message UUID HEX";

fn run(args: &[String]) -> Result<()> {
    let parse_size = |s: &String| {
        s.parse::<usize>()
            .ok()
            .filter(|n| (1..=1 << 20).contains(n))
            .ok_or_else(|| format!("bad size {s:?}: want 1..=1048576"))
    };
    match args.first().map(String::as_str) {
        Some("version") => cmd_version(),
        Some("echo") => {
            let sizes = if args.len() > 1 {
                args[1..]
                    .iter()
                    .map(parse_size)
                    .collect::<Result<Vec<_>>>()?
            } else {
                vec![1, 4096, 4097, 65536, 1 << 20]
            };
            cmd_echo(&sizes)
        }
        Some("sessions") => {
            let n = args
                .get(1)
                .and_then(|s| s.parse().ok())
                .filter(|n| (1..=32).contains(n))
                .ok_or("sessions N: N is 1..=32")?;
            cmd_sessions(n)
        }
        Some("cancel") => cmd_cancel(),
        Some("message") if args.len() == 3 => cmd_message(&args[1], &args[2]),
        _ => Err(USAGE.to_string()),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = run(&args) {
        eprintln!("tee-test: error: {e}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_linux() {
        // Values from <linux/tee.h> as the kernel computes them.
        assert_eq!(TEE_IOC_VERSION, 0x800c_a400);
        assert_eq!(TEE_IOC_SHM_ALLOC, 0xc010_a401);
        assert_eq!(TEE_IOC_OPEN_SESSION, 0x8010_a402);
        assert_eq!(TEE_IOC_INVOKE, 0x8010_a403);
        assert_eq!(TEE_IOC_CANCEL, 0x8008_a404);
        assert_eq!(TEE_IOC_CLOSE_SESSION, 0x8004_a405);
        assert_eq!(TEE_IOC_SHM_REGISTER, 0xc018_a409);
        assert_eq!(std::mem::size_of::<OpenSessionArg>(), 56 + 128);
        assert_eq!(std::mem::size_of::<InvokeArg>(), 24 + 128);
    }

    #[test]
    fn uuids_and_hex() {
        let u = parse_uuid(ECHO_UUID).unwrap();
        assert_eq!(u[0], 0xb4);
        assert_eq!(u[15], 0x54);
        assert!(parse_uuid("b4270f96").is_err());
        assert!(parse_hex("abc").is_err());
        assert!(parse_hex("zz").is_err());
        assert_eq!(parse_hex("00ff").unwrap(), vec![0, 255]);
    }

    #[test]
    fn patterns_differ_by_salt_and_repeat() {
        let a: Vec<u8> = pattern(64, 1).collect();
        assert_eq!(a, pattern(64, 1).collect::<Vec<_>>());
        assert_ne!(a, pattern(64, 2).collect::<Vec<_>>());
    }
}
