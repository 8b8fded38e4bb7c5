//! virtio-net: a network card whose frames go to a host tap device.
//!
//! Two queues: `receiveq` (0, guest buffers the device fills with frames from
//! the tap) and `transmitq` (1, frames the guest sends). No control queue.
//! Every buffer starts with the 12-byte `virtio_net_hdr_v1`; the tap is set to
//! the same header size (`TUNSETVNETHDRSZ`), so frames move between tap and
//! guest buffers with one `readv`/`writev` and no copy or translation.
//!
//! Offloads are end to end: the guest's checksum/TSO requests travel in the
//! header to the host kernel, which honours or checks them, and the host may
//! send the guest partial checksums and 64 KiB TSO frames only for what the
//! driver acked (`TUNSETOFFLOAD` is set from the acked features at
//! activation). Without `VIRTIO_NET_F_MRG_RXBUF` each received frame fills one
//! descriptor chain; Linux then posts 64 KiB+ "big" buffers when it acks
//! guest TSO.
//!
//! The guest's stock `virtio_net` driver binds it.

mod device;
mod iovec;
mod tap;
#[cfg(test)]
mod test_backend;
mod worker;

pub use device::Net;
pub use iovec::{IoVecError, IoVecs, MAX_SEGMENTS};
pub use tap::{NetBackend, Tap, TapError};
pub use worker::NetLimiters;

/// Entry points for the fuzz targets in `fuzz/` (not a stable API): the
/// worker's queue processing without its thread and epoll loop.
#[doc(hidden)]
pub mod fuzzing {
    pub use super::worker::{NetWorker, RxStatus, TxStatus};
}

use virtio_bindings::virtio_net;

use super::VIRTIO_RING_F_EVENT_IDX;

/// Size of each queue.
pub const QUEUE_SIZE: u16 = 256;
/// Index of the receive queue.
pub const RX_QUEUE: usize = 0;
/// Index of the transmit queue.
pub const TX_QUEUE: usize = 1;

/// Length of `struct virtio_net_hdr_v1` (with `num_buffers`), which starts
/// every frame in both directions when `VIRTIO_F_VERSION_1` is negotiated.
pub const VNET_HDR_LEN: usize = 12;
/// Offset of `num_buffers` in the header.
pub const VNET_HDR_NUM_BUFFERS: usize = 10;
/// Ethernet header length; shorter frames are runts.
pub const ETH_HLEN: usize = 14;
/// Largest frame (after the virtio-net header): 64 KiB of TSO payload plus an
/// Ethernet header with a VLAN tag.
pub const MAX_FRAME_LEN: usize = 65536 + 18;

const fn bit(n: u32) -> u64 {
    1 << n
}

/// `VIRTIO_NET_F_CSUM`: the guest may send partially checksummed frames.
pub const F_CSUM: u64 = bit(virtio_net::VIRTIO_NET_F_CSUM);
/// `VIRTIO_NET_F_GUEST_CSUM`: the guest accepts partially checksummed frames.
pub const F_GUEST_CSUM: u64 = bit(virtio_net::VIRTIO_NET_F_GUEST_CSUM);
/// `VIRTIO_NET_F_MAC`: the configuration space holds the MAC address.
pub const F_MAC: u64 = bit(virtio_net::VIRTIO_NET_F_MAC);
/// `VIRTIO_NET_F_GUEST_TSO4`: the guest accepts TCPv4 segmentation offload.
pub const F_GUEST_TSO4: u64 = bit(virtio_net::VIRTIO_NET_F_GUEST_TSO4);
/// `VIRTIO_NET_F_GUEST_TSO6`: the guest accepts TCPv6 segmentation offload.
pub const F_GUEST_TSO6: u64 = bit(virtio_net::VIRTIO_NET_F_GUEST_TSO6);
/// `VIRTIO_NET_F_GUEST_ECN`: the guest accepts TSO with ECN.
pub const F_GUEST_ECN: u64 = bit(virtio_net::VIRTIO_NET_F_GUEST_ECN);
/// `VIRTIO_NET_F_HOST_TSO4`: the guest may send TCPv4 TSO frames.
pub const F_HOST_TSO4: u64 = bit(virtio_net::VIRTIO_NET_F_HOST_TSO4);
/// `VIRTIO_NET_F_HOST_TSO6`: the guest may send TCPv6 TSO frames.
pub const F_HOST_TSO6: u64 = bit(virtio_net::VIRTIO_NET_F_HOST_TSO6);
/// `VIRTIO_NET_F_HOST_ECN`: the guest may send TSO frames with ECN.
pub const F_HOST_ECN: u64 = bit(virtio_net::VIRTIO_NET_F_HOST_ECN);
/// `VIRTIO_NET_F_STATUS`: the configuration space holds the link status.
pub const F_STATUS: u64 = bit(virtio_net::VIRTIO_NET_F_STATUS);
/// `VIRTIO_F_INDIRECT_DESC`: chains may use indirect descriptor tables (Linux
/// uses them for its 19-segment big receive buffers and for TSO sends).
pub const F_RING_INDIRECT_DESC: u64 = bit(28);

/// Everything the device offers (the transport adds `VIRTIO_F_VERSION_1`).
/// Not offered: `MRG_RXBUF`, `CTRL_VQ`, `MQ`, `MTU`, UFO/USO, hashing.
pub const OFFERED_FEATURES: u64 = F_CSUM
    | F_GUEST_CSUM
    | F_MAC
    | F_GUEST_TSO4
    | F_GUEST_TSO6
    | F_GUEST_ECN
    | F_HOST_TSO4
    | F_HOST_TSO6
    | F_HOST_ECN
    | F_STATUS
    | F_RING_INDIRECT_DESC
    | VIRTIO_RING_F_EVENT_IDX;

