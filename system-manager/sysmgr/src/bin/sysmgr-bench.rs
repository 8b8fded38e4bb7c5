//! `sysmgr-bench`: request -> decision latency of the real daemon (run by
//! `cargo xtask bench arbiter`; not part of the production `sysmgr`
//! binary).
//!
//! ```text
//! sysmgr-bench [--guests 8] [--rate 1000] [--seconds 10] [--state-dir DIR] [--sysmgr PATH]
//! ```
//!
//! Starts `sysmgr run` (by default the `sysmgr` next to this binary) as a
//! child process with `guests` guests (role `other`), each behind an
//! in-process fake VMM control socket that speaks the VMM protocol, once
//! per `--log-sync` mode (the default first). The fakes send `event
//! power-request id=N kind=reboot` at `rate` requests per second in total
//! (round robin over the guests) and time each until its `decide N
//! restart` arrives; a decided restart is answered with `event state
//! running`, as a VMM does after rebooting the VM, so every request costs
//! the daemon two logged inputs. The references are the round trip of one
//! line over a unix socket pair on the same machine and a log-sized append
//! + `fdatasync` in the state directory.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use sysmgr::store::{LogSync, LOG_FILE};

/// `sysmgr-bench`'s options.
#[derive(Parser)]
#[command(
    name = "sysmgr-bench",
    about = "Measure the sysmgr daemon's request -> decision latency"
)]
struct Args {
    /// Simulated guests (fake VMMs).
    #[arg(long, default_value_t = 8)]
    guests: usize,
    /// Power requests per second, over all guests.
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// How long to send.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Where the daemon writes its decision log (default: a fresh
    /// directory under the temp dir).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// The daemon binary to measure (default: `sysmgr` next to this
    /// binary).
    #[arg(long)]
    sysmgr: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let result = daemon_binary(args.sysmgr)
        .and_then(|exe| run(&exe, args.guests, args.rate, args.seconds, args.state_dir));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sysmgr-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `--sysmgr`, or the `sysmgr` in this binary's directory (cargo builds
/// both into the same one).
fn daemon_binary(given: Option<PathBuf>) -> Result<PathBuf> {
    let exe = match given {
        Some(p) => p,
        None => std::env::current_exe()
            .context("cannot find this binary's directory")?
            .with_file_name("sysmgr"),
    };
    if !exe.is_file() {
        bail!(
            "no sysmgr binary at {}: build it (cargo build --release -p sysmgr) or pass --sysmgr PATH",
            exe.display()
        );
    }
    Ok(exe)
}

/// Timestamps of the requests in flight, and the measured latencies.
#[derive(Default)]
struct Book {
    sent: HashMap<(usize, u64), Instant>,
    latencies: Vec<Duration>,
}

struct Guest {
    writer: Arc<Mutex<UnixStream>>,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn us(d: Duration) -> String {
    format!("{:.1} us", d.as_secs_f64() * 1e6)
}

/// One-line round trips over a unix socket pair (the reference).
fn loopback(n: usize) -> Result<Vec<Duration>> {
    let (a, b) = UnixStream::pair()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let mut w = b.try_clone()?;
        for line in BufReader::new(b).lines() {
            w.write_all(format!("{}\n", line?).as_bytes())?;
        }
        Ok(())
    });
    let mut r = BufReader::new(a.try_clone()?);
    let mut w = a;
    let mut out = Vec::with_capacity(n);
    let mut line = String::new();
    for i in 0..n {
        let t = Instant::now();
        w.write_all(format!("event power-request id={i} kind=reboot\n").as_bytes())?;
        line.clear();
        r.read_line(&mut line)?;
        out.push(t.elapsed());
    }
    drop(w);
    drop(r);
    let _ = echo.join();
    Ok(out)
}

/// Appending one log-sized record and `fdatasync`: what a batch waits for
/// with `--log-sync every-decision`.
fn fsync_times(dir: &Path, n: usize) -> Result<Vec<Duration>> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("fsync-probe");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    let record = [b'x'; 300];
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f.write_all(&record)?;
        f.sync_data()?;
        out.push(t.elapsed());
    }
    let _ = std::fs::remove_file(&path);
    Ok(out)
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What one run of the daemon under load measured.
struct Measured {
    latencies: Vec<Duration>,
    unanswered: usize,
    sent_for: Duration,
}

