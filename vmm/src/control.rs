//! The VMM's control socket: a line protocol over a unix stream socket.
//!
//! The messages are `vmm_protocol`'s (spec: `docs/vmm-control.md`): each
//! request is one line and gets one response line, `ok ...` or
//! `error ...`; a connection may send many requests. `attach` (become the
//! power arbiter) and `events` (watch) keep the connection subscribed:
//! event lines are then written to it as they happen, interleaved with
//! responses.
//!
//! This module is the transport only: connection threads read lines, parse
//! them and hand each [`Request`] to the event loop as a [`VmEvent`]; the
//! loop decides the [`Response`]. `vmm status|stop|pause|resume|
//! power-button|decide SOCKET` use [`send`], `vmm events` uses [`watch`].

use std::io::{BufRead, BufReader, Read as _, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::time::Duration;

use vmm_protocol::{Answer, Event, ParseError, Request, Response, ServerLine, MAX_REQUEST_LEN};

use crate::event::VmEvent;

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
    /// The VMM's answer is not a protocol response.
    #[error("VMM sent a malformed answer ({0}); is it a vmm of another version?")]
    Malformed(#[from] ParseError),
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

/// One line read from a control connection.
enum ReadLine {
    /// A line (without its `\n`; the last one may lack it).
    Line(String),
    /// More than [`MAX_REQUEST_LEN`] bytes without a `\n`.
    TooLong,
    /// The client closed the connection.
    Closed,
}

fn read_request_line(reader: &mut impl BufRead) -> std::io::Result<ReadLine> {
    let mut bytes = Vec::with_capacity(64);
    let limit = MAX_REQUEST_LEN as u64;
    let n = reader.take(limit).read_until(b'\n', &mut bytes)?;
    Ok(match bytes.last() {
        None if n == 0 => ReadLine::Closed,
        Some(b'\n') => {
            bytes.pop();
            ReadLine::Line(String::from_utf8_lossy(&bytes).into_owned())
        }
        _ if n as u64 >= limit => ReadLine::TooLong,
        _ => ReadLine::Line(String::from_utf8_lossy(&bytes).into_owned()),
    })
}

fn exiting() -> Response {
    Response::error("VMM is exiting")
}

fn handle(stream: UnixStream, events: &Sender<VmEvent>) -> std::io::Result<()> {
    let id = NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed);
    let mut writer = stream.try_clone()?;
    writer.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut subscribed = false;
    let mut reader = BufReader::new(stream);
    let result = loop {
        let line = match read_request_line(&mut reader) {
            Ok(ReadLine::Line(line)) => line,
            Ok(ReadLine::Closed) => break Ok(()),
            Ok(ReadLine::TooLong) => {
                // The rest of the line cannot be told from a next request.
                let e = Response::error(format_args!(
                    "request line longer than {MAX_REQUEST_LEN} bytes; closing the connection"
                ));
                break writer.write_all(format!("{e}\n").as_bytes());
            }
            Err(e) => break Err(e),
        };
        let response = match line.parse::<Request>() {
            Err(ParseError::Empty) => continue,
            Err(e) => Response::error(e),
            Ok(request) if request.subscribes() => {
                // The event loop writes the response itself, so that it
                // precedes every event on this stream.
                let sent = writer.try_clone().map(|stream| {
                    events.send(VmEvent::Subscribe {
                        connection: id,
                        stream,
                        arbiter: request == Request::Attach,
                    })
                });
                match sent {
                    Ok(Ok(())) => {
                        subscribed = true;
                        continue;
                    }
                    _ => exiting(),
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
                    exiting()
                } else {
                    reply_rx.recv().unwrap_or_else(|_| exiting())
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

/// Connects to the VMM at `path`, sends `request` and reads the response.
fn request(path: &Path, request: Request) -> Result<(Answer, BufReader<UnixStream>), ControlError> {
    let client_err = |source| ControlError::Client {
        path: path.display().to_string(),
        source,
    };
    let mut stream = UnixStream::connect(path).map_err(client_err)?;
    stream
        .write_all(format!("{request}\n").as_bytes())
        .map_err(client_err)?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    if reader.read_line(&mut line).map_err(client_err)? == 0 {
        return Err(client_err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the VMM closed the connection without answering",
        )));
    }
    match line.parse()? {
        Response::Ok(answer) => Ok((answer, reader)),
        Response::Error(message) => Err(ControlError::Refused(message.to_string())),
    }
}

/// Sends one `request` to the VMM at `path` and returns its `ok` answer.
pub fn send(path: &Path, request: Request) -> Result<Answer, ControlError> {
    self::request(path, request).map(|(answer, _)| answer)
}

/// Subscribes to the VMM at `path` (as the power arbiter if `arbiter`) and
/// calls `on_event` for every event until the VMM closes the socket.
pub fn watch(
    path: &Path,
    arbiter: bool,
    mut on_event: impl FnMut(Event),
) -> Result<(), ControlError> {
    let subscribe = if arbiter {
        Request::Attach
    } else {
        Request::Events
    };
    let (_, reader) = request(path, subscribe)?;
    for line in reader.lines() {
        let line = line.map_err(|source| ControlError::Client {
            path: path.display().to_string(),
            source,
        })?;
        match line.parse() {
            Ok(ServerLine::Event(event)) => on_event(event),
            Ok(ServerLine::Response(r)) => tracing::debug!("unexpected response: {r}"),
            Err(e) => tracing::warn!("ignoring a malformed line from the VMM: {e}"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_protocol::{Decision, Status, VmState};

    fn answer_for(request: Request) -> Response {
        match request {
            Request::Status => Response::Ok(Answer::Status(Status {
                state: VmState::Running,
                arbitrated: false,
                pending: 0,
                boots: 1,
                arbiters: 0,
            })),
            Request::Stop => Response::Ok(Answer::Stopping),
            other => Response::error(format_args!("got {other}")),
        }
    }

    #[test]
    fn requests_reach_the_loop_and_answers_come_back() {
        let path = std::env::temp_dir().join(format!("vmm-ctl-{}.sock", std::process::id()));
        let (tx, rx) = channel();
        serve(&path, tx).unwrap();
        let loop_thread = std::thread::spawn(move || {
            for _ in 0..3 {
                match rx.recv().unwrap() {
                    VmEvent::Control { request, reply } => reply.send(answer_for(request)).unwrap(),
                    other => panic!("unexpected {other:?}"),
                }
            }
        });
        assert!(matches!(
            send(&path, Request::Status),
            Ok(Answer::Status(Status { boots: 1, .. }))
        ));
        assert_eq!(send(&path, Request::Stop).unwrap(), Answer::Stopping);
        let decide = Request::Decide {
            id: 3,
            decision: Decision::Refuse,
        };
        assert_eq!(
            send(&path, decide).unwrap_err().to_string(),
            "VMM refused the request: got decide 3 refuse"
        );
        loop_thread.join().unwrap();

        let mut raw = UnixStream::connect(&path).unwrap();
        raw.write_all(b"\nreboot now\n").unwrap();
        let mut answer = String::new();
        let mut reader = BufReader::new(raw);
        reader.read_line(&mut answer).unwrap();
        assert_eq!(answer, "error unknown request 'reboot now'\n");

        // An endless line is refused and the connection closed.
        let mut raw = UnixStream::connect(&path).unwrap();
        raw.write_all(&[b'x'; MAX_REQUEST_LEN + 10]).unwrap();
        let mut rest = String::new();
        BufReader::new(raw).read_to_string(&mut rest).unwrap();
        assert_eq!(
            rest,
            "error request line longer than 256 bytes; closing the connection\n"
        );
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn client_error_says_what_to_check() {
        let e = send(Path::new("/nonexistent/vmm.sock"), Request::Status).unwrap_err();
        assert!(e.to_string().contains("is it running?"));
    }
}
