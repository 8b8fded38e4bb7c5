//! Properties over random input sequences with random time steps.
//!
//! The driver plays a well-behaved shell: between two random inputs it sends
//! a `Tick` at every announced timer that falls before the next input ("Ticks
//! keep coming"). The inputs themselves are anything, including hostile ones
//! (unknown guests, undefined VHAL values, requests from VMs that are off).
//!
//! Checked on every run:
//! 1. cluster safety: while the vehicle is in use (and a cluster is
//!    configured) there is no `SystemPowerOff`/`SystemSuspend`, no hard stop
//!    or pause of a cluster, no `Allow` of a cluster's power request; and
//!    while the system is up and the vehicle in use, the cluster is live (or
//!    being restarted);
//! 2. every `SHUTDOWN_PREPARE` ends (FINISHED, CANCEL_SHUTDOWN, ON after a
//!    cancellation, a decision on the guest's request, a hard stop, or the VM
//!    going away) no later than the deadline of the shutdown it was sent in;
//! 3. every decision answers the record's own `GuestPowerRequest` (same guest
//!    and id), every request of a known guest gets exactly one, an unknown
//!    guest gets none;
//! 4. the JSON-lines log verifies and replays to an equal arbiter with the
//!    same outputs;
//!
//! 5. every shutdown can end: after every step of a shutdown, each guest
//!    that is running, starting or restarting has a release time, but a
//!    cluster while the vehicle is in use (the one guest that may outlive
//!    the deadline);
//! 6. no report extends a shutdown: an Android guest that only reports
//!    (any value, any parameter, at any rate, repeating the answers that
//!    re-arm its watchdog), under any `postpone_watchdog_ms`, never moves
//!    the deadline, never holds its watchdog past the deadline minus
//!    `final_grace_ms` while it may postpone, and the shutdown ends by its
//!    deadline when the VMMs confirm the stops;
//!
//! plus housekeeping: every input but `Tick` leaves a log entry, timers are
//! always in the future, no deadline is overdue after a step, and the
//! handshake's deadlines never exceed the shutdown's.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use proptest::prelude::*;
use system_manager::testing::guest_tables;
use system_manager::{
    ApPowerStateReq, Arbiter, Decision, GuestState, Input, LogRecord, Millis, Output, Policy,
    PowerRequestKind, Role, SystemState, VmExitReason, WakeReason,
};

mod common;

const BASE: &str = r#"
[system]
shutdown_deadline_ms = 30000
garage_mode_max_ms = 40000
final_grace_ms = 5000
postpone_watchdog_ms = 3000
wake_hold_ms = 10000
vm_exit_grace_ms = 1000
"#;

/// The fleet: an Android guest, a cluster and one other guest.
static GUESTS: LazyLock<String> = LazyLock::new(|| {
    guest_tables(&[
        ("android", "android", None),
        ("cluster", "cluster", Some(8_000)),
        ("other", "other", Some(6_000)),
    ])
});

/// Three policies: power-off kind, suspend kind, and one without a cluster.
fn policy(which: u8) -> Policy {
    let text = match which % 3 {
        0 => format!("{BASE}{}", *GUESTS),
        1 => format!("{BASE}shutdown_kind = \"suspend\"\n{}", *GUESTS),
        _ => format!(
            "{BASE}{}",
            GUESTS.replace(
                "name = \"cluster\"\nrole = \"cluster\"",
                "name = \"cluster\"\nrole = \"other\""
            )
        ),
    };
    match Policy::from_toml_str(&text) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

fn guest() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just("android"),
        2 => Just("cluster"),
        2 => Just("other"),
        1 => Just("ghost"),
    ]
    .prop_map(String::from)
}

