//! The I/O shell around [`Connection`]: host sockets, the connection table,
//! the RX scheduling and the TX dispatch.
//!
//! Host sockets are non-blocking and registered edge-triggered in the
//! worker's [`WaitContext`] under typed [`Token`]s; the muxer remembers readiness
//! (`readable`) and only reads when the guest has both an RX buffer and
//! credit, so one slow connection never blocks the others. Payload moves
//! between guest buffers and host sockets with one `read`/`write` per guest
//! region; host bytes are copied into a per-connection buffer only when the
//! host socket cannot take guest data right away.
//!
//! Past 800 lines (~815 without its tests): the listener and the
//! `CONNECT` handshake already live in `muxer/host.rs`; the connection
//! table, RX scheduling and TX dispatch left here share one table and its
//! borrows, and read best together.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, VolatileMemoryError, WriteVolatile};
use vmm_sys_util::epoll::EventSet;

use super::connection::{Connection, GuestAction, State};
use super::packet::{
    op, Header, Region, RxBuffer, TxPacket, SHUTDOWN_BOTH, SHUTDOWN_SEND, TYPE_STREAM,
};
use super::unix::{self, ConnectLine, MAX_CONNECT_LINE};
use super::{
    CONN_BUF_ALLOC, FIRST_LOCAL_PORT, HDR_LEN, HOST_CID, MAX_CONNECTIONS, MAX_PKT_PAYLOAD,
    MAX_TCP_CONNECTIONS, MAX_WAITING,
};
use crate::virtio::event_loop::event_token;
use crate::virtio::{GuestMemoryMmap, WaitContext};

mod guest_io;
mod host;
mod stream;

use guest_io::{read_into, volatile_io_error, ReadResult};
use stream::HostStream;

