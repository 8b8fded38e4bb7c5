//! Starting VMMs from outside the daemon's sandbox.
//!
//! A seccomp filter, a landlock domain, `no_new_privs` and dropped
//! capabilities are inherited by every process a process starts: a VMM
//! launched by the sandboxed daemon could not open `/dev/kvm`, its images
//! or its tap. So before it enters the sandbox, `sysmgr run` forks this
//! **launcher process**, which keeps the privileges it was started with and
//! does one thing: start (and kill) the VMMs of the policy's guests. It
//! reads the launch commands from the policy *before* the fork: the daemon
//! can ask it to start or kill guest `NAME`, never to run a command of its
//! choosing.
//!
//! Protocol: JSON lines over a socketpair.
//!
//! ```text
//! daemon -> launcher:  {"launch":"android"}   {"kill":"android"}
//! launcher -> daemon:  {"launched":"android","pid":181}
//!                      {"failed":"android","why":"cannot launch /bin/vmm: ..."}
//!                      {"exited":"android","pid":181,"code":0,"signal":null}
//! ```
//!
//! A VMM runs in its own process group with stdin `/dev/null` and its
//! output going to `<state-dir>/<guest>.vmm.log`, capped and rotated
//! (`crate::vmm_log`); its pid goes to
//! `<guest>.pid`. The launcher opens a pidfd for it at spawn time and
//! kills it only through that (`crate::pidfd`). The launcher ends when the daemon's end of the socketpair
//! closes (the daemon died); its VMMs run on.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use system_manager::VmmExit;
use tokio::sync::{oneshot, watch};

/// How to start one guest's VMM.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    /// The guest.
    pub guest: String,
    /// The policy's `launch` command.
    pub argv: Vec<String>,
    /// Where its output goes (appended, capped and rotated).
    pub log: PathBuf,
    /// Where its pid goes.
    pub pid_file: PathBuf,
}

/// A message from the daemon.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Ask {
    Launch(String),
    Kill(String),
}

/// A message from the launcher.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
enum Tell {
    Launched {
        launched: String,
        pid: u32,
    },
    Failed {
        failed: String,
        why: String,
    },
    Exited {
        exited: String,
        pid: u32,
        code: Option<i32>,
        signal: Option<i32>,
    },
}

/// Forks the launcher process for `specs`. Call while the process has a
/// single thread (before the tokio runtime): the child runs only
/// [`serve`] and never returns.
pub fn fork(specs: Vec<LaunchSpec>) -> io::Result<UnixStream> {
    let (daemon_end, launcher_end) = UnixStream::pair()?;
    // SAFETY: the process is single-threaded (the caller's contract), so
    // the child may run ordinary Rust code; it never returns from here.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        drop(daemon_end);
        let code = match serve(launcher_end, &specs) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("sysmgr launcher: {e}");
                1
            }
        };
        // SAFETY: leave the child process without unwinding into the
        // daemon's code.
        unsafe { libc::_exit(code) };
    }
    drop(launcher_end);
    tracing::info!("VMM launcher process {pid} started (outside the sandbox)");
    Ok(daemon_end)
}

fn tell(out: &mut impl Write, message: &Tell) -> io::Result<()> {
    let mut line = serde_json::to_string(message).map_err(io::Error::other)?;
    line.push('\n');
    out.write_all(line.as_bytes())
}

/// The command that starts a VMM from `argv`: stdin closed, stdout and
/// stderr into its capped log `log` (`crate::vmm_log`), in a process group
/// of its own. Returned with the program's name, for messages. Used by the
/// launcher process and by an unsandboxed daemon alike.
pub(crate) fn vmm_command<'a>(
    argv: &'a [String],
    log: &Path,
) -> Result<(Command, &'a str), String> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| "empty launch command".to_string())?;
    let (out, err) = crate::vmm_log::outputs(log)?;
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        // Its own process group: a signal to the daemon's group (Ctrl-C,
        // kill -9 of the daemon) does not take the VMs with it.
        .process_group(0);
    Ok((command, program))
}