fn input() -> impl Strategy<Value = Input> {
    let kind = prop_oneof![
        Just(PowerRequestKind::Poweroff),
        Just(PowerRequestKind::Reboot),
        Just(PowerRequestKind::Suspend),
    ];
    let wake = prop_oneof![
        Just(WakeReason::UserPowerOn),
        Just(WakeReason::SystemUserDetection),
        Just(WakeReason::SystemRemoteAccess),
        Just(WakeReason::SystemEnterGarageMode),
    ];
    let exit = prop_oneof![
        Just(VmExitReason::Poweroff),
        Just(VmExitReason::Reset),
        Just(VmExitReason::Crash),
        Just(VmExitReason::Killed),
    ];
    // Mostly valid report values, sometimes garbage.
    let value = prop_oneof![8 => 1i32..=10, 1 => any::<i32>()];
    let param = prop_oneof![4 => 0i32..=6000, 1 => any::<i32>()];
    prop_oneof![
        4 => Just(Input::Tick),
        2 => Just(Input::IgnitionOn),
        2 => Just(Input::IgnitionOff),
        2 => any::<bool>().prop_map(|in_use| Input::VehicleInUse { in_use }),
        1 => wake.prop_map(|reason| Input::WakeRequest { reason }),
        3 => (guest(), 0u64..50, kind).prop_map(|(guest, request_id, kind)| {
            Input::GuestPowerRequest { guest, request_id, kind }
        }),
        6 => (guest(), value, param).prop_map(|(guest, value, param)| {
            Input::ApPowerStateReport { guest, value, param }
        }),
        3 => guest().prop_map(|guest| Input::VmStarted { guest }),
        1 => (guest(), exit).prop_map(|(guest, reason)| Input::VmExited { guest, reason }),
        1 => guest().prop_map(|guest| Input::VmLost { guest }),
    ]
}

fn steps() -> impl Strategy<Value = Vec<(u64, Input)>> {
    let dt = prop_oneof![6 => 0u64..2_000, 2 => 0u64..10_000, 1 => 0u64..60_000];
    prop::collection::vec((dt, input()), 1..150)
}

/// Runs the inputs through a shell that ticks at every timer, then keeps
/// ticking until nothing is pending. Returns the log and the arbiter.
fn drive(policy: Policy, steps: &[(u64, Input)]) -> (Vec<LogRecord>, Arbiter) {
    let mut a = Arbiter::new(policy);
    let mut log = Vec::new();
    let mut t = 0u64;
    let tick_until = |a: &mut Arbiter, log: &mut Vec<LogRecord>, limit: Option<u64>| {
        for _ in 0..1000 {
            match a.next_timer() {
                Some(at) if limit.is_none_or(|l| at.as_millis() <= l) => {
                    log.push(a.step(at, Input::Tick));
                    assert!(
                        a.next_timer().is_none_or(|n| n > at),
                        "a tick at {at} did not consume its timer: {:?}",
                        log.last()
                    );
                }
                _ => return,
            }
        }
        panic!("timers never ran out");
    };
    for (dt, input) in steps {
        t = t.saturating_add(*dt);
        tick_until(&mut a, &mut log, Some(t));
        log.push(a.step(Millis(t), input.clone()));
    }
    tick_until(&mut a, &mut log, None);
    (log, a)
}

