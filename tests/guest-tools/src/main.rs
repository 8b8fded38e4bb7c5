//! `vsock-test`: stream tests over vsock, usable on both ends.
//!
//! In the guest it speaks `AF_VSOCK`; in the test host it speaks the VMM's
//! hybrid unix-socket protocol (`CONNECT <port>\n` / `OK <port>\n`, and
//! `PATH_<port>` listeners; see `docs/vsock.md`).
//!
//! ```text
//! vsock-test listen-vsock PORT MODE [OPTIONS]
//! vsock-test connect-vsock CID PORT MODE [OPTIONS]
//! vsock-test listen-unix PATH MODE [OPTIONS]
//! vsock-test connect-unix PATH PORT MODE [OPTIONS]
//! vsock-test connect-unix-raw PATH MODE [OPTIONS]   (no CONNECT handshake:
//!                                                  a plain unix stream, the
//!                                                  baseline of the benchmarks)
//! vsock-test drain-stdout    waits until the terminal on stdout has sent
//!                            everything written to it (`tcdrain`); the
//!                            guest's init runs it before `poweroff -f`, which
//!                            would otherwise drop what is still queued for
//!                            the serial port
//!
//! MODE: send MIB     send MIB MiB of deterministic data, half-close, wait for EOF
//!       recv         read until EOF
//!       echo         write back everything until EOF
//!       many K KIB   (connect only) K concurrent connections to an echo
//!                    server, each sending KIB KiB and checking the echo
//!       rtt SIZE N   (connect only) N timed round trips of SIZE bytes through
//!                    an echo server, each checked; prints every sample
//!                    (`<tag>_us`, see guest_tools::rtt)
//! OPTIONS: --tag NAME     prefix of the result lines (default: the mode)
//!          --count N      (listen) serve N connections concurrently, then exit
//!          --retry SECS   (connect) retry refused connections for SECS
//!          --seed N       data seed for send (default 1)
//!          --raw          (send, recv) transport only, for benchmarks: send
//!                         repeats one 64 KiB block of the data, recv only
//!                         counts bytes; no checksum (no `<tag>_sum` line)
//!          --out PATH     (recv) also write what arrives to PATH (created or
//!                         truncated per connection), each read as one
//!                         write(2): the raw stream with the file writes of
//!                         an `adb push` (`cargo xtask bench adb`'s
//!                         informational figure)
//! ```
//!
//! Results are `key=value` lines: `<tag>_bytes`, `<tag>_sum` (a 64-bit
//! checksum of the stream), `<tag>_secs`, `<tag>_mibps`, and for errors
//! `<tag>_error` (exit status 1).

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::ExitCode;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use guest_tools::{vsock, Gen, Sum};

/// Size of the I/O buffer.
const CHUNK: usize = 64 * 1024;

/// A connected stream socket of either family.
struct Sock(OwnedFd);

