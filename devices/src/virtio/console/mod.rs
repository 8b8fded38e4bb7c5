//! virtio-console: one port, the guest's `hvc0`.
//!
//! Two queues, no `VIRTIO_CONSOLE_F_MULTIPORT` (so no control queues):
//! `receiveq` (0) carries device-writable buffers the guest posts for host
//! input, `transmitq` (1) carries device-readable buffers with guest output.
//! The guest's stock `virtio_console` driver (built into Debian's kernel)
//! registers the port as `hvc0`, so `console=hvc0` works.
//!
//! Where the bytes go is a [`ConsoleBackend`]:
//!
//! * an output writer (a file, a sink), optionally with an input file
//!   descriptor (the VMM's stdout and stdin);
//! * a unix stream socket the VMM listens on: one client at a time gets the
//!   console, a newer client replaces the older one, and output with no
//!   client connected is dropped.
//!
//! Flow control:
//!
//! * Output never waits for the host: Linux's `hvc` path spins (with
//!   spinlocks held) until the device returns each transmit buffer, so the
//!   worker returns every transmit chain at once. A unix client that does
//!   not read gets at most [`MAX_CLIENT_BACKLOG`] bytes buffered; beyond
//!   that its output is dropped.
//! * Input the guest has no receive buffers for is kept, up to
//!   [`MAX_PENDING_INPUT`] bytes; while that is full the worker stops
//!   reading its input source (the host side sees backpressure), and nothing
//!   is lost.

mod backend;
mod device;
mod worker;

pub use backend::ConsoleBackend;
pub use device::Console;

/// Entry points for the fuzz targets in `fuzz/` (not a stable API): the
/// worker's queue processing without its thread and epoll loop.
#[doc(hidden)]
pub mod fuzzing {
    pub use super::backend::InputQueue;
    pub use super::worker::{ConsoleWorker, Port};
}

/// Size of each queue.
pub const QUEUE_SIZE: u16 = 128;
/// Index of the receive queue (host to guest).
pub const RX_QUEUE: usize = 0;
/// Index of the transmit queue (guest to host).
pub const TX_QUEUE: usize = 1;
/// Feature bit: `cols` and `rows` in the configuration space are valid.
pub const VIRTIO_CONSOLE_F_SIZE: u64 = 1 << 0;
/// Host input kept for the guest while it has no receive buffers.
pub const MAX_PENDING_INPUT: usize = 64 * 1024;
/// Most bytes taken from one transmit chain; the rest of a larger chain is
/// dropped (Linux sends at most one page per buffer).
pub const MAX_TX_CHAIN_BYTES: usize = 256 * 1024;
/// Output buffered for a unix client that is not reading; more is dropped.
pub const MAX_CLIENT_BACKLOG: usize = 64 * 1024;

/// Test fakes of the console's tests, also used by `legacy::serial`'s.
#[cfg(test)]
pub(crate) mod test_support {
    use std::fs::File;
    use std::io::{self, Write};
    use std::os::fd::FromRawFd;
    use std::sync::{Arc, Mutex};

    /// A pipe as (read end, write end).
    pub fn pipe() -> (File, File) {
        let mut fds = [0; 2];
        // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
        assert_eq!(rc, 0, "pipe2: {}", io::Error::last_os_error());
        // SAFETY: pipe2 succeeded, so both descriptors are open and owned by
        // nobody else.
        unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) }
    }

    /// A writer whose bytes the test can look at.
    #[derive(Clone, Default)]
    pub struct SharedBuf(pub Arc<Mutex<Vec<u8>>>);

    impl SharedBuf {
        /// Everything written so far.
        pub fn contents(&self) -> Vec<u8> {
            self.0.lock().unwrap().clone()
        }
    }

    impl Write for SharedBuf {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
}
