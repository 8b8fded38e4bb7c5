//! virtio-vsock: TX chains → packet parsing (`TxPacket::parse`) → the
//! muxer and each connection's state machine, with real unix sockets on the
//! host side, exactly as the worker drives them.
//!
//! Per run: the hybrid listening socket, a forwarded TCP port on
//! 127.0.0.1 (to guest port 1000), two host listeners the guest can
//! connect to (`<sock>_1024`, `<sock>_1025`) and a muxer for guest cid 3.
//! The input is a sequence of guest and host actions:
//!
//! - structured TX packets (header fields chosen mostly from the values
//!   that matter: our cid, the host, live ports, every op; payload and
//!   descriptor split chosen too) or raw descriptor batches;
//! - RX buffers (structured or raw);
//! - host programs connecting with a `CONNECT` line (valid or not), or to
//!   the forwarded TCP port, writing, reading, half-closing and closing
//!   their sockets (a TCP socket closed lingers in the muxer);
//! - time passing (deadlines).
//!
//! After every action the target does what the worker does after a
//! wake-up: dispatch the muxer's ready events (accept, `CONNECT` lines,
//! host socket readiness) through `Muxer::on_event`, expire deadlines, then
//! process TX and RX until neither makes progress. Nothing may panic or
//! hang.
//!
//! Oracles besides that:
//! - after every step `Muxer::check_limits`: at most `MAX_CONNECTIONS`
//!   connections and `MAX_WAITING` waiting host sockets, at most
//!   `MAX_TCP_CONNECTIONS` forwarded connections and lingering sockets, at
//!   most the advertised `buf_alloc` of guest bytes buffered per
//!   connection, one port pair per connection;
//! - credit: the device never sends the guest more than its credit (a
//!   debug assertion in `Connection::data_header`, on in fuzz builds);
//! - bytes arrive in order, on every host-initiated connection (whose
//!   ports the target knows from the `OK` line), when the input used no
//!   raw descriptor batches: what the guest received from host port P is a
//!   prefix of what the host program wrote, and what the host program read
//!   after `OK` is the payload of a subsequence of the guest's `RW`
//!   packets to P, in order (the last one possibly cut short).

#![no_main]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use devices::virtio::vsock::muxer::{Muxer, Token};
use devices::virtio::vsock::packet::{op, Header, TYPE_STREAM};
use devices::virtio::vsock::{
    TcpForward, TcpForwards, CONN_BUF_ALLOC, FIRST_LOCAL_PORT, HDR_LEN, HOST_CID, QUEUE_SIZE, RXQ, TXQ,
};
use devices::virtio::WaitContext;
use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;
use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress};
use vmstack_fuzz::{
    guest_memory, scratch_dir, split_buffer, write_indirect, Batch, Desc, FuzzQueue,
    GuestMemoryMmap, RingSetup, DATA_BASE, F_WRITE, MEM_SIZE,
};

