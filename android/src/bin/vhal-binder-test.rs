//! `vhal-binder-test`: `vhal-test client` (tests/guest-tools) over binder:
//! Android's side of the VHAL power handshake as an ordinary kernel-binder
//! client of the `sysmgr` service that `sysmgr-binderd` registers in the
//! guest. It registers an `IPowerStateListener`, reports `WAIT_FOR_VHAL`,
//! prints each `AP_POWER_STATE_REQ` callback as `vhal: REQ <NAME>`,
//! answers `ON` with `ON` and `CANCEL_SHUTDOWN` with `SHUTDOWN_CANCELLED`,
//! and on the first `SHUTDOWN_PREPARE` runs the script (`postpone:MS`,
//! `start`, `hang`; default `postpone:5000,postpone:5000,start`), exactly
//! as `vhal-test client` does on the line channel.
//!
//! ```text
//! vhal-binder-test [--device /dev/binder] [--script STEPS] [--step-ms N]
//! vhal-binder-test bench [--device D] [--count N] [--echo-port P] [--bytes B]
//! ```
//!
//! `bench` (`cargo xtask bench binder`) times N `getSystemState` round
//! trips through kernel binder, `sysmgr-binderd` and RPC binder, then N
//! round trips of a B-byte message (default 512, about the size of the
//! `getSystemState` reply) to an echo server on host port P over raw
//! vsock, and prints `bench: <what> n=N p50_us=.. p99_us=.. max_us=..`.

use std::process::ExitCode;
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use guest_tools::vhal;
use rsbinder::{hub, Interface, Strong};
use vmstack_aidl::vmstack::sysmgr::IPowerStateListener::{
    BnPowerStateListener, IPowerStateListener,
};
use vmstack_aidl::vmstack::sysmgr::ISystemManager::{self as ism, ISystemManager};
use vmstack_aidl::vmstack::sysmgr::SystemState::SystemState;

struct Listener(Mutex<Sender<[i32; 2]>>);

impl Interface for Listener {}

impl IPowerStateListener for Listener {
    fn onApPowerStateReq(&self, value: i32, param: i32) -> rsbinder::BinderResult<()> {
        let _ = self.0.lock().map(|tx| tx.send([value, param]));
        Ok(())
    }
    fn onSystemStateChanged(&self, _s: &SystemState) -> rsbinder::BinderResult<()> {
        Ok(())
    }
}

fn report(sm: &Strong<dyn ISystemManager>, value: i32, param: i32, what: &str) {
    // The gateway retries over a new host session; a few more tries cover
    // a host daemon that is restarting.
    for _ in 0..30 {
        match sm.reportApPowerState(value, param) {
            Ok(()) => {
                println!("vhal: REPORT {what}");
                return;
            }
            Err(e) if e.service_specific_error() == ism::ERROR_UNAVAILABLE => {
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(e) => {
                println!("vhal: REPORT {what} refused: {e:?}");
                return;
            }
        }
    }
    println!("vhal: REPORT {what} lost: no host");
}

fn percentiles(name: &str, mut us: Vec<u64>) {
    us.sort_unstable();
    let at = |q: f64| us[((us.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "bench: {name} n={} p50_us={} p99_us={} max_us={}",
        us.len(),
        at(0.5),
        at(0.99),
        us[us.len() - 1]
    );
}

fn bench(sm: &Strong<dyn ISystemManager>, count: usize, port: u32, bytes: usize) -> Result<()> {
    use std::io::{Read, Write};
    let count = count.max(1);
    for _ in 0..50 {
        sm.getSystemState()
            .map_err(|e| anyhow!("getSystemState: {e:?}"))?;
    }
    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        let t = Instant::now();
        sm.getSystemState()
            .map_err(|e| anyhow!("getSystemState: {e:?}"))?;
        times.push(t.elapsed().as_micros() as u64);
    }
    percentiles("binder_getSystemState", times);
    let mut s = vsock::VsockStream::connect_with_cid_port(2, port)
        .map_err(|e| anyhow!("vsock connect 2:{port}: {e}"))?;
    let msg = vec![0x5au8; bytes];
    let mut back = vec![0u8; bytes];
    let mut times = Vec::with_capacity(count);
    for i in 0..count + 50 {
        let t = Instant::now();
        s.write_all(&msg)?;
        s.read_exact(&mut back)?;
        if i >= 50 {
            times.push(t.elapsed().as_micros() as u64);
        }
    }
    percentiles(&format!("vsock_echo_{bytes}B"), times);
    Ok(())
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opt = |name: &str| vhal::opt(&args, name);
    let device = opt("--device").unwrap_or_else(|| "/dev/binder".into());
    let steps: Vec<String> = opt("--script")
        .unwrap_or_else(|| vhal::DEFAULT_SCRIPT.into())
        .split(',')
        .map(str::to_string)
        .collect();
    let step_ms: u64 = opt("--step-ms")
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    vmstack_android::conn::init_kernel(&device)?;
    let start = Instant::now();
    let sm = loop {
        if let Some(b) = hub::check_service(vmstack_aidl::SERVICE_NAME) {
            break <dyn ISystemManager as rsbinder::FromIBinder>::try_from(b)
                .map_err(|e| anyhow!("sysmgr is not an ISystemManager: {e:?}"))?;
        }
        if start.elapsed() > Duration::from_secs(60) {
            bail!("no `sysmgr` service on {device} after 60 s (is sysmgr-binderd running?)");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    println!("vhal: binder service sysmgr found");
    if args.first().map(String::as_str) == Some("bench") {
        let count = opt("--count").and_then(|s| s.parse().ok()).unwrap_or(1000);
        let port = opt("--echo-port")
            .and_then(|s| s.parse().ok())
            .unwrap_or(5000);
        let bytes = opt("--bytes").and_then(|s| s.parse().ok()).unwrap_or(512);
        return bench(&sm, count, port, bytes);
    }
    let (tx, rx) = channel();
    let listener = BnPowerStateListener::new_binder(Listener(Mutex::new(tx)));
    sm.registerListener(&listener)
        .map_err(|e| anyhow!("registerListener: {e:?}"))?;
    report(&sm, ism::REPORT_WAIT_FOR_VHAL, 0, "WAIT_FOR_VHAL");
    let cancelled = Arc::new(Mutex::new(false));
    let mut started = false;
    for [v, p] in rx {
        let index = |n: i32| usize::try_from(n).unwrap_or(usize::MAX);
        println!("{}", vhal::req_line(index(v), index(p)));
        match v {
            ism::REQ_ON => report(&sm, ism::REPORT_ON, 0, "ON"),
            ism::REQ_SHUTDOWN_PREPARE if !started => {
                started = true;
                *cancelled.lock().unwrap_or_else(|e| e.into_inner()) = false;
                let (sm, steps, c) = (sm.clone(), steps.clone(), cancelled.clone());
                std::thread::spawn(move || {
                    vhal::run_script(&steps, step_ms, &c, |v, p, what| report(&sm, v, p, what))
                });
            }
            ism::REQ_CANCEL_SHUTDOWN => {
                *cancelled.lock().unwrap_or_else(|e| e.into_inner()) = true;
                started = false;
                report(&sm, ism::REPORT_SHUTDOWN_CANCELLED, 0, "SHUTDOWN_CANCELLED");
            }
            _ => {}
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vhal-binder-test: {}", format!("{e:#}").replace('\n', "; "));
            ExitCode::FAILURE
        }
    }
}
