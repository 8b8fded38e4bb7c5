//! The VMM's control socket.
//!
//! A unix stream socket; each connection sends one request line and gets one
//! response line, then the VMM closes it:
//!
//! | request  | response                         | effect                  |
//! |----------|----------------------------------|-------------------------|
//! | `status` | `ok running`                     | none                    |
//! | `stop`   | `ok stopping`                    | the VM stops, exit 0    |
//! | other    | `error unknown request '<text>'` | none                    |
//!
//! `vmm status SOCKET` and `vmm stop SOCKET` are the client side.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::mpsc::Sender;
use std::time::Duration;

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
    /// Report whether the VM runs.
    Status,
    /// Stop the VM.
    Stop,
}

impl ControlRequest {
    /// Parses one request line.
    pub fn parse(line: &str) -> Option<Self> {
        match line.trim() {
            "status" => Some(Self::Status),
            "stop" => Some(Self::Stop),
            _ => None,
        }
    }

    /// The request's wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Status => "status",
            Self::Stop => "stop",
        }
    }
}

/// Serves the socket at `path` on a background thread, forwarding stop
/// requests to `events`. A stale socket file is replaced.
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
                if let Err(e) = handle(stream, &events) {
                    tracing::warn!("control connection failed: {e}");
                }
            }
        })
        .map_err(bind_err)?;
    Ok(())
}

fn handle(stream: UnixStream, events: &Sender<VmEvent>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut line = String::new();
    BufReader::new(&stream).take(256).read_line(&mut line)?;
    let response = match ControlRequest::parse(&line) {
        Some(ControlRequest::Status) => "ok running".to_string(),
        Some(ControlRequest::Stop) => {
            let _ = events.send(VmEvent::Stop);
            "ok stopping".to_string()
        }
        None => format!("error unknown request '{}'", line.trim().escape_debug()),
    };
    (&stream).write_all(format!("{response}\n").as_bytes())
}

/// Sends `request` to the VMM at `path` and returns its `ok` answer.
pub fn send(path: &Path, request: ControlRequest) -> Result<String, ControlError> {
    let client_err = |source| ControlError::Client {
        path: path.display().to_string(),
        source,
    };
    let mut stream = UnixStream::connect(path).map_err(client_err)?;
    stream
        .write_all(format!("{}\n", request.as_str()).as_bytes())
        .map_err(client_err)?;
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .map_err(client_err)?;
    let answer = answer.trim().to_string();
    match answer.strip_prefix("ok ") {
        Some(rest) => Ok(rest.to_string()),
        None => Err(ControlError::Refused(answer)),
    }
}

use std::io::Read as _;

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;

    #[test]
    fn status_stop_and_garbage() {
        let path = std::env::temp_dir().join(format!("vmm-ctl-{}.sock", std::process::id()));
        let (tx, rx) = channel();
        serve(&path, tx).unwrap();
        assert_eq!(send(&path, ControlRequest::Status).unwrap(), "running");
        assert!(rx.try_recv().is_err());
        assert_eq!(send(&path, ControlRequest::Stop).unwrap(), "stopping");
        assert!(matches!(rx.recv().unwrap(), VmEvent::Stop));

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
