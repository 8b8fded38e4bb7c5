//! The virtio-net device: configuration space, features, and how its
//! worker starts (with the tap's offloads set from the acked features).

use super::tap::NetBackend;
use super::worker::{NetLimiters, NetWorker};
use super::{tap_offload_flags, OFFERED_FEATURES, QUEUE_SIZE, RX_QUEUE, STATUS_LINK_UP, TX_QUEUE};
use crate::virtio::{
    device_type, read_config_bytes, ActivateContext, ActivateError, Activation, Lifecycle,
    StartError, VirtioDevice,
};

/// A virtio network card. Its backend belongs to the worker while the
/// driver runs the device and comes back on reset.
pub struct Net {
    lifecycle: Lifecycle<NetWorker>,
    /// `struct virtio_net_config`: mac[6], status (le16).
    config: [u8; 8],
}

impl Net {
    /// A card with MAC address `mac` whose frames go to `backend`.
    pub fn new(backend: Box<dyn NetBackend>, mac: [u8; 6]) -> Self {
        let mut config = [0u8; 8];
        config[..6].copy_from_slice(&mac);
        config[6..].copy_from_slice(&STATUS_LINK_UP.to_le_bytes());
        Self {
            lifecycle: Lifecycle::new((backend, NetLimiters::unlimited())),
            config,
        }
    }

    /// The card with `limiters` for its two directions (kept across
    /// resets).
    pub fn with_rate_limiters(mut self, limiters: NetLimiters) -> Self {
        if let Some((_, kept)) = self.lifecycle.backend_mut() {
            *kept = limiters;
        }
        self
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        device_type::NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        OFFERED_FEATURES
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        self.lifecycle
            .activate(ctx, |act: Activation<2>, (mut backend, limiters)| {
                // The host may only send what the driver accepts.
                let offload = tap_offload_flags(act.acked_features);
                if let Err(e) = backend.set_offload(offload) {
                    return Err(StartError::new(
                        ActivateError::Worker(e),
                        (backend, limiters),
                    ));
                }
                debug_assert_eq!((RX_QUEUE, TX_QUEUE), (0, 1));
                Ok(NetWorker::new(
                    act.mem,
                    act.interrupt,
                    act.queues,
                    backend,
                    act.acked_features,
                )
                .with_rate_limiters(limiters))
            })
    }

