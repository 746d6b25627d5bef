//! The run's results: one row per scenario and hook set, printed as a table for people
//! and written as JSON (`lab-report.json`) for tools.

use std::fmt::Write as _;

use serde::Serialize;

/// What a row means for the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// mmvip met every rule.
    Pass,
    /// mmvip broke a rule: the run fails.
    Fail,
    /// The split brain with mmvip still had two writers: reported, not failing the
    /// run, until the write lease (the next issue) closes it.
    KnownFailure,
    /// The shell baseline: the comparison, not judged (what mmvip's rules would say
    /// is in `problems`).
    Baseline,
}

impl Verdict {
    pub fn word(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "FAIL",
            Verdict::KnownFailure => "known-failure",
            Verdict::Baseline => "baseline",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub name: String,
    pub hooks: String,
    /// `fast` or `readme` (see `Report::timers`).
    pub timers: String,
    pub layout: String,
    pub verdict: Verdict,
    /// The rules this row broke (for a baseline row: would have broken).
    pub problems: Vec<String>,
    /// Fault to the first insert acknowledged through VIP1 by the node that took it
    /// over; null when none was.
    pub rto_ms: Option<u64>,
    /// Longest stretch without any acknowledged insert through VIP1.
    pub max_write_gap_ms: u64,
    /// Heal to the first insert acknowledged by the preferred node again.
    pub failback_ms: Option<u64>,
    /// Writes acknowledged, all writers and both workloads.
    pub acked: u64,
    /// Acknowledged writes missing on either node at the end.
    pub lost: u64,
    /// Writes whose connection broke after the statement or COMMIT was sent.
    pub ambiguous: u64,
    /// Of those, found committed on both nodes at the end (the rest: on neither,
    /// unless a note says otherwise).
    pub ambiguous_committed: u64,
    /// Time both nodes had `read_only=OFF` (in the two-VIP layout both are writable
    /// by design, so there it is not judged).
    pub two_writer_ms: u64,
    /// read_only sampling actually achieved: median and worst gap between one node's
    /// consecutive samples during the load.
    pub sample_median_ms: f64,
    pub sample_worst_ms: f64,
    pub converged: bool,
    /// The writers' rows were read back on both nodes.
    pub read_back: bool,
    /// The faulted VIP was seen on the peer after the fault.
    pub vip_moved: bool,
    pub write_errors: u64,
    pub notes: Vec<String>,
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
            verdict: Verdict::Fail,
            problems: vec![format!("aborted: {error}")],
            rto_ms: None,
            max_write_gap_ms: 0,
            failback_ms: None,
            acked: 0,
            lost: 0,
            ambiguous: 0,
            ambiguous_committed: 0,
            two_writer_ms: 0,
            sample_median_ms: 0.0,
            sample_worst_ms: 0.0,
            converged: false,
            read_back: false,
            vip_moved: false,
            write_errors: 0,
            notes: Vec::new(),
            duration_s: 0.0,
        }
    }

    /// Only a failing mmvip row fails the run.
    pub fn failed(&self) -> bool {
        self.verdict == Verdict::Fail
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

const HEADERS: [&str; 14] = [
    "scenario",
    "hooks",
    "timers",
    "layout",
    "verdict",
    "rto_ms",
    "max_gap_ms",
    "failback_ms",
    "acked",
    "lost",
    "ambiguous",
    "two_writer_ms",
    "sample_ms",
    "converged",
];
/// Columns left-aligned (names); the rest are numbers.
const TEXT_COLUMNS: usize = 5;

fn cells(row: &Row) -> [String; 14] {
    let optional = |value: Option<u64>| value.map_or("-".to_string(), |v| v.to_string());
    [
        row.name.clone(),
        row.hooks.clone(),
        row.timers.clone(),
        row.layout.clone(),
        row.verdict.word().to_string(),
        optional(row.rto_ms),
        row.max_write_gap_ms.to_string(),
        optional(row.failback_ms),
        row.acked.to_string(),
        row.lost.to_string(),
        // committed/total: each ambiguous write resolved by reading the data back.
        format!("{}/{}", row.ambiguous_committed, row.ambiguous),
        row.two_writer_ms.to_string(),
        format!("{:.1}/{:.0}", row.sample_median_ms, row.sample_worst_ms),
        if !row.read_back {
            "UNREAD".to_string()
        } else if row.converged {
            "yes".to_string()
        } else {
            "NO".to_string()
        },
    ]
}

/// What the columns and verdicts mean, printed under the table.
pub const LEGEND: &str = "\
verdict: pass | FAIL (an mmvip row broke a rule: the run fails) | known-failure (split brain with two writers under mmvip: the write lease's job, reported, not failing the run) | baseline (shell scripts: the comparison, not judged)
rules: a write acknowledged after the fault by the node taking over (rto_ms; not required in the split brain, where the old writer lives on and a second one is the failure), failback, every acknowledged write on both nodes (lost = 0), rows read back on both nodes, convergence, the VIP moved, and two_writer_ms = 0 (two-VIP layout: a VIP on both nodes, open on both, while both are writable)
ambiguous: committed/total writes whose connection broke after the statement or COMMIT was sent, each resolved by reading the data back
sample_ms: median/worst gap between one node's consecutive read_only samples during the load (two_writer_ms cannot see an overlap shorter than the worst gap)";

/// A fixed-width table, then each row's problems and notes.
pub fn table(rows: &[Row]) -> String {
    let all: Vec<[String; 14]> = rows.iter().map(cells).collect();
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
            if col < TEXT_COLUMNS {
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
    let _ = writeln!(out, "\n{LEGEND}");
    for row in rows
        .iter()
        .filter(|row| !row.notes.is_empty() || !row.problems.is_empty())
    {
        let _ = writeln!(
            out,
            "\n{} [{}, {} timers]:",
            row.name, row.hooks, row.timers
        );
        for problem in &row.problems {
            let _ = writeln!(out, "  ! {problem}");
        }
        for note in &row.notes {
            let _ = writeln!(out, "  - {note}");
        }
    }
    out
}

/// The same table in Markdown, problems and notes in the last column.
pub fn markdown(rows: &[Row]) -> String {
    let mut out = format!("| {} | problems; notes |\n", HEADERS.join(" | "));
    let _ = writeln!(out, "|{}", "---|".repeat(HEADERS.len() + 1));
    for row in rows {
        let mut text: Vec<String> = row.problems.iter().map(|p| format!("**{p}**")).collect();
        text.extend(row.notes.iter().cloned());
        let _ = writeln!(
            out,
            "| {} | {} |",
            cells(row).join(" | "),
            text.join("; ").replace('|', "\\|")
        );
    }
    let _ = writeln!(out);
    for line in LEGEND.lines() {
        let _ = writeln!(out, "- {line}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> Row {
        Row {
            name: "4-mariadb-kill9".into(),
            hooks: "mmvip".into(),
            timers: "fast".into(),
            layout: "single".into(),
            verdict: Verdict::Pass,
            problems: Vec::new(),
            rto_ms: Some(2150),
            max_write_gap_ms: 2200,
            failback_ms: Some(1800),
            acked: 3012,
            lost: 0,
            ambiguous: 3,
            ambiguous_committed: 1,
            two_writer_ms: 0,
            sample_median_ms: 2.04,
            sample_worst_ms: 31.4,
            converged: true,
            read_back: true,
            vip_moved: true,
            write_errors: 14,
            notes: vec!["acks by node1/node2: 2000/1012".into()],
            duration_s: 17.5,
        }
    }

    #[test]
    fn json_has_the_fields() {
        let report = Report {
            scenarios: vec![row()],
            timers: vec!["fast: VRRPv3".into()],
            total_s: 20.0,
        };
        let value: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        let first = &value["scenarios"][0];
        for key in [
            "name",
            "hooks",
            "timers",
            "layout",
            "verdict",
            "problems",
            "rto_ms",
            "acked",
            "lost",
            "ambiguous",
            "ambiguous_committed",
            "two_writer_ms",
            "sample_median_ms",
            "sample_worst_ms",
            "converged",
            "read_back",
            "notes",
        ] {
            assert!(first.get(key).is_some(), "missing {key}");
        }
        assert!(first.get("duplicates").is_none());
        assert_eq!(first["verdict"], "pass");
        assert_eq!(first["rto_ms"], 2150);
        let mut known = row();
        known.verdict = Verdict::KnownFailure;
        assert_eq!(
            serde_json::to_value(&known).unwrap()["verdict"],
            "known-failure"
        );
    }

    #[test]
    fn missing_rto_is_null() {
        let mut r = row();
        r.rto_ms = None;
        let value = serde_json::to_value(&r).unwrap();
        assert!(value["rto_ms"].is_null());
    }

    #[test]
    fn only_a_failing_verdict_fails_the_run() {
        let mut report = Report {
            scenarios: vec![row()],
            timers: Vec::new(),
            total_s: 1.0,
        };
        assert!(!report.failed());
        for (verdict, fails) in [
            (Verdict::Baseline, false),
            (Verdict::KnownFailure, false),
            (Verdict::Fail, true),
        ] {
            report.scenarios[0].verdict = verdict;
            assert_eq!(report.failed(), fails, "{verdict:?}");
        }
        assert!(Row::aborted("x", "shell", "fast", "single", "boom").failed());
    }

    #[test]
    fn table_aligns_columns_and_lists_problems_and_notes() {
        let mut other = row();
        other.name = "6-split-brain".into();
        other.rto_ms = None;
        other.notes.clear();
        let mut failed = row();
        failed.verdict = Verdict::Fail;
        failed.problems = vec!["lost 2 acknowledged writes".into()];
        let text = table(&[row(), other, failed]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("scenario         hooks  timers  layout  verdict  rto_ms"));
        assert!(lines[1].starts_with("---------------  -----"));
        assert!(lines[2].contains("  2150        2200         1800  "));
        assert_eq!(
            lines[0].find("acked").map(|i| i + 5),
            lines[2].find("3012").map(|i| i + 4)
        );
        assert!(lines[2].contains(" 1/3 "));
        assert!(lines[2].contains(" 2.0/31 "));
        assert!(lines[3].contains("     -  "));
        assert!(lines[4].contains(" FAIL "));
        assert!(text.contains(
            "\n4-mariadb-kill9 [mmvip, fast timers]:\n  - acks by node1/node2: 2000/1012\n"
        ));
        assert!(text.contains("  ! lost 2 acknowledged writes\n"));
        assert!(!text.contains("6-split-brain [mmvip"));
        assert!(text.contains("verdict: pass | FAIL"));
    }

    #[test]
    fn markdown_has_one_line_per_row_and_the_legend() {
        let text = markdown(&[row()]);
        assert!(
            text.lines()
                .nth(2)
                .unwrap()
                .starts_with("| 4-mariadb-kill9 | mmvip | fast | single | pass | 2150 | 2200 | 1800 | 3012 | 0 | 1/3 | 0 | 2.0/31 | yes |")
        );
        assert!(text.contains("\n- verdict: "));
    }
}
