//! Starting VMMs from outside the daemon's sandbox.
//!
//! A seccomp filter, a landlock domain, `no_new_privs` and dropped
//! capabilities are inherited by every process a process starts: a VMM
//! launched by the sandboxed daemon could not open `/dev/kvm`, its images
//! or its tap. So before it enters the sandbox, `sysmgr run` forks this
//! **launcher process**, which keeps the privileges it was started with and
//! does one thing: start (and kill) the VMMs of the policy's guests. It
//! reads the launch commands (and each guest's `vmm_user` uid) from the
//! policy *before* the fork: the daemon can ask it to start or kill guest
//! `NAME`, never to run a command of its choosing.
//!
//! Protocol: JSON lines over a socketpair.
//!
//! ```text
//! daemon -> launcher:  {"launch":"android"}   {"kill":"android"}
//!                      {"kill_adopted":"android"}   + one pidfd (SCM_RIGHTS)
//! launcher -> daemon:  {"launched":"android","pid":181}
//!                      {"failed":"android","why":"cannot launch /bin/vmm: ..."}
//!                      {"exited":"android","pid":181,"code":0,"signal":null}
//!                      {"killed_adopted":"android","pid":181}
//!                      {"not_killed":"android","why":"pid 181 runs as uid ..."}
//! ```
//!
//! A VMM runs in its own process group with stdin `/dev/null` and its
//! output going to `<state-dir>/<guest>.vmm.log`, capped and rotated
//! (`crate::vmm_log`); its pid goes to
//! `<guest>.pid`. The launcher opens a pidfd for it at spawn time and
//! kills it only through that (`crate::pidfd`). The launcher ends when the daemon's end of the socketpair
//! closes (the daemon died); its VMMs run on.
//!
//! `kill_adopted` is for a VMM an *earlier* daemon launched that runs as
//! its guest's `vmm_user`, a uid the sandboxed daemon may not signal. The
//! daemon sends the line and the pidfd it opened for that VMM (when it
//! attached) in one `sendmsg`; the launcher reads with `recvmsg` into its
//! own line buffer, and a descriptor belongs to the line that holds the
//! last byte it came with (the whole line, when it was sent so). A
//! descriptor that came with any other line, a request that came with none
//! or with more than one, and a descriptor that is no pidfd are refused,
//! the descriptors closed. The launcher kills only if the guest has a
//! `vmm_user` and every uid of the pidfd's process (`Uid:` in
//! `/proc/<pid>/status`, the pid from `/proc/self/fdinfo/<fd>`) is that
//! uid, and it kills through the pidfd: if that process ended after the
//! pid was read (and the pid was reused), the signal fails and reaches
//! nobody. So a compromised daemon can make it kill processes of the
//! guests' `vmm_user` uids only, which it could ask their VMMs to `stop`
//! anyway. The answer is logged; the daemon watches the end through its
//! own pidfd.

use std::collections::HashMap;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use system_manager::VmmExit;
use tokio::sync::{oneshot, watch};

/// How to start one guest's VMM.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    /// The guest.
    pub guest: String,
    /// The policy's `launch` command.
    pub argv: Vec<String>,
    /// Where its output goes (appended, capped and rotated).
    pub log: PathBuf,
    /// Where its pid goes.
    pub pid_file: PathBuf,
    /// The uid its VMM runs as (the guest's `vmm_user`), if it has one: the
    /// only uid a VMM an earlier daemon launched may have for the launcher
    /// to kill it (`kill_adopted`).
    pub vmm_uid: Option<u32>,
}

/// A message from the daemon.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Ask {
    Launch(String),
    Kill(String),
    /// Kill the guest's VMM an earlier daemon launched, through the pidfd
    /// that comes with the line.
    KillAdopted(String),
}

/// A message from the launcher.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
enum Tell {
    Launched {
        launched: String,
        pid: u32,
    },
    Failed {
        failed: String,
        why: String,
    },
    Exited {
        exited: String,
        pid: u32,
        code: Option<i32>,
        signal: Option<i32>,
    },
    KilledAdopted {
        killed_adopted: String,
        pid: u32,
    },
    NotKilled {
        not_killed: String,
        why: String,
    },
}

/// Forks the launcher process for `specs`. Call while the process has a
/// single thread (before the tokio runtime): the child runs only
/// [`serve`] and never returns.
pub fn fork(specs: Vec<LaunchSpec>) -> io::Result<UnixStream> {
    let (daemon_end, launcher_end) = UnixStream::pair()?;
    // SAFETY: the process is single-threaded (the caller's contract), so
    // the child may run ordinary Rust code; it never returns from here.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        drop(daemon_end);
        let code = match serve(launcher_end, &specs) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("sysmgr launcher: {e}");
                1
            }
        };
        // SAFETY: leave the child process without unwinding into the
        // daemon's code.
        unsafe { libc::_exit(code) };
    }
    drop(launcher_end);
    tracing::info!("VMM launcher process {pid} started (outside the sandbox)");
    Ok(daemon_end)
}

fn tell(out: &mut impl Write, message: &Tell) -> io::Result<()> {
    let mut line = serde_json::to_string(message).map_err(io::Error::other)?;
    line.push('\n');
    out.write_all(line.as_bytes())
}

