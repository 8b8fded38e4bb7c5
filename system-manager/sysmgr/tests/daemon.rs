//! The `sysmgr` daemon end to end on the host, without VMs: fake VMMs that
//! speak the VMM control protocol (`vmm-protocol`) in-process, a fake
//! Android guest behind a fake hybrid-vsock socket, and the real MCU
//! simulator (`mcu-sim`) and daemon (`sysmgr`) binaries. Where a VMM's
//! process matters (its exit status, a kill), the fake VMM runs in a
//! process of its own, launched by the policy's `launch` command
//! ([`vmm_process`]).

mod support;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sysmgr::vmm::{VmmCmd, VmmConfig, VmmReport};
use system_manager::{StartFailure, VmmExit};
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

// ------------------------------------------------------------ VMM processes

/// Set for [`vmm_process`]: the control socket its fake VMM serves.
const VMM_PROCESS_SOCKET: &str = "SYSMGR_TEST_VMM_SOCKET";

/// Set for [`vmm_process`]: the uid (and gid) it switches to first.
const VMM_PROCESS_UID: &str = "SYSMGR_TEST_VMM_UID";

/// A `launch` command whose VMM is a process of its own: this test binary
/// running [`vmm_process`] for `socket`.
fn vmm_process_argv(socket: &Path) -> Vec<String> {
    vmm_process_argv_as(socket, None)
}

/// [`vmm_process_argv`] for a VMM that runs as `uid` (and gid), a guest's
/// `vmm_user`, when given.
fn vmm_process_argv_as(socket: &Path, uid: Option<u32>) -> Vec<String> {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut argv = vec![
        "/usr/bin/env".to_string(),
        format!("{VMM_PROCESS_SOCKET}={}", socket.display()),
    ];
    argv.extend(uid.map(|uid| format!("{VMM_PROCESS_UID}={uid}")));
    argv.extend(
        [
            &exe.display().to_string(),
            "vmm_process",
            "--exact",
            "--ignored",
            "--nocapture",
        ]
        .map(str::to_string),
    );
    argv
}

/// Switches this process to uid and gid `uid`, no supplementary groups,
/// with umask 0 (its sockets then connectable by a daemon of another uid
/// that has no capabilities).
fn become_user(uid: u32) {
    // SAFETY: plain credential and umask calls, no memory passed but a
    // null group list of length 0.
    let rc = unsafe {
        libc::umask(0);
        [
            libc::setgroups(0, std::ptr::null()),
            libc::setresgid(uid, uid, uid),
            libc::setresuid(uid, uid, uid),
        ]
    };
    assert_eq!(
        rc,
        [0, 0, 0],
        "switching to uid {uid}: {}",
        std::io::Error::last_os_error()
    );
}

