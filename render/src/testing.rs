//! `tregov test` reports: JUnit XML for CI systems (one suite per test file, one case per
//! request, a `<failure>` with the reason), and the coverage list.

use std::collections::BTreeMap;

use tregov_engine::testfile::{CaseResult, TestReport};

use crate::line;

pub fn junit_xml(report: &TestReport) -> String {
    let mut by_file: BTreeMap<&str, Vec<&CaseResult>> = BTreeMap::new();
    for case in &report.cases {
        by_file.entry(case.file.as_str()).or_default().push(case);
    }
    let mut out = String::new();
    line!(out, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    line!(
        out,
        r#"<testsuites name="tregov policy tests" tests="{}" failures="{}">"#,
        report.cases.len(),
        report.cases.iter().filter(|c| c.failure.is_some()).count()
    );
    for (file, cases) in by_file {
        let failures = cases.iter().filter(|c| c.failure.is_some()).count();
        line!(
            out,
            r#"  <testsuite name="{}" tests="{}" failures="{failures}">"#,
            escape(file),
            cases.len()
        );
        for case in cases {
            let open = format!(
                r#"    <testcase classname="{}" name="{}""#,
                escape(file),
                escape(&case.name)
            );
            match &case.failure {
                None => line!(out, "{open}/>"),
                Some(why) => {
                    line!(out, "{open}>");
                    line!(
                        out,
                        r#"      <failure message="{}">{}</failure>"#,
                        escape(why),
                        escape(why)
                    );
                    line!(out, "    </testcase>");
                }
            }
        }
        line!(out, "  </testsuite>");
    }
    line!(out, "</testsuites>");
    out
}

/// The policies no test decision was determined by.
pub fn coverage_text(report: &TestReport) -> String {
    let uncovered = report.uncovered();
    let mut out = String::new();
    line!(
        out,
        "coverage: {} of {} policies determined at least one decision",
        report.policies.len() - uncovered.len(),
        report.policies.len()
    );
    for id in &uncovered {
        line!(out, "  never determined a decision: {id}");
    }
    out
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\t' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_case_becomes_an_escaped_failure_element() {
        let report = TestReport {
            cases: vec![
                CaseResult {
                    file: "t.json".into(),
                    name: "request 1 `a < b`".into(),
                    failure: Some("expected \"allow\" & got deny".into()),
                },
                CaseResult {
                    file: "t.json".into(),
                    name: "request 2".into(),
                    failure: None,
                },
            ],
            ..Default::default()
        };
        let xml = junit_xml(&report);
        assert!(xml.contains(r#"<testsuites name="tregov policy tests" tests="2" failures="1">"#));
        assert!(xml.contains(r#"name="request 1 `a &lt; b`""#), "{xml}");
        assert!(
            xml.contains("expected &quot;allow&quot; &amp; got deny</failure>"),
            "{xml}"
        );
        assert!(xml.contains(r#"<testcase classname="t.json" name="request 2"/>"#));
    }
}