fn check_cluster_safety(policy: &Policy, log: &[LogRecord], a: &Arbiter) {
    if !policy.has_cluster() {
        return;
    }
    let clusters: Vec<&str> = policy
        .guests()
        .iter()
        .filter(|g| g.role == Role::Cluster)
        .map(|g| g.name.as_str())
        .collect();
    let mut in_use = false;
    let mut replay = Arbiter::new(policy.clone());
    for rec in log {
        if let Input::VehicleInUse { in_use: u } = rec.input {
            in_use = u;
        }
        // A cluster already stopping (its power-off was allowed before the
        // vehicle was in use again) may be killed when its VMM does not
        // exit: that stops nothing that runs, and it is what lets it start
        // again.
        let stopping = |a: &Arbiter, g: &str| {
            a.guest(g)
                .is_some_and(|g| matches!(g.state, GuestState::Stopping { .. }))
        };
        let was_stopping: Vec<&str> = clusters
            .iter()
            .copied()
            .filter(|c| stopping(&replay, c))
            .collect();
        replay.handle(rec.at, rec.input.clone());
        if !in_use {
            continue;
        }
        for o in &rec.outputs {
            let bad = match o {
                Output::SystemPowerOff { .. } | Output::SystemSuspend { .. } => true,
                Output::HardStopVm { guest, .. } if was_stopping.contains(&guest.as_str()) => false,
                Output::HardStopVm { guest, .. } | Output::PauseVm { guest, .. } => {
                    clusters.contains(&guest.as_str())
                }
                Output::Decide {
                    guest, decision, ..
                } => *decision == Decision::Allow && clusters.contains(&guest.as_str()),
                _ => false,
            };
            assert!(!bad, "vehicle in use, yet {o} in record {rec:?}");
        }
        if !replay.system().is_down() {
            for c in &clusters {
                let s = replay.guest(c).map(|g| g.state);
                let up = s.is_some_and(|s| {
                    s.is_live() || matches!(s, GuestState::Stopping { restart: true, .. })
                });
                assert!(
                    up,
                    "vehicle in use and system up, yet cluster {c} is {s:?} after {rec:?}"
                );
            }
        }
    }
    assert_eq!(a.vehicle_in_use(), in_use);
}

fn check_prepares_end_by_deadline(log: &[LogRecord]) {
    let mut open: BTreeMap<String, Millis> = BTreeMap::new();
    for rec in log {
        for (g, d) in &open {
            assert!(
                rec.at <= *d,
                "SHUTDOWN_PREPARE to {g} still open at {} past its deadline {d}: {rec:?}",
                rec.at
            );
        }
        if let Input::VmExited { guest, .. } | Input::VmLost { guest } = &rec.input {
            open.remove(guest);
        }
        for o in &rec.outputs {
            match o {
                Output::ApPowerStateReq {
                    guest,
                    state: ApPowerStateReq::ShutdownPrepare(_),
                    ..
                } => {
                    let d = rec.system.shutdown_deadline().unwrap_or(rec.at);
                    open.entry(guest.clone()).or_insert(d);
                }
                Output::ApPowerStateReq {
                    guest,
                    state:
                        ApPowerStateReq::Finished
                        | ApPowerStateReq::CancelShutdown
                        | ApPowerStateReq::On,
                    ..
                }
                | Output::HardStopVm { guest, .. }
                | Output::Decide { guest, .. } => {
                    open.remove(guest);
                }
                _ => {}
            }
        }
    }
    assert!(open.is_empty(), "prepares never ended: {open:?}");
}

/// During a shutdown nothing outside the handshake may run without a
/// release time (else the shutdown never ends), but a cluster while the
/// vehicle is in use.
fn check_shutdowns_can_end(policy: &Policy, log: &[LogRecord]) {
    let mut replay = Arbiter::new(policy.clone());
    for rec in log {
        replay.handle(rec.at, rec.input.clone());
        if replay.system().shutdown_deadline().is_none() {
            continue;
        }
        for g in replay.guests() {
            let unbounded = matches!(
                g.state,
                GuestState::Running | GuestState::Starting | GuestState::Restarting
            ) && g.release_at.is_none();
            let needed_cluster = g.role == Role::Cluster && replay.vehicle_in_use();
            assert!(
                !unbounded || needed_cluster,
                "{} is {} during {} with no release time, after {rec:?}",
                g.name,
                g.state,
                replay.system()
            );
        }
    }
}

