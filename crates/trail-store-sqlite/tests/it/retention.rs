//! What the conformance suite cannot see from outside: pruning an org's month that another org still
//! uses removes the pruned events' full-text entries (not only their rows), and pruning the last org of a
//! month drops the month's tables.

use trail_model::time::parse_rfc3339;
use trail_model::{Actor, ActorType, NewEvent, Outcome, Target};
use trail_store::{MonthSummary, Store};
use trail_store_sqlite::SqliteStore;

fn event(reason: &str, time: i64) -> NewEvent {
    NewEvent {
        id: None,
        time: Some(time),
        actor: Actor { id: "a".into(), kind: ActorType::User, name: None, ip: None, user_agent: None },
        action: "x.y".into(),
        target: Target { kind: "t".into(), id: None, name: None },
        project: None,
        outcome: Outcome::Success,
        reason: Some(reason.into()),
        source: None,
        info: None,
    }
}

fn fts_hits(dir: &std::path::Path, term: &str) -> i64 {
    let c = rusqlite::Connection::open(dir.join(trail_store_sqlite::DB_FILE)).unwrap();
    c.query_row("SELECT count(*) FROM fts_202601 WHERE fts_202601 MATCH ?1", [term], |r| r.get(0)).unwrap()
}

fn tables(dir: &std::path::Path) -> i64 {
    let c = rusqlite::Connection::open(dir.join(trail_store_sqlite::DB_FILE)).unwrap();
    c.query_row("SELECT count(*) FROM sqlite_master WHERE name IN ('ev_202601', 'fts_202601')", [], |r| {
        r.get(0)
    })
    .unwrap()
}

#[tokio::test]
async fn pruning_removes_full_text_entries_and_then_the_month() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let now = parse_rfc3339("2026-03-15T00:00:00Z").unwrap();
    let jan = parse_rfc3339("2026-01-10T00:00:00Z").unwrap();
    store.create_org("acme", "acme", now).await.unwrap();
    store.create_org("other", "other", now).await.unwrap();
    store.append("acme", (0..5).map(|i| event("acmeonly", jan + i)).collect(), now).await.unwrap();
    store.append("other", vec![event("otheronly", jan)], now).await.unwrap();
    // The index is written after the acknowledgement; closing the store completes it.
    store.close();
    drop(store);
    let store = SqliteStore::open(dir.path()).unwrap();
    assert_eq!((fts_hits(dir.path(), "acmeonly"), fts_hits(dir.path(), "otheronly")), (5, 1));

    store.prune_month("acme", 202601, MonthSummary { count: 5, last_seq: 4 }).await.unwrap();
    assert_eq!(fts_hits(dir.path(), "acmeonly"), 0, "the pruned org's tokens left the shared index");
    assert_eq!(fts_hits(dir.path(), "otheronly"), 1, "the other org's stay");
    assert_eq!(tables(dir.path()), 2, "the month is still in use");

    store.prune_month("other", 202601, MonthSummary { count: 1, last_seq: 0 }).await.unwrap();
    assert_eq!(tables(dir.path()), 0, "the last org gone: the month's tables are dropped");
}
