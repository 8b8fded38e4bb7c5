//! `sysmgr`'s policy: one filter for the whole process.
//!
//! The daemon is a tokio program: the runtime, its blocking pool and the
//! decision log's sync thread create threads themselves, and the core
//! loop, the links and the I/O share them, so a split by thread would not
//! separate anything; the filter is installed on the main thread before the
//! runtime exists and every thread inherits it. VMMs are started by the
//! launcher process forked before the sandbox (`sysmgr/src/launcher.rs`),
//! so nothing here may start a process.

// libc's constants are `c_ulong` on glibc and `c_int` on musl: the casts
// are needed on one of them.
#![allow(clippy::unnecessary_cast)]

use super::common::{
    ACCEPT, CONNECT_UNIX, DURABLE_FILES, EPOLL_LOOP, FILE_METADATA, RUNTIME, SLEEP, STREAM_IO,
};
use super::{
    allow, allow_if, eq, masked, Arch, Class, Confinement, ProcessPolicy, Rule, Threads,
    CLONE3_ENOSYS, CLONE_THREAD_ONLY,
};

/// The async runtime and its threads.
const RUNTIME_THREADS: &[Rule] = &[
    allow("epoll_create1", "the runtime's epoll set"),
    allow("eventfd2", "the runtime's waker"),
    allow_if(
        "socketpair",
        &[&[eq(0, libc::AF_UNIX as u64, "AF_UNIX")]],
        "the runtime's signal driver pipe",
    ),
    allow_if(
        "clone",
        CLONE_THREAD_ONLY,
        "the runtime's blocking pool and the log-sync thread (never a process)",
    ),
    CLONE3_ENOSYS,
    allow("set_robust_list", "a new thread's start-up in libc"),
    allow("rseq", "a new thread's start-up in glibc"),
    allow_if(
        "prctl",
        &[&[eq(0, libc::PR_SET_NAME as u64, "PR_SET_NAME")]],
        "a new thread names itself",
    ),
    allow("sched_getaffinity", "the runtime sizes its pools"),
];

/// The state directory beyond [`DURABLE_FILES`] (the decision log, its
/// snapshot, the clock file, pid files): a torn or compacted log cut short,
/// the binder endpoints' permissions.
const STATE: &[Rule] = &[
    allow(
        "ftruncate",
        "cut a torn last record; empty the log after a compaction",
    ),
    allow(
        "chmod",
        "0700 on the binder directory, 0600 on a binder socket (x86_64)",
    )
    .on(Arch::X86_64),
    allow(
        "fchmodat",
        "0700 on the binder directory, 0600 on a binder socket",
    ),
    allow_if(
        "chown",
        &[&[masked(
            1,
            0xffff_ffff,
            0xffff_ffff,
            "uid -1: the group only",
        )]],
        "a guest's binder socket to its vmm_user's group (x86_64)",
    )
    .on(Arch::X86_64),
    allow_if(
        "fchownat",
        &[&[masked(
            2,
            0xffff_ffff,
            0xffff_ffff,
            "uid -1: the group only",
        )]],
        "a guest's binder socket to its vmm_user's group",
    ),
];

/// The RPC binder endpoints (`sysmgr/src/binder.rs`): the host's socket in
/// the state directory and one per Android guest beside its VMM's vsock
/// socket (landlock allows creating sockets only there).
const BINDER: &[Rule] = &[
    allow("bind", "bind a binder endpoint's unix socket"),
    allow("listen", "listen on it"),
    allow(
        "getpeername",
        "rsbinder tells a connection's address family",
    ),
    allow_if(
        "ioctl",
        &[&[eq(1, libc::TIOCOUTQ as u64, "TIOCOUTQ")]],
        "rsbinder waits until a connection's queued output drained",
    ),
    allow_if(
        "getsockopt",
        &[
            &[
                eq(1, libc::SOL_SOCKET as u64, "SOL_SOCKET"),
                eq(2, SO_SNDTIMEO_NEW, "SO_SNDTIMEO_NEW"),
            ],
            &[
                eq(1, libc::SOL_SOCKET as u64, "SOL_SOCKET"),
                eq(2, libc::SO_SNDTIMEO as u64, "SO_SNDTIMEO(_OLD)"),
            ],
        ],
        "rsbinder reads a connection's send timeout while a send waits for room \
         (rustix asks for the _NEW option first)",
    ),
];

/// `SO_SNDTIMEO_NEW` (the same number on x86_64 and aarch64; not in every
/// libc crate target).
const SO_SNDTIMEO_NEW: u64 = 67;

/// Questions about the process itself.
const SELF: &[Rule] = &[
    allow("getuid", "the own uid (binder peer checks)"),
    allow("geteuid", "the own uid (binder peer checks)"),
    allow("getgid", "the own gid"),
    allow("getegid", "the own gid"),
    allow_if(
        "prlimit64",
        &[&[eq(2, 0, "no new limit (a query)")]],
        "read the descriptor and stack limits (never set one)",
    ),
];

/// Killing a VMM that did not stop, never by a bare pid (the launcher
/// kills the ones this daemon started; `sysmgr/src/pidfd.rs`).
const KILL: &[Rule] = &[
    allow(
        "pidfd_open",
        "a handle on a VMM's process: its control socket's peer while it answers",
    ),
    allow_if(
        "pidfd_send_signal",
        &[&[eq(1, libc::SIGKILL as u64, "SIGKILL")]],
        "SIGKILL through that handle to a VMM that did not stop",
    ),
];

/// `sysmgr`'s policy.
pub const POLICY: ProcessPolicy = ProcessPolicy {
    process: "sysmgr",
    confinement: Confinement::ProcessWide,
    main: "sysmgr",
    classes: &[Class {
        name: "sysmgr",
        threads: &[Threads::Prefix("")],
        about: "every thread of the daemon (tokio runtime, blocking pool, log sync)",
        rules: &[
            RUNTIME,
            SLEEP,
            EPOLL_LOOP,
            STREAM_IO,
            ACCEPT,
            CONNECT_UNIX,
            RUNTIME_THREADS,
            DURABLE_FILES,
            STATE,
            FILE_METADATA,
            BINDER,
            SELF,
            KILL,
        ],
    }],
};
