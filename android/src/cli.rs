//! `vmbinder`: Android's `service` tool habits for vmstack's binder
//! services, on the guest's kernel binder or over RPC binder.
//!
//! ```text
//! vmbinder [--rpc unix:PATH|vsock:CID:PORT] [--device /dev/binder] COMMAND
//!   list                               services and their interfaces
//!   check NAME                         whether NAME is registered
//!   call NAME CODE [i32 N | i64 N | f N | d N | s16 STR | null]...
//!                                      a raw transaction, `service call` style
//!   call NAME METHOD [ARG]...          a typed call by AIDL method name
//!   watch [NAME] [--count N] [--seconds S]
//!                                      prints IPowerStateListener callbacks
//!   dump [NAME]                        the arbiter's state (dumpState)
//! ```

use std::io::Write;
use std::sync::mpsc::{channel, Sender};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rsbinder::{Interface, Strong};
use vmstack_aidl::api::{Api, ConstValue, DeclKind};
use vmstack_aidl::vmstack::sysmgr::IPowerStateListener::{
    BnPowerStateListener, IPowerStateListener,
};
use vmstack_aidl::vmstack::sysmgr::ISystemManager::ISystemManager;
use vmstack_aidl::vmstack::sysmgr::SystemState::SystemState;

use crate::args::{format_reply, parse_raw_args, RawArg};
use crate::conn::{descriptor, status_text, transact, Conn, RpcAddr};
use crate::typed::{display, find_method, parse_args, read_reply, write_args};

/// The usage text.
pub const USAGE: &str = "usage: vmbinder [--rpc unix:PATH|vsock:CID:PORT] [--device DEV] list | check NAME | call NAME CODE|METHOD [ARGS...] | watch [NAME] [--count N] [--seconds S] | dump [NAME]";

const SM: &str = "vmstack.sysmgr.ISystemManager";

/// Where to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Kernel binder on this device.
    Kernel(String),
    /// RPC binder at this address.
    Rpc(RpcAddr),
}

/// Parses the global options and returns the target and the command words.
pub fn parse_target(args: &[String]) -> Result<(Target, Vec<String>)> {
    let mut target = Target::Kernel("/dev/binder".into());
    let mut rest = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--rpc" => {
                let v = it.next().ok_or_else(|| {
                    anyhow!("--rpc needs an address (unix:PATH or vsock:CID:PORT)")
                })?;
                target = Target::Rpc(v.parse().map_err(|e: String| anyhow!(e))?);
            }
            "--device" => {
                let v = it
                    .next()
                    .ok_or_else(|| anyhow!("--device needs a path (e.g. /dev/binder)"))?;
                target = Target::Kernel(v.clone());
            }
            _ => {
                rest.push(a.clone());
                rest.extend(it.by_ref().cloned());
            }
        }
    }
    Ok((target, rest))
}

/// Connects to `target`.
pub fn connect(target: &Target) -> Result<Conn> {
    match target {
        Target::Kernel(dev) => Conn::kernel(dev),
        Target::Rpc(addr) => Conn::rpc(addr),
    }
}

