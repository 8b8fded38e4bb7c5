//! The append-only decision log, made durable as [`LogSync`] says, and
//! compacted into a snapshot when it grows past a size.
//!
//! Compaction ([`DecisionLog::compact`]), in this order, so that a power
//! loss between any two steps leaves a state directory that recovers
//! (`super::recover`) to the same arbiter:
//!
//! 1. write the snapshot to `snapshot.json.tmp` and `fdatasync` it;
//! 2. rename it over `snapshot.json`;
//! 3. `fsync` the directory (the rename is durable);
//! 4. cut `decisions.jsonl` to nothing and `fdatasync` it.
//!
//! Until step 3 the old snapshot and the whole log are what recovery
//! finds; from step 3 on the new snapshot, plus log records it already
//! covers (skipped) until step 4 takes them away.

use std::sync::{Arc, Condvar, Mutex};

use anyhow::{bail, Context, Result};
use system_manager::{LogRecord, Output};

use super::storage::{Storage, StorageFile};
use super::{Snapshot, LOG_FILE, SNAPSHOT_FILE, SNAPSHOT_TMP};

/// The log size (bytes) past which the daemon compacts it: the state
/// directory holds at most this, one batch of records and a snapshot.
pub const COMPACT_AT_BYTES: u64 = 1 << 20;

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

    /// The order in which a batch of written records is made durable and
    /// carried out: the daemon's `commit` and the power-loss test follow
    /// it step by step.
    pub fn commit_plan(self, records: &[LogRecord]) -> Vec<CommitStep> {
        let mut plan = vec![match self {
            LogSync::EveryDecision => CommitStep::Sync,
            LogSync::BeforeMcu => CommitStep::SyncSoon,
        }];
        for (r, record) in records.iter().enumerate() {
            plan.push(CommitStep::Announce(r));
            for (o, output) in record.outputs.iter().enumerate() {
                if self.must_be_durable_first(output) {
                    // Covers this record and every earlier one; a no-op
                    // when they already are on disk.
                    plan.push(CommitStep::Sync);
                }
                plan.push(CommitStep::Execute(r, o));
            }
        }
        plan
    }
}

/// One step of [`LogSync::commit_plan`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitStep {
    /// [`DecisionLog::sync`].
    Sync,
    /// [`DecisionLog::sync_soon`].
    SyncSoon,
    /// Record `r` of the batch is about to be carried out (the journal).
    Announce(usize),
    /// Carry out output `o` of record `r`.
    Execute(usize, usize),
}

/// The append-only decision log.
pub struct DecisionLog<S: Storage = super::Disk> {
    storage: Arc<S>,
    file: S::File,
    /// Records written so far (this process).
    written: u64,
    /// Records known to be on disk (this process).
    durable: u64,
    /// The log file's size.
    bytes: u64,
    /// Compact when the log is larger than this.
    compact_at: u64,
    background: Option<BackgroundSync>,
    /// Tests: `sync_soon` leaves the records unsynced (a background
    /// thread that never got to run).
    #[cfg(test)]
    starve_background: bool,
}

impl<S: Storage> DecisionLog<S> {
    /// Opens (creates) the log for appending. Call after recovery
    /// (`super::recover`), which has cut a torn last record.
    pub fn open(storage: Arc<S>) -> Result<Self> {
        let show = storage.show(LOG_FILE);
        let file = storage
            .open_append(LOG_FILE)
            .with_context(|| format!("cannot open {show}"))?;
        // A daemon killed with `--log-sync before-mcu` may have left records
        // only in the page cache; this process acts on them (it re-sends the
        // MCU its last command), so they go to disk first, and so does the
        // file's directory entry if the file is new.
        file.sync().with_context(|| format!("cannot sync {show}"))?;
        storage
            .sync_dir()
            .with_context(|| format!("cannot sync the directory of {show}"))?;
        let bytes = file.size().with_context(|| format!("cannot stat {show}"))?;
        Ok(DecisionLog {
            storage,
            file,
            written: 0,
            durable: 0,
            bytes,
            compact_at: COMPACT_AT_BYTES,
            background: None,
            #[cfg(test)]
            starve_background: false,
        })
    }

