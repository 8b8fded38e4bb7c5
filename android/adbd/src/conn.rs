//! The I/O shell around [`adbd::session::Session`]: one reader thread per
//! connection reads packets (header first: its checks bound the payload
//! read), feeds the session and starts services; each service owns a
//! [`StreamIo`] whose calls block on the session's flow control.
//!
//! One mutex guards the session, one condition variable wakes the
//! services when it changed, a second mutex serialises writes to the
//! socket. A protocol error, EOF or a socket error shuts the session down:
//! every service then sees its stream closed, and the socket is shut down
//! so a blocked writer fails too.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use adbd::packet::{Header, Packet, HEADER_LEN, MAX_PAYLOAD};
use adbd::service::Service;
use adbd::session::{Inbound, Session, WriteError};
use tracing::{debug, info, warn};

/// How long a client may take to send its `CNXN`.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Payload buffers a connection keeps for reuse once a service is done
/// with them.
const SPARE_BUFFERS: usize = 2;
/// Payloads from this size on are read into a reused buffer (smaller ones
/// come from malloc's heap, which reuses memory by itself).
const REUSE_FROM: usize = 64 * 1024;
/// Largest buffer kept for reuse (a decoder that appended to a payload
/// may have grown it; such a rare one is freed).
const REUSE_MAX_CAPACITY: usize = MAX_PAYLOAD as usize + 64 * 1024;
/// `SO_RCVLOWAT` while the rest of a payload is long ([`read_payload`]):
/// the reader wakes, and the guest kernel's vsock sends a credit update,
/// once per this many bytes instead of per arriving batch of virtio
/// packets (4 KiB each). It
/// is the kernel's own credit threshold (`VIRTIO_VSOCK_MAX_PKT_BUF_SIZE`),
/// well inside the default 256 KiB vsock buffer.
const PAYLOAD_LOWAT: usize = 64 * 1024;

/// One client connection.
pub struct Conn {
    session: Mutex<Session>,
    changed: Condvar,
    writer: Mutex<File>,
    /// Payload buffers given back by services ([`StreamIo::recycle`]): a
    /// push reads its 1 MiB `WRTE`s into the same memory again instead of
    /// a fresh allocation each (which musl maps and unmaps, so every one
    /// cost the guest 256 page faults, zeroing and a TLB shootdown).
    spare: Mutex<Vec<Vec<u8>>>,
    /// Held until the last handle on the connection is gone (the reader's
    /// and every service's): the daemon's connection slot, so that the
    /// connection limit also bounds the threads, children and buffers of
    /// services that outlive the socket.
    _slot: Box<dyn Send + Sync>,
}

impl Conn {
    fn lock(&self) -> MutexGuard<'_, Session> {
        self.session.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wait<'a>(&self, guard: MutexGuard<'a, Session>) -> MutexGuard<'a, Session> {
        self.changed.wait(guard).unwrap_or_else(|p| p.into_inner())
    }

    /// A buffer for a payload of `len` bytes (its content is overwritten).
    fn payload_buffer(&self, len: usize) -> Vec<u8> {
        let mut buf = if len >= REUSE_FROM {
            let mut spare = self.spare.lock().unwrap_or_else(|p| p.into_inner());
            spare.pop().unwrap_or_default()
        } else {
            Vec::new()
        };
        // A reused buffer keeps its initialised bytes: only a longer
        // payload's tail is zeroed.
        buf.resize(len, 0);
        buf
    }

    /// Writes `packets` in order (header and payload of each in one go).
    fn send(&self, packets: &[Packet]) -> io::Result<()> {
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        for p in packets {
            w.write_all(&p.encode())?;
        }
        Ok(())
    }
}

/// A service's end of one stream. Dropping it closes the stream.
pub struct StreamIo {
    conn: Arc<Conn>,
    local: u32,
    inbound: InboundStats,
    /// Held for a whole [`Self::send`]: the `WRTE`s of one call go out
    /// back to back, never interleaved with those of another thread
    /// sending on the same stream (the shell's stdout and stderr pumps).
    sending: Mutex<()>,
}

/// What a stream received, for the log line at its close (the sizes of a
/// push's `WRTE`s and how long its service waited for them).
#[derive(Default)]
struct InboundStats {
    packets: AtomicU64,
    bytes: AtomicU64,
    largest: AtomicU64,
    waited_ns: AtomicU64,
}

