//! The VMM's control socket: a line protocol over a unix stream socket.
//!
//! Spec: `docs/vmm-control.md`. Each request is one line; each gets one
//! response line, `ok ...` or `error ...`. A connection may send many
//! requests. `attach` (become the power arbiter) and `events` (watch) keep
//! the connection subscribed: event lines (`event ...`) are then written to
//! it as they happen, interleaved with responses.
//!
//! | request               | response                                  |
//! |-----------------------|-------------------------------------------|
//! | `status`              | `ok state=S arbitrated=B pending=N boots=G` |
//! | `stop`                | `ok stopping` (the VMM exits 0)           |
//! | `pause` / `resume`    | `ok paused` / `ok resumed`                |
//! | `power-button`        | `ok pressed`                              |
//! | `attach`              | `ok attached`, then events                |
//! | `events`              | `ok subscribed`, then events              |
//! | `decide ID DECISION`  | `ok decided`                              |
//!
//! `vmm status|stop|pause|resume|power-button SOCKET` are the one-shot
//! clients.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::time::Duration;

use crate::power::Decision;
use crate::runner::VmEvent;

/// Errors on the control socket.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Binding the socket failed.
    #[error("cannot create control socket {path}: {source}")]
    Bind {
        /// Socket path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Talking to a VMM's socket failed.
    #[error("cannot talk to the VMM at {path}: {source} (is it running?)")]
    Client {
        /// Socket path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The VMM answered with an error.
    #[error("VMM refused the request: {0}")]
    Refused(String),
}

/// A request understood by the control socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlRequest {
    /// Report the VM state.
    Status,
    /// Stop the VM and exit.
    Stop,
    /// Park the vCPUs.
    Pause,
    /// Resume a paused, suspended or virtually-off VM.
    Resume,
    /// Press the ACPI power button.
    PowerButton,
    /// Answer a held power request.
    Decide(u64, Decision),
    /// Become the power arbiter and receive events.
    Attach,
    /// Receive events.
    Events,
}

impl ControlRequest {
    /// Parses one request line.
    pub fn parse(line: &str) -> Result<Self, String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        Ok(match words.as_slice() {
            ["status"] => Self::Status,
            ["stop"] => Self::Stop,
            ["pause"] => Self::Pause,
            ["resume"] => Self::Resume,
            ["power-button"] => Self::PowerButton,
            ["attach"] => Self::Attach,
            ["events"] => Self::Events,
            ["decide", id, decision] => {
                let id = id
                    .parse()
                    .map_err(|_| format!("request id '{id}' is not a number"))?;
                let decision = decision.parse::<Decision>().map_err(|e| e.to_string())?;
                Self::Decide(id, decision)
            }
            _ => return Err(format!("unknown request '{}'", line.trim().escape_debug())),
        })
    }

    /// The request's wire spelling (for one-shot requests).
    pub fn as_line(self) -> String {
        match self {
            Self::Status => "status".into(),
            Self::Stop => "stop".into(),
            Self::Pause => "pause".into(),
            Self::Resume => "resume".into(),
            Self::PowerButton => "power-button".into(),
            Self::Attach => "attach".into(),
            Self::Events => "events".into(),
            Self::Decide(id, d) => format!("decide {id} {}", format!("{d:?}").to_lowercase()),
        }
    }
}

static NEXT_CONNECTION: AtomicU64 = AtomicU64::new(1);

/// Serves the socket at `path` on a background thread, forwarding requests
/// to the VMM's event loop. A stale socket file is replaced.
pub fn serve(path: &Path, events: Sender<VmEvent>) -> Result<(), ControlError> {
    let bind_err = |source| ControlError::Bind {
        path: path.display().to_string(),
        source,
    };
    if path.exists() && UnixStream::connect(path).is_err() {
        std::fs::remove_file(path).map_err(bind_err)?;
    }
    let listener = UnixListener::bind(path).map_err(bind_err)?;
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                let events = events.clone();
                let spawned = std::thread::Builder::new()
                    .name("control-conn".into())
                    .spawn(move || {
                        if let Err(e) = handle(stream, &events) {
                            tracing::debug!("control connection ended: {e}");
                        }
                    });
                if let Err(e) = spawned {
                    tracing::warn!("cannot serve a control connection: {e}");
                }
            }
        })
        .map_err(bind_err)?;
    Ok(())
}

