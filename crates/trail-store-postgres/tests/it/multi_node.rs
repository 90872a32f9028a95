//! What only a shared database has: several stores ("nodes") on one database appending to one org at
//! once, starting at once, racing for checkpoints, exports, administrators and partitions.

use std::collections::HashSet;
use std::sync::Arc;

use trail_model::query::{Filter, Query};
use trail_model::text::Search;
use trail_model::time::{MICROS_PER_DAY, parse_rfc3339};
use trail_store::conformance::{event, join, now};
use trail_store::{
    Appended, Export, ExportStatus, MonthSummary, Record, Store, StoreError, StoredCheckpoint,
};
use trail_store_postgres::PgStore;

use trail_store_postgres::testing::TestDb;

/// Every event of an org in seq order (the window of the generated events).
async fn all_records(store: &PgStore, org: &str) -> Vec<Record> {
    let filter = Filter { from: now() - 92 * MICROS_PER_DAY, to: now() + 1, ..Filter::default() };
    let mut q = Query { filter, limit: 1000, cursor: None };
    let mut out = Vec::new();
    loop {
        let page = store.query(org, &q).await.unwrap();
        out.extend(page.records);
        match page.next {
            Some(c) => q.cursor = Some(c),
            None => break,
        }
    }
    out.sort_by_key(|r| r.event.seq);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_appending_to_one_org_keep_one_gapless_log_and_tree() {
    let Some(db) = TestDb::create().await else { return };
    let nodes = [Arc::new(db.store().await), Arc::new(db.store().await), Arc::new(db.store().await)];
    nodes[0].create_org("acme", "Acme", now()).await.unwrap();
    nodes[1].create_org("globex", "Globex", now()).await.unwrap();
    let mut tasks = Vec::new();
    for t in 0..9usize {
        let node = nodes[t % 3].clone();
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..20usize {
                // Times across three months, so the nodes also race to create partitions.
                let time = now() - ((t * 20 + i) as i64 % 70) * MICROS_PER_DAY;
                let batch = vec![event("a", "x.y", time); 1 + (t + i) % 5];
                let org = if i % 4 == 3 { "globex" } else { "acme" };
                let r = node.append(org, batch, now()).await.unwrap();
                if org == "acme" {
                    seqs.extend(r.iter().map(Appended::seq));
                }
            }
            seqs
        }));
    }
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.extend(t.await.unwrap());
    }
    seqs.sort_unstable();
    let n = seqs.len() as u64;
    assert_eq!(seqs, (0..n).collect::<Vec<_>>(), "every seq exactly once");

    let records = all_records(&nodes[2], "acme").await;
    assert_eq!(records.iter().map(|r| r.event.seq).collect::<Vec<_>>(), (0..n).collect::<Vec<_>>());
    let leaves: Vec<_> = records.iter().map(Record::leaf_hash).collect();
    for node in &nodes {
        assert_eq!(node.tree_size("acme").await.unwrap(), n);
        let root = node.root("acme", n).await.unwrap();
        assert_eq!(root, trail_merkle::root(&leaves), "every node computes the same root");
        for old in [1, n / 3, n / 2, n - 1] {
            let proof = node.consistency_proof("acme", old, n).await.unwrap();
            let old_root = trail_merkle::root(&leaves[..old as usize]);
            trail_merkle::verify_consistency(old, n, &old_root, &root, &proof).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_at_once_migrate_once() {
    let Some(db) = TestDb::create().await else { return };
    let mut opens = Vec::new();
    for _ in 0..4 {
        let config = db.config.clone();
        opens.push(tokio::spawn(async move { PgStore::from_config(config, 2).await }));
    }
    for o in opens {
        o.await.unwrap().unwrap();
    }
    let client = db.client().await;
    let rows = client.query("SELECT version FROM schema_migrations", &[]).await.unwrap();
    let versions: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    let known: Vec<i32> = trail_store_postgres::schema::MIGRATIONS.iter().map(|m| m.0).collect();
    assert_eq!(versions, known);

    // A database migrated by a newer trail is refused, not guessed at.
    client
        .execute("INSERT INTO schema_migrations(version, description) VALUES (9999, 'future')", &[])
        .await
        .unwrap();
    assert!(matches!(PgStore::from_config(db.config.clone(), 2).await, Err(StoreError::Corrupt(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_never_contradict_across_nodes() {
    let Some(db) = TestDb::create().await else { return };
    let (a, b) = (db.store().await, db.store().await);
    a.create_org("acme", "Acme", now()).await.unwrap();
    b.append("acme", vec![event("a", "x.y", now() - 10); 3], now()).await.unwrap();
    let root = a.root("acme", 3).await.unwrap();
    let cp = StoredCheckpoint { size: 3, root, note: "n3".into(), created_at: now() };
    a.add_checkpoint("acme", &cp).await.unwrap();
    b.add_checkpoint("acme", &cp).await.unwrap();
    let forged = StoredCheckpoint { root: [7; 32], ..cp.clone() };
    assert!(matches!(b.add_checkpoint("acme", &forged).await, Err(StoreError::Conflict(_))));
    assert_eq!(b.checkpoints("acme").await.unwrap(), vec![cp]);
}

fn pending(id: &str, at: i64) -> Export {
    let (csv, query) = (trail_store::ExportFormat::Csv, trail_store::ExportKind::Query);
    Export::pending(id.into(), "acme", id, csv, query, serde_json::json!({}), "u".into(), at)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_never_claim_one_export() {
    let Some(db) = TestDb::create().await else { return };
    let (a, b) = (Arc::new(db.store().await), Arc::new(db.store().await));
    a.create_org("acme", "Acme", now()).await.unwrap();
    for i in 0..40 {
        a.create_export(&pending(&format!("e{i:02}"), now() + i)).await.unwrap();
    }
    let mut workers = Vec::new();
    for node in [a.clone(), b.clone(), a.clone(), b.clone()] {
        workers.push(tokio::spawn(async move {
            let mut claimed = Vec::new();
            while let Some(e) = node.claim_export(now(), usize::MAX).await.unwrap() {
                assert_eq!(e.status, ExportStatus::Running);
                claimed.push(e.id);
            }
            claimed
        }));
    }
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.unwrap());
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!((all.len(), unique.len()), (40, 40), "each export claimed exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_removals_keep_an_administrator() {
    let Some(db) = TestDb::create().await else { return };
    let (a, b) = (Arc::new(db.store().await), Arc::new(db.store().await));
    for round in 0..10 {
        let org = format!("org-{round}");
        a.create_org(&org, &org, now()).await.unwrap();
        let u1 = a.create_user(&format!("u1-{round}@x.io"), "h", false, now()).await.unwrap();
        let u2 = a.create_user(&format!("u2-{round}@x.io"), "h", false, now()).await.unwrap();
        a.add_org_admin(&org, &u1.id).await.unwrap();
        join(&*a, &org, "administrators", &u2.id).await;
        let (o1, o2) = (org.clone(), org.clone());
        let (na, nb) = (a.clone(), b.clone());
        let r1 = tokio::spawn(async move { na.remove_org_user(&o1, &u1.id).await });
        let r2 = tokio::spawn(async move { nb.set_group_member(&o2, "administrators", &u2.id, false).await });
        let results = [r1.await.unwrap(), r2.await.unwrap()];
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "round {round}: {results:?}");
        assert!(results.iter().any(|r| matches!(r, Err(StoreError::Conflict(_)))));
        assert_eq!(a.groups(&org).await.unwrap()[0].members.len(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_dropped_by_another_node_is_recreated() {
    let Some(db) = TestDb::create().await else { return };
    let (a, b) = (db.store().await, db.store().await);
    a.create_org("acme", "Acme", now()).await.unwrap();
    let jan = parse_rfc3339("2026-01-20T10:00:00Z").unwrap();
    a.append("acme", vec![event("a", "x.y", jan)], now()).await.unwrap();
    b.prune_month("acme", 202601, MonthSummary { count: 1, last_seq: 0 }).await.unwrap();
    assert!(b.event_months("acme").await.unwrap().is_empty(), "the month was dropped");
    // `a` still believes January's partition exists.
    let r = a.append("acme", vec![event("a", "x.y", jan + 1)], now()).await.unwrap();
    assert_eq!(r[0].seq(), 1);
    assert_eq!(a.event_months("acme").await.unwrap(), [202601]);
    let root = b.root("acme", 2).await.unwrap();
    let leaves = [
        b.pruned_leaves("acme", 0, 1).await.unwrap()[0].1,
        b.event("acme", r[0].id()).await.unwrap().unwrap().leaf_hash(),
    ];
    assert_eq!(root, trail_merkle::root(&leaves));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn very_long_tokens_are_stored_and_found() {
    let Some(db) = TestDb::create().await else { return };
    let store = db.store().await;
    store.create_org("acme", "Acme", now()).await.unwrap();
    // One 60,000-character token (hex, incompressible): larger than any index entry could be.
    let token: String = (0..7500u32).map(|i| format!("{:08x}", i.wrapping_mul(2_654_435_761))).collect();
    let mut e = event("a", "x.y", now() - 10);
    e.info = Some(serde_json::json!({ "blob": token }).as_object().unwrap().clone());
    store.append("acme", vec![e, event("b", "x.y", now() - 5)], now()).await.unwrap();
    let window = Filter { from: now() - MICROS_PER_DAY, to: now(), ..Filter::default() };
    for (q, hits) in [(&token[..40], 1), (&token[..256], 1), (&token[1..40], 0)] {
        let filter = Filter { q: Some(Search::parse(q).unwrap()), ..window.clone() };
        let page = store.query("acme", &Query { filter, limit: 10, cursor: None }).await.unwrap();
        assert_eq!(page.records.len(), hits, "q of {} characters", q.len());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_database_is_unavailable_not_an_internal_error() {
    let Some(db) = TestDb::create().await else { return };
    let store = db.store().await;
    store.create_org("acme", "Acme", now()).await.unwrap();
    store.close();
    let client = db.client().await;
    client
        .batch_execute(&format!("ALTER DATABASE {} SET default_transaction_read_only = on", db.name))
        .await
        .unwrap();
    match PgStore::from_config(db.config.clone(), 2).await {
        Err(StoreError::Unavailable(m)) => assert!(m.contains("read-only"), "{m}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_starting_node_requeues_only_exports_of_nodes_that_are_gone() {
    let Some(db) = TestDb::create().await else { return };
    let (a, b) = (db.store().await, db.store().await);
    a.create_org("acme", "Acme", now()).await.unwrap();
    a.create_export(&pending("e1", now())).await.unwrap();
    assert_eq!(a.claim_export(now(), usize::MAX).await.unwrap().map(|e| e.id), Some("e1".to_string()));
    assert_eq!(b.requeue_running_exports().await.unwrap(), 0, "a is alive and running e1");
    a.close();
    // a's liveness lock goes with its connection, asynchronously.
    let mut requeued = 0;
    for _ in 0..100 {
        requeued = b.requeue_running_exports().await.unwrap();
        if requeued > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(requeued, 1, "a is gone: its running export goes back to pending");
    assert_eq!(b.claim_export(now(), usize::MAX).await.unwrap().map(|e| e.id), Some("e1".to_string()));
}

/// A database at schema version 1 (whose ingest let any key write `source: "trail"`) is migrated in
/// place: each org's events so far count as possibly sent, the rest are told apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_database_records_where_the_reserved_source_begins() {
    let Some(db) = TestDb::create().await else { return };
    let store = db.store().await;
    store.create_org("acme", "Acme", now()).await.unwrap();
    store.append("acme", vec![event("a", "x.y", now() - 10); 3], now()).await.unwrap();
    drop(store);
    let client = db.client().await;
    client
        .batch_execute(
            "ALTER TABLE log_heads DROP COLUMN self_audit_from; DROP TABLE minute_counts;
             DELETE FROM schema_migrations WHERE version = 2;",
        )
        .await
        .unwrap();
    let store = db.store().await;
    assert_eq!(store.self_audit_from("acme").await.unwrap(), 3);
    assert_eq!(store.tree_size("acme").await.unwrap(), 3, "nothing was lost");
    let day = trail_model::time::MICROS_PER_DAY;
    let whole = trail_model::query::Filter { from: now() - day, to: now(), ..Default::default() };
    let buckets = store.histogram("acme", &whole, 3_600_000_000).await.unwrap();
    assert_eq!(
        buckets.iter().map(|b| b.count).sum::<u64>(),
        3,
        "per-minute counts were built from the events"
    );
    store.create_org("globex", "Globex", now()).await.unwrap();
    assert_eq!(store.self_audit_from("globex").await.unwrap(), 0);
}

/// A database at schema version 7 (no counts per field value) is migrated in place: the dense slots
/// and their counts are built from the stored events exactly as appends had kept them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_7_database_gets_its_counts_per_field() {
    let Some(db) = TestDb::create().await else { return };
    let store = db.store().await;
    let start = trail_store::conformance::append_dense_then_sparse(&store, "acme").await;
    drop(store);
    let client = db.client().await;
    let tables = || async {
        let dense: Vec<(i64, i64)> = client
            .query("SELECT org, slot FROM dense_slots ORDER BY 1, 2", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let counts: Vec<(i64, i16, String, i64, i64, i64)> = client
            .query("SELECT * FROM field_slots ORDER BY 1, 2, 3, 4", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
            .collect();
        (dense, counts)
    };
    let kept = tables().await;
    assert_eq!(kept.0.len(), 4, "the 40 minutes' four slots are dense, no other: {:?}", kept.0);
    client
        .batch_execute("DROP TABLE dense_slots; DROP TABLE field_slots; DELETE FROM schema_migrations WHERE version = 8;")
        .await
        .unwrap();
    let store = db.store().await;
    assert_eq!(tables().await, kept, "the migration counts what appends counted");
    trail_store::conformance::assert_dense_then_sparse_histograms(&store, "acme", start).await;
}
