//! Response lines, one per request: `ok ...` or `error MESSAGE`.

use std::fmt;
use std::str::FromStr;

use crate::error::{quote, ParseError};
use crate::{fields, number, words, VmState, MAX_ERROR_LEN};

/// The VMM's answer to one request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Response {
    /// `ok ...`: the request was carried out.
    Ok(Answer),
    /// `error MESSAGE`: it was not.
    Error(ErrorMessage),
}

impl Response {
    /// An `error` response saying `message`.
    pub fn error(message: impl fmt::Display) -> Self {
        Response::Error(ErrorMessage::new(message))
    }
}

/// What follows `ok`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Answer {
    /// `ok state=...` (to `status`).
    Status(Status),
    /// `ok stopping` (to `stop`).
    Stopping,
    /// `ok paused` (to `pause`).
    Paused,
    /// `ok resumed` (to `resume`).
    Resumed,
    /// `ok pressed` (to `power-button`).
    Pressed,
    /// `ok decided` (to `decide`).
    Decided,
    /// `ok attached` (to `attach`; events follow).
    Attached,
    /// `ok subscribed` (to `events`; events follow).
    Subscribed,
}

impl Answer {
    /// Every answer that is one word (all but a status).
    pub const PLAIN: [Answer; 7] = [
        Answer::Stopping,
        Answer::Paused,
        Answer::Resumed,
        Answer::Pressed,
        Answer::Decided,
        Answer::Attached,
        Answer::Subscribed,
    ];

    /// The answer's word; `None` for a status (which is `key=value` words).
    pub fn word(self) -> Option<&'static str> {
        Some(match self {
            Answer::Status(_) => return None,
            Answer::Stopping => "stopping",
            Answer::Paused => "paused",
            Answer::Resumed => "resumed",
            Answer::Pressed => "pressed",
            Answer::Decided => "decided",
            Answer::Attached => "attached",
            Answer::Subscribed => "subscribed",
        })
    }
}

/// The answer to `status`:
/// `state=S arbitrated=B pending=N boots=G arbiters=A`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Status {
    /// The VM's state.
    pub state: VmState,
    /// Whether guest power requests are held for an arbiter.
    pub arbitrated: bool,
    /// Held requests waiting for a decision.
    pub pending: u64,
    /// How many times the VM has booted in this VMM process.
    pub boots: u64,
    /// Attached arbiter connections.
    pub arbiters: u64,
}

/// The text of an `error` response: one line, no control characters, no
/// surrounding whitespace, at most [`MAX_ERROR_LEN`] bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ErrorMessage(String);

impl ErrorMessage {
    /// `message` made fit for a line: control characters become spaces,
    /// surrounding whitespace goes, and it is cut to [`MAX_ERROR_LEN`] bytes.
    pub fn new(message: impl fmt::Display) -> Self {
        let text: String = message
            .to_string()
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let mut text = text.trim();
        if text.len() > MAX_ERROR_LEN {
            let mut end = MAX_ERROR_LEN;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text = text[..end].trim_end();
        }
        ErrorMessage(text.to_string())
    }

    /// The message.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ErrorMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "state={} arbitrated={} pending={} boots={} arbiters={}",
            self.state, self.arbitrated, self.pending, self.boots, self.arbiters
        )
    }
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Answer::Status(status) => status.fmt(f),
            other => f.write_str(other.word().unwrap_or_default()),
        }
    }
}

impl fmt::Display for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Response::Ok(answer) => write!(f, "ok {answer}"),
            Response::Error(message) if message.0.is_empty() => f.write_str("error"),
            Response::Error(message) => write!(f, "error {message}"),
        }
    }
}

fn bool_field(what: &'static str, word: &str) -> Result<bool, ParseError> {
    match word {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(ParseError::NotABool {
            what,
            word: quote(word),
        }),
    }
}

impl FromStr for Status {
    type Err = ParseError;

