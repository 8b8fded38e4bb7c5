//! From policy tables to installed filters: compiling a class with
//! rust-vmm's `seccompiler`, installing it on the calling thread, and the
//! `SIGSYS` handler that names a forbidden call before the process exits.
//!
//! A call outside a thread's allowlist returns `SECCOMP_RET_TRAP`: the
//! kernel raises `SIGSYS` on that thread, and the handler writes one line
//! with async-signal-safe calls only (`write(2)`, then `_exit(2)`):
//!
//! ```text
//! vmm: sandbox: thread v_blk (class device-block) made a forbidden system call: execve (59, args 0x55d0c2f1a0e0 0x0 0x0); exiting with status 159
//! ```

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::OnceLock;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use crate::policy::{Arch, Class, Cmp, Cond, ProcessPolicy, Rule, Verdict};
use crate::syscalls;

pub use crate::VIOLATION_EXIT_CODE;

/// Errors building or installing a filter.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// A policy names a call this architecture does not have.
    #[error("seccomp policy {class}: no system call {name} on {arch}")]
    UnknownSyscall {
        /// The class.
        class: &'static str,
        /// The call.
        name: &'static str,
        /// The architecture.
        arch: &'static str,
    },
    /// This architecture has no filters.
    #[error("no seccomp filters for this architecture")]
    UnsupportedArch,
    /// `seccompiler` refused the filter.
    #[error("seccomp policy {class}: {source}")]
    Compile {
        /// The class.
        class: &'static str,
        /// Its error.
        source: seccompiler::BackendError,
    },
    /// The kernel refused the filter.
    #[error("cannot install the seccomp filter of {class}: {source}")]
    Install {
        /// The class.
        class: &'static str,
        /// Its error.
        source: seccompiler::Error,
    },
}

/// The compiled filters of one class: the allowlist, and (if the class
/// has [`Verdict::Enosys`] rules) a second filter that makes those calls
/// fail with `ENOSYS` (the kernel applies the strictest verdict of all
/// filters a thread has).
#[derive(Debug, Clone)]
pub struct ClassFilters {
    /// The class.
    pub class: &'static str,
    /// The programs, in installation order.
    pub programs: Vec<BpfProgram>,
}

fn target(arch: Arch) -> TargetArch {
    match arch {
        Arch::X86_64 => TargetArch::x86_64,
        Arch::Aarch64 => TargetArch::aarch64,
    }
}

fn condition(c: &Cond, pid: u32) -> Result<SeccompCondition, seccompiler::BackendError> {
    let (op, value) = match c.cmp {
        Cmp::Eq(v) => (SeccompCmpOp::Eq, v),
        Cmp::Masked { mask, value } => (SeccompCmpOp::MaskedEq(mask), value),
        Cmp::OwnPid => (SeccompCmpOp::Eq, u64::from(pid)),
        Cmp::Runtime(value) => (SeccompCmpOp::Eq, value()),
    };
    SeccompCondition::new(c.arg, SeccompCmpArgLen::Dword, op, value)
}

