//! `sysmgr status` and `sysmgr events`: human-readable tables.
//!
//! `status` asks the running daemon over `<state-dir>/sysmgr.sock`; when no
//! daemon answers it replays the decision log instead and says so.
//! `events` reads the decision log itself, so it works with or without a
//! daemon.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;
use system_manager::{LogRecord, Millis, Output};

use crate::store::StateDir;

fn ms(v: &Value) -> String {
    v.as_u64()
        .map_or("-".to_string(), |t| Millis(t).to_string())
}

fn text(v: &Value) -> String {
    v.as_str().map_or("-".to_string(), str::to_string)
}

fn query(dir: &StateDir) -> Option<Value> {
    let mut s = UnixStream::connect(dir.socket()).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"status\n").ok()?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).ok()?;
    serde_json::from_str(&line).ok()
}

/// Renders rows as left-aligned columns.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<String>, out: &mut String| {
        let n = cells.len();
        for (i, c) in cells.into_iter().enumerate() {
            if i + 1 == n {
                out.push_str(&c);
            } else {
                out.push_str(&format!("{c:<w$}  ", w = width[i]));
            }
        }
        out.push('\n');
    };
    line(header.iter().map(|h| h.to_string()).collect(), &mut out);
    for r in rows {
        line(r.clone(), &mut out);
    }
    out
}

/// The daemon's status (its `status` JSON) as `sysmgr status` prints it.
pub fn format_status(v: &Value) -> String {
    let mut out = format!(
        "daemon: running (pid {}), MCU {}\nsystem: {}   ignition: {}   vehicle in use: {}   now: {}   next timer: {}   inputs: {}\n\n",
        v["daemon_pid"],
        if v["mcu_connected"].as_bool() == Some(true) { "connected" } else { "not connected" },
        text(&v["system"]),
        if v["ignition_on"].as_bool() == Some(true) { "on" } else { "off" },
        if v["vehicle_in_use"].as_bool() == Some(true) { "yes" } else { "no" },
        ms(&v["now"]),
        ms(&v["next_timer"]),
        v["inputs"],
    );
    let rows: Vec<Vec<String>> = v["guests"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|g| {
            let vmm = &g["vmm"];
            let vmm_text = if vmm["attached"].as_bool() == Some(true) {
                let pid = vmm["pid"]
                    .as_u64()
                    .map(|p| format!(", pid {p}"))
                    .unwrap_or_default();
                format!("attached, {}{pid}", text(&vmm["state"]))
            } else {
                "not attached".to_string()
            };
            vec![
                text(&g["name"]),
                text(&g["role"]),
                text(&g["state"]),
                text(&g["vhal_req"]),
                match g["vhal_connected"].as_bool() {
                    Some(true) => "connected".into(),
                    Some(false) => "not connected".into(),
                    None => "-".into(),
                },
                ms(&g["release_at"]),
                vmm_text,
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "GUEST",
            "ROLE",
            "STATE",
            "AP_POWER_STATE_REQ",
            "VHAL",
            "RELEASE",
            "VMM",
        ],
        &rows,
    ));
    out
}

/// `sysmgr status`.
pub fn status(dir: &Path, policy: Option<&Path>) -> Result<String> {
    let dir = StateDir(dir.to_path_buf());
    if let Some(v) = query(&dir) {
        return Ok(format_status(&v));
    }
    // No daemon: the log is the state.
    let Some(policy) = policy else {
        anyhow::bail!(
            "no daemon answers on {}; pass --policy to replay the decision log instead",
            dir.socket().display()
        );
    };
    let policy = crate::daemon::load_policy(policy)?;
    let loaded = crate::store::load(&dir.disk(), false)?;
    let (a, _) = loaded
        .restore(policy)
        .context("the decision log does not replay")?;
    let mut out = format!(
        "daemon: not running (state replayed from {} logged inputs)\nsystem: {}   ignition: {}   vehicle in use: {}   last input: {}   next timer: {}\n\n",
        loaded.inputs(),
        a.system(),
        if a.ignition_on() { "on" } else { "off" },
        if a.vehicle_in_use() { "yes" } else { "no" },
        a.now(),
        a.next_timer().map_or("-".to_string(), |t| t.to_string()),
    );
    let rows: Vec<Vec<String>> = a
        .guests()
        .iter()
        .map(|g| {
            vec![
                g.name.clone(),
                g.role.to_string(),
                g.state.to_string(),
                g.vhal_req.map_or("-".to_string(), |r| r.to_string()),
                g.release_at.map_or("-".to_string(), |t| t.to_string()),
            ]
        })
        .collect();
    out.push_str(&table(
        &["GUEST", "ROLE", "STATE", "AP_POWER_STATE_REQ", "RELEASE"],
        &rows,
    ));
    Ok(out)
}

/// One record as table rows: the input, then one row per output.
fn record_rows(r: &LogRecord, timers: bool) -> Vec<Vec<String>> {
    let outputs: Vec<&Output> = r
        .outputs
        .iter()
        .filter(|o| timers || !matches!(o, Output::SetTimer { .. }))
        .collect();
    let mut rows = Vec::new();
    let first = outputs.first().map_or("-".to_string(), |o| o.to_string());
    rows.push(vec![
        r.seq.to_string(),
        r.at.to_string(),
        r.input.to_string(),
        r.system.to_string(),
        first,
    ]);
    for o in outputs.iter().skip(1) {
        rows.push(vec![
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            o.to_string(),
        ]);
    }
    rows
}

/// `sysmgr events`.
pub fn events(
    dir: &Path,
    last: Option<usize>,
    guest: Option<&str>,
    timers: bool,
) -> Result<String> {
    let dir = StateDir(dir.to_path_buf());
    let loaded = crate::store::load(&dir.disk(), false)?;
    let records = loaded.records;
    let selected: Vec<&LogRecord> = records
        .iter()
        .filter(|r| {
            guest.is_none_or(|g| {
                r.input.guest() == Some(g) || r.outputs.iter().any(|o| o.guest() == Some(g))
            })
        })
        .collect();
    let skip = last.map_or(0, |n| selected.len().saturating_sub(n));
    let rows: Vec<Vec<String>> = selected
        .iter()
        .skip(skip)
        .flat_map(|r| record_rows(r, timers))
        .collect();
    let compacted = match &loaded.snapshot {
        Some(s) => format!(
            "(inputs 1 to {} are compacted into {}; system then: {})\n",
            s.arbiter.inputs,
            crate::store::SNAPSHOT_FILE,
            s.arbiter.state.system
        ),
        None => String::new(),
    };
    Ok(compacted
        + &table(
            &[
                "SEQ",
                "TIME",
                "INPUT",
                "SYSTEM AFTER",
                "OUTPUTS (with reasons)",
            ],
            &rows,
        ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let t = table(&["A", "BB"], &[vec!["xxx".into(), "y".into()]]);
        assert_eq!(t, "A    BB\nxxx  y\n");
    }
}
