//! `sysmgr`'s policy.

use super::common::RUNTIME;
use super::{Class, Confinement, ProcessPolicy, Threads};

/// `sysmgr`'s policy.
pub const POLICY: ProcessPolicy = ProcessPolicy {
    process: "sysmgr",
    confinement: Confinement::ProcessWide,
    main: "sysmgr",
    classes: &[Class {
        name: "sysmgr",
        threads: &[Threads::Prefix("")],
        about: "every thread of the daemon",
        rules: &[RUNTIME],
    }],
};
