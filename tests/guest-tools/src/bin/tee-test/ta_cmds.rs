//! The message TAs (storage, gatekeeper, hwkey) through `/dev/tee0`, and
//! the benchmark's echo round trips. A TA is reached over a
//! [`Channel`]: a session opened here through the uapi ([`Session`]), or
//! Debian's stock `libteec` through `tee-client pipe` ([`Libteec`], the
//! arm64 guest: `--via libteec`). Results are `key=value` lines
//! `<tag>_<key>` (markers through `mark_kv`); a failure of the tool is
//! `<tag>_error=...` and exit status 1.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use guest_tools::ta::storage::{self, Storage};
use guest_tools::ta::{gatekeeper, hwkey, uuid, Channel};
use guest_tools::{fnv64, hex, pattern, rtt, unhex};

use crate::uapi::{
    none, parse_uuid, value, Param, Result, Shm, Tee, PARAM_MEMREF_INPUT, PARAM_MEMREF_OUTPUT,
    PARAM_VALUE_OUTPUT,
};
use crate::{ECHO_FUNC_ECHO, FUNC_MESSAGE, MESSAGE_MAX};

/// Debian's libteec client (`tests/guest-tools/c/tee-client.c`).
const TEE_CLIENT: &str = "/bin/tee-client";

/// A session with a message TA through the uapi: each message goes in an
/// allocated input buffer, the response comes back in a 4 KiB one.
pub(crate) struct Session<'a> {
    tee: &'a Tee,
    id: u32,
    input: Shm,
    output: Shm,
}

impl<'a> Session<'a> {
    /// Opens a session with the TA `uuid` on `tee`.
    pub(crate) fn open(tee: &'a Tee, uuid: &str) -> Result<Self> {
        let id = tee.open_session(parse_uuid(uuid)?, [none(); 4])?;
        Ok(Session {
            tee,
            id,
            input: Shm::alloc(tee, MESSAGE_MAX)?,
            output: Shm::alloc(tee, MESSAGE_MAX)?,
        })
    }

    /// The session id the kernel gave.
    pub(crate) fn id(&self) -> u32 {
        self.id
    }

    /// Closes the session.
    pub(crate) fn close(self) -> Result<()> {
        self.tee.close_session(self.id)
    }
}

impl Channel for Session<'_> {
    fn call(&mut self, msg: &[u8]) -> Result<Vec<u8>> {
        if msg.is_empty() || msg.len() > MESSAGE_MAX {
            return Err(format!(
                "a message is 1-{MESSAGE_MAX} bytes, got {}",
                msg.len()
            ));
        }
        self.input.bytes()[..msg.len()].copy_from_slice(msg);
        let params = [
            self.input.memref(PARAM_MEMREF_INPUT, msg.len()),
            self.output.memref(PARAM_MEMREF_OUTPUT, MESSAGE_MAX),
            value(PARAM_VALUE_OUTPUT, 0, 0, 0),
            none(),
        ];
        let (ret, origin, out) = self.tee.invoke(self.id, FUNC_MESSAGE, 0, params)?;
        if ret != 0 {
            return Err(format!("message: ret {ret:#x} origin {origin}"));
        }
        if out[2].b != 1 {
            return Err(format!("message: {} responses", out[2].b));
        }
        let len = usize::try_from(out[1].b).unwrap_or(usize::MAX);
        if len > MESSAGE_MAX || out[2].a != out[1].b {
            return Err(format!(
                "message: response of {} bytes, length value {}",
                out[1].b, out[2].a
            ));
        }
        Ok(self.output.bytes()[..len].to_vec())
    }
}

/// A session opened by Debian's `libteec` in `tee-client pipe UUID`:
/// each message a hex line to its stdin, each response a hex line back.
pub(crate) struct Libteec {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Libteec {
    /// Starts `tee-client pipe uuid`.
    pub(crate) fn open(uuid: &str) -> Result<Self> {
        let mut child = Command::new(TEE_CLIENT)
            .args(["pipe", uuid])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("{TEE_CLIENT}: {e}"))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err("tee-client without pipes".into());
        };
        Ok(Libteec {
            child,
            stdin: Some(stdin),
            stdout: BufReader::new(stdout),
        })
    }

    /// Ends the session (EOF to the client) and waits for the client.
    pub(crate) fn close(mut self) -> Result<()> {
        self.stdin = None;
        let status = self.child.wait().map_err(|e| format!("tee-client: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("tee-client ended with {status}"))
        }
    }
}

