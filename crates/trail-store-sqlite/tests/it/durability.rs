//! Reopening the database keeps every acknowledged event and the log heads.

use trail_store::Store;
use trail_store::conformance::{event, now};
use trail_store_sqlite::SqliteStore;

#[tokio::test]
async fn reopen_keeps_everything_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    store.create_org("acme", "Acme", now()).await.unwrap();
    let r = store
        .append("acme", vec![event("a", "x.y", now() - 10); 100], now())
        .await
        .unwrap();
    let last = r.last().unwrap().id().to_string();
    store.close();
    drop(store);
    let store = SqliteStore::open(dir.path()).unwrap();
    assert_eq!(store.tree_size("acme").await.unwrap(), 100);
    assert_eq!(store.event("acme", &last).await.unwrap().unwrap().event.seq, 99);
    let r = store
        .append("acme", vec![event("a", "x.y", now() - 10)], now())
        .await
        .unwrap();
    assert_eq!(r[0].seq(), 100, "seq continues without a gap after reopening");
}
