//! The id map through the store: duplicates are found wherever the id sits (the tail, a flushed run,
//! a merged run), an id pruned by retention may be used again, and the single `event_ids` table of
//! schema 3 becomes the map's first run in place.

use trail_model::time::parse_rfc3339;
use trail_store::conformance::{event, now};
use trail_store::{Appended, MonthSummary, Store};
use trail_store_sqlite::SqliteStore;

fn with_id(id: String, time: i64) -> trail_model::NewEvent {
    trail_model::NewEvent { id: Some(id), ..event("a", "x.y", time) }
}

fn sql(dir: &std::path::Path, query: &str) -> i64 {
    let c = rusqlite::Connection::open(dir.join(trail_store_sqlite::DB_FILE)).unwrap();
    c.query_row(query, [], |r| r.get(0)).unwrap()
}

/// 90,000 ids in batches of 2,000: the tail is flushed when it passes 16,384 (at 18,000, 36,000,
/// 54,000 and 72,000 events), and the four runs are merged (at the store's own sizes).
#[tokio::test]
async fn every_id_is_a_duplicate_wherever_it_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    store.create_org("acme", "Acme", now()).await.unwrap();
    store.create_org("globex", "Globex", now()).await.unwrap();
    let t = now() - 10;
    for batch in 0..45 {
        let events = (batch * 2_000..(batch + 1) * 2_000).map(|n| with_id(format!("e-{n}"), t)).collect();
        let r = store.append("acme", events, now()).await.unwrap();
        assert!(r.iter().all(|a| matches!(a, Appended::Created { .. })), "batch {batch}");
    }
    let merged: i64 = sql(dir.path(), "SELECT count(*) FROM id_runs WHERE state = 'live' AND rows >= 65536");
    assert_eq!(merged, 1, "the four flushed runs were merged into one");
    let dead: i64 = sql(dir.path(), "SELECT count(*) FROM id_runs WHERE state != 'live'");
    assert_eq!(dead, 0, "and emptied and dropped as ingest went on");
    // Ids from the merged run and from the tail.
    let probes = [0u64, 17_999, 18_000, 50_000, 71_999, 72_000, 89_999];
    let again: Vec<_> = probes.iter().map(|n| with_id(format!("e-{n}"), t)).collect();
    let r = store.append("acme", again, now()).await.unwrap();
    for (n, a) in probes.iter().zip(&r) {
        assert_eq!(*a, Appended::Duplicate { id: format!("e-{n}"), seq: *n }, "e-{n}");
        assert_eq!(store.event("acme", &format!("e-{n}")).await.unwrap().unwrap().event.seq, *n);
    }
    assert_eq!(store.tree_size("acme").await.unwrap(), 90_000, "nothing stored twice");
    // Ids are per org.
    let r = store.append("globex", vec![with_id("e-0".into(), t)], now()).await.unwrap();
    assert_eq!(r[0], Appended::Created { id: "e-0".into(), seq: 0 });
    assert!(store.event("acme", "e-90000").await.unwrap().is_none());
    // Reopened, the map is read from the database alone.
    store.close();
    drop(store);
    let store = SqliteStore::open(dir.path()).unwrap();
    let r = store.append("acme", vec![with_id("e-123".into(), t), with_id("e-90000".into(), t)], now()).await;
    assert_eq!(
        r.unwrap(),
        vec![
            Appended::Duplicate { id: "e-123".into(), seq: 123 },
            Appended::Created { id: "e-90000".into(), seq: 90_000 }
        ]
    );
}