fn handle(stream: UnixStream, events: &Sender<VmEvent>) -> std::io::Result<()> {
    let id = NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed);
    let mut writer = stream.try_clone()?;
    writer.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut subscribed = false;
    let mut reader = BufReader::new(stream);
    let result = loop {
        let mut line = String::new();
        match (&mut reader).take(256).read_line(&mut line) {
            Ok(0) => break Ok(()),
            Ok(_) => {}
            Err(e) => break Err(e),
        }
        if line.trim().is_empty() {
            continue;
        }
        let response = match ControlRequest::parse(&line) {
            Err(e) => format!("error {e}"),
            Ok(request @ (ControlRequest::Attach | ControlRequest::Events)) => {
                // The event loop writes the response itself, so that it
                // precedes every event on this stream.
                let sent = writer.try_clone().map(|stream| {
                    events.send(VmEvent::Subscribe {
                        connection: id,
                        stream,
                        arbiter: request == ControlRequest::Attach,
                    })
                });
                match sent {
                    Ok(Ok(())) => {
                        subscribed = true;
                        continue;
                    }
                    _ => "error VMM is exiting".into(),
                }
            }
            Ok(request) => {
                let (reply_tx, reply_rx) = channel();
                if events
                    .send(VmEvent::Control {
                        request,
                        reply: reply_tx,
                    })
                    .is_err()
                {
                    "error VMM is exiting".into()
                } else {
                    reply_rx
                        .recv()
                        .unwrap_or_else(|_| "error VMM is exiting".into())
                }
            }
        };
        // Subscribed connections share the writer with the event loop; the
        // loop writes whole lines, so a response is never split.
        writer.write_all(format!("{response}\n").as_bytes())?;
    };
    if subscribed {
        let _ = events.send(VmEvent::Unsubscribe { connection: id });
    }
    result
}

/// Sends one `request` to the VMM at `path` and returns its `ok` answer.
pub fn send(path: &Path, request: ControlRequest) -> Result<String, ControlError> {
    let client_err = |source| ControlError::Client {
        path: path.display().to_string(),
        source,
    };
    let mut stream = UnixStream::connect(path).map_err(client_err)?;
    stream
        .write_all(format!("{}\n", request.as_line()).as_bytes())
        .map_err(client_err)?;
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .map_err(client_err)?;
    let answer = answer.trim().to_string();
    match answer.strip_prefix("ok") {
        Some(rest) => Ok(rest.trim().to_string()),
        None => Err(ControlError::Refused(answer)),
    }
}

/// Subscribes to the VMM at `path` (as the power arbiter if `arbiter`) and
/// calls `on_line` for every event line until the VMM closes the socket.
pub fn watch(
    path: &Path,
    arbiter: bool,
    mut on_line: impl FnMut(&str),
) -> Result<(), ControlError> {
    let client_err = |source| ControlError::Client {
        path: path.display().to_string(),
        source,
    };
    let mut stream = UnixStream::connect(path).map_err(client_err)?;
    let request = if arbiter { "attach\n" } else { "events\n" };
    stream.write_all(request.as_bytes()).map_err(client_err)?;
    let mut reader = BufReader::new(stream);
    let mut first = String::new();
    reader.read_line(&mut first).map_err(client_err)?;
    if !first.starts_with("ok") {
        return Err(ControlError::Refused(first.trim().to_string()));
    }
    for line in reader.lines() {
        on_line(&line.map_err(client_err)?);
    }
    Ok(())
}

use std::io::Read as _;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_round_trip() {
        for line in [
            "status",
            "stop",
            "pause",
            "resume",
            "power-button",
            "attach",
            "events",
            "decide 7 hold",
        ] {
            let r = ControlRequest::parse(line).unwrap();
            assert_eq!(r.as_line(), line);
        }
        assert!(ControlRequest::parse("decide x allow").is_err());
        assert!(ControlRequest::parse("decide 1 maybe").is_err());
        assert!(ControlRequest::parse("reboot now").is_err());
    }

    #[test]
    fn requests_reach_the_loop_and_answers_come_back() {
        let path = std::env::temp_dir().join(format!("vmm-ctl-{}.sock", std::process::id()));
        let (tx, rx) = channel();
        serve(&path, tx).unwrap();
        let loop_thread = std::thread::spawn(move || {
            for _ in 0..2 {
                match rx.recv().unwrap() {
                    VmEvent::Control { request, reply } => {
                        reply.send(format!("ok got {}", request.as_line())).unwrap()
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
        });
        assert_eq!(send(&path, ControlRequest::Status).unwrap(), "got status");
        assert_eq!(send(&path, ControlRequest::Stop).unwrap(), "got stop");
        loop_thread.join().unwrap();

        let mut raw = UnixStream::connect(&path).unwrap();
        raw.write_all(b"reboot now\n").unwrap();
        let mut answer = String::new();
        BufReader::new(raw).read_line(&mut answer).unwrap();
        assert!(answer.starts_with("error unknown request 'reboot now'"));
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn client_error_says_what_to_check() {
        let e = send(Path::new("/nonexistent/vmm.sock"), ControlRequest::Status).unwrap_err();
        assert!(e.to_string().contains("is it running?"));
    }
}