const GUEST_CID: u64 = 3;
/// Host ports with a listener (`<sock>_<port>`).
const HOST_PORTS: [u32; 2] = [1024, 1025];

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Cid {
    Expected,
    Raw(u64),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum GuestPort {
    /// `1000 + n % 4`: the guest ports host programs connect to as well.
    Small(u8),
    Raw(u32),
}

impl GuestPort {
    fn resolve(self) -> u32 {
        match self {
            GuestPort::Small(n) => 1000 + u32::from(n % 4),
            GuestPort::Raw(p) => p,
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum HostPort {
    /// One of [`HOST_PORTS`] (a listener exists).
    Listening(bool),
    /// `FIRST_LOCAL_PORT + n % 4`: the ports host-initiated connections get.
    Local(u8),
    /// A port nobody listens on.
    Closed,
    Raw(u32),
}

impl HostPort {
    fn resolve(self) -> u32 {
        match self {
            HostPort::Listening(b) => HOST_PORTS[usize::from(b)],
            HostPort::Local(n) => FIRST_LOCAL_PORT + u32::from(n % 4),
            HostPort::Closed => 7,
            HostPort::Raw(p) => p,
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum OpSel {
    Request,
    Response,
    Rst,
    Shutdown,
    Rw,
    CreditUpdate,
    CreditRequest,
    Raw(u16),
}

impl OpSel {
    fn value(self) -> u16 {
        match self {
            OpSel::Request => op::REQUEST,
            OpSel::Response => op::RESPONSE,
            OpSel::Rst => op::RST,
            OpSel::Shutdown => op::SHUTDOWN,
            OpSel::Rw => op::RW,
            OpSel::CreditUpdate => op::CREDIT_UPDATE,
            OpSel::CreditRequest => op::CREDIT_REQUEST,
            OpSel::Raw(v) => v,
        }
    }
}

/// One packet from the guest.
#[derive(Arbitrary, Debug, Clone, Copy)]
struct Pkt {
    src_cid: Cid,
    dst_cid: Cid,
    src_port: GuestPort,
    dst_port: HostPort,
    op: OpSel,
    /// `None`: the payload's real length.
    len: Option<u32>,
    /// `None`: `TYPE_STREAM`.
    type_: Option<u16>,
    flags: u8,
    /// `None`: 256 KiB, like Linux.
    buf_alloc: Option<u32>,
    fwd_cnt: u32,
    payload: u16,
    /// 0: one descriptor; 1: header | payload; n: header cut at `n % 44`.
    split: u8,
    /// Descriptors flagged device-writable (a hostile TX chain).
    writable: bool,
}

/// One RX buffer the guest posts.
#[derive(Arbitrary, Debug, Clone, Copy)]
struct RxBuf {
    len: u16,
    /// 0: one descriptor; else the header part is `split % 64` bytes.
    split: u8,
    /// Descriptors flagged device-readable (a hostile RX chain).
    readable: bool,
}

#[derive(Arbitrary, Debug)]
enum Op {
    Tx(Vec<Pkt>),
    TxRaw(Batch),
    Rx(Vec<RxBuf>),
    RxRaw(Batch),
    /// A host program connects to the hybrid socket and sends a `CONNECT`
    /// line for guest port `1000 + port % 4` (or `line` if given), then
    /// `extra` bytes.
    HostConnect {
        port: u8,
        line: Option<Vec<u8>>,
        extra: Vec<u8>,
    },
    /// A TCP client connects to the forwarded port (guest port 1000) and
    /// sends `extra` bytes (no line: they are the guest's).
    TcpConnect {
        extra: Vec<u8>,
    },
    /// Host socket `peer` writes `len` bytes.
    HostWrite {
        peer: u8,
        len: u16,
    },
    /// Host socket `peer` reads what is there.
    HostRead {
        peer: u8,
    },
    /// Host socket `peer` shuts down a direction.
    HostShutdown {
        peer: u8,
        write: bool,
    },
    /// Host socket `peer` closes.
    HostClose {
        peer: u8,
    },
    /// `secs` seconds pass.
    Wait {
        secs: u8,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    rx_ring: RingSetup,
    tx_ring: RingSetup,
    indirect: Vec<Desc>,
    ops: Vec<Op>,
}

/// A host program's socket: unix (the hybrid socket's, or accepted from a
/// port listener) or a TCP client of the forwarded port.
enum PeerStream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl PeerStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            PeerStream::Unix(s) => s.read(buf),
            PeerStream::Tcp(s) => s.read(buf),
        }
    }

    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            PeerStream::Unix(s) => s.write(buf),
            PeerStream::Tcp(s) => s.write(buf),
        }
    }

    fn shutdown(&self, how: std::net::Shutdown) -> std::io::Result<()> {
        match self {
            PeerStream::Unix(s) => s.shutdown(how),
            PeerStream::Tcp(s) => s.shutdown(how),
        }
    }
}

/// A host program's socket.
struct Peer {
    stream: PeerStream,
    /// Host-initiated: its id (the stream it writes is `stream_byte(id, n)`)
    /// and the guest port of its `CONNECT` line.
    origin: Option<(u32, u32)>,
    /// Bytes of its stream written so far (after the `CONNECT` line).
    written: u64,
    /// Everything it read.
    inbox: Vec<u8>,
}

/// Byte `n` of the stream host program `id` writes.
fn stream_byte(id: u32, n: u64) -> u8 {
    let x = (u64::from(id) << 40 ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (x >> 56) as u8
}

/// The payload of the `k`-th guest packet: distinct from every other.
fn packet_payload(k: u64, len: usize) -> Vec<u8> {
    let mut x = k.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Whether `got` is the concatenation of a subsequence of `packets`, in
/// order, the last one possibly cut short.
fn is_ordered_subsequence(got: &[u8], packets: &[Vec<u8>]) -> bool {
    let mut at = 0;
    for p in packets {
        if at == got.len() {
            return true;
        }
        let rest = &got[at..];
        if p.is_empty() {
            continue;
        }
        if rest.len() >= p.len() && rest[..p.len()] == p[..] {
            at += p.len();
        } else if rest.len() < p.len() && p[..rest.len()] == *rest {
            return true;
        }
    }
    at == got.len()
}

/// Guest memory for packets and buffers, handed out front to back.
struct Arena {
    next: u64,
}

impl Arena {
    fn take(&mut self, len: u64) -> Option<u64> {
        let at = self.next;
        if at + len > MEM_SIZE {
            return None;
        }
        self.next = at + len;
        Some(at)
    }
}

struct World {
    mem: GuestMemoryMmap,
    /// The worker's wait context, as far as the muxer uses it.
    ctx: WaitContext<Token>,
    muxer: Muxer,
    rxq: Queue,
    txq: Queue,
    rx: FuzzQueue,
    tx: FuzzQueue,
    arena: Arena,
    port_listeners: Vec<UnixListener>,
    path: PathBuf,
    /// The forwarded TCP port's address (`None` if it could not be bound).
    tcp: Option<SocketAddr>,
    /// Host sides: guest-initiated connections (accepted from the port
    /// listeners) and host programs' connections.
    peers: Vec<Peer>,
    /// Time as the muxer sees it.
    now: Instant,
    /// Raw batches were used: the ordering oracle is off (descriptor slots
    /// may alias the target's own chains).
    raw: bool,
    /// Host programs connected so far (their ids).
    host_programs: u32,
    /// Guest packets posted so far (payload seeds).
    packets: u64,
    /// Payloads of `RW` packets the guest posted, per (host port, guest
    /// port), in order.
    sent: HashMap<(u32, u32), Vec<Vec<u8>>>,
    /// `RW` payload the guest received, per (host port, guest port).
    received: HashMap<(u32, u32), Vec<u8>>,
    /// Buffers of each RX chain the target posted, by head.
    rx_chains: HashMap<u16, Vec<(u64, u32)>>,
    /// Descriptor slots of posted chains not returned yet, per queue.
    rx_busy: u16,
    tx_busy: u16,
    tx_chains: HashMap<u16, u16>,
    /// Used ring entries already looked at, per queue.
    rx_seen: u16,
    tx_seen: u16,
}

fn bind(path: &Path) -> UnixListener {
    let _ = std::fs::remove_file(path);
    let l = UnixListener::bind(path).expect("fuzz socket");
    l.set_nonblocking(true).expect("nonblocking listener");
    l
}

impl World {
    fn new(input: &Input) -> Self {
        let mem = guest_memory();
        write_indirect(&mem, &input.indirect);
        let path = scratch_dir().join("v.sock");
        let listener = bind(&path);
        let port_listeners = HOST_PORTS
            .iter()
            .map(|p| bind(&PathBuf::from(format!("{}_{p}", path.display()))))
            .collect();
        let mut muxer =
            Muxer::new(mem.clone(), GUEST_CID, path.clone(), listener).expect("muxer");
        // Port 0: the kernel picks a free one for every run.
        let tcp_listener = TcpListener::bind("127.0.0.1:0").ok();
        let tcp = tcp_listener.as_ref().and_then(|l| l.local_addr().ok());
        let peers = sandbox::tcp_peer::TcpPeerCheck::new().ok();
        if let (Some(listener), Some(addr), Some(peers)) = (tcp_listener, tcp, peers) {
            muxer = muxer
                .with_tcp_forwards(TcpForwards {
                    ports: vec![TcpForward {
                        listener,
                        port: addr.port(),
                        guest_port: 1000,
                    }],
                    peers,
                })
                .expect("forwarded port");
        }
        let ctx = WaitContext::new().expect("wait context");
        muxer.register(&ctx).expect("listener watched");
        let (rx, rxq) = FuzzQueue::new(&mem, RXQ, QUEUE_SIZE, &input.rx_ring);
        let (tx, txq) = FuzzQueue::new(&mem, TXQ, QUEUE_SIZE, &input.tx_ring);
        Self {
            mem,
            ctx,
            muxer,
            rxq,
            txq,
            rx,
            tx,
            arena: Arena { next: DATA_BASE },
            port_listeners,
            path,
            tcp,
            peers: Vec::new(),
            now: Instant::now(),
            raw: false,
            host_programs: 0,
            packets: 0,
            sent: HashMap::new(),
            received: HashMap::new(),
            rx_chains: HashMap::new(),
            rx_busy: 0,
            tx_busy: 0,
            tx_chains: HashMap::new(),
            rx_seen: 0,
            tx_seen: 0,
        }
    }

    fn peer(&mut self, n: u8) -> Option<&mut Peer> {
        let len = self.peers.len();
        if len == 0 {
            return None;
        }
        self.peers.get_mut(usize::from(n) % len)
    }

    /// Used elements of a queue the device returned since the last call.
    fn new_used(&self, q: &FuzzQueue, seen: u16) -> (Vec<(u32, u32)>, u16) {
        let used = q.used_ring();
        let idx: u16 = self.mem.read_obj(GuestAddress(used + 2)).unwrap_or(seen);
        let mut out = Vec::new();
        let mut i = seen;
        while i != idx && out.len() < usize::from(q.size()) {
            let at = used + 4 + 8 * u64::from(i % q.size());
            let id: u32 = self.mem.read_obj(GuestAddress(at)).unwrap_or(u32::MAX);
            let len: u32 = self.mem.read_obj(GuestAddress(at + 4)).unwrap_or(0);
            out.push((id, len));
            i = i.wrapping_add(1);
        }
        (out, idx)
    }

    /// Reads the packets the guest got and frees returned descriptor slots.
    fn collect_used(&mut self) {
        let (tx_used, idx) = self.new_used(&self.tx, self.tx_seen);
        self.tx_seen = idx;
        for (id, _) in tx_used {
            if let Some(n) = self.tx_chains.remove(&(id as u16)) {
                self.tx_busy -= n;
            }
        }
        let (rx_used, idx) = self.new_used(&self.rx, self.rx_seen);
        self.rx_seen = idx;
        for (id, len) in rx_used {
            let Some(bufs) = self.rx_chains.remove(&(id as u16)) else {
                continue;
            };
            self.rx_busy -= bufs.len() as u16;
            let mut bytes = Vec::new();
            for (addr, blen) in bufs {
                let mut b = vec![0u8; blen as usize];
                let _ = self.mem.read_slice(&mut b, GuestAddress(addr));
                bytes.extend(b);
            }
            bytes.truncate(len as usize);
            if bytes.len() < HDR_LEN {
                continue;
            }
            let mut raw = [0u8; HDR_LEN];
            raw.copy_from_slice(&bytes[..HDR_LEN]);
            let hdr = Header::from_bytes(&raw);
            if hdr.op == op::RW {
                let data = &bytes[HDR_LEN..];
                assert_eq!(
                    data.len(),
                    hdr.len as usize,
                    "used length and header length of an RX packet disagree"
                );
                self.received
                    .entry((hdr.src_port, hdr.dst_port))
                    .or_default()
                    .extend_from_slice(data);
            }
        }
    }

    /// The ordering oracle, at the end of a run.
    fn check_order(&mut self) {
        for p in &mut self.peers {
            let mut buf = [0u8; 65536];
            while let Ok(n) = p.stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
                p.inbox.extend_from_slice(&buf[..n]);
            }
        }
        if self.raw {
            return;
        }
        for p in &self.peers {
            let Some((id, guest_port)) = p.origin else {
                continue;
            };
            let Some(nl) = p.inbox.iter().position(|&b| b == b'\n') else {
                continue;
            };
            let line = std::str::from_utf8(&p.inbox[..nl]).expect("the OK line is text");
            let port: u32 = line
                .strip_prefix("OK ")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("host program got {line:?} instead of OK <port>"));
            let key = (port, guest_port);
            // Host to guest: a prefix of what the host program wrote.
            if let Some(got) = self.received.get(&key) {
                assert!(
                    got.len() as u64 <= p.written,
                    "the guest got {} bytes from port {port}, the host wrote {}",
                    got.len(),
                    p.written
                );
                for (n, b) in got.iter().enumerate() {
                    assert_eq!(
                        *b,
                        stream_byte(id, n as u64),
                        "byte {n} from port {port} out of order"
                    );
                }
            }
            // Guest to host: whole packets of the guest, in order.
            let after_ok = &p.inbox[nl + 1..];
            let sent = self.sent.get(&key).map(Vec::as_slice).unwrap_or(&[]);
            assert!(
                is_ordered_subsequence(after_ok, sent),
                "host program on port {port} read {} bytes that are not the guest's packets in order",
                after_ok.len()
            );
        }
    }

    fn post_tx(&mut self, p: &Pkt) {
        let payload = usize::from(p.payload);
        let hdr = Header {
            src_cid: match p.src_cid {
                Cid::Expected => GUEST_CID,
                Cid::Raw(c) => c,
            },
            dst_cid: match p.dst_cid {
                Cid::Expected => HOST_CID,
                Cid::Raw(c) => c,
            },
            src_port: p.src_port.resolve(),
            dst_port: p.dst_port.resolve(),
            len: p.len.unwrap_or(payload as u32),
            type_: p.type_.unwrap_or(TYPE_STREAM),
            op: p.op.value(),
            flags: u32::from(p.flags & 3) | if p.flags & 0x80 != 0 { 0xff00 } else { 0 },
            buf_alloc: p.buf_alloc.unwrap_or(CONN_BUF_ALLOC),
            fwd_cnt: p.fwd_cnt,
        };
        let total = (HDR_LEN + payload) as u64;
        let slots = if p.split == 0 { 1 } else { 2 };
        if self.tx_busy + slots > self.tx.size() {
            // Would overwrite a chain the device has not returned.
            return;
        }
        let Some(at) = self.arena.take(total) else {
            return;
        };
        let _ = self.mem.write_slice(&hdr.to_bytes(), GuestAddress(at));
        self.packets += 1;
        let body = packet_payload(self.packets, payload);
        // What the device may forward: the first `len` bytes of the
        // payload (a longer `len` is refused). Packets it will drop anyway
        // (wrong cid, no connection) do no harm in the list.
        if hdr.op == op::RW && hdr.len as usize <= payload {
            self.sent
                .entry((hdr.dst_port, hdr.src_port))
                .or_default()
                .push(body[..hdr.len as usize].to_vec());
        }
        let _ = self
            .mem
            .write_slice(&body, GuestAddress(at + HDR_LEN as u64));
        let flags = if p.writable { F_WRITE } else { 0 };
        let cut = match p.split {
            0 => total,
            1 => HDR_LEN as u64,
            n => u64::from(n) % HDR_LEN as u64,
        };
        let bufs = split_buffer(at, total, cut, flags);
        let head = self.tx.add_chain(&self.mem, &bufs);
        self.tx_busy += bufs.len() as u16;
        self.tx_chains.insert(head, bufs.len() as u16);
    }

    fn post_rx(&mut self, b: &RxBuf) {
        let len = u64::from(b.len);
        if self.rx_busy + 2 > self.rx.size() {
            // Would overwrite a chain the device has not returned.
            return;
        }
        let Some(at) = self.arena.take(len) else {
            return;
        };
        let flags = if b.readable { 0 } else { F_WRITE };
        let cut = u64::from(b.split % 64);
        // `split` 0 gives `cut` 0: one descriptor.
        let bufs = split_buffer(at, len, cut, flags);
        let head = self.rx.add_chain(&self.mem, &bufs);
        self.rx_busy += bufs.len().max(1) as u16;
        self.rx_chains
            .insert(head, bufs.iter().map(|&(a, l, _)| (a, l)).collect());
    }

    /// What the worker does after a wake-up.
    fn wake(&mut self) {
        // Edge-triggered sockets: one pass over what is ready now.
        for (token, events) in self.ctx.ready_now().unwrap_or_default() {
            self.muxer.on_event(&self.ctx, token, events);
        }
        self.muxer.expire(self.now);
        loop {
            let tx = self.muxer.process_tx(&self.ctx, &mut self.txq);
            let rx = self.muxer.process_rx(&mut self.rxq);
            if !tx && !rx {
                break;
            }
        }
        // Host listeners accept what the guest connected.
        for l in &self.port_listeners {
            while let Ok((s, _)) = l.accept() {
                if s.set_nonblocking(true).is_ok() && self.peers.len() < 64 {
                    self.peers.push(Peer {
                        stream: PeerStream::Unix(s),
                        origin: None,
                        written: 0,
                        inbox: Vec::new(),
                    });
                }
            }
        }
        if let Err(e) = self.muxer.check_limits() {
            panic!("muxer limits broken: {e}");
        }
        self.collect_used();
    }

    /// Applies a raw descriptor batch to the transmit (`tx`) or receive
    /// queue; the ordering oracle is off from then on.
    fn post_raw(&mut self, tx: bool, batch: &Batch) {
        self.raw = true;
        let queue = if tx { &mut self.tx } else { &mut self.rx };
        queue.apply(&self.mem, batch);
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Tx(pkts) => {
                for p in pkts.iter().take(16) {
                    self.post_tx(p);
                }
            }
            Op::TxRaw(batch) => self.post_raw(true, batch),
            Op::Rx(bufs) => {
                for b in bufs.iter().take(16) {
                    self.post_rx(b);
                }
            }
            Op::RxRaw(batch) => self.post_raw(false, batch),
            Op::HostConnect { port, line, extra } => {
                if self.peers.len() >= 64 {
                    return;
                }
                let Ok(mut s) = UnixStream::connect(&self.path) else {
                    return;
                };
                let _ = s.set_nonblocking(true);
                let guest_port = 1000 + u32::from(port % 4);
                let (line, origin) = match line {
                    Some(l) => (l.clone(), None),
                    None => {
                        self.host_programs += 1;
                        let line = format!("CONNECT {guest_port}\n").into_bytes();
                        (line, Some((self.host_programs, guest_port)))
                    }
                };
                // The line goes out whole (a fresh socket has room).
                let _ = s.write(&line);
                let mut peer = Peer {
                    stream: PeerStream::Unix(s),
                    origin,
                    written: 0,
                    inbox: Vec::new(),
                };
                peer.write_stream(extra.len());
                self.peers.push(peer);
            }
            Op::TcpConnect { extra } => {
                if self.peers.len() >= 64 {
                    return;
                }
                let Some(Ok(s)) = self.tcp.map(TcpStream::connect) else {
                    return;
                };
                let _ = s.set_nonblocking(true);
                let mut peer = Peer {
                    stream: PeerStream::Tcp(s),
                    origin: None,
                    written: 0,
                    inbox: Vec::new(),
                };
                peer.write_stream(extra.len());
                self.peers.push(peer);
            }
            Op::HostWrite { peer, len } => {
                if let Some(p) = self.peer(*peer) {
                    p.write_stream(usize::from(*len));
                }
            }
            Op::HostRead { peer } => {
                if let Some(p) = self.peer(*peer) {
                    let mut buf = [0u8; 65536];
                    while let Ok(n) = p.stream.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        p.inbox.extend_from_slice(&buf[..n]);
                    }
                }
            }
            Op::HostShutdown { peer, write } => {
                if let Some(p) = self.peer(*peer) {
                    let how = if *write {
                        std::net::Shutdown::Write
                    } else {
                        std::net::Shutdown::Read
                    };
                    let _ = p.stream.shutdown(how);
                }
            }
            Op::HostClose { peer } => {
                if !self.peers.is_empty() {
                    let i = usize::from(*peer) % self.peers.len();
                    self.peers.swap_remove(i);
                }
            }
            Op::Wait { secs } => self.now += Duration::from_secs(u64::from(*secs)),
        }
        self.wake();
    }
}

impl Peer {
    /// Writes the next `len` bytes of its stream (what the socket takes).
    fn write_stream(&mut self, len: usize) {
        let Some((id, _)) = self.origin else {
            let _ = self.stream.write(&vec![0x5a; len]);
            return;
        };
        let data: Vec<u8> = (0..len as u64)
            .map(|n| stream_byte(id, self.written + n))
            .collect();
        if let Ok(n) = self.stream.write(&data) {
            self.written += n as u64;
        }
    }
}

fuzz_target!(|input: Input| {
    // The VMM runs, as every Rust program, with SIGPIPE ignored (std sets
    // it before `main`), so a write to a host socket whose peer is gone
    // fails with EPIPE; libFuzzer's own `main` leaves the signal's default,
    // which would kill the run instead.
    static SIGPIPE_IGNORED: std::sync::Once = std::sync::Once::new();
    SIGPIPE_IGNORED.call_once(|| {
        // SAFETY: installs the SIG_IGN disposition, no handler code.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    });
    let mut world = World::new(&input);
    world.raw = !input.indirect.is_empty();
    for op in input.ops.iter().take(48) {
        world.apply(op);
    }
    world.check_order();
});
