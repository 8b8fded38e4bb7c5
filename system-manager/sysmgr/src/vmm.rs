//! One guest's VMM link: launches the VMM (if the policy has a `launch`
//! command), connects to its control socket, `attach`es as the power
//! arbiter and relays messages both ways (`vmm_protocol` requests out,
//! responses and events in; a malformed line is logged and dropped).
//!
//! The task reports to the daemon's core loop ([`VmmReport`]) and takes
//! commands from it ([`VmmCmd`]). It never interprets events or exit
//! statuses; the core does (`system_manager::vm_gone_input`,
//! `system_manager::start_failed_input`).
//! A VMM is started in its own process group with its output going to
//! `<state-dir>/<guest>.vmm.log` (capped and rotated, `crate::vmm_log`), so it outlives a crash of the daemon and
//! a restarted daemon attaches to it again.

use std::path::PathBuf;
use std::time::Duration;

use system_manager::{StartFailure, VmmExit};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tokio::process::Command;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::{sleep, timeout, Instant};
use vmm_protocol::{Answer, Request, Response, ServerLine, MAX_SERVER_LINE_LEN};

use crate::guest_line;
use crate::guest_log::GuestLines;
use crate::launcher::{self, Launched};
use crate::lines::LineReader;
use crate::pidfd::PidFd;

/// Longest line accepted from a VMM.
const MAX_LINE: usize = MAX_SERVER_LINE_LEN;
/// How long `Start` waits for a VMM's control socket.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a `stop` may take before the VMM process is killed.
const STOP_KILL_AFTER: Duration = Duration::from_secs(5);
/// How long the control connection may stay open after the kill (or after
/// a kill that was not possible: no handle on the VMM) before the link
/// stops waiting and reports the VMM gone: the arbiter keeps a stopping
/// guest stopping until it hears of the exit, so the report must come.
const GONE_AFTER_KILL: Duration = Duration::from_secs(3);
/// How long the link waits for a VMM's process to end once its control
/// connection has closed.
const END_AFTER_CLOSE: Duration = Duration::from_secs(3);
/// How long a request to the VMM may wait for the VMM to read it.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// A command from the core.
#[derive(Debug)]
pub enum VmmCmd {
    /// Attach to a running VMM, or launch one and attach.
    Start,
    /// Attach if a VMM is there (daemon start-up); [`VmmReport::Absent`]
    /// if not.
    Attach,
    /// Send one request (`decide 3 allow`, `pause`, ...).
    Send(Request),
    /// Send `stop`, and kill the process if it is still there after a while.
    /// With no VMM attached: kill what is left of the last one, if the link
    /// has a handle on it. During a `Start`: carried out once the start
    /// ends, as `stop` to the VMM it attached to, or, if it failed, as a
    /// kill of what it launched, whose end is then the one report of this
    /// stop and the start: [`VmmReport::Gone`] with `report_gone`, else
    /// [`VmmReport::StartFailed`].
    Stop {
        /// The daemon knows of no VMM attached or being attached, so no
        /// closing connection will report this VMM gone: with none attached,
        /// the link reports it [`VmmReport::Gone`] itself once the process
        /// it killed has ended (or at most 3 s after the kill).
        report_gone: bool,
    },
}

/// What the link tells the core.
#[derive(Debug)]
pub enum VmmReport {
    /// Attached (`ok attached` received); events follow.
    Attached {
        /// Pid of the VMM, if the daemon knows it.
        pid: Option<u32>,
    },
    /// An event or response.
    Line(ServerLine),
    /// `Attach` found no VMM.
    Absent,
    /// The connection closed: the VMM is gone. `exit` is known for a VMM
    /// this daemon process launched.
    Gone {
        /// How the process ended.
        exit: Option<VmmExit>,
    },
    /// `Start` failed (launch failed, or no control socket in time). After
    /// a `Stop` that came during the start, only once the killed process
    /// has ended (or at most 3 s after the kill).
    StartFailed {
        /// Why.
        why: String,
        /// What is known about the VMM process.
        failure: StartFailure,
    },
}

