//! The virtio-blk worker: on each kick, parses each chain and executes it
//! against the image, synchronously and in order.
//!
//! With a rate limiter (`--disk ...,bw=...,ops=...`) each request costs one
//! operation and, for reads, writes and write-zeroes, its bytes. A request
//! the limiter refuses goes back on the queue and the worker stops serving
//! (notifications stay off) until the limiter's timer fires.

use std::sync::Arc;

use virtio_bindings::virtio_blk::{VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::{Queue, QueueT};
use vm_memory::Bytes;

use super::disk::DiskImage;
use super::request::{self, ChainError, Operation, Request, SectorRange, Segment};
use super::{SECTOR_SHIFT, SECTOR_SIZE};
use crate::log_limit::LoggedKinds;
use crate::virtio::limited_worker::impl_limited_queue_worker;
use crate::virtio::rate_limiter::RateLimiter;
use crate::virtio::{GuestMemoryMmap, Interrupt};

/// Kinds of guest or host trouble, each logged once per worker.
#[derive(Debug, Clone, Copy)]
enum Problem {
    DroppedChain = 0,
    InvalidRequest = 1,
    Unsupported = 2,
    ReadOnly = 3,
    HostIo = 4,
    UsedRing = 5,
    NoHolePunch = 6,
}

/// Everything the worker owns; returned when it stops.
pub struct BlockWorker {
    mem: GuestMemoryMmap,
    interrupt: Arc<Interrupt>,
    queue: Queue,
    disk: Arc<DiskImage>,
    /// Reused for the descriptors of each chain.
    descs: Vec<Descriptor>,
    /// The [`Problem`]s already logged.
    logged: LoggedKinds,
    /// Kept across resets (the device's backend).
    limiter: RateLimiter,
    /// Sees every valid operation before it is executed (fuzz oracles).
    observer: Option<Observer>,
}

/// A callback that sees each valid operation before its execution.
pub type Observer = Box<dyn FnMut(&Operation) + Send>;

impl_limited_queue_worker!(BlockWorker, name: "virtio-blk", thread: "v_blk");

/// What a request costs the rate limiter in bytes: the data of reads and
/// writes, the ranges of write-zeroes (which may be written as zeroes).
fn bandwidth_cost(req: &Result<Request, ChainError>) -> u64 {
    let segments = |data: &[Segment]| data.iter().map(|s| u64::from(s.len)).sum();
    match req.as_ref().map(|r| &r.op) {
        Ok(Ok(Operation::Read { data, .. } | Operation::Write { data, .. })) => segments(data),
        Ok(Ok(Operation::WriteZeroes(ranges))) => ranges
            .iter()
            .map(|r| u64::from(r.sectors) * SECTOR_SIZE)
            .sum(),
        _ => 0,
    }
}

impl BlockWorker {
    /// Creates a worker for an activated device.
    pub fn new(
        mem: GuestMemoryMmap,
        interrupt: Arc<Interrupt>,
        queue: Queue,
        disk: Arc<DiskImage>,
    ) -> Self {
        Self {
            mem,
            interrupt,
            queue,
            disk,
            descs: Vec::new(),
            logged: LoggedKinds::default(),
            limiter: RateLimiter::unlimited(),
            observer: None,
        }
    }

    /// Calls `observer` with each valid operation before it is executed
    /// (the fuzz target's oracle: what the disk may change).
    #[doc(hidden)]
    pub fn with_observer(mut self, observer: Observer) -> Self {
        self.observer = Some(observer);
        self
    }

    /// The worker with `limiter` (the device's, kept across resets).
    pub fn with_rate_limiter(mut self, limiter: RateLimiter) -> Self {
        self.limiter = limiter;
        self
    }

    fn log_once(&mut self, problem: Problem, what: std::fmt::Arguments<'_>) {
        crate::guest_warn_first!(self.logged, problem as u32, "virtio-blk: {what}");
    }

    /// Serves every available chain, with guest notifications suppressed
    /// while it works; returns the number of chains used. Stops early,
    /// notifications still off, when the rate limiter refuses a request.
    pub fn process_queue(&mut self) -> usize {
        let mem = self.mem.clone();
        let mut used = 0;
        loop {
            // Failing to touch the notification fields only costs extra
            // kicks; serving goes on.
            let _ = self.queue.disable_notification(&mem);
            let before = used;
            let mut limited = false;
            while let Some(chain) = self.queue.pop_descriptor_chain(&mem) {
                let head = chain.head_index();
                self.descs.clear();
                self.descs.extend(chain);
                let req = request::parse(&self.mem, &self.descs, self.disk.sectors());
                if !self.limiter.consume(1, bandwidth_cost(&req)) {
                    // Served first once the limiter's timer fires.
                    let back = self.queue.next_avail().wrapping_sub(1);
                    self.queue.set_next_avail(back);
                    limited = true;
                    break;
                }
                let len = self.serve_chain(req);
                if let Err(e) = self.queue.add_used(&mem, head, len) {
                    self.log_once(
                        Problem::UsedRing,
                        format_args!("cannot return chain {head}: {e:?}"),
                    );
                }
                used += 1;
            }
            if limited {
                break;
            }
            match self.queue.enable_notification(&mem) {
                // More arrived while notifications were off.
                Ok(true) if used > before => continue,
                // "More" that cannot be popped: the avail index is more
                // than a queue size ahead. Stop rather than spin; the
                // guest's next kick retries.
                Ok(true) => {
                    self.log_once(
                        Problem::DroppedChain,
                        format_args!("avail index runs more than a queue size ahead; waiting for the next kick"),
                    );
                    break;
                }
                Ok(false) => break,
                Err(e) => {
                    self.log_once(
                        Problem::UsedRing,
                        format_args!("cannot re-enable notifications: {e:?}"),
                    );
                    break;
                }
            }
        }
        if used > 0 {
            self.interrupt.notify_used(&mut self.queue, &mem);
        }
        used
    }

    /// Serves the chain in `self.descs`, parsed as `req`; returns the used
    /// length (bytes written into guest buffers, status byte included; 0
    /// if dropped).
    fn serve_chain(&mut self, req: Result<Request, ChainError>) -> u32 {
        let req = match req {
            Ok(req) => req,
            Err(e) => {
                self.log_once(
                    Problem::DroppedChain,
                    format_args!("dropped a chain (used length 0): {e}"),
                );
                return 0;
            }
        };
        let (status, written) = match req.op {
            Ok(op) => {
                if let Some(observe) = &mut self.observer {
                    observe(&op);
                }
                self.execute(op)
            }
            Err(rejection) => {
                let problem = match rejection {
                    request::Rejection::Invalid(_) => Problem::InvalidRequest,
                    _ => Problem::Unsupported,
                };
                self.log_once(problem, format_args!("refused a request: {rejection}"));
                (rejection.status(), 0)
            }
        };
        // The status byte was checked to lie in guest memory.
        match self.mem.write_obj(status, req.status) {
            Ok(()) => written.saturating_add(1),
            Err(e) => {
                self.log_once(
                    Problem::DroppedChain,
                    format_args!("cannot write the status byte: {e}"),
                );
                0
            }
        }
    }

    /// Executes a valid request; returns the status and the number of data
    /// bytes written into guest buffers.
    fn execute(&mut self, op: Operation) -> (u8, u32) {
        const OK: u8 = VIRTIO_BLK_S_OK as u8;
        const IOERR: u8 = VIRTIO_BLK_S_IOERR as u8;
        if op.modifies_disk() && self.disk.read_only() {
            self.log_once(
                Problem::ReadOnly,
                format_args!("the guest tried to modify a read-only disk; answered IOERR"),
            );
            return (IOERR, 0);
        }
        let result = match op {
            Operation::Read { sector, data } => {
                let (done, result) =
                    self.disk
                        .read_to_guest(&self.mem, &data, sector << SECTOR_SHIFT);
                // A chain never exceeds 4 GiB (the chain walker stops there).
                let done = u32::try_from(done).unwrap_or(u32::MAX);
                return match result {
                    Ok(()) => (OK, done),
                    Err(e) => {
                        self.log_once(
                            Problem::HostIo,
                            format_args!("reading sector {sector} failed: {e}"),
                        );
                        (IOERR, done)
                    }
                };
            }
            Operation::Write { sector, data } => {
                self.disk
                    .write_from_guest(&self.mem, &data, sector << SECTOR_SHIFT)
            }
            Operation::Flush => {
                if self.disk.read_only() {
                    Ok(())
                } else {
                    self.disk.flush()
                }
            }
            Operation::GetId { data } => return (OK, self.write_id(&data)),
            Operation::Discard(ranges) => self.ranges(&ranges, false),
            Operation::WriteZeroes(ranges) => self.ranges(&ranges, true),
        };
        match result {
            Ok(()) => (OK, 0),
            Err(e) => {
                self.log_once(Problem::HostIo, format_args!("disk I/O failed: {e}"));
                (IOERR, 0)
            }
        }
    }

    fn ranges(&mut self, ranges: &[SectorRange], write_zeroes: bool) -> std::io::Result<()> {
        for r in ranges {
            let offset = r.sector << SECTOR_SHIFT;
            let len = u64::from(r.sectors) * SECTOR_SIZE;
            if write_zeroes {
                self.disk.write_zeroes(offset, len, r.unmap)?;
            } else if !self.disk.discard(offset, len)? {
                self.log_once(
                    Problem::NoHolePunch,
                    format_args!(
                        "the image's file system cannot punch holes; discards are ignored"
                    ),
                );
            }
        }
        Ok(())
    }

    /// Writes the serial into the guest buffers; returns the bytes written.
    fn write_id(&mut self, data: &[Segment]) -> u32 {
        let serial = *self.disk.serial();
        let mut done = 0usize;
        for seg in data {
            if done == serial.len() {
                break;
            }
            let n = (seg.len as usize).min(serial.len() - done);
            if self
                .mem
                .write_slice(&serial[done..done + n], seg.addr)
                .is_err()
            {
                break;
            }
            done += n;
        }
        done as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::block::disk::tests::TempImage;
    use crate::virtio::test_utils::{guest_memory, DATA_START, VRING_DESC_F_WRITE};
    use virtio_bindings::virtio_blk::VIRTIO_BLK_T_GET_ID;
    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::GuestAddress;

    /// Found by the `block` fuzz target: an avail index more than a queue
    /// size ahead made `process_queue` spin forever (nothing to pop, yet
    /// `enable_notification` kept reporting more).
    #[test]
    fn avail_index_far_ahead_does_not_spin() {
        let img = TempImage::new(&[0; 4096]);
        let disk = Arc::new(DiskImage::open(&img.path, false, Some("spin")).unwrap());
        let mem = guest_memory();
        let vq = MockSplitQueue::create(&mem, GuestAddress(0x10_0000), 16);
        let mut queue = vq.create_queue::<Queue>().unwrap();
        queue.set_event_idx(true);
        vq.avail().idx().store(255);
        let irq = Arc::new(Interrupt::new(
            vmm_sys_util::eventfd::EventFd::new(libc::EFD_NONBLOCK).unwrap(),
        ));
        let mut worker = BlockWorker::new(mem.clone(), irq, queue, disk);
        let (done, finished) = std::sync::mpsc::channel();
        let worker = std::thread::spawn(move || {
            let used = worker.process_queue();
            let _ = done.send(used);
            worker
        });
        let used = finished
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("process_queue spun on a bad avail index");
        assert_eq!(used, 0);
        let mut worker = worker.join().unwrap();

        // Once the guest repairs its ring, the worker serves again.
        let hdr = DATA_START;
        mem.write_obj(VIRTIO_BLK_T_GET_ID, GuestAddress(hdr))
            .unwrap();
        let descs = [
            RawDescriptor::from(SplitDescriptor::new(hdr, 16, 1, 1)),
            RawDescriptor::from(SplitDescriptor::new(hdr + 0x100, 21, VRING_DESC_F_WRITE, 0)),
        ];
        vq.avail().idx().store(0);
        vq.add_desc_chains(&descs, 0).unwrap();
        assert_eq!(worker.process_queue(), 1);
        let mut id = [0u8; 4];
        mem.read_slice(&mut id, GuestAddress(hdr + 0x100)).unwrap();
        assert_eq!(&id, b"spin");
    }
}
