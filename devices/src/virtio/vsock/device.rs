//! The virtio-vsock device: configuration, the hybrid listening socket and
//! how its worker starts.

use std::io;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use super::muxer::{Muxer, TcpForwards};
use super::worker::VsockWorker;
use super::{EVQ, NUM_QUEUES, QUEUE_SIZE};
use crate::virtio::{
    device_type, read_config_bytes, ActivateContext, ActivateError, Activation, Lifecycle,
    StartError, VirtioDevice,
};

/// Errors creating the device.
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    /// Another process listens on the socket path.
    #[error("vsock socket {0} is in use by another process")]
    InUse(PathBuf),
    /// The path exists and is not a socket.
    #[error("vsock socket path {0} exists and is not a socket; remove it or pick another")]
    NotSocket(PathBuf),
    /// Binding the listening socket failed.
    #[error("cannot listen on vsock socket {path}: {source}")]
    Bind {
        /// The path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

/// A virtio-vsock device with its host side on unix sockets.
pub struct Vsock {
    cid: u64,
    path: PathBuf,
    listener: UnixListener,
    /// The device bound `path` itself and removes it when dropped
    /// ([`Vsock::new`]); a listener handed in ([`Vsock::with_listener`])
    /// belongs to the caller, which keeps it across devices.
    owns_path: bool,
    /// Loopback TCP ports forwarded to guest ports, and who may use them.
    tcp: Option<TcpForwards>,
    config: [u8; 8],
    lifecycle: Lifecycle<VsockWorker>,
}

/// Binds `path` for a vsock device: mode 0600 before anyone can connect,
/// a stale socket file nobody listens on replaced, anything else refused
/// (`sandbox::socket::bind_private`).
pub fn bind_listener(path: &Path) -> Result<UnixListener, VsockError> {
    sandbox::socket::bind_private(path).map_err(|e| match e {
        sandbox::socket::BindError::NotSocket(p) => VsockError::NotSocket(p),
        sandbox::socket::BindError::InUse(p) => VsockError::InUse(p),
        sandbox::socket::BindError::Io { path, source, .. } => VsockError::Bind { path, source },
    })
}

impl Vsock {
    /// A device for guest context id `cid` whose host side listens on
    /// `path` (guest connections to host port P go to `path_P`); the
    /// socket file is removed when the device is dropped.
    pub fn new(cid: u64, path: &Path) -> Result<Self, VsockError> {
        let listener = bind_listener(path)?;
        let mut device = Self::with_listener(cid, path, listener);
        device.owns_path = true;
        Ok(device)
    }

    /// A device serving `listener`, already bound at `path` (see
    /// [`bind_listener`]) and kept by the caller: the VMM binds it once and
    /// hands a duplicate to the device of every boot.
    pub fn with_listener(cid: u64, path: &Path, listener: UnixListener) -> Self {
        Self {
            cid,
            path: path.to_path_buf(),
            listener,
            owns_path: false,
            tcp: None,
            config: cid.to_le_bytes(),
            // The event queue is never used: this device sends no events.
            lifecycle: Lifecycle::default().with_optional_queues_from(EVQ),
        }
    }

    /// Also serves `tcp`: each connection accepted on one of its
    /// listeners from a user its check allows goes to its guest port
    /// (docs/vsock.md). The caller keeps the listeners across devices as
    /// it keeps the hybrid one.
    pub fn with_tcp_forwards(mut self, tcp: TcpForwards) -> Self {
        self.tcp = Some(tcp);
        self
    }

    /// The guest's context id.
    pub fn cid(&self) -> u64 {
        self.cid
    }
}

impl Drop for Vsock {
    fn drop(&mut self) {
        self.reset();
        if self.owns_path {
            let _ = sandbox::socket::remove_socket(&self.path);
        }
    }
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        device_type::VSOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE; NUM_QUEUES]
    }

    fn features(&self) -> u64 {
        // Stream sockets only (VIRTIO_VSOCK_F_SEQPACKET not offered).
        0
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        self.lifecycle
            .activate(ctx, |act: Activation<NUM_QUEUES>, ()| {
                let muxer = self.listener.try_clone().and_then(|listener| {
                    let muxer = Muxer::new(act.mem.clone(), self.cid, self.path.clone(), listener)?;
                    match &self.tcp {
                        Some(tcp) => muxer.with_tcp_forwards(tcp.try_clone()?),
                        None => Ok(muxer),
                    }
                });
                match muxer {
                    Ok(muxer) => Ok(VsockWorker::new(act.mem, act.interrupt, act.queues, muxer)),
                    Err(e) => Err(StartError::new(ActivateError::Worker(e), ())),
                }
            })
    }

    fn reset(&mut self) {
        // Dropping the worker closes every connection's host socket.
        self.lifecycle.reset();
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
    use std::os::unix::net::UnixStream;
    use std::time::{Duration, Instant};

    use vm_memory::{Bytes, GuestAddress};

    use super::*;
    use crate::virtio::test_utils::{
        guest_memory, virtio_lifecycle_tests, DeviceHarness, LifecycleTest, DATA_START, PROBE_AREA,
        VRING_DESC_F_WRITE,
    };
    use crate::virtio::vsock::packet::{op, Header, SHUTDOWN_BOTH, SHUTDOWN_SEND, TYPE_STREAM};
    use crate::virtio::vsock::{
        unix, TcpForward, CONN_BUF_ALLOC, EVQ, FIRST_LOCAL_PORT, HDR_LEN, MAX_TCP_CONNECTIONS, RXQ,
        TXQ,
    };
    use crate::virtio::GuestMemoryMmap;

    const CID: u64 = 3;
    const RX_BASE: u64 = DATA_START;
    const RX_SLOT: u64 = 0x2000;
    const RX_BUF: u32 = 4096 + HDR_LEN as u32;
    const TX_BASE: u64 = DATA_START + 0x40_0000;
    const TX_SLOT: u64 = 0x2000;

    /// A temporary directory (removed on drop) for the device's sockets.
    pub struct TestDir(tempfile::TempDir);

    impl TestDir {
        fn new() -> Self {
            Self(tempfile::tempdir().unwrap())
        }
        fn sock(&self) -> PathBuf {
            self.0.path().join("v.sock")
        }
        /// The host's listener for guest connections to `port`.
        fn listen(&self, port: u32) -> UnixListener {
            UnixListener::bind(unix::port_path(&self.sock(), port)).unwrap()
        }
    }

    /// A device on a fresh socket directory and the guest memory it serves.
    fn device() -> (TestDir, GuestMemoryMmap, Vsock) {
        let dir = TestDir::new();
        let dev = Vsock::new(CID, &dir.sock()).unwrap();
        (dir, guest_memory(), dev)
    }

    /// [`device`] with a loopback TCP port (its address returned)
    /// forwarded to guest port `guest_port`; `None` (the test skips, with
    /// a note) where no `sock_diag` socket can be opened: the aarch64 unit
    /// tests run under qemu-user, which has no `NETLINK_SOCK_DIAG` (the
    /// arm64 test host's kernel has it: the nested adb bench uses it).
    fn device_with_forward(
        guest_port: u32,
    ) -> Option<(TestDir, GuestMemoryMmap, Vsock, SocketAddr)> {
        let peers = match sandbox::tcp_peer::TcpPeerCheck::new() {
            Ok(peers) => peers,
            Err(e) if e.raw_os_error() == Some(libc::EPROTONOSUPPORT) => {
                eprintln!("note: no NETLINK_SOCK_DIAG here ({e}); forwarded-port test skipped");
                return None;
            }
            Err(e) => panic!("sock_diag socket: {e}"),
        };
        let (dir, mem, dev) = device();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let dev = dev.with_tcp_forwards(TcpForwards {
            ports: vec![TcpForward {
                listener,
                port: addr.port(),
                guest_port,
            }],
            peers,
        });
        Some((dir, mem, dev, addr))
    }

    /// A client of the forwarded port (to guest port 5555) that the guest
    /// accepted and that keeps sending without reading (a thread writes
    /// until its socket fails): the guest takes three packets of its
    /// bytes, then the device stops reading it (no RX buffer left), and
    /// the guest replies `blocks` packets of 4 KiB of 9s. Returns the
    /// client, its writer thread and the connection's host port.
    fn flooding_client_with_a_reply(
        g: &mut Guest,
        addr: SocketAddr,
        blocks: usize,
    ) -> (TcpStream, std::thread::JoinHandle<()>, u32) {
        // The REQUEST and three packets of the client's bytes.
        g.post_rx(4);
        let c = TcpStream::connect(addr).unwrap();
        let (req, _) = g.recv();
        g.send(hdr(op::RESPONSE, 5555, req.src_port), &[]);
        let writer = {
            let mut c = c.try_clone().unwrap();
            std::thread::spawn(move || {
                let chunk = vec![1u8; 64 * 1024];
                for _ in 0..256 {
                    if c.write_all(&chunk).is_err() {
                        break;
                    }
                }
            })
        };
        for _ in 0..3 {
            assert_eq!(g.recv().0.op, op::RW);
        }
        let block = [9u8; 4096];
        for _ in 0..blocks {
            g.send(hdr(op::RW, 5555, req.src_port), &block);
        }
        (c, writer, req.src_port)
    }

    /// The guest driver's side: posts RX buffers, sends TX packets, reads
    /// what the device delivered.
    struct Guest<'a> {
        h: DeviceHarness<'a>,
        rx_posted: u16,
        rx_seen: u16,
        tx_sent: u16,
    }

    fn hdr(op: u16, src_port: u32, dst_port: u32) -> Header {
        Header {
            src_cid: CID,
            dst_cid: 2,
            src_port,
            dst_port,
            len: 0,
            type_: TYPE_STREAM,
            op,
            flags: 0,
            buf_alloc: CONN_BUF_ALLOC,
            fwd_cnt: 0,
        }
    }

    /// A `SHUTDOWN` with `flags`.
    fn shutdown(src_port: u32, dst_port: u32, flags: u32) -> Header {
        Header {
            flags,
            ..hdr(op::SHUTDOWN, src_port, dst_port)
        }
    }

    impl<'a> Guest<'a> {
        fn new(mem: &'a GuestMemoryMmap, dev: &mut Vsock) -> Self {
            Self {
                h: DeviceHarness::activate(mem, dev, 256),
                rx_posted: 0,
                rx_seen: 0,
                tx_sent: 0,
            }
        }

        fn post_rx(&mut self, n: u16) {
            for _ in 0..n {
                let i = self.rx_posted;
                self.h.add_chain(
                    RXQ,
                    i,
                    &[(RX_BASE + u64::from(i) * RX_SLOT, RX_BUF, VRING_DESC_F_WRITE)],
                );
                self.rx_posted += 1;
            }
        }

        /// Sends a raw chain on TX and waits until the device used it.
        fn send_raw(&mut self, descs: &[(u64, u32, u16)]) {
            let i = self.tx_sent;
            self.h.add_chain(TXQ, i, descs);
            self.tx_sent += 1;
            self.h.wait_used(TXQ, self.tx_sent);
        }

        /// Sends `h` (its `len` set to the payload's) and `payload` in one
        /// descriptor from its TX slot.
        fn send(&mut self, h: Header, payload: &[u8]) {
            let addr = TX_BASE + u64::from(self.tx_sent) * TX_SLOT;
            self.send_at(addr, h, payload);
        }

        /// [`Self::send`] from guest address `addr`.
        fn send_at(&mut self, addr: u64, mut h: Header, payload: &[u8]) {
            h.len = payload.len() as u32;
            self.h
                .mem
                .write_slice(payload, GuestAddress(addr + HDR_LEN as u64))
                .unwrap();
            self.send_header(addr, h, (HDR_LEN + payload.len()) as u32);
        }

        /// Writes `h` as it is (its `len` may lie) at `addr` and sends a
        /// chain of `chain_len` bytes from there.
        fn send_header(&mut self, addr: u64, h: Header, chain_len: u32) {
            self.h
                .mem
                .write_slice(&h.to_bytes(), GuestAddress(addr))
                .unwrap();
            self.send_raw(&[(addr, chain_len, 0)]);
        }

        /// Sends `req` (a `REQUEST`) and checks the device answered
        /// `RESPONSE`.
        fn open(&mut self, req: Header) {
            self.send(req, &[]);
            assert_eq!(self.recv().0.op, op::RESPONSE);
        }

        /// [`Self::open`], then the host's side of the stream from `host`.
        fn connect(&mut self, req: Header, host: &UnixListener) -> UnixStream {
            self.open(req);
            accept(host)
        }

        /// The next packet the device delivered.
        fn recv(&mut self) -> (Header, Vec<u8>) {
            self.rx_seen += 1;
            self.h.wait_used(RXQ, self.rx_seen);
            let (id, len) = self.h.used_elem(RXQ, self.rx_seen - 1);
            let addr = RX_BASE + u64::from(id) * RX_SLOT;
            assert!(len as usize >= HDR_LEN, "used length {len}");
            let raw: [u8; HDR_LEN] = self.h.read(addr, HDR_LEN).try_into().unwrap();
            let h = Header::from_bytes(&raw);
            assert_eq!(h.len as usize, len as usize - HDR_LEN);
            let payload = self.h.read(addr + HDR_LEN as u64, h.len as usize);
            (h, payload)
        }

        /// Asserts that nothing is delivered for a while.
        fn no_rx(&self) {
            std::thread::sleep(Duration::from_millis(100));
            let used = self.h.queues[RXQ].used().idx().load();
            assert_eq!(used, self.rx_seen, "unexpected RX packet");
        }
    }

    fn read_line(s: &mut UnixStream) -> String {
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        while s.read(&mut b).unwrap() == 1 {
            line.push(b[0]);
            if b[0] == b'\n' {
                break;
            }
        }
        String::from_utf8(line).unwrap()
    }

    fn accept(l: &UnixListener) -> UnixStream {
        let deadline = Instant::now() + Duration::from_secs(5);
        l.set_nonblocking(true).unwrap();
        loop {
            match l.accept() {
                Ok((s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    return s;
                }
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
                Err(e) => panic!("no connection: {e}"),
            }
        }
    }

    impl LifecycleTest for Vsock {
        type Fixture = TestDir;
        const OPTIONAL_QUEUES: &'static [usize] = &[EVQ];

        fn create() -> (Self, TestDir) {
            let dir = TestDir::new();
            (Vsock::new(CID, &dir.sock()).unwrap(), dir)
        }

        fn is_active(&self) -> bool {
            self.lifecycle.is_active()
        }

        /// Connects to a host port nobody listens on: the answer is an
        /// `RST`. It goes to the first receive chain the device can use,
        /// which may be an earlier odd one (a descriptor loop aliasing its
        /// buffers is usable): then it asks again.
        fn assert_serves(_dir: &mut TestDir, h: &DeviceHarness) {
            let rx_buf = PROBE_AREA;
            let rx = h.post(RXQ, &[(rx_buf, RX_BUF, VRING_DESC_F_WRITE)]);
            for attempt in 0..8u32 {
                let req = hdr(op::REQUEST, 4000 + attempt, 5999);
                let at = PROBE_AREA + 0x2000 + u64::from(attempt) * 0x100;
                h.mem
                    .write_slice(&req.to_bytes(), GuestAddress(at))
                    .unwrap();
                let tx = h.post(TXQ, &[(at, HDR_LEN as u32, 0)]);
                assert_eq!(h.wait_for_head(TXQ, tx), 0);
                let deadline = Instant::now() + Duration::from_millis(500);
                while Instant::now() < deadline {
                    let used = h.queues[RXQ].used().idx().load();
                    if let Some((_, len)) = (0..used)
                        .map(|i| h.used_elem(RXQ, i))
                        .find(|&(id, _)| id == u32::from(rx))
                    {
                        assert_eq!(len as usize, HDR_LEN);
                        let raw: [u8; HDR_LEN] = h.read(rx_buf, HDR_LEN).try_into().unwrap();
                        let r = Header::from_bytes(&raw);
                        assert_eq!((r.op, r.src_port), (op::RST, 5999));
                        assert!((4000..=4000 + attempt).contains(&r.dst_port));
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            panic!("no RST reached the good receive buffer");
        }
    }

    virtio_lifecycle_tests!(Vsock);

    #[test]
    fn config_space_holds_the_guest_cid() {
        let dir = TestDir::new();
        let dev = Vsock::new(0x1_0000_0003, &dir.sock()).unwrap();
        assert_eq!(dev.device_type(), 19);
        assert_eq!(dev.queue_max_sizes().len(), 3);
        let mut b = [0u8; 8];
        dev.read_config(0, &mut b);
        assert_eq!(u64::from_le_bytes(b), 0x1_0000_0003);
        let mut b = [0u8; 4];
        dev.read_config(4, &mut b);
        assert_eq!(u32::from_le_bytes(b), 1);
    }

    #[test]
    fn socket_path_checks() {
        let dir = TestDir::new();
        let dev = Vsock::new(CID, &dir.sock()).unwrap();
        assert!(matches!(
            Vsock::new(CID, &dir.sock()),
            Err(VsockError::InUse(_))
        ));
        drop(dev);
        assert!(!dir.sock().exists(), "socket removed on drop");
        // A stale socket nobody listens on is replaced.
        drop(UnixListener::bind(dir.sock()).unwrap());
        assert!(Vsock::new(CID, &dir.sock()).is_ok());
        let file = dir.0.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        assert!(matches!(
            Vsock::new(CID, &file),
            Err(VsockError::NotSocket(_))
        ));
    }

    #[test]
    fn guest_to_host_stream_both_directions_and_clean_close() {
        let (dir, mem, mut dev) = device();
        let host = dir.listen(5000);
        let mut g = Guest::new(&mem, &mut dev);
        g.post_rx(16);
        g.send(hdr(op::REQUEST, 1234, 5000), &[]);
        let (r, _) = g.recv();
        assert_eq!(
            (r.op, r.src_cid, r.dst_cid, r.src_port, r.dst_port),
            (op::RESPONSE, 2, CID, 5000, 1234)
        );
        assert_eq!(r.buf_alloc, CONN_BUF_ALLOC);
        let mut s = accept(&host);
        // Guest to host.
        g.send(hdr(op::RW, 1234, 5000), b"hello host");
        let mut buf = [0u8; 10];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hello host");
        // Host to guest.
        s.write_all(b"hello guest").unwrap();
        let (d, payload) = g.recv();
        assert_eq!((d.op, d.src_port, d.dst_port), (op::RW, 5000, 1234));
        assert_eq!(payload, b"hello guest");
        assert_eq!(d.fwd_cnt, 10, "our fwd_cnt counts forwarded guest bytes");
        // Guest half-close: the host reads EOF but may still send.
        g.send(shutdown(1234, 5000, SHUTDOWN_SEND), &[]);
        assert_eq!(s.read(&mut buf).unwrap(), 0, "host sees EOF");
        s.write_all(b"bye").unwrap();
        assert_eq!(g.recv().1, b"bye");
        // Guest close: RST back, host socket closed.
        g.send(shutdown(1234, 5000, SHUTDOWN_BOTH), &[]);
        let (rst, _) = g.recv();
        assert_eq!((rst.op, rst.src_port, rst.dst_port), (op::RST, 5000, 1234));
        // The connection is gone: more data is answered with RST.
        g.send(hdr(op::RW, 1234, 5000), b"late");
        assert_eq!(g.recv().0.op, op::RST);
        dev.reset();
    }

    /// Guest bytes the device acknowledged but a slow host reader has not
    /// taken yet are still delivered when the device stops (the VMM exits
    /// right after a guest poweroff), followed by end of file.
    #[test]
    fn stopping_delivers_acknowledged_guest_bytes_to_a_slow_reader() {
        let (dir, mem, mut dev) = device();
        let host = dir.listen(5000);
        let mut g = Guest::new(&mem, &mut dev);
        g.post_rx(8);
        let mut s = g.connect(hdr(op::REQUEST, 1234, 5000), &host);
        // 240 KiB (within our credit), more than the host socket holds
        // while nobody reads: the rest waits in the device.
        let mut sent = Vec::new();
        for i in 0..60u32 {
            let chunk: Vec<u8> = (0..4096u32)
                .map(|b| (b ^ i.wrapping_mul(31)) as u8)
                .collect();
            g.send(hdr(op::RW, 1234, 5000), &chunk);
            sent.extend_from_slice(&chunk);
        }
        g.send(shutdown(1234, 5000, SHUTDOWN_BOTH), &[]);
        let reader = std::thread::spawn(move || {
            // Start reading only after the device began stopping.
            std::thread::sleep(Duration::from_millis(300));
            let mut got = Vec::new();
            s.read_to_end(&mut got).map(|_| got)
        });
        drop(g);
        dev.reset();
        let got = reader.join().unwrap().expect("host read");
        assert_eq!(
            got.len(),
            sent.len(),
            "every acknowledged guest byte arrives"
        );
        assert!(got == sent, "in order and intact");
    }

    /// The same through a forwarded TCP port whose client still sends and
    /// has not read when the device stops: its socket must not close with
    /// unread bytes (a reset would lose the reply's bytes it still holds).
    #[test]
    fn stopping_delivers_a_tcp_clients_reply_while_the_client_still_sends() {
        let Some((_dir, mem, mut dev, addr)) = device_with_forward(5555) else {
            return;
        };
        let mut g = Guest::new(&mem, &mut dev);
        let (mut c, writer, _) = flooding_client_with_a_reply(&mut g, addr, 60);
        let reader = std::thread::spawn(move || {
            // Start reading only after the device began stopping.
            std::thread::sleep(Duration::from_millis(300));
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut got = Vec::new();
            let read = c.read_to_end(&mut got);
            let _ = c.shutdown(Shutdown::Both);
            read.map(|_| got)
        });
        drop(g);
        dev.reset();
        let got = reader.join().unwrap().expect("client read");
        assert_eq!(
            got.len(),
            60 * 4096,
            "every acknowledged guest byte arrives"
        );
        writer.join().unwrap();
    }

    #[test]
    fn guest_connect_without_listener_is_reset() {
        let (_dir, mem, mut dev) = device();
        let mut g = Guest::new(&mem, &mut dev);
        g.post_rx(4);
        g.send(hdr(op::REQUEST, 1000, 5001), &[]);
        let (r, _) = g.recv();
        assert_eq!(
            (r.op, r.src_cid, r.dst_cid, r.src_port, r.dst_port),
            (op::RST, 2, CID, 5001, 1000)
        );
        dev.reset();
    }

    #[test]
    fn host_connect_handshake_and_refusal() {
        let (dir, mem, mut dev) = device();
        let mut g = Guest::new(&mem, &mut dev);
        g.post_rx(16);
        let mut s = UnixStream::connect(dir.sock()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // The line and early data in one write: data waits for the guest.
        s.write_all(b"CONNECT 6000\nearly").unwrap();
        let (req, _) = g.recv();
        assert_eq!(
            (req.op, req.dst_port, req.dst_cid),
            (op::REQUEST, 6000, CID)
        );
        assert!(req.src_port >= FIRST_LOCAL_PORT);
        let mut resp = hdr(op::RESPONSE, 6000, req.src_port);
        resp.buf_alloc = 4096;
        g.send(resp, &[]);
        assert_eq!(read_line(&mut s), format!("OK {}\n", req.src_port));
        let (d, payload) = g.recv();
        assert_eq!((d.op, payload.as_slice()), (op::RW, &b"early"[..]));
        // Host closes: SHUTDOWN with both flags, then the guest's RST ends it.
        // The worker may read the end of the stream before epoll reports
        // the hang-up: then a SHUTDOWN(SEND) comes first and a second one
        // adds RCV (a shutdown may be announced in steps).
        drop(s);
        let (sd, _) = g.recv();
        assert_eq!(sd.op, op::SHUTDOWN);
        if sd.flags != SHUTDOWN_BOTH {
            assert_eq!(sd.flags, SHUTDOWN_SEND);
            let (rest, _) = g.recv();
            assert_eq!((rest.op, rest.flags), (op::SHUTDOWN, SHUTDOWN_BOTH));
        }
        g.send(hdr(op::RST, 6000, req.src_port), &[]);
        g.no_rx();

        // Refusal: the host socket closes without a reply.
        let mut s = UnixStream::connect(dir.sock()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"CONNECT 6001\n").unwrap();
        let (req2, _) = g.recv();
        assert_eq!(req2.op, op::REQUEST);
        assert_ne!(req2.src_port, req.src_port, "fresh local port");
        g.send(hdr(op::RST, 6001, req2.src_port), &[]);
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "no OK line: {rest:?}");

        // A bad line is just closed.
        let mut s = UnixStream::connect(dir.sock()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"HELLO\n").unwrap();
        let mut rest = Vec::new();
        // Closed with the line unread: EOF or ECONNRESET, never a reply.
        match s.read_to_end(&mut rest) {
            Ok(_) => assert!(rest.is_empty()),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
        }
        g.no_rx();
        dev.reset();
    }

    #[test]
    fn a_forwarded_tcp_port_reaches_its_guest_port_with_no_hybrid_lines() {
        let Some((_dir, mem, mut dev, addr)) = device_with_forward(5555) else {
            return;
        };
        let mut g = Guest::new(&mem, &mut dev);
        g.post_rx(16);
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // The client speaks first, as adb's does: its bytes wait for the
        // guest's answer and are the guest's from the first one.
        c.write_all(b"CNXN").unwrap();
        let (req, _) = g.recv();
        assert_eq!(
            (req.op, req.dst_port, req.dst_cid),
            (op::REQUEST, 5555, CID)
        );
        assert!(req.src_port >= FIRST_LOCAL_PORT);
        g.send(hdr(op::RESPONSE, 5555, req.src_port), &[]);
        let (d, payload) = g.recv();
        assert_eq!((d.op, payload.as_slice()), (op::RW, &b"CNXN"[..]));
        // No `OK` line before the guest's bytes.
        g.send(hdr(op::RW, 5555, req.src_port), b"reply");
        let mut buf = [0u8; 5];
        c.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"reply");
        // The client half-closes; the guest closes: end of file, and the
        // connection is gone (RST).
        c.shutdown(Shutdown::Write).unwrap();
        let (sd, _) = g.recv();
        assert_eq!(
            (sd.op, sd.flags & SHUTDOWN_SEND),
            (op::SHUTDOWN, SHUTDOWN_SEND)
        );
        g.send(shutdown(5555, req.src_port, SHUTDOWN_BOTH), &[]);
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "{rest:?}");
        assert_eq!(g.recv().0.op, op::RST);

        // A guest that refuses: the client's connection ends, no byte.
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let (req2, _) = g.recv();
        assert_eq!((req2.op, req2.dst_port), (op::REQUEST, 5555));
        g.send(hdr(op::RST, 5555, req2.src_port), &[]);
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "{rest:?}");
        g.no_rx();
        dev.reset();
    }

    /// A client of a forwarded port whose socket belongs to a user the
    /// VMM does not serve (here uid 4242; root and our own uid are
    /// allowed) is closed without reaching the guest; ours still are.
    #[test]
    fn a_forwarded_port_closes_clients_of_users_it_does_not_serve() {
        // SAFETY: plain credential query.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root to connect as another uid");
            return;
        }
        let Some((_dir, mem, mut dev, addr)) = device_with_forward(5555) else {
            return;
        };
        let mut g = Guest::new(&mem, &mut dev);
        g.post_rx(4);
        let (result_r, result_w) = UnixStream::pair().unwrap();
        // SAFETY: the child makes plain system calls and _exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            drop(result_r);
            // SAFETY: credential changes with integer arguments.
            let switched = unsafe {
                libc::setresgid(4242, 4242, 4242) == 0 && libc::setresuid(4242, 4242, 4242) == 0
            };
            // 1: connected, then closed without a byte.
            let closed = switched
                && TcpStream::connect(addr).is_ok_and(|mut c| {
                    c.set_read_timeout(Some(Duration::from_secs(5))).is_ok()
                        && match c.read(&mut [0u8; 1]) {
                            Ok(n) => n == 0,
                            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
                        }
                });
            let _ = (&result_w).write_all(&[u8::from(closed)]);
            // SAFETY: leave the child.
            unsafe { libc::_exit(0) };
        }
        drop(result_w);
        let mut closed = [0u8];
        (&result_r).read_exact(&mut closed).unwrap();
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(closed, [1], "uid 4242's client was closed");
        g.no_rx();
        // Root's client reaches the guest.
        let _c = TcpStream::connect(addr).unwrap();
        assert_eq!(g.recv().0.op, op::REQUEST);
        dev.reset();
    }

    /// At most [`MAX_TCP_CONNECTIONS`] clients of the forwarded ports are
    /// connections at once; the next is closed without reaching the
    /// guest.
    #[test]
    fn forwarded_tcp_clients_beyond_their_limit_are_closed() {
        let Some((_dir, mem, mut dev, addr)) = device_with_forward(5555) else {
            return;
        };
        let mut g = Guest::new(&mem, &mut dev);
        g.post_rx(MAX_TCP_CONNECTIONS as u16 + 4);
        let clients: Vec<TcpStream> = (0..MAX_TCP_CONNECTIONS)
            .map(|_| {
                let c = TcpStream::connect(addr).unwrap();
                assert_eq!(g.recv().0.op, op::REQUEST);
                c
            })
            .collect();
        let mut late = TcpStream::connect(addr).unwrap();
        late.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut rest = Vec::new();
        // Closed unread: end of file or a reset, never a byte.
        match late.read_to_end(&mut rest) {
            Ok(_) => assert!(rest.is_empty()),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
        }
        g.no_rx();
        drop(clients);
        dev.reset();
    }

    /// A guest that replies and closes while the TCP client still sends
    /// and has not read: the client gets the whole reply, then end of
    /// file. Closing the socket with the client's bytes unread would send
    /// a reset, losing the reply's bytes still in the socket's send queue.
    #[test]
    fn a_guest_closing_while_the_tcp_client_sends_still_delivers_its_whole_reply() {
        const REPLY: usize = 240 * 1024;
        let Some((_dir, mem, mut dev, addr)) = device_with_forward(5555) else {
            return;
        };
        let mut g = Guest::new(&mem, &mut dev);
        let (mut c, writer, port) = flooding_client_with_a_reply(&mut g, addr, REPLY / 4096);
        g.send(shutdown(5555, port, SHUTDOWN_BOTH), &[]);
        std::thread::sleep(Duration::from_millis(300));
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut back = Vec::new();
        let read = c.read_to_end(&mut back);
        assert!(read.is_ok(), "{read:?} after {} bytes", back.len());
        assert_eq!(back.len(), REPLY);
        assert!(back.iter().all(|&b| b == 9));
        c.shutdown(Shutdown::Both).unwrap();
        writer.join().unwrap();
        dev.reset();
    }

    #[test]
    fn host_half_close_and_guest_credit_limit() {
        let (dir, mem, mut dev) = device();
        let host = dir.listen(5000);
        let mut g = Guest::new(&mem, &mut dev);
        g.post_rx(32);
        let mut req = hdr(op::REQUEST, 1234, 5000);
        req.buf_alloc = 5000;
        let mut s = g.connect(req, &host);
        s.write_all(&[7u8; 8192]).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        // 5000 bytes of credit: 4096 + 904, then a credit request.
        let (a, pa) = g.recv();
        let (b, pb) = g.recv();
        assert_eq!((a.op, b.op), (op::RW, op::RW));
        assert_eq!(pa.len() + pb.len(), 5000);
        assert_eq!(g.recv().0.op, op::CREDIT_REQUEST);
        g.no_rx();
        // The guest consumed everything: the rest, then SHUTDOWN(SEND) for
        // the host's half-close.
        let mut upd = hdr(op::CREDIT_UPDATE, 1234, 5000);
        upd.buf_alloc = 5000;
        upd.fwd_cnt = 5000;
        g.send(upd, &[]);
        let (c, pc) = g.recv();
        assert_eq!((c.op, pc.len()), (op::RW, 3192));
        assert!(pc.iter().all(|&b| b == 7));
        let (sd, _) = g.recv();
        assert_eq!((sd.op, sd.flags), (op::SHUTDOWN, SHUTDOWN_SEND));
        // The guest can still send after the host's half-close.
        g.send(hdr(op::RW, 1234, 5000), b"reply");
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"reply");
        dev.reset();
    }

    #[test]
    fn guest_stream_gets_credit_updates() {
        let (dir, mem, mut dev) = device();
        let host = dir.listen(5000);
        let mut g = Guest::new(&mem, &mut dev);
        g.post_rx(8);
        let mut s = g.connect(hdr(op::REQUEST, 1, 5000), &host);
        // Half our buffer in 4 KiB packets: one CREDIT_UPDATE.
        let chunk = [1u8; 4096];
        for _ in 0..(CONN_BUF_ALLOC as usize / 2 / 4096) {
            g.send(hdr(op::RW, 1, 5000), &chunk);
        }
        let (u, _) = g.recv();
        assert_eq!((u.op, u.fwd_cnt), (op::CREDIT_UPDATE, CONN_BUF_ALLOC / 2));
        let mut got = vec![0u8; CONN_BUF_ALLOC as usize / 2];
        s.read_exact(&mut got).unwrap();
        // Explicit credit requests are answered too.
        g.send(hdr(op::CREDIT_REQUEST, 1, 5000), &[]);
        assert_eq!(g.recv().0.op, op::CREDIT_UPDATE);
        dev.reset();
    }

    #[test]
    fn hostile_tx_packets_are_dropped_or_reset_and_the_device_keeps_serving() {
        let (dir, mem, mut dev) = device();
        let _host = dir.listen(5000);
        let mut g = Guest::new(&mem, &mut dev);
        g.post_rx(32);
        // Wrong source cid: dropped silently.
        let mut h = hdr(op::REQUEST, 1, 5000);
        h.src_cid = 7;
        g.send(h, &[]);
        g.no_rx();
        // Wrong destination cid: refused.
        let mut h = hdr(op::REQUEST, 1, 5000);
        h.dst_cid = 9;
        g.send(h, &[]);
        let (r, _) = g.recv();
        assert_eq!((r.op, r.src_cid, r.dst_port), (op::RST, 9, 1));
        // SEQPACKET is not offered: refused.
        let mut h = hdr(op::REQUEST, 1, 5000);
        h.type_ = 2;
        g.send(h, &[]);
        assert_eq!(g.recv().0.op, op::RST);
        // Data for an unknown connection: RST.
        g.send(hdr(op::RW, 2, 5000), b"x");
        assert_eq!(g.recv().0.op, op::RST);
        // An RST for an unknown connection: nothing.
        g.send(hdr(op::RST, 2, 5000), &[]);
        g.no_rx();
        // Header cut short, device-writable header, out-of-memory address,
        // zero-length chain.
        let a = TX_BASE + 0x10_0000;
        g.send_raw(&[(a, 20, 0)]);
        g.send_raw(&[(a, 64, VRING_DESC_F_WRITE)]);
        g.send_raw(&[(1 << 40, 64, 0)]);
        g.send_raw(&[(a, 0, 0)]);
        g.no_rx();
        // Establish a connection, then break it with len beyond the chain.
        g.open(hdr(op::REQUEST, 3, 5000));
        let mut h = hdr(op::RW, 3, 5000);
        h.len = 100;
        g.send_header(a, h, HDR_LEN as u32 + 10);
        let (r, _) = g.recv();
        assert_eq!((r.op, r.dst_port), (op::RST, 3));
        // Oversize packet on another connection.
        g.open(hdr(op::REQUEST, 4, 5000));
        let mut h = hdr(op::RW, 4, 5000);
        h.len = 1 << 20;
        g.send_header(a, h, HDR_LEN as u32 + (1 << 20));
        assert_eq!(g.recv().0.op, op::RST);
        // A guest ignoring our credit is reset.
        g.open(hdr(op::REQUEST, 5, 5000));
        // Nobody reads the host side; the socket buffer fills, then our
        // 256 KiB buffer; beyond that the connection is reset.
        let chunk = vec![0u8; 64 * 1024];
        let mut reset = false;
        for _ in 0..64 {
            g.send_at(a, hdr(op::RW, 5, 5000), &chunk);
            let used = g.h.queues[RXQ].used().idx().load();
            if used > g.rx_seen {
                let (p, _) = g.recv();
                if p.op == op::RST {
                    reset = true;
                    break;
                }
            }
        }
        assert!(reset, "credit violation must reset");
        // Still serving.
        g.open(hdr(op::REQUEST, 6, 5000));
        dev.reset();
    }

    #[test]
    fn bad_rx_buffers_are_skipped() {
        let (_dir, mem, mut dev) = device();
        let mut g = Guest::new(&mem, &mut dev);
        // Read-only, too short, outside memory; then a good one.
        g.h.add_chain(RXQ, 0, &[(RX_BASE, RX_BUF, 0)]);
        g.h.add_chain(RXQ, 1, &[(RX_BASE + RX_SLOT, 20, VRING_DESC_F_WRITE)]);
        g.h.add_chain(RXQ, 2, &[(1 << 40, RX_BUF, VRING_DESC_F_WRITE)]);
        g.rx_posted = 3;
        g.send(hdr(op::REQUEST, 1000, 5001), &[]);
        g.h.wait_used(RXQ, 3);
        for i in 0..3 {
            assert_eq!(g.h.used_elem(RXQ, i).1, 0, "bad buffer {i} gets length 0");
        }
        assert_eq!(
            g.h.read(RX_BASE, 8),
            vec![0; 8],
            "read-only buffer untouched"
        );
        g.rx_seen = 3;
        g.post_rx(1);
        let (r, _) = g.recv();
        assert_eq!(r.op, op::RST, "the pending packet went to the good buffer");
        dev.reset();
    }

    #[test]
    fn event_queue_is_left_alone_and_reset_allows_reactivation() {
        let (_dir, mem, mut dev) = device();
        {
            let g = Guest::new(&mem, &mut dev);
            g.h.add_chain(EVQ, 0, &[(RX_BASE, 8, VRING_DESC_F_WRITE)]);
            std::thread::sleep(Duration::from_millis(50));
            assert_eq!(g.h.queues[EVQ].used().idx().load(), 0);
        }
        dev.reset();
        let mut g = Guest::new(&mem, &mut dev);
        g.post_rx(2);
        g.send(hdr(op::REQUEST, 1, 5001), &[]);
        assert_eq!(g.recv().0.op, op::RST);
        dev.reset();
    }
}