/// Retention leaves the map's entries behind: the pruned id is neither found nor a duplicate, and it
/// may be used again.
#[tokio::test]
async fn an_id_pruned_by_retention_may_be_used_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let now = parse_rfc3339("2026-03-15T00:00:00Z").unwrap();
    let jan = parse_rfc3339("2026-01-10T00:00:00Z").unwrap();
    store.create_org("acme", "Acme", now).await.unwrap();
    store.append("acme", vec![with_id("old".into(), jan)], now).await.unwrap();
    store.prune_month("acme", 202601, MonthSummary { count: 1, last_seq: 0 }).await.unwrap();
    assert!(store.event("acme", "old").await.unwrap().is_none(), "a pruned event is gone, not corrupt");
    let r = store.append("acme", vec![with_id("old".into(), now - 10)], now).await.unwrap();
    assert_eq!(r[0], Appended::Created { id: "old".into(), seq: 1 });
    assert_eq!(store.event("acme", "old").await.unwrap().unwrap().event.seq, 1);
}

/// Schema 3 kept every id in one B-tree, `event_ids`: opened by this release it becomes the first
/// run (with a filter built from its keys), and its ids stay duplicates.
#[tokio::test]
async fn a_version_3_directory_keeps_its_ids() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    store.create_org("acme", "Acme", now()).await.unwrap();
    let t = now() - 10;
    store.append("acme", (0..300).map(|n| with_id(format!("e-{n}"), t)).collect(), now()).await.unwrap();
    store.close();
    drop(store);
    // What version 3 had: the ids in `event_ids`, no tail, runs or generation.
    let c = rusqlite::Connection::open(dir.path().join(trail_store_sqlite::DB_FILE)).unwrap();
    crate::durability::old_id_table(&c);
    c.execute("UPDATE meta SET value = 3 WHERE key = 'schema_version'", []).unwrap();
    drop(c);

    let store = SqliteStore::open(dir.path()).unwrap();
    let r = store.append("acme", vec![with_id("e-7".into(), t), with_id("e-300".into(), t)], now()).await;
    assert_eq!(
        r.unwrap(),
        vec![
            Appended::Duplicate { id: "e-7".into(), seq: 7 },
            Appended::Created { id: "e-300".into(), seq: 300 }
        ]
    );
    assert_eq!(store.event("acme", "e-299").await.unwrap().unwrap().event.seq, 299);
    store.close();
    drop(store);
    assert_eq!(sql(dir.path(), "SELECT count(*) FROM sqlite_master WHERE name = 'event_ids'"), 0);
    assert_eq!(
        sql(dir.path(), "SELECT rows FROM id_runs WHERE state = 'live'"),
        300,
        "one run, every old id"
    );
    assert_eq!(
        sql(dir.path(), "SELECT value FROM meta WHERE key = 'schema_version'"),
        trail_store_sqlite::schema::SCHEMA_VERSION
    );
    assert_eq!(
        sql(dir.path(), "SELECT count(*) FROM destinations"),
        0,
        "version 6 streams: no destinations yet"
    );
}

/// Version 4 marked a restore by `"archive": true` in its filters; version 5 names the kind, and the
/// migration reads the old mark (and settings gain their new columns with defaults).
#[tokio::test]
async fn a_version_4_directory_names_its_restores() {
    use trail_store::{Export, ExportFormat, ExportKind};
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    store.create_org("acme", "Acme", now()).await.unwrap();
    let old = |id: &str, filters: serde_json::Value| {
        Export::pending(
            id.into(),
            "acme",
            id,
            ExportFormat::Json,
            ExportKind::Query,
            filters,
            "u".into(),
            now(),
        )
    };
    store.create_export(&old("query", serde_json::json!({"actor": "a"}))).await.unwrap();
    let marked =
        serde_json::json!({"archive": true, "from": "2025-01-01T00:00:00Z", "to": "2025-02-01T00:00:00Z"});
    store.create_export(&old("restore", marked)).await.unwrap();
    let settings = trail_store::OrgSettings {
        hot_days: 90,
        archive_days: 365,
        legal_hold: false,
        legal_hold_reason: None,
        read_audit: false,
        default_range: Some("7d".into()),
        updated_at: now(),
        updated_by: None,
    };
    store.set_org_settings("acme", &settings).await.unwrap();
    store.close();
    drop(store);
    // What version 4 had: no kind, no read_audit, no default_range.
    let c = rusqlite::Connection::open(dir.path().join(trail_store_sqlite::DB_FILE)).unwrap();
    c.execute_batch(
        "ALTER TABLE exports DROP COLUMN kind;
         ALTER TABLE org_settings DROP COLUMN read_audit;
         ALTER TABLE org_settings DROP COLUMN default_range;
         UPDATE meta SET value = 4 WHERE key = 'schema_version';",
    )
    .unwrap();
    drop(c);

    let store = SqliteStore::open(dir.path()).unwrap();
    assert_eq!(store.export("acme", "restore").await.unwrap().unwrap().kind, ExportKind::Restore);
    assert_eq!(store.export("acme", "query").await.unwrap().unwrap().kind, ExportKind::Query);
    let migrated = store.org_settings("acme").await.unwrap().unwrap();
    assert_eq!(
        (migrated.hot_days, migrated.read_audit, migrated.default_range),
        (90, true, None),
        "kept settings, reads audited, the default opening range"
    );
    store.close();
    drop(store);
    assert_eq!(
        sql(dir.path(), "SELECT value FROM meta WHERE key = 'schema_version'"),
        trail_store_sqlite::schema::SCHEMA_VERSION
    );
    assert_eq!(
        sql(dir.path(), "SELECT count(*) FROM destinations"),
        0,
        "version 6 streams: no destinations yet"
    );
}

