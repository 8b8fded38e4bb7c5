//! `Input::ShutdownRequest` (VHAL SHUTDOWN_REQUEST) through the public API.

use system_manager::{Arbiter, Input, Millis, Output, Policy, SystemState, WakeReason};

const POLICY: &str = "[system]\nwake_hold_ms = 30000\nshutdown_deadline_ms = 60000\n\n[[guest]]\nname = \"android\"\nrole = \"android\"\n\n[[guest]]\nname = \"cluster\"\nrole = \"cluster\"\n";

fn arbiter() -> Arbiter {
    match Policy::from_toml_str(POLICY) {
        Ok(p) => Arbiter::new(p),
        Err(e) => panic!("{e}"),
    }
}

fn req(outputs: &[Output]) -> Vec<String> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::ApPowerStateReq { guest, state, .. } => Some(format!("{guest}: {state}")),
            _ => None,
        })
        .collect()
}

fn up(a: &mut Arbiter, t: u64) {
    a.handle(
        Millis(t),
        Input::VmStarted {
            guest: "android".into(),
        },
    );
    a.handle(
        Millis(t),
        Input::VmStarted {
            guest: "cluster".into(),
        },
    );
}

fn has(outputs: &[Output], kind: &str, needle: &str) -> bool {
    outputs.iter().any(|o| match o {
        Output::Note { reason } if kind == "note" => reason.contains(needle),
        Output::Rejected { reason } if kind == "rejected" => reason.contains(needle),
        _ => false,
    })
}

#[test]
fn during_a_wake_hold_the_request_begins_the_shutdown() {
    let mut a = arbiter();
    a.handle(
        Millis(0),
        Input::WakeRequest {
            reason: WakeReason::SystemRemoteAccess,
        },
    );
    up(&mut a, 10);
    assert_eq!(a.system(), &SystemState::On);
    let out = a.handle(
        Millis(1000),
        Input::ShutdownRequest {
            guest: "android".into(),
            param: 3,
        },
    );
    assert!(
        matches!(a.system(), SystemState::ShutdownPrepare { .. }),
        "{:?}",
        a.system()
    );
    assert_eq!(req(&out), ["android: SHUTDOWN_PREPARE(SHUTDOWN_ONLY)"]);
    assert!(has(&out, "note", "the wake hold ends"), "{out:?}");
}

#[test]
fn with_the_ignition_on_the_head_unit_stays_on() {
    let mut a = arbiter();
    a.handle(Millis(0), Input::IgnitionOn);
    up(&mut a, 10);
    let out = a.handle(
        Millis(1000),
        Input::ShutdownRequest {
            guest: "android".into(),
            param: 2,
        },
    );
    assert_eq!(a.system(), &SystemState::On);
    assert!(req(&out).is_empty());
    assert!(has(&out, "note", "the ignition is on"), "{out:?}");
    // During a shutdown it changes nothing either.
    a.handle(Millis(2000), Input::IgnitionOff);
    let out = a.handle(
        Millis(3000),
        Input::ShutdownRequest {
            guest: "android".into(),
            param: 1,
        },
    );
    assert!(has(&out, "note", "already"), "{out:?}");
}

#[test]
fn hostile_requests_are_rejected() {
    let mut a = arbiter();
    a.handle(Millis(0), Input::IgnitionOn);
    let before = *a.system();
    for (guest, param, needle) in [
        ("nobody", 1, "unknown guest"),
        ("cluster", 1, "only the android guest"),
        ("android", 0, "unknown SHUTDOWN_REQUEST parameter"),
        ("android", 1, "while its VM is"),
    ] {
        if needle != "while its VM is" {
            up(&mut a, 5);
        }
        let out = a.handle(
            Millis(10),
            Input::ShutdownRequest {
                guest: guest.into(),
                param,
            },
        );
        assert!(
            has(&out, "rejected", needle) || needle == "while its VM is",
            "{guest} {param}: {out:?}"
        );
    }
    assert_eq!(a.system(), &before);
}

#[test]
fn the_input_round_trips_through_the_log_format() {
    let i = Input::ShutdownRequest {
        guest: "android".into(),
        param: 3,
    };
    let s = serde_json::to_string(&i).expect("json");
    assert_eq!(
        s,
        r#"{"type":"shutdown_request","guest":"android","param":3}"#
    );
    assert_eq!(serde_json::from_str::<Input>(&s).ok(), Some(i));
}
