//! The virtio-vsock worker thread: one epoll loop over the queue kicks,
//! the hybrid listener and every host socket.

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Instant;

use virtio_queue::{Queue, QueueT};
use vmm_sys_util::epoll::{ControlOperation, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::muxer::{Muxer, Token, DRAIN_TIMEOUT};
use crate::virtio::{GuestMemoryMmap, Interrupt};

/// Events handled per `epoll_wait`.
const EVENT_BATCH: usize = 64;

/// Everything the worker owns; returned when it stops.
pub struct VsockWorker {
    mem: GuestMemoryMmap,
    interrupt: Arc<Interrupt>,
    rxq: Queue,
    txq: Queue,
    /// Held, never used: this device sends no transport events.
    _evq: Queue,
    queue_events: Vec<EventFd>,
    muxer: Muxer,
}

impl VsockWorker {
    /// A worker for an activated device; `queues` and `queue_events` are
    /// rx, tx, event.
    pub fn new(
        mem: GuestMemoryMmap,
        interrupt: Arc<Interrupt>,
        queues: [Queue; 3],
        queue_events: Vec<EventFd>,
        muxer: Muxer,
    ) -> Self {
        let [rxq, txq, evq] = queues;
        Self {
            mem,
            interrupt,
            rxq,
            txq,
            _evq: evq,
            queue_events,
            muxer,
        }
    }

    /// Serves the device until `kill` is signalled.
    pub fn run(mut self, kill: EventFd) -> Self {
        let tokens = [Token::RxQueue, Token::TxQueue, Token::EventQueue];
        for (event, token) in self.queue_events.iter().zip(tokens) {
            let e = EpollEvent::new(EventSet::IN, token.to_data());
            if let Err(e) = self
                .muxer
                .epoll()
                .ctl(ControlOperation::Add, event.as_raw_fd(), e)
            {
                tracing::error!("virtio-vsock: cannot watch queue eventfd: {e}");
                return self;
            }
        }
        let e = EpollEvent::new(EventSet::IN, Token::Kill.to_data());
        if let Err(e) = self
            .muxer
            .epoll()
            .ctl(ControlOperation::Add, kill.as_raw_fd(), e)
        {
            tracing::error!("virtio-vsock: cannot watch kill eventfd: {e}");
            return self;
        }
        // Buffers and host connections may predate the worker.
        self.muxer.accept();
        self.pump();
        let mut events = vec![EpollEvent::default(); EVENT_BATCH];
        loop {
            let timeout = self.muxer.next_deadline().map_or(-1, |d| {
                let ms = d.saturating_duration_since(Instant::now()).as_millis();
                i32::try_from(ms + 1).unwrap_or(i32::MAX)
            });
            let n = match self.muxer.epoll().wait(timeout, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::error!("virtio-vsock: epoll failed: {e}");
                    return self;
                }
            };
            for event in &events[..n] {
                let Some(token) = Token::from_data(event.data()) else {
                    continue;
                };
                match token {
                    Token::RxQueue => {
                        let _ = self.queue_events[super::RXQ].read();
                    }
                    Token::TxQueue => {
                        let _ = self.queue_events[super::TXQ].read();
                    }
                    Token::EventQueue => {
                        let _ = self.queue_events[super::EVQ].read();
                    }
                    Token::Kill => {
                        self.muxer.drain(&mut self.txq, DRAIN_TIMEOUT);
                        return self;
                    }
                    Token::Listener => self.muxer.accept(),
                    Token::Waiting(id) => self.muxer.waiting_event(id),
                    Token::Conn(id) => self.muxer.conn_event(id, event.event_set()),
                }
            }
            self.muxer.expire(Instant::now());
            self.pump();
        }
    }

    /// Processes TX and RX until neither makes progress, interrupting the
    /// guest after each round so it can refill buffers meanwhile.
    fn pump(&mut self) {
        loop {
            let tx = self.muxer.process_tx(&mut self.txq);
            if tx {
                self.notify(super::TXQ);
            }
            let rx = self.muxer.process_rx(&mut self.rxq);
            if rx {
                self.notify(super::RXQ);
            }
            if !tx && !rx {
                return;
            }
        }
    }

    fn notify(&mut self, q: usize) {
        let queue = if q == super::RXQ {
            &mut self.rxq
        } else {
            &mut self.txq
        };
        match queue.needs_notification(&self.mem) {
            Ok(false) => {}
            Ok(true) | Err(_) => self.interrupt.signal_used_queue(),
        }
    }
}