/// Where a guest's VMM is.
#[derive(Clone, Debug)]
pub struct VmmConfig {
    /// Guest name (for messages).
    pub guest: String,
    /// The control socket.
    pub socket: PathBuf,
    /// The launch command, if the daemon starts the VMM.
    pub launch: Option<Vec<String>>,
    /// Output file of a launched VMM.
    pub log: PathBuf,
    /// Pid file of a launched VMM.
    pub pid_file: PathBuf,
    /// The uid the VMM must run as (the guest's `vmm_user`); `None`: the
    /// daemon's allowed peers.
    pub vmm_uid: Option<u32>,
}

/// Checks the peer of a connection to a guest's VMM: its `vmm_user`'s uid
/// (or root) when it has one, the daemon's allowed peers otherwise.
pub fn check_vmm_peer(
    socket: &impl std::os::fd::AsRawFd,
    vmm_uid: Option<u32>,
) -> Result<libc::ucred, sandbox::socket::PeerError> {
    match vmm_uid {
        Some(uid) => sandbox::socket::check_peer_among(socket, &[uid, 0]),
        None => sandbox::socket::check_peer(socket),
    }
}

/// Runs the link until the command channel closes.
pub async fn run(cfg: VmmConfig, mut cmds: UnboundedReceiver<VmmCmd>, report: impl Fn(VmmReport)) {
    let mut child: Option<Launched> = None;
    // The pidfd of the VMM last attached to (from the control socket's
    // peer credentials; guests with a `launch` command only): how a VMM
    // an earlier daemon started is killed.
    let mut peer: Option<PidFd> = None;
    let mut failures: u32 = 0;
    // A guest that reboots or powers off in a loop makes these lines.
    let mut guest_lines = GuestLines::default();
    while let Some(cmd) = cmds.recv().await {
        let mut queued = Vec::new();
        // A `Stop` that came while a start was in progress (`Some`; `true`
        // if one asked for a report of the VMM's end).
        let mut stop_queued: Option<bool> = None;
        let stream = match cmd {
            VmmCmd::Send(request) => {
                tracing::warn!("{}: no VMM attached; `{request}` not sent", cfg.guest);
                continue;
            }
            VmmCmd::Stop { report_gone } => {
                kill_vmm(&cfg, child.as_ref(), peer.as_ref());
                if report_gone {
                    // No connection is left to close: the end of the
                    // killed process is the sign, as it is after an
                    // attached VMM's connection closed (below).
                    let exit = gone(&cfg, &mut child, peer.as_ref(), GONE_AFTER_KILL).await;
                    report(VmmReport::Gone { exit });
                }
                continue;
            }
            VmmCmd::Attach => match attach(&cfg).await {
                Ok(s) => s,
                Err(_) => {
                    report(VmmReport::Absent);
                    continue;
                }
            },
            VmmCmd::Start => {
                if failures > 0 {
                    // Crash-loop brake: 1 s, 2 s, 4 s, ... at most 30 s.
                    let backoff =
                        Duration::from_secs(1 << failures.min(5)).min(Duration::from_secs(30));
                    tracing::warn!(
                        "{}: start attempt {} in {backoff:?}",
                        cfg.guest,
                        failures + 1
                    );
                    sleep(backoff).await;
                }
                let started = start(
                    &cfg,
                    &mut child,
                    &mut cmds,
                    &mut queued,
                    &mut stop_queued,
                    &mut guest_lines,
                )
                .await;
                match started {
                    Ok(s) => s,
                    Err(e) => {
                        // A start a stop ended is no crash: no back-off.
                        if stop_queued.is_none() {
                            failures += 1;
                        }
                        // A stop that came during the start is carried out
                        // as one with no VMM attached: what was launched
                        // (it may run on without answering) is killed, and
                        // nothing is reported before its end (at most 3 s
                        // after the kill), else a start that follows would
                        // meet it. The one report of that end is `Gone` if
                        // the stop asked for it, else this start's failure.
                        let ended = match stop_queued {
                            Some(report_gone) => {
                                kill_vmm(&cfg, child.as_ref(), peer.as_ref());
                                let exit =
                                    gone(&cfg, &mut child, peer.as_ref(), GONE_AFTER_KILL).await;
                                if report_gone {
                                    report(VmmReport::Gone { exit });
                                    continue;
                                }
                                exit
                            }
                            None => None,
                        };
                        let (why, failure) = match e {
                            StartError::LaunchFailed(why) => (why, StartFailure::LaunchFailed),
                            StartError::NoAnswer(why) => {
                                let exit = match stop_queued {
                                    Some(_) => ended,
                                    None => reap(&mut child, Duration::from_millis(500)).await,
                                };
                                match exit {
                                    Some(exit) => (why, StartFailure::Exited(exit)),
                                    None => (why, StartFailure::NoAnswer),
                                }
                            }
                        };
                        report(VmmReport::StartFailed { why, failure });
                        continue;
                    }
                }
            }
        };
        failures = 0;
        let (stream, fd) = stream;
        if fd.is_some() {
            peer = fd;
        }
        let pid = child
            .as_ref()
            .map(Launched::id)
            .or(peer.as_ref().map(PidFd::pid));
        report(VmmReport::Attached { pid });
        let (read, mut write) = stream.into_split();
        let mut lines = LineReader::new(read, MAX_LINE);
        // A `stop` queued while the VMM was being started is a `Stop`
        // like any other: the kill follows if need be.
        let mut kill_at: Option<Instant> = queued
            .contains(&Request::Stop)
            .then(|| Instant::now() + STOP_KILL_AFTER);
        for request in queued {
            send(&mut write, request, &cfg.guest).await;
        }
        // Set once the VMM was killed: when the link gives up waiting for
        // the connection to close.
        let mut give_up_at: Option<Instant> = None;
        loop {
            tokio::select! {
                line = lines.next_line() => match line {
                    Ok(l) => match l.parse() {
                        Ok(line) => report(VmmReport::Line(line)),
                        Err(e) => guest_line!(guest_lines, warn, "{}: malformed line from the VMM ({e}): {l:?}", cfg.guest),
                    },
                    Err(e) => {
                        tracing::debug!("{}: control connection ended ({e:?})", cfg.guest);
                        break;
                    }
                },
                cmd = cmds.recv() => match cmd {
                    None => return,
                    Some(VmmCmd::Send(r)) => send(&mut write, r, &cfg.guest).await,
                    Some(VmmCmd::Stop { .. }) => {
                        send(&mut write, Request::Stop, &cfg.guest).await;
                        // A repeated `Stop` (the arbiter's exit grace ran
                        // out) never puts off a kill already due.
                        if kill_at.is_none() && give_up_at.is_none() {
                            kill_at = Some(Instant::now() + STOP_KILL_AFTER);
                        }
                    }
                    Some(VmmCmd::Start | VmmCmd::Attach) => {
                        tracing::debug!("{}: already attached", cfg.guest);
                    }
                },
                _ = tokio::time::sleep_until(kill_at.unwrap_or_else(Instant::now)), if kill_at.is_some() => {
                    tracing::warn!("{}: VMM did not stop in {STOP_KILL_AFTER:?}; killing it", cfg.guest);
                    kill_vmm(&cfg, child.as_ref(), peer.as_ref());
                    kill_at = None;
                    give_up_at = Some(Instant::now() + GONE_AFTER_KILL);
                }
                _ = tokio::time::sleep_until(give_up_at.unwrap_or_else(Instant::now)), if give_up_at.is_some() => {
                    tracing::warn!(
                        "{}: control connection still open {GONE_AFTER_KILL:?} after the kill; treating the VMM as gone",
                        cfg.guest
                    );
                    break;
                }
            }
        }
        let exit = gone(&cfg, &mut child, peer.as_ref(), END_AFTER_CLOSE).await;
        report(VmmReport::Gone { exit });
    }
}

