//! The `sync:` service: `adb push`, `pull`, `ls` and the `stat`s they make,
//! protocol version 1 ([`adbd::sync_protocol`]) on the guest's files.
//!
//! A failed `SEND` still reads the client's data up to its `DONE` (the
//! client sends it all before it reads our answer), removes the partial
//! file and answers `FAIL` with the reason; a malformed request gets
//! `FAIL` and the stream is closed. Answers are sent in WRTEs of up to the
//! connection's payload size, so a `RECV` keeps at most that much queued.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant, UNIX_EPOCH};

use adbd::sync_protocol::{self as sp, Decoder, Request, SendPiece};
use tracing::{info, warn};

use crate::conn::StreamIo;

/// Longest symlink target a `SEND` may carry.
const MAX_LINK_TARGET: usize = 4096;
/// Answer bytes collected before a send.
const FLUSH_AT: usize = 192 * 1024;

/// An I/O error as `strerror` text, without Rust's `(os error N)`.
fn describe(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.rfind(" (os error ") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

fn path_of(bytes: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(bytes))
}

/// The stream and the decoder of its requests.
struct Sync {
    io: StreamIo,
    decoder: Decoder,
    out: Vec<u8>,
}

/// What ends a sync stream early.
enum Stop {
    /// The stream closed.
    Closed,
    /// The client broke the protocol (message for the log and `FAIL`).
    Protocol(String),
}

impl Sync {
    /// The next request; `Err` at the end of the stream or on bad bytes.
    fn next(&mut self) -> Result<Request, Stop> {
        loop {
            match self.decoder.next_request() {
                Ok(Some(r)) => return Ok(r),
                Ok(None) => {}
                Err(e) => return Err(Stop::Protocol(e.to_string())),
            }
            let data = self.io.recv().ok_or(Stop::Closed)?;
            let done = self.decoder.push_owned(data);
            self.io.recycle(done);
        }
    }

    fn flush(&mut self) -> Result<(), Stop> {
        if !self.out.is_empty() {
            self.io.send(&self.out).map_err(|_| Stop::Closed)?;
            self.out.clear();
        }
        Ok(())
    }
}

/// Serves sync requests on `io` until `QUIT`, the end of the stream or a
/// protocol error.
pub fn serve(io: StreamIo) {
    let mut s = Sync {
        io,
        decoder: Decoder::new(),
        out: Vec::new(),
    };
    let result = (|| loop {
        match s.next()? {
            Request::Stat(path) => stat(&mut s.out, &path),
            Request::List(path) => list(&mut s, &path)?,
            Request::Send { path, mode } => receive(&mut s, &path, mode)?,
            Request::Recv(path) => send_file(&mut s, &path)?,
            Request::Quit => return Ok(()),
            Request::Data(_) | Request::Done(_) => {
                return Err(Stop::Protocol("DATA or DONE outside a SEND".into()))
            }
        }
        s.flush()?;
    })();
    if let Err(Stop::Protocol(e)) = result {
        warn!("sync: {e}; closing the stream");
        sp::fail(&mut s.out, &e);
        let _ = s.flush();
    }
}

fn stat_words(meta: &fs::Metadata) -> (u32, u32, u32) {
    (
        meta.mode(),
        // Version 1 has 32-bit sizes and times (the client's limits too).
        meta.size() as u32,
        meta.mtime() as u32,
    )
}

/// `STAT`: lstat(2); all zero when it fails (version 1 has no errno).
fn stat(out: &mut Vec<u8>, path: &[u8]) {
    let (mode, size, mtime) = fs::symlink_metadata(path_of(path))
        .map(|m| stat_words(&m))
        .unwrap_or((0, 0, 0));
    sp::stat_reply(out, mode, size, mtime);
}

/// `LIST`: one `DENT` per entry (lstat), then `DONE`.
fn list(s: &mut Sync, path: &[u8]) -> Result<(), Stop> {
    if let Ok(entries) = fs::read_dir(path_of(path)) {
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            let (mode, size, mtime) = stat_words(&meta);
            sp::dent(&mut s.out, mode, size, mtime, entry.file_name().as_bytes());
            if s.out.len() >= FLUSH_AT {
                s.flush()?;
            }
        }
    }
    sp::list_done(&mut s.out);
    Ok(())
}

/// Where the data of a `SEND` goes.
enum Sink {
    File(File),
    Link(Vec<u8>),
}

