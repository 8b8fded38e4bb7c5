//! What the user asked for: the VM configuration, parsed and validated before
//! anything touches KVM.

mod devices;

use std::path::PathBuf;
use std::str::FromStr;

pub use devices::{
    ConsoleConfig, DeviceConfig, DiskConfig, NetConfig, RngConfig, TcpForwardConfig, TeeConfig,
    VsockConfig,
};

/// Errors in the user's VM configuration. Each message says what to change.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The kernel path does not exist or is not a file.
    #[error("kernel image {0} not found: pass the path of a bzImage or vmlinux")]
    KernelMissing(PathBuf),
    /// The initrd path does not exist or is not a file.
    #[error("initrd {0} not found: check the --initrd path")]
    InitrdMissing(PathBuf),
    /// Bad vCPU count.
    #[error("--cpus {cpus} is out of range: use 1 to {max}")]
    Cpus {
        /// Requested count.
        cpus: u64,
        /// Largest allowed.
        max: u64,
    },
    /// Too little guest memory to boot Linux.
    #[error("--mem {0} MiB is too small: use at least {min} MiB", min = MIN_MEM_MIB)]
    MemTooSmall(u64),
    /// More guest memory than the host has.
    #[error(
        "--mem {requested} MiB is more than this host's {host} MiB of RAM: use a smaller --mem"
    )]
    MemTooLarge {
        /// Requested MiB.
        requested: u64,
        /// Host RAM in MiB.
        host: u64,
    },
    /// A disk image does not exist.
    #[error("disk image {0} not found: check the --disk/--rwdisk path")]
    DiskMissing(PathBuf),
    /// A malformed device option.
    #[error("invalid {option} '{value}': expected {expected}")]
    Option {
        /// The option, e.g. `--net`.
        option: &'static str,
        /// What was given.
        value: String,
        /// The accepted form.
        expected: &'static str,
    },
    /// A malformed rate-limit bucket (`bw=`, `ops=`).
    #[error("{0}")]
    RateLimit(String),
    /// A malformed `--serial` option.
    #[error("invalid --serial '{0}': expected type=stdout|file|sink[,path=FILE][,num=1]")]
    Serial(String),
}

/// Smallest guest memory accepted, in MiB.
pub const MIN_MEM_MIB: u64 = 32;
/// Largest vCPU count the ACPI tables describe.
pub const MAX_CPUS: u64 = 254;

/// Where the guest's serial console goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SerialOutput {
    /// The VMM's stdout (guest input comes from stdin).
    Stdout,
    /// A file, created or truncated.
    File(PathBuf),
    /// Discarded.
    Sink,
}

/// The `--serial` option, in crosvm's `key=value,...` spelling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialConfig {
    /// Where output goes.
    pub output: SerialOutput,
}

impl Default for SerialConfig {
    fn default() -> Self {
        Self {
            output: SerialOutput::Stdout,
        }
    }
}

impl FromStr for SerialConfig {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ConfigError::Serial(s.to_string());
        let mut kind = None;
        let mut path = None;
        for pair in s.split(',') {
            let (key, value) = pair.split_once('=').ok_or_else(err)?;
            match key {
                "type" => kind = Some(value),
                "path" => path = Some(PathBuf::from(value)),
                // Only COM1 exists; accept crosvm's explicit num=1.
                "num" if value == "1" => {}
                _ => return Err(err()),
            }
        }
        let output = match (kind.ok_or_else(err)?, path) {
            ("stdout", None) => SerialOutput::Stdout,
            ("sink", None) => SerialOutput::Sink,
            ("file", Some(p)) => SerialOutput::File(p),
            _ => return Err(err()),
        };
        Ok(Self { output })
    }
}

/// A complete, validated VM configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmConfig {
    /// Kernel image (bzImage or ELF vmlinux).
    pub kernel: PathBuf,
    /// Optional initramfs.
    pub initrd: Option<PathBuf>,
    /// Number of vCPUs.
    pub cpus: u8,
    /// Guest memory in MiB.
    pub mem_mib: u64,
    /// Extra kernel command-line parameters, appended in order.
    pub params: Vec<String>,
    /// Serial console.
    pub serial: SerialConfig,
    /// Control socket path.
    pub socket: Option<PathBuf>,
    /// Virtio devices.
    pub devices: DeviceConfig,
}

/// Raw values from the command line, before validation.
#[derive(Debug, Clone)]
pub struct RawVmConfig {
    /// Kernel image path.
    pub kernel: PathBuf,
    /// Initrd path.
    pub initrd: Option<PathBuf>,
    /// vCPU count as given.
    pub cpus: u64,
    /// Memory in MiB as given.
    pub mem_mib: u64,
    /// Extra command-line parameters.
    pub params: Vec<String>,
    /// Serial console.
    pub serial: SerialConfig,
    /// Control socket path.
    pub socket: Option<PathBuf>,
    /// Virtio devices.
    pub devices: DeviceConfig,
}

