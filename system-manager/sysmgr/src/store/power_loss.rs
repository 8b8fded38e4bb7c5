//! The power-loss test (issue 18's acceptance) and the compaction's
//! crash-between-steps test, on the crash-simulating disk (`super::sim`).
//!
//! A simulated daemon drives the real decision log ([`DecisionLog`]:
//! writes, the commit plan of [`LogSync`], compactions) and the real
//! recovery ([`load`], [`Loaded::restore`]) through a long, seeded,
//! realistic run: a world that answers the arbiter's outputs (VMs start
//! and exit, Android postpones and shuts down, the MCU cuts the power and
//! the ignition comes back) plus random MCU signals, pointless and
//! hostile VHAL reports, reboots. The power goes at a random storage
//! operation; the disk keeps only what was synced (`super::sim`); the
//! restarted daemon recovers, and then:
//!
//! - the recovered arbiter is exactly the one after some prefix of the
//!   inputs (K of them), and so are the decided sets;
//! - every output carried out whose record must be durable first (in
//!   `every-decision` all, in `before-mcu` the MCU commands) belongs to
//!   a record among those K: nothing was done that the log forgot, and
//!   in particular no MCU command without its record;
//! - the daemon goes on from there and survives a second power loss.
//!
//! `SYSMGR_POWER_LOSS_SEED=N` repeats a run; the seed is printed.

use std::collections::VecDeque;
use std::sync::Arc;

use system_manager::testing::guest_tables;
use system_manager::{
    ApPowerStateReq, Arbiter, Decision, Input, LogRecord, Millis, Output, Policy, PowerRequestKind,
    Stepped, VmExitReason, WakeReason,
};

use super::sim::{Rng, SimDisk};
use super::{load, CommitStep, Decided, DecisionLog, LogSync, Snapshot};

fn policy() -> Policy {
    let fleet = guest_tables(&[
        ("android", "android", None),
        ("cluster", "cluster", Some(20_000)),
        ("telematics", "other", Some(10_000)),
    ]);
    Policy::from_toml_str(&format!("[system]\nshutdown_deadline_ms = 60000\n{fleet}"))
        .expect("valid policy")
}

fn is_mcu(o: &Output) -> bool {
    matches!(
        o,
        Output::SystemOn { .. } | Output::SystemSuspend { .. } | Output::SystemPowerOff { .. }
    )
}

/// The world around the daemon: inputs due at times, reactions to outputs.
struct World {
    rng: Rng,
    now: u64,
    /// Inputs due, in time order.
    due: VecDeque<(u64, Input)>,
    next_request: u64,
}

impl World {
    fn new(seed: u64) -> Self {
        let mut w = World {
            rng: Rng(seed),
            now: 0,
            due: VecDeque::new(),
            next_request: 1,
        };
        w.at(100, Input::IgnitionOn);
        w
    }

    fn at(&mut self, delay: u64, input: Input) {
        let t = self.now + delay;
        let i = self
            .due
            .iter()
            .position(|(at, _)| *at > t)
            .unwrap_or(self.due.len());
        self.due.insert(i, (t, input));
    }

    fn request(&mut self, guest: &str, kind: PowerRequestKind) -> Input {
        self.next_request += 1;
        Input::GuestPowerRequest {
            guest: guest.into(),
            request_id: self.next_request,
            kind,
        }
    }

