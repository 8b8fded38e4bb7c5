//! The guest-side boot profile: guest-clock times of fixed milestones, read
//! from the `[seconds] message` lines of a guest's console (its `dmesg`).
//!
//! The benchmark guests boot with `quiet` (the kernel writes almost nothing
//! to the console while it boots, so the console costs no boot time) and,
//! once their `/init` ran, dump the kernel log with `dmesg` before they
//! power off (guest scenario `boot-profile`). Every line of that dump has the
//! guest's own timestamp (`local_clock()` in seconds, printed by
//! `CONFIG_PRINTK_TIME`), so the dump tells when each phase ended on the
//! guest's clock, whatever the dump itself cost.
//!
//! [`parse`] is pure: console text in, [`GuestProfile`] out.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A milestone: the first kernel log line containing `needle`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Milestone {
    /// Short name used in the records and tables.
    pub key: &'static str,
    /// The text that marks it (a substring of the message).
    pub needle: &'static str,
}

/// Key of the earliest timestamped line (the guest clock's start; a quiet
/// console prints some warnings live before the dump, so the earliest
/// timestamp, not the first line, is the start of the log).
pub const FIRST_LINE: &str = "first-line";

/// The milestones, in boot order (the order of the tables). Some are
/// architecture specific (ACPI and the TSC on x86_64, the PL011 probe on
/// arm64); a log without them simply lacks those keys.
pub const MILESTONES: &[Milestone] = &[
    Milestone {
        key: "tsc-deadline",
        needle: "TSC deadline timer available",
    },
    Milestone {
        key: "acpi-core",
        needle: "ACPI: Core revision",
    },
    Milestone {
        key: "smp-up",
        needle: "smp: Brought up",
    },
    Milestone {
        key: "acpi-interpreter",
        needle: "ACPI: Interpreter enabled",
    },
    Milestone {
        key: "clocksource",
        needle: "clocksource: Switched to clocksource",
    },
    Milestone {
        key: "vfs-quotas",
        needle: "VFS: Disk quotas",
    },
    Milestone {
        key: "initramfs-unpack",
        needle: "Trying to unpack rootfs image as initramfs",
    },
    Milestone {
        key: "initrd-freed",
        needle: "Freeing initrd memory",
    },
    Milestone {
        key: "serial-8250",
        needle: "Serial: 8250/16550 driver",
    },
    Milestone {
        key: "serial-amba",
        needle: "Serial: AMBA driver",
    },
    Milestone {
        key: "run-init",
        needle: "Run /init as init process",
    },
    Milestone {
        key: "power-down",
        needle: "reboot: Power down",
    },
];

/// What one guest console says about its boot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GuestProfile {
    /// Guest-clock seconds of each milestone seen ([`FIRST_LINE`] and the
    /// keys of [`MILESTONES`]); the earliest line if one repeats.
    pub milestones: BTreeMap<String, f64>,
    /// Guest-clock seconds of the latest timestamped line.
    pub last_line_s: Option<f64>,
    /// How many timestamped lines the console had.
    pub lines: usize,
}

impl GuestProfile {
    /// The guest-clock seconds of milestone `key`, if seen.
    pub fn at(&self, key: &str) -> Option<f64> {
        self.milestones.get(key).copied()
    }
}

/// Splits a console line into (seconds, message) if it holds a kernel log
/// timestamp `[ 12.345678] message`. The timestamp may follow other text on
/// the same line (a console line that another writer started).
pub fn timestamped(line: &str) -> Option<(f64, &str)> {
    let mut rest = line;
    while let Some(open) = rest.find('[') {
        let after = &rest[open + 1..];
        if let Some(close) = after.find(']') {
            let inner = after[..close].trim_start();
            let valid = !inner.is_empty()
                && inner.bytes().all(|b| b.is_ascii_digit() || b == b'.')
                && inner.bytes().filter(|&b| b == b'.').count() == 1;
            if valid {
                if let Ok(s) = inner.parse::<f64>() {
                    if s.is_finite() {
                        let msg = after[close + 1..].trim_start().trim_end_matches('\r');
                        return Some((s, msg));
                    }
                }
            }
        }
        rest = after;
    }
    None
}

/// The boot profile of a guest console.
pub fn parse(console: &str) -> GuestProfile {
    let mut p = GuestProfile::default();
    let mut first: Option<f64> = None;
    for line in console.lines() {
        let Some((s, msg)) = timestamped(line) else {
            continue;
        };
        p.lines += 1;
        first = Some(first.map_or(s, |f: f64| f.min(s)));
        p.last_line_s = Some(p.last_line_s.map_or(s, |l: f64| l.max(s)));
        for m in MILESTONES {
            if msg.contains(m.needle) {
                let e = p.milestones.entry(m.key.to_string()).or_insert(s);
                *e = e.min(s);
            }
        }
    }
    if let Some(f) = first {
        p.milestones.insert(FIRST_LINE.to_string(), f);
    }
    p
}

