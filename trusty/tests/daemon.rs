//! `trustyd` end to end on the host: the real binary, fake guests that
//! connect to `VSOCK_SOCKET_1` exactly as the VMM forwards a guest's
//! vsock connection (the guest's bytes, unchanged), and a fake VMM on the
//! TEE socket. Messages are built here from AOSP's formats, independently
//! of the crate's own codecs.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use trusty::tee::{login, result, Param, ParamOut, Request, ResponseBody, TeeClient};

/// The tamper-detect storage port.
const STORAGE_TD: &str = "com.android.trusty.storage.client.td";
/// The hwkey port.
const HWKEY: &str = "com.android.trusty.hwkey";
/// The gatekeeper port.
const GATEKEEPER: &str = "com.android.trusty.gatekeeper";

struct Daemon {
    child: Child,
    vsock: Vec<PathBuf>,
}

fn state_dir(dir: &Path) -> PathBuf {
    dir.join("state")
}

impl Daemon {
    /// Starts trustyd for guests `a` and `b` under `dir`.
    fn start(dir: &Path) -> Daemon {
        Self::start_with_users(dir, [None, None])
    }

    /// [`Daemon::start`], guest `a`'s and `b`'s VMMs of their own users
    /// where given (`user=UID:GID`).
    fn start_with_users(dir: &Path, users: [Option<&str>; 2]) -> Daemon {
        // A trustyd started as root switches to its sandbox user (65534):
        // like /tmp, the directory lets it reach its state and remove its
        // own sockets.
        fs::set_permissions(dir, fs::Permissions::from_mode(0o1777)).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_trustyd"));
        cmd.arg("run").arg("--state-dir").arg(state_dir(dir));
        let mut vsock = Vec::new();
        for (g, user) in ["a", "b"].into_iter().zip(users) {
            let base = dir.join(format!("{g}.vsock"));
            cmd.arg("--guest").arg(format!(
                "{g}={},tee={}{}",
                base.display(),
                dir.join(format!("{g}.tee")).display(),
                user.map(|u| format!(",user={u}")).unwrap_or_default()
            ));
            vsock.push(PathBuf::from(format!("{}_1", base.display())));
        }
        let child = cmd
            .stderr(Stdio::inherit())
            .spawn()
            .expect("trustyd starts");
        let d = Daemon { child, vsock };
        let deadline = Instant::now() + Duration::from_secs(20);
        for p in [dir.join("a.tee"), dir.join("b.tee")]
            .iter()
            .chain(d.vsock.iter())
        {
            while UnixStream::connect(p).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "trustyd did not listen on {}",
                    p.display()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        d
    }

    /// Starts trustyd under a fresh temporary directory (returned too: it
    /// is removed when dropped).
    fn start_in_temp_dir() -> (tempfile::TempDir, Daemon) {
        let dir = tempfile::tempdir().unwrap();
        let d = Daemon::start(dir.path());
        (dir, d)
    }

    fn stop(mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        assert!(status.success(), "trustyd exit: {status}");
        for p in &self.vsock {
            assert!(!p.exists(), "socket {} left behind", p.display());
        }
        std::mem::forget(self);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// libtrusty's `tipc_connect` over the VMM's `PATH_port` socket.
fn tipc_connect(path: &Path, port: &str) -> UnixStream {
    let mut s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(port.as_bytes()).unwrap();
    let mut status = [0xffu8];
    s.read_exact(&mut status).expect("status byte");
    assert_eq!(status[0], 0);
    s
}

/// One message out, one message back (one read, as libtrusty does).
fn call(s: &mut UnixStream, msg: &[u8]) -> Vec<u8> {
    s.write_all(msg).unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).unwrap();
    buf.truncate(n);
    buf
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

// ---- storage (interface/storage/storage.h) ----

const FILE_OPEN: u32 = 2 << 1;
const FILE_READ: u32 = 4 << 1;
const FILE_WRITE: u32 = 5 << 1;
const COMPLETE: u32 = 4;
const ERR_NOT_FOUND: u32 = 5;
const ERR_CORRUPTED: u32 = 10;

fn storage_msg(cmd: u32, flags: u32, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::new();
    for v in [cmd, 1, flags, 0, 0, 0] {
        m.extend_from_slice(&v.to_le_bytes());
    }
    m.extend_from_slice(payload);
    m
}

/// Opens `name`; `Ok(handle)` or `Err(result)`.
fn st_open(s: &mut UnixStream, name: &str, create: bool) -> Result<u32, u32> {
    let mut p = u32::from(create).to_le_bytes().to_vec();
    p.extend_from_slice(name.as_bytes());
    let r = call(s, &storage_msg(FILE_OPEN, COMPLETE, &p));
    assert_eq!(u32_at(&r, 0), FILE_OPEN | 1);
    match u32_at(&r, 16) {
        0 => Ok(u32_at(&r, 24)),
        e => Err(e),
    }
}

fn st_write(s: &mut UnixStream, h: u32, data: &[u8]) {
    let mut p = 0u64.to_le_bytes().to_vec();
    p.extend_from_slice(&h.to_le_bytes());
    p.extend_from_slice(&0u32.to_le_bytes());
    p.extend_from_slice(data);
    let r = call(s, &storage_msg(FILE_WRITE, COMPLETE, &p));
    assert_eq!(u32_at(&r, 16), 0, "write");
}

fn st_read(s: &mut UnixStream, h: u32) -> Result<Vec<u8>, u32> {
    let mut p = h.to_le_bytes().to_vec();
    p.extend_from_slice(&1000u32.to_le_bytes());
    p.extend_from_slice(&0u64.to_le_bytes());
    let r = call(s, &storage_msg(FILE_READ, 0, &p));
    match u32_at(&r, 16) {
        0 => Ok(r[24..].to_vec()),
        e => Err(e),
    }
}

fn blobs(dir: &Path, guest: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(state_dir(dir).join("guests").join(guest).join("td"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "blob"))
        .collect();
    v.sort();
    v
}

// ---- gatekeeper (gatekeeper_ipc.h, system/gatekeeper) ----

fn blob(m: &mut Vec<u8>, b: &[u8]) {
    m.extend_from_slice(&(b.len() as u32).to_le_bytes());
    m.extend_from_slice(b);
}

fn gk_enroll(s: &mut UnixStream, uid: u32, pw: &[u8]) -> Vec<u8> {
    let mut m = Vec::new();
    for v in [0, 0, uid] {
        m.extend_from_slice(&v.to_le_bytes());
    }
    blob(&mut m, pw);
    blob(&mut m, b"");
    blob(&mut m, b"");
    let r = call(s, &m);
    assert_eq!((u32_at(&r, 0), u32_at(&r, 4)), (1, 0), "enroll ok");
    let len = u32_at(&r, 12) as usize;
    r[16..16 + len].to_vec()
}

/// VERIFY: (error, retry timeout or token length).
fn gk_verify(s: &mut UnixStream, uid: u32, handle: &[u8], pw: &[u8]) -> (u32, u32) {
    let mut m = Vec::new();
    for v in [2, 0, uid] {
        m.extend_from_slice(&v.to_le_bytes());
    }
    m.extend_from_slice(&7u64.to_le_bytes());
    blob(&mut m, handle);
    blob(&mut m, pw);
    let r = call(s, &m);
    assert_eq!(u32_at(&r, 0), 3);
    let err = u32_at(&r, 4);
    match err {
        0 | 2 => (err, u32_at(&r, 12)),
        _ => (err, 0),
    }
}

fn hwkey_derive(s: &mut UnixStream, seed: &[u8]) -> Vec<u8> {
    let mut m = Vec::new();
    for v in [2u32, 9, 0, 0, 0] {
        m.extend_from_slice(&v.to_le_bytes());
    }
    m.extend_from_slice(seed);
    let r = call(s, &m);
    assert_eq!((u32_at(&r, 0), u32_at(&r, 8)), (3, 0), "derive ok");
    r[20..].to_vec()
}

/// A storage session on `vsock` with file `name` created and `data`
/// written (committed); the session and the file's handle.
fn stored(vsock: &Path, name: &str, data: &[u8]) -> (UnixStream, u32) {
    let mut s = tipc_connect(vsock, STORAGE_TD);
    let h = st_open(&mut s, name, true).unwrap();
    st_write(&mut s, h, data);
    (s, h)
}

#[test]
fn echo_datasink_and_unknown_ports_over_vsock() {
    let (_dir, d) = Daemon::start_in_temp_dir();
    let mut e = tipc_connect(&d.vsock[0], "com.android.ipc-unittest.srv.echo");
    for len in [1usize, 100, 3840] {
        let msg: Vec<u8> = (0..len).map(|i| i as u8).collect();
        assert_eq!(call(&mut e, &msg), msg);
    }
    let mut sink = tipc_connect(&d.vsock[0], "com.android.ipc-unittest.srv.datasink");
    sink.write_all(b"into the sink").unwrap();
    sink.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut b = [0u8; 1];
    assert!(sink.read(&mut b).is_err(), "datasink answers nothing");
    // An unknown port: closed without a status byte.
    let mut u = UnixStream::connect(&d.vsock[0]).unwrap();
    u.write_all(b"com.android.trusty.keymint").unwrap();
    assert_eq!(u.read(&mut b).unwrap(), 0);
    d.stop();
}

/// How a connection of uid and gid `id` to the libtrusty socket `path`
/// (echo port) went, from a forked child that switches to `id` first.
#[derive(Debug, PartialEq, Eq)]
enum Reached {
    /// trustyd answered the port with status 0.
    Served,
    /// connect(2) failed with EACCES: the socket file's mode stopped it.
    FileRefused,
    /// trustyd closed the connection: its peer check refused it.
    PeerRefused,
}

fn connect_as(id: u32, path: &Path) -> Reached {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: sockaddr_un is plain data; all-zero is valid.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path.iter_mut().zip(path.as_os_str().as_bytes()) {
        *d = *s as libc::c_char;
    }
    let port = b"com.android.ipc-unittest.srv.echo";
    // SAFETY: the child only makes async-signal-safe calls, then _exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        // SAFETY: as above; every pointer is valid for its length.
        unsafe {
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setresgid(id, id, id) != 0
                || libc::setresuid(id, id, id) != 0
            {
                libc::_exit(9);
            }
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
            if libc::connect(fd, std::ptr::addr_of!(addr).cast(), len) != 0 {
                libc::_exit(if *libc::__errno_location() == libc::EACCES {
                    1
                } else {
                    8
                });
            }
            libc::write(fd, port.as_ptr().cast(), port.len());
            let mut status = 0xffu8;
            let n = libc::read(fd, std::ptr::addr_of_mut!(status).cast(), 1);
            // A refused peer's connection is closed: an end of stream, or
            // a reset when the port name was still unread.
            let reset = n < 0 && *libc::__errno_location() == libc::ECONNRESET;
            libc::_exit(match (n, status) {
                (1, 0) => 0,
                (0, _) => 2,
                _ if reset => 2,
                _ => 7,
            });
        }
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(libc::WIFEXITED(status), "child: {status}");
    match libc::WEXITSTATUS(status) {
        0 => Reached::Served,
        1 => Reached::FileRefused,
        2 => Reached::PeerRefused,
        other => panic!("connecting as {id}: child exit {other}"),
    }
}

#[test]
fn a_guest_with_its_own_vmm_user_is_reached_by_that_uid_only() {
    // SAFETY: plain credential query.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to connect as other uids");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_with_users(dir.path(), [Some("10001:10001"), Some("10002:10002")]);
    for (sock, gid) in [(&d.vsock[0], 10001), (&dir.path().join("b.tee"), 10002)] {
        use std::os::unix::fs::MetadataExt;
        let meta = fs::symlink_metadata(sock).unwrap();
        assert_eq!(
            (meta.mode() & 0o777, meta.gid()),
            (0o660, gid),
            "{}",
            sock.display()
        );
    }
    assert_eq!(connect_as(10001, &d.vsock[0]), Reached::Served);
    // The other guest's VMM user: the file's mode stops it.
    assert_eq!(connect_as(10002, &d.vsock[0]), Reached::FileRefused);
    // trustyd's own uid (65534, the shared sandbox user) owns the file:
    // the guest's peer check admits its VMM's uid only.
    assert_eq!(connect_as(65534, &d.vsock[0]), Reached::PeerRefused);
    // The file opened up on purpose: the peer check still refuses.
    fs::set_permissions(&d.vsock[0], fs::Permissions::from_mode(0o666)).unwrap();
    assert_eq!(connect_as(10002, &d.vsock[0]), Reached::PeerRefused);
    assert_eq!(connect_as(10001, &d.vsock[0]), Reached::Served);
    d.stop();
}

#[test]
fn guests_are_isolated() {
    let (dir, d) = Daemon::start_in_temp_dir();
    let (_a, _) = stored(&d.vsock[0], "secret", b"a's secret");
    let mut b = tipc_connect(&d.vsock[1], STORAGE_TD);
    assert_eq!(st_open(&mut b, "secret", false), Err(ERR_NOT_FOUND));
    // hwkey gives each guest its own keys.
    let ka = hwkey_derive(&mut tipc_connect(&d.vsock[0], HWKEY), &[1; 32]);
    let kb = hwkey_derive(&mut tipc_connect(&d.vsock[1], HWKEY), &[1; 32]);
    assert_eq!(ka.len(), 32);
    assert_ne!(ka, kb);
    // A gatekeeper handle of guest a is worthless to guest b.
    let ha = gk_enroll(&mut tipc_connect(&d.vsock[0], GATEKEEPER), 0, b"pw");
    let (err, _) = gk_verify(&mut tipc_connect(&d.vsock[1], GATEKEEPER), 0, &ha, b"pw");
    assert_eq!(err, 1, "ERROR_INVALID");
    // TEE sessions: b's connection cannot name a's session, and b's
    // storage session does not see a's file.
    let mut ta = TeeClient::connect(&dir.path().join("a.tee")).unwrap();
    let mut tb = TeeClient::connect(&dir.path().join("b.tee")).unwrap();
    let sa = tee_open(&mut ta, &trusty::ports::TaKind::Echo.uuid().into_bytes());
    let r = tb
        .call(&Request::Invoke {
            session: sa,
            func: 0,
            cancel_id: 0,
            params: Default::default(),
        })
        .unwrap();
    assert_eq!(r.ret, result::ITEM_NOT_FOUND);
    let sb = tee_open(
        &mut tb,
        &trusty::ports::TaKind::StorageTd.uuid().into_bytes(),
    );
    let mut p = 0u32.to_le_bytes().to_vec();
    p.extend_from_slice(b"secret");
    let resp = tee_message(&mut tb, sb, &storage_msg(FILE_OPEN, 0, &p));
    assert_eq!(u32_at(&resp, 16), ERR_NOT_FOUND);
    d.stop();
}

fn tee_open(c: &mut TeeClient, uuid: &[u8; 16]) -> u32 {
    let r = c
        .call(&Request::open_session(*uuid, login::PUBLIC))
        .unwrap();
    assert_eq!(r.ret, result::SUCCESS);
    match r.body {
        ResponseBody::OpenSession { session, .. } => session,
        other => panic!("{other:?}"),
    }
}

fn tee_message(c: &mut TeeClient, session: u32, msg: &[u8]) -> Vec<u8> {
    let r = c
        .call(&Request::Invoke {
            session,
            func: 0,
            cancel_id: 0,
            params: [
                Param::MemrefInput(msg.to_vec()),
                Param::MemrefOutput { capacity: 4096 },
                Param::ValueOutput,
                Param::None,
            ],
        })
        .unwrap();
    assert_eq!(r.ret, result::SUCCESS);
    match r.body {
        ResponseBody::Invoke { params } => match &params[1] {
            ParamOut::MemrefOutput { data, .. } => data.clone(),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_flipped_byte_on_disk_fails_the_next_read() {
    let (dir, d) = Daemon::start_in_temp_dir();
    let (mut s, h) = stored(&d.vsock[0], "f", b"the stored secret");
    assert_eq!(st_read(&mut s, h).unwrap(), b"the stored secret");
    let files = blobs(dir.path(), "a");
    assert_eq!(files.len(), 1);
    let mut bytes = fs::read(&files[0]).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    fs::write(&files[0], &bytes).unwrap();
    assert_eq!(st_read(&mut s, h), Err(ERR_CORRUPTED), "the open handle");
    let mut s2 = tipc_connect(&d.vsock[0], STORAGE_TD);
    let h2 = st_open(&mut s2, "f", false).unwrap();
    assert_eq!(st_read(&mut s2, h2), Err(ERR_CORRUPTED), "a new channel");
    d.stop();
}

#[test]
fn an_old_copy_put_back_is_detected() {
    let (dir, d) = Daemon::start_in_temp_dir();
    let (mut s, h) = stored(&d.vsock[0], "counter", b"1");
    let old = fs::read(&blobs(dir.path(), "a")[0]).unwrap();
    st_write(&mut s, h, b"2");
    let current = blobs(dir.path(), "a");
    assert_eq!(current.len(), 1, "the old version's blob is gone");
    fs::write(&current[0], &old).unwrap();
    assert_eq!(st_read(&mut s, h), Err(ERR_CORRUPTED));
    d.stop();
}

#[test]
fn gatekeeper_flows_and_a_restart_keep_state() {
    let (dir, d) = Daemon::start_in_temp_dir();
    let mut g = tipc_connect(&d.vsock[0], GATEKEEPER);
    let handle = gk_enroll(&mut g, 10, b"1234");
    assert_eq!(handle.len(), 58);
    let (err, token_len) = gk_verify(&mut g, 10, &handle, b"1234");
    assert_eq!((err, token_len), (0, 69), "auth token");
    for _ in 0..4 {
        assert_eq!(
            gk_verify(&mut g, 10, &handle, b"0000").0,
            1,
            "ERROR_INVALID"
        );
    }
    assert_eq!(
        gk_verify(&mut g, 10, &handle, b"0000"),
        (2, 30_000),
        "5th failure: RETRY"
    );
    let (err, left) = gk_verify(&mut g, 10, &handle, b"1234");
    assert_eq!(err, 2, "throttled even with the right password");
    assert!(left <= 30_000 && left > 20_000, "{left}");
    // Storage and hwkey state to compare after the restart.
    let (s, _) = stored(&d.vsock[0], "kept", b"across restarts");
    let key = hwkey_derive(&mut tipc_connect(&d.vsock[0], HWKEY), b"seed");
    drop((g, s));
    d.stop();

    let d = Daemon::start(dir.path());
    let mut g = tipc_connect(&d.vsock[0], GATEKEEPER);
    let (err, left) = gk_verify(&mut g, 10, &handle, b"1234");
    assert_eq!(err, 2, "the failure record survived the restart");
    assert!(left > 0 && left <= 30_000, "{left}");
    let mut s = tipc_connect(&d.vsock[0], STORAGE_TD);
    let h = st_open(&mut s, "kept", false).unwrap();
    assert_eq!(st_read(&mut s, h).unwrap(), b"across restarts");
    let again = hwkey_derive(&mut tipc_connect(&d.vsock[0], HWKEY), b"seed");
    assert_eq!(key, again);
    d.stop();
}

#[test]
fn the_tee_socket_echoes_a_one_mib_memref() {
    let (dir, d) = Daemon::start_in_temp_dir();
    let mut c = TeeClient::connect(&dir.path().join("a.tee")).unwrap();
    let s = tee_open(&mut c, &trusty::ports::TaKind::Echo.uuid().into_bytes());
    let data: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 253) as u8).collect();
    let r = c
        .call(&Request::Invoke {
            session: s,
            func: 0,
            cancel_id: 0,
            params: [
                Param::MemrefInput(data.clone()),
                Param::MemrefOutput { capacity: 1 << 20 },
                Param::None,
                Param::None,
            ],
        })
        .unwrap();
    assert_eq!(r.ret, result::SUCCESS);
    match r.body {
        ResponseBody::Invoke { params } => assert_eq!(
            params[1],
            ParamOut::MemrefOutput {
                size: 1 << 20,
                data
            }
        ),
        other => panic!("{other:?}"),
    }
    d.stop();
}

#[test]
fn connections_over_the_limit_are_closed() {
    let (_dir, d) = Daemon::start_in_temp_dir();
    let held: Vec<UnixStream> = (0..32)
        .map(|_| tipc_connect(&d.vsock[0], "com.android.ipc-unittest.srv.echo"))
        .collect();
    let mut extra = UnixStream::connect(&d.vsock[0]).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = extra.write_all(b"com.android.ipc-unittest.srv.echo");
    let mut b = [0u8; 1];
    assert_eq!(
        extra.read(&mut b).unwrap_or(0),
        0,
        "closed without a status byte"
    );
    // The other guest is not affected.
    let mut other = tipc_connect(&d.vsock[1], "com.android.ipc-unittest.srv.echo");
    assert_eq!(call(&mut other, b"still here"), b"still here");
    drop(held);
    d.stop();
}

#[test]
fn errors_are_one_line() {
    let (dir, d) = Daemon::start_in_temp_dir();
    // A second daemon on the same state directory.
    let out = Command::new(env!("CARGO_BIN_EXE_trustyd"))
        .args(["run", "--state-dir"])
        .arg(state_dir(dir.path()))
        .arg("--guest")
        .arg(format!("c={}", dir.path().join("c.vsock").display()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("trustyd: ") && err.contains("another trustyd uses the state directory"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    d.stop();
    for bad in ["nameonly", "a/b=/x", "a=/x,foo=1"] {
        let out = Command::new(env!("CARGO_BIN_EXE_trustyd"))
            .args(["run", "--state-dir", "/nonexistent", "--guest", bad])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "clap usage error for {bad}");
    }
}