fn launch(spec: &LaunchSpec) -> Result<Child, String> {
    let (mut command, program) = vmm_command(&spec.argv, &spec.log)?;
    let child = command
        .spawn()
        .map_err(|e| format!("cannot launch {program}: {e}"))?;
    let _ = std::fs::write(&spec.pid_file, format!("{}\n", child.id()));
    Ok(child)
}

/// The longest request line the launcher reads (a request names one guest).
const MAX_REQUEST_LINE: usize = 4096;

/// The launcher's loop: requests in, VMMs out, exits reported.
fn serve(sock: UnixStream, specs: &[LaunchSpec]) -> io::Result<()> {
    let mut out = sock.try_clone()?;
    let mut reader = BufReader::new(sock);
    let mut children: HashMap<String, Child> = HashMap::new();
    // A pidfd per child, opened at spawn time (not yet reaped: the pid is
    // that child's); kills go through it.
    let mut pidfds: HashMap<String, crate::pidfd::PidFd> = HashMap::new();
    let mut line = String::new();
    loop {
        // Wait for a request, at most 200 ms, then reap ended children. A
        // request already read into the buffer (several arrived at once)
        // is ready without waiting: the socket has nothing more to say.
        let ready = !reader.buffer().is_empty() || {
            let mut pfd = libc::pollfd {
                fd: reader.get_ref().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd for the call.
            unsafe { libc::poll(&mut pfd, 1, 200) > 0 }
        };
        if ready {
            line.clear();
            // Capped: the daemon is sandboxed, this process is not; a
            // compromised daemon must not make it buffer without limit.
            let limit = MAX_REQUEST_LINE as u64 + 1;
            if reader.by_ref().take(limit).read_line(&mut line)? == 0 {
                return Ok(()); // the daemon is gone; the VMMs run on
            }
            if !line.ends_with('\n') && line.len() > MAX_REQUEST_LINE {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("a request line longer than {MAX_REQUEST_LINE} bytes"),
                ));
            }
            match serde_json::from_str::<Ask>(line.trim()) {
                Ok(Ask::Launch(guest)) => {
                    let reply = match specs.iter().find(|s| s.guest == guest) {
                        None => Tell::Failed {
                            failed: guest,
                            why: "no launch command for this guest".into(),
                        },
                        Some(spec) => match launch(spec) {
                            Ok(child) => {
                                let pid = child.id();
                                match crate::pidfd::PidFd::open(pid) {
                                    Ok(fd) => {
                                        pidfds.insert(guest.clone(), fd);
                                    }
                                    Err(e) => eprintln!(
                                        "sysmgr launcher: no pidfd for {guest}'s VMM (pid {pid}): {e}"
                                    ),
                                }
                                children.insert(guest.clone(), child);
                                Tell::Launched {
                                    launched: guest,
                                    pid,
                                }
                            }
                            Err(why) => Tell::Failed { failed: guest, why },
                        },
                    };
                    tell(&mut out, &reply)?;
                }
                Ok(Ask::Kill(guest)) => {
                    // Only a child it started and has not reaped, through
                    // its pidfd (or, without one, the unreaped child's pid,
                    // which cannot have been reused either).
                    match (pidfds.get(&guest), children.get_mut(&guest)) {
                        (Some(fd), _) => {
                            let _ = fd.kill();
                        }
                        (None, Some(child)) => {
                            let _ = child.kill();
                        }
                        (None, None) => {}
                    }
                }
                Err(e) => eprintln!("sysmgr launcher: ignoring a malformed request: {e}"),
            }
        }
        let mut ended = Vec::new();
        for (guest, child) in &mut children {
            if let Ok(Some(status)) = child.try_wait() {
                ended.push((guest.clone(), child.id(), status));
            }
        }
        for (guest, pid, status) in ended {
            children.remove(&guest);
            pidfds.remove(&guest);
            tell(
                &mut out,
                &Tell::Exited {
                    exited: guest,
                    pid,
                    code: status.code(),
                    signal: status.signal(),
                },
            )?;
        }
    }
}