impl Channel for Libteec {
    fn call(&mut self, msg: &[u8]) -> Result<Vec<u8>> {
        let stdin = self.stdin.as_mut().ok_or("tee-client: closed")?;
        writeln!(stdin, "{}", hex(msg))
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("tee-client: {e}"))?;
        let mut line = String::new();
        match self.stdout.read_line(&mut line) {
            Ok(0) => Err("tee-client ended (its error is on stderr)".into()),
            Ok(_) => unhex(line.trim_end()),
            Err(e) => Err(format!("tee-client: {e}")),
        }
    }
}

impl Drop for Libteec {
    fn drop(&mut self) {
        self.stdin = None;
        let _ = self.child.wait();
    }
}

/// How a command reaches its TA.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Via {
    Uapi,
    Libteec,
}

/// Runs `f` on a channel to the TA `uuid`, then closes it.
fn with_channel<T>(
    via: Via,
    uuid: &str,
    f: impl FnOnce(&mut dyn Channel) -> Result<T>,
) -> Result<T> {
    match via {
        Via::Uapi => {
            let tee = Tee::open()?;
            let mut s = Session::open(&tee, uuid)?;
            let r = f(&mut s)?;
            s.close()?;
            Ok(r)
        }
        Via::Libteec => {
            let mut c = Libteec::open(uuid)?;
            let r = f(&mut c)?;
            c.close()?;
            Ok(r)
        }
    }
}

/// Positional arguments and `--flag value` pairs.
struct Args<'a> {
    pos: Vec<&'a str>,
    flags: HashMap<&'a str, &'a str>,
}

impl<'a> Args<'a> {
    fn parse(args: &'a [String]) -> Result<Self> {
        let mut pos = Vec::new();
        let mut flags = HashMap::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if let Some(name) = a.strip_prefix("--") {
                let v = it.next().ok_or(format!("--{name} needs a value"))?;
                flags.insert(name, v.as_str());
            } else {
                pos.push(a.as_str());
            }
        }
        Ok(Args { pos, flags })
    }

    fn num<T: std::str::FromStr>(&self, flag: &str, default: T) -> Result<T> {
        match self.flags.get(flag) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| format!("--{flag} {v}: not a number")),
        }
    }

    fn via(&self) -> Result<Via> {
        match self.flags.get("via").copied() {
            None | Some("uapi") => Ok(Via::Uapi),
            Some("libteec") => Ok(Via::Libteec),
            Some(v) => Err(format!("--via {v}: uapi or libteec")),
        }
    }
}

/// Usage of the commands here.
pub(crate) const USAGE: &str = "\
       tee-test storage-write NAME (SIZE [--seed N] | --text TEXT) [--via uapi|libteec]
       tee-test storage-read NAME [--via uapi|libteec]   (prints up to 64 printable bytes)
       tee-test storage-hold NAME SIZE --then SHELL_COMMAND
       tee-test storage-probe HANDLE
       tee-test foreign-session
       tee-test gatekeeper [--uid U] [--via uapi|libteec]
       tee-test hwkey [--via uapi|libteec]
       tee-test bench SIZE N
       (each also takes --tag T; output: T_key=value lines)";

/// Runs `cmd` if it is one of these commands (`None` otherwise); prints
/// `<tag>_error=` and returns `Some(false)` on failure.
pub(crate) fn run(cmd: &str, rest: &[String]) -> Option<bool> {
    let known = [
        "storage-write",
        "storage-read",
        "storage-hold",
        "storage-probe",
        "foreign-session",
        "gatekeeper",
        "hwkey",
        "bench",
    ];
    if !known.contains(&cmd) {
        return None;
    }
    let mut tag = cmd.replace('-', "_");
    let result = Args::parse(rest).and_then(|a| {
        if let Some(t) = a.flags.get("tag") {
            tag = (*t).to_string();
        }
        dispatch(cmd, &a, &tag)
    });
    Some(match result {
        Ok(()) => true,
        Err(e) => {
            println!("{tag}_error={e}");
            false
        }
    })
}

