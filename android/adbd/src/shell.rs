//! The `shell:`/`shell,v2:`/`exec:` services: the command under the
//! guest's `sh -c` (or an interactive `sh`), on pipes or a pseudo-terminal.
//!
//! Threads per stream: this one (started for the stream) waits for the
//! output to end and the child to exit, then sends the exit packet (shell
//! protocol) and closes the stream; one thread per output fd pumps it to
//! the client; one thread takes the client's data (stdin, close-stdin,
//! window size); one waits for the stream's close. The child runs in its
//! own session, so a client that closes the stream early (or whose
//! connection ends) gets the whole process group killed, even while the
//! input thread is blocked writing to a child that does not read.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use adbd::service::{Framing, ShellRequest};
use adbd::shell_protocol::{self, ClientPacket, Decoder, WindowSize};
use tracing::{debug, warn};

use crate::conn::StreamIo;

/// Read size of the output pumps.
const CHUNK: usize = 64 * 1024;

/// The child and the host ends of its stdio.
struct Spawned {
    child: Child,
    /// Where the client's stdin bytes go (the PTY master, or a pipe).
    input: Option<File>,
    /// Output fds with their shell protocol ids (stdout, stderr).
    outputs: Vec<(File, u8)>,
    /// The PTY master, for window size changes.
    pty: Option<File>,
}

/// Runs `request` on `io` until the command ended or the client left.
pub fn run(request: ShellRequest, io: StreamIo, shell: &str) {
    let io = Arc::new(io);
    let spawned = match spawn(&request, shell) {
        Ok(s) => s,
        Err(e) => {
            warn!("cannot start {shell}: {e}");
            let msg = format!("adbd: cannot start {shell}: {e}\n");
            let _ = match request.framing {
                Framing::V2 => io
                    .send(&shell_protocol::encode(
                        shell_protocol::ID_STDERR,
                        msg.as_bytes(),
                    ))
                    .and_then(|()| {
                        io.send(&shell_protocol::encode(shell_protocol::ID_EXIT, &[126]))
                    }),
                Framing::Raw => io.send(msg.as_bytes()),
            };
            return;
        }
    };
    let Spawned {
        mut child,
        input,
        outputs,
        pty,
    } = spawned;
    let pid = child.id() as libc::pid_t;
    // Set once the child is reaped: its pid (= process group) may be
    // reused after that, so nothing is killed any more.
    let reaped = Arc::new(Mutex::new(false));

    let pumps: Vec<_> = outputs
        .into_iter()
        .map(|(fd, id)| {
            let io = Arc::clone(&io);
            let framing = request.framing;
            std::thread::Builder::new()
                .name("adbd-out".into())
                .spawn(move || pump_output(fd, id, framing, &io))
        })
        .collect();
    {
        let io = Arc::clone(&io);
        let framing = request.framing;
        let spawned = std::thread::Builder::new()
            .name("adbd-in".into())
            .spawn(move || pump_input(&io, framing, input, pty.as_ref()));
        if let Err(e) = spawned {
            warn!("cannot start the input thread: {e}");
        }
    }
    // The killer waits for the stream's close on its own: the input
    // thread may be stuck writing to a child that does not read.
    let watcher = {
        let io = Arc::clone(&io);
        let reaped = Arc::clone(&reaped);
        std::thread::Builder::new()
            .name("adbd-watch".into())
            .spawn(move || {
                io.wait_closed();
                // Closed by the client or the connection's end (kill what
                // it left running) or by us after the exit (nothing to do).
                let reaped = reaped.lock().unwrap_or_else(|p| p.into_inner());
                if !*reaped {
                    debug!("stream closed by the client: killing process group {pid}");
                    // SAFETY: kill(2) of the child's process group; the
                    // child is not reaped (checked under the lock), so the
                    // group id is still ours.
                    unsafe { libc::kill(-pid, libc::SIGKILL) };
                }
            })
    };
    if let Err(e) = &watcher {
        warn!("cannot start the watcher thread: {e}");
    }
    for p in pumps.into_iter().flatten() {
        let _ = p.join();
    }
    // Wait for the exit without reaping and without the lock: the watcher
    // must be able to kill the group meanwhile (a command that
    // closed its output may run until the client closes the stream). The
    // zombie keeps the pid and the process group reserved until reaped.
    wait_for_exit(pid);
    let status = {
        let mut reaped = reaped.lock().unwrap_or_else(|p| p.into_inner());
        *reaped = true;
        // Exited already (or `wait_for_exit` failed: then this blocks,
        // which is all that is left to do): returns at once.
        child.wait()
    };
    let code = match status {
        Ok(s) => s
            .code()
            .or_else(|| s.signal().map(|sig| 128 + sig))
            .unwrap_or(255),
        Err(e) => {
            warn!("wait for the shell failed: {e}");
            255
        }
    };
    debug!("shell exited with {code}");
    if request.framing == Framing::V2 {
        let _ = io.send(&shell_protocol::encode(
            shell_protocol::ID_EXIT,
            &[code.clamp(0, 255) as u8],
        ));
    }
    io.close();
    // The close woke the watcher; it ends without killing.
    if let Ok(w) = watcher {
        let _ = w.join();
    }
}

