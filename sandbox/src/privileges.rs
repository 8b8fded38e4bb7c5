//! Giving up privileges: every capability (bounding, ambient, effective,
//! permitted, inheritable), `no_new_privs`, not dumpable, and, when
//! started as root, an unprivileged uid/gid.
//!
//! Runs while the process has a single thread: capabilities and
//! credentials are per thread in the kernel, and every later thread
//! inherits the result.

use std::io;

use crate::Identity;

/// What [`drop_all`] achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    /// The uid the process runs as now.
    pub uid: u32,
    /// The gid the process runs as now.
    pub gid: u32,
    /// It switched from root to this uid/gid.
    pub switched: bool,
    /// The capability bounding set was emptied (needs `CAP_SETPCAP`, so
    /// only when started as root; `no_new_privs` makes it moot otherwise).
    pub bounding_emptied: bool,
}

fn check(rc: libc::c_int, what: &str) -> io::Result<()> {
    if rc < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    Ok(())
}

/// The highest capability number the kernel knows.
fn last_capability() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(63)
}

/// `capset` with every set empty.
fn clear_capability_sets() -> io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capset reads one header and two data structs (version 3),
    // all valid for the call.
    let rc = unsafe { libc::syscall(libc::SYS_capset, std::ptr::addr_of!(header), data.as_ptr()) };
    check(rc as libc::c_int, "capset")
}

/// Drops every privilege; when running as root and `user` is given,
/// switches to it first, with `groups` as its only supplementary groups
/// besides its own gid.
pub fn drop_all(user: Option<Identity>, groups: &[u32]) -> io::Result<Dropped> {
    // SAFETY: plain credential queries.
    let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let root = euid == 0;
    let mut bounding_emptied = false;
    if root {
        for cap in 0..=last_capability() {
            // SAFETY: prctl with integer arguments.
            let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
            if rc < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
                check(rc, "dropping the capability bounding set")?;
            }
        }
        bounding_emptied = true;
    }
    // SAFETY: prctl with integer arguments; EINVAL on kernels without
    // ambient capabilities is fine (there are none to clear).
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    let (mut uid, mut gid, mut switched) = (euid, egid, false);
    if let (true, Some(to)) = (root, user) {
        let mut groups: Vec<libc::gid_t> = groups.to_vec();
        groups.push(to.gid);
        groups.sort_unstable();
        groups.dedup();
        // SAFETY: setgroups reads `groups`, valid for its length.
        let rc = unsafe { libc::setgroups(groups.len(), groups.as_ptr()) };
        check(rc, "setgroups")?;
        // SAFETY: credential changes with integer arguments.
        let rc = unsafe { libc::setresgid(to.gid, to.gid, to.gid) };
        check(rc, "setresgid")?;
        // SAFETY: as above.
        let rc = unsafe { libc::setresuid(to.uid, to.uid, to.uid) };
        check(rc, "setresuid")?;
        // SAFETY: plain credential query.
        let (now_uid, now_gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        if now_uid != to.uid || now_gid != to.gid {
            return Err(io::Error::other(format!(
                "still uid {now_uid} gid {now_gid} after switching to {}:{}",
                to.uid, to.gid
            )));
        }
        (uid, gid, switched) = (to.uid, to.gid, true);
    }
    clear_capability_sets()?;
    // SAFETY: prctl with integer arguments.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    check(rc, "no_new_privs")?;
    // Not dumpable: no core file of guest memory, no ptrace by other
    // processes of the same uid.
    // SAFETY: prctl with integer arguments.
    let rc = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    check(rc, "dumpable")?;
    Ok(Dropped {
        uid,
        gid,
        switched,
        bounding_emptied,
    })
}

/// The calling thread's capability sets `(effective, permitted,
/// inheritable)`, 64 bits each.
pub fn current_capabilities() -> io::Result<(u64, u64, u64)> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut header = Header {
        version: 0x2008_0522,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget writes one header and two data structs, all valid.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_capget,
            std::ptr::addr_of_mut!(header),
            data.as_mut_ptr(),
        )
    };
    check(rc as libc::c_int, "capget")?;
    let join = |lo: u32, hi: u32| u64::from(lo) | (u64::from(hi) << 32);
    Ok((
        join(data[0].effective, data[1].effective),
        join(data[0].permitted, data[1].permitted),
        join(data[0].inheritable, data[1].inheritable),
    ))
}
