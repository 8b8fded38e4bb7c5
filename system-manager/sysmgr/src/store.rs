//! The daemon's state directory: the decision log (the arbiter's only
//! persistence) and its snapshot, the clock origin, the lock, and the
//! paths of everything else.
//!
//! | file | what |
//! |---|---|
//! | `decisions.jsonl` | one [`LogRecord`](system_manager::LogRecord) per handled input since the last compaction, written before its outputs are carried out and made durable as [`LogSync`] says |
//! | `snapshot.json` | the state after the last compacted record ([`Snapshot`]); `snapshot.json.tmp` while one is written |
//! | `clock.json` | the boot id and the `CLOCK_BOOTTIME` origin of the log's times |
//! | `sysmgr.lock` | held (`fcntl` lock) by the daemon that owns the directory; holds its pid |
//! | `sysmgr.sock` | the daemon's own control socket (`sysmgr status`) |
//! | `<guest>.vmm.log` | stdout/stderr of the VMMs the daemon launched |
//! | `<guest>.pid` | pid of the VMM the daemon launched (information only: a VMM is killed through a pidfd) |

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use system_manager::Millis;

mod decided;
mod log;
#[cfg(test)]
mod power_loss;
mod recover;
#[cfg(test)]
mod sim;
mod storage;

pub use decided::{Decided, MAX_DECIDED_PER_GUEST};
pub use log::{CommitStep, DecisionLog, LogSync, COMPACT_AT_BYTES};
pub use recover::{load, Loaded, Snapshot, SNAPSHOT_FORMAT};
pub use storage::{sync_dir, Disk, Storage, StorageFile};

/// File name of the decision log.
pub const LOG_FILE: &str = "decisions.jsonl";
/// File name of the log's snapshot.
pub const SNAPSHOT_FILE: &str = "snapshot.json";
/// File name of a snapshot being written.
pub const SNAPSHOT_TMP: &str = "snapshot.json.tmp";
/// File name of the clock origin.
pub const CLOCK_FILE: &str = "clock.json";
/// File name of the daemon's control socket.
pub const SOCKET_FILE: &str = "sysmgr.sock";
/// File name of the state directory's lock.
pub const LOCK_FILE: &str = "sysmgr.lock";

/// The state directory.
#[derive(Clone, Debug)]
pub struct StateDir(pub PathBuf);

impl StateDir {
    /// The decision log's path.
    pub fn log(&self) -> PathBuf {
        self.0.join(LOG_FILE)
    }
    /// The control socket's path.
    pub fn socket(&self) -> PathBuf {
        self.0.join(SOCKET_FILE)
    }
    /// Where a launched VMM's output goes.
    pub fn vmm_log(&self, guest: &str) -> PathBuf {
        self.0.join(format!("{guest}.vmm.log"))
    }
    /// The pid file of a launched VMM.
    pub fn pid_file(&self, guest: &str) -> PathBuf {
        self.0.join(format!("{guest}.pid"))
    }
    /// The directory as the log's [`Storage`].
    pub fn disk(&self) -> Disk {
        Disk(self.0.clone())
    }
}

/// The state directory's lock, held while this value lives (the daemon's
/// whole life). A POSIX record lock (`fcntl(F_SETLK)`) rather than
/// `flock`: it is not inherited by the VMM launcher process that the
/// daemon forks (`crate::launcher`), which may outlive a killed daemon
/// for a moment, and `F_GETLK` names the holder's pid. Closing *any*
/// descriptor of the lock file drops a POSIX lock, so nothing else in the
/// daemon opens it.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

/// Takes the state directory's lock, or fails with one line naming the
/// daemon that holds it.
pub fn lock(dir: &StateDir) -> Result<StateLock> {
    let path = dir.0.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let mut fl = whole_file_lock(libc::F_WRLCK);
    // SAFETY: fcntl(F_SETLK) on our open descriptor with a valid flock.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLK, &fl) } != 0 {
        let e = std::io::Error::last_os_error();
        if !matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) {
            return Err(e).with_context(|| format!("cannot lock {}", path.display()));
        }
        // SAFETY: fcntl(F_GETLK) fills the flock we pass.
        let holder = if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETLK, &mut fl) } == 0
            && fl.l_type != libc::F_UNLCK as libc::c_short
        {
            format!(" (pid {})", fl.l_pid)
        } else {
            String::new()
        };
        bail!(
            "another sysmgr{holder} holds the state directory {} ({} is locked); stop it or use another --state-dir",
            dir.0.display(),
            path.display()
        );
    }
    file.set_len(0)
        .and_then(|()| file.write_all(format!("{}\n", std::process::id()).as_bytes()))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(StateLock { _file: file })
}

