//! The host side of the console: where guest output goes and where guest
//! input comes from.
//!
//! The worker drives a backend through a few calls: [`ConsoleBackend::watch`]
//! says which file descriptor it wants watched for what (so that nothing is
//! watched while it could only spin, e.g. input while the pending-input queue
//! is full), [`ConsoleBackend::on_ready`] handles a readiness event,
//! [`ConsoleBackend::write_output`] takes guest output and never blocks on a
//! socket peer.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vmm_sys_util::epoll::EventSet;

use super::{MAX_CLIENT_BACKLOG, MAX_PENDING_INPUT};
use crate::virtio::event_loop::event_token;

/// How long accepting stays paused after an accept error other than "no
/// connection pending" (e.g. out of file descriptors), so the worker does
/// not spin on a listener that stays readable.
const ACCEPT_RETRY: Duration = Duration::from_secs(1);
/// Largest single read from an input source.
const READ_CHUNK: usize = 4096;

/// Where a virtio-console's output goes and its input comes from.
pub struct ConsoleBackend {
    kind: Kind,
}

enum Kind {
    Stream(StreamBackend),
    Unix(UnixBackend),
}

impl std::fmt::Debug for ConsoleBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            Kind::Stream(s) => f
                .debug_struct("Stream")
                .field("input", &s.input.as_ref().map(|i| i.file.as_raw_fd()))
                .finish(),
            Kind::Unix(u) => f.debug_struct("Unix").field("path", &u.path).finish(),
        }
    }
}

impl ConsoleBackend {
    /// Output to `output` (a file, a sink, stdout); no input.
    pub fn output(output: Box<dyn Write + Send>) -> Self {
        Self {
            kind: Kind::Stream(StreamBackend {
                output,
                input: None,
                output_warned: false,
            }),
        }
    }

    /// Output to `output`, input read from `input` (e.g. a duplicate of
    /// stdin). `input` may be anything readable: a terminal, a pipe or
    /// socket (watched with epoll), or a regular file or `/dev/null` (read
    /// whenever the guest has room).
    pub fn stream(input: File, output: Box<dyn Write + Send>) -> Self {
        Self {
            kind: Kind::Stream(StreamBackend {
                output,
                input: Some(Input {
                    file: input,
                    pollable: true,
                    eof: false,
                }),
                output_warned: false,
            }),
        }
    }

    /// Listens on the unix stream socket `path` (mode 0600, owned as
    /// `sandbox::socket` is configured). A stale socket file there (nobody
    /// accepting) is replaced; a live one or any other file is an error.
    /// The file is removed when the backend is dropped.
    pub fn unix(path: &Path) -> io::Result<Self> {
        let listener = sandbox::socket::bind_private(path).map_err(|e| match e {
            sandbox::socket::BindError::NotSocket(_) => io::Error::new(
                io::ErrorKind::AlreadyExists,
                "the path exists and is not a socket",
            ),
            sandbox::socket::BindError::InUse(_) => io::Error::new(
                io::ErrorKind::AddrInUse,
                "another process is listening on this socket",
            ),
            sandbox::socket::BindError::Io { source, .. } => source,
        })?;
        let mut backend = Self::unix_listener(path, listener)?;
        if let Kind::Unix(u) = &mut backend.kind {
            u.owns_path = true;
        }
        Ok(backend)
    }