/// The end of the guest's VMM, as the link reports it (its exit status,
/// when known): after its control connection closed, or after the kill of
/// a VMM none was attached to (also one a failed start had launched).
/// Waits (at most `wait`) for the VMM's process to end: one this daemon
/// launched is reaped and its exit status taken; one known only by its
/// pidfd (an earlier daemon launched it) is watched through that. Then
/// removes the pid file. So the daemon hears of the end of a VMM whose
/// process still runs only when it did not end in time, or when the link
/// has no handle on it (a VMM it did not launch).
async fn gone(
    cfg: &VmmConfig,
    child: &mut Option<Launched>,
    peer: Option<&PidFd>,
    wait: Duration,
) -> Option<VmmExit> {
    let exit = match (child.as_ref().map(Launched::id), peer) {
        (Some(pid), _) => {
            let exit = reap(child, wait).await;
            if exit.is_none() {
                tracing::warn!(
                    "{}: no exit status of VMM pid {pid} within {wait:?}; reporting it gone",
                    cfg.guest
                );
            }
            exit
        }
        (None, Some(fd)) => {
            match timeout(wait, fd.exited()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(
                    "{}: cannot watch VMM pid {} end: {e}; reporting it gone",
                    cfg.guest,
                    fd.pid()
                ),
                Err(_) => tracing::warn!(
                    "{}: VMM pid {} still running {wait:?} later; reporting it gone",
                    cfg.guest,
                    fd.pid()
                ),
            }
            None
        }
        (None, None) => None,
    };
    let _ = std::fs::remove_file(&cfg.pid_file);
    exit
}

