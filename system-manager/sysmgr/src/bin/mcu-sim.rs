//! `mcu-sim`: an MCU simulator for driving the `sysmgr` daemon by hand or
//! from test scripts (not part of the production `sysmgr` binary).
//!
//! ```text
//! mcu-sim --socket PATH [--script FILE]
//! ```
//!
//! It listens on the MCU socket, serves one SoC connection at a time (a new
//! one replaces the old: a restarted daemon) and starts every connection
//! with the vehicle's `VehicleState`. Commands come from `--script FILE`
//! and then from standard input, one per line:
//!
//! | command | sends |
//! |---|---|
//! | `ignition on` / `ignition off` | `Ignition` |
//! | `in-use yes` / `in-use no` | `VehicleInUse` |
//! | `wake REASON` | `WakeRequest` (`USER_POWER_ON`, `SYSTEM_USER_DETECTION`, `SYSTEM_REMOTE_ACCESS`, `SYSTEM_ENTER_GARAGE_MODE` or a number) |
//! | `raw HEX` | the bytes as they are (for malformed-input tests) |
//! | `sleep SECS` | nothing; waits |
//! | `wait on\|power-off\|suspend\|connected [SECS]` | nothing; waits until the SoC's last command is that (default 60 s) |
//! | `status` | nothing; prints the vehicle state and the SoC's last command |
//! | `quit` | ends the simulator |
//!
//! Signals are remembered while no SoC is connected: ignition and in-use
//! go out in the next `VehicleState`, wake requests are queued. Every
//! command from the SoC is printed as `mcu: <- POWER_OFF wake_after_s=0
//! (reason)`. The simulator keeps serving after standard input ends.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, watch};

use sysmgr::proto::mcu::{soc_to_mcu, McuToSoc, SocToMcu, VehicleState, WakeReason};
use sysmgr::proto::{self, FrameDecoder};