    /// Serves `listener`, bound at `path` by the caller, who keeps it (the
    /// VMM binds it once and hands a duplicate to every boot's console);
    /// the file is not removed when the backend is dropped.
    pub fn unix_listener(path: &Path, listener: UnixListener) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        Ok(Self {
            kind: Kind::Unix(UnixBackend {
                path: path.to_path_buf(),
                listener,
                owns_path: false,
                client: None,
                generation: 0,
                accept_paused_until: None,
                accept_warned: false,
                peer_warned: false,
            }),
        })
    }

    /// Which descriptor `source` wants watched, for what; `None`: do not
    /// watch it now. `want_input` is false while the pending-input queue is
    /// full.
    pub(super) fn watch(&self, source: Source, want_input: bool) -> Option<Watch> {
        match (&self.kind, source) {
            (Kind::Stream(s), Source::Input) => {
                let input = s.input.as_ref()?;
                (want_input && input.pollable && !input.eof).then(|| Watch {
                    fd: input.file.as_raw_fd(),
                    events: EventSet::IN,
                    generation: 0,
                })
            }
            (Kind::Unix(u), Source::Listener) => u.accept_paused_until.is_none().then(|| Watch {
                fd: u.listener.as_raw_fd(),
                events: EventSet::IN,
                generation: 0,
            }),
            (Kind::Unix(u), Source::Client) => {
                let client = u.client.as_ref()?;
                let mut events = EventSet::empty();
                if want_input && !client.read_closed {
                    events |= EventSet::IN;
                }
                if !client.backlog.is_empty() && !client.hung_up {
                    events |= EventSet::OUT;
                }
                // Hang-ups are reported even with no events asked for: an
                // idle client is not watched at all rather than spun on.
                (!events.is_empty()).then(|| Watch {
                    fd: client.stream.as_raw_fd(),
                    events,
                    generation: u.generation,
                })
            }
            _ => None,
        }
    }

    /// `source` cannot be watched with epoll (regular files, `/dev/null`):
    /// it is read whenever there is room instead.
    pub(super) fn set_unpollable(&mut self, source: Source) {
        if let (Kind::Stream(s), Source::Input) = (&mut self.kind, source) {
            if let Some(input) = &mut s.input {
                tracing::debug!("virtio-console: input cannot be polled; reading it directly");
                input.pollable = false;
            }
        }
    }

    /// How long the worker may sleep at most (a paused accept to retry).
    pub(super) fn retry_after(&self) -> Option<Duration> {
        match &self.kind {
            Kind::Unix(u) => u
                .accept_paused_until
                .map(|t| t.saturating_duration_since(Instant::now())),
            Kind::Stream(_) => None,
        }
    }

    /// Resumes whatever was paused until now (called after a timed wait).
    pub(super) fn on_timeout(&mut self) {
        if let Kind::Unix(u) = &mut self.kind {
            if u.accept_paused_until.is_some_and(|t| t <= Instant::now()) {
                u.accept_paused_until = None;
            }
        }
    }

    /// Handles readiness `events` of `source`; input read goes to `pending`.
    pub(super) fn on_ready(&mut self, source: Source, events: EventSet, pending: &mut InputQueue) {
        match (&mut self.kind, source) {
            (Kind::Stream(s), Source::Input) => {
                if let Some(input) = &mut s.input {
                    input.read_some(pending);
                }
            }
            (Kind::Unix(u), Source::Listener) => u.accept(),
            (Kind::Unix(u), Source::Client) => u.client_ready(events, pending),
            _ => {}
        }
    }

    /// Reads from an input that cannot be watched, if there is room;
    /// returns whether anything was read.
    pub(super) fn read_unwatched(&mut self, pending: &mut InputQueue) -> bool {
        match &mut self.kind {
            Kind::Stream(StreamBackend {
                input: Some(input), ..
            }) if !input.pollable => input.read_some(pending) > 0,
            _ => false,
        }
    }

    /// Sends guest output to the host side. Never blocks on a unix client;
    /// output nobody can take is dropped.
    pub(super) fn write_output(&mut self, data: &[u8]) {
        match &mut self.kind {
            Kind::Stream(s) => {
                if let Err(e) = s.output.write_all(data).and_then(|()| s.output.flush()) {
                    if !s.output_warned {
                        s.output_warned = true;
                        crate::guest_warn!(
                            "virtio-console: cannot write output, dropping it: {e} (logged once)"
                        );
                    }
                }
            }
            Kind::Unix(u) => u.write_output(data),
        }
    }
}

event_token! {
    /// The descriptors a backend may want watched: the console worker's
    /// event tokens.
    pub enum Source {
        /// The input of a stream backend.
        Input,
        /// The listening socket of a unix backend.
        Listener,
        /// The connected client of a unix backend.
        Client,
    }
}

impl Source {
    /// Every source, in a fixed order.
    pub(super) const ALL: [Source; 3] = [Source::Input, Source::Listener, Source::Client];
}

/// A descriptor to watch: `generation` changes when the same source gets a
/// new descriptor (a new client), even if the number is reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Watch {
    /// The descriptor.
    pub fd: RawFd,
    /// What to wait for.
    pub events: EventSet,
    /// Changes whenever `fd` refers to a new file.
    pub generation: u64,
}

/// Host input the guest has no receive buffers for yet (bounded).
#[derive(Debug, Default)]
pub struct InputQueue {
    bytes: VecDeque<u8>,
}

