//! The run's results: one row per scenario and hook set, printed as a table for people
//! and written as JSON (`lab-report.json`) for tools.

use std::fmt::Write as _;

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub name: String,
    pub hooks: String,
    /// `fast` or `readme` (see `Report::timers`).
    pub timers: String,
    pub layout: String,
    /// Fault to the first insert acknowledged through the VIP by the node that took
    /// it over; null when none was.
    pub rto_ms: Option<u64>,
    pub acked: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub two_writer_ms: u64,
    pub converged: bool,
    pub notes: Vec<String>,
    /// The faulted VIP was seen on the peer after the fault.
    pub vip_moved: bool,
    /// Heal to the first insert acknowledged by the preferred node again.
    pub failback_ms: Option<u64>,
    /// Longest stretch without any acknowledged insert through the faulted VIP.
    pub max_write_gap_ms: u64,
    pub write_errors: u64,
    pub duration_s: f64,
}

impl Row {
    /// A row for a scenario that could not run to the end.
    pub fn aborted(name: &str, hooks: &str, timers: &str, layout: &str, error: &str) -> Row {
        Row {
            name: name.to_string(),
            hooks: hooks.to_string(),
            timers: timers.to_string(),
            layout: layout.to_string(),
            rto_ms: None,
            acked: 0,
            lost: 0,
            duplicates: 0,
            two_writer_ms: 0,
            converged: false,
            notes: vec![format!("aborted: {error}")],
            vip_moved: false,
            failback_ms: None,
            max_write_gap_ms: 0,
            write_errors: 0,
            duration_s: 0.0,
        }
    }

