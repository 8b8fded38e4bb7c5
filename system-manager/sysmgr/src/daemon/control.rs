//! The daemon's control socket: `status` requests from allowed local
//! peers, a bounded number of connections at once, each closed when idle.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::oneshot;

use super::Event;

/// At most this many control connections at once (each is one task).
const MAX_CONTROL_CONNECTIONS: usize = 16;
/// A control connection that sends nothing (or reads nothing) for this
/// long is closed.
const CONTROL_IDLE: Duration = Duration::from_secs(60);

/// Serves `status` on the daemon's control socket.
pub(super) fn serve(listener: tokio::net::UnixListener, events: UnboundedSender<Event>) {
    serve_with(listener, events, MAX_CONTROL_CONNECTIONS, CONTROL_IDLE);
}

/// [`serve`] with its limits: at most `max` connections (more are
/// closed at once), each closed after `idle` without a request.
fn serve_with(
    listener: tokio::net::UnixListener,
    events: UnboundedSender<Event>,
    max: usize,
    idle: Duration,
) {
    use tokio::io::AsyncWriteExt;
    let slots = Arc::new(tokio::sync::Semaphore::new(max));
    tokio::spawn(async move {
        let mut backoff = sandbox::socket::AcceptBackoff::default();
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => {
                    backoff.success();
                    stream
                }
                Err(e) => {
                    // Out of descriptors (EMFILE) or another error: wait,
                    // longer each time, instead of spinning or giving up.
                    let wait = backoff.failure();
                    tracing::warn!("control socket: accept failed: {e}; retrying in {wait:?}");
                    tokio::time::sleep(wait).await;
                    continue;
                }
            };
            if let Err(e) = sandbox::socket::check_peer(&stream) {
                vmstack_log::guest_warn!("control socket: connection refused: {e}");
                continue;
            }
            let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                vmstack_log::guest_warn!(
                    "control socket: connection closed: {max} connections already open"
                );
                continue;
            };
            let events = events.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let (r, mut w) = stream.into_split();
                let mut lines = crate::lines::LineReader::new(r, 64);
                while let Ok(Ok(line)) = tokio::time::timeout(idle, lines.next_line()).await {
                    let answer = match line.trim() {
                        "status" => {
                            let (tx, rx) = oneshot::channel();
                            if events.send(Event::Status(tx)).is_err() {
                                break;
                            }
                            match rx.await {
                                Ok(v) => v.to_string(),
                                Err(_) => break,
                            }
                        }
                        other => {
                            json!({"error": format!("unknown request {other:?} (try status)")})
                                .to_string()
                        }
                    };
                    // A client that stops reading loses the connection
                    // (and its slot) after `idle` too.
                    let line = format!("{answer}\n");
                    let write = w.write_all(line.as_bytes());
                    if !matches!(tokio::time::timeout(idle, write).await, Ok(Ok(()))) {
                        break;
                    }
                }
            });
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::UnixStream;

    /// A control socket served with `max` connections and `idle`, and the
    /// daemon side of its events (answering `status` with `{"ok":1}`).
    fn served(tag: &str, max: usize, idle: Duration) -> std::path::PathBuf {
        let path = crate::test_dir(tag).join("control.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        serve_with(listener, tx, max, idle);
        tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                if let Event::Status(reply) = event {
                    let _ = reply.send(json!({"ok": 1}));
                }
            }
        });
        path
    }

    async fn status(s: &mut BufReader<UnixStream>) -> Option<String> {
        s.get_mut().write_all(b"status\n").await.ok()?;
        let mut line = String::new();
        (s.read_line(&mut line).await.ok()? > 0).then_some(line)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn connections_past_the_cap_are_closed_and_idle_ones_end() {
        let path = served("control-cap", 2, Duration::from_secs(2));
        let mut a = BufReader::new(UnixStream::connect(&path).await.unwrap());
        let mut b = BufReader::new(UnixStream::connect(&path).await.unwrap());
        assert_eq!(status(&mut a).await.as_deref(), Some("{\"ok\":1}\n"));
        assert_eq!(status(&mut b).await.as_deref(), Some("{\"ok\":1}\n"));
        // A third one while two are open: closed without an answer.
        let mut c = BufReader::new(UnixStream::connect(&path).await.unwrap());
        assert_eq!(status(&mut c).await, None);
        // Idle past the limit: the server closes both; a slot is free again.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let mut line = String::new();
        let closed = tokio::time::timeout(Duration::from_secs(5), a.read_line(&mut line))
            .await
            .expect("an idle connection stayed open");
        assert_eq!(closed.unwrap(), 0, "{line}");
        let mut d = BufReader::new(UnixStream::connect(&path).await.unwrap());
        assert_eq!(status(&mut d).await.as_deref(), Some("{\"ok\":1}\n"));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_client_that_never_reads_loses_its_slot() {
        let path = served("control-noread", 1, Duration::from_secs(1));
        let mut a = UnixStream::connect(&path).await.unwrap();
        // Requests without reading a single answer, until the socket is full.
        let flood = tokio::spawn(async move {
            let many = "status\n".repeat(1 << 16);
            for _ in 0..64 {
                if a.write_all(many.as_bytes()).await.is_err() {
                    break;
                }
            }
            a
        });
        tokio::time::sleep(Duration::from_secs(4)).await;
        let mut b = BufReader::new(UnixStream::connect(&path).await.unwrap());
        assert_eq!(
            status(&mut b).await.as_deref(),
            Some("{\"ok\":1}\n"),
            "the slot of a client that reads nothing was not freed"
        );
        flood.abort();
    }
}
