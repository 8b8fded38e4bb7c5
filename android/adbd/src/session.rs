//! One client connection as a pure state machine: the `CNXN` handshake,
//! the stream table and per-stream flow control. The I/O shell
//! (`conn.rs`) feeds it every packet from the wire ([`Session::on_packet`])
//! and asks it for the packets a service sends ([`Session::write`],
//! [`Session::take_inbound`], [`Session::close_local`]); nothing here
//! blocks or does I/O, so the fuzz target drives the same code.
//!
//! Flow control is the classic one (no `delayed_ack`): each side has at
//! most one `WRTE` per stream in flight and sends the next only after the
//! peer's `OKAY`. Our `OKAY` means "room for one more", as AOSP's adbd
//! acknowledges once a payload is buffered: when a `WRTE`'s header
//! arrives ([`Session::on_header`]) and its service has nothing else
//! waiting, the `OKAY` goes out at once, so the client sends the next
//! packet while this one's payload is still arriving (adb 29's server
//! would otherwise wait a round trip per packet: pushes half as fast in
//! the test host). Otherwise the `OKAY` is owed and sent when the service
//! takes a payload. So a stream holds at most two unread payloads; a
//! client that writes again while we owe it an `OKAY` breaks the protocol
//! and loses the connection.
//!
//! Every packet is hostile input. Violations that only a broken or hostile
//! client commits close the connection ([`ProtocolError`]); the ordinary
//! races of the protocol (a `WRTE` or `OKAY` for a stream we just closed)
//! are ignored; a refused or unknown service gets `CLSE`.

use std::collections::{BTreeMap, VecDeque};

use thiserror::Error;

use crate::packet::{
    Command, Header, Packet, MAX_PAYLOAD, VERSION, VERSION_MIN, VERSION_SKIP_CHECKSUM,
};
use crate::service::Service;

/// Most streams one connection may have open at once; more `OPEN`s are
/// refused with `CLSE`. With 1 MiB packets, at most two queued per
/// stream plus the one each service works on and the one being read, a
/// connection holds at most 25 MiB of client data.
pub const MAX_STREAMS: usize = 8;

/// Why a connection is closed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProtocolError {
    /// A stream packet or `AUTH` before the `CNXN` handshake.
    #[error("{0} before the connection handshake")]
    NotConnected(&'static str),
    /// A command that a client never sends (or a second `CNXN`).
    #[error("unexpected {0} from the client")]
    Unexpected(&'static str),
    /// The client's protocol version is older than any adb.
    #[error("unsupported protocol version {0:#x}")]
    Version(u32),
    /// The client's maximum payload is too small to carry anything.
    #[error("client max payload {0} is too small")]
    MaxPayload(u32),
    /// `OPEN` with stream id 0.
    #[error("OPEN with local id 0")]
    ZeroId,
    /// `OPEN` reusing the id of a stream that is still open.
    #[error("OPEN reuses the open stream id {0}")]
    DuplicateId(u32),
    /// A stream packet naming our stream with another peer id.
    #[error("{command} for stream {local} names peer {got}, not {expected}")]
    WrongPeer {
        /// The command.
        command: &'static str,
        /// Our stream id.
        local: u32,
        /// The peer id in the packet.
        got: u32,
        /// The stream's peer id.
        expected: u32,
    },
    /// A `WRTE` while we owe the client the `OKAY` for the previous one.
    #[error("WRTE on stream {0} before the previous one was acknowledged")]
    FlowControl(u32),
    /// The session already failed or was shut down.
    #[error("the connection is closed")]
    Closed,
}

/// Where the handshake is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the client's `CNXN`.
    AwaitingConnect,
    /// Connected with the negotiated version and the client's max payload.
    Online { version: u32, peer_max_payload: u32 },
    /// Failed or shut down.
    Closed,
}

/// One open stream.
#[derive(Debug)]
struct Stream {
    /// The client's id for it.
    peer: u32,
    /// `WRTE` payloads the service has not taken yet, oldest first (at
    /// most two).
    inbound: VecDeque<Vec<u8>>,
    /// A `WRTE`'s header went through [`Session::on_header`]; its payload
    /// is still to come.
    announced: bool,
    /// We owe the client the `OKAY` for its last `WRTE` (sent when the
    /// service takes a payload); until then it may not write.
    okay_owed: bool,
    /// We sent a `WRTE` and wait for the client's `OKAY`.
    awaiting_okay: bool,
    /// The client closed the stream (or the connection ended).
    peer_closed: bool,
}

