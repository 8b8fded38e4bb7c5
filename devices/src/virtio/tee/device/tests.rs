//! The device on mock queues in front of the in-process echo service
//! (`test_backend.rs`): the guest's requests as the spec lays them out,
//! every hostile case followed by a good request, cancellation, closing a
//! busy session, bounds, a service that dies, and resets.

use vm_memory::{Bytes, GuestAddress};

use super::*;
use crate::virtio::tee::protocol::{
    result, Direction, Invoke, MemRef, OpenSession, Param, Request, ShmRegistration, Status, Uuid,
    Value, NUM_PARAMS, PARAM_SIZE,
};
use crate::virtio::tee::test_backend::{EchoService, Handle, ECHO_UUID};
use crate::virtio::test_utils::{
    guest_memory, virtio_lifecycle_tests, DeviceHarness, LifecycleTest, DATA_START, PROBE_AREA,
    TEST_MEM_SIZE, VRING_DESC_F_WRITE,
};
use crate::virtio::GuestMemoryMmap;

const W: u16 = VRING_DESC_F_WRITE;
/// Request slots (one per request in flight).
const REQ_AREA: u64 = DATA_START;
const REQ_SLOT: u64 = 0x2000;
/// Response slots.
const RESP_AREA: u64 = DATA_START + 0x20_0000;
const RESP_SLOT: u64 = 0x200;
/// Frames for shared memory.
const FRAMES: u64 = DATA_START + 0x30_0000;

impl LifecycleTest for Tee {
    type Fixture = Handle;

    fn create() -> (Self, Handle) {
        let (service, handle) = EchoService::new();
        (Tee::new(service, Limits::DEFAULT), handle)
    }

    fn is_active(&self) -> bool {
        self.lifecycle.is_active()
    }

    fn assert_serves(_fixture: &mut Handle, h: &DeviceHarness) {
        let open = open_echo().encode(7);
        h.mem.write_slice(&open, GuestAddress(PROBE_AREA)).unwrap();
        let resp = PROBE_AREA + 0x1000;
        let head = h.post(0, &[(PROBE_AREA, open.len() as u32, 0), (resp, 256, W)]);
        assert_eq!(h.wait_for_head(0, head), 160);
        let a = Answer {
            bytes: h.read(resp, 160),
        };
        assert_eq!(a.status(), 0);
        assert_eq!(a.u32_at(16), 0, "ret");
        assert_ne!(a.u32_at(24), 0, "session");
    }
}

virtio_lifecycle_tests!(Tee);

fn open_echo() -> Request {
    open_uuid(ECHO_UUID)
}

fn open_uuid(uuid: Uuid) -> Request {
    Request::OpenSession(OpenSession {
        uuid,
        client_uuid: Uuid::default(),
        login: 0,
        params: [Param::None; NUM_PARAMS],
    })
}

/// A response as the guest reads it.
struct Answer {
    bytes: Vec<u8>,
}

impl Answer {
    fn u32_at(&self, at: usize) -> u32 {
        u32::from_le_bytes(self.bytes[at..at + 4].try_into().unwrap())
    }

    fn u64_at(&self, at: usize) -> u64 {
        u64::from_le_bytes(self.bytes[at..at + 8].try_into().unwrap())
    }

    fn status(&self) -> u32 {
        self.u32_at(0)
    }

    /// `(ret, ret_origin, session)` of an op response.
    fn op(&self) -> (u32, u32, u32) {
        assert_eq!(self.bytes.len(), 160, "op response length");
        (self.u32_at(16), self.u32_at(20), self.u32_at(24))
    }

    /// Parameter `i` of an op response: `(type, a, b, c)`.
    fn param(&self, i: usize) -> (u32, u64, u64, u64) {
        let at = 32 + i * PARAM_SIZE;
        (
            self.u32_at(at),
            self.u64_at(at + 8),
            self.u64_at(at + 16),
            self.u64_at(at + 24),
        )
    }
}

/// A request in flight.
struct Sent {
    head: u16,
    resp: u64,
    id: u64,
}

/// The guest driver's side: requests in their own slots, answers read back.
struct Driver<'a> {
    h: DeviceHarness<'a>,
    next: u64,
}

