//! The per-guest VMM log, capped and rotated.
//!
//! A launched VMM's stdout (the guest's serial console) and stderr (its
//! log) go into a pipe, not into a file: the other end is read by a
//! **log keeper**, a small process (`sysmgr vmm-log`, this program run
//! again) that appends to `<state-dir>/<guest>.vmm.log` and, before the
//! file would pass `--vmm-log-max-bytes`, renames it to `<guest>.vmm.log.1`
//! (`.1` to `.2`, ... up to `--vmm-log-keep` old files; the oldest is
//! dropped) and starts a new one. A guest that floods its console or the
//! VMM's log therefore fills at most `(keep + 1) * max_bytes` of the state
//! directory per guest.
//!
//! The keeper is its own process in its own process group, so the log
//! outlives the daemon (and the launcher process) exactly as the VMM does:
//! it ends when the VMM and every other holder of the pipe's write end have
//! gone (end of file). It reads whatever comes and never stops reading, so
//! a failing disk does not block the VMM's output; a write error is
//! reported on the keeper's stderr once per rotation.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// Size and count limits of one guest's VMM log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogCap {
    /// The largest a log file grows before it is rotated.
    pub max_bytes: u64,
    /// How many rotated files (`.1`, `.2`, ...) are kept; 0 truncates.
    pub keep: u32,
}

impl LogCap {
    /// 8 MiB per file, two old files: at most 24 MiB per guest.
    pub const DEFAULT: LogCap = LogCap {
        max_bytes: 8 << 20,
        keep: 2,
    };

    /// The most the log files of one guest can hold together.
    pub fn total_bytes(self) -> u64 {
        self.max_bytes.saturating_mul(u64::from(self.keep) + 1)
    }
}

/// The cap and the keeper program, set once by `sysmgr run`.
#[derive(Debug)]
struct Config {
    cap: LogCap,
    keeper: PathBuf,
}

static CONFIGURED: OnceLock<Config> = OnceLock::new();

/// Sets the cap every later launch uses, and this program as the keeper
/// (its path taken now, at start-up). Called once by `sysmgr run` before
/// the launcher process is forked, which inherits it. Without it (unit
/// tests) a VMM's output is appended to its log file uncapped.
pub fn configure(cap: LogCap) -> io::Result<()> {
    let keeper = std::env::current_exe()?;
    let _ = CONFIGURED.set(Config { cap, keeper });
    Ok(())
}

/// A log file that is rotated before it passes its cap.
#[derive(Debug)]
pub struct RotatingLog {
    path: PathBuf,
    cap: LogCap,
    file: File,
    size: u64,
}

/// `path` with `.n` appended (`android.vmm.log.1`).
fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// How many of `bytes` go into a file with `room` bytes left: all if they
/// fit, else up to the last newline that fits (whole lines stay in one
/// file), else exactly `room`.
fn split_point(bytes: &[u8], room: u64) -> usize {
    let room = usize::try_from(room).unwrap_or(usize::MAX);
    if bytes.len() <= room {
        return bytes.len();
    }
    bytes[..room]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(room, |i| i + 1)
}