/// Every milestone key in table order: [`FIRST_LINE`], then [`MILESTONES`].
pub fn keys() -> impl Iterator<Item = &'static str> {
    std::iter::once(FIRST_LINE).chain(MILESTONES.iter().map(|m| m.key))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Excerpt of an x86_64 guest console (our VMM, Debian 6.12.95, 2 vCPUs),
    /// from `target/testhost/testhost-boot-poweroff+boot-reboot.log` of
    /// 2026-12-05, with the VMM's own log lines as they came.
    const X86: &str = "\
Probing EDD (edd=off to disable)... o[    0.000000] Linux version 6.12.95+deb12-amd64 (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC Debian 6.12.95-1~bpo12+1 (2026-07-05)
[    0.117022] ACPI: Using ACPI (MADT) for SMP configuration information
[    1.644764] ACPI: Core revision 20240827
[    1.978710] smp: Brought up 1 node, 2 CPUs
[    3.422331] ACPI: Interpreter enabled
[    3.902957] clocksource: Switched to clocksource kvm-clock
[    4.124255] VFS: Disk quotas dquot_6.6.0
[    5.389376] Trying to unpack rootfs image as initramfs...
[    7.149510] Freeing initrd memory: 1800K
[    7.650702] Serial: 8250/16550 driver, 4 ports, IRQ sharing enabled
[    8.293204] sched_clock: Marking stable (6824226041, 1465640883)->(10618928565, -2329061641)
[   10.893093] Run /init as init process
2026-12-05T14:24:45.324303Z  INFO devices::legacy::boot_timer: boot-timer: guest init reached after 16188460 us
[   12.567965] NET: Registered PF_VSOCK protocol family
VMSTACK-GUEST-INIT-OK
[   13.403116] reboot: Power down
";

    /// Excerpt of an arm64 guest console (our VMM in the pKVM test host),
    /// from `testhost-aarch64-boot-poweroff+...log` of 2026-12-05.
    const ARM64: &str = "\
2026-12-05T14:19:51.027579Z  INFO vmm::vstate::vcpu: vcpu0: entering guest after 256290 us
[    0.000000] Booting Linux on physical CPU 0x0000000000 [0x000f0510]
[    0.000000] Linux version 6.12.95+deb12-arm64 (debian-kernel@lists.debian.org) #1 SMP Debian 6.12.95-1~bpo12+1 (2026-07-05)
[    0.321706] smp: Brought up 1 node, 2 CPUs
[    0.802533] clocksource: Switched to clocksource arch_sys_counter
[    0.815568] VFS: Disk quotas dquot_6.6.0
[    1.146537] Trying to unpack rootfs image as initramfs...
[    1.265613] Freeing initrd memory: 1704K
[    1.552827] Serial: 8250/16550 driver, 4 ports, IRQ sharing enabled
[    1.593355] printk: legacy console [ttyS0] enabled
[    9.354959] Serial: AMBA driver
[   11.361103] Run /init as init process
[   12.848314] input: gpio-keys as /devices/platform/gpio-keys/input/input0
nproc=2
[   13.052032] reboot: Power down
";

    #[test]
    fn x86_64_milestones() {
        let p = parse(X86);
        assert_eq!(p.at(FIRST_LINE), Some(0.0));
        assert_eq!(p.at("acpi-core"), Some(1.644764));
        assert_eq!(p.at("smp-up"), Some(1.978710));
        assert_eq!(p.at("acpi-interpreter"), Some(3.422331));
        assert_eq!(p.at("initramfs-unpack"), Some(5.389376));
        assert_eq!(p.at("initrd-freed"), Some(7.149510));
        assert_eq!(p.at("run-init"), Some(10.893093));
        assert_eq!(p.at("power-down"), Some(13.403116));
        assert_eq!(p.at("tsc-deadline"), None);
        assert_eq!(p.at("serial-amba"), None);
        assert_eq!(p.last_line_s, Some(13.403116));
        assert_eq!(p.lines, 14);
    }

    #[test]
    fn arm64_milestones() {
        let p = parse(ARM64);
        assert_eq!(p.at(FIRST_LINE), Some(0.0));
        assert_eq!(p.at("smp-up"), Some(0.321706));
        assert_eq!(p.at("acpi-interpreter"), None);
        assert_eq!(p.at("serial-8250"), Some(1.552827));
        assert_eq!(p.at("serial-amba"), Some(9.354959));
        assert_eq!(p.at("run-init"), Some(11.361103));
        assert_eq!(p.last_line_s, Some(13.052032));
    }

    #[test]
    fn a_milestone_seen_twice_keeps_its_earliest_time() {
        // A quiet boot prints warnings live and again in the dmesg dump.
        let p = parse("[    2.5] smp: Brought up 1 node\n[    1.5] smp: Brought up 1 node\n");
        assert_eq!(p.at("smp-up"), Some(1.5));
        assert_eq!(p.at(FIRST_LINE), Some(1.5));
        assert_eq!(p.last_line_s, Some(2.5));
    }

    #[test]
    fn lines_without_a_timestamp_are_ignored() {
        for line in [
            "",
            "VMSTACK-GUEST-INIT-OK",
            "[x] Run /init as init process",
            "[1.2.3] Run /init as init process",
            "[] Run /init as init process",
            "[    ] Run /init as init process",
            "[  -1.0] Run /init as init process",
        ] {
            assert_eq!(timestamped(line), None, "{line:?}");
        }
        let p = parse("noise\n[bad] Run /init as init process\n");
        assert_eq!(p, GuestProfile::default());
        // A bracket before the timestamp does not hide it.
        assert_eq!(
            timestamped("x [y] [   3.25] Run /init\r"),
            Some((3.25, "Run /init"))
        );
    }

    #[test]
    fn keys_start_with_the_first_line_and_are_unique() {
        let k: Vec<_> = keys().collect();
        assert_eq!(k[0], FIRST_LINE);
        let mut sorted = k.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), k.len());
    }
}