/// The command that starts a VMM from `argv`: stdin closed, stdout and
/// stderr into its capped log `log` (`crate::vmm_log`), in a process group
/// of its own. Returned with the program's name, for messages. Used by the
/// launcher process and by an unsandboxed daemon alike.
pub(crate) fn vmm_command<'a>(
    argv: &'a [String],
    log: &Path,
) -> Result<(Command, &'a str), String> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| "empty launch command".to_string())?;
    let (out, err) = crate::vmm_log::outputs(log)?;
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        // Its own process group: a signal to the daemon's group (Ctrl-C,
        // kill -9 of the daemon) does not take the VMs with it.
        .process_group(0);
    Ok((command, program))
}

fn launch(spec: &LaunchSpec) -> Result<Child, String> {
    let (mut command, program) = vmm_command(&spec.argv, &spec.log)?;
    let child = command
        .spawn()
        .map_err(|e| format!("cannot launch {program}: {e}"))?;
    let _ = std::fs::write(&spec.pid_file, format!("{}\n", child.id()));
    Ok(child)
}

/// The longest request line the launcher reads (a request names one guest).
const MAX_REQUEST_LINE: usize = 4096;

/// The most descriptors one `recvmsg` takes (one request needs one; the
/// kernel closes the ones of a message that do not fit).
const MAX_FDS: usize = 8;

/// Room for a control message of [`MAX_FDS`] descriptors, aligned as a
/// `cmsghdr`.
type CmsgBuf = [u64; 8];

/// `CMSG_SPACE` for `n` descriptors.
const fn cmsg_space(n: usize) -> usize {
    // SAFETY: CMSG_SPACE is arithmetic on its argument; no memory is read.
    unsafe { libc::CMSG_SPACE((n * std::mem::size_of::<libc::c_int>()) as libc::c_uint) as usize }
}

const _: () = assert!(cmsg_space(MAX_FDS) <= std::mem::size_of::<CmsgBuf>());