    fn reset(&mut self) {
        self.lifecycle.reset();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use vm_memory::{Bytes, GuestAddress};

    use super::*;
    use crate::virtio::net::test_backend::{backend_pair, Peer};
    use crate::virtio::net::{
        F_CSUM, F_GUEST_CSUM, F_GUEST_TSO4, F_HOST_TSO4, F_MAC, F_STATUS, HDR_F_NEEDS_CSUM,
        HDR_GSO_TCPV4, MAX_FRAME_LEN, VNET_HDR_LEN,
    };
    use crate::virtio::test_utils::{
        guest_memory, virtio_lifecycle_tests, DeviceHarness, LifecycleTest, DATA_START, PROBE_AREA,
        TEST_MEM_SIZE, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE,
    };
    use crate::virtio::ActivateContext;

    const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
    const VRING_DESC_F_INDIRECT: u16 = 4;

    fn new_net() -> (Net, Peer) {
        let (backend, peer) = backend_pair();
        (Net::new(backend, MAC), peer)
    }

    /// A frame as the guest lays it out: header then `payload_len` bytes.
    fn frame(flags: u8, gso: u8, payload_len: usize, seed: u8) -> Vec<u8> {
        let mut f = vec![0u8; VNET_HDR_LEN];
        f[0] = flags;
        f[1] = gso;
        f.extend((0..payload_len).map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed)));
        f
    }

    const RX: usize = 0;
    const TX: usize = 1;
    const QSIZE: u16 = 256;
    const SHORT: Duration = Duration::from_millis(200);
    const LONG: Duration = Duration::from_secs(5);

    impl LifecycleTest for Net {
        type Fixture = Peer;

        fn create() -> (Self, Peer) {
            new_net()
        }

        fn is_active(&self) -> bool {
            self.lifecycle.is_active()
        }

        /// Sends one frame; it must reach the backend unchanged.
        fn assert_serves(peer: &mut Peer, h: &DeviceHarness) {
            let f = frame(0, 0, 60, 9);
            h.mem.write_slice(&f, GuestAddress(PROBE_AREA)).unwrap();
            let head = h.post(TX, &[(PROBE_AREA, f.len() as u32, 0)]);
            assert_eq!(h.wait_for_head(TX, head), 0);
            assert_eq!(peer.recv(LONG).as_deref(), Some(&f[..]));
        }
    }

    virtio_lifecycle_tests!(Net);

    #[test]
    fn config_space_and_features() {
        let (net, _peer) = new_net();
        assert_eq!(net.device_type(), 1);
        assert_eq!(net.queue_max_sizes(), &[256, 256]);
        let mut cfg = [0u8; 8];
        net.read_config(0, &mut cfg);
        assert_eq!(&cfg[..6], &MAC);
        assert_eq!(u16::from_le_bytes([cfg[6], cfg[7]]), 1, "link up");
        let mut past = [0xffu8; 4];
        net.read_config(8, &mut past);
        assert_eq!(past, [0; 4]);
        let f = net.features();
        assert_ne!(f & F_MAC, 0);
        assert_ne!(f & F_STATUS, 0);
        assert_eq!(f & (1 << 15), 0, "no MRG_RXBUF");
        assert_eq!(f & (1 << 17), 0, "no control queue");
    }

    #[test]
    fn activation_sets_tap_offloads_from_acked_features() {
        let mem = guest_memory();
        let (mut net, peer) = new_net();
        let _h = DeviceHarness::activate(&mem, &mut net, QSIZE);
        assert_eq!(
            peer.offload.load(Ordering::SeqCst),
            libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_TSO_ECN
        );
        net.reset();
    }

    #[test]
    fn transmitted_frames_reach_the_backend_unchanged() {
        let mem = guest_memory();
        let (mut net, peer) = new_net();
        let h = DeviceHarness::activate(&mem, &mut net, QSIZE);
        // Header and payload in separate descriptors, as Linux sends them.
        let f = frame(HDR_F_NEEDS_CSUM, HDR_GSO_TCPV4, 1500, 3);
        mem.write_slice(&f[..VNET_HDR_LEN], GuestAddress(DATA_START))
            .unwrap();
        mem.write_slice(&f[VNET_HDR_LEN..], GuestAddress(DATA_START + 0x1000))
            .unwrap();
        h.add_chain(
            TX,
            0,
            &[
                (DATA_START, VNET_HDR_LEN as u32, 0),
                (DATA_START + 0x1000, 1500, 0),
            ],
        );
        h.wait_used(TX, 1);
        assert_eq!(h.used_elem(TX, 0), (0, 0));
        assert_eq!(peer.recv(LONG).as_deref(), Some(&f[..]));
        net.reset();
    }

    #[test]
    fn indirect_transmit_chains_are_followed() {
        let mem = guest_memory();
        let (mut net, peer) = new_net();
        let h = DeviceHarness::activate(&mem, &mut net, QSIZE);
        let f = frame(0, 0, 100, 9);
        mem.write_slice(&f, GuestAddress(DATA_START)).unwrap();
        // Indirect table of two descriptors: header, payload.
        let table = DATA_START + 0x10_0000;
        let mut raw = Vec::new();
        for (addr, len, flags, next) in [
            (DATA_START, VNET_HDR_LEN as u32, VRING_DESC_F_NEXT, 1u16),
            (DATA_START + VNET_HDR_LEN as u64, 100, 0, 0),
        ] {
            raw.extend(addr.to_le_bytes());
            raw.extend(len.to_le_bytes());
            raw.extend(flags.to_le_bytes());
            raw.extend(next.to_le_bytes());
        }
        mem.write_slice(&raw, GuestAddress(table)).unwrap();
        h.add_chain(TX, 0, &[(table, 32, VRING_DESC_F_INDIRECT)]);
        h.wait_used(TX, 1);
        assert_eq!(peer.recv(LONG).as_deref(), Some(&f[..]));
        net.reset();
    }

    #[test]
    fn received_frames_fill_guest_buffers() {
        let mem = guest_memory();
        let (mut net, peer) = new_net();
        let h = DeviceHarness::activate(&mem, &mut net, QSIZE);
        // Header and data in separate descriptors (Linux big-packet style).
        h.add_chain(
            RX,
            0,
            &[
                (DATA_START, VNET_HDR_LEN as u32, VRING_DESC_F_WRITE),
                (DATA_START + 0x1000, 4096, VRING_DESC_F_WRITE),
            ],
        );
        let f = frame(0, 0, 1514, 5);
        peer.send(&f);
        h.wait_used(RX, 1);
        assert_eq!(h.used_elem(RX, 0), (0, f.len() as u32));
        let mut expect = f.clone();
        expect[10] = 1; // num_buffers
        let mut got = h.read(DATA_START, VNET_HDR_LEN);
        got.extend(h.read(DATA_START + 0x1000, 1514));
        assert_eq!(got, expect);
        h.wait_used_interrupt();
        net.reset();
    }

    #[test]
    fn frames_wait_while_the_guest_has_no_buffers() {
        let mem = guest_memory();
        let (mut net, peer) = new_net();
        let h = DeviceHarness::activate(&mem, &mut net, QSIZE);
        let frames: Vec<Vec<u8>> = (0..3).map(|i| frame(0, 0, 60 + i, i as u8)).collect();
        for f in &frames {
            peer.send(f);
        }
        std::thread::sleep(SHORT);
        assert_eq!(h.queues[RX].used().idx().load(), 0);
        for (i, f) in frames.iter().enumerate() {
            let addr = DATA_START + i as u64 * 0x1000;
            h.add_chain(RX, i as u16, &[(addr, 2048, VRING_DESC_F_WRITE)]);
            h.wait_used(RX, i as u16 + 1);
            assert_eq!(h.used_elem(RX, i as u16), (i as u32, f.len() as u32));
            assert_eq!(h.read(addr + 12, f.len() - 12), &f[12..]);
        }
        // Buffers posted before frames arrive are used when they do.
        h.add_chain(RX, 3, &[(DATA_START, 2048, VRING_DESC_F_WRITE)]);
        std::thread::sleep(SHORT);
        assert_eq!(h.queues[RX].used().idx().load(), 3);
        peer.send(&frames[0]);
        h.wait_used(RX, 4);
        assert_eq!(h.used_elem(RX, 3), (3, frames[0].len() as u32));
        net.reset();
    }

    /// Asserts that the transmit chain at `idx` was dropped: used with
    /// length 0 and nothing reached the backend.
    fn assert_tx_dropped(h: &DeviceHarness, peer: &Peer, idx: u16, what: &str) {
        h.wait_used(TX, idx + 1);
        assert_eq!(h.used_elem(TX, idx).1, 0, "{what}");
        assert_eq!(peer.recv(Duration::from_millis(20)), None, "{what}");
    }

    #[test]
    fn hostile_transmit_chains_are_dropped_and_the_device_keeps_serving() {
        let mem = guest_memory();
        let (mut net, peer) = new_net();
        let h = DeviceHarness::activate(&mem, &mut net, QSIZE);
        let good = frame(0, 0, 64, 1);
        mem.write_slice(&good, GuestAddress(DATA_START)).unwrap();
        let len = good.len() as u32;
        let mut i = 0u16;
        let mut next = |h: &DeviceHarness, descs: &[(u64, u32, u16)], what: &str| {
            h.add_chain(TX, i * 4, descs);
            assert_tx_dropped(h, &peer, i, what);
            i += 1;
        };
        next(
            &h,
            &[(DATA_START, len, VRING_DESC_F_WRITE)],
            "device-writable",
        );
        next(
            &h,
            &[
                (DATA_START, 12, 0),
                (DATA_START + 12, len - 12, VRING_DESC_F_WRITE),
            ],
            "writable tail",
        );
        next(
            &h,
            &[(TEST_MEM_SIZE as u64 + 0x1000, len, 0)],
            "out of range",
        );
        next(&h, &[(TEST_MEM_SIZE as u64 - 16, len, 0)], "straddling");
        next(&h, &[(u64::MAX - 8, len, 0)], "address overflow");
        next(&h, &[(DATA_START, 0, 0)], "zero-length");
        next(&h, &[(DATA_START, 12 + 13, 0)], "runt");
        next(
            &h,
            &[(DATA_START, (VNET_HDR_LEN + MAX_FRAME_LEN + 1) as u32, 0)],
            "oversize",
        );
        next(
            &h,
            &[
                (DATA_START, 0x8000, 0),
                (DATA_START, 0x8000, 0),
                (DATA_START, 0x8000, 0),
            ],
            "oversize in pieces",
        );
        next(&h, &[(DATA_START, u32::MAX, 0)], "4 GiB");
        // Offload that does not exist (UDP_L4 was never offered).
        let bad = frame(HDR_F_NEEDS_CSUM, 5, 64, 1);
        mem.write_slice(&bad, GuestAddress(DATA_START + 0x4000))
            .unwrap();
        next(&h, &[(DATA_START + 0x4000, len, 0)], "unknown GSO type");
        // A descriptor loop: 200 -> 201 -> 200. The chain ends after the
        // queue size worth of descriptors and is far above 64 KiB by then.
        h.add_raw_chain(
            TX,
            200,
            &[
                (DATA_START, 0x1000, VRING_DESC_F_NEXT, 201),
                (DATA_START, 0x1000, VRING_DESC_F_NEXT, 200),
            ],
        );
        assert_tx_dropped(&h, &peer, i, "loop");
        i += 1;
        // Still serving.
        h.add_chain(TX, 250, &[(DATA_START, len, 0)]);
        h.wait_used(TX, i + 1);
        assert_eq!(peer.recv(LONG).as_deref(), Some(&good[..]));
        net.reset();
    }

    #[test]
    fn transmit_offloads_must_be_negotiated() {
        let mem = guest_memory();
        let (mut net, peer) = new_net();
        // A driver that acked nothing but VERSION_1.
        let h = DeviceHarness::activate(&mem, &mut NoOffloads(&mut net), QSIZE);
        let f = frame(HDR_F_NEEDS_CSUM, 0, 64, 1);
        mem.write_slice(&f, GuestAddress(DATA_START)).unwrap();
        h.add_chain(TX, 0, &[(DATA_START, f.len() as u32, 0)]);
        assert_tx_dropped(&h, &peer, 0, "csum without F_CSUM");
        assert_eq!(peer.offload.load(Ordering::SeqCst), 0);
        net.reset();
    }

    /// Wraps a device so that the harness acks only `VIRTIO_F_VERSION_1`.
    struct NoOffloads<'a>(&'a mut Net);

    impl VirtioDevice for NoOffloads<'_> {
        fn device_type(&self) -> u32 {
            self.0.device_type()
        }
        fn queue_max_sizes(&self) -> &[u16] {
            self.0.queue_max_sizes()
        }
        fn features(&self) -> u64 {
            0
        }
        fn read_config(&self, offset: u64, data: &mut [u8]) {
            self.0.read_config(offset, data)
        }
        fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
            assert_eq!(
                ctx.acked_features & (F_CSUM | F_GUEST_CSUM | F_GUEST_TSO4 | F_HOST_TSO4),
                0
            );
            self.0.activate(ctx)
        }
        fn reset(&mut self) {
            self.0.reset()
        }
    }

    #[test]
    fn without_guest_csum_received_checksum_flags_are_cleared() {
        let mem = guest_memory();
        let (mut net, peer) = new_net();
        let h = DeviceHarness::activate(&mem, &mut NoOffloads(&mut net), QSIZE);
        h.add_chain(RX, 0, &[(DATA_START, 2048, VRING_DESC_F_WRITE)]);
        let f = frame(crate::virtio::net::HDR_F_DATA_VALID, 0, 60, 2);
        peer.send(&f);
        h.wait_used(RX, 1);
        assert_eq!(h.read(DATA_START, 1), vec![0]);
        net.reset();
    }

    #[test]
    fn hostile_receive_chains_are_dropped_and_the_device_keeps_serving() {
        let mem = guest_memory();
        let (mut net, peer) = new_net();
        let h = DeviceHarness::activate(&mem, &mut net, QSIZE);
        let big = frame(0, 0, 200, 1);
        let small = frame(0, 0, 60, 2);
        peer.send(&big);
        peer.send(&small);
        type Chain = Vec<(u64, u32, u16)>;
        let bad: [(&str, Chain); 5] = [
            ("read-only", vec![(DATA_START, 2048, 0)]),
            (
                "read-only tail",
                vec![
                    (DATA_START, 12, VRING_DESC_F_WRITE),
                    (DATA_START + 12, 2048, 0),
                ],
            ),
            (
                "smaller than the header",
                vec![(DATA_START, 8, VRING_DESC_F_WRITE)],
            ),
            (
                "out of range",
                vec![(TEST_MEM_SIZE as u64 - 100, 2048, VRING_DESC_F_WRITE)],
            ),
            ("zero-length", vec![(DATA_START, 0, VRING_DESC_F_WRITE)]),
        ];
        for (i, (what, descs)) in bad.iter().enumerate() {
            let i = i as u16;
            h.add_chain(RX, i * 4, descs);
            h.wait_used(RX, i + 1);
            assert_eq!(h.used_elem(RX, i), (u32::from(i * 4), 0), "{what}");
        }
        // Nothing was written into the read-only buffer.
        assert_eq!(h.read(DATA_START + 12, 16), vec![0; 16]);
        // A buffer too small for the first frame: that frame is dropped.
        h.add_chain(RX, 40, &[(DATA_START, 100, VRING_DESC_F_WRITE)]);
        h.wait_used(RX, 6);
        assert_eq!(h.used_elem(RX, 5), (40, 0));
        // The next frame lands in the next good buffer.
        h.add_chain(RX, 50, &[(DATA_START + 0x1000, 2048, VRING_DESC_F_WRITE)]);
        h.wait_used(RX, 7);
        assert_eq!(h.used_elem(RX, 6), (50, small.len() as u32));
        assert_eq!(h.read(DATA_START + 0x1000 + 12, 60), &small[12..]);
        net.reset();
    }

    #[test]
    fn reset_returns_the_backend_for_reactivation() {
        let mem = guest_memory();
        let (mut net, peer) = new_net();
        let _ = DeviceHarness::activate(&mem, &mut net, QSIZE);
        net.reset();
        net.reset();
        let h = DeviceHarness::activate(&mem, &mut net, QSIZE);
        let f = frame(0, 0, 60, 4);
        mem.write_slice(&f, GuestAddress(DATA_START)).unwrap();
        h.add_chain(TX, 0, &[(DATA_START, f.len() as u32, 0)]);
        h.wait_used(TX, 1);
        assert_eq!(peer.recv(LONG).as_deref(), Some(&f[..]));
        net.reset();
    }

    #[test]
    fn many_frames_both_ways() {
        let mem = guest_memory();
        let (mut net, peer) = new_net();
        let h = DeviceHarness::activate(&mem, &mut net, QSIZE);
        // 200 full-size TSO frames in, 200 out.
        let f = frame(HDR_F_NEEDS_CSUM, HDR_GSO_TCPV4, MAX_FRAME_LEN, 7);
        mem.write_slice(&f, GuestAddress(DATA_START)).unwrap();
        for i in 0..200u16 {
            h.add_chain(TX, i, &[(DATA_START, f.len() as u32, 0)]);
        }
        for _ in 0..200 {
            assert_eq!(peer.recv(LONG).map(|v| v.len()), Some(f.len()));
        }
        h.wait_used(TX, 200);
        let rx_buf = |i: u16| DATA_START + 0x20_0000 + u64::from(i % 8) * 0x2_0000;
        for i in 0..200u16 {
            h.add_chain(RX, i, &[(rx_buf(i), 0x2_0000, VRING_DESC_F_WRITE)]);
            peer.send(&f);
            h.wait_used(RX, i + 1);
            assert_eq!(h.used_elem(RX, i), (u32::from(i), f.len() as u32));
        }
        assert_eq!(h.read(rx_buf(199) + 12, 64), &f[12..76]);
        net.reset();
    }

    fn limited_net(rx: &str, tx: &str) -> (Net, Peer) {
        use crate::virtio::rate_limiter::{RateLimit, RateLimiter};
        let limiter = |ops: &str| {
            RateLimiter::new(RateLimit {
                bandwidth: None,
                ops: Some(ops.parse().unwrap()),
            })
            .unwrap()
        };
        let (net, peer) = new_net();
        let limiters = crate::virtio::net::worker::NetLimiters {
            rx: limiter(rx),
            tx: limiter(tx),
        };
        (net.with_rate_limiters(limiters), peer)
    }

    #[test]
    fn rate_limiters_pace_each_direction() {
        use std::time::Instant;
        // 2 frames at once, then one per 100 ms, each way.
        let mem = guest_memory();
        let (mut net, peer) = limited_net("2:200", "2:200");
        let h = DeviceHarness::activate(&mem, &mut net, QSIZE);
        let f = frame(0, 0, 60, 1);
        let started = Instant::now();
        for i in 0..6u64 {
            let at = DATA_START + i * 0x1000;
            mem.write_slice(&f, GuestAddress(at)).unwrap();
            h.post(TX, &[(at, f.len() as u32, 0)]);
        }
        for _ in 0..6 {
            assert_eq!(peer.recv(LONG).as_deref(), Some(&f[..]));
        }
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(350),
            "6 frames sent in {took:?}"
        );
        h.wait_used(TX, 6);

        // Receive: 6 frames wait in the backend; the guest has buffers.
        for i in 0..6u64 {
            let at = DATA_START + 0x10_0000 + i * 0x1000;
            h.post(RX, &[(at, 2048, VRING_DESC_F_WRITE)]);
        }
        let started = Instant::now();
        for _ in 0..6 {
            peer.send(&f);
        }
        h.wait_used(RX, 2);
        h.wait_used(RX, 6);
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(350),
            "6 frames received in {took:?}"
        );
        assert!((0..6).all(|i| h.used_elem(RX, i).1 == f.len() as u32));
        net.reset();
    }
}
