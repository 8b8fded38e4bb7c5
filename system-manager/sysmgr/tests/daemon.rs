//! The `sysmgr` daemon end to end on the host, without VMs: fake VMMs that
//! speak the VMM control protocol (`vmm-protocol`) in-process, a fake
//! Android guest behind a fake hybrid-vsock socket, and the real MCU
//! simulator (`mcu-sim`) and daemon (`sysmgr`) binaries.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vmm_protocol::{Decision, PowerRequestKind, Request, VmState};

use support::*;

// ------------------------------------------------------------ fake Android

/// The guest end of the VHAL channel behind a fake hybrid-vsock socket.
struct FakeAndroid {
    conns: std::sync::mpsc::Receiver<UnixStream>,
    conn: Option<(BufReader<UnixStream>, UnixStream)>,
}

impl FakeAndroid {
    fn start(path: &Path) -> FakeAndroid {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for s in listener.incoming() {
                let Ok(mut s) = s else { return };
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                assert_eq!(line, "CONNECT 4100\n");
                s.write_all(b"OK 1073741824\n").unwrap();
                if tx.send(s).is_err() {
                    return;
                }
            }
        });
        FakeAndroid {
            conns: rx,
            conn: None,
        }
    }

    fn accept(&mut self, secs: u64) {
        let s = self
            .conns
            .recv_timeout(Duration::from_secs(secs))
            .expect("the daemon connects to the VHAL channel");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        self.conn = Some((BufReader::new(s.try_clone().unwrap()), s));
    }

    fn send(&mut self, line: &str) {
        let (_, w) = self.conn.as_mut().expect("connected");
        w.write_all(format!("{line}\n").as_bytes()).unwrap();
    }

    fn expect_req(&mut self, want: &str) {
        let (r, _) = self.conn.as_mut().expect("connected");
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), want);
    }
}

/// The daemon tests' policy: android on the line channel, a cluster with
/// `cluster_deadline`.
fn write_policy(dir: &Path, extra_system: &str, cluster_deadline: u64) {
    write_two_guest_policy(
        dir,
        extra_system,
        r#"android_channel = "vhal-lines""#,
        cluster_deadline,
    );
}

/// A test directory `tag` with [`write_policy`]'s policy, the fake
/// Android end of its vsock socket and a running MCU simulator.
fn rig(tag: &str, extra_system: &str, cluster_deadline: u64) -> (PathBuf, FakeAndroid, Mcu) {
    let dir = tmpdir(tag);
    write_policy(&dir, extra_system, cluster_deadline);
    let android = FakeAndroid::start(&dir.join("android.vsock"));
    let mcu = Mcu::start(&dir);
    (dir, android, mcu)
}

/// Runs `sysmgr run` with the policy, state directory and MCU socket named
/// in `dir`, expects it to refuse to start, and returns its stderr.
fn refused_run(dir: &Path, policy: &str, state_dir: &str, mcu_socket: &str) -> String {
    let (ok, _, err) = sysmgr_run(
        &dir.join(policy),
        &dir.join(state_dir),
        &dir.join(mcu_socket),
    );
    assert!(!ok, "sysmgr run started: {err}");
    err
}

fn status(dir: &Path) -> String {
    let (ok, out, err) = sysmgr(&[
        "status",
        "--state-dir",
        dir.join("state").to_str().unwrap(),
        "--policy",
        dir.join("policy.toml").to_str().unwrap(),
    ]);
    assert!(ok, "status failed: {err}");
    out
}

/// Guest rows of a status table whose STATE column is `running`.
fn running_guests(status: &str) -> usize {
    status
        .lines()
        .filter(|l| l.split_whitespace().nth(2) == Some("running"))
        .count()
}

/// Brings both guests up with the ignition and the VHAL handshake. The
/// policy has no launch commands, so the daemon waits for VMMs started by
/// someone else: the fakes appear after `StartVm`.
fn boot(dir: &Path, mcu: &mut Mcu, android: &mut FakeAndroid) -> (FakeVmm, FakeVmm) {
    let (av, cv) = start_android_and_cluster(mcu, dir, "ignition on");
    android.accept(10);
    android.send("AP_POWER_STATE_REPORT 1 0");
    android.expect_req("AP_POWER_STATE_REQ 0 0");
    let mut last = String::new();
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        last = status(dir);
        if running_guests(&last) == 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(running_guests(&last), 2, "{last}");
    (av, cv)
}

