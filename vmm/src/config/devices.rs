//! Per-device options, in crosvm's spelling (`key=value,...`).
//!
//! Each option parses into a typed config here; the builder turns them into
//! devices. Parse errors name the option and the expected form.

use std::path::PathBuf;
use std::str::FromStr;

use devices::virtio::rate_limiter::{BucketConfig, RateLimit};
use devices::virtio::vsock::MAX_TCP_FORWARDS;

use super::ConfigError;

/// All devices the user asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceConfig {
    /// `--rng`: a virtio-rng device (with its rate limit).
    pub rng: Option<RngConfig>,
    /// `--disk` / `--rwdisk`, in order (the first is `/dev/vda`).
    pub disks: Vec<DiskConfig>,
    /// `--net`, in order.
    pub nets: Vec<NetConfig>,
    /// `--vsock`.
    pub vsock: Option<VsockConfig>,
    /// `--console`: a virtio-console (`hvc0`).
    pub console: Option<ConsoleConfig>,
    /// `--tee`: a virtio TEE device in front of `trustyd`.
    pub tee: Option<TeeConfig>,
}

impl DeviceConfig {
    /// Checks the options against the host (files exist, ...).
    pub fn validate(&self) -> Result<(), ConfigError> {
        for disk in &self.disks {
            if !disk.path.is_file() {
                return Err(ConfigError::DiskMissing(disk.path.clone()));
            }
        }
        Ok(())
    }
}

/// Splits `key=value,key=value` into pairs; a bare first item is returned
/// under the key `""` (crosvm accepts `--disk PATH,ro=true`).
fn pairs(s: &str) -> impl Iterator<Item = (&str, &str)> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or(("", p)))
}

/// Makes the error of device option `option` given `value`, which should
/// have the form `expected` (every parser below reports this way).
fn option_error<'a>(
    option: &'static str,
    value: &'a str,
    expected: &'static str,
) -> impl Fn() -> ConfigError + Copy + 'a {
    move || ConfigError::Option {
        option,
        value: value.to_string(),
        expected,
    }
}

/// The rate-limit keys every limited device accepts (`--disk`, `--rwdisk`,
/// `--net`, `--rng`): `bw=` and `ops=`, each `SIZE:REFILL_MS[:BURST]`
/// (docs/devices.md, "Rate limiters"). Returns `None` for another key.
fn parse_limit_key(
    key: &str,
    value: &str,
    limit: &mut RateLimit,
) -> Option<Result<(), ConfigError>> {
    let slot = match key {
        "bw" => &mut limit.bandwidth,
        "ops" => &mut limit.ops,
        _ => return None,
    };
    Some(match value.parse::<BucketConfig>() {
        Ok(bucket) => {
            *slot = Some(bucket);
            Ok(())
        }
        Err(e) => Err(ConfigError::RateLimit(format!("{key}=: {e}"))),
    })
}

fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "true" | "on" | "1" => Some(true),
        "false" | "off" | "0" => Some(false),
        _ => None,
    }
}

/// A block device: `--disk PATH[,id=ID][,bw=..][,ops=..]` (read-only) or
/// `--rwdisk ...` (read-write).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskConfig {
    /// Raw image file.
    pub path: PathBuf,
    /// Whether the guest may only read.
    pub read_only: bool,
    /// Serial reported by `VIRTIO_BLK_T_GET_ID` (at most 20 bytes).
    pub id: Option<String>,
    /// Bandwidth and request limits.
    pub rate_limit: RateLimit,
}

impl DiskConfig {
    /// Parses the value of `--disk` (`read_only = true`) or `--rwdisk`.
    pub fn parse(s: &str, read_only: bool) -> Result<Self, ConfigError> {
        let err = option_error(if read_only { "--disk" } else { "--rwdisk" }, s, "PATH[,id=ID][,bw=SIZE:REFILL_MS[:BURST]][,ops=COUNT:REFILL_MS[:BURST]] (id at most 20 bytes)");
        let mut path = None;
        let mut id = None;
        let mut rate_limit = RateLimit::default();
        for (key, value) in pairs(s) {
            if let Some(result) = parse_limit_key(key, value, &mut rate_limit) {
                result?;
                continue;
            }
            match key {
                "" | "path" if path.is_none() => path = Some(PathBuf::from(value)),
                "id" if value.len() <= 20 => id = Some(value.to_string()),
                _ => return Err(err()),
            }
        }
        Ok(Self {
            path: path.ok_or_else(err)?,
            read_only,
            id,
            rate_limit,
        })
    }
}

