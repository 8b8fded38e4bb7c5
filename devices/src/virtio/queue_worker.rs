//! The event loop shared by devices whose worker serves one queue: wait for
//! the guest's kick or the kill event, then process the queue.

use std::os::fd::AsRawFd;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

/// A worker with one queue to serve.
pub trait SingleQueueWorker {
    /// Device name for log lines, e.g. `virtio-rng`.
    const NAME: &'static str;
    /// The queue's notification eventfd.
    fn queue_event(&self) -> &EventFd;
    /// Handles every available chain.
    fn process_queue(&mut self);
}

/// What woke the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Queue,
    Kill,
}

impl Token {
    const ALL: [Token; 2] = [Token::Queue, Token::Kill];

    fn from_data(data: u64) -> Option<Self> {
        Self::ALL.into_iter().find(|t| *t as u64 == data)
    }
}

/// Serves `worker`'s queue until `kill` is signalled, then hands the worker
/// back. Set-up failures are logged and end the loop (the device then stops
/// serving, which the guest sees as a stalled queue, not a VMM crash).
pub fn serve<W: SingleQueueWorker>(mut worker: W, kill: EventFd) -> W {
    let epoll = match Epoll::new() {
        Ok(e) => e,
        Err(e) => {
            tracing::error!("{}: cannot create epoll: {e}", W::NAME);
            return worker;
        }
    };
    for (fd, token) in [
        (worker.queue_event().as_raw_fd(), Token::Queue),
        (kill.as_raw_fd(), Token::Kill),
    ] {
        let event = EpollEvent::new(EventSet::IN, token as u64);
        if let Err(e) = epoll.ctl(ControlOperation::Add, fd, event) {
            tracing::error!("{}: cannot watch eventfd: {e}", W::NAME);
            return worker;
        }
    }
    // Buffers may have been posted before the worker started.
    worker.process_queue();
    let mut events = vec![EpollEvent::default(); Token::ALL.len()];
    loop {
        let n = match epoll.wait(-1, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::error!("{}: epoll failed: {e}", W::NAME);
                return worker;
            }
        };
        for event in &events[..n] {
            match Token::from_data(event.data()) {
                Some(Token::Queue) => {
                    let _ = worker.queue_event().read();
                    worker.process_queue();
                }
                Some(Token::Kill) => return worker,
                None => {}
            }
        }
    }
}