impl Read for Sock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes; the fd is
        // owned.
        let n = unsafe { libc::read(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}

impl Write for Sock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for reads of `buf.len()` bytes; the fd is
        // owned. MSG_NOSIGNAL: a closed peer gives EPIPE, not SIGPIPE.
        let n = unsafe {
            libc::send(
                self.0.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Sock {
    fn shutdown_write(&self) -> io::Result<()> {
        // SAFETY: plain shutdown(2) on an owned fd.
        if unsafe { libc::shutdown(self.0.as_raw_fd(), libc::SHUT_WR) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn try_clone(&self) -> io::Result<Sock> {
        Ok(Sock(self.0.try_clone()?))
    }
}

impl From<UnixStream> for Sock {
    fn from(s: UnixStream) -> Self {
        Sock(OwnedFd::from(s))
    }
}

/// An error with the errno name when there is one (`ECONNRESET`, ...).
fn err_name(e: &io::Error) -> String {
    let name = match e.raw_os_error() {
        Some(libc::ECONNRESET) => "ECONNRESET",
        Some(libc::ECONNREFUSED) => "ECONNREFUSED",
        Some(libc::ETIMEDOUT) => "ETIMEDOUT",
        Some(libc::EPIPE) => "EPIPE",
        Some(libc::ENOENT) => "ENOENT",
        Some(libc::ENODEV) => "ENODEV",
        _ => return e.to_string().replace(' ', "-"),
    };
    name.to_string()
}

// ------------------------------------------------------------ modes

/// What one connection did.
#[derive(Default)]
struct Report {
    bytes: u64,
    /// Checksum of the stream; `None` in raw mode.
    sum: Option<u64>,
    secs: f64,
    peer_closed: bool,
}

/// Sends `total` bytes of `Gen(seed)` data, half-closes and waits for the
/// peer to close.
/// `raw`: one block of that data, generated once and sent over and over,
/// and no checksum.
fn send(s: &mut Sock, total: u64, seed: u64, raw: bool) -> io::Result<Report> {
    let start = Instant::now();
    let mut gen = Gen::new(seed);
    let mut sum = Sum::new();
    let mut buf = vec![0u8; CHUNK];
    if raw {
        gen.fill(&mut buf);
    }
    let mut left = total;
    while left > 0 {
        let n = (left as usize).min(CHUNK);
        if !raw {
            gen.fill(&mut buf[..n]);
            sum.update(&buf[..n]);
        }
        s.write_all(&buf[..n])?;
        left -= n as u64;
    }
    s.shutdown_write()?;
    // Clean close: the peer reads everything, then closes its side.
    let mut extra = 0u64;
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        extra += n as u64;
    }
    if extra > 0 {
        return Err(io::Error::other(format!(
            "peer sent {extra} unexpected bytes"
        )));
    }
    Ok(Report {
        bytes: total,
        sum: (!raw).then(|| sum.finish()),
        secs: start.elapsed().as_secs_f64(),
        peer_closed: true,
    })
}

/// Reads until EOF (`raw`: counting bytes only, no checksum), writing
/// what arrives to `out` when given.
fn recv(s: &mut Sock, raw: bool, out: Option<&str>) -> io::Result<Report> {
    let start = Instant::now();
    let mut file = out.map(std::fs::File::create).transpose()?;
    let mut sum = Sum::new();
    let mut bytes = 0u64;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        bytes += n as u64;
        if let Some(f) = file.as_mut() {
            f.write_all(&buf[..n])?;
        }
        if !raw {
            sum.update(&buf[..n]);
        }
    }
    Ok(Report {
        bytes,
        sum: (!raw).then(|| sum.finish()),
        secs: start.elapsed().as_secs_f64(),
        peer_closed: true,
    })
}

/// Writes back everything until EOF, then half-closes.
fn echo(s: &mut Sock) -> io::Result<Report> {
    let start = Instant::now();
    let mut sum = Sum::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        sum.update(&buf[..n]);
        s.write_all(&buf[..n])?;
    }
    s.shutdown_write()?;
    Ok(Report {
        bytes: sum.bytes,
        sum: Some(sum.finish()),
        secs: start.elapsed().as_secs_f64(),
        peer_closed: true,
    })
}

/// Sends `bytes` of `Gen(seed)` data on one thread while checking the echo
/// on this one.
fn echo_client(s: Sock, bytes: u64, seed: u64) -> io::Result<()> {
    let mut w = s.try_clone()?;
    let writer = std::thread::spawn(move || -> io::Result<u64> {
        let r = send_only(&mut w, bytes, seed);
        w.shutdown_write()?;
        r
    });
    let mut r = s;
    let got = recv(&mut r, false, None)?;
    let want = writer
        .join()
        .map_err(|_| io::Error::other("writer panicked"))??;
    if got.bytes != bytes || got.sum != Some(want) {
        return Err(io::Error::other(format!(
            "echo mismatch: {} bytes sum {:016x}, sent {bytes} sum {want:016x}",
            got.bytes,
            got.sum.unwrap_or_default()
        )));
    }
    Ok(())
}

/// Sends `total` bytes of data without closing; returns their checksum.
fn send_only(s: &mut Sock, total: u64, seed: u64) -> io::Result<u64> {
    let mut gen = Gen::new(seed);
    let mut sum = Sum::new();
    let mut buf = vec![0u8; CHUNK];
    let mut left = total;
    while left > 0 {
        let n = (left as usize).min(16 * 1024);
        gen.fill(&mut buf[..n]);
        sum.update(&buf[..n]);
        s.write_all(&buf[..n])?;
        left -= n as u64;
    }
    Ok(sum.finish())
}

// ------------------------------------------------------------ sockets

/// A listening socket of either family.
enum Listener {
    Vsock(OwnedFd),
    Unix(UnixListener),
}

impl Listener {
    fn vsock(port: u32) -> io::Result<Self> {
        Ok(Listener::Vsock(vsock::listen(port, 256)?))
    }

    fn accept(&self) -> io::Result<Sock> {
        match self {
            Listener::Vsock(fd) => Ok(Sock(vsock::accept(fd)?)),
            Listener::Unix(l) => Ok(l.accept()?.0.into()),
        }
    }
}

/// The hybrid handshake: `CONNECT port` and the `OK` line.
fn unix_connect(path: &str, port: u32) -> io::Result<Sock> {
    let mut s = UnixStream::connect(path)?;
    s.write_all(format!("CONNECT {port}\n").as_bytes())?;
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        match s.read(&mut b) {
            Ok(0) => break,
            Ok(_) => {
                line.push(b[0]);
                if b[0] == b'\n' || line.len() > 64 {
                    break;
                }
            }
            // The VMM may close with our bytes unread: a refusal too.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
            Err(e) => return Err(e),
        }
    }
    let text = String::from_utf8_lossy(&line);
    match text
        .strip_prefix("OK ")
        .map(|p| p.trim_end().parse::<u32>())
    {
        Some(Ok(_)) => Ok(s.into()),
        _ if line.is_empty() => Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            "closed-without-ok",
        )),
        _ => Err(io::Error::other(format!("bad-reply:{}", text.trim_end()))),
    }
}

