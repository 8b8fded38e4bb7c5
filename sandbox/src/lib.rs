//! The stack's sandbox, shared by `vmm`, `sysmgr` and `trustyd`
//! (`docs/security.md`).
//!
//! A program opens everything it needs (devices, files, sockets), then
//! calls [`enter`] while it still has a single thread:
//!
//! 1. every seccomp filter of its [`policy`] is compiled (rust-vmm's
//!    `seccompiler`) and a `SIGSYS` handler installed that names a
//!    forbidden call and exits with status 159 ([`seccomp`]);
//! 2. a landlock domain limits the file system to what the program lists
//!    ([`fs`]);
//! 3. every capability is dropped, `no_new_privs` set, the process made
//!    non-dumpable and, when started as root, switched to an unprivileged
//!    uid/gid ([`privileges`]);
//! 4. the launcher thread starts (per-thread programs, [`thread`]) and the
//!    calling thread installs its own class's filter.
//!
//! Afterwards every thread is started with [`thread::spawn`], which
//! installs the thread's class filter before its body runs.
//!
//! [`socket`] (private sockets, peer checks, accept back-off) is separate
//! from the sandbox and on whether or not it was entered.
//!
//! Linux only; on other targets (Android is checked with `cargo check`)
//! the policy tables and sockets build, and [`enter`] reports that there
//! is no sandbox.

pub mod docs;
pub mod policy;
pub mod probe;
pub mod socket;
pub mod syscalls;
pub mod tcp_peer;

pub mod fs;
mod join_handle;
#[cfg(target_os = "linux")]
pub mod privileges;
#[cfg(target_os = "linux")]
pub mod seccomp;
#[cfg(target_os = "linux")]
pub mod thread;

#[cfg(not(target_os = "linux"))]
pub mod thread {
    //! Without a sandbox: plain threads, behind the same API.

    pub use crate::join_handle::JoinHandle;
    use crate::join_handle::ResultSlot;

    /// Starts a thread called `name` running `body`.
    pub fn spawn<T, F>(name: impl Into<String>, body: F) -> std::io::Result<JoinHandle<T>>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (slot, run) = ResultSlot::wrap(body);
        let thread = std::thread::Builder::new().name(name.into()).spawn(run)?;
        Ok(slot.handle(thread))
    }

    /// Whether a sandbox was entered (never, here).
    pub fn sandboxed() -> bool {
        false
    }
}

use policy::ProcessPolicy;

/// The exit status of a process that made a forbidden system call.
pub const VIOLATION_EXIT_CODE: i32 = 128 + 31;

/// A uid/gid pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

impl Identity {
    /// `nobody`/`nogroup` (65534): the default identity a program started
    /// as root switches to.
    pub const NOBODY: Identity = Identity {
        uid: 65534,
        gid: 65534,
    };

    /// The identity a program runs as once it entered its sandbox, and
    /// whether it switches to it: started as root with the sandbox on, it
    /// switches to `user` (default [`Self::NOBODY`]); otherwise it keeps
    /// its effective uid and gid.
    pub fn sandboxed(enabled: bool, user: Option<Identity>) -> (Identity, bool) {
        // SAFETY: plain credential queries.
        let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
        if enabled && euid == 0 {
            (user.unwrap_or(Identity::NOBODY), true)
        } else {
            (
                Identity {
                    uid: euid,
                    gid: egid,
                },
                false,
            )
        }
    }

    /// Parses `UID[:GID]` (numbers; the gid defaults to the uid) or a user
    /// name from `/etc/passwd` (its primary group).
    pub fn parse(s: &str) -> Result<Identity, String> {
        let usage = "use UID[:GID] (numbers) or a user name from /etc/passwd";
        let (user, group) = match s.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (s, None),
        };
        if let Ok(uid) = user.parse::<u32>() {
            let gid = match group {
                Some(g) => g
                    .parse::<u32>()
                    .map_err(|_| format!("bad gid {g:?}: {usage}"))?,
                None => uid,
            };
            return Ok(Identity { uid, gid });
        }
        if group.is_some() || user.is_empty() {
            return Err(format!("bad user {s:?}: {usage}"));
        }
        let passwd = std::fs::read_to_string("/etc/passwd")
            .map_err(|e| format!("no user {user:?}: cannot read /etc/passwd ({e}): {usage}"))?;
        Self::from_passwd(&passwd, user)
            .ok_or_else(|| format!("no user {user:?} in /etc/passwd: {usage}"))
    }

    /// Looks `name` up in the text of a passwd file.
    fn from_passwd(passwd: &str, name: &str) -> Option<Identity> {
        passwd.lines().find_map(|line| {
            let mut fields = line.split(':');
            if fields.next()? != name {
                return None;
            }
            let _password = fields.next()?;
            let uid = fields.next()?.parse().ok()?;
            let gid = fields.next()?.parse().ok()?;
            Some(Identity { uid, gid })
        })
    }
}

