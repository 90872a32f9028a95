//! Ingest: batches with per-item results, idempotency, and body-level errors.

use serde_json::json;

use crate::{TestServer, ev};

#[tokio::test]
async fn batch_with_valid_and_invalid_items_stores_the_valid_ones() {
    let s = TestServer::start().await;
    let mut bad_ip = ev("bob", "user.invited", 1);
    bad_ip["actor"]["ip"] = json!("10.0.0.256");
    let mut unknown = ev("carol", "project.created", 1);
    unknown["colour"] = json!("blue");
    let mut bad_action = ev("dave", "Deploy", 1);
    bad_action["id"] = json!("client-id-7");
    let missing_target = json!({"actor": {"id": "eve"}, "action": "a.b", "outcome": "success"});
    let batch = vec![
        ev("alice", "component.deployed", 1),
        bad_ip,
        unknown,
        bad_action,
        missing_target,
        ev("frank", "component.created", 2),
    ];
    let r = s.key.ingest_batch("default", &batch).await.unwrap().results;
    let statuses: Vec<&str> = r.iter().map(|x| x.status.as_str()).collect();
    assert_eq!(statuses, ["created", "rejected", "rejected", "rejected", "rejected", "created"]);
    let fields: Vec<&str> =
        r.iter().filter_map(|x| x.error.as_ref()).map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["actor.ip", "colour", "action", "target"]);
    assert_eq!(r[3].id.as_deref(), Some("client-id-7"), "a rejected item echoes its id");
    assert_eq!(r[3].index, Some(3));
    assert_eq!((r[0].seq, r[5].seq), (Some(0), Some(1)), "seqs are gapless over the stored items");
    let page = s.admin.query("default", &[]).await.unwrap();
    assert_eq!(page.events.len(), 2);
}

#[tokio::test]
async fn a_lone_invalid_event_is_a_400_naming_the_field() {
    let s = TestServer::start().await;
    let mut e = ev("alice", "component.deployed", 1);
    e["outcome"] = json!("maybe");
    let err = s.key.ingest("default", &e).await.unwrap_err();
    assert_eq!((err.status(), err.code(), err.field()), (Some(400), Some("invalid_field"), Some("outcome")));
}

#[tokio::test]
async fn a_retry_is_a_duplicate_and_a_reused_id_a_conflict() {
    let s = TestServer::start().await;
    let mut e = ev("alice", "component.deployed", 1);
    e["id"] = json!("deploy-42");
    s.key.ingest_batch("default", &[ev("x", "a.b", 1), ev("y", "a.b", 1)]).await.unwrap();
    let first = s.key.ingest("default", &e).await.unwrap().results;
    assert_eq!((first[0].status.as_str(), first[0].seq), ("created", Some(2)));
    // The same event again (another receipt time) is a retry.
    let retry = s.key.ingest("default", &e).await.unwrap().results;
    assert_eq!((retry[0].status.as_str(), retry[0].seq), ("duplicate", Some(2)));
    // The same id with other content: in a batch, that item is `conflict` with the original seq.
    let mut changed = e.clone();
    changed["actor"]["id"] = json!("mallory");
    let again =
        s.key.ingest_batch("default", &[changed.clone(), ev("z", "a.b", 1), e.clone()]).await.unwrap();
    let r = &again.results;
    assert_eq!(
        (r[0].status.as_str(), r[0].seq, r[0].id.as_deref(), r[0].index),
        ("conflict", Some(2), Some("deploy-42"), Some(0))
    );
    let err = r[0].error.as_ref().unwrap();
    assert_eq!((err["code"].as_str(), err["field"].as_str()), (Some("conflict"), Some("id")));
    assert!(err["message"].as_str().unwrap().contains("seq 2"), "{err}");
    assert_eq!((r[1].status.as_str(), r[1].seq), ("created", Some(3)));
    assert_eq!((r[2].status.as_str(), r[2].seq), ("duplicate", Some(2)));
    // Alone, it is a 409 naming the id.
    let err = s.key.ingest("default", &changed).await.unwrap_err();
    assert_eq!((err.status(), err.code(), err.field()), (Some(409), Some("conflict"), Some("id")));
    let stored = s.key.event("default", "deploy-42").await.unwrap();
    assert_eq!(stored["actor"]["id"], "alice", "a conflict never replaces the original");
    assert_eq!(s.key.query("default", &[]).await.unwrap().events.len(), 4, "nothing else was stored");
    let url = format!("{}/metrics", s.base);
    let metrics = reqwest::get(url).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("trail_events_conflict_total 2\n"), "{metrics}");
    assert!(metrics.contains("trail_events_duplicate_total 2\n"), "{metrics}");
}

