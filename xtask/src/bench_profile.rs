//! The guest-side boot profile table of `cargo xtask bench boot` (x86_64 and
//! `--arch aarch64`): per VMM, the medians of the guest-clock times of the
//! boot milestones (`bootbench::profile`) and of the time outside the guest's
//! clock. Pure: boots in, text and JSON out.

use std::fmt::Write as _;

use bootbench::profile::{self, GuestProfile};
use bootbench::stats;

/// What one boot of one VMM measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Boot {
    /// Start → first guest entry, ms.
    pub entry_ms: f64,
    /// Start → the guest's `/init` (its boot-timer write), ms.
    pub init_ms: f64,
    /// Start → VMM exit, ms, if it exited by itself.
    pub exit_ms: Option<f64>,
    /// The guest's milestones, if its console had timestamped lines.
    pub profile: Option<GuestProfile>,
}

impl Boot {
    /// Start → exit minus the guest clock at its last line: the time the
    /// guest's clock does not see (VMM start, loading, the first entry,
    /// the guest's earliest boot before its clock runs, power-off → exit).
    pub fn outside_ms(&self) -> Option<f64> {
        let last = self.profile.as_ref()?.last_line_s?;
        Some(self.exit_ms? - last * 1000.0)
    }

    /// Start → `/init` minus the guest clock at `Run /init`: the part of the
    /// time outside the guest's clock spent before `/init` (VMM start, the
    /// first entry, a bzImage decompressing itself, early boot).
    pub fn outside_before_init_ms(&self) -> Option<f64> {
        Some(self.init_ms - self.profile.as_ref()?.at("run-init")? * 1000.0)
    }
}

/// One column of the table: a VMM (or one kernel variant of ours).
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// Record name (`ours`, `ours-elf`, `qemu-microvm`, `ours-arm64`...).
    pub name: String,
    /// Its boots.
    pub boots: Vec<Boot>,
}

/// One row: a label, its unit, and per column the median with the count.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Row {
    /// Milestone key or derived metric.
    pub key: String,
    /// Per column: (median, boots that had it).
    pub medians: Vec<Option<(f64, usize)>>,
}

fn row(key: &str, columns: &[Column], f: &dyn Fn(&Boot) -> Option<f64>) -> Row {
    Row {
        key: key.to_string(),
        medians: columns
            .iter()
            .map(|c| {
                let v: Vec<f64> = c.boots.iter().filter_map(f).collect();
                stats::median(&v).map(|m| (m, v.len()))
            })
            .collect(),
    }
}

/// The rows: each milestone seen in any column (guest seconds), the guest
/// clock at the last line, then start → first entry, start → exit and the
/// time outside the guest's clock (ms).
pub fn rows(columns: &[Column]) -> Vec<Row> {
    let mut out = Vec::new();
    for key in profile::keys() {
        let r = row(key, columns, &|b| b.profile.as_ref()?.at(key));
        if r.medians.iter().any(Option::is_some) {
            out.push(r);
        }
    }
    out.push(row("last-line", columns, &|b| {
        b.profile.as_ref()?.last_line_s
    }));
    out.push(row("start->first-entry-ms", columns, &|b| Some(b.entry_ms)));
    out.push(row("start->init-ms", columns, &|b| Some(b.init_ms)));
    out.push(row("outside-before-init-ms", columns, &|b| {
        b.outside_before_init_ms()
    }));
    out.push(row("start->exit-ms", columns, &|b| b.exit_ms));
    out.push(row("outside-guest-clock-ms", columns, &|b| b.outside_ms()));
    out.push(row("outside-after-first-entry-ms", columns, &|b| {
        Some(b.outside_ms()? - b.entry_ms)
    }));
    out
}

