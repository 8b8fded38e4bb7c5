//! Property tests: every message formats to a line that parses back to the
//! same value, and no parser panics on any string (what does parse
//! re-formats to a line that parses to the same value again).

use std::fmt::Display;
use std::str::FromStr;

use proptest::prelude::*;
use vmm_protocol::{
    Answer, Decision, ErrorMessage, Event, ExitReason, PowerRequestKind, Request, Response,
    ServerLine, Status, VmState, VmmExitCode, MAX_SERVER_LINE_LEN,
};

fn decision() -> impl Strategy<Value = Decision> {
    proptest::sample::select(Decision::ALL)
}

fn state() -> impl Strategy<Value = VmState> {
    proptest::sample::select(VmState::ALL)
}

fn kind() -> impl Strategy<Value = PowerRequestKind> {
    proptest::sample::select(PowerRequestKind::ALL)
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        proptest::sample::select(Request::PLAIN.as_slice()),
        (any::<u64>(), decision()).prop_map(|(id, decision)| Request::Decide { id, decision }),
    ]
}

fn status() -> impl Strategy<Value = Status> {
    (
        state(),
        any::<bool>(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(|(state, arbitrated, pending, boots, arbiters)| Status {
            state,
            arbitrated,
            pending,
            boots,
            arbiters,
        })
}

fn answer() -> impl Strategy<Value = Answer> {
    prop_oneof![
        status().prop_map(Answer::Status),
        proptest::sample::select(Answer::PLAIN.as_slice()),
    ]
}

fn response() -> impl Strategy<Value = Response> {
    prop_oneof![
        answer().prop_map(Response::Ok),
        // Any text: ErrorMessage::new makes it a line.
        any::<String>().prop_map(Response::error),
    ]
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        state().prop_map(Event::State),
        (any::<u64>(), kind()).prop_map(|(id, kind)| Event::PowerRequest { id, kind }),
    ]
}

fn exit_reason() -> impl Strategy<Value = ExitReason> {
    prop_oneof![
        Just(ExitReason::Poweroff),
        Just(ExitReason::Reboot),
        Just(ExitReason::Stopped),
        any::<String>().prop_map(ExitReason::Crash),
    ]
}

/// Strings made of protocol words, separators and junk, so that the
/// never-panics property reaches deep into the parsers.
fn protocol_ish() -> impl Strategy<Value = String> {
    // The crate's own vocabularies, so the list cannot fall behind.
    let mut vocabulary: Vec<String> = ["ok", "error", "event", "state", "power-request", "decide"]
        .into_iter()
        .chain(Decision::WORDS.iter().copied())
        .chain(VmState::WORDS.iter().copied())
        .chain(PowerRequestKind::WORDS.iter().copied())
        .chain(["crash (", ")"])
        .map(str::to_string)
        .collect();
    vocabulary.extend(Request::PLAIN.iter().map(Request::to_string));
    vocabulary.extend(Answer::PLAIN.iter().map(Answer::to_string));
    let word = prop_oneof![
        proptest::sample::select(vocabulary),
        "(id|kind|state|arbitrated|pending|boots|arbiters)=[0-9a-z+-]{0,3}",
        "[0-9]{1,25}",
        any::<String>(),
    ];
    let sep = proptest::sample::select(vec![" ", "  ", "\t", "\n", "", "="]);
    proptest::collection::vec((word, sep), 0..10)
        .prop_map(|parts| parts.into_iter().map(|(w, s)| w + s).collect())
}

/// `value` formats to one line of bounded length that parses back to it.
fn round_trips<T>(value: &T) -> Result<(), TestCaseError>
where
    T: Display + FromStr + PartialEq + std::fmt::Debug,
    T::Err: std::fmt::Debug,
{
    let line = value.to_string();
    prop_assert!(!line.contains('\n'), "{line:?}");
    let parsed = line.parse::<T>().ok();
    prop_assert_eq!(parsed.as_ref(), Some(value), "{:?}", line);
    Ok(())
}

/// Parsing `s` does not panic; if it parses, the value round-trips.
fn parses_stably<T>(s: &str) -> Result<(), TestCaseError>
where
    T: Display + FromStr + PartialEq + std::fmt::Debug,
    T::Err: std::fmt::Debug,
{
    if let Ok(value) = s.parse::<T>() {
        prop_assert_eq!(value.to_string().parse::<T>().ok(), Some(value), "{:?}", s);
    }
    Ok(())
}

fn every_parser(s: &str) -> Result<(), TestCaseError> {
    parses_stably::<Request>(s)?;
    parses_stably::<Response>(s)?;
    parses_stably::<Answer>(s)?;
    parses_stably::<Status>(s)?;
    parses_stably::<Event>(s)?;
    parses_stably::<ServerLine>(s)?;
    parses_stably::<Decision>(s)?;
    parses_stably::<VmState>(s)?;
    parses_stably::<PowerRequestKind>(s)?;
    parses_stably::<ExitReason>(s)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn requests_round_trip(r in request()) {
        round_trips(&r)?;
    }

    #[test]
    fn responses_round_trip(r in response()) {
        round_trips(&r)?;
        round_trips(&ServerLine::Response(r.clone()))?;
        prop_assert!(r.to_string().len() <= MAX_SERVER_LINE_LEN);
    }

    #[test]
    fn events_round_trip(e in event()) {
        round_trips(&e)?;
        round_trips(&ServerLine::Event(e))?;
        prop_assert!(e.to_string().len() <= MAX_SERVER_LINE_LEN);
    }

    #[test]
    fn words_round_trip(d in decision(), s in state(), k in kind()) {
        round_trips(&d)?;
        round_trips(&s)?;
        round_trips(&k)?;
    }

    #[test]
    fn exit_reasons_round_trip(r in exit_reason()) {
        let line = r.to_string();
        prop_assert_eq!(line.parse::<ExitReason>().ok(), Some(r.clone()));
        let code = r.exit_code();
        prop_assert_eq!(VmmExitCode::from_code(i32::from(code.code())), Some(code));
    }

    #[test]
    fn error_messages_are_normalized_once(text in any::<String>()) {
        let once = ErrorMessage::new(&text);
        prop_assert_eq!(ErrorMessage::new(once.as_str()), once);
    }

    #[test]
    fn parsers_never_panic_on_any_string(s in any::<String>()) {
        every_parser(&s)?;
    }

    #[test]
    fn parsers_never_panic_on_protocol_like_strings(s in protocol_ish()) {
        every_parser(&s)?;
    }
}