/// Not a test: the fake VMM process of [`vmm_process_argv`] (a no-op when
/// run by hand). It serves `$SYSMGR_TEST_VMM_SOCKET` with [`FakeVmm`] and
/// exits 0 after `stop`. It carries out a restart as a VMM that resets by
/// exiting does: it drops its control connection and exits 32. The tests
/// steer it with files next to the socket: `<socket>.reboot` makes the
/// guest ask to reboot; `<socket>.hang` makes the VMM drop its control
/// connection and hang on its way out (until killed, at most a minute), or,
/// if it is there at the launch, hang without ever serving its socket;
/// `<socket>.ignore-stop` there at the launch makes it answer `stop` and run
/// on (until killed). With `$SYSMGR_TEST_VMM_UID` it runs as that uid.
#[test]
#[ignore = "the body of the fake VMM processes the tests here launch"]
fn vmm_process() {
    let Some(socket) = std::env::var_os(VMM_PROCESS_SOCKET).map(PathBuf::from) else {
        return;
    };
    if let Some(uid) = std::env::var(VMM_PROCESS_UID)
        .ok()
        .and_then(|u| u.parse().ok())
    {
        become_user(uid);
    }
    let (reboot, hang) = (
        socket.with_extension("reboot"),
        socket.with_extension("hang"),
    );
    if hang.exists() {
        std::thread::sleep(Duration::from_secs(60));
        std::process::exit(1);
    }
    let vmm = FakeVmm::start(&socket);
    // A restart decision is acknowledged, not carried out in the process.
    vmm.s.lock().unwrap().drop_decides = true;
    vmm.s.lock().unwrap().ignore_stop = socket.with_extension("ignore-stop").exists();
    let mut asked = false;
    loop {
        if !asked && reboot.exists() {
            asked = true;
            vmm.request(PowerRequestKind::Reboot);
        }
        if hang.exists() {
            vmm.vanish();
            std::thread::sleep(Duration::from_secs(60));
            std::process::exit(1);
        }
        let restart = vmm.received().iter().any(|r| {
            matches!(
                r,
                Request::Decide {
                    decision: Decision::RestartVm,
                    ..
                }
            )
        });
        if restart {
            vmm.vanish();
            std::process::exit(32);
        }
        if !vmm.alive() {
            std::process::exit(0);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The next report of a VMM link (at most 30 s away).
async fn next_report(reports: &mut tokio::sync::mpsc::UnboundedReceiver<VmmReport>) -> VmmReport {
    tokio::time::timeout(Duration::from_secs(30), reports.recv())
        .await
        .expect("a report from the VMM link within 30 s")
        .expect("the VMM link runs")
}

/// The daemon hard-stops a guest whose VMM is neither attached nor being
/// attached: the VMM link must kill what is left of that VMM and report it
/// gone only once the process has ended. Reporting it at once (as the
/// daemon did) let a following start meet the still dying VMM.
#[tokio::test(flavor = "current_thread")]
async fn an_unattached_vmm_that_is_stopped_is_reported_gone_once_its_process_ended() {
    let dir = tmpdir("unattached-stop");
    let socket = dir.join("g.ctl");
    let cfg = VmmConfig {
        guest: "g".into(),
        socket: socket.clone(),
        launch: Some(vmm_process_argv(&socket)),
        log: dir.join("g.vmm.log"),
        pid_file: dir.join("g.pid"),
        vmm_uid: None,
    };
    let (cmds, rx) = tokio::sync::mpsc::unbounded_channel();
    let (tx, mut reports) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(sysmgr::vmm::run(cfg, rx, move |r| {
        let _ = tx.send(r);
    }));
    cmds.send(VmmCmd::Start).unwrap();
    let pid = match next_report(&mut reports).await {
        VmmReport::Attached { pid: Some(pid) } => pid,
        other => panic!("not attached: {other:?}"),
    };
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));

    // The VMM drops its control connection but its process runs on: the
    // link reports it gone without an exit status (it waited 3 s).
    std::fs::write(socket.with_extension("hang"), "").unwrap();
    loop {
        match next_report(&mut reports).await {
            VmmReport::Line(_) => continue,
            VmmReport::Gone { exit } => {
                assert_eq!(exit, None);
                break;
            }
            other => panic!("not gone: {other:?}"),
        }
    }
    assert!(proc_dir.exists(), "the VMM process {pid} ended");

    // A hard stop with nothing attached: killed, and reported gone only
    // once reaped (the report carries the exit status of the kill).
    cmds.send(VmmCmd::Stop { report_gone: true }).unwrap();
    match next_report(&mut reports).await {
        VmmReport::Gone { exit } => assert_eq!(
            exit,
            Some(VmmExit {
                code: None,
                signal: Some(libc::SIGKILL)
            })
        ),
        other => panic!("not gone: {other:?}"),
    }
    assert!(!proc_dir.exists(), "the VMM process {pid} is not reaped");

    // A stop whose end the daemon does not wait for (it still had the VMM
    // attached when it sent it) reports nothing.
    cmds.send(VmmCmd::Stop { report_gone: false }).unwrap();
    let late = tokio::time::timeout(Duration::from_millis(500), reports.recv()).await;
    assert!(late.is_err(), "{late:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Starts a VMM link whose launched VMM process never answers on its
/// control socket, sends it a `Stop { report_gone }` while its `Start`
/// waits for that socket, and returns the one report that follows,
/// checking that it came soon after the stop (not when the start would
/// have given up, 30 s after the launch), only once that process had
/// ended, and that no second report follows.
async fn stop_during_a_start_that_fails(tag: &str, report_gone: bool) -> VmmReport {
    let dir = tmpdir(tag);
    let socket = dir.join("g.ctl");
    std::fs::write(socket.with_extension("hang"), "").unwrap();
    let cfg = VmmConfig {
        guest: "g".into(),
        socket: socket.clone(),
        launch: Some(vmm_process_argv(&socket)),
        log: dir.join("g.vmm.log"),
        pid_file: dir.join("g.pid"),
        vmm_uid: None,
    };
    let pid_file = cfg.pid_file.clone();
    let (cmds, rx) = tokio::sync::mpsc::unbounded_channel();
    let (tx, mut reports) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(sysmgr::vmm::run(cfg, rx, move |r| {
        let _ = tx.send(r);
    }));
    cmds.send(VmmCmd::Start).unwrap();

    // Launched (its pid file written) and hanging: the start waits.
    let end = Instant::now() + Duration::from_secs(20);
    let pid = loop {
        let pid = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok());
        if let Some(pid) = pid {
            break pid;
        }
        assert!(Instant::now() < end, "no VMM launched in 20 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    assert!(proc_dir.exists(), "the VMM process {pid} ended at once");
    cmds.send(VmmCmd::Stop { report_gone }).unwrap();
    let stopped = Instant::now();

    // The stop ends the start at once and is carried out: the report
    // comes once the process has been reaped, well before the start would
    // have given up (30 s after the launch).
    let report = tokio::time::timeout(Duration::from_secs(90), reports.recv())
        .await
        .expect("a report from the VMM link within 90 s")
        .expect("the VMM link runs");
    let took = stopped.elapsed();
    assert!(
        took < Duration::from_secs(15),
        "{report:?} {took:?} after the stop: the start was waited out"
    );
    assert!(
        !proc_dir.exists(),
        "{report:?} while the VMM process {pid} still runs"
    );
    // One report for the stop and the start, not a second one.
    let late = tokio::time::timeout(Duration::from_secs(2), reports.recv()).await;
    assert!(late.is_err(), "a second report: {late:?}");
    let _ = std::fs::remove_dir_all(&dir);
    report
}

/// A hard stop the daemon asks a report for (`report_gone`) comes while
/// the link waits for a VMM it launched to answer, and that start fails:
/// the link must kill that VMM and report it gone once, after its process
/// ended, without waiting out the start. Dropping the queued stop (as the
/// link did) reported the failure and left a hung VMM running into the
/// next start; waiting out the start held a power-off for 30 s.
#[tokio::test(flavor = "current_thread")]
async fn a_stop_during_a_start_that_fails_kills_the_vmm_and_reports_it_gone_once() {
    match stop_during_a_start_that_fails("stop-in-start-gone", true).await {
        VmmReport::Gone { exit } => assert_eq!(
            exit,
            Some(VmmExit {
                code: None,
                signal: Some(libc::SIGKILL)
            })
        ),
        other => panic!("not gone: {other:?}"),
    }
}

/// The same for the stop the daemon sends while it waits for the start's
/// outcome (no `report_gone`): the VMM is killed as well, and the start's
/// failure, the one report, comes once its process ended, with the kill's
/// exit status.
#[tokio::test(flavor = "current_thread")]
async fn a_stop_during_a_start_that_fails_kills_the_vmm_before_the_failure_is_reported() {
    match stop_during_a_start_that_fails("stop-in-start-failed", false).await {
        VmmReport::StartFailed { failure, .. } => assert_eq!(
            failure,
            StartFailure::Exited(VmmExit {
                code: None,
                signal: Some(libc::SIGKILL)
            })
        ),
        other => panic!("not a failed start: {other:?}"),
    }
}

/// The same through the daemon: the arbiter hears of a VMM it hard-stops
/// with no VMM attached only from the link's report, once (the daemon no
/// longer feeds that input itself, and without the report the shutdown
/// would wait for ever).
#[test]
fn a_hard_stop_with_no_vmm_attached_ends_with_the_links_report() {
    // A VMM that resets by exiting leaves its guest restarting with no VMM
    // attached (nobody starts a new one); the shutdown then hard-stops it.
    let dir = tmpdir("unattached-hard-stop");
    let socket = dir.join("telematics.ctl");
    std::fs::write(
        dir.join("policy.toml"),
        format!(
            r#"[system]
vm_exit_grace_ms = 2000

[[guest]]
name = "telematics"
role = "other"
shutdown_deadline_ms = 1000
control_socket = "{}"
launch = {:?}
"#,
            socket.display(),
            vmm_process_argv(&socket)
        ),
    )
    .unwrap();
    let mut mcu = Mcu::start(&dir);
    let d = daemon(&dir);
    mcu.cmd("ignition on");
    let logged = |dir: &Path, what: &str| log_lines(dir).iter().any(|l| l.contains(what));
    wait_until("telematics started", 20, || {
        logged(&dir, r#""type":"vm_started","guest":"telematics""#)
    });
    std::fs::write(socket.with_extension("reboot"), "").unwrap();
    wait_until("telematics' VMM exited for the restart", 20, || {
        logged(
            &dir,
            r#""type":"vm_exited","guest":"telematics","reason":"reset""#,
        )
    });

    mcu.cmd("ignition off");
    wait_until("MCU power-off", 20, || mcu.count("<- POWER_OFF") == 1);
    let log = log_lines(&dir);
    let killed: Vec<usize> = (0..log.len())
        .filter(|&n| {
            log[n].contains(r#""type":"vm_exited","guest":"telematics","reason":"killed""#)
        })
        .collect();
    let stop = log.iter().position(|l| l.contains("hard_stop_vm"));
    // Heard of once, from the link, after the hard stop.
    assert_eq!(killed.len(), 1, "{}", log.join("\n"));
    assert!(stop.is_some_and(|s| s < killed[0]), "{}", log.join("\n"));
    drop(d);
}

/// A VMM that an earlier daemon launched, that runs as its guest's
/// `vmm_user` and that ignores `stop`, hard-stopped by a restarted daemon
/// that may not signal that uid (it runs as uid 0 without capabilities
/// here): the daemon has the launcher process kill it through the pidfd it
/// opened when it attached. The daemon's own `SIGKILL` failed (`EPERM`),
/// and the VMM ran on after the link had reported it gone.
#[test]
fn a_restarted_daemon_has_the_launcher_kill_an_adopted_vmm_of_another_uid() {
    // SAFETY: a plain credential query.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: a VMM of another uid needs root to start it");
        return;
    }
    const UID: u32 = 10077;
    let dir = tmpdir("adopted-kill");
    // The VMM, uid 10077, creates its control socket here.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let socket = dir.join("g.ctl");
    std::fs::write(socket.with_extension("ignore-stop"), "").unwrap();
    std::fs::write(
        dir.join("policy.toml"),
        format!(
            r#"[system]
vm_exit_grace_ms = 2000

[[guest]]
name = "g"
role = "other"
shutdown_deadline_ms = 1000
control_socket = "{}"
vmm_user = "{UID}:{UID}"
launch = {:?}
"#,
            socket.display(),
            vmm_process_argv_as(&socket, Some(UID))
        ),
    )
    .unwrap();
    let mut mcu = Mcu::start(&dir);
    let d1 = daemon(&dir);
    mcu.cmd("ignition on");
    wait_until("g started", 20, || {
        log_lines(&dir)
            .iter()
            .any(|l| l.contains(r#""type":"vm_started","guest":"g""#))
    });
    let pid: u32 = std::fs::read_to_string(dir.join("state/g.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The test's handle on the VMM: to see its end, and to end it if the
    // daemon does not.
    let vmm = KillOnDrop(sysmgr::pidfd::PidFd::open(pid).unwrap());
    let uid_line = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .map(str::to_string);
    assert_eq!(
        uid_line.as_deref(),
        Some("Uid:\t10077\t10077\t10077\t10077"),
        "the VMM's uids"
    );

    // kill -9 of the daemon (its launcher ends with it); the VMM runs on,
    // and the next daemon attaches to it.
    drop(d1);
    let d2 = daemon(&dir);
    wait_until("the VMM attached again", 20, || {
        status(&dir).contains("attached, ")
    });
    mcu.cmd("ignition off");
    wait_until("MCU power-off", 30, || mcu.count("<- POWER_OFF") == 1);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ended =
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), vmm.0.exited()).await });
    assert!(
        matches!(ended, Ok(Ok(()))),
        "the adopted VMM (pid {pid}) still runs after the power-off: {ended:?}\n{}",
        d2.text()
    );
    let journal = d2.text();
    assert!(
        journal.contains(&format!("g: the launcher process killed VMM pid {pid}")),
        "{journal}"
    );
    drop(d2);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A pidfd whose process is killed when it is dropped (a test's clean-up).
struct KillOnDrop(sysmgr::pidfd::PidFd);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
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

/// `poweroff_hold_ms`: after `SystemPowerOff` the MCU's `PowerOff` waits
/// while a VMM is still attached (here one the arbiter has off: a parked
/// VMM found on android's control socket after a restart of the daemon),
/// and when the hold is over that VMM is stopped and the power-off sent.
#[test]
fn the_power_off_waits_for_an_attached_vmm_at_most_poweroff_hold_ms() {
    // The cluster runs 6 s after ignition off (its deadline): time enough
    // for android's shutdown.
    let (dir, mut android, mut mcu) = rig("hold-ms", "poweroff_hold_ms = 1500", 6000);
    let d = daemon(&dir);
    let (av, cv) = boot(&dir, &mut mcu, &mut android);
    mcu.cmd("ignition off");
    android.expect_req("AP_POWER_STATE_REQ 1 3");
    android.send("AP_POWER_STATE_REPORT 5 0"); // SHUTDOWN_START
    std::thread::sleep(Duration::from_millis(200));
    av.request(PowerRequestKind::Poweroff);
    wait_until("android off", 10, || {
        log_lines(&dir)
            .iter()
            .any(|l| l.contains(r#""type":"vm_exited","guest":"android","reason":"poweroff""#))
    });
    // The vehicle in use keeps the cluster (and so the shutdown) going
    // while the daemon restarts.
    mcu.cmd("in-use yes");
    wait_until("vehicle in use logged", 10, || {
        log_lines(&dir)
            .iter()
            .any(|l| l.contains(r#""in_use":true"#))
    });
    drop(d); // kill -9

    // A VMM on android's control socket that the arbiter has off: parked,
    // so attaching to it changes nothing (no VmStarted, no repair).
    let parked = FakeVmm::start(&dir.join("android.ctl"));
    parked.s.lock().unwrap().state = VmState::Paused;
    let d2 = daemon(&dir);
    wait_until(
        "android's parked VMM attached, the cluster's again",
        10,
        || {
            let attaches = cv
                .received()
                .iter()
                .filter(|r| **r == Request::Attach)
                .count();
            attaches == 2 && status(&dir).contains("attached, paused")
        },
    );
    let s = status(&dir);
    assert!(s.contains("system: shutdown-prepare"), "{s}");

    // The cluster is released and stopped; every guest is off.
    mcu.cmd("in-use no");
    wait_until("SystemPowerOff decided", 15, || {
        log_lines(&dir)
            .iter()
            .any(|l| l.contains(r#""cmd":"system_power_off""#))
    });
    let decided = Instant::now();
    wait_until("MCU power-off after the hold", 15, || {
        mcu.count("<- POWER_OFF") == 1
    });
    // Not the default hold (10 s); generous for 1.5 s on a loaded machine.
    let held = decided.elapsed();
    assert!(held < Duration::from_secs(8), "held {held:?}");
    // The power-off was held for the attached VMM, and the end of the hold
    // (not the VMM's own end) released it: that VMM was told to stop.
    wait_until("the parked VMM stopped at the end of the hold", 10, || {
        parked.got(Request::Stop)
    });
    let journal = d2.text();
    let held_at = journal.find("power-off for the MCU waits until these VMMs are gone: android");
    let ended_at = journal.find("VMMs still attached after the power-off wait");
    assert!(
        held_at.zip(ended_at).is_some_and(|(h, e)| h < e),
        "{journal}"
    );
    assert_eq!(mcu.count("<- POWER_OFF"), 1, "{}", mcu.p.text());
    drop(d2);
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
