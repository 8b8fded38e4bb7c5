//! The TEE server through the real client over a socket pair.

use std::time::{Duration, Instant};

use super::*;
use crate::service::{BootClock, Service};
use crate::ta::echo::{wait_params, CMD_ECHO, CMD_WAIT};
use crate::tee::proto::{ParamOut, Value, NUM_PARAMS};
use crate::tee::TeeClient;

struct Fixture {
    _dir: tempfile::TempDir,
    service: Service,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let service = Service::open(dir.path(), Arc::new(BootClock)).unwrap();
        Fixture { _dir: dir, service }
    }

    /// A fixture and a client of its guest `guest`.
    fn with_client(guest: &str) -> (Self, TeeClient) {
        let f = Fixture::new();
        let c = f.client(guest);
        (f, c)
    }

    fn client(&self, guest: &str) -> TeeClient {
        let (a, _) = self.connection(guest);
        TeeClient::from_stream(a).unwrap()
    }

    /// A connection of guest `guest` served by [`serve`] on its own
    /// thread: our end and the thread.
    fn connection(&self, guest: &str) -> (UnixStream, std::thread::JoinHandle<io::Result<()>>) {
        let (a, b) = UnixStream::pair().unwrap();
        let g = self.service.guest(guest).unwrap();
        (
            a,
            std::thread::spawn(move || serve(b, &g, TeeLimits::default())),
        )
    }
}

fn open(c: &mut TeeClient, ta: TaKind) -> u32 {
    let r = c
        .call(&Request::open_session(*ta.uuid().as_bytes(), login::USER))
        .unwrap();
    assert_eq!(r.ret, result::SUCCESS, "{r:?}");
    match r.body {
        ResponseBody::OpenSession { session, .. } => session,
        other => panic!("{other:?}"),
    }
}

fn invoke(c: &mut TeeClient, session: u32, func: u32, params: [Param; NUM_PARAMS]) -> Response {
    c.call(&Request::Invoke {
        session,
        func,
        cancel_id: 0,
        params,
    })
    .unwrap()
}

fn outs(r: &Response) -> &[ParamOut; NUM_PARAMS] {
    match &r.body {
        ResponseBody::Invoke { params } => params,
        other => panic!("{other:?}"),
    }
}

#[test]
fn echo_values_and_a_one_mib_memref() {
    let (_f, mut c) = Fixture::with_client("g");
    let s = open(&mut c, TaKind::Echo);
    let data: Vec<u8> = (0..(1 << 20)).map(|i| (i * 7 % 251) as u8).collect();
    let v = Value { a: 1, b: 2, c: 3 };
    let r = invoke(
        &mut c,
        s,
        CMD_ECHO,
        [
            Param::ValueInput(v),
            Param::ValueOutput,
            Param::MemrefInput(data.clone()),
            Param::MemrefOutput { capacity: 1 << 20 },
        ],
    );
    assert_eq!(r.ret, result::SUCCESS);
    assert_eq!(outs(&r)[1], ParamOut::ValueOutput(v));
    assert_eq!(
        outs(&r)[3],
        ParamOut::MemrefOutput {
            size: 1 << 20,
            data
        }
    );
}

#[test]
fn wait_is_cancelled_while_another_session_works() {
    let (_f, c) = Fixture::with_client("g");
    let (mut tx, mut rx) = c.split();
    // Sessions opened through the split halves.
    let open_req = |ta: TaKind| Request::open_session(*ta.uuid().as_bytes(), login::PUBLIC);
    tx.send(&open_req(TaKind::Echo)).unwrap();
    tx.send(&open_req(TaKind::Echo)).unwrap();
    let mut sids = Vec::new();
    for _ in 0..2 {
        match rx.recv().unwrap().body {
            ResponseBody::OpenSession { session, .. } => sids.push(session),
            other => panic!("{other:?}"),
        }
    }
    let start = Instant::now();
    let wait_id = tx
        .send(&Request::Invoke {
            session: sids[0],
            func: CMD_WAIT,
            cancel_id: 42,
            params: wait_params(20_000),
        })
        .unwrap();
    // The other session answers while the first one waits.
    let echo_id = tx
        .send(&Request::Invoke {
            session: sids[1],
            func: CMD_ECHO,
            cancel_id: 0,
            params: Param::only(Param::MemrefInout(b"x".to_vec())),
        })
        .unwrap();
    let r = rx.recv().unwrap();
    assert_eq!(r.id, echo_id);
    assert_eq!(r.ret, result::SUCCESS);
    std::thread::sleep(Duration::from_millis(100));
    let cancel_id = tx
        .send(&Request::Cancel {
            session: sids[0],
            cancel_id: 42,
        })
        .unwrap();
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(rx.recv().unwrap());
    }
    got.sort_by_key(|r| r.id);
    assert_eq!((got[0].id, got[0].ret), (wait_id, result::CANCEL));
    assert_eq!((got[1].id, got[1].ret), (cancel_id, result::SUCCESS));
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn unknown_things_are_errors_and_the_connection_survives() {
    let (_f, mut c) = Fixture::with_client("g");
    let r = c
        .call(&Request::open_session([1; 16], login::PUBLIC))
        .unwrap();
    assert_eq!((r.ret, r.origin), (result::ITEM_NOT_FOUND, origin::TEE));
    let r = c
        .call(&Request::open_session(*TaKind::Echo.uuid().as_bytes(), 3))
        .unwrap();
    assert_eq!(r.ret, result::BAD_PARAMETERS);
    let r = invoke(&mut c, 77, 0, Default::default());
    assert_eq!(r.ret, result::ITEM_NOT_FOUND);
    let r = c.call(&Request::CloseSession { session: 77 }).unwrap();
    assert_eq!(r.ret, result::ITEM_NOT_FOUND);
    let s = open(&mut c, TaKind::Echo);
    let r = c.call(&Request::CloseSession { session: s }).unwrap();
    assert_eq!(r.ret, result::SUCCESS);
    let r = invoke(&mut c, s, 0, Default::default());
    assert_eq!(r.ret, result::ITEM_NOT_FOUND, "closed");
}