    /// What the VMMs, the guests and the MCU do about an output.
    fn react(&mut self, o: &Output) {
        let d = 50 + self.rng.below(1500);
        match o {
            Output::StartVm { guest, .. } | Output::ResumeVm { guest, .. } => self.at(
                d,
                Input::VmStarted {
                    guest: guest.clone(),
                },
            ),
            Output::HardStopVm { guest, .. } => self.at(
                d,
                Input::VmExited {
                    guest: guest.clone(),
                    reason: VmExitReason::Killed,
                },
            ),
            Output::Decide {
                guest, decision, ..
            } => match decision {
                Decision::Allow => self.at(
                    d,
                    Input::VmExited {
                        guest: guest.clone(),
                        reason: VmExitReason::Poweroff,
                    },
                ),
                Decision::RestartVm => self.at(
                    d,
                    Input::VmStarted {
                        guest: guest.clone(),
                    },
                ),
                _ => {}
            },
            Output::ApPowerStateReq {
                guest,
                state: ApPowerStateReq::ShutdownPrepare(_),
                ..
            } => {
                let report = |value, param| Input::ApPowerStateReport {
                    guest: guest.clone(),
                    value,
                    param,
                };
                let postpones = self.rng.below(4);
                let mut t = 0;
                for _ in 0..postpones {
                    t += 1000 + self.rng.below(3000);
                    self.at(t, report(4, 5000));
                }
                if self.rng.below(8) != 0 {
                    t += 500;
                    self.at(t, report(5, 0));
                    t += 500;
                    let r = self.request(guest, PowerRequestKind::Poweroff);
                    self.at(t, r);
                }
            }
            Output::SystemPowerOff { .. } | Output::SystemSuspend { .. } => {
                for g in ["android", "cluster", "telematics"] {
                    self.at(
                        d,
                        Input::VmExited {
                            guest: g.into(),
                            reason: VmExitReason::Killed,
                        },
                    );
                }
                let wake = 5000 + self.rng.below(30000);
                self.at(wake, Input::IgnitionOn);
            }
            _ => {}
        }
    }

    /// A random signal from outside (MCU, a guest, a pointless report).
    fn noise(&mut self) -> Input {
        let android = |value, param| Input::ApPowerStateReport {
            guest: "android".into(),
            value,
            param,
        };
        match self.rng.below(12) {
            0 | 1 => Input::IgnitionOn,
            2 | 3 => Input::IgnitionOff,
            4 => Input::VehicleInUse {
                in_use: self.rng.below(2) == 0,
            },
            5 => Input::WakeRequest {
                reason: WakeReason::UserPowerOn,
            },
            6 => android(99, 0),
            7 => android(6, 0),
            8 => android(1, 0),
            9 => self.request("android", PowerRequestKind::Reboot),
            10 => self.request("cluster", PowerRequestKind::Poweroff),
            _ => Input::VmLost {
                guest: "telematics".into(),
            },
        }
    }

    /// The next input and its time, given the arbiter's timer.
    fn next(&mut self, timer: Option<Millis>) -> (u64, Input) {
        if self.rng.below(6) == 0 {
            let gap = self.rng.below(3000);
            let input = self.noise();
            return (self.now + gap, input);
        }
        let due = self.due.front().map(|(t, _)| *t);
        match (timer.map(|t| t.as_millis()), due) {
            (Some(t), d) if d.is_none_or(|d| t <= d) => (t.max(self.now), Input::Tick),
            (_, Some(_)) => self.due.pop_front().unwrap_or((self.now, Input::Tick)),
            (_, None) => {
                let input = self.noise();
                (self.now + 1000, input)
            }
        }
    }
}

/// What the simulated daemon did, for checking a recovery.
#[derive(Default)]
struct Ledger {
    /// After each record (index k: after k inputs).
    states: Vec<(Arbiter, Decided)>,
    /// Each output carried out: its record's seq and whether it had to be
    /// durable first.
    carried: Vec<(u64, bool)>,
    compactions: usize,
    mcu_commands: usize,
}

