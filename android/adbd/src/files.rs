//! The `sync:` service: `adb push`, `pull`, `ls` and the `stat`s they make,
//! protocol version 1 ([`adbd::sync_protocol`]) on the guest's files.
//!
//! A failed `SEND` still reads the client's data up to its `DONE` (the
//! client sends it all before it reads our answer), removes the partial
//! file and answers `FAIL` with the reason; a malformed request gets
//! `FAIL` and the stream is closed. Answers are sent in WRTEs of up to the
//! connection's payload size, so a `RECV` keeps at most that much queued
//! (and sends WRTEs of that size: each costs a round trip).

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant, UNIX_EPOCH};

use adbd::sync_protocol::{self as sp, Decoder, Request, SendPiece};
use tracing::{info, warn};

use crate::conn::StreamIo;

/// Longest symlink target a `SEND` may carry.
const MAX_LINK_TARGET: usize = 4096;
/// `LIST` answer bytes collected before a send (a `RECV` fills whole
/// `WRTE`s instead).
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

/// The error of an open, as its `FAIL` text.
fn create_failed(e: &std::io::Error) -> String {
    format!("couldn't create file: {}", describe(e))
}

/// Opens the destination of a `SEND` (creating missing parent
/// directories, as `fixed_push_mkdir` promises); `true` with a file this
/// push created (to remove if the push fails).
///
/// As AOSP's adbd: an existing regular file, or a symlink when a regular
/// file is pushed, is unlinked first (a symlink is replaced, its target
/// left alone); the file is then created anew (`O_EXCL`, `O_NOFOLLOW`)
/// and gets exactly the pushed mode, whatever the umask. An existing
/// device (`adb push f /dev/null`) is written in place; a directory, FIFO
/// or socket is refused.
fn open_sink(path: &Path, mode: u32) -> Result<(Sink, bool), String> {
    let kind = mode & libc::S_IFMT;
    if kind == libc::S_IFLNK {
        return Ok((Sink::Link(Vec::new()), false));
    }
    if kind != 0 && kind != libc::S_IFREG {
        return Err(format!("cannot push mode {mode:o}: not a file or symlink"));
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)
            .map_err(|e| format!("couldn't create directories: {}", describe(&e)))?;
    }
    if let Ok(meta) = fs::symlink_metadata(path) {
        let t = meta.file_type();
        if t.is_file() || t.is_symlink() {
            fs::remove_file(path).map_err(|e| create_failed(&e))?;
        } else if t.is_char_device() || t.is_block_device() {
            return open_device(path).map(|f| (Sink::File(f), false));
        } else if t.is_dir() {
            return Err(create_failed(&std::io::Error::from_raw_os_error(
                libc::EISDIR,
            )));
        } else {
            return Err("couldn't create file: not a regular file or device".into());
        }
    }
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(mode & 0o7777)
        .open(path)
        .map_err(|e| create_failed(&e))?;
    // The exact mode: the one given to open(2) was reduced by the umask.
    // A file system without modes keeps its own (ignored, as AOSP does).
    let _ = file.set_permissions(fs::Permissions::from_mode(mode & 0o7777));
    Ok((Sink::File(file), true))
}

/// Opens an existing device for writing. Non-blocking, so a FIFO that
/// replaced it since the lstat cannot block the open; that is refused.
fn open_device(path: &Path) -> Result<File, String> {
    let file = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| create_failed(&e))?;
    let t = file.metadata().map_err(|e| create_failed(&e))?.file_type();
    if !(t.is_char_device() || t.is_block_device()) {
        return Err("couldn't create file: not a regular file or device".into());
    }
    set_blocking(&file).map_err(|e| create_failed(&e))?;
    Ok(file)
}