#[test]
fn sessions_are_per_connection_and_bounded() {
    let (f, mut a) = Fixture::with_client("g");
    let mut b = f.client("g");
    let s = open(&mut a, TaKind::Echo);
    let r = invoke(&mut b, s, CMD_ECHO, Default::default());
    assert_eq!(
        r.ret,
        result::ITEM_NOT_FOUND,
        "another connection's session"
    );
    let limits = TeeLimits::default();
    for _ in 1..limits.max_sessions {
        open(&mut a, TaKind::Datasink);
    }
    let r = a
        .call(&Request::open_session(
            *TaKind::Echo.uuid().as_bytes(),
            login::PUBLIC,
        ))
        .unwrap();
    assert_eq!(r.ret, result::BUSY);
}

#[test]
fn a_garbage_frame_or_a_missing_hello_closes_the_connection() {
    let f = Fixture::new();
    let (mut a, t) = f.connection("g");
    a.write_all(&Request::CloseSession { session: 1 }.encode_frame(1))
        .unwrap();
    t.join().unwrap().unwrap();
    let (mut a, t) = f.connection("g");
    a.write_all(&[5, 0, 0, 0, 1, 2, 3, 4, 5]).unwrap();
    t.join().unwrap().unwrap();
    let (mut a, t) = f.connection("g");
    a.write_all(&Request::Hello { version: 2 }.encode_frame(1))
        .unwrap();
    let r = Response::decode(&read_body(&mut a).unwrap().unwrap()).unwrap();
    assert_eq!(r.ret, result::NOT_SUPPORTED);
    assert!(
        read_body(&mut a).unwrap().is_none(),
        "closed after the refusal"
    );
    t.join().unwrap().unwrap();
}

/// A storage message through the GP message command.
fn storage_open(c: &mut TeeClient, s: u32, name: &str, create: bool) -> i32 {
    use crate::ta::storage::proto as sp;
    let mut m = Vec::new();
    for v in [sp::FILE_OPEN, 0, sp::MSG_FLAG_TRANSACT_COMPLETE, 0, 0, 0] {
        m.extend_from_slice(&v.to_le_bytes());
    }
    m.extend_from_slice(&u32::from(create).to_le_bytes());
    m.extend_from_slice(name.as_bytes());
    let r = invoke(
        c,
        s,
        0,
        [
            Param::MemrefInput(m),
            Param::MemrefOutput { capacity: 4096 },
            Param::ValueOutput,
            Param::None,
        ],
    );
    assert_eq!(r.ret, result::SUCCESS);
    match &outs(&r)[1] {
        ParamOut::MemrefOutput { data, .. } => sp::Header::parse(data).unwrap().result,
        other => panic!("{other:?}"),
    }
}

#[test]
fn storage_over_gp_is_isolated_per_guest() {
    let (f, mut a) = Fixture::with_client("a");
    let mut b = f.client("b");
    let sa = open(&mut a, TaKind::StorageTd);
    let sb = open(&mut b, TaKind::StorageTd);
    assert_eq!(storage_open(&mut a, sa, "mine", true), 0);
    assert_eq!(storage_open(&mut a, sa, "mine", false), 0);
    assert_eq!(
        storage_open(&mut b, sb, "mine", false),
        crate::ta::storage::proto::err::NOT_FOUND
    );
}

