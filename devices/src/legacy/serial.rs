//! 16550A UART (COM1), backed by vm-superio, with its interrupt on an irqfd.
//!
//! Guest output never blocks a vCPU: the UART's transmit register is
//! written on the vCPU thread, so the bytes go into a bounded buffer
//! ([`OUTPUT_BUFFER`] bytes) that a writer thread (`serial-out`) drains
//! to the real output (stdout, a file). When the output is slower than the
//! guest and the buffer is full, further bytes are dropped and counted; the
//! writer logs how many (rate-limited). A guest printing in a loop to a
//! stdout nobody reads therefore costs at most the buffer, never a stalled
//! `KVM_RUN`. At the end of a boot the VMM waits a bounded time for the
//! buffer to drain ([`SerialDevice::flush_output`]), so a guest's last
//! lines before poweroff still reach the output.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use vm_superio::serial::NoEvents;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use crate::bus::BusDevice;

/// Guest output buffered for a slow output, in bytes.
pub const OUTPUT_BUFFER: usize = 256 * 1024;
/// Most bytes the writer thread takes from the buffer per write.
const WRITE_CHUNK: usize = 64 * 1024;

/// An [`EventFd`] that raises a guest interrupt when written (it is
/// registered with KVM as an irqfd).
pub struct EventFdTrigger(pub EventFd);

impl Trigger for EventFdTrigger {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

#[derive(Default)]
struct OutputState {
    buffer: VecDeque<u8>,
    /// Bytes dropped since the writer last reported.
    dropped: u64,
    /// Bytes dropped in all.
    dropped_total: u64,
    /// The writer thread is writing a chunk it took.
    writing: bool,
    /// No more output will come: the writer ends once the buffer is empty.
    closed: bool,
}

struct OutputShared {
    state: Mutex<OutputState>,
    /// Signalled when bytes arrive or the output closes.
    more: Condvar,
    /// Signalled when the writer finished a chunk.
    written: Condvar,
}

impl OutputShared {
    fn lock(&self) -> MutexGuard<'_, OutputState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The UART's side of the output: a `Write` that only ever copies into the
/// bounded buffer (dropping what does not fit) and never blocks.
#[derive(Clone)]
pub struct NonBlockingOutput {
    shared: Arc<OutputShared>,
    capacity: usize,
}

impl NonBlockingOutput {
    /// Starts a writer thread that drains the buffer (at most `capacity`
    /// bytes) into `out`. If the thread cannot start, output is dropped
    /// (and counted).
    pub fn new(out: Box<dyn Write + Send>, capacity: usize) -> Self {
        let shared = Arc::new(OutputShared {
            state: Mutex::new(OutputState::default()),
            more: Condvar::new(),
            written: Condvar::new(),
        });
        let thread_shared = shared.clone();
        // Through the sandbox: confined to the serial-out class's filter.
        let spawned = sandbox::thread::spawn("serial-out", move || drain(&thread_shared, out));
        if let Err(e) = spawned {
            tracing::warn!("serial output is dropped: cannot start its writer thread: {e}");
            shared.lock().closed = true;
        }
        Self { shared, capacity }
    }

    /// Bytes dropped so far because the buffer was full.
    pub fn dropped_total(&self) -> u64 {
        self.shared.lock().dropped_total
    }