/// Opens the destination of a `SEND` (creating missing parent
/// directories, as `fixed_push_mkdir` promises).
fn open_sink(path: &Path, mode: u32) -> Result<Sink, String> {
    let kind = mode & libc::S_IFMT;
    if kind == libc::S_IFLNK {
        return Ok(Sink::Link(Vec::new()));
    }
    if kind != 0 && kind != libc::S_IFREG {
        return Err(format!("cannot push mode {mode:o}: not a file or symlink"));
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)
            .map_err(|e| format!("couldn't create directories: {}", describe(&e)))?;
    }
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode & 0o7777)
        .open(path)
        .map(Sink::File)
        .map_err(|e| format!("couldn't create file: {}", describe(&e)))
}

/// `SEND`: the data up to `DONE` into the file (or symlink); `OKAY` or
/// `FAIL`.
fn receive(s: &mut Sync, path_bytes: &[u8], mode: u32) -> Result<(), Stop> {
    let path = path_of(path_bytes);
    let mut sink = open_sink(path, mode);
    // Only a regular file this SEND created (truncated) is removed on
    // failure, never a device node such as `/dev/null`.
    let created = match &sink {
        Ok(Sink::File(f)) => f.metadata().is_ok_and(|m| m.file_type().is_file()),
        _ => false,
    };
    let (start, mut writing, mut bytes) = (Instant::now(), Duration::ZERO, 0u64);
    let mtime = loop {
        // The file data is written from the WRTE payloads in place.
        let chunk = match s.decoder.next_send_piece() {
            Ok(Some(SendPiece::Data(chunk))) => chunk,
            Ok(Some(SendPiece::Done(mtime))) => break mtime,
            Ok(None) => {
                let data = s.io.recv().ok_or(Stop::Closed)?;
                let done = s.decoder.push_owned(data);
                s.io.recycle(done);
                continue;
            }
            Ok(Some(SendPiece::Other(other))) => {
                if created {
                    let _ = fs::remove_file(path);
                }
                return Err(Stop::Protocol(format!("{other:?} inside a SEND")));
            }
            Err(e) => {
                if created {
                    let _ = fs::remove_file(path);
                }
                return Err(Stop::Protocol(e.to_string()));
            }
        };
        let failed = match &mut sink {
            Ok(Sink::File(f)) => {
                let t = Instant::now();
                let r = f.write_all(chunk);
                writing += t.elapsed();
                bytes += chunk.len() as u64;
                r.err().map(|e| format!("write failed: {}", describe(&e)))
            }
            Ok(Sink::Link(target)) if target.len() + chunk.len() <= MAX_LINK_TARGET => {
                target.extend_from_slice(chunk);
                None
            }
            Ok(Sink::Link(_)) => Some("symlink target too long".to_string()),
            Err(_) => None,
        };
        if let Some(e) = failed {
            sink = Err(e);
        }
    };
    let result = sink.and_then(|sink| match sink {
        Sink::File(f) => {
            let when = UNIX_EPOCH + Duration::from_secs(u64::from(mtime));
            // Keeping the client's mtime is best effort, as in AOSP (and
            // only for the regular files the push created).
            if created {
                let _ = f.set_times(fs::FileTimes::new().set_modified(when).set_accessed(when));
            }
            Ok(())
        }
        Sink::Link(target) => {
            let _ = fs::remove_file(path);
            // The client sends the target NUL-terminated (AOSP's adbd reads
            // it as a C string).
            let end = target.iter().position(|&b| b == 0).unwrap_or(target.len());
            std::os::unix::fs::symlink(OsStr::from_bytes(&target[..end]), path)
                .map_err(|e| format!("couldn't create symlink: {}", describe(&e)))
        }
    });
    match result {
        Ok(()) => {
            info!(
                "sync: received {} ({bytes} bytes) in {:.2} s, {:.2} s of it writing",
                path.display(),
                start.elapsed().as_secs_f64(),
                writing.as_secs_f64()
            );
            sp::okay(&mut s.out);
        }
        Err(e) => {
            if created {
                let _ = fs::remove_file(path);
            }
            warn!("sync: push to {} failed: {e}", path.display());
            sp::fail(&mut s.out, &e);
        }
    }
    Ok(())
}

