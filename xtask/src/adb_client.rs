//! The stock adb client in the x86_64 test host: Debian's `adb` package
//! (installed by the set-up, [`crate::setup::HOST_PACKAGES`]) copied with
//! its shared-library closure into the test host's initramfs, the way the
//! benchmarks bring QEMU (`bench_host::add_host_program`). The nested adb
//! test and the demo run `adb connect 127.0.0.1:PORT` against the guest's
//! adbd through `vmm adb-proxy` (docs/adb.md).

use std::path::Path;

use anyhow::Result;
use sha2::{Digest, Sha256};

use crate::bench_host;
use crate::cpio::Archive;
use crate::util::{self, step, warning};

/// Where Debian's `adb` package puts the client (a symlink to
/// `/usr/lib/android-sdk/platform-tools/adb`).
pub const ADB: &str = "/usr/bin/adb";

/// The client found on this machine: its files' hash (an input of the
/// test host image).
pub struct AdbClient {
    /// Hash of the program and its libraries' contents.
    pub sha256: String,
}

/// Finds the client; `None` (with a warning) if `adb` is not installed,
/// in which case the test host has no `adb` and the adb scenarios fail.
pub fn locate() -> Result<Option<AdbClient>> {
    if !Path::new(ADB).exists() {
        warning!(
            "{ADB} is missing: the test host gets no adb client (apt-get install adb; \
             `cargo xtask test` installs it)"
        );
        return Ok(None);
    }
    // The same closure add_to() copies, hashed by content.
    let mut probe = Archive::new();
    let libs = bench_host::add_host_program(&mut probe, ADB)?;
    let mut h = Sha256::new();
    for f in std::iter::once(ADB.to_string()).chain(libs) {
        h.update(f.as_bytes());
        h.update(util::sha256_file(Path::new(&f))?.as_bytes());
    }
    Ok(Some(AdbClient {
        sha256: util::hex(&h.finalize()),
    }))
}

impl AdbClient {
    /// Adds `/usr/bin/adb`, its target and its shared libraries to `a`.
    pub fn add_to(&self, a: &mut Archive) -> Result<()> {
        let libs = bench_host::add_host_program(a, ADB)?;
        step!("  adb client {ADB} with {} shared objects", libs.len());
        Ok(())
    }
}
