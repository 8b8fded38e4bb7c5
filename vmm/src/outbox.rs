//! How lines reach a subscribed control connection without the event loop
//! ever waiting for its client.
//!
//! A connection that subscribes (`attach`, `events`) gets an [`Outbox`]: a
//! queue of at most [`CAPACITY`] lines, drained into the socket by a writer
//! thread of its own. The event loop only queues ([`Outbox::offer`], which
//! never blocks); the connection's own responses go through the same queue
//! (the loop queues those of the requests it handles, the connection's
//! thread those it answers itself with [`Outbox::send`]), so a response
//! never splits or overtakes an event line. A client that stops reading
//! fills its socket buffer, then the queue: the offer that finds the queue
//! full shuts the connection down, and the loop forgets the subscriber. The writer gives each line
//! [`WRITE_TIMEOUT`]; a write that fails or times out shuts the connection
//! down too (its reader then sees the end and unsubscribes).
//!
//! The writer ends when every sender is gone: the connection's thread and
//! the loop's subscriber entry. It holds the connection's guard (its slot
//! under the connection cap) until then, so a client that half-closes but
//! reads slowly still counts against the cap. [`Outbox::flush`] lets the
//! VMM write what is queued before it exits (the last events and answers).

use std::fmt::Display;
use std::io::Write;
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{
    channel, sync_channel, Receiver, RecvTimeoutError, Sender, SyncSender, TrySendError,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Lines queued for one subscriber at most; one more and the connection is
/// closed. Events are rare (a power request, a state change), so a client
/// 128 lines behind, with its socket buffer full as well, is not reading.
pub const CAPACITY: usize = 128;

/// How long the writer waits for the client to take one line.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a line was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OfferError {
    /// The client did not read: the queue is full. The connection is shut
    /// down.
    #[error("the client is not reading ({CAPACITY} lines queued); connection closed")]
    Full,
    /// The writer has ended: the connection is closed.
    #[error("the connection is closed")]
    Closed,
}

/// How [`Outbox::flush`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// Every line queued before it is written.
    Written,
    /// The deadline passed first (the client reads slowly or not at all).
    Pending,
    /// Nothing to wait for: the queue is full (the client does not read)
    /// or the writer has ended (the connection is closed).
    Abandoned,
}

/// What the writer thread takes from the queue.
#[derive(Debug)]
enum Item {
    /// A line to write (with its newline).
    Line(String),
    /// Told once every line queued before it is written.
    Flushed(Sender<()>),
}

/// The sending side of one subscribed connection (cheap to clone).
#[derive(Debug, Clone)]
pub struct Outbox {
    lines: SyncSender<Item>,
    stream: Arc<UnixStream>,
}

