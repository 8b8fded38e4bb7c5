//! The console records `bootbench` prints and `cargo xtask bench boot` parses.
//!
//! - `@@BENCH {json}`: one [`Sample`] per successful run;
//! - `@@BENCH-INFO {json}`: free-form facts about the set-up (commands, versions);
//! - `@@BENCH-FAIL {json}`: a run that produced no measurement ([`Failure`]);
//! - `@@BENCH-DONE {json}`: the end of the benchmark (runs requested, failures).

use serde::{Deserialize, Serialize};

/// Prefix of a [`Sample`] line.
pub const SAMPLE_PREFIX: &str = "@@BENCH ";
/// Prefix of the set-up facts line.
pub const INFO_PREFIX: &str = "@@BENCH-INFO ";
/// Prefix of a [`Failure`] line.
pub const FAIL_PREFIX: &str = "@@BENCH-FAIL ";
/// Prefix of the closing line.
pub const DONE_PREFIX: &str = "@@BENCH-DONE ";

/// Name of our VMM (booting the bzImage) in the records.
pub const OURS: &str = "ours";
/// Name of our VMM booting the same kernel as an ELF `vmlinux`.
pub const OURS_ELF: &str = "ours-elf";
/// Name of our VMM booting the ELF `vmlinux` with its segments mapped
/// copy-on-write (`VMSTACK_BOOT_FILES=map`) instead of copied.
pub const OURS_ELF_MAP: &str = "ours-elf-map";
/// Name of our VMM booting the ELF `vmlinux` with its segments copied
/// before the first entry (`VMSTACK_BOOT_FILES=copy`) instead of filled
/// behind the guest.
pub const OURS_ELF_COPY: &str = "ours-elf-copy";
/// Name of our VMM booting the bzImage with every boot file copied
/// (`VMSTACK_BOOT_FILES=copy`) instead of the default mappings.
pub const OURS_COPY: &str = "ours-copy";
/// Name of the QEMU `-M microvm` peer in the records (x86_64).
pub const QEMU_MICROVM: &str = "qemu-microvm";
/// Name of the QEMU `-M virt` peer in the records (aarch64).
pub const QEMU_VIRT: &str = "qemu-virt";

/// Whether `vmm` names a QEMU peer (not our VMM).
pub fn is_qemu(vmm: &str) -> bool {
    vmm == QEMU_MICROVM || vmm == QEMU_VIRT
}

/// The measurements of one boot of one VMM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Which VMM: [`OURS`], [`OURS_COPY`], [`OURS_ELF`], [`OURS_ELF_MAP`],
    /// [`OURS_ELF_COPY`], [`QEMU_MICROVM`] or [`QEMU_VIRT`].
    pub vmm: String,
    /// Round number, from 1.
    pub run: u32,
    /// Process start (just before fork/exec) to the first KVM VM entry, in ms.
    pub first_entry_ms: f64,
    /// Process start to the guest's boot-timer write (its `/init`), in ms.
    pub init_ms: f64,
    /// Resident set of the VMM process when `/init` was seen, in KiB.
    pub rss_total_kib: u64,
    /// Resident part of the guest-RAM mapping(s), in KiB ("guest memory touched").
    pub guest_rss_kib: u64,
    /// `rss_total_kib - guest_rss_kib`: the VMM's own memory, in KiB.
    pub overhead_kib: u64,
    /// Part of the overhead in file-backed mappings (binary, shared libraries), in KiB.
    pub overhead_file_kib: u64,
    /// Part of the overhead backed by transparent huge pages, in KiB.
    pub overhead_thp_kib: u64,
    /// What the VMM itself logged as time to its first guest entry, in ms (ours only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_first_entry_ms: Option<f64>,
    /// What the VMM itself logged as time to the boot-timer write, in ms (ours only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_init_ms: Option<f64>,
    /// Process start to process exit, in ms: the guest dumped its kernel log
    /// and powered off after `/init` (absent if it did not exit in time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_ms: Option<f64>,
    /// The guest's boot milestones on its own clock, from its console.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<crate::profile::GuestProfile>,
}

impl Sample {
    /// Checks that the numbers are consistent: finite, positive, first entry
    /// before `/init`, some guest memory touched, overhead = total - guest.
    pub fn validate(&self) -> Result<(), String> {
        if ![OURS, OURS_COPY, OURS_ELF, OURS_ELF_MAP, OURS_ELF_COPY].contains(&self.vmm.as_str())
            && !is_qemu(&self.vmm)
        {
            return Err(format!("unknown vmm {:?}", self.vmm));
        }
        for (name, v) in [
            ("first_entry_ms", self.first_entry_ms),
            ("init_ms", self.init_ms),
        ] {
            if !v.is_finite() || v <= 0.0 {
                return Err(format!("{name} = {v} is not a positive time"));
            }
        }
        if self.first_entry_ms > self.init_ms {
            return Err(format!(
                "first entry ({} ms) after /init ({} ms)",
                self.first_entry_ms, self.init_ms
            ));
        }
        if let Some(exit) = self.exit_ms {
            if !(exit.is_finite() && exit >= self.init_ms) {
                return Err(format!(
                    "exit ({exit} ms) before /init ({} ms)",
                    self.init_ms
                ));
            }
        }
        if self.guest_rss_kib == 0 {
            return Err("no guest memory resident at /init".into());
        }
        if self.rss_total_kib.checked_sub(self.guest_rss_kib) != Some(self.overhead_kib) {
            return Err(format!(
                "overhead {} KiB != total {} KiB - guest {} KiB",
                self.overhead_kib, self.rss_total_kib, self.guest_rss_kib
            ));
        }
        if self.overhead_file_kib > self.overhead_kib || self.overhead_thp_kib > self.overhead_kib {
            return Err(format!(
                "overhead parts (file {} KiB, THP {} KiB) exceed the overhead {} KiB",
                self.overhead_file_kib, self.overhead_thp_kib, self.overhead_kib
            ));
        }
        Ok(())
    }
}

