//! Boot benchmark: our VMM against QEMU (`-M microvm` on x86_64, `-M virt`
//! on aarch64), measured from outside.
//!
//! The `bootbench` binary runs inside the nested test host (see
//! `docs/benchmarks.md`). For each run it starts one VMM, takes the test host
//! kernel's own KVM tracepoints (`kvm/kvm_entry`; `kvm/kvm_pio` on the guest's
//! boot-timer port on x86_64, `kvm/kvm_mmio` on a write to its address on
//! aarch64) as the clock of the guest's progress, samples the VMM's
//! `/proc/<pid>/smaps` when the guest reaches `/init`, and prints one
//! [`record::Sample`] per run as a `@@BENCH {json}` console line.
//!
//! This library holds the pure parts shared with `cargo xtask bench boot`
//! (which parses those lines): the record format ([`record`]), trace line
//! parsing ([`trace`]), smaps parsing ([`smaps`]), statistics ([`stats`]) and
//! the guest-side boot profile read from the guest's console ([`profile`]).

pub mod profile;
pub mod record;
pub mod smaps;
pub mod stats;
pub mod trace;
