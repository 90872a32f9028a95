//! Exports end to end: both formats against the query API, awkward values, the signed manifest,
//! 409 before completion, 410 after expiry, a restart mid-export, and the audit trail.

use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use trail_merkle::Verifier;
use trail_store::{ExportStatus, Store};

use crate::{TestServer, ev};

/// Events with the values that break naive CSV and JSON writers.
async fn seed(s: &TestServer) -> Vec<Value> {
    let awkward = [
        "plain",
        "comma, inside",
        "quote \"here\"",
        "two\nlines",
        "Zürich — 東京",
        "=HYPERLINK(\"http://x\")",
        "+1",
        "-2",
        "@SUM(A1)",
    ];
    let mut events = Vec::new();
    for (i, a) in awkward.iter().cycle().take(120).enumerate() {
        let mut e = ev(
            &format!("user-{}", i % 4),
            // Every fourth exported event has an action the catalog does not know.
            if i % 8 == 6 {
                "component.spun_up"
            } else if i % 2 == 0 {
                "component.deployed"
            } else {
                "project.updated"
            },
            i as i64 + 1,
        );
        e["target"]["name"] = json!(a);
        e["reason"] = json!(a);
        e["info"] = json!({"note": a, "n": i});
        events.push(e);
    }
    s.key.ingest_batch("default", &events).await.unwrap();
    events
}

pub async fn wait_done(s: &TestServer, id: &str) -> Value {
    for _ in 0..200 {
        let e = s.admin.get(&format!("/v1/orgs/default/exports/{id}")).await.unwrap();
        if e["status"] == "completed" || e["status"] == "failed" {
            return e;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("export {id} did not finish");
}

async fn download(s: &TestServer, id: &str) -> (u16, Option<String>, Vec<u8>) {
    let r = s
        .admin
        .request(reqwest::Method::GET, &format!("/v1/orgs/default/exports/{id}/download"))
        .send()
        .await
        .unwrap();
    let disposition = r.headers().get("content-disposition").map(|v| v.to_str().unwrap().to_string());
    (r.status().as_u16(), disposition, r.bytes().await.unwrap().to_vec())
}

/// RFC 4180 records, for checking the writer from the outside.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let (mut rows, mut row, mut cell, mut quoted, mut chars) =
        (vec![], vec![], String::new(), false, text.chars().peekable());
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cell.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => row.push(std::mem::take(&mut cell)),
            ('\r', false) => {}
            ('\n', false) => {
                row.push(std::mem::take(&mut cell));
                rows.push(std::mem::take(&mut row));
            }
            (c, _) => cell.push(c),
        }
    }
    rows
}