impl InboundStats {
    fn record(&self, len: usize, waited: Duration) {
        let len = len as u64;
        self.packets.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(len, Ordering::Relaxed);
        self.largest.fetch_max(len, Ordering::Relaxed);
        let ns = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX);
        self.waited_ns.fetch_add(ns, Ordering::Relaxed);
    }
}

impl StreamIo {
    /// The next data the client wrote (the `OKAY` for it is sent now);
    /// `None` once the stream or connection is closed.
    pub fn recv(&self) -> Option<Vec<u8>> {
        let start = Instant::now();
        let mut s = self.conn.lock();
        loop {
            match s.take_inbound(self.local) {
                Inbound::Data(data, okay) => {
                    drop(s);
                    if let Some(okay) = okay {
                        // A failed write ends the connection; the reader sees it.
                        let _ = self.conn.send(&[okay]);
                    }
                    self.inbound.record(data.len(), start.elapsed());
                    return Some(data);
                }
                Inbound::Empty => s = self.conn.wait(s),
                Inbound::Closed => return None,
            }
        }
    }

    /// Sends `data` as one or more `WRTE`s, each after the client's `OKAY`
    /// for the one before; `BrokenPipe` once the stream is closed.
    pub fn send(&self, mut data: &[u8]) -> io::Result<()> {
        let _sending = self.sending.lock().unwrap_or_else(|p| p.into_inner());
        while !data.is_empty() {
            let mut s = self.conn.lock();
            let max = s.max_send_payload();
            if max == 0 {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            let n = data.len().min(max);
            let packet = loop {
                match s.write(self.local, data[..n].to_vec()) {
                    Ok(p) => break p,
                    Err(WriteError::Busy) => s = self.conn.wait(s),
                    Err(WriteError::Closed) => return Err(io::ErrorKind::BrokenPipe.into()),
                }
            };
            drop(s);
            self.conn.send(&[packet])?;
            data = &data[n..];
        }
        Ok(())
    }

    /// The largest payload of a `WRTE` to the client (0 once the
    /// connection is closed): [`Self::send`] splits what is larger.
    pub fn max_payload(&self) -> usize {
        self.conn.lock().max_send_payload()
    }

    /// Gives a buffer from [`Self::recv`] back for the connection's next
    /// payloads (kept only up to a bound).
    pub fn recycle(&self, buf: Vec<u8>) {
        if buf.capacity() < REUSE_FROM || buf.capacity() > REUSE_MAX_CAPACITY {
            return;
        }
        let mut spare = self.conn.spare.lock().unwrap_or_else(|p| p.into_inner());
        if spare.len() < SPARE_BUFFERS {
            spare.push(buf);
        }
    }

    /// Blocks until the stream is closed: by the client's `CLSE`, the end
    /// of the connection or [`Self::close`] (data the client wrote and the
    /// service did not take yet does not delay it).
    pub fn wait_closed(&self) {
        let mut s = self.conn.lock();
        while s.is_open(self.local) {
            s = self.conn.wait(s);
        }
    }

    /// Closes the stream (a `CLSE` unless the client closed it first);
    /// idempotent.
    pub fn close(&self) {
        let clse = self.conn.lock().close_local(self.local);
        self.conn.changed.notify_all();
        if let Some(p) = clse {
            let _ = self.conn.send(&[p]);
        }
    }
}

impl Drop for StreamIo {
    fn drop(&mut self) {
        self.close();
        let st = &self.inbound;
        let packets = st.packets.load(Ordering::Relaxed);
        if packets > 0 {
            info!(
                "stream {}: {} bytes in {packets} WRTEs (largest {}), {:.2} s waiting for them",
                self.local,
                st.bytes.load(Ordering::Relaxed),
                st.largest.load(Ordering::Relaxed),
                st.waited_ns.load(Ordering::Relaxed) as f64 / 1e9
            );
        }
    }
}

/// Sets the `SOL_SOCKET` option `name` to `value` (best effort: a socket
/// that refuses it keeps its setting).
fn set_socket_option<T>(fd: &OwnedFd, name: libc::c_int, value: &T) {
    // SAFETY: setsockopt reads `value` (a valid `T` of the given size) on
    // a socket this process owns.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            name,
            std::ptr::from_ref(value).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        );
    }
}

