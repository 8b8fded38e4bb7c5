//! `vmm adb-proxy` in its sandbox (docs/security.md): the real binary
//! against a fake VMM's hybrid vsock socket. A forbidden system call from
//! each of its thread classes kills it with the call named; after
//! start-up it bridges bytes under its filters with no capability (and,
//! started as root, as the vsock socket's owner, a uid and gid without a
//! passwd entry); a socket its uid may not reach stops it at start-up;
//! `--disable-sandbox` turns the filters off.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The exit status of a process its sandbox killed.
const VIOLATION: i32 = sandbox::VIOLATION_EXIT_CODE;
/// How long the proxy may take to start or to die.
const PATIENCE: Duration = Duration::from_secs(20);
/// The fake VMM socket's owner when the tests run as root: neither
/// 65534 (`nobody`, the sandbox's general default) nor in /etc/passwd or
/// /etc/group, and uid != gid, so the proxy's credentials show that it
/// took the file's numeric owner and group.
const OWNER: (u32, u32) = (4242, 4243);
/// The exit status of a proxy that could not start (`VmmExitCode::SetupFailed`).
const SETUP_FAILED: i32 = 1;

/// A directory for one test's sockets and logs, that the socket's owner
/// ([`OWNER`]) can traverse.
fn test_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vmm-adb-proxy-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// A fake VMM on `path`: answers `CONNECT 5555` with `OK`, then echoes
/// until EOF. Started as root, the socket file is given to [`OWNER`] and
/// made `0600`, as a sandboxed VMM's is.
fn fake_vmm(path: &Path) {
    let listener = UnixListener::bind(path).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    if is_root() {
        std::os::unix::fs::chown(path, Some(OWNER.0), Some(OWNER.1)).unwrap();
    }
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() || line != "CONNECT 5555\n" {
                    return;
                }
                let mut writer = stream;
                if writer.write_all(b"OK 1073741824\n").is_err() {
                    return;
                }
                let mut buf = [0u8; 65536];
                while let Ok(n) = reader.read(&mut buf) {
                    if n == 0 || writer.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = writer.shutdown(Shutdown::Write);
            });
        }
    });
}

fn is_root() -> bool {
    // SAFETY: a plain credential query.
    unsafe { libc::geteuid() == 0 }
}

