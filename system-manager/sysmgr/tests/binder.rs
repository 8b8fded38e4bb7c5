//! `ISystemManager` over RPC binder, end to end on the host: the real
//! `sysmgr` and `mcu-sim` binaries, fake VMMs, and rsbinder clients on the
//! Android guest's endpoint (`<vsock_socket>_<binder_port>`, where the
//! VMM's hybrid vsock delivers the guest's `connect(2, port)`) and on the
//! host tools' socket.

mod support;

use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Mutex;
use std::time::Duration;

use rsbinder::rpc::{RpcClientConfig, RpcSession};
use rsbinder::{ExceptionCode, Interface, Strong};
use support::*;
use vmm_protocol::{Decision, PowerRequestKind};
use vmstack_aidl::vmstack::sysmgr::IPowerStateListener::{
    BnPowerStateListener, IPowerStateListener,
};
use vmstack_aidl::vmstack::sysmgr::ISystemManager::{self as ism, ISystemManager};
use vmstack_aidl::vmstack::sysmgr::SystemState::SystemState;

/// A connected client: the session and its root as `ISystemManager`.
struct Client {
    session: RpcSession,
    sm: Strong<dyn ISystemManager>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.session.close_session();
    }
}

fn connect(path: &Path) -> Client {
    let mut last = None;
    for _ in 0..250 {
        match RpcSession::setup_client_android13plus_with_config(
            RpcClientConfig::unix(path, 2).incoming_connections(1),
        ) {
            Ok(session) => {
                let root = session.get_root().expect("root object");
                let sm = <dyn ISystemManager as rsbinder::FromIBinder>::try_from(root)
                    .expect("an ISystemManager");
                return Client { session, sm };
            }
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("cannot connect to {}: {last:?}", path.display());
}

/// A listener that forwards its callbacks into a channel.
struct Recorder(Mutex<Sender<String>>);

impl Interface for Recorder {}

impl IPowerStateListener for Recorder {
    fn onApPowerStateReq(&self, value: i32, param: i32) -> rsbinder::BinderResult<()> {
        let _ = self.0.lock().unwrap().send(format!("req {value} {param}"));
        Ok(())
    }
    fn onSystemStateChanged(&self, s: &SystemState) -> rsbinder::BinderResult<()> {
        let _ = self.0.lock().unwrap().send(format!("system {}", s.state));
        Ok(())
    }
}

fn listener() -> (Strong<dyn IPowerStateListener>, Receiver<String>) {
    let (tx, rx) = channel();
    (
        BnPowerStateListener::new_binder(Recorder(Mutex::new(tx))),
        rx,
    )
}

fn expect(rx: &Receiver<String>, want: &str) {
    let mut seen = Vec::new();
    while let Ok(got) = rx.recv_timeout(Duration::from_secs(10)) {
        if got == want {
            return;
        }
        seen.push(got);
    }
    panic!("no callback {want:?}; got {seen:?}");
}

/// Waits for the callback `onApPowerStateReq(req, param)` on `rx`.
fn expect_req(rx: &Receiver<String>, req: i32, param: i32) {
    expect(rx, &format!("req {req} {param}"));
}

/// Android's side of the boot handshake on `sm`: a listener registered,
/// then `WAIT_FOR_VHAL`, which the arbiter answers with `ON`.
fn wait_for_vhal(
    sm: &Strong<dyn ISystemManager>,
) -> (Strong<dyn IPowerStateListener>, Receiver<String>) {
    let (l, rx) = listener();
    sm.registerListener(&l).expect("registerListener");
    sm.reportApPowerState(ism::REPORT_WAIT_FOR_VHAL, 0)
        .expect("report");
    expect_req(&rx, ism::REQ_ON, 0);
    (l, rx)
}

/// A test directory `tag` with the android and cluster policy, a running
/// MCU simulator and the daemon serving it.
fn binder_rig(tag: &str) -> (PathBuf, Mcu, Proc) {
    let dir = tmpdir(tag);
    write_android_cluster_policy(&dir);
    let mcu = Mcu::start(&dir);
    let daemon = daemon(&dir);
    (dir, mcu, daemon)
}

fn inputs(dir: &Path) -> usize {
    log_lines(dir).len()
}

#[test]
fn the_vhal_handshake_over_rpc_binder() {
    let (dir, mut mcu, _d) = binder_rig("binder");
    let guest_sock = dir.join("android.vsock_4200");
    let host_sock = dir.join("state/binder/sysmgr.sock");
    wait_until("the host endpoint", 10, || host_sock.exists());
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir.join("state/binder")), 0o700);
    assert_eq!(mode(&host_sock), 0o600);

    // Host tools: a query is answered and not logged.
    let host = connect(&host_sock);
    let before = inputs(&dir);
    let s = host.sm.getSystemState().expect("getSystemState");
    assert_eq!(s.state, ism::SYSTEM_OFF);
    assert_eq!(
        s.guests.iter().map(|g| g.name.as_str()).collect::<Vec<_>>(),
        ["android", "cluster"]
    );
    assert!(host.sm.dumpState().expect("dumpState").contains("android"));
    assert_eq!(inputs(&dir), before, "queries must not be logged");
    // Guest-only calls are refused on the host socket.
    let e = host.sm.reportApPowerState(1, 0).expect_err("not a guest");
    assert_eq!(e.service_specific_error(), ism::ERROR_NOT_A_GUEST);
    let e = host.sm.getGuestState("nobody").expect_err("unknown guest");
    assert_eq!(e.exception_code(), ExceptionCode::IllegalArgument);
    let (host_l, host_rx) = listener();
    host.sm.registerListener(&host_l).expect("host listener");
    expect(&host_rx, &format!("system {}", ism::SYSTEM_OFF));

    // Boot: ignition on, the VMMs appear.
    let (av, cv) = start_android_and_cluster(&mut mcu, &dir, "ignition on");
    expect(&host_rx, &format!("system {}", ism::SYSTEM_ON));

    // The guest: a listener, then WAIT_FOR_VHAL; the arbiter answers ON.
    let guest = connect(&guest_sock);
    let (_l, rx) = wait_for_vhal(&guest.sm);
    assert_eq!(
        guest.sm.getApPowerStateReq().expect("req"),
        [ism::REQ_ON, 0]
    );
    assert!(log_lines(&dir)
        .iter()
        .any(|l| l.contains(r#""type":"ap_power_state_report","guest":"android","value":1"#)));

    // A second client (the host) sees the same state.
    let g = host.sm.getGuestState("android").expect("guest state");
    assert!(
        g.binderConnected && g.hasApPowerStateReq && g.apPowerStateReq == ism::REQ_ON,
        "{g:?}"
    );

    // An undefined report is rejected with the arbiter's reason, logged.
    let e = guest.sm.reportApPowerState(99, 0).expect_err("rejected");
    assert_eq!(e.service_specific_error(), ism::ERROR_REJECTED);
    assert!(format!("{e:?}").contains("99"), "{e:?}");

    // Ignition off: SHUTDOWN_PREPARE(SHUTDOWN_ONLY) arrives as a callback
    // (sent from the daemon's loop, not inside a call); postpone, start,
    // and the final power-off is allowed with FINISHED.
    mcu.cmd("ignition off");
    expect_req(
        &rx,
        ism::REQ_SHUTDOWN_PREPARE,
        ism::SHUTDOWN_PARAM_SHUTDOWN_ONLY,
    );
    expect(
        &host_rx,
        &format!("system {}", ism::SYSTEM_SHUTDOWN_PREPARE),
    );
    guest.sm.postponeShutdown(5000).expect("postpone");
    assert!(
        log_lines(&dir).iter().any(|l| l.contains("granted")),
        "postpone logged"
    );
    guest
        .sm
        .reportApPowerState(ism::REPORT_SHUTDOWN_START, 0)
        .expect("start");
    let id = av.request(PowerRequestKind::Poweroff);
    wait_until("allow", 10, || av.got(decide(id, Decision::Allow)));
    expect_req(&rx, ism::REQ_FINISHED, 0);
    wait_until("power off", 20, || mcu.count("POWER_OFF") > 0);
    expect(&host_rx, &format!("system {}", ism::SYSTEM_POWERING_OFF));
    drop(cv);
}

#[test]
fn shutdown_request_during_a_wake_hold_and_unregister() {
    let (dir, mut mcu, _d) = binder_rig("binder-req");
    let (av, cv) = start_android_and_cluster(&mut mcu, &dir, "wake SYSTEM_REMOTE_ACCESS");
    let guest = connect(&dir.join("android.vsock_4200"));
    let (l, rx) = wait_for_vhal(&guest.sm);
    // Undefined parameter: rejected.
    let e = guest.sm.requestShutdown(0).expect_err("bad param");
    assert_eq!(e.service_specific_error(), ism::ERROR_REJECTED);
    // Only the wake hold keeps the head unit on: the request ends it.
    guest
        .sm
        .requestShutdown(ism::SHUTDOWN_PARAM_SHUTDOWN_ONLY)
        .expect("request");
    expect_req(
        &rx,
        ism::REQ_SHUTDOWN_PREPARE,
        ism::SHUTDOWN_PARAM_SHUTDOWN_ONLY,
    );
    assert!(log_lines(&dir)
        .iter()
        .any(|l| l.contains("shutdown_request")));
    // After unregistering, no more callbacks for this listener.
    guest.sm.unregisterListener(&l).expect("unregister");
    // A callback already taken by the sender thread may still land.
    std::thread::sleep(Duration::from_millis(300));
    while rx.try_recv().is_ok() {}
    mcu.cmd("ignition on");
    wait_until("cancel logged", 10, || {
        log_lines(&dir)
            .iter()
            .any(|l| l.contains("CANCEL_SHUTDOWN"))
    });
    assert!(
        rx.recv_timeout(Duration::from_millis(500)).is_err(),
        "an unregistered listener was called"
    );
    // A listener registered now gets the current request at once.
    let (l2, rx2) = listener();
    guest.sm.registerListener(&l2).expect("register again");
    expect_req(&rx2, ism::REQ_CANCEL_SHUTDOWN, 0);
    drop((av, cv));
}

#[test]
fn garbage_on_the_guest_endpoint_leaves_the_daemon_serving() {
    use std::io::Write;
    let (dir, _mcu, d) = binder_rig("binder-garbage");
    let guest_sock = dir.join("android.vsock_4200");
    wait_until("the guest endpoint", 10, || guest_sock.exists());
    for junk in [
        &b"\x00\x00\x00\x00"[..],
        b"GET / HTTP/1.0\r\n\r\n",
        &[0xff; 4096],
        b"",
    ] {
        let mut s = std::os::unix::net::UnixStream::connect(&guest_sock).expect("connect");
        let _ = s.write_all(junk);
        let _ = s.shutdown(std::net::Shutdown::Write);
    }
    let _held_open = std::os::unix::net::UnixStream::connect(&guest_sock).expect("silent peer");
    let c = connect(&guest_sock);
    assert_eq!(
        c.sm.getSystemState().expect("still serving").state,
        ism::SYSTEM_OFF
    );
    let host = connect(&dir.join("state/binder/sysmgr.sock"));
    assert!(host.sm.getSystemState().is_ok());
    assert!(!d.text().contains("panicked"), "{}", d.text());
}

fn cli(target: &str, words: &str) -> Result<String, String> {
    use vmstack_android::cli;
    let args: Vec<String> = format!("--rpc unix:{target} {words}")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let (t, words) = cli::parse_target(&args).map_err(|e| format!("{e:#}"))?;
    let conn = cli::connect(&t).map_err(|e| format!("{e:#}"))?;
    let mut out = Vec::new();
    cli::run(&conn, &words, &mut out).map_err(|e| format!("{e:#}"))?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[test]
fn the_cli_over_rpc_binder() {
    let (dir, mut mcu, d) = binder_rig("binder-cli");
    let host = dir.join("state/binder/sysmgr.sock");
    let guest = dir.join("android.vsock_4200");
    wait_until("the endpoints", 10, || host.exists() && guest.exists());
    let (h, g) = (host.to_str().unwrap(), guest.to_str().unwrap());

    let list = cli(h, "list").expect("list");
    assert_eq!(
        list,
        "Found 1 services:\n0\tsysmgr: [vmstack.sysmgr.ISystemManager]\n"
    );
    assert_eq!(
        cli(h, "check sysmgr").expect("check"),
        "Service sysmgr: found\n"
    );
    assert_eq!(
        cli(h, "check nope").expect("check"),
        "Service nope: not found\n"
    );
    let s = cli(h, "call sysmgr getSystemState").expect("typed call");
    assert!(
        s.starts_with("SystemState {\n  state: 0\n  description: \"off\""),
        "{s}"
    );
    assert!(s.contains("name: \"cluster\""), "{s}");
    // Raw call, `service call` style: code 1 = getSystemState.
    let raw = cli(h, "call sysmgr 1").expect("raw call");
    assert!(
        raw.starts_with("Result: Parcel(\n  0x00000000: 00000000 00000001"),
        "{raw}"
    );
    assert!(cli(h, "dump").expect("dump").contains("GUEST"));

    // Clear one-line errors.
    for (words, needle) in [
        ("call nope getSystemState", "service \"nope\" not found"),
        (
            "call sysmgr getSystemStat",
            "has no method \"getSystemStat\"",
        ),
        ("call sysmgr getGuestState", "takes 1 argument"),
        (
            "call sysmgr requestShutdown soon",
            "\"soon\" is not a valid int",
        ),
        ("call sysmgr 1 int 5", "unknown argument type \"int\""),
        (
            "call sysmgr reportApPowerState 1 0",
            "ERROR_NOT_A_GUEST".trim_start_matches("ERROR_"),
        ),
        ("frobnicate", "unknown command"),
    ] {
        let e = cli(h, words).expect_err(words);
        assert!(
            e.contains(needle) || (needle == "NOT_A_GUEST" && e.contains("host's socket")),
            "{words}: {e}"
        );
        assert!(!e.contains('\n') || words == "frobnicate", "{words}: {e}");
    }

    // The guest's endpoint: watch prints the callbacks while the arbiter
    // drives the handshake (the fake VMMs stand in for the VMs).
    let (av, cv) = start_android_and_cluster(&mut mcu, &dir, "ignition on");
    let g2 = g.to_string();
    let watcher = std::thread::spawn(move || cli(&g2, "watch --count 4 --seconds 30"));
    std::thread::sleep(Duration::from_millis(500));
    cli(g, "call sysmgr reportApPowerState REPORT_WAIT_FOR_VHAL 0").expect("report");
    mcu.cmd("ignition off");
    wait_until("SHUTDOWN_PREPARE", 10, || {
        log_lines(&dir)
            .iter()
            .any(|l| l.contains("SHUTDOWN_PREPARE"))
    });
    let out = watcher.join().expect("watch thread").expect("watch");
    assert!(out.contains("onSystemStateChanged on ignition=on"), "{out}");
    assert!(out.contains("onApPowerStateReq ON [0, 0]"), "{out}");
    assert!(
        out.contains("onApPowerStateReq SHUTDOWN_PREPARE(SHUTDOWN_ONLY) [1, 3]"),
        "{out}"
    );
    // A second client sees the same state.
    let s = cli(h, "call sysmgr getGuestState android").expect("guest state");
    assert!(
        s.contains("apPowerStateReq: 1") && s.contains("apPowerStateReqParam: 3"),
        "{s}"
    );
    assert_eq!(
        cli(g, "call sysmgr getApPowerStateReq").expect("req"),
        "[1, 3]\n"
    );

    // A dead peer.
    drop(d);
    let e = cli(h, "call sysmgr getSystemState").expect_err("daemon gone");
    assert!(
        e.contains("is sysmgr running") || e.contains("dead peer"),
        "{e}"
    );
    drop((av, cv));
}

#[test]
fn the_guest_gateway_forwards_calls_and_callbacks_and_survives_a_daemon_restart() {
    use vmstack_android::conn::RpcAddr;
    use vmstack_android::gateway::{Gateway, GatewayService};
    let (dir, mut mcu, d) = binder_rig("binder-gw");
    let guest = dir.join("android.vsock_4200");
    wait_until("the guest endpoint", 10, || guest.exists());
    let gw = Gateway::new(RpcAddr::Unix(guest.clone()));
    gw.connect().expect("connect");
    let svc = GatewayService(gw.clone());
    let (l, rx) = listener();
    svc.registerListener(&l)
        .expect("register through the gateway");
    expect(&rx, &format!("system {}", ism::SYSTEM_OFF));
    let (av, cv) = start_android_and_cluster(&mut mcu, &dir, "ignition on");
    svc.reportApPowerState(ism::REPORT_WAIT_FOR_VHAL, 0)
        .expect("report");
    expect_req(&rx, ism::REQ_ON, 0);

    // The daemon restarts (kill -9 of the old one): the next call
    // reconnects, and the listener is registered again.
    drop(d);
    let _d2 = daemon(&dir);
    wait_until("the guest endpoint again", 10, || {
        std::os::unix::net::UnixStream::connect(&guest).is_ok()
    });
    let s = svc
        .getSystemState()
        .expect("a call after the restart reconnects");
    assert_eq!(s.state, ism::SYSTEM_ON);
    mcu.cmd("ignition off");
    expect_req(
        &rx,
        ism::REQ_SHUTDOWN_PREPARE,
        ism::SHUTDOWN_PARAM_SHUTDOWN_ONLY,
    );
    drop((av, cv));
}
