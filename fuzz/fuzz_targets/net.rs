//! virtio-net: transmit chains → frames handed to a fake backend, and
//! backend frames → receive chains, through the worker's own queue
//! processing.
//!
//! The fake backend stands in for the tap: it reads transmit frames
//! through the raw `iovec`s exactly as `writev` would (so an `iovec` that
//! does not point into guest memory faults here), writes received frames
//! through them as `readv` would, and can answer `WouldBlock`, `EINTR` or
//! `EIO` when the input says so. Oracles: every frame the device sends is
//! within the size limits and carries a header that matches the acked
//! offloads; nothing panics or hangs.

#![no_main]

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};

use arbitrary::Arbitrary;
use devices::virtio::net::fuzzing::NetWorker;
use devices::virtio::net::{
    check_tx_header, IoVecs, NetBackend, ETH_HLEN, MAX_FRAME_LEN, OFFERED_FEATURES, QUEUE_SIZE,
    RX_QUEUE, TX_QUEUE, VNET_HDR_LEN,
};
use devices::virtio::VIRTIO_F_VERSION_1;
use libfuzzer_sys::fuzz_target;
use vmm_sys_util::eventfd::EventFd;
use vmstack_fuzz::{eventfd, guest_memory_with, interrupt, Batch, Desc, FuzzQueue, RingSetup};

/// What the backend answers to one call.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Outcome {
    Ok,
    WouldBlock,
    Interrupted,
    Fail,
}

#[derive(Default)]
struct Shared {
    frames: VecDeque<Vec<u8>>,
    script: VecDeque<Outcome>,
    acked: u64,
}

struct FakeTap {
    shared: Arc<Mutex<Shared>>,
    fd: EventFd,
}

impl AsRawFd for FakeTap {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

fn scripted(s: &mut Shared) -> io::Result<()> {
    match s.script.pop_front().unwrap_or(Outcome::Ok) {
        Outcome::Ok => Ok(()),
        Outcome::WouldBlock => Err(io::ErrorKind::WouldBlock.into()),
        Outcome::Interrupted => Err(io::ErrorKind::Interrupted.into()),
        Outcome::Fail => Err(io::Error::from_raw_os_error(libc::EIO)),
    }
}

impl NetBackend for FakeTap {
    fn recv(&mut self, bufs: &IoVecs) -> io::Result<usize> {
        let mut s = self.shared.lock().unwrap();
        scripted(&mut s)?;
        let Some(frame) = s.frames.pop_front() else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        let mut at = 0;
        for iov in bufs.as_raw() {
            let n = iov.iov_len.min(frame.len() - at);
            // SAFETY: what `readv` on the tap would do: `IoVecs` promises
            // every entry is a mapped range of guest memory of `iov_len`
            // bytes (checking that promise is the point of this target).
            unsafe {
                std::ptr::copy_nonoverlapping(frame[at..].as_ptr(), iov.iov_base.cast(), n);
            }
            at += n;
            if at == frame.len() {
                break;
            }
        }
        Ok(frame.len())
    }

    fn send(&mut self, bufs: &IoVecs) -> io::Result<usize> {
        let mut s = self.shared.lock().unwrap();
        scripted(&mut s)?;
        let mut frame = Vec::new();
        for iov in bufs.as_raw() {
            // SAFETY: what `writev` on the tap would do; see `recv`.
            let part =
                unsafe { std::slice::from_raw_parts(iov.iov_base.cast::<u8>(), iov.iov_len) };
            frame.extend_from_slice(part);
        }
        assert!(
            frame.len() >= VNET_HDR_LEN + ETH_HLEN,
            "runt frame sent: {}",
            frame.len()
        );
        assert!(
            frame.len() <= VNET_HDR_LEN + MAX_FRAME_LEN,
            "giant frame sent: {}",
            frame.len()
        );
        let hdr: [u8; VNET_HDR_LEN] = frame[..VNET_HDR_LEN].try_into().unwrap();
        assert!(
            check_tx_header(&hdr, s.acked).is_ok(),
            "unnegotiated offload sent: {hdr:?}"
        );
        Ok(frame.len())
    }

    fn set_offload(&mut self, _flags: u32) -> io::Result<()> {
        Ok(())
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    /// The guest posts transmit chains and kicks.
    Tx(Batch),
    /// The guest posts receive buffers and kicks.
    Rx(Batch),
    /// Frames arrive on the tap (lengths; contents are a byte pattern).
    Frames(Vec<u16>),
    /// The backend's next answers.
    Script(Vec<Outcome>),
}

#[derive(Arbitrary, Debug)]
struct Input {
    /// Which offered features the driver acked.
    acked: u64,
    rx_ring: RingSetup,
    tx_ring: RingSetup,
    data: Vec<u8>,
    indirect: Vec<Desc>,
    ops: Vec<Op>,
}

fuzz_target!(|input: Input| {
    let mem = guest_memory_with(&input.data, &input.indirect);
    let acked = (input.acked & OFFERED_FEATURES) | VIRTIO_F_VERSION_1;
    let shared = Arc::new(Mutex::new(Shared {
        acked,
        ..Shared::default()
    }));
    let backend = FakeTap {
        shared: shared.clone(),
        fd: eventfd(),
    };
    let (mut rxq, rx) = FuzzQueue::new(&mem, RX_QUEUE, QUEUE_SIZE, &input.rx_ring);
    let (mut txq, tx) = FuzzQueue::new(&mem, TX_QUEUE, QUEUE_SIZE, &input.tx_ring);
    let mut worker = NetWorker::new(mem.clone(), interrupt(), [rx, tx], Box::new(backend), acked);
    for op in input.ops.iter().take(32) {
        match op {
            Op::Tx(batch) => {
                txq.apply(&mem, batch);
                worker.process_tx();
            }
            Op::Rx(batch) => {
                rxq.apply(&mem, batch);
                worker.process_rx();
            }
            Op::Frames(lens) => {
                let mut s = shared.lock().unwrap();
                for (i, &len) in lens.iter().take(8).enumerate() {
                    s.frames.push_back(vec![i as u8; usize::from(len)]);
                }
                drop(s);
                worker.process_rx();
            }
            Op::Script(outcomes) => {
                shared
                    .lock()
                    .unwrap()
                    .script
                    .extend(outcomes.iter().take(16));
            }
        }
    }
});
