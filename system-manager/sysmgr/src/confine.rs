//! What `sysmgr run` does while the process has one thread, before its
//! tokio runtime starts: the policy, the state directory, the control
//! socket, the VMM launcher process (`crate::launcher`), then the sandbox
//! (`docs/security.md`).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::daemon::{load_policy, RunArgs};
use crate::store::{self, StateDir};

/// Binds the daemon's control socket, mode 0600 before it listens
/// (`sandbox::socket::bind_private`); refuses when another daemon answers
/// there (two daemons on one state directory would corrupt the log) and
/// never replaces anything but a stale socket.
fn bind_control_sync(path: &std::path::Path) -> Result<std::os::unix::net::UnixListener> {
    match sandbox::socket::bind_private(path) {
        Ok(l) => Ok(l),
        Err(sandbox::socket::BindError::InUse(_)) => bail!(
            "another sysmgr is running on this state directory ({} answers)",
            path.display()
        ),
        Err(e) => Err(e).with_context(|| format!("cannot create {}", path.display())),
    }
}

/// How `sysmgr run` confines itself (`docs/security.md`).
#[derive(Debug, Clone, Default)]
pub struct Confinement {
    /// Seccomp (one filter for the process), capabilities, uid switch,
    /// landlock, and VMMs started by the launcher process.
    pub enabled: bool,
    /// The identity a root daemon switches to (default 65534, the VMMs'
    /// default, so that it can reach their sockets).
    pub user: Option<sandbox::Identity>,
}

/// What `sysmgr run` set up before its runtime started.
pub struct Prepared {
    pub(crate) listener: std::os::unix::net::UnixListener,
    pub(crate) launcher: Option<std::os::unix::net::UnixStream>,
    /// The state directory's lock, held until the daemon ends.
    pub(crate) lock: store::StateLock,
}

/// The part of `sysmgr run` that runs while the process has one thread:
/// the policy, the state directory, the daemon's socket, the VMM launcher
/// process, then the sandbox.
pub fn prepare(args: &RunArgs, confinement: &Confinement) -> Result<Prepared> {
    let policy = load_policy(&args.policy)?;
    store::ensure_dir(&args.state_dir)?;
    let dir = StateDir(args.state_dir.clone());
    // One daemon per state directory: two would interleave their logs.
    let lock = store::lock(&dir)?;
    let listener = bind_control_sync(&dir.socket())?;
    // SAFETY: plain credential queries.
    let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let (runs_as, _) = sandbox::Identity::sandboxed(confinement.enabled, confinement.user);
    check_vmm_users(&policy, runs_as)?;
    // Root reaches every socket, and a sandboxed root daemon takes the
    // VMMs' groups when it switches user; anyone else must have them.
    if euid != 0 {
        check_vmm_groups(&policy, &current_groups()?)?;
    }
    if !confinement.enabled {
        tracing::warn!("sandbox disabled (--disable-sandbox)");
        return Ok(Prepared {
            listener,
            launcher: None,
            lock,
        });
    }
    let specs: Vec<crate::launcher::LaunchSpec> = policy
        .guests()
        .iter()
        .filter_map(|g| {
            g.vmm
                .launch
                .clone()
                .map(|argv| crate::launcher::LaunchSpec {
                    guest: g.name.clone(),
                    argv,
                    log: dir.vmm_log(&g.name),
                    pid_file: dir.pid_file(&g.name),
                    vmm_uid: g.vmm.vmm_user.map(|u| u.uid),
                })
        })
        .collect();
    let launcher = if specs.is_empty() {
        None
    } else {
        Some(crate::launcher::fork(specs).context("starting the VMM launcher process")?)
    };
    let user = (euid == 0).then(|| confinement.user.unwrap_or(sandbox::Identity::NOBODY));
    if let Some(u) = user.filter(|u| u.uid != euid || u.gid != egid) {
        chown_tree(&args.state_dir, u).with_context(|| {
            format!(
                "giving the state directory {} to uid {}",
                args.state_dir.display(),
                u.uid
            )
        })?;
    }
    let mut read = vec![
        args.policy.clone(),
        PathBuf::from("/proc/sys/kernel/random/boot_id"),
    ];
    read.retain(|p| p.exists());
    let entered = sandbox::enter(sandbox::Config {
        policy: &sandbox::policy::sysmgr::POLICY,
        user,
        groups: vmm_groups(&policy).map(|(_, gid)| gid).collect(),
        relisten: Vec::new(),
        fs: sandbox::fs::FsRules {
            read,
            read_write: vec![args.state_dir.clone()],
            make_socket_in: binder_socket_dirs(&policy),
            signal_others: true,
            ..Default::default()
        },
    })
    .context("entering the sandbox (or run with --disable-sandbox)")?;
    tracing::info!("sandbox: {entered}");
    Ok(Prepared {
        listener,
        launcher,
        lock,
    })
}

/// Each guest with a `vmm_user` and its VMM's group: the daemon keeps
/// these groups to reach the VMMs' `0660` sockets and to share each
/// guest's binder socket with its VMM alone.
fn vmm_groups(policy: &system_manager::Policy) -> impl Iterator<Item = (&str, u32)> {
    policy
        .guests()
        .iter()
        .filter_map(|g| g.vmm.vmm_user.map(|u| (g.name.as_str(), u.gid)))
}