/// `mcu-sim`'s options.
#[derive(Parser)]
#[command(
    name = "mcu-sim",
    about = "Simulate the vehicle's MCU for the sysmgr daemon (listens on the MCU socket)"
)]
struct Args {
    /// The socket to listen on (the daemon's `--mcu-socket`).
    #[arg(long)]
    socket: PathBuf,
    /// Commands to run before reading standard input.
    #[arg(long)]
    script: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(run(args.socket, args.script)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mcu-sim: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// What the SoC last asked, as the `wait` words.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Seen {
    connected: bool,
    last: Option<&'static str>,
}

enum Out {
    Msg(McuToSoc),
    Raw(Vec<u8>),
}

fn state_msg(ignition_on: bool, in_use: bool) -> McuToSoc {
    let mut m = McuToSoc::new();
    m.set_state(VehicleState {
        ignition_on,
        vehicle_in_use: in_use,
        ..Default::default()
    });
    m
}

fn describe(c: &SocToMcu) -> (&'static str, String) {
    match &c.command {
        Some(soc_to_mcu::Command::PowerOn(_)) => ("on", "POWER_ON".to_string()),
        Some(soc_to_mcu::Command::PowerOff(p)) => (
            "power-off",
            format!("POWER_OFF wake_after_s={}", p.wake_after_s),
        ),
        Some(soc_to_mcu::Command::Suspend(s)) => (
            "suspend",
            format!("SUSPEND wake_after_s={}", s.wake_after_s),
        ),
        None => ("unknown", "a message without a command".to_string()),
        // The generated oneof is `#[non_exhaustive]` outside its crate.
        Some(_) => ("unknown", "an unknown command".to_string()),
    }
}

fn say(line: &str) {
    println!("mcu: {line}");
}

/// The connection side: accepts SoC connections, writes messages, prints
/// what comes back.
async fn serve(
    listener: UnixListener,
    mut outgoing: mpsc::UnboundedReceiver<Out>,
    state: watch::Receiver<(bool, bool)>,
    seen: watch::Sender<Seen>,
) {
    let mut conn: Option<tokio::net::UnixStream> = None;
    let mut queued: Vec<Out> = Vec::new();
    let mut dec = FrameDecoder::default();
    let mut buf = [0u8; 1024];
    loop {
        let connected = conn.is_some();
        tokio::select! {
            acc = listener.accept() => {
                let Ok((mut s, _)) = acc else { continue };
                if conn.is_some() {
                    say("SoC reconnected; dropping the old connection");
                }
                say("SoC connected");
                let (ig, used) = *state.borrow();
                let mut ok = s.write_all(&proto::encode(&state_msg(ig, used))).await.is_ok();
                for q in queued.drain(..) {
                    let bytes = match q { Out::Msg(m) => proto::encode(&m), Out::Raw(b) => b };
                    ok &= s.write_all(&bytes).await.is_ok();
                }
                if ok {
                    conn = Some(s);
                    dec = FrameDecoder::default();
                    seen.send_modify(|v| v.connected = true);
                }
            }
            out = outgoing.recv() => {
                let Some(out) = out else { return };
                match conn.as_mut() {
                    Some(s) => {
                        let bytes = match out { Out::Msg(m) => proto::encode(&m), Out::Raw(b) => b };
                        if s.write_all(&bytes).await.is_err() {
                            say("SoC disconnected");
                            conn = None;
                            seen.send_modify(|v| v.connected = false);
                        }
                    }
                    None => {
                        if let Out::Msg(m) = &out {
                            if m.has_wake() {
                                queued.push(out);
                            }
                        }
                    }
                }
            }
            n = async { conn.as_mut().expect("guarded").read(&mut buf).await }, if connected => {
                let n = match n { Ok(0) | Err(_) => 0, Ok(n) => n };
                if n == 0 {
                    say("SoC disconnected");
                    conn = None;
                    seen.send_modify(|v| v.connected = false);
                    continue;
                }
                dec.push(&buf[..n]);
                loop {
                    match dec.next_frame() {
                        Ok(None) => break,
                        Ok(Some(f)) => match proto::decode::<SocToMcu>(&f) {
                            Ok(c) => {
                                let (word, text) = describe(&c);
                                say(&format!("<- {text} ({})", c.reason));
                                seen.send_modify(|v| v.last = Some(word));
                            }
                            Err(e) => say(&format!("<- malformed message ({e}); ignored")),
                        },
                        Err(e) => {
                            say(&format!("<- broken stream ({e}); closing the connection"));
                            conn = None;
                            seen.send_modify(|v| v.connected = false);
                            break;
                        }
                    }
                }
            }
        }
    }
}

fn parse_bool(w: &str) -> Option<bool> {
    match w {
        "on" | "yes" | "true" | "1" => Some(true),
        "off" | "no" | "false" | "0" => Some(false),
        _ => None,
    }
}

fn parse_reason(w: &str) -> Option<WakeReason> {
    if let Ok(n) = w.parse::<i32>() {
        return match n {
            0 => Some(WakeReason::USER_POWER_ON),
            1 => Some(WakeReason::SYSTEM_USER_DETECTION),
            2 => Some(WakeReason::SYSTEM_REMOTE_ACCESS),
            3 => Some(WakeReason::SYSTEM_ENTER_GARAGE_MODE),
            _ => None,
        };
    }
    match w {
        "USER_POWER_ON" => Some(WakeReason::USER_POWER_ON),
        "SYSTEM_USER_DETECTION" => Some(WakeReason::SYSTEM_USER_DETECTION),
        "SYSTEM_REMOTE_ACCESS" => Some(WakeReason::SYSTEM_REMOTE_ACCESS),
        "SYSTEM_ENTER_GARAGE_MODE" => Some(WakeReason::SYSTEM_ENTER_GARAGE_MODE),
        _ => None,
    }
}

fn parse_hex(s: &str) -> Option<Vec<u8>> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

struct Sim {
    ignition: bool,
    in_use: bool,
    state: watch::Sender<(bool, bool)>,
    out: mpsc::UnboundedSender<Out>,
    seen: watch::Receiver<Seen>,
}

impl Sim {
    /// Runs one command; `Ok(false)` ends the simulator.
    async fn command(&mut self, line: &str) -> Result<bool> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let mut m = McuToSoc::new();
        match words.as_slice() {
            [] => return Ok(true),
            [w, ..] if w.starts_with('#') => return Ok(true),
            ["quit"] => return Ok(false),
            ["ignition", v] => {
                self.ignition =
                    parse_bool(v).with_context(|| format!("ignition {v}: expected on or off"))?;
                m.mut_ignition().on = self.ignition;
            }
            ["in-use", v] => {
                self.in_use =
                    parse_bool(v).with_context(|| format!("in-use {v}: expected yes or no"))?;
                m.mut_vehicle_in_use().in_use = self.in_use;
            }
            ["wake", r] => {
                let reason = parse_reason(r).with_context(|| format!("unknown wake reason {r}"))?;
                m.mut_wake().reason = reason.into();
            }
            ["raw", hex @ ..] => {
                let bytes = parse_hex(&hex.join("")).context("raw: expected hex bytes")?;
                say(&format!("-> {} raw bytes", bytes.len()));
                let _ = self.out.send(Out::Raw(bytes));
                return Ok(true);
            }
            ["sleep", s] => {
                let secs: f64 = s
                    .parse()
                    .with_context(|| format!("sleep {s}: not a number"))?;
                tokio::time::sleep(Duration::from_secs_f64(secs.max(0.0))).await;
                return Ok(true);
            }
            ["wait", what, rest @ ..] => {
                let secs: f64 = rest
                    .first()
                    .map_or(Ok(60.0), |s| s.parse())
                    .context("wait: bad timeout")?;
                let what = what.to_string();
                let done = |s: &Seen| match what.as_str() {
                    "connected" => s.connected,
                    w => {
                        s.last
                            == Some(match w {
                                "on" => "on",
                                "power-off" => "power-off",
                                "suspend" => "suspend",
                                _ => "?",
                            })
                    }
                };
                let mut seen = self.seen.clone();
                match tokio::time::timeout(Duration::from_secs_f64(secs), seen.wait_for(done)).await
                {
                    Ok(_) => say(&format!("wait {what}: done")),
                    Err(_) => say(&format!("wait {what}: timed out after {secs} s")),
                }
                return Ok(true);
            }
            ["status"] => {
                let s = self.seen.borrow().clone();
                say(&format!(
                    "ignition {}, in use {}, SoC {}, last command {}",
                    if self.ignition { "on" } else { "off" },
                    if self.in_use { "yes" } else { "no" },
                    if s.connected {
                        "connected"
                    } else {
                        "not connected"
                    },
                    s.last.unwrap_or("none")
                ));
                return Ok(true);
            }
            _ => bail!(
                "unknown command {line:?} (ignition, in-use, wake, raw, sleep, wait, status, quit)"
            ),
        }
        let _ = self.state.send((self.ignition, self.in_use));
        let connected = self.seen.borrow().connected;
        say(&format!(
            "-> {}{}",
            line.trim(),
            if connected {
                ""
            } else {
                " (SoC not connected: sent when it connects)"
            }
        ));
        let _ = self.out.send(Out::Msg(m));
        Ok(true)
    }
}