#[test]
fn ignition_off_handshake_then_cluster_deadline_then_power_off() {
    ignition_off_scenario("a", &[]);
}

#[test]
fn ignition_off_scenario_with_every_decision_fsynced() {
    ignition_off_scenario("a-sync", &["--log-sync", "every-decision"]);
}

fn ignition_off_scenario(tag: &str, extra: &[&str]) {
    let (dir, mut android, mut mcu) = rig(tag, "", 1500);
    let d = daemon_with(&dir, extra);
    let (av, cv) = boot(&dir, &mut mcu, &mut android);
    assert_eq!(mcu.count("<- POWER_ON"), 1, "{}", mcu.p.text());

    mcu.cmd("ignition off");
    android.expect_req("AP_POWER_STATE_REQ 1 3"); // SHUTDOWN_PREPARE(SHUTDOWN_ONLY)
    android.send("AP_POWER_STATE_REPORT 4 5000");
    android.send("AP_POWER_STATE_REPORT 4 5000");
    android.send("AP_POWER_STATE_REPORT 5 0"); // SHUTDOWN_START
    std::thread::sleep(Duration::from_millis(200));
    let id = av.request(PowerRequestKind::Poweroff);
    wait_until("android's poweroff allowed", 10, || !av.alive());
    assert!(av.got(decide(id, Decision::Allow)), "{:?}", av.received());
    android.expect_req("AP_POWER_STATE_REQ 3 0"); // FINISHED
                                                  // The cluster runs until its own deadline (1.5 s after ignition off),
                                                  // then is stopped; only then does the MCU hear the power-off.
    assert!(cv.alive());
    wait_until("cluster stopped", 10, || cv.got(Request::Stop));
    wait_until("MCU power-off", 10, || mcu.count("<- POWER_OFF") == 1);
    assert!(!cv.alive());

    let log = log_lines(&dir);
    let text = log.join("\n");
    assert_eq!(
        text.matches("\"value\":4,\"param\":5000").count(),
        2,
        "{text}"
    );
    assert!(text.contains("cluster cluster's deadline"), "{text}");
    let s = status(&dir);
    assert!(s.contains("system: powering off"), "{s}");
    let (ok, ev, _) = sysmgr(&["events", "--state-dir", dir.join("state").to_str().unwrap()]);
    assert!(ok);
    assert!(
        ev.contains("android: request 1: allow (shutdown under way: allow android's poweroff)"),
        "{ev}"
    );
    assert!(ev.contains("MCU: power off"), "{ev}");
    drop(d);
}

#[test]
fn the_power_off_waits_for_a_vmm_that_ignores_stop_until_the_link_gives_it_up() {
    let (dir, mut android, mut mcu) = rig("hold", "poweroff_hold_ms = 1500", 1000);
    let d = daemon(&dir);
    let (av, cv) = boot(&dir, &mut mcu, &mut android);
    // The cluster's VMM hangs on `stop` (and has no pid to kill).
    cv.s.lock().unwrap().ignore_stop = true;

    mcu.cmd("ignition off");
    android.expect_req("AP_POWER_STATE_REQ 1 3");
    android.send("AP_POWER_STATE_REPORT 5 0"); // SHUTDOWN_START
    std::thread::sleep(Duration::from_millis(200));
    av.request(PowerRequestKind::Poweroff);
    wait_until("android's poweroff allowed", 10, || !av.alive());
    // Cluster deadline -> stop (ignored) -> exit grace (2 s): the arbiter
    // does not treat the VM as off but has it killed (a second `stop`).
    wait_until("a second stop", 10, || {
        cv.received()
            .iter()
            .filter(|r| **r == Request::Stop)
            .count()
            == 2
    });
    let no_poweroff = |dir: &std::path::Path| {
        !log_lines(dir)
            .iter()
            .any(|l| l.contains("\"cmd\":\"system_power_off\""))
    };
    assert!(no_poweroff(&dir), "{}", log_lines(&dir).join("\n"));
    assert_eq!(mcu.count("<- POWER_OFF"), 0, "{}", mcu.p.text());
    assert!(cv.attached());
    // The kill is due 5 s after the first `stop` (not put off by the
    // second) and impossible; 3 s later the link gives the VMM up, which
    // is the cluster's `VmExited(killed)`: only then the power-off.
    wait_until("MCU power-off", 15, || mcu.count("<- POWER_OFF") == 1);
    let text = log_lines(&dir).join("\n");
    assert!(
        text.contains("\"guest\":\"cluster\",\"reason\":\"killed\""),
        "{text}"
    );
    assert!(
        d.text().contains("treating the VMM as gone"),
        "{}",
        d.text()
    );
    drop(d);
}

