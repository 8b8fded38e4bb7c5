//! `tee-test`: a guest client of the kernel TEE subsystem's user-space ABI
//! (`/dev/teeN`, the `TEE_IOC_*` ioctls of `<linux/tee.h>`), the same ABI
//! OP-TEE's stock `libteec` sits on. Built static for the guests; on arm64
//! the tests use Debian's `libteec1` itself (`tests/guest-tools/c/`).
//!
//! ```text
//! tee-test version                print TEE_IOC_VERSION of the device
//! tee-test echo [SIZE...]         echo TA: values and memory references of
//!                                 each SIZE (SHM_ALLOC + mmap in, SHM_REGISTER
//!                                 of user memory out), checked byte for byte
//! tee-test sessions N             N sessions in parallel threads on one fd,
//!                                 each doing 8 checked 4 KiB echoes
//! tee-test cancel                 echo WAIT of 30 s, cancelled after 0.5 s
//! tee-test message UUID HEX       one message to a message TA (storage,
//!                                 gatekeeper, hwkey, datasink); prints the reply
//! ```
//!
//! and the message-TA commands of `ta_cmds.rs` (storage across VM
//! restarts, isolation probes, gatekeeper, hwkey, the benchmark's round
//! trips), which print `key=value` lines.
//!
//! The device is `$TEE_DEV` or `/dev/tee0`. TA commands follow
//! `docs/trusty.md` ("How an invoke maps onto each TA"). Output of the
//! commands above: one `TEE-...` line per result; errors: `tee-test:
//! error: ...`, exit status 1.

mod ta_cmds;
mod uapi;

use std::time::{Duration, Instant};

use guest_tools::ta::Channel;
use uapi::{
    none, parse_hex, parse_uuid, value, Result, Shm, Tee, PARAM_MEMREF_INPUT, PARAM_MEMREF_OUTPUT,
    PARAM_VALUE_INPUT, PARAM_VALUE_OUTPUT,
};

/// The echo TA (`com.android.ipc-unittest.srv.echo`).
const ECHO_UUID: &str = guest_tools::ta::uuid::ECHO;
/// Echo commands.
const ECHO_FUNC_ECHO: u32 = 0;
const ECHO_FUNC_WAIT: u32 = 1;
/// Message TAs' one command.
const FUNC_MESSAGE: u32 = 0;
/// `TEEC_ERROR_CANCEL`.
const TEEC_ERROR_CANCEL: u32 = 0xFFFF_0002;
/// Response buffer of a message TA (Trusty's message size).
const MESSAGE_MAX: usize = 4096;

/// A reproducible pattern for `size` and `salt`.
fn pattern(size: usize, salt: u64) -> impl Iterator<Item = u8> {
    let mut x = salt ^ (size as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (0..size).map(move |_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x as u8
    })
}

/// One checked echo of `size` bytes and three values.
fn echo_once(tee: &Tee, session: u32, size: usize, salt: u64) -> Result<()> {
    let mut input = Shm::alloc(tee, size)?;
    for (d, s) in input.bytes().iter_mut().zip(pattern(size, salt)) {
        *d = s;
    }
    let mut output = Shm::register(tee, size)?;
    let values = (size as u64, 0xdead_beef ^ salt, u64::MAX - salt);
    let params = [
        value(PARAM_VALUE_INPUT, values.0, values.1, values.2),
        value(PARAM_VALUE_OUTPUT, 0, 0, 0),
        input.memref(PARAM_MEMREF_INPUT, size),
        output.memref(PARAM_MEMREF_OUTPUT, size),
    ];
    let (ret, origin, out) = tee.invoke(session, ECHO_FUNC_ECHO, 0, params)?;
    if ret != 0 {
        return Err(format!(
            "echo of {size} bytes: ret {ret:#x} origin {origin}"
        ));
    }
    if (out[1].a, out[1].b, out[1].c) != values {
        return Err(format!(
            "echo of {size} bytes: values came back as {:?}",
            out[1]
        ));
    }
    if out[3].b != size as u64 {
        return Err(format!(
            "echo of {size} bytes: output size {} (expected {size})",
            out[3].b
        ));
    }
    if output.bytes() != input.bytes() {
        let first = output
            .bytes()
            .iter()
            .zip(input.bytes().iter())
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        return Err(format!(
            "echo of {size} bytes: output differs from input at byte {first}"
        ));
    }
    Ok(())
}

fn cmd_version() -> Result<()> {
    let v = Tee::open()?.version()?;
    println!(
        "TEE-VERSION impl_id={:#x} impl_caps={:#x} gen_caps={:#x}",
        v.impl_id, v.impl_caps, v.gen_caps
    );
    Ok(())
}