/// What a packet asked of the I/O shell.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Output {
    /// Packets to send, in order.
    pub send: Vec<Packet>,
    /// A stream was opened: start this service on it.
    pub open: Option<(u32, Service)>,
}

/// What [`Session::take_inbound`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Inbound {
    /// Data, and the `OKAY` we owed the client, to send now (none if it
    /// was sent early, or after the client's `CLSE`: nobody reads it).
    Data(Vec<u8>, Option<Packet>),
    /// Nothing yet.
    Empty,
    /// The stream is closed and drained.
    Closed,
}

/// Why [`Session::write`] sent nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteError {
    /// The previous `WRTE` is not acknowledged yet: wait.
    Busy,
    /// The stream or connection is closed.
    Closed,
}

/// The daemon side of one connection.
#[derive(Debug)]
pub struct Session {
    banner: Vec<u8>,
    phase: Phase,
    streams: BTreeMap<u32, Stream>,
    next_id: u32,
}

impl Session {
    /// A session that answers `CNXN` with `banner` (`device::...`).
    pub fn new(banner: &str) -> Self {
        Self {
            banner: banner.as_bytes().to_vec(),
            phase: Phase::AwaitingConnect,
            streams: BTreeMap::new(),
            next_id: 1,
        }
    }

    /// The largest payload the client may send now: [`MAX_PAYLOAD`] (what
    /// our `CNXN` advertises; a version-1 client's first packet is smaller).
    pub fn max_inbound_payload(&self) -> u32 {
        MAX_PAYLOAD
    }

    /// Whether payload checksums must be verified (version-1 clients).
    pub fn verify_checksums(&self) -> bool {
        match self.phase {
            Phase::Online { version, .. } => version < VERSION_SKIP_CHECKSUM,
            _ => false,
        }
    }

    /// The largest `WRTE` payload we may send (the smaller of the two
    /// maxima); 0 before the handshake.
    pub fn max_send_payload(&self) -> usize {
        match self.phase {
            Phase::Online {
                peer_max_payload, ..
            } => peer_max_payload.min(MAX_PAYLOAD) as usize,
            _ => 0,
        }
    }

    /// Whether the handshake is done and the session not closed.
    pub fn is_online(&self) -> bool {
        matches!(self.phase, Phase::Online { .. })
    }

    /// Whether the session failed or was shut down.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Number of open streams.
    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// Payloads the client wrote on `local` that its service has not
    /// taken (at most two).
    pub fn unread(&self, local: u32) -> usize {
        self.streams.get(&local).map_or(0, |s| s.inbound.len())
    }

    /// Handles one packet from the client. An error means: close the
    /// connection (the session is then closed, [`Self::shutdown`] done).
    pub fn on_packet(&mut self, packet: Packet) -> Result<Output, ProtocolError> {
        let result = self.dispatch(packet);
        if result.is_err() {
            self.shutdown();
        }
        result
    }

    /// Handles a packet's header before its payload is read (the I/O
    /// shell calls it for every header; [`Self::on_packet`] follows with
    /// the whole packet): for a `WRTE`, the flow-control check and, if
    /// the stream has room, the early `OKAY` (module doc). Without this
    /// call `on_packet` does the same. An error closes the session.
    pub fn on_header(&mut self, header: &Header) -> Result<Output, ProtocolError> {
        if header.command != Command::Wrte || !self.is_online() {
            // Everything else is checked with the whole packet.
            return Ok(Output::default());
        }
        let result = self.announce_wrte(header.arg0, header.arg1);
        if result.is_err() {
            self.shutdown();
        }
        result
    }

    fn dispatch(&mut self, p: Packet) -> Result<Output, ProtocolError> {
        let name = p.command.name();
        match (self.phase, p.command) {
            (Phase::Closed, _) => Err(ProtocolError::Closed),
            (Phase::AwaitingConnect, Command::Cnxn) => self.connect(&p),
            (Phase::AwaitingConnect, _) => Err(ProtocolError::NotConnected(name)),
            (Phase::Online { .. }, Command::Open) => self.open(p),
            (Phase::Online { .. }, Command::Okay) => self.okay(&p),
            (Phase::Online { .. }, Command::Wrte) => self.wrte(p),
            (Phase::Online { .. }, Command::Clse) => self.clse(&p),
            (Phase::Online { .. }, _) => Err(ProtocolError::Unexpected(name)),
        }
    }

