//! `trustyd`'s thread classes.

use super::common::RUNTIME;
use super::{Class, Confinement, ProcessPolicy, Threads, LAUNCHER};

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
            rules: &[RUNTIME],
        },
        Class {
            name: LAUNCHER,
            threads: &[Threads::Named(LAUNCHER)],
            about: "starts every other thread",
            rules: &[RUNTIME],
        },
    ],
};
