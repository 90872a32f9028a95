//! Query: every filter alone and combined, free text, paging under concurrent ingest, windows.

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::{TestServer, ev};

const ACTORS: [&str; 3] = ["alice@acme.io", "bob@acme.io", "ci-bot"];
const ACTIONS: [&str; 4] = ["component.deployed", "component.created", "project.deleted", "user.invited"];
const PROJECTS: [&str; 2] = ["billing", "search"];
const SOURCES: [&str; 2] = ["console", "api"];

/// 240 events with every attribute varying independently; returned as sent (with their ids).
async fn seed(s: &TestServer) -> Vec<Value> {
    let mut events = Vec::new();
    for i in 0..240usize {
        let action = ACTIONS[i % 4];
        let mut e = ev(ACTORS[i % 3], action, (i as i64) * 5 + 1);
        e["id"] = json!(format!("evt-{i:03}"));
        e["target"] = json!({"type": action.split('.').next().unwrap(), "id": format!("t-{}", i % 5), "name": "Billing, \"main\" 🚀"});
        if i % 7 != 0 {
            e["project"] = json!(PROJECTS[i % 2]);
        }
        e["outcome"] = json!(if i % 6 == 0 { "failure" } else { "success" });
        if i % 6 == 0 {
            e["reason"] = json!("quota exceeded");
        }
        e["source"] = json!(SOURCES[(i / 2) % 2]);
        e["info"] = json!({"request_id": format!("req-{:06x}", i * 7919), "region": if i % 10 == 0 { "Zürich" } else { "east-1" }});
        events.push(e);
    }
    for chunk in events.chunks(100) {
        let r = s.key.ingest_batch("default", chunk).await.unwrap();
        assert!(r.results.iter().all(|x| x.status == "created"));
    }
    events
}

fn ids(events: &[Value]) -> Vec<String> {
    events.iter().map(|e| e["id"].as_str().unwrap().to_string()).collect()
}

/// Expected ids newest first (the seed's times strictly decrease with the index).
fn expect(events: &[Value], keep: impl Fn(&Value) -> bool) -> Vec<String> {
    ids(&events.iter().filter(|e| keep(e)).cloned().collect::<Vec<_>>())
}

#[tokio::test]
async fn every_filter_alone_and_combined() {
    let s = TestServer::start().await;
    let events = seed(&s).await;
    let run = |params: Vec<(&'static str, String)>| {
        let c = s.admin.clone();
        async move {
            let p: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
            ids(&c.query_all("default", &[p.as_slice(), &[("limit", "17")]].concat()).await.unwrap())
        }
    };
    let str_of = |e: &Value, path: &[&str]| -> Option<String> {
        let mut v = e;
        for p in path {
            v = v.get(*p)?;
        }
        v.as_str().map(str::to_string)
    };

    assert_eq!(run(vec![]).await, expect(&events, |_| true), "default window holds all seeded events");
    assert_eq!(
        run(vec![("actor", "bob@acme.io".into())]).await,
        expect(&events, |e| e["actor"]["id"] == "bob@acme.io")
    );
    assert_eq!(
        run(vec![("actor", "bob@acme.io".into()), ("actor", "ci-bot".into())]).await,
        expect(&events, |e| e["actor"]["id"] != "alice@acme.io"),
        "a repeated parameter is OR"
    );
    assert_eq!(
        run(vec![("action", "component.deployed".into())]).await,
        expect(&events, |e| e["action"] == "component.deployed")
    );
    assert_eq!(
        run(vec![("action", "component.*".into())]).await,
        expect(&events, |e| e["action"].as_str().unwrap().starts_with("component.")),
        "a trailing * is a prefix"
    );
    assert_eq!(
        run(vec![("target_type", "project".into())]).await,
        expect(&events, |e| e["target"]["type"] == "project")
    );
    assert_eq!(run(vec![("target_id", "t-3".into())]).await, expect(&events, |e| e["target"]["id"] == "t-3"));
    assert_eq!(
        run(vec![("project", "billing".into())]).await,
        expect(&events, |e| str_of(e, &["project"]).as_deref() == Some("billing"))
    );
    assert_eq!(
        run(vec![("outcome", "failure".into())]).await,
        expect(&events, |e| e["outcome"] == "failure")
    );
    assert_eq!(run(vec![("source", "api".into())]).await, expect(&events, |e| e["source"] == "api"));
    assert_eq!(
        run(vec![
            ("actor", "alice@acme.io".into()),
            ("action", "component.*".into()),
            ("outcome", "success".into()),
            ("project", "search".into())
        ])
        .await,
        expect(&events, |e| e["actor"]["id"] == "alice@acme.io"
            && e["action"].as_str().unwrap().starts_with("component.")
            && e["outcome"] == "success"
            && str_of(e, &["project"]).as_deref() == Some("search")),
        "filters on different fields AND together"
    );
    let from = events[99]["time"].as_str().unwrap().to_string();
    let to = events[20]["time"].as_str().unwrap().to_string();
    assert_eq!(
        run(vec![("from", from), ("to", to), ("source", "console".into())]).await,
        expect(&events[21..=99], |e| e["source"] == "console"),
        "from is inclusive, to exclusive"
    );
    assert_eq!(run(vec![("actor", "nobody".into())]).await, Vec::<String>::new());
}

