//! `trusty-test`: a guest client of Trusty services built on AOSP
//! libtrusty's API shape: `tipc_connect(dev_name, srv_name)` returns a
//! file descriptor (here: `VSOCK:<cid>:<port>`, parsed and connected the
//! way `system/core/trusty/libtrusty/trusty.c` does), then each message is
//! one `writev` and each response one `read`.
//!
//! ```text
//! trusty-test echo DEV [--tag T]                   echo messages of 1..3840 bytes
//! trusty-test refused DEV PORT_NAME [--tag T]      tipc_connect must fail
//! trusty-test hwkey DEV [--tag T]                  derive a key from a fixed seed
//! trusty-test gatekeeper DEV --uid U --save PATH   enroll, verify, wrong x5 (throttle)
//! trusty-test gatekeeper-check DEV --uid U --handle PATH   verify after a restart
//! trusty-test bench DEV SIZE N [--tag T]           N timed echo round trips of SIZE bytes
//! ```
//!
//! Results are `key=value` lines (`<tag>_...`; gatekeeper's own error
//! codes are `..._status`); a failure of the tool prints `<tag>_error=...`
//! and exits 1. Messages come from `guest_tools::ta`, built from AOSP's
//! formats (gatekeeper_ipc.h, gatekeeper_messages.cpp, hwkey.h).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use guest_tools::hex;
use guest_tools::rtt;
use guest_tools::ta::{gatekeeper, hwkey, port, Channel};

/// `VIRTIO_VSOCK_MSG_SIZE_LIMIT` of libtrusty's tipc.h.
const VIRTIO_VSOCK_MSG_SIZE_LIMIT: usize = 4096 - 256;

/// The payload of one of the guest kernel's vsock RX buffers since Linux
/// sizes each buffer's SKB to one 4 KiB page (6.17, in Debian's 6.12.95
/// too): 4096 minus `skb_shared_info` (320 on x86_64 and arm64) minus the
/// 44-byte packet header. A response longer than this reaches the guest
/// in two packets, and one `read` may return only the first (docs/trusty.md).
const GUEST_RX_PAYLOAD: usize = 4096 - 320 - 44;

/// C `strtol(s, &end, 0)` on the start of `s`: the value and the rest.
fn strtol0(s: &str) -> (i64, &str) {
    let (neg, body) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (radix, digits) =
        if let Some(h) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
            (16, h)
        } else if body.starts_with('0') && body.len() > 1 {
            (8, &body[1..])
        } else {
            (10, body)
        };
    let end = digits
        .find(|c: char| !c.is_digit(radix))
        .unwrap_or(digits.len());
    if end == 0 {
        // "0" alone (radix 8 with no more digits) is a zero; no digits at
        // all is no number.
        return if radix == 8 { (0, digits) } else { (0, s) };
    }
    let v = i64::from_str_radix(&digits[..end], radix).unwrap_or(i64::MAX);
    (if neg { -v } else { v }, &digits[end..])
}

fn errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// libtrusty's `tipc_vsock_connect`.
fn tipc_vsock_connect(type_cid_port: &str, srv_name: &str) -> Result<OwnedFd, i32> {
    let (sock_type, cid_port) = if let Some(r) = type_cid_port.strip_prefix("STREAM:") {
        (libc::SOCK_STREAM, r)
    } else if let Some(r) = type_cid_port.strip_prefix("SEQPACKET:") {
        (libc::SOCK_SEQPACKET, r)
    } else {
        (libc::SOCK_STREAM, type_cid_port)
    };
    let (cid, rest) = strtol0(cid_port);
    let Some(port_str) = rest.strip_prefix(':') else {
        return Err(libc::EINVAL);
    };
    let (port, end) = strtol0(port_str);
    if !end.is_empty() {
        return Err(libc::EINVAL);
    }
    // SAFETY: socket(2); the result is checked.
    let fd = unsafe { libc::socket(libc::AF_VSOCK, sock_type | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(errno());
    }
    // SAFETY: a fresh fd owned from here on.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let timeout = libc::timeval {
        tv_sec: 60,
        tv_usec: 0,
    };
    // SAFETY: setsockopt with a timeval of the size given; failure is
    // tolerated as libtrusty does.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::AF_VSOCK,
            6, // SO_VM_SOCKETS_CONNECT_TIMEOUT (the old timeval option)
            std::ptr::addr_of!(timeout).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    // SAFETY: sockaddr_vm is plain old data; zero is a valid value.
    let mut sa: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    sa.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    sa.svm_cid = cid as u32;
    sa.svm_port = port as u32;
    let mut retry = 10;
    loop {
        // SAFETY: `sa` is an initialised sockaddr_vm of the given size.
        let rc = unsafe {
            libc::connect(
                fd.as_raw_fd(),
                std::ptr::addr_of!(sa).cast(),
                std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            break;
        }
        let e = errno();
        if e == libc::EINTR {
            continue;
        }
        retry -= 1;
        if (e == libc::ENODEV || e == libc::ESOCKTNOSUPPORT) && retry > 0 {
            std::thread::sleep(Duration::from_secs(1));
            continue;
        }
        return Err(e);
    }
    // The bridge expects the port name as the first packet.
    let n = write_all_once(&fd, srv_name.as_bytes())?;
    if n != srv_name.len() {
        return Err(libc::EIO);
    }
    // Current AOSP: one status byte before any message.
    let mut status = [0u8; 1];
    let n = read_once(&fd, &mut status)?;
    if n != 1 {
        return Err(libc::ECONNRESET);
    }
    Ok(fd)
}

/// libtrusty's `tipc_connect` (only the vsock form: there is no
/// `/dev/trusty-ipc-dev0` in these guests).
fn tipc_connect(dev_name: &str, srv_name: &str) -> Result<OwnedFd, i32> {
    match dev_name.strip_prefix("VSOCK:") {
        Some(rest) => tipc_vsock_connect(rest, srv_name),
        None => Err(libc::ENOENT),
    }
}

/// Runs the system call `call` again while it is interrupted (`EINTR`);
/// its byte count, or its errno.
fn retry_eintr(mut call: impl FnMut() -> isize) -> Result<usize, i32> {
    loop {
        let n = call();
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = errno();
        if e != libc::EINTR {
            return Err(e);
        }
    }
}

fn write_all_once(fd: &OwnedFd, buf: &[u8]) -> Result<usize, i32> {
    retry_eintr(|| {
        // SAFETY: `buf` is valid for reads of its length.
        unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) }
    })
}

