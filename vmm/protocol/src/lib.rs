//! The VMM control protocol: every message that crosses a VMM's control
//! socket, and the VMM's process exit codes, as typed values.
//!
//! This crate is the one definition of the protocol. The VMM (`vmm`), the
//! system-manager daemon (`sysmgr`), their tests, fakes and benchmarks
//! format lines with [`Display`](std::fmt::Display) and read them with
//! [`FromStr`](std::str::FromStr); no other code spells a protocol word.
//! The reference spec, with the behaviour behind each message, is
//! `docs/vmm-control.md`; this is its summary.
//!
//! # Transport
//!
//! A unix stream socket (`vmm run --socket PATH`) carrying UTF-8 lines
//! ended by `\n`. Words are separated by whitespace. A request line is at
//! most [`MAX_REQUEST_LEN`] bytes (its `\n` included); the VMM answers a
//! longer one with an error and closes the connection. The VMM never
//! writes a line longer than [`MAX_SERVER_LINE_LEN`].
//!
//! # Requests ([`Request`]) and responses ([`Response`])
//!
//! Each request gets exactly one response line, `ok ...` ([`Answer`]) or
//! `error MESSAGE` ([`ErrorMessage`]):
//!
//! | request | answer |
//! |---|---|
//! | `status` | `ok state=S arbitrated=B pending=N boots=G arbiters=A` ([`Status`]) |
//! | `stop` | `ok stopping` (the VMM exits 0) |
//! | `pause` / `resume` | `ok paused` / `ok resumed` |
//! | `power-button` | `ok pressed` |
//! | `decide ID DECISION` | `ok decided` ([`Decision`]: `allow`, `restart`, `hold`, `refuse`) |
//! | `attach` | `ok attached`, then events; the connection is the power arbiter |
//! | `events` | `ok subscribed`, then events |
//!
//! # Events ([`Event`])
//!
//! Written to `attach`ed and `events` connections, interleaved with the
//! responses to that connection's own requests ([`ServerLine`] reads
//! either):
//!
//! - `event state S`: the VM's state ([`VmState`]: `running`, `paused`,
//!   `virtually-off`, `suspended`);
//! - `event power-request id=N kind=K`: a guest power request held for the
//!   arbiter ([`PowerRequestKind`]: `poweroff`, `reboot`, `suspend`); ids
//!   increase for the life of the VMM process.
//!
//! An arbiter that attaches first gets the current state, then every
//! still-pending request again.
//!
//! # Exit
//!
//! The VMM's last stderr line is `vmm: exit reason: R` ([`ExitReason`]:
//! `poweroff`, `reboot`, `stopped`, `crash (WHY)`); its exit code follows
//! crosvm ([`VmmExitCode`]): 0 poweroff or stop, 32 reset, 33 crash, and 1
//! for bad arguments or a set-up failure before the guest ran.
//!
//! Every parser takes any string (it is hostile input) and returns a
//! [`ParseError`] for anything that is not a message; whatever parses
//! formats back to a line that parses to the same value.

mod error;
mod event;
mod exit;
mod request;
mod response;
mod words;

pub use error::ParseError;
pub use event::{Event, ServerLine};
pub use exit::{ExitReason, VmmExitCode};
pub use request::Request;
pub use response::{Answer, ErrorMessage, Response, Status};
pub use words::{Decision, PowerRequestKind, VmState};

/// Longest request line the VMM reads, in bytes, its `\n` included.
pub const MAX_REQUEST_LEN: usize = 256;

/// Longest line the VMM writes (a response or an event), in bytes, without
/// its `\n`. Clients may treat a longer line as a broken peer.
pub const MAX_SERVER_LINE_LEN: usize = 1024;

/// Longest error message of an `error` response, in bytes; longer ones are
/// cut (at a character boundary).
pub const MAX_ERROR_LEN: usize = 512;

/// Most whitespace-separated words any message has (`ok state=...` has 6);
/// a parser looks at no more than this many plus one.
const MAX_WORDS: usize = 8;

/// The first [`MAX_WORDS`] words of `line`, or `None` if it has more.
fn words(line: &str) -> Option<Vec<&str>> {
    let mut iter = line.split_whitespace();
    let words: Vec<&str> = iter.by_ref().take(MAX_WORDS).collect();
    iter.next().is_none().then_some(words)
}

/// A number written as plain decimal digits (no sign, no spaces).
fn number(what: &'static str, word: &str) -> Result<u64, ParseError> {
    let not_a_number = || ParseError::NotANumber {
        what,
        word: error::quote(word),
    };
    if word.is_empty() || !word.bytes().all(|b| b.is_ascii_digit()) {
        return Err(not_a_number());
    }
    word.parse().map_err(|_| not_a_number())
}

/// The values of `key=value` words, in the order of `keys`: each key
/// exactly once, and no other word.
fn fields<'a, const N: usize>(
    what: &'static str,
    words: &[&'a str],
    keys: [&'static str; N],
) -> Result<[&'a str; N], ParseError> {
    let mut values: [Option<&'a str>; N] = [None; N];
    for word in words {
        let (key, value) = word.split_once('=').ok_or_else(|| ParseError::BadField {
            what,
            word: error::quote(word),
        })?;
        let index = keys
            .iter()
            .position(|k| *k == key)
            .ok_or_else(|| ParseError::BadField {
                what,
                word: error::quote(word),
            })?;
        if values[index].replace(value).is_some() {
            return Err(ParseError::DuplicateField {
                what,
                field: keys[index],
            });
        }
    }
    let mut out = [""; N];
    for (index, value) in values.into_iter().enumerate() {
        out[index] = value.ok_or(ParseError::MissingField {
            what,
            field: keys[index],
        })?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_bounded() {
        assert_eq!(words(" a  b\tc\n"), Some(vec!["a", "b", "c"]));
        assert_eq!(words(&"x ".repeat(MAX_WORDS)).map(|w| w.len()), Some(8));
        assert_eq!(words(&"x ".repeat(MAX_WORDS + 1)), None);
    }

    #[test]
    fn numbers_are_plain_digits() {
        assert_eq!(number("id", "42"), Ok(42));
        for bad in ["", "+1", "-1", "1e3", "0x10", "18446744073709551616"] {
            assert!(number("id", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn fields_need_each_key_once() {
        assert_eq!(fields("t", &["b=2", "a=1"], ["a", "b"]), Ok(["1", "2"]));
        assert_eq!(
            fields("t", &["a=1"], ["a", "b"]),
            Err(ParseError::MissingField {
                what: "t",
                field: "b"
            })
        );
        assert_eq!(
            fields("t", &["a=1", "a=2"], ["a"]),
            Err(ParseError::DuplicateField {
                what: "t",
                field: "a"
            })
        );
        assert!(fields("t", &["c=1"], ["a"]).is_err());
        assert!(fields("t", &["a"], ["a"]).is_err());
    }
}