#[tokio::test]
async fn free_text_search() {
    let s = TestServer::start().await;
    let events = seed(&s).await;
    let q = |text: &'static str| {
        let c = s.admin.clone();
        async move { ids(&c.query_all("default", &[("q", text), ("limit", "1000")]).await.unwrap()) }
    };
    let rid = events[42]["info"]["request_id"].as_str().unwrap().to_string();
    let exact = q(Box::leak(rid.clone().into_boxed_str())).await;
    assert_eq!(exact, ["evt-042"], "a request id in info finds its event");
    let prefix: &'static str = Box::leak(rid[..rid.len() - 2].to_string().into_boxed_str());
    assert!(q(prefix).await.contains(&"evt-042".to_string()), "a prefix of the last token matches");
    assert_eq!(
        q("zürich").await,
        expect(&events, |e| e["info"]["region"] == "Zürich"),
        "non-ASCII, case-insensitive"
    );
    assert_eq!(q("QUOTA").await, expect(&events, |e| e["outcome"] == "failure"), "reason is searchable");
    assert_eq!(
        q("bob deployed").await,
        expect(&events, |e| e["actor"]["id"] == "bob@acme.io" && e["action"] == "component.deployed"),
        "all words must match"
    );
    let combined =
        ids(&s.admin.query_all("default", &[("q", "east"), ("outcome", "failure")]).await.unwrap());
    assert_eq!(combined, expect(&events, |e| e["info"]["region"] == "east-1" && e["outcome"] == "failure"));
    // Words without letters or digits have nothing to match and are ignored.
    let punctuation = s.key.query_all("default", &[("q", "--- east")]).await.unwrap();
    assert_eq!(ids(&punctuation), ids(&s.key.query_all("default", &[("q", "east")]).await.unwrap()));
    let all = s.key.query("default", &[("q", "--- !!"), ("limit", "1000")]).await.unwrap();
    assert_eq!(all.events.len(), s.key.query("default", &[("limit", "1000")]).await.unwrap().events.len());
    let err = s.key.query("default", &[("q", &vec!["a"; 17].join(" "))]).await.unwrap_err();
    assert_eq!((err.status(), err.field()), (Some(400), Some("q")));
}

#[tokio::test]
async fn paging_through_10k_events_while_ingest_runs_never_skips_or_repeats() {
    let s = TestServer::start().await;
    let batch: Vec<Value> = (0..1000).map(|i| ev("loader", "component.updated", 1 + i % 600)).collect();
    for _ in 0..10 {
        s.key.ingest_batch("default", &batch).await.unwrap();
    }
    let key = s.key.clone();
    let writer = tokio::spawn(async move {
        for i in 0..40 {
            key.ingest_batch("default", &[ev("late", "component.updated", i % 300), ev("now", "a.b", 0)])
                .await
                .unwrap();
        }
    });
    let got = s.admin.query_all("default", &[("limit", "137")]).await.unwrap();
    writer.await.unwrap();
    let seqs: Vec<u64> = got.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    let unique: HashSet<u64> = seqs.iter().copied().collect();
    assert_eq!(unique.len(), seqs.len(), "an event was repeated");
    assert_eq!(
        seqs.iter().filter(|s| **s < 10_000).count(),
        10_000,
        "an event that existed before paging was skipped"
    );
    let keys: Vec<(String, u64)> =
        got.iter().map(|e| (e["time"].as_str().unwrap().to_string(), e["seq"].as_u64().unwrap())).collect();
    assert!(keys.windows(2).all(|w| w[0] > w[1]), "pages are newest first by (time, seq)");
}

