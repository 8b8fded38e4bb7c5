//! The log of a launched VMM stays within its cap (`--vmm-log-max-bytes`,
//! `--vmm-log-keep`): a "VMM" that floods its output leaves at most
//! `keep + 1` files of at most the cap each, the newest output in
//! `<guest>.vmm.log`, through the launcher process (sandboxed daemon) and
//! through the daemon itself (`--disable-sandbox`).

mod support;

use std::path::Path;

use support::*;

/// The flood: 20000 numbered lines (about 400 KiB) on stdout and stderr,
/// then exit 3.
const FLOOD: &str = "i=0; while [ $i -lt 10000 ]; do echo \"flood out $i\"; echo \"flood err $i\" >&2; i=$((i+1)); done; exit 3";

fn flood_policy(dir: &Path) {
    write_launch_policy(dir, &[("flood", &["/bin/sh", "-c", FLOOD])]);
}

fn logs(state: &Path) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = std::fs::read_dir(state)
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with("flood.vmm.log")
                .then(|| (name, e.metadata().map(|m| m.len()).unwrap_or(0)))
        })
        .collect();
    v.sort();
    v
}

fn flood_stays_within_the_cap(tag: &str, extra: &[&str]) {
    let dir = tmpdir(tag);
    flood_policy(&dir);
    let mut mcu = Mcu::start(&dir);
    let mut args = vec!["--vmm-log-max-bytes", "16384", "--vmm-log-keep", "2"];
    args.extend_from_slice(extra);
    let p = daemon_with(&dir, &args);
    mcu.cmd("ignition on");
    let state = dir.join("state");
    let current = state.join("flood.vmm.log");
    // The keeper ends after the shell: wait for the last lines.
    wait_until("the flood's last lines in the log", 60, || {
        std::fs::read_to_string(&current)
            .map(|t| t.contains("flood out 9999\n") && t.contains("flood err 9999\n"))
            .unwrap_or(false)
    });
    let files = logs(&state);
    assert_eq!(
        files.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["flood.vmm.log", "flood.vmm.log.1", "flood.vmm.log.2"],
        "{files:?}"
    );
    assert!(files.iter().all(|(_, len)| *len <= 16384), "{files:?}");
    // Whole lines only.
    for (name, _) in &files {
        let text = std::fs::read_to_string(state.join(name)).unwrap();
        assert!(text.lines().all(|l| l.starts_with("flood ")), "{name}");
        assert!(text.ends_with('\n'), "{name}");
    }
    drop(p);
}

#[test]
fn a_flooding_vmm_launched_by_the_launcher_process_stays_within_the_log_cap() {
    flood_stays_within_the_cap("vmmlog-launcher", &[]);
}

#[test]
fn a_flooding_vmm_launched_by_an_unsandboxed_daemon_stays_within_the_log_cap() {
    flood_stays_within_the_cap("vmmlog-direct", &["--disable-sandbox"]);
}

/// The status lines of the log keeper process writing `log`, if one runs.
fn keeper_status(log: &Path) -> Option<String> {
    let want = log.to_string_lossy().into_owned();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        let args: Vec<String> = cmdline
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        (args.iter().any(|a| a == "vmm-log") && args.contains(&want))
            .then(|| std::fs::read_to_string(e.path().join("status")).ok())
            .flatten()
    })
}

#[test]
fn the_log_keeper_runs_without_capabilities_as_the_state_directory_owner() {
    let dir = tmpdir("vmmlog-confined");
    write_launch_policy(
        &dir,
        &[("quiet", &["/bin/sh", "-c", "echo started; sleep 10"])],
    );
    let mut mcu = Mcu::start(&dir);
    let p = daemon(&dir);
    mcu.cmd("ignition on");
    let log = dir.join("state/quiet.vmm.log");
    // The keeper copies output only after confining itself: once the
    // VMM's first line is in the log, its status is the confined one.
    wait_until("the VMM's output in the log", 20, || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("started"))
    });
    let mut status = None;
    wait_until("the keeper of quiet.vmm.log", 20, || {
        status = keeper_status(&log);
        status.is_some()
    });
    let status = status.unwrap_or_default();
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k}:")))
            .map(str::trim)
            .unwrap_or_else(|| panic!("no {k} in {status}"))
            .to_string()
    };
    use std::os::unix::fs::MetadataExt;
    let owner = std::fs::metadata(dir.join("state")).unwrap().uid();
    assert_eq!(
        field("Uid").split_whitespace().next(),
        Some(owner.to_string().as_str())
    );
    for set in ["CapInh", "CapPrm", "CapEff", "CapAmb"] {
        assert_eq!(field(set), "0000000000000000", "{set}");
    }
    assert_eq!(field("NoNewPrivs"), "1");
    drop(p);
}
