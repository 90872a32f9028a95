//! Who read the log is in the log: people's searches and event views as their own events, API keys'
//! reads as one summary per key and hour, and an org setting that turns it off (itself recorded).

use serde_json::{Value, json};
use trail_store::Store;

use crate::{TestServer, ev};

/// Trail's own records of reads, oldest first, read with the API key (whose reads are summarised).
async fn reads(s: &TestServer) -> Vec<Value> {
    let mut all = s.key.query_all("default", &[("action", "log.*"), ("limit", "1000")]).await.unwrap();
    all.reverse();
    all
}

#[tokio::test]
async fn searches_and_views_by_people_are_recorded_once_each() {
    let s = TestServer::start().await;
    let events: Vec<Value> = (0..5).map(|i| ev("alice", "component.deployed", i)).collect();
    let r = s.key.ingest_batch("default", &events).await.unwrap();
    // A search of two pages is one search; the page after the cursor is not recorded again.
    let first =
        s.admin.query("default", &[("actor", "alice"), ("actor", "bob"), ("limit", "3")]).await.unwrap();
    assert_eq!(first.events.len(), 3, "the search is not among its own results");
    let cursor = first.next_cursor.unwrap();
    let second = s
        .admin
        .query("default", &[("actor", "alice"), ("actor", "bob"), ("limit", "3"), ("cursor", &cursor)])
        .await
        .unwrap();
    assert_eq!(second.events.len(), 2);
    let id = r.results[2].id.clone().unwrap();
    s.admin.event("default", &id).await.unwrap();
    // Opened again soon (as the integrity badge does while it waits for a checkpoint): once.
    s.admin.event("default", &id).await.unwrap();
    // The key's reads add nothing now.
    s.key.query("default", &[]).await.unwrap();
    s.key.event("default", &id).await.unwrap();

    let got = reads(&s).await;
    let actions: Vec<&str> = got.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["log.searched", "log.event_viewed"]);
    let search = &got[0];
    assert_eq!(
        (search["actor"]["id"].as_str(), search["source"].as_str()),
        (Some("admin@localhost"), Some("trail"))
    );
    assert_eq!(search["info"]["filters"]["actor"], json!(["alice", "bob"]));
    assert!(search["info"]["filters"]["from"].is_string() && search["info"]["filters"]["to"].is_string());
    assert_eq!(search["info"]["returned"], 3);
    assert_eq!(search["self_audit"], true);
    assert_eq!(
        (got[1]["target"]["type"].as_str(), got[1]["target"]["id"].as_str()),
        (Some("event"), Some(id.as_str()))
    );
}

#[tokio::test]
async fn an_api_keys_reads_are_one_summary_per_hour() {
    let s = TestServer::start().await;
    let events: Vec<Value> = (0..4).map(|i| ev("alice", "component.deployed", i)).collect();
    let r = s.key.ingest_batch("default", &events).await.unwrap();
    for _ in 0..3 {
        s.key.query("default", &[("limit", "2")]).await.unwrap();
    }
    s.key.event("default", r.results[0].id.as_deref().unwrap()).await.unwrap();
    s.key.histogram("default", &[]).await.unwrap();
    assert!(reads(&s).await.is_empty(), "nothing until the hour is over");
    // Stopping writes the open hour (a restart mid-hour writes it in two parts).
    let store = s.store.clone();
    let dir = s.stop().await;
    let page = store
        .query(
            "default",
            &trail_model::query::parse_query(
                &[("action".into(), "log.read_by_key".into())],
                trail_model::query::QueryContext { now: trail_model::time::now() + 1, oldest: 0 },
            )
            .unwrap(),
        )
        .await
        .unwrap();
    drop(dir);
    assert_eq!(page.records.len(), 1);
    let e = &page.records[0].event;
    assert_eq!((e.actor.id.starts_with("api-key:"), e.target.kind.as_str()), (true, "api_key"));
    let info = e.info.as_ref().unwrap();
    // Three pages of two, one event, one histogram, and the check above (which found nothing).
    assert_eq!((info["requests"].as_u64(), info["events"].as_u64()), (Some(6), Some(7)), "{info:?}");
    assert!(info["hour"].as_str().unwrap().ends_with(":00:00.000Z"), "{info:?}");
}

#[tokio::test]
async fn read_auditing_can_be_turned_off_and_that_is_recorded() {
    let s = TestServer::start().await;
    let off = s.admin.patch("/v1/orgs/default/settings", &json!({"read_audit": false})).await.unwrap();
    assert_eq!(off["read_audit"], false);
    s.admin.query("default", &[]).await.unwrap();
    let got = reads(&s).await;
    let actions: Vec<&str> = got.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["log.read_audit_disabled"], "the change is recorded, the search after it is not");
    assert_eq!(got[0]["actor"]["id"], "admin@localhost");
    let on = s.admin.patch("/v1/orgs/default/settings", &json!({"read_audit": true})).await.unwrap();
    assert_eq!(on["read_audit"], true);
    s.admin.query("default", &[]).await.unwrap();
    let actions: Vec<String> =
        reads(&s).await.iter().map(|e| e["action"].as_str().unwrap().to_string()).collect();
    assert_eq!(actions, ["log.read_audit_disabled", "log.read_audit_enabled", "log.searched"]);
}