/// Refuses a `vmm_user` that is the daemon's own uid or gid (such a VMM
/// would own `sysmgr`'s `0600` sockets, or reach every guest's through the
/// daemon's group), and warns when only some guests have one (a guest
/// without one runs as the shared sandbox user, usually the daemon's).
fn check_vmm_users(policy: &system_manager::Policy, daemon: sandbox::Identity) -> Result<()> {
    let guests = policy.guests();
    for g in guests {
        if let Some(u) = g.vmm.vmm_user {
            if u.uid == daemon.uid || u.gid == daemon.gid {
                bail!(
                    "guest {}: vmm_user {}:{} shares sysmgr's own uid or gid ({}:{}): its VMM could act as sysmgr; give it a uid and gid of its own",
                    g.name,
                    u.uid,
                    u.gid,
                    daemon.uid,
                    daemon.gid
                );
            }
        }
    }
    let with = guests.iter().filter(|g| g.vmm.vmm_user.is_some()).count();
    if with > 0 && with < guests.len() {
        tracing::warn!(
            "only {with} of {} guests have a vmm_user: the others' VMMs run as a shared user and are not isolated from each other (docs/security.md)",
            guests.len()
        );
    }
    Ok(())
}

/// The process's effective gid and supplementary groups.
fn current_groups() -> Result<Vec<u32>> {
    // SAFETY: getgroups(0, NULL) only returns the count.
    let n = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
    let mut groups = vec![0 as libc::gid_t; usize::try_from(n).unwrap_or(0)];
    // SAFETY: getgroups writes at most `groups.len()` ids into `groups`.
    let n = unsafe { libc::getgroups(n, groups.as_mut_ptr()) };
    if n < 0 {
        return Err(std::io::Error::last_os_error()).context("getgroups");
    }
    groups.truncate(usize::try_from(n).unwrap_or(0));
    // SAFETY: plain credential query.
    groups.push(unsafe { libc::getegid() });
    Ok(groups)
}

/// Refuses to run, with one line, when the daemon is not in a guest
/// VMM's group (`groups`: its own): it could not reach that VMM.
fn check_vmm_groups(policy: &system_manager::Policy, groups: &[u32]) -> Result<()> {
    if let Some((guest, gid)) = vmm_groups(policy).find(|(_, gid)| !groups.contains(gid)) {
        bail!(
            "guest {guest}: sysmgr is not in group {gid} of its vmm_user, so it cannot reach that VMM's sockets; start sysmgr as root (it keeps the group) or add its user to group {gid}"
        );
    }
    Ok(())
}

/// Where the daemon creates the guests' RPC binder sockets
/// (`<vsock_socket>_<port>`, beside the VMMs' vsock sockets): each one's
/// directory, or its closest existing ancestor (a VMM may create the
/// directory later; landlock needs one that exists now).
fn binder_socket_dirs(policy: &system_manager::Policy) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = policy
        .guests()
        .iter()
        .filter(|g| g.vmm.android_channel == system_manager::AndroidChannel::Binder)
        .filter_map(|g| g.vmm.vsock_socket.as_deref())
        .filter_map(|s| {
            let path = crate::binder::guest_socket(s, 0);
            path.ancestors()
                .skip(1)
                .find(|d| d.is_dir())
                .map(PathBuf::from)
        })
        .collect();
    dirs.sort();
    dirs.dedup();
    dirs
}

/// Gives `dir` and everything beneath it to `owner` (never following a
/// symlink).
fn chown_tree(dir: &std::path::Path, owner: sandbox::Identity) -> std::io::Result<()> {
    std::os::unix::fs::lchown(dir, Some(owner.uid), Some(owner.gid))?;
    if std::fs::symlink_metadata(dir)?.is_dir() {
        for entry in std::fs::read_dir(dir)? {
            chown_tree(&entry?.path(), owner)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_daemon_must_be_in_every_vmm_users_group() {
        let policy = system_manager::Policy::from_toml_str(
            "[[guest]]\nname = \"a\"\nrole = \"android\"\nvmm_user = \"10001:10001\"\n[[guest]]\nname = \"c\"\nrole = \"cluster\"\nvmm_user = \"10002:20002\"\n[[guest]]\nname = \"o\"\nrole = \"other\"\n",
        )
        .unwrap();
        assert_eq!(
            vmm_groups(&policy).collect::<Vec<_>>(),
            vec![("a", 10001), ("c", 20002)]
        );
        assert!(check_vmm_groups(&policy, &[65534, 10001, 20002]).is_ok());
        let nobody = sandbox::Identity::NOBODY;
        assert!(check_vmm_users(&policy, nobody).is_ok());
        for daemon in [
            sandbox::Identity { uid: 10002, gid: 1 },
            sandbox::Identity { uid: 1, gid: 10001 },
        ] {
            let e = check_vmm_users(&policy, daemon).unwrap_err().to_string();
            assert!(e.contains("shares sysmgr's own uid or gid"), "{e}");
        }
        let e = check_vmm_groups(&policy, &[65534, 10001]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("guest c: sysmgr is not in group 20002 of its vmm_user"),
            "{e}"
        );
        // Groups of this process: its own gid at least.
        // SAFETY: plain credential query.
        let egid = unsafe { libc::getegid() };
        assert!(current_groups().unwrap().contains(&egid));
    }
}
