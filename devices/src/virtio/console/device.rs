//! The virtio-console device: configuration space, features, and how its
//! worker starts.

use super::backend::{ConsoleBackend, InputQueue};
use super::worker::{ConsoleWorker, Port};
use super::{QUEUE_SIZE, VIRTIO_CONSOLE_F_SIZE};
use crate::virtio::{
    device_type, read_config_bytes, ActivateContext, ActivateError, Activation, Lifecycle,
    VirtioDevice,
};

/// A virtio console with one port (`hvc0` in the guest). The host side
/// (backend and undelivered input) lives in the [`Port`], which the worker
/// owns while active and hands back on reset.
pub struct Console {
    lifecycle: Lifecycle<ConsoleWorker>,
    /// Terminal size reported with `VIRTIO_CONSOLE_F_SIZE`, if known.
    size: Option<(u16, u16)>,
}

impl Console {
    /// Creates an inactive console on `backend`.
    pub fn new(backend: ConsoleBackend) -> Self {
        Self {
            lifecycle: Lifecycle::new(Box::new(Port {
                backend,
                pending: InputQueue::default(),
                wakeups: 0,
            })),
            size: None,
        }
    }

    /// Reports a terminal of `cols` x `rows` to the guest
    /// (`VIRTIO_CONSOLE_F_SIZE`).
    pub fn with_size(mut self, cols: u16, rows: u16) -> Self {
        self.size = Some((cols, rows));
        self
    }
}