impl InputQueue {
    /// Bytes that may still be queued.
    pub fn room(&self) -> usize {
        MAX_PENDING_INPUT.saturating_sub(self.bytes.len())
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Bytes queued.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Queues as much of `data` as fits; returns how much did.
    pub fn push(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.room());
        self.bytes.extend(&data[..n]);
        n
    }

    /// The first `n` queued bytes (at most all of them), contiguous.
    pub fn front(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.bytes.len());
        &self.bytes.make_contiguous()[..n]
    }

    /// Drops the first `n` queued bytes.
    pub fn consume(&mut self, n: usize) {
        let n = n.min(self.bytes.len());
        self.bytes.drain(..n);
    }
}

/// An error after which the same call may simply be tried again later.
fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// Reads once from `reader` into `pending` (at most its room). Returns the
/// bytes read, `Ok(0)` at end of input, or the error.
fn read_once(reader: &mut impl Read, pending: &mut InputQueue) -> io::Result<usize> {
    let mut buf = [0u8; READ_CHUNK];
    let want = pending.room().min(READ_CHUNK);
    if want == 0 {
        return Err(io::ErrorKind::WouldBlock.into());
    }
    let n = reader.read(&mut buf[..want])?;
    pending.push(&buf[..n]);
    Ok(n)
}

struct StreamBackend {
    output: Box<dyn Write + Send>,
    input: Option<Input>,
    output_warned: bool,
}

struct Input {
    file: File,
    pollable: bool,
    eof: bool,
}

impl Input {
    /// One read into `pending`; returns the bytes read.
    fn read_some(&mut self, pending: &mut InputQueue) -> usize {
        if self.eof {
            return 0;
        }
        match read_once(&mut self.file, pending) {
            Ok(0) => {
                tracing::debug!("virtio-console: end of input");
                self.eof = true;
                0
            }
            Ok(n) => n,
            Err(e) if is_transient(&e) => 0,
            Err(e) => {
                crate::guest_warn!("virtio-console: cannot read input, closing it: {e}");
                self.eof = true;
                0
            }
        }
    }
}

struct UnixBackend {
    path: PathBuf,
    listener: UnixListener,
    /// Remove `path` when dropped.
    owns_path: bool,
    client: Option<Client>,
    /// Incremented for every accepted client.
    generation: u64,
    accept_paused_until: Option<Instant>,
    accept_warned: bool,
    /// Whether a refused peer was logged.
    peer_warned: bool,
}

struct Client {
    stream: UnixStream,
    /// Output the client has not taken yet (bounded).
    backlog: VecDeque<u8>,
    /// The client shut down its sending side (read returned 0).
    read_closed: bool,
    /// The client is gone for writing (hang-up): output to it is dropped.
    hung_up: bool,
    /// Whether dropping output for this client was logged.
    drop_warned: bool,
}

