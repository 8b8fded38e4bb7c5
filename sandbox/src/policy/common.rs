//! Rule groups shared by many thread classes.

// libc's request constants are `c_ulong` on glibc and `c_int` on musl: the
// casts are needed on one of them.
#![allow(clippy::unnecessary_cast)]

use super::{allow, allow_if, eq, masked, own_pid, Arch, Cond, Rule};

/// `mmap`/`mprotect` protections without `PROT_EXEC`: no thread may make
/// memory executable after start-up.
const NO_EXEC: &[&[Cond]] = &[&[masked(
    2,
    libc::PROT_EXEC as u64,
    0,
    "prot without PROT_EXEC",
)]];

/// `SOL_SOCKET` level (argument 1) and `option` (argument 2): one
/// `getsockopt`/`setsockopt` option.
const fn socket_option(option: libc::c_int, label: &'static str) -> [Cond; 2] {
    [
        eq(1, libc::SOL_SOCKET as u64, "SOL_SOCKET"),
        eq(2, option as u64, label),
    ]
}

/// `getsockopt` of the peer's credentials or of a pending error.
const PEER_CRED_OR_ERROR: &[&[Cond]] = &[
    &socket_option(libc::SO_PEERCRED, "SO_PEERCRED"),
    &socket_option(libc::SO_ERROR, "SO_ERROR"),
];

/// `fcntl` requests on a descriptor's flags and duplicates: non-blocking
/// and close-on-exec flags, `try_clone` (`F_DUPFD_CLOEXEC`).
pub const DESCRIPTOR_FLAGS: &[&[Cond]] = &[
    &[eq(1, libc::F_GETFL as u64, "F_GETFL")],
    &[eq(1, libc::F_SETFL as u64, "F_SETFL")],
    &[eq(1, libc::F_GETFD as u64, "F_GETFD")],
    &[eq(1, libc::F_SETFD as u64, "F_SETFD")],
    &[eq(1, libc::F_DUPFD_CLOEXEC as u64, "F_DUPFD_CLOEXEC")],
];

/// What every thread of every program needs from the Rust runtime and libc
/// (glibc or musl): memory, locks, time, logging, its own end, and an
/// orderly `abort` (a panic in a release build) that is not mistaken for a
/// sandbox violation.
pub const RUNTIME: &[Rule] = &[
    allow("futex", "locks, condition variables, channels, thread join"),
    allow(
        "write",
        "log lines to stderr (tracing), the sandbox's own violation report",
    ),
    allow("exit", "the thread ends"),
    allow(
        "exit_group",
        "the process ends (also the SIGSYS handler's exit)",
    ),
    allow_if(
        "mmap",
        NO_EXEC,
        "the allocator (musl mallocng, glibc malloc); never executable",
    ),
    allow_if(
        "mprotect",
        NO_EXEC,
        "glibc grows a thread's malloc arena with mprotect; never executable",
    ),
    allow("mremap", "the allocator grows large blocks"),
    allow(
        "munmap",
        "the allocator frees; libc unmaps a finished thread's stack",
    ),
    allow("madvise", "the allocator and libc return freed pages"),
    allow("brk", "musl's allocator"),
    allow("close", "dropping a file descriptor"),
    allow_if(
        "fcntl",
        &[&[eq(1, libc::F_GETFD as u64, "F_GETFD")]],
        "std checks that a descriptor it drops is open (debug builds)",
    ),
    allow(
        "sigaltstack",
        "Rust's stack-overflow guard removes its signal stack when a thread ends",
    ),
    allow(
        "rt_sigprocmask",
        "libc blocks signals around thread exit and abort",
    ),
    allow("rt_sigreturn", "return from a signal handler"),
    allow(
        "clock_gettime",
        "timestamps and timeouts (when the vDSO is not used)",
    ),
    allow("gettimeofday", "timestamps (when the vDSO is not used)"),
    allow("sched_yield", "channel back-off (std::sync::mpsc)"),
    allow("getpid", "abort and raise name the own process"),
    allow("gettid", "abort and raise name the own thread"),
    allow_if(
        "tgkill",
        &[&[own_pid(0)]],
        "signals to the own process's threads only (glibc abort, vCPU kicks)",
    ),
    allow_if(
        "tkill",
        &[&[eq(1, libc::SIGABRT as u64, "SIGABRT")]],
        "musl's abort raises SIGABRT on the own thread",
    ),
    allow(
        "getrandom",
        "std's HashMap keys; virtio-rng's entropy (no file is opened for it)",
    ),
];

/// Blocking sleeps (`std::thread::sleep`).
pub const SLEEP: &[Rule] = &[
    allow("nanosleep", "std::thread::sleep (musl, glibc)"),
    allow(
        "clock_nanosleep",
        "std::thread::sleep (glibc, musl on aarch64)",
    ),
];

/// An epoll loop over eventfds (every device worker, the console client):
/// waits, (un)registers, drains and signals eventfds.
pub const EPOLL_LOOP: &[Rule] = &[
    allow("epoll_wait", "wait for events (glibc on x86_64)").on(Arch::X86_64),
    allow("epoll_pwait", "wait for events (musl; aarch64)"),
    allow("epoll_ctl", "add, change and remove watched descriptors"),
    allow("read", "drain an eventfd (queue kick, kill event)"),
];

