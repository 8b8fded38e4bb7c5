//! The system manager's RPC binder entry with arbitrary bytes: the real
//! `ISystemManager` endpoint of an Android guest (`sysmgr::binder`), served
//! by rsbinder's `RpcServer` with the daemon's settings, its calls
//! answered by a real arbiter. Each input is one connection's byte stream
//! (what a hostile guest writes to its vsock), handed to the server's
//! connection handler (`serve_connection`, the accept loop's next step;
//! in-memory, so no 5 ms accept poll per input); every 2000 inputs a
//! well-behaved client must still get `getSystemState` answered over the
//! server's unix socket, so a wedged or dead server is a finding, as is a
//! panic.

#![no_main]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use rsbinder::rpc::transport::MemTransport;
use rsbinder::rpc::{RpcClientConfig, RpcServer, RpcSession, RpcTransport};
use sysmgr::binder::{self, BinderRequest};
use sysmgr::daemon::Event;
use system_manager::testing::guest_tables;
use system_manager::{Arbiter, Input, Millis, Policy};
use vmstack_aidl::vmstack::sysmgr::ISystemManager::ISystemManager;

fn answer(arbiter: &mut Arbiter, now: &mut u64, req: BinderRequest) {
    *now += 1;
    let mut feed = |input: Input, reply: tokio::sync::oneshot::Sender<Result<(), String>>| {
        let out = arbiter.handle(Millis(*now), input);
        let _ = reply.send(binder::call_answer(&out));
    };
    match req {
        BinderRequest::State(r) => {
            let _ = r.send(binder::system_parcel(arbiter, *now, &[false, false]));
        }
        BinderRequest::Dump(r) => {
            let _ = r.send(format!("system {}", arbiter.system()));
        }
        BinderRequest::Report {
            value,
            param,
            reply,
            ..
        } => feed(
            Input::ApPowerStateReport {
                guest: "android".into(),
                value,
                param,
            },
            reply,
        ),
        BinderRequest::ShutdownRequest { param, reply, .. } => feed(
            Input::ShutdownRequest {
                guest: "android".into(),
                param,
            },
            reply,
        ),
    }
}

fn server() -> &'static (PathBuf, std::sync::Arc<RpcServer>) {
    static PATH: OnceLock<(PathBuf, std::sync::Arc<RpcServer>)> = OnceLock::new();
    PATH.get_or_init(|| {
        let fleet = guest_tables(&[("android", "android", None), ("cluster", "cluster", None)]);
        let policy = Policy::from_toml_str(&fleet).expect("policy");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
        std::thread::spawn(move || {
            let mut arbiter = Arbiter::new(policy);
            let mut now = 0;
            arbiter.handle(Millis(0), Input::IgnitionOn);
            arbiter.handle(
                Millis(0),
                Input::VmStarted {
                    guest: "android".into(),
                },
            );
            while let Some(ev) = rx.blocking_recv() {
                if let Event::Binder(req) = ev {
                    answer(&mut arbiter, &mut now, req);
                }
            }
        });
        let listeners = sysmgr::notify::Listeners::start("fuzz").expect("listeners");
        let path =
            std::env::temp_dir().join(format!("vmstack-fuzz-rpc-{}.sock", std::process::id()));
        let server = RpcServer::setup_unix_server(&path).expect("bind");
        binder::configure(&server);
        server
            .set_root(binder::service_binder(
                Some((0, "android".into())),
                tx,
                listeners,
            ))
            .expect("root");
        let _ = server.run_background();
        (path, server)
    })
}

fn check_alive(path: &PathBuf) {
    let session = RpcSession::setup_client_android13plus_with_config(
        RpcClientConfig::unix(path, 2).timeout(Duration::from_secs(10)),
    )
    .expect("a well-behaved client can still connect");
    let root = session.get_root().expect("root");
    let sm = <dyn ISystemManager as rsbinder::FromIBinder>::try_from(root).expect("ISystemManager");
    sm.getSystemState().expect("the server still answers");
    session.close_session();
}

fuzz_target!(|data: &[u8]| {
    static N: AtomicU64 = AtomicU64::new(0);
    let (path, server) = server();
    let (client, end) = MemTransport::pair();
    server.serve_connection(Box::new(end));
    let _ = client.send_raw(data);
    let _ = client.shutdown();
    drop(client);
    server.join_workers();
    if N.fetch_add(1, Ordering::Relaxed) % 2000 == 0 {
        check_alive(path);
    }
});