fn read_once(fd: &OwnedFd, buf: &mut [u8]) -> Result<usize, i32> {
    retry_eintr(|| {
        // SAFETY: `buf` is valid for writes of its length.
        unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) }
    })
}

/// libtrusty's `tipc_send` over vsock: one `writev` of the message parts.
fn tipc_send(fd: &OwnedFd, parts: &[&[u8]]) -> Result<usize, i32> {
    let iov: Vec<libc::iovec> = parts
        .iter()
        .map(|p| libc::iovec {
            iov_base: p.as_ptr() as *mut libc::c_void,
            iov_len: p.len(),
        })
        .collect();
    loop {
        // SAFETY: every iovec points into a live slice of its length.
        let n = unsafe { libc::writev(fd.as_raw_fd(), iov.as_ptr(), iov.len() as libc::c_int) };
        if n >= 0 {
            return Ok(n as usize);
        }
        if errno() != libc::EINTR {
            return Err(errno());
        }
    }
}

/// One message out, one message back.
fn transact(fd: &OwnedFd, parts: &[&[u8]]) -> Result<Vec<u8>, String> {
    tipc_send(fd, parts).map_err(|e| format!("send: errno {e}"))?;
    let mut buf = vec![0u8; 4096];
    let n = read_once(fd, &mut buf).map_err(|e| format!("read: errno {e}"))?;
    if n == 0 {
        return Err("the service closed the channel".into());
    }
    buf.truncate(n);
    Ok(buf)
}

/// A libtrusty channel: one `writev` out, one `read` back.
struct Tipc(OwnedFd);

impl Channel for Tipc {
    fn call(&mut self, msg: &[u8]) -> Result<Vec<u8>, String> {
        transact(&self.0, &[msg])
    }
}

fn connect(dev: &str, port: &str) -> Result<Tipc, String> {
    tipc_connect(dev, port)
        .map(Tipc)
        .map_err(|e| format!("tipc_connect: errno {e}"))
}

fn cmd_echo(dev: &str, tag: &str) -> Result<(), String> {
    let fd = connect(dev, port::ECHO)?.0;
    let mut ok = 0;
    for (i, len) in [
        1usize,
        16,
        255,
        1000,
        2048,
        3000,
        VIRTIO_VSOCK_MSG_SIZE_LIMIT,
    ]
    .iter()
    .enumerate()
    {
        let msg: Vec<u8> = (0..*len).map(|j| (j * 31 + i) as u8).collect();
        let mut back = transact(&fd, &[&msg])?;
        if *len > GUEST_RX_PAYLOAD {
            // Two packets: read the rest of this response (a stock
            // libtrusty client's single read may stop after the first).
            while back.len() < *len {
                let mut rest = vec![0u8; *len - back.len()];
                let n = read_once(&fd, &mut rest).map_err(|e| format!("read: errno {e}"))?;
                if n == 0 {
                    break;
                }
                back.extend_from_slice(&rest[..n]);
            }
        }
        if back != msg {
            return Err(format!(
                "{len}-byte message came back as {} bytes, different",
                back.len()
            ));
        }
        ok += 1;
    }
    println!("{tag}_messages_ok={ok}");
    println!("{tag}_max_len={VIRTIO_VSOCK_MSG_SIZE_LIMIT}");
    Ok(())
}

fn cmd_refused(dev: &str, port: &str, tag: &str) -> Result<(), String> {
    match tipc_connect(dev, port) {
        Ok(_) => Err(format!("tipc_connect to {port} succeeded")),
        Err(e) => {
            println!("{tag}_errno={e}");
            println!("{tag}_refused=1");
            Ok(())
        }
    }
}