/// Sets `SO_RCVLOWAT` (best effort: a socket that refuses it keeps
/// waking per arrival, which costs time only).
fn set_read_lowat(fd: &OwnedFd, lowat: usize) {
    let v = libc::c_int::try_from(lowat).unwrap_or(libc::c_int::MAX);
    set_socket_option(fd, libc::SO_RCVLOWAT, &v);
}

/// Reads a whole payload. While at least twice [`PAYLOAD_LOWAT`] bytes
/// are missing, `SO_RCVLOWAT` is [`PAYLOAD_LOWAT`] (vsock wakes a reader
/// only once that many bytes are queued), else 1. Twice: a read that
/// took less than `PAYLOAD_LOWAT` and sleeps again inside the same
/// recvmsg waits for `PAYLOAD_LOWAT` more queued bytes, which the client
/// then still owes; with less missing it might wait for bytes the client
/// sends only after our `OKAY`, forever. `lowat` is the socket's current
/// setting; it is 1 again at the end, for the next header.
fn read_payload(
    reader: &mut impl Read,
    fd: &OwnedFd,
    payload: &mut [u8],
    lowat: &mut usize,
) -> io::Result<()> {
    let mut got = 0;
    while got < payload.len() {
        let want = if payload.len() - got >= 2 * PAYLOAD_LOWAT {
            PAYLOAD_LOWAT
        } else {
            1
        };
        if want != *lowat {
            set_read_lowat(fd, want);
            *lowat = want;
        }
        match reader.read(&mut payload[got..]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if *lowat != 1 {
        set_read_lowat(fd, 1);
        *lowat = 1;
    }
    Ok(())
}

/// Sets `SO_RCVTIMEO` (zero: none; failure only leaves no timeout).
fn set_read_timeout(fd: &OwnedFd, timeout: Duration) {
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as _,
        tv_usec: timeout.subsec_micros() as _,
    };
    set_socket_option(fd, libc::SO_RCVTIMEO, &tv);
}

/// The socket as the reader reads it: until the client is online every
/// read may wait only for what is left of the handshake's time
/// (`SO_RCVTIMEO` set before each read), so the `CNXN` must be complete
/// by the deadline however slowly its bytes trickle in.
struct Reader<'a> {
    file: &'a mut File,
    fd: &'a OwnedFd,
    /// The end of the handshake's time; `None` once online.
    deadline: Option<Instant>,
}

impl Reader<'_> {
    /// The handshake is done: reads wait without a limit.
    fn online(&mut self) {
        if self.deadline.take().is_some() {
            set_read_timeout(self.fd, Duration::ZERO);
        }
    }
}

impl Read for Reader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(deadline) = self.deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            // At least 1 µs: a zero timeout would mean none.
            set_read_timeout(self.fd, left.max(Duration::from_micros(1)));
        }
        self.file.read(buf)
    }
}

/// Serves one connected socket until the client leaves or breaks the
/// protocol; `start` runs a service on a new stream (it should spawn a
/// thread: the reader must keep reading). `slot` is dropped when the
/// connection and every service on it are gone.
pub fn serve(
    socket: OwnedFd,
    banner: &str,
    slot: Box<dyn Send + Sync>,
    start: &dyn Fn(Service, StreamIo),
) {
    serve_with_timeout(socket, banner, slot, start, HANDSHAKE_TIMEOUT);
}

/// [`serve`] with `handshake` as the time the client has for its `CNXN`.
fn serve_with_timeout(
    socket: OwnedFd,
    banner: &str,
    slot: Box<dyn Send + Sync>,
    start: &dyn Fn(Service, StreamIo),
    handshake: Duration,
) {
    let deadline = Instant::now() + handshake;
    let (mut reader, writer) = match socket.try_clone() {
        Ok(w) => (File::from(socket), File::from(w)),
        Err(e) => {
            warn!("cannot duplicate the connection socket: {e}");
            return;
        }
    };
    let conn = Arc::new(Conn {
        session: Mutex::new(Session::new(banner)),
        changed: Condvar::new(),
        writer: Mutex::new(writer),
        spare: Mutex::new(Vec::new()),
        _slot: slot,
    });
    let end = read_loop(&conn, &mut reader, start, deadline);
    info!("connection closed: {end}");
    conn.lock().shutdown();
    conn.changed.notify_all();
    // Through the reader's fd, not the writer's: a service blocked in a
    // write holds the writer mutex until this shutdown makes it fail.
    // SAFETY: shutdown(2) on the socket this connection owns (the reader
    // is a duplicate of the writer's fd, and shutdown acts on the socket).
    unsafe { libc::shutdown(reader.as_raw_fd(), libc::SHUT_RDWR) };
}