/// The daemon `exe` as it runs by default (`--log-sync before-mcu`), then
/// with `--log-sync every-decision`, each on its own fresh state
/// directory, and the references.
fn run(
    exe: &Path,
    guests: usize,
    rate: u32,
    seconds: u64,
    state_dir: Option<PathBuf>,
) -> Result<()> {
    if guests == 0 || rate == 0 {
        bail!("--guests and --rate must be greater than 0");
    }
    let dir = std::env::temp_dir().join(format!("sysmgr-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let state = state_dir.unwrap_or_else(|| dir.join("state"));
    let modes = [LogSync::BeforeMcu, LogSync::EveryDecision];
    for mode in modes {
        let s = state.join(mode_word(mode));
        if s.join(LOG_FILE).exists() {
            bail!(
                "{} already has a decision log; give an empty --state-dir",
                s.display()
            );
        }
    }
    let mut results = Vec::new();
    for mode in modes {
        let sub = dir.join(mode_word(mode));
        std::fs::create_dir_all(&sub)?;
        let m = measure(
            exe,
            &sub,
            &state.join(mode_word(mode)),
            guests,
            rate,
            seconds,
            mode,
        )
        .with_context(|| format!("with --log-sync {}", mode_word(mode)))?;
        results.push((mode, m));
    }
    let mut lo = loopback(10_000)?;
    lo.sort();
    let mut fsync = fsync_times(&state, 1000)?;
    fsync.sort();
    let fs = fs_type(&state);
    let total = u64::from(rate) * seconds;
    println!("arbiter benchmark: {guests} guests, {rate} requests/s for {seconds} s ({total} requests per run), decision log on {} ({fs})", state.display());
    println!();
    let row = |name: &str, v: &[Duration]| {
        println!(
            "{:<46} {:>10} {:>10} {:>10} {:>8}",
            name,
            us(percentile(v, 0.5)),
            us(percentile(v, 0.99)),
            us(v.last().copied().unwrap_or_default()),
            v.len()
        );
    };
    println!(
        "{:<46} {:>10} {:>10} {:>10} {:>8}",
        "", "p50", "p99", "max", "n"
    );
    for (mode, m) in &results {
        row(
            &format!("request -> decision, --log-sync {}", mode_word(*mode)),
            &m.latencies,
        );
    }
    row("unix socket round trip (reference)", &lo);
    row("300-byte append + fdatasync (reference)", &fsync);
    println!();
    for (mode, m) in &results {
        println!(
            "--log-sync {}: requests sent in {:.2} s, unanswered: {}",
            mode_word(*mode),
            m.sent_for.as_secs_f64(),
            m.unanswered
        );
    }
    let (_, default) = &results[0];
    let p99 = percentile(&default.latencies, 0.99);
    println!(
        "target p99 <= 1 ms (the daemon's default, --log-sync before-mcu): {} (p99 {})",
        if p99 <= Duration::from_millis(1) && default.unanswered == 0 {
            "met"
        } else {
            "NOT met"
        },
        us(p99)
    );
    println!("each request is two decision-log records (request, restart done), written before the answer; before-mcu fsyncs them in a background thread (only commands to the MCU wait for it), every-decision fsyncs each batch of queued inputs before answering");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn mode_word(mode: LogSync) -> &'static str {
    match mode {
        LogSync::BeforeMcu => "before-mcu",
        LogSync::EveryDecision => "every-decision",
    }
}

/// Starts the daemon `exe` with `mode` on `state`, its fake VMMs' sockets in
/// `dir`, and times `rate * seconds` requests.
fn measure(
    exe: &Path,
    dir: &Path,
    state: &Path,
    guests: usize,
    rate: u32,
    seconds: u64,
    mode: LogSync,
) -> Result<Measured> {
    let mut policy = String::from("[system]\nvm_exit_grace_ms = 60000\n");
    for i in 0..guests {
        policy.push_str(&format!(
            "\n[[guest]]\nname = \"g{i}\"\nrole = \"other\"\ncontrol_socket = \"{}\"\n",
            dir.join(format!("g{i}.ctl")).display()
        ));
    }
    std::fs::write(dir.join("policy.toml"), policy)?;

    let book = Arc::new(Mutex::new(Book::default()));
    let mut listeners = Vec::new();
    for i in 0..guests {
        listeners.push(UnixListener::bind(dir.join(format!("g{i}.ctl")))?);
    }
    let _daemon = Daemon(
        Command::new(exe)
            .args(["run", "--policy"])
            .arg(dir.join("policy.toml"))
            .arg("--state-dir")
            .arg(state)
            .arg("--mcu-socket")
            .arg(dir.join("no-mcu.sock"))
            .args(["--log-sync", mode_word(mode)])
            .env("SYSMGR_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start the daemon")?,
    );
    // Attach every fake VMM.
    let mut fakes = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        let (stream, _) = accept_timeout(&l, Duration::from_secs(10))
            .with_context(|| format!("the daemon did not attach to guest g{i}"))?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut first = String::new();
        reader.read_line(&mut first)?;
        if first.trim() != "attach" {
            bail!("guest g{i}: expected attach, got {first:?}");
        }
        let writer = Arc::new(Mutex::new(stream));
        writer
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .write_all(b"ok attached\nevent state running\n")?;
        let (w, b) = (writer.clone(), book.clone());
        std::thread::spawn(move || serve(i, reader, w, b));
        fakes.push(Guest { writer });
    }
    // Let the daemon take in the VmStarted inputs.
    std::thread::sleep(Duration::from_millis(500));

    let total = u64::from(rate) * seconds;
    let period = Duration::from_secs_f64(1.0 / f64::from(rate));
    let start = Instant::now();
    let mut ids = vec![1u64; guests];
    for n in 0..total {
        let due = start + period * n as u32;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let g = n as usize % guests;
        let id = ids[g];
        ids[g] += 1;
        let mut w = fakes[g]
            .writer
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?;
        book.lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .sent
            .insert((g, id), Instant::now());
        w.write_all(format!("event power-request id={id} kind=reboot\n").as_bytes())?;
    }
    let sent_for = start.elapsed();
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        if book
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .sent
            .is_empty()
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let (mut latencies, unanswered) = {
        let b = book.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        (b.latencies.clone(), b.sent.len())
    };
    latencies.sort();
    Ok(Measured {
        latencies,
        unanswered,
        sent_for,
    })
}

fn serve(
    i: usize,
    reader: BufReader<UnixStream>,
    writer: Arc<Mutex<UnixStream>>,
    book: Arc<Mutex<Book>>,
) {
    for line in reader.lines() {
        let Ok(line) = line else { return };
        let at = Instant::now();
        let words: Vec<&str> = line.split_whitespace().collect();
        if let ["decide", id, _] = words.as_slice() {
            let Ok(id) = id.parse::<u64>() else { continue };
            if let Ok(mut b) = book.lock() {
                if let Some(t) = b.sent.remove(&(i, id)) {
                    b.latencies.push(at.duration_since(t));
                }
            }
            if let Ok(mut w) = writer.lock() {
                let _ = w.write_all(b"ok decided\nevent state running\n");
            }
        }
    }
}

fn accept_timeout(
    l: &UnixListener,
    t: Duration,
) -> Result<(UnixStream, std::os::unix::net::SocketAddr)> {
    l.set_nonblocking(true)?;
    let end = Instant::now() + t;
    loop {
        match l.accept() {
            Ok((s, a)) => {
                s.set_nonblocking(false)?;
                return Ok((s, a));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < end => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The file system type of `path` (from /proc/mounts, longest prefix).
fn fs_type(path: &Path) -> String {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let mut best: (usize, String) = (0, "unknown".into());
    for l in mounts.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if let [_, mnt, ty, ..] = f.as_slice() {
            if path.starts_with(mnt) && mnt.len() >= best.0 {
                best = (mnt.len(), ty.to_string());
            }
        }
    }
    best.1
}