/// The entropy device: `--rng` or `--rng=bw=..,ops=..`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RngConfig {
    /// Bandwidth and request limits.
    pub rate_limit: RateLimit,
}

impl FromStr for RngConfig {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = option_error(
            "--rng",
            s,
            "nothing (--rng) or --rng=bw=SIZE:REFILL_MS[:BURST],ops=COUNT:REFILL_MS[:BURST]",
        );
        let mut rate_limit = RateLimit::default();
        for (key, value) in pairs(s) {
            match parse_limit_key(key, value, &mut rate_limit) {
                Some(result) => result?,
                None => return Err(err()),
            }
        }
        Ok(Self { rate_limit })
    }
}

/// A network card on a host tap device: `--net tap=NAME[,mac=AA:BB:..]`
/// with optional rate limits (`bw=`, `ops=` for both directions, `rx_bw=`,
/// `rx_ops=`, `tx_bw=`, `tx_ops=` for one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    /// Tap interface name (created if missing and permitted).
    pub tap: String,
    /// Guest MAC address; a fixed locally administered one if absent.
    pub mac: Option<[u8; 6]>,
    /// Limits of frames to the guest.
    pub rx_limit: RateLimit,
    /// Limits of frames from the guest.
    pub tx_limit: RateLimit,
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

impl FromStr for NetConfig {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = option_error("--net", s, "tap=NAME[,mac=AA:BB:CC:DD:EE:FF][,[rx_|tx_]bw=SIZE:REFILL_MS[:BURST]][,[rx_|tx_]ops=COUNT:REFILL_MS[:BURST]] (NAME at most 15 bytes)");
        let mut tap = None;
        let mut mac = None;
        let mut rx_limit = RateLimit::default();
        let mut tx_limit = RateLimit::default();
        for (key, value) in pairs(s) {
            let (direction, limit_key) = match key.split_once('_') {
                Some(("rx", k)) => (Some(true), k),
                Some(("tx", k)) => (Some(false), k),
                _ => (None, key),
            };
            let mut both = RateLimit::default();
            let target = match direction {
                Some(true) => &mut rx_limit,
                Some(false) => &mut tx_limit,
                None => &mut both,
            };
            if let Some(result) = parse_limit_key(limit_key, value, target) {
                result?;
                if direction.is_none() {
                    // `bw=`/`ops=` set each direction's bucket.
                    for limit in [&mut rx_limit, &mut tx_limit] {
                        limit.bandwidth = both.bandwidth.or(limit.bandwidth);
                        limit.ops = both.ops.or(limit.ops);
                    }
                }
                continue;
            }
            match key {
                "tap" if !value.is_empty() && value.len() <= 15 => tap = Some(value.to_string()),
                "mac" => mac = Some(parse_mac(value).ok_or_else(err)?),
                _ => return Err(err()),
            }
        }
        Ok(Self {
            tap: tap.ok_or_else(err)?,
            mac,
            rx_limit,
            tx_limit,
        })
    }
}

/// A vsock device: `--vsock cid=N,socket=PATH[,tcp=PORT:GUEST_PORT]...`.
///
/// The host side is Firecracker's "hybrid vsock": host programs connect to
/// the unix socket `PATH` and write `CONNECT <port>\n`; guest connections to
/// host port P go to the unix socket `PATH_P`. Each `tcp=` key forwards
/// 127.0.0.1:PORT to guest port GUEST_PORT (`adb connect`; docs/vsock.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VsockConfig {
    /// Guest context id (3 or more; 0-2 are reserved).
    pub cid: u64,
    /// Host unix socket path.
    pub socket: PathBuf,
    /// Loopback TCP ports forwarded to guest ports.
    pub tcp: Vec<TcpForwardConfig>,
}

/// `tcp=PORT:GUEST_PORT` of `--vsock`: connections to 127.0.0.1:`port`
/// go to the guest's vsock port `guest_port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpForwardConfig {
    /// The host's loopback TCP port (1-65535).
    pub port: u16,
    /// The guest's vsock port.
    pub guest_port: u32,
}

impl FromStr for TcpForwardConfig {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        let (port, guest_port) = s.split_once(':').ok_or(())?;
        let port = port.parse::<u16>().map_err(|_| ())?;
        let guest_port = guest_port.parse::<u32>().map_err(|_| ())?;
        if port == 0 {
            return Err(());
        }
        Ok(Self { port, guest_port })
    }
}