/// Compiles `rules` (of class `class`) for `arch`; `pid` is what
/// [`Cmp::OwnPid`] compares against.
pub fn compile_rules(
    class: &'static str,
    rules: &[&'static Rule],
    arch: Arch,
    pid: u32,
) -> Result<ClassFilters, SeccompError> {
    let compile_err = |source| SeccompError::Compile { class, source };
    // None: any arguments; Some: one of these alternatives.
    let mut allowed: BTreeMap<i64, Option<Vec<SeccompRule>>> = BTreeMap::new();
    let mut enosys: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for rule in rules.iter().filter(|r| r.only.applies(arch)) {
        let nr = syscalls::number(arch, rule.name).ok_or(SeccompError::UnknownSyscall {
            class,
            name: rule.name,
            arch: arch.name(),
        })?;
        if rule.verdict == Verdict::Enosys {
            enosys.insert(nr, Vec::new());
        }
        if rule.when.is_empty() || rule.verdict == Verdict::Enosys {
            allowed.insert(nr, None);
            continue;
        }
        let mut alternatives = Vec::with_capacity(rule.when.len());
        for alt in rule.when {
            let conds = alt
                .iter()
                .map(|c| condition(c, pid))
                .collect::<Result<Vec<_>, _>>()
                .map_err(compile_err)?;
            alternatives.push(SeccompRule::new(conds).map_err(compile_err)?);
        }
        // `None`: already allowed with any arguments.
        if let Some(existing) = allowed.entry(nr).or_insert_with(|| Some(Vec::new())) {
            existing.extend(alternatives);
        }
    }
    let rules: BTreeMap<i64, Vec<SeccompRule>> = allowed
        .into_iter()
        .map(|(nr, alts)| (nr, alts.unwrap_or_default()))
        .collect();
    let allow = SeccompFilter::new(
        rules,
        SeccompAction::Trap,
        SeccompAction::Allow,
        target(arch),
    )
    .map_err(compile_err)?;
    let mut programs: Vec<BpfProgram> = vec![allow.try_into().map_err(compile_err)?];
    if !enosys.is_empty() {
        let filter = SeccompFilter::new(
            enosys,
            SeccompAction::Allow,
            SeccompAction::Errno(libc::ENOSYS as u32),
            target(arch),
        )
        .map_err(compile_err)?;
        programs.push(filter.try_into().map_err(compile_err)?);
    }
    Ok(ClassFilters { class, programs })
}

/// Compiles `class` of `policy` for this machine's architecture.
pub fn compile_class(
    policy: &ProcessPolicy,
    class: &'static Class,
    pid: u32,
) -> Result<ClassFilters, SeccompError> {
    let arch = Arch::native().ok_or(SeccompError::UnsupportedArch)?;
    compile_rules(class.name, &policy.rules_of(class), arch, pid)
}

/// The thread's name and class, for the SIGSYS report (copied into the
/// thread's own storage when its filter is installed: the handler reads it
/// without locks or allocation).
#[derive(Clone, Copy)]
struct Label {
    thread: [u8; 32],
    thread_len: usize,
    class: &'static str,
}

thread_local! {
    static LABEL: Cell<Label> = const {
        Cell::new(Label { thread: [0; 32], thread_len: 0, class: "none" })
    };
}

/// The program name in every report (`vmm`, `sysmgr`, `trustyd`).
static PROCESS: OnceLock<&'static str> = OnceLock::new();

/// Installs `filters` on the calling thread, labelled `thread`.
pub fn install_current(thread: &str, filters: &ClassFilters) -> Result<(), SeccompError> {
    let mut label = Label {
        thread: [0; 32],
        thread_len: 0,
        class: filters.class,
    };
    let bytes = thread.as_bytes();
    let n = bytes.len().min(label.thread.len());
    label.thread[..n].copy_from_slice(&bytes[..n]);
    label.thread_len = n;
    LABEL.with(|l| l.set(label));
    let install_err = |e: std::io::Error| SeccompError::Install {
        class: filters.class,
        source: seccompiler::Error::Seccomp(e),
    };
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(install_err(std::io::Error::last_os_error()));
    }
    // The ENOSYS filter first (it allows `seccomp` itself), the allowlist
    // last: once it is in place, nothing outside it runs.
    for program in filters.programs.iter().rev() {
        let fprog = SockFprog {
            len: u16::try_from(program.len())
                .map_err(|_| install_err(std::io::Error::other("filter too long")))?,
            filter: program.as_ptr(),
        };
        // SAFETY: the kernel copies `fprog.len` instructions from
        // `fprog.filter`, which `program` owns for the duration of the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                std::ptr::addr_of!(fprog),
            )
        };
        if rc != 0 {
            return Err(install_err(std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// `struct sock_fprog`.
#[repr(C)]
struct SockFprog {
    len: u16,
    filter: *const seccompiler::sock_filter,
}

/// A fixed buffer the SIGSYS handler formats into.
struct Line {
    buf: [u8; 256],
    len: usize,
}

impl Line {
    fn push(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
    }

    fn push_hex(&mut self, value: u64) {
        let mut digits = [0u8; 18];
        digits[0] = b'0';
        digits[1] = b'x';
        let mut n = 2;
        let mut started = false;
        for shift in (0..16).rev() {
            let d = ((value >> (shift * 4)) & 0xf) as u8;
            if d != 0 || started || shift == 0 {
                started = true;
                digits[n] = if d < 10 { b'0' + d } else { b'a' + d - 10 };
                n += 1;
            }
        }
        self.push(&digits[..n]);
    }

    fn push_number(&mut self, mut value: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (value % 10) as u8;
            value /= 10;
            if value == 0 {
                break;
            }
        }
        self.push(&digits[i..]);
    }
}

/// The report line for system call `nr` with its first arguments (also
/// used by tests).
fn report(nr: i64, args: [u64; 3]) -> Line {
    let mut line = Line {
        buf: [0; 256],
        len: 0,
    };
    let label = LABEL.with(Cell::get);
    line.push(PROCESS.get().copied().unwrap_or("process").as_bytes());
    line.push(b": sandbox: thread ");
    line.push(&label.thread[..label.thread_len]);
    line.push(b" (class ");
    line.push(label.class.as_bytes());
    line.push(b") made a forbidden system call: ");
    let name = Arch::native().and_then(|arch| syscalls::name(arch, nr));
    line.push(name.unwrap_or("unknown").as_bytes());
    line.push(b" (");
    if nr < 0 {
        line.push(b"-");
    }
    line.push_number(nr.unsigned_abs());
    line.push(b", args ");
    for (i, a) in args.iter().enumerate() {
        if i > 0 {
            line.push(b" ");
        }
        line.push_hex(*a);
    }
    line.push(b"); exiting with status ");
    line.push_number(VIOLATION_EXIT_CODE as u64);
    line.push(b"\n");
    line
}

/// The system call number in a `SIGSYS` siginfo (`si_syscall`).
///
/// # Safety
/// `info` must point to the kernel's siginfo for a seccomp `SIGSYS`.
unsafe fn violating_syscall(info: *const libc::siginfo_t) -> i64 {
    // Linux, 64-bit: si_signo, si_errno, si_code and padding take 16
    // bytes; the _sigsys member is { void *_call_addr; int _syscall;
    // unsigned int _arch; }, so _syscall is at offset 24.
    // SAFETY: the caller guarantees a SIGSYS siginfo, which is at least
    // 128 bytes long; offset 24 holds an aligned int.
    let nr = unsafe { info.cast::<u8>().add(24).cast::<libc::c_int>().read() };
    i64::from(nr)
}

/// The first three arguments of the trapped call, from the saved registers.
///
/// # Safety
/// `ctx` must be the `ucontext_t` the kernel passed to a `SA_SIGINFO`
/// handler.
unsafe fn violating_args(ctx: *const libc::c_void) -> [u64; 3] {
    let uc = ctx.cast::<libc::ucontext_t>();
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: the caller guarantees a valid ucontext; gregs holds the
        // trapped thread's registers (rdi, rsi, rdx are arguments 0-2).
        let g = unsafe { &(*uc).uc_mcontext.gregs };
        [
            g[libc::REG_RDI as usize] as u64,
            g[libc::REG_RSI as usize] as u64,
            g[libc::REG_RDX as usize] as u64,
        ]
    }
    #[cfg(target_arch = "aarch64")]
    {
        // SAFETY: the caller guarantees a valid ucontext; x0-x2 are
        // arguments 0-2.
        let r = unsafe { &(*uc).uc_mcontext.regs };
        [r[0], r[1], r[2]]
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let _ = uc;
        [0; 3]
    }
}

extern "C" fn on_sigsys(_signal: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes the SIGSYS siginfo of this delivery.
    let nr = unsafe { violating_syscall(info) };
    // SAFETY: the kernel passes this delivery's ucontext.
    let args = unsafe { violating_args(ctx) };
    let line = report(nr, args);
    // SAFETY: write(2) and _exit(2) are async-signal-safe; the buffer is
    // valid for `line.len` bytes. Both calls are in every class's filter.
    unsafe {
        libc::write(2, line.buf.as_ptr().cast(), line.len);
        libc::_exit(VIOLATION_EXIT_CODE);
    }
}

/// Installs the process's `SIGSYS` handler; `process` names it in reports.
pub fn install_violation_handler(process: &'static str) -> std::io::Result<()> {
    let _ = PROCESS.set(process);
    // SAFETY: sigaction is plain data; zeroed is a valid empty value.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) = on_sigsys;
    action.sa_sigaction = handler as libc::sighandler_t;
    action.sa_flags = libc::SA_SIGINFO;
    // SAFETY: `action.sa_mask` is a valid sigset_t to initialise.
    unsafe { libc::sigemptyset(&mut action.sa_mask) };
    // SAFETY: installs a handler that only makes async-signal-safe calls;
    // `action` outlives the call.
    let rc = unsafe { libc::sigaction(libc::SIGSYS, &action, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The system call the probe makes (see [`crate::probe`]): `execve`,
/// which no class of any program allows. If a filter were missing it
/// would fail harmlessly (`/` is not executable).
pub fn forbidden_call() {
    // SAFETY: execve with a valid NUL-terminated path and null argv/envp;
    // it cannot succeed on a directory.
    unsafe {
        libc::syscall(
            libc::SYS_execve,
            c"/".as_ptr(),
            std::ptr::null::<*const libc::c_char>(),
            std::ptr::null::<*const libc::c_char>(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{self, vmm};

    #[test]
    fn every_class_of_every_policy_compiles_on_both_architectures() {
        for p in policy::ALL {
            for class in p.classes {
                for arch in Arch::ALL {
                    let f = compile_rules(class.name, &p.rules_of(class), arch, 42)
                        .unwrap_or_else(|e| panic!("{}: {e}", p.process));
                    assert!(!f.programs.is_empty());
                    // BPF programs are at most 4096 instructions.
                    for prog in &f.programs {
                        assert!(prog.len() < 4096, "{} {}", class.name, prog.len());
                    }
                }
            }
        }
    }

    #[test]
    fn the_report_names_thread_class_and_call() {
        let _ = PROCESS.set("vmm");
        let label = Label {
            thread: *b"v_blk\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0",
            thread_len: 5,
            class: "device-block",
        };
        LABEL.with(|l| l.set(label));
        let line = report(libc::SYS_execve, [0x1f, 0, 0xdead_beef]);
        let text = std::str::from_utf8(&line.buf[..line.len]).unwrap();
        assert_eq!(
            text,
            format!(
                "vmm: sandbox: thread v_blk (class device-block) made a forbidden system call: execve ({}, args 0x1f 0x0 0xdeadbeef); exiting with status 159\n",
                libc::SYS_execve
            )
        );
        let _ = vmm::POLICY;
    }

    /// Runs `body` in a forked child and returns its exit status and what
    /// it wrote to stderr.
    pub(crate) fn in_child(body: impl FnOnce()) -> (i32, String) {
        let mut pipe = [0; 2];
        // SAFETY: `pipe` has room for two descriptors.
        assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
        // SAFETY: the child only runs `body` (which installs filters and
        // makes system calls) and _exits; it never returns into the test
        // harness.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // SAFETY: make stderr the pipe's write end, in the child only.
            unsafe {
                libc::dup2(pipe[1], 2);
                libc::close(pipe[0]);
            }
            let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).is_ok();
            // SAFETY: leave the child without running the parent's exit
            // handlers (nor, after a panic, the rest of the test harness).
            unsafe { libc::_exit(if ok { 0 } else { 2 }) };
        }
        // SAFETY: closing the parent's copy of the write end.
        unsafe { libc::close(pipe[1]) };
        let mut out = Vec::new();
        let mut buf = [0u8; 512];
        loop {
            // SAFETY: `buf` is valid for writes of its length.
            let n = unsafe { libc::read(pipe[0], buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            out.extend_from_slice(&buf[..n as usize]);
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe {
            libc::close(pipe[0]);
            libc::waitpid(pid, &mut status, 0);
        }
        let code = if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            128 + libc::WTERMSIG(status)
        };
        (code, String::from_utf8_lossy(&out).into_owned())
    }

    #[test]
    fn a_forbidden_call_in_any_vmm_class_ends_the_process_with_its_name() {
        let arch = Arch::native().unwrap();
        for class in vmm::POLICY.classes {
            let filters = compile_rules(
                class.name,
                &vmm::POLICY.rules_of(class),
                arch,
                std::process::id(),
            )
            .unwrap();
            let (code, err) = in_child(|| {
                install_violation_handler("vmm").unwrap();
                install_current("probe-thread", &filters).unwrap();
                forbidden_call();
            });
            assert_eq!(code, VIOLATION_EXIT_CODE, "{}: {err}", class.name);
            assert!(
                err.contains(&format!(
                    "vmm: sandbox: thread probe-thread (class {}) made a forbidden system call: execve",
                    class.name
                )),
                "{err}"
            );
        }
    }

    #[test]
    fn allowed_calls_pass_and_argument_conditions_hold() {
        let arch = Arch::native().unwrap();
        let class = vmm::POLICY.class("device-vsock").unwrap();
        let f = compile_rules(class.name, &vmm::POLICY.rules_of(class), arch, 1).unwrap();
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let (code, err) = in_child(|| {
            install_violation_handler("vmm").unwrap();
            install_current("v_vsock", &f).unwrap();
            // What a worker does with a host socket: the peer's uid, a
            // timeout, a duplicate, non-blocking mode.
            crate::socket::peer_credentials(&a).unwrap();
            a.set_read_timeout(Some(std::time::Duration::from_secs(1)))
                .unwrap();
            a.try_clone().unwrap().set_nonblocking(true).unwrap();
            // Allowed: a unix socket.
            // SAFETY: plain socket(2); closed right after.
            let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) };
            assert!(fd >= 0);
            // SAFETY: closing the socket just made.
            unsafe { libc::close(fd) };
            // Forbidden by its argument: an IPv4 socket.
            // SAFETY: plain socket(2); the filter stops it.
            unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        });
        assert_eq!(code, VIOLATION_EXIT_CODE, "{err}");
        assert!(err.contains("forbidden system call: socket"), "{err}");
    }

    /// rsbinder reads a socket's send timeout (rustix: `SO_SNDTIMEO_NEW`
    /// first, then the old number) while a callback to a stalled listener
    /// waits for room: sysmgr's filter allows exactly that, not any
    /// socket option.
    #[test]
    fn sysmgr_may_read_a_send_timeout_and_no_other_socket_option() {
        let arch = Arch::native().unwrap();
        let p = policy::sysmgr::POLICY;
        let class = p.class("sysmgr").unwrap();
        let f = compile_rules(class.name, &p.rules_of(class), arch, 1).unwrap();
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&a);
        let get = |option: libc::c_int| {
            let mut value = [0u8; 16];
            let mut len = value.len() as libc::socklen_t;
            // SAFETY: getsockopt(2) into a local buffer of `len` bytes.
            unsafe {
                libc::getsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    option,
                    value.as_mut_ptr().cast(),
                    &mut len,
                )
            }
        };
        let (code, err) = in_child(|| {
            install_violation_handler("sysmgr").unwrap();
            install_current("sysmgr", &f).unwrap();
            assert_eq!(get(67), 0, "SO_SNDTIMEO_NEW");
            assert_eq!(get(libc::SO_SNDTIMEO), 0, "SO_SNDTIMEO");
            get(libc::SO_RCVBUF);
        });
        assert_eq!(code, VIOLATION_EXIT_CODE, "{err}");
        // The call that ended it is the SO_RCVBUF one (level 1, option 8),
        // not one of the timeouts.
        assert!(err.contains("forbidden system call: getsockopt"), "{err}");
        assert!(
            err.contains(&format!(" 0x1 0x{:x})", libc::SO_RCVBUF)),
            "{err}"
        );
    }

    #[test]
    fn sysmgr_may_change_a_files_group_but_not_its_owner() {
        let arch = Arch::native().unwrap();
        let p = policy::sysmgr::POLICY;
        let class = p.class("sysmgr").unwrap();
        let f = compile_rules(class.name, &p.rules_of(class), arch, 1).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"").unwrap();
        // SAFETY: plain credential queries.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let (code, err) = in_child(|| {
            install_violation_handler("sysmgr").unwrap();
            install_current("sysmgr", &f).unwrap();
            // The group only (std's chown: chown(2) on x86_64, fchownat(2)
            // on aarch64), then the owner too.
            std::os::unix::fs::chown(&path, None, Some(gid)).unwrap();
            // fchownat(2) itself, whatever std calls on this architecture.
            let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: fchownat on a NUL-terminated path; uid -1 keeps the owner.
            let rc = unsafe {
                libc::fchownat(libc::AT_FDCWD, c_path.as_ptr(), libc::uid_t::MAX, gid, 0)
            };
            assert_eq!(rc, 0);
            // To fd 2 itself (the test harness captures `eprintln!`).
            std::io::Write::write_all(&mut std::io::stderr(), b"group changed\n").unwrap();
            let _ = std::os::unix::fs::chown(&path, Some(uid), Some(gid));
        });
        assert_eq!(code, VIOLATION_EXIT_CODE, "{err}");
        assert!(err.contains("group changed"), "{err}");
        assert!(err.contains("forbidden system call: "), "{err}");
        assert!(err.contains("chown"), "{err}");
    }

    #[test]
    fn clone3_fails_with_enosys_in_the_launcher_and_clone_needs_clone_thread() {
        let arch = Arch::native().unwrap();
        let class = vmm::POLICY.class(policy::LAUNCHER).unwrap();
        let f = compile_rules(class.name, &vmm::POLICY.rules_of(class), arch, 1).unwrap();
        let (code, err) = in_child(|| {
            install_violation_handler("vmm").unwrap();
            install_current("launcher", &f).unwrap();
            // SAFETY: clone3 with a null argument; the filter answers first.
            let rc = unsafe { libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 0usize) };
            let errno = std::io::Error::last_os_error().raw_os_error();
            if rc != -1 || errno != Some(libc::ENOSYS) {
                // SAFETY: _exit in the child.
                unsafe { libc::_exit(3) };
            }
            // A process (no CLONE_THREAD) is forbidden.
            // SAFETY: raw clone with SIGCHLD only would fork; the filter
            // stops it before the kernel does.
            unsafe {
                libc::syscall(
                    libc::SYS_clone,
                    libc::SIGCHLD as u64,
                    0usize,
                    0usize,
                    0usize,
                    0usize,
                )
            };
        });
        assert_eq!(code, VIOLATION_EXIT_CODE, "{err}");
        assert!(err.contains("forbidden system call: clone ("), "{err}");
    }
}