fn check_decisions_answer_requests(policy: &Policy, log: &[LogRecord]) {
    for rec in log {
        let decisions: Vec<&Output> = rec
            .outputs
            .iter()
            .filter(|o| matches!(o, Output::Decide { .. }))
            .collect();
        match &rec.input {
            Input::GuestPowerRequest {
                guest, request_id, ..
            } => {
                if policy.guest(guest).is_some() {
                    assert_eq!(decisions.len(), 1, "one decision per request: {rec:?}");
                    assert!(
                        matches!(decisions[0], Output::Decide { guest: g, request_id: id, .. }
                            if g == guest && id == request_id),
                        "decision answers another request: {rec:?}"
                    );
                } else {
                    assert!(
                        decisions.is_empty(),
                        "decision for an unknown guest: {rec:?}"
                    );
                    assert!(rec
                        .outputs
                        .iter()
                        .any(|o| matches!(o, Output::Rejected { .. })));
                }
            }
            _ => assert!(decisions.is_empty(), "decision without a request: {rec:?}"),
        }
    }
}

fn check_housekeeping(policy: &Policy, log: &[LogRecord]) {
    let mut replay = Arbiter::new(policy.clone());
    for rec in log {
        replay.handle(rec.at, rec.input.clone());
        let now = replay.now();
        if rec.input != Input::Tick {
            assert!(!rec.outputs.is_empty(), "input left no trace: {rec:?}");
        }
        for o in &rec.outputs {
            if let Output::SetTimer { at, .. } = o {
                assert!(*at > now, "timer not in the future: {rec:?}");
            }
            assert!(!o.reason().is_empty(), "no reason: {o:?}");
        }
        let d = replay.system().shutdown_deadline();
        for g in replay.guests() {
            match g.state {
                GuestState::Preparing { watchdog, .. } => {
                    assert!(watchdog > now, "overdue watchdog: {g:?}");
                    assert!(
                        d.is_some_and(|d| watchdog <= d),
                        "watchdog past deadline: {g:?}"
                    );
                }
                GuestState::ShutdownStarted {
                    deadline: Some(t), ..
                } => {
                    assert!(t > now, "overdue final deadline: {g:?}");
                    if let Some(d) = d {
                        assert!(t <= d, "final deadline past the shutdown's: {g:?}");
                    }
                }
                // `None`: the kill is under way, no deadline left.
                GuestState::Stopping { grace, .. } => {
                    assert!(grace.is_none_or(|t| t > now), "overdue: {g:?}")
                }
                GuestState::Running | GuestState::Starting | GuestState::Restarting
                    if d.is_some() =>
                {
                    assert!(
                        g.release_at.is_none_or(|r| r > now),
                        "overdue release: {g:?}"
                    );
                }
                _ => {}
            }
        }
        // The handshake is only running during a shutdown.
        if matches!(replay.system(), SystemState::On) || replay.system().is_down() {
            assert!(
                !replay
                    .guests()
                    .iter()
                    .any(|g| matches!(g.state, GuestState::Preparing { .. })),
                "SHUTDOWN_PREPARE outside a shutdown: {rec:?}"
            );
        }
    }
}