impl FromStr for VsockConfig {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = option_error(
            "--vsock",
            s,
            "cid=N,socket=PATH[,tcp=PORT:GUEST_PORT]... (N >= 3, each PORT 1-65535 once, at most 16)",
        );
        let mut cid = None;
        let mut socket = None;
        let mut tcp: Vec<TcpForwardConfig> = Vec::new();
        for (key, value) in pairs(s) {
            match key {
                "cid" => cid = Some(value.parse::<u64>().map_err(|_| err())?),
                "socket" | "uds_path" if !value.is_empty() => socket = Some(PathBuf::from(value)),
                "tcp" => {
                    let forward: TcpForwardConfig = value.parse().map_err(|()| err())?;
                    if tcp.len() == MAX_TCP_FORWARDS || tcp.iter().any(|f| f.port == forward.port) {
                        return Err(err());
                    }
                    tcp.push(forward);
                }
                _ => return Err(err()),
            }
        }
        let cid = cid
            .filter(|&c| (3..u64::from(u32::MAX)).contains(&c))
            .ok_or_else(err)?;
        Ok(Self {
            cid,
            socket: socket.ok_or_else(err)?,
            tcp,
        })
    }
}

/// A virtio TEE device: `--tee socket=PATH`, the guest's TEE socket of
/// `trustyd` (`trustyd run --guest NAME=...,tee=PATH`; docs/trusty.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeeConfig {
    /// The TEE socket.
    pub socket: PathBuf,
}

impl FromStr for TeeConfig {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = option_error(
            "--tee",
            s,
            "socket=PATH (trustyd's tee= socket for this guest)",
        );
        let mut socket = None;
        for (key, value) in pairs(s) {
            match key {
                "socket" if !value.is_empty() => socket = Some(PathBuf::from(value)),
                _ => return Err(err()),
            }
        }
        Ok(Self {
            socket: socket.ok_or_else(err)?,
        })
    }
}

/// Where a virtio-console goes: `--console type=stdout|file|unix|sink[,path=..]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleConfig {
    /// The VMM's stdout, input from stdin (then the serial port gets no
    /// stdin).
    Stdout,
    /// Output to a file.
    File(PathBuf),
    /// A unix stream socket the VMM listens on; one client at a time gets
    /// the console.
    Unix(PathBuf),
    /// Discarded.
    Sink,
}