#[tokio::test]
async fn both_formats_hold_exactly_what_the_query_returns() {
    let s = TestServer::start().await;
    seed(&s).await;
    let filters = json!({"action": "component.*", "actor": ["user-0", "user-2"]});
    let expected = s
        .admin
        .query_all(
            "default",
            &[("action", "component.*"), ("actor", "user-0"), ("actor", "user-2"), ("limit", "1000")],
        )
        .await
        .unwrap();
    assert!(expected.len() > 20);
    let key = Verifier::from_key(
        s.anon
            .request(reqwest::Method::GET, "/v1/log-key")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
            .trim(),
    )
    .unwrap();

    for format in ["json", "csv"] {
        let created = s
            .admin
            .post(
                "/v1/orgs/default/exports",
                &json!({"name": format!("Q3 {format}"), "format": format, "filters": filters}),
            )
            .await
            .unwrap();
        assert_eq!(
            (created["status"].as_str(), created["requested_by"].as_str()),
            (Some("pending"), Some("admin@localhost"))
        );
        assert!(
            created["filters"]["from"].is_string() && created["filters"]["to"].is_string(),
            "the window is fixed at request time"
        );
        let id = created["id"].as_str().unwrap();
        let done = wait_done(&s, id).await;
        assert_eq!(done["status"], "completed", "{done}");
        assert_eq!(done["row_count"].as_u64().unwrap() as usize, expected.len());
        let (status, disposition, bytes) = download(&s, id).await;
        assert_eq!(status, 200);
        let ext = if format == "csv" { "csv" } else { "jsonl" };
        assert_eq!(disposition.unwrap(), format!("attachment; filename=\"Q3 {format}.{ext}\""));
        assert_eq!(bytes.len() as u64, done["size_bytes"].as_u64().unwrap());
        let sha: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(done["sha256"], sha);

        let text = String::from_utf8(bytes).unwrap();
        if format == "json" {
            let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
            // The API adds `self_audit`, which the server derives; the export states it once, in its
            // manifest (`self_audit_from_seq`), and keeps each line to the stored event.
            let api: Vec<Value> = expected
                .iter()
                .map(|e| {
                    let mut e = e.clone();
                    e.as_object_mut().unwrap().remove("self_audit");
                    e
                })
                .collect();
            assert_eq!(lines, api, "every row once, in the query's order, exactly as the API returns it");
        } else {
            let rows = parse_csv(&text);
            assert_eq!(rows[0], trail_model::export::CSV_COLUMNS.map(str::to_string));
            assert_eq!(rows.len() - 1, expected.len());
            for (row, e) in rows[1..].iter().zip(&expected) {
                assert_eq!(row.len(), 18);
                assert_eq!(row[8], e["action"].as_str().unwrap());
                assert_eq!(
                    row[17],
                    e["action_label"].as_str().unwrap_or(""),
                    "the last column is the catalog label, empty for an uncatalogued action"
                );
                assert_eq!(
                    (row[2].as_str(), row[3].as_str()),
                    (e["seq"].to_string().as_str(), e["id"].as_str().unwrap())
                );
                let name = e["target"]["name"].as_str().unwrap();
                let shown = if name.starts_with(['=', '+', '-', '@']) {
                    format!("'{name}")
                } else {
                    name.to_string()
                };
                assert_eq!(row[11], shown, "formula-looking cells are neutralised, everything else verbatim");
                assert_eq!(
                    serde_json::from_str::<Value>(&row[16]).unwrap(),
                    e["info"],
                    "info is compact JSON"
                );
                assert_eq!(row[0], e["time"].as_str().unwrap());
            }
            let labels: Vec<&str> = rows[1..].iter().map(|r| r[17].as_str()).collect();
            assert!(labels.contains(&"") && labels.contains(&"Component deployment initiated"), "{labels:?}");
        }

        // The manifest is signed with the log key and describes exactly this file.
        let note = s
            .admin
            .request(reqwest::Method::GET, &format!("/v1/orgs/default/exports/{id}/manifest"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let text = key.open_note(&note).unwrap();
        let m: Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(
            (m["sha256"].clone(), m["row_count"].clone(), m["org"].clone()),
            (json!(sha), json!(expected.len()), json!("default"))
        );
        assert_eq!(
            m["self_audit_from_seq"], 0,
            "an org created by this release: source trail is Trail's own"
        );
        let cp = trail_merkle::checkpoint::open(m["checkpoint"].as_str().unwrap(), &key).unwrap();
        assert!(cp.size > m["seq"]["max"].as_u64().unwrap(), "the checkpoint covers every exported event");
    }
    let history = s.admin.get("/v1/orgs/default/exports").await.unwrap();
    let names: Vec<&str> =
        history["exports"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["Q3 csv", "Q3 json"], "newest first");
    let audited = s.admin.query_all("default", &[("source", "trail"), ("action", "export.*")]).await.unwrap();
    let actions: Vec<&str> = audited.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions.iter().filter(|a| **a == "export.created").count(), 2);
    assert_eq!(actions.iter().filter(|a| **a == "export.downloaded").count(), 2);
}

#[tokio::test]
async fn bad_requests_not_ready_and_expired() {
    let s = TestServer::start().await;
    let bad = |body: Value, field: &'static str| {
        let c = s.admin.clone();
        async move {
            let e = c.post("/v1/orgs/default/exports", &body).await.unwrap_err();
            assert_eq!((e.status(), e.field()), (Some(400), Some(field)), "{body}");
            e
        }
    };
    bad(json!({"name": "", "format": "csv"}), "name").await;
    bad(json!({"name": "x", "format": "xlsx"}), "format").await;
    bad(json!({"name": "x", "format": "csv", "filters": {"colour": "red"}}), "filters.colour").await;
    // A null filter is absent, but only a filter's name may be given one (schemathesis sent "": null).
    let e = bad(json!({"name": "x", "format": "csv", "filters": {"": null}}), "filters.").await;
    assert_eq!(e.code(), Some("unknown_parameter"));
    bad(json!({"name": "x", "format": "csv", "filters": {"colour": null}}), "filters.colour").await;
    let absent = s
        .admin
        .post("/v1/orgs/default/exports", &json!({"name": "x", "format": "csv", "filters": {"actor": null}}))
        .await
        .unwrap();
    assert!(absent["filters"].get("actor").is_none_or(Value::is_null), "{absent}");
    bad(json!({"name": "x", "format": "csv", "extra": 1}), "extra").await;
    let e = bad(json!({"name": "x", "format": "csv", "filters": {"from": "2026-01-01T00:00:00Z", "to": "2026-06-01T00:00:00Z"}}), "filters.from").await;
    assert_eq!(e.code(), Some("window_too_large"));
    let e = bad(json!({"name": "x", "format": "csv", "filters": {"from": "2020-01-01T00:00:00Z", "to": "2020-01-02T00:00:00Z"}}), "filters.from").await;
    assert_eq!(e.code(), Some("outside_retention"));

    s.key.ingest("default", &ev("a", "a.b", 1)).await.unwrap();
    let created = s
        .admin
        .post("/v1/orgs/default/exports", &json!({"name": "soon gone", "format": "json"}))
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    wait_done(&s, &id).await;
    // Not ready: an export that is still running answers 409.
    let mut running = s.store.export("default", &id).await.unwrap().unwrap();
    running.id = "running-one".into();
    running.status = ExportStatus::Running;
    s.store.create_export(&running).await.unwrap();
    let (status, _, body) = download(&s, "running-one").await;
    assert_eq!(status, 409);
    assert!(String::from_utf8_lossy(&body).contains("export_not_ready"));
    // Expired: the worker deletes the file and the download answers 410.
    let mut e = s.store.export("default", &id).await.unwrap().unwrap();
    e.expires_at = Some(trail_model::time::now() - 1);
    s.store.update_export(&e).await.unwrap();
    for _ in 0..100 {
        if s.store.export("default", &id).await.unwrap().unwrap().status == ExportStatus::Expired {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _, _) = download(&s, &id).await;
    assert_eq!(status, 410);
    assert!(!s.dir.path().join("exports").join(format!("{id}.jsonl")).exists(), "the file is deleted");
    assert_eq!(s.admin.get("/v1/orgs/default/exports/nope").await.unwrap_err().status(), Some(404));
}

#[tokio::test]
async fn an_export_interrupted_by_a_restart_runs_again() {
    let s = TestServer::start().await;
    seed(&s).await;
    let created = s
        .admin
        .post("/v1/orgs/default/exports", &json!({"name": "before the crash", "format": "csv"}))
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    wait_done(&s, &id).await;
    // Make it look as if the server died mid-run: running, no file.
    let mut e = s.store.export("default", &id).await.unwrap().unwrap();
    e.status = ExportStatus::Running;
    e.row_count = 0;
    e.sha256 = None;
    s.store.update_export(&e).await.unwrap();
    std::fs::remove_file(s.dir.path().join("exports").join(format!("{id}.csv"))).unwrap();
    let dir = s.stop().await;
    let s = TestServer::start_in(dir, trail_server::Settings::default()).await;
    let done = wait_done(&s, &id).await;
    assert_eq!(done["status"], "completed", "never left running: {done}");
    assert_eq!(done["row_count"], 120);
    let (status, _, bytes) = download(&s, &id).await;
    assert_eq!((status, parse_csv(&String::from_utf8(bytes).unwrap()).len()), (200, 121));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_max_running_exports_run_at_once() {
    let mut settings = trail_server::Settings::default();
    settings.exports.max_running = 1;
    let s = TestServer::start_in(tempfile::tempdir().unwrap(), settings).await;
    let batch: Vec<Value> = (0..1000).map(|i| ev("loader", "component.updated", i % 600)).collect();
    for _ in 0..4 {
        s.key.ingest_batch("default", &batch).await.unwrap();
    }
    let mut ids = Vec::new();
    for i in 0..4 {
        let e = s
            .admin
            .post("/v1/orgs/default/exports", &json!({"name": format!("e{i}"), "format": "json"}))
            .await
            .unwrap();
        ids.push(e["id"].as_str().unwrap().to_string());
    }
    let (mut seen_pending_while_running, mut done) = (false, false);
    for _ in 0..400 {
        let list = s.admin.get("/v1/orgs/default/exports").await.unwrap();
        let statuses: Vec<&str> =
            list["exports"].as_array().unwrap().iter().map(|e| e["status"].as_str().unwrap()).collect();
        let running = statuses.iter().filter(|s| **s == "running").count();
        assert!(running <= 1, "more than max_running exports ran at once: {statuses:?}");
        seen_pending_while_running |= running == 1 && statuses.contains(&"pending");
        if statuses.iter().all(|s| *s == "completed") {
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(done, "every export completes");
    assert!(seen_pending_while_running, "the others waited as pending");
}
