//! A hostile guest under `sysmgr` (scenario `hostile-guest`, issue 18): a
//! guest that floods its console, unassigned MMIO and I/O ports, vsock
//! connections to the host and power requests (refused suspends, then a
//! reboot or power-off), boot after boot, leaves the VMM log `sysmgr`
//! keeps, `sysmgr`'s state directory, its decision log and the daemon's own
//! log within their caps, while another guest's vsock echo keeps answering.
//! The guest's own counts are checked too: a flood that did not run (a
//! failed `devmem` or `vsock-test`) fails the test.

use std::time::Duration;

use crate::scenario::SharedRun;

/// The scenarios of one shared test host boot.
pub const SCENARIOS: &[&str] = &["hostile-guest"];

/// Two guests on the outer machine's one vCPU, the hostile one booting
/// three times: ~20 s per boot plus the floods.
pub const SCENARIO_TIMEOUT: Duration = Duration::from_secs(600);

/// `--vmm-log-max-bytes` and `--vmm-log-keep` of the scenario.
const LOG_MAX: u64 = 32 * 1024;
const LOG_KEEP: u64 = 1;

/// The state directory's bound: the two guests' capped VMM logs plus
/// 64 KiB for the decision log, the clock and the pid files. The hostile
/// guest alone prints ~100 KiB per boot, so without the cap three boots
/// pass it.
const STATE_CAP: u64 = 2 * (LOG_KEEP + 1) * LOG_MAX + 64 * 1024;

/// The daemon's own log (one line per input and output) may not grow with
/// the guest's flood beyond this.
const SYSMGR_LOG_CAP: u64 = 256 * 1024;

/// The longest a probe of the served guest may take.
const PROBE_BOUND_MS: u64 = 10_000;

/// The guest's per-boot floods (its defaults in
/// `prebuilts/guest/scenarios/hostile.sh`): MMIO writes, I/O port writes
/// of 256 bytes each, held and refused vsock connections, refused
/// suspends (all of which it must make: [`power_requests_coalesced`]).
const GUEST_MMIO: u64 = 150;
const GUEST_PIO_BYTES: u64 = 40 * 256;
const GUEST_HELD: u64 = 48;
const GUEST_REFUSED: u64 = 60;
const GUEST_SUSPENDS: u64 = 6;

/// The VMM's rate limit of one guest-triggered log site
/// (`devices::log_limit`: a burst of 10, then one line per 10 s) over the
/// longest run of the scenario: the unassigned-MMIO warnings its logs may
/// hold.
const MMIO_WARNINGS_CAP: u64 = 10 + 600 / 10;

/// Each count the guest marked (the largest of any boot) is above zero
/// (its flood ran: a guest whose `devmem`, `/dev/port` or `vsock-test`
/// failed has 0) and within what it attempts.
fn guest_counts_within(s: &crate::scenario::Section<'_>) {
    for (key, max) in [
        ("guest.hostile_mmio_writes", GUEST_MMIO),
        ("guest.hostile_pio_bytes", GUEST_PIO_BYTES),
        ("guest.hostile_vsock_held", GUEST_HELD),
        ("guest.hostile_vsock_refused", GUEST_REFUSED),
    ] {
        let n = s.number(key);
        if n == 0 || n > max {
            s.fail(&format!("{key} = {n}, expected 1..={max}"));
        }
    }
}

/// The VMM kept some unassigned-MMIO warnings, fewer than its rate limit
/// allows, and said how many it suppressed.
fn mmio_warnings_rate_limited(s: &crate::scenario::Section<'_>) {
    let kept = s.number("mmio_warnings_kept");
    if kept == 0 || kept > MMIO_WARNINGS_CAP {
        s.fail(&format!(
            "{kept} unassigned-MMIO warnings kept, expected 1..={MMIO_WARNINGS_CAP}"
        ));
    }
    let line = s.value("suppressed");
    // `... unhandled MMIO write 0x... [N similar lines suppressed]`
    let suppressed = line
        .split(" similar lines suppressed")
        .next()
        .and_then(|head| head.rsplit('[').next())
        .and_then(|n| n.trim().parse::<u64>().ok())
        .unwrap_or(0);
    if suppressed == 0 {
        s.fail(&format!("no count of suppressed lines in {line:?}"));
    }
}

