//! The daemon tests' shared harness: fake VMMs that speak the VMM control
//! protocol (`vmm-protocol`) in-process, and the real MCU simulator
//! (`mcu-sim`) and daemon (`sysmgr`) binaries as child processes.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vmm_protocol::{Answer, Decision, Event, PowerRequestKind, Request, Response, Status, VmState};

pub const SYSMGR: &str = env!("CARGO_BIN_EXE_sysmgr");
pub const MCU_SIM: &str = env!("CARGO_BIN_EXE_mcu-sim");

pub fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sysmgr-it-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn wait_until(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for {what}");
}

/// `decide ID DECISION`.
pub fn decide(id: u64, decision: Decision) -> Request {
    Request::Decide { id, decision }
}

// ------------------------------------------------------------ fake VMM

pub struct VmmState {
    pub state: VmState,
    pub pending: BTreeMap<u64, PowerRequestKind>,
    pub next_id: u64,
    pub received: Vec<Request>,
    pub writer: Option<UnixStream>,
    pub alive: bool,
    /// Simulates a lost answer: `decide` is acknowledged but not applied.
    pub drop_decides: bool,
    /// Simulates a VMM that hangs on `stop`: acknowledged, nothing happens.
    pub ignore_stop: bool,
    pub boots: u64,
}

/// A VMM control socket: `attach`, `decide`, `pause`, `resume`, `stop`,
/// `status`, with the VMM's events.
#[derive(Clone)]
pub struct FakeVmm {
    pub path: PathBuf,
    pub s: Arc<Mutex<VmmState>>,
}