impl RawVmConfig {
    /// Checks the configuration against this host (`host_mem_mib` of RAM).
    pub fn validate(self, host_mem_mib: u64) -> Result<VmConfig, ConfigError> {
        if !self.kernel.is_file() {
            return Err(ConfigError::KernelMissing(self.kernel));
        }
        if let Some(initrd) = &self.initrd {
            if !initrd.is_file() {
                return Err(ConfigError::InitrdMissing(initrd.clone()));
            }
        }
        if self.cpus == 0 || self.cpus > MAX_CPUS {
            return Err(ConfigError::Cpus {
                cpus: self.cpus,
                max: MAX_CPUS,
            });
        }
        if self.mem_mib < MIN_MEM_MIB {
            return Err(ConfigError::MemTooSmall(self.mem_mib));
        }
        if self.mem_mib > host_mem_mib {
            return Err(ConfigError::MemTooLarge {
                requested: self.mem_mib,
                host: host_mem_mib,
            });
        }
        self.devices.validate()?;
        Ok(VmConfig {
            kernel: self.kernel,
            initrd: self.initrd,
            cpus: self.cpus as u8,
            mem_mib: self.mem_mib,
            params: self.params,
            serial: self.serial,
            socket: self.socket,
            devices: self.devices,
        })
    }
}

/// Total RAM of this host in MiB (0 if it cannot be read).
pub fn host_mem_mib() -> u64 {
    let mut info = std::mem::MaybeUninit::<libc::sysinfo>::zeroed();
    // SAFETY: sysinfo only writes into the struct we pass, which is large
    // enough and zero-initialised.
    let ret = unsafe { libc::sysinfo(info.as_mut_ptr()) };
    if ret != 0 {
        return 0;
    }
    // SAFETY: sysinfo returned success, so the struct is initialised.
    let info = unsafe { info.assume_init() };
    info.totalram.saturating_mul(u64::from(info.mem_unit)) >> 20
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(kernel: &str) -> RawVmConfig {
        RawVmConfig {
            kernel: kernel.into(),
            initrd: None,
            cpus: 1,
            mem_mib: 256,
            params: vec![],
            serial: SerialConfig::default(),
            socket: None,
            devices: DeviceConfig::default(),
        }
    }

    fn existing_file() -> String {
        std::env::current_exe().unwrap().display().to_string()
    }

    #[test]
    fn serial_options_parse_like_crosvm() {
        assert_eq!(
            "type=stdout".parse::<SerialConfig>().unwrap().output,
            SerialOutput::Stdout
        );
        assert_eq!(
            "type=file,path=/tmp/x,num=1"
                .parse::<SerialConfig>()
                .unwrap()
                .output,
            SerialOutput::File("/tmp/x".into())
        );
        for bad in [
            "",
            "type=file",
            "type=tty",
            "type=stdout,num=2",
            "stdout",
            "type=sink,x=1",
        ] {
            assert!(bad.parse::<SerialConfig>().is_err(), "{bad}");
        }
    }

    #[test]
    fn missing_kernel_and_initrd_are_reported() {
        assert_eq!(
            raw("/nonexistent/bzImage").validate(1024),
            Err(ConfigError::KernelMissing("/nonexistent/bzImage".into()))
        );
        let mut r = raw(&existing_file());
        r.initrd = Some("/nonexistent/initrd".into());
        assert!(matches!(
            r.validate(1024),
            Err(ConfigError::InitrdMissing(_))
        ));
    }

    #[test]
    fn cpu_and_memory_bounds() {
        let k = existing_file();
        let with = |cpus, mem| RawVmConfig {
            cpus,
            mem_mib: mem,
            ..raw(&k)
        };
        assert!(matches!(
            with(0, 256).validate(1024),
            Err(ConfigError::Cpus { .. })
        ));
        assert!(matches!(
            with(255, 256).validate(1024),
            Err(ConfigError::Cpus { .. })
        ));
        assert_eq!(with(1, 8).validate(1024), Err(ConfigError::MemTooSmall(8)));
        assert_eq!(
            with(1, 4096).validate(1024),
            Err(ConfigError::MemTooLarge {
                requested: 4096,
                host: 1024
            })
        );
        let ok = with(2, 1024).validate(1024).unwrap();
        assert_eq!((ok.cpus, ok.mem_mib), (2, 1024));
    }

    #[test]
    fn errors_are_single_lines() {
        let e = ConfigError::MemTooLarge {
            requested: 1,
            host: 2,
        };
        assert!(!e.to_string().contains('\n'));
        assert!(host_mem_mib() > 0);
    }
}
