//! Export file formats (PRODUCT.md §6). JSON: one event per line exactly as the query API returns it.
//! CSV: a header row and stable columns, RFC 4180 quoting, `info` as compact JSON, times in UTC
//! RFC 3339; a cell that a spreadsheet would run as a formula (starting with `=`, `+`, `-`, `@`, tab
//! or carriage return) is prefixed with `'` so it is shown as text.

use crate::event::StoredEvent;
use crate::time::format_rfc3339;

/// An export file's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    /// RFC 4180 with a header row (`trail_model::export`).
    Csv,
    /// One event per line, as the query API returns it (NDJSON).
    Json,
}

impl ExportFormat {
    pub const ALL: [ExportFormat; 2] = [ExportFormat::Csv, ExportFormat::Json];

    /// The name requests and stores use.
    pub fn as_str(self) -> &'static str {
        match self {
            ExportFormat::Csv => "csv",
            ExportFormat::Json => "json",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.as_str() == s)
    }

    /// The file name's extension.
    pub fn extension(self) -> &'static str {
        match self {
            ExportFormat::Csv => "csv",
            ExportFormat::Json => "jsonl",
        }
    }

    /// The download's `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            ExportFormat::Csv => "text/csv; charset=utf-8",
            ExportFormat::Json => "application/x-ndjson",
        }
    }
}

/// What an export holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportKind {
    /// The hot events matching a query's filters.
    #[default]
    Query,
    /// Archived events of a window, brought back from the archive (always NDJSON).
    Restore,
}

impl ExportKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ExportKind::Query => "query",
            ExportKind::Restore => "restore",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [ExportKind::Query, ExportKind::Restore].into_iter().find(|k| k.as_str() == s)
    }
}

/// The signed manifest of an export (the text of a signed note; `trail verify --export` reads it).
/// Version 1; a reader refuses another version. Every later release must read the golden file
/// `tests/golden/export-manifest-v1.json`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ExportManifest {
    pub version: u32,
    pub export_id: String,
    pub org: String,
    pub name: String,
    pub format: ExportFormat,
    /// Absent in manifests written before it was named (a restore was marked in `filters` then).
    #[serde(default)]
    pub kind: ExportKind,
    /// The query parameters (or, for a restore, the window), as requested with the window resolved.
    pub filters: serde_json::Value,
    pub window: ManifestWindow,
    pub row_count: u64,
    pub size_bytes: u64,
    /// Hex SHA-256 of the file.
    pub sha256: String,
    /// The smallest and largest `seq` in the file (absent when it is empty).
    pub seq: Option<SeqRange>,
    /// A signed checkpoint covering every event in the file.
    pub checkpoint: Option<String>,
    /// From this seq on, `source: "trail"` is Trail's own record.
    pub self_audit_from_seq: u64,
    pub exported_at: String,
    /// The verifier key of the log key that signed it.
    pub log_key: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ManifestWindow {
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SeqRange {
    pub min: u64,
    pub max: u64,
}

/// Why a persisted or signed format could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("{what} version {found} is not one this trail reads (it reads version {reads})")]
    Version { what: &'static str, found: u64, reads: u32 },
    #[error("{what} is malformed: {why}")]
    Malformed { what: &'static str, why: String },
}

/// Reads a JSON format whose `version` must be `reads`: the one check every versioned format makes
/// before its fields are read, so an unknown version is refused by name rather than misread.
pub fn parse_versioned<T: serde::de::DeserializeOwned>(
    what: &'static str,
    json: &[u8],
    reads: u32,
) -> Result<T, FormatError> {
    let malformed = |e: serde_json::Error| FormatError::Malformed { what, why: e.to_string() };
    let v: serde_json::Value = serde_json::from_slice(json.trim_ascii_end()).map_err(malformed)?;
    let found = v["version"].as_u64().unwrap_or(0);
    if found != u64::from(reads) {
        return Err(FormatError::Version { what, found, reads });
    }
    serde_json::from_value(v).map_err(malformed)
}

impl ExportManifest {
    pub const VERSION: u32 = 1;

    /// The manifest's JSON text (one line, as signed).
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads a manifest's JSON text, refusing a version this release does not know.
    pub fn parse(text: &str) -> Result<Self, FormatError> {
        parse_versioned("export manifest", text.as_bytes(), Self::VERSION)
    }
}

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