/// Sends one request, waiting at most [`SEND_TIMEOUT`]: a VMM that stops
/// reading its control socket must not hold this guest's task (a `Stop`
/// then still arms its kill timer). A request that timed out is lost
/// (logged), never half-sent: a unix stream socket queues a write of up to
/// half its send buffer whole or not at all, and requests are at most
/// `MAX_REQUEST_LEN` (256) bytes, so the next request starts a clean line.
async fn send(write: &mut OwnedWriteHalf, request: Request, guest: &str) {
    tracing::debug!("{guest}: -> {request}");
    send_within(write, &format!("{request}\n"), SEND_TIMEOUT)
        .await
        .unwrap_or_else(|e| tracing::warn!("{guest}: cannot send `{request}` to the VMM: {e}"));
}

async fn send_within<W: AsyncWrite + Unpin>(
    write: &mut W,
    line: &str,
    limit: Duration,
) -> Result<(), String> {
    match tokio::time::timeout(limit, write.write_all(line.as_bytes())).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("the VMM has not read it for {limit:?}")),
    }
}

/// Connects and sends `attach`; the first line must be `ok attached`.
/// Also returns a pidfd of the VMM: opened for the socket's peer pid
/// (`SO_PEERCRED`) before `attach` is sent, so the answer proves that
/// process was still alive after the pidfd was opened, i.e. the pidfd is
/// the VMM's and not a later process's that reused the pid.
async fn attach(cfg: &VmmConfig) -> Result<(UnixStream, Option<PidFd>), String> {
    let mut s = UnixStream::connect(&cfg.socket)
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", cfg.socket.display()))?;
    // Only a VMM of an allowed uid may steer this guest's arbitration.
    let cred = check_vmm_peer(&s, cfg.vmm_uid).map_err(|e| {
        tracing::warn!(
            "{}: not attaching to {}: {e}",
            cfg.guest,
            cfg.socket.display()
        );
        format!("{}: {e}", cfg.socket.display())
    })?;
    // Only for a guest the daemon launches (this daemon or an earlier
    // one): a VMM someone else started is theirs to kill.
    let pidfd = u32::try_from(cred.pid)
        .ok()
        .filter(|_| cfg.launch.is_some())
        .and_then(|pid| match PidFd::open(pid) {
            Ok(fd) => Some(fd),
            Err(e) => {
                tracing::warn!("{}: no pidfd for the VMM (pid {pid}): {e}", cfg.guest);
                None
            }
        });
    s.write_all(format!("{}\n", Request::Attach).as_bytes())
        .await
        .map_err(|e| format!("cannot attach: {e}"))?;
    // Read the answer byte by byte so no event line is swallowed.
    let mut answer = Vec::new();
    let read = async {
        let mut b = [0u8; 1];
        loop {
            use tokio::io::AsyncReadExt;
            match s.read(&mut b).await {
                Ok(1) if b[0] == b'\n' => return Ok(()),
                Ok(1) if answer.len() < MAX_LINE => answer.push(b[0]),
                Ok(_) => return Err("connection closed".to_string()),
                Err(e) => return Err(e.to_string()),
            }
        }
    };
    timeout(Duration::from_secs(5), read)
        .await
        .map_err(|_| "no answer to attach".to_string())??;
    let answer = String::from_utf8_lossy(&answer);
    match answer.parse::<Response>() {
        Ok(Response::Ok(Answer::Attached)) => Ok((s, pidfd)),
        _ => Err(format!("attach refused: {}", answer.trim())),
    }
}