impl FakeVmm {
    pub fn start(path: &Path) -> FakeVmm {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let s = Arc::new(Mutex::new(VmmState {
            state: VmState::Running,
            pending: BTreeMap::new(),
            next_id: 1,
            received: Vec::new(),
            writer: None,
            alive: true,
            drop_decides: false,
            ignore_stop: false,
            boots: 1,
        }));
        let fake = FakeVmm {
            path: path.to_path_buf(),
            s,
        };
        let f = fake.clone();
        std::thread::spawn(move || loop {
            if !f.s.lock().unwrap().alive {
                return;
            }
            match listener.accept() {
                Ok((stream, _)) => {
                    stream.set_nonblocking(false).unwrap();
                    let f2 = f.clone();
                    std::thread::spawn(move || f2.serve(stream));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        });
        fake
    }

    pub fn publish(st: &mut VmmState, event: Event) {
        if let Some(w) = st.writer.as_mut() {
            let _ = w.write_all(format!("{event}\n").as_bytes());
        }
    }

    pub fn set_state(st: &mut VmmState, state: VmState) {
        st.state = state;
        Self::publish(st, Event::State(state));
    }

    pub fn exit(st: &mut VmmState, path: &Path) {
        st.alive = false;
        if let Some(w) = st.writer.take() {
            let _ = w.shutdown(std::net::Shutdown::Both);
        }
        let _ = std::fs::remove_file(path);
    }

    pub fn serve(&self, stream: UnixStream) {
        let w = stream.try_clone().unwrap();
        let mut out = stream.try_clone().unwrap();
        let mut answer = |response: Response| {
            let _ = out.write_all(format!("{response}\n").as_bytes());
        };
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { return };
            let mut st = self.s.lock().unwrap();
            if !st.alive {
                return;
            }
            let request = match line.parse::<Request>() {
                Ok(request) => request,
                Err(e) => {
                    answer(Response::error(e));
                    continue;
                }
            };
            st.received.push(request);
            match request {
                Request::Attach => {
                    answer(Response::Ok(Answer::Attached));
                    st.writer = Some(w.try_clone().unwrap());
                    let state = st.state;
                    Self::publish(&mut st, Event::State(state));
                    let pending: Vec<_> = st.pending.iter().map(|(i, k)| (*i, *k)).collect();
                    for (id, kind) in pending {
                        Self::publish(&mut st, Event::PowerRequest { id, kind });
                    }
                }
                Request::Status => answer(Response::Ok(Answer::Status(Status {
                    state: st.state,
                    arbitrated: true,
                    pending: st.pending.len() as u64,
                    boots: st.boots,
                    arbiters: u64::from(st.writer.is_some()),
                }))),
                Request::Decide { id, decision } => {
                    answer(Response::Ok(Answer::Decided));
                    if st.drop_decides {
                        continue;
                    }
                    let kind = st.pending.remove(&id).expect("decided a pending request");
                    match (decision, kind) {
                        (Decision::Allow, PowerRequestKind::Poweroff) => {
                            return Self::exit(&mut st, &self.path)
                        }
                        (Decision::Allow, PowerRequestKind::Reboot) | (Decision::RestartVm, _) => {
                            st.boots += 1;
                            st.pending.clear();
                            Self::set_state(&mut st, VmState::Running);
                        }
                        (Decision::Allow, PowerRequestKind::Suspend) => {
                            Self::set_state(&mut st, VmState::Suspended)
                        }
                        (Decision::HoldVirtuallyOff, _) => {
                            Self::set_state(&mut st, VmState::VirtuallyOff)
                        }
                        (Decision::Refuse, _) => {}
                    }
                }
                Request::Pause => {
                    answer(Response::Ok(Answer::Paused));
                    Self::set_state(&mut st, VmState::Paused);
                }
                Request::Resume => {
                    answer(Response::Ok(Answer::Resumed));
                    if st.state == VmState::VirtuallyOff {
                        st.boots += 1;
                        st.pending.clear();
                    }
                    Self::set_state(&mut st, VmState::Running);
                }
                Request::Stop => {
                    answer(Response::Ok(Answer::Stopping));
                    if st.ignore_stop {
                        continue;
                    }
                    return Self::exit(&mut st, &self.path);
                }
                Request::PowerButton | Request::Events => {
                    answer(Response::error("not in this fake"));
                }
            }
        }
    }

    /// The guest's kernel makes its final power step.
    pub fn request(&self, kind: PowerRequestKind) -> u64 {
        let mut st = self.s.lock().unwrap();
        let id = st.next_id;
        st.next_id += 1;
        st.pending.insert(id, kind);
        Self::publish(&mut st, Event::PowerRequest { id, kind });
        id
    }

    pub fn received(&self) -> Vec<Request> {
        self.s.lock().unwrap().received.clone()
    }

    pub fn got(&self, request: Request) -> bool {
        self.received().contains(&request)
    }

    pub fn alive(&self) -> bool {
        self.s.lock().unwrap().alive
    }

    pub fn attached(&self) -> bool {
        self.s.lock().unwrap().writer.is_some()
    }

    /// The VMM process disappears (crash, kill).
    pub fn vanish(&self) {
        let mut st = self.s.lock().unwrap();
        Self::exit(&mut st, &self.path);
    }
}

// ------------------------------------------------------------ processes

pub struct Proc {
    pub child: Child,
    pub out: PathBuf,
}

impl Proc {
    pub fn text(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Mcu {
    pub p: Proc,
    pub stdin: ChildStdin,
}

impl Mcu {
    pub fn start(dir: &Path) -> Mcu {
        let out = dir.join("mcu.out");
        let mut child = Command::new(MCU_SIM)
            .arg("--socket")
            .arg(dir.join("mcu.sock"))
            .stdin(Stdio::piped())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let m = Mcu {
            p: Proc { child, out },
            stdin,
        };
        wait_until("the MCU simulator to listen", 10, || {
            m.p.text().contains("listening")
        });
        m
    }

    pub fn cmd(&mut self, line: &str) {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .unwrap();
    }

    pub fn count(&self, needle: &str) -> usize {
        self.p.text().matches(needle).count()
    }
}

pub fn daemon(dir: &Path) -> Proc {
    daemon_with(dir, &[])
}

/// The daemon with extra `sysmgr run` options.
pub fn daemon_with(dir: &Path, extra: &[&str]) -> Proc {
    let out = dir.join(format!(
        "sysmgr-{}.err",
        std::fs::read_dir(dir).unwrap().count()
    ));
    let child = Command::new(SYSMGR)
        .args(["run", "--policy"])
        .arg(dir.join("policy.toml"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--mcu-socket")
        .arg(dir.join("mcu.sock"))
        // Sandboxed, but staying uid 0 (without capabilities): the fake
        // VMMs and the MCU simulator here are root's, with root's sockets.
        // The nested test runs the daemon as its default sandbox user.
        .args(["--sandbox-user", "0"])
        .args(extra)
        .env("SYSMGR_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&out).unwrap())
        .spawn()
        .unwrap();
    let p = Proc { child, out };
    let sock = dir.join("state/sysmgr.sock");
    wait_until("the daemon's control socket", 10, || {
        UnixStream::connect(&sock).is_ok()
    });
    p
}

/// Sends the MCU `mcu_command` (e.g. `ignition on`), waits for the
/// daemon's `StartVm`, then starts the fake VMMs of `android` and
/// `cluster` (policies without launch commands wait for VMMs started by
/// someone else) and waits until the daemon attached to both.
pub fn start_android_and_cluster(
    mcu: &mut Mcu,
    dir: &Path,
    mcu_command: &str,
) -> (FakeVmm, FakeVmm) {
    mcu.cmd(mcu_command);
    wait_until("StartVm", 10, || {
        log_lines(dir).iter().any(|l| l.contains("start_vm"))
    });
    let av = FakeVmm::start(&dir.join("android.ctl"));
    let cv = FakeVmm::start(&dir.join("cluster.ctl"));
    wait_until("both VMMs attached", 10, || av.attached() && cv.attached());
    (av, cv)
}

/// `sysmgr run` with a policy, a state directory and an MCU socket, to
/// its end (a refusal): (success, stdout, stderr).
pub fn sysmgr_run(policy: &Path, state_dir: &Path, mcu_socket: &Path) -> (bool, String, String) {
    let arg = |p: &Path| p.to_str().expect("test paths are UTF-8").to_string();
    let (policy, state_dir, mcu_socket) = (arg(policy), arg(state_dir), arg(mcu_socket));
    sysmgr(&[
        "run",
        "--policy",
        &policy,
        "--state-dir",
        &state_dir,
        "--mcu-socket",
        &mcu_socket,
    ])
}

/// Runs `sysmgr ARGS` to completion (killed after 20 s: a `run` that
/// should have refused to start must not hang the test).
pub fn sysmgr(args: &[&str]) -> (bool, String, String) {
    let mut child = Command::new(SYSMGR)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > end {
            let _ = child.kill();
            panic!("sysmgr {args:?} did not finish in 20 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let o = child.wait_with_output().unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

pub fn log_lines(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("state/decisions.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Writes `policy.toml` in `dir`: one guest of role `other` per entry
/// `(name, launch argv)`, with its control socket `<dir>/<name>.ctl`.
pub fn write_launch_policy(dir: &Path, guests: &[(&str, &[&str])]) {
    let d = dir.display();
    let mut text = String::new();
    for (name, argv) in guests {
        // `{:?}` of the argv is a TOML array of basic strings.
        text.push_str(&format!(
            "[[guest]]\nname = \"{name}\"\nrole = \"other\"\ncontrol_socket = \"{d}/{name}.ctl\"\nlaunch = {argv:?}\n\n"
        ));
    }
    std::fs::write(dir.join("policy.toml"), text).unwrap();
}

/// Writes `policy.toml` in `dir`: an android guest with a vsock socket (the
/// binder endpoint) and a cluster guest, both with control sockets in `dir`.
pub fn write_android_cluster_policy(dir: &Path) {
    write_two_guest_policy(dir, "wake_hold_ms = 600000", "", 3000);
}

/// Writes `policy.toml` in `dir`: the `[system]` table with short timers
/// and `extra_system`, an android guest (vsock socket in `dir`, plus
/// `android_extra`) and a cluster guest with `cluster_deadline_ms`, both
/// with control sockets in `dir`.
pub fn write_two_guest_policy(
    dir: &Path,
    extra_system: &str,
    android_extra: &str,
    cluster_deadline_ms: u64,
) {
    let d = dir.display();
    std::fs::write(
        dir.join("policy.toml"),
        format!(
            r#"[system]
shutdown_deadline_ms = 20000
final_grace_ms = 3000
vm_exit_grace_ms = 2000
{extra_system}

[[guest]]
name = "android"
role = "android"
control_socket = "{d}/android.ctl"
vsock_socket = "{d}/android.vsock"
{android_extra}

[[guest]]
name = "cluster"
role = "cluster"
shutdown_deadline_ms = {cluster_deadline_ms}
control_socket = "{d}/cluster.ctl"
"#
        ),
    )
    .unwrap();
}