/// The id map's key, computed here independently of the store (64-bit FNV-1a over the org's
/// big-endian bytes and the id, then SplitMix64's finaliser; pinned in `ids.rs` too).
fn key_hash(org: i64, id: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in org.to_be_bytes().iter().chain(id.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (h ^ (h >> 31)) as i64
}

/// Two ids of an org may share a hash, the map's key: each entry's event says which id it holds. An
/// entry planted for `c` that names `b`'s event (a collision) makes `c` neither found nor a duplicate
/// of `b`; one planted for `b`, newer than `b`'s own and naming `a`'s event, does not hide `b`.
#[tokio::test]
async fn ids_that_share_a_hash_are_told_apart_by_their_events() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    store.create_org("acme", "Acme", now()).await.unwrap();
    let t = now() - 10;
    store.append("acme", vec![with_id("a".into(), t), with_id("b".into(), t)], now()).await.unwrap();
    store.close();
    drop(store);
    let month = trail_model::time::month_of(t);
    let c = rusqlite::Connection::open(dir.path().join(trail_store_sqlite::DB_FILE)).unwrap();
    // Org 1 is acme (the store's first org): `c` collides with `b` (seq 1); `b` with `a` (seq 0), in
    // an entry ordered before `b`'s own.
    c.execute("INSERT INTO ids_tail VALUES (1, ?1, 1, ?2)", rusqlite::params![key_hash(1, "c"), month])
        .unwrap();
    c.execute("DELETE FROM ids_tail WHERE org_id = 1 AND h = ?1", [key_hash(1, "b")]).unwrap();
    c.execute("INSERT INTO ids_tail VALUES (1, ?1, 0, ?2)", rusqlite::params![key_hash(1, "b"), month])
        .unwrap();
    c.execute("INSERT INTO ids_tail VALUES (1, ?1, 1, ?2)", rusqlite::params![key_hash(1, "b"), month])
        .unwrap();
    drop(c);

    let store = SqliteStore::open(dir.path()).unwrap();
    assert!(store.event("acme", "c").await.unwrap().is_none(), "b's event is not c's");
    assert_eq!(store.event("acme", "b").await.unwrap().unwrap().event.seq, 1);
    let r = store.append("acme", vec![with_id("b".into(), t), with_id("c".into(), t)], now()).await.unwrap();
    assert_eq!(
        r,
        vec![Appended::Duplicate { id: "b".into(), seq: 1 }, Appended::Created { id: "c".into(), seq: 2 }]
    );
    assert_eq!(store.event("acme", "c").await.unwrap().unwrap().event.seq, 2);
    assert_eq!(store.event("acme", "a").await.unwrap().unwrap().event.seq, 0);
}

