//! The file-descriptor limit the VMM needs, raised at start.
//!
//! A guest may hold up to [`MAX_HOST_FDS`] host sockets through its vsock
//! device (one per connection). With the usual soft `RLIMIT_NOFILE` of
//! 1024 it could exhaust the VMM's descriptors that way, and then every
//! `accept`, disk reopen or control connection of the VMM would fail with
//! `EMFILE`. So the VMM raises its soft limit to [`FD_LIMIT`] (and its hard
//! limit too when it may) before it builds the VM.
//!
//! `vmm adb-proxy` sizes its own limit from `--max-connections`
//! (`vsock_proxy`) with [`fd_limits`] and [`set_soft_fd_limit`].

use devices::virtio::vsock::MAX_HOST_FDS;

/// Descriptors besides a vsock device's: KVM (VM, one per vCPU), disks,
/// taps, eventfds (a few per virtio queue), epoll sets, control
/// connections, the console.
pub const OTHER_FDS: u64 = 1024;

/// The soft `RLIMIT_NOFILE` the VMM runs with.
pub const FD_LIMIT: u64 = MAX_HOST_FDS as u64 + OTHER_FDS;

/// What [`raise_fd_limit`] achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimit {
    /// The soft limit before.
    pub before: u64,
    /// The soft limit now.
    pub now: u64,
}

/// The limit to set given the current `(soft, hard)`: at least `want`,
/// never lower than it was; `None` if nothing changes.
fn wanted(soft: u64, hard: u64, want: u64, may_raise_hard: bool) -> Option<(u64, u64)> {
    if soft >= want {
        return None;
    }
    if hard >= want {
        return Some((want, hard));
    }
    if may_raise_hard {
        return Some((want, want));
    }
    (hard > soft).then_some((hard, hard))
}

/// Raises the soft `RLIMIT_NOFILE` to [`FD_LIMIT`] (the hard limit as well
/// when the process may, e.g. as root). Errors only when the limit cannot
/// be read; a limit that stays too low is reported in the result.
pub fn raise_fd_limit() -> std::io::Result<FdLimit> {
    let (before, max) = fd_limits()?;
    let Some((soft, hard)) = wanted(before, max, FD_LIMIT, true) else {
        return Ok(FdLimit {
            before,
            now: before,
        });
    };
    for (soft, hard) in [(soft, hard), (max.min(soft), max)] {
        if set_fd_limit(soft, hard).is_ok() {
            return Ok(FdLimit { before, now: soft });
        }
        // Not allowed to raise the hard limit: try within it.
    }
    Ok(FdLimit {
        before,
        now: before,
    })
}

/// The current `(soft, hard)` `RLIMIT_NOFILE`.
pub fn fd_limits() -> std::io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into `limit`, which outlives the
    // call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((limit.rlim_cur, limit.rlim_max))
}

/// Sets the soft `RLIMIT_NOFILE` to `soft` (at most `hard`) and keeps the
/// hard limit `hard` (as [`fd_limits`] read it).
pub fn set_soft_fd_limit(soft: u64, hard: u64) -> std::io::Result<()> {
    set_fd_limit(soft.min(hard), hard)
}

/// Sets `RLIMIT_NOFILE` to `(soft, hard)`.
fn set_fd_limit(soft: u64, hard: u64) -> std::io::Result<()> {
    let new = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: setrlimit reads one rlimit from `new`, which outlives the
    // call.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Raises the limit and logs what happened (a warning if it stays below
/// what a vsock device may use).
pub fn raise_fd_limit_or_warn() {
    match raise_fd_limit() {
        Ok(FdLimit { now, .. }) if now >= FD_LIMIT => {
            tracing::debug!("RLIMIT_NOFILE: {now}");
        }
        Ok(FdLimit { now, .. }) => tracing::warn!(
            "RLIMIT_NOFILE stays at {now}, below the {FD_LIMIT} a guest's vsock connections may need; raise the hard limit (ulimit -Hn) for this VMM"
        ),
        Err(e) => tracing::warn!("cannot read RLIMIT_NOFILE: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_is_above_what_vsock_may_hold() {
        assert!(FD_LIMIT > MAX_HOST_FDS as u64 + 100);
    }

    #[test]
    fn wanted_limits() {
        assert_eq!(wanted(4096, 4096, 2000, false), None);
        assert_eq!(wanted(1024, 524_288, 2000, false), Some((2000, 524_288)));
        assert_eq!(wanted(1024, 1500, 2000, true), Some((2000, 2000)));
        assert_eq!(wanted(1024, 1500, 2000, false), Some((1500, 1500)));
        assert_eq!(wanted(1024, 1024, 2000, false), None);
    }

    #[test]
    fn raising_reaches_the_limit_or_keeps_what_was_there() {
        let got = raise_fd_limit().unwrap();
        assert!(got.now >= got.before);
        assert!(got.now >= FD_LIMIT || got.now == got.before);
    }
}
