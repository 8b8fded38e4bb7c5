//! The Android guest's VHAL power channel, host side.
//!
//! The channel is a vsock stream: the daemon connects to the guest's port
//! (default 4100) through the VMM's hybrid vsock socket (`CONNECT <port>\n`,
//! answered `OK <host port>\n`, see `docs/vsock.md`). On it, both directions
//! carry text lines of at most 64 bytes holding the VHAL property values
//! unchanged (decimal `int32`s):
//!
//! ```text
//! host -> guest:  AP_POWER_STATE_REQ <value> <param>
//! guest -> host:  AP_POWER_STATE_REPORT <value> <param>
//! ```
//!
//! `AP_POWER_STATE_REQ` is state: the daemon sends its current value (if
//! the arbiter has set one) on every new connection, then every change.
//! The guest typically starts with `AP_POWER_STATE_REPORT 1 0`
//! (`WAIT_FOR_VHAL`), which the arbiter answers. The daemon connects while
//! the guest's VM is live and reconnects (every second) after the guest
//! closes the channel or its VM restarts. A line that is not a report is
//! logged and ignored; a line over 64 bytes closes the connection.

use std::path::PathBuf;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::{sleep_until, timeout, Instant};

use crate::guest_line;
use crate::guest_log::GuestLines;
use crate::lines::{LineEnd, LineReader};

/// Longest line on the channel.
pub const MAX_LINE: usize = 64;
/// Pause between connection attempts.
const RETRY: Duration = Duration::from_secs(1);

/// A command from the core.
#[derive(Debug)]
pub enum VhalCmd {
    /// Whether the channel should be up (the guest's VM is live).
    Want(bool),
    /// A new `AP_POWER_STATE_REQ` value.
    Req([i32; 2]),
}

/// What the channel tells the core.
#[derive(Debug, PartialEq, Eq)]
pub enum VhalReport {
    /// Connected to the guest.
    Connected,
    /// The connection ended.
    Disconnected,
    /// `AP_POWER_STATE_REPORT [value, param]`.
    Report(i32, i32),
    /// A line that is not a report.
    Garbage(String),
}

/// The REQ line for `[value, param]`.
pub fn req_line(req: [i32; 2]) -> String {
    format!("AP_POWER_STATE_REQ {} {}", req[0], req[1])
}

/// Parses a guest line.
pub fn parse_report(line: &str) -> VhalReport {
    let words: Vec<&str> = line.split_whitespace().collect();
    if let ["AP_POWER_STATE_REPORT", v, p] = words.as_slice() {
        if let (Ok(v), Ok(p)) = (v.parse(), p.parse()) {
            return VhalReport::Report(v, p);
        }
    }
    VhalReport::Garbage(line.chars().take(MAX_LINE).collect())
}

/// Where the guest's channel is.
#[derive(Clone, Debug)]
pub struct VhalConfig {
    /// Guest name (for messages).
    pub guest: String,
    /// The VMM's hybrid vsock socket.
    pub socket: PathBuf,
    /// The guest's port.
    pub port: u32,
    /// The uid the VMM must run as (the guest's `vmm_user`).
    pub vmm_uid: Option<u32>,
}

