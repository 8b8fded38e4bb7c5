//! One vsock stream connection's protocol state: handshake, credit flow
//! control and shutdown. Pure logic, no I/O: the muxer feeds it guest
//! headers and byte counts and asks it which packets to send, which keeps
//! the state machine testable without sockets or queues.
//!
//! Credit (virtio spec 5.10.6.3): every header carries the sender's
//! `buf_alloc` (its receive buffer) and `fwd_cnt` (bytes it has consumed
//! from that buffer, ever). A sender may have at most
//! `peer.buf_alloc - (tx_cnt - peer.fwd_cnt)` bytes in flight.
//!
//! ```text
//!   host CONNECT ─► LocalInit ──guest RESPONSE──► Established ◄── guest REQUEST
//!                      │ guest RST / timeout           │         (host socket connected)
//!                      ▼                               ▼
//!                   (removed)      SHUTDOWN both ways / RST ─► (removed, RST sent)
//! ```

use std::num::Wrapping;

use super::packet::{op, Header, SHUTDOWN_BOTH, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM};
use super::HOST_CID;

/// Where the connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// The host asked for it: `REQUEST` queued or sent, no `RESPONSE` yet.
    LocalInit,
    /// Both sides accepted; data may flow.
    Established,
}

/// What the muxer must do after a guest packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestAction {
    /// Nothing beyond sending what [`Connection::next_control`] yields.
    None,
    /// The guest accepted a host-initiated connection: tell the host
    /// (`OK <port>`).
    Established,
    /// Forward the packet's `len` payload bytes to the host.
    Forward(u32),
    /// The guest shut down directions (its accumulated flags).
    Shutdown(u32),
    /// Protocol violation: reset the connection (send `RST`, close).
    Reset,
    /// The guest reset the connection: close without answering.
    Closed,
}

/// Pending control packets, in sending order.
const PENDING_REQUEST: u8 = 1;
const PENDING_RESPONSE: u8 = 2;
const PENDING_CREDIT_UPDATE: u8 = 4;
const PENDING_CREDIT_REQUEST: u8 = 8;
const PENDING_SHUTDOWN: u8 = 16;

/// Protocol state of one connection, keyed by (host port, guest port).
#[derive(Debug)]
pub struct Connection {
    /// Host-side port.
    pub local_port: u32,
    /// Guest-side port.
    pub peer_port: u32,
    guest_cid: u64,
    state: State,
    /// Our receive buffer (what the guest may have in flight to us).
    buf_alloc: u32,
    /// Guest payload bytes handed to the host socket.
    fwd_cnt: Wrapping<u32>,
    /// `fwd_cnt` as last told to the guest.
    fwd_cnt_sent: Wrapping<u32>,
    /// The guest's advertised receive buffer.
    peer_buf_alloc: u32,
    /// The guest's advertised consumed count.
    peer_fwd_cnt: Wrapping<u32>,
    /// Payload bytes sent to the guest.
    rx_cnt: Wrapping<u32>,
    /// A `CREDIT_REQUEST` went out since the guest's credit last changed.
    credit_requested: bool,
    /// Shutdown flags the guest announced.
    peer_shutdown: u32,
    /// Shutdown flags we announced (or are about to).
    local_shutdown: u32,
    pending: u8,
}

impl Connection {
    fn new(local_port: u32, peer_port: u32, guest_cid: u64, buf_alloc: u32, state: State) -> Self {
        Self {
            local_port,
            peer_port,
            guest_cid,
            state,
            buf_alloc,
            fwd_cnt: Wrapping(0),
            fwd_cnt_sent: Wrapping(0),
            peer_buf_alloc: 0,
            peer_fwd_cnt: Wrapping(0),
            rx_cnt: Wrapping(0),
            credit_requested: false,
            peer_shutdown: 0,
            local_shutdown: 0,
            pending: 0,
        }
    }

    /// A connection the guest requested with `req` and the host accepted:
    /// established, with a `RESPONSE` queued.
    pub fn peer_init(req: &Header, buf_alloc: u32) -> Self {
        let mut c = Self::new(
            req.dst_port,
            req.src_port,
            req.src_cid,
            buf_alloc,
            State::Established,
        );
        c.update_peer_credit(req);
        c.pending = PENDING_RESPONSE;
        c
    }