fn whole_file_lock(kind: libc::c_int) -> libc::flock {
    // SAFETY: flock is plain data; all zeroes is a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = 0;
    fl.l_len = 0;
    fl
}

/// Reads `CLOCK_BOOTTIME` in milliseconds.
pub fn boottime_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec to the valid pointer we pass.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64).saturating_mul(1000) + (ts.tv_nsec as u64) / 1_000_000
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The arbiter's clock: milliseconds of `CLOCK_BOOTTIME` since an origin
/// kept in `clock.json`, so a restarted daemon's clock goes on where it
/// was (time passes while it is down). After a reboot of the machine the
/// clock continues from the last logged time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    origin: u64,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ClockFile {
    boot_id: String,
    origin_ms: u64,
}

impl Clock {
    /// Loads or creates the origin; `last` is the log's last time.
    pub fn open(dir: &StateDir, last: Millis) -> Result<Clock> {
        let path = dir.0.join(CLOCK_FILE);
        let id = boot_id();
        let now = boottime_ms();
        let saved: Option<ClockFile> = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        let origin = match saved {
            Some(c) if c.boot_id == id && c.origin_ms <= now => c.origin_ms,
            _ => {
                let origin = now.saturating_sub(last.as_millis());
                let text = serde_json::to_string(&ClockFile {
                    boot_id: id,
                    origin_ms: origin,
                })?;
                let tmp = path.with_extension("tmp");
                let mut f = File::create(&tmp)
                    .with_context(|| format!("cannot create {}", tmp.display()))?;
                f.write_all(text.as_bytes())?;
                f.sync_all()?;
                std::fs::rename(&tmp, &path)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                sync_dir(&dir.0).with_context(|| format!("cannot sync {}", dir.0.display()))?;
                origin
            }
        };
        Ok(Clock { origin })
    }

    /// Now on the arbiter's clock.
    pub fn now(&self) -> Millis {
        Millis(boottime_ms().saturating_sub(self.origin))
    }
}

