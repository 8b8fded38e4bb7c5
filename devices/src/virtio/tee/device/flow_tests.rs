//! The device against a real socket to a service that writes before it
//! reads: many large invokes in one batch must all complete (the device
//! reads replies while its requests are still queued, and leaves chains in
//! the ring while its outgoing queue is full).

use std::io::Write;
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use trusty::tee::client::read_body;
use trusty::tee::proto::op;
use trusty::tee::{
    origin, Param as WireParam, ParamOut, Request as WireRequest, Response, ResponseBody,
    MAX_FRAME, MAX_MEMREF,
};
use vm_memory::{Bytes, GuestAddress};

use super::*;
use crate::virtio::tee::protocol::{
    Direction, Invoke, MemRef, OpenSession, Param, Request, ShmRegistration, Uuid, NUM_PARAMS,
};
use crate::virtio::tee::test_backend::ECHO_UUID;
use crate::virtio::tee::TrustyBackend;
use crate::virtio::test_utils::{guest_memory, DeviceHarness, DATA_START, VRING_DESC_F_WRITE};

/// Request slots.
const REQS: u64 = DATA_START;
/// Response slots.
const RESPS: u64 = DATA_START + 0x10_0000;
/// The 1 MiB shared region.
const REGION: u64 = DATA_START + 0x20_0000;
const MIB: u32 = 1 << 20;

fn echo_out(p: WireParam) -> ParamOut {
    match p {
        WireParam::MemrefInout(data) => ParamOut::MemrefInout {
            size: data.len() as u32,
            data,
        },
        WireParam::ValueInout(v) => ParamOut::ValueInout(v),
        _ => ParamOut::None,
    }
}

/// A service that answers each request with a blocking write before it
/// reads the next one (trustyd's reader thread did so for its own answers;
/// any service may): one echo session, `CMD_ECHO` of in-out parameters.
/// Ends when the connection closes.
fn write_before_read_service(listener: UnixListener) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        if let Ok((s, _)) = listener.accept() {
            serve(s, usize::MAX);
        }
    })
}

/// Answers at most `requests` requests on `s`, each written (blocking)
/// before the next is read; stops when the connection closes.
fn serve(mut s: UnixStream, requests: usize) {
    for _ in 0..requests {
        let Ok(Some(body)) = read_body(&mut s) else {
            return;
        };
        let Ok((id, req)) = WireRequest::decode(&body) else {
            return;
        };
        let r = match req {
            WireRequest::Hello { .. } => Response {
                id,
                ret: 0,
                origin: origin::TEE,
                body: ResponseBody::Hello {
                    version: 1,
                    max_frame: MAX_FRAME as u32,
                    max_memref: MAX_MEMREF as u32,
                },
            },
            WireRequest::OpenSession { .. } => Response {
                id,
                ret: 0,
                origin: origin::TRUSTED_APP,
                body: ResponseBody::OpenSession {
                    session: 1,
                    params: Default::default(),
                },
            },
            WireRequest::Invoke { params, .. } => Response {
                id,
                ret: 0,
                origin: origin::TRUSTED_APP,
                body: ResponseBody::Invoke {
                    params: params.map(echo_out),
                },
            },
            WireRequest::Cancel { .. } => Response::error(id, op::CANCEL, 0, origin::TEE, None),
            WireRequest::CloseSession { .. } => {
                Response::error(id, op::CLOSE_SESSION, 0, origin::TEE, None)
            }
        };
        if s.write_all(&r.encode_frame()).is_err() {
            return;
        }
    }
}

/// The registration of the 1 MiB region (256 frames at `REGION`).
fn register() -> Request {
    Request::ShmRegister(ShmRegistration {
        size: u64::from(MIB),
        offset: 0,
        frames: (0..256).map(|i| REGION + i * 4096).collect(),
    })
}

