//! What the integration tests share.

use system_manager::{Arbiter, LogRecord, LoggedInput, Output, Policy};

/// The decision log `log` of arbiter `a` (run under `policy`) survives
/// JSON lines, verifies to the same arbiter, and replays to it with the
/// same outputs.
pub fn check_replay(policy: &Policy, log: &[LogRecord], a: &Arbiter) {
    let text: String = log
        .iter()
        .map(|r| match r.to_json_line() {
            Ok(l) => l + "\n",
            Err(e) => panic!("{e}"),
        })
        .collect();
    let parsed = match LogRecord::parse_log(&text) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(parsed, log);
    match Arbiter::verify(policy.clone(), &parsed) {
        Ok(v) => assert_eq!(&v, a),
        Err(e) => panic!("{e}"),
    }
    let inputs: Vec<LoggedInput> = parsed.iter().map(LogRecord::logged_input).collect();
    let (r, outputs) = Arbiter::replay(policy.clone(), &inputs);
    assert_eq!(&r, a);
    let logged: Vec<Output> = log.iter().flat_map(|r| r.outputs.clone()).collect();
    assert_eq!(outputs, logged);
}