    fn connect(&mut self, p: &Packet) -> Result<Output, ProtocolError> {
        if p.arg0 < VERSION_MIN {
            return Err(ProtocolError::Version(p.arg0));
        }
        // Anything smaller cannot carry a shell protocol header.
        if p.arg1 < 256 {
            return Err(ProtocolError::MaxPayload(p.arg1));
        }
        let version = p.arg0.min(VERSION);
        self.phase = Phase::Online {
            version,
            peer_max_payload: p.arg1,
        };
        Ok(Output {
            send: vec![Packet::new(
                Command::Cnxn,
                version,
                MAX_PAYLOAD,
                self.banner.clone(),
            )],
            open: None,
        })
    }

    fn open(&mut self, p: Packet) -> Result<Output, ProtocolError> {
        let peer = p.arg0;
        if peer == 0 {
            return Err(ProtocolError::ZeroId);
        }
        if self
            .streams
            .values()
            .any(|s| s.peer == peer && !s.peer_closed)
        {
            return Err(ProtocolError::DuplicateId(peer));
        }
        let refuse = Output {
            send: vec![Packet::new(Command::Clse, 0, peer, Vec::new())],
            open: None,
        };
        let Some(service) = Service::parse(&p.payload) else {
            return Ok(refuse);
        };
        if self.streams.len() >= MAX_STREAMS {
            return Ok(refuse);
        }
        let local = self.allocate_id();
        self.streams.insert(
            local,
            Stream {
                peer,
                inbound: VecDeque::new(),
                announced: false,
                okay_owed: false,
                awaiting_okay: false,
                peer_closed: false,
            },
        );
        Ok(Output {
            send: vec![Packet::new(Command::Okay, local, peer, Vec::new())],
            open: Some((local, service)),
        })
    }

    /// A fresh nonzero id not in use (ids are not reused soon: a late
    /// packet for a closed stream must not reach a new one).
    fn allocate_id(&mut self) -> u32 {
        loop {
            let id = self.next_id;
            self.next_id = self.next_id.wrapping_add(1).max(1);
            if !self.streams.contains_key(&id) {
                return id;
            }
        }
    }

    /// The stream `local` if it exists and belongs to `peer`; `Ok(None)`
    /// for an unknown id (a stream we closed meanwhile).
    fn stream_of(
        &mut self,
        command: &'static str,
        peer: u32,
        local: u32,
    ) -> Result<Option<&mut Stream>, ProtocolError> {
        match self.streams.get_mut(&local) {
            None => Ok(None),
            Some(s) if s.peer != peer => Err(ProtocolError::WrongPeer {
                command,
                local,
                got: peer,
                expected: s.peer,
            }),
            Some(s) => Ok(Some(s)),
        }
    }

    fn okay(&mut self, p: &Packet) -> Result<Output, ProtocolError> {
        if let Some(s) = self.stream_of("OKAY", p.arg0, p.arg1)? {
            s.awaiting_okay = false;
        }
        Ok(Output::default())
    }

    /// A `WRTE` for `local` is on its way: checks that the client may
    /// write and acknowledges it at once if the stream has room (nothing
    /// unread), else owes the `OKAY`.
    fn announce_wrte(&mut self, peer: u32, local: u32) -> Result<Output, ProtocolError> {
        let Some(s) = self.stream_of("WRTE", peer, local)? else {
            return Ok(Output::default());
        };
        if s.peer_closed {
            // After its own CLSE a client sends nothing on the stream.
            return Err(ProtocolError::Unexpected("WRTE after CLSE"));
        }
        if s.okay_owed || s.announced {
            return Err(ProtocolError::FlowControl(local));
        }
        s.announced = true;
        if s.inbound.is_empty() {
            Ok(Output {
                send: vec![Packet::new(Command::Okay, local, s.peer, Vec::new())],
                open: None,
            })
        } else {
            s.okay_owed = true;
            Ok(Output::default())
        }
    }

    fn wrte(&mut self, p: Packet) -> Result<Output, ProtocolError> {
        let (peer, local) = (p.arg0, p.arg1);
        let announced = match self.stream_of("WRTE", peer, local)? {
            Some(s) => s.announced,
            None => return Ok(Output::default()),
        };
        let out = if announced {
            Output::default()
        } else {
            self.announce_wrte(peer, local)?
        };
        if let Some(s) = self.streams.get_mut(&local) {
            s.announced = false;
            s.inbound.push_back(p.payload);
        }
        Ok(out)
    }