/// Sends `bytes` on the stream socket `sock` in one `sendmsg`, with `fd`
/// (`SCM_RIGHTS`) going with them; returns how many bytes went (the
/// descriptor goes with the first of them: send the rest without it). On a
/// non-blocking socket, `WouldBlock` when there is no room.
fn send_with_fd(sock: BorrowedFd<'_>, bytes: &[u8], fd: BorrowedFd<'_>) -> io::Result<usize> {
    let mut space: CmsgBuf = [0; 8];
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr().cast_mut().cast(),
        iov_len: bytes.len(),
    };
    // SAFETY: an all-zero msghdr is a valid one (no name, no buffers).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = space.as_mut_ptr().cast();
    msg.msg_controllen = cmsg_space(1) as _;
    // SAFETY: `msg` points at `space`, which has room for one header
    // with one descriptor (`cmsg_space(1)` bytes, checked at compile
    // time), so the first header is there (not null) and its data holds
    // one `c_int`; the data may be unaligned.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::c_int>() as libc::c_uint) as _;
        libc::CMSG_DATA(cmsg)
            .cast::<libc::c_int>()
            .write_unaligned(fd.as_raw_fd());
    }
    loop {
        // SAFETY: `msg` points at `iov` (over `bytes`, only read) and at
        // `space`, which outlive the call.
        let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if let Ok(n) = usize::try_from(n) {
            return Ok(n);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// One `recvmsg` on `sock` into `buf`: how many bytes came (0: the peer
/// closed its end) and the descriptors (`SCM_RIGHTS`, close-on-exec, so
/// no VMM inherits one) that came with them.
fn recv_with_fds(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut space: CmsgBuf = [0; 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr is a valid one (no name, no buffers).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = space.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of::<CmsgBuf>() as _;
    let n = loop {
        // SAFETY: `msg` points at `iov` (over `buf`) and at `space`, which
        // outlive the call; the kernel writes within their lengths.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if let Ok(n) = usize::try_from(n) {
            break n;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    let mut fds = Vec::new();
    // SAFETY: `msg` and its control buffer were filled in by recvmsg;
    // CMSG_FIRSTHDR returns a header within `msg_controllen` or null.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    while !cmsg.is_null() {
        // SAFETY: a non-null header from CMSG_FIRSTHDR/CMSG_NXTHDR lies
        // within the control buffer the kernel filled in.
        let (level, kind, len) =
            unsafe { ((*cmsg).cmsg_level, (*cmsg).cmsg_type, (*cmsg).cmsg_len) };
        if level == libc::SOL_SOCKET && kind == libc::SCM_RIGHTS {
            // `size_t` on glibc, `socklen_t` on musl.
            #[allow(clippy::unnecessary_cast)]
            let len = len as usize;
            // SAFETY: CMSG_LEN is arithmetic on its argument.
            let header = unsafe { libc::CMSG_LEN(0) } as usize;
            let count = len.saturating_sub(header) / std::mem::size_of::<libc::c_int>();
            // SAFETY: the header's data follows it in the control buffer.
            let data = unsafe { libc::CMSG_DATA(cmsg) }.cast::<libc::c_int>();
            for k in 0..count {
                // SAFETY: `cmsg_len` (set by the kernel, within the buffer)
                // covers `count` descriptors after the header; unaligned read.
                let raw = unsafe { data.add(k).read_unaligned() };
                // SAFETY: the kernel installed this descriptor in this
                // process for this message; nothing else owns it.
                fds.push(unsafe { OwnedFd::from_raw_fd(raw) });
            }
        }
        // SAFETY: `cmsg` is a header of `msg`'s control buffer.
        cmsg = unsafe { libc::CMSG_NXTHDR(&msg, cmsg) };
    }
    Ok((n, fds))
}

/// The launcher's end of the socketpair: request lines, each with the
/// descriptors that came with its bytes. Linux hands out a message's
/// descriptors with the read that takes its first byte and ends that read
/// at the message's end at the latest, so the last byte of that read is
/// one of the message's: the daemon sends each request that carries a
/// descriptor as one message of exactly its line.
struct Requests {
    sock: UnixStream,
    /// Bytes read and not yet taken as lines.
    buf: Vec<u8>,
    /// Descriptors received, each with the end (in `buf`) of the bytes it
    /// came with: it belongs to the line that holds the byte before.
    fds: Vec<(usize, OwnedFd)>,
}

impl Requests {
    fn new(sock: UnixStream) -> Self {
        Requests {
            sock,
            buf: Vec::new(),
            fds: Vec::new(),
        }
    }

    /// The next complete line (without its `\n`) and the descriptors that
    /// came with it, if one is buffered.
    fn next_line(&mut self) -> Option<(Vec<u8>, Vec<OwnedFd>)> {
        let i = self.buf.iter().position(|&b| b == b'\n')?;
        let mut line: Vec<u8> = self.buf.drain(..=i).collect();
        line.pop();
        let mut fds = Vec::new();
        for (end, fd) in std::mem::take(&mut self.fds) {
            match end.checked_sub(i + 1) {
                Some(rest) if rest > 0 => self.fds.push((rest, fd)),
                _ => fds.push(fd),
            }
        }
        Some((line, fds))
    }

    /// Reads once (blocking) what the socket has: `false` once the
    /// daemon's end is closed. Call when [`Requests::next_line`] has
    /// nothing. A line is never read past [`MAX_REQUEST_LINE`] bytes: the
    /// daemon is sandboxed, this process is not, and a compromised daemon
    /// must not make it buffer without limit.
    fn fill(&mut self) -> io::Result<bool> {
        self.check_bounds()?;
        let mut chunk = [0u8; 512];
        let room = (MAX_REQUEST_LINE.saturating_sub(self.buf.len()) + 1).min(chunk.len());
        let (n, fds) = match recv_with_fds(self.sock.as_fd(), &mut chunk[..room]) {
            // A daemon that closed its end with answers of ours unread
            // resets the connection: gone all the same.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(false),
            r => r?,
        };
        if n == 0 {
            return Ok(false); // the daemon is gone; the VMMs run on
        }
        self.buf.extend_from_slice(&chunk[..n]);
        let end = self.buf.len();
        self.fds.extend(fds.into_iter().map(|fd| (end, fd)));
        self.check_bounds()?;
        Ok(true)
    }

    /// Fails when the buffer holds more than [`MAX_REQUEST_LINE`] bytes of
    /// a line whose end has not come, or more than [`MAX_FDS`] descriptors
    /// (one request takes one, and the lines read are taken before the
    /// next read): both bounded, as the line always was.
    fn check_bounds(&self) -> io::Result<()> {
        if self.buf.len() > MAX_REQUEST_LINE && !self.buf.contains(&b'\n') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a request line longer than {MAX_REQUEST_LINE} bytes"),
            ));
        }
        if self.fds.len() > MAX_FDS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("more than {MAX_FDS} descriptors without their request line"),
            ));
        }
        Ok(())
    }
}

/// Carries out `kill_adopted` for `spec`'s guest with the descriptors that
/// came with the request: the pid killed, or why not.
fn kill_adopted(spec: Option<&LaunchSpec>, mut fds: Vec<OwnedFd>) -> Result<u32, String> {
    let spec = spec.ok_or("no launch command for this guest")?;
    let uid = spec
        .vmm_uid
        .ok_or("the guest has no vmm_user (its VMM runs as a uid the daemon may signal itself)")?;
    let fd = match (fds.pop(), fds.len()) {
        (Some(fd), 0) => fd,
        (None, _) => return Err("no pidfd came with the request".into()),
        (Some(_), n) => {
            return Err(format!(
                "{} descriptors came with the request, not one",
                n + 1
            ))
        }
    };
    let pidfd = crate::pidfd::PidFd::from_received(fd)
        .map_err(|e| format!("not the pidfd of a running process: {e}"))?;
    let pid = pidfd.pid();
    // Read after the pid came from the pidfd: if that process has ended
    // since (and the pid was reused), these are another's uids, and the
    // kill below, through the pidfd, fails and reaches nobody.
    let uids = process_uids(pid).map_err(|e| format!("pid {pid}: {e}"))?;
    if uids.iter().any(|&u| u != uid) {
        return Err(format!(
            "pid {pid} runs as uids {uids:?}, not as the guest's vmm_user uid {uid}"
        ));
    }
    pidfd.kill().map_err(|e| format!("pid {pid}: {e}"))?;
    Ok(pid)
}

