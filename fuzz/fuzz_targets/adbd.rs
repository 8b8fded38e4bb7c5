//! The guest adbd's protocol core (`vmstack-adbd`, docs/adb.md): hostile
//! client bytes through the packet decoder into the session state machine,
//! interleaved with what its services do (take data, write, close), and
//! the data of shell and sync streams through their decoders.
//!
//! Packets from the wire go through `Session::on_header` before
//! `on_packet`, as adbd's reader does (early `OKAY`s); the others through
//! `on_packet` alone, or both.
//!
//! Oracles: no panic; at most `MAX_STREAMS` streams; at most two unread
//! payloads per stream; never more `OKAY`s on a stream than its `OPEN`
//! and the `WRTE`s it accepted; every packet the
//! daemon sends decodes again to itself, a `WRTE` within the negotiated
//! payload, a `CLSE` never twice for a stream; a closed session stays
//! closed; the shell and sync decoders never hold more than one request
//! plus one pushed chunk, and account for every byte they consume.

#![no_main]

use std::collections::{BTreeMap, BTreeSet};

use adbd::packet::{self, Command, DecodeError, Header, Packet, HEADER_LEN, MAX_PAYLOAD, VERSION};
use adbd::service::Service;
use adbd::session::{Inbound, Session, WriteError, MAX_STREAMS};
use adbd::{shell_protocol, sync_protocol};
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Step {
    /// Raw bytes from the client's socket.
    Wire(Vec<u8>),
    /// A well-formed packet (command index, args, payload).
    Packet(u8, u32, u32, Vec<u8>),
    /// An `OPEN` of a real service name (index), with the client id.
    Open(u8, u32),
    /// A `WRTE` or `OKAY` or `CLSE` for an open stream (index), right ids,
    /// with its header handed over first or not.
    ForStream(u8, u8, bool, Vec<u8>),
    /// A service takes its data (stream index).
    Take(u8),
    /// A service writes this many bytes (stream index).
    Write(u8, u16),
    /// A service closes its stream (stream index).
    Close(u8),
}

const SERVICES: &[&[u8]] = &[
    b"shell,v2,TERM=xterm,raw:echo hi\0",
    b"shell,v2,pty:\0",
    b"shell:ls\0",
    b"exec:cat\0",
    b"sync:\0",
    b"reboot:\0",
    b"tcpip:5555\0",
];

const COMMANDS: &[Command] = &[
    Command::Cnxn,
    Command::Open,
    Command::Okay,
    Command::Wrte,
    Command::Clse,
    Command::Auth,
    Command::Sync,
    Command::Stls,
];

/// A stream the daemon opened, with its service's decoder.
struct Open {
    local: u32,
    peer: u32,
    shell: Option<shell_protocol::Decoder>,
    sync: Option<sync_protocol::Decoder>,
    /// The same bytes through the `SEND` path (`next_send_piece`, data
    /// streamed in place); dropped at its first error, as adbd closes the
    /// stream then.
    sync_send: Option<sync_protocol::Decoder>,
}

/// What the daemon sent and accepted, per stream.
#[derive(Default)]
struct Ledger {
    /// Streams we sent a `CLSE` for.
    closed: BTreeSet<u32>,
    /// `OKAY`s sent, by our stream id.
    okays: BTreeMap<u32, u64>,
    /// `WRTE`s accepted (header or packet taken without error) on an open
    /// stream, by our stream id.
    wrtes: BTreeMap<u32, u64>,
}

fn check_sent(session: &Session, sent: &[Packet], ledger: &mut Ledger) {
    let closed = &mut ledger.closed;
    for p in sent {
        if p.command == Command::Okay {
            let okays = ledger.okays.entry(p.arg0).or_default();
            *okays += 1;
            let wrtes = ledger.wrtes.get(&p.arg0).copied().unwrap_or(0);
            assert!(
                *okays <= wrtes + 1,
                "stream {}: {okays} OKAYs for {wrtes} WRTEs",
                p.arg0
            );
        }
        let wire = p.encode();
        let (back, used) = packet::decode(&wire, u32::MAX, true).expect("our packet decodes");
        assert_eq!((&back, used), (p, wire.len()));
        if p.command == Command::Wrte {
            assert!(p.payload.len() <= session.max_send_payload());
        }
        if p.command == Command::Clse && p.arg0 != 0 {
            assert!(
                closed.insert(p.arg0),
                "CLSE sent twice for stream {}",
                p.arg0
            );
        }
    }
}

/// Feeds a service's decoder and checks its bounds.
fn feed(open: &mut Open, data: &[u8]) {
    if let Some(d) = &mut open.shell {
        d.push(data);
        while let Ok(Some(_)) = d.next_packet() {}
        assert!(d.buffered() <= shell_protocol::HEADER_LEN + shell_protocol::MAX_DATA + data.len());
    }
    if let Some(d) = &mut open.sync {
        d.push(data);
        while let Ok(Some(_)) = d.next_request() {}
        assert!(d.buffered() <= sync_protocol::HEADER_LEN + sync_protocol::MAX_DATA + data.len());
    }
    if let Some(d) = &mut open.sync_send {
        let before = d.buffered();
        let _ = d.push_owned(data.to_vec());
        let mut streamed = 0;
        let failed = loop {
            match d.next_send_piece() {
                Ok(Some(sync_protocol::SendPiece::Data(b))) => streamed += b.len(),
                Ok(Some(_)) => {}
                Ok(None) => break false,
                Err(_) => break true,
            }
        };
        assert!(streamed <= before + data.len(), "streams only bytes it was given");
        if failed {
            open.sync_send = None;
        } else {
            // Streamed data is never held: at most a request being read.
            assert!(d.buffered() <= sync_protocol::HEADER_LEN + sync_protocol::MAX_PATH + data.len());
        }
    }
}

