//! The daemon's state directory: the decision log (the arbiter's only
//! persistence), the clock origin, and the paths of everything else.
//!
//! | file | what |
//! |---|---|
//! | `decisions.jsonl` | one [`LogRecord`] per handled input, written before its outputs are carried out and made durable as [`LogSync`] says |
//! | `clock.json` | the boot id and the `CLOCK_BOOTTIME` origin of the log's times |
//! | `sysmgr.sock` | the daemon's own control socket (`sysmgr status`) |
//! | `<guest>.vmm.log` | stdout/stderr of the VMMs the daemon launched |
//! | `<guest>.pid` | pid of the VMM the daemon launched (for a hard kill after a restart) |

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use anyhow::{bail, Context, Result};
use system_manager::{Decision, Input, LogRecord, Millis, Output};

/// File name of the decision log.
pub const LOG_FILE: &str = "decisions.jsonl";
/// File name of the clock origin.
pub const CLOCK_FILE: &str = "clock.json";
/// File name of the daemon's control socket.
pub const SOCKET_FILE: &str = "sysmgr.sock";

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

    /// Reads the decision log. A last line without its newline (the daemon
    /// died while writing it, before it acted on it) is cut off; any other
    /// bad line is an error.
    pub fn read_log(&self) -> Result<Vec<LogRecord>> {
        let path = self.log();
        let mut text = String::new();
        match File::open(&path) {
            Ok(mut f) => {
                f.read_to_string(&mut text)
                    .with_context(|| format!("cannot read {}", path.display()))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("cannot open {}", path.display())),
        }
        if !text.is_empty() && !text.ends_with('\n') {
            let keep = text.rfind('\n').map_or(0, |i| i + 1);
            tracing::warn!(
                "{}: dropping an unfinished last record ({} bytes) written when the daemon died",
                path.display(),
                text.len() - keep
            );
            text.truncate(keep);
            let f = OpenOptions::new()
                .write(true)
                .open(&path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            f.set_len(keep as u64)
                .and_then(|()| f.sync_all())
                .with_context(|| format!("cannot truncate {}", path.display()))?;
        }
        LogRecord::parse_log(&text).with_context(|| format!("{}", path.display()))
    }
}

/// When the decision log reaches stable storage (`sysmgr run --log-sync`).
///
/// Either way a record is written to the log file (so a daemon that is
/// killed, even with `kill -9`, finds it on restart, and any reader sees it)
/// before any of its outputs is carried out. The modes differ in what
/// waits for `fdatasync`, i.e. what survives a crash of the *host*.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogSync {
    /// Outputs to this host's VMMs and guests go out once their record is
    /// written; a background thread `fdatasync`s every batch at once; a
    /// command to the MCU, the only party that outlives this host, waits
    /// until its record and every earlier one is on disk. A host crash can
    /// lose the records of the last moments, whose outputs went only to
    /// VMMs and guests that the crash took down with it.
    BeforeMcu,
    /// Every output waits until its record is on disk (an `fdatasync` per
    /// batch of queued inputs in the core loop's path).
    EveryDecision,
}

impl LogSync {
    /// Whether `output` may only be carried out once its record is durable.
    pub fn must_be_durable_first(self, output: &Output) -> bool {
        match self {
            LogSync::EveryDecision => true,
            LogSync::BeforeMcu => matches!(
                output,
                Output::SystemOn { .. }
                    | Output::SystemSuspend { .. }
                    | Output::SystemPowerOff { .. }
            ),
        }
    }
}

/// The append-only decision log.
pub struct DecisionLog {
    file: File,
    path: PathBuf,
    /// Records written so far (this process).
    written: u64,
    /// Records known to be on disk (this process).
    durable: u64,
    background: Option<BackgroundSync>,
}

impl DecisionLog {
    /// Opens (creates) the log for appending.
    pub fn open(dir: &StateDir) -> Result<Self> {
        let path = dir.log();
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        file.seek(SeekFrom::End(0))?;
        // A daemon killed with `--log-sync before-mcu` may have left records
        // only in the page cache; this process acts on them (it re-sends the
        // MCU its last command), so they go to disk first.
        file.sync_data()
            .with_context(|| format!("cannot sync {}", path.display()))?;
        Ok(DecisionLog {
            file,
            path,
            written: 0,
            durable: 0,
            background: None,
        })
    }

    /// Starts a thread that `fdatasync`s what [`DecisionLog::sync_soon`]
    /// asks for, off the caller's path.
    pub fn start_background_sync(&mut self) -> Result<()> {
        let file = self
            .file
            .try_clone()
            .with_context(|| format!("cannot duplicate {}", self.path.display()))?;
        self.background = Some(BackgroundSync::start(file, self.path.clone())?);
        Ok(())
    }

