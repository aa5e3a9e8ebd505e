//! Access reports (`tregov access who|of`): a line per access in text, a row per access in
//! CSV (RFC 4180), the report itself as JSON.

use tregov_engine::plan::{AccessReport, Reach};

use crate::line;

/// The report as text: one line per access, its policies, and when it ends.
pub fn access_text(report: &AccessReport, title: &str) -> String {
    let mut out = String::new();
    line!(out, "{title} (at the governance clock {})", report.at);
    if report.rows.is_empty() {
        line!(out, "  nothing");
    }
    for row in &report.rows {
        let holder = match row.owners.is_empty() {
            true => format!("{} {}", row.holder_kind, row.holder),
            false => format!(
                "{} {} (for {})",
                row.holder_kind,
                row.holder,
                row.owners.join(", ")
            ),
        };
        line!(out, "  {holder} may {} `{}`", row.action, row.dataset);
        line!(out, "    allowed by: {}", row.policies.join(", "));
        match &row.ends {
            Some(end) => line!(out, "    ends {}: {}", end.at, end.because.join(", ")),
            None => line!(out, "    ends: no date in view ends it"),
        }
    }
    for warning in &report.warnings {
        line!(out, "warning: {warning}");
    }
    out
}

/// The report as CSV with a header row; lists inside a cell are separated by `;`.
pub fn access_csv(report: &AccessReport) -> String {
    let mut out = String::new();
    line!(
        out,
        "holder_kind,holder,owners,dataset,action,policies,ends_at,ended_by"
    );
    for row in &report.rows {
        let cells = csv_cells(row);
        line!(
            out,
            "{}",
            cells
                .iter()
                .map(|c| quoted(c))
                .collect::<Vec<_>>()
                .join(",")
        );
    }
    out
}

fn csv_cells(row: &Reach) -> [String; 8] {
    let (at, because) = row
        .ends
        .as_ref()
        .map(|e| (e.at.clone(), e.because.join(";")))
        .unwrap_or_default();
    [
        row.holder_kind.to_string(),
        row.holder.clone(),
        row.owners.join(";"),
        row.dataset.clone(),
        row.action.to_string(),
        row.policies.join(";"),
        at,
        because,
    ]
}

/// A cell quoted when it holds a comma, a quote or a line break (quotes doubled).
fn quoted(cell: &str) -> String {
    if cell.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", cell.replace('"', "\"\""))
    } else {
        cell.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tregov_engine::plan::Ending;

    #[test]
    fn a_csv_cell_with_a_comma_or_quote_is_quoted_and_lists_are_joined_by_semicolons() {
        let report = AccessReport {
            at: "2026-12-06T00:00:00.000Z".into(),
            rows: vec![Reach {
                holder_kind: "user",
                holder: "o'neil, \"jo\"".into(),
                owners: vec![],
                dataset: "gwas".into(),
                action: "read",
                policies: vec!["a".into(), "b".into()],
                ends: Some(Ending {
                    at: "2027-01-01T00:00:00.000Z".into(),
                    at_ms: 0,
                    because: vec!["data-training-current".into()],
                }),
            }],
            warnings: vec![],
        };
        let csv = access_csv(&report);
        assert_eq!(
            csv.lines().nth(1),
            Some("user,\"o'neil, \"\"jo\"\"\",,gwas,read,a;b,2027-01-01T00:00:00.000Z,data-training-current")
        );
    }
}