    /// Lost an acknowledged write, did not converge, or the VIP did not move.
    pub fn failed(&self) -> bool {
        self.lost > 0 || !self.converged || !self.vip_moved
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub scenarios: Vec<Row>,
    /// The keepalived timer sets the rows name, described.
    pub timers: Vec<String>,
    pub total_s: f64,
}

impl Report {
    pub fn failed(&self) -> bool {
        self.scenarios.iter().any(Row::failed)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report always serializes") + "\n"
    }
}

const HEADERS: [&str; 12] = [
    "scenario",
    "hooks",
    "timers",
    "layout",
    "rto_ms",
    "max_gap_ms",
    "acked",
    "lost",
    "dups",
    "two_writer_ms",
    "converged",
    "failback_ms",
];

fn cells(row: &Row) -> [String; 12] {
    let optional = |value: Option<u64>| value.map_or("-".to_string(), |v| v.to_string());
    [
        row.name.clone(),
        row.hooks.clone(),
        row.timers.clone(),
        row.layout.clone(),
        optional(row.rto_ms),
        row.max_write_gap_ms.to_string(),
        row.acked.to_string(),
        row.lost.to_string(),
        row.duplicates.to_string(),
        row.two_writer_ms.to_string(),
        if row.converged { "yes" } else { "NO" }.to_string(),
        optional(row.failback_ms),
    ]
}

/// A fixed-width table, then each row's notes.
pub fn table(rows: &[Row]) -> String {
    let all: Vec<[String; 12]> = rows.iter().map(cells).collect();
    let widths: Vec<usize> = (0..HEADERS.len())
        .map(|col| {
            all.iter()
                .map(|cells| cells[col].len())
                .chain([HEADERS[col].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    let line = |out: &mut String, cells: &[String]| {
        let mut text = String::new();
        for (col, cell) in cells.iter().enumerate() {
            // Names left-aligned, numbers right-aligned.
            if col < 4 {
                let _ = write!(text, "{cell:<width$}  ", width = widths[col]);
            } else {
                let _ = write!(text, "{cell:>width$}  ", width = widths[col]);
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    let headers: Vec<String> = HEADERS.iter().map(|h| h.to_string()).collect();
    line(&mut out, &headers);
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    line(&mut out, &rule);
    for cells in &all {
        line(&mut out, cells);
    }
    for row in rows.iter().filter(|row| !row.notes.is_empty()) {
        let _ = writeln!(
            out,
            "\n{} [{}, {} timers]:",
            row.name, row.hooks, row.timers
        );
        for note in &row.notes {
            let _ = writeln!(out, "  - {note}");
        }
    }
    out
}

/// The same table in Markdown, for BENCHMARKS.md.
pub fn markdown(rows: &[Row]) -> String {
    let mut out = format!("| {} | notes |\n", HEADERS.join(" | "));
    let _ = writeln!(out, "|{}", "---|".repeat(HEADERS.len() + 1));
    for row in rows {
        let _ = writeln!(
            out,
            "| {} | {} |",
            cells(row).join(" | "),
            row.notes.join("; ").replace('|', "\\|")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> Row {
        Row {
            name: "4-mariadb-kill9".into(),
            hooks: "shell".into(),
            timers: "fast".into(),
            layout: "single".into(),
            rto_ms: Some(2150),
            acked: 3012,
            lost: 0,
            duplicates: 0,
            two_writer_ms: 0,
            converged: true,
            notes: vec!["acks by node1/node2: 2000/1012".into()],
            vip_moved: true,
            failback_ms: Some(1800),
            max_write_gap_ms: 2200,
            write_errors: 14,
            duration_s: 17.5,
        }
    }

    #[test]
    fn json_has_the_issue_fields() {
        let report = Report {
            scenarios: vec![row()],
            timers: vec!["fast: VRRPv3".into()],
            total_s: 20.0,
        };
        let value: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        let first = &value["scenarios"][0];
        for key in [
            "name",
            "rto_ms",
            "acked",
            "lost",
            "duplicates",
            "two_writer_ms",
            "converged",
            "notes",
            "hooks",
            "timers",
            "layout",
        ] {
            assert!(first.get(key).is_some(), "missing {key}");
        }
        assert_eq!(first["rto_ms"], 2150);
        assert_eq!(first["hooks"], "shell");
        assert_eq!(first["converged"], true);
        assert!(first["notes"].is_array());
    }

    #[test]
    fn missing_rto_is_null() {
        let mut r = row();
        r.rto_ms = None;
        let value = serde_json::to_value(&r).unwrap();
        assert!(value["rto_ms"].is_null());
    }

    #[test]
    fn failure_rules() {
        assert!(!row().failed());
        let mut lost = row();
        lost.lost = 1;
        assert!(lost.failed());
        let mut diverged = row();
        diverged.converged = false;
        assert!(diverged.failed());
        let mut stuck = row();
        stuck.vip_moved = false;
        assert!(stuck.failed());
        // Two writers alone does not fail the run at this stage: it is reported.
        let mut split = row();
        split.two_writer_ms = 3000;
        assert!(!split.failed());
        assert!(Row::aborted("x", "shell", "fast", "single", "boom").failed());
    }

    #[test]
    fn table_aligns_columns_and_lists_notes() {
        let mut other = row();
        other.name = "6-split-brain".into();
        other.rto_ms = None;
        other.notes.clear();
        let text = table(&[row(), other]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("scenario         hooks  timers  layout  rto_ms"));
        assert!(lines[1].starts_with("---------------  -----"));
        assert!(lines[2].contains("  2150        2200  "));
        assert_eq!(
            lines[0].find("acked").map(|i| i + 5),
            lines[2].find("3012").map(|i| i + 4)
        );
        assert!(lines[3].contains("      -  "));
        assert!(text.contains(
            "\n4-mariadb-kill9 [shell, fast timers]:\n  - acks by node1/node2: 2000/1012\n"
        ));
        assert!(!text.contains("6-split-brain [shell"));
    }

    #[test]
    fn markdown_has_one_line_per_row() {
        let text = markdown(&[row()]);
        assert_eq!(text.lines().count(), 3);
        assert!(
            text.lines()
                .nth(2)
                .unwrap()
                .starts_with("| 4-mariadb-kill9 | shell | fast | single | 2150 | 2200 | 3012 |")
        );
    }
}