/// Header flag: the guest/host must complete the checksum.
pub const HDR_F_NEEDS_CSUM: u8 = virtio_net::VIRTIO_NET_HDR_F_NEEDS_CSUM as u8;
/// Header flag: the checksum was already validated.
pub const HDR_F_DATA_VALID: u8 = virtio_net::VIRTIO_NET_HDR_F_DATA_VALID as u8;
/// GSO type: none.
pub const HDR_GSO_NONE: u8 = virtio_net::VIRTIO_NET_HDR_GSO_NONE as u8;
/// GSO type: TCPv4.
pub const HDR_GSO_TCPV4: u8 = virtio_net::VIRTIO_NET_HDR_GSO_TCPV4 as u8;
/// GSO type: TCPv6.
pub const HDR_GSO_TCPV6: u8 = virtio_net::VIRTIO_NET_HDR_GSO_TCPV6 as u8;
/// GSO type modifier: ECN.
pub const HDR_GSO_ECN: u8 = virtio_net::VIRTIO_NET_HDR_GSO_ECN as u8;

/// `VIRTIO_NET_S_LINK_UP` in the status field.
pub const STATUS_LINK_UP: u16 = virtio_net::VIRTIO_NET_S_LINK_UP as u16;

/// The tap offloads (`TUN_F_*`) that match the receive-side features the
/// driver acked: the host may only send what the guest accepts. TSO needs
/// checksum offload (the kernel refuses TSO without `TUN_F_CSUM`).
pub fn tap_offload_flags(acked: u64) -> u32 {
    if acked & F_GUEST_CSUM == 0 {
        return 0;
    }
    let mut flags = libc::TUN_F_CSUM;
    if acked & F_GUEST_TSO4 != 0 {
        flags |= libc::TUN_F_TSO4;
    }
    if acked & F_GUEST_TSO6 != 0 {
        flags |= libc::TUN_F_TSO6;
    }
    if acked & F_GUEST_ECN != 0 && acked & (F_GUEST_TSO4 | F_GUEST_TSO6) != 0 {
        flags |= libc::TUN_F_TSO_ECN;
    }
    flags
}

/// Why a transmitted frame's header is refused: it asks for an offload the
/// driver did not negotiate (or that does not exist).
pub fn check_tx_header(hdr: &[u8; VNET_HDR_LEN], acked: u64) -> Result<(), &'static str> {
    let flags = hdr[0];
    let gso = hdr[1];
    if flags & HDR_F_NEEDS_CSUM != 0 && acked & F_CSUM == 0 {
        return Err("checksum offload requested without VIRTIO_NET_F_CSUM");
    }
    let ecn = gso & HDR_GSO_ECN != 0;
    let negotiated = match gso & !HDR_GSO_ECN {
        HDR_GSO_NONE => !ecn,
        HDR_GSO_TCPV4 => acked & F_HOST_TSO4 != 0,
        HDR_GSO_TCPV6 => acked & F_HOST_TSO6 != 0,
        _ => false,
    };
    if !negotiated {
        return Err("segmentation offload type not negotiated");
    }
    if ecn && acked & F_HOST_ECN == 0 {
        return Err("ECN segmentation without VIRTIO_NET_F_HOST_ECN");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offload_flags_follow_acked_features() {
        assert_eq!(tap_offload_flags(0), 0);
        // TSO without checksum offload is not passed to the tap.
        assert_eq!(tap_offload_flags(F_GUEST_TSO4 | F_GUEST_TSO6), 0);
        assert_eq!(tap_offload_flags(F_GUEST_CSUM), libc::TUN_F_CSUM);
        assert_eq!(
            tap_offload_flags(OFFERED_FEATURES),
            libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_TSO_ECN
        );
        assert_eq!(
            tap_offload_flags(F_GUEST_CSUM | F_GUEST_ECN),
            libc::TUN_F_CSUM
        );
    }

    #[test]
    fn tx_headers_must_match_negotiated_offloads() {
        let hdr = |flags: u8, gso: u8| {
            let mut h = [0u8; VNET_HDR_LEN];
            h[0] = flags;
            h[1] = gso;
            h
        };
        assert!(check_tx_header(&hdr(0, HDR_GSO_NONE), 0).is_ok());
        assert!(check_tx_header(&hdr(HDR_F_NEEDS_CSUM, 0), 0).is_err());
        assert!(check_tx_header(&hdr(HDR_F_NEEDS_CSUM, 0), F_CSUM).is_ok());
        assert!(check_tx_header(&hdr(HDR_F_NEEDS_CSUM, HDR_GSO_TCPV4), F_CSUM).is_err());
        let all = OFFERED_FEATURES;
        assert!(check_tx_header(&hdr(HDR_F_NEEDS_CSUM, HDR_GSO_TCPV4), all).is_ok());
        assert!(check_tx_header(&hdr(HDR_F_NEEDS_CSUM, HDR_GSO_TCPV6), all).is_ok());
        assert!(check_tx_header(&hdr(HDR_F_NEEDS_CSUM, HDR_GSO_TCPV6 | HDR_GSO_ECN), all).is_ok());
        assert!(check_tx_header(
            &hdr(HDR_F_NEEDS_CSUM, HDR_GSO_TCPV4 | HDR_GSO_ECN),
            all & !F_HOST_ECN
        )
        .is_err());
        // UDP (3), UDP_L4 (5) and unknown types are never offered.
        for gso in [3u8, 5, 6, 0x7f, HDR_GSO_ECN] {
            assert!(check_tx_header(&hdr(0, gso), all).is_err(), "{gso}");
        }
    }
}