/// Connects through the hybrid vsock socket.
async fn connect(cfg: &VhalConfig) -> Result<UnixStream, String> {
    let attempt = async {
        let mut s = UnixStream::connect(&cfg.socket)
            .await
            .map_err(|e| e.to_string())?;
        crate::vmm::check_vmm_peer(&s, cfg.vmm_uid).map_err(|e| e.to_string())?;
        s.write_all(format!("CONNECT {}\n", cfg.port).as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut answer = Vec::new();
        let mut b = [0u8; 1];
        loop {
            use tokio::io::AsyncReadExt;
            match s.read(&mut b).await {
                Ok(1) if b[0] == b'\n' => break,
                Ok(1) if answer.len() < 32 => answer.push(b[0]),
                _ => return Err("refused (nothing listens on the port yet)".to_string()),
            }
        }
        if answer.starts_with(b"OK ") {
            Ok(s)
        } else {
            Err(format!(
                "unexpected answer {:?}",
                String::from_utf8_lossy(&answer)
            ))
        }
    };
    timeout(Duration::from_secs(7), attempt)
        .await
        .map_err(|_| "timed out".to_string())?
}

async fn write_req(w: &mut OwnedWriteHalf, req: [i32; 2]) -> bool {
    tracing::debug!("VHAL -> {}", req_line(req));
    w.write_all(format!("{}\n", req_line(req)).as_bytes())
        .await
        .is_ok()
}

/// Runs the channel until the command channel closes.
pub async fn run(
    cfg: VhalConfig,
    mut cmds: UnboundedReceiver<VhalCmd>,
    report: impl Fn(VhalReport),
) {
    let mut want = false;
    let mut req: Option<[i32; 2]> = None;
    let mut conn: Option<(LineReader<tokio::net::unix::OwnedReadHalf>, OwnedWriteHalf)> = None;
    let mut next_try = Instant::now();
    let mut failures = 0u32;
    // The guest decides how often its channel connects and what it sends.
    let mut lines = GuestLines::default();
    loop {
        if conn.is_none() && want && Instant::now() >= next_try {
            match connect(&cfg).await {
                Ok(s) => {
                    guest_line!(
                        lines,
                        info,
                        "{}: VHAL channel connected (vsock port {})",
                        cfg.guest,
                        cfg.port
                    );
                    failures = 0;
                    let (r, mut w) = s.into_split();
                    let ok = match req {
                        Some(q) => write_req(&mut w, q).await,
                        None => true,
                    };
                    if ok {
                        report(VhalReport::Connected);
                        conn = Some((LineReader::new(r, MAX_LINE), w));
                    }
                }
                Err(e) => {
                    failures += 1;
                    if failures == 1 || failures % 30 == 0 {
                        tracing::debug!("{}: VHAL channel: {e}; retrying", cfg.guest);
                    }
                }
            }
            next_try = Instant::now() + RETRY;
        }
        let connected = conn.is_some();
        tokio::select! {
            cmd = cmds.recv() => match cmd {
                None => return,
                Some(VhalCmd::Want(w)) => {
                    want = w;
                    if !w && conn.take().is_some() {
                        report(VhalReport::Disconnected);
                    }
                }
                Some(VhalCmd::Req(q)) => {
                    req = Some(q);
                    if let Some((_, w)) = conn.as_mut() {
                        if !write_req(w, q).await {
                            conn = None;
                            report(VhalReport::Disconnected);
                        }
                    }
                }
            },
            line = async { conn.as_mut().map(|(r, _)| r).expect("guarded").next_line().await }, if connected => {
                match line {
                    Ok(l) => report(parse_report(&l)),
                    Err(e) => {
                        if e == LineEnd::TooLong {
                            guest_line!(lines, warn, "{}: VHAL line longer than {MAX_LINE} bytes; closing the channel", cfg.guest);
                        }
                        conn = None;
                        report(VhalReport::Disconnected);
                        next_try = Instant::now() + RETRY;
                    }
                }
            },
            _ = sleep_until(next_try), if !connected && want => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format() {
        assert_eq!(req_line([1, 3]), "AP_POWER_STATE_REQ 1 3");
        assert_eq!(
            parse_report("AP_POWER_STATE_REPORT 4 5000"),
            VhalReport::Report(4, 5000)
        );
        assert_eq!(
            parse_report(" AP_POWER_STATE_REPORT  -1 0 "),
            VhalReport::Report(-1, 0)
        );
        assert!(matches!(
            parse_report("AP_POWER_STATE_REPORT 4"),
            VhalReport::Garbage(_)
        ));
        assert!(matches!(
            parse_report("AP_POWER_STATE_REPORT x 1"),
            VhalReport::Garbage(_)
        ));
        assert!(matches!(
            parse_report("AP_POWER_STATE_REPORT 99999999999 1"),
            VhalReport::Garbage(_)
        ));
        assert!(matches!(parse_report("hello"), VhalReport::Garbage(_)));
    }
}