impl FromStr for ConsoleConfig {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = option_error(
            "--console",
            s,
            "type=stdout|sink or type=file|unix,path=PATH",
        );
        let mut kind = None;
        let mut path = None;
        let mut extra_ok = true;
        for (key, value) in pairs(s) {
            match key {
                "type" => kind = Some(value),
                "path" => path = Some(PathBuf::from(value)),
                // crosvm's spelling; accepted when true.
                "console" => extra_ok &= parse_bool(value).is_some(),
                _ => return Err(err()),
            }
        }
        if !extra_ok {
            return Err(err());
        }
        match (kind.ok_or_else(err)?, path) {
            ("stdout", None) => Ok(Self::Stdout),
            ("sink", None) => Ok(Self::Sink),
            ("file", Some(p)) => Ok(Self::File(p)),
            ("unix", Some(p)) => Ok(Self::Unix(p)),
            _ => Err(err()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disks() {
        assert_eq!(
            DiskConfig::parse("/a.img", true).unwrap(),
            DiskConfig {
                path: "/a.img".into(),
                read_only: true,
                id: None,
                rate_limit: RateLimit::default(),
            }
        );
        let d = DiskConfig::parse("/b.img,id=root", false).unwrap();
        assert_eq!((d.read_only, d.id.as_deref()), (false, Some("root")));
        assert!(DiskConfig::parse("", false).is_err());
        assert!(DiskConfig::parse("/a,id=123456789012345678901", false).is_err());
        assert!(DiskConfig::parse("/a,bogus=1", false).is_err());
    }

    #[test]
    fn nets() {
        let n: NetConfig = "tap=vmtap0,mac=52:54:00:12:34:56".parse().unwrap();
        assert_eq!(n.tap, "vmtap0");
        assert_eq!(n.mac, Some([0x52, 0x54, 0, 0x12, 0x34, 0x56]));
        for bad in [
            "",
            "tap=",
            "mac=52:54:00:12:34:56",
            "tap=x,mac=1:2:3",
            "tap=a,mac=zz:0:0:0:0:0",
            "tap=0123456789abcdef",
        ] {
            assert!(bad.parse::<NetConfig>().is_err(), "{bad}");
        }
    }

    #[test]
    fn vsock() {
        let v: VsockConfig = "cid=3,socket=/tmp/v.sock".parse().unwrap();
        assert_eq!((v.cid, v.socket), (3, PathBuf::from("/tmp/v.sock")));
        assert!(v.tcp.is_empty());
        let v: VsockConfig = "cid=3,socket=/x,tcp=6520:5555,tcp=6521:6000"
            .parse()
            .unwrap();
        let forward = |port, guest_port| TcpForwardConfig { port, guest_port };
        assert_eq!(v.tcp, [forward(6520, 5555), forward(6521, 6000)]);
        let many = |n: u16| {
            (0..n)
                .map(|i| format!(",tcp={}:5555", 7000 + i))
                .collect::<String>()
        };
        assert!(format!("cid=3,socket=/x{}", many(16))
            .parse::<VsockConfig>()
            .is_ok());
        assert!(format!("cid=3,socket=/x{}", many(17))
            .parse::<VsockConfig>()
            .is_err());
        for bad in [
            "cid=2,socket=/x",
            "cid=3",
            "socket=/x",
            "cid=x,socket=/x",
            "cid=3,socket=/x,tcp=6520",
            "cid=3,socket=/x,tcp=0:5555",
            "cid=3,socket=/x,tcp=65536:5555",
            "cid=3,socket=/x,tcp=6520:x",
            "cid=3,socket=/x,tcp=6520:5555,tcp=6520:6000",
        ] {
            assert!(bad.parse::<VsockConfig>().is_err(), "{bad}");
        }
    }

    #[test]
    fn tee() {
        let t: TeeConfig = "socket=/tmp/g.tee".parse().unwrap();
        assert_eq!(t.socket, PathBuf::from("/tmp/g.tee"));
        for bad in ["", "socket=", "/tmp/g.tee", "socket=/x,cid=3"] {
            assert!(bad.parse::<TeeConfig>().is_err(), "{bad}");
        }
    }

    #[test]
    fn consoles() {
        assert_eq!(
            "type=stdout".parse::<ConsoleConfig>().unwrap(),
            ConsoleConfig::Stdout
        );
        assert_eq!(
            "type=unix,path=/tmp/c".parse::<ConsoleConfig>().unwrap(),
            ConsoleConfig::Unix("/tmp/c".into())
        );
        for bad in [
            "",
            "type=file",
            "type=unix",
            "type=tty",
            "type=sink,console=maybe",
        ] {
            assert!(bad.parse::<ConsoleConfig>().is_err(), "{bad}");
        }
    }

    #[test]
    fn rate_limits() {
        let d = DiskConfig::parse("/b.img,bw=10M:1000,ops=100:1000:500", false).unwrap();
        assert_eq!(d.rate_limit.bandwidth.unwrap().size, 10 << 20);
        assert_eq!(d.rate_limit.ops.unwrap().one_time_burst, 500);
        let e = DiskConfig::parse("/b.img,bw=10M", false).unwrap_err();
        assert!(e.to_string().contains("SIZE:REFILL_MS"), "{e}");
        let n: NetConfig = "tap=t0,bw=1M:100,tx_ops=10:1000".parse().unwrap();
        assert_eq!(n.rx_limit.bandwidth, n.tx_limit.bandwidth);
        assert!(n.rx_limit.ops.is_none());
        assert_eq!(n.tx_limit.ops.unwrap().size, 10);
        let n: NetConfig = "tap=t0,rx_bw=1K:10".parse().unwrap();
        assert!(n.tx_limit.is_unlimited() && !n.rx_limit.is_unlimited());
        assert!("tap=t0,xx_bw=1K:10".parse::<NetConfig>().is_err());
        assert_eq!("".parse::<RngConfig>(), Ok(RngConfig::default()));
        let r: RngConfig = "bw=64K:1000".parse().unwrap();
        assert_eq!(r.rate_limit.bandwidth.unwrap().size, 64 << 10);
        assert!("speed=1".parse::<RngConfig>().is_err());
        assert!("bw=0:1".parse::<RngConfig>().is_err());
    }
}
