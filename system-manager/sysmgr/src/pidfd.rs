//! Process handles that cannot point at a later process that got the same
//! pid: `pidfd_open(2)` while the process is known to be the one meant,
//! `pidfd_send_signal(2)` to signal it. A VMM is never killed by a bare
//! pid (`docs/system-manager.md`, "VMM link").

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// A pidfd: one process, for as long as this handle lives (a signal to
/// a process that has ended fails with `ESRCH`; it never reaches another).
#[derive(Debug)]
pub struct PidFd {
    fd: OwnedFd,
    pid: u32,
}

impl PidFd {
    /// A pidfd for `pid`. The caller must know that `pid` is the process
    /// it means at this moment: its own child that it has not reaped, or
    /// a peer that answers on a connection after this call.
    pub fn open(pid: u32) -> io::Result<PidFd> {
        let p =
            libc::pid_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
        if p <= 0 {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        // SAFETY: pidfd_open takes a pid and flags and returns a new
        // descriptor (or -1); no memory is passed.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, p, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = i32::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
        // SAFETY: the kernel just gave us this descriptor; nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(PidFd { fd, pid })
    }

    /// A pidfd another process passed to this one (`SCM_RIGHTS`), with its
    /// pid read from `/proc/self/fdinfo`. Fails for a descriptor that is
    /// not a pidfd (no `Pid:` line there; nor could a signal go through
    /// it), and with `ESRCH` for a process that has ended (`Pid: -1`) or
    /// that this pid namespace does not see (`Pid: 0`).
    pub fn from_received(fd: OwnedFd) -> io::Result<PidFd> {
        // At most 4 KiB: `Pid:` is near the top of a pidfd's fdinfo, and
        // another kind of descriptor (an epoll set with many entries) may
        // have a long one.
        let mut info = String::new();
        std::io::Read::read_to_string(
            &mut std::io::Read::take(
                std::fs::File::open(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))?,
                4096,
            ),
            &mut info,
        )?;
        let pid = info
            .lines()
            .find_map(|l| l.strip_prefix("Pid:"))
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a pidfd"))?;
        let pid: i64 = pid.trim().parse().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "a pidfd's pid that is no number",
            )
        })?;
        let pid = u32::try_from(pid)
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ESRCH))?;
        Ok(PidFd { fd, pid })
    }

    /// The pid it was opened for (for messages).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends `SIGKILL`.
    pub fn kill(&self) -> io::Result<()> {
        self.signal(libc::SIGKILL)
    }

    /// Waits until the process has ended: the pidfd turns readable once
    /// the process has exited (its files closed, its memory released),
    /// whether or not its parent has reaped it yet. For a process that is
    /// not this one's child, that is all that can be seen of its end.
    pub async fn exited(&self) -> io::Result<()> {
        let dup = self.fd.try_clone()?;
        // SAFETY: `dup` is an open descriptor that the AsyncFd owns, so it
        // stays open, and the same, until the AsyncFd is dropped.
        let fd = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(dup, tokio::io::Interest::READABLE)
        }?;
        let _ready = fd.readable().await?;
        Ok(())
    }

    fn signal(&self, signal: libc::c_int) -> io::Result<()> {
        // SAFETY: pidfd_send_signal with our descriptor, a constant signal,
        // no siginfo (NULL) and no flags.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl AsFd for PidFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pidfd_kills_its_process_and_not_a_later_one() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep runs");
        let fd = PidFd::open(child.id()).expect("pidfd_open");
        assert_eq!(fd.pid(), child.id());
        fd.kill().expect("killed");
        let status = child.wait().expect("reaped");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        // Reaped: whatever has that pid now, the pidfd does not reach it.
        let e = fd.kill().expect_err("the process is gone");
        assert_eq!(e.raw_os_error(), Some(libc::ESRCH));
        assert!(PidFd::open(0).is_err());
    }

    #[test]
    fn a_received_pidfd_names_its_process_until_it_ends() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep runs");
        let fd = PidFd::open(child.id()).expect("pidfd_open");
        let copy = fd.as_fd().try_clone_to_owned().unwrap();
        let received = PidFd::from_received(copy).expect("a pidfd");
        assert_eq!(received.pid(), child.id());
        received.kill().expect("killed");
        child.wait().expect("reaped");
        let copy = fd.as_fd().try_clone_to_owned().unwrap();
        let e = PidFd::from_received(copy).expect_err("ended");
        assert_eq!(e.raw_os_error(), Some(libc::ESRCH));
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let e = PidFd::from_received(OwnedFd::from(a)).expect_err("a socket");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_pidfd_tells_when_its_process_has_ended() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep runs");
        let fd = PidFd::open(child.id()).expect("pidfd_open");
        let short = std::time::Duration::from_millis(200);
        assert!(
            tokio::time::timeout(short, fd.exited()).await.is_err(),
            "a running process has not ended"
        );
        fd.kill().expect("killed");
        // Ended before it is reaped, and after.
        let long = std::time::Duration::from_secs(30);
        tokio::time::timeout(long, fd.exited())
            .await
            .expect("the killed process ended")
            .expect("watched");
        child.wait().expect("reaped");
        tokio::time::timeout(long, fd.exited())
            .await
            .expect("the reaped process ended")
            .expect("watched");
    }
}
