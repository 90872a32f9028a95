//! The API as a whole: the OpenAPI document matches the router, health endpoints, unknown routes,
//! wrong methods and request ids.

use std::collections::BTreeSet;

use crate::TestServer;

#[tokio::test]
async fn openapi_describes_exactly_the_served_routes() {
    let s = TestServer::start().await;
    let doc = s.anon.get("/v1/openapi.json").await.unwrap();
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    let served: BTreeSet<(String, String)> =
        trail_server::routes::ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    assert_eq!(documented, served);
    // Every served route answers something other than 404/405 for its method.
    let http = reqwest::Client::new();
    for (method, path) in &served {
        let url = format!("{}{}", s.base, path.replace("{org}", "default"));
        let r = http.request(method.parse().unwrap(), url).send().await.unwrap();
        let status = r.status();
        let body: serde_json::Value = r.json().await.unwrap_or_default();
        assert_ne!(body["error"]["message"], "route not found", "{method} {path} is not routed");
        assert_ne!(status, 405, "{method} {path} is not routed");
    }
}

/// The catalog is served as it is compiled in, for anyone (it names operations, nothing of an org).
#[tokio::test]
async fn the_action_catalog_is_served() {
    let s = TestServer::start().await;
    let doc = s.anon.get("/v1/actions").await.unwrap();
    let actions = doc["actions"].as_array().unwrap();
    assert_eq!(actions.len(), trail_model::catalog::CATALOG.len());
    for (a, c) in actions.iter().zip(trail_model::catalog::CATALOG) {
        assert_eq!(a, &serde_json::json!({"action": c.name, "label": c.label, "category": c.category}));
    }
    let promoted = actions.iter().find(|a| a["action"] == "integration.promoted").unwrap();
    assert_eq!(promoted["label"], "Integration promotion initiated");
}

/// The value of an unlabelled (or fully labelled) sample, if the exposition has it.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// `/metrics` passes Prometheus's own checker (`promtool check metrics`: format and naming lints) and
/// has the families an operator expects, with values that move when things happen.
#[tokio::test]
async fn metrics_pass_promtool_and_cover_what_operators_watch() {
    let s = TestServer::start().await;
    let events: Vec<_> = (0..3).map(|i| crate::ev("alice", "component.deployed", i)).collect();
    s.key.ingest_batch("default", &events).await.unwrap();
    let http = reqwest::Client::new();
    // Wrong passwords until the throttle refuses without checking.
    let login = format!("{}/v1/auth/login", s.base);
    let mut throttled = false;
    for _ in 0..40 {
        let r = http
            .post(&login)
            .json(&serde_json::json!({"email": "admin@localhost", "password": "wrong password!"}))
            .send()
            .await
            .unwrap();
        if r.status() == 429 {
            throttled = true;
            break;
        }
    }
    assert!(throttled, "the throttle refused a sign-in");
    let url = format!("{}/metrics", s.base);
    let mut text = String::new();
    // The checkpointer signs within moments: the lag goes back to 0.
    for _ in 0..100 {
        text = http.get(&url).send().await.unwrap().text().await.unwrap();
        if sample(&text, "trail_checkpoint_lag_seconds") == Some(0.0) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(sample(&text, "trail_checkpoint_lag_seconds"), Some(0.0), "{text}");
    for family in [
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_cpu_seconds_total",
        "process_start_time_seconds",
        "trail_store_size_bytes",
        "trail_retention_last_run_timestamp_seconds",
        "trail_retention_last_run_success",
        "trail_exports{state=\"pending\"}",
        "trail_exports{state=\"running\"}",
        "trail_store_pool_waits_total{pool=\"events\"}",
        "trail_store_pool_wait_seconds_total{pool=\"control\"}",
        "trail_search_index_lag_events",
        "trail_store_memory_bytes{part=\"sqlite\"}",
        "trail_store_memory_bytes{part=\"id_filters\"}",
    ] {
        assert!(sample(&text, family).is_some(), "{family} is missing:\n{text}");
    }
    assert!(text.contains(&format!("trail_build_info{{version=\"{}\"}} 1\n", env!("CARGO_PKG_VERSION"))));
    assert!(sample(&text, "trail_events_stored").unwrap() >= 3.0, "three events and the self-audit");
    assert!(sample(&text, "trail_store_size_bytes").unwrap() > 0.0);
    assert!(sample(&text, "process_resident_memory_bytes").unwrap() > 1e6);
    // SQLite's caches and statements are part of the process's memory, and never all of it.
    let sqlite = sample(&text, "trail_store_memory_bytes{part=\"sqlite\"}").unwrap();
    assert!(sqlite > 0.0 && sqlite < sample(&text, "process_resident_memory_bytes").unwrap(), "{text}");
    assert!(sample(&text, "trail_sign_in_throttled_total").unwrap() >= 1.0);
    assert!(sample(&text, "trail_sign_in_failures_total").unwrap() >= 2.0);
    assert_eq!(sample(&text, "trail_events_created_total"), Some(3.0));

    let promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let Ok(mut child) = promtool else {
        eprintln!("SKIPPED the promtool check: promtool is not installed (apt-get install prometheus)");
        return;
    };
    use std::io::Write;
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && report.trim().is_empty(), "promtool check metrics:\n{report}");
}

