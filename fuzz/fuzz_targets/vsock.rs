//! virtio-vsock: TX chains → packet parsing (`TxPacket::parse`) → the
//! muxer and each connection's state machine, with real unix sockets on the
//! host side, exactly as the worker drives them.
//!
//! Per run: the hybrid listening socket, two host listeners the guest can
//! connect to (`<sock>_1024`, `<sock>_1025`) and a muxer for guest cid 3.
//! The input is a sequence of guest and host actions:
//!
//! - structured TX packets (header fields chosen mostly from the values
//!   that matter: our cid, the host, live ports, every op; payload and
//!   descriptor split chosen too) or raw descriptor batches;
//! - RX buffers (structured or raw);
//! - host programs connecting with a `CONNECT` line (valid or not),
//!   writing, reading, half-closing and closing their sockets;
//! - time passing (deadlines).
//!
//! After every action the target does what the worker does after a
//! wake-up: dispatch the muxer's ready events (accept, `CONNECT` lines,
//! host socket readiness) through `Muxer::on_event`, expire deadlines, then
//! process TX and RX until neither makes progress. Nothing may panic or
//! hang.

#![no_main]

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use devices::virtio::vsock::muxer::{Muxer, Token};
use devices::virtio::vsock::packet::{op, Header, TYPE_STREAM};
use devices::virtio::vsock::{
    CONN_BUF_ALLOC, FIRST_LOCAL_PORT, HDR_LEN, HOST_CID, QUEUE_SIZE, RXQ, TXQ,
};
use devices::virtio::WaitContext;
use libfuzzer_sys::fuzz_target;
use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress};
use vmstack_fuzz::{
    guest_memory, scratch_dir, write_indirect, Batch, Desc, FuzzQueue, GuestMemoryMmap, RingSetup,
    DATA_BASE, F_WRITE, MEM_SIZE,
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
    /// Host sides: guest-initiated connections (accepted from the port
    /// listeners) and host programs' connections.
    peers: Vec<UnixStream>,
    /// Time as the muxer sees it.
    now: Instant,
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
        let muxer = Muxer::new(mem.clone(), GUEST_CID, path.clone(), listener).expect("muxer");
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
            peers: Vec::new(),
            now: Instant::now(),
        }
    }

    fn peer(&mut self, n: u8) -> Option<&mut UnixStream> {
        let len = self.peers.len();
        if len == 0 {
            return None;
        }
        self.peers.get_mut(usize::from(n) % len)
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
        let Some(at) = self.arena.take(total) else {
            return;
        };
        let _ = self.mem.write_slice(&hdr.to_bytes(), GuestAddress(at));
        let body: Vec<u8> = (0..payload).map(|i| i as u8).collect();
        let _ = self
            .mem
            .write_slice(&body, GuestAddress(at + HDR_LEN as u64));
        let flags = if p.writable { F_WRITE } else { 0 };
        let cut = match p.split {
            0 => total,
            1 => HDR_LEN as u64,
            n => u64::from(n) % HDR_LEN as u64,
        };
        let bufs: Vec<(u64, u32, u16)> = if cut >= total || cut == 0 {
            vec![(at, total as u32, flags)]
        } else {
            vec![
                (at, cut as u32, flags),
                (at + cut, (total - cut) as u32, flags),
            ]
        };
        self.tx.add_chain(&self.mem, &bufs);
    }

    fn post_rx(&mut self, b: &RxBuf) {
        let len = u64::from(b.len);
        let Some(at) = self.arena.take(len) else {
            return;
        };
        let flags = if b.readable { 0 } else { F_WRITE };
        let cut = u64::from(b.split % 64);
        let bufs: Vec<(u64, u32, u16)> = if b.split == 0 || cut == 0 || cut >= len {
            vec![(at, len as u32, flags)]
        } else {
            vec![
                (at, cut as u32, flags),
                (at + cut, (len - cut) as u32, flags),
            ]
        };
        self.rx.add_chain(&self.mem, &bufs);
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
                    self.peers.push(s);
                }
            }
        }
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Tx(pkts) => {
                for p in pkts.iter().take(16) {
                    self.post_tx(p);
                }
            }
            Op::TxRaw(batch) => self.tx.apply(&self.mem, batch),
            Op::Rx(bufs) => {
                for b in bufs.iter().take(16) {
                    self.post_rx(b);
                }
            }
            Op::RxRaw(batch) => self.rx.apply(&self.mem, batch),
            Op::HostConnect { port, line, extra } => {
                if self.peers.len() >= 64 {
                    return;
                }
                let Ok(mut s) = UnixStream::connect(&self.path) else {
                    return;
                };
                let _ = s.set_nonblocking(true);
                let line = match line {
                    Some(l) => l.clone(),
                    None => format!("CONNECT {}\n", 1000 + u32::from(port % 4)).into_bytes(),
                };
                let _ = s.write(&line);
                let _ = s.write(extra);
                self.peers.push(s);
            }
            Op::HostWrite { peer, len } => {
                let data = vec![0x5a; usize::from(*len)];
                if let Some(s) = self.peer(*peer) {
                    let _ = s.write(&data);
                }
            }
            Op::HostRead { peer } => {
                if let Some(s) = self.peer(*peer) {
                    let mut buf = [0u8; 65536];
                    while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
                }
            }
            Op::HostShutdown { peer, write } => {
                if let Some(s) = self.peer(*peer) {
                    let how = if *write {
                        std::net::Shutdown::Write
                    } else {
                        std::net::Shutdown::Read
                    };
                    let _ = s.shutdown(how);
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

fuzz_target!(|input: Input| {
    let mut world = World::new(&input);
    for op in input.ops.iter().take(48) {
        world.apply(op);
    }
});
