//! Event lines, written by the VMM to subscribed connections, and
//! [`ServerLine`], anything the VMM writes.

use std::fmt;
use std::str::FromStr;

use crate::error::{quote, ParseError};
use crate::response::after_keyword;
use crate::{fields, number, words, PowerRequestKind, Response, VmState};

/// One event line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    /// `event state S`: the VM's state changed (or, to a new arbiter: is).
    State(VmState),
    /// `event power-request id=N kind=K`: a guest power request is held
    /// until some connection sends `decide N ...`.
    PowerRequest {
        /// The request's id (increasing for the life of the VMM process).
        id: u64,
        /// What the guest asked for.
        kind: PowerRequestKind,
    },
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::State(state) => write!(f, "event state {state}"),
            Event::PowerRequest { id, kind } => {
                write!(f, "event power-request id={id} kind={kind}")
            }
        }
    }
}

impl FromStr for Event {
    type Err = ParseError;

    /// Parses one event line.
    fn from_str(line: &str) -> Result<Self, ParseError> {
        let words = words(line).ok_or(ParseError::TooManyWords)?;
        match words.as_slice() {
            ["event", "state", state] => Ok(Event::State(state.parse()?)),
            ["event", "state", ..] => Err(ParseError::Usage("event state STATE")),
            ["event", "power-request", rest @ ..] => {
                let [id, kind] = fields("power-request", rest, ["id", "kind"])?;
                Ok(Event::PowerRequest {
                    id: number("request id", id)?,
                    kind: kind.parse()?,
                })
            }
            ["event", name, ..] => Err(ParseError::UnknownWord {
                what: "event",
                word: quote(name),
                expected: &["state", "power-request"],
            }),
            _ => Err(ParseError::UnknownWord {
                what: "event",
                word: quote(line.trim()),
                expected: &["event state ...", "event power-request ..."],
            }),
        }
    }
}

/// Any line the VMM writes: a response or an event. A client that
/// subscribed reads these, since events interleave with its responses.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ServerLine {
    /// `ok ...` or `error ...`.
    Response(Response),
    /// `event ...`.
    Event(Event),
}

impl fmt::Display for ServerLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerLine::Response(r) => r.fmt(f),
            ServerLine::Event(e) => e.fmt(f),
        }
    }
}

impl FromStr for ServerLine {
    type Err = ParseError;

    /// Parses one line from the VMM.
    fn from_str(line: &str) -> Result<Self, ParseError> {
        if after_keyword(line, "event").is_some() {
            return line.parse().map(ServerLine::Event);
        }
        if after_keyword(line, "ok").is_some() || after_keyword(line, "error").is_some() {
            return line.parse().map(ServerLine::Response);
        }
        Err(ParseError::NotAServerLine(quote(line.trim())))
    }
}

impl From<Event> for ServerLine {
    fn from(event: Event) -> Self {
        ServerLine::Event(event)
    }
}

impl From<Response> for ServerLine {
    fn from(response: Response) -> Self {
        ServerLine::Response(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Answer;

    #[test]
    fn events_parse_and_format() {
        let request = Event::PowerRequest {
            id: 12,
            kind: PowerRequestKind::Reboot,
        };
        assert_eq!(request.to_string(), "event power-request id=12 kind=reboot");
        assert_eq!(
            "event power-request kind=reboot id=12\n".parse(),
            Ok(request)
        );
        let state = Event::State(VmState::Suspended);
        assert_eq!(state.to_string(), "event state suspended");
        assert_eq!("event state suspended".parse(), Ok(state));
    }

    #[test]
    fn malformed_events_are_errors() {
        for line in [
            "",
            "event",
            "events state running",
            "event state",
            "event state running now",
            "event state asleep",
            "event power-request id=1",
            "event power-request id=x kind=reboot",
            "event power-request id=1 kind=halt",
            "event power-request id=1 kind=reboot extra",
            "event reboot",
        ] {
            assert!(line.parse::<Event>().is_err(), "{line:?}");
        }
    }

    #[test]
    fn server_lines_are_responses_or_events() {
        assert_eq!(
            "ok decided".parse(),
            Ok(ServerLine::Response(Response::Ok(Answer::Decided)))
        );
        assert_eq!(
            "event state running".parse(),
            Ok(ServerLine::Event(Event::State(VmState::Running)))
        );
        assert_eq!(
            "error VMM is exiting"
                .parse::<ServerLine>()
                .map(|l| l.to_string()),
            Ok("error VMM is exiting".to_string())
        );
        assert!("hello".parse::<ServerLine>().is_err());
        assert!("okay".parse::<ServerLine>().is_err());
    }
}