/// Clears `O_NONBLOCK` on `file` (opened non-blocking so the open itself
/// could not block).
fn set_blocking(file: &File) -> std::io::Result<()> {
    // SAFETY: fcntl(2) F_GETFL/F_SETFL on an fd `file` owns.
    let rc = unsafe {
        let flags = libc::fcntl(file.as_raw_fd(), libc::F_GETFL);
        if flags < 0 {
            flags
        } else {
            libc::fcntl(file.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK)
        }
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Removes the file a push created unless the push succeeded (every
/// early return, the stream's close included, leaves no partial file).
struct Partial<'a> {
    path: Option<&'a Path>,
}

impl Partial<'_> {
    /// The push succeeded: the file stays.
    fn keep(&mut self) {
        self.path = None;
    }
}

impl Drop for Partial<'_> {
    fn drop(&mut self) {
        if let Some(path) = self.path {
            let _ = fs::remove_file(path);
        }
    }
}

/// `SEND`: the data up to `DONE` into the file (or symlink); `OKAY` or
/// `FAIL`.
fn receive(s: &mut Sync, path_bytes: &[u8], mode: u32) -> Result<(), Stop> {
    let path = path_of(path_bytes);
    let opened = open_sink(path, mode);
    // Only a regular file this SEND created is removed on failure, never
    // a device node such as `/dev/null`.
    let created = matches!(opened, Ok((_, true)));
    let mut partial = Partial {
        path: created.then_some(path),
    };
    let mut sink = opened.map(|(sink, _)| sink);
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
                return Err(Stop::Protocol(format!("{other:?} inside a SEND")));
            }
            Err(e) => return Err(Stop::Protocol(e.to_string())),
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
            partial.keep();
            info!(
                "sync: received {} ({bytes} bytes) in {:.2} s, {:.2} s of it writing",
                path.display(),
                start.elapsed().as_secs_f64(),
                writing.as_secs_f64()
            );
            sp::okay(&mut s.out);
        }
        Err(e) => {
            // The partial file goes with `partial`.
            warn!("sync: push to {} failed: {e}", path.display());
            sp::fail(&mut s.out, &e);
        }
    }
    Ok(())
}

/// Opens the source of a `RECV` without blocking: a regular file, or a
/// character device left non-blocking (its read then ends the pull at
/// "no data now", so `/dev/kmsg` or a terminal yields what is there,
/// while `/dev/zero` or `/dev/urandom` stream until the client stops).
/// Anything else is refused: a FIFO (whose open or read waits for a
/// writer), a socket, a directory, a block device.
fn open_source(path: &Path) -> Result<File, String> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| format!("open failed: {}", describe(&e)))?;
    let t = file
        .metadata()
        .map_err(|e| format!("open failed: {}", describe(&e)))?
        .file_type();
    if t.is_char_device() {
        return Ok(file);
    }
    if !t.is_file() {
        return Err("open failed: not a regular file or character device".into());
    }
    set_blocking(&file).map_err(|e| format!("open failed: {}", describe(&e)))?;
    Ok(file)
}