#[tokio::test]
async fn health_ready_metrics_and_errors() {
    let s = TestServer::start().await;
    assert_eq!(s.anon.get("/healthz").await.unwrap()["status"], "ok");
    assert_eq!(s.anon.get("/readyz").await.unwrap()["status"], "ready");
    let http = reqwest::Client::new();
    let m = http.get(format!("{}/metrics", s.base)).send().await.unwrap().text().await.unwrap();
    assert!(
        m.contains("trail_http_requests_total{method=\"GET\",route=\"/readyz\",status=\"200\"} 1"),
        "{m}"
    );
    assert!(m.contains("trail_events_created_total"));
    // The full-text index follows ingest within moments, and says how far behind it is.
    s.key
        .ingest(
            "default",
            &serde_json::json!({"actor": {"id": "alice"}, "action": "x.y", "target": {"type": "t"}, "outcome": "success"}),
        )
        .await
        .unwrap();
    let mut lag = String::new();
    for _ in 0..200 {
        let m = http.get(format!("{}/metrics", s.base)).send().await.unwrap().text().await.unwrap();
        lag = m
            .lines()
            .find(|l| l.starts_with("trail_search_index_lag_events "))
            .unwrap_or_default()
            .to_string();
        if lag == "trail_search_index_lag_events 0" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(lag, "trail_search_index_lag_events 0");

    let r = http.get(format!("{}/v1/nothing-here", s.base)).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.headers().contains_key("x-request-id"));
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    let r = http.delete(format!("{}/v1/orgs/default/events", s.base)).send().await.unwrap();
    assert_eq!(r.status(), 405);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed");
    let r = http
        .get(format!("{}/healthz", s.base))
        .header("x-request-id", "caller-chosen-id")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "caller-chosen-id", "a caller's request id is kept");
}

#[tokio::test]
async fn a_restart_keeps_every_acknowledged_event() {
    let s = TestServer::start().await;
    let mut acked = Vec::new();
    for i in 0..20 {
        let batch: Vec<_> = (0..50).map(|j| crate::ev(&format!("u{i}"), "component.updated", j)).collect();
        let r = s.key.ingest_batch("default", &batch).await.unwrap();
        acked.extend(r.results.into_iter().map(|x| (x.id.unwrap(), x.seq.unwrap())));
    }
    let sent = [("limit", "1000"), ("action", "component.updated")];
    let before = s.key.query_all("default", &sent).await.unwrap();
    let dir = s.stop().await;
    let s = TestServer::start_in(dir, trail_server::Settings::default()).await;
    let after = s.key.query_all("default", &sent).await.unwrap();
    assert_eq!(after, before, "every event is back, byte for byte the same JSON");
    for (id, seq) in acked.iter().step_by(97) {
        assert_eq!(s.key.event("default", id).await.unwrap()["seq"], *seq);
    }
    let r = s.key.ingest("default", &crate::ev("after", "a.b", 0)).await.unwrap();
    // Seq 1000 is the summary of the key's reads, written when the first server stopped.
    assert_eq!(r.results[0].seq, Some(1001), "seq continues without a gap");
}