/// Policy `which` with `postpone_watchdog_ms` set to `watchdog_ms`.
fn policy_with_watchdog(which: u8, watchdog_ms: u64) -> Policy {
    let text = format!("{BASE}{}", *GUESTS).replace(
        "postpone_watchdog_ms = 3000",
        &format!("postpone_watchdog_ms = {watchdog_ms}"),
    );
    let text = match which % 3 {
        0 => text,
        1 => text.replace("[system]\n", "[system]\nshutdown_kind = \"suspend\"\n"),
        _ => text.replace(
            "name = \"cluster\"\nrole = \"cluster\"",
            "name = \"cluster\"\nrole = \"other\"",
        ),
    };
    match Policy::from_toml_str(&text) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

/// The Android guest's reports during a shutdown: mostly the VHAL's values
/// (the answers that re-arm the watchdog among them), any parameter, at any
/// rate, each `(ms since the previous one, value, param)`.
fn android_reports() -> impl Strategy<Value = Vec<(u64, i32, i32)>> {
    let value = prop_oneof![
        6 => prop_oneof![Just(1i32), Just(3), Just(7), Just(8), Just(10)],
        3 => 1i32..=10,
        1 => any::<i32>(),
    ];
    let param = prop_oneof![4 => 0i32..=6000, 1 => any::<i32>()];
    let dt = prop_oneof![6 => 0u64..1_500, 2 => 0u64..6_000, 1 => 0u64..20_000];
    prop::collection::vec((dt, value, param), 1..120)
}

/// Steps `input` at `t` as a shell whose VMMs confirm every hard stop at
/// once, and checks that nothing of the handshake outlasts `deadline`
/// (`grace` is `final_grace_ms`).
fn step_checked(
    a: &mut Arbiter,
    log: &mut Vec<LogRecord>,
    t: Millis,
    input: Input,
    deadline: Millis,
    grace: u64,
) {
    let mut queue = vec![input];
    while let Some(input) = queue.pop() {
        let was_down = a.system().is_down();
        let rec = a.step(t, input);
        for o in &rec.outputs {
            if let Output::HardStopVm { guest, .. } = o {
                queue.push(Input::VmExited {
                    guest: guest.clone(),
                    reason: VmExitReason::Killed,
                });
            }
        }
        let system = *a.system();
        assert!(
            system.is_down() || system.shutdown_deadline() == Some(deadline),
            "the shutdown changed to {system}: {rec:?}"
        );
        if system.is_down() && !was_down {
            assert!(
                t <= deadline,
                "the system went down at {t}, after {deadline}"
            );
        }
        let state = a.guest("android").map(|g| g.state);
        match state {
            Some(GuestState::Preparing {
                param, watchdog, ..
            }) => {
                let limit = if param.can_postpone() {
                    deadline.before(grace)
                } else {
                    deadline
                };
                assert!(
                    watchdog <= limit,
                    "watchdog {watchdog} past {limit} under {param}: {rec:?}"
                );
            }
            Some(GuestState::ShutdownStarted {
                deadline: Some(d), ..
            }) => assert!(d <= deadline, "final deadline {d} past {deadline}: {rec:?}"),
            _ => {}
        }
        if t >= deadline {
            assert!(
                !state.is_some_and(|s| s.is_live()),
                "android is {state:?} at {t}, past the deadline {deadline}: {rec:?}"
            );
        }
        log.push(rec);
    }
}

/// Boots the fleet, switches the ignition off at 1 s and then sends only
/// `reports` from Android, ticking every timer. Returns the log and the
/// arbiter; the checks are [`step_checked`]'s and that the system is down.
fn drive_android_reports(policy: Policy, reports: &[(u64, i32, i32)]) -> (Vec<LogRecord>, Arbiter) {
    let grace = policy.system().final_grace_ms;
    let guests: Vec<String> = policy.guests().iter().map(|g| g.name.clone()).collect();
    let mut a = Arbiter::new(policy);
    let mut log = Vec::new();
    log.push(a.step(Millis(0), Input::IgnitionOn));
    for guest in guests {
        log.push(a.step(Millis(0), Input::VmStarted { guest }));
    }
    let report = |value, param| Input::ApPowerStateReport {
        guest: "android".to_string(),
        value,
        param,
    };
    log.push(a.step(Millis(0), report(1, 0)));
    log.push(a.step(Millis(1_000), Input::IgnitionOff));
    let Some(deadline) = a.system().shutdown_deadline() else {
        panic!("no shutdown after the ignition off: {:?}", log.last());
    };
    let mut t = 1_000u64;
    let tick_until = |a: &mut Arbiter, log: &mut Vec<LogRecord>, limit: Option<u64>| {
        for _ in 0..1000 {
            match a.next_timer() {
                Some(at) if limit.is_none_or(|l| at.as_millis() <= l) => {
                    step_checked(a, log, at, Input::Tick, deadline, grace);
                }
                _ => return,
            }
        }
        panic!("timers never ran out");
    };
    for (dt, value, param) in reports {
        t = t.saturating_add(*dt);
        tick_until(&mut a, &mut log, Some(t));
        step_checked(
            &mut a,
            &mut log,
            Millis(t),
            report(*value, *param),
            deadline,
            grace,
        );
    }
    tick_until(&mut a, &mut log, None);
    assert!(
        a.system().is_down(),
        "the shutdown did not end: {} after {:?}",
        a.system(),
        log.last()
    );
    (log, a)
}

proptest! {
    // PROPTEST_CASES overrides the default for a longer search.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(384),
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbiter_properties(which in 0u8..3, steps in steps()) {
        let p = policy(which);
        let (log, a) = drive(p.clone(), &steps);
        check_cluster_safety(&p, &log, &a);
        check_prepares_end_by_deadline(&log);
        check_shutdowns_can_end(&p, &log);
        check_decisions_answer_requests(&p, &log);
        common::check_replay(&p, &log, &a);
        check_housekeeping(&p, &log);
    }

    /// Property 6: reports alone never extend a shutdown.
    #[test]
    fn reports_cannot_extend_a_shutdown(
        which in 0u8..3,
        watchdog_ms in prop_oneof![Just(3_000u64), 1_000u64..=40_000],
        reports in android_reports(),
    ) {
        let p = policy_with_watchdog(which, watchdog_ms);
        let (log, a) = drive_android_reports(p.clone(), &reports);
        check_prepares_end_by_deadline(&log);
        common::check_replay(&p, &log, &a);
    }

    /// The same inputs at the same times give the same log, whatever
    /// happened before in the process (no hidden state, no clock).
    #[test]
    fn handling_is_deterministic(which in 0u8..3, steps in steps()) {
        let (a, _) = drive(policy(which), &steps);
        let (b, _) = drive(policy(which), &steps);
        prop_assert_eq!(a, b);
    }
}

/// A sanity check that the random runs reach the interesting states at all
/// (otherwise the properties above would hold vacuously).
#[test]
fn random_runs_reach_the_interesting_decisions() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, TestRunner};
    let mut runner = TestRunner::new(Config::default());
    let mut seen = BTreeMap::<&str, usize>::new();
    let strategy = (0u8..3, steps());
    for _ in 0..300 {
        let (which, steps) = match strategy.new_tree(&mut runner) {
            Ok(t) => t.current(),
            Err(e) => panic!("{e}"),
        };
        let (log, _) = drive(policy(which), &steps);
        for o in log.iter().flat_map(|r| &r.outputs) {
            let key = match o {
                Output::Decide { decision, .. } => decision.word(),
                Output::ApPowerStateReq {
                    state: ApPowerStateReq::ShutdownPrepare(p),
                    ..
                } if !p.can_postpone() => "escalation",
                Output::ApPowerStateReq {
                    state: ApPowerStateReq::CancelShutdown,
                    ..
                } => "cancel",
                Output::ApPowerStateReq {
                    state: ApPowerStateReq::Finished,
                    ..
                } => "finished",
                Output::HardStopVm { .. } => "hard stop",
                Output::PauseVm { .. } => "pause",
                Output::ResumeVm { .. } => "resume",
                Output::SystemPowerOff { .. } => "power off",
                Output::SystemSuspend { .. } => "suspend",
                _ => continue,
            };
            *seen.entry(key).or_default() += 1;
        }
    }
    for key in Decision::WORDS.iter().copied().chain([
        "escalation",
        "cancel",
        "finished",
        "hard stop",
        "pause",
        "resume",
        "power off",
        "suspend",
    ]) {
        assert!(
            seen.get(key).copied().unwrap_or(0) > 0,
            "never saw {key}: {seen:?}"
        );
    }
}