/// Why [`start`] failed.
enum StartError {
    /// The launch command could not be run (no process).
    LaunchFailed(String),
    /// Nothing answered on the control socket (in time).
    NoAnswer(String),
}

/// Attaches to the guest's VMM, launching it first if there is none and
/// the policy says how. Requests that arrive meanwhile are queued; a
/// `Stop` ends the start at once (failed), noted in `stop_queued` (`true`
/// if it asked for a report of the VMM's end): the caller carries it out.
async fn start(
    cfg: &VmmConfig,
    child: &mut Option<Launched>,
    cmds: &mut UnboundedReceiver<VmmCmd>,
    queued: &mut Vec<Request>,
    stop_queued: &mut Option<bool>,
    lines: &mut GuestLines,
) -> Result<(UnixStream, Option<PidFd>), StartError> {
    if let Ok(s) = attach(cfg).await {
        return Ok(s);
    }
    let running = child.as_ref().is_some_and(|c| c.try_wait().is_none());
    match (&cfg.launch, running) {
        (Some(argv), false) => {
            // An earlier process that ended is not this start's.
            *child = None;
            *child = Some(
                launch(cfg, argv, lines)
                    .await
                    .map_err(StartError::LaunchFailed)?,
            );
        }
        (Some(_), true) => {}
        (None, _) => tracing::info!(
            "{}: no launch command; waiting for a VMM on {}",
            cfg.guest,
            cfg.socket.display()
        ),
    }
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(s) = attach(cfg).await {
            return Ok(s);
        }
        if let Some(exit) = child.as_ref().and_then(Launched::try_wait) {
            return Err(StartError::NoAnswer(format!(
                "the VMM exited before it could be attached (code {:?}, signal {:?})",
                exit.code, exit.signal
            )));
        }
        if Instant::now() >= deadline {
            return Err(StartError::NoAnswer(format!(
                "no VMM answered on {} within {START_TIMEOUT:?}",
                cfg.socket.display()
            )));
        }
        tokio::select! {
            _ = sleep(Duration::from_millis(100)) => {}
            cmd = cmds.recv() => match cmd {
                Some(VmmCmd::Send(r)) => queued.push(r),
                Some(VmmCmd::Stop { report_gone }) => {
                    // Not waited out (up to START_TIMEOUT): the caller
                    // kills what was launched and reports its end now.
                    *stop_queued = Some(report_gone);
                    return Err(StartError::NoAnswer("stopped during start".into()));
                }
                Some(VmmCmd::Start | VmmCmd::Attach) => {}
                None => return Err(StartError::NoAnswer("daemon shutting down".into())),
            }
        }
    }
}