/// Runs the daemon's write / commit / compact cycle for `inputs` inputs
/// (in batches), until done or the power goes (an operation fails).
fn run(
    disk: &SimDisk,
    mode: LogSync,
    world: &mut World,
    arbiter: &mut Arbiter,
    decided: &mut Decided,
    ledger: &mut Ledger,
    inputs: usize,
) -> anyhow::Result<()> {
    let mut log = DecisionLog::open(Arc::new(disk.clone()))?.compact_at(6000);
    if mode == LogSync::BeforeMcu {
        log.starve_background_sync();
    }
    let mut fed = 0;
    while fed < inputs {
        let batch = 1 + world.rng.below(4) as usize;
        let mut pending: Vec<LogRecord> = Vec::new();
        for _ in 0..batch {
            let (at, input) = world.next(arbiter.next_timer());
            world.now = world.now.max(at);
            fed += 1;
            let vhal = matches!(input, Input::ApPowerStateReport { .. });
            let record = if vhal {
                match arbiter.step_unless_idle(Millis(at), input) {
                    Stepped::Logged(r) => r,
                    Stepped::Idle(_) => continue,
                }
            } else {
                arbiter.step(Millis(at), input)
            };
            log.write(&record)?;
            decided.note(&record.input, &record.outputs);
            ledger.states.push((arbiter.clone(), decided.clone()));
            pending.push(record);
        }
        for step in mode.commit_plan(&pending) {
            match step {
                CommitStep::Sync => log.sync()?,
                CommitStep::SyncSoon => log.sync_soon()?,
                CommitStep::Announce(_) => {}
                CommitStep::Execute(r, o) => {
                    let output = &pending[r].outputs[o];
                    ledger
                        .carried
                        .push((pending[r].seq, mode.must_be_durable_first(output)));
                    ledger.mcu_commands += usize::from(is_mcu(output));
                    world.react(output);
                }
            }
        }
        if log.wants_compaction() {
            log.compact(&Snapshot::of(arbiter, decided))?;
            ledger.compactions += 1;
        }
    }
    Ok(())
}

/// Recovers from `disk` and checks the invariants against `ledger`;
/// returns the recovered daemon state.
fn recover_and_check(disk: &SimDisk, ledger: &Ledger, what: &str) -> (Arbiter, Decided) {
    let loaded = load(disk, true).unwrap_or_else(|e| panic!("{what}: recovery failed: {e:#}"));
    let (arbiter, decided) = loaded
        .restore(policy())
        .unwrap_or_else(|e| panic!("{what}: recovery failed: {e:#}"));
    let k = arbiter.inputs_handled();
    let (a, d) = &ledger.states[k as usize];
    assert_eq!(
        &arbiter, a,
        "{what}: recovered state is not the one after {k} inputs"
    );
    assert_eq!(&decided, d, "{what}: decided sets after {k} inputs");
    for (seq, durable_first) in &ledger.carried {
        if *durable_first {
            assert!(
                *seq <= k,
                "{what}: output of record {seq} was carried out but recovery has only {k} records"
            );
        }
    }
    (arbiter, decided)
}