/// The guest's power requests were coalesced and answered, not amplified:
/// every suspend it asked for in a boot was refused and woke it at once
/// (a request left pending would keep it asleep and its loop stuck); the
/// refusals reached `sysmgr` (journalled as inputs that change nothing), at
/// most once per request, and became no decision records beyond the first
/// of a boot (which also tells the arbiter the restarted VM runs); and each
/// boot's final request (Linux's reboot path writes the reset register,
/// then pulses the i8042 reset ten times) became one record: at least one
/// per restart, at most one per boot.
fn power_requests_coalesced(s: &crate::scenario::Section<'_>, boots: u64) {
    // The largest of any boot the logs still hold: the worst boot.
    let asked = s.number("guest.hostile_suspend_requests");
    let unanswered = s.number("guest.hostile_suspend_unanswered");
    if asked != GUEST_SUSPENDS || unanswered != 0 {
        s.fail(&format!(
            "the hostile guest asked for {asked} suspends ({unanswered} in a boot did not wake it), expected {GUEST_SUSPENDS}, all woken"
        ));
    }
    let idle = s.number("idle_inputs");
    if idle == 0 || idle > boots * GUEST_SUSPENDS {
        s.fail(&format!(
            "sysmgr journalled {idle} refused suspends of the hostile guest, expected 1..={} ({boots} boots of {GUEST_SUSPENDS})",
            boots * GUEST_SUSPENDS
        ));
    }
    let records = s.number("suspend_records");
    if records > boots {
        s.fail(&format!(
            "{records} suspend requests in decisions.jsonl for {boots} boots: repeated refusals were recorded"
        ));
    }
    let finals = s.number("final_records");
    if finals + 1 < boots || finals > boots {
        s.fail(&format!(
            "{finals} reboot/poweroff records in decisions.jsonl for {boots} boots, expected {}..={boots}: one per boot when coalesced",
            boots.saturating_sub(1)
        ));
    }
}

/// The hostile guest boots at least three times (its power requests are
/// decided and it is restarted), its VMM log files stay within the cap, the
/// state directory and the daemon's log within theirs, and every probe of
/// the other guest is answered within the bound; the log keeper runs
/// confined.
pub fn a_flooding_guest_stays_within_the_caps_and_the_other_guest_is_served(run: &SharedRun) {
    let s = run.section("hostile-guest", 0);
    s.expect_contains("step", "served guest up");
    let boots = s.number("hostile_boots");
    if boots < 3 {
        s.fail(&format!(
            "the hostile guest booted {boots} times, expected at least 3"
        ));
    }
    guest_counts_within(&s);
    mmio_warnings_rate_limited(&s);
    power_requests_coalesced(&s, boots);
    s.expect_eq("log_cap", &LOG_MAX.to_string());
    let files = s.number("log_files");
    if files == 0 || files > LOG_KEEP + 1 {
        s.fail(&format!(
            "{files} VMM log files of the hostile guest, expected 1..={}",
            LOG_KEEP + 1
        ));
    }
    let markers = s.markers();
    let sizes: Vec<(&str, u64)> = markers
        .iter()
        .filter_map(|m| {
            let name = m.key.strip_prefix("log_file.")?;
            Some((name, m.value.trim().parse().unwrap_or(u64::MAX)))
        })
        .collect();
    if sizes.len() as u64 != files {
        s.fail(&format!("log file sizes {sizes:?} for {files} files"));
    }
    for (name, size) in &sizes {
        if *size > LOG_MAX {
            s.fail(&format!("{name} has {size} bytes, over the cap {LOG_MAX}"));
        }
    }
    // Rotation happened: the current file and one old file.
    if !sizes.iter().any(|(n, _)| *n == "hostile.vmm.log.1") {
        s.fail(&format!(
            "no rotated hostile.vmm.log.1 ({sizes:?}): the flood did not reach the cap"
        ));
    }
    let state = s.number("state_bytes");
    if state > STATE_CAP {
        s.fail(&format!(
            "the state directory holds {state} bytes, over {STATE_CAP}"
        ));
    }
    let journal = s.number("sysmgr_log_bytes");
    if journal > SYSMGR_LOG_CAP {
        s.fail(&format!(
            "the daemon's log has {journal} bytes, over {SYSMGR_LOG_CAP}"
        ));
    }
    // The other guest: every probe answered, within the bound.
    let probes: Vec<&str> = markers
        .iter()
        .filter(|m| m.key.starts_with("probe-"))
        .map(|m| m.value)
        .collect();
    if probes.len() < 5 {
        s.fail(&format!("only {} probes of the served guest", probes.len()));
    }
    for p in &probes {
        let ms = p
            .strip_prefix("ok ")
            .and_then(|rest| rest.strip_suffix("ms"))
            .and_then(|n| n.parse::<u64>().ok());
        match ms {
            Some(ms) if ms <= PROBE_BOUND_MS => {}
            _ => s.fail(&format!("a probe of the served guest: {p}")),
        }
    }
    s.expect_contains("served_vmm", "state=running")
        .expect_contains("served_vmm", "boots=1");
    // The log keeper (started by the launcher as root) runs as sysmgr's
    // sandbox user, the state directory's owner, without capabilities.
    s.expect_eq("keeper.Uid", "65534 65534 65534 65534")
        .expect_eq("keeper.CapEff", "0000000000000000")
        .expect_eq("keeper.CapBnd", "0000000000000000")
        .expect_eq("keeper.NoNewPrivs", "1");
}
