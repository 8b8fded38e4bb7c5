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
//! power-button SOCKET` use [`send`], `vmm decide` uses [`decide`], `vmm
//! events` uses [`watch`].
//!
//! Who may talk to it (`docs/security.md`): the socket file is mode 0600
//! from before `listen`; every accepted connection's peer uid
//! (`SO_PEERCRED`) must be allowed (`sandbox::socket`); at most
//! [`MAX_CONNECTIONS`] connections at a time, and one that sends nothing
//! for [`IDLE_TIMEOUT`] is closed unless it subscribed; `decide` is
//! accepted only on a connection that `attach`ed as the power arbiter.

use std::io::{BufRead, BufReader, Read as _, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vmm_protocol::{
    Answer, Decision, Event, ParseError, Request, Response, ServerLine, MAX_REQUEST_LEN,
};

use crate::event::{Reply, VmEvent};
use crate::outbox::{self, Outbox};

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

/// Most control connections served at a time; more are answered
/// `error too many control connections` and closed.
pub const MAX_CONNECTIONS: usize = 32;
/// A connection that has not subscribed and sends no request for this
/// long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Binds the control socket at `path` (mode 0600 before it listens; a
/// stale socket replaced; a live one or a non-socket refused).
pub fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    sandbox::socket::bind_private(path).map_err(|e| ControlError::Bind {
        path: path.display().to_string(),
        source: std::io::Error::other(e.to_string()),
    })
}

/// How many connections, idle for how long.
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_connections: usize,
    idle: Duration,
}

const LIMITS: Limits = Limits {
    max_connections: MAX_CONNECTIONS,
    idle: IDLE_TIMEOUT,
};