/// The real, effective, saved and file-system uids of process `pid`
/// (`Uid:` in `/proc/<pid>/status`).
fn process_uids(pid: u32) -> io::Result<Vec<u32>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "no Uid: line in its status");
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .ok_or_else(bad)?;
    let uids = line
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<Vec<u32>, _>>()
        .map_err(|_| bad())?;
    if uids.len() != 4 {
        return Err(bad());
    }
    Ok(uids)
}

/// The launcher's loop: requests in, VMMs out, exits reported.
fn serve(sock: UnixStream, specs: &[LaunchSpec]) -> io::Result<()> {
    let mut out = sock.try_clone()?;
    let mut requests = Requests::new(sock);
    let mut children: HashMap<String, Child> = HashMap::new();
    // A pidfd per child, opened at spawn time (not yet reaped: the pid is
    // that child's); kills go through it.
    let mut pidfds: HashMap<String, crate::pidfd::PidFd> = HashMap::new();
    loop {
        // Every request already read (several may come at once), each
        // with the descriptors that came with it.
        while let Some((line, fds)) = requests.next_line() {
            let ask = serde_json::from_slice::<Ask>(line.trim_ascii());
            if !fds.is_empty() && !matches!(ask, Ok(Ask::KillAdopted(_))) {
                // Closed when dropped.
                eprintln!(
                    "sysmgr launcher: ignoring {} descriptor(s) that came with a request that takes none",
                    fds.len()
                );
            }
            match ask {
                Ok(Ask::Launch(guest)) => {
                    let reply = match specs.iter().find(|s| s.guest == guest) {
                        None => Tell::Failed {
                            failed: guest,
                            why: "no launch command for this guest".into(),
                        },
                        Some(spec) => match launch(spec) {
                            Ok(child) => {
                                let pid = child.id();
                                match crate::pidfd::PidFd::open(pid) {
                                    Ok(fd) => {
                                        pidfds.insert(guest.clone(), fd);
                                    }
                                    Err(e) => eprintln!(
                                        "sysmgr launcher: no pidfd for {guest}'s VMM (pid {pid}): {e}"
                                    ),
                                }
                                children.insert(guest.clone(), child);
                                Tell::Launched {
                                    launched: guest,
                                    pid,
                                }
                            }
                            Err(why) => Tell::Failed { failed: guest, why },
                        },
                    };
                    tell(&mut out, &reply)?;
                }
                Ok(Ask::Kill(guest)) => {
                    // Only a child it started and has not reaped, through
                    // its pidfd (or, without one, the unreaped child's pid,
                    // which cannot have been reused either).
                    match (pidfds.get(&guest), children.get_mut(&guest)) {
                        (Some(fd), _) => {
                            let _ = fd.kill();
                        }
                        (None, Some(child)) => {
                            let _ = child.kill();
                        }
                        (None, None) => {}
                    }
                }
                Ok(Ask::KillAdopted(guest)) => {
                    let spec = specs.iter().find(|s| s.guest == guest);
                    let reply = match kill_adopted(spec, fds) {
                        Ok(pid) => Tell::KilledAdopted {
                            killed_adopted: guest,
                            pid,
                        },
                        Err(why) => Tell::NotKilled {
                            not_killed: guest,
                            why,
                        },
                    };
                    tell(&mut out, &reply)?;
                }
                Err(e) => eprintln!("sysmgr launcher: ignoring a malformed request: {e}"),
            }
        }
        // Wait for more, at most 200 ms, then reap ended children.
        let mut pfd = libc::pollfd {
            fd: requests.sock.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the call.
        let ready = unsafe { libc::poll(&mut pfd, 1, 200) > 0 };
        if ready && !requests.fill()? {
            return Ok(()); // the daemon is gone; the VMMs run on
        }
        let mut ended = Vec::new();
        for (guest, child) in &mut children {
            if let Ok(Some(status)) = child.try_wait() {
                ended.push((guest.clone(), child.id(), status));
            }
        }
        for (guest, pid, status) in ended {
            children.remove(&guest);
            pidfds.remove(&guest);
            tell(
                &mut out,
                &Tell::Exited {
                    exited: guest,
                    pid,
                    code: status.code(),
                    signal: status.signal(),
                },
            )?;
        }
    }
}

/// A VMM the launcher started.
#[derive(Debug)]
pub struct Launched {
    pid: u32,
    exit: watch::Receiver<Option<VmmExit>>,
    /// Its pidfd, for a VMM this process started itself (the launcher
    /// process keeps those of the VMMs it started).
    pidfd: Option<crate::pidfd::PidFd>,
}

impl Launched {
    /// A VMM this process started itself (no launcher process: the
    /// sandbox is disabled), whose end `exit` will report.
    pub fn watching(
        pid: u32,
        exit: watch::Receiver<Option<VmmExit>>,
        pidfd: Option<crate::pidfd::PidFd>,
    ) -> Self {
        Self { pid, exit, pidfd }
    }

    /// Its pidfd, if this process started it.
    pub fn pidfd(&self) -> Option<&crate::pidfd::PidFd> {
        self.pidfd.as_ref()
    }

    /// Its pid.
    pub fn id(&self) -> u32 {
        self.pid
    }

    /// How it ended, if it did.
    pub fn try_wait(&self) -> Option<VmmExit> {
        *self.exit.borrow()
    }

    /// Waits until it ends.
    pub async fn wait(&mut self) -> Option<VmmExit> {
        *self.exit.wait_for(Option::is_some).await.ok()?
    }
}

type Pending = HashMap<String, oneshot::Sender<Result<Launched, String>>>;

static INSTALLED: std::sync::OnceLock<Launcher> = std::sync::OnceLock::new();

/// Makes `launcher` the one every VMM link uses.
pub fn install(launcher: Launcher) {
    let _ = INSTALLED.set(launcher);
}

/// The installed launcher, if the daemon has one.
pub fn installed() -> Option<&'static Launcher> {
    INSTALLED.get()
}

