//! libtrusty over vsock: the port-name handshake and the per-TA message
//! framing, fed reads and timeouts in any order.
//!
//! Oracles: every message is at most the limit; no byte is invented or
//! lost (the messages plus what is still buffered are exactly the bytes
//! after the port name); a framing error happens only when more than a
//! limit's worth of bytes has no boundary.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use trusty::framing::{MessageFramer, NameState, PortNameReader, VSOCK_MAX_MESSAGE};
use trusty::ports::TaKind;

#[derive(Arbitrary, Debug)]
enum Step {
    /// A read of these bytes.
    Read(Vec<u8>),
    /// The start of a real port name (index into the served TAs), cut.
    NamePart(u8, u8),
    /// A whole port name.
    Name(u8),
    /// A read of `n` copies of `b` (large reads without large inputs).
    Fill(u16, u8),
    /// The wait for more bytes timed out.
    Timeout,
}

fuzz_target!(|steps: Vec<Step>| {
    let served = TaKind::ALL;
    let mut names = PortNameReader::new(&served);
    let mut framer: Option<MessageFramer> = None;
    let mut after_name: Vec<u8> = Vec::new();
    let mut out: Vec<u8> = Vec::new();
    for step in steps.into_iter().take(64) {
        let chunk: Vec<u8> = match step {
            Step::Read(b) => b,
            Step::NamePart(i, cut) => {
                let n = served[usize::from(i) % served.len()].port_name().as_bytes();
                n[..usize::from(cut) % (n.len() + 1)].to_vec()
            }
            Step::Name(i) => served[usize::from(i) % served.len()]
                .port_name()
                .as_bytes()
                .to_vec(),
            Step::Fill(n, b) => vec![b; usize::from(n) % (2 * VSOCK_MAX_MESSAGE + 2)],
            Step::Timeout => Vec::new(),
        };
        let timeout = chunk.is_empty();
        match &mut framer {
            None => {
                let st = if timeout {
                    names.on_quiet()
                } else {
                    names.push(&chunk)
                };
                match st {
                    NameState::Connected { ta, rest } => {
                        let mut f = MessageFramer::new(ta, VSOCK_MAX_MESSAGE);
                        after_name.extend_from_slice(&rest);
                        match f.push_read(&rest) {
                            Ok(ms) => ms.iter().for_each(|m| {
                                assert!(m.len() <= VSOCK_MAX_MESSAGE);
                                out.extend_from_slice(m);
                            }),
                            Err(_) => return,
                        }
                        framer = Some(f);
                    }
                    NameState::Unknown => return,
                    NameState::NeedMore | NameState::CompleteIfQuiet(_) => {}
                }
            }
            Some(f) => {
                if timeout {
                    if let Some(m) = f.take_partial() {
                        assert!(m.len() <= VSOCK_MAX_MESSAGE);
                        out.extend_from_slice(&m);
                    }
                    continue;
                }
                after_name.extend_from_slice(&chunk);
                match f.push_read(&chunk) {
                    Ok(ms) => ms.iter().for_each(|m| {
                        assert!(m.len() <= VSOCK_MAX_MESSAGE);
                        out.extend_from_slice(m);
                    }),
                    Err(_) => {
                        // Only when a limit's worth has no boundary.
                        assert!(after_name.len() - out.len() > VSOCK_MAX_MESSAGE);
                        return;
                    }
                }
            }
        }
    }
    if let Some(mut f) = framer {
        if let Some(m) = f.take_partial() {
            out.extend_from_slice(&m);
        }
        assert_eq!(out, after_name, "bytes conserved");
    }
});