impl<'a> Driver<'a> {
    fn new(mem: &'a GuestMemoryMmap, tee: &mut Tee) -> Self {
        Self {
            h: DeviceHarness::activate(mem, tee, QUEUE_SIZE),
            next: 0,
        }
    }

    /// Posts `bytes` as a request with a response buffer of `resp_len`.
    fn send_raw(&mut self, bytes: &[u8], resp_len: u32) -> Sent {
        let slot = self.next % 64;
        self.next += 1;
        let req = REQ_AREA + slot * REQ_SLOT;
        let resp = RESP_AREA + slot * RESP_SLOT;
        self.h.mem.write_slice(bytes, GuestAddress(req)).unwrap();
        self.h
            .mem
            .write_slice(&[0xee; RESP_SLOT as usize], GuestAddress(resp))
            .unwrap();
        let head = self
            .h
            .post(0, &[(req, bytes.len() as u32, 0), (resp, resp_len, W)]);
        Sent {
            head,
            resp,
            id: self.next,
        }
    }

    fn send(&mut self, r: &Request) -> Sent {
        let id = self.next + 1;
        let s = self.send_raw(&r.encode(id), 256);
        assert_eq!(s.id, id);
        s
    }

    fn wait(&self, s: &Sent) -> Answer {
        let used = self.h.wait_for_head(0, s.head);
        Answer {
            bytes: self.h.read(s.resp, used as usize),
        }
    }

    fn call(&mut self, r: &Request) -> Answer {
        let s = self.send(r);
        let a = self.wait(&s);
        assert_eq!(a.u64_at(8), s.id, "request_id echoed");
        a
    }

    /// Whether the chain came back already.
    fn returned(&self, s: &Sent) -> bool {
        let used = self.h.queues[0].used().idx().load();
        (0..used).any(|i| self.h.used_elem(0, i).0 == u32::from(s.head))
    }

    fn open(&mut self) -> u32 {
        let a = self.call(&open_echo());
        assert_eq!(a.status(), 0);
        let (ret, _, session) = a.op();
        assert_eq!(ret, 0);
        session
    }

    /// Registers `size` bytes from `offset` in the frames `frames`.
    fn register(&mut self, size: u64, offset: u32, frames: &[u64]) -> u64 {
        let a = self.call(&Request::ShmRegister(ShmRegistration {
            size,
            offset,
            frames: frames.to_vec(),
        }));
        assert_eq!(a.status(), 0, "registration refused");
        assert_eq!(a.bytes.len(), 24);
        a.u64_at(16)
    }
}

fn memref(dir: Direction, shm_id: u64, offset: u64, size: u64) -> Param {
    Param::MemRef(
        dir,
        MemRef {
            shm_id,
            offset,
            size,
        },
    )
}

fn invoke(session: u32, func: u32, params: [Param; NUM_PARAMS]) -> Request {
    Request::Invoke(Invoke {
        session,
        func,
        params,
    })
}

fn wait_request(session: u32) -> Request {
    let mut params = [Param::None; NUM_PARAMS];
    params[0] = Param::Value(
        Direction::Input,
        Value {
            a: 30_000,
            b: 0,
            c: 0,
        },
    );
    invoke(session, 1, params)
}