    /// Compacts when the log is larger than `bytes` (default
    /// [`COMPACT_AT_BYTES`]).
    pub fn compact_at(mut self, bytes: u64) -> Self {
        self.compact_at = bytes;
        self
    }

    /// Starts a thread that `fdatasync`s what [`DecisionLog::sync_soon`]
    /// asks for, off the caller's path.
    pub fn start_background_sync(&mut self) -> Result<()> {
        let show = self.storage.show(LOG_FILE);
        let file = self
            .file
            .try_clone()
            .with_context(|| format!("cannot duplicate {show}"))?;
        self.background = Some(BackgroundSync::start(file, show)?);
        Ok(())
    }

    /// Tests: makes [`DecisionLog::sync_soon`] do nothing, the worst case
    /// of a background sync that has not run yet.
    #[cfg(test)]
    pub fn starve_background_sync(&mut self) {
        self.starve_background = true;
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
            .write_bytes(line.as_bytes())
            .with_context(|| format!("cannot write {}", self.storage.show(LOG_FILE)))?;
        self.written += 1;
        self.bytes += line.len() as u64;
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
            .sync()
            .with_context(|| format!("cannot sync {}", self.storage.show(LOG_FILE)))?;
        self.durable = self.written;
        Ok(())
    }

    /// Asks the background thread to make every record written so far
    /// durable, without waiting; fails if an earlier background sync
    /// failed. Without a background thread this is [`DecisionLog::sync`].
    pub fn sync_soon(&mut self) -> Result<()> {
        #[cfg(test)]
        if self.starve_background {
            return Ok(());
        }
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

    /// The log file's size in bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Whether the log has grown past the compaction size.
    pub fn wants_compaction(&self) -> bool {
        self.bytes > self.compact_at
    }

    /// Replaces the log by `snapshot`, the state after every record
    /// written so far (the steps and why they are safe: the module's
    /// documentation). Afterwards every record is durable (the snapshot
    /// holds them) and the log is empty.
    pub fn compact(&mut self, snapshot: &Snapshot) -> Result<()> {
        let s = &*self.storage;
        let mut text = serde_json::to_string(snapshot).context("cannot serialize the snapshot")?;
        text.push('\n');
        let tmp = s.show(SNAPSHOT_TMP);
        let mut f = s
            .create(SNAPSHOT_TMP)
            .with_context(|| format!("cannot create {tmp}"))?;
        f.write_bytes(text.as_bytes())
            .and_then(|()| f.sync())
            .with_context(|| format!("cannot write {tmp}"))?;
        drop(f);
        s.rename(SNAPSHOT_TMP, SNAPSHOT_FILE)
            .with_context(|| format!("cannot rename {tmp} to {}", s.show(SNAPSHOT_FILE)))?;
        s.sync_dir()
            .with_context(|| format!("cannot sync the directory of {tmp}"))?;
        // The snapshot is durable: the records it covers may go.
        self.file
            .set_len(0)
            .and_then(|()| self.file.sync())
            .with_context(|| format!("cannot empty {}", s.show(LOG_FILE)))?;
        tracing::info!(
            "decision log compacted: {} bytes up to record {} are now {} ({} bytes)",
            self.bytes,
            snapshot.arbiter.inputs,
            s.show(SNAPSHOT_FILE),
            text.len()
        );
        self.bytes = 0;
        self.durable = self.written;
        Ok(())
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
    fn start<F: StorageFile>(file: F, show: String) -> Result<Self> {
        let shared = Arc::new((Mutex::new(SyncProgress::default()), Condvar::new()));
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("log-sync".into())
            .spawn(move || Self::serve(&file, &show, &s))
            .context("cannot start the decision log's sync thread")?;
        Ok(BackgroundSync {
            shared,
            thread: Some(thread),
        })
    }

    fn serve<F: StorageFile>(file: &F, show: &str, shared: &(Mutex<SyncProgress>, Condvar)) {
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
            let result = file.sync();
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
                    tracing::error!("cannot sync {show}: {e}");
                    p.error = Some(format!("cannot sync {show}: {e}"));
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