    fn clse(&mut self, p: &Packet) -> Result<Output, ProtocolError> {
        // CLSE with our id 0 refuses a stream we opened: we open none.
        if p.arg1 != 0 {
            if let Some(s) = self.stream_of("CLSE", p.arg0, p.arg1)? {
                s.peer_closed = true;
            }
        }
        Ok(Output::default())
    }

    /// Takes the oldest data the client wrote on `local`, with the `OKAY`
    /// that lets it send more if we owed one.
    pub fn take_inbound(&mut self, local: u32) -> Inbound {
        let Some(s) = self.streams.get_mut(&local) else {
            return Inbound::Closed;
        };
        match s.inbound.pop_front() {
            Some(data) => {
                let owed = std::mem::take(&mut s.okay_owed);
                let okay = (owed && !s.peer_closed)
                    .then(|| Packet::new(Command::Okay, local, s.peer, Vec::new()));
                Inbound::Data(data, okay)
            }
            None if s.peer_closed => Inbound::Closed,
            None => Inbound::Empty,
        }
    }

    /// A `WRTE` of `data` on `local` (at most [`Self::max_send_payload`]
    /// bytes; longer data is refused as `Closed`, a caller bug).
    pub fn write(&mut self, local: u32, data: Vec<u8>) -> Result<Packet, WriteError> {
        if data.len() > self.max_send_payload() {
            return Err(WriteError::Closed);
        }
        let s = self.streams.get_mut(&local).ok_or(WriteError::Closed)?;
        if s.peer_closed {
            return Err(WriteError::Closed);
        }
        if s.awaiting_okay {
            return Err(WriteError::Busy);
        }
        s.awaiting_okay = true;
        Ok(Packet::new(Command::Wrte, local, s.peer, data))
    }

    /// Whether `local` may send now (open, nothing in flight).
    pub fn can_write(&self, local: u32) -> bool {
        self.streams
            .get(&local)
            .is_some_and(|s| !s.peer_closed && !s.awaiting_okay)
    }

    /// Whether `local` is still open for its service: neither the client
    /// nor the service closed it and the connection did not end.
    pub fn is_open(&self, local: u32) -> bool {
        self.streams.get(&local).is_some_and(|s| !s.peer_closed)
    }

    /// The service of `local` is done: forgets the stream; the `CLSE` to
    /// send unless the client closed it first.
    pub fn close_local(&mut self, local: u32) -> Option<Packet> {
        let s = self.streams.remove(&local)?;
        (!s.peer_closed && !self.is_closed())
            .then(|| Packet::new(Command::Clse, local, s.peer, Vec::new()))
    }