#[test]
fn echo_moves_values_and_bytes_through_the_guests_frames() {
    let mem = guest_memory();
    let (service, handle) = EchoService::new();
    let mut tee = Tee::new(service, Limits::DEFAULT);
    let mut d = Driver::new(&mem, &mut tee);
    // Input: 5000 bytes from offset 100 of two scattered frames.
    let (in0, in1) = (FRAMES + 0x5000, FRAMES + 0x1000);
    let data: Vec<u8> = (0..5000u32).map(|i| (i * 7 + 3) as u8).collect();
    mem.write_slice(&data[..3996], GuestAddress(in0 + 100))
        .unwrap();
    mem.write_slice(&data[3996..], GuestAddress(in1)).unwrap();
    let input = d.register(5000, 100, &[in0, in1]);
    // Output: two adjacent frames, from offset 0, guard bytes after.
    let out0 = FRAMES + 0x10000;
    mem.write_slice(&[0x55; 8192], GuestAddress(out0)).unwrap();
    let output = d.register(8192, 0, &[out0, out0 + 4096]);
    let session = d.open();
    let value = Value {
        a: 1,
        b: u64::MAX,
        c: 42,
    };
    let a = d.call(&invoke(
        session,
        0,
        [
            Param::Value(Direction::Input, value),
            Param::Value(Direction::Output, Value::default()),
            memref(Direction::Input, input, 0, 5000),
            memref(Direction::Output, output, 16, 5000),
        ],
    ));
    assert_eq!(a.status(), 0);
    assert_eq!(a.op(), (0, 4, 0));
    assert_eq!(a.param(1), (2, 1, u64::MAX, 42), "value echoed");
    assert_eq!(a.param(3), (6, output, 16, 5000), "output size");
    assert_eq!(
        d.h.read(out0 + 16, 5000),
        data,
        "bytes in the guest's frames"
    );
    assert_eq!(
        d.h.read(out0, 16),
        vec![0x55; 16],
        "nothing before the reference"
    );
    assert_eq!(
        d.h.read(out0 + 5016, 100),
        vec![0x55; 100],
        "nothing after the reference"
    );
    // The service got the bytes read from the frames, not the request.
    let ops = handle.state().ops.clone();
    assert!(ops.iter().any(|op| matches!(
        op,
        crate::virtio::tee::backend::HostOp::Invoke { params, .. }
            if params[2] == crate::virtio::tee::backend::HostParam::MemRefIn(data.clone())
    )));
    tee.reset();
}

#[test]
fn short_output_buffers_get_the_size_needed_and_no_bytes() {
    let mem = guest_memory();
    let (service, _handle) = EchoService::new();
    let mut tee = Tee::new(service, Limits::DEFAULT);
    let mut d = Driver::new(&mem, &mut tee);
    let region = d.register(8192, 0, &[FRAMES, FRAMES + 4096]);
    mem.write_slice(&[0x11; 100], GuestAddress(FRAMES + 4096))
        .unwrap();
    let session = d.open();
    let a = d.call(&invoke(
        session,
        0,
        [
            memref(Direction::Input, region, 0, 4096),
            memref(Direction::Output, region, 4096, 100),
            Param::None,
            Param::None,
        ],
    ));
    let (ret, _, _) = a.op();
    assert_eq!(ret, result::SHORT_BUFFER);
    assert_eq!(a.param(1).3, 4096, "the size needed");
    assert_eq!(d.h.read(FRAMES + 4096, 100), vec![0x11; 100], "untouched");
    tee.reset();
}

#[test]
fn unknown_tas_sessions_and_regions() {
    let mem = guest_memory();
    let (service, _handle) = EchoService::new();
    let mut tee = Tee::new(service, Limits::DEFAULT);
    let mut d = Driver::new(&mem, &mut tee);
    let a = d.call(&open_uuid(Uuid([9; 16])));
    assert_eq!(a.status(), 0);
    assert_eq!(a.op(), (result::ITEM_NOT_FOUND, 3, 0), "no TA, no session");
    let not_found = Status::NotFound as u32;
    assert_eq!(d.call(&invoke(77, 0, [Param::None; 4])).status(), not_found);
    assert_eq!(
        d.call(&Request::CloseSession { session: 77 }).status(),
        not_found
    );
    assert_eq!(
        d.call(&Request::ShmUnregister { shm_id: 5 }).status(),
        not_found
    );
    let session = d.open();
    let a = d.call(&invoke(
        session,
        0,
        [
            memref(Direction::Input, 999, 0, 1),
            Param::None,
            Param::None,
            Param::None,
        ],
    ));
    assert_eq!(a.status(), not_found);
    assert_eq!(a.bytes.len(), 16, "header only");
    tee.reset();
}