    /// Waits until everything buffered was written, or `timeout`; returns
    /// whether the buffer drained.
    pub fn flush_within(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        while !state.buffer.is_empty() || state.writing {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = self
                .shared
                .written
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }

    /// No more output: the writer thread ends once the buffer is written.
    pub fn close(&self) {
        self.shared.lock().closed = true;
        self.shared.more.notify_all();
    }
}

impl Write for NonBlockingOutput {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut state = self.shared.lock();
        let room = self.capacity.saturating_sub(state.buffer.len());
        let taken = if state.closed {
            0
        } else {
            room.min(data.len())
        };
        state.buffer.extend(&data[..taken]);
        let dropped = (data.len() - taken) as u64;
        state.dropped += dropped;
        state.dropped_total += dropped;
        drop(state);
        if taken > 0 {
            self.shared.more.notify_one();
        }
        // Everything is "written": the guest's UART never sees back-pressure.
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The writer thread: writes the buffer to `out` chunk by chunk until the
/// output is closed and empty.
fn drain(shared: &OutputShared, mut out: Box<dyn Write + Send>) {
    let mut chunk = Vec::with_capacity(WRITE_CHUNK);
    loop {
        let mut state = shared.lock();
        while state.buffer.is_empty() && !state.closed {
            state = shared.more.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        if state.buffer.is_empty() {
            return;
        }
        let n = state.buffer.len().min(WRITE_CHUNK);
        chunk.clear();
        chunk.extend(state.buffer.drain(..n));
        state.writing = true;
        let dropped = std::mem::take(&mut state.dropped);
        drop(state);
        if dropped > 0 {
            crate::guest_warn!(
                "serial: {dropped} bytes of guest output dropped: the output is slower than the guest"
            );
        }
        let result = out.write_all(&chunk).and_then(|()| out.flush());
        if let Err(e) = result {
            crate::guest_warn!("serial: cannot write guest output, {n} bytes lost: {e}");
        }
        shared.lock().writing = false;
        shared.written.notify_all();
    }
}

/// The guest's serial console.
pub struct SerialDevice {
    serial: Serial<EventFdTrigger, NoEvents, NonBlockingOutput>,
    output: NonBlockingOutput,
}

impl SerialDevice {
    /// Creates a UART that writes guest output to `out` (through a bounded
    /// buffer and a writer thread, see the module docs) and signals `irq`.
    pub fn new(irq: EventFd, out: Box<dyn Write + Send>) -> Self {
        let output = NonBlockingOutput::new(out, OUTPUT_BUFFER);
        Self {
            serial: Serial::new(EventFdTrigger(irq), output.clone()),
            output,
        }
    }

    /// Waits at most `timeout` for buffered output to be written; returns
    /// whether everything was.
    pub fn flush_output(&self, timeout: Duration) -> bool {
        self.output.flush_within(timeout)
    }

    /// Queues host input for the guest; returns how many bytes fit in the
    /// receive FIFO (the rest must be offered again later).
    pub fn enqueue_input(&mut self, input: &[u8]) -> usize {
        let room = self.serial.fifo_capacity().min(input.len());
        if room == 0 {
            return 0;
        }
        match self.serial.enqueue_raw_bytes(&input[..room]) {
            Ok(n) => n,
            Err(e) => {
                crate::guest_warn!("serial input dropped: {e:?}");
                0
            }
        }
    }
}

impl Drop for SerialDevice {
    fn drop(&mut self) {
        // The writer thread writes what is left and ends.
        self.output.close();
    }
}

impl BusDevice for SerialDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        // The UART has 8 one-byte registers; wider or out-of-range accesses
        // read as all ones, like an empty ISA bus.
        match (u8::try_from(offset), data.len()) {
            (Ok(reg @ 0..=7), 1) => data[0] = self.serial.read(reg),
            _ => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let (Ok(reg @ 0..=7), [value]) = (u8::try_from(offset), data) {
            if let Err(e) = self.serial.write(reg, *value) {
                crate::guest_warn!("serial write failed: {e:?}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::virtio::console::test_support::SharedBuf;

    #[test]
    fn transmits_bytes_and_receives_input_with_interrupt() {
        let out = SharedBuf::default();
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let irq_probe = irq.try_clone().unwrap();
        let mut dev = SerialDevice::new(irq, Box::new(out.clone()));
        for b in b"hi" {
            dev.write(0, &[*b]);
        }
        assert!(dev.flush_output(Duration::from_secs(5)));
        assert_eq!(&*out.0.lock().unwrap(), b"hi");

        // Enable the "received data available" interrupt, then feed input.
        dev.write(1, &[0x01]);
        assert_eq!(dev.enqueue_input(b"ok"), 2);
        assert!(irq_probe.read().unwrap() >= 1);
        let mut byte = [0u8];
        dev.read(0, &mut byte);
        assert_eq!(byte, [b'o']);
    }

    #[test]
    fn odd_accesses_are_harmless() {
        let mut dev = SerialDevice::new(
            EventFd::new(libc::EFD_NONBLOCK).unwrap(),
            Box::new(SharedBuf::default()),
        );
        let mut wide = [0u8; 4];
        dev.read(0, &mut wide);
        assert_eq!(wide, [0xff; 4]);
        dev.write(9, &[1]);
        dev.write(0, &[1, 2]);
        let mut one = [0u8];
        dev.read(1000, &mut one);
        assert_eq!(one, [0xff]);
    }

    /// An output that blocks until the test lets it go.
    struct Blocking {
        gate: Arc<(Mutex<bool>, Condvar)>,
        out: SharedBuf,
    }

    impl Write for Blocking {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let (open, cv) = &*self.gate;
            let mut guard = open.lock().unwrap();
            while !*guard {
                guard = cv.wait(guard).unwrap();
            }
            self.out.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_blocked_output_never_blocks_the_guest_and_drops_with_a_count() {
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let out = SharedBuf::default();
        let mut dev = SerialDevice::new(
            EventFd::new(libc::EFD_NONBLOCK).unwrap(),
            Box::new(Blocking {
                gate: gate.clone(),
                out: out.clone(),
            }),
        );
        // Four times the buffer, written as a vCPU would, byte by byte,
        // while the output does not move: this must finish at once.
        let started = Instant::now();
        let total = 4 * OUTPUT_BUFFER;
        for i in 0..total {
            dev.write(0, &[b'a' + (i % 26) as u8]);
        }
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(!dev.flush_output(Duration::from_millis(50)));
        let dropped = dev.output.dropped_total();
        assert!(
            dropped >= (total - OUTPUT_BUFFER - WRITE_CHUNK) as u64,
            "{dropped}"
        );
        // Let the output go: what was kept arrives, in order, from the start.
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        assert!(dev.flush_output(Duration::from_secs(10)));
        let got = out.0.lock().unwrap().clone();
        assert_eq!(got.len() as u64 + dropped, total as u64);
        assert!(got
            .iter()
            .enumerate()
            .all(|(i, b)| *b == b'a' + (i % 26) as u8));
    }

    #[test]
    fn output_left_at_drop_is_still_written() {
        let out = SharedBuf::default();
        let mut dev = SerialDevice::new(
            EventFd::new(libc::EFD_NONBLOCK).unwrap(),
            Box::new(out.clone()),
        );
        for b in b"last words" {
            dev.write(0, &[*b]);
        }
        let output = dev.output.clone();
        drop(dev);
        assert!(output.flush_within(Duration::from_secs(5)));
        assert_eq!(&*out.0.lock().unwrap(), b"last words");
    }
}