fn dispatch(cmd: &str, a: &Args<'_>, tag: &str) -> Result<()> {
    let want = |n: usize| {
        if a.pos.len() == n {
            Ok(())
        } else {
            Err(format!(
                "{cmd}: {n} arguments expected, got {}",
                a.pos.len()
            ))
        }
    };
    let size = |i: usize| -> Result<usize> {
        a.pos[i]
            .parse()
            .ok()
            .filter(|n| (1..=1 << 20).contains(n))
            .ok_or(format!("bad size {:?}: want 1..=1048576", a.pos[i]))
    };
    match cmd {
        "storage-write" => match a.flags.get("text") {
            // The demo's secret: given bytes instead of a pattern.
            Some(text) => {
                want(1)?;
                storage_write(a.via()?, a.pos[0], text.as_bytes().to_vec(), tag)
            }
            None => {
                want(2)?;
                let data = pattern(size(1)?, a.num("seed", 1)?);
                storage_write(a.via()?, a.pos[0], data, tag)
            }
        },
        "storage-read" => {
            want(1)?;
            storage_read(a.via()?, a.pos[0], tag)
        }
        "storage-hold" => {
            want(2)?;
            let then = a.flags.get("then").ok_or("storage-hold needs --then")?;
            storage_hold(a.pos[0], size(1)?, a.num("seed", 1)?, then, tag)
        }
        "storage-probe" => {
            want(1)?;
            let h = a.pos[0].parse().map_err(|_| "HANDLE: a number")?;
            storage_probe(h, tag)
        }
        "foreign-session" => {
            want(0)?;
            foreign_session(tag)
        }
        "gatekeeper" => {
            want(0)?;
            let uid = a.num("uid", 0u32)?;
            with_channel(a.via()?, uuid::GATEKEEPER, |ch| {
                gatekeeper::throttle_flow(ch, uid, &mut |k, v| println!("{tag}_{k}={v}"))
                    .map(|_| ())
            })
        }
        "hwkey" => {
            want(0)?;
            let (version, key) = with_channel(a.via()?, uuid::HWKEY, |ch| {
                hwkey::derive(ch, hwkey::TEST_SEED)
            })?;
            println!("{tag}_kdf_version={version}");
            println!("{tag}_key={}", hex(&key));
            Ok(())
        }
        "bench" => {
            want(2)?;
            let n = a.pos[1].parse().map_err(|_| "N: a number")?;
            bench(size(0)?, n, tag)
        }
        _ => Err(format!("unknown command {cmd}")),
    }
}

/// Prints a storage outcome (`storage::report`); `Ok(Some)` on success.
fn reported<T>(tag: &str, r: std::result::Result<T, storage::StorageError>) -> Result<Option<T>> {
    storage::report(tag, r)
}

fn storage_write(via: Via, name: &str, data: Vec<u8>, tag: &str) -> Result<()> {
    let size = data.len();
    with_channel(via, uuid::STORAGE, |ch| {
        reported(tag, Storage::new(ch).write_file(name, &data)).map(|_| ())
    })?;
    println!("{tag}_size={size}");
    println!("{tag}_sum={}", fnv64(&data));
    Ok(())
}

fn storage_read(via: Via, name: &str, tag: &str) -> Result<()> {
    let data = with_channel(via, uuid::STORAGE, |ch| {
        reported(tag, Storage::new(ch).read_file(name))
    })?;
    if let Some(data) = data {
        println!("{tag}_size={}", data.len());
        println!("{tag}_sum={}", fnv64(&data));
        if data.len() <= 64 && data.iter().all(u8::is_ascii_graphic) {
            println!("{tag}_text={}", String::from_utf8_lossy(&data));
        }
    }
    Ok(())
}