fuzz_target!(|input: (bool, Vec<Step>)| {
    let (handshake, steps) = input;
    let mut s = Session::new(&adbd::banner("fuzz"));
    let mut ledger = Ledger::default();
    let mut opens: Vec<Open> = Vec::new();
    let mut wire: Vec<u8> = Vec::new();
    let mut dead = false;
    if handshake {
        let out = s
            .on_packet(Packet::new(
                Command::Cnxn,
                VERSION,
                MAX_PAYLOAD,
                b"host::".to_vec(),
            ))
            .expect("a valid CNXN is accepted");
        check_sent(&s, &out.send, &mut ledger);
    }
    for step in steps.into_iter().take(256) {
        let mut incoming = Vec::new();
        match step {
            Step::Wire(bytes) => {
                wire.extend_from_slice(&bytes);
                loop {
                    match packet::decode(&wire, s.max_inbound_payload(), s.verify_checksums()) {
                        Ok((p, used)) => {
                            wire.drain(..used);
                            incoming.push((p, true));
                        }
                        Err(DecodeError::Incomplete) => break,
                        // The daemon closes the connection here.
                        Err(DecodeError::Invalid(_)) => {
                            wire.clear();
                            s.shutdown();
                            dead = true;
                            break;
                        }
                    }
                }
            }
            Step::Packet(c, a0, a1, data) => incoming.push((
                Packet::new(COMMANDS[usize::from(c) % COMMANDS.len()], a0, a1, data),
                false,
            )),
            Step::Open(i, peer) => incoming.push((
                Packet::new(
                    Command::Open,
                    peer,
                    0,
                    SERVICES[usize::from(i) % SERVICES.len()].to_vec(),
                ),
                false,
            )),
            Step::ForStream(i, c, header_first, data) => {
                if let Some(o) = opens.get(usize::from(i) % opens.len().max(1)) {
                    let command = [Command::Wrte, Command::Okay, Command::Clse][usize::from(c) % 3];
                    incoming.push((Packet::new(command, o.peer, o.local, data), header_first));
                }
            }
            Step::Take(i) => {
                let n = opens.len().max(1);
                if let Some(o) = opens.get_mut(usize::from(i) % n) {
                    match s.take_inbound(o.local) {
                        Inbound::Data(data, okay) => {
                            if let Some(okay) = okay {
                                assert_eq!(okay.command, Command::Okay);
                                check_sent(&s, &[okay], &mut ledger);
                            }
                            feed(o, &data);
                        }
                        Inbound::Empty | Inbound::Closed => {}
                    }
                }
            }
            Step::Write(i, len) => {
                if let Some(o) = opens.get(usize::from(i) % opens.len().max(1)) {
                    let len = usize::from(len).min(s.max_send_payload());
                    match s.write(o.local, vec![0xa5; len]) {
                        Ok(p) => check_sent(&s, &[p], &mut ledger),
                        Err(WriteError::Busy) => assert!(!s.can_write(o.local)),
                        Err(WriteError::Closed) => {}
                    }
                }
            }
            Step::Close(i) => {
                if !opens.is_empty() {
                    let o = opens.remove(usize::from(i) % opens.len());
                    if let Some(p) = s.close_local(o.local) {
                        check_sent(&s, &[p], &mut ledger);
                    }
                }
            }
        }
        for (p, header_first) in incoming {
            // A WRTE on one of our open streams counts once it is accepted:
            // at its header when that comes first, else with the packet.
            let counted_wrte = (p.command == Command::Wrte
                && opens.iter().any(|o| o.local == p.arg1 && o.peer == p.arg0))
            .then_some(p.arg1);
            if header_first {
                if let Some(local) = counted_wrte {
                    *ledger.wrtes.entry(local).or_default() += 1;
                }
                let wire = p.encode();
                let head: &[u8; HEADER_LEN] = wire[..HEADER_LEN].try_into().expect("a header");
                let header = Header::parse(head, u32::MAX).expect("our header parses");
                match s.on_header(&header) {
                    Ok(out) => {
                        assert!(!dead || out.send.is_empty(), "a closed session answered");
                        check_sent(&s, &out.send, &mut ledger);
                    }
                    Err(_) => {
                        // The daemon closes the connection before the payload.
                        dead = true;
                        assert!(s.is_closed());
                        continue;
                    }
                }
            }
            if !header_first {
                if let Some(local) = counted_wrte {
                    *ledger.wrtes.entry(local).or_default() += 1;
                }
            }
            match s.on_packet(p) {
                Ok(out) => {
                    assert!(!dead, "a closed session accepted a packet");
                    check_sent(&s, &out.send, &mut ledger);
                    if let Some((local, service)) = out.open {
                        let peer = out.send[0].arg1;
                        opens.push(Open {
                            local,
                            peer,
                            shell: matches!(service, Service::Shell(_))
                                .then(shell_protocol::Decoder::new),
                            sync: matches!(service, Service::Sync)
                                .then(sync_protocol::Decoder::new),
                            sync_send: matches!(service, Service::Sync)
                                .then(sync_protocol::Decoder::new),
                        });
                    }
                }
                Err(_) => {
                    dead = true;
                    assert!(s.is_closed());
                }
            }
            assert!(s.stream_count() <= MAX_STREAMS);
            for o in &opens {
                assert!(s.unread(o.local) <= 2, "more than two unread payloads");
            }
        }
    }
});