/// A run that produced no measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    /// Which VMM.
    pub vmm: String,
    /// Round number, from 1.
    pub run: u32,
    /// What went wrong.
    pub error: String,
    /// The last lines the VMM printed on stderr.
    #[serde(default)]
    pub stderr_tail: Vec<String>,
}

/// One parsed `@@BENCH*` console line.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// `@@BENCH`: a sample, or why its JSON was unusable.
    Sample(Result<Sample, String>),
    /// `@@BENCH-INFO`: set-up facts.
    Info(serde_json::Value),
    /// `@@BENCH-FAIL`: a failed run (or why its JSON was unusable).
    Failure(Result<Failure, String>),
    /// `@@BENCH-DONE`: the closing line.
    Done(serde_json::Value),
}

/// Parses a console line; `None` unless it holds a `@@BENCH*` record.
///
/// The prefix may appear anywhere in the line (a kernel message can share it).
pub fn parse_line(line: &str) -> Option<Record> {
    let line = line.trim_end_matches(['\r', '\n']);
    let after = |prefix: &str| line.find(prefix).map(|p| &line[p + prefix.len()..]);
    if let Some(json) = after(SAMPLE_PREFIX) {
        let sample = serde_json::from_str::<Sample>(json)
            .map_err(|e| format!("bad @@BENCH line {json:?}: {e}"))
            .and_then(|s| s.validate().map(|()| s));
        return Some(Record::Sample(sample));
    }
    if let Some(json) = after(FAIL_PREFIX) {
        return Some(Record::Failure(
            serde_json::from_str::<Failure>(json)
                .map_err(|e| format!("bad @@BENCH-FAIL line {json:?}: {e}")),
        ));
    }
    let value = |json: &str| {
        serde_json::from_str(json).unwrap_or_else(|_| serde_json::Value::String(json.to_string()))
    };
    if let Some(json) = after(INFO_PREFIX) {
        return Some(Record::Info(value(json)));
    }
    if let Some(json) = after(DONE_PREFIX) {
        return Some(Record::Done(value(json)));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Sample {
        Sample {
            vmm: OURS.into(),
            run: 1,
            first_entry_ms: 1.5,
            init_ms: 900.25,
            rss_total_kib: 20_000,
            guest_rss_kib: 17_000,
            overhead_kib: 3_000,
            overhead_file_kib: 1_000,
            overhead_thp_kib: 2_048,
            self_first_entry_ms: Some(1.2),
            self_init_ms: None,
            exit_ms: None,
            guest: None,
        }
    }

    #[test]
    fn sample_round_trips() {
        let s = sample();
        let line = format!("{SAMPLE_PREFIX}{}", serde_json::to_string(&s).unwrap());
        assert!(!line.contains("self_init_ms"));
        assert_eq!(parse_line(&line), Some(Record::Sample(Ok(s.clone()))));
        // Found after other text on the same console line, with \r.
        let noisy = format!("[  3.1] x {line}\r");
        assert_eq!(parse_line(&noisy), Some(Record::Sample(Ok(s))));
    }

    #[test]
    fn invalid_samples_are_errors() {
        let mut s = sample();
        s.overhead_kib = 1;
        assert!(s.validate().is_err());
        let mut s = sample();
        s.first_entry_ms = 1000.0;
        assert!(s.validate().is_err());
        let mut s = sample();
        s.init_ms = f64::NAN;
        assert!(s.validate().is_err());
        let mut s = sample();
        s.overhead_thp_kib = 4_096;
        assert!(s.validate().is_err());
        let mut s = sample();
        s.exit_ms = Some(10.0);
        assert!(s.validate().is_err());
        let mut s = sample();
        s.vmm = "firecracker".into();
        assert!(s.validate().is_err());
        for peer in [QEMU_MICROVM, QEMU_VIRT] {
            s.vmm = peer.into();
            assert!(s.validate().is_ok() && is_qemu(peer), "{peer}");
        }
        assert!(!is_qemu(OURS) && !is_qemu(OURS_ELF_MAP));
        assert!(matches!(
            parse_line("@@BENCH {\"vmm\":\"ours\"}"),
            Some(Record::Sample(Err(_)))
        ));
    }

    #[test]
    fn other_records() {
        assert!(matches!(
            parse_line("@@BENCH-INFO {\"a\":1}"),
            Some(Record::Info(v)) if v["a"] == 1
        ));
        assert!(matches!(
            parse_line("@@BENCH-DONE {\"failures\":0}"),
            Some(Record::Done(v)) if v["failures"] == 0
        ));
        let f = r#"@@BENCH-FAIL {"vmm":"qemu-microvm","run":2,"error":"timeout"}"#;
        match parse_line(f) {
            Some(Record::Failure(Ok(f))) => {
                assert_eq!(
                    (f.vmm.as_str(), f.run, f.error.as_str()),
                    (QEMU_MICROVM, 2, "timeout")
                );
                assert!(f.stderr_tail.is_empty());
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(parse_line("@@BEGIN bench-boot"), None);
        assert_eq!(parse_line("plain"), None);
    }
}
