//! The guest adbd's protocol core (`vmstack-adbd`, docs/adb.md): hostile
//! client bytes through the packet decoder into the session state machine,
//! interleaved with what its services do (take data, write, close), and
//! the data of shell and sync streams through their decoders.
//!
//! Oracles: no panic; at most `MAX_STREAMS` streams; every packet the
//! daemon sends decodes again to itself, a `WRTE` within the negotiated
//! payload, a `CLSE` never twice for a stream; a closed session stays
//! closed; the shell and sync decoders never hold more than one request
//! plus one pushed chunk, and account for every byte they consume.

#![no_main]

use std::collections::BTreeSet;

use adbd::packet::{self, Command, DecodeError, Packet, MAX_PAYLOAD, VERSION};
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
    /// A `WRTE` or `OKAY` or `CLSE` for an open stream (index), right ids.
    ForStream(u8, u8, Vec<u8>),
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

fn check_sent(session: &Session, sent: &[Packet], closed: &mut BTreeSet<u32>) {
    for p in sent {
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
    let mut closed_sent = BTreeSet::new();
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
        check_sent(&s, &out.send, &mut closed_sent);
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
                            incoming.push(p);
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
            Step::Packet(c, a0, a1, data) => incoming.push(Packet::new(
                COMMANDS[usize::from(c) % COMMANDS.len()],
                a0,
                a1,
                data,
            )),
            Step::Open(i, peer) => incoming.push(Packet::new(
                Command::Open,
                peer,
                0,
                SERVICES[usize::from(i) % SERVICES.len()].to_vec(),
            )),
            Step::ForStream(i, c, data) => {
                if let Some(o) = opens.get(usize::from(i) % opens.len().max(1)) {
                    let command = [Command::Wrte, Command::Okay, Command::Clse][usize::from(c) % 3];
                    incoming.push(Packet::new(command, o.peer, o.local, data));
                }
            }
            Step::Take(i) => {
                let n = opens.len().max(1);
                if let Some(o) = opens.get_mut(usize::from(i) % n) {
                    match s.take_inbound(o.local) {
                        Inbound::Data(data, okay) => {
                            if let Some(okay) = okay {
                                assert_eq!(okay.command, Command::Okay);
                                check_sent(&s, &[okay], &mut closed_sent);
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
                        Ok(p) => check_sent(&s, &[p], &mut closed_sent),
                        Err(WriteError::Busy) => assert!(!s.can_write(o.local)),
                        Err(WriteError::Closed) => {}
                    }
                }
            }
            Step::Close(i) => {
                if !opens.is_empty() {
                    let o = opens.remove(usize::from(i) % opens.len());
                    if let Some(p) = s.close_local(o.local) {
                        check_sent(&s, &[p], &mut closed_sent);
                    }
                }
            }
        }
        for p in incoming {
            match s.on_packet(p) {
                Ok(out) => {
                    assert!(!dead, "a closed session accepted a packet");
                    check_sent(&s, &out.send, &mut closed_sent);
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
        }
    }
});