/// Parameters: the whole region `shm_id` as parameter 0, nothing else.
fn whole_region(dir: Direction, shm_id: u64) -> [Param; NUM_PARAMS] {
    let mut params = [Param::None; NUM_PARAMS];
    params[0] = Param::MemRef(
        dir,
        MemRef {
            shm_id,
            offset: 0,
            size: u64::from(MIB),
        },
    );
    params
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// Posts `reqs` (request `i` in slot `i`, its response buffer of 256 bytes
/// in slot `i`) in one batch and waits until every chain is back, at most
/// `within`; returns the responses.
fn batch(h: &DeviceHarness, reqs: &[Vec<u8>], within: Duration) -> Vec<Vec<u8>> {
    let chains: Vec<Vec<(u64, u32, u16)>> = reqs
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let (req, resp) = (REQS + i as u64 * 0x1000, RESPS + i as u64 * 0x200);
            h.mem.write_slice(r, GuestAddress(req)).unwrap();
            vec![(req, r.len() as u32, 0), (resp, 256, VRING_DESC_F_WRITE)]
        })
        .collect();
    let start_used = h.queues[0].used().idx().load();
    let heads = h.post_batch(0, &chains);
    let deadline = Instant::now() + within;
    let mut lens = vec![None; heads.len()];
    while lens.iter().any(Option::is_none) {
        let used = h.queues[0].used().idx().load();
        for i in start_used..used {
            let (id, len) = h.used_elem(0, i);
            if let Some(k) = heads.iter().position(|&hd| u32::from(hd) == id) {
                lens[k] = Some(len);
            }
        }
        let missing = lens.iter().filter(|l| l.is_none()).count();
        assert!(
            Instant::now() < deadline,
            "{missing} of {} chains never came back within {within:?}: the device and the \
             service wait for each other (deadlock)",
            heads.len()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    lens.iter()
        .enumerate()
        .map(|(i, len)| h.read(RESPS + i as u64 * 0x200, len.unwrap_or(0) as usize))
        .collect()
}

/// The audit's trigger: a 256-frame region, a session, then 12 invokes
/// echoing the whole region in one batch with one kick. A device that
/// writes every request before it reads a reply blocks on its socket while
/// the service blocks writing the first 1 MiB answer.
#[test]
fn a_batch_of_large_invokes_completes_against_a_service_that_writes_before_it_reads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tee.sock");
    let service = write_before_read_service(UnixListener::bind(&path).unwrap());
    let backend = TrustyBackend::connect(&path).unwrap();
    let mut tee = Tee::new(Box::new(backend), Limits::DEFAULT);
    let mem = guest_memory();
    let h = DeviceHarness::activate(&mem, &mut tee, QUEUE_SIZE);
    let within = Duration::from_secs(30);

    let data: Vec<u8> = (0..MIB).map(|i| (i * 31 % 253) as u8).collect();
    mem.write_slice(&data, GuestAddress(REGION)).unwrap();
    let open = Request::OpenSession(OpenSession {
        uuid: ECHO_UUID,
        client_uuid: Uuid::default(),
        login: 0,
        params: [Param::None; NUM_PARAMS],
    });
    let setup = batch(&h, &[register().encode(1), open.encode(2)], within);
    assert_eq!(u32_at(&setup[0], 0), 0, "registered");
    let shm_id = u64_at(&setup[0], 16);
    assert_eq!(
        (u32_at(&setup[1], 0), u32_at(&setup[1], 16)),
        (0, 0),
        "open"
    );
    let session = u32_at(&setup[1], 24);

    let params = whole_region(Direction::InOut, shm_id);
    let invokes: Vec<Vec<u8>> = (0..12)
        .map(|i| {
            Request::Invoke(Invoke {
                session,
                func: 0,
                params,
            })
            .encode(10 + i)
        })
        .collect();
    let started = Instant::now();
    let answers = batch(&h, &invokes, within);
    for (i, a) in answers.iter().enumerate() {
        assert_eq!(a.len(), 160, "invoke {i}");
        assert_eq!(u64_at(a, 8), 10 + i as u64);
        assert_eq!(
            (u32_at(a, 0), u32_at(a, 16)),
            (0, 0),
            "invoke {i} status, ret"
        );
        assert_eq!(u64_at(a, 32 + 24), u64::from(MIB), "invoke {i} size");
    }
    assert_eq!(h.read(REGION, MIB as usize), data, "echoed in place");
    eprintln!("12 x 1 MiB echoes in {:?}", started.elapsed());
    tee.reset();
    drop(tee);
    service.join().unwrap();
}

/// The other half of the audit: a service that takes the connection and
/// answers `HELLO`, then reads nothing more (hung). 12 opens carrying 1 MiB
/// each fill the socket; the worker must stay responsive (the chains wait,
/// in the ring or for their answer), a reset must stop it at once (not after
/// the 3 s stop wait, leaving a stuck thread and `WorkerBusy`), and the next
/// activation connects again and is served.
#[test]
fn a_service_that_stops_reading_holds_neither_the_worker_nor_a_reset() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tee.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let service = std::thread::spawn(move || {
        let (hung, _) = listener.accept().unwrap();
        serve(hung.try_clone().unwrap(), 1);
        // The reconnection after the reset is served; the hung connection
        // stays open (unread) until then.
        let (s, _) = listener.accept().unwrap();
        serve(s, usize::MAX);
        drop(hung);
    });
    let backend = TrustyBackend::connect(&path).unwrap();
    let mut tee = Tee::new(Box::new(backend), Limits::DEFAULT);
    let mem = guest_memory();
    let h = DeviceHarness::activate(&mem, &mut tee, QUEUE_SIZE);
    let within = Duration::from_secs(30);
    let reg = batch(&h, &[register().encode(1)], within);
    let params = whole_region(Direction::Input, u64_at(&reg[0], 16));
    let open = Request::OpenSession(OpenSession {
        uuid: ECHO_UUID,
        client_uuid: Uuid::default(),
        login: 0,
        params,
    });
    let chains: Vec<Vec<(u64, u32, u16)>> = (0..12)
        .map(|i| {
            let (req, resp) = (REQS + i * 0x1000, RESPS + i * 0x200);
            let bytes = open.encode(10 + i);
            mem.write_slice(&bytes, GuestAddress(req)).unwrap();
            vec![
                (req, bytes.len() as u32, 0),
                (resp, 256, VRING_DESC_F_WRITE),
            ]
        })
        .collect();
    h.post_batch(0, &chains);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        h.queues[0].used().idx().load(),
        1,
        "no answer without the service"
    );
    let started = Instant::now();
    tee.reset();
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(2500),
        "the reset waited {took:?}: the worker was stuck on the service"
    );
    let h = DeviceHarness::activate(&mem, &mut tee, QUEUE_SIZE);
    let mut plain = open.clone();
    if let Request::OpenSession(o) = &mut plain {
        o.params = [Param::None; NUM_PARAMS];
    }
    let a = batch(&h, &[plain.encode(1)], within);
    assert_eq!(
        (u32_at(&a[0], 0), u32_at(&a[0], 16)),
        (0, 0),
        "served again"
    );
    tee.reset();
    drop(tee);
    service.join().unwrap();
}