impl Outbox {
    /// Starts the writer thread of `stream` (a `control-conn` thread: the
    /// sandbox class of the connection's own thread). The thread holds
    /// `guard` until it ends.
    pub fn open<G: Send + 'static>(stream: &UnixStream, guard: G) -> std::io::Result<Outbox> {
        let writer = stream.try_clone()?;
        writer.set_write_timeout(Some(WRITE_TIMEOUT))?;
        let (lines, queue) = sync_channel(CAPACITY);
        let stream = Arc::new(stream.try_clone()?);
        sandbox::thread::spawn("control-conn", move || {
            let _guard = guard;
            drain(queue, writer)
        })?;
        Ok(Outbox { lines, stream })
    }

    /// Queues `line` (a newline is added) without waiting; a full queue
    /// closes the connection.
    pub fn offer(&self, line: impl Display) -> Result<(), OfferError> {
        match self.lines.try_send(Item::Line(format!("{line}\n"))) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                self.close();
                Err(OfferError::Full)
            }
            Err(TrySendError::Disconnected(_)) => Err(OfferError::Closed),
        }
    }

    /// Queues `line` (a newline is added), waiting while the queue is full
    /// (the connection's own thread: its client waits for this answer).
    pub fn send(&self, line: impl Display) -> Result<(), OfferError> {
        self.lines
            .send(Item::Line(format!("{line}\n")))
            .map_err(|_| OfferError::Closed)
    }

    /// Waits until every line queued so far is written, at most until
    /// `deadline`. A client whose queue is full is not waited for (it is
    /// not reading), nor one whose writer has ended.
    pub fn flush(&self, deadline: Instant) -> Flush {
        let (done, written) = channel();
        if self.lines.try_send(Item::Flushed(done)).is_err() {
            return Flush::Abandoned;
        }
        match written.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(()) => Flush::Written,
            Err(RecvTimeoutError::Timeout) => Flush::Pending,
            // The writer drops the sender unanswered if it ends first.
            Err(RecvTimeoutError::Disconnected) => Flush::Abandoned,
        }
    }

    /// Shuts the connection down both ways: the writer's next write fails,
    /// the connection's reader sees the end.
    pub fn close(&self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// The writer thread: queued lines into the socket until every sender is
/// gone or a write fails.
fn drain(queue: Receiver<Item>, mut stream: UnixStream) {
    for item in queue {
        match item {
            Item::Line(line) => {
                if let Err(e) = stream.write_all(line.as_bytes()) {
                    tracing::debug!("control connection: write failed: {e}; closing");
                    break;
                }
            }
            Item::Flushed(done) => {
                let _ = done.send(());
            }
        }
    }
    let _ = stream.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read};
    use std::time::Instant;

    #[test]
    fn lines_arrive_in_order() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let outbox = Outbox::open(&ours, ()).unwrap();
        outbox.send("ok attached").unwrap();
        outbox.offer("event one").unwrap();
        outbox.send("ok decided").unwrap();
        drop(outbox);
        drop(ours);
        let mut text = String::new();
        BufReader::new(theirs).read_to_string(&mut text).unwrap();
        assert_eq!(text, "ok attached\nevent one\nok decided\n");
    }

    #[test]
    fn a_client_that_does_not_read_is_dropped_without_waiting() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let outbox = Outbox::open(&ours, ()).unwrap();
        let line = "e".repeat(1000);
        // The socket buffer, then the queue fill up; no offer waits for the
        // client (the writer's own write is the one that waits).
        let started = Instant::now();
        let mut offered = 0;
        let refused = loop {
            match outbox.offer(&line) {
                Ok(()) => offered += 1,
                Err(e) => break e,
            }
            assert!(offered < 100_000, "the queue never filled");
        };
        assert_eq!(refused, OfferError::Full);
        assert!(
            started.elapsed() < WRITE_TIMEOUT,
            "offers waited for the client: {:?}",
            started.elapsed()
        );
        assert!(offered >= CAPACITY);
        // The connection is shut down: the client reads what was sent, then
        // the end; later offers find the writer gone.
        let mut reader = BufReader::new(theirs);
        let mut received = 0;
        let mut buf = String::new();
        while reader.read_line(&mut buf).unwrap() > 0 {
            assert_eq!(buf.trim_end(), line);
            buf.clear();
            received += 1;
        }
        assert!(received <= offered);
        let deadline = Instant::now() + Duration::from_secs(10);
        while outbox.offer("late") != Err(OfferError::Closed) {
            assert!(Instant::now() < deadline, "the writer did not end");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn flush_waits_for_the_queued_lines_and_no_longer_than_its_deadline() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let outbox = Outbox::open(&ours, ()).unwrap();
        outbox.offer("last event").unwrap();
        assert_eq!(
            outbox.flush(Instant::now() + Duration::from_secs(10)),
            Flush::Written
        );
        let mut reader = BufReader::new(theirs.try_clone().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert_eq!(line, "last event\n");
        // A client that does not read: the socket buffer fills, the writer
        // waits, the flush gives up at its deadline.
        let big = "x".repeat(64 * 1024);
        for _ in 0..64 {
            if outbox.offer(&big).is_err() {
                break;
            }
        }
        let started = Instant::now();
        assert_eq!(
            outbox.flush(started + Duration::from_millis(200)),
            Flush::Pending
        );
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(200) && waited < WRITE_TIMEOUT,
            "waited {waited:?}"
        );
    }

    #[test]
    fn the_guard_lives_until_the_writer_ends() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let guard = Arc::new(());
        let outbox = Outbox::open(&ours, guard.clone()).unwrap();
        outbox.offer("event").unwrap();
        assert_eq!(
            outbox.flush(Instant::now() + Duration::from_secs(10)),
            Flush::Written
        );
        assert_eq!(Arc::strong_count(&guard), 2, "the writer holds the guard");
        drop(outbox);
        drop(theirs);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Arc::strong_count(&guard) > 1 {
            assert!(Instant::now() < deadline, "the writer kept the guard");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn a_failed_write_closes_the_connection() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let outbox = Outbox::open(&ours, ()).unwrap();
        drop(theirs);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match outbox.send("event") {
                Err(OfferError::Closed) => break,
                Ok(()) => {}
                Err(OfferError::Full) => unreachable!("send waits instead"),
            }
            assert!(Instant::now() < deadline, "the writer did not end");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