// ------------------------------------------------------------ main

struct Opts {
    tag: Option<String>,
    count: usize,
    retry: Duration,
    seed: u64,
    raw: bool,
    /// `--out`: where `recv` writes what arrives.
    out: Option<String>,
}

enum Mode {
    Send(u64),
    Recv,
    Echo,
    Many(usize, u64),
    Rtt(usize, u64),
}

impl Mode {
    fn name(&self) -> &'static str {
        match self {
            Mode::Send(_) => "send",
            Mode::Recv => "recv",
            Mode::Echo => "echo",
            Mode::Many(..) => "many",
            Mode::Rtt(..) => "rtt",
        }
    }
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: vsock-test listen-vsock PORT | connect-vsock CID PORT | listen-unix PATH | \
         connect-unix PATH PORT | connect-unix-raw PATH, then MODE (send MIB | recv | echo | many K KIB | rtt SIZE N) \
         [--tag NAME] [--count N] [--retry SECS] [--seed N] [--raw] [--out PATH]; or: vsock-test drain-stdout"
    );
    ExitCode::from(2)
}

/// `tcdrain(1)`: returns once the terminal on stdout has transmitted all
/// output written to it (at once if stdout is not a terminal).
fn drain_stdout() -> ExitCode {
    // SAFETY: tcdrain only reads the descriptor number; fd 1 is ours.
    if unsafe { libc::tcdrain(1) } == 0 {
        return ExitCode::SUCCESS;
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ENOTTY) {
        return ExitCode::SUCCESS;
    }
    eprintln!("drain-stdout: {err}");
    ExitCode::from(1)
}

fn parse_num<T: std::str::FromStr>(s: Option<&String>) -> Option<T> {
    s?.parse().ok()
}

fn print_report(tag: &str, r: &Report) {
    println!("{tag}_bytes={}", r.bytes);
    if let Some(sum) = r.sum {
        println!("{tag}_sum={sum:016x}");
    }
    println!("{tag}_secs={:.2}", r.secs);
    let mib = r.bytes as f64 / (1024.0 * 1024.0);
    if r.secs > 0.0 {
        println!("{tag}_mibps={:.1}", mib / r.secs);
    }
    println!("{tag}_peer_closed={}", u8::from(r.peer_closed));
}

fn run_one(s: &mut Sock, mode: &Mode, opts: &Opts) -> io::Result<Report> {
    match mode {
        Mode::Send(mib) => send(s, mib * 1024 * 1024, opts.seed, opts.raw),
        Mode::Recv => recv(s, opts.raw, opts.out.as_deref()),
        Mode::Echo => echo(s),
        Mode::Many(..) | Mode::Rtt(..) => Err(io::Error::other("a client mode")),
    }
}

