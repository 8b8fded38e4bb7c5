//! `sysmgr-binderd`: registers `ISystemManager` on the guest's kernel
//! binder (service manager: `rsb_hub`) and forwards it to the host's
//! `sysmgr` over RPC binder over vsock (host cid 2, port 4200 by default).
//!
//! ```text
//! sysmgr-binderd [--device /dev/binder] [--host vsock:2:4200] [--name sysmgr]
//! ```

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use rsbinder::hub;
use vmstack_aidl::vmstack::sysmgr::ISystemManager::BnSystemManager;
use vmstack_android::conn::{init_kernel, RpcAddr};
use vmstack_android::gateway::{Gateway, GatewayService};

fn run() -> Result<()> {
    let mut device = "/dev/binder".to_string();
    let mut host: RpcAddr = RpcAddr::Vsock(2, 4200);
    let mut name = vmstack_aidl::SERVICE_NAME.to_string();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or_else(|| anyhow!("{a} needs a value"));
        match a.as_str() {
            "--device" => device = val()?,
            "--host" => host = val()?.parse().map_err(|e: String| anyhow!(e))?,
            "--name" => name = val()?,
            _ => bail!("unknown option {a:?}: sysmgr-binderd [--device /dev/binder] [--host vsock:2:4200] [--name sysmgr]"),
        }
    }
    init_kernel(&device)?;
    let gw = Gateway::new(host.clone());
    let start = Instant::now();
    let mut warned = false;
    while let Err(e) = gw.connect() {
        if !warned {
            tracing::warn!("host sysmgr at {host:?} not reachable yet ({e:#}); retrying");
            warned = true;
        }
        if start.elapsed() > Duration::from_secs(120) {
            bail!("the host's sysmgr at {host:?} did not answer for 120 s: {e:#}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    tracing::info!("connected to the host's sysmgr at {host:?}");
    let service = BnSystemManager::new_binder(GatewayService(gw.clone()));
    let start = Instant::now();
    loop {
        match hub::add_service(&name, service.as_binder()) {
            Ok(()) => break,
            Err(e) if start.elapsed() < Duration::from_secs(20) => {
                tracing::debug!("add_service: {e:?}; the service manager may not be up yet");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => bail!("cannot register {name:?} with the service manager ({e:?}): is rsb_hub running on {device}?"),
        }
    }
    println!("sysmgr-binderd: {name} registered on {device}, forwarding to {host:?}");
    let g = gw.clone();
    std::thread::Builder::new()
        .name("host-monitor".into())
        .spawn(move || g.monitor(Duration::from_secs(1)))?;
    rsbinder::ProcessState::join_thread_pool().map_err(|e| anyhow!("binder thread pool: {e:?}"))?;
    Ok(())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SYSMGR_BINDERD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sysmgr-binderd: {}", format!("{e:#}").replace('\n', "; "));
            ExitCode::FAILURE
        }
    }
}