/// `RECV`: the file as `DATA` chunks and `DONE`, or `FAIL`.
fn send_file(s: &mut Sync, path_bytes: &[u8]) -> Result<(), Stop> {
    let path = path_of(path_bytes);
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) => {
            sp::fail(&mut s.out, &format!("open failed: {}", describe(&e)));
            return Ok(());
        }
    };
    let mut chunk = vec![0u8; sp::MAX_DATA];
    loop {
        match file.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => sp::data(&mut s.out, &chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                sp::fail(&mut s.out, &format!("read failed: {}", describe(&e)));
                return Ok(());
            }
        }
        if s.out.len() >= FLUSH_AT {
            s.flush()?;
        }
    }
    sp::recv_done(&mut s.out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use adbd::sync_protocol::encode_request as req;

    use crate::test_client::Client;

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("adbd-sync-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn push_stat_list_pull_round_trip() {
        let dir = temp_dir("round");
        let file = dir.join("sub/dir/f.bin");
        let path = file.to_str().unwrap().as_bytes().to_vec();
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 256) as u8).collect();
        let mut c = Client::open("sync:").unwrap();
        // SEND path,mode; DATA in 64 KiB chunks; DONE mtime.
        let mut send = path.clone();
        send.extend_from_slice(b",33188");
        let mut wire = req(b"SEND", send.len() as u32, &send);
        for chunk in data.chunks(64 * 1024) {
            wire.extend(req(b"DATA", chunk.len() as u32, chunk));
        }
        wire.extend(req(b"DONE", 1_700_000_000, b""));
        let mut got = c.write(&wire);
        got.extend(c.write(&req(b"STAT", path.len() as u32, &path)));
        let parent = file.parent().unwrap().to_str().unwrap().as_bytes().to_vec();
        got.extend(c.write(&req(b"LIST", parent.len() as u32, &parent)));
        got.extend(c.write(&req(b"RECV", path.len() as u32, &path)));
        got.extend(c.write(&req(b"QUIT", 0, b"")));
        got.extend(c.read_to_close());
        assert_eq!(std::fs::read(&file).unwrap(), data);
        // OKAY, then STAT (mode, size, mtime).
        assert_eq!(&got[..8], &req(b"OKAY", 0, b"")[..]);
        let words =
            |at: usize| u32::from_le_bytes([got[at], got[at + 1], got[at + 2], got[at + 3]]);
        assert_eq!(&got[8..12], b"STAT");
        assert_eq!(
            (words(12), words(16), words(20)),
            (0o100644, 200_000, 1_700_000_000)
        );
        // One DENT named f.bin, then DONE.
        assert_eq!(&got[24..28], b"DENT");
        assert_eq!(words(40), 5);
        assert_eq!(&got[44..49], b"f.bin");
        assert_eq!(&got[49..53], b"DONE");
        // The file back as DATA chunks and DONE.
        let mut at = 49 + 20;
        let mut back = Vec::new();
        while &got[at..at + 4] == b"DATA" {
            let n = words(at + 4) as usize;
            assert!(n <= 64 * 1024);
            back.extend_from_slice(&got[at + 8..at + 8 + n]);
            at += 8 + n;
        }
        assert_eq!(&got[at..], &req(b"DONE", 0, b"")[..]);
        assert_eq!(back, data);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn failures_answer_fail_and_keep_the_stream() {
        let dir = temp_dir("fail");
        std::fs::create_dir_all(&dir).unwrap();
        let mut c = Client::open("sync:").unwrap();
        // A push onto a directory: the data is still read, then FAIL.
        let mut send = dir.to_str().unwrap().as_bytes().to_vec();
        send.extend_from_slice(b",33188");
        let mut wire = req(b"SEND", send.len() as u32, &send);
        wire.extend(req(b"DATA", 3, b"abc"));
        wire.extend(req(b"DONE", 0, b""));
        let mut got = c.write(&wire);
        // A missing file: STAT all zero, RECV FAIL; the stream still works.
        let missing = b"/nonexistent/adbd-test";
        got.extend(c.write(&req(b"STAT", missing.len() as u32, missing)));
        got.extend(c.write(&req(b"RECV", missing.len() as u32, missing)));
        got.extend(c.write(&req(b"QUIT", 0, b"")));
        got.extend(c.read_to_close());
        // FAIL <len> <text>, STAT 0 0 0, FAIL <len> <text>.
        let fail = |at: usize| -> (String, usize) {
            assert_eq!(&got[at..at + 4], b"FAIL", "{got:?}");
            let n =
                u32::from_le_bytes([got[at + 4], got[at + 5], got[at + 6], got[at + 7]]) as usize;
            (
                String::from_utf8_lossy(&got[at + 8..at + 8 + n]).into_owned(),
                at + 8 + n,
            )
        };
        let (first, at) = fail(0);
        assert!(
            first.contains("couldn't create file: Is a directory"),
            "{first:?}"
        );
        assert_eq!(&got[at..at + 16], &req(b"STAT", 0, &[0; 8])[..]);
        let (second, end) = fail(at + 16);
        assert!(second.contains("open failed: No such file"), "{second:?}");
        assert_eq!(end, got.len());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_bad_request_fails_and_closes() {
        let mut c = Client::open("sync:").unwrap();
        let mut got = c.write(&req(b"STA2", 1, b"/"));
        got.extend(c.read_to_close());
        let text = String::from_utf8_lossy(&got).into_owned();
        assert!(
            text.starts_with("FAIL") && text.contains("unknown sync request"),
            "{text:?}"
        );
    }
}