/// Runs one command, writing its output to `out`.
pub fn run(conn: &Conn, words: &[String], out: &mut dyn Write) -> Result<()> {
    let api = vmstack_aidl::source_api().context("the built-in AIDL")?;
    let w = |i: usize| words.get(i).map(String::as_str);
    match w(0) {
        Some("list") => {
            let names = conn.list()?;
            writeln!(out, "Found {} services:", names.len())?;
            for (i, n) in names.iter().enumerate() {
                let desc = conn
                    .check(n)
                    .and_then(|b| descriptor(&b).ok())
                    .unwrap_or_default();
                writeln!(out, "{i}\t{n}: [{desc}]")?;
            }
        }
        Some("check") => {
            let name = w(1).ok_or_else(|| anyhow!("check needs a service name"))?;
            let found = if conn.check(name).is_some() {
                "found"
            } else {
                "not found"
            };
            writeln!(out, "Service {name}: {found}")?;
        }
        Some("call") => {
            let (Some(name), Some(what)) = (w(1), w(2)) else {
                bail!("call needs a service and a code or method: call sysmgr getSystemState");
            };
            let binder = conn.get(name)?;
            let desc = descriptor(&binder)?;
            let rest = &words[3..];
            match what.parse::<u32>() {
                Ok(code) => {
                    let args = parse_raw_args(rest)?;
                    let mut data = conn.request(&binder, &desc)?;
                    for a in &args {
                        match a {
                            RawArg::I32(v) => data.write(v),
                            RawArg::I64(v) => data.write(v),
                            RawArg::F32(v) => data.write(v),
                            RawArg::F64(v) => data.write(v),
                            RawArg::S16(s) => data.write(s),
                            RawArg::Null => data.write(&-1i32),
                        }
                        .map_err(|e| anyhow!(status_text(e)))?;
                    }
                    let mut reply = transact(&binder, code, &data)?;
                    reply.set_data_position(0);
                    let mut words = Vec::new();
                    while reply.data_avail() >= 4 {
                        words.push(reply.read_u32().map_err(|e| anyhow!(status_text(e)))?);
                    }
                    writeln!(out, "{}", format_reply(&words))?;
                }
                Err(_) => {
                    let m = find_method(&api, &desc, what)?;
                    let values = parse_args(&api, &desc, m, rest)?;
                    let mut data = conn.request(&binder, &desc)?;
                    write_args(&mut data, &values).map_err(|e| anyhow!(status_text(e)))?;
                    let mut reply = transact(&binder, m.code, &data)?;
                    reply.set_data_position(0);
                    match read_reply(&api, m, &mut reply)? {
                        Ok(v) => writeln!(out, "{}", display(&v))?,
                        Err(status) => bail!(
                            "{}: {:?}{}",
                            m.name,
                            status.exception_code(),
                            match (status.service_specific_error(), status.message()) {
                                (0, Some(msg)) => format!(": {msg}"),
                                (code, Some(msg)) => format!(" {code}: {msg}"),
                                (code, None) => format!(" {code}"),
                            }
                        ),
                    }
                }
            }
        }
        Some("dump") => {
            let sm = system_manager(conn, w(1).unwrap_or(vmstack_aidl::SERVICE_NAME))?;
            let text = sm.dumpState().map_err(|e| anyhow!("dumpState: {e:?}"))?;
            write!(out, "{text}")?;
        }
        Some("watch") => watch(conn, &api, &words[1..], out)?,
        Some(other) => bail!("unknown command {other:?}\n{USAGE}"),
        None => bail!("{USAGE}"),
    }
    Ok(())
}

fn system_manager(conn: &Conn, name: &str) -> Result<Strong<dyn ISystemManager>> {
    let b = conn.get(name)?;
    <dyn ISystemManager as rsbinder::FromIBinder>::try_from(b)
        .map_err(|e| anyhow!("{name} is not an {SM}: {}", status_text(e)))
}

struct Forward(Mutex<Sender<String>>);

impl Interface for Forward {}

impl IPowerStateListener for Forward {
    fn onApPowerStateReq(&self, value: i32, param: i32) -> rsbinder::BinderResult<()> {
        let _ = self
            .0
            .lock()
            .map(|s| s.send(format!("req {value} {param}")));
        Ok(())
    }
    fn onSystemStateChanged(&self, s: &SystemState) -> rsbinder::BinderResult<()> {
        let line = format!(
            "system {} ignition={} vehicle_in_use={}",
            s.description,
            if s.ignitionOn { "on" } else { "off" },
            if s.vehicleInUse { "yes" } else { "no" }
        );
        let _ = self.0.lock().map(|tx| tx.send(line));
        Ok(())
    }
}

/// The name of an interface constant with `prefix` and value `v`.
fn const_name(api: &Api, prefix: &str, v: i32) -> Option<String> {
    match api.get(SM).map(|d| &d.kind) {
        Some(DeclKind::Interface { constants, .. }) => constants.iter().find_map(|c| {
            (c.name.starts_with(prefix) && c.value == ConstValue::Int(i64::from(v)))
                .then(|| c.name[prefix.len()..].to_string())
        }),
        _ => None,
    }
}