#[test]
fn cancel_ends_a_waiting_invoke_and_others_keep_going() {
    let mem = guest_memory();
    let (service, handle) = EchoService::new();
    let mut tee = Tee::new(service, Limits::DEFAULT);
    let mut d = Driver::new(&mem, &mut tee);
    let s1 = d.open();
    let s2 = d.open();
    let waiting = d.send(&wait_request(s1));
    // Another session is served while the first waits.
    let a = d.call(&invoke(
        s2,
        0,
        [
            Param::Value(Direction::InOut, Value { a: 5, b: 6, c: 7 }),
            Param::None,
            Param::None,
            Param::None,
        ],
    ));
    assert_eq!(a.param(0), (3, 5, 6, 7));
    assert!(!d.returned(&waiting), "WAIT is still pending");
    // Cancelling an unknown request is fine; cancelling the WAIT ends it.
    assert_eq!(d.call(&Request::Cancel { request_id: 12345 }).status(), 0);
    assert_eq!(
        d.call(&Request::Cancel {
            request_id: waiting.id
        })
        .status(),
        0
    );
    let a = d.wait(&waiting);
    assert_eq!(a.op().0, result::CANCEL);
    // A second cancel of the same request is not forwarded again.
    let cancels = |h: &Handle| {
        h.state()
            .ops
            .iter()
            .filter(|op| matches!(op, crate::virtio::tee::backend::HostOp::Cancel { .. }))
            .count()
    };
    assert_eq!(cancels(&handle), 1);
    tee.reset();
}

#[test]
fn closing_a_busy_session_cancels_its_invokes_first() {
    let mem = guest_memory();
    let (service, _handle) = EchoService::new();
    let mut tee = Tee::new(service, Limits::DEFAULT);
    let mut d = Driver::new(&mem, &mut tee);
    let s = d.open();
    let w1 = d.send(&wait_request(s));
    let w2 = d.send(&wait_request(s));
    let close = d.send(&Request::CloseSession { session: s });
    assert_eq!(d.wait(&w1).op().0, result::CANCEL);
    assert_eq!(d.wait(&w2).op().0, result::CANCEL);
    assert_eq!(d.wait(&close).status(), 0);
    // The session is gone.
    assert_eq!(d.call(&wait_request(s)).status(), Status::NotFound as u32);
    assert_eq!(
        d.call(&Request::CloseSession { session: s }).status(),
        Status::NotFound as u32
    );
    tee.reset();
}

#[test]
fn bounds_on_sessions_and_regions() {
    let mem = guest_memory();
    let (service, _handle) = EchoService::new();
    let limits = Limits {
        max_sessions: 2,
        max_shm_regions: 2,
        ..Limits::DEFAULT
    };
    let mut tee = Tee::new(service, limits);
    let mut d = Driver::new(&mem, &mut tee);
    let s1 = d.open();
    let _s2 = d.open();
    assert_eq!(d.call(&open_echo()).status(), Status::NoSpace as u32);
    assert_eq!(d.call(&Request::CloseSession { session: s1 }).status(), 0);
    d.open();
    let r1 = d.register(1, 0, &[FRAMES]);
    d.register(1, 0, &[FRAMES]);
    let full = d.call(&Request::ShmRegister(ShmRegistration {
        size: 1,
        offset: 0,
        frames: vec![FRAMES],
    }));
    assert_eq!(full.status(), Status::NoSpace as u32);
    assert_eq!(d.call(&Request::ShmUnregister { shm_id: r1 }).status(), 0);
    d.register(1, 0, &[FRAMES]);
    tee.reset();
}