/// Makes sure `dir` exists and is a directory.
pub fn ensure_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create state directory {}", dir.display()))?;
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use system_manager::{Arbiter, Decision, Input, Output, Policy};

    fn tmpdir(tag: &str) -> StateDir {
        StateDir(crate::test_dir(&format!("store-{tag}")))
    }

    /// A policy with one android-role guest named `a`.
    fn one_android_guest() -> Policy {
        Policy::from_toml_str("[[guest]]\nname = \"a\"\nrole = \"android\"\n").unwrap()
    }

    fn open_log(dir: &StateDir) -> DecisionLog {
        DecisionLog::open(Arc::new(dir.disk())).unwrap()
    }

    #[test]
    fn log_survives_a_torn_last_line() {
        let dir = tmpdir("torn");
        let policy = one_android_guest();
        let mut a = Arbiter::new(policy.clone());
        let mut log = open_log(&dir);
        log.append(&a.step(Millis(1), Input::IgnitionOn)).unwrap();
        log.append(&a.step(Millis(2), Input::VmStarted { guest: "a".into() }))
            .unwrap();
        drop(log);
        let mut f = OpenOptions::new().append(true).open(dir.log()).unwrap();
        f.write_all(b"{\"seq\":3,\"at\":").unwrap();
        // Read-only (`sysmgr events`): dropped from the view, not the file.
        let view = load(&dir.disk(), false).unwrap();
        assert_eq!((view.records.len(), view.torn_bytes), (2, 14));
        assert!(std::fs::read_to_string(dir.log()).unwrap().ends_with(":"));
        let loaded = load(&dir.disk(), true).unwrap();
        assert_eq!(loaded.records.len(), 2);
        assert_eq!(loaded.restore(policy).unwrap().0, a);
        // The torn bytes are gone from the file, so appending goes on.
        assert!(std::fs::read_to_string(dir.log()).unwrap().ends_with("}\n"));
    }

    #[test]
    fn a_bad_record_in_the_middle_is_an_error_that_names_its_line() {
        let dir = tmpdir("middle");
        let mut a = Arbiter::new(one_android_guest());
        let good = a.step(Millis(1), Input::IgnitionOn).to_json_line().unwrap();
        // A torn record followed by more records is not a torn write.
        std::fs::write(dir.log(), format!("{good}\n{{\"seq\":2,\"at\"\n{good}\n")).unwrap();
        let e = load(&dir.disk(), true).unwrap_err();
        assert!(format!("{e:#}").contains("decision log line 2"), "{e:#}");
        // Nothing was cut.
        assert!(std::fs::read_to_string(dir.log()).unwrap().ends_with("}\n"));
        // Neither is garbage as the last complete line.
        std::fs::write(dir.log(), format!("{good}\ngarbage\n")).unwrap();
        let e = load(&dir.disk(), true).unwrap_err();
        assert!(format!("{e:#}").contains("decision log line 2"), "{e:#}");
        // A gap in the sequence numbers is an error of the replay.
        std::fs::write(dir.log(), format!("{good}\n{good}\n")).unwrap();
        let e = load(&dir.disk(), true)
            .unwrap()
            .restore(one_android_guest())
            .unwrap_err();
        assert!(
            format!("{e:#}").contains("expected sequence number 2"),
            "{e:#}"
        );
    }

    #[test]
    fn compaction_replaces_the_log_by_a_snapshot_and_recovery_goes_on_from_it() {
        let dir = tmpdir("compact");
        let policy = one_android_guest();
        let mut a = Arbiter::new(policy.clone());
        let mut decided = Decided::default();
        let mut log = open_log(&dir).compact_at(2000);
        let mut compactions = 0;
        for t in 0..200u64 {
            let input = match t % 4 {
                0 => Input::IgnitionOn,
                1 => Input::VmStarted { guest: "a".into() },
                2 => Input::GuestPowerRequest {
                    guest: "a".into(),
                    request_id: t,
                    kind: system_manager::PowerRequestKind::Reboot,
                },
                _ => Input::IgnitionOff,
            };
            let r = a.step(Millis(t * 100), input);
            decided.note(&r.input, &r.outputs);
            log.append(&r).unwrap();
            if log.wants_compaction() {
                log.compact(&Snapshot::of(&a, &decided)).unwrap();
                compactions += 1;
                assert_eq!(log.bytes(), 0);
            }
            assert!(log.bytes() <= 2000 + 1000, "{}", log.bytes());
        }
        assert!(compactions >= 5, "{compactions}");
        drop(log);
        let loaded = load(&dir.disk(), true).unwrap();
        assert!(loaded.snapshot_seq() > 100);
        assert_eq!(loaded.inputs(), 200);
        let (b, d) = loaded.restore(policy).unwrap();
        assert_eq!((b, d), (a, decided));
        assert!(!dir.0.join(SNAPSHOT_TMP).exists());
    }

    #[test]
    fn background_sync_catches_up_and_sync_waits() {
        let dir = tmpdir("bgsync");
        let mut a = Arbiter::new(one_android_guest());
        let mut log = open_log(&dir);
        log.start_background_sync().unwrap();
        for t in 1..=50 {
            log.write(&a.step(Millis(t), Input::Tick)).unwrap();
            log.sync_soon().unwrap();
        }
        assert_eq!(log.written(), 50);
        let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while log.durable() < 50 && std::time::Instant::now() < end {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(log.durable(), 50, "the sync thread did not catch up");
        // An explicit sync covers what was written after the last request.
        log.write(&a.step(Millis(51), Input::IgnitionOn)).unwrap();
        assert_eq!(log.durable(), 50);
        log.sync().unwrap();
        assert_eq!(log.durable(), 51);
        drop(log);
        // Written records are in the file whatever was synced.
        assert_eq!(load(&dir.disk(), true).unwrap().records.len(), 51);
    }

    #[test]
    fn only_mcu_commands_wait_for_the_disk_by_default() {
        let reason = String::new;
        let mcu = [
            Output::SystemOn { reason: reason() },
            Output::SystemSuspend {
                wake_after_s: None,
                reason: reason(),
            },
            Output::SystemPowerOff {
                wake_after_s: Some(60),
                reason: reason(),
            },
        ];
        let local = [
            Output::Decide {
                guest: "a".into(),
                request_id: 1,
                decision: Decision::Allow,
                reason: reason(),
            },
            Output::PauseVm {
                guest: "a".into(),
                reason: reason(),
            },
            Output::HardStopVm {
                guest: "a".into(),
                reason: reason(),
            },
        ];
        for o in &mcu {
            assert!(LogSync::BeforeMcu.must_be_durable_first(o), "{o:?}");
            assert!(LogSync::EveryDecision.must_be_durable_first(o), "{o:?}");
        }
        for o in &local {
            assert!(!LogSync::BeforeMcu.must_be_durable_first(o), "{o:?}");
            assert!(LogSync::EveryDecision.must_be_durable_first(o), "{o:?}");
        }
    }

    #[test]
    fn the_commit_plan_syncs_before_mcu_commands_only_by_default() {
        let mut a = Arbiter::new(one_android_guest());
        let recs = vec![
            a.step(Millis(1), Input::IgnitionOn),
            a.step(Millis(2), Input::VmStarted { guest: "a".into() }),
        ];
        // IgnitionOn: SystemOn (MCU), StartVm, ...
        let plan = LogSync::BeforeMcu.commit_plan(&recs);
        assert_eq!(
            &plan[..4],
            &[
                CommitStep::SyncSoon,
                CommitStep::Announce(0),
                CommitStep::Sync,
                CommitStep::Execute(0, 0),
            ]
        );
        let syncs = plan.iter().filter(|s| **s == CommitStep::Sync).count();
        assert_eq!(syncs, 1, "{plan:?}");
        let plan = LogSync::EveryDecision.commit_plan(&recs);
        assert_eq!(plan[0], CommitStep::Sync);
        let outputs: usize = recs.iter().map(|r| r.outputs.len()).sum();
        assert_eq!(plan.len(), 1 + recs.len() + 2 * outputs);
    }

    #[test]
    fn a_second_daemon_is_refused_with_the_holders_pid() {
        let dir = tmpdir("lock");
        let held = lock(&dir).unwrap();
        // A POSIX lock does not conflict within its own process: ask from
        // another one.
        let child = lock_in_child(&dir);
        assert!(
            child.starts_with("another sysmgr (pid ")
                && child.contains(&format!("(pid {})", std::process::id()))
                && child.contains("stop it or use another --state-dir"),
            "{child}"
        );
        drop(held);
        // (Not read while held: closing any descriptor of the file would
        // drop this process's lock.)
        assert_eq!(
            std::fs::read_to_string(dir.0.join(LOCK_FILE)).unwrap(),
            format!("{}\n", std::process::id())
        );
        assert_eq!(lock_in_child(&dir), "locked");
    }

    /// Tries [`lock`] in a forked child (POSIX locks are per process) and
    /// returns its error line, or `locked`.
    fn lock_in_child(dir: &StateDir) -> String {
        let (mut r, w) = std::os::unix::net::UnixStream::pair().unwrap();
        // SAFETY: the child only calls `lock` (no threads needed) and
        // leaves with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let mut w = w;
            let line = match lock(dir) {
                Ok(_) => "locked".to_string(),
                Err(e) => format!("{e:#}"),
            };
            let _ = w.write_all(line.as_bytes());
            // SAFETY: leave the child without running the parent's code.
            unsafe { libc::_exit(0) };
        }
        drop(w);
        let mut out = String::new();
        std::io::Read::read_to_string(&mut r, &mut out).unwrap();
        // SAFETY: reap our child.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
        out
    }

    #[test]
    fn clock_goes_on_across_restarts() {
        let dir = tmpdir("clock");
        let c = Clock::open(&dir, Millis(5000)).unwrap();
        let t1 = c.now();
        assert!(t1 >= Millis(5000), "{t1}");
        // A second open (daemon restart) keeps the origin.
        let c2 = Clock::open(&dir, Millis(0)).unwrap();
        assert!(c2.now() >= t1);
        assert_eq!(c.origin, c2.origin);
    }
}
