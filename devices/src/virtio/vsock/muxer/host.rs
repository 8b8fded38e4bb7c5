//! Host-initiated connections: accepting on the hybrid socket, reading the
//! `CONNECT <port>` line, asking the guest, and the timeouts of both waits.

use std::io;
use std::os::unix::net::UnixStream;
use std::time::Instant;

use vmm_sys_util::epoll::EventSet;

use super::*;

impl Muxer {
    /// Accepts host connections on the hybrid socket.
    pub fn accept(&mut self, ctx: &WaitContext<Token>) {
        loop {
            let stream = match self.listener.accept() {
                Ok((s, _)) => {
                    self.accept_backoff.success();
                    s
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if sandbox::socket::is_resource_exhaustion(&e) => {
                    let wait = self.accept_backoff.failure();
                    self.warn_once(
                        Warn::AcceptExhausted,
                        format_args!("accept failed ({e}); not accepting for {wait:?}"),
                    );
                    if let Err(e) = ctx.delete(&self.listener) {
                        tracing::warn!("virtio-vsock: cannot pause accepting: {e}");
                    }
                    self.accept_paused_until = Some(Instant::now() + wait);
                    return;
                }
                Err(e) => {
                    crate::guest_warn!(
                        "virtio-vsock: accept failed, pausing it for {} ms: {e}",
                        ACCEPT_PAUSE.as_millis()
                    );
                    if ctx.delete(&self.listener).is_ok() {
                        self.accept_paused_until = Some(Instant::now() + ACCEPT_PAUSE);
                    }
                    return;
                }
            };
            if let Err(e) = sandbox::socket::check_peer(&stream) {
                self.warn_once(
                    Warn::PeerRefused,
                    format_args!("host connection refused: {e}"),
                );
                continue;
            }
            if self.waiting.len() >= MAX_WAITING {
                crate::guest_warn!(
                    "virtio-vsock: too many host connections without CONNECT; closed one"
                );
                continue;
            }
            if let Err(e) = stream.set_nonblocking(true) {
                crate::guest_warn!("virtio-vsock: {e}");
                continue;
            }
            let id = self.new_id();
            let events = EventSet::IN | EventSet::READ_HANG_UP | EventSet::EDGE_TRIGGERED;
            if let Err(e) = ctx.add(&stream, events, Token::Waiting(id)) {
                crate::guest_warn!("virtio-vsock: cannot watch host socket: {e}");
                continue;
            }
            self.waiting.insert(
                id,
                Waiting {
                    stream,
                    deadline: Instant::now() + CONNECT_LINE_TIMEOUT,
                },
            );
            self.waiting_event(ctx, id);
        }
    }

    /// A host socket that owes its `CONNECT` line became readable.
    pub fn waiting_event(&mut self, ctx: &WaitContext<Token>, id: u32) {
        let Some(w) = self.waiting.get(&id) else {
            return;
        };
        let mut line = [0u8; MAX_CONNECT_LINE];
        let n = match unix::peek(&w.stream, &mut line) {
            Ok(0) => {
                self.waiting.remove(&id);
                return;
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(_) => {
                self.waiting.remove(&id);
                return;
            }
        };
        match unix::parse_connect_line(&line[..n]) {
            ConnectLine::Incomplete => {}
            ConnectLine::Invalid => {
                tracing::debug!("virtio-vsock: host sent no valid CONNECT line; closed");
                self.waiting.remove(&id);
            }
            ConnectLine::Connect { port, len } => {
                let Some(mut w) = self.waiting.remove(&id) else {
                    return;
                };
                // Consume exactly the line; later bytes are stream data.
                if io::Read::read_exact(&mut w.stream, &mut line[..len]).is_err() {
                    return;
                }
                self.host_connect(ctx, id, w.stream, port);
            }
        }
    }

    /// The host asked for guest port `port`: send the guest a `REQUEST`.
    fn host_connect(&mut self, ctx: &WaitContext<Token>, id: u32, stream: UnixStream, port: u32) {
        if self.conns.len() >= MAX_CONNECTIONS {
            self.warn_once(
                Warn::TooMany,
                format_args!("refused host connection: {MAX_CONNECTIONS} connections open"),
            );
            return;
        }
        let local = loop {
            let p = self.next_local_port;
            self.next_local_port = p.checked_add(1).unwrap_or(FIRST_LOCAL_PORT);
            if !self.keys.contains_key(&(p, port)) {
                break p;
            }
        };
        if let Err(e) = ctx.modify(&stream, Self::conn_events(), Token::Conn(id)) {
            crate::guest_warn!("virtio-vsock: cannot watch host socket: {e}");
            return;
        }
        let mut conn = Conn::new(
            Connection::local_init(local, port, self.guest_cid, CONN_BUF_ALLOC),
            stream,
        );
        conn.host_initiated = true;
        conn.readable = true;
        conn.deadline = Some(Instant::now() + REQUEST_TIMEOUT);
        self.keys.insert((local, port), id);
        self.conns.insert(id, conn);
        self.schedule(id);
    }

    /// Puts the listener back into `ctx` once an accept pause is over.
    pub fn resume_accept(&mut self, ctx: &WaitContext<Token>, now: Instant) {
        if self.accept_paused_until.is_some_and(|t| t <= now) {
            self.accept_paused_until = None;
            if let Err(e) = self.register(ctx) {
                crate::guest_error!("virtio-vsock: cannot watch the listener again: {e}");
            }
        }
    }

    /// Resets connections and drops host sockets whose deadline passed.
    pub fn expire(&mut self, now: Instant) {
        let late: Vec<u32> = self
            .conns
            .iter()
            .filter(|(_, c)| c.deadline.is_some_and(|d| d <= now))
            .map(|(&id, _)| id)
            .collect();
        for id in late {
            tracing::debug!("virtio-vsock: connection timed out; RST");
            self.kill(id, true);
        }
        self.waiting.retain(|_, w| w.deadline > now);
    }
}
