//! virtio-console: transmit chains → output bytes, and queued host input →
//! receive chains, through the worker's own queue processing.
//!
//! The backend is the plain output kind (what `type=file`/`stdout` use)
//! over a writer that can fail on demand; host input is queued the way the
//! backends queue it (mid-run, as a unix client or stdin would). Oracles:
//! one transmit chain never produces more than `MAX_TX_CHAIN_BYTES` of
//! output; nothing panics or hangs.

#![no_main]

use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use arbitrary::Arbitrary;
use devices::virtio::console::fuzzing::{ConsoleWorker, InputQueue, Port};
use devices::virtio::console::{
    ConsoleBackend, MAX_TX_CHAIN_BYTES, QUEUE_SIZE, RX_QUEUE, TX_QUEUE,
};
use libfuzzer_sys::fuzz_target;
use vmstack_fuzz::{guest_memory_with, interrupt, Batch, Desc, FuzzQueue, RingSetup};

#[derive(Default)]
struct Out {
    fail: bool,
    bytes: usize,
}

#[derive(Clone)]
struct Writer(Arc<Mutex<Out>>);

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut o = self.0.lock().unwrap();
        assert!(
            buf.len() <= MAX_TX_CHAIN_BYTES,
            "{} bytes from one chain",
            buf.len()
        );
        if o.fail {
            return Err(io::Error::from_raw_os_error(libc::EPIPE));
        }
        o.bytes += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    /// The guest posts transmit chains and kicks.
    Tx(Batch),
    /// The guest posts receive buffers and kicks.
    Rx(Batch),
    /// Host input arrives: `n` bytes of a running counter pattern.
    Input(u16),
    /// The output starts or stops failing.
    FailOutput(bool),
}

#[derive(Arbitrary, Debug)]
struct Input {
    rx_ring: RingSetup,
    tx_ring: RingSetup,
    data: Vec<u8>,
    indirect: Vec<Desc>,
    ops: Vec<Op>,
}

fuzz_target!(|input: Input| {
    let mem = guest_memory_with(&input.data, &input.indirect);
    let out = Arc::new(Mutex::new(Out::default()));
    let port = Port {
        backend: ConsoleBackend::output(Box::new(Writer(out.clone()))),
        pending: InputQueue::default(),
        wakeups: 0,
    };
    let (mut rxq, rx) = FuzzQueue::new(&mem, RX_QUEUE, QUEUE_SIZE, &input.rx_ring);
    let (mut txq, tx) = FuzzQueue::new(&mem, TX_QUEUE, QUEUE_SIZE, &input.tx_ring);
    let mut worker = ConsoleWorker::new(mem.clone(), interrupt(), [rx, tx], port);
    let mut queued = 0usize;
    for op in input.ops.iter().take(32) {
        match op {
            Op::Tx(batch) => {
                txq.apply(&mem, batch);
                worker.process_tx();
            }
            Op::Rx(batch) => {
                rxq.apply(&mem, batch);
                worker.deliver_input();
            }
            Op::Input(n) => {
                let bytes: Vec<u8> = (queued..queued + usize::from(*n))
                    .map(|i| i as u8)
                    .collect();
                queued += worker.port_mut().pending.push(&bytes);
                worker.deliver_input();
            }
            Op::FailOutput(fail) => out.lock().unwrap().fail = *fail,
        }
    }
});
