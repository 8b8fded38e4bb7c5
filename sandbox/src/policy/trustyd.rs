//! `trustyd`'s thread classes.
//!
//! Its listening sockets are bound, its state directory locked and opened
//! and its device secret loaded before the sandbox is entered; after that
//! only the threads that serve a guest's trusted apps touch files, and
//! landlock keeps them inside the state directory.

use super::common::{
    ACCEPT, DURABLE_FILES, FILE_METADATA, REMOVE_SOCKETS, RUNTIME, SLEEP, STREAM_IO,
};
use super::{
    allow, main_class, Class, Confinement, ProcessPolicy, Rule, Threads, LAUNCHER_CLASS, MAIN_CLASS,
};

/// Storage of the trusted apps (secure storage, gatekeeper's failure
/// records): blobs and manifests in each guest's namespace directory of
/// the state directory ([`DURABLE_FILES`]), read whole.
const STORAGE: &[Rule] = &[allow("read", "read a blob or manifest")];

/// A guest's connection (libtrusty over vsock, or the host TEE socket):
/// messages to a trusted app and back, and that app's storage.
const CONNECTION: &[&[Rule]] = &[
    RUNTIME,
    STREAM_IO,
    ACCEPT,
    SLEEP,
    DURABLE_FILES,
    STORAGE,
    FILE_METADATA,
];

/// Waiting for SIGINT/SIGTERM (then [`REMOVE_SOCKETS`]).
const MAIN: &[Rule] = &[allow("rt_sigtimedwait", "sigwait for SIGINT/SIGTERM")];

/// `trustyd`'s policy.
pub const POLICY: ProcessPolicy = ProcessPolicy {
    process: "trustyd",
    confinement: Confinement::PerThread,
    main: MAIN_CLASS,
    classes: &[
        main_class(
            "waits for SIGINT/SIGTERM, then removes the sockets",
            &[RUNTIME, MAIN, REMOVE_SOCKETS],
        ),
        LAUNCHER_CLASS,
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
            rules: CONNECTION,
        },
        Class {
            name: "tee",
            threads: &[Threads::Prefix("tee-")],
            about:
                "one host TEE connection: its reader, its response writer and its invoke threads",
            rules: CONNECTION,
        },
    ],
};