#[tokio::test]
async fn body_errors_are_clear_4xx() {
    let s = TestServer::start().await;
    let url = format!("{}/v1/orgs/default/events", s.base);
    let http = reqwest::Client::new();
    let token = s.key.request(reqwest::Method::GET, "/").build().unwrap().headers()["authorization"].clone();
    let send = |body: Vec<u8>, ctype: Option<&'static str>| {
        let mut rb = http.post(&url).header("authorization", token.clone()).body(body);
        if let Some(c) = ctype {
            rb = rb.header("content-type", c);
        }
        rb.send()
    };
    let code = |r: reqwest::Response| async move {
        (r.status().as_u16(), r.json::<serde_json::Value>().await.unwrap()["error"]["code"].clone())
    };

    let (st, c) = code(send(b"{\"actor\":".to_vec(), Some("application/json")).await.unwrap()).await;
    assert_eq!((st, c.as_str().unwrap()), (400, "malformed_json"));
    let (st, c) = code(send(b"{}".to_vec(), Some("text/plain")).await.unwrap()).await;
    assert_eq!((st, c.as_str().unwrap()), (415, "unsupported_media_type"));
    let (st, c) = code(send(b"{}".to_vec(), None).await.unwrap()).await;
    assert_eq!((st, c.as_str().unwrap()), (415, "unsupported_media_type"));
    let big = format!("{{\"events\": [\"{}\"]}}", "x".repeat(5 * 1024 * 1024));
    let (st, c) = code(send(big.into_bytes(), Some("application/json")).await.unwrap()).await;
    assert_eq!((st, c.as_str().unwrap()), (413, "payload_too_large"));
    let nested = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let (st, c) = code(send(nested.into_bytes(), Some("application/json")).await.unwrap()).await;
    assert_eq!((st, c.as_str().unwrap()), (400, "malformed_json"));
    let (st, c) = code(send(b"[1,2]".to_vec(), Some("application/json")).await.unwrap()).await;
    assert_eq!((st, c.as_str().unwrap()), (400, "invalid_body"));
    let too_many: Vec<_> = (0..1001).map(|_| ev("a", "a.b", 1)).collect();
    let err = s.key.ingest_batch("default", &too_many).await.unwrap_err();
    assert_eq!((err.status(), err.code()), (Some(400), Some("batch_too_large")));
    let err = s.key.ingest("default", &json!({"events": [], "extra": 1})).await.unwrap_err();
    assert_eq!(err.field(), Some("extra"));
    let mut huge = ev("a", "a.b", 1);
    huge["info"] = json!({"blob": "y".repeat(70 * 1024)});
    let r = s.key.ingest_batch("default", &[huge]).await.unwrap().results;
    assert_eq!(r[0].error.as_ref().unwrap()["code"], "event_too_large");
    assert_eq!(s.admin.query("default", &[]).await.unwrap().events.len(), 0, "nothing was stored");
}

#[tokio::test]
async fn event_time_must_be_recent_and_not_in_the_future() {
    let s = TestServer::start().await;
    let future = ev("a", "a.b", -10);
    let old = ev("a", "a.b", 366 * 24 * 60);
    let r = s.key.ingest_batch("default", &[future, old]).await.unwrap().results;
    let codes: Vec<&str> = r.iter().map(|x| x.error.as_ref().unwrap()["code"].as_str().unwrap()).collect();
    assert_eq!(codes, ["time_in_future", "outside_retention"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_is_shed_with_503_and_retry_after() {
    let mut settings = trail_server::Settings::default();
    settings.limits.max_concurrent_ingest = 1;
    let s = TestServer::start_in(tempfile::tempdir().unwrap(), settings).await;
    let batch: Vec<serde_json::Value> =
        (0..1000).map(|i| ev("flood", "component.updated", i % 500)).collect();
    let body = serde_json::to_vec(&json!({ "events": batch })).unwrap();
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let req = s
            .key
            .request(reqwest::Method::POST, "/v1/orgs/default/events")
            .header("content-type", "application/json")
            .body(body.clone());
        tasks.push(tokio::spawn(async move {
            // A shed request is answered before its body is read, and the connection closed: the
            // client may see the 503 or, still writing the body, a closed connection (status 0).
            let Ok(r) = req.send().await else { return (0, None, serde_json::Value::Null) };
            let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
            (r.status().as_u16(), retry, r.json::<serde_json::Value>().await.unwrap())
        }));
    }
    let (mut stored, mut shed) = (0, 0);
    for t in tasks {
        let (status, retry, body) = t.await.unwrap();
        match status {
            0 => shed += 1,
            200 => {
                stored +=
                    body["results"].as_array().unwrap().iter().filter(|r| r["status"] == "created").count()
            }
            503 => {
                assert_eq!(
                    (body["error"]["code"].as_str(), retry.as_deref()),
                    (Some("overloaded"), Some("1"))
                );
                shed += 1;
            }
            other => panic!("unexpected status {other}: {body}"),
        }
    }
    assert!(shed > 0, "with one permit and twelve concurrent batches some must be shed");
    assert!(stored > 0);
    let all = s.admin.query_all("default", &[("limit", "1000"), ("actor", "flood")]).await.unwrap();
    assert_eq!(all.len(), stored, "exactly the acknowledged events were stored; nothing of a refused batch");
}