fn cmd_echo(sizes: &[usize]) -> Result<()> {
    let tee = Tee::open()?;
    let session = tee.open_session(parse_uuid(ECHO_UUID)?, [none(); 4])?;
    for (i, &size) in sizes.iter().enumerate() {
        let t = Instant::now();
        echo_once(&tee, session, size, i as u64)?;
        println!("TEE-ECHO-OK size={size} ms={}", t.elapsed().as_millis());
    }
    tee.close_session(session)
}

fn cmd_sessions(n: usize) -> Result<()> {
    let tee = Tee::open()?;
    let uuid = parse_uuid(ECHO_UUID)?;
    let results: Vec<Result<u32>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let tee = &tee;
                s.spawn(move || {
                    let session = tee.open_session(uuid, [none(); 4])?;
                    for k in 0..8 {
                        echo_once(tee, session, 4096, (i * 100 + k) as u64)?;
                    }
                    tee.close_session(session)?;
                    Ok(session)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("thread panicked".into())))
            .collect()
    });
    let mut ids = Vec::new();
    for r in results {
        ids.push(r?);
    }
    ids.sort_unstable();
    ids.dedup();
    if ids.len() != n {
        return Err(format!("{n} sessions got only {} distinct ids", ids.len()));
    }
    println!("TEE-SESSIONS-OK n={n}");
    Ok(())
}

fn cmd_cancel() -> Result<()> {
    let tee = Tee::open()?;
    let session = tee.open_session(parse_uuid(ECHO_UUID)?, [none(); 4])?;
    const CANCEL_ID: u32 = 42;
    let t = Instant::now();
    let outcome = std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            let params = [
                value(PARAM_VALUE_INPUT, 30_000, 0, 0),
                none(),
                none(),
                none(),
            ];
            tee.invoke(session, ECHO_FUNC_WAIT, CANCEL_ID, params)
        });
        std::thread::sleep(Duration::from_millis(500));
        let cancelled = tee.cancel(session, CANCEL_ID);
        let result = waiter
            .join()
            .unwrap_or_else(|_| Err("thread panicked".into()));
        cancelled.and(result)
    })?;
    let ms = t.elapsed().as_millis();
    if outcome.0 != TEEC_ERROR_CANCEL {
        return Err(format!(
            "cancelled WAIT ended with ret {:#x} origin {} after {ms} ms",
            outcome.0, outcome.1
        ));
    }
    tee.close_session(session)?;
    println!("TEE-CANCEL-OK ms={ms}");
    Ok(())
}

fn cmd_message(uuid: &str, hex: &str) -> Result<()> {
    let tee = Tee::open()?;
    let msg = parse_hex(hex)?;
    let mut session = ta_cmds::Session::open(&tee, uuid)?;
    let reply = session.call(&msg)?;
    println!(
        "TEE-MESSAGE len={} responses=1 reply={}",
        reply.len(),
        guest_tools::hex(&reply)
    );
    session.close()
}

const USAGE: &str =
    "usage: tee-test version | echo [SIZE...] | sessions N | cancel | message UUID HEX\n";

fn run(args: &[String]) -> Result<()> {
    let parse_size = |s: &String| {
        s.parse::<usize>()
            .ok()
            .filter(|n| (1..=1 << 20).contains(n))
            .ok_or_else(|| format!("bad size {s:?}: want 1..=1048576"))
    };
    match args.first().map(String::as_str) {
        Some("version") => cmd_version(),
        Some("echo") => {
            let sizes = if args.len() > 1 {
                args[1..]
                    .iter()
                    .map(parse_size)
                    .collect::<Result<Vec<_>>>()?
            } else {
                vec![1, 4096, 4097, 65536, 1 << 20]
            };
            cmd_echo(&sizes)
        }
        Some("sessions") => {
            let n = args
                .get(1)
                .and_then(|s| s.parse().ok())
                .filter(|n| (1..=32).contains(n))
                .ok_or("sessions N: N is 1..=32")?;
            cmd_sessions(n)
        }
        Some("cancel") => cmd_cancel(),
        Some("message") if args.len() == 3 => cmd_message(&args[1], &args[2]),
        _ => Err(format!("{USAGE}{}", ta_cmds::USAGE)),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(ok) = args.first().and_then(|cmd| ta_cmds::run(cmd, &args[1..])) {
        std::process::exit(if ok { 0 } else { 1 });
    }
    if let Err(e) = run(&args) {
        eprintln!("tee-test: error: {e}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_differ_by_salt_and_repeat() {
        let a: Vec<u8> = pattern(64, 1).collect();
        assert_eq!(a, pattern(64, 1).collect::<Vec<_>>());
        assert_ne!(a, pattern(64, 2).collect::<Vec<_>>());
    }
}
