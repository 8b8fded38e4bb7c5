//! The x86_64 virtio device tests (rng, block, vsock, console, tee), re-run
//! unchanged in the arm64 pKVM test host: each file is included as a module
//! and its `SharedRun::on(crate::ARCH, ...)` picks up this file's `ARCH`.
//! Same scenarios, same assertions; one outer arm64 boot per module.
//!
//! Slow (each inner arm64 boot takes ~30 s under nested emulation, and
//! device traffic is several times slower than on x86), so `cargo xtask
//! test` skips them (`all_arch_*`); `cargo xtask test --all-arch` runs them.
//! By hand: `cargo test -p vmstack-tests --test arm64_virtio --
//! --include-ignored` after building the aarch64 images.

use vmstack_tests::Arch;

/// The test host every included module runs in.
const ARCH: Arch = Arch::Aarch64;

#[path = "virtio_x86_64.rs"]
mod all_arch_rng;

#[path = "block_x86_64.rs"]
mod all_arch_block;

#[path = "vsock_x86_64.rs"]
mod all_arch_vsock;

#[path = "console_x86_64.rs"]
mod all_arch_console;

#[path = "tee_x86_64.rs"]
mod all_arch_tee;