/// A raw connection after `HELLO`, with an echo session open: the stream,
/// the serving thread and the session.
fn raw_echo_connection(f: &Fixture) -> (UnixStream, std::thread::JoinHandle<io::Result<()>>, u32) {
    let (mut a, t) = f.connection("g");
    a.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    a.write_all(
        &Request::Hello {
            version: PROTOCOL_VERSION,
        }
        .encode_frame(1),
    )
    .unwrap();
    let r = Response::decode(&read_body(&mut a).unwrap().unwrap()).unwrap();
    assert_eq!(r.ret, result::SUCCESS);
    let open = Request::open_session(*TaKind::Echo.uuid().as_bytes(), login::PUBLIC);
    a.write_all(&open.encode_frame(2)).unwrap();
    let r = Response::decode(&read_body(&mut a).unwrap().unwrap()).unwrap();
    let ResponseBody::OpenSession { session, .. } = r.body else {
        panic!("{r:?}");
    };
    (a, t, session)
}

fn echo_mib(session: u32, data: &[u8]) -> Request {
    Request::Invoke {
        session,
        func: CMD_ECHO,
        cancel_id: 0,
        params: Param::only(Param::MemrefInout(data.to_vec())),
    }
}

/// The deadlock the VMM and trustyd could fall into: the VMM writes many
/// large invokes before it reads any response. The first invoke's 1 MiB
/// response fills the socket; the service must go on reading the requests
/// (its quick answers to opens, cancels and closes, and its BUSY answers,
/// must not wait behind that response), so the peer's writes all complete.
#[test]
fn a_peer_that_does_not_read_yet_does_not_stop_the_reading() {
    let f = Fixture::new();
    let (a, t, session) = raw_echo_connection(&f);
    let data: Vec<u8> = (0..(1 << 20)).map(|i| (i * 13 % 251) as u8).collect();
    let mut w = a.try_clone().unwrap();
    let (done_tx, done) = std::sync::mpsc::channel();
    let open = Request::open_session(*TaKind::Echo.uuid().as_bytes(), login::PUBLIC);
    let requests: Vec<Request> = (0..12)
        .flat_map(|i| {
            let mut v = vec![echo_mib(session, &data)];
            if i % 3 == 1 {
                v.push(open.clone());
                v.push(Request::Cancel {
                    session,
                    cancel_id: 0,
                });
            }
            v
        })
        .collect();
    let sent = requests.len();
    let writer = std::thread::spawn(move || {
        for (i, r) in requests.iter().enumerate() {
            w.write_all(&r.encode_frame(100 + i as u64)).unwrap();
        }
        let _ = done_tx.send(());
    });
    assert!(
        done.recv_timeout(Duration::from_secs(5)).is_ok(),
        "the service stopped reading while its responses were unread (deadlock)"
    );
    writer.join().unwrap();
    let mut a = a;
    let (mut echoed, mut busy) = (0, 0);
    for _ in 0..sent {
        let r = Response::decode(&read_body(&mut a).unwrap().unwrap()).unwrap();
        match &r.body {
            ResponseBody::Invoke { params } if r.ret == result::SUCCESS => {
                assert_eq!(
                    params[0],
                    ParamOut::MemrefInout {
                        size: 1 << 20,
                        data: data.clone()
                    }
                );
                echoed += 1;
            }
            ResponseBody::Invoke { .. } => {
                assert_eq!(r.ret, result::BUSY, "{:?}", r.ret);
                busy += 1;
            }
            _ => assert_eq!(r.ret, result::SUCCESS, "{r:?}"),
        }
    }
    assert_eq!(echoed + busy, 12);
    assert!(echoed > 0);
    drop(a);
    t.join().unwrap().unwrap();
}

/// The reader's queue of responses is bounded: a peer that never reads
/// (its socket full behind a 1 MiB response) and sends more quick requests
/// than the bound is disconnected rather than buffered without end.
#[test]
fn a_peer_that_never_reads_is_disconnected_past_the_bound() {
    let f = Fixture::new();
    let (mut a, t, session) = raw_echo_connection(&f);
    let data = vec![7u8; 1 << 20];
    a.write_all(&echo_mib(session, &data).encode_frame(10))
        .unwrap();
    a.write_all(&echo_mib(session, &data).encode_frame(11))
        .unwrap();
    // Quick requests until the service stops taking them (however many of
    // their responses fit in the socket before the writer blocks).
    a.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    for i in 0..100_000u64 {
        if a.write_all(&Request::CloseSession { session: 77 }.encode_frame(20 + i))
            .is_err()
        {
            break;
        }
    }
    let (done, ended) = std::sync::mpsc::channel();
    std::thread::spawn(move || done.send(t.join().unwrap()));
    let e = ended
        .recv_timeout(Duration::from_secs(30))
        .expect("the service still serves a peer that reads nothing")
        .unwrap_err();
    assert!(e.to_string().contains("unread"), "{e}");
    // The connection is closed, not left to a writer blocked on it: the
    // peer reads what was sent, then the end (or a reset: the service
    // closed with requests of ours unread), never a timeout.
    a.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut rest = Vec::new();
    match std::io::Read::read_to_end(&mut a, &mut rest) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("no end of the connection: {e}"),
    }
}
