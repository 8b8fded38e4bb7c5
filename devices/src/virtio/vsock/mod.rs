//! virtio-vsock: stream sockets between the guest and host programs.
//!
//! Three queues: `rx` (device to guest), `tx` (guest to device) and `event`
//! (transport events; this device never sends any, it only holds the
//! buffers). The configuration space is the guest's context id (`le64
//! guest_cid`). The host side is "hybrid vsock" over unix sockets, see
//! [`unix`] and `docs/vsock.md`.
//!
//! Layout, pure core and thin I/O shell:
//! - [`packet`]: the 44-byte header and guest buffer parsing;
//! - [`connection`]: one connection's protocol state and credit (no I/O);
//! - [`muxer`]: host sockets, connection table, RX scheduling;
//! - [`unix`]: the hybrid `CONNECT`/`OK` protocol and socket helpers;
//! - `device.rs`/`worker.rs`: lifecycle and the epoll loop.

pub mod connection;
mod device;
pub mod muxer;
pub mod packet;
pub mod unix;
mod worker;

pub use device::{bind_listener, Vsock, VsockError};
pub use muxer::{TcpForward, TcpForwards};

/// Size of each queue.
pub const QUEUE_SIZE: u16 = 256;
/// Number of queues (rx, tx, event).
pub const NUM_QUEUES: usize = 3;
/// Index of the RX queue.
pub const RXQ: usize = 0;
/// Index of the TX queue.
pub const TXQ: usize = 1;
/// Index of the event queue.
pub const EVQ: usize = 2;
/// The host's context id.
pub const HOST_CID: u64 = 2;
/// Size of `struct virtio_vsock_hdr`.
pub const HDR_LEN: usize = 44;
/// Largest payload of one packet (Linux's `VIRTIO_VSOCK_MAX_PKT_BUF_SIZE`).
pub const MAX_PKT_PAYLOAD: usize = 64 * 1024;
/// Receive buffer each connection advertises to the guest (`buf_alloc`):
/// at most this many guest bytes wait for a slow host socket.
pub const CONN_BUF_ALLOC: u32 = 256 * 1024;
/// Most connections at once; further requests get `RST`.
pub const MAX_CONNECTIONS: usize = 1024;
/// Most host sockets that have not sent their `CONNECT` line yet.
pub const MAX_WAITING: usize = 128;
/// Most forwarded TCP ports (`TcpForward`) one device serves.
pub const MAX_TCP_FORWARDS: usize = 16;
/// Most connections from forwarded TCP ports at once (any local user can
/// open them: they must not take every connection), and most of their
/// sockets lingering after their connections ended.
pub const MAX_TCP_CONNECTIONS: usize = 64;
/// Most host file descriptors one vsock device holds: one socket per
/// connection, per lingering TCP socket and per waiting host socket, and
/// three of each listener and of the forwarded ports' `sock_diag` socket
/// (the VMM's, the device's, its worker's). The VMM raises
/// `RLIMIT_NOFILE` above this.
pub const MAX_HOST_FDS: usize =
    MAX_CONNECTIONS + MAX_TCP_CONNECTIONS + MAX_WAITING + 3 * (2 + MAX_TCP_FORWARDS);
/// First host port handed out for host-initiated connections.
pub const FIRST_LOCAL_PORT: u32 = 1 << 30;
