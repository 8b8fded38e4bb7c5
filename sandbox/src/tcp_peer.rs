//! Who connected to a loopback TCP port: TCP has no `SO_PEERCRED`, but on
//! 127.0.0.1 the client's socket is on this host, and the kernel's
//! `sock_diag` (inet_diag) names its owner. [`TcpPeerCheck`] looks the
//! client's socket up by its exact address pair and checks that uid like
//! [`crate::socket::check_peer`] checks a unix peer, so that a forwarded
//! TCP port admits the same users as the process's unix sockets.
//!
//! The lookup is one netlink request and its reply (the kernel answers
//! within the `send`). It needs the `tcp_diag` module (Debian loads it on
//! the first request).

use std::io;
use std::net::SocketAddrV4;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::socket::{settings, uid_allowed, PeerError};

/// `NETLINK_SOCK_DIAG`.
const NETLINK_SOCK_DIAG: libc::c_int = 4;
/// `SOCK_DIAG_BY_FAMILY`: the request and reply message type.
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `NLMSG_ERROR`.
const NLMSG_ERROR: u16 = 2;
/// `NLM_F_REQUEST`.
const NLM_F_REQUEST: u16 = 1;
/// `struct nlmsghdr`.
const NLMSG_HDR: usize = 16;
/// `struct inet_diag_req_v2`.
const REQ_LEN: usize = 56;
/// `struct inet_diag_msg`.
const MSG_LEN: usize = 72;
/// Offset of `idiag_uid` in `struct inet_diag_msg`.
const MSG_UID: usize = 64;
/// Offset of `idiag_inode` in `struct inet_diag_msg`.
const MSG_INODE: usize = 68;
/// Offset of `idiag_sport` in `struct inet_diag_msg` (the socket id
/// follows 4 bytes of family, state, timer and retransmits).
const MSG_ID: usize = 4;

/// The owner of the client socket of a loopback TCP connection.
#[derive(Debug)]
pub struct TcpPeerCheck {
    diag: OwnedFd,
}