/// Waits until the child `pid` has exited, leaving it unreaped (a zombie
/// whose pid and process group id stay ours).
fn wait_for_exit(pid: libc::pid_t) {
    let Ok(id) = libc::id_t::try_from(pid) else {
        return;
    };
    loop {
        // SAFETY: siginfo_t is plain old data; all-zero is valid.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid(2) on our own child writes a siginfo_t into
        // `info`; WNOWAIT leaves the child waitable for `Child::wait`.
        let rc = unsafe { libc::waitid(libc::P_PID, id, &mut info, libc::WEXITED | libc::WNOWAIT) };
        if rc == 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return;
        }
    }
}

/// Copies one output fd to the stream until EOF (or EIO: a PTY whose
/// last slave closed) or until the stream is closed.
fn pump_output(mut fd: File, id: u8, framing: Framing, io: &StreamIo) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match fd.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        let sent = match framing {
            Framing::V2 => io.send(&shell_protocol::encode(id, &buf[..n])),
            Framing::Raw => io.send(&buf[..n]),
        };
        if sent.is_err() {
            return;
        }
    }
}

/// Takes the client's data until the stream closes: raw bytes or shell
/// protocol packets for the child's stdin (or the PTY).
fn pump_input(io: &StreamIo, framing: Framing, mut input: Option<File>, pty: Option<&File>) {
    let mut decoder = Decoder::new();
    while let Some(data) = io.recv() {
        if framing == Framing::Raw {
            write_input(&mut input, &data);
            io.recycle(data);
            continue;
        }
        decoder.push(&data);
        io.recycle(data);
        loop {
            match decoder.next_packet() {
                Ok(Some(ClientPacket::Stdin(bytes))) => write_input(&mut input, &bytes),
                // A PTY has no end of input but the client's ^D.
                Ok(Some(ClientPacket::CloseStdin)) if pty.is_none() => input = None,
                Ok(Some(ClientPacket::CloseStdin)) => {}
                Ok(Some(ClientPacket::WindowSize(Some(size)))) => {
                    if let Some(master) = pty {
                        set_window_size(master, size);
                    }
                }
                Ok(Some(ClientPacket::WindowSize(None))) => {}
                Ok(None) => break,
                Err(e) => {
                    warn!("shell protocol error: {e}; closing the stream");
                    io.close();
                    return;
                }
            }
        }
    }
}

/// Writes to the child's input; on failure (it closed stdin) drops it.
fn write_input(input: &mut Option<File>, bytes: &[u8]) {
    if let Some(f) = input {
        if f.write_all(bytes).is_err() {
            *input = None;
        }
    }
}

fn set_window_size(master: &File, size: WindowSize) {
    let ws = libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: size.x_pixels,
        ws_ypixel: size.y_pixels,
    };
    // SAFETY: TIOCSWINSZ reads a winsize from the pointer; `master` is an
    // open PTY master.
    unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, std::ptr::addr_of!(ws)) };
}

