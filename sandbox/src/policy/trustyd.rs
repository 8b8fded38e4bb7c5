//! `trustyd`'s thread classes.
//!
//! Its listening sockets are bound, its state directory locked and opened
//! and its device secret loaded before the sandbox is entered; after that
//! only the threads that serve a guest's trusted apps touch files, and
//! landlock keeps them inside the state directory.

use super::common::{ACCEPT, FILE_METADATA, RUNTIME, SLEEP, STREAM_IO};
use super::{allow, Arch, Class, Confinement, ProcessPolicy, Rule, Threads, LAUNCHER};

/// Storage of the trusted apps (secure storage, gatekeeper's failure
/// records): files in the state directory, committed with a temporary
/// file, `fsync` and `rename`.
const STORAGE: &[Rule] = &[
    allow(
        "openat",
        "open a file or directory of the guest's namespace",
    ),
    allow("open", "open a file (musl on x86_64)").on(Arch::X86_64),
    allow("read", "read a blob or manifest"),
    allow("pread64", "read a blob"),
    allow("lseek", "file offsets"),
    allow("fsync", "make a blob, manifest or directory durable"),
    allow("fdatasync", "make a blob durable"),
    allow(
        "renameat",
        "commit a blob or manifest (rename over the old one)",
    ),
    allow("renameat2", "commit a blob or manifest (glibc)"),
    allow("rename", "commit a blob or manifest (x86_64)").on(Arch::X86_64),
    allow(
        "unlinkat",
        "remove superseded blobs and leftovers of a crash",
    ),
    allow("unlink", "remove superseded blobs (x86_64)").on(Arch::X86_64),
    allow("mkdirat", "create a namespace directory"),
    allow("mkdir", "create a namespace directory (x86_64)").on(Arch::X86_64),
    allow("getdents64", "list a namespace directory"),
];

/// Waiting for SIGINT/SIGTERM and removing the sockets.
const MAIN: &[Rule] = &[
    allow("rt_sigtimedwait", "sigwait for SIGINT/SIGTERM"),
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
    allow("unlinkat", "remove the daemon's sockets when it stops"),
    allow("unlink", "remove the daemon's sockets (x86_64)").on(Arch::X86_64),
];

/// `trustyd`'s policy.
pub const POLICY: ProcessPolicy = ProcessPolicy {
    process: "trustyd",
    confinement: Confinement::PerThread,
    main: "main",
    classes: &[
        Class {
            name: "main",
            threads: &[Threads::Named("main")],
            about: "waits for SIGINT/SIGTERM, then removes the sockets",
            rules: &[RUNTIME, MAIN],
        },
        Class {
            name: LAUNCHER,
            threads: &[Threads::Named(LAUNCHER)],
            about: "starts every other thread (the union of all classes, plus clone)",
            rules: &[RUNTIME],
        },
        Class {
            name: "accept",
            threads: &[Threads::Prefix("accept-")],
            about:
                "one listener per guest and kind: accept, check the peer, start a connection thread",
            rules: &[RUNTIME, ACCEPT, SLEEP],
        },
        Class {
            name: "vsock",
            threads: &[Threads::Prefix("vsock-")],
            about: "one libtrusty connection: messages to a trusted app and back",
            rules: &[RUNTIME, STREAM_IO, ACCEPT, SLEEP, STORAGE, FILE_METADATA],
        },
        Class {
            name: "tee",
            threads: &[Threads::Prefix("tee-")],
            about: "one host TEE connection and its invoke threads",
            rules: &[RUNTIME, STREAM_IO, ACCEPT, SLEEP, STORAGE, FILE_METADATA],
        },
    ],
};