/// Schema 13 keyed the map by the ids themselves: opened by this release, the tail and the runs are
/// keyed by hash in place (their filters kept), every id stays a duplicate wherever it sits, and
/// ingest goes on to flush and merge the rekeyed runs with new ones.
#[tokio::test]
async fn a_version_13_directory_rekeys_its_ids() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    store.create_org("acme", "Acme", now()).await.unwrap();
    store.create_org("globex", "Globex", now()).await.unwrap();
    let t = now() - 10;
    for batch in 0..18 {
        let events = (batch * 2_000..(batch + 1) * 2_000).map(|n| with_id(format!("e-{n}"), t)).collect();
        store.append("acme", events, now()).await.unwrap();
    }
    store.append("globex", vec![with_id("e-0".into(), t)], now()).await.unwrap();
    store.close();
    drop(store);
    let c = rusqlite::Connection::open(dir.path().join(trail_store_sqlite::DB_FILE)).unwrap();
    let filters = |c: &rusqlite::Connection| -> Vec<(i64, Vec<u8>)> {
        c.prepare("SELECT run, filter FROM id_runs ORDER BY run")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let runs = filters(&c);
    assert_eq!(runs.len(), 2, "two runs flushed");
    crate::durability::ids_keyed_by_id(&c);
    c.execute("UPDATE meta SET value = 13 WHERE key = 'schema_version'", []).unwrap();
    drop(c);

    let store = SqliteStore::open(dir.path()).unwrap();
    let probes = [0u64, 16_383, 18_000, 34_000, 35_999];
    let again: Vec<_> =
        probes.iter().map(|n| with_id(format!("e-{n}"), t)).chain([with_id("new".into(), t)]).collect();
    let r = store.append("acme", again, now()).await.unwrap();
    for (n, a) in probes.iter().zip(&r) {
        assert_eq!(*a, Appended::Duplicate { id: format!("e-{n}"), seq: *n }, "e-{n}");
        assert_eq!(store.event("acme", &format!("e-{n}")).await.unwrap().unwrap().event.seq, *n);
    }
    assert_eq!(r[probes.len()], Appended::Created { id: "new".into(), seq: 36_000 });
    assert_eq!(store.event("globex", "e-0").await.unwrap().unwrap().event.seq, 0);
    assert!(store.event("globex", "e-1").await.unwrap().is_none());
    store.close();
    drop(store);
    let c = rusqlite::Connection::open(dir.path().join(trail_store_sqlite::DB_FILE)).unwrap();
    assert_eq!(filters(&c), runs, "the same runs and filters");
    for table in ["ids_tail".to_string(), format!("ids_{}", runs[0].0)] {
        let keyed: i64 = c
            .query_row(
                &format!("SELECT count(*) FROM pragma_table_info('{table}') WHERE name = 'h'"),
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(keyed, 1, "{table} is keyed by hash");
    }
    drop(c);

    // Two more flushes make four runs of one tier, merged as ingest goes on.
    let store = SqliteStore::open(dir.path()).unwrap();
    for batch in 18..45 {
        let events = (batch * 2_000..(batch + 1) * 2_000).map(|n| with_id(format!("e-{n}"), t)).collect();
        store.append("acme", events, now()).await.unwrap();
    }
    let merged = sql(dir.path(), "SELECT count(*) FROM id_runs WHERE state = 'live' AND rows >= 65536");
    assert_eq!(merged, 1, "the rekeyed runs were merged with the new ones");
    let probes = [0u64, 16_383, 35_999, 36_000, 50_000, 89_999];
    let again: Vec<_> = probes.iter().map(|n| with_id(format!("e-{n}"), t)).collect();
    let r = store.append("acme", again, now()).await.unwrap();
    for (n, a) in probes.iter().zip(&r) {
        // e-36000 was "new"'s seq: "e-36000" itself came one later.
        let seq = if *n >= 36_000 { n + 1 } else { *n };
        assert_eq!(*a, Appended::Duplicate { id: format!("e-{n}"), seq }, "e-{n}");
    }
}