/// A pipe: (read end, write end), both close-on-exec.
fn pipe() -> io::Result<(File, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array; the result is checked.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: two fresh fds this function owns.
    Ok(unsafe { (File::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Opens a PTY pair: (master, slave).
fn open_pty() -> io::Result<(File, File)> {
    // SAFETY: posix_openpt returns a new fd or -1.
    let master = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    if master < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd this function owns.
    let master = unsafe { File::from_raw_fd(master) };
    let mut name = [0 as libc::c_char; 64];
    // SAFETY: grantpt/unlockpt/ptsname_r on our master; ptsname_r writes
    // at most `name.len()` bytes including the NUL.
    let rc = unsafe {
        if libc::grantpt(master.as_raw_fd()) != 0 || libc::unlockpt(master.as_raw_fd()) != 0 {
            -1
        } else {
            libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len())
        }
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: ptsname_r succeeded, so `name` holds a NUL-terminated path.
    let path = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) };
    // SAFETY: open(2) of a NUL-terminated path; the result is checked.
    let slave = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if slave < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd this function owns.
    Ok((master, unsafe { File::from_raw_fd(slave) }))
}

fn spawn(request: &ShellRequest, shell: &str) -> io::Result<Spawned> {
    let mut cmd = Command::new(shell);
    if !request.command.is_empty() {
        cmd.arg("-c").arg(&request.command);
    }
    cmd.current_dir("/");
    if std::env::var_os("PATH").is_none() {
        cmd.env("PATH", "/bin:/sbin:/usr/bin:/usr/sbin");
    }
    if std::env::var_os("HOME").is_none() {
        cmd.env("HOME", "/");
    }
    if request.pty {
        let (master, slave) = open_pty()?;
        cmd.env("TERM", request.term.as_deref().unwrap_or("dumb"));
        cmd.stdin(Stdio::from(slave.try_clone()?))
            .stdout(Stdio::from(slave.try_clone()?))
            .stderr(Stdio::from(slave));
        // SAFETY: setsid(2) and ioctl(2) are async-signal-safe; between
        // fork and exec they make the child a session leader whose
        // controlling terminal is the PTY slave (its stdin).
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        drop(cmd);
        let output = master.try_clone()?;
        let pty = master.try_clone()?;
        return Ok(Spawned {
            child,
            input: Some(master),
            outputs: vec![(output, shell_protocol::ID_STDOUT)],
            pty: Some(pty),
        });
    }
    // SAFETY: setsid(2) is async-signal-safe; it puts the child into its
    // own session and process group, which a closed stream kills.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.stdin(Stdio::piped());
    let (out_r, out_w) = pipe()?;
    let mut outputs = vec![(out_r, shell_protocol::ID_STDOUT)];
    match request.framing {
        // The shell protocol keeps stderr apart.
        Framing::V2 => {
            let (err_r, err_w) = pipe()?;
            cmd.stdout(Stdio::from(out_w)).stderr(Stdio::from(err_w));
            outputs.push((err_r, shell_protocol::ID_STDERR));
        }
        // A raw stream has one byte stream: both into the same pipe.
        Framing::Raw => {
            cmd.stdout(Stdio::from(out_w.try_clone()?))
                .stderr(Stdio::from(out_w));
        }
    }
    let mut child = cmd.spawn()?;
    // Our copies of the write ends went with `cmd`: EOF comes when the
    // child (and whatever it started) closed them.
    drop(cmd);
    let input = child.stdin.take().map(|s| File::from(OwnedFd::from(s)));
    Ok(Spawned {
        child,
        input,
        outputs,
        pty: None,
    })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use adbd::shell_protocol::{encode, ID_CLOSE_STDIN, ID_EXIT, ID_STDERR, ID_STDIN, ID_STDOUT};

    use crate::test_client::Client;

    /// Splits shell protocol packets into (id, data).
    fn packets(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        while bytes.len() >= 5 {
            let len = u32::from_le_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
            out.push((bytes[0], bytes[5..5 + len].to_vec()));
            bytes = &bytes[5 + len..];
        }
        assert!(bytes.is_empty(), "a partial packet");
        out
    }

    fn stream(packets: &[(u8, Vec<u8>)], id: u8) -> Vec<u8> {
        packets
            .iter()
            .filter(|(i, _)| *i == id)
            .flat_map(|(_, d)| d.clone())
            .collect()
    }

    #[test]
    fn v2_keeps_streams_apart_and_reports_the_exit_status() {
        let mut c = Client::open("shell,v2,raw:echo hi; echo oops >&2; exit 3").unwrap();
        let mut got = c.write(&encode(ID_CLOSE_STDIN, b""));
        got.extend(c.read_to_close());
        let p = packets(&got);
        assert_eq!(stream(&p, ID_STDOUT), b"hi\n");
        assert_eq!(stream(&p, ID_STDERR), b"oops\n");
        assert_eq!(p.last(), Some(&(ID_EXIT, vec![3])));
    }

    #[test]
    fn v2_stdin_reaches_the_command() {
        let mut c = Client::open("shell,v2,raw:cat; exit 7").unwrap();
        let mut got = c.write(&encode(ID_STDIN, b"through stdin\n"));
        got.extend(c.write(&encode(ID_CLOSE_STDIN, b"")));
        got.extend(c.read_to_close());
        let p = packets(&got);
        assert_eq!(stream(&p, ID_STDOUT), b"through stdin\n");
        assert_eq!(p.last(), Some(&(ID_EXIT, vec![7])));
    }

    #[test]
    fn raw_shell_merges_output_and_pty_shell_has_a_terminal() {
        let mut c = Client::open("shell:echo out; echo err >&2").unwrap();
        let got = String::from_utf8(c.read_to_close()).unwrap();
        assert!(got.contains("out\n") && got.contains("err\n"), "{got:?}");
        let mut c = Client::open("shell,v2,pty:tty; exit 4").unwrap();
        let p = packets(&c.read_to_close());
        let out = String::from_utf8(stream(&p, ID_STDOUT)).unwrap();
        // No /dev/pts where the test runs is a result too: then the
        // daemon says so on stderr with status 126.
        if p.last() == Some(&(ID_EXIT, vec![126])) {
            return;
        }
        assert!(out.starts_with("/dev/pts/"), "{out:?}");
        assert_eq!(p.last(), Some(&(ID_EXIT, vec![4])));
    }

    /// Whether process `pid` has ended (gone, or a zombie).
    fn ended(pid: i32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            // The state follows the command name's closing parenthesis.
            Ok(stat) => stat
                .rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('Z')),
            Err(_) => true,
        }
    }

    /// Opens `service:`, a command that first writes its pid (`$$`) to a
    /// file and then runs `rest` by `exec`; returns the client and the pid.
    fn open_with_pid(name: &str, service: &str, rest: &str) -> (Client, i32) {
        let pid_file =
            std::env::temp_dir().join(format!("adbd-shell-{name}-{}.pid", std::process::id()));
        let _ = std::fs::remove_file(&pid_file);
        let cmd = format!("{service}:echo $$ > {}; exec {rest}", pid_file.display());
        let c = Client::open(&cmd).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let pid: i32 = loop {
            let text = std::fs::read_to_string(&pid_file).unwrap_or_default();
            if let Ok(pid) = text.trim().parse() {
                break pid;
            }
            assert!(Instant::now() < deadline, "the command did not start");
            std::thread::sleep(Duration::from_millis(10));
        };
        let _ = std::fs::remove_file(&pid_file);
        (c, pid)
    }

    /// Whether `pid` ends within 5 s (killed by the test if not).
    fn ends_soon(pid: i32) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !ended(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let killed = ended(pid);
        if !killed {
            // SAFETY: kill(2) of the sleep this test started (still
            // running, so the pid is still its own).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        killed
    }

    #[test]
    fn closing_the_stream_kills_a_command_that_closed_its_output() {
        let (mut c, pid) = open_with_pid("close", "shell,v2,raw", "sleep 1001 >/dev/null 2>&1");
        // Both output pumps see EOF and the daemon waits for the exit.
        std::thread::sleep(Duration::from_millis(500));
        c.close();
        assert!(
            ends_soon(pid),
            "the command still runs after the stream closed"
        );
    }

    #[test]
    fn closing_the_connection_kills_a_command_whose_stdin_is_full() {
        let (mut c, pid) = open_with_pid("stdin", "exec", "sleep 1002");
        // 512 KiB for a command that does not read: the input thread
        // blocks once the 64 KiB pipe is full.
        c.write_unacknowledged(&vec![b'x'; 512 * 1024]);
        std::thread::sleep(Duration::from_millis(300));
        drop(c);
        assert!(
            ends_soon(pid),
            "the command still runs after the connection closed"
        );
    }

    #[test]
    fn v2_output_packets_stay_whole_with_a_small_client_payload() {
        // Both pumps send 64 KiB reads as shell packets of up to
        // 64 KiB + 5 bytes, each in 17 WRTEs of the client's 4096 bytes.
        let cmd = "shell,v2,raw:head -c 300000 /dev/zero | tr '\\0' a & \
                   head -c 300000 /dev/zero | tr '\\0' b >&2; wait";
        let mut c = Client::open_with(cmd, 4096).unwrap();
        let p = packets(&c.read_to_close());
        assert!(
            p.iter()
                .all(|(id, _)| [ID_STDOUT, ID_STDERR, ID_EXIT].contains(id)),
            "foreign packet ids"
        );
        assert_eq!(stream(&p, ID_STDOUT), vec![b'a'; 300_000]);
        assert_eq!(stream(&p, ID_STDERR), vec![b'b'; 300_000]);
        assert_eq!(p.last(), Some(&(ID_EXIT, vec![0])));
    }

    #[test]
    fn a_broken_shell_protocol_closes_the_stream_and_kills_the_command() {
        let mut c = Client::open("shell,v2,raw:sleep 1000").unwrap();
        // Stdout from the client: not a client packet.
        c.write(&encode(ID_STDOUT, b"x"));
        let p = packets(&c.read_to_close());
        // Killed: no output, exit status 128 + SIGKILL or no exit packet.
        assert!(
            p.iter().all(|(id, d)| *id == ID_EXIT && d == &[137]),
            "{p:?}"
        );
    }
}