#[tokio::test]
async fn windows_and_parameters_are_checked() {
    let s = TestServer::start().await;
    let check = |params: Vec<(&'static str, String)>, code: &'static str, field: &'static str| {
        let c = s.admin.clone();
        async move {
            let p: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let e = c.query("default", &p).await.unwrap_err();
            assert_eq!((e.status(), e.code(), e.field()), (Some(400), Some(code), Some(field)), "{params:?}");
        }
    };
    let now = trail_model::time::now();
    let day = trail_model::time::MICROS_PER_DAY;
    let t = trail_model::time::format_rfc3339;
    check(vec![("from", t(now - 93 * day)), ("to", t(now))], "window_too_large", "from").await;
    check(vec![("from", t(now - 400 * day)), ("to", t(now - 399 * day))], "outside_retention", "from").await;
    check(vec![("from", "yesterday".into())], "invalid_field", "from").await;
    check(vec![("from", t(now)), ("to", t(now - day))], "invalid_field", "from").await;
    check(vec![("limit", "0".into())], "invalid_field", "limit").await;
    check(vec![("limit", "100000".into())], "invalid_field", "limit").await;
    check(vec![("cursor", "AAAA".into())], "invalid_cursor", "cursor").await;
    check(vec![("bogus", "1".into())], "unknown_parameter", "bogus").await;
    check(vec![("outcome", "perhaps".into())], "invalid_field", "outcome").await;
    // An empty value is refused everywhere, naming the parameter.
    check(vec![("limit", String::new())], "empty_parameter", "limit").await;
    check(vec![("actor", String::new())], "empty_parameter", "actor").await;
    check(vec![("actor", "a".into()), ("q", String::new())], "empty_parameter", "q").await;
    let e = s.admin.histogram("default", &[("interval", "")]).await.unwrap_err();
    assert_eq!((e.code(), e.field()), (Some("empty_parameter"), Some("interval")));
    let e = s.key.get("/v1/orgs/default/proofs/inclusion?seq=&tree_size=1").await.unwrap_err();
    assert_eq!((e.code(), e.field()), (Some("empty_parameter"), Some("seq")));
    let e = s
        .admin
        .post(
            "/v1/orgs/default/exports",
            &json!({"name": "x", "format": "csv", "filters": {"actor": ["a", ""]}}),
        )
        .await
        .unwrap_err();
    assert_eq!((e.code(), e.field()), (Some("empty_parameter"), Some("filters.actor")));
    // A 92-day window is fine.
    s.admin.query("default", &[("from", &t(now - 92 * day)), ("to", &t(now))]).await.unwrap();
    let e = s.admin.histogram("default", &[("from", &t(now - 100 * day))]).await.unwrap_err();
    assert_eq!(e.code(), Some("window_too_large"));
}

#[tokio::test]
async fn histogram_counts_match_the_query() {
    let s = TestServer::start().await;
    let events = seed(&s).await;
    let h = s.admin.histogram("default", &[("interval", "1h"), ("outcome", "failure")]).await.unwrap();
    assert_eq!(h["interval_seconds"], 3600);
    let buckets = h["buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 24);
    let total: u64 = buckets.iter().map(|b| b["count"].as_u64().unwrap()).sum();
    assert_eq!(total as usize, events.iter().filter(|e| e["outcome"] == "failure").count());
    let auto = s.admin.histogram("default", &[]).await.unwrap();
    assert!(auto["buckets"].as_array().unwrap().len() <= 120);
    let e = s.admin.histogram("default", &[("interval", "soon")]).await.unwrap_err();
    assert_eq!(e.field(), Some("interval"));
}

#[tokio::test]
async fn one_event_by_id() {
    let s = TestServer::start().await;
    let events = seed(&s).await;
    let got = s.admin.event("default", "evt-008").await.unwrap();
    assert_eq!(got["seq"], 8);
    assert_eq!(got["target"]["name"], events[8]["target"]["name"]);
    assert_eq!(got["info"], events[8]["info"]);
    assert_eq!(got["action_label"], "Component deployment initiated");
    assert_eq!(got["leaf_hash"].as_str().unwrap().len(), 44, "base64 of 32 bytes");
    let e = s.admin.event("default", "evt-999").await.unwrap_err();
    assert_eq!(e.status(), Some(404));
}