#[test]
fn a_failed_start_is_a_crash_when_no_vmm_can_be_running() {
    let dir = tmpdir("startfail");
    // `none` cannot be launched at all; `quits` exits before it answers.
    let missing = format!("{}/no-such-vmm", dir.display());
    write_launch_policy(
        &dir,
        &[
            ("none", &[&missing]),
            ("quits", &["/bin/sh", "-c", "exit 3"]),
        ],
    );
    let mut mcu = Mcu::start(&dir);
    let p = daemon(&dir);
    mcu.cmd("ignition on");
    for guest in ["none", "quits"] {
        let want = format!("\"type\":\"vm_exited\",\"guest\":\"{guest}\",\"reason\":\"crash\"");
        wait_until(&format!("{guest}: VmExited(crash)"), 15, || {
            log_lines(&dir).iter().any(|l| l.contains(&want))
        });
    }
    let text = log_lines(&dir).join("\n");
    assert!(!text.contains("vm_lost"), "{text}");
    drop(p);
}

#[test]
fn kill_9_restart_loses_no_request_and_no_decision() {
    let (dir, mut android, mut mcu) = rig("e", "", 30000);
    let mut d = daemon(&dir);
    let (av, cv) = boot(&dir, &mut mcu, &mut android);
    mcu.cmd("in-use yes");
    wait_until("vehicle in use logged", 10, || {
        log_lines(&dir).iter().any(|l| l.contains("vehicle_in_use"))
    });

    // 1. A request made while the daemon is dead is held by the VMM and
    //    decided after the restart.
    d.child.kill().unwrap();
    d.child.wait().unwrap();
    let before = log_lines(&dir).len();
    let id = av.request(PowerRequestKind::Reboot);
    let d2 = daemon(&dir);
    wait_until("the re-published reboot decided", 10, || {
        av.got(decide(id, Decision::RestartVm))
    });
    assert!(log_lines(&dir).len() > before);
    wait_until("android running again", 10, || {
        status(&dir).contains("android  android  running")
    });

    // 2. A decision logged but lost on the way is sent again from the log,
    //    without a second input.
    av.s.lock().unwrap().drop_decides = true;
    let id = av.request(PowerRequestKind::Poweroff);
    wait_until("the poweroff decided", 10, || {
        av.got(decide(id, Decision::HoldVirtuallyOff))
    });
    let n = log_lines(&dir).len();
    drop(d2); // kill -9 (Proc::drop kills with SIGKILL)
    av.s.lock().unwrap().drop_decides = false;
    let d3 = daemon(&dir);
    wait_until("the logged hold re-sent", 10, || {
        av.received()
            .iter()
            .filter(|r| **r == decide(id, Decision::HoldVirtuallyOff))
            .count()
            == 2
    });
    wait_until("android virtually off", 10, || {
        av.s.lock().unwrap().state == VmState::VirtuallyOff
    });
    std::thread::sleep(Duration::from_millis(300));
    let after: Vec<String> = log_lines(&dir)[n..].to_vec();
    assert!(
        after.iter().all(|l| !l.contains("guest_power_request")),
        "the lost decision became a new input: {after:?}"
    );
    // The cluster was never touched, and the log still verifies.
    assert!(
        cv.received().iter().all(|r| *r == Request::Attach),
        "{:?}",
        cv.received()
    );
    let s = status(&dir);
    assert!(s.contains("virtually off (Poweroff)"), "{s}");
    // Ignition on again brings android back (held -> resume).
    mcu.cmd("ignition on");
    wait_until("android resumed", 10, || av.got(Request::Resume));
    drop(d3);
    let out = status(&dir);
    assert!(
        out.contains("daemon: not running (state replayed from"),
        "{out}"
    );
}