/// A VMM the launcher started.
#[derive(Debug)]
pub struct Launched {
    pid: u32,
    exit: watch::Receiver<Option<VmmExit>>,
    /// Its pidfd, for a VMM this process started itself (the launcher
    /// process keeps those of the VMMs it started).
    pidfd: Option<crate::pidfd::PidFd>,
}

impl Launched {
    /// A VMM this process started itself (no launcher process: the
    /// sandbox is disabled), whose end `exit` will report.
    pub fn watching(
        pid: u32,
        exit: watch::Receiver<Option<VmmExit>>,
        pidfd: Option<crate::pidfd::PidFd>,
    ) -> Self {
        Self { pid, exit, pidfd }
    }

    /// Its pidfd, if this process started it.
    pub fn pidfd(&self) -> Option<&crate::pidfd::PidFd> {
        self.pidfd.as_ref()
    }

    /// Its pid.
    pub fn id(&self) -> u32 {
        self.pid
    }

    /// How it ended, if it did.
    pub fn try_wait(&self) -> Option<VmmExit> {
        *self.exit.borrow()
    }

    /// Waits until it ends.
    pub async fn wait(&mut self) -> Option<VmmExit> {
        *self.exit.wait_for(Option::is_some).await.ok()?
    }
}

type Pending = HashMap<String, oneshot::Sender<Result<Launched, String>>>;

static INSTALLED: std::sync::OnceLock<Launcher> = std::sync::OnceLock::new();

/// Makes `launcher` the one every VMM link uses.
pub fn install(launcher: Launcher) {
    let _ = INSTALLED.set(launcher);
}

/// The installed launcher, if the daemon has one.
pub fn installed() -> Option<&'static Launcher> {
    INSTALLED.get()
}

/// The daemon's handle on the launcher process.
#[derive(Clone)]
pub struct Launcher {
    asks: tokio::sync::mpsc::UnboundedSender<Ask>,
    pending: Arc<Mutex<Pending>>,
}

