//! The VMM control protocol (`vmm-protocol`): arbitrary lines into every
//! parser.
//!
//! The input is split into lines as a connection would be; each line (and
//! the whole input, newlines and all) goes to every parser. Nothing may
//! panic; whatever parses must format to one line that parses to the same
//! value again, and a line the VMM writes (response or event) must stay
//! within `MAX_SERVER_LINE_LEN`.

#![no_main]

use std::fmt::{Debug, Display};
use std::str::FromStr;

use libfuzzer_sys::fuzz_target;
use vmm_protocol::{
    Answer, Decision, Event, ExitReason, PowerRequestKind, Request, Response, ServerLine, Status,
    VmState, MAX_SERVER_LINE_LEN,
};

/// Parses `text` as a `T`; if it parses, checks the value's round trip and
/// returns its line.
fn check<T>(text: &str) -> Option<String>
where
    T: FromStr + Display + PartialEq + Debug,
{
    let value = text.parse::<T>().ok()?;
    let line = value.to_string();
    match line.parse::<T>() {
        Ok(again) if again == value => {}
        other => panic!(
            "{text:?} parsed as {value:?}, formats as {line:?}, which parses as {:?}",
            other.ok()
        ),
    }
    Some(line)
}

fn every_parser(text: &str) {
    let lines = [
        check::<Request>(text),
        check::<Response>(text),
        check::<Answer>(text),
        check::<Status>(text),
        check::<Event>(text),
        check::<ServerLine>(text),
        check::<Decision>(text),
        check::<VmState>(text),
        check::<PowerRequestKind>(text),
    ];
    for line in lines.into_iter().flatten() {
        assert!(!line.contains('\n'), "{line:?} is not one line");
        assert!(line.len() <= MAX_SERVER_LINE_LEN, "{line:?} is too long");
    }
    // An exit reason's crash text is the VMM's own, so it may be anything.
    check::<ExitReason>(text);
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    every_parser(&text);
    for line in text.split('\n').take(64) {
        every_parser(line);
    }
});