impl UnixBackend {
    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if let Err(e) = sandbox::socket::check_peer(&stream) {
                        if !self.peer_warned {
                            self.peer_warned = true;
                            tracing::warn!("virtio-console: client refused: {e} (logged once)");
                        }
                        continue;
                    }
                    if let Err(e) = stream.set_nonblocking(true) {
                        crate::guest_warn!("virtio-console: dropping a client: {e}");
                        continue;
                    }
                    if self.client.is_some() {
                        crate::guest_info!(
                            "virtio-console: a new client on {} replaces the previous one",
                            self.path.display()
                        );
                    } else {
                        tracing::debug!("virtio-console: client connected");
                    }
                    self.generation += 1;
                    self.client = Some(Client {
                        stream,
                        backlog: VecDeque::new(),
                        read_closed: false,
                        hung_up: false,
                        drop_warned: false,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) => {}
                Err(e) => {
                    if !self.accept_warned {
                        self.accept_warned = true;
                        crate::guest_warn!(
                            "virtio-console: accept on {} failed, retrying in {ACCEPT_RETRY:?}: {e} (logged once)",
                            self.path.display()
                        );
                    }
                    self.accept_paused_until = Some(Instant::now() + ACCEPT_RETRY);
                    return;
                }
            }
        }
    }

    fn drop_client(&mut self, why: &str) {
        if self.client.take().is_some() {
            tracing::debug!("virtio-console: client gone ({why})");
        }
    }

    fn client_ready(&mut self, events: EventSet, pending: &mut InputQueue) {
        let Some(client) = &mut self.client else {
            return;
        };
        if events.contains(EventSet::ERROR) {
            self.drop_client("socket error");
            return;
        }
        if events.contains(EventSet::HANG_UP) {
            client.hung_up = true;
            client.backlog.clear();
        }
        if events.intersects(EventSet::IN | EventSet::HANG_UP)
            && !client.read_closed
            && pending.room() > 0
        {
            match read_once(&mut client.stream, pending) {
                Ok(0) => client.read_closed = true,
                Ok(_) => {}
                Err(e) if is_transient(&e) => {}
                Err(e) => {
                    self.drop_client(&format!("read failed: {e}"));
                    return;
                }
            }
        }
        if events.contains(EventSet::OUT) {
            if let Err(e) = client.flush() {
                self.drop_client(&format!("write failed: {e}"));
                return;
            }
        }
        if client.hung_up && client.read_closed {
            self.drop_client("hung up");
        }
    }

    fn write_output(&mut self, data: &[u8]) {
        // No client: the output is dropped (nobody would ever read it, and
        // the guest must not wait for one).
        let Some(client) = &mut self.client else {
            return;
        };
        if client.hung_up {
            return;
        }
        let mut rest = data;
        if client.backlog.is_empty() {
            match (&client.stream).write(rest) {
                Ok(n) => rest = &rest[n..],
                Err(e) if is_transient(&e) => {}
                Err(e) => {
                    self.drop_client(&format!("write failed: {e}"));
                    return;
                }
            }
        }
        let room = MAX_CLIENT_BACKLOG.saturating_sub(client.backlog.len());
        let keep = rest.len().min(room);
        client.backlog.extend(&rest[..keep]);
        if keep < rest.len() && !client.drop_warned {
            client.drop_warned = true;
            crate::guest_warn!(
                "virtio-console: the client on {} is not reading; dropping output (logged once per client)",
                self.path.display()
            );
        }
    }
}

impl Client {
    /// Writes as much of the backlog as the socket takes.
    fn flush(&mut self) -> io::Result<()> {
        while !self.backlog.is_empty() {
            let (front, _) = self.backlog.as_slices();
            match (&self.stream).write(front) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.backlog.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl Drop for UnixBackend {
    fn drop(&mut self) {
        // Best effort: the socket file is useless once nobody listens.
        if self.owns_path {
            let _ = sandbox::socket::remove_socket(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::console::test_support::pipe;

    #[test]
    fn input_queue_is_bounded_and_ordered() {
        let mut q = InputQueue::default();
        assert_eq!(q.push(b"abc"), 3);
        assert_eq!(q.front(2), b"ab");
        q.consume(1);
        assert_eq!(q.front(10), b"bc");
        let big = vec![7u8; MAX_PENDING_INPUT];
        assert_eq!(q.push(&big), MAX_PENDING_INPUT - 2);
        assert_eq!(q.room(), 0);
        assert_eq!(q.push(b"x"), 0);
        assert_eq!(q.len(), MAX_PENDING_INPUT);
    }

    #[test]
    fn unix_refuses_a_non_socket_path_and_a_live_socket() {
        let dir = std::env::temp_dir().join(format!("vmstack-console-be-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("plain");
        std::fs::write(&file, b"x").unwrap();
        let err = ConsoleBackend::unix(&file).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert!(file.exists(), "a regular file must not be removed");

        let sock = dir.join("live.sock");
        let live = ConsoleBackend::unix(&sock).unwrap();
        let err = ConsoleBackend::unix(&sock).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        drop(live);
        assert!(!sock.exists(), "the socket is removed with its backend");

        // A stale socket (bound, listener gone, file left behind) is replaced.
        let stale = UnixListener::bind(&sock).unwrap();
        drop(stale);
        assert!(sock.exists());
        let again = ConsoleBackend::unix(&sock).unwrap();
        drop(again);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn watches_follow_room_and_backlog() {
        let (r, _w) = pipe();
        let be = ConsoleBackend::stream(r, Box::new(io::sink()));
        assert!(be.watch(Source::Input, true).is_some());
        assert!(
            be.watch(Source::Input, false).is_none(),
            "full queue: not watched"
        );
        assert!(be.watch(Source::Listener, true).is_none());
        let out = ConsoleBackend::output(Box::new(io::sink()));
        assert!(out.watch(Source::Input, true).is_none());
    }
}