/// Starts the guest's VMM: through the launcher process when the daemon is
/// sandboxed (`crate::launcher`), else as this process's child.
async fn launch(
    cfg: &VmmConfig,
    argv: &[String],
    lines: &mut GuestLines,
) -> Result<Launched, String> {
    if let Some(l) = launcher::installed() {
        let launched = l.launch(&cfg.guest).await?;
        guest_line!(
            lines,
            info,
            "{}: launched VMM pid {} (by the launcher process)",
            cfg.guest,
            launched.id()
        );
        return Ok(launched);
    }
    let (command, program) = launcher::vmm_command(argv, &cfg.log)?;
    let mut child = Command::from(command)
        .spawn()
        .map_err(|e| format!("cannot launch {program}: {e}"))?;
    let pid = child
        .id()
        .ok_or_else(|| format!("{program} ended at once"))?;
    // Not reaped yet (the wait below has not started): the pid is the child's.
    let pidfd = PidFd::open(pid)
        .map_err(|e| tracing::warn!("{}: no pidfd for VMM pid {pid}: {e}", cfg.guest))
        .ok();
    let _ = std::fs::write(&cfg.pid_file, format!("{pid}\n"));
    guest_line!(
        lines,
        info,
        "{}: launched VMM pid {pid} ({program})",
        cfg.guest
    );
    let (tx, rx) = tokio::sync::watch::channel(None);
    tokio::spawn(async move {
        use std::os::unix::process::ExitStatusExt;
        if let Ok(status) = child.wait().await {
            let _ = tx.send(Some(VmmExit {
                code: status.code(),
                signal: status.signal(),
            }));
        }
    });
    Ok(Launched::watching(pid, rx, pidfd))
}

/// SIGKILL to the guest's VMM, never by a bare pid: one this daemon
/// launched through the launcher process, by the launcher (through its
/// pidfd); one it launched itself, through the pidfd opened at spawn;
/// one an earlier daemon launched, through the pidfd opened when it was
/// last attached, and if that VMM runs as a uid this sandboxed process may
/// not signal (its guest's `vmm_user`: `EPERM`), by the launcher through a
/// copy of that pidfd (it checks the process's uid first).
fn kill_vmm(cfg: &VmmConfig, child: Option<&Launched>, peer: Option<&PidFd>) {
    if let (Some(l), Some(_)) = (launcher::installed(), child) {
        tracing::warn!("{}: killing the VMM", cfg.guest);
        l.kill(&cfg.guest);
        return;
    }
    let Some(fd) = child.and_then(Launched::pidfd).or(peer) else {
        tracing::warn!(
            "{}: no handle on the VMM (never attached to it); cannot kill it",
            cfg.guest
        );
        return;
    };
    match (fd.kill(), launcher::installed()) {
        (Ok(()), _) => tracing::warn!("{}: killed VMM pid {}", cfg.guest, fd.pid()),
        // With a launcher installed, `fd` is the peer's: this daemon's own
        // VMMs went to the launcher above.
        (Err(e), Some(l)) if e.raw_os_error() == Some(libc::EPERM) => {
            match l.kill_adopted(&cfg.guest, fd) {
                Ok(()) => tracing::warn!(
                    "{}: VMM pid {} runs as another uid; the launcher process is asked to kill it",
                    cfg.guest,
                    fd.pid()
                ),
                Err(e) => tracing::warn!("{}: VMM pid {} not killed: {e}", cfg.guest, fd.pid()),
            }
        }
        (Err(e), _) => tracing::info!("{}: VMM pid {} not killed: {e}", cfg.guest, fd.pid()),
    }
}

/// Waits (at most `wait`) for a launched VMM to end and takes its status.
async fn reap(child: &mut Option<Launched>, wait: Duration) -> Option<VmmExit> {
    let c = child.as_mut()?;
    let exit = timeout(wait, c.wait()).await.ok()??;
    *child = None;
    Some(exit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn a_send_to_a_vmm_that_stops_reading_gives_up() {
        let (mut ours, _vmm) = UnixStream::pair().unwrap();
        // Far more than a socket buffer holds; the VMM end never reads.
        let line = "x".repeat(8 << 20);
        let e = send_within(&mut ours, &line, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(e.contains("has not read it"), "{e}");
        // A short line to a reading peer goes through.
        let (mut ours, mut vmm) = UnixStream::pair().unwrap();
        send_within(&mut ours, "stop\n", Duration::from_secs(5))
            .await
            .unwrap();
        let mut got = [0u8; 5];
        tokio::io::AsyncReadExt::read_exact(&mut vmm, &mut got)
            .await
            .unwrap();
        assert_eq!(&got, b"stop\n");
    }
}