fn cmd_hwkey(dev: &str, tag: &str) -> Result<(), String> {
    let mut ch = connect(dev, port::HWKEY)?;
    let (version, key) = hwkey::derive(&mut ch, hwkey::TEST_SEED)?;
    println!("{tag}_kdf_version={version}");
    println!("{tag}_key={}", hex(&key));
    Ok(())
}

fn cmd_gatekeeper(dev: &str, uid: u32, save: &str, tag: &str) -> Result<(), String> {
    let mut ch = connect(dev, port::GATEKEEPER)?;
    let handle = gatekeeper::throttle_flow(&mut ch, uid, &mut |k, v| println!("{tag}_{k}={v}"))?;
    std::fs::write(save, &handle).map_err(|e| format!("{save}: {e}"))?;
    Ok(())
}

fn cmd_gatekeeper_check(dev: &str, uid: u32, handle_path: &str, tag: &str) -> Result<(), String> {
    let handle = std::fs::read(handle_path).map_err(|e| format!("{handle_path}: {e}"))?;
    let mut ch = connect(dev, port::GATEKEEPER)?;
    let (err, ms, _) = gatekeeper::verify(&mut ch, uid, 0, &handle, b"1234")?;
    println!("{tag}_status={err}");
    println!("{tag}_retry_ms={ms}");
    Ok(())
}

/// `n` timed echo round trips of `size` bytes (the benchmark's libtrusty
/// path); every sample printed (`rtt::Samples::print`).
fn cmd_bench(dev: &str, size: usize, n: u64, tag: &str) -> Result<(), String> {
    if !(16..=VIRTIO_VSOCK_MSG_SIZE_LIMIT).contains(&size) {
        return Err(format!(
            "bench: size {size} is not in 16..={VIRTIO_VSOCK_MSG_SIZE_LIMIT}"
        ));
    }
    let ch = connect(dev, port::ECHO)?;
    let mut msg = guest_tools::pattern(size, 5);
    let mut back = vec![0u8; size];
    let samples = rtt::measure(n, |seq| {
        rtt::stamp(&mut msg, seq);
        tipc_send(&ch.0, &[&msg]).map_err(|e| format!("send: errno {e}"))?;
        // One message; a stream may still hand it over in pieces.
        let mut got = 0;
        while got < size {
            match read_once(&ch.0, &mut back[got..]) {
                Ok(0) => return Err("the service closed the channel".into()),
                Ok(k) => got += k,
                Err(e) => return Err(format!("read: errno {e}")),
            }
        }
        if !rtt::stamped(&back, seq) || back != msg {
            return Err(format!("round trip {seq}: the echo differs"));
        }
        Ok(())
    })?;
    samples.print(tag);
    Ok(())
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: trusty-test echo DEV | refused DEV PORT_NAME | hwkey DEV | gatekeeper DEV --uid U --save PATH | \
         gatekeeper-check DEV --uid U --handle PATH | bench DEV SIZE N  [--tag T]   (DEV: VSOCK:<cid>:<port>)"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(mode), Some(dev)) = (args.first(), args.get(1)) else {
        return usage();
    };
    let opt = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let tag = opt("--tag").unwrap_or_else(|| mode.replace('-', "_"));
    let uid = opt("--uid").and_then(|u| u.parse().ok()).unwrap_or(0u32);
    let start = Instant::now();
    let r = match mode.as_str() {
        "echo" => cmd_echo(dev, &tag),
        "refused" => match args.get(2) {
            Some(p) => cmd_refused(dev, p, &tag),
            None => return usage(),
        },
        "hwkey" => cmd_hwkey(dev, &tag),
        "gatekeeper" => match opt("--save") {
            Some(p) => cmd_gatekeeper(dev, uid, &p, &tag),
            None => return usage(),
        },
        "gatekeeper-check" => match opt("--handle") {
            Some(p) => cmd_gatekeeper_check(dev, uid, &p, &tag),
            None => return usage(),
        },
        "bench" => match (
            args.get(2).and_then(|s| s.parse().ok()),
            args.get(3).and_then(|s| s.parse().ok()),
        ) {
            (Some(size), Some(n)) => cmd_bench(dev, size, n, &tag),
            _ => return usage(),
        },
        _ => return usage(),
    };
    println!("{tag}_secs={:.2}", start.elapsed().as_secs_f64());
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            println!("{tag}_error={e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::strtol0;

    #[test]
    fn strtol_like_libc() {
        assert_eq!(strtol0("2:1"), (2, ":1"));
        assert_eq!(strtol0("0x10:5"), (16, ":5"));
        assert_eq!(strtol0("010"), (8, ""));
        assert_eq!(strtol0("0"), (0, ""));
        assert_eq!(strtol0("0:1"), (0, ":1"));
        assert_eq!(strtol0("x"), (0, "x"));
        assert_eq!(strtol0("-3"), (-3, ""));
    }
}