/// Writes `name` without committing, runs `then` (another guest's turn)
/// while the session and its open file stay as they are, then checks that
/// its own uncommitted data is intact and commits.
fn storage_hold(name: &str, size: usize, seed: u64, then: &str, tag: &str) -> Result<()> {
    let data = pattern(size, seed);
    let tee = Tee::open()?;
    let mut session = Session::open(&tee, uuid::STORAGE)?;
    println!("{tag}_session={}", session.id());
    let mut st = Storage::new(&mut session);
    let Some(h) = reported(
        tag,
        st.open(name, storage::OPEN_CREATE | storage::OPEN_TRUNCATE),
    )?
    else {
        return Ok(());
    };
    println!("{tag}_handle={h}");
    if reported(tag, st.write_all(h, &data))?.is_none() {
        return Ok(());
    }
    println!("{tag}_size={size}");
    println!("{tag}_sum={}", fnv64(&data));
    println!("{tag}_held=1");
    let status = Command::new("sh")
        .args(["-c", then])
        .status()
        .map_err(|e| format!("sh -c {then:?}: {e}"))?;
    println!("{tag}_then_rc={}", status.code().unwrap_or(-1));
    let back = reported(&format!("{tag}_after"), st.read_all(h))?;
    if let Some(back) = back {
        println!("{tag}_after_same={}", u8::from(back == data));
    }
    reported(&format!("{tag}_commit"), st.commit())?;
    reported(&format!("{tag}_close"), st.close(h))?;
    session.close()
}

/// Reads file handle `handle` on a fresh storage session (where nothing is
/// open): the service must refuse it (`NOT_VALID`).
fn storage_probe(handle: u32, tag: &str) -> Result<()> {
    let tee = Tee::open()?;
    let mut session = Session::open(&tee, uuid::STORAGE)?;
    println!("{tag}_session={}", session.id());
    let r = Storage::new(&mut session).read(handle, 0, 16);
    if let Some(d) = reported(tag, r)? {
        println!("{tag}_bytes={}", d.len());
    }
    session.close()
}

/// Invokes session ids 1-8 on a fresh `/dev/tee0` file that opened none:
/// the kernel must refuse every one.
fn foreign_session(tag: &str) -> Result<()> {
    let tee = Tee::open()?;
    let mut refused = 0;
    let mut first = None;
    for id in 1..=8 {
        let params: [Param; 4] = [none(); 4];
        match tee.invoke(id, FUNC_MESSAGE, 0, params) {
            Err(e) => {
                refused += 1;
                first.get_or_insert(e);
            }
            Ok((ret, origin, _)) => println!("{tag}_accepted_{id}=ret {ret:#x} origin {origin}"),
        }
    }
    println!("{tag}_refused={refused}");
    if let Some(e) = first {
        println!("{tag}_first_refusal={e}");
    }
    Ok(())
}

/// `n` timed echo round trips of a `size`-byte memory reference in and
/// one out (the benchmark's virtio-tee path); every sample printed.
fn bench(size: usize, n: u64, tag: &str) -> Result<()> {
    if size < 16 {
        return Err(format!("bench: size {size} is under 16"));
    }
    let tee = Tee::open()?;
    let session = tee.open_session(parse_uuid(uuid::ECHO)?, [none(); 4])?;
    let mut input = Shm::alloc(&tee, size)?;
    let mut output = Shm::alloc(&tee, size)?;
    input.bytes().copy_from_slice(&pattern(size, 5));
    let params = [
        input.memref(PARAM_MEMREF_INPUT, size),
        output.memref(PARAM_MEMREF_OUTPUT, size),
        none(),
        none(),
    ];
    let samples = rtt::measure(n, |seq| {
        rtt::stamp(input.bytes(), seq);
        rtt::stamp(output.bytes(), u64::MAX);
        let (ret, origin, out) = tee.invoke(session, ECHO_FUNC_ECHO, 0, params)?;
        if ret != 0 || out[1].b != size as u64 || !rtt::stamped(output.bytes(), seq) {
            return Err(format!(
                "round trip {seq}: ret {ret:#x} origin {origin}, {} bytes back",
                out[1].b
            ));
        }
        Ok(())
    })?;
    samples.print(tag);
    tee.close_session(session)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments() {
        let v: Vec<String> = ["f", "--seed", "3", "10", "--via", "libteec"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let a = Args::parse(&v).unwrap();
        assert_eq!(a.pos, vec!["f", "10"]);
        assert_eq!(a.num("seed", 1u64).unwrap(), 3);
        assert_eq!(a.num("uid", 7u32).unwrap(), 7);
        assert!(a.via().unwrap() == Via::Libteec);
        let v: Vec<String> = vec!["--tag".into()];
        assert!(Args::parse(&v).is_err());
        assert!(run("nope", &[]).is_none());
    }
}