    /// A connection the host asked for: a `REQUEST` to the guest is queued.
    pub fn local_init(local_port: u32, peer_port: u32, guest_cid: u64, buf_alloc: u32) -> Self {
        let mut c = Self::new(
            local_port,
            peer_port,
            guest_cid,
            buf_alloc,
            State::LocalInit,
        );
        c.pending = PENDING_REQUEST;
        c
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Shutdown flags the guest announced.
    pub fn peer_shutdown(&self) -> u32 {
        self.peer_shutdown
    }

    /// Shutdown flags we announced.
    pub fn local_shutdown(&self) -> u32 {
        self.local_shutdown
    }

    fn update_peer_credit(&mut self, hdr: &Header) {
        let changed =
            hdr.buf_alloc != self.peer_buf_alloc || Wrapping(hdr.fwd_cnt) != self.peer_fwd_cnt;
        self.peer_buf_alloc = hdr.buf_alloc;
        self.peer_fwd_cnt = Wrapping(hdr.fwd_cnt);
        if changed {
            self.credit_requested = false;
        }
    }

    /// Handles a header the guest sent on this connection. For `RW`, the
    /// muxer forwards the payload and then calls [`Self::forwarded`] or
    /// buffers it.
    pub fn on_guest_packet(&mut self, hdr: &Header, buffered: usize) -> GuestAction {
        self.update_peer_credit(hdr);
        match (self.state, hdr.op) {
            (_, op::RST) => GuestAction::Closed,
            (State::LocalInit, op::RESPONSE) => {
                self.state = State::Established;
                GuestAction::Established
            }
            (State::LocalInit, _) => GuestAction::Reset,
            (State::Established, op::RW) => {
                if self.peer_shutdown & SHUTDOWN_SEND != 0 {
                    return GuestAction::Reset;
                }
                // The guest may not exceed the buffer we advertised; bytes
                // still waiting for the host socket count against it.
                let in_flight = buffered as u64 + u64::from(hdr.len);
                if in_flight > u64::from(self.buf_alloc) {
                    return GuestAction::Reset;
                }
                GuestAction::Forward(hdr.len)
            }
            (State::Established, op::CREDIT_UPDATE) => GuestAction::None,
            (State::Established, op::CREDIT_REQUEST) => {
                self.pending |= PENDING_CREDIT_UPDATE;
                GuestAction::None
            }
            (State::Established, op::SHUTDOWN) => {
                self.peer_shutdown |= hdr.flags & SHUTDOWN_BOTH;
                GuestAction::Shutdown(self.peer_shutdown)
            }
            // REQUEST on an existing connection, RESPONSE when not asked,
            // unknown ops.
            (State::Established, _) => GuestAction::Reset,
        }
    }

    /// `n` guest bytes reached the host socket. Queues a `CREDIT_UPDATE`
    /// once half our buffer was consumed unannounced, so a one-way stream
    /// from the guest never stalls for lack of credit.
    pub fn forwarded(&mut self, n: usize) {
        self.fwd_cnt += n as u32;
        if (self.fwd_cnt - self.fwd_cnt_sent).0 >= self.buf_alloc / 2 {
            self.pending |= PENDING_CREDIT_UPDATE;
        }
    }

    /// Bytes the guest can still take from us.
    pub fn peer_free(&self) -> u32 {
        let in_flight = (self.rx_cnt - self.peer_fwd_cnt).0;
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// Whether data from the host may be sent to the guest now (ignoring
    /// credit).
    pub fn may_send_data(&self) -> bool {
        self.state == State::Established
            && self.local_shutdown & SHUTDOWN_SEND == 0
            && self.peer_shutdown & SHUTDOWN_RCV == 0
    }

    /// Asks the guest for credit (once per credit change) when we have data
    /// but the guest's buffer is full. Returns whether a request was queued.
    pub fn request_credit(&mut self) -> bool {
        if self.credit_requested || self.peer_free() > 0 {
            return false;
        }
        self.credit_requested = true;
        self.pending |= PENDING_CREDIT_REQUEST;
        true
    }

    /// The host closed its sending side (`full`: the whole socket). Queues a
    /// `SHUTDOWN` to the guest.
    pub fn host_eof(&mut self, full: bool) {
        let flags = SHUTDOWN_SEND | if full { SHUTDOWN_RCV } else { 0 };
        if self.local_shutdown | flags != self.local_shutdown {
            self.local_shutdown |= flags;
            self.pending |= PENDING_SHUTDOWN;
        }
    }

    /// Whether a control packet is waiting.
    pub fn has_control(&self) -> bool {
        self.pending != 0
    }

    /// A header from us to the guest, with our current credit.
    fn header(&mut self, op: u16, len: u32, flags: u32) -> Header {
        self.fwd_cnt_sent = self.fwd_cnt;
        Header {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: self.local_port,
            dst_port: self.peer_port,
            len,
            type_: TYPE_STREAM,
            op,
            flags,
            buf_alloc: self.buf_alloc,
            fwd_cnt: self.fwd_cnt.0,
        }
    }

    /// The next control packet to send, if any.
    pub fn next_control(&mut self) -> Option<Header> {
        for (bit, op) in [
            (PENDING_REQUEST, op::REQUEST),
            (PENDING_RESPONSE, op::RESPONSE),
            (PENDING_CREDIT_UPDATE, op::CREDIT_UPDATE),
            (PENDING_CREDIT_REQUEST, op::CREDIT_REQUEST),
            (PENDING_SHUTDOWN, op::SHUTDOWN),
        ] {
            if self.pending & bit != 0 {
                self.pending &= !bit;
                let flags = if op == op::SHUTDOWN {
                    self.local_shutdown
                } else {
                    0
                };
                // Any packet carries our credit: no separate update needed.
                self.pending &= !PENDING_CREDIT_UPDATE;
                return Some(self.header(op, 0, flags));
            }
        }
        None
    }

    /// The header of an `RW` packet of `len` bytes we are sending now
    /// (`len` must not exceed [`Self::peer_free`]).
    pub fn data_header(&mut self, len: u32) -> Header {
        // Never more than the guest's credit (the fuzz targets run with
        // debug assertions).
        debug_assert!(
            len <= self.peer_free(),
            "sending {len} bytes with {} of credit",
            self.peer_free()
        );
        self.rx_cnt += len;
        self.pending &= !PENDING_CREDIT_UPDATE;
        self.header(op::RW, len, 0)
    }

    /// An `RST` for this connection.
    pub fn rst(&mut self) -> Header {
        self.header(op::RST, 0, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUF: u32 = 256 * 1024;

    fn guest(op: u16, len: u32, buf_alloc: u32, fwd_cnt: u32) -> Header {
        Header {
            src_cid: 3,
            dst_cid: HOST_CID,
            src_port: 1000,
            dst_port: 5000,
            len,
            type_: TYPE_STREAM,
            op,
            flags: 0,
            buf_alloc,
            fwd_cnt,
        }
    }

    fn established() -> Connection {
        let mut c = Connection::peer_init(&guest(op::REQUEST, 0, BUF, 0), BUF);
        let r = c.next_control().unwrap();
        assert_eq!(r.op, op::RESPONSE);
        c
    }

    #[test]
    fn guest_request_gets_a_response_with_swapped_ports_and_our_credit() {
        let mut c = Connection::peer_init(&guest(op::REQUEST, 0, BUF, 0), BUF);
        assert_eq!(c.state(), State::Established);
        let r = c.next_control().unwrap();
        assert_eq!(
            (r.op, r.src_cid, r.dst_cid, r.src_port, r.dst_port),
            (op::RESPONSE, HOST_CID, 3, 5000, 1000)
        );
        assert_eq!((r.buf_alloc, r.fwd_cnt, r.type_), (BUF, 0, TYPE_STREAM));
        assert!(c.next_control().is_none());
        assert_eq!(c.peer_free(), BUF);
    }

    #[test]
    fn host_connect_handshake() {
        let mut c = Connection::local_init(1 << 30, 6000, 3, BUF);
        let r = c.next_control().unwrap();
        assert_eq!((r.op, r.src_port, r.dst_port), (op::REQUEST, 1 << 30, 6000));
        assert!(!c.may_send_data());
        // Data before the handshake completes is a protocol error.
        let mut early = guest(op::RW, 5, BUF, 0);
        early.src_port = 6000;
        assert_eq!(c.on_guest_packet(&early, 0), GuestAction::Reset);
        let mut c = Connection::local_init(1 << 30, 6000, 3, BUF);
        c.next_control();
        assert_eq!(
            c.on_guest_packet(&guest(op::RESPONSE, 0, BUF, 0), 0),
            GuestAction::Established
        );
        assert!(c.may_send_data());
        // Refusal.
        let mut c = Connection::local_init(1 << 30, 6000, 3, BUF);
        assert_eq!(
            c.on_guest_packet(&guest(op::RST, 0, 0, 0), 0),
            GuestAction::Closed
        );
    }

    #[test]
    fn never_sends_beyond_the_guest_credit() {
        let mut c = established();
        assert_eq!(c.peer_free(), BUF);
        let h = c.data_header(BUF - 100);
        assert_eq!((h.op, h.len), (op::RW, BUF - 100));
        assert_eq!(c.peer_free(), 100);
        c.data_header(100);
        assert_eq!(c.peer_free(), 0);
        // Out of credit: one CREDIT_REQUEST, not one per attempt.
        assert!(c.request_credit());
        assert!(!c.request_credit());
        assert_eq!(c.next_control().unwrap().op, op::CREDIT_REQUEST);
        // The guest consumed 4096 bytes.
        assert_eq!(
            c.on_guest_packet(&guest(op::CREDIT_UPDATE, 0, BUF, 4096), 0),
            GuestAction::None
        );
        assert_eq!(c.peer_free(), 4096);
        // A guest shrinking its buffer below what is in flight gives 0, not
        // a wrapped huge number.
        c.on_guest_packet(&guest(op::CREDIT_UPDATE, 0, 10, 4096), 0);
        assert_eq!(c.peer_free(), 0);
    }

    #[test]
    fn credit_counters_wrap() {
        let mut c = established();
        c.rx_cnt = Wrapping(u32::MAX - 10);
        c.on_guest_packet(&guest(op::CREDIT_UPDATE, 0, BUF, u32::MAX - 10), 0);
        assert_eq!(c.peer_free(), BUF);
        c.data_header(100);
        assert_eq!(c.peer_free(), BUF - 100);
        c.on_guest_packet(&guest(op::CREDIT_UPDATE, 0, BUF, 89), 0);
        assert_eq!(c.peer_free(), BUF);
    }

    #[test]
    fn guest_exceeding_our_credit_is_reset() {
        let mut c = established();
        assert_eq!(
            c.on_guest_packet(&guest(op::RW, 4096, BUF, 0), 0),
            GuestAction::Forward(4096)
        );
        // 250 KiB still buffered + 8 KiB more > 256 KiB.
        assert_eq!(
            c.on_guest_packet(&guest(op::RW, 8192, BUF, 0), 250 * 1024),
            GuestAction::Reset
        );
    }

    #[test]
    fn credit_update_after_half_the_buffer_is_forwarded() {
        let mut c = established();
        c.forwarded((BUF / 2 - 1) as usize);
        assert!(!c.has_control());
        c.forwarded(1);
        let u = c.next_control().unwrap();
        assert_eq!((u.op, u.fwd_cnt), (op::CREDIT_UPDATE, BUF / 2));
        // Credit requests are answered.
        c.on_guest_packet(&guest(op::CREDIT_REQUEST, 0, BUF, 0), 0);
        assert_eq!(c.next_control().unwrap().op, op::CREDIT_UPDATE);
        // A data packet carries the credit: no separate update.
        c.forwarded(BUF as usize);
        let d = c.data_header(10);
        assert_eq!(d.fwd_cnt, BUF / 2 + BUF);
        assert!(c.next_control().is_none());
    }

    #[test]
    fn shutdown_sequences() {
        // Guest half-closes, then closes.
        let mut c = established();
        assert_eq!(
            c.on_guest_packet(
                &Header {
                    flags: SHUTDOWN_SEND,
                    ..guest(op::SHUTDOWN, 0, BUF, 0)
                },
                0
            ),
            GuestAction::Shutdown(SHUTDOWN_SEND)
        );
        assert!(c.may_send_data());
        // Data after SHUTDOWN(SEND) is a violation.
        assert_eq!(
            c.on_guest_packet(&guest(op::RW, 1, BUF, 0), 0),
            GuestAction::Reset
        );
        let mut c = established();
        let both = Header {
            flags: SHUTDOWN_BOTH,
            ..guest(op::SHUTDOWN, 0, BUF, 0)
        };
        assert_eq!(
            c.on_guest_packet(&both, 0),
            GuestAction::Shutdown(SHUTDOWN_BOTH)
        );
        assert!(!c.may_send_data());

        // Host EOF: SHUTDOWN(SEND), once; then full close adds RCV.
        let mut c = established();
        c.host_eof(false);
        let s = c.next_control().unwrap();
        assert_eq!((s.op, s.flags), (op::SHUTDOWN, SHUTDOWN_SEND));
        assert!(!c.may_send_data());
        c.host_eof(false);
        assert!(c.next_control().is_none());
        c.host_eof(true);
        assert_eq!(c.next_control().unwrap().flags, SHUTDOWN_BOTH);
        assert_eq!(c.local_shutdown(), SHUTDOWN_BOTH);
    }

    #[test]
    fn unexpected_ops_reset() {
        let cases = [
            (op::REQUEST, GuestAction::Reset),
            (99, GuestAction::Reset),
            (op::RST, GuestAction::Closed),
        ];
        for (kind, action) in cases {
            let mut c = established();
            let h = guest(kind, 0, BUF, 0);
            assert_eq!(c.on_guest_packet(&h, 0), action, "op {kind}");
        }
    }
}
