//! Golden files: formats written by a release that every later release must read. Changing a format
//! means a new version and a new golden file, never editing one of these.

use trail_model::export::{ExportFormat, ExportKind, ExportManifest, FormatError, SeqRange};

fn golden(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn export_manifest_v1_reads_and_writes_back_byte_for_byte() {
    let text = golden("export-manifest-v1.json");
    let m = ExportManifest::parse(&text).unwrap();
    assert_eq!(
        (m.org.as_str(), m.format, m.kind, m.row_count),
        ("acme", ExportFormat::Json, ExportKind::Query, 3)
    );
    assert_eq!(m.seq, Some(SeqRange { min: 17, max: 342 }));
    assert_eq!(m.filters["actor"][1], "bob@acme.io");
    assert!(m.checkpoint.as_deref().unwrap().starts_with("trail.localhost/orgs/acme\n343\n"));
    assert_eq!(format!("{}\n", m.to_text()), text, "this release writes the same bytes");
}

/// Manifests signed before the kind was named (a restore marked `"archive": true` in its filters).
#[test]
fn export_manifest_v1_before_the_kind_reads_as_a_query() {
    let m = ExportManifest::parse(&golden("export-manifest-v1-before-kind.json")).unwrap();
    assert_eq!((m.kind, m.seq, m.checkpoint), (ExportKind::Query, None, None));
    assert_eq!(m.filters["archive"], true);
}

#[test]
fn an_unknown_version_is_refused_by_name() {
    let text = golden("export-manifest-v1.json").replacen("\"version\":1", "\"version\":2", 1);
    let e = ExportManifest::parse(&text).unwrap_err();
    assert_eq!(e, FormatError::Version { what: "export manifest", found: 2, reads: 1 });
    assert_eq!(e.to_string(), "export manifest version 2 is not one this trail reads (it reads version 1)");
    assert!(matches!(ExportManifest::parse("{\"version\":1}"), Err(FormatError::Malformed { .. })));
}
