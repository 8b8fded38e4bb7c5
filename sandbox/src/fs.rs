//! The file-system view: a landlock domain (Linux >= 5.13) that handles
//! every file-system right of landlock ABI 6, TCP bind/connect, abstract
//! unix sockets and signals, and grants back only what a program lists.
//!
//! Why landlock rather than a mount namespace and `pivot_root` (the
//! Firecracker jailer's way): it needs no privilege (an unprivileged user's
//! VMM gets the same restriction), no jail directory to populate with hard
//! links, and no cooperation from the launcher; the programs here open
//! everything they need before entering the sandbox, so the remaining view
//! is tiny and easy to state. Connecting to a unix socket by path is not a
//! landlock right before ABI 9, so guest-to-host vsock connections
//! (`PATH_<port>`) keep working; its scoping (ABI 6) forbids abstract unix
//! sockets and signals to processes outside the domain.
//!
//! Off Linux (Android builds) the rules are data only: nothing applies
//! them there.

use std::path::PathBuf;

#[cfg(target_os = "linux")]
use landlock::{
    path_beneath_rules, Access, AccessFs, AccessNet, CompatLevel, Compatible, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus, Scope, ABI,
};

/// The rights a program keeps after the sandbox is entered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FsRules {
    /// Read files beneath these paths.
    pub read: Vec<PathBuf>,
    /// Read, write, create and remove beneath these directories.
    pub read_write: Vec<PathBuf>,
    /// Remove files (its own sockets at exit) beneath these directories.
    pub remove_in: Vec<PathBuf>,
    /// Create unix sockets beneath these directories.
    pub make_socket_in: Vec<PathBuf>,
    /// May signal processes outside the domain (a daemon that stops the
    /// VMMs it launched); otherwise signals stay inside it.
    pub signal_others: bool,
}

/// How much of the domain this kernel enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsStatus {
    /// Everything asked for.
    Full,
    /// Part of it (an older landlock ABI).
    Partial,
    /// Nothing: the kernel has no landlock (or it is disabled).
    None,
}

impl std::fmt::Display for FsStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FsStatus::Full => "fully enforced",
            FsStatus::Partial => "partly enforced (older kernel)",
            FsStatus::None => "not enforced (the kernel has no landlock)",
        })
    }
}

/// The ABI whose rights are handled: landlock 6 (Linux 6.12).
#[cfg(target_os = "linux")]
const ABI_USED: ABI = ABI::V6;

/// Restricts the calling thread (and every thread it creates later) to
/// `rules`.
#[cfg(target_os = "linux")]
pub fn restrict(rules: &FsRules) -> Result<FsStatus, landlock::RulesetError> {
    let ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(ABI_USED))?
        .handle_access(AccessNet::from_all(ABI_USED))?
        .scope(if rules.signal_others {
            Scope::AbstractUnixSocket.into()
        } else {
            Scope::from_all(ABI_USED)
        })?
        .create()?
        .add_rules(path_beneath_rules(
            &rules.read,
            AccessFs::from_read(ABI_USED),
        ))?
        .add_rules(path_beneath_rules(
            &rules.read_write,
            AccessFs::from_all(ABI_USED),
        ))?
        .add_rules(path_beneath_rules(&rules.remove_in, AccessFs::RemoveFile))?
        .add_rules(path_beneath_rules(
            &rules.make_socket_in,
            AccessFs::MakeSock | AccessFs::RemoveFile,
        ))?;
    let status = ruleset.restrict_self()?;
    Ok(match status.ruleset {
        RulesetStatus::FullyEnforced => FsStatus::Full,
        RulesetStatus::PartiallyEnforced => FsStatus::Partial,
        RulesetStatus::NotEnforced => FsStatus::None,
    })
}