/// Counts a connection while it is served.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn acquire(count: &Arc<AtomicUsize>, max: usize) -> Option<Slot> {
        let mut now = count.load(Ordering::Relaxed);
        loop {
            if now >= max {
                return None;
            }
            match count.compare_exchange(now, now + 1, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return Some(Slot(count.clone())),
                Err(actual) => now = actual,
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves `listener` on a background thread, forwarding requests to the
/// VMM's event loop.
pub fn serve(listener: UnixListener, events: Sender<VmEvent>) -> Result<(), ControlError> {
    serve_with(listener, events, LIMITS)
}

fn serve_with(
    listener: UnixListener,
    events: Sender<VmEvent>,
    limits: Limits,
) -> Result<(), ControlError> {
    let spawn_err = |source| ControlError::Bind {
        path: "(control socket thread)".into(),
        source,
    };
    sandbox::thread::spawn("control", move || accept_loop(&listener, &events, limits))
        .map_err(spawn_err)?;
    Ok(())
}

fn accept_loop(listener: &UnixListener, events: &Sender<VmEvent>, limits: Limits) {
    let served = Arc::new(AtomicUsize::new(0));
    let mut backoff = sandbox::socket::AcceptBackoff::default();
    let mut warned_exhausted = false;
    let mut warned_peer = false;
    loop {
        let mut stream = match listener.accept() {
            Ok((stream, _)) => {
                backoff.success();
                stream
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // Out of descriptors (EMFILE) or anything else: wait before
                // the next try instead of spinning on a pending connection.
                let wait = backoff.failure();
                if !warned_exhausted || !sandbox::socket::is_resource_exhaustion(&e) {
                    tracing::warn!("control socket: accept failed: {e}; retrying in {wait:?}");
                    warned_exhausted = true;
                }
                std::thread::sleep(wait);
                continue;
            }
        };
        if let Err(e) = sandbox::socket::check_peer(&stream) {
            if !warned_peer {
                tracing::warn!("control socket: connection refused: {e} (logged once)");
                warned_peer = true;
            } else {
                tracing::debug!("control socket: connection refused: {e}");
            }
            continue;
        }
        let Some(slot) = Slot::acquire(&served, limits.max_connections) else {
            let e = Response::error(format_args!(
                "too many control connections (at most {}); closing",
                limits.max_connections
            ));
            let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
            let _ = stream.write_all(format!("{e}\n").as_bytes());
            continue;
        };
        let events = events.clone();
        // Held by the connection's thread and, once it subscribes, by its
        // writer thread: the slot is free when both have ended.
        let slot = Arc::new(slot);
        let spawned = sandbox::thread::spawn("control-conn", move || {
            if let Err(e) = handle(stream, &events, limits.idle, &slot) {
                tracing::debug!("control connection ended: {e}");
            }
        });
        if let Err(e) = spawned {
            tracing::warn!("cannot serve a control connection: {e}");
        }
    }
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

/// The answer to a request the VMM will not carry out because it exits.
pub(crate) fn exiting() -> Response {
    Response::error("VMM is exiting")
}

fn handle(
    stream: UnixStream,
    events: &Sender<VmEvent>,
    idle: Duration,
    slot: &Arc<Slot>,
) -> std::io::Result<()> {
    let id = NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed);
    let direct = stream.try_clone()?;
    direct.set_write_timeout(Some(outbox::WRITE_TIMEOUT))?;
    let mut writer = Writer::Direct(direct);
    stream.set_read_timeout(Some(idle))?;
    let reader_stream = stream.try_clone()?;
    let mut subscribed = false;
    let mut arbiter = false;
    let mut reader = BufReader::new(stream);
    let result = loop {
        let line = match read_request_line(&mut reader) {
            Ok(ReadLine::Line(line)) => line,
            Ok(ReadLine::Closed) => break Ok(()),
            Err(e)
                if !subscribed
                    && matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
            {
                let e = Response::error(format_args!(
                    "no request for {} ms; closing the connection",
                    idle.as_millis()
                ));
                break writer.line(e);
            }
            Err(e)
                if subscribed
                    && matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
            {
                continue
            }
            Ok(ReadLine::TooLong) => {
                // The rest of the line cannot be told from a next request.
                let e = Response::error(format_args!(
                    "request line longer than {MAX_REQUEST_LEN} bytes; closing the connection"
                ));
                break writer.line(e);
            }
            Err(e) => break Err(e),
        };
        let response = match line.parse::<Request>() {
            Err(ParseError::Empty) => continue,
            Err(e) => Response::error(e),
            Ok(request) if request.subscribes() && subscribed => {
                Response::error("this connection is already subscribed; attach on a new one")
            }
            Ok(request) if request.subscribes() => {
                // From here on every line goes through the outbox, which
                // the event loop shares. The loop queues the response
                // itself, so that it precedes every event, and says when
                // it has: this thread's later answers must follow it.
                let outbox = match &writer {
                    Writer::Direct(stream) => match Outbox::open(stream, slot.clone()) {
                        Ok(outbox) => outbox,
                        Err(e) => break Err(e),
                    },
                    Writer::Outbox(outbox) => outbox.clone(),
                };
                let (queued_tx, queued_rx) = channel();
                let sent = events.send(VmEvent::Subscribe {
                    connection: id,
                    outbox: outbox.clone(),
                    arbiter: request == Request::Attach,
                    queued: queued_tx,
                });
                writer = Writer::Outbox(outbox);
                match sent.map(|()| queued_rx.recv()) {
                    Ok(Ok(true)) => {
                        subscribed = true;
                        arbiter |= request == Request::Attach;
                        // Subscribers wait for events as long as they like.
                        if let Err(e) = reader_stream.set_read_timeout(None) {
                            break Err(e);
                        }
                        continue;
                    }
                    // The connection closed before the answer was queued.
                    Ok(Ok(false)) => break Ok(()),
                    Ok(Err(_)) | Err(_) => exiting(),
                }
            }
            Ok(Request::Decide { .. }) if !arbiter => Response::error(
                "decide is accepted only from the attached arbiter: send attach on this connection first",
            ),
            Ok(request) => match &writer {
                Writer::Direct(_) => {
                    let (response_tx, response_rx) = channel();
                    let (written_tx, written_rx) = channel();
                    let reply = Reply::Direct {
                        response: response_tx,
                        written: written_rx,
                    };
                    let response = match events.send(VmEvent::Control { request, reply }) {
                        Ok(()) => response_rx.recv().unwrap_or_else(|_| exiting()),
                        Err(_) => exiting(),
                    };
                    let result = writer.line(response);
                    // The loop may be waiting for this before the VMM exits.
                    let _ = written_tx.send(());
                    if let Err(e) = result {
                        break Err(e);
                    }
                    continue;
                }
                Writer::Outbox(outbox) => {
                    // The loop queues the response itself (see `Reply`).
                    let (queued_tx, queued_rx) = channel();
                    let reply = Reply::Outbox {
                        outbox: outbox.clone(),
                        queued: queued_tx,
                    };
                    match events.send(VmEvent::Control { request, reply }) {
                        Ok(()) => match queued_rx.recv() {
                            Ok(true) => continue,
                            // Full or closed: the connection is shut down.
                            Ok(false) => break Ok(()),
                            Err(_) => exiting(),
                        },
                        Err(_) => exiting(),
                    }
                }
            },
        };
        if let Err(e) = writer.line(response) {
            break Err(e);
        }
    };
    if subscribed {
        if let (Writer::Outbox(queue), Ok(())) = (&writer, &result) {
            // The client half-closed: until what is queued is written the
            // loop keeps this connection among the subscribers it flushes
            // before the VMM exits.
            queue.flush(Instant::now() + outbox::WRITE_TIMEOUT);
        }
        let _ = events.send(VmEvent::Unsubscribe { connection: id });
    }
    if let (Writer::Outbox(outbox), Err(_)) = (&writer, &result) {
        outbox.close();
    }
    // Otherwise the writer thread writes what is still queued (the
    // answers to a client that half-closed after its requests) and ends
    // once the loop has dropped its copy of the outbox too.
    result
}

/// Where a connection's own lines go: straight into the socket until it
/// subscribes, then through its [`Outbox`] (shared with the event loop).
enum Writer {
    Direct(UnixStream),
    Outbox(Outbox),
}

impl Writer {
    /// Writes one line (a newline is added).
    fn line(&mut self, line: impl std::fmt::Display) -> std::io::Result<()> {
        match self {
            Writer::Direct(stream) => stream.write_all(format!("{line}\n").as_bytes()),
            Writer::Outbox(outbox) => outbox.send(line).map_err(std::io::Error::other),
        }
    }
}

/// The [`ControlError::Client`] of an I/O error on the connection to
/// `path`.
fn client_error(path: &Path) -> impl Fn(std::io::Error) -> ControlError + Copy + '_ {
    move |source| ControlError::Client {
        path: path.display().to_string(),
        source,
    }
}

/// The next line the VMM at `path` sends; an error if it closes the
/// connection first.
fn read_answer_line(
    reader: &mut BufReader<UnixStream>,
    path: &Path,
) -> Result<String, ControlError> {
    let mut line = String::new();
    if reader.read_line(&mut line).map_err(client_error(path))? == 0 {
        return Err(client_error(path)(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the VMM closed the connection without answering",
        )));
    }
    Ok(line)
}