impl RotatingLog {
    /// Opens (appends to) `path`; an existing file counts towards the cap.
    pub fn open(path: &Path, cap: LogCap) -> io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path: path.to_path_buf(),
            cap: LogCap {
                max_bytes: cap.max_bytes.max(1),
                keep: cap.keep,
            },
            file,
            size,
        })
    }

    /// Appends `bytes`, rotating as often as needed so that no file passes
    /// the cap.
    pub fn write(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let room = self.cap.max_bytes.saturating_sub(self.size);
            if room == 0 {
                self.rotate()?;
                continue;
            }
            let take = split_point(bytes, room);
            // A line cut at the cap starts a fresh file instead (unless the
            // file is empty: then the line is longer than the cap).
            if take < bytes.len() && bytes[take - 1] != b'\n' && self.size > 0 {
                self.rotate()?;
                continue;
            }
            self.file.write_all(&bytes[..take])?;
            self.size += take as u64;
            bytes = &bytes[take..];
        }
        Ok(())
    }

    /// `.keep-1` -> `.keep`, ..., the file -> `.1`, then a new empty file.
    fn rotate(&mut self) -> io::Result<()> {
        if self.cap.keep > 0 {
            for n in (1..self.cap.keep).rev() {
                match std::fs::rename(numbered(&self.path, n), numbered(&self.path, n + 1)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            std::fs::rename(&self.path, numbered(&self.path, 1))?;
        }
        self.file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

/// `sysmgr vmm-log`: confines this process ([`confine`]), then opens the
/// log at `path` (as the state directory's owner: a link planted there
/// gets no more than that owner's rights) and copies stdin into it until
/// end of file.
pub fn run_keeper(path: &Path, cap: LogCap) -> io::Result<()> {
    confine(path)?;
    let log = RotatingLog::open(path, cap)?;
    copy(log, path, io::stdin().lock())
}

/// The keeper gives up what it does not need before it reads a byte of
/// the guest's output: started as root it switches to the owner of the
/// log's directory (the state directory's owner: `sysmgr`'s sandbox user,
/// or root when the daemon runs unsandboxed as root), every capability
/// goes, `no_new_privs` and non-dumpable are set (`sandbox::privileges`),
/// and landlock leaves it the log's directory only (`sandbox::fs`).
#[cfg(target_os = "linux")]
fn confine(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let meta = std::fs::metadata(&dir)?;
    let owner = sandbox::Identity {
        uid: meta.uid(),
        gid: meta.gid(),
    };
    sandbox::privileges::drop_all(Some(owner), &[])?;
    sandbox::fs::restrict(&sandbox::fs::FsRules {
        read_write: vec![dir],
        ..Default::default()
    })
    .map_err(io::Error::other)?;
    Ok(())
}

/// Off Linux there is nothing to confine with.
#[cfg(not(target_os = "linux"))]
fn confine(_: &Path) -> io::Result<()> {
    Ok(())
}

/// The keeper's loop without confinement (tests): opens the log at `path`
/// and copies `input` into it until end of file.
pub fn keep(path: &Path, cap: LogCap, input: impl Read) -> io::Result<()> {
    copy(RotatingLog::open(path, cap)?, path, input)
}

/// Copies `input` into `log` until end of file. A write error is reported
/// and the rest of that chunk dropped; reading goes on (the VMM must never
/// block on its output).
fn copy(mut log: RotatingLog, path: &Path, mut input: impl Read) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut reported = false;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        match log.write(&buf[..n]) {
            Ok(()) => reported = false,
            Err(e) if !reported => {
                eprintln!("sysmgr vmm-log: {}: {e}; dropping output", path.display());
                reported = true;
            }
            Err(_) => {}
        }
    }
}

/// The stdout and stderr for a VMM whose output goes to the rotating log
/// at `path`: both ends of one pipe whose reader is a new keeper process
/// (reaped by a thread of this process). If the keeper cannot be started
/// (or [`configure`] was not called) the output is appended to `path`
/// directly, uncapped (with a warning).
pub fn outputs(path: &Path) -> Result<(Stdio, Stdio), String> {
    if let Some(config) = CONFIGURED.get() {
        match spawn_keeper(&config.keeper, path, config.cap) {
            Ok(pipe) => {
                let err = pipe
                    .try_clone()
                    .map_err(|e| format!("cannot duplicate the log pipe: {e}"))?;
                return Ok((Stdio::from(pipe), Stdio::from(err)));
            }
            Err(e) => {
                tracing::warn!(
                    "cannot start the log keeper for {}: {e}; its output is not capped",
                    path.display()
                );
                eprintln!(
                    "sysmgr: cannot start the log keeper for {}: {e}; its output is not capped",
                    path.display()
                );
            }
        }
    }
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let err = out
        .try_clone()
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    Ok((Stdio::from(out), Stdio::from(err)))
}

/// Starts `sysmgr vmm-log` reading a new pipe; returns the pipe's write end.
fn spawn_keeper(keeper: &Path, path: &Path, cap: LogCap) -> io::Result<OwnedFd> {
    let mut child = Command::new(keeper)
        .arg("vmm-log")
        .arg("--path")
        .arg(path)
        .arg("--max-bytes")
        .arg(cap.max_bytes.to_string())
        .arg("--keep")
        .arg(cap.keep.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        // Its own process group, like the VMM: it lives as long as the
        // VMM's output, whatever happens to the daemon's group.
        .process_group(0)
        .spawn()?;
    let pipe = child
        .stdin
        .take()
        .ok_or_else(|| io::Error::other("the keeper has no stdin pipe"))?;
    std::thread::Builder::new()
        .name("log-keeper-reap".into())
        .spawn(move || {
            let _ = child.wait();
        })?;
    Ok(OwnedFd::from(pipe))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        crate::test_dir(&format!("vmm-log-{name}"))
    }

    /// A fresh test directory and the path of guest `g`'s log in it.
    fn log_path(name: &str) -> (PathBuf, PathBuf) {
        let d = dir(name);
        let path = d.join("g.vmm.log");
        (d, path)
    }

    fn log_cap(max_bytes: u64, keep: u32) -> LogCap {
        LogCap { max_bytes, keep }
    }

    fn files(d: &Path) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    e.metadata().unwrap().len(),
                )
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_flood_stays_within_the_cap_and_keeps_the_newest_lines() {
        let (d, path) = log_path("flood");
        let cap = log_cap(1000, 2);
        let mut log = RotatingLog::open(&path, cap).unwrap();
        for i in 0..10_000 {
            log.write(format!("line {i:05}\n").as_bytes()).unwrap();
        }
        let f = files(&d);
        assert_eq!(
            f.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            ["g.vmm.log", "g.vmm.log.1", "g.vmm.log.2"]
        );
        assert!(f.iter().all(|(_, len)| *len <= 1000), "{f:?}");
        assert!(f.iter().map(|(_, l)| l).sum::<u64>() <= cap.total_bytes());
        // Whole lines in every file, the newest in the current one, in order.
        let current = std::fs::read_to_string(&path).unwrap();
        assert!(current.ends_with("line 09999\n"), "{current}");
        let older = std::fs::read_to_string(numbered(&path, 1)).unwrap();
        assert!(older.starts_with("line ") && older.ends_with('\n'));
        let last_old: u32 = older.lines().last().unwrap()[5..].parse().unwrap();
        let first_new: u32 = current.lines().next().unwrap()[5..].parse().unwrap();
        assert_eq!(last_old + 1, first_new);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_chunk_without_newlines_is_split_at_the_cap() {
        let (d, path) = log_path("nolines");
        let cap = log_cap(100, 1);
        let mut log = RotatingLog::open(&path, cap).unwrap();
        log.write(&[b'x'; 250]).unwrap();
        assert_eq!(
            files(&d),
            [("g.vmm.log".into(), 50), ("g.vmm.log.1".into(), 100)]
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn an_existing_file_counts_and_keep_zero_truncates() {
        let (d, path) = log_path("existing");
        std::fs::write(&path, "old boot\n").unwrap();
        let cap = log_cap(12, 0);
        let mut log = RotatingLog::open(&path, cap).unwrap();
        log.write(b"new\n").unwrap(); // 13 > 12: rotated (truncated) first
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new\n");
        assert_eq!(files(&d).len(), 1);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn keep_copies_until_end_of_file() {
        let (d, path) = log_path("keep");
        let input: Vec<u8> = (0..200)
            .flat_map(|i| format!("{i}\n").into_bytes())
            .collect();
        keep(&path, log_cap(64, 3), &input[..]).unwrap();
        let f = files(&d);
        assert_eq!(f.len(), 4, "{f:?}");
        assert!(f.iter().all(|(_, len)| *len <= 64));
        assert!(std::fs::read_to_string(&path).unwrap().ends_with("199\n"));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn split_point_prefers_whole_lines() {
        assert_eq!(split_point(b"abc", 5), 3);
        assert_eq!(split_point(b"ab\ncd\nef", 7), 6);
        assert_eq!(split_point(b"abcdef", 4), 4);
    }
}
