//! Test support for the VMM: the nested KVM "test host" runner.
//!
//! This machine's `/dev/kvm` cannot boot unmodified Linux guests (see
//! `docs/testing.md`), so end-to-end tests run the VMM inside an emulated
//! QEMU/TCG machine that has a real, nested KVM. [`testhost`] boots that machine,
//! captures its console and splits it into per-scenario results;
//! [`scenario`] shares one boot between tests and reads a scenario's
//! [`marker`] lines; [`assert`] holds each scenario's checks, written once
//! and run by `tests/tests/*.rs` for every architecture.

pub mod arch;
pub mod assert;
pub mod marker;
pub mod scenario;
pub mod testhost;

pub use arch::Arch;

use std::path::PathBuf;

/// Root of the cargo workspace this crate belongs to.
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` (so parallel checkouts or
/// developers can keep separate builds and images), else `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        }
        _ => workspace_root().join("target"),
    }
}

/// Default directory of the x86_64 images built by `cargo xtask images`
/// (`<target dir>/images/x86_64`), overridden by `VMSTACK_IMAGES`.
pub fn images_dir_x86_64() -> PathBuf {
    match std::env::var_os("VMSTACK_IMAGES") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => target_dir().join("images/x86_64"),
    }
}

/// Directory for full console logs of test host runs (`<target dir>/testhost`),
/// overridden by `VMSTACK_LOG_DIR`.
pub fn log_dir() -> PathBuf {
    match std::env::var_os("VMSTACK_LOG_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => target_dir().join("testhost"),
    }
}

/// Nested tests: for each `module => shared run`, a module with one
/// `#[test]` per `name => check`, each calling `check(&RUN)`. The tests are
/// `#[ignore]`d (they need the nested test host); `cargo xtask test` runs
/// them with `--include-ignored` (and skips the modules whose name starts
/// with `all_arch_` unless given `--all-arch`).
///
/// ```ignore
/// use vmstack_tests::assert::boot;
/// use vmstack_tests::scenario::SharedRun;
/// use vmstack_tests::Arch;
///
/// vmstack_tests::nested_tests! {
///     x86_64 => SharedRun::on(Arch::X86_64, boot::SCENARIOS),
///     arm64 => SharedRun::on(Arch::Aarch64, boot::SCENARIOS);
///     tests: {
///         poweroff => boot::poweroff,
///     }
/// }
/// ```
#[macro_export]
macro_rules! nested_tests {
    ($($module:ident => $run:expr),+ ; tests: $tests:tt) => {
        $( $crate::nested_tests!(@module $module, $run, $tests); )+
    };
    (@module $module:ident, $run:expr, { $($name:ident => $check:path),* $(,)? }) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;

            /// The test host boot shared by this module's tests.
            pub(crate) static RUN: $crate::scenario::SharedRun = $run;

            $(
                #[test]
                #[ignore = "needs the nested test host: run `cargo xtask test`"]
                fn $name() {
                    $check(&RUN)
                }
            )*
        }
    };
}