impl Launcher {
    /// Serves the daemon's end `sock` of the socketpair on the current
    /// tokio runtime.
    pub fn start(sock: UnixStream) -> io::Result<Launcher> {
        sock.set_nonblocking(true)?;
        let sock = tokio::net::UnixStream::from_std(sock)?;
        let (read, mut write) = sock.into_split();
        let (asks, mut rx) = tokio::sync::mpsc::unbounded_channel::<Ask>();
        let pending: Arc<Mutex<Pending>> = Arc::default();
        let exits: Arc<Mutex<HashMap<u32, watch::Sender<Option<VmmExit>>>>> = Arc::default();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            while let Some(ask) = rx.recv().await {
                let Ok(mut line) = serde_json::to_string(&ask) else {
                    continue;
                };
                line.push('\n');
                if write.write_all(line.as_bytes()).await.is_err() {
                    tracing::error!("the VMM launcher process is gone; VMMs cannot be started");
                    return;
                }
            }
        });
        let (p, e) = (pending.clone(), exits);
        tokio::spawn(async move {
            let mut lines = crate::lines::LineReader::new(read, 4096);
            while let Ok(line) = lines.next_line().await {
                let Ok(message) = serde_json::from_str::<Tell>(&line) else {
                    tracing::warn!("malformed line from the VMM launcher: {line:?}");
                    continue;
                };
                match message {
                    Tell::Launched { launched, pid } => {
                        let (tx, rx) = watch::channel(None);
                        e.lock().unwrap_or_else(|x| x.into_inner()).insert(pid, tx);
                        let waiter = p
                            .lock()
                            .unwrap_or_else(|x| x.into_inner())
                            .remove(&launched);
                        if let Some(w) = waiter {
                            let _ = w.send(Ok(Launched {
                                pid,
                                exit: rx,
                                pidfd: None,
                            }));
                        }
                    }
                    Tell::Failed { failed, why } => {
                        let waiter = p.lock().unwrap_or_else(|x| x.into_inner()).remove(&failed);
                        if let Some(w) = waiter {
                            let _ = w.send(Err(why));
                        }
                    }
                    Tell::Exited {
                        pid, code, signal, ..
                    } => {
                        if let Some(tx) = e.lock().unwrap_or_else(|x| x.into_inner()).remove(&pid) {
                            let _ = tx.send(Some(VmmExit { code, signal }));
                        }
                    }
                }
            }
            tracing::error!("the VMM launcher process closed its socket");
        });
        Ok(Launcher { asks, pending })
    }

    /// Starts guest `guest`'s VMM.
    pub async fn launch(&self, guest: &str) -> Result<Launched, String> {
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|x| x.into_inner())
            .insert(guest.to_string(), tx);
        self.asks
            .send(Ask::Launch(guest.to_string()))
            .map_err(|_| "the VMM launcher process is gone".to_string())?;
        rx.await
            .map_err(|_| "the VMM launcher process is gone".to_string())?
    }

    /// Kills guest `guest`'s VMM, if the launcher started it and it runs.
    pub fn kill(&self, guest: &str) {
        let _ = self.asks.send(Ask::Kill(guest.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        assert_eq!(
            serde_json::to_string(&Ask::Launch("a".into())).unwrap(),
            r#"{"launch":"a"}"#
        );
        let t: Tell =
            serde_json::from_str(r#"{"exited":"a","pid":5,"code":null,"signal":9}"#).unwrap();
        assert_eq!(
            t,
            Tell::Exited {
                exited: "a".into(),
                pid: 5,
                code: None,
                signal: Some(9)
            }
        );
    }

    #[test]
    fn an_endless_request_line_ends_the_launcher_instead_of_growing_its_buffer() {
        let (mut daemon, launcher) = UnixStream::pair().unwrap();
        let (done, ended) = std::sync::mpsc::channel();
        std::thread::spawn(move || done.send(serve(launcher, &[])));
        // Four times the cap, no newline, the daemon's end kept open: the
        // launcher stops reading at the cap and ends with an error (without
        // the cap it would wait for the end of the line for ever).
        daemon.set_nonblocking(true).unwrap();
        let _ = daemon.write(&[b'x'; 4 * MAX_REQUEST_LINE]);
        let e = ended
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the launcher still reads an endless line")
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        drop(daemon);
    }

    #[test]
    fn the_launcher_starts_only_policy_commands_reports_exits_and_kills() {
        let dir = crate::test_dir("launcher");
        let spec = |guest: &str, script: &str| LaunchSpec {
            guest: guest.into(),
            argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
            log: dir.join(format!("{guest}.log")),
            pid_file: dir.join(format!("{guest}.pid")),
        };
        let specs = vec![
            spec("quick", "echo hello; exit 3"),
            spec("slow", "sleep 30"),
        ];
        let (daemon, launcher) = UnixStream::pair().unwrap();
        let server = std::thread::spawn(move || serve(launcher, &specs));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let l = Launcher::start(daemon).unwrap();
            let mut quick = l.launch("quick").await.unwrap();
            assert_eq!(
                quick.wait().await,
                Some(VmmExit {
                    code: Some(3),
                    signal: None
                })
            );
            let mut slow = l.launch("slow").await.unwrap();
            assert!(slow.try_wait().is_none());
            l.kill("slow");
            assert_eq!(
                slow.wait().await,
                Some(VmmExit {
                    code: None,
                    signal: Some(libc::SIGKILL)
                })
            );
            // Two requests at once (one read gets both lines).
            let both = async { tokio::join!(l.launch("quick"), l.launch("slow")) };
            let (mut a, mut b) = tokio::time::timeout(std::time::Duration::from_secs(10), both)
                .await
                .expect("the second of two simultaneous requests was not served");
            let (a, b) = (a.as_mut().unwrap(), b.as_mut().unwrap());
            assert_eq!(a.wait().await.and_then(|e| e.code), Some(3));
            l.kill("slow");
            assert_eq!(b.wait().await.and_then(|e| e.signal), Some(libc::SIGKILL));
            let e = l.launch("other").await.unwrap_err();
            assert!(e.contains("no launch command"), "{e}");
        });
        drop(rt);
        server.join().unwrap().unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("quick.log")).unwrap(),
            "hello\nhello\n"
        );
        assert!(std::fs::read_to_string(dir.join("quick.pid")).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
