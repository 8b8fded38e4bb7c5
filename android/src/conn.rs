//! Where binder objects come from: the guest's kernel binder (through its
//! service manager) or an RPC binder socket (`unix:PATH`, `vsock:CID:PORT`,
//! whose root object is the service, listed as `sysmgr`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use rsbinder::rpc::{RpcClientConfig, RpcSession};
use rsbinder::{hub, Parcel, ProcessState, SIBinder, StatusCode};

/// Highest android-13+ RPC wire version offered.
pub const RPC_WIRE_VERSION: u32 = 2;

/// An RPC binder address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RpcAddr {
    /// `unix:PATH`
    Unix(PathBuf),
    /// `vsock:CID:PORT` (cid 2 is the host, from a guest)
    Vsock(u32, u32),
}

impl std::str::FromStr for RpcAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(p) = s.strip_prefix("unix:") {
            if p.is_empty() {
                return Err("unix: needs a path (unix:/path/to/sysmgr.sock)".into());
            }
            return Ok(RpcAddr::Unix(PathBuf::from(p)));
        }
        if let Some(rest) = s.strip_prefix("vsock:") {
            let mut it = rest.split(':');
            if let (Some(c), Some(p), None) = (it.next(), it.next(), it.next()) {
                if let (Ok(c), Ok(p)) = (c.parse(), p.parse()) {
                    return Ok(RpcAddr::Vsock(c, p));
                }
            }
            return Err(format!(
                "bad vsock address {s:?}: use vsock:CID:PORT (e.g. vsock:2:4200)"
            ));
        }
        Err(format!(
            "bad RPC address {s:?}: use unix:PATH or vsock:CID:PORT"
        ))
    }
}

/// A connection to binder objects.
pub enum Conn {
    /// Kernel binder through the service manager.
    Kernel,
    /// One RPC session and its root object.
    Rpc {
        /// The session (closed on drop).
        session: RpcSession,
        /// Its root object.
        root: SIBinder,
    },
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Conn::Rpc { session, .. } = self {
            session.close_session();
        }
    }
}

/// Opens the kernel binder device `dev` (e.g. `/dev/binder`) with a
/// thread pool for incoming calls; a missing driver is a one-line error.
pub fn init_kernel(dev: &str) -> Result<()> {
    if !std::path::Path::new(dev).exists() {
        bail!("{dev} does not exist: this kernel has no binder driver loaded (modprobe binder_linux; Debian's generic kernels build it as a module, cloud kernels have none)");
    }
    ProcessState::init(dev, 2).map_err(|e| anyhow!("cannot open {dev}: {e}"))?;
    ProcessState::start_thread_pool();
    Ok(())
}

impl Conn {
    /// Kernel binder (after [`init_kernel`]).
    pub fn kernel(dev: &str) -> Result<Conn> {
        init_kernel(dev)?;
        Ok(Conn::Kernel)
    }

    /// An RPC session (with one callback connection, for `watch`).
    pub fn rpc(addr: &RpcAddr) -> Result<Conn> {
        let config = match addr {
            RpcAddr::Unix(p) => RpcClientConfig::unix(p, RPC_WIRE_VERSION),
            RpcAddr::Vsock(c, p) => RpcClientConfig::vsock(*c, *p, RPC_WIRE_VERSION),
        };
        let session = RpcSession::setup_client_android13plus_with_config(
            config
                .incoming_connections(1)
                .timeout(Duration::from_secs(10)),
        )
        .map_err(|e| {
            anyhow!(
                "cannot connect to {addr:?}: {} (is sysmgr running?)",
                status_text(e)
            )
        })?;
        let root = session
            .get_root()
            .map_err(|e| anyhow!("{addr:?}: no root object: {}", status_text(e)))?;
        Ok(Conn::Rpc { session, root })
    }

    /// Service names with their binders (`list`).
    pub fn list(&self) -> Result<Vec<String>> {
        match self {
            Conn::Kernel => Ok(hub::list_services(hub::DUMP_FLAG_PRIORITY_ALL)),
            Conn::Rpc { .. } => Ok(vec![vmstack_aidl::SERVICE_NAME.to_string()]),
        }
    }

    /// The service `name`, or `None` when nothing is registered under it.
    pub fn check(&self, name: &str) -> Option<SIBinder> {
        match self {
            Conn::Kernel => hub::check_service(name),
            Conn::Rpc { root, .. } => (name == vmstack_aidl::SERVICE_NAME).then(|| root.clone()),
        }
    }

    /// The service `name`, or an error saying how to find one.
    pub fn get(&self, name: &str) -> Result<SIBinder> {
        self.check(name)
            .ok_or_else(|| anyhow!("service {name:?} not found (see `vmbinder list`)"))
    }

    /// A request parcel for `binder` with its interface token.
    pub fn request(&self, binder: &SIBinder, descriptor: &str) -> Result<Parcel> {
        if let Some(rp) = (**binder)
            .as_any()
            .downcast_ref::<rsbinder::rpc::RpcProxy>()
        {
            return rp
                .build_request(descriptor)
                .map_err(|e| anyhow!(status_text(e)));
        }
        let remote = binder.as_remote().context("not a remote binder")?;
        remote
            .prepare_transact(true)
            .map_err(|e| anyhow!(status_text(e)))
    }
}

/// Sends a transaction and returns the reply parcel.
pub fn transact(binder: &SIBinder, code: u32, data: &Parcel) -> Result<Parcel> {
    let remote = binder.as_remote().context("not a remote binder")?;
    match remote.submit_transact(code, data, 0) {
        Ok(Some(p)) => Ok(p),
        Ok(None) => Ok(Parcel::new()),
        Err(e) => Err(anyhow!(status_text(e))),
    }
}

/// The interface descriptor of `binder` (`INTERFACE_TRANSACTION`).
pub fn descriptor(binder: &SIBinder) -> Result<String> {
    let remote = binder.as_remote().context("not a remote binder")?;
    let data = remote
        .prepare_transact(false)
        .map_err(|e| anyhow!(status_text(e)))?;
    let mut reply = match remote.submit_transact(rsbinder::INTERFACE_TRANSACTION, &data, 0) {
        Ok(Some(p)) => p,
        Ok(None) => bail!("no reply to INTERFACE_TRANSACTION"),
        Err(e) => bail!(status_text(e)),
    };
    reply
        .read::<String>()
        .map_err(|e| anyhow!("bad descriptor reply: {e:?}"))
}

/// A transport status in words (a dead peer says so).
pub fn status_text(e: StatusCode) -> String {
    match e {
        StatusCode::DeadObject => "the service's process is gone (dead peer)".to_string(),
        StatusCode::UnknownTransaction => "unknown transaction code".to_string(),
        StatusCode::TimedOut => "timed out waiting for the peer".to_string(),
        e => format!("{e:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_addresses() {
        assert_eq!("unix:/a/b".parse(), Ok(RpcAddr::Unix("/a/b".into())));
        assert_eq!("vsock:2:4200".parse(), Ok(RpcAddr::Vsock(2, 4200)));
        for bad in ["unix:", "vsock:2", "vsock:x:1", "tcp:1", "vsock:2:3:4"] {
            let e = bad.parse::<RpcAddr>().expect_err(bad);
            assert!(e.contains("unix:") || e.contains("vsock:"), "{e}");
        }
    }

    #[test]
    fn a_kernel_without_binder_is_one_line() {
        let e = init_kernel("/nonexistent/binder").expect_err("no driver");
        let text = format!("{e:#}");
        assert!(
            text.contains("no binder driver") && !text.contains('\n'),
            "{text}"
        );
    }
}