    /// Parses the `key=value` words of a status answer, in any order.
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let words = words(s).ok_or(ParseError::TooManyWords)?;
        let keys = ["state", "arbitrated", "pending", "boots", "arbiters"];
        let [state, arbitrated, pending, boots, arbiters] = fields("status", &words, keys)?;
        Ok(Status {
            state: state.parse()?,
            arbitrated: bool_field("arbitrated", arbitrated)?,
            pending: number("pending", pending)?,
            boots: number("boots", boots)?,
            arbiters: number("arbiters", arbiters)?,
        })
    }
}

impl FromStr for Answer {
    type Err = ParseError;

    /// Parses what follows `ok`.
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let first = s.split_whitespace().next().unwrap_or("");
        if first.contains('=') {
            return s.parse().map(Answer::Status);
        }
        let words = words(s).ok_or(ParseError::TooManyWords)?;
        match (
            Answer::PLAIN.iter().find(|a| a.word() == Some(first)),
            words.len(),
        ) {
            (Some(answer), 1) => Ok(*answer),
            _ => Err(ParseError::UnknownWord {
                what: "answer",
                word: quote(s.trim()),
                expected: &[
                    "state=...",
                    "stopping",
                    "paused",
                    "resumed",
                    "pressed",
                    "decided",
                    "attached",
                    "subscribed",
                ],
            }),
        }
    }
}

/// What follows `keyword` at the start of `line` (after surrounding
/// whitespace), if the line's first word is `keyword`.
pub(crate) fn after_keyword<'a>(line: &'a str, keyword: &str) -> Option<&'a str> {
    let rest = line.trim_start().strip_prefix(keyword)?;
    (rest.is_empty() || rest.starts_with(char::is_whitespace)).then_some(rest)
}

impl FromStr for Response {
    type Err = ParseError;

    /// Parses one response line (`ok ...` or `error ...`).
    fn from_str(line: &str) -> Result<Self, ParseError> {
        if let Some(rest) = after_keyword(line, "ok") {
            return rest.parse().map(Response::Ok);
        }
        if let Some(rest) = after_keyword(line, "error") {
            return Ok(Response::error(rest));
        }
        Err(ParseError::UnknownWord {
            what: "response",
            word: quote(line.trim()),
            expected: &["ok ...", "error ..."],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_parse_and_format() {
        let status = Response::Ok(Answer::Status(Status {
            state: VmState::VirtuallyOff,
            arbitrated: true,
            pending: 2,
            boots: 3,
            arbiters: 1,
        }));
        let line = "ok state=virtually-off arbitrated=true pending=2 boots=3 arbiters=1";
        assert_eq!(status.to_string(), line);
        assert_eq!(line.parse(), Ok(status.clone()));
        // Fields in any order.
        assert_eq!(
            "ok boots=3 arbiters=1 pending=2 arbitrated=true state=virtually-off".parse(),
            Ok(status)
        );
        for answer in Answer::PLAIN {
            let word = answer.word().unwrap();
            assert_eq!(format!("ok {word}").parse(), Ok(Response::Ok(answer)));
        }
        let e = Response::error("no pending power request with id 4");
        assert_eq!(e.to_string(), "error no pending power request with id 4");
        assert_eq!("error  no pending power request with id 4\n".parse(), Ok(e));
        assert_eq!("error".parse(), Ok(Response::error("")));
        assert_eq!(Response::error("").to_string(), "error");
    }

    #[test]
    fn malformed_responses_are_errors() {
        for line in [
            "",
            "okay",
            "errors",
            "ok",
            "ok paused now",
            "ok state=running",
            "ok state=running arbitrated=yes pending=0 boots=1 arbiters=0",
            "ok state=running arbitrated=true pending=0 boots=1 arbiters=0 x=1",
            "event state running",
        ] {
            assert!(line.parse::<Response>().is_err(), "{line:?}");
        }
    }

    #[test]
    fn error_messages_are_one_bounded_line() {
        let m = ErrorMessage::new("a\nb\r\n");
        assert_eq!(m.as_str(), "a b");
        let long = ErrorMessage::new("é".repeat(MAX_ERROR_LEN));
        assert!(long.as_str().len() <= MAX_ERROR_LEN);
        assert_eq!(ErrorMessage::new(long.as_str()), long);
    }
}
