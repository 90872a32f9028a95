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
    let before = s.admin.query_all("default", &[("limit", "1000")]).await.unwrap();
    let dir = s.stop().await;
    let s = TestServer::start_in(dir, trail_server::Settings::default()).await;
    let after = s.admin.query_all("default", &[("limit", "1000")]).await.unwrap();
    assert_eq!(after, before, "every event is back, byte for byte the same JSON");
    for (id, seq) in acked.iter().step_by(97) {
        assert_eq!(s.admin.event("default", id).await.unwrap()["seq"], *seq);
    }
    let r = s.key.ingest("default", &crate::ev("after", "a.b", 0)).await.unwrap();
    assert_eq!(r.results[0].seq, Some(1000), "seq continues without a gap");
}