/// What a program asks of [`enter`].
#[derive(Debug, Clone)]
pub struct Config {
    /// Its seccomp policy.
    pub policy: &'static ProcessPolicy,
    /// The identity to switch to when running as root (`None`: stay
    /// root, without capabilities).
    pub user: Option<Identity>,
    /// Supplementary groups it keeps after switching to `user` (`sysmgr`:
    /// every guest VMM's group, to reach the VMMs' `0660` sockets).
    pub groups: Vec<u32>,
    /// Listening sockets bound before the switch: `listen`ed again once
    /// the process runs as `user`, before any filter, because Linux hands
    /// a listener's credentials to its peers' `SO_PEERCRED` as they were
    /// at `listen` (root's, otherwise).
    pub relisten: Vec<std::os::fd::RawFd>,
    /// What it may still do on the file system.
    pub fs: fs::FsRules,
}

/// What [`enter`] did, for the program's log.
#[derive(Debug, Clone)]
pub struct Entered {
    /// The credentials now.
    #[cfg(target_os = "linux")]
    pub privileges: privileges::Dropped,
    /// The landlock domain's status.
    #[cfg(target_os = "linux")]
    pub fs: fs::FsStatus,
    /// Number of thread classes with their own filter.
    pub classes: usize,
}

impl std::fmt::Display for Entered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        #[cfg(target_os = "linux")]
        {
            write!(
                f,
                "seccomp filters for {} thread classes; uid {} gid {}{}; no capabilities{}; no_new_privs; landlock {}",
                self.classes,
                self.privileges.uid,
                self.privileges.gid,
                if self.privileges.switched { " (switched from root)" } else { "" },
                if self.privileges.bounding_emptied { ", empty bounding set" } else { "" },
                self.fs
            )
        }
        #[cfg(not(target_os = "linux"))]
        {
            write!(f, "no sandbox on this OS")
        }
    }
}

/// Why the sandbox could not be entered.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// Other threads exist (they would keep the old privileges).
    #[error("the sandbox must be entered before any thread is started ({0} threads running)")]
    Threads(usize),
    /// A filter failed to compile.
    #[cfg(target_os = "linux")]
    #[error(transparent)]
    Seccomp(#[from] seccomp::SeccompError),
    /// The SIGSYS handler, the launcher or the main thread's filter.
    #[error("cannot set up the sandbox: {0}")]
    Setup(std::io::Error),
    /// Dropping privileges failed.
    #[error("cannot drop privileges: {0}")]
    Privileges(std::io::Error),
    /// Landlock refused the rules.
    #[error("cannot restrict the file system (landlock): {0}")]
    Landlock(String),
    /// No sandbox on this OS.
    #[error("the sandbox is implemented for Linux only; run with --disable-sandbox")]
    Unsupported,
}

/// Number of threads of this process.
#[cfg(target_os = "linux")]
fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(1)
}

/// Enters the sandbox (see the crate docs); the calling thread must be the
/// only one. Afterwards the calling thread is confined to the policy's
/// main class.
#[cfg(target_os = "linux")]
pub fn enter(config: Config) -> Result<Entered, SandboxError> {
    let threads = thread_count();
    if threads != 1 {
        return Err(SandboxError::Threads(threads));
    }
    let policy = config.policy;
    let pid = std::process::id();
    let filters = policy
        .classes
        .iter()
        .map(|class| seccomp::compile_class(policy, class, pid))
        .collect::<Result<Vec<_>, _>>()?;
    let classes = filters.len();
    seccomp::install_violation_handler(policy.process).map_err(SandboxError::Setup)?;
    let fs = fs::restrict(&config.fs).map_err(|e| SandboxError::Landlock(e.to_string()))?;
    let privileges =
        privileges::drop_all(config.user, &config.groups).map_err(SandboxError::Privileges)?;
    for &fd in &config.relisten {
        socket::relisten(fd).map_err(SandboxError::Setup)?;
    }
    thread::activate(policy, filters, probe::from_env()).map_err(SandboxError::Setup)?;
    thread::confine_current_thread(policy.main).map_err(SandboxError::Setup)?;
    Ok(Entered {
        privileges,
        fs,
        classes,
    })
}

/// There is no sandbox on this OS.
#[cfg(not(target_os = "linux"))]
pub fn enter(_config: Config) -> Result<Entered, SandboxError> {
    Err(SandboxError::Unsupported)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_parse_from_numbers_and_passwd() {
        assert_eq!(
            Identity::parse("1000"),
            Ok(Identity {
                uid: 1000,
                gid: 1000
            })
        );
        assert_eq!(
            Identity::parse("1000:100"),
            Ok(Identity {
                uid: 1000,
                gid: 100
            })
        );
        let passwd = "root:x:0:0:root:/root:/bin/sh\nvmstack:x:990:985::/:/usr/sbin/nologin\n";
        assert_eq!(
            Identity::from_passwd(passwd, "vmstack"),
            Some(Identity { uid: 990, gid: 985 })
        );
        assert_eq!(Identity::from_passwd(passwd, "nobody"), None);
        for bad in ["", "1000:x", "name:100", ":5"] {
            let e = Identity::parse(bad).unwrap_err();
            assert!(e.contains("UID[:GID]"), "{e}");
        }
    }

    #[test]
    fn violation_exit_code_is_128_plus_sigsys() {
        assert_eq!(VIOLATION_EXIT_CODE, 128 + libc::SIGSYS);
    }
}