#[test]
fn bad_input_is_logged_and_the_daemon_keeps_running() {
    let (dir, mut android, mut mcu) = rig("bad", "", 30000);
    let d = daemon(&dir);
    let (_av, cv) = boot(&dir, &mut mcu, &mut android);

    // Malformed protobuf: a frame that is no McuToSoc is skipped (the link
    // stays), a broken length prefix resets the link (it comes back).
    mcu.cmd("raw 03 0a ff ff");
    mcu.cmd("in-use yes");
    wait_until("in-use after the bad frame", 10, || {
        log_lines(&dir).iter().any(|l| l.contains("vehicle_in_use"))
    });
    mcu.cmd("raw ff ff ff ff ff ff 01");
    wait_until("the link reset and reconnected", 10, || {
        mcu.count("SoC connected") >= 2
    });
    let err = d.text();
    assert!(err.contains("MCU: malformed message"), "{err}");
    assert!(err.contains("resetting the link"), "{err}");

    // Hostile VHAL lines: garbage is ignored, an undefined value is
    // rejected in the journal but, as it changes nothing, is no log
    // record; an endless line closes the channel (it is reopened).
    android.send("hello there");
    android.send("AP_POWER_STATE_REPORT 99 0");
    wait_until("the undefined report rejected", 10, || {
        d.text().contains("unknown AP_POWER_STATE_REPORT value 99")
    });
    assert!(d.text().contains("changes nothing (not a log record)"));
    assert!(
        !log_lines(&dir).iter().any(|l| l.contains("\"value\":99")),
        "an idle report was logged"
    );
    android.send(&"x".repeat(200));
    android.accept(10);
    android.send("AP_POWER_STATE_REPORT 1 0");
    android.expect_req("AP_POWER_STATE_REQ 0 0");
    assert!(d.text().contains("not a report, ignored"));

    // A VMM that disappears: VmLost, the daemon keeps running and, as the
    // policy restarts failed guests, waits for the VM to come back.
    cv.vanish();
    wait_until("VmLost logged", 10, || {
        log_lines(&dir)
            .iter()
            .any(|l| l.contains("\"type\":\"vm_lost\",\"guest\":\"cluster\""))
    });
    let cv2 = FakeVmm::start(&dir.join("cluster.ctl"));
    wait_until("the new cluster VMM attached", 15, || cv2.attached());
    wait_until("cluster running again", 10, || {
        status(&dir).contains("cluster  cluster  running")
    });
    drop(d);

    // A policy with an error: one line naming line, column and field.
    std::fs::write(
        dir.join("bad.toml"),
        "[[guest]]\nname = \"a\"\nrole = \"master\"\n",
    )
    .unwrap();
    let err = refused_run(&dir, "bad.toml", "state2", "nomcu.sock");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("policy line 3, column 8: guest[1].role: unknown role `master`"),
        "{err}"
    );
    // A guest the daemon cannot reach.
    std::fs::write(
        dir.join("bad2.toml"),
        "[[guest]]\nname = \"a\"\nrole = \"other\"\n",
    )
    .unwrap();
    let err = refused_run(&dir, "bad2.toml", "state2", "nomcu.sock");
    assert!(err.contains("guest[1] `a`: no control_socket"), "{err}");
}

#[test]
fn a_log_from_another_policy_is_refused() {
    let (dir, mut android, mut mcu) = rig("verify", "", 30000);
    let d = daemon(&dir);
    let _vmms = boot(&dir, &mut mcu, &mut android);
    drop(d);
    // The same guests in another order: the recorded StartVm commands no
    // longer replay.
    let text = std::fs::read_to_string(dir.join("policy.toml")).unwrap();
    let at = text.find("[[guest]]\nname = \"cluster\"").unwrap();
    let (head, cluster) = text.split_at(at);
    let at = head.find("[[guest]]").unwrap();
    let (system, android) = head.split_at(at);
    std::fs::write(
        dir.join("policy.toml"),
        format!("{system}{cluster}\n{android}"),
    )
    .unwrap();
    let _ = std::fs::remove_file(dir.join("state/sysmgr.sock"));
    let err = refused_run(&dir, "policy.toml", "state", "mcu.sock");
    assert!(err.contains("does not replay under this policy"), "{err}");
}

#[test]
fn a_second_daemon_on_the_same_state_directory_is_refused() {
    let (dir, _android, _mcu) = rig("lock", "", 30000);
    let d = daemon(&dir);
    let err = refused_run(&dir, "policy.toml", "state", "mcu.sock");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!(
            "sysmgr: another sysmgr (pid {}) holds",
            d.child.id()
        )),
        "{err}"
    );
    // The first one runs on.
    assert!(status(&dir).contains("daemon: running"), "{}", status(&dir));
}