#[test]
fn hostile_requests_get_their_status_and_the_device_keeps_serving() {
    let mem = guest_memory();
    let (service, _handle) = EchoService::new();
    let mut tee = Tee::new(service, Limits::DEFAULT);
    let mut d = Driver::new(&mem, &mut tee);
    let session = d.open();
    let invalid = Status::Invalid as u32;
    let bad_address = Status::BadAddress as u32;
    let good = invoke(session, 0, [Param::None; 4]);
    let register = |frames: Vec<u64>, size: u64| {
        Request::ShmRegister(ShmRegistration {
            size,
            offset: 0,
            frames,
        })
    };
    let queue_desc_table = 0x10_0000;
    let end = TEST_MEM_SIZE as u64;
    let mut cases: Vec<(Vec<u8>, u32, &str)> = vec![
        (good.encode(1)[..100].to_vec(), invalid, "truncated"),
        (
            {
                let mut r = good.encode(1);
                r.push(0);
                r
            },
            invalid,
            "overlong",
        ),
        (
            {
                let mut r = good.encode(1);
                r[0] = 99;
                r
            },
            Status::Unsupported as u32,
            "unknown type",
        ),
        (
            register(vec![queue_desc_table], 4096).encode(1),
            bad_address,
            "frame on the queue",
        ),
        (
            register(vec![end], 4096).encode(1),
            bad_address,
            "frame outside RAM",
        ),
        (
            register(vec![FRAMES + 8], 4096).encode(1),
            bad_address,
            "misaligned frame",
        ),
        (
            {
                let mut r = register(vec![], 1).encode(1);
                r[28..32].copy_from_slice(&u32::MAX.to_le_bytes());
                r
            },
            Status::TooLarge as u32,
            "4 billion frames",
        ),
        (
            invoke(
                session,
                0,
                [
                    memref(Direction::Input, 1, 0, 1 << 21),
                    Param::None,
                    Param::None,
                    Param::None,
                ],
            )
            .encode(1),
            Status::TooLarge as u32,
            "memref over max_memref_size",
        ),
    ];
    let region = d.register(4096, 0, &[FRAMES]);
    cases.push((
        invoke(
            session,
            0,
            [
                memref(Direction::Input, region, 4000, 97),
                Param::None,
                Param::None,
                Param::None,
            ],
        )
        .encode(1),
        invalid,
        "memref past its region",
    ));
    cases.push((
        invoke(
            session,
            0,
            [
                memref(Direction::Input, region, u64::MAX, 2),
                Param::None,
                Param::None,
                Param::None,
            ],
        )
        .encode(1),
        invalid,
        "memref offset overflow",
    ));
    for (bytes, status, what) in cases {
        let s = d.send_raw(&bytes, 256);
        let a = d.wait(&s);
        assert_eq!(a.status(), status, "{what}");
        assert_eq!(a.bytes.len(), 16, "{what}: header only");
        // A good request right after.
        assert_eq!(d.call(&good).status(), 0, "after {what}");
    }
    // No room for even a response header: returned with used length 0.
    let s = d.send_raw(&good.encode(1), 8);
    assert_eq!(d.h.wait_for_head(0, s.head), 0);
    let s = d.send_raw(&good.encode(1), 0);
    assert_eq!(d.h.wait_for_head(0, s.head), 0);
    assert_eq!(d.call(&good).status(), 0);
    tee.reset();
}

#[test]
fn a_dead_service_fails_pending_and_new_requests_but_not_shared_memory() {
    let mem = guest_memory();
    let (service, handle) = EchoService::new();
    let mut tee = Tee::new(service, Limits::DEFAULT);
    let mut d = Driver::new(&mem, &mut tee);
    let s = d.open();
    let waiting = d.send(&wait_request(s));
    let close = {
        // Give the WAIT time to reach the service.
        while handle.state().ops.len() < 2 {
            std::thread::yield_now();
        }
        handle.break_connection();
        d.wait(&waiting)
    };
    assert_eq!(close.status(), Status::ServiceError as u32);
    assert_eq!(d.call(&open_echo()).status(), Status::ServiceError as u32);
    d.register(1, 0, &[FRAMES]);
    // A reset and a fresh connection bring it back, without old sessions.
    tee.reset();
    handle.state().broken = false;
    let mut d = Driver::new(&mem, &mut tee);
    assert_eq!(handle.state().restarts, 2);
    assert_eq!(d.call(&wait_request(s)).status(), Status::NotFound as u32);
    d.open();
    tee.reset();
}

#[test]
fn configuration_space_is_the_limits() {
    let (service, _) = EchoService::new();
    let tee = Tee::new(service, Limits::DEFAULT);
    let mut c = [0u8; 16];
    tee.read_config(0, &mut c);
    assert_eq!(c, Limits::DEFAULT.config_bytes());
    let mut tail = [0xffu8; 8];
    tee.read_config(12, &mut tail);
    assert_eq!(tail, [0, 0, 16, 0, 0, 0, 0, 0]);
    assert_eq!(tee.device_type(), 46);
    assert_eq!(tee.features(), 0);
}