    /// Appends one record and waits until it is on disk.
    #[cfg(test)]
    pub fn append(&mut self, record: &LogRecord) -> Result<()> {
        self.write(record)?;
        self.sync()
    }

    /// Writes one record (not yet durable: [`DecisionLog::sync`] makes it so).
    pub fn write(&mut self, record: &LogRecord) -> Result<()> {
        let mut line = record
            .to_json_line()
            .context("cannot serialize a log record")?;
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .with_context(|| format!("cannot write {}", self.path.display()))?;
        self.written += 1;
        Ok(())
    }

    /// Waits until every record written so far is on disk.
    pub fn sync(&mut self) -> Result<()> {
        if self.durable() == self.written {
            return Ok(());
        }
        if let Some(b) = &self.background {
            b.check()?;
        }
        self.file
            .sync_data()
            .with_context(|| format!("cannot sync {}", self.path.display()))?;
        self.durable = self.written;
        Ok(())
    }

    /// Asks the background thread to make every record written so far
    /// durable, without waiting; fails if an earlier background sync
    /// failed. Without a background thread this is [`DecisionLog::sync`].
    pub fn sync_soon(&mut self) -> Result<()> {
        match &self.background {
            Some(b) => {
                b.check()?;
                b.request(self.written);
                Ok(())
            }
            None => self.sync(),
        }
    }

    /// Records written by this process that are known to be on disk
    /// (by either path).
    pub fn durable(&self) -> u64 {
        let bg = self.background.as_ref().map_or(0, BackgroundSync::done);
        self.durable.max(bg)
    }

    /// Records written by this process.
    #[cfg(test)]
    pub fn written(&self) -> u64 {
        self.written
    }
}

#[derive(Default)]
struct SyncProgress {
    /// Highest record count asked for.
    wanted: u64,
    /// Highest record count synced.
    done: u64,
    /// The first failure, reported to the core loop.
    error: Option<String>,
    quit: bool,
}

