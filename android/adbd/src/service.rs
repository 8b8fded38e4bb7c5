//! Service names a client opens (`OPEN` payloads): what this daemon
//! serves. Anything else is refused with `CLSE`.
//!
//! | name | service |
//! |---|---|
//! | `shell:CMD` | CMD under `sh -c`, raw stream (stdout and stderr merged); empty CMD: an interactive shell on a PTY |
//! | `shell,ARGS:CMD` | ARGS comma-separated: `v2` (the shell protocol: separate stdout/stderr, exit status), `pty` / `raw` (force a PTY or pipes), `TERM=...` |
//! | `exec:CMD` | CMD with pipes, raw stream, no PTY (`adb exec-out`) |
//! | `sync:` | the file sync protocol (push, pull, stat, list) |
//! | `reboot:[TARGET]` | the guest's own reboot (TARGET is ignored) |

/// Longest service name accepted (AOSP's clients send far less).
pub const MAX_SERVICE_LEN: usize = 16 * 1024;

/// A service to run on a new stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Service {
    /// A shell command or an interactive shell.
    Shell(ShellRequest),
    /// The file sync protocol.
    Sync,
    /// Reboot the guest (the argument, e.g. `bootloader`, is kept for logs).
    Reboot(String),
}

/// How a shell's bytes are framed on the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// The bytes as they are (stdout and stderr merged; no exit status).
    Raw,
    /// The shell protocol (`shell_v2`): stdin/stdout/stderr/exit packets.
    V2,
}

/// A shell service request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellRequest {
    /// Framing of the stream.
    pub framing: Framing,
    /// Run on a pseudo-terminal (else pipes).
    pub pty: bool,
    /// `TERM` for a PTY shell.
    pub term: Option<String>,
    /// The command; empty for an interactive shell.
    pub command: String,
}

impl Service {
    /// Parses an `OPEN` payload (trailing NULs removed); `None` for a
    /// name this daemon does not serve.
    pub fn parse(payload: &[u8]) -> Option<Self> {
        let end = payload
            .iter()
            .rposition(|&b| b != 0)
            .map_or(0, |last| last + 1);
        let name = std::str::from_utf8(&payload[..end]).ok()?;
        if name.is_empty() || name.len() > MAX_SERVICE_LEN || name.contains('\0') {
            return None;
        }
        let (head, rest) = name.split_once(':')?;
        let mut args = head.split(',');
        match args.next()? {
            "shell" => Some(Service::Shell(Self::shell(args, rest))),
            "exec" if head == "exec" => Some(Service::Shell(ShellRequest {
                framing: Framing::Raw,
                pty: false,
                term: None,
                command: rest.to_string(),
            })),
            "sync" if head == "sync" && rest.is_empty() => Some(Service::Sync),
            "reboot" if head == "reboot" => Some(Service::Reboot(rest.to_string())),
            _ => None,
        }
    }

    fn shell<'a>(args: impl Iterator<Item = &'a str>, command: &str) -> ShellRequest {
        let mut framing = Framing::Raw;
        let mut pty = None;
        let mut term = None;
        for arg in args {
            match arg {
                "v2" => framing = Framing::V2,
                "pty" => pty = Some(true),
                "raw" => pty = Some(false),
                t if t.starts_with("TERM=") => term = Some(t["TERM=".len()..].to_string()),
                // Unknown arguments are ignored, as AOSP's adbd does.
                _ => {}
            }
        }
        ShellRequest {
            framing,
            // AOSP's default: a PTY for an interactive shell, pipes for a
            // command.
            pty: pty.unwrap_or(command.is_empty()),
            term,
            command: command.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shell(framing: Framing, pty: bool, term: Option<&str>, command: &str) -> Option<Service> {
        Some(Service::Shell(ShellRequest {
            framing,
            pty,
            term: term.map(str::to_string),
            command: command.to_string(),
        }))
    }

    #[test]
    fn names_the_stock_client_sends() {
        assert_eq!(
            Service::parse(b"shell,v2,TERM=xterm-256color,raw:echo hi; exit 3\0"),
            shell(
                Framing::V2,
                false,
                Some("xterm-256color"),
                "echo hi; exit 3"
            )
        );
        assert_eq!(
            Service::parse(b"shell,v2,TERM=xterm,pty:\0"),
            shell(Framing::V2, true, Some("xterm"), "")
        );
        assert_eq!(
            Service::parse(b"shell:ls\0"),
            shell(Framing::Raw, false, None, "ls")
        );
        assert_eq!(
            Service::parse(b"shell:"),
            shell(Framing::Raw, true, None, "")
        );
        assert_eq!(
            Service::parse(b"exec:cat /x\0"),
            shell(Framing::Raw, false, None, "cat /x")
        );
        assert_eq!(Service::parse(b"sync:\0"), Some(Service::Sync));
        assert_eq!(
            Service::parse(b"reboot:\0"),
            Some(Service::Reboot(String::new()))
        );
        assert_eq!(
            Service::parse(b"reboot:bootloader\0"),
            Some(Service::Reboot("bootloader".into()))
        );
        // A command may contain colons and commas.
        assert_eq!(
            Service::parse(b"shell:a:b,c"),
            shell(Framing::Raw, false, None, "a:b,c")
        );
    }

    #[test]
    fn unknown_or_malformed_names_are_refused() {
        for bad in [
            &b""[..],
            b"\0",
            b"shell",
            b"sync:x",
            b"sync,v2:",
            b"exec,x:ls",
            b"tcpip:5555",
            b"root:",
            b"jdwp:1",
            b"shell:\xff",
            b"shell:a\0b",
        ] {
            assert_eq!(Service::parse(bad), None, "{bad:?}");
        }
        let long = format!("shell:{}", "x".repeat(MAX_SERVICE_LEN));
        assert_eq!(Service::parse(long.as_bytes()), None);
    }
}
