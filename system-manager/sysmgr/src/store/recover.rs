//! Recovery: the snapshot (if the log was ever compacted) plus the log
//! records after it.
//!
//! - A leftover `snapshot.json.tmp` is a compaction that died before its
//!   rename: removed.
//! - A last log line without its newline is a record whose write was cut
//!   (the daemon or the host died while writing it, before anything was
//!   done for it): dropped with a warning that says how many bytes, and
//!   cut from the file.
//! - Log records the snapshot already covers (a compaction that died
//!   after its rename, before emptying the log) are skipped, and the log
//!   is emptied.
//! - Anything else that is not a record (a bad line in the middle, a
//!   snapshot that does not parse or does not fit the policy, a gap in
//!   the sequence numbers) is an error: the daemon stops and says which
//!   file and line, rather than guess.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use system_manager::{Arbiter, ArbiterSnapshot, LogRecord, Millis, Policy};

use super::storage::{Storage, StorageFile};
use super::{Decided, LOG_FILE, SNAPSHOT_FILE, SNAPSHOT_TMP};

/// The snapshot format this daemon writes and reads.
pub const SNAPSHOT_FORMAT: u32 = 1;

/// `snapshot.json`: the state after the last compacted record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// [`SNAPSHOT_FORMAT`].
    pub format: u32,
    /// The arbiter's state (`inputs` is the last record it covers).
    pub arbiter: ArbiterSnapshot,
    /// The daemon's decided sets.
    pub decided: Decided,
}

impl Snapshot {
    /// The snapshot of a daemon's state.
    pub fn of(arbiter: &Arbiter, decided: &Decided) -> Self {
        Snapshot {
            format: SNAPSHOT_FORMAT,
            arbiter: arbiter.snapshot(),
            decided: decided.clone(),
        }
    }
}

/// What the state directory holds.
#[derive(Debug)]
pub struct Loaded {
    /// The snapshot, if the log was compacted.
    pub snapshot: Option<Snapshot>,
    /// The log records after the snapshot.
    pub records: Vec<LogRecord>,
    /// Bytes of a torn last record that were dropped.
    pub torn_bytes: usize,
    /// Records skipped because the snapshot covers them.
    pub covered: usize,
    log: String,
}

impl Loaded {
    /// The last record the snapshot covers (0: none).
    pub fn snapshot_seq(&self) -> u64 {
        self.snapshot.as_ref().map_or(0, |s| s.arbiter.inputs)
    }

    /// Inputs handled in all (snapshot and log).
    pub fn inputs(&self) -> u64 {
        self.records.last().map_or(self.snapshot_seq(), |r| r.seq)
    }

    /// The time of the last input.
    pub fn last_at(&self) -> Millis {
        self.records
            .last()
            .map(|r| r.at)
            .or(self.snapshot.as_ref().map(|s| s.arbiter.now))
            .unwrap_or_default()
    }

    /// The arbiter and the decided sets: the snapshot's, then each record
    /// replayed and checked (`Arbiter::verify_from`).
    pub fn restore(&self, policy: Policy) -> Result<(Arbiter, Decided)> {
        let (arbiter, mut decided) = match &self.snapshot {
            Some(s) => (
                Arbiter::from_snapshot(policy, s.arbiter.clone()).map_err(|e| {
                    anyhow::anyhow!(
                        "{SNAPSHOT_FILE}: {e}: the snapshot does not fit this policy; move the state directory's {SNAPSHOT_FILE} and {LOG_FILE} away to start afresh"
                    )
                })?,
                s.decided.clone(),
            ),
            None => (Arbiter::new(policy), Decided::default()),
        };
        let arbiter = arbiter.verify_from(&self.records).map_err(|e| {
            anyhow::anyhow!(
                "{}: {e}: the log does not replay under this policy and arbiter; move it away to start afresh",
                self.log
            )
        })?;
        decided.note_all(&self.records);
        Ok((arbiter, decided))
    }
}

/// Reads the snapshot and the log. With `repair` (the daemon, which owns
/// the directory) it also tidies up what an interrupted write or
/// compaction left (see the module documentation); without (`sysmgr
/// events`, `status`) it changes nothing.
pub fn load<S: Storage>(s: &S, repair: bool) -> Result<Loaded> {
    if repair {
        s.remove(SNAPSHOT_TMP)
            .with_context(|| format!("cannot remove {}", s.show(SNAPSHOT_TMP)))?;
    }
    let snapshot = match s
        .read(SNAPSHOT_FILE)
        .with_context(|| format!("cannot read {}", s.show(SNAPSHOT_FILE)))?
    {
        None => None,
        Some(bytes) => {
            let snap: Snapshot = serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "{}: not a snapshot; move it and {LOG_FILE} away to start afresh",
                    s.show(SNAPSHOT_FILE)
                )
            })?;
            if snap.format != SNAPSHOT_FORMAT {
                bail!(
                    "{}: snapshot format {} (this sysmgr reads {SNAPSHOT_FORMAT})",
                    s.show(SNAPSHOT_FILE),
                    snap.format
                );
            }
            Some(snap)
        }
    };
    let log = s.show(LOG_FILE);
    let mut bytes = s
        .read(LOG_FILE)
        .with_context(|| format!("cannot read {log}"))?
        .unwrap_or_default();
    let keep = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let torn_bytes = bytes.len() - keep;
    if torn_bytes > 0 {
        bytes.truncate(keep);
        if repair {
            tracing::warn!(
                "{log}: dropping a torn last record ({torn_bytes} bytes without their newline): its write was cut when the daemon or the host died, before anything was done for it"
            );
            cut(s, keep as u64)?;
        } else {
            // A reader beside a running daemon may see a record half
            // written; not worth a warning.
            tracing::debug!("{log}: last {torn_bytes} bytes are not a whole record yet");
        }
    }
    let text = String::from_utf8(bytes)
        .map_err(|e| anyhow::anyhow!("{log}: not text (byte {})", e.utf8_error().valid_up_to()))?;
    let mut records = LogRecord::parse_log(&text).with_context(|| log.clone())?;
    let seq = snapshot.as_ref().map_or(0, |s| s.arbiter.inputs);
    let covered = records.iter().take_while(|r| r.seq <= seq).count();
    records.drain(..covered);
    if covered > 0 {
        tracing::info!(
            "{log}: {covered} records are already in {SNAPSHOT_FILE} (a compaction was cut short)"
        );
        if repair && records.is_empty() {
            cut(s, 0)?;
        }
    }
    Ok(Loaded {
        snapshot,
        records,
        torn_bytes,
        covered,
        log,
    })
}

/// Cuts the log to `len` bytes, durably.
fn cut<S: Storage>(s: &S, len: u64) -> Result<()> {
    let f = s
        .open_append(LOG_FILE)
        .with_context(|| format!("cannot open {}", s.show(LOG_FILE)))?;
    f.set_len(len)
        .and_then(|()| f.sync())
        .with_context(|| format!("cannot truncate {}", s.show(LOG_FILE)))
}