/// The daemon's handle on the launcher process.
#[derive(Clone)]
pub struct Launcher {
    /// Requests for the writer task, each with the descriptor to send
    /// with its line (`kill_adopted`'s pidfd).
    asks: tokio::sync::mpsc::UnboundedSender<(Ask, Option<OwnedFd>)>,
    pending: Arc<Mutex<Pending>>,
}

/// Writes `line` with `fd` (`SCM_RIGHTS`) on the daemon's end of the
/// socketpair: the descriptor in the `sendmsg` of the line's first bytes,
/// the rest of the line (if that send was short) after it.
async fn send_line_with_fd(
    write: &mut tokio::net::unix::OwnedWriteHalf,
    line: &[u8],
    fd: BorrowedFd<'_>,
) -> io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let sock: &tokio::net::UnixStream = write.as_ref();
    let sent = loop {
        sock.writable().await?;
        match sock.try_io(tokio::io::Interest::WRITABLE, || {
            send_with_fd(sock.as_fd(), line, fd)
        }) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            sent => break sent?,
        }
    };
    write.write_all(line.get(sent..).unwrap_or_default()).await
}

impl Launcher {
    /// Serves the daemon's end `sock` of the socketpair on the current
    /// tokio runtime.
    pub fn start(sock: UnixStream) -> io::Result<Launcher> {
        sock.set_nonblocking(true)?;
        let sock = tokio::net::UnixStream::from_std(sock)?;
        let (read, mut write) = sock.into_split();
        let (asks, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Ask, Option<OwnedFd>)>();
        let pending: Arc<Mutex<Pending>> = Arc::default();
        let exits: Arc<Mutex<HashMap<u32, watch::Sender<Option<VmmExit>>>>> = Arc::default();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            while let Some((ask, fd)) = rx.recv().await {
                let Ok(mut line) = serde_json::to_string(&ask) else {
                    continue;
                };
                line.push('\n');
                let sent = match fd {
                    None => write.write_all(line.as_bytes()).await,
                    Some(fd) => send_line_with_fd(&mut write, line.as_bytes(), fd.as_fd()).await,
                };
                if sent.is_err() {
                    tracing::error!("the VMM launcher process is gone; VMMs cannot be started");
                    return;
                }
            }
        });
        let (p, e) = (pending.clone(), exits);
        tokio::spawn(async move {
            let mut lines = crate::lines::LineReader::new(read, 4096);
            while let Ok(line) = lines.next_line().await {
                let Ok(message) = serde_json::from_str::<Tell>(&line) else {
                    tracing::warn!("malformed line from the VMM launcher: {line:?}");
                    continue;
                };
                match message {
                    Tell::Launched { launched, pid } => {
                        let (tx, rx) = watch::channel(None);
                        e.lock().unwrap_or_else(|x| x.into_inner()).insert(pid, tx);
                        let waiter = p
                            .lock()
                            .unwrap_or_else(|x| x.into_inner())
                            .remove(&launched);
                        if let Some(w) = waiter {
                            let _ = w.send(Ok(Launched {
                                pid,
                                exit: rx,
                                pidfd: None,
                            }));
                        }
                    }
                    Tell::Failed { failed, why } => {
                        let waiter = p.lock().unwrap_or_else(|x| x.into_inner()).remove(&failed);
                        if let Some(w) = waiter {
                            let _ = w.send(Err(why));
                        }
                    }
                    Tell::Exited {
                        pid, code, signal, ..
                    } => {
                        if let Some(tx) = e.lock().unwrap_or_else(|x| x.into_inner()).remove(&pid) {
                            let _ = tx.send(Some(VmmExit { code, signal }));
                        }
                    }
                    Tell::KilledAdopted {
                        killed_adopted,
                        pid,
                    } => tracing::warn!(
                        "{killed_adopted}: the launcher process killed VMM pid {pid}"
                    ),
                    Tell::NotKilled { not_killed, why } => tracing::warn!(
                        "{not_killed}: the launcher process did not kill the VMM: {why}"
                    ),
                }
            }
            tracing::error!("the VMM launcher process closed its socket");
        });
        Ok(Launcher { asks, pending })
    }

    /// Starts guest `guest`'s VMM.
    pub async fn launch(&self, guest: &str) -> Result<Launched, String> {
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|x| x.into_inner())
            .insert(guest.to_string(), tx);
        self.asks
            .send((Ask::Launch(guest.to_string()), None))
            .map_err(|_| "the VMM launcher process is gone".to_string())?;
        rx.await
            .map_err(|_| "the VMM launcher process is gone".to_string())?
    }

    /// Kills guest `guest`'s VMM, if the launcher started it and it runs.
    pub fn kill(&self, guest: &str) {
        let _ = self.asks.send((Ask::Kill(guest.to_string()), None));
    }

    /// Asks the launcher to kill guest `guest`'s VMM that an earlier
    /// daemon launched, through `pidfd` (sent along): for a VMM of the
    /// guest's `vmm_user`, which this sandboxed process may not signal.
    /// The launcher kills only a process of that uid; its answer is
    /// logged. Watch the end through `pidfd`.
    pub fn kill_adopted(&self, guest: &str, pidfd: &crate::pidfd::PidFd) -> io::Result<()> {
        let fd = pidfd.as_fd().try_clone_to_owned()?;
        self.asks
            .send((Ask::KillAdopted(guest.to_string()), Some(fd)))
            .map_err(|_| io::Error::other("the VMM launcher process is gone"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read};
    use std::time::Duration;

    /// Serves `specs` in a launcher thread and runs `body` with the
    /// daemon's handle on it (on a current-thread runtime); then the
    /// daemon's end closes and the launcher must end without error.
    fn with_launcher<F, Fut>(specs: Vec<LaunchSpec>, body: F)
    where
        F: FnOnce(Launcher) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let (daemon, launcher) = UnixStream::pair().unwrap();
        let server = std::thread::spawn(move || serve(launcher, &specs));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async { body(Launcher::start(daemon).unwrap()).await });
        drop(rt);
        server.join().unwrap().unwrap();
    }

    /// The uid (and gid) of the tests' stand-in for an adopted VMM.
    const VMM_UID: u32 = 10077;

    /// A spec for guest `guest` whose VMM runs as `vmm_uid` (its command
    /// is never run here).
    fn adopted_spec(guest: &str, vmm_uid: Option<u32>) -> LaunchSpec {
        LaunchSpec {
            guest: guest.into(),
            argv: vec!["/bin/false".into()],
            log: PathBuf::from("/nonexistent/vmm.log"),
            pid_file: PathBuf::from("/nonexistent/vmm.pid"),
            vmm_uid,
        }
    }

    /// `sleep 30` as uid and gid `uid` (a VMM an earlier daemon launched,
    /// running as its guest's `vmm_user`) and a pidfd for it; `None`, with
    /// a note, when the tests do not run as root.
    fn sleeper_as(uid: u32) -> Option<(Child, crate::pidfd::PidFd)> {
        // SAFETY: a plain credential query.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: switching a child to uid {uid} needs root");
            return None;
        }
        let child = Command::new("sleep")
            .arg("30")
            .uid(uid)
            .gid(uid)
            .spawn()
            .expect("sleep runs");
        let fd = crate::pidfd::PidFd::open(child.id()).expect("pidfd_open");
        Some((child, fd))
    }

    /// Sends `bytes` with `fd` in one `sendmsg` (all of them: the lines
    /// here are short).
    fn send_fd(sock: &UnixStream, bytes: &[u8], fd: BorrowedFd<'_>) {
        assert_eq!(send_with_fd(sock.as_fd(), bytes, fd).unwrap(), bytes.len());
    }

    /// `{"kill_adopted":"GUEST"}` and its newline.
    fn kill_adopted_line(guest: &str) -> Vec<u8> {
        format!("{{\"kill_adopted\":\"{guest}\"}}\n").into_bytes()
    }

    /// The daemon's end of a socketpair to `serve`, a reader of the
    /// launcher's answers (each awaited at most 10 s), and the launcher.
    fn serving(specs: Vec<LaunchSpec>) -> (UnixStream, BufReader<UnixStream>, Server) {
        let (daemon, launcher) = UnixStream::pair().unwrap();
        daemon
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let replies = BufReader::new(daemon.try_clone().unwrap());
        let server = std::thread::spawn(move || serve(launcher, &specs));
        (daemon, replies, server)
    }

    type Server = std::thread::JoinHandle<io::Result<()>>;

    /// The launcher's next answer.
    fn answer(replies: &mut impl BufRead) -> Tell {
        let mut line = String::new();
        replies
            .read_line(&mut line)
            .expect("an answer from the launcher within 10 s");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
    }

    /// The launcher's next answer, which must be a refusal for `guest`
    /// saying `why`.
    fn expect_not_killed(replies: &mut impl BufRead, guest: &str, why: &str) {
        match answer(replies) {
            Tell::NotKilled {
                not_killed,
                why: said,
            } => {
                assert_eq!(not_killed, guest);
                assert!(said.contains(why), "{said:?} does not say {why:?}");
            }
            other => panic!("not a refusal: {other:?}"),
        }
    }

    /// A VMM an earlier daemon launched runs as its guest's `vmm_user`,
    /// which the sandboxed daemon may not signal: the daemon sends the
    /// pidfd it holds to the launcher, which kills it.
    #[test]
    fn the_launcher_kills_an_adopted_vmm_of_its_guests_vmm_user_through_the_daemons_pidfd() {
        let Some((mut vmm, pidfd)) = sleeper_as(VMM_UID) else {
            return;
        };
        with_launcher(vec![adopted_spec("g", Some(VMM_UID))], |l| async move {
            l.kill_adopted("g", &pidfd).unwrap();
            tokio::time::timeout(Duration::from_secs(10), pidfd.exited())
                .await
                .expect("the launcher did not kill the adopted VMM")
                .unwrap();
        });
        assert_eq!(vmm.wait().unwrap().signal(), Some(libc::SIGKILL));
    }

    /// The launcher is no "kill anything" service for a compromised
    /// daemon: a process that does not run as the guest's `vmm_user`, a
    /// guest without one or without a launch command, and a request
    /// without its pidfd are refused; then the right request kills.
    #[test]
    fn the_launcher_kills_only_a_process_of_the_guests_vmm_user() {
        let Some((mut vmm, pidfd)) = sleeper_as(VMM_UID) else {
            return;
        };
        let (daemon, mut replies, server) = serving(vec![
            adopted_spec("g", Some(VMM_UID)),
            adopted_spec("other", Some(VMM_UID + 1)),
            adopted_spec("shared", None),
        ]);
        for (guest, why) in [
            ("other", "not as the guest's vmm_user uid 10078"),
            ("shared", "has no vmm_user"),
            ("unknown", "no launch command"),
        ] {
            send_fd(&daemon, &kill_adopted_line(guest), pidfd.as_fd());
            expect_not_killed(&mut replies, guest, why);
        }
        (&daemon).write_all(&kill_adopted_line("g")).unwrap();
        expect_not_killed(&mut replies, "g", "no pidfd came with the request");
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            vmm.try_wait().unwrap().is_none(),
            "a refused kill went through"
        );

        send_fd(&daemon, &kill_adopted_line("g"), pidfd.as_fd());
        assert_eq!(
            answer(&mut replies),
            Tell::KilledAdopted {
                killed_adopted: "g".into(),
                pid: vmm.id()
            }
        );
        assert_eq!(vmm.wait().unwrap().signal(), Some(libc::SIGKILL));
        drop((replies, daemon));
        server.join().unwrap().unwrap();
    }

    /// A daemon that dies with the launcher's answers unread resets the
    /// connection: the launcher ends as when the daemon closed it cleanly.
    #[test]
    fn a_daemon_gone_with_answers_unread_ends_the_launcher_cleanly() {
        let (daemon, launcher) = UnixStream::pair().unwrap();
        let server = std::thread::spawn(move || serve(launcher, &[]));
        (&daemon).write_all(b"{\"launch\":\"nobody\"}\n").unwrap();
        // The answer (`failed`) is there, and left unread.
        let mut pfd = libc::pollfd {
            fd: daemon.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the call.
        assert_eq!(unsafe { libc::poll(&mut pfd, 1, 10_000) }, 1);
        drop(daemon);
        server.join().unwrap().expect("a clean end");
    }

    /// Descriptors that came with a request that takes none or with a
    /// malformed line, two with one request (a line sent in two parts),
    /// and one that is no pidfd: ignored or refused, and every one closed.
    #[test]
    fn stray_descriptors_are_refused_and_closed() {
        let (daemon, mut replies, server) = serving(vec![adopted_spec("g", Some(VMM_UID))]);
        // The descriptor sent: its peer reads the end once every copy of
        // it is closed.
        let (stray, mut witness) = UnixStream::pair().unwrap();
        send_fd(&daemon, b"{\"kill\":\"g\"}\n", stray.as_fd());
        send_fd(&daemon, b"not a request\n", stray.as_fd());
        send_fd(&daemon, b"{\"launch\":\"unknown\"}\n", stray.as_fd());
        match answer(&mut replies) {
            Tell::Failed { failed, .. } => assert_eq!(failed, "unknown"),
            other => panic!("not a failure: {other:?}"),
        }
        send_fd(&daemon, b"{\"kill_adopted\":", stray.as_fd());
        send_fd(&daemon, b"\"g\"}\n", stray.as_fd());
        expect_not_killed(&mut replies, "g", "2 descriptors came with the request");
        send_fd(&daemon, &kill_adopted_line("g"), stray.as_fd());
        expect_not_killed(&mut replies, "g", "not the pidfd of a running process");
        drop(stray);
        witness
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut byte = [0u8; 1];
        let read = witness.read(&mut byte);
        assert!(
            matches!(read, Ok(0)),
            "a descriptor sent to the launcher is still open: {read:?}"
        );
        drop((replies, daemon));
        server.join().unwrap().unwrap();
    }

    /// The launcher's reader gives each descriptor to the line that holds
    /// the bytes it came with, also when one read takes several lines.
    #[test]
    fn a_descriptor_goes_with_the_line_whose_bytes_it_came_with() {
        let (daemon, launcher) = UnixStream::pair().unwrap();
        let (any, _peer) = UnixStream::pair().unwrap();
        (&daemon).write_all(b"{\"launch\":\"x\"}\n").unwrap();
        send_fd(&daemon, &kill_adopted_line("y"), any.as_fd());
        send_fd(&daemon, b"{\"kill_adopted\":", any.as_fd());
        send_fd(&daemon, b"\"z\"}\n", any.as_fd());
        (&daemon).write_all(b"{\"kill\":\"w\"}\n").unwrap();
        drop(daemon);
        let mut requests = Requests::new(launcher);
        let mut got = Vec::new();
        loop {
            while let Some((line, fds)) = requests.next_line() {
                got.push((String::from_utf8(line).unwrap(), fds.len()));
            }
            if !requests.fill().unwrap() {
                break;
            }
        }
        let want = [
            (r#"{"launch":"x"}"#, 0),
            (r#"{"kill_adopted":"y"}"#, 1),
            (r#"{"kill_adopted":"z"}"#, 2),
            (r#"{"kill":"w"}"#, 0),
        ]
        .map(|(l, n)| (l.to_string(), n));
        assert_eq!(got, want);
    }

    #[test]
    fn messages_round_trip() {
        assert_eq!(
            serde_json::to_string(&Ask::Launch("a".into())).unwrap(),
            r#"{"launch":"a"}"#
        );
        assert_eq!(
            serde_json::to_string(&Ask::KillAdopted("a".into())).unwrap(),
            r#"{"kill_adopted":"a"}"#
        );
        let t: Tell = serde_json::from_str(r#"{"killed_adopted":"a","pid":5}"#).unwrap();
        assert_eq!(
            t,
            Tell::KilledAdopted {
                killed_adopted: "a".into(),
                pid: 5
            }
        );
        let t: Tell = serde_json::from_str(r#"{"not_killed":"a","why":"w"}"#).unwrap();
        assert_eq!(
            t,
            Tell::NotKilled {
                not_killed: "a".into(),
                why: "w".into()
            }
        );
        let t: Tell =
            serde_json::from_str(r#"{"exited":"a","pid":5,"code":null,"signal":9}"#).unwrap();
        assert_eq!(
            t,
            Tell::Exited {
                exited: "a".into(),
                pid: 5,
                code: None,
                signal: Some(9)
            }
        );
    }

    #[test]
    fn an_endless_request_line_ends_the_launcher_instead_of_growing_its_buffer() {
        let (mut daemon, launcher) = UnixStream::pair().unwrap();
        let (done, ended) = std::sync::mpsc::channel();
        std::thread::spawn(move || done.send(serve(launcher, &[])));
        // Four times the cap, no newline, the daemon's end kept open: the
        // launcher stops reading at the cap and ends with an error (without
        // the cap it would wait for the end of the line for ever).
        daemon.set_nonblocking(true).unwrap();
        let _ = daemon.write(&[b'x'; 4 * MAX_REQUEST_LINE]);
        let e = ended
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the launcher still reads an endless line")
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        drop(daemon);
    }

    #[test]
    fn the_launcher_starts_only_policy_commands_reports_exits_and_kills() {
        let dir = crate::test_dir("launcher");
        let spec = |guest: &str, script: &str| LaunchSpec {
            guest: guest.into(),
            argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
            log: dir.join(format!("{guest}.log")),
            pid_file: dir.join(format!("{guest}.pid")),
            vmm_uid: None,
        };
        let specs = vec![
            spec("quick", "echo hello; exit 3"),
            spec("slow", "sleep 30"),
        ];
        with_launcher(specs, |l| async move {
            let mut quick = l.launch("quick").await.unwrap();
            assert_eq!(
                quick.wait().await,
                Some(VmmExit {
                    code: Some(3),
                    signal: None
                })
            );
            let mut slow = l.launch("slow").await.unwrap();
            assert!(slow.try_wait().is_none());
            l.kill("slow");
            assert_eq!(
                slow.wait().await,
                Some(VmmExit {
                    code: None,
                    signal: Some(libc::SIGKILL)
                })
            );
            // Two requests at once (one read gets both lines).
            let both = async { tokio::join!(l.launch("quick"), l.launch("slow")) };
            let (mut a, mut b) = tokio::time::timeout(std::time::Duration::from_secs(10), both)
                .await
                .expect("the second of two simultaneous requests was not served");
            let (a, b) = (a.as_mut().unwrap(), b.as_mut().unwrap());
            assert_eq!(a.wait().await.and_then(|e| e.code), Some(3));
            l.kill("slow");
            assert_eq!(b.wait().await.and_then(|e| e.signal), Some(libc::SIGKILL));
            let e = l.launch("other").await.unwrap_err();
            assert!(e.contains("no launch command"), "{e}");
        });
        assert_eq!(
            std::fs::read_to_string(dir.join("quick.log")).unwrap(),
            "hello\nhello\n"
        );
        assert!(std::fs::read_to_string(dir.join("quick.pid")).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