/// `RECV`: the file as `DATA` chunks and `DONE`, or `FAIL`.
fn send_file(s: &mut Sync, path_bytes: &[u8]) -> Result<(), Stop> {
    let path = path_of(path_bytes);
    let mut file = match open_source(path) {
        Ok(f) => f,
        Err(e) => {
            sp::fail(&mut s.out, &e);
            return Ok(());
        }
    };
    let mut chunk = vec![0u8; sp::MAX_DATA];
    // Whole WRTEs: the client acknowledges each before the next (adb 29
    // has no delayed ack), so each costs a round trip through the host.
    // The last DATA of a WRTE is cut to fit it.
    let wrte = s.io.max_payload();
    loop {
        let mut room = wrte
            .saturating_sub(s.out.len() + sp::HEADER_LEN)
            .min(sp::MAX_DATA);
        if room == 0 {
            if s.out.is_empty() {
                // A payload size too small for a DATA header (or 0: the
                // connection closed, and the send below says so).
                room = sp::MAX_DATA;
            } else {
                s.flush()?;
                continue;
            }
        }
        match file.read(&mut chunk[..room]) {
            Ok(0) => break,
            Ok(n) => sp::data(&mut s.out, &chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // A character device with nothing to read now: the end.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => {
                sp::fail(&mut s.out, &format!("read failed: {}", describe(&e)));
                return Ok(());
            }
        }
    }
    sp::recv_done(&mut s.out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileTypeExt;
    use std::path::PathBuf;
    use std::time::{Duration, Instant};

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

    /// The wire bytes of a whole `SEND` of `data` to `path`.
    fn send_wire(path: &std::path::Path, mode: u32, data: &[u8]) -> Vec<u8> {
        let mut send = path.to_str().unwrap().as_bytes().to_vec();
        send.extend_from_slice(format!(",{mode}").as_bytes());
        let mut wire = req(b"SEND", send.len() as u32, &send);
        for chunk in data.chunks(64 * 1024) {
            wire.extend(req(b"DATA", chunk.len() as u32, chunk));
        }
        wire.extend(req(b"DONE", 1_700_000_000, b""));
        wire
    }

    /// Pushes `data` to `path` on a new stream; the answer.
    fn push(path: &std::path::Path, mode: u32, data: &[u8]) -> Vec<u8> {
        let mut c = Client::open("sync:").unwrap();
        let mut got = c.write(&send_wire(path, mode, data));
        got.extend(c.write(&req(b"QUIT", 0, b"")));
        got.extend(c.read_to_close());
        got
    }

    #[test]
    fn a_push_over_a_symlink_replaces_the_link() {
        let dir = temp_dir("replace");
        std::fs::create_dir_all(&dir).unwrap();
        // Onto a symlink: the link becomes the file, its target stays.
        let target = dir.join("target");
        std::fs::write(&target, b"original").unwrap();
        let link = dir.join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert_eq!(push(&link, 0o100644, b"pushed"), req(b"OKAY", 0, b""));
        assert!(std::fs::symlink_metadata(&link).unwrap().is_file());
        assert_eq!(std::fs::read(&link).unwrap(), b"pushed");
        assert_eq!(std::fs::read(&target).unwrap(), b"original");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_push_sets_the_exact_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir("mode");
        std::fs::create_dir_all(&dir).unwrap();
        // Mode 0755 over an existing 0644 file, and 0777 whatever the
        // umask: exactly the pushed mode.
        let file = dir.join("file");
        std::fs::write(&file, b"old").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(push(&file, 0o100755, b"new"), req(b"OKAY", 0, b""));
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode();
        assert_eq!(
            (mode(&file) & 0o7777, std::fs::read(&file).unwrap()),
            (0o755, b"new".to_vec())
        );
        let fresh = dir.join("fresh");
        assert_eq!(push(&fresh, 0o100777, b"x"), req(b"OKAY", 0, b""));
        assert_eq!(mode(&fresh) & 0o7777, 0o777);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_push_to_a_device_writes_it_and_a_fifo_is_refused() {
        let dir = temp_dir("special");
        std::fs::create_dir_all(&dir).unwrap();
        let null = std::path::Path::new("/dev/null");
        assert_eq!(push(null, 0o100644, b"gone"), req(b"OKAY", 0, b""));
        assert!(std::fs::metadata(null)
            .unwrap()
            .file_type()
            .is_char_device());
        let fifo = dir.join("fifo");
        let c_fifo = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo(3) of a NUL-terminated path; the result is checked.
        assert_eq!(unsafe { libc::mkfifo(c_fifo.as_ptr(), 0o644) }, 0);
        let got = String::from_utf8_lossy(&push(&fifo, 0o100644, b"x")).into_owned();
        assert!(
            got.starts_with("FAIL") && got.contains("not a regular file"),
            "{got:?}"
        );
        assert!(std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Pulls `path` on a new stream (the client waits at most 5 s for
    /// each answer); the answer.
    fn pull(path: &std::path::Path) -> Vec<u8> {
        let mut c = Client::open("sync:").unwrap();
        c.set_timeout(Duration::from_secs(5));
        let p = path.to_str().unwrap().as_bytes();
        let mut got = c.write(&req(b"RECV", p.len() as u32, p));
        got.extend(c.write(&req(b"QUIT", 0, b"")));
        got.extend(c.read_to_close());
        got
    }

    #[test]
    fn a_pull_fills_whole_wrtes() {
        // Each WRTE waits for the client's OKAY: a 3 MiB pull in 1 MiB
        // WRTEs takes 4 round trips (15 with 192 KiB ones).
        let dir = temp_dir("pull-wrtes");
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("big");
        let data: Vec<u8> = (0..3u32 << 20).map(|i| (i % 251) as u8).collect();
        std::fs::write(&file, &data).unwrap();
        let mut c = Client::open("sync:").unwrap();
        let p = file.to_str().unwrap().as_bytes();
        let mut got = c.write(&req(b"RECV", p.len() as u32, p));
        got.extend(c.write(&req(b"QUIT", 0, b"")));
        got.extend(c.read_to_close());
        let data_of = |got: &[u8]| {
            let mut left = got;
            let mut data = Vec::new();
            while left.len() >= 8 && &left[..4] == b"DATA" {
                let n = u32::from_le_bytes(left[4..8].try_into().unwrap()) as usize;
                data.extend_from_slice(&left[8..8 + n]);
                left = &left[8 + n..];
            }
            assert_eq!(left, b"DONE\0\0\0\0");
            data
        };
        assert!(data_of(&got) == data);
        assert!(c.wrtes <= 4, "{} WRTEs", c.wrtes);
        // A client of 64 KiB payloads: one WRTE per DATA (each cut to
        // fit), not two (a 64 KiB chunk and its header's 8 bytes).
        let mut c = Client::open_with("sync:", 64 * 1024).unwrap();
        let mut got = c.write(&req(b"RECV", p.len() as u32, p));
        got.extend(c.write(&req(b"QUIT", 0, b"")));
        got.extend(c.read_to_close());
        assert!(data_of(&got) == data);
        assert!(c.wrtes <= 50, "{} WRTEs", c.wrtes);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_pull_of_a_fifo_or_a_quiet_terminal_does_not_block() {
        let dir = temp_dir("pull-special");
        std::fs::create_dir_all(&dir).unwrap();
        // A FIFO without a writer: the open would wait for one.
        let fifo = dir.join("fifo");
        let c_fifo = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo(3) of a NUL-terminated path; the result is checked.
        assert_eq!(unsafe { libc::mkfifo(c_fifo.as_ptr(), 0o644) }, 0);
        let got = String::from_utf8_lossy(&pull(&fifo)).into_owned();
        assert!(
            got.starts_with("FAIL") && got.contains("not a regular file"),
            "{got:?}"
        );
        // A directory is refused as well.
        let got = String::from_utf8_lossy(&pull(&dir)).into_owned();
        assert!(got.starts_with("FAIL"), "{got:?}");
        let _ = std::fs::remove_dir_all(&dir);
        // A terminal nobody types on (a character device whose read
        // waits, like /dev/kmsg at its end): what is there, i.e. nothing.
        // SAFETY: posix_openpt(3) returns a new fd or -1.
        let master = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY) };
        if master < 0 {
            return; // No PTYs where the test runs.
        }
        let mut name = [0 as libc::c_char; 64];
        // SAFETY: grantpt/unlockpt/ptsname_r on our master; ptsname_r
        // writes at most `name.len()` bytes including the NUL.
        let rc = unsafe {
            if libc::grantpt(master) != 0 || libc::unlockpt(master) != 0 {
                -1
            } else {
                libc::ptsname_r(master, name.as_mut_ptr(), name.len())
            }
        };
        if rc == 0 {
            // SAFETY: ptsname_r succeeded: a NUL-terminated path.
            let slave = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) };
            let slave = std::path::Path::new(slave.to_str().unwrap());
            assert_eq!(pull(slave), req(b"DONE", 0, b""));
        }
        // SAFETY: closes the master this test opened.
        unsafe { libc::close(master) };
    }

    #[test]
    fn an_aborted_push_leaves_no_file() {
        let dir = temp_dir("abort");
        let file = dir.join("partial");
        let mut c = Client::open("sync:").unwrap();
        // SEND and some DATA, no DONE; then the client goes away.
        let mut wire = send_wire(&file, 0o100644, b"");
        wire.truncate(wire.len() - 8);
        wire.extend(req(b"DATA", 5, b"hello"));
        c.write(&wire);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::metadata(&file).map_or(0, |m| m.len()) < 5 {
            assert!(Instant::now() < deadline, "the push did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(c);
        let deadline = Instant::now() + Duration::from_secs(5);
        while file.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!file.exists(), "the partial file was left behind");
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
