//! Host-initiated connections: accepting on the hybrid socket, reading the
//! `CONNECT <port>` line, accepting on forwarded TCP ports, asking the
//! guest, and the timeouts of these waits.

use std::io;
use std::os::unix::net::UnixStream;
use std::time::Instant;

use vmm_sys_util::epoll::EventSet;

use super::*;

impl Muxer {
    /// Accepts host connections on the hybrid socket.
    pub fn accept(&mut self, ctx: &WaitContext<Token>) {
        for _ in 0..ACCEPTS_PER_WAKE {
            let stream = match self.listener.accept() {
                Ok((s, _)) => {
                    self.accept_backoff.success();
                    s
                }
                Err(e) if self.accept_failed(ctx, &e) => continue,
                Err(_) => return,
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

    /// Accepts connections on the forwarded TCP port `index`: each asks
    /// the guest for its port at once.
    pub fn accept_forward(&mut self, ctx: &WaitContext<Token>, index: u32) {
        for _ in 0..ACCEPTS_PER_WAKE {
            let Some(forward) = self.tcp.as_ref().and_then(|t| t.ports.get(index as usize)) else {
                return;
            };
            let (port, server_port) = (forward.guest_port, forward.port);
            let (stream, client) = match forward.listener.accept() {
                Ok(accepted) => {
                    self.accept_backoff.success();
                    accepted
                }
                Err(e) if self.accept_failed(ctx, &e) => continue,
                Err(_) => return,
            };
            // The limits first: a full device closes clients without asking
            // the kernel who they are.
            if !self.room_for_connection() {
                continue;
            }
            if self.tcp_connections() >= MAX_TCP_CONNECTIONS {
                self.warn_once(
                    Warn::TooMany,
                    format_args!(
                        "refused TCP client: {MAX_TCP_CONNECTIONS} forwarded connections open"
                    ),
                );
                continue;
            }
            if let Err(e) = self.check_tcp_peer(server_port, client) {
                self.warn_once(
                    Warn::TcpPeerRefused,
                    format_args!("TCP client of 127.0.0.1:{server_port} refused: {e}"),
                );
                continue;
            }
            if let Err(e) = stream.set_nonblocking(true) {
                crate::guest_warn!("virtio-vsock: {e}");
                continue;
            }
            let id = self.new_id();
            if let Err(e) = ctx.add(&stream, Self::conn_events(), Token::Conn(id)) {
                crate::guest_warn!("virtio-vsock: cannot watch host socket: {e}");
                continue;
            }
            self.request_guest_port(id, HostStream::Tcp(stream), port);
        }
    }

    /// `accept` on a listener failed with `e`: whether to try again at
    /// once (`EINTR`); otherwise nothing is left to accept (`EWOULDBLOCK`)
    /// or accepting pauses: every listener leaves `ctx` for a while (the
    /// error is the process's, e.g. out of descriptors, whichever listener
    /// met it; the listeners share one back-off).
    fn accept_failed(&mut self, ctx: &WaitContext<Token>, e: &io::Error) -> bool {
        let wait = match e.kind() {
            io::ErrorKind::WouldBlock => return false,
            io::ErrorKind::Interrupted => return true,
            _ if sandbox::socket::is_resource_exhaustion(e) => {
                let wait = self.accept_backoff.failure();
                self.warn_once(
                    Warn::AcceptExhausted,
                    format_args!("accept failed ({e}); not accepting for {wait:?}"),
                );
                wait
            }
            _ => {
                crate::guest_warn!(
                    "virtio-vsock: accept failed, pausing it for {} ms: {e}",
                    ACCEPT_PAUSE.as_millis()
                );
                ACCEPT_PAUSE
            }
        };
        if self.accept_paused_until.is_none() {
            for (fd, _) in self.listeners() {
                if let Err(e) = ctx.delete(&fd) {
                    tracing::warn!("virtio-vsock: cannot pause accepting: {e}");
                }
            }
        }
        self.accept_paused_until = Some(Instant::now() + wait);
        false
    }

    /// Checks who owns the TCP client socket at `client` connected to
    /// 127.0.0.1:`port` (see `sandbox::tcp_peer`).
    fn check_tcp_peer(&self, port: u16, client: SocketAddr) -> Result<u32, String> {
        let SocketAddr::V4(client) = client else {
            return Err(format!("{client} is not an IPv4 loopback address"));
        };
        let Some(tcp) = &self.tcp else {
            return Err("no forwarded ports".to_string());
        };
        let server = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
        tcp.peers.check(server, client).map_err(|e| match e {
            sandbox::socket::PeerError::Io(e) => format!(
                "cannot tell who connected from {client} ({e}; the host kernel needs the tcp_diag module)"
            ),
            e => e.to_string(),
        })
    }

    /// Whether one more connection may open (else logged once).
    fn room_for_connection(&mut self) -> bool {
        if self.conns.len() < MAX_CONNECTIONS {
            return true;
        }
        self.warn_once(
            Warn::TooMany,
            format_args!("refused host connection: {MAX_CONNECTIONS} connections open"),
        );
        false
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

    /// The host asked for guest port `port` on the hybrid socket.
    fn host_connect(&mut self, ctx: &WaitContext<Token>, id: u32, stream: UnixStream, port: u32) {
        if !self.room_for_connection() {
            return;
        }
        if let Err(e) = ctx.modify(&stream, Self::conn_events(), Token::Conn(id)) {
            crate::guest_warn!("virtio-vsock: cannot watch host socket: {e}");
            return;
        }
        self.request_guest_port(id, HostStream::Unix(stream), port);
    }

    /// Opens connection `id` from the host socket `stream` (watched under
    /// `Token::Conn(id)`) to guest port `port`: sends the guest a
    /// `REQUEST`.
    fn request_guest_port(&mut self, id: u32, stream: HostStream, port: u32) {
        let local = loop {
            let p = self.next_local_port;
            self.next_local_port = p.checked_add(1).unwrap_or(FIRST_LOCAL_PORT);
            if !self.keys.contains_key(&(p, port)) {
                break p;
            }
        };
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
            for (fd, token) in self.listeners() {
                match ctx.add(&fd, EventSet::IN, token) {
                    // Still watched: its pause had failed.
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                    Err(e) => {
                        crate::guest_error!("virtio-vsock: cannot watch a listener again: {e}")
                    }
                    Ok(()) => {}
                }
            }
        }
    }

    /// Resets connections and drops host sockets whose deadline passed
    /// (a lingering TCP socket whose client still sends is reset then);
    /// serves lingering sockets with bytes left unread again.
    pub fn expire(&mut self, now: Instant) {
        self.lingering.retain(|_, l| !l.unread || l.discard());
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
        self.lingering.retain(|_, l| l.deadline > now);
    }
}
