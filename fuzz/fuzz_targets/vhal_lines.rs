//! The text links of `sysmgr` as they read a peer: the Android guest's
//! VHAL channel (lines of at most 64 bytes, `vhal::parse_report`) and a
//! VMM's control connection (lines of at most 1024 bytes, parsed as
//! `vmm_protocol::ServerLine`), both through `lines::LineReader`, with the
//! peer's bytes arriving in reads of any size.
//!
//! Oracles: the reader yields exactly the lines of an independent split of
//! the whole stream (a trailing `\r` removed), stops with `TooLong` at the
//! first line (or unterminated tail) over the limit and with `Eof` at the
//! end, however the reads are cut; no line it returns is over the limit; a
//! VHAL report that parses prints back to a line that parses to the same
//! values; garbage is kept to at most 64 characters for the log.

#![no_main]

use std::io;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sysmgr::lines::{LineEnd, LineReader};
use sysmgr::vhal::{parse_report, VhalReport, MAX_LINE};
use tokio::io::{AsyncRead, ReadBuf};
use vmm_protocol::ServerLine;

/// The VMM link's line limit (`sysmgr::vmm`).
const VMM_MAX_LINE: usize = vmm_protocol::MAX_SERVER_LINE_LEN;

#[derive(Arbitrary, Debug)]
struct Input {
    vmm: bool,
    cuts: Vec<u16>,
    stream: Vec<u8>,
}

/// Hands out the stream in reads of the given sizes.
struct Chunks<'a> {
    data: &'a [u8],
    cuts: &'a [u16],
    next: usize,
}

impl AsyncRead for Chunks<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let cut = self
            .cuts
            .get(self.next % self.cuts.len().max(1))
            .map_or(usize::MAX, |&c| usize::from(c).max(1));
        self.next += 1;
        let n = cut.min(buf.remaining()).min(self.data.len());
        let (now, rest) = self.data.split_at(n);
        buf.put_slice(now);
        self.data = rest;
        Poll::Ready(Ok(()))
    }
}

/// The lines of the whole stream, then how reading ends.
fn reference(stream: &[u8], max: usize) -> (Vec<String>, LineEnd) {
    let mut lines = Vec::new();
    let mut rest = stream;
    loop {
        match rest.iter().position(|&b| b == b'\n') {
            Some(nl) => {
                let mut line = &rest[..nl];
                if line.last() == Some(&b'\r') {
                    line = &line[..line.len() - 1];
                }
                if line.len() > max {
                    return (lines, LineEnd::TooLong);
                }
                lines.push(String::from_utf8_lossy(line).into_owned());
                rest = &rest[nl + 1..];
            }
            // `max` bytes and a `\r` may still wait for their `\n`.
            None if rest.len() > max + 1 => return (lines, LineEnd::TooLong),
            None => return (lines, LineEnd::Eof),
        }
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("fuzz runtime")
    })
}

fuzz_target!(|input: Input| {
    let stream = &input.stream[..input.stream.len().min(16 * 1024)];
    let max = if input.vmm { VMM_MAX_LINE } else { MAX_LINE };
    let (want, want_end) = reference(stream, max);
    let (got, end) = runtime().block_on(async {
        let chunks = Chunks {
            data: stream,
            cuts: &input.cuts,
            next: 0,
        };
        let mut reader = LineReader::new(chunks, max);
        let mut got = Vec::new();
        loop {
            match reader.next_line().await {
                Ok(line) => got.push(line),
                Err(end) => return (got, end),
            }
        }
    });
    assert_eq!(got, want, "lines depend on how the stream was read");
    assert_eq!(end, want_end);
    for line in &got {
        assert!(line.len() <= 3 * max, "a line of {} bytes", line.len());
        if input.vmm {
            if let Ok(parsed) = line.parse::<ServerLine>() {
                let again = parsed.to_string();
                assert_eq!(again.parse::<ServerLine>().ok(), Some(parsed));
            }
        } else {
            match parse_report(line) {
                VhalReport::Report(v, p) => {
                    let again = format!("AP_POWER_STATE_REPORT {v} {p}");
                    assert_eq!(parse_report(&again), VhalReport::Report(v, p));
                }
                VhalReport::Garbage(kept) => assert!(kept.chars().count() <= MAX_LINE),
                other => panic!("a line parsed as {other:?}"),
            }
        }
    }
});
