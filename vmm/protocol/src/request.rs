//! Request lines, sent by clients to the VMM.

use std::fmt;
use std::str::FromStr;

use crate::error::{quote, ParseError};
use crate::{number, words, Decision};

/// One request line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Request {
    /// `status`: report the VM state.
    Status,
    /// `stop`: tear the VM down; the VMM exits 0.
    Stop,
    /// `pause`: park the vCPUs.
    Pause,
    /// `resume`: resume a paused, suspended or virtually-off VM.
    Resume,
    /// `power-button`: one press of the guest's power button.
    PowerButton,
    /// `decide ID DECISION`: answer held power request `id`.
    Decide {
        /// The id from `event power-request id=N ...`.
        id: u64,
        /// The answer.
        decision: Decision,
    },
    /// `attach`: become the power arbiter and receive events.
    Attach,
    /// `events`: receive events.
    Events,
}

impl Request {
    /// Every request without arguments (all but `decide`).
    pub const PLAIN: [Request; 7] = [
        Request::Status,
        Request::Stop,
        Request::Pause,
        Request::Resume,
        Request::PowerButton,
        Request::Attach,
        Request::Events,
    ];

    /// Whether the request turns its connection into an event subscription
    /// (`attach`, `events`).
    pub fn subscribes(self) -> bool {
        matches!(self, Request::Attach | Request::Events)
    }

    /// The request's first word.
    pub fn name(self) -> &'static str {
        match self {
            Request::Status => "status",
            Request::Stop => "stop",
            Request::Pause => "pause",
            Request::Resume => "resume",
            Request::PowerButton => "power-button",
            Request::Decide { .. } => "decide",
            Request::Attach => "attach",
            Request::Events => "events",
        }
    }
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Request::Decide { id, decision } => write!(f, "decide {id} {decision}"),
            other => f.write_str(other.name()),
        }
    }
}

impl FromStr for Request {
    type Err = ParseError;

    /// Parses one request line (surrounding whitespace and the `\n` are
    /// ignored).
    fn from_str(line: &str) -> Result<Self, ParseError> {
        let unknown = || ParseError::UnknownRequest(quote(line.trim()));
        let words = words(line).ok_or_else(unknown)?;
        let (&first, args) = words.split_first().ok_or(ParseError::Empty)?;
        if first == "decide" {
            let [id, decision] = args else {
                return Err(ParseError::Usage("decide ID DECISION"));
            };
            return Ok(Request::Decide {
                id: number("request id", id)?,
                decision: decision.parse()?,
            });
        }
        match Request::PLAIN.iter().find(|r| r.name() == first) {
            Some(request) if args.is_empty() => Ok(*request),
            Some(request) => Err(ParseError::Usage(request.name())),
            None => Err(unknown()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_format() {
        let spelled: Vec<String> = Request::PLAIN.iter().map(Request::to_string).collect();
        assert_eq!(
            spelled,
            [
                "status",
                "stop",
                "pause",
                "resume",
                "power-button",
                "attach",
                "events"
            ]
        );
        for line in spelled.iter().map(String::as_str).chain(["decide 7 hold"]) {
            let request: Request = line.parse().unwrap();
            assert_eq!(request.to_string(), line);
        }
        assert_eq!(
            " decide  3 restart \n".parse(),
            Ok(Request::Decide {
                id: 3,
                decision: Decision::RestartVm
            })
        );
        assert!(Request::Attach.subscribes() && !Request::Status.subscribes());
    }

    #[test]
    fn bad_requests_say_why() {
        let err = |line: &str| line.parse::<Request>().unwrap_err().to_string();
        assert_eq!(err("reboot now"), "unknown request 'reboot now'");
        assert_eq!(err("decide x allow"), "request id 'x' is not a number");
        assert_eq!(
            err("decide 1 maybe"),
            "unknown decision 'maybe' (allow, restart, hold or refuse)"
        );
        assert_eq!(err("decide 1"), "usage: decide ID DECISION");
        assert_eq!(err("status now"), "usage: status");
        assert_eq!(err("  "), "empty line");
        assert!(err(&"status ".repeat(20)).starts_with("unknown request 'status status"));
    }
}
