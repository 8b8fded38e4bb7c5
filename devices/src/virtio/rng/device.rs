//! The virtio-rng device: what it offers and how its worker starts.

use super::worker::RngWorker;
use super::QUEUE_SIZE;
use crate::virtio::rate_limiter::RateLimiter;
use crate::virtio::{
    device_type, ActivateContext, ActivateError, Activation, Lifecycle, VirtioDevice,
};

/// A virtio entropy device.
pub struct Rng {
    lifecycle: Lifecycle<RngWorker>,
}

impl Default for Rng {
    fn default() -> Self {
        Self::new()
    }
}

impl Rng {
    /// Creates an inactive device.
    pub fn new() -> Self {
        Self {
            lifecycle: Lifecycle::new(RateLimiter::unlimited()),
        }
    }

    /// The device with `limiter` for its requests (kept across resets).
    pub fn with_rate_limiter(mut self, limiter: RateLimiter) -> Self {
        self.lifecycle = Lifecycle::new(limiter);
        self
    }
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u32 {
        device_type::RNG
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    // No feature bits and no configuration space: the trait's defaults.

    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        self.lifecycle.activate(ctx, |act: Activation<1>, limiter| {
            let [queue] = act.queues;
            Ok(RngWorker::new(act.mem, act.interrupt, queue).with_rate_limiter(limiter))
        })
    }

    fn reset(&mut self) {
        self.lifecycle.reset();
    }
}

#[cfg(test)]
mod tests {
    use vm_memory::{Bytes, GuestAddress};

    use super::*;
    use crate::virtio::rng::MAX_BYTES_PER_REQUEST;
    use crate::virtio::test_utils::{
        guest_memory, virtio_lifecycle_tests, DeviceHarness, LifecycleTest, DATA_START, PROBE_AREA,
        TEST_MEM_SIZE, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE,
    };
    use crate::virtio::GuestMemoryMmap;

    impl LifecycleTest for Rng {
        type Fixture = ();

        fn create() -> (Self, ()) {
            (Rng::new(), ())
        }

        fn is_active(&self) -> bool {
            self.lifecycle.is_active()
        }

        fn assert_serves(_fixture: &mut (), h: &DeviceHarness) {
            h.mem
                .write_slice(&[0; 64], GuestAddress(PROBE_AREA))
                .unwrap();
            let head = h.post(0, &[(PROBE_AREA, 64, VRING_DESC_F_WRITE)]);
            assert_eq!(h.wait_for_head(0, head), 64);
            assert!(h.read(PROBE_AREA, 64).iter().any(|&b| b != 0));
        }
    }

    virtio_lifecycle_tests!(Rng);

    /// A fresh device, activated with 16-entry queues in `mem`, and its
    /// harness.
    fn active_rng(mem: &GuestMemoryMmap) -> (Rng, DeviceHarness<'_>) {
        let mut rng = Rng::new();
        let h = DeviceHarness::activate(mem, &mut rng, 16);
        (rng, h)
    }

    #[test]
    fn fills_writable_buffers_with_random_bytes() {
        let mem = guest_memory();
        let (mut rng, h) = active_rng(&mem);
        h.add_chain(0, 0, &[(DATA_START, 64, VRING_DESC_F_WRITE)]);
        h.wait_used(0, 1);
        assert_eq!(h.used_elem(0, 0), (0, 64));
        let data = h.read(DATA_START, 64);
        assert!(
            data.iter().any(|&b| b != 0),
            "64 random bytes are not all zero"
        );
        h.wait_used_interrupt();
        rng.reset();
    }

    #[test]
    fn multi_descriptor_chain_is_filled_in_order() {
        let mem = guest_memory();
        let (_rng, h) = active_rng(&mem);
        h.add_chain(
            0,
            0,
            &[
                (DATA_START, 16, VRING_DESC_F_WRITE),
                (DATA_START + 0x1000, 32, VRING_DESC_F_WRITE),
            ],
        );
        h.wait_used(0, 1);
        assert_eq!(h.used_elem(0, 0), (0, 48));
    }