/// Listens on `socket`, runs `script`, then standard input.
async fn run(socket: PathBuf, script: Option<PathBuf>) -> Result<()> {
    if socket.exists() {
        if tokio::net::UnixStream::connect(&socket).await.is_ok() {
            bail!("something already listens on {}", socket.display());
        }
        let _ = std::fs::remove_file(&socket);
    }
    let listener = UnixListener::bind(&socket)
        .with_context(|| format!("cannot listen on {}", socket.display()))?;
    say(&format!("listening on {}", socket.display()));
    let (out_tx, out_rx) = mpsc::unbounded_channel();
    let (state_tx, state_rx) = watch::channel((false, false));
    let (seen_tx, seen_rx) = watch::channel(Seen::default());
    tokio::spawn(serve(listener, out_rx, state_rx, seen_tx));
    let mut sim = Sim {
        ignition: false,
        in_use: false,
        state: state_tx,
        out: out_tx,
        seen: seen_rx,
    };
    if let Some(path) = script {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        for (n, line) in text.lines().enumerate() {
            match sim.command(line).await {
                Ok(true) => {}
                Ok(false) => return Ok(()),
                Err(e) => bail!("{} line {}: {e:#}", path.display(), n + 1),
            }
        }
    }
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = stdin.next_line().await {
        match sim.command(&line).await {
            Ok(true) => {}
            Ok(false) => return Ok(()),
            Err(e) => say(&format!("error: {e:#}")),
        }
    }
    say("input closed; still serving (send SIGTERM to end)");
    std::future::pending::<()>().await;
    Ok(())
}
