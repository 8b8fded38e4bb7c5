//! `vmm console SOCKET`: attaches stdin and stdout to a VM's
//! `--console type=unix,path=SOCKET`, as `socat - UNIX-CONNECT:SOCKET` would
//! (busybox systems have no unix-socket client).
//!
//! Stdin goes to the guest's `hvc0`, its output to stdout. At the end of
//! stdin the sending half is shut down and output keeps coming until the VMM
//! closes the connection: the VM ended, or a newer client took the console
//! (the VMM serves one client at a time, the newest).

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::Path;

/// Copies stdin to the console socket at `path` and the socket to stdout
/// until the VMM closes it.
pub fn attach(path: &Path) -> io::Result<()> {
    let stream = UnixStream::connect(path)?;
    let to_vm = stream.try_clone()?;
    std::thread::Builder::new()
        .name("console-stdin".into())
        .spawn(move || forward_stdin(to_vm))?;
    copy_until_eof(stream, io::stdout().lock())
}

/// Sends stdin to the VMM; shuts down the sending half at its end.
fn forward_stdin(mut to_vm: UnixStream) {
    let mut stdin = io::stdin().lock();
    let mut buf = [0u8; 4096];
    loop {
        match stdin.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to_vm.write_all(&buf[..n]).is_err() {
                    // The VMM closed the connection; the output side ends.
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let _ = to_vm.shutdown(Shutdown::Write);
}

/// Copies `from` to `to`, flushing every chunk (console output is often a
/// prompt without a newline), until end of file.
fn copy_until_eof(mut from: impl Read, mut to: impl Write) -> io::Result<()> {
    let mut buf = [0u8; 4096];
    loop {
        match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                to.write_all(&buf[..n])?;
                to.flush()?;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_everything_until_eof() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let writer = std::thread::spawn(move || {
            a.write_all(b"login: ").unwrap();
            a.write_all(&[7u8; 10000]).unwrap();
        });
        let mut out = Vec::new();
        copy_until_eof(b, &mut out).unwrap();
        writer.join().unwrap();
        assert_eq!(&out[..7], b"login: ");
        assert_eq!(out.len(), 7 + 10000);
    }

    #[test]
    fn a_missing_socket_is_an_error() {
        let err = attach(Path::new("/nonexistent/vmstack-console.sock")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