    #[test]
    fn hostile_chains_get_zero_length_and_the_device_keeps_serving() {
        let mem = guest_memory();
        let (mut rng, h) = active_rng(&mem);
        // Read-only buffer: nothing may be written into it.
        h.add_chain(0, 0, &[(DATA_START, 64, 0)]);
        h.wait_used(0, 1);
        assert_eq!(h.used_elem(0, 0), (0, 0));
        assert_eq!(h.read(DATA_START, 64), vec![0; 64]);
        // Buffer beyond guest memory.
        h.add_chain(
            0,
            1,
            &[(TEST_MEM_SIZE as u64 + 0x1000, 64, VRING_DESC_F_WRITE)],
        );
        h.wait_used(0, 2);
        assert_eq!(h.used_elem(0, 1), (1, 0));
        // Buffer straddling the end of guest memory.
        h.add_chain(0, 2, &[(TEST_MEM_SIZE as u64 - 8, 64, VRING_DESC_F_WRITE)]);
        h.wait_used(0, 3);
        assert_eq!(h.used_elem(0, 2), (2, 0));
        // Zero-length descriptor.
        h.add_chain(0, 3, &[(DATA_START, 0, VRING_DESC_F_WRITE)]);
        h.wait_used(0, 4);
        assert_eq!(h.used_elem(0, 3), (3, 0));
        // A descriptor loop: 4 -> 5 -> 4.
        h.add_raw_chain(
            0,
            4,
            &[
                (DATA_START, 8, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 5),
                (DATA_START + 8, 8, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 4),
            ],
        );
        // Oversize request: capped.
        h.add_chain(0, 6, &[(DATA_START, 1 << 20, VRING_DESC_F_WRITE)]);
        h.wait_used(0, 6);
        let (id, len) = h.used_elem(0, 5);
        assert_eq!((id, len as usize), (6, MAX_BYTES_PER_REQUEST));
        // Still serving normal requests.
        h.add_chain(0, 7, &[(DATA_START, 8, VRING_DESC_F_WRITE)]);
        h.wait_used(0, 7);
        assert_eq!(h.used_elem(0, 6), (7, 8));
        rng.reset();
    }

    #[test]
    fn reset_stops_the_worker_and_allows_reactivation() {
        let mem = guest_memory();
        let mut rng = Rng::new();
        let _ = DeviceHarness::activate(&mem, &mut rng, 16);
        rng.reset();
        let h = DeviceHarness::activate(&mem, &mut rng, 16);
        h.add_chain(0, 0, &[(DATA_START, 4, VRING_DESC_F_WRITE)]);
        h.wait_used(0, 1);
        rng.reset();
    }

    #[test]
    fn a_bandwidth_limit_paces_entropy() {
        use crate::virtio::rate_limiter::{RateLimit, RateLimiter};
        use std::time::{Duration, Instant};
        // 1 KiB at once, then 1 KiB per 200 ms: 5 requests of 1 KiB take
        // 800 ms.
        let limit = RateLimit {
            bandwidth: Some("1K:200".parse().unwrap()),
            ops: None,
        };
        let mut rng = Rng::new().with_rate_limiter(RateLimiter::new(limit).unwrap());
        let mem = guest_memory();
        let h = DeviceHarness::activate(&mem, &mut rng, 16);
        let started = Instant::now();
        for i in 0..5u64 {
            h.post(0, &[(DATA_START + i * 0x1000, 1024, VRING_DESC_F_WRITE)]);
        }
        h.wait_used(0, 1);
        std::thread::sleep(Duration::from_millis(100));
        assert!(h.queues[0].used().idx().load() <= 2);
        h.wait_used(0, 5);
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(700), "{took:?}");
        assert!((0..5).all(|i| h.used_elem(0, i).1 == 1024));
        rng.reset();
    }
}
