//! `vhal-test`: a stand-in for Android's side of the VHAL power handshake
//! (the real CarPowerManagementService arrives with the AIDL issue), and
//! small helpers to drive a guest from the test host.
//!
//! ```text
//! vhal-test client --port P [--script STEPS] [--step-ms N]   (guest)
//! vhal-test wait-line --port P                               (guest)
//! vhal-test send-line SOCKET PORT LINE [--retry SECS]        (test host)
//! ```
//!
//! `client` listens on vsock port P for the system manager's VHAL channel
//! (wire format: `docs/system-manager.md`, one line per property value).
//! On every connection it reports `WAIT_FOR_VHAL`; it prints each
//! `AP_POWER_STATE_REQ` as `vhal: REQ <NAME>`, answers `ON` with `ON` and
//! `CANCEL_SHUTDOWN` with `SHUTDOWN_CANCELLED`, and on the first
//! `SHUTDOWN_PREPARE` runs STEPS (comma-separated, default
//! `postpone:5000,postpone:5000,start`):
//!
//! | step | what |
//! |---|---|
//! | `postpone:MS` | report `SHUTDOWN_POSTPONE(MS)`, then wait `--step-ms` (default 2000) |
//! | `start` | report `SHUTDOWN_START(0)`, wait 1 s, then `poweroff -f` (the kernel's final power step) |
//! | `hang` | stop answering (a hung shutdown) |
//!
//! A report made while the channel is down (the system manager restarts)
//! waits for the next connection. `wait-line` accepts one vsock connection
//! and prints its first line; `send-line` writes LINE to a guest port
//! through the VMM's hybrid vsock socket.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use guest_tools::vhal::{self, report};
use guest_tools::vsock;

/// The channel as the script sees it: the current connection, if any.
#[derive(Default)]
struct Channel {
    conn: Mutex<Option<File>>,
    changed: Condvar,
    started: Mutex<bool>,
    cancelled: Mutex<bool>,
}

impl Channel {
    /// Sends a report, waiting (at most 30 s) for a connection.
    fn report(&self, value: i32, param: i32, what: &str) {
        let end = Instant::now() + Duration::from_secs(30);
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(c) = conn.as_mut() {
                if c.write_all(format!("AP_POWER_STATE_REPORT {value} {param}\n").as_bytes())
                    .is_ok()
                {
                    println!("vhal: REPORT {what}");
                    return;
                }
                *conn = None;
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                println!("vhal: REPORT {what} lost: no channel");
                return;
            }
            conn = self
                .changed
                .wait_timeout(conn, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }
}

fn client(port: u32, steps: Vec<String>, step_ms: u64) -> io::Result<()> {
    let l = vsock::listen(port, 8)?;
    println!("vhal: listening on vsock port {port}");
    let ch = Arc::new(Channel::default());
    loop {
        let conn = File::from(vsock::accept(&l)?);
        let reader = conn.try_clone()?;
        println!("vhal: channel connected");
        {
            let mut c = ch.conn.lock().unwrap_or_else(|e| e.into_inner());
            *c = Some(conn);
        }
        ch.changed.notify_all();
        ch.report(report::WAIT_FOR_VHAL, 0, "WAIT_FOR_VHAL");
        let ch2 = ch.clone();
        let steps = steps.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(reader).lines() {
                let Ok(line) = line else { break };
                let w: Vec<&str> = line.split_whitespace().collect();
                let (Some(v), Some(p)) = (
                    w.get(1).and_then(|v| v.parse::<usize>().ok()),
                    w.get(2).and_then(|p| p.parse::<usize>().ok()),
                ) else {
                    println!("vhal: unexpected line {line:?}");
                    continue;
                };
                println!("{}", vhal::req_line(v, p));
                match v {
                    0 => ch2.report(report::ON, 0, "ON"),
                    1 => {
                        let mut started = ch2.started.lock().unwrap_or_else(|e| e.into_inner());
                        if *started {
                            continue;
                        }
                        *started = true;
                        *ch2.cancelled.lock().unwrap_or_else(|e| e.into_inner()) = false;
                        let (ch3, steps) = (ch2.clone(), steps.clone());
                        std::thread::spawn(move || {
                            vhal::run_script(&steps, step_ms, &ch3.cancelled, |v, p, what| {
                                ch3.report(v, p, what)
                            })
                        });
                    }
                    2 => {
                        *ch2.cancelled.lock().unwrap_or_else(|e| e.into_inner()) = true;
                        *ch2.started.lock().unwrap_or_else(|e| e.into_inner()) = false;
                        ch2.report(report::SHUTDOWN_CANCELLED, 0, "SHUTDOWN_CANCELLED");
                    }
                    _ => {}
                }
            }
            println!("vhal: channel closed");
        });
    }
}

fn wait_line(port: u32) -> io::Result<()> {
    let l = vsock::listen(port, 8)?;
    let conn = File::from(vsock::accept(&l)?);
    let mut line = String::new();
    BufReader::new(conn).read_line(&mut line)?;
    println!("{}", line.trim());
    Ok(())
}

fn send_line(socket: &str, port: u32, line: &str, retry: u64) -> io::Result<()> {
    let end = Instant::now() + Duration::from_secs(retry);
    loop {
        let attempt = (|| -> io::Result<UnixStream> {
            let mut s = UnixStream::connect(socket)?;
            s.write_all(format!("CONNECT {port}\n").as_bytes())?;
            let mut ok = String::new();
            BufReader::new(s.try_clone()?).read_line(&mut ok)?;
            if !ok.starts_with("OK ") {
                return Err(io::Error::new(io::ErrorKind::ConnectionRefused, "refused"));
            }
            Ok(s)
        })();
        match attempt {
            Ok(mut s) => {
                s.write_all(format!("{line}\n").as_bytes())?;
                return Ok(());
            }
            Err(e) if Instant::now() >= end => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

fn usage() -> ExitCode {
    eprintln!("usage: vhal-test client --port P [--script STEPS] [--step-ms N] | wait-line --port P | send-line SOCKET PORT LINE [--retry SECS]");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opt = |name: &str| vhal::opt(&args, name);
    let port = opt("--port").and_then(|p| p.parse().ok());
    let result = match (args.first().map(String::as_str), port) {
        (Some("client"), Some(port)) => {
            let script = opt("--script").unwrap_or_else(|| vhal::DEFAULT_SCRIPT.into());
            let step_ms = opt("--step-ms")
                .and_then(|s| s.parse().ok())
                .unwrap_or(2000);
            client(
                port,
                script.split(',').map(str::to_string).collect(),
                step_ms,
            )
        }
        (Some("wait-line"), Some(port)) => wait_line(port),
        (Some("send-line"), _) => {
            let (Some(sock), Some(port), Some(line)) = (
                args.get(1),
                args.get(2).and_then(|p| p.parse().ok()),
                args.get(3),
            ) else {
                return usage();
            };
            let retry = opt("--retry").and_then(|s| s.parse().ok()).unwrap_or(0);
            send_line(sock, port, line, retry)
        }
        _ => return usage(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vhal-test: {e}");
            ExitCode::FAILURE
        }
    }
}