/// How long the guest has to answer a host `CONNECT` (`RESPONSE`/`RST`).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a host program has to send its `CONNECT` line.
pub const CONNECT_LINE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a closing connection may linger (guest `RST` after our
/// `SHUTDOWN`, or flushing to the host after the guest's) before we reset it.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a stopping device (VMM exit, VM restart, device reset) waits
/// for host readers to take the guest bytes it has already acknowledged.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// `RST`s to unknown connections queued for the guest; TX processing pauses
/// while this many wait for RX buffers.
const MAX_RST_QUEUE: usize = 1024;
/// How long accepting pauses after `accept` failed (other than
/// `EWOULDBLOCK`/`EINTR`, e.g. `EMFILE`).
pub const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// Connections one listener's readiness accepts before the worker serves
/// the queues again (the listeners are level-triggered: the rest wait for
/// the next round), so that clients connecting faster than the worker
/// accepts cannot hold it.
const ACCEPTS_PER_WAKE: usize = 32;

event_token! {
    /// The muxer's event sources in the worker's wait context (the queue
    /// kicks and the kill event are the event loop's).
    pub enum Token {
        /// The hybrid listening socket.
        Listener,
        /// A forwarded TCP port's listening socket (its index).
        Forward(u32),
        /// A host socket that has not sent its `CONNECT` line yet.
        Waiting(u32),
        /// A connection's host socket.
        Conn(u32),
    }
}

/// A loopback TCP port forwarded to a guest port: every connection
/// accepted on `listener` from an allowed user becomes a connection to
/// the guest's `guest_port`, its bytes the guest's from the first one (no
/// `CONNECT` or `OK` line; docs/vsock.md, "Forwarded TCP ports").
#[derive(Debug)]
pub struct TcpForward {
    /// The listening socket on 127.0.0.1, bound by the VMM before its
    /// sandbox.
    pub listener: TcpListener,
    /// The port it is bound to (given, not asked: `getsockname` is not
    /// among the worker's system calls).
    pub port: u16,
    /// The guest port its connections go to.
    pub guest_port: u32,
}

/// A device's forwarded TCP ports and the check of who may use them.
#[derive(Debug)]
pub struct TcpForwards {
    /// The ports.
    pub ports: Vec<TcpForward>,
    /// Who may connect: the process's allowed peer uids, as for its unix
    /// sockets.
    pub peers: sandbox::tcp_peer::TcpPeerCheck,
}

impl TcpForwards {
    /// Duplicates of every descriptor (the VMM keeps the originals across
    /// boots; each device and each of its workers takes duplicates).
    pub fn try_clone(&self) -> io::Result<Self> {
        let ports = self
            .ports
            .iter()
            .map(|f| {
                Ok(TcpForward {
                    listener: f.listener.try_clone()?,
                    port: f.port,
                    guest_port: f.guest_port,
                })
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Self {
            ports,
            peers: self.peers.try_clone()?,
        })
    }
}

/// A forwarded TCP socket whose connection ended: our side is shut down
/// (the client reads our last bytes, then end of file) and whatever the
/// client still sends is read and dropped until it closes or the deadline
/// passes. Closing a TCP socket with unread bytes would send a reset,
/// which discards our bytes the client has not received yet.
struct Lingering {
    stream: TcpStream,
    deadline: Instant,
    /// The last [`Self::discard`] stopped at its bound: bytes may still
    /// wait, for which the edge-triggered socket gives no new event.
    unread: bool,
}

impl Lingering {
    /// Reads and drops what the client sent, at most 256 KiB a call (a
    /// client that keeps sending cannot hold the worker; then `unread`
    /// is set and the muxer calls again after its events); `false` once
    /// the client closed (or the socket failed): then it can be closed
    /// without a reset.
    fn discard(&mut self) -> bool {
        let mut buf = [0u8; 16 * 1024];
        self.unread = false;
        for _ in 0..16 {
            match io::Read::read(&mut self.stream, &mut buf) {
                Ok(0) => return false,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        self.unread = true;
        true
    }
}

/// A host socket that still has to say `CONNECT <port>`.
struct Waiting {
    stream: UnixStream,
    deadline: Instant,
}

/// A connection: protocol state plus its host socket.
struct Conn {
    core: Connection,
    stream: HostStream,
    /// Bytes for the host socket that it did not take yet.
    tx_buf: Vec<u8>,
    tx_off: usize,
    /// Leading bytes of `tx_buf` that are ours (the `OK` line), not guest
    /// payload (they do not count as forwarded).
    tx_ctl: usize,
    /// Host local port allocated for a host-initiated connection.
    host_initiated: bool,
    /// The host socket may have bytes (edge-triggered readiness).
    readable: bool,
    /// The host closed both directions.
    hup: bool,
    /// A read returned end of file.
    eof: bool,
    /// We shut down the host socket's write side.
    write_shut: bool,
    /// In the RX scheduling queue.
    queued: bool,
    deadline: Option<Instant>,
    /// Guest bytes still buffered when the close deadline was last set: a
    /// closing connection whose host reader keeps draining gets more time.
    close_mark: Option<usize>,
}

impl Conn {
    fn new(core: Connection, stream: HostStream) -> Self {
        Self {
            core,
            stream,
            tx_buf: Vec::new(),
            tx_off: 0,
            tx_ctl: 0,
            host_initiated: false,
            readable: false,
            hup: false,
            eof: false,
            write_shut: false,
            queued: false,
            deadline: None,
            close_mark: None,
        }
    }

    /// Guest bytes accepted but not yet written to the host.
    fn buffered(&self) -> usize {
        self.tx_buf.len() - self.tx_off - self.tx_ctl
    }

    fn wants_data(&self) -> bool {
        self.readable && !self.eof && self.core.may_send_data()
    }

    fn has_rx_work(&self) -> bool {
        self.core.has_control() || (self.wants_data() && self.core.peer_free() > 0)
    }

    /// Writes buffered bytes to the host socket. Returns the guest bytes
    /// written, or an error if the socket is broken.
    fn flush(&mut self) -> io::Result<usize> {
        let mut guest_bytes = 0;
        while self.tx_off < self.tx_buf.len() {
            match io::Write::write(&mut self.stream, &self.tx_buf[self.tx_off..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.tx_off += n;
                    let ctl = n.min(self.tx_ctl);
                    self.tx_ctl -= ctl;
                    guest_bytes += n - ctl;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.tx_off == self.tx_buf.len() {
            self.tx_buf.clear();
            self.tx_off = 0;
        } else if self.tx_off > self.tx_buf.len() / 2 {
            self.tx_buf.drain(..self.tx_off);
            self.tx_off = 0;
        }
        Ok(guest_bytes)
    }
}

/// Kinds of guest misbehaviour, each logged once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Warn {
    BadTx,
    BadRx,
    WrongSrcCid,
    WrongDst,
    ProtocolReset,
    TooMany,
    PeerRefused,
    TcpPeerRefused,
    AcceptExhausted,
}

/// The muxer: every connection of one vsock device.
pub struct Muxer {
    mem: GuestMemoryMmap,
    guest_cid: u64,
    path: PathBuf,
    listener: UnixListener,
    /// Forwarded TCP ports, if any.
    tcp: Option<TcpForwards>,
    conns: HashMap<u32, Conn>,
    /// Forwarded TCP sockets of ended connections (see [`Lingering`]),
    /// by the id their connection had (their wait-context token).
    lingering: HashMap<u32, Lingering>,
    /// (host port, guest port) to connection id.
    keys: HashMap<(u32, u32), u32>,
    waiting: HashMap<u32, Waiting>,
    next_id: u32,
    next_local_port: u32,
    rx_ready: VecDeque<u32>,
    rst_queue: VecDeque<Header>,
    warned: HashSet<Warn>,
    /// Accepting is paused until then (after `accept` failed, e.g.
    /// `EMFILE`): the listener is out of the wait context meanwhile, so a
    /// level-triggered listener that cannot be accepted from cannot make
    /// the loop spin.
    accept_paused_until: Option<Instant>,
    accept_backoff: sandbox::socket::AcceptBackoff,
}

impl Muxer {
    /// A muxer serving `listener` (bound at `path`) for the guest
    /// `guest_cid`; [`Self::register`] puts the listener into a wait
    /// context.
    pub fn new(
        mem: GuestMemoryMmap,
        guest_cid: u64,
        path: PathBuf,
        listener: UnixListener,
    ) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        Ok(Self {
            mem,
            guest_cid,
            path,
            listener,
            tcp: None,
            conns: HashMap::new(),
            lingering: HashMap::new(),
            keys: HashMap::new(),
            waiting: HashMap::new(),
            next_id: 0,
            next_local_port: FIRST_LOCAL_PORT,
            rx_ready: VecDeque::new(),
            rst_queue: VecDeque::new(),
            warned: HashSet::new(),
            accept_paused_until: None,
            accept_backoff: sandbox::socket::AcceptBackoff::default(),
        })
    }

    /// Also serves `tcp`: loopback TCP ports whose connections go to a
    /// guest port each, from the users its check allows.
    pub fn with_tcp_forwards(mut self, tcp: TcpForwards) -> io::Result<Self> {
        for f in &tcp.ports {
            f.listener.set_nonblocking(true)?;
        }
        self.tcp = Some(tcp);
        Ok(self)
    }

    /// Watches the listening sockets in `ctx` (level-triggered: host
    /// connections made before are accepted at the first wait).
    pub fn register(&self, ctx: &WaitContext<Token>) -> io::Result<()> {
        for (fd, token) in self.listeners() {
            ctx.add(&fd, EventSet::IN, token)?;
        }
        Ok(())
    }

    /// The listening sockets (hybrid, then forwarded TCP ports) and their
    /// tokens.
    fn listeners(&self) -> Vec<(std::os::fd::RawFd, Token)> {
        let forwards = (0u32..)
            .zip(self.tcp.iter().flat_map(|t| &t.ports))
            .map(|(i, f)| (f.listener.as_raw_fd(), Token::Forward(i)));
        std::iter::once((self.listener.as_raw_fd(), Token::Listener))
            .chain(forwards)
            .collect()
    }

    /// Handles readiness of one of the muxer's sources.
    pub fn on_event(&mut self, ctx: &WaitContext<Token>, token: Token, events: EventSet) {
        match token {
            Token::Listener => self.accept(ctx),
            Token::Forward(index) => self.accept_forward(ctx, index),
            Token::Waiting(id) => self.waiting_event(ctx, id),
            Token::Conn(id) => self.conn_event(id, events),
        }
    }

    /// Number of open connections.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Number of open connections from forwarded TCP ports.
    fn tcp_connections(&self) -> usize {
        self.conns
            .values()
            .filter(|c| matches!(c.stream, HostStream::Tcp(_)))
            .count()
    }

    /// Checks the muxer's limits (the fuzz target's oracle): at most
    /// [`MAX_CONNECTIONS`] connections and [`MAX_WAITING`] waiting host
    /// sockets, at most our advertised `buf_alloc` of guest bytes buffered
    /// per connection, a bounded `RST` queue, one port pair per connection.
    #[doc(hidden)]
    pub fn check_limits(&self) -> Result<(), String> {
        if self.conns.len() > MAX_CONNECTIONS {
            return Err(format!("{} connections", self.conns.len()));
        }
        if self.waiting.len() > MAX_WAITING {
            return Err(format!("{} waiting host sockets", self.waiting.len()));
        }
        // TX stops at MAX_RST_QUEUE; closing connections adds one each.
        if self.rst_queue.len() > MAX_RST_QUEUE + MAX_CONNECTIONS {
            return Err(format!("{} queued RSTs", self.rst_queue.len()));
        }
        for (id, c) in &self.conns {
            if c.buffered() > CONN_BUF_ALLOC as usize {
                return Err(format!(
                    "connection {id} buffers {} guest bytes, more than the {CONN_BUF_ALLOC} advertised",
                    c.buffered()
                ));
            }
        }
        if self.lingering.len() > MAX_TCP_CONNECTIONS {
            return Err(format!("{} lingering TCP sockets", self.lingering.len()));
        }
        if self.tcp_connections() > MAX_TCP_CONNECTIONS {
            return Err(format!("{} TCP connections", self.tcp_connections()));
        }
        if self.keys.len() != self.conns.len() {
            return Err(format!(
                "{} port pairs for {} connections",
                self.keys.len(),
                self.conns.len()
            ));
        }
        Ok(())
    }

    fn warn_once(&mut self, kind: Warn, detail: impl std::fmt::Display) {
        if self.warned.insert(kind) {
            crate::guest_warn!("virtio-vsock: {detail} (logged once)");
        } else {
            tracing::debug!("virtio-vsock: {detail}");
        }
    }

    fn new_id(&mut self) -> u32 {
        loop {
            let id = self.next_id;
            self.next_id = self.next_id.wrapping_add(1);
            if !self.conns.contains_key(&id)
                && !self.waiting.contains_key(&id)
                && !self.lingering.contains_key(&id)
            {
                return id;
            }
        }
    }

    fn conn_events() -> EventSet {
        EventSet::IN | EventSet::OUT | EventSet::READ_HANG_UP | EventSet::EDGE_TRIGGERED
    }

    // ---------------------------------------------------------------- TX

    /// Handles every packet the guest queued on TX. Returns whether any
    /// chain was used.
    pub fn process_tx(&mut self, ctx: &WaitContext<Token>, txq: &mut Queue) -> bool {
        let mem = self.mem.clone();
        let mut used = false;
        while self.rst_queue.len() < MAX_RST_QUEUE {
            let Some(chain) = txq.pop_descriptor_chain(&mem) else {
                break;
            };
            let head = chain.head_index();
            match TxPacket::parse(&mem, chain) {
                Ok(pkt) => self.handle_tx(ctx, &pkt.hdr, &pkt.payload),
                Err((hdr, e)) => {
                    self.warn_once(Warn::BadTx, format_args!("dropped TX packet: {e}"));
                    if let Some(hdr) = hdr {
                        self.reset_named(&hdr);
                    }
                }
            }
            if let Err(e) = txq.add_used(&mem, head, 0) {
                self.warn_once(Warn::BadTx, format_args!("cannot return TX buffer: {e:?}"));
            }
            used = true;
        }
        used
    }

    /// A malformed packet with a readable header: reset the connection it
    /// names, or answer `RST` if it names none.
    fn reset_named(&mut self, hdr: &Header) {
        if hdr.src_cid != self.guest_cid {
            return;
        }
        match self.keys.get(&(hdr.dst_port, hdr.src_port)) {
            Some(&id) => self.kill(id, true),
            None if hdr.op != op::RST => self.rst_queue.push_back(hdr.reply(op::RST)),
            None => {}
        }
    }

    fn handle_tx(&mut self, ctx: &WaitContext<Token>, hdr: &Header, payload: &[Region]) {
        if hdr.src_cid != self.guest_cid {
            let guest_cid = self.guest_cid;
            self.warn_once(
                Warn::WrongSrcCid,
                format_args!(
                    "dropped packet with source cid {} (guest is {})",
                    hdr.src_cid, guest_cid
                ),
            );
            return;
        }
        if hdr.dst_cid != HOST_CID || hdr.type_ != TYPE_STREAM {
            self.warn_once(
                Warn::WrongDst,
                format_args!(
                    "refused packet to cid {} type {} (only stream to the host, cid 2)",
                    hdr.dst_cid, hdr.type_
                ),
            );
            if hdr.op != op::RST {
                self.rst_queue.push_back(hdr.reply(op::RST));
            }
            return;
        }
        let Some(&id) = self.keys.get(&(hdr.dst_port, hdr.src_port)) else {
            match hdr.op {
                op::REQUEST => self.guest_connect(ctx, hdr),
                op::RST => {}
                _ => self.rst_queue.push_back(hdr.reply(op::RST)),
            }
            return;
        };
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        match conn.core.on_guest_packet(hdr, conn.buffered()) {
            GuestAction::None | GuestAction::Shutdown(_) => {}
            GuestAction::Established => {
                conn.deadline = None;
                // Only hybrid clients expect the `OK` line.
                let HostStream::Unix(_) = conn.stream else {
                    self.after_change(id);
                    return;
                };
                let line = unix::ok_line(conn.core.local_port);
                conn.tx_ctl += line.len();
                conn.tx_buf.extend_from_slice(&line);
                if let Err(e) = conn.flush() {
                    tracing::debug!("virtio-vsock: host socket gone: {e}");
                    self.kill(id, true);
                    return;
                }
            }
            GuestAction::Forward(_) => {
                if let Err(e) = self.forward(id, payload) {
                    tracing::debug!("virtio-vsock: host socket gone: {e}");
                    self.kill(id, true);
                    return;
                }
            }
            GuestAction::Reset => {
                self.warn_once(
                    Warn::ProtocolReset,
                    format_args!(
                        "guest broke the protocol (op {} on port {}->{}): connection reset",
                        hdr.op, hdr.src_port, hdr.dst_port
                    ),
                );
                self.kill(id, true);
                return;
            }
            GuestAction::Closed => {
                self.kill(id, false);
                return;
            }
        }
        self.after_change(id);
    }

    /// Writes a guest payload to the host socket, straight from guest
    /// memory; what the socket does not take is buffered.
    fn forward(&mut self, id: u32, payload: &[Region]) -> io::Result<()> {
        let Some(conn) = self.conns.get_mut(&id) else {
            return Ok(());
        };
        let mut forwarded = 0;
        for &(addr, len) in payload {
            let mut done = 0;
            if conn.tx_buf.len() == conn.tx_off {
                if let Ok(slice) = self.mem.get_slice(addr, len) {
                    match conn.stream.as_fd().write_volatile(&slice) {
                        Ok(n) => done = n,
                        Err(VolatileMemoryError::IOError(e))
                            if e.kind() == io::ErrorKind::WouldBlock
                                || e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(volatile_io_error(e)),
                    }
                }
            }
            forwarded += done;
            if done < len {
                let old = conn.tx_buf.len();
                conn.tx_buf.resize(old + len - done, 0);
                self.mem
                    .read_slice(&mut conn.tx_buf[old..], GuestAddress(addr.0 + done as u64))
                    .map_err(|e| io::Error::other(e.to_string()))?;
            }
        }
        conn.core.forwarded(forwarded);
        Ok(())
    }

    /// The guest asked for host port `hdr.dst_port`: connect to `PATH_port`.
    fn guest_connect(&mut self, ctx: &WaitContext<Token>, hdr: &Header) {
        if self.conns.len() >= MAX_CONNECTIONS {
            self.warn_once(
                Warn::TooMany,
                format_args!("refused connection: {MAX_CONNECTIONS} connections open"),
            );
            self.rst_queue.push_back(hdr.reply(op::RST));
            return;
        }
        let path = unix::port_path(&self.path, hdr.dst_port);
        let stream = match unix::connect_nonblocking(&path) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(
                    "virtio-vsock: guest port {} -> host port {}: {}: {e}; RST",
                    hdr.src_port,
                    hdr.dst_port,
                    path.display()
                );
                self.rst_queue.push_back(hdr.reply(op::RST));
                return;
            }
        };
        if let Err(e) = sandbox::socket::check_peer(&stream) {
            self.warn_once(
                Warn::PeerRefused,
                format_args!("guest connection to {} refused: {e}; RST", path.display()),
            );
            self.rst_queue.push_back(hdr.reply(op::RST));
            return;
        }
        let id = self.new_id();
        if let Err(e) = ctx.add(&stream, Self::conn_events(), Token::Conn(id)) {
            crate::guest_warn!("virtio-vsock: cannot watch host socket: {e}");
            self.rst_queue.push_back(hdr.reply(op::RST));
            return;
        }
        let conn = Conn::new(
            Connection::peer_init(hdr, CONN_BUF_ALLOC),
            HostStream::Unix(stream),
        );
        self.keys.insert((hdr.dst_port, hdr.src_port), id);
        self.conns.insert(id, conn);
        self.schedule(id);
    }

    // ---------------------------------------------------------------- RX

    /// Fills RX buffers with queued packets and host data. Returns whether
    /// any chain was used.
    pub fn process_rx(&mut self, rxq: &mut Queue) -> bool {
        let mem = self.mem.clone();
        let mut used = false;
        loop {
            // What goes out next: an RST to an unknown connection, or the
            // next scheduled connection.
            let id = if self.rst_queue.is_empty() {
                match self.next_scheduled() {
                    Some(id) => Some(id),
                    None => break,
                }
            } else {
                None
            };
            let Some(chain) = rxq.pop_descriptor_chain(&mem) else {
                if let Some(id) = id {
                    self.rx_ready.push_front(id);
                    if let Some(c) = self.conns.get_mut(&id) {
                        c.queued = true;
                    }
                }
                break;
            };
            let head = chain.head_index();
            let buf = match RxBuffer::parse(&mem, chain) {
                Ok(b) => b,
                Err(e) => {
                    self.warn_once(Warn::BadRx, format_args!("dropped RX buffer: {e}"));
                    if let Err(e) = rxq.add_used(&mem, head, 0) {
                        self.warn_once(Warn::BadRx, format_args!("cannot return RX buffer: {e:?}"));
                    }
                    used = true;
                    if let Some(id) = id {
                        self.schedule(id);
                    }
                    continue;
                }
            };
            let len = match id {
                None => {
                    let Some(hdr) = self.rst_queue.pop_front() else {
                        rxq.go_to_previous_position();
                        break;
                    };
                    buf.write_header(&mem, &hdr).map(|()| HDR_LEN)
                }
                Some(id) => match self.fill_from_conn(id, &buf) {
                    Some(r) => r,
                    None => {
                        // Nothing to send after all (spurious readiness).
                        rxq.go_to_previous_position();
                        continue;
                    }
                },
            };
            let len = match len {
                Ok(len) => len,
                Err(e) => {
                    self.warn_once(Warn::BadRx, format_args!("dropped RX buffer: {e}"));
                    0
                }
            };
            if let Err(e) = rxq.add_used(&mem, head, len as u32) {
                self.warn_once(Warn::BadRx, format_args!("cannot return RX buffer: {e:?}"));
            }
            used = true;
        }
        used
    }

    /// Pops scheduled connections until one still has something to send.
    fn next_scheduled(&mut self) -> Option<u32> {
        while let Some(id) = self.rx_ready.pop_front() {
            if let Some(c) = self.conns.get_mut(&id) {
                c.queued = false;
                if c.has_rx_work() {
                    return Some(id);
                }
            }
        }
        None
    }

    /// Puts connection `id`'s next packet into `buf`: a control packet, or
    /// data read from the host socket straight into guest memory. `None`
    /// if it had nothing after all (the buffer is given back).
    fn fill_from_conn(
        &mut self,
        id: u32,
        buf: &RxBuffer,
    ) -> Option<Result<usize, super::packet::PacketError>> {
        let conn = self.conns.get_mut(&id)?;
        if let Some(hdr) = conn.core.next_control() {
            let r = buf.write_header(&self.mem, &hdr).map(|()| HDR_LEN);
            self.after_change(id);
            return Some(r);
        }
        if !conn.wants_data() || conn.core.peer_free() == 0 {
            self.after_change(id);
            return None;
        }
        if buf.capacity() == 0 {
            // A header-only buffer while data waits: unusable for data.
            return Some(Err(super::packet::PacketError::TooShort(HDR_LEN)));
        }
        let max = buf
            .capacity()
            .min(conn.core.peer_free() as usize)
            .min(MAX_PKT_PAYLOAD);
        let result = read_into(&self.mem, conn.stream.as_fd(), &buf.payload, max);
        let r = match result {
            ReadResult::Data(n) => {
                let hdr = conn.core.data_header(n as u32);
                Some(buf.write_header(&self.mem, &hdr).map(|()| HDR_LEN + n))
            }
            ReadResult::Eof => {
                conn.eof = true;
                conn.readable = false;
                conn.core.host_eof(conn.hup);
                conn.core
                    .next_control()
                    .map(|hdr| buf.write_header(&self.mem, &hdr).map(|()| HDR_LEN))
            }
            ReadResult::WouldBlock => {
                conn.readable = false;
                None
            }
            ReadResult::Error(e) => {
                tracing::debug!("virtio-vsock: host socket read failed: {e}");
                self.kill(id, true);
                return None;
            }
        };
        self.after_change(id);
        r
    }

    /// Queues connection `id` for RX if it has something to send (and asks
    /// the guest for credit if it has data but no credit).
    fn schedule(&mut self, id: u32) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if c.wants_data() && c.core.peer_free() == 0 {
            c.core.request_credit();
        }
        if !c.queued && c.has_rx_work() {
            c.queued = true;
            self.rx_ready.push_back(id);
        }
    }

    /// Re-evaluates closing after anything changed, then reschedules.
    fn after_change(&mut self, id: u32) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let peer = c.core.peer_shutdown();
        if c.core.state() == State::Established {
            // The host hung up and we will not read again: tell the guest.
            if c.hup && (c.eof || !c.core.may_send_data()) {
                c.core.host_eof(true);
            }
            // The guest will send no more: pass the EOF on once flushed.
            if peer & SHUTDOWN_SEND != 0 && c.tx_buf.is_empty() && !c.write_shut {
                c.write_shut = true;
                let _ = c.stream.shutdown_write();
            }
            if peer == SHUTDOWN_BOTH {
                if c.tx_buf.is_empty() {
                    // Guest done and everything delivered: close.
                    self.kill(id, true);
                    return;
                }
                // Wait for a slow host reader as long as it makes progress;
                // reset the connection only after CLOSE_TIMEOUT without any.
                let pending = c.buffered();
                if c.close_mark != Some(pending) {
                    c.close_mark = Some(pending);
                    c.deadline = Some(Instant::now() + CLOSE_TIMEOUT);
                }
            }
            if c.core.local_shutdown() == SHUTDOWN_BOTH {
                c.deadline
                    .get_or_insert_with(|| Instant::now() + CLOSE_TIMEOUT);
            }
        }
        self.schedule(id);
    }

    /// Readiness on a connection's host socket.
    pub fn conn_event(&mut self, id: u32, events: EventSet) {
        if let Some(l) = self.lingering.get_mut(&id) {
            if !l.discard() {
                self.lingering.remove(&id);
            }
            return;
        }
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if events
            .intersects(EventSet::IN | EventSet::READ_HANG_UP | EventSet::HANG_UP | EventSet::ERROR)
        {
            c.readable = true;
        }
        if events.intersects(EventSet::HANG_UP | EventSet::ERROR) {
            c.hup = true;
        }
        if events.contains(EventSet::OUT) && !c.tx_buf.is_empty() {
            match c.flush() {
                Ok(n) => c.core.forwarded(n),
                Err(e) => {
                    tracing::debug!("virtio-vsock: host socket gone: {e}");
                    self.kill(id, true);
                    return;
                }
            }
        }
        self.after_change(id);
    }

    /// Closes connection `id`, telling the guest with `RST` if `rst`.
    fn kill(&mut self, id: u32, rst: bool) {
        if let Some(mut c) = self.conns.remove(&id) {
            self.keys.remove(&(c.core.local_port, c.core.peer_port));
            if rst {
                self.rst_queue.push_back(c.core.rst());
            }
            tracing::debug!(
                "virtio-vsock: closed host port {} <-> guest port {}{}",
                c.core.local_port,
                c.core.peer_port,
                if c.host_initiated {
                    " (host-initiated)"
                } else {
                    ""
                }
            );
            // Dropping a stream closes it and removes it from epoll; a
            // TCP stream lingers first, under the same token.
            if let HostStream::Tcp(stream) = c.stream {
                self.linger(id, stream);
            }
        }
    }

    /// Ends our side of the ended connection `id`'s TCP socket and keeps
    /// it, dropping what the client still sends, until the client closes
    /// (at most [`CLOSE_TIMEOUT`]; see [`Lingering`]). Past
    /// [`MAX_TCP_CONNECTIONS`] lingering sockets it is closed at once.
    fn linger(&mut self, id: u32, stream: TcpStream) {
        if self.lingering.len() >= MAX_TCP_CONNECTIONS {
            return;
        }
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let mut l = Lingering {
            stream,
            deadline: Instant::now() + CLOSE_TIMEOUT,
            unread: false,
        };
        if l.discard() {
            self.lingering.insert(id, l);
        }
    }

    /// Waits until every lingering TCP client closed or `deadline`
    /// passed, dropping what they send meanwhile.
    fn wait_lingering(&mut self, deadline: Instant) {
        loop {
            self.lingering.retain(|_, l| l.discard());
            let left = deadline.saturating_duration_since(Instant::now());
            if self.lingering.is_empty() || left.is_zero() {
                return;
            }
            let mut fds: Vec<libc::pollfd> = self
                .lingering
                .values()
                .map(|l| libc::pollfd {
                    fd: l.stream.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect();
            let ms = i32::try_from(left.as_millis() + 1).unwrap_or(i32::MAX);
            // SAFETY: `fds` is a valid array of initialised pollfds whose
            // descriptors stay open (owned by `self.lingering`) during the
            // call.
            let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
            if rc < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                return;
            }
        }
    }

    /// The device is stopping: forwards the packets the guest still queued
    /// on TX, then writes every connection's buffered guest bytes to its
    /// host socket, waiting at most `within` for slow host readers. The
    /// guest saw these bytes consumed (used ring, `fwd_cnt`), so they are
    /// delivered before the host sockets close (a reader sees the data,
    /// then end of file). Bytes a reader does not take in time are dropped
    /// with a warning that counts them.
    pub fn drain(&mut self, ctx: &WaitContext<Token>, txq: &mut Queue, within: Duration) {
        let deadline = Instant::now() + within;
        // Nobody will read replies any more: let TX go on past the RST
        // backlog. Bounded by the deadline too: on a driver reset other
        // vCPUs may still be adding chains.
        loop {
            self.rst_queue.clear();
            if !self.process_tx(ctx, txq) || Instant::now() >= deadline {
                break;
            }
        }
        self.rst_queue.clear();
        loop {
            let mut pending: Vec<libc::pollfd> = Vec::new();
            let mut broken = Vec::new();
            for (&id, c) in &mut self.conns {
                if c.tx_buf.is_empty() {
                    continue;
                }
                match c.flush() {
                    Ok(n) => c.core.forwarded(n),
                    Err(e) => {
                        tracing::debug!("virtio-vsock: host socket gone while draining: {e}");
                        broken.push(id);
                        continue;
                    }
                }
                if !c.tx_buf.is_empty() {
                    pending.push(libc::pollfd {
                        fd: c.stream.as_raw_fd(),
                        events: libc::POLLOUT,
                        revents: 0,
                    });
                }
            }
            for id in broken {
                self.kill(id, false);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if pending.is_empty() || left.is_zero() {
                break;
            }
            let ms = i32::try_from(left.as_millis() + 1).unwrap_or(i32::MAX);
            // SAFETY: `pending` is a valid array of initialised pollfds whose
            // descriptors stay open (owned by `self.conns`) during the call.
            let rc = unsafe { libc::poll(pending.as_mut_ptr(), pending.len() as libc::nfds_t, ms) };
            if rc < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                break;
            }
        }
        let lost: usize = self.conns.values().map(Conn::buffered).sum();
        if lost > 0 {
            crate::guest_warn!(
                "virtio-vsock: stopping with {lost} guest bytes that host readers did not take within {} ms",
                within.as_millis()
            );
        }
        // TCP clients: our side ends, and their sockets close once they
        // closed theirs (within the same deadline), so that bytes they
        // still send do not reset what they have not read yet.
        let tcp: Vec<u32> = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(c.stream, HostStream::Tcp(_)))
            .map(|(&id, _)| id)
            .collect();
        for id in tcp {
            self.kill(id, false);
        }
        self.wait_lingering(deadline);
    }

    /// When the next deadline expires, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        let c = self.conns.values().filter_map(|c| c.deadline);
        let w = self.waiting.values().map(|w| w.deadline);
        let l = self.lingering.values().map(|l| l.deadline);
        // A lingering socket with bytes left unread is served again at once.
        let now = self.lingering.values().any(|l| l.unread).then(Instant::now);
        c.chain(w)
            .chain(l)
            .chain(now)
            .chain(self.accept_paused_until)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::virtio::event_loop::EventToken;
    use crate::virtio::test_utils::guest_memory;

    /// A lingering socket whose last `discard` stopped at its bound with
    /// bytes left (here: the client's bytes and its end, all queued): the
    /// edge-triggered socket gives no new event for them, so the muxer
    /// serves it again after its events (its next deadline is now) until
    /// the client's end, and closes it then, not at the deadline with
    /// bytes unread.
    #[test]
    fn a_lingering_socket_with_bytes_left_unread_is_served_to_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.sock");
        let unix = UnixListener::bind(&path).unwrap();
        let mut muxer = Muxer::new(guest_memory(), 3, path, unix).unwrap();
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(tcp.local_addr().unwrap()).unwrap();
        let (ours, _) = tcp.accept().unwrap();
        ours.set_nonblocking(true).unwrap();
        client.write_all(&[5u8; 64 * 1024]).unwrap();
        drop(client);
        // Its end queued behind its bytes.
        let mut peek = [0u8; 1];
        while ours.peek(&mut peek).is_err() {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(50));
        let l = Lingering {
            stream: ours,
            deadline: Instant::now() + CLOSE_TIMEOUT,
            unread: true,
        };
        muxer.lingering.insert(7, l);
        for _ in 0..64 {
            let Some(next) = muxer.next_deadline() else {
                break;
            };
            assert!(next <= Instant::now() + Duration::from_millis(10));
            muxer.expire(Instant::now());
            if muxer.lingering.is_empty() {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        panic!("the lingering socket was not served to the client's end");
    }

    #[test]
    fn tokens_round_trip() {
        for t in [
            Token::Listener,
            Token::Forward(1),
            Token::Waiting(7),
            Token::Conn(u32::MAX),
        ] {
            assert_eq!(Token::from_raw(t.to_raw()), Some(t));
        }
        assert_eq!(Token::from_raw(99 << 32), None);
    }
}
