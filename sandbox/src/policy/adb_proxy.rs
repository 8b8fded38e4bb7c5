//! `vmm adb-proxy`'s thread classes.
//!
//! The proxy binds its TCP listener on 127.0.0.1 before the sandbox is
//! entered; afterwards it accepts on that listener, connects to the VMM's
//! hybrid vsock socket by path (one unix socket per bridged connection)
//! and moves bytes between the two with `splice(2)` through a pipe (a
//! buffer copy where the kernel refuses). Right after entering the
//! sandbox it connects to the vsock socket once from `conn-0` (the `conn`
//! class: no call of its own), to find a socket its uid may not reach at
//! start-up. It opens no file and creates no network socket.
//!
//! When a splice from a socket returns 0 (also what a TCP socket gives at
//! an urgent mark, not only at EOF), a non-blocking `recv` (`recvfrom`,
//! in [`STREAM_IO`]) tells which. `SO_OOBINLINE` (on the listener) and
//! `RLIMIT_NOFILE` (sized for `--max-connections`) are set before the
//! sandbox is entered: no class may set either.

// libc's constants are `c_ulong` on glibc and `c_int` on musl: the casts
// are needed on one of them.
#![allow(clippy::unnecessary_cast)]

use super::common::{ACCEPT, CONNECT_UNIX, RUNTIME, SLEEP, STREAM_IO};
use super::{
    allow, allow_if, eq, main_class, Class, Confinement, ProcessPolicy, Rule, Threads,
    LAUNCHER_CLASS, MAIN_CLASS,
};

/// One direction of a bridged connection: socket -> pipe -> socket in the
/// kernel.
const SPLICE: &[Rule] = &[
    allow(
        "pipe2",
        "the pipe one direction's bytes are spliced through",
    ),
    allow("splice", "move bytes socket -> pipe -> socket"),
    allow_if(
        "fcntl",
        &[&[eq(1, libc::F_SETPIPE_SZ as u64, "F_SETPIPE_SZ")]],
        "size that pipe (256 KiB)",
    ),
];

/// Setting up a bridged connection: the client's socket options, the
/// `CONNECT` handshake's timeout.
const HANDSHAKE: &[Rule] = &[allow_if(
    "setsockopt",
    &[
        &[
            eq(1, libc::IPPROTO_TCP as u64, "IPPROTO_TCP"),
            eq(2, libc::TCP_NODELAY as u64, "TCP_NODELAY"),
        ],
        &[
            eq(1, libc::SOL_SOCKET as u64, "SOL_SOCKET"),
            eq(2, libc::SO_RCVTIMEO as u64, "SO_RCVTIMEO"),
        ],
    ],
    "no Nagle delay on the client's connection; the handshake's read timeout",
)];

/// `vmm adb-proxy`'s policy.
pub const POLICY: ProcessPolicy = ProcessPolicy {
    process: "vmm adb-proxy",
    confinement: Confinement::PerThread,
    main: MAIN_CLASS,
    classes: &[
        main_class(
            "the accept loop on the bound 127.0.0.1 listener",
            &[RUNTIME, ACCEPT, SLEEP],
        ),
        LAUNCHER_CLASS,
        Class {
            name: "conn",
            threads: &[Threads::Prefix("conn-")],
            about: "one bridged connection: the CONNECT handshake with the VMM, then guest-to-client bytes (conn-0: the start-up connection that checks the proxy's uid reaches the VMM's socket)",
            rules: &[RUNTIME, STREAM_IO, CONNECT_UNIX, HANDSHAKE, SPLICE],
        },
        Class {
            name: "up",
            threads: &[Threads::Prefix("up-")],
            about: "client-to-guest bytes of one bridged connection",
            rules: &[RUNTIME, STREAM_IO, SPLICE],
        },
    ],
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Arch, Cmp, Cond};

    #[test]
    fn no_class_opens_execs_or_makes_a_listener() {
        for class in POLICY.classes {
            for arch in Arch::ALL {
                let names = POLICY.syscalls_of(class, arch);
                for forbidden in [
                    "execve", "execveat", "open", "openat", "openat2", "bind", "listen", "ptrace",
                    "fork", "vfork", "kill", "mount",
                ] {
                    assert!(
                        !names.contains(&forbidden),
                        "adb-proxy/{} allows {forbidden}",
                        class.name
                    );
                }
            }
        }
    }

    /// The copying classes may `recv` (the check after a splice that
    /// returned 0); nothing in the sandbox changes a resource limit or sets
    /// `SO_OOBINLINE` (both are done before it), and every `setsockopt`
    /// names its level and option.
    #[test]
    fn copying_classes_may_recv_and_no_class_sets_limits_or_oobinline() {
        let eq_value = |c: &Cond| match c.cmp {
            Cmp::Eq(v) => Some(v),
            _ => None,
        };
        for arch in Arch::ALL {
            for name in ["conn", "up"] {
                let class = POLICY.class(name).unwrap();
                let names = POLICY.syscalls_of(class, arch);
                for needed in ["splice", "recvfrom"] {
                    assert!(names.contains(&needed), "adb-proxy/{name} lacks {needed}");
                }
            }
            for class in POLICY.classes {
                let names = POLICY.syscalls_of(class, arch);
                for forbidden in ["setrlimit", "prlimit64", "getrlimit"] {
                    assert!(
                        !names.contains(&forbidden),
                        "adb-proxy/{} allows {forbidden}",
                        class.name
                    );
                }
                for rule in POLICY.rules_of(class) {
                    if rule.name != "setsockopt" {
                        continue;
                    }
                    assert!(
                        !rule.when.is_empty(),
                        "adb-proxy/{}: any option",
                        class.name
                    );
                    for alt in rule.when {
                        let level = alt.iter().find(|c| c.arg == 1).and_then(eq_value);
                        let option = alt.iter().find(|c| c.arg == 2).and_then(eq_value);
                        assert!(
                            level.is_some() && option.is_some(),
                            "adb-proxy/{}: {alt:?}",
                            class.name
                        );
                        assert_ne!(
                            (level, option),
                            (
                                Some(libc::SOL_SOCKET as u64),
                                Some(libc::SO_OOBINLINE as u64)
                            ),
                            "adb-proxy/{}",
                            class.name
                        );
                    }
                }
            }
        }
    }
}