/// `n` timed round trips of `size` bytes through an echo server, then a
/// clean close; prints every sample.
fn round_trips(s: &mut Sock, size: usize, n: u64, tag: &str) -> io::Result<()> {
    let mut msg = guest_tools::pattern(size, 5);
    let mut back = vec![0u8; size];
    let samples = guest_tools::rtt::measure(n, |seq| {
        guest_tools::rtt::stamp(&mut msg, seq);
        s.write_all(&msg).map_err(|e| err_name(&e))?;
        s.read_exact(&mut back).map_err(|e| err_name(&e))?;
        if back != msg {
            return Err(format!("round trip {seq}: the echo differs"));
        }
        Ok(())
    })
    .map_err(io::Error::other)?;
    samples.print(tag);
    s.shutdown_write()?;
    while s.read(&mut back)? > 0 {}
    Ok(())
}

/// Connects with `connect`, retrying refusals until `retry` has passed.
fn connect_retry(
    connect: &(dyn Fn() -> io::Result<Sock> + Sync),
    retry: Duration,
) -> io::Result<Sock> {
    let deadline = Instant::now() + retry;
    loop {
        match connect() {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => return Err(e),
        }
    }
}

/// The results of the connection threads, a panicked one as an error.
fn join_all<T>(
    handles: Vec<std::thread::ScopedJoinHandle<'_, io::Result<T>>>,
) -> Vec<io::Result<T>> {
    handles
        .into_iter()
        .map(|h| {
            h.join()
                .unwrap_or_else(|_| Err(io::Error::other("panicked")))
        })
        .collect()
}

/// The errors among `results`, by errno name.
fn failures<T>(results: &[io::Result<T>]) -> Vec<String> {
    results
        .iter()
        .filter_map(|r| r.as_ref().err().map(err_name))
        .collect()
}

fn client(
    connect: &(dyn Fn() -> io::Result<Sock> + Sync),
    mode: &Mode,
    opts: &Opts,
    tag: &str,
) -> io::Result<()> {
    if let Mode::Many(k, kib) = *mode {
        let start = Instant::now();
        let barrier = Arc::new(Barrier::new(k));
        let results: Vec<io::Result<()>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..k)
                .map(|i| {
                    let barrier = barrier.clone();
                    scope.spawn(move || {
                        let s = connect_retry(connect, opts.retry);
                        // All connections are open before any data flows.
                        barrier.wait();
                        echo_client(s?, kib * 1024, opts.seed + i as u64)
                    })
                })
                .collect();
            join_all(handles)
        });
        let failed = failures(&results);
        println!("{tag}_ok={}", k - failed.len());
        println!("{tag}_failed={}", failed.len());
        println!("{tag}_secs={:.2}", start.elapsed().as_secs_f64());
        if let Some(first) = failed.first() {
            println!("{tag}_error={first}");
            return Err(io::Error::other("some connections failed"));
        }
        return Ok(());
    }
    let mut s = connect_retry(connect, opts.retry)?;
    if let Mode::Rtt(size, n) = *mode {
        return round_trips(&mut s, size, n, tag);
    }
    let r = run_one(&mut s, mode, opts)?;
    print_report(tag, &r);
    Ok(())
}

