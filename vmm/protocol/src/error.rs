//! Why a line is not a protocol message.

/// How much of an offending input an error message quotes, in characters.
const QUOTE_CHARS: usize = 64;

/// A line (or word) that is not a valid protocol message. The message says
/// what was wrong, quoting at most a short, escaped piece of the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Nothing but whitespace.
    #[error("empty line")]
    Empty,
    /// A request line that names no request.
    #[error("unknown request '{0}'")]
    UnknownRequest(String),
    /// A known request with the wrong arguments.
    #[error("usage: {0}")]
    Usage(&'static str),
    /// A word outside its vocabulary (a decision, state, kind, answer or
    /// event name).
    #[error("unknown {what} '{word}' ({})", one_of(.expected))]
    UnknownWord {
        /// Which vocabulary.
        what: &'static str,
        /// The word (quoted, escaped, possibly cut).
        word: String,
        /// The words that would have been understood.
        expected: &'static [&'static str],
    },
    /// A field that must be a decimal number.
    #[error("{what} '{word}' is not a number")]
    NotANumber {
        /// Which field.
        what: &'static str,
        /// The word (quoted, escaped, possibly cut).
        word: String,
    },
    /// A field that must be `true` or `false`.
    #[error("{what} '{word}' is not true or false")]
    NotABool {
        /// Which field.
        what: &'static str,
        /// The word (quoted, escaped, possibly cut).
        word: String,
    },
    /// A word that is not one of the message's `key=value` fields.
    #[error("{what}: unexpected '{word}'")]
    BadField {
        /// Which message.
        what: &'static str,
        /// The word (quoted, escaped, possibly cut).
        word: String,
    },
    /// A `key=value` field given twice.
    #[error("{what}: {field}= given twice")]
    DuplicateField {
        /// Which message.
        what: &'static str,
        /// The key.
        field: &'static str,
    },
    /// A `key=value` field that is missing.
    #[error("{what}: {field}= missing")]
    MissingField {
        /// Which message.
        what: &'static str,
        /// The key.
        field: &'static str,
    },
    /// More words than any message has.
    #[error("too many words")]
    TooManyWords,
    /// A line from the VMM that is neither a response nor an event.
    #[error("not a response or event: '{0}'")]
    NotAServerLine(String),
    /// An exit reason that is not `poweroff`, `reboot`, `stopped` or
    /// `crash (WHY)`.
    #[error("unknown exit reason '{0}' (poweroff, reboot, stopped or crash (WHY))")]
    UnknownExitReason(String),
}

/// `s` escaped for an error message, cut after [`QUOTE_CHARS`] characters.
pub(crate) fn quote(s: &str) -> String {
    let mut chars = s.chars();
    let mut quoted: String = chars
        .by_ref()
        .take(QUOTE_CHARS)
        .flat_map(char::escape_debug)
        .collect();
    if chars.next().is_some() {
        quoted.push_str("...");
    }
    quoted
}

/// `a, b or c`.
fn one_of(words: &[&str]) -> String {
    match words {
        [] => String::new(),
        [one] => (*one).to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_are_escaped_and_short() {
        assert_eq!(quote("a\nb"), "a\\nb");
        let long = quote(&"x".repeat(100));
        assert_eq!(long.len(), QUOTE_CHARS + 3);
        assert!(long.ends_with("..."));
    }

    #[test]
    fn messages_list_the_choices() {
        let e = ParseError::UnknownWord {
            what: "decision",
            word: "maybe".into(),
            expected: &["allow", "restart", "hold", "refuse"],
        };
        assert_eq!(
            e.to_string(),
            "unknown decision 'maybe' (allow, restart, hold or refuse)"
        );
        assert_eq!(one_of(&["a"]), "a");
    }
}
