//! The hybrid vsock `CONNECT <port>\n` line (`vsock::unix::parse_connect_line`),
//! the first bytes any local program sends the VMM's vsock socket.
//!
//! Oracles: the parser agrees with an independent reference (a line of at
//! most 32 bytes, `\n` included, an optional `\r` before it, `CONNECT `
//! and decimal digits naming a `u32`); its answer on every prefix of the
//! input is `Incomplete` until it decides, and once it decides the answer
//! never changes as more bytes arrive (the muxer parses a growing peek
//! buffer); a `Connect` consumes exactly the line.

#![no_main]

use devices::virtio::vsock::unix::{parse_connect_line, ConnectLine, MAX_CONNECT_LINE};
use libfuzzer_sys::fuzz_target;

fn reference(data: &[u8]) -> ConnectLine {
    let Some(nl) = data.iter().position(|&b| b == b'\n') else {
        return if data.len() >= MAX_CONNECT_LINE {
            ConnectLine::Invalid
        } else {
            ConnectLine::Incomplete
        };
    };
    if nl >= MAX_CONNECT_LINE {
        return ConnectLine::Invalid;
    }
    let mut line = &data[..nl];
    if line.last() == Some(&b'\r') {
        line = &line[..line.len() - 1];
    }
    let Ok(text) = std::str::from_utf8(line) else {
        return ConnectLine::Invalid;
    };
    let Some(digits) = text.strip_prefix("CONNECT ") else {
        return ConnectLine::Invalid;
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return ConnectLine::Invalid;
    }
    // Leading zeros are fine; the value must fit a u32.
    let value = digits
        .trim_start_matches('0')
        .chars()
        .try_fold(0u64, |v, c| {
            let v = v * 10 + u64::from(c as u8 - b'0');
            (v <= u64::from(u32::MAX)).then_some(v)
        });
    match value {
        Some(port) => ConnectLine::Connect {
            port: port as u32,
            len: nl + 1,
        },
        None => ConnectLine::Invalid,
    }
}

fuzz_target!(|data: &[u8]| {
    let data = &data[..data.len().min(256)];
    let full = parse_connect_line(data);
    assert_eq!(full, reference(data), "input {data:?}");
    if let ConnectLine::Connect { len, .. } = full {
        assert!(len <= MAX_CONNECT_LINE && data[len - 1] == b'\n');
    }
    let mut decided: Option<ConnectLine> = None;
    for n in 0..=data.len() {
        let r = parse_connect_line(&data[..n]);
        match decided {
            Some(d) => assert_eq!(r, d, "prefix {n} changed the decision"),
            None if r == ConnectLine::Incomplete => {}
            None => decided = Some(r),
        }
    }
});