impl TcpPeerCheck {
    /// Opens the `sock_diag` netlink socket (before the sandbox; the
    /// lookups need only `send` and `recv` on it).
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain socket(2) call; the result is checked.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                NETLINK_SOCK_DIAG,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by socket(2) and is owned by no
        // one else.
        let diag = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { diag })
    }

    /// A second handle on the same netlink socket.
    pub fn try_clone(&self) -> io::Result<Self> {
        Ok(Self {
            diag: self.diag.try_clone()?,
        })
    }

    /// The uid owning the TCP socket at `client` connected to `server`
    /// (both on this host).
    pub fn client_uid(&self, server: SocketAddrV4, client: SocketAddrV4) -> io::Result<u32> {
        let seq = next_seq();
        let req = request(seq, client, server);
        // SAFETY: `req` is valid for reads of its length during the call;
        // the descriptor is ours. A netlink socket sends to the kernel.
        let sent = unsafe {
            libc::send(
                self.diag.as_raw_fd(),
                req.as_ptr().cast(),
                req.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        // The kernel queued its answer within the send; an answer to an
        // earlier request (whose reader gave up) is skipped by its number.
        let mut buf = [0u8; 1024];
        loop {
            // SAFETY: `buf` is valid for writes of its length during the
            // call; the descriptor is ours.
            let n = unsafe {
                libc::recv(
                    self.diag.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::WouldBlock {
                    return Err(io::Error::other("no answer from sock_diag"));
                }
                return Err(e);
            }
            match parse_reply(&buf[..n as usize], seq, client, server) {
                Reply::Uid(uid) => return Ok(uid),
                Reply::Error(e) => return Err(e),
                Reply::Other => {}
            }
        }
    }

    /// Checks the owner of the TCP socket at `client` connected to
    /// `server` against the process's allowed peer uids.
    pub fn check(&self, server: SocketAddrV4, client: SocketAddrV4) -> Result<u32, PeerError> {
        self.check_among(server, client, &settings().allowed_uids)
    }

    /// [`Self::check`] against `allowed` instead of the process's allowed
    /// peer uids.
    pub fn check_among(
        &self,
        server: SocketAddrV4,
        client: SocketAddrV4,
        allowed: &[u32],
    ) -> Result<u32, PeerError> {
        let uid = self.client_uid(server, client)?;
        if uid_allowed(uid, allowed) {
            return Ok(uid);
        }
        Err(PeerError::TcpNotAllowed {
            uid,
            allowed: allowed
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(","),
        })
    }
}

/// Request numbers, so that a late answer is never taken for another's.
fn next_seq() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static SEQ: AtomicU32 = AtomicU32::new(1);
    SEQ.fetch_add(1, Ordering::Relaxed)
}

/// An exact-match `SOCK_DIAG_BY_FAMILY` request for the TCP socket whose
/// own address is `local` and whose peer is `remote`.
fn request(seq: u32, local: SocketAddrV4, remote: SocketAddrV4) -> [u8; NLMSG_HDR + REQ_LEN] {
    let mut m = [0u8; NLMSG_HDR + REQ_LEN];
    // struct nlmsghdr (host byte order).
    m[0..4].copy_from_slice(&((NLMSG_HDR + REQ_LEN) as u32).to_ne_bytes());
    m[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    m[6..8].copy_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    m[8..12].copy_from_slice(&seq.to_ne_bytes());
    // struct inet_diag_req_v2: family, protocol, ext, pad, states (all).
    let r = &mut m[NLMSG_HDR..];
    r[0] = libc::AF_INET as u8;
    r[1] = libc::IPPROTO_TCP as u8;
    r[4..8].copy_from_slice(&u32::MAX.to_ne_bytes());
    // struct inet_diag_sockid: ports and addresses in network order,
    // interface 0, cookie INET_DIAG_NOCOOKIE (an exact lookup by address).
    let id = &mut r[8..];
    id[0..2].copy_from_slice(&local.port().to_be_bytes());
    id[2..4].copy_from_slice(&remote.port().to_be_bytes());
    id[4..8].copy_from_slice(&local.ip().octets());
    id[20..24].copy_from_slice(&remote.ip().octets());
    id[40..48].copy_from_slice(&[0xff; 8]);
    m
}

/// What one netlink message said.
#[derive(Debug)]
enum Reply {
    /// The socket's owner.
    Uid(u32),
    /// The kernel's error for our request (e.g. `ENOENT`: no such socket).
    Error(io::Error),
    /// Not the answer to our request.
    Other,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Reads the kernel's answer to request `seq` about the socket at
/// `local` connected to `remote`. The answer must name exactly that pair
/// (for a pair without a socket the kernel may answer with a listener on
/// `local`) and a socket a process still holds (a nonzero inode): a
/// client that closed already is a time-wait or orphaned socket, whose
/// uid reads 0 (root) for time-wait, and is refused.
fn parse_reply(b: &[u8], seq: u32, local: SocketAddrV4, remote: SocketAddrV4) -> Reply {
    if b.len() < NLMSG_HDR || u32_at(b, 8) != seq {
        return Reply::Other;
    }
    let len = (u32_at(b, 0) as usize).min(b.len());
    let body = &b[NLMSG_HDR.min(len)..len];
    match u16_at(b, 4) {
        NLMSG_ERROR if body.len() >= 4 => {
            let errno = i32::from_ne_bytes([body[0], body[1], body[2], body[3]]);
            Reply::Error(io::Error::from_raw_os_error(errno.saturating_neg()))
        }
        SOCK_DIAG_BY_FAMILY if body.len() >= MSG_LEN => {
            let id = &body[MSG_ID..];
            let sport = u16::from_be_bytes([id[0], id[1]]);
            let dport = u16::from_be_bytes([id[2], id[3]]);
            let src = [id[4], id[5], id[6], id[7]];
            let dst = [id[20], id[21], id[22], id[23]];
            if body[0] != libc::AF_INET as u8
                || (sport, src) != (local.port(), local.ip().octets())
                || (dport, dst) != (remote.port(), remote.ip().octets())
            {
                return Reply::Error(io::Error::other("sock_diag answered about another socket"));
            }
            if u32_at(body, MSG_INODE) == 0 {
                return Reply::Error(io::Error::other(
                    "the client's socket is closed already (no owner to check)",
                ));
            }
            Reply::Uid(u32_at(body, MSG_UID))
        }
        _ => Reply::Error(io::Error::other("malformed sock_diag answer")),
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, TcpListener, TcpStream};

    use super::*;

    fn v4(addr: std::net::SocketAddr) -> SocketAddrV4 {
        match addr {
            std::net::SocketAddr::V4(a) => a,
            std::net::SocketAddr::V6(_) => panic!("IPv6"),
        }
    }

    /// A loopback connection: the server's address and the client's.
    fn connection() -> (TcpListener, TcpStream, SocketAddrV4, SocketAddrV4) {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let server = v4(l.local_addr().unwrap());
        let client = v4(c.local_addr().unwrap());
        (l, c, server, client)
    }

    #[test]
    fn the_client_of_a_loopback_connection_is_ours() {
        let Ok(check) = TcpPeerCheck::new() else {
            eprintln!("note: no NETLINK_SOCK_DIAG socket here; skipped");
            return;
        };
        let (_l, _c, server, client) = connection();
        // SAFETY: plain credential query.
        let me = unsafe { libc::geteuid() };
        match check.client_uid(server, client) {
            Ok(uid) => assert_eq!(uid, me),
            Err(e) => panic!("sock_diag lookup failed (is tcp_diag loadable?): {e}"),
        }
        // Our own uid is allowed by default; a list without it refuses.
        assert_eq!(check.check(server, client).unwrap(), me);
        let e = check.check_among(server, client, &[me + 1]).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "its socket belongs to uid {me}, which is not allowed (allowed uids: {})",
                me + 1
            )
        );
        // The clone asks the same socket.
        assert_eq!(
            check
                .try_clone()
                .unwrap()
                .client_uid(server, client)
                .unwrap(),
            me
        );
    }

    /// A client that closed before the lookup: its socket is time-wait
    /// (uid 0 in the kernel's answer) or orphaned; never taken for root.
    #[test]
    fn a_client_that_closed_already_is_an_error_not_root() {
        let Ok(check) = TcpPeerCheck::new() else {
            return;
        };
        let (_l, c, server, client) = connection();
        drop(c);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let r = check.client_uid(server, client);
        assert!(r.is_err(), "{r:?}");
    }

    #[test]
    fn a_socket_that_does_not_exist_is_an_error() {
        let Ok(check) = TcpPeerCheck::new() else {
            return;
        };
        let (_l, _c, server, client) = connection();
        // No socket has this address pair: no uid.
        let other = SocketAddrV4::new(Ipv4Addr::LOCALHOST, client.port().wrapping_add(1).max(1));
        assert!(check.client_uid(server, other).is_err());
    }

    #[test]
    fn the_request_names_the_socket_by_its_addresses() {
        let local = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 40000);
        let remote = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 2), 6520);
        let m = request(7, local, remote);
        assert_eq!(u32_at(&m, 0) as usize, m.len());
        assert_eq!((u16_at(&m, 4), u16_at(&m, 6), u32_at(&m, 8)), (20, 1, 7));
        let r = &m[NLMSG_HDR..];
        assert_eq!((r[0], r[1]), (libc::AF_INET as u8, libc::IPPROTO_TCP as u8));
        assert_eq!(&r[8..12], &[0x9c, 0x40, 0x19, 0x78]);
        assert_eq!(&r[12..16], &[127, 0, 0, 1]);
        assert_eq!(&r[28..32], &[127, 0, 0, 2]);
        assert_eq!(&r[48..56], &[0xff; 8]);
    }

    #[test]
    fn replies_are_matched_and_checked() {
        let local = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 40000);
        let mut msg = vec![0u8; NLMSG_HDR + MSG_LEN];
        let len = msg.len() as u32;
        msg[0..4].copy_from_slice(&len.to_ne_bytes());
        msg[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        msg[8..12].copy_from_slice(&9u32.to_ne_bytes());
        let body = NLMSG_HDR;
        msg[body] = libc::AF_INET as u8;
        msg[body + MSG_ID..body + MSG_ID + 2].copy_from_slice(&40000u16.to_be_bytes());
        msg[body + MSG_ID + 4..body + MSG_ID + 8].copy_from_slice(&[127, 0, 0, 1]);
        msg[body + MSG_ID + 2..body + MSG_ID + 4].copy_from_slice(&6520u16.to_be_bytes());
        msg[body + MSG_ID + 20..body + MSG_ID + 24].copy_from_slice(&[127, 0, 0, 1]);
        msg[body + MSG_UID..body + MSG_UID + 4].copy_from_slice(&1234u32.to_ne_bytes());
        msg[body + MSG_INODE..body + MSG_INODE + 4].copy_from_slice(&77u32.to_ne_bytes());
        let server = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 6520);
        assert!(matches!(
            parse_reply(&msg, 9, local, server),
            Reply::Uid(1234)
        ));
        // Another request's answer is skipped.
        assert!(matches!(parse_reply(&msg, 8, local, server), Reply::Other));
        // An answer about another socket is an error, not its uid: another
        // local end, or another peer (a listener on the client's port).
        let other = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 40001);
        assert!(matches!(
            parse_reply(&msg, 9, other, server),
            Reply::Error(_)
        ));
        assert!(matches!(
            parse_reply(&msg, 9, local, other),
            Reply::Error(_)
        ));
        // Cut short: malformed.
        assert!(matches!(
            parse_reply(&msg[..40], 9, local, server),
            Reply::Error(_)
        ));
        // No process holds the socket (inode 0: time-wait reads uid 0).
        msg[body + MSG_INODE..body + MSG_INODE + 4].copy_from_slice(&0u32.to_ne_bytes());
        msg[body + MSG_UID..body + MSG_UID + 4].copy_from_slice(&0u32.to_ne_bytes());
        assert!(matches!(
            parse_reply(&msg, 9, local, server),
            Reply::Error(_)
        ));
        // The kernel's error.
        let mut err = vec![0u8; NLMSG_HDR + 4];
        let len = err.len() as u32;
        err[0..4].copy_from_slice(&len.to_ne_bytes());
        err[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        err[8..12].copy_from_slice(&9u32.to_ne_bytes());
        err[NLMSG_HDR..].copy_from_slice(&(-libc::ENOENT).to_ne_bytes());
        match parse_reply(&err, 9, local, server) {
            Reply::Error(e) => assert_eq!(e.raw_os_error(), Some(libc::ENOENT)),
            r => panic!("{r:?}"),
        }
        // Too short to be anything.
        assert!(matches!(
            parse_reply(&[0u8; 8], 9, local, server),
            Reply::Other
        ));
    }
}