/// Reading and writing sockets a thread already has.
pub const STREAM_IO: &[Rule] = &[
    allow("read", "read from a connection"),
    allow("recvfrom", "read from a connection (recv, MSG_PEEK)"),
    allow("write", "write to a connection"),
    allow("writev", "write several buffers at once"),
    allow("sendto", "write to a connection (send)"),
    allow("sendmsg", "write several buffers to a connection"),
    allow("recvmsg", "read several buffers from a connection"),
    allow("shutdown", "half-close a connection"),
    allow_if(
        "ioctl",
        &[&[eq(1, libc::FIONBIO as u64, "FIONBIO")]],
        "std's set_nonblocking on sockets",
    ),
    allow_if(
        "fcntl",
        DESCRIPTOR_FLAGS,
        "non-blocking and close-on-exec flags, try_clone (dup) of a descriptor",
    ),
];

/// Accepting connections on a listening unix socket and checking the peer.
pub const ACCEPT: &[Rule] = &[
    allow("accept4", "accept a connection (close-on-exec)"),
    allow("accept", "accept a connection (older libc paths)").on(Arch::X86_64),
    allow_if(
        "getsockopt",
        PEER_CRED_OR_ERROR,
        "the peer's uid (SO_PEERCRED) on every accept; a pending error",
    ),
    allow_if(
        "setsockopt",
        &[
            &socket_option(libc::SO_RCVTIMEO, "SO_RCVTIMEO"),
            &socket_option(libc::SO_SNDTIMEO, "SO_SNDTIMEO"),
        ],
        "read and write timeouts on an accepted connection",
    ),
];

/// Connecting to unix sockets by path (never any other address family).
pub const CONNECT_UNIX: &[Rule] = &[
    allow_if(
        "socket",
        &[&[eq(0, libc::AF_UNIX as u64, "AF_UNIX")]],
        "a unix socket (no network family)",
    ),
    allow("connect", "connect it to a path"),
    allow_if(
        "getsockopt",
        PEER_CRED_OR_ERROR,
        "the peer's uid; the result of a non-blocking connect",
    ),
    allow("poll", "wait for a connection or a peer (musl/glibc poll)").on(Arch::X86_64),
    allow("ppoll", "wait for a connection or a peer (aarch64, musl)"),
];

/// Sizes and types of files, by descriptor or by path, through whichever
/// `stat` flavour the libc uses.
pub const FILE_METADATA: &[Rule] = &[
    allow("newfstatat", "file sizes and types"),
    allow("fstat", "file sizes"),
    allow("statx", "file sizes and types (glibc)"),
    allow("stat", "file sizes and types (musl on x86_64)").on(Arch::X86_64),
    allow("lstat", "file types (musl on x86_64)").on(Arch::X86_64),
];

/// Files of a state directory kept across crashes (`sysmgr`'s decision
/// log, clock and pid files; `trustyd`'s storage blobs and manifests):
/// opened by path beneath the directory (landlock keeps them there),
/// committed by writing a temporary file, `fsync` and `rename` over the
/// old one, superseded files and leftovers of a crash removed.
pub const DURABLE_FILES: &[Rule] = &[
    allow("openat", "open a file or directory of the state directory"),
    allow("open", "open a file (musl on x86_64)").on(Arch::X86_64),
    allow("lseek", "file offsets"),
    allow("pread64", "read a file at an offset"),
    allow("fsync", "make a file or its directory durable"),
    allow("fdatasync", "make a file's data durable"),
    allow(
        "renameat",
        "commit a file: rename the temporary one over the old one",
    ),
    allow("renameat2", "commit a file (glibc)"),
    allow("rename", "commit a file (x86_64)").on(Arch::X86_64),
    allow(
        "unlinkat",
        "remove a superseded file or a leftover of a crash",
    ),
    allow(
        "unlink",
        "remove a superseded file or a leftover of a crash (x86_64)",
    )
    .on(Arch::X86_64),
    allow("mkdirat", "create a directory"),
    allow("mkdir", "create a directory (x86_64)").on(Arch::X86_64),
    allow("getdents64", "list a directory"),
];

/// Removing the program's own socket files when it stops
/// (`sandbox::socket::remove_socket`): a path is removed only while it is
/// still a socket.
pub const REMOVE_SOCKETS: &[Rule] = &[
    allow(
        "newfstatat",
        "check that a socket path is still a socket before removing it",
    ),
    allow(
        "statx",
        "check that a socket path is still a socket (glibc)",
    ),
    allow(
        "lstat",
        "check that a socket path is still a socket (musl on x86_64)",
    )
    .on(Arch::X86_64),
    allow("unlinkat", "remove the program's own sockets when it stops"),
    allow("unlink", "remove its own sockets (x86_64)").on(Arch::X86_64),
];

/// The terminal size of an output that may be a terminal.
pub const TERMINAL_SIZE: Rule = allow_if(
    "ioctl",
    &[&[eq(1, libc::TIOCGWINSZ as u64, "TIOCGWINSZ")]],
    "the size of the terminal the console writes to",
);

/// The shared groups by name, for the docs.
pub const GROUPS: &[(&str, &[Rule])] = &[
    ("RUNTIME", RUNTIME),
    ("SLEEP", SLEEP),
    ("EPOLL_LOOP", EPOLL_LOOP),
    ("STREAM_IO", STREAM_IO),
    ("ACCEPT", ACCEPT),
    ("CONNECT_UNIX", CONNECT_UNIX),
    ("FILE_METADATA", FILE_METADATA),
    ("DURABLE_FILES", DURABLE_FILES),
    ("REMOVE_SOCKETS", REMOVE_SOCKETS),
];

/// The name of `group` if it is one of [`GROUPS`].
pub fn group_name(group: &[Rule]) -> Option<&'static str> {
    GROUPS
        .iter()
        .find(|(_, g)| *g == group)
        .map(|(name, _)| *name)
}