fn seed() -> u64 {
    std::env::var("SYSMGR_POWER_LOSS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

const INPUTS: usize = 400;

/// One trial: a run with the power going at a random operation, recovery
/// and its checks, more inputs on the recovered state and a second power
/// loss, recovery and checks again.
fn trial(mode: LogSync, seed: u64) -> (usize, usize) {
    let mut rng = Rng(seed);
    let world_seed = rng.next();
    // A dry run counts the storage operations of the whole run.
    let total = {
        let disk = SimDisk::default();
        let (mut w, mut a, mut d) = (
            World::new(world_seed),
            Arbiter::new(policy()),
            Decided::default(),
        );
        let mut ledger = Ledger::default();
        ledger.states.push((a.clone(), d.clone()));
        run(&disk, mode, &mut w, &mut a, &mut d, &mut ledger, INPUTS).expect("no crash");
        assert!(
            ledger.compactions >= 3,
            "only {} compactions",
            ledger.compactions
        );
        assert!(
            ledger.mcu_commands >= 3,
            "only {} MCU commands",
            ledger.mcu_commands
        );
        disk.ops()
    };
    let disk = SimDisk::default();
    let crash = 1 + rng.below(total);
    disk.crash_at(crash);
    let mut world = World::new(world_seed);
    let (mut a, mut d) = (Arbiter::new(policy()), Decided::default());
    let mut ledger = Ledger::default();
    ledger.states.push((a.clone(), d.clone()));
    let r = run(&disk, mode, &mut world, &mut a, &mut d, &mut ledger, INPUTS);
    assert!(
        r.is_err() && disk.crashed(),
        "the power did not go at {crash} of {total}"
    );
    let what = format!("{mode:?} seed {seed}, power lost at operation {crash} of {total}");
    let disk = disk.after_power_loss(&mut rng);
    let (mut a, mut d) = recover_and_check(&disk, &ledger, &what);
    let k = a.inputs_handled() as usize;

    // Go on from the recovered state (what was lost is gone: the ledger
    // is cut back to it), then lose power again.
    ledger.states.truncate(k + 1);
    ledger.carried.retain(|(seq, _)| *seq as usize <= k);
    let second = 1 + rng.below(total / 2 + 1);
    disk.crash_at(disk.ops() + second);
    let _ = run(
        &disk,
        mode,
        &mut world,
        &mut a,
        &mut d,
        &mut ledger,
        INPUTS / 2,
    );
    let disk = disk.after_power_loss(&mut rng);
    let what = format!("{what}, then again {second} operations after the restart");
    let (a, _) = recover_and_check(&disk, &ledger, &what);
    (k, a.inputs_handled() as usize)
}

#[test]
fn power_loss_at_random_points_keeps_every_record_whose_output_was_carried_out() {
    let seed = seed();
    eprintln!("power-loss test: seed {seed} (SYSMGR_POWER_LOSS_SEED={seed} repeats it)");
    let mut rng = Rng(seed);
    let mut recovered = Vec::new();
    for mode in [LogSync::EveryDecision, LogSync::BeforeMcu] {
        for _ in 0..30 {
            let s = rng.next();
            recovered.push(trial(mode, s));
        }
    }
    assert!(recovered.len() >= 50);
    // Not vacuous: recoveries happened early, late, and in between.
    assert!(recovered.iter().any(|(k, _)| *k < 50), "{recovered:?}");
    assert!(recovered.iter().any(|(k, _)| *k > 200), "{recovered:?}");
}

/// Compaction cut short after each of its storage operations: recovery
/// always finds the same state (every record was synced before), cleans
/// up, and the daemon goes on.
#[test]
fn a_compaction_cut_short_at_any_step_recovers_the_same_state() {
    let build = |crash: Option<u64>| {
        let disk = SimDisk::default();
        let mut a = Arbiter::new(policy());
        let mut d = Decided::default();
        let mut log = DecisionLog::open(Arc::new(disk.clone())).expect("opens");
        // An earlier compaction, so a snapshot is there to be replaced.
        for (t, i) in [
            Input::IgnitionOn,
            Input::VmStarted {
                guest: "android".into(),
            },
        ]
        .into_iter()
        .enumerate()
        {
            let r = a.step(Millis(t as u64), i);
            d.note(&r.input, &r.outputs);
            log.append(&r).expect("append");
        }
        log.compact(&Snapshot::of(&a, &d)).expect("compaction");
        for (t, i) in [
            Input::VmStarted {
                guest: "cluster".into(),
            },
            Input::IgnitionOff,
        ]
        .into_iter()
        .enumerate()
        {
            let r = a.step(Millis(10 + t as u64), i);
            d.note(&r.input, &r.outputs);
            log.append(&r).expect("append");
        }
        let before = disk.ops();
        if let Some(k) = crash {
            disk.crash_at(before + k);
        }
        let result = log.compact(&Snapshot::of(&a, &d));
        let steps = disk.ops() - before;
        (disk, a, d, result, steps)
    };
    let (_, _, _, ok, steps) = build(None);
    ok.expect("a compaction without a crash");
    assert_eq!(steps, 8, "the compaction's storage operations");
    for k in 1..=steps {
        for seed in 0..20 {
            let (disk, a, d, result, _) = build(Some(k));
            assert!(result.is_err(), "the power did not go at step {k}");
            let disk = disk.after_power_loss(&mut Rng(seed));
            let loaded = load(&disk, true).expect("recovers");
            let (b, e) = loaded.restore(policy()).expect("restores");
            assert_eq!((&b, &e), (&a, &d), "cut at step {k}, seed {seed}");
            assert!(
                disk.content(super::SNAPSHOT_TMP).is_none(),
                "tmp left at step {k}"
            );
            // The daemon goes on: one more record, recovered again.
            let mut log = DecisionLog::open(Arc::new(disk.clone())).expect("opens");
            let mut b = b;
            let r = b.step(Millis(100), Input::IgnitionOn);
            log.append(&r).expect("append");
            let again = load(&disk, true)
                .expect("recovers")
                .restore(policy())
                .expect("restores");
            assert_eq!(
                again.0, b,
                "cut at step {k}, seed {seed}: after one more record"
            );
        }
    }
}