/// Reads and dispatches packets; returns why it stopped.
fn read_loop(
    conn: &Arc<Conn>,
    file: &mut File,
    start: &dyn Fn(Service, StreamIo),
    deadline: Instant,
) -> String {
    let fd: OwnedFd = match file.try_clone() {
        Ok(f) => f.into(),
        Err(e) => return format!("cannot duplicate the socket: {e}"),
    };
    let mut reader = Reader {
        file,
        fd: &fd,
        deadline: Some(deadline),
    };
    let mut online = false;
    // The socket's SO_RCVLOWAT (1 unless a payload read is under way).
    let mut lowat = 1;
    loop {
        let (max, verify) = {
            let s = conn.lock();
            (s.max_inbound_payload(), s.verify_checksums())
        };
        let mut head = [0u8; HEADER_LEN];
        match reader.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return "client closed".into(),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && !online => {
                return "no handshake in time".into()
            }
            Err(e) => return format!("read failed: {e}"),
        }
        let header = match Header::parse(&head, max) {
            Ok(h) => h,
            Err(e) => return format!("malformed packet: {e}"),
        };
        // A WRTE's early OKAY goes out before its payload is read, so the
        // client's next packet follows this one without a round trip.
        let early = conn.lock().on_header(&header);
        match early {
            Ok(out) if out.send.is_empty() => {}
            Ok(out) => {
                if let Err(e) = conn.send(&out.send) {
                    return format!("write failed: {e}");
                }
            }
            Err(e) => {
                conn.changed.notify_all();
                return format!("protocol error: {e}");
            }
        }
        let mut payload = conn.payload_buffer(header.data_length as usize);
        if let Err(e) = read_payload(&mut reader, &fd, &mut payload, &mut lowat) {
            if e.kind() == io::ErrorKind::WouldBlock && !online {
                return "no handshake in time".into();
            }
            return format!("payload read failed: {e}");
        }
        if let Err(e) = header.check_payload(&payload, verify) {
            return format!("malformed packet: {e}");
        }
        debug!(
            "<- {} {} {} ({} bytes)",
            header.command.name(),
            header.arg0,
            header.arg1,
            payload.len()
        );
        let packet = Packet::new(header.command, header.arg0, header.arg1, payload);
        let out = conn.lock().on_packet(packet);
        conn.changed.notify_all();
        let out = match out {
            Ok(out) => out,
            Err(e) => return format!("protocol error: {e}"),
        };
        if !out.send.is_empty() {
            if let Err(e) = conn.send(&out.send) {
                return format!("write failed: {e}");
            }
        }
        if !online && conn.lock().is_online() {
            online = true;
            reader.online();
            info!("client connected");
        }
        if let Some((local, service)) = out.open {
            debug!("stream {local}: {service:?}");
            start(
                service,
                StreamIo {
                    conn: Arc::clone(conn),
                    local,
                    inbound: InboundStats::default(),
                    sending: Mutex::new(()),
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use adbd::packet::{decode, Command, MAX_PAYLOAD, VERSION};
    use std::os::unix::net::UnixStream;

    /// A test client on the other end of a socket pair.
    struct Client(UnixStream);

    impl Client {
        fn send(&mut self, c: Command, a0: u32, a1: u32, data: &[u8]) {
            self.0
                .write_all(&Packet::new(c, a0, a1, data.to_vec()).encode())
                .unwrap();
        }

        fn recv(&mut self) -> Option<Packet> {
            let mut head = [0u8; HEADER_LEN];
            self.0.read_exact(&mut head).ok()?;
            let len = u32::from_le_bytes([head[12], head[13], head[14], head[15]]) as usize;
            let mut all = head.to_vec();
            all.resize(HEADER_LEN + len, 0);
            self.0.read_exact(&mut all[HEADER_LEN..]).ok()?;
            Some(decode(&all, MAX_PAYLOAD, false).unwrap().0)
        }
    }

    /// Starts `serve` with an echo service for every stream.
    fn start() -> (Client, std::thread::JoinHandle<()>) {
        let (a, b) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || {
            serve(
                b.into(),
                "device::features=shell_v2",
                Box::new(()),
                &|_service, io| {
                    std::thread::spawn(move || {
                        while let Some(data) = io.recv() {
                            if io.send(&data).is_err() {
                                break;
                            }
                        }
                    });
                },
            )
        });
        (Client(a), t)
    }

    #[test]
    fn echo_stream_end_to_end() {
        let (mut c, t) = start();
        c.send(Command::Cnxn, VERSION, 4096, b"host::");
        let cnxn = c.recv().unwrap();
        assert_eq!(cnxn.command, Command::Cnxn);
        c.send(Command::Open, 5, 0, b"shell:cat\0");
        let okay = c.recv().unwrap();
        assert_eq!((okay.command, okay.arg1), (Command::Okay, 5));
        let local = okay.arg0;
        // 10000 bytes in, echoed back in WRTEs of at most 4096 bytes (the
        // client's max payload), each needing our OKAY.
        c.send(Command::Wrte, 5, local, &[7u8; 4000]);
        let mut echoed = 0;
        let mut okays = 0;
        while echoed < 4000 || okays < 1 {
            let p = c.recv().unwrap();
            match p.command {
                Command::Okay => okays += 1,
                Command::Wrte => {
                    assert!(p.payload.len() <= 4096);
                    echoed += p.payload.len();
                    c.send(Command::Okay, 5, local, b"");
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        // Our CLSE: the service ends, no CLSE back.
        c.send(Command::Clse, 5, local, b"");
        drop(c);
        t.join().unwrap();
    }

    #[test]
    fn payload_buffers_are_reused_within_bounds() {
        let (_a, b) = UnixStream::pair().unwrap();
        let conn = Arc::new(Conn {
            session: Mutex::new(Session::new("device::")),
            changed: Condvar::new(),
            writer: Mutex::new(File::from(OwnedFd::from(b))),
            spare: Mutex::new(Vec::new()),
            _slot: Box::new(()),
        });
        let io = StreamIo {
            conn: Arc::clone(&conn),
            local: 1,
            inbound: InboundStats::default(),
            sending: Mutex::new(()),
        };
        let big = vec![7u8; MAX_PAYLOAD as usize];
        let at = big.as_ptr();
        io.recycle(big);
        io.recycle(vec![0u8; 4 * MAX_PAYLOAD as usize]);
        io.recycle(vec![0u8; 100]);
        assert_eq!(
            conn.spare.lock().unwrap().len(),
            1,
            "only the 1 MiB one kept"
        );
        io.recycle(vec![0u8; REUSE_FROM]);
        io.recycle(vec![0u8; REUSE_FROM]);
        assert_eq!(conn.spare.lock().unwrap().len(), SPARE_BUFFERS);
        assert_eq!(conn.payload_buffer(10).len(), 10, "small payloads: fresh");
        let _ = conn.payload_buffer(REUSE_FROM);
        let reused = conn.payload_buffer(REUSE_FROM + 5);
        assert_eq!((reused.as_ptr(), reused.len()), (at, REUSE_FROM + 5));
    }

    #[test]
    fn a_writer_blocked_on_a_peer_that_does_not_read_ends_with_the_connection() {
        let (a, b) = UnixStream::pair().unwrap();
        let (sending, about_to_send) = std::sync::mpsc::channel();
        let (served, serve_ended) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            serve(b.into(), "device::", Box::new(()), &move |_service, io| {
                let sending = sending.clone();
                std::thread::spawn(move || {
                    let _ = sending.send(());
                    // One WRTE of 1 MiB: far more than the socket buffers.
                    let _ = io.send(&vec![7u8; MAX_PAYLOAD as usize]);
                });
            });
            let _ = served.send(());
        });
        let mut c = Client(a);
        c.send(Command::Cnxn, VERSION, MAX_PAYLOAD, b"host::");
        assert_eq!(c.recv().unwrap().command, Command::Cnxn);
        c.send(Command::Open, 5, 0, b"shell:x\0");
        assert_eq!(c.recv().unwrap().command, Command::Okay);
        about_to_send
            .recv_timeout(Duration::from_secs(10))
            .expect("the service started");
        // The service is now blocked writing; we never read again, only
        // end our side.
        std::thread::sleep(Duration::from_millis(300));
        c.0.shutdown(std::net::Shutdown::Write).unwrap();
        assert!(
            serve_ended.recv_timeout(Duration::from_secs(5)).is_ok(),
            "serve still waits for the blocked writer"
        );
    }

    #[test]
    fn a_handshake_trickled_in_still_ends_at_the_deadline() {
        let (a, b) = UnixStream::pair().unwrap();
        let (served, serve_ended) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let start = &|_: Service, _: StreamIo| {};
            serve_with_timeout(
                b.into(),
                "device::",
                Box::new(()),
                start,
                Duration::from_secs(1),
            );
            let _ = served.send(());
        });
        // One byte every 200 ms: each read waits far less than the
        // timeout, the whole CNXN (30 bytes) would take 6 s.
        std::thread::spawn(move || {
            let cnxn = Packet::new(Command::Cnxn, VERSION, 4096, b"host::".to_vec()).encode();
            let mut a = a;
            for byte in cnxn {
                if a.write_all(&[byte]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            // Online: hold the connection.
            std::thread::sleep(Duration::from_secs(30));
        });
        assert!(
            serve_ended.recv_timeout(Duration::from_secs(3)).is_ok(),
            "the connection outlived its handshake deadline"
        );
    }

    /// Sends on its channel when dropped.
    struct Released(Mutex<std::sync::mpsc::Sender<()>>);

    impl Drop for Released {
        fn drop(&mut self) {
            let _ = self.0.lock().unwrap().send(());
        }
    }

    #[test]
    fn the_slot_is_released_when_the_last_service_is_gone() {
        let (a, b) = UnixStream::pair().unwrap();
        let (released, slot_freed) = std::sync::mpsc::channel();
        let (served, serve_ended) = std::sync::mpsc::channel();
        let (finish, service_may_end) = std::sync::mpsc::channel::<()>();
        let service_may_end = Arc::new(Mutex::new(service_may_end));
        std::thread::spawn(move || {
            let slot = Box::new(Released(Mutex::new(released)));
            serve(b.into(), "device::", slot, &move |_service, io| {
                let may_end = Arc::clone(&service_may_end);
                std::thread::spawn(move || {
                    // A stuck service: it keeps its stream past the
                    // connection's end.
                    let _ = may_end.lock().unwrap().recv();
                    drop(io);
                });
            });
            let _ = served.send(());
        });
        let mut c = Client(a);
        c.send(Command::Cnxn, VERSION, 4096, b"host::");
        assert_eq!(c.recv().unwrap().command, Command::Cnxn);
        c.send(Command::Open, 5, 0, b"shell:x\0");
        assert_eq!(c.recv().unwrap().command, Command::Okay);
        drop(c);
        serve_ended
            .recv_timeout(Duration::from_secs(5))
            .expect("serve ended with the connection");
        assert!(
            slot_freed.recv_timeout(Duration::from_millis(300)).is_err(),
            "the slot was freed while a service still runs"
        );
        finish.send(()).unwrap();
        assert!(
            slot_freed.recv_timeout(Duration::from_secs(5)).is_ok(),
            "the slot was not freed after the last service ended"
        );
    }

    #[test]
    fn malformed_packet_closes_the_connection() {
        let (mut c, t) = start();
        c.send(Command::Cnxn, VERSION, 4096, b"host::");
        c.recv().unwrap();
        c.0.write_all(&[0x55; HEADER_LEN]).unwrap();
        assert!(c.recv().is_none(), "connection closed without an answer");
        t.join().unwrap();
        // An oversized payload is refused before it is read.
        let (mut c, t) = start();
        let mut p = Packet::new(Command::Cnxn, VERSION, 4096, Vec::new()).encode();
        p[12..16].copy_from_slice(&(MAX_PAYLOAD + 1).to_le_bytes());
        c.0.write_all(&p).unwrap();
        assert!(c.recv().is_none());
        t.join().unwrap();
    }
}