/// Connects to the VMM at `path`, sends `request` and reads the response.
fn request(path: &Path, request: Request) -> Result<(Answer, BufReader<UnixStream>), ControlError> {
    let client_err = client_error(path);
    let mut stream = UnixStream::connect(path).map_err(client_err)?;
    stream
        .write_all(format!("{request}\n").as_bytes())
        .map_err(client_err)?;
    let mut reader = BufReader::new(stream);
    match read_answer_line(&mut reader, path)?.parse()? {
        Response::Ok(answer) => Ok((answer, reader)),
        Response::Error(message) => Err(ControlError::Refused(message.to_string())),
    }
}

/// Sends one `request` to the VMM at `path` and returns its `ok` answer.
pub fn send(path: &Path, request: Request) -> Result<Answer, ControlError> {
    self::request(path, request).map(|(answer, _)| answer)
}

/// Answers held power request `id` with `decision`: `decide` is accepted
/// only from an arbiter, so this attaches as one, decides, and detaches
/// (shuts its side down and waits, at most 5 s, until the VMM has closed
/// the connection, so that a request sent after this returns sees the
/// arbiter gone).
pub fn decide(path: &Path, id: u64, decision: Decision) -> Result<Answer, ControlError> {
    let client_err = client_error(path);
    let (_, mut reader) = request(path, Request::Attach)?;
    let mut stream = reader.get_ref().try_clone().map_err(client_err)?;
    stream
        .write_all(format!("{}\n", Request::Decide { id, decision }).as_bytes())
        .map_err(client_err)?;
    let answer = loop {
        match read_answer_line(&mut reader, path)?.parse()? {
            ServerLine::Event(_) => continue,
            ServerLine::Response(Response::Ok(answer)) => break Ok(answer),
            ServerLine::Response(Response::Error(message)) => {
                break Err(ControlError::Refused(message.to_string()))
            }
        }
    };
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut rest = Vec::new();
    let _ = reader.read_to_end(&mut rest);
    answer
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
        let line = line.map_err(client_error(path))?;
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
        serve(bind(&path).unwrap(), tx).unwrap();
        let loop_thread = std::thread::spawn(move || {
            for _ in 0..3 {
                match rx.recv().unwrap() {
                    VmEvent::Control { request, reply } => {
                        // A plain connection's thread writes the response,
                        // then says so: the VMM's exit waits for that.
                        let mut unwritten = reply.send(answer_for(request)).unwrap();
                        assert!(unwritten.wait(Instant::now() + Duration::from_secs(5)));
                        assert!(unwritten.is_done());
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
        });
        assert!(matches!(
            send(&path, Request::Status),
            Ok(Answer::Status(Status { boots: 1, .. }))
        ));
        assert_eq!(send(&path, Request::Stop).unwrap(), Answer::Stopping);
        assert_eq!(
            send(&path, Request::Pause).unwrap_err().to_string(),
            "VMM refused the request: got pause"
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

    fn temp_socket(tag: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("vmm-ctl-{tag}-{}.sock", std::process::id()))
    }

    fn read_line_of(stream: &UnixStream) -> String {
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).unwrap();
        line
    }

    #[test]
    fn decide_is_accepted_only_from_the_attached_arbiter() {
        let path = temp_socket("decide");
        let (tx, rx) = channel();
        serve(bind(&path).unwrap(), tx).unwrap();
        let loop_thread = std::thread::spawn(move || {
            let mut subscriber: Option<Outbox> = None;
            let mut decided = 0;
            while decided < 1 {
                match rx.recv().unwrap() {
                    VmEvent::Subscribe { outbox, queued, .. } => {
                        outbox.offer("ok attached").unwrap();
                        queued.send(true).unwrap();
                        subscriber = Some(outbox);
                    }
                    VmEvent::Control { request, reply } => {
                        assert!(matches!(request, Request::Decide { id: 7, .. }));
                        // An arbiter's response goes into its outbox.
                        assert!(reply.send(Response::Ok(Answer::Decided)).is_none());
                        decided += 1;
                    }
                    VmEvent::Unsubscribe { .. } => subscriber = None,
                    other => panic!("unexpected {other:?}"),
                }
            }
            // The decide client detaches: its Unsubscribe comes next.
            assert!(matches!(rx.recv().unwrap(), VmEvent::Unsubscribe { .. }));
            drop(subscriber);
        });
        // A plain connection may not decide.
        let mut raw = UnixStream::connect(&path).unwrap();
        raw.write_all(b"decide 7 allow\n").unwrap();
        assert_eq!(
            read_line_of(&raw),
            "error decide is accepted only from the attached arbiter: send attach on this connection first\n"
        );
        // `vmm decide` attaches first.
        assert_eq!(decide(&path, 7, Decision::Allow).unwrap(), Answer::Decided);
        loop_thread.join().unwrap();
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_subscriber_gets_its_answers_in_order_even_after_half_closing() {
        let path = temp_socket("order");
        let (tx, rx) = channel();
        serve(bind(&path).unwrap(), tx).unwrap();
        let loop_thread = std::thread::spawn(move || {
            let mut subscriber: Option<Outbox> = None;
            loop {
                match rx.recv().unwrap() {
                    VmEvent::Subscribe { outbox, queued, .. } => {
                        // A slow loop: the connection's own answers wait
                        // until it says the subscribe answer is queued
                        // (here with an event line after it; events it
                        // publishes later come between answers, in the
                        // order the loop handled them).
                        std::thread::sleep(Duration::from_millis(100));
                        outbox.offer("ok attached").unwrap();
                        outbox.offer("event state running").unwrap();
                        queued.send(true).unwrap();
                        subscriber = Some(outbox);
                    }
                    VmEvent::Control { request, reply } => {
                        assert!(reply.send(answer_for(request)).is_none());
                    }
                    VmEvent::Unsubscribe { .. } => break,
                    other => panic!("unexpected {other:?}"),
                }
            }
            drop(subscriber);
        });
        let mut raw = UnixStream::connect(&path).unwrap();
        raw.write_all(b"attach\nbogus\nevents\nstatus\n").unwrap();
        raw.shutdown(std::net::Shutdown::Write).unwrap();
        let mut text = String::new();
        BufReader::new(raw).read_to_string(&mut text).unwrap();
        assert_eq!(
            text,
            "ok attached\n\
             event state running\n\
             error unknown request 'bogus'\n\
             error this connection is already subscribed; attach on a new one\n\
             ok state=running arbitrated=false pending=0 boots=1 arbiters=0\n"
        );
        loop_thread.join().unwrap();
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_plain_connections_response_is_in_its_socket_once_the_loop_is_told() {
        let path = temp_socket("written");
        let (tx, rx) = channel();
        serve(bind(&path).unwrap(), tx).unwrap();
        let mut raw = UnixStream::connect(&path).unwrap();
        raw.write_all(b"stop\n").unwrap();
        // The loop answers `stop`, then (as before the VMM exits) waits
        // until the connection's thread says the response is written.
        match rx.recv().unwrap() {
            VmEvent::Control { request, reply } => {
                let mut unwritten = reply.send(answer_for(request)).unwrap();
                assert!(unwritten.wait(Instant::now() + Duration::from_secs(5)));
            }
            other => panic!("unexpected {other:?}"),
        }
        // No waiting here: the line must already be in the socket.
        raw.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 64];
        let n = std::io::Read::read(&mut raw, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"ok stopping\n");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn connections_are_capped_and_idle_ones_closed() {
        let path = temp_socket("limits");
        let (tx, _rx) = channel();
        let limits = Limits {
            max_connections: 2,
            idle: Duration::from_millis(300),
        };
        serve_with(bind(&path).unwrap(), tx, limits).unwrap();
        let a = UnixStream::connect(&path).unwrap();
        let b = UnixStream::connect(&path).unwrap();
        // Give the accept loop time to take both.
        std::thread::sleep(Duration::from_millis(100));
        let c = UnixStream::connect(&path).unwrap();
        assert_eq!(
            read_line_of(&c),
            "error too many control connections (at most 2); closing\n"
        );
        // Idle connections are closed after the timeout, with a reason.
        assert_eq!(
            read_line_of(&a),
            "error no request for 300 ms; closing the connection\n"
        );
        assert_eq!(
            read_line_of(&b),
            "error no request for 300 ms; closing the connection\n"
        );
        // Their slots are free again.
        std::thread::sleep(Duration::from_millis(100));
        let mut d = UnixStream::connect(&path).unwrap();
        d.write_all(b"bogus\n").unwrap();
        assert_eq!(read_line_of(&d), "error unknown request 'bogus'\n");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn the_socket_is_private_and_never_replaces_a_file() {
        use std::os::unix::fs::PermissionsExt;
        let path = temp_socket("mode");
        let listener = bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        drop(listener);
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"keep").unwrap();
        let e = bind(&path).unwrap_err().to_string();
        assert!(e.contains("is not a socket"), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), b"keep");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn client_error_says_what_to_check() {
        let e = send(Path::new("/nonexistent/vmm.sock"), Request::Status).unwrap_err();
        assert!(e.to_string().contains("is it running?"));
    }
}