/// `AP_POWER_STATE_REQ [value, param]` in words, from the AIDL's constants.
pub fn req_text(api: &Api, value: i32, param: i32) -> String {
    let v = const_name(api, "REQ_", value).unwrap_or_else(|| format!("UNKNOWN({value})"));
    if value == 1 {
        let p = const_name(api, "SHUTDOWN_PARAM_", param).unwrap_or_else(|| param.to_string());
        format!("{v}({p}) [{value}, {param}]")
    } else {
        format!("{v} [{value}, {param}]")
    }
}

fn watch(conn: &Conn, api: &Api, args: &[String], out: &mut dyn Write) -> Result<()> {
    let mut name = vmstack_aidl::SERVICE_NAME.to_string();
    let mut count: Option<usize> = None;
    let mut seconds: Option<u64> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--count" => {
                count = Some(
                    it.next()
                        .and_then(|v| v.parse().ok())
                        .ok_or_else(|| anyhow!("--count needs a number"))?,
                )
            }
            "--seconds" => {
                seconds = Some(
                    it.next()
                        .and_then(|v| v.parse().ok())
                        .ok_or_else(|| anyhow!("--seconds needs a number"))?,
                )
            }
            n => name = n.to_string(),
        }
    }
    let sm = system_manager(conn, &name)?;
    let (tx, rx) = channel();
    let listener = BnPowerStateListener::new_binder(Forward(Mutex::new(tx)));
    sm.registerListener(&listener)
        .map_err(|e| anyhow!("registerListener: {e:?}"))?;
    writeln!(out, "watching {name} (IPowerStateListener registered)")?;
    out.flush()?;
    let end = seconds.map(|s| Instant::now() + Duration::from_secs(s));
    let mut seen = 0;
    while count.is_none_or(|c| seen < c) {
        let wait = match end {
            Some(e) => e.saturating_duration_since(Instant::now()),
            None => Duration::from_secs(3600),
        };
        if wait.is_zero() {
            break;
        }
        let Ok(line) = rx.recv_timeout(wait.min(Duration::from_secs(5))) else {
            // Nothing for a while: check that the peer still answers.
            if sm.as_binder().ping_binder().is_err() {
                bail!("{name}: {}", status_text(rsbinder::StatusCode::DeadObject));
            }
            continue;
        };
        let text = match line.strip_prefix("req ") {
            Some(rest) => {
                let mut p = rest.split(' ').filter_map(|x| x.parse::<i32>().ok());
                let (v, pa) = (p.next().unwrap_or(-1), p.next().unwrap_or(0));
                format!("onApPowerStateReq {}", req_text(api, v, pa))
            }
            None => format!(
                "onSystemStateChanged {}",
                line.trim_start_matches("system ")
            ),
        };
        writeln!(out, "{text}")?;
        out.flush()?;
        seen += 1;
    }
    let _ = sm.unregisterListener(&listener);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::words as w;

    #[test]
    fn global_options() {
        let (t, rest) = parse_target(&w("--rpc unix:/s list")).expect("ok");
        assert_eq!(t, Target::Rpc(RpcAddr::Unix("/s".into())));
        assert_eq!(rest, w("list"));
        let (t, rest) = parse_target(&w("call sysmgr 1 --rpc x")).expect("ok");
        assert_eq!(t, Target::Kernel("/dev/binder".into()));
        assert_eq!(rest, w("call sysmgr 1 --rpc x"));
        assert!(parse_target(&w("--rpc")).is_err());
        assert!(parse_target(&w("--rpc tcp:1 list")).is_err());
    }

    #[test]
    fn requests_in_words() {
        let api = vmstack_aidl::source_api().expect("aidl");
        assert_eq!(
            req_text(&api, 1, 3),
            "SHUTDOWN_PREPARE(SHUTDOWN_ONLY) [1, 3]"
        );
        assert_eq!(req_text(&api, 0, 0), "ON [0, 0]");
        assert_eq!(req_text(&api, 9, 0), "UNKNOWN(9) [9, 0]");
    }
}