fn server(l: Listener, mode: &Mode, opts: &Opts, tag: &str) -> io::Result<()> {
    let count = opts.count.max(1);
    let start = Instant::now();
    let results: Vec<io::Result<Report>> = std::thread::scope(|scope| {
        let mut handles = Vec::new();
        for _ in 0..count {
            match l.accept() {
                Ok(mut s) => {
                    handles.push(scope.spawn(move || run_one(&mut s, mode, opts)));
                }
                Err(e) => {
                    handles.push(scope.spawn(move || Err(e)));
                    break;
                }
            }
        }
        join_all(handles)
    });
    let failed = failures(&results);
    if count == 1 {
        match &results[0] {
            Ok(r) => print_report(tag, r),
            Err(e) => return Err(io::Error::new(e.kind(), err_name(e))),
        }
        return Ok(());
    }
    let bytes: u64 = results.iter().flatten().map(|r| r.bytes).sum();
    println!("{tag}_conns={}", results.len() - failed.len());
    println!("{tag}_failed={}", failed.len());
    println!("{tag}_bytes={bytes}");
    println!("{tag}_secs={:.2}", start.elapsed().as_secs_f64());
    if let Some(first) = failed.first() {
        println!("{tag}_error={first}");
        return Err(io::Error::other("some connections failed"));
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first().map(String::as_str) else {
        return usage();
    };
    if cmd == "drain-stdout" {
        return drain_stdout();
    }
    let positional = match cmd {
        "listen-vsock" | "listen-unix" | "connect-unix-raw" => 1,
        "connect-vsock" | "connect-unix" => 2,
        _ => return usage(),
    };
    let target = &args[1..(1 + positional).min(args.len())];
    let mut rest = args.iter().skip(1 + positional);
    let mode = match rest.next().map(String::as_str) {
        Some("send") => match parse_num(rest.next()) {
            Some(m) => Mode::Send(m),
            None => return usage(),
        },
        Some("recv") => Mode::Recv,
        Some("echo") => Mode::Echo,
        Some("many") => match (parse_num(rest.next()), parse_num(rest.next())) {
            (Some(k), Some(kib)) if k > 0 => Mode::Many(k, kib),
            _ => return usage(),
        },
        Some("rtt") => match (parse_num(rest.next()), parse_num(rest.next())) {
            (Some(size), Some(n)) if (16..=1 << 20).contains(&size) => Mode::Rtt(size, n),
            _ => return usage(),
        },
        _ => return usage(),
    };
    let mut opts = Opts {
        tag: None,
        count: 1,
        retry: Duration::ZERO,
        seed: 1,
        raw: false,
        out: None,
    };
    while let Some(flag) = rest.next() {
        if flag == "--raw" {
            opts.raw = true;
            continue;
        }
        let v = rest.next();
        match flag.as_str() {
            "--tag" if v.is_some() => opts.tag = v.cloned(),
            "--out" if v.is_some() => opts.out = v.cloned(),
            "--count" => match parse_num(v) {
                Some(n) => opts.count = n,
                None => return usage(),
            },
            "--retry" => match parse_num::<u64>(v) {
                Some(s) => opts.retry = Duration::from_secs(s),
                None => return usage(),
            },
            "--seed" => match parse_num(v) {
                Some(s) => opts.seed = s,
                None => return usage(),
            },
            _ => return usage(),
        }
    }
    if target.len() != positional
        || (opts.raw && !matches!(mode, Mode::Send(_) | Mode::Recv))
        || (opts.out.is_some() && !matches!(mode, Mode::Recv))
    {
        return usage();
    }
    let tag = opts.tag.clone().unwrap_or_else(|| mode.name().to_string());
    let result = match cmd {
        "listen-vsock" => match parse_num::<u32>(target.first()) {
            Some(port) => Listener::vsock(port).and_then(|l| server(l, &mode, &opts, &tag)),
            None => return usage(),
        },
        "listen-unix" => {
            let path = &target[0];
            let _ = std::fs::remove_file(path);
            UnixListener::bind(path).and_then(|l| server(Listener::Unix(l), &mode, &opts, &tag))
        }
        "connect-vsock" => match (
            parse_num::<u32>(target.first()),
            parse_num::<u32>(target.get(1)),
        ) {
            (Some(cid), Some(port)) => {
                client(&|| vsock::connect(cid, port).map(Sock), &mode, &opts, &tag)
            }
            _ => return usage(),
        },
        "connect-unix-raw" => {
            let path = target[0].clone();
            client(
                &move || UnixStream::connect(&path).map(Sock::from),
                &mode,
                &opts,
                &tag,
            )
        }
        _ => match parse_num::<u32>(target.get(1)) {
            Some(port) => {
                let path = target[0].clone();
                client(&move || unix_connect(&path, port), &mode, &opts, &tag)
            }
            None => return usage(),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            println!("{tag}_error={}", err_name(&e));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hybrid_handshake_against_a_fake_vmm() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let l = UnixListener::bind(&path).unwrap();
        let p = path.to_str().unwrap().to_string();
        let t = std::thread::spawn(move || {
            // First: accept; then refuse by closing.
            let (mut a, _) = l.accept().unwrap();
            let mut line = [0u8; 11];
            a.read_exact(&mut line).unwrap();
            assert_eq!(&line, b"CONNECT 77\n");
            a.write_all(b"OK 1073741824\n").unwrap();
            let mut s = Sock::from(a);
            let r = echo(&mut s).unwrap();
            assert_eq!(r.bytes, 4096);
            let (mut b, _) = l.accept().unwrap();
            b.read_exact(&mut line).unwrap();
        });
        let s = unix_connect(&p, 77).unwrap();
        echo_client(s, 4096, 9).unwrap();
        let e = unix_connect(&p, 77).err().unwrap();
        assert_eq!(err_name(&e), "closed-without-ok");
        t.join().unwrap();
    }
}
