//! Opening `/dev/kvm` and checking that it can run an unmodified guest.

use std::path::Path;

use kvm_ioctls::{Cap, Kvm};

/// Why KVM cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KvmError {
    /// There is no `/dev/kvm`.
    #[error("/dev/kvm does not exist: load the kvm module (kvm-intel or kvm-amd) or run on a host with hardware virtualization")]
    NotFound,
    /// `/dev/kvm` exists but may not be opened.
    #[error("permission denied opening /dev/kvm: run as root or add your user to the 'kvm' group")]
    PermissionDenied,
    /// Any other failure opening `/dev/kvm`.
    #[error("cannot open /dev/kvm: {0}")]
    Open(kvm_ioctls::Error),
    /// The host's KVM is PVM, which only runs PVM-built guest kernels.
    #[error("this host's /dev/kvm is PVM (module kvm_pvm): it runs only PVM-built guest kernels and an unmodified Linux guest would hang; run the VMM inside the nested test host instead (cargo xtask demo)")]
    PvmOnly,
    /// KVM reports an API version other than 12.
    #[error("unsupported KVM API version {0} (need 12)")]
    ApiVersion(i32),
    /// A capability the VMM relies on is missing.
    #[error("KVM lacks the required capability {0:?}")]
    MissingCapability(Cap),
}

/// Where the PVM host module announces itself.
pub const PVM_MODULE_PATH: &str = "/sys/module/kvm_pvm";

const REQUIRED_CAPS: [Cap; 5] = [
    Cap::Irqchip,
    Cap::UserMemory,
    Cap::Ioeventfd,
    Cap::Irqfd,
    Cap::ImmediateExit,
];

/// Fails if `sysfs_module` (normally [`PVM_MODULE_PATH`]) shows that the
/// host KVM is PVM.
pub fn check_not_pvm(sysfs_module: &Path) -> Result<(), KvmError> {
    if sysfs_module.exists() {
        Err(KvmError::PvmOnly)
    } else {
        Ok(())
    }
}

/// Opens `/dev/kvm` and checks API version, capabilities and that it is not
/// a PVM-only KVM.
pub fn open_kvm() -> Result<Kvm, KvmError> {
    let kvm = Kvm::new().map_err(|e| match e.errno() {
        libc::ENOENT | libc::ENXIO | libc::ENODEV => KvmError::NotFound,
        libc::EACCES | libc::EPERM => KvmError::PermissionDenied,
        _ => KvmError::Open(e),
    })?;
    check_not_pvm(Path::new(PVM_MODULE_PATH))?;
    let version = kvm.get_api_version();
    if version != 12 {
        return Err(KvmError::ApiVersion(version));
    }
    if let Some(cap) = REQUIRED_CAPS.into_iter().find(|c| !kvm.check_extension(*c)) {
        return Err(KvmError::MissingCapability(cap));
    }
    Ok(kvm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pvm_module_is_detected() {
        let dir = std::env::temp_dir().join(format!("vmm-pvm-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let err = check_not_pvm(&dir).unwrap_err();
        assert!(err.to_string().contains("PVM"));
        assert!(err.to_string().contains("test host"));
        std::fs::remove_dir(&dir).unwrap();
        assert!(check_not_pvm(&dir).is_ok());
    }

    #[test]
    fn messages_are_one_line_with_advice() {
        for e in [
            KvmError::NotFound,
            KvmError::PermissionDenied,
            KvmError::PvmOnly,
        ] {
            let msg = e.to_string();
            assert!(!msg.contains('\n'));
            assert!(msg.contains(':'), "{msg} should say what to do");
        }
    }
}
