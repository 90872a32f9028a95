//! Export file formats (PRODUCT.md §6). JSON: one event per line exactly as the query API returns it.
//! CSV: a header row and stable columns, RFC 4180 quoting, `info` as compact JSON, times in UTC
//! RFC 3339; a cell that a spreadsheet would run as a formula (starting with `=`, `+`, `-`, `@`, tab
//! or carriage return) is prefixed with `'` so it is shown as text.

use crate::event::StoredEvent;
use crate::time::format_rfc3339;

/// The CSV columns, in order. Adding a column is an interface change: new columns are appended, so
/// readers that take columns by position keep working.
pub const CSV_COLUMNS: [&str; 18] = [
    "time",
    "org",
    "seq",
    "id",
    "actor_id",
    "actor_type",
    "actor_name",
    "actor_ip",
    "action",
    "target_type",
    "target_id",
    "target_name",
    "project",
    "outcome",
    "reason",
    "source",
    "info",
    "action_label",
];

/// Appends one CSV cell, quoted when needed and neutralised when it looks like a formula.
pub fn push_cell(out: &mut String, value: &str) {
    let formula = value.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let quote = formula || value.contains([',', '"', '\n', '\r']);
    if quote {
        out.push('"');
    }
    if formula {
        out.push('\'');
    }
    for c in value.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    if quote {
        out.push('"');
    }
}

pub fn csv_header() -> String {
    let mut s = CSV_COLUMNS.join(",");
    s.push_str("\r\n");
    s
}

/// One event as a CSV record, ending in CRLF.
pub fn csv_row(e: &StoredEvent) -> String {
    let info =
        e.info.as_ref().map(crate::canonical::info_bytes).map(|b| String::from_utf8(b).unwrap_or_default());
    let seq = e.seq.to_string();
    let time = format_rfc3339(e.time);
    let label = crate::catalog::label(&e.action).unwrap_or("");
    let cells: [&str; 18] = [
        &time,
        &e.org,
        &seq,
        &e.id,
        &e.actor.id,
        e.actor.kind.as_str(),
        e.actor.name.as_deref().unwrap_or(""),
        e.actor.ip.as_deref().unwrap_or(""),
        &e.action,
        &e.target.kind,
        e.target.id.as_deref().unwrap_or(""),
        e.target.name.as_deref().unwrap_or(""),
        e.project.as_deref().unwrap_or(""),
        e.outcome.as_str(),
        e.reason.as_deref().unwrap_or(""),
        e.source.as_deref().unwrap_or(""),
        info.as_deref().unwrap_or(""),
        label,
    ];
    let mut out = String::with_capacity(256);
    for (i, c) in cells.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_cell(&mut out, c);
    }
    out.push_str("\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cell(v: &str) -> String {
        let mut s = String::new();
        push_cell(&mut s, v);
        s
    }

    /// A minimal RFC 4180 reader for one cell, to check the writer against.
    fn read_cell(s: &str) -> String {
        match s.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
            Some(inner) => inner.replace("\"\"", "\""),
            None => s.to_string(),
        }
    }

    #[test]
    fn quoting_and_formulas() {
        assert_eq!(cell("plain"), "plain");
        assert_eq!(cell("a,b"), "\"a,b\"");
        assert_eq!(cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(cell("two\nlines"), "\"two\nlines\"");
        assert_eq!(cell("=SUM(A1:A9)"), "\"'=SUM(A1:A9)\"");
        assert_eq!(cell("+1"), "\"'+1\"");
        assert_eq!(cell("-cmd"), "\"'-cmd\"");
        assert_eq!(cell("@x"), "\"'@x\"");
        assert_eq!(cell("Zürich 東京"), "Zürich 東京");
        assert_eq!(csv_header().trim_end().split(',').count(), 18);
    }

    proptest! {
        #[test]
        fn every_cell_reads_back_and_never_starts_a_formula(v in r#"\PC{0,30}|[=+@,"\n-][a-z,"\n]{0,10}"#) {
            let c = cell(&v);
            let back = read_cell(&c);
            let formula = v.starts_with(['=', '+', '-', '@', '\t', '\r']);
            if formula {
                prop_assert_eq!(back, format!("'{v}"));
            } else {
                prop_assert_eq!(back, v);
            }
        }
    }
}