/// The human-readable table.
pub fn table(columns: &[Column]) -> String {
    let mut t = String::new();
    let _ = write!(t, "{:<44}", "guest boot profile (medians; n if fewer)");
    for c in columns {
        let _ = write!(t, " {:>16}", c.name);
    }
    t.push('\n');
    for r in rows(columns) {
        let (label, decimals) = match r.key.as_str() {
            "start->first-entry-ms" => ("start -> first VM entry (ms)".to_string(), 1),
            "start->init-ms" => ("start -> guest /init (ms)".to_string(), 0),
            "outside-before-init-ms" => ("  outside guest clock: /init - Run /init (ms)".into(), 0),
            "start->exit-ms" => ("start -> exit, incl. the log dump (ms)".to_string(), 0),
            "outside-guest-clock-ms" => ("outside guest clock: exit - last line (ms)".into(), 0),
            "outside-after-first-entry-ms" => ("  of it after the first entry (ms)".into(), 0),
            "last-line" => ("guest clock: last line (s)".into(), 3),
            k => (format!("guest clock: {k} (s)"), 3),
        };
        let _ = write!(t, "{label:<44}");
        for (m, c) in r.medians.iter().zip(columns) {
            let cell = match m {
                Some((v, n)) if *n == c.boots.len() => format!("{v:.decimals$}"),
                Some((v, n)) => format!("{v:.decimals$} (n={n})"),
                None => "-".to_string(),
            };
            let _ = write!(t, " {cell:>16}");
        }
        t.push('\n');
    }
    t
}

/// The rows as JSON (for the results file).
pub fn json(columns: &[Column]) -> serde_json::Value {
    let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
    serde_json::json!({ "columns": names, "rows": rows(columns) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boot(entry: f64, exit: Option<f64>, console: &str) -> Boot {
        let p = profile::parse(console);
        Boot {
            entry_ms: entry,
            init_ms: entry + 4000.0,
            exit_ms: exit,
            profile: (p.lines > 0).then_some(p),
        }
    }

    fn columns() -> Vec<Column> {
        let ours = |init: f64| {
            format!(
                "[    0.000000] Linux version 6.12\n[    0.5] smp: Brought up 1 node, 1 CPU\n\
                 [    {init:.6}] Run /init as init process\n[    {:.6}] reboot: Power down\n",
                init + 1.0
            )
        };
        vec![
            Column {
                name: "ours".into(),
                boots: vec![
                    boot(20.0, Some(5000.0), &ours(3.0)),
                    boot(30.0, Some(7000.0), &ours(4.0)),
                    boot(25.0, Some(6000.0), &ours(5.0)),
                ],
            },
            Column {
                name: "qemu-microvm".into(),
                boots: vec![
                    boot(800.0, None, "[    1.0] ACPI: Interpreter enabled\n"),
                    boot(900.0, Some(9000.0), ""),
                ],
            },
        ]
    }

    #[test]
    fn medians_per_column_with_counts() {
        let rows = rows(&columns());
        let get = |k: &str| rows.iter().find(|r| r.key == k).unwrap().medians.clone();
        assert_eq!(get("run-init"), vec![Some((4.0, 3)), None]);
        assert_eq!(get("acpi-interpreter"), vec![None, Some((1.0, 1))]);
        assert_eq!(
            get("start->first-entry-ms"),
            vec![Some((25.0, 3)), Some((850.0, 2))]
        );
        // ours: exit - last line = 5000-4000, 7000-5000, 6000-6000.
        assert_eq!(get("outside-guest-clock-ms"), vec![Some((1000.0, 3)), None]);
        assert_eq!(
            get("outside-after-first-entry-ms"),
            vec![Some((980.0, 3)), None]
        );
        assert!(
            rows.iter().all(|r| r.key != "serial-amba"),
            "unseen milestones are left out"
        );
    }

    #[test]
    fn table_shows_missing_and_partial_cells() {
        let t = table(&columns());
        assert!(t.contains("guest clock: run-init (s)"), "{t}");
        assert!(t.contains("1.000 (n=1)"), "{t}");
        assert!(t
            .lines()
            .any(|l| l.starts_with("guest clock: run-init") && l.ends_with('-')));
        let j = json(&columns());
        assert_eq!(j["columns"][1], "qemu-microvm");
    }
}