#[test]
fn the_log_is_compacted_into_a_snapshot_and_a_restart_goes_on_from_it() {
    let (dir, mut android, mut mcu) = rig("compact", "", 30000);
    let compact = ["--log-compact-bytes", "4000"];
    let d = daemon_with(&dir, &compact);
    let _vmms = boot(&dir, &mut mcu, &mut android);
    let snapshot = dir.join("state/snapshot.json");
    assert!(!snapshot.exists(), "compacted during boot already");
    // Vehicle-in-use changes until the log passes 4000 bytes; it ends
    // with the vehicle in use.
    for i in 0..40 {
        mcu.cmd(if i % 2 == 0 {
            "in-use no"
        } else {
            "in-use yes"
        });
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_until("snapshot.json written", 10, || snapshot.exists());
    wait_until("the last change handled", 10, || {
        status(&dir).contains("vehicle in use: yes")
    });
    let log = std::fs::metadata(dir.join("state/decisions.jsonl"))
        .unwrap()
        .len();
    assert!(log < 4000 + 2000, "the log was not cut: {log} bytes");
    assert!(d.text().contains("decision log compacted"), "{}", d.text());
    let inputs_in_snapshot = |text: &str| -> u64 {
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        v["arbiter"]["inputs"].as_u64().unwrap()
    };
    let covered = inputs_in_snapshot(&std::fs::read_to_string(&snapshot).unwrap());
    drop(d); // kill -9

    // The restart resumes from the snapshot and the log after it.
    let d2 = daemon_with(&dir, &compact);
    let st = status(&dir);
    assert!(
        st.contains("daemon: running") && st.contains("vehicle in use: yes"),
        "{st}"
    );
    assert!(d2.text().contains("in the snapshot"), "{}", d2.text());
    let (ok, events, err) = sysmgr(&["events", "--state-dir", dir.join("state").to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(
        events.starts_with("(inputs 1 to ") && events.contains("compacted into snapshot.json"),
        "{events}"
    );
    mcu.cmd("in-use no");
    wait_until("a new record after the snapshot", 10, || {
        log_lines(&dir)
            .iter()
            .any(|l| l.contains("\"in_use\":false"))
    });
    let first: serde_json::Value = serde_json::from_str(&log_lines(&dir)[0]).unwrap();
    let covered_now = inputs_in_snapshot(&std::fs::read_to_string(&snapshot).unwrap());
    assert!(covered_now >= covered);
    assert_eq!(first["seq"].as_u64(), Some(covered_now + 1), "{first}");
}

#[test]
fn a_guest_repeating_itself_grows_neither_the_log_nor_the_journal() {
    let dir = tmpdir("repeat");
    write_policy(&dir, "", 30000);
    let mut android = FakeAndroid::start(&dir.join("android.vsock"));
    let mut mcu = Mcu::start(&dir);
    let d = daemon(&dir);
    let (_av, cv) = boot(&dir, &mut mcu, &mut android);
    let records = log_lines(&dir).len();

    // Pointless reports and suspends the arbiter refuses (the ignition is
    // on, so the cluster must stay up), many more than a guest's log
    // budget (sysmgr::guest_log::GUEST_BURST lines).
    const N: u64 = 300;
    for _ in 0..N {
        android.send("AP_POWER_STATE_REPORT 99 0");
    }
    let ids: Vec<u64> = (0..N)
        .map(|_| cv.request(PowerRequestKind::Suspend))
        .collect();
    wait_until("every suspend refused", 20, || {
        let got = cv.received();
        ids.iter()
            .all(|id| got.contains(&decide(*id, Decision::Refuse)))
    });
    std::thread::sleep(Duration::from_millis(500));

    // Each refusal was answered, none is a record, and the journal holds
    // at most the guests' budgets of these lines.
    assert_eq!(log_lines(&dir).len(), records, "{:?}", log_lines(&dir));
    let journal = d.text();
    let idle = journal
        .matches("changes nothing (not a log record)")
        .count() as u64;
    let budget = 2 * u64::from(sysmgr::guest_log::GUEST_BURST) + 10;
    assert!(idle > 0 && idle <= budget, "{idle} idle lines");
    // Once the budget refills, the next line says how many were left out.
    std::thread::sleep(sysmgr::guest_log::GUEST_REFILL);
    android.send("AP_POWER_STATE_REPORT 99 0");
    wait_until("the count of suppressed lines", 10, || {
        d.text().contains("similar lines suppressed]")
    });
}
