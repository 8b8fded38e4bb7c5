//! The virtio-vsock worker: the muxer's host sockets besides the queue
//! kicks, and after every wake-up TX and RX pumped until neither moves.

use std::sync::Arc;
use std::time::{Duration, Instant};

use virtio_queue::Queue;
use vmm_sys_util::epoll::EventSet;

use super::muxer::{Muxer, Token, DRAIN_TIMEOUT};
use crate::virtio::{GuestMemoryMmap, Interrupt, WaitContext, Worker};

/// Everything the worker owns; returned when it stops.
pub struct VsockWorker {
    mem: GuestMemoryMmap,
    interrupt: Arc<Interrupt>,
    rxq: Queue,
    txq: Queue,
    /// Held, never used: this device sends no transport events.
    _evq: Queue,
    muxer: Muxer,
}

impl VsockWorker {
    /// A worker for an activated device; `queues` are rx, tx, event.
    pub fn new(
        mem: GuestMemoryMmap,
        interrupt: Arc<Interrupt>,
        queues: [Queue; 3],
        muxer: Muxer,
    ) -> Self {
        let [rxq, txq, evq] = queues;
        Self {
            mem,
            interrupt,
            rxq,
            txq,
            _evq: evq,
            muxer,
        }
    }

    /// Processes TX and RX until neither makes progress, interrupting the
    /// guest after each round so it can refill buffers meanwhile.
    fn pump(&mut self, ctx: &WaitContext<Token>) {
        loop {
            let tx = self.muxer.process_tx(ctx, &mut self.txq);
            if tx {
                self.interrupt.notify_used(&mut self.txq, &self.mem);
            }
            let rx = self.muxer.process_rx(&mut self.rxq);
            if rx {
                self.interrupt.notify_used(&mut self.rxq, &self.mem);
            }
            if !tx && !rx {
                return;
            }
        }
    }
}

impl Worker for VsockWorker {
    type Token = Token;
    type Backend = ();
    const NAME: &'static str = "virtio-vsock";
    const THREAD_NAME: &'static str = "v_vsock";

    fn register(&mut self, ctx: &WaitContext<Token>) -> std::io::Result<()> {
        self.muxer.register(ctx)
    }

    fn on_queue(&mut self, _ctx: &WaitContext<Token>, _index: usize) {
        // Every kick is served by the pump after the wake-up's events.
    }

    fn on_event(&mut self, ctx: &WaitContext<Token>, token: Token, events: EventSet) {
        self.muxer.on_event(ctx, token, events);
    }

    fn after_events(&mut self, ctx: &WaitContext<Token>) {
        let now = Instant::now();
        self.muxer.expire(now);
        self.muxer.resume_accept(ctx, now);
        self.pump(ctx);
    }

    fn timeout(&self) -> Option<Duration> {
        // One millisecond late, so that the deadline has passed on waking.
        self.muxer
            .next_deadline()
            .map(|d| d.saturating_duration_since(Instant::now()) + Duration::from_millis(1))
    }

    fn on_stop(&mut self, ctx: &WaitContext<Token>) {
        self.muxer.drain(ctx, &mut self.txq, DRAIN_TIMEOUT);
    }

    fn into_backend(self) {
        // Dropping the muxer closes every connection's host socket.
    }
}