/// The thread behind [`LogSync::BeforeMcu`]: `fdatasync`s the log whenever
/// records were written since its last sync, so a host crash loses at
/// most the records of about one sync.
struct BackgroundSync {
    shared: Arc<(Mutex<SyncProgress>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BackgroundSync {
    fn start(file: File, path: PathBuf) -> Result<Self> {
        let shared = Arc::new((Mutex::new(SyncProgress::default()), Condvar::new()));
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("log-sync".into())
            .spawn(move || Self::serve(&file, &path, &s))
            .context("cannot start the decision log's sync thread")?;
        Ok(BackgroundSync {
            shared,
            thread: Some(thread),
        })
    }

    fn serve(file: &File, path: &Path, shared: &(Mutex<SyncProgress>, Condvar)) {
        let (lock, cv) = shared;
        let Ok(mut p) = lock.lock() else { return };
        loop {
            while p.wanted == p.done && !p.quit {
                p = match cv.wait(p) {
                    Ok(p) => p,
                    Err(_) => return,
                };
            }
            if p.quit && p.wanted == p.done {
                return;
            }
            let target = p.wanted;
            drop(p);
            let result = file.sync_data();
            p = match lock.lock() {
                Ok(p) => p,
                Err(_) => return,
            };
            match result {
                Ok(()) => p.done = p.done.max(target),
                Err(e) => {
                    // Stop: nothing written after a failed sync is known to
                    // be durable; the core loop gets the error at its next
                    // commit and the daemon exits.
                    tracing::error!("cannot sync {}: {e}", path.display());
                    p.error = Some(format!("cannot sync {}: {e}", path.display()));
                    return;
                }
            }
        }
    }

    fn request(&self, written: u64) {
        let (lock, cv) = &*self.shared;
        if let Ok(mut p) = lock.lock() {
            if written > p.wanted {
                p.wanted = written;
                cv.notify_one();
            }
        }
    }

    fn done(&self) -> u64 {
        self.shared.0.lock().map_or(0, |p| p.done)
    }

    fn check(&self) -> Result<()> {
        match self.shared.0.lock() {
            Ok(p) => match &p.error {
                Some(e) => bail!("{e}"),
                None => Ok(()),
            },
            Err(_) => bail!("the decision log's sync thread panicked"),
        }
    }
}

impl Drop for BackgroundSync {
    fn drop(&mut self) {
        if let Ok(mut p) = self.shared.0.lock() {
            p.quit = true;
            self.shared.1.notify_one();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
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

/// The VMM's word for a decision (`decide ID WORD`).
pub fn vmm_word(d: Decision) -> &'static str {
    match d {
        Decision::Allow => "allow",
        Decision::RestartVm => "restart",
        Decision::HoldVirtuallyOff => "hold",
        Decision::Refuse => "refuse",
    }
}

/// Decisions already taken for requests of each guest's current VMM
/// process. A VMM re-publishes its pending requests when an arbiter
/// attaches; one the log already decided (the daemon died before sending
/// the answer) gets the logged decision again instead of a second input.
/// Request ids restart at 1 in a new VMM process, so a guest's set is
/// cleared when its VMM goes away (`VmExited`, `VmLost`) or is started
/// (`StartVm`).
#[derive(Debug, Default)]
pub struct Decided(BTreeMap<String, BTreeMap<u64, Decision>>);

impl Decided {
    /// Rebuilds the sets from a log.
    pub fn from_log(records: &[LogRecord]) -> Self {
        let mut d = Decided::default();
        for r in records {
            d.note(&r.input, &r.outputs);
        }
        d
    }

    /// Takes one record into account.
    pub fn note(&mut self, input: &Input, outputs: &[Output]) {
        if let Input::VmExited { guest, .. } | Input::VmLost { guest } = input {
            self.0.remove(guest);
        }
        for o in outputs {
            match o {
                Output::StartVm { guest, .. } => {
                    self.0.remove(guest);
                }
                Output::Decide {
                    guest,
                    request_id,
                    decision,
                    ..
                } => {
                    self.0
                        .entry(guest.clone())
                        .or_default()
                        .insert(*request_id, *decision);
                }
                _ => {}
            }
        }
    }

    /// The decision already taken for `guest`'s request `id`.
    pub fn get(&self, guest: &str, id: u64) -> Option<Decision> {
        self.0.get(guest).and_then(|m| m.get(&id)).copied()
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
    use system_manager::{Arbiter, Policy};

    fn tmpdir(tag: &str) -> StateDir {
        let d = std::env::temp_dir().join(format!("sysmgr-store-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        StateDir(d)
    }

    /// A policy with one android-role guest named `a`.
    fn one_android_guest() -> Policy {
        Policy::from_toml_str("[[guest]]\nname = \"a\"\nrole = \"android\"\n").unwrap()
    }

    #[test]
    fn log_survives_a_torn_last_line() {
        let dir = tmpdir("torn");
        let policy = one_android_guest();
        let mut a = Arbiter::new(policy.clone());
        let mut log = DecisionLog::open(&dir).unwrap();
        log.append(&a.step(Millis(1), Input::IgnitionOn)).unwrap();
        log.append(&a.step(Millis(2), Input::VmStarted { guest: "a".into() }))
            .unwrap();
        drop(log);
        let mut f = OpenOptions::new().append(true).open(dir.log()).unwrap();
        f.write_all(b"{\"seq\":3,\"at\":").unwrap();
        let recs = dir.read_log().unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(Arbiter::verify(policy, &recs).unwrap(), a);
        // The torn bytes are gone from the file, so appending goes on.
        assert!(std::fs::read_to_string(dir.log()).unwrap().ends_with("}\n"));
        // A bad line in the middle is an error, not silently dropped.
        std::fs::write(dir.log(), "garbage\n{}\n").unwrap();
        let e = dir.read_log().unwrap_err();
        assert!(format!("{e:#}").contains("decision log line 1"), "{e:#}");
    }

    #[test]
    fn background_sync_catches_up_and_sync_waits() {
        let dir = tmpdir("bgsync");
        let policy = one_android_guest();
        let mut a = Arbiter::new(policy.clone());
        let mut log = DecisionLog::open(&dir).unwrap();
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
        assert_eq!(dir.read_log().unwrap().len(), 51);
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

    #[test]
    fn decided_sets_follow_the_vmm_process() {
        let mut d = Decided::default();
        let decide = |id| Output::Decide {
            guest: "a".into(),
            request_id: id,
            decision: Decision::HoldVirtuallyOff,
            reason: String::new(),
        };
        d.note(&Input::Tick, &[decide(1)]);
        assert_eq!(d.get("a", 1), Some(Decision::HoldVirtuallyOff));
        assert_eq!(d.get("a", 2), None);
        d.note(&Input::VmLost { guest: "a".into() }, &[]);
        assert_eq!(d.get("a", 1), None);
        d.note(&Input::Tick, &[decide(1)]);
        d.note(
            &Input::IgnitionOn,
            &[Output::StartVm {
                guest: "a".into(),
                reason: String::new(),
            }],
        );
        assert_eq!(d.get("a", 1), None);
    }
}