    /// The connection ended: every stream is closed for its service.
    pub fn shutdown(&mut self) {
        self.phase = Phase::Closed;
        for s in self.streams.values_mut() {
            s.peer_closed = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::MAX_PAYLOAD_V1;

    const BANNER: &str = "device::ro.product.name=t;features=shell_v2";

    fn pkt(c: Command, a0: u32, a1: u32, data: &[u8]) -> Packet {
        Packet::new(c, a0, a1, data.to_vec())
    }

    fn online() -> Session {
        let mut s = Session::new(BANNER);
        let out = s
            .on_packet(pkt(
                Command::Cnxn,
                0x0100_0001,
                1 << 20,
                b"host::features=shell_v2",
            ))
            .unwrap();
        assert_eq!(
            out.send,
            vec![pkt(Command::Cnxn, VERSION, MAX_PAYLOAD, BANNER.as_bytes())]
        );
        s
    }

    fn open(s: &mut Session, peer: u32, service: &[u8]) -> u32 {
        let out = s.on_packet(pkt(Command::Open, peer, 0, service)).unwrap();
        let (local, _) = out.open.expect("opened");
        assert_eq!(out.send, vec![pkt(Command::Okay, local, peer, b"")]);
        local
    }

    #[test]
    fn handshake_negotiates_version_and_payload() {
        let s = online();
        assert!(s.is_online() && !s.verify_checksums());
        assert_eq!(s.max_send_payload(), MAX_PAYLOAD as usize);
        let mut old = Session::new(BANNER);
        let out = old
            .on_packet(pkt(Command::Cnxn, VERSION_MIN, MAX_PAYLOAD_V1, b"host::"))
            .unwrap();
        assert_eq!(out.send[0].arg0, VERSION_MIN);
        assert!(old.verify_checksums());
        assert_eq!(old.max_send_payload(), MAX_PAYLOAD_V1 as usize);
    }

    #[test]
    fn handshake_violations_close_the_connection() {
        for (p, e) in [
            (
                pkt(Command::Open, 1, 0, b"shell:\0"),
                ProtocolError::NotConnected("OPEN"),
            ),
            (
                pkt(Command::Auth, 2, 0, b"sig"),
                ProtocolError::NotConnected("AUTH"),
            ),
            (
                pkt(Command::Cnxn, 0x42, 4096, b""),
                ProtocolError::Version(0x42),
            ),
            (
                pkt(Command::Cnxn, VERSION, 16, b""),
                ProtocolError::MaxPayload(16),
            ),
        ] {
            let mut s = Session::new(BANNER);
            assert_eq!(s.on_packet(p), Err(e));
            assert!(s.is_closed());
            assert_eq!(
                s.on_packet(pkt(Command::Cnxn, VERSION, 4096, b"")),
                Err(ProtocolError::Closed)
            );
        }
        let mut s = online();
        assert_eq!(
            s.on_packet(pkt(Command::Cnxn, VERSION, 4096, b"")),
            Err(ProtocolError::Unexpected("CNXN"))
        );
        for c in [Command::Sync, Command::Stls, Command::Auth] {
            let mut s = online();
            assert!(s.on_packet(pkt(c, 0, 0, b"")).is_err());
        }
    }

    /// The header of a `WRTE` of `data` from client stream 7 to `local`.
    fn wrte_header(local: u32, data: &[u8]) -> Header {
        let bytes = pkt(Command::Wrte, 7, local, data).encode();
        let head: [u8; crate::packet::HEADER_LEN] =
            bytes[..crate::packet::HEADER_LEN].try_into().unwrap();
        Header::parse(&head, MAX_PAYLOAD).unwrap()
    }

    #[test]
    fn stream_round_trip_with_flow_control() {
        let mut s = online();
        let local = open(&mut s, 7, b"shell,v2,raw:true\0");
        assert_eq!(s.take_inbound(local), Inbound::Empty);
        let okay = || pkt(Command::Okay, local, 7, b"");
        let header = |data: &[u8]| wrte_header(local, data);
        // Client data: nothing unread, so the OKAY goes out with the header,
        // before the payload is read.
        assert_eq!(s.on_header(&header(b"abc")).unwrap().send, vec![okay()]);
        assert_eq!(
            s.on_packet(pkt(Command::Wrte, 7, local, b"abc")),
            Ok(Output::default())
        );
        // The next packet finds "abc" unread: its OKAY is owed until the
        // service takes a payload.
        assert_eq!(s.on_header(&header(b"d")), Ok(Output::default()));
        s.on_packet(pkt(Command::Wrte, 7, local, b"d")).unwrap();
        assert_eq!(
            s.take_inbound(local),
            Inbound::Data(b"abc".to_vec(), Some(okay()))
        );
        // Then one more may come (two unread at most), without OKAY again.
        s.on_packet(pkt(Command::Wrte, 7, local, b"e")).unwrap();
        assert_eq!(
            s.on_packet(pkt(Command::Wrte, 7, local, b"f")),
            Err(ProtocolError::FlowControl(local))
        );
        assert!(s.is_closed());
        assert_eq!(s.unread(local), 2);
        // Without on_header (as the fuzz target may drive it), on_packet
        // acknowledges the same way.
        let mut s = online();
        let local = open(&mut s, 7, b"sync:\0");
        assert_eq!(
            s.on_packet(pkt(Command::Wrte, 7, local, b"a"))
                .unwrap()
                .send,
            vec![pkt(Command::Okay, local, 7, b"")]
        );
        assert_eq!(
            s.on_packet(pkt(Command::Wrte, 7, local, b"b")).unwrap(),
            Output::default()
        );
        assert_eq!(
            s.take_inbound(local),
            Inbound::Data(b"a".to_vec(), Some(pkt(Command::Okay, local, 7, b"")))
        );
        assert_eq!(s.take_inbound(local), Inbound::Data(b"b".to_vec(), None));
        assert_eq!(s.take_inbound(local), Inbound::Empty);
        // A header twice without its payload between is a broken client.
        let h = wrte_header(local, b"");
        assert!(s.on_header(&h).is_ok());
        assert_eq!(s.on_header(&h), Err(ProtocolError::FlowControl(local)));
        // Our data: one WRTE until the client's OKAY.
        let mut s = online();
        let local = open(&mut s, 7, b"sync:\0");
        assert_eq!(
            s.write(local, b"x".to_vec()),
            Ok(pkt(Command::Wrte, local, 7, b"x"))
        );
        assert!(!s.can_write(local));
        assert_eq!(s.write(local, b"y".to_vec()), Err(WriteError::Busy));
        s.on_packet(pkt(Command::Okay, 7, local, b"")).unwrap();
        assert!(s.can_write(local));
        assert_eq!(
            s.write(local, vec![0; MAX_PAYLOAD as usize + 1]),
            Err(WriteError::Closed)
        );
        // We close: CLSE once, the stream is forgotten, late packets ignored.
        assert_eq!(
            s.close_local(local),
            Some(pkt(Command::Clse, local, 7, b""))
        );
        assert_eq!(s.close_local(local), None);
        assert_eq!(s.stream_count(), 0);
        for c in [Command::Wrte, Command::Okay, Command::Clse] {
            assert_eq!(
                s.on_packet(pkt(c, 7, local, b"late")),
                Ok(Output::default())
            );
        }
    }

    #[test]
    fn client_close_drains_then_closes() {
        let mut s = online();
        let local = open(&mut s, 3, b"shell:cat\0");
        s.on_packet(pkt(Command::Wrte, 3, local, b"last")).unwrap();
        s.on_packet(pkt(Command::Clse, 3, local, b"")).unwrap();
        assert_eq!(s.take_inbound(local), Inbound::Data(b"last".to_vec(), None));
        assert_eq!(s.take_inbound(local), Inbound::Closed);
        assert_eq!(s.write(local, b"x".to_vec()), Err(WriteError::Closed));
        assert_eq!(
            s.on_packet(pkt(Command::Wrte, 3, local, b"more")),
            Err(ProtocolError::Unexpected("WRTE after CLSE"))
        );
        // No CLSE back after the client's (and none after a shutdown).
        let mut s = online();
        let local = open(&mut s, 3, b"shell:cat\0");
        s.on_packet(pkt(Command::Clse, 3, local, b"")).unwrap();
        assert_eq!(s.close_local(local), None);
        let local = open(&mut s, 3, b"shell:cat\0");
        s.shutdown();
        assert_eq!(s.take_inbound(local), Inbound::Closed);
        assert_eq!(s.close_local(local), None);
    }

    #[test]
    fn opens_are_checked_and_bounded() {
        let mut s = online();
        // Unknown service: refused, connection kept.
        let out = s
            .on_packet(pkt(Command::Open, 5, 0, b"tcpip:5555\0"))
            .unwrap();
        assert_eq!(out.send, vec![pkt(Command::Clse, 0, 5, b"")]);
        assert_eq!(out.open, None);
        let first = open(&mut s, 5, b"shell:\0");
        assert_eq!(
            s.on_packet(pkt(Command::Open, 5, 0, b"shell:\0")),
            Err(ProtocolError::DuplicateId(5))
        );
        let mut s = online();
        assert_eq!(
            s.on_packet(pkt(Command::Open, 0, 0, b"shell:\0")),
            Err(ProtocolError::ZeroId)
        );
        let mut s = online();
        for peer in 1..=MAX_STREAMS as u32 {
            open(&mut s, peer, b"shell:\0");
        }
        let out = s.on_packet(pkt(Command::Open, 99, 0, b"shell:\0")).unwrap();
        assert_eq!(out.send, vec![pkt(Command::Clse, 0, 99, b"")]);
        assert_eq!(s.stream_count(), MAX_STREAMS);
        // A packet naming our stream with another peer id.
        assert!(matches!(
            s.on_packet(pkt(Command::Wrte, 42, 1, b"x")),
            Err(ProtocolError::WrongPeer {
                local: 1,
                got: 42,
                expected: 1,
                ..
            })
        ));
        let _ = first;
    }

    #[test]
    fn ids_are_nonzero_and_fresh() {
        let mut s = online();
        s.next_id = u32::MAX;
        let a = open(&mut s, 1, b"shell:\0");
        let b = open(&mut s, 2, b"shell:\0");
        assert_eq!((a, b), (u32::MAX, 1));
    }
}