/// A free TCP port on 127.0.0.1.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `vmm adb-proxy` and its stderr file.
struct Proxy {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Proxy {
    /// Starts it on the fake VMM of `dir` with `extra` arguments and
    /// `probe` as the probed class.
    fn start(dir: &Path, probe: Option<&str>, extra: &[&str]) -> Proxy {
        let port = free_port();
        let log = dir.join(format!("proxy-{port}.log"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vmm"));
        cmd.arg("adb-proxy")
            .arg("--vsock-socket")
            .arg(dir.join("vsock.sock"))
            .args(["--port", &port.to_string()])
            .args(extra)
            .env_remove(sandbox::probe::ENV)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        if let Some(class) = probe {
            cmd.env(sandbox::probe::ENV, class);
        }
        Proxy {
            child: cmd.spawn().unwrap(),
            port,
            log,
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until it serves (its start-up line), or panics.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + PATIENCE;
        while !self.stderr().contains("vmm adb-proxy: 127.0.0.1:") {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the proxy exited ({status}): {}", self.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "no start-up line: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its exit status once it exited on its own, or panics.
    fn wait_exit(&mut self) -> i32 {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "still running: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `data` through one bridged connection and returns what came
    /// back (the fake VMM echoes).
    fn echo(&self, data: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut client = TcpStream::connect(("127.0.0.1", self.port))?;
        client.set_read_timeout(Some(PATIENCE))?;
        let writer = {
            let mut client = client.try_clone()?;
            let data = data.to_vec();
            std::thread::spawn(move || {
                let _ = client.write_all(&data);
                let _ = client.shutdown(Shutdown::Write);
            })
        };
        let mut back = Vec::new();
        let read = client.read_to_end(&mut back);
        let _ = writer.join();
        read.map(|_| back)
    }

    /// `/proc/<pid>/status` of its thread `tid` (the process if `None`).
    fn status(&self, tid: Option<&str>) -> String {
        let pid = self.child.id();
        let path = match tid {
            Some(t) => format!("/proc/{pid}/task/{t}/status"),
            None => format!("/proc/{pid}/status"),
        };
        std::fs::read_to_string(path).unwrap_or_default()
    }

    fn field(&self, name: &str) -> String {
        field(&self.status(None), name)
    }

    /// `Seccomp:` of every thread.
    fn seccomp_of_threads(&self) -> Vec<String> {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", self.child.id())).unwrap();
        tasks
            .map(|t| {
                field(
                    &self.status(Some(&t.unwrap().file_name().to_string_lossy())),
                    "Seccomp",
                )
            })
            .collect()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn field(status: &str, name: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no {name} in {status}"))
}

#[test]
fn a_forbidden_call_from_each_proxy_class_kills_it_naming_the_call() {
    if !sandbox::probe::available() {
        eprintln!("skipped: this build has no sandbox probe (a release build without test-hooks)");
        return;
    }
    let dir = test_dir("probe");
    fake_vmm(&dir.join("vsock.sock"));
    // (class, its first thread, whether a client must connect to start it;
    // conn-0 is the start-up check's connection)
    for (class, thread, connect) in [
        ("main", "main", false),
        ("launcher", "launcher", false),
        ("conn", "conn-0", false),
        ("up", "up-1", true),
    ] {
        let mut proxy = Proxy::start(&dir, Some(class), &[]);
        if connect {
            proxy.wait_ready();
            // The connection dies with the proxy.
            let _ = proxy.echo(b"never bridged");
        }
        let code = proxy.wait_exit();
        let err = proxy.stderr();
        assert_eq!(code, VIOLATION, "{class}: {err}");
        assert!(
            err.contains(&format!(
                "vmm adb-proxy: sandbox: thread {thread} (class {class}) made a forbidden system call: execve ("
            )),
            "{class}: {err}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_proxy_bridges_under_its_filters_and_holds_no_capability() {
    let dir = test_dir("confined");
    fake_vmm(&dir.join("vsock.sock"));
    let mut proxy = Proxy::start(&dir, None, &[]);
    proxy.wait_ready();
    // Two connections end to end (splice both ways, half-close), so every
    // thread class has run under its filter.
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(proxy.echo(&data).unwrap(), data);
    assert_eq!(proxy.echo(b"second").unwrap(), b"second");
    assert!(
        proxy.child.try_wait().unwrap().is_none(),
        "{}",
        proxy.stderr()
    );
    let zero = "0000000000000000";
    for set in ["CapInh", "CapPrm", "CapEff", "CapAmb"] {
        assert_eq!(proxy.field(set), zero, "{set}");
    }
    assert_eq!(proxy.field("NoNewPrivs"), "1");
    let threads = proxy.seccomp_of_threads();
    assert!(threads.len() >= 2, "{threads:?}");
    assert!(threads.iter().all(|s| s == "2"), "{threads:?}");
    let err = proxy.stderr();
    assert!(
        err.contains("sandbox: seccomp filters for 4 thread classes"),
        "{err}"
    );
    if is_root() {
        // Started as root: the bounding set is emptied and it runs as the
        // owner and group of the vsock socket (the VMM's sandbox user),
        // which it still reaches (the echo above). Neither has a passwd
        // entry: no lookup, no fallback to nobody.
        assert_eq!(proxy.field("CapBnd"), zero);
        let (uid, gid) = OWNER;
        assert_eq!(proxy.field("Uid"), format!("{uid}\t{uid}\t{uid}\t{uid}"));
        assert_eq!(proxy.field("Gid"), format!("{gid}\t{gid}\t{gid}\t{gid}"));
        assert_eq!(proxy.field("Groups"), gid.to_string());
        assert!(
            err.contains(&format!("uid {uid} gid {gid} (switched from root)")),
            "{err}"
        );
    }
    drop(proxy);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_socket_the_proxy_cannot_reach_stops_it_at_start_up() {
    let dir = test_dir("unreachable");
    let socket = dir.join("vsock.sock");
    fake_vmm(&socket);
    // As root: a uid that is not the socket's owner (the `0600` socket
    // refuses it); otherwise the proxy's own uid, with the socket's mode
    // taking its right away.
    let sandbox_user = format!("{}:{}", OWNER.0 + 101, OWNER.1 + 101);
    let extra: &[&str] = if is_root() {
        &["--sandbox-user", &sandbox_user]
    } else {
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o000)).unwrap();
        &[]
    };
    let mut proxy = Proxy::start(&dir, None, extra);
    let code = proxy.wait_exit();
    let err = proxy.stderr();
    assert_eq!(code, SETUP_FAILED, "{err}");
    assert!(!err.contains("vmm adb-proxy: 127.0.0.1:"), "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line: {err}"));
    assert!(
        line.contains(&format!(
            "may not connect to the vsock socket {}",
            socket.display()
        )),
        "{line}"
    );
    assert!(line.contains("Permission denied"), "{line}");
    if is_root() {
        let (uid, gid) = (OWNER.0 + 101, OWNER.1 + 101);
        assert!(
            line.starts_with(&format!("error: uid {uid} gid {gid} (switched from root) ")),
            "{line}"
        );
        assert!(line.contains("--sandbox-user UID[:GID]"), "{line}");
    } else {
        assert!(line.contains("start the proxy as root"), "{line}");
    }
    drop(proxy);
    let _ = std::fs::remove_dir_all(&dir);
}

/// An urgent (`MSG_OOB`) byte in the middle of a client's stream crosses
/// the sandboxed proxy in order: splice(2) stops at the urgent mark and
/// returns 0, and what the proxy does then to tell that from the end of
/// the stream runs under its filters.
#[test]
fn an_urgent_byte_crosses_the_sandboxed_proxy_in_order() {
    use std::os::fd::AsRawFd;
    let dir = test_dir("urgent");
    fake_vmm(&dir.join("vsock.sock"));
    let mut proxy = Proxy::start(&dir, None, &[]);
    proxy.wait_ready();
    let mut client = TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
    client.set_read_timeout(Some(PATIENCE)).unwrap();
    client.write_all(b"before").unwrap();
    let urgent = b'!';
    // SAFETY: send(2) of one byte from a local on a socket we hold.
    let sent = unsafe {
        libc::send(
            client.as_raw_fd(),
            std::ptr::addr_of!(urgent).cast(),
            1,
            libc::MSG_OOB,
        )
    };
    assert_eq!(sent, 1);
    // The proxy meets the urgent mark with nothing behind it.
    std::thread::sleep(Duration::from_millis(200));
    let _ = client.write_all(b"after");
    let _ = client.shutdown(Shutdown::Write);
    let mut back = Vec::new();
    let read = client.read_to_end(&mut back);
    assert!(read.is_ok(), "{read:?}: {}", proxy.stderr());
    assert_eq!(String::from_utf8_lossy(&back), "before!after");
    assert!(
        proxy.child.try_wait().unwrap().is_none(),
        "{}",
        proxy.stderr()
    );
    drop(proxy);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Each bridged connection holds `FDS_PER_CONNECTION` descriptors (what
/// the proxy's `RLIMIT_NOFILE` is sized by): counted in
/// `/proc/<pid>/fd` with two connections open, against none.
#[test]
fn a_bridged_connection_holds_the_descriptors_the_limit_is_sized_by() {
    let dir = test_dir("fdcount");
    fake_vmm(&dir.join("vsock.sock"));
    let mut proxy = Proxy::start(&dir, None, &[]);
    proxy.wait_ready();
    let fds = || std::fs::read_dir(format!("/proc/{}/fd", proxy.child.id())).map(|d| d.count());
    let Ok(idle) = fds() else {
        eprintln!("skipped: /proc/<pid>/fd of the proxy is not readable here");
        return;
    };
    let open: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut c = TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
            c.set_read_timeout(Some(PATIENCE)).unwrap();
            // One byte each way: both directions' pipes exist.
            c.write_all(b"x").unwrap();
            let mut byte = [0u8; 1];
            c.read_exact(&mut byte).unwrap();
            c
        })
        .collect();
    let busy = fds().unwrap();
    assert_eq!(
        busy - idle,
        2 * vmm::vsock_proxy::FDS_PER_CONNECTION as usize,
        "{idle} -> {busy}"
    );
    drop(open);
    drop(proxy);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn more_connections_than_the_fd_limit_allows_stop_it_at_start_up() {
    let dir = test_dir("fds");
    fake_vmm(&dir.join("vsock.sock"));
    let mut proxy = Proxy::start(&dir, None, &["--max-connections", "1000000000000"]);
    let code = proxy.wait_exit();
    let err = proxy.stderr();
    assert_eq!(code, SETUP_FAILED, "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line: {err}"));
    assert!(
        line.starts_with(
            "error: --max-connections 1000000000000 needs 8000000000064 file descriptors"
        ),
        "{line}"
    );
    assert!(
        line.contains("lower --max-connections to at most"),
        "{line}"
    );
    assert!(line.contains("or raise the limit"), "{line}");
    drop(proxy);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn disable_sandbox_leaves_the_proxy_unfiltered() {
    let dir = test_dir("disabled");
    fake_vmm(&dir.join("vsock.sock"));
    let mut proxy = Proxy::start(&dir, None, &["--disable-sandbox"]);
    proxy.wait_ready();
    assert_eq!(proxy.echo(b"hello").unwrap(), b"hello");
    assert_eq!(proxy.field("Seccomp"), "0");
    assert!(proxy
        .stderr()
        .contains("sandbox disabled (--disable-sandbox)"));
    drop(proxy);
    let _ = std::fs::remove_dir_all(&dir);
}