impl VirtioDevice for Console {
    fn device_type(&self) -> u32 {
        device_type::CONSOLE
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        if self.size.is_some() {
            VIRTIO_CONSOLE_F_SIZE
        } else {
            0
        }
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // struct virtio_console_config { le16 cols; le16 rows;
        // le32 max_nr_ports; le32 emerg_wr; }
        let (cols, rows) = self.size.unwrap_or((0, 0));
        let mut config = [0u8; 12];
        config[0..2].copy_from_slice(&cols.to_le_bytes());
        config[2..4].copy_from_slice(&rows.to_le_bytes());
        config[4..8].copy_from_slice(&1u32.to_le_bytes());
        read_config_bytes(&config, offset, data);
    }

    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        self.lifecycle.activate(ctx, |act: Activation<2>, port| {
            Ok(ConsoleWorker::new(
                act.mem,
                act.interrupt,
                act.queues,
                *port,
            ))
        })
    }

    fn reset(&mut self) {
        self.lifecycle.reset();
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use std::path::PathBuf;
    use std::time::Duration;

    use vm_memory::{Bytes, GuestAddress};

    use super::*;
    use crate::virtio::console::test_support::{pipe, SharedBuf};
    use crate::virtio::console::{
        MAX_CLIENT_BACKLOG, MAX_PENDING_INPUT, MAX_TX_CHAIN_BYTES, RX_QUEUE, TX_QUEUE,
    };
    use crate::virtio::test_utils::{
        guest_memory, virtio_lifecycle_tests, DeviceHarness, LifecycleTest, DATA_START, PROBE_AREA,
        TEST_MEM_SIZE, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE,
    };
    use crate::virtio::GuestMemoryMmap;

    const RX: usize = RX_QUEUE;
    const TX: usize = TX_QUEUE;

    fn put(mem: &GuestMemoryMmap, addr: u64, data: &[u8]) {
        mem.write_slice(data, GuestAddress(addr)).unwrap();
    }

    /// A console whose output the test reads and whose input it writes.
    fn piped_console() -> (Console, SharedBuf, std::fs::File) {
        let out = SharedBuf::default();
        let (input, feed) = pipe();
        let console = Console::new(ConsoleBackend::stream(input, Box::new(out.clone())));
        (console, out, feed)
    }

    impl LifecycleTest for Console {
        /// The output the test reads, and the input pipe's write end.
        type Fixture = (SharedBuf, std::fs::File);

        fn create() -> (Self, Self::Fixture) {
            let (console, out, feed) = piped_console();
            (console, (out, feed))
        }

        fn is_active(&self) -> bool {
            self.lifecycle.is_active()
        }

        /// Writes one line; it must reach the backend.
        fn assert_serves((out, _feed): &mut Self::Fixture, h: &DeviceHarness) {
            let line = b"lifecycle probe\n";
            put(h.mem, PROBE_AREA, line);
            let head = h.post(TX, &[(PROBE_AREA, line.len() as u32, 0)]);
            assert_eq!(h.wait_for_head(TX, head), 0);
            assert!(out.contents().ends_with(line));
        }
    }

    virtio_lifecycle_tests!(Console);

    #[test]
    fn config_space_and_features() {
        let plain = Console::new(ConsoleBackend::output(Box::new(std::io::sink())));
        assert_eq!(plain.device_type(), device_type::CONSOLE);
        assert_eq!(plain.queue_max_sizes().len(), 2);
        assert_eq!(plain.features(), 0);
        let mut data = [0xffu8; 12];
        plain.read_config(0, &mut data);
        assert_eq!(data, [0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]);

        let sized =
            Console::new(ConsoleBackend::output(Box::new(std::io::sink()))).with_size(132, 43);
        assert_eq!(sized.features(), VIRTIO_CONSOLE_F_SIZE);
        let mut cols_rows = [0u8; 4];
        sized.read_config(0, &mut cols_rows);
        assert_eq!(cols_rows, [132, 0, 43, 0]);
        let mut rows = [0u8; 2];
        sized.read_config(2, &mut rows);
        assert_eq!(u16::from_le_bytes(rows), 43);
        let mut beyond = [0xffu8; 4];
        sized.read_config(12, &mut beyond);
        assert_eq!(beyond, [0; 4]);
    }

    #[test]
    fn guest_output_reaches_the_backend() {
        let mem = guest_memory();
        let (mut console, out, _feed) = piped_console();
        let h = DeviceHarness::activate(&mem, &mut console, 16);
        put(&mem, DATA_START, b"hello ");
        put(&mem, DATA_START + 0x1000, b"world\n");
        h.add_chain(TX, 0, &[(DATA_START, 6, 0), (DATA_START + 0x1000, 6, 0)]);
        h.wait_used(TX, 1);
        assert_eq!(h.used_elem(TX, 0), (0, 0), "transmit buffers are only read");
        assert_eq!(out.contents(), b"hello world\n");
        h.wait_used_interrupt();
        console.reset();
    }

    #[test]
    fn host_input_fills_receive_buffers() {
        let mem = guest_memory();
        let (mut console, _out, mut feed) = piped_console();
        let h = DeviceHarness::activate(&mem, &mut console, 16);
        h.add_chain(RX, 0, &[(DATA_START, 64, VRING_DESC_F_WRITE)]);
        feed.write_all(b"ls -l\n").unwrap();
        h.wait_used(RX, 1);
        assert_eq!(h.used_elem(RX, 0), (0, 6));
        assert_eq!(h.read(DATA_START, 6), b"ls -l\n");
        console.reset();
    }

    #[test]
    fn input_waits_for_buffers_and_spans_chains() {
        let mem = guest_memory();
        let (mut console, _out, mut feed) = piped_console();
        let h = DeviceHarness::activate(&mem, &mut console, 16);
        // Input before the guest posts any buffer is kept, not lost.
        feed.write_all(b"0123456789").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        h.add_chain(RX, 0, &[(DATA_START, 4, VRING_DESC_F_WRITE)]);
        h.wait_used(RX, 1);
        assert_eq!(h.used_elem(RX, 0), (0, 4));
        // A two-descriptor chain takes the rest, in order.
        h.add_chain(
            RX,
            1,
            &[
                (DATA_START + 0x1000, 2, VRING_DESC_F_WRITE),
                (DATA_START + 0x2000, 64, VRING_DESC_F_WRITE),
            ],
        );
        h.wait_used(RX, 2);
        assert_eq!(h.used_elem(RX, 1), (1, 6));
        assert_eq!(h.read(DATA_START, 4), b"0123");
        assert_eq!(h.read(DATA_START + 0x1000, 2), b"45");
        assert_eq!(h.read(DATA_START + 0x2000, 4), b"6789");
        // A buffer with no input waiting stays with the device.
        h.add_chain(RX, 3, &[(DATA_START + 0x3000, 64, VRING_DESC_F_WRITE)]);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(h.queues[RX].used().idx().load(), 2);
        feed.write_all(b"!").unwrap();
        h.wait_used(RX, 3);
        assert_eq!(h.used_elem(RX, 2), (3, 1));
        console.reset();
    }

    #[test]
    fn input_is_bounded_and_nothing_is_lost() {
        let mem = guest_memory();
        let (mut console, _out, mut feed) = piped_console();
        let h = DeviceHarness::activate(&mem, &mut console, 128);
        // More than the pipe (64 KiB) and the pending queue hold together.
        let total = 3 * MAX_PENDING_INPUT + 123;
        let data: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
        let expected = data.clone();
        let writer = std::thread::spawn(move || {
            feed.write_all(&data).unwrap();
        });
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            !writer.is_finished(),
            "the device read more than it can keep (unbounded input queue)"
        );
        // Now the guest posts enough buffers for everything, even if each
        // gets only one 4 KiB read (at most 62 chains: see
        // `DeviceHarness::add_raw_chain`).
        let chunk = 8192u32;
        let chains = 60u16;
        for i in 0..chains {
            let addr = DATA_START + u64::from(i) * u64::from(chunk);
            h.add_chain(RX, i, &[(addr, chunk, VRING_DESC_F_WRITE)]);
        }
        writer.join().unwrap();
        let mut received = Vec::new();
        let mut next = 0u16;
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while received.len() < total {
            assert!(
                std::time::Instant::now() < deadline,
                "only {} of {total} bytes arrived",
                received.len()
            );
            if h.queues[RX].used().idx().load() > next {
                let (id, len) = h.used_elem(RX, next);
                let addr = DATA_START + u64::from(id) * u64::from(chunk);
                received.extend(h.read(addr, len as usize));
                next += 1;
            } else {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        assert!(received == expected, "input arrived reordered or corrupted");
        console.reset();
    }

    /// The worker's wakeup count, read by stopping it.
    fn wakeups(console: &mut Console) -> u64 {
        console.reset();
        match console.lifecycle.backend_mut() {
            Some(port) => port.wakeups,
            None => panic!("console not inactive after reset"),
        }
    }

    #[test]
    fn no_spinning_while_input_waits_for_buffers() {
        let mem = guest_memory();
        let (mut console, _out, mut feed) = piped_console();
        let _h = DeviceHarness::activate(&mem, &mut console, 16);
        // Fill the pending queue and the pipe; the guest posts no buffers.
        let writer = std::thread::spawn(move || {
            let _ = feed.write_all(&vec![b'x'; 2 * MAX_PENDING_INPUT]);
            feed
        });
        std::thread::sleep(Duration::from_millis(400));
        let n = wakeups(&mut console);
        assert!(n < 200, "worker woke {n} times while it could do nothing");
        // Unblock the writer: drain the pipe.
        if let Some(port) = console.lifecycle.backend_mut() {
            assert_eq!(port.pending.len(), MAX_PENDING_INPUT);
        }
        drop(console);
        let _ = writer.join();
    }

    #[test]
    fn no_spinning_on_a_hung_up_unix_client_with_input_backed_up() {
        let dir = temp_dir("hup");
        let path = dir.join("console.sock");
        let mut console = Console::new(ConsoleBackend::unix(&path).unwrap());
        let mem = guest_memory();
        let _h = DeviceHarness::activate(&mem, &mut console, 16);
        {
            let mut c = connect(&path);
            c.set_nonblocking(true).unwrap();
            // More than the pending queue holds, then hang up.
            let data = vec![b'y'; 2 * MAX_PENDING_INPUT];
            let mut sent = 0;
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while sent < data.len() && std::time::Instant::now() < deadline {
                match c.write(&data[sent..]) {
                    Ok(n) => sent += n,
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            assert!(sent > MAX_PENDING_INPUT, "only {sent} bytes sent");
        }
        std::thread::sleep(Duration::from_millis(400));
        let n = wakeups(&mut console);
        assert!(n < 200, "worker woke {n} times while it could do nothing");
        drop(console);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn hostile_transmit_chains_are_dropped_and_the_device_keeps_serving() {
        let mem = guest_memory();
        let (mut console, out, _feed) = piped_console();
        let h = DeviceHarness::activate(&mem, &mut console, 16);
        put(&mem, DATA_START, b"SECRET");
        // Device-writable descriptor in the transmit queue.
        h.add_chain(TX, 0, &[(DATA_START, 6, VRING_DESC_F_WRITE)]);
        h.wait_used(TX, 1);
        assert_eq!(h.used_elem(TX, 0), (0, 0));
        // A good descriptor followed by a writable one: the whole chain goes.
        h.add_chain(
            TX,
            1,
            &[(DATA_START, 6, 0), (DATA_START, 6, VRING_DESC_F_WRITE)],
        );
        // Beyond guest memory, and straddling its end.
        h.add_chain(TX, 3, &[(TEST_MEM_SIZE as u64 + 0x1000, 6, 0)]);
        h.add_chain(TX, 4, &[(TEST_MEM_SIZE as u64 - 2, 6, 0)]);
        // A huge length.
        h.add_chain(TX, 5, &[(DATA_START, u32::MAX, 0)]);
        h.wait_used(TX, 5);
        assert_eq!(out.contents(), b"", "nothing from a bad chain is output");
        for i in 1..5 {
            assert_eq!(h.used_elem(TX, i).1, 0);
        }
        // A descriptor loop 6 -> 7 -> 6 ends (bounded by the queue size).
        h.add_raw_chain(
            TX,
            6,
            &[
                (DATA_START, 1, VRING_DESC_F_NEXT, 7),
                (DATA_START + 1, 1, VRING_DESC_F_NEXT, 6),
            ],
        );
        h.wait_used(TX, 6);
        assert!(
            out.contents().len() <= 16,
            "loop output bounded by the queue size"
        );
        let before = out.contents().len();
        // Oversize (inside guest memory): truncated.
        h.add_chain(TX, 8, &[(0, (MAX_TX_CHAIN_BYTES + 4096) as u32, 0)]);
        h.wait_used(TX, 7);
        assert_eq!(out.contents().len() - before, MAX_TX_CHAIN_BYTES);
        // Still serving.
        put(&mem, DATA_START + 0x1000, b"ok\n");
        h.add_chain(TX, 9, &[(DATA_START + 0x1000, 3, 0)]);
        h.wait_used(TX, 8);
        assert!(out.contents().ends_with(b"ok\n"));
        console.reset();
    }

    #[test]
    fn hostile_receive_chains_get_nothing_and_consume_no_input() {
        let mem = guest_memory();
        let (mut console, _out, mut feed) = piped_console();
        let h = DeviceHarness::activate(&mem, &mut console, 16);
        put(&mem, DATA_START, b"untouched");
        // Read-only buffer.
        h.add_chain(RX, 0, &[(DATA_START, 9, 0)]);
        // Writable then read-only.
        h.add_chain(
            RX,
            1,
            &[
                (DATA_START + 0x100, 4, VRING_DESC_F_WRITE),
                (DATA_START, 4, 0),
            ],
        );
        // Outside guest memory, straddling it, huge.
        h.add_chain(RX, 3, &[(TEST_MEM_SIZE as u64, 8, VRING_DESC_F_WRITE)]);
        h.add_chain(RX, 4, &[(TEST_MEM_SIZE as u64 - 4, 8, VRING_DESC_F_WRITE)]);
        h.add_chain(RX, 5, &[(DATA_START, u32::MAX, VRING_DESC_F_WRITE)]);
        // Then a good one.
        h.add_chain(RX, 6, &[(DATA_START + 0x1000, 16, VRING_DESC_F_WRITE)]);
        feed.write_all(b"input").unwrap();
        h.wait_used(RX, 6);
        for i in 0..5 {
            assert_eq!(h.used_elem(RX, i).1, 0, "bad chain {i} got bytes");
        }
        assert_eq!(h.read(DATA_START, 9), b"untouched");
        assert_eq!(h.read(DATA_START + 0x100, 4), [0; 4]);
        assert_eq!(h.used_elem(RX, 5), (6, 5));
        assert_eq!(h.read(DATA_START + 0x1000, 5), b"input");
        console.reset();
    }

    #[test]
    fn reset_keeps_the_backend_and_undelivered_input() {
        let mem = guest_memory();
        let (mut console, out, mut feed) = piped_console();
        let h = DeviceHarness::activate(&mem, &mut console, 16);
        feed.write_all(b"typed early").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        drop(h);
        console.reset();
        console.reset();
        let h = DeviceHarness::activate(&mem, &mut console, 16);
        h.add_chain(RX, 0, &[(DATA_START, 64, VRING_DESC_F_WRITE)]);
        h.wait_used(RX, 1);
        assert_eq!(h.used_elem(RX, 0), (0, 11));
        assert_eq!(h.read(DATA_START, 11), b"typed early");
        put(&mem, DATA_START + 0x1000, b"again");
        h.add_chain(TX, 0, &[(DATA_START + 0x1000, 5, 0)]);
        h.wait_used(TX, 1);
        assert_eq!(out.contents(), b"again");
        console.reset();
    }

    #[test]
    fn unpollable_input_is_read_when_there_is_room() {
        // A regular file (epoll refuses it) as input, like `< file`.
        let dir = temp_dir("file-input");
        let path = dir.join("input");
        std::fs::write(&path, b"from a file").unwrap();
        let input = std::fs::File::open(&path).unwrap();
        let mut console = Console::new(ConsoleBackend::stream(input, Box::new(std::io::sink())));
        let mem = guest_memory();
        let h = DeviceHarness::activate(&mem, &mut console, 16);
        h.add_chain(RX, 0, &[(DATA_START, 4, VRING_DESC_F_WRITE)]);
        h.wait_used(RX, 1);
        h.add_chain(RX, 1, &[(DATA_START + 4, 64, VRING_DESC_F_WRITE)]);
        h.wait_used(RX, 2);
        assert_eq!(h.used_elem(RX, 1), (1, 7));
        assert_eq!(h.read(DATA_START, 11), b"from a file");
        console.reset();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unix_socket_serves_one_client_and_a_new_one_replaces_it() {
        let dir = temp_dir("unix");
        let path = dir.join("console.sock");
        let mut console = Console::new(ConsoleBackend::unix(&path).unwrap());
        let mem = guest_memory();
        let h = DeviceHarness::activate(&mem, &mut console, 16);

        // Output with nobody connected is dropped and does not block.
        put(&mem, DATA_START, b"lost");
        h.add_chain(TX, 0, &[(DATA_START, 4, 0)]);
        h.wait_used(TX, 1);

        // First client: its input reaches the guest (which also proves it
        // was accepted), then guest output reaches it.
        let mut a = connect(&path);
        a.write_all(b"from a\n").unwrap();
        h.add_chain(RX, 0, &[(DATA_START + 0x1000, 64, VRING_DESC_F_WRITE)]);
        h.wait_used(RX, 1);
        assert_eq!(h.used_elem(RX, 0), (0, 7));
        assert_eq!(h.read(DATA_START + 0x1000, 7), b"from a\n");
        put(&mem, DATA_START, b"to a\n");
        h.add_chain(TX, 1, &[(DATA_START, 5, 0)]);
        h.wait_used(TX, 2);
        assert_eq!(read_n(&mut a, 5), b"to a\n");

        // Second client replaces the first: the first sees end of file.
        let mut b = connect(&path);
        b.write_all(b"from b\n").unwrap();
        h.add_chain(RX, 1, &[(DATA_START + 0x2000, 64, VRING_DESC_F_WRITE)]);
        h.wait_used(RX, 2);
        assert_eq!(h.read(DATA_START + 0x2000, 7), b"from b\n");
        let mut rest = Vec::new();
        a.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "the replaced client got {rest:?}");
        put(&mem, DATA_START, b"to b\n");
        h.add_chain(TX, 2, &[(DATA_START, 5, 0)]);
        h.wait_used(TX, 3);
        assert_eq!(read_n(&mut b, 5), b"to b\n");

        // A client that half-closes still gets output.
        b.shutdown(std::net::Shutdown::Write).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        put(&mem, DATA_START, b"still b\n");
        h.add_chain(TX, 3, &[(DATA_START, 8, 0)]);
        h.wait_used(TX, 4);
        assert_eq!(read_n(&mut b, 8), b"still b\n");

        // After it goes away, output is dropped again without blocking.
        drop(b);
        for i in 4..8u16 {
            h.add_chain(TX, i, &[(DATA_START, 8, 0)]);
        }
        h.wait_used(TX, 8);
        console.reset();
        drop(console);
        assert!(!path.exists(), "socket file removed with the console");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unix_client_that_does_not_read_never_blocks_the_guest() {
        let dir = temp_dir("stalled");
        let path = dir.join("console.sock");
        let mut console = Console::new(ConsoleBackend::unix(&path).unwrap());
        let mem = guest_memory();
        let h = DeviceHarness::activate(&mem, &mut console, 16);
        let mut c = connect(&path);
        c.write_all(b"x").unwrap();
        h.add_chain(RX, 0, &[(DATA_START, 8, VRING_DESC_F_WRITE)]);
        h.wait_used(RX, 1);
        // Far more output than the socket buffer and the backlog hold.
        let chain = 128 * 1024u32;
        let chains = 8u16;
        for i in 0..chains {
            h.add_chain(TX, i, &[(0, chain, 0)]);
        }
        h.wait_used(TX, chains);
        // The client gets what was buffered, not everything.
        c.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut got = 0usize;
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = c.read(&mut buf) {
            if n == 0 {
                break;
            }
            got += n;
        }
        let sent = chain as usize * usize::from(chains);
        assert!(got >= MAX_CLIENT_BACKLOG, "client got only {got} bytes");
        assert!(got < sent, "nothing was dropped ({got} of {sent})");
        console.reset();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn temp_dir(what: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("vmstack-console-{what}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn connect(path: &std::path::Path) -> UnixStream {
        let s = UnixStream::connect(path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    }

    fn read_n(s: &mut UnixStream, n: usize) -> Vec<u8> {
        let mut buf = vec![0u8; n];
        s.read_exact(&mut buf).unwrap();
        buf
    }
}
