//! The guest architectures the project builds images and test hosts for.
//!
//! `X86_64`: the test host is QEMU/TCG with an AMD CPU model (nested SVM).
//! `Aarch64`: the test host is QEMU/TCG `-M virt,virtualization=on` whose
//! Debian arm64 kernel runs KVM in protected mode (pKVM).

use std::path::PathBuf;

/// A guest (and test host) architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    /// x86_64 (Debian `amd64`).
    X86_64,
    /// aarch64 (Debian `arm64`).
    Aarch64,
}

impl Arch {
    /// Every architecture, the host's own first.
    pub const ALL: [Arch; 2] = [Arch::X86_64, Arch::Aarch64];

    /// The name used in paths and on the command line (`x86_64`, `aarch64`).
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// Debian's name of the architecture (`amd64`, `arm64`).
    pub fn debian(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Aarch64 => "arm64",
        }
    }

    /// The static (musl) Rust target the VMM and guest tools are built for.
    pub fn musl_target(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-unknown-linux-musl",
            Arch::Aarch64 => "aarch64-unknown-linux-musl",
        }
    }

    /// The QEMU system emulator of the test host.
    pub fn qemu(self) -> &'static str {
        match self {
            Arch::X86_64 => "qemu-system-x86_64",
            Arch::Aarch64 => "qemu-system-aarch64",
        }
    }

    /// The test host's CPUs (QEMU `-smp`): one for x86_64 (`-smp 2` under
    /// nested SVM soft-locked, docs/testing.md), two for aarch64 (as
    /// verified in docs/arm64.md).
    pub fn testhost_cpus(self) -> u32 {
        match self {
            Arch::X86_64 => 1,
            Arch::Aarch64 => 2,
        }
    }

    /// The Debian package that ships [`Self::qemu`].
    pub fn qemu_package(self) -> &'static str {
        match self {
            Arch::X86_64 => "qemu-system-x86",
            Arch::Aarch64 => "qemu-system-arm",
        }
    }

    /// The images directory: `$VMSTACK_IMAGES` for x86_64 (as before),
    /// `$VMSTACK_IMAGES_AARCH64` for aarch64, else
    /// `<target dir>/images/<arch>`.
    pub fn images_dir(self) -> PathBuf {
        let var = match self {
            Arch::X86_64 => "VMSTACK_IMAGES",
            Arch::Aarch64 => "VMSTACK_IMAGES_AARCH64",
        };
        match std::env::var_os(var) {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir),
            _ => crate::target_dir().join("images").join(self.name()),
        }
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Arch {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "x86_64" | "amd64" | "x86-64" => Ok(Arch::X86_64),
            "aarch64" | "arm64" => Ok(Arch::Aarch64),
            other => Err(format!(
                "unknown architecture '{other}' (x86_64 or aarch64)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for arch in Arch::ALL {
            assert_eq!(arch.name().parse::<Arch>(), Ok(arch));
            assert_eq!(arch.debian().parse::<Arch>(), Ok(arch));
            assert!(arch.musl_target().starts_with(arch.name()));
        }
        assert!("riscv64".parse::<Arch>().is_err());
    }
}
