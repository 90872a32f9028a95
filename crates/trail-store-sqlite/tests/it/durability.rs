//! Reopening the database keeps every acknowledged event and the log heads.

use trail_store::Store;
use trail_store::conformance::{event, now};
use trail_store_sqlite::SqliteStore;

fn varint(bytes: &[u8]) -> (u64, &[u8]) {
    let end = bytes.iter().position(|b| b & 0x80 == 0).unwrap();
    let n = bytes[..=end].iter().rev().fold(0u64, |n, b| (n << 7) | u64::from(b & 0x7f));
    (n, &bytes[end + 1..])
}

/// Every stored event's `(org_id, id, seq, month)`, read from the rows (packed bodies expanded: 0xFE,
/// the dictionary's id and the canonical length as varints, an LZ4 block against `body_dicts.dict`).
pub fn stored_ids(c: &rusqlite::Connection) -> Vec<(i64, String, i64, i64)> {
    let months: Vec<i64> = c
        .prepare("SELECT month FROM partitions")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut out = Vec::new();
    for month in months {
        let rows: Vec<(i64, Vec<u8>)> = c
            .prepare(&format!("SELECT k, body FROM ev_{month}"))
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        for (k, stored) in rows {
            let bytes = if stored[0] == 0xFE {
                let (id, rest) = varint(&stored[1..]);
                let (len, block) = varint(rest);
                let dict: Vec<u8> = c
                    .query_row("SELECT dict FROM body_dicts WHERE id = ?1", [id as i64], |r| r.get(0))
                    .unwrap();
                lz4_flex::block::decompress_with_dict(block, len as usize, &dict).unwrap()
            } else {
                stored
            };
            let id = trail_model::canonical::id_of(&bytes).unwrap().to_string();
            out.push((k >> 40, id, k & ((1 << 40) - 1), month));
        }
    }
    out
}

/// Turns this release's id map back into schema 3's single `event_ids` table (the simulated old
/// directories below are made by this release, with few enough events that every id is in the tail).
pub fn old_id_table(c: &rusqlite::Connection) {
    c.execute_batch(
        "CREATE TABLE event_ids(
             org_id INTEGER NOT NULL, id TEXT NOT NULL, seq INTEGER NOT NULL, month INTEGER NOT NULL,
             PRIMARY KEY(org_id, id)) STRICT, WITHOUT ROWID;",
    )
    .unwrap();
    for (org, id, seq, month) in stored_ids(c) {
        c.execute("INSERT INTO event_ids VALUES (?1, ?2, ?3, ?4)", rusqlite::params![org, id, seq, month])
            .unwrap();
    }
    c.execute_batch(
        "DROP TABLE ids_tail; DROP TABLE id_runs; DROP TABLE id_run_hashes;
         DELETE FROM meta WHERE key = 'ids_generation';",
    )
    .unwrap();
}

/// Turns this release's id map (entries keyed by the ids' hashes) back into schema 13's, keyed by the
/// ids: the same tail and runs, whose filters (built from the same hashes) stay as they are.
pub fn ids_keyed_by_id(c: &rusqlite::Connection) {
    let ids: std::collections::HashMap<(i64, i64), String> =
        stored_ids(c).into_iter().map(|(org, id, seq, _)| ((org, seq), id)).collect();
    let runs: Vec<i64> = c
        .prepare("SELECT run FROM id_runs WHERE state = 'live'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let tables = runs.iter().map(|r| format!("ids_{r}")).chain(["ids_tail".to_string()]);
    for table in tables {
        let rows: Vec<(i64, i64, i64)> = c
            .prepare(&format!("SELECT org_id, seq, month FROM {table}"))
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        c.execute_batch(&format!(
            "DROP TABLE {table};
             CREATE TABLE {table}(org_id INTEGER NOT NULL, id TEXT NOT NULL, seq INTEGER NOT NULL,
             month INTEGER NOT NULL, PRIMARY KEY(org_id, id)) STRICT, WITHOUT ROWID;"
        ))
        .unwrap();
        for (org, seq, month) in rows {
            c.execute(
                &format!("INSERT INTO {table} VALUES (?1, ?2, ?3, ?4)"),
                rusqlite::params![org, ids[&(org, seq)], seq, month],
            )
            .unwrap();
        }
    }
    c.execute_batch(
        "ALTER TABLE id_runs DROP COLUMN cursor_h; ALTER TABLE id_runs DROP COLUMN cursor_seq;
         ALTER TABLE id_runs ADD COLUMN cursor_id TEXT;",
    )
    .unwrap();
}

#[tokio::test]
async fn reopen_keeps_everything_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    store.create_org("acme", "Acme", now()).await.unwrap();
    let r = store.append("acme", vec![event("a", "x.y", now() - 10); 100], now()).await.unwrap();
    let last = r.last().unwrap().id().to_string();
    store.close();
    drop(store);
    let store = SqliteStore::open(dir.path()).unwrap();
    assert_eq!(store.tree_size("acme").await.unwrap(), 100);
    assert_eq!(store.event("acme", &last).await.unwrap().unwrap().event.seq, 99);
    let r = store.append("acme", vec![event("a", "x.y", now() - 10)], now()).await.unwrap();
    assert_eq!(r[0].seq(), 100, "seq continues without a gap after reopening");
}

/// Jobs committed in one group: a failing job (a taken email, an unknown org) is answered with its
/// own error while its neighbours' writes commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_job_does_not_disturb_its_group() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(SqliteStore::open(dir.path()).unwrap());
    store.create_org("acme", "Acme", now()).await.unwrap();
    store.create_user("taken@example.com", "h", false, now()).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..30 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            match i % 3 {
                0 => s.append("acme", vec![event("a", "x.y", now() - 10); 5], now()).await.map(|r| r.len()),
                1 => s.create_user("taken@example.com", "h", false, now()).await.map(|_| 0),
                _ => s.append("nope", vec![event("a", "x.y", now() - 10)], now()).await.map(|r| r.len()),
            }
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let r = t.await.unwrap();
        match i % 3 {
            0 => assert_eq!(r.unwrap(), 5),
            1 => assert!(matches!(r, Err(trail_store::StoreError::Conflict(_))), "{r:?}"),
            _ => assert!(matches!(r, Err(trail_store::StoreError::NotFound(_))), "{r:?}"),
        }
    }
    assert_eq!(store.tree_size("acme").await.unwrap(), 50);
}

/// A process killed before its background checkpoint ran leaves a WAL behind; opening the store
/// folds it into the database, so repeated short runs cannot grow it without bound.
#[tokio::test]
async fn opening_folds_the_previous_wal_into_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    store.create_org("acme", "Acme", now()).await.unwrap();
    for _ in 0..20 {
        store.append("acme", vec![event("a", "x.y", now() - 10); 100], now()).await.unwrap();
    }
    let wal = dir.path().join(format!("{}-wal", trail_store_sqlite::DB_FILE));
    // Simulate a kill: keep the WAL as it is now, as a SIGKILL would, then reopen over it.
    let saved = std::fs::read(&wal).unwrap();
    assert!(!saved.is_empty(), "the appends went to the WAL");
    store.close();
    drop(store);
    std::fs::write(&wal, &saved).unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let after = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    // What remains is the open's own small write probe, not the inherited log.
    assert!(
        after < 64 * 1024 && after * 10 < saved.len() as u64,
        "WAL of {} bytes left {after} after open",
        saved.len()
    );
    assert_eq!(store.tree_size("acme").await.unwrap(), 2000, "and nothing was lost");
}

/// A data directory from the release before `source: "trail"` was reserved (schema version 1, whose
/// ingest let any key write that source) opens in place: events already stored count as possibly
/// sent, everything appended from then on is told apart, and the migration runs once.
#[tokio::test]
async fn a_version_1_directory_is_migrated_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    store.create_org("acme", "Acme", now()).await.unwrap();
    let mut forged = event("mallory", "api_key.revoked", now() - 10);
    forged.source = Some("trail".into());
    store.append("acme", vec![event("a", "x.y", now() - 10), forged], now()).await.unwrap();
    store.close();
    drop(store);
    // What version 1 wrote: no column for it, and version 1 in meta.
    let c = rusqlite::Connection::open(dir.path().join("trail.db")).unwrap();
    old_id_table(&c);
    c.execute_batch(
        "ALTER TABLE orgs DROP COLUMN self_audit_from; DROP TABLE minute_counts;
         UPDATE meta SET value = 1 WHERE key = 'schema_version';",
    )
    .unwrap();
    drop(c);

    let store = SqliteStore::open(dir.path()).unwrap();
    assert_eq!(store.self_audit_from("acme").await.unwrap(), 2, "both stored events predate the reservation");
    assert_eq!(store.tree_size("acme").await.unwrap(), 2, "nothing was lost");
    // The histogram's per-minute counts were built from the stored events.
    let day = trail_model::time::MICROS_PER_DAY;
    let whole = trail_model::query::Filter { from: now() - day, to: now(), ..Default::default() };
    let counted = |h: Vec<trail_store::Bucket>| h.iter().map(|b| b.count).sum::<u64>();
    assert_eq!(counted(store.histogram("acme", &whole, 3_600_000_000).await.unwrap()), 2);
    store.create_org("globex", "Globex", now()).await.unwrap();
    assert_eq!(
        store.self_audit_from("globex").await.unwrap(),
        0,
        "a new org's log is Trail's from the start"
    );
    store.append("acme", vec![event("a", "x.y", now() - 5)], now()).await.unwrap();
    store.close();
    drop(store);
    let store = SqliteStore::open(dir.path()).unwrap();
    assert_eq!(store.self_audit_from("acme").await.unwrap(), 2, "opening again does not move it");
    assert_eq!(
        counted(store.histogram("acme", &whole, 3_600_000_000).await.unwrap()),
        3,
        "and counts nothing twice"
    );
    let c = rusqlite::Connection::open(dir.path().join("trail.db")).unwrap();
    let version: i64 =
        c.query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |r| r.get(0)).unwrap();
    assert_eq!(version, trail_store_sqlite::schema::SCHEMA_VERSION);
    let free_text = trail_model::query::Filter {
        q: Some(trail_model::text::Search::parse("mallory").unwrap()),
        ..whole.clone()
    };
    assert_eq!(counted(store.histogram("acme", &free_text, 3_600_000_000).await.unwrap()), 1);
}

/// Versions 1 and 2 kept each month's full-text index in `trail.db` and wrote it in the append; version
/// 3 drops those tables and the indexer builds `trail-index.db` from the stored events.
#[tokio::test]
async fn a_version_2_directory_moves_its_full_text_index_out() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    store.create_org("acme", "Acme", now()).await.unwrap();
    store
        .append("acme", vec![event("alice", "x.y", now() - 10), event("bob", "x.y", now() - 9)], now())
        .await
        .unwrap();
    store.close();
    drop(store);
    // What version 2 left: an FTS5 table beside the month's events, no index file.
    let month = trail_model::time::month_of(now() - 10);
    let c = rusqlite::Connection::open(dir.path().join("trail.db")).unwrap();
    old_id_table(&c);
    c.execute_batch(&format!(
        "CREATE VIRTUAL TABLE fts_{month} USING fts5(text, content='', columnsize=0);
         INSERT INTO fts_{month}(rowid, text) VALUES (1, 'stale');
         UPDATE meta SET value = 2 WHERE key = 'schema_version';"
    ))
    .unwrap();
    drop(c);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.path().join(format!("trail-index.db{suffix}")));
    }

    let store = SqliteStore::open(dir.path()).unwrap();
    let q = |term: &str| trail_model::query::Query {
        filter: trail_model::query::Filter {
            from: now() - trail_model::time::MICROS_PER_DAY,
            to: now(),
            q: Some(trail_model::text::Search::parse(term).unwrap()),
            ..Default::default()
        },
        limit: 10,
        cursor: None,
    };
    assert_eq!(
        store.query("acme", &q("bob")).await.unwrap().records.len(),
        1,
        "found while the index is rebuilt"
    );
    store.close();
    drop(store);
    let c = rusqlite::Connection::open(dir.path().join("trail.db")).unwrap();
    let tables: i64 = c
        .query_row(&format!("SELECT count(*) FROM sqlite_master WHERE name = 'fts_{month}'"), [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(tables, 0, "the old index left the log's file");
    let index = rusqlite::Connection::open(dir.path().join("trail-index.db")).unwrap();
    let hits: i64 = index
        .query_row(
            &format!("SELECT count(*) FROM fts_{month} WHERE fts_{month} MATCH 'bob OR alice'"),
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(hits, 2, "and was rebuilt from the events");
}

/// A data directory of schema version 7 (sessions without the way they were signed in) opens in place:
/// its sessions keep working and count as password sign-ins, the way every one of them was made.
#[tokio::test]
async fn a_version_7_directory_keeps_its_sessions_as_password_sign_ins() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let user = store.create_user("ada@acme.io", "phc", false, now()).await.unwrap();
    let mut session = trail_store::Session {
        id: "s1".into(),
        user_id: user.id.clone(),
        secret_hash: [3; 32],
        created_at: now(),
        expires_at: now() + 1_000_000,
        last_seen: now(),
        method: "password".into(),
    };
    store.create_session(&session).await.unwrap();
    store.close();
    drop(store);
    let c = rusqlite::Connection::open(dir.path().join("trail.db")).unwrap();
    c.execute_batch(
        "ALTER TABLE sessions DROP COLUMN method; UPDATE meta SET value = 7 WHERE key = 'schema_version';",
    )
    .unwrap();
    drop(c);

    let store = SqliteStore::open(dir.path()).unwrap();
    assert_eq!(store.session("s1").await.unwrap(), Some(session.clone()));
    session.id = "s2".into();
    session.method = "sso:acme".into();
    store.create_session(&session).await.unwrap();
    assert_eq!(store.session("s2").await.unwrap().unwrap().method, "sso:acme");
    store.close();
    let c = rusqlite::Connection::open(dir.path().join("trail.db")).unwrap();
    let version: i64 =
        c.query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |r| r.get(0)).unwrap();
    assert_eq!(version, trail_store_sqlite::schema::SCHEMA_VERSION);
}

/// A data directory of schema version 8 (no counts per action) opens in place: the counts are built
/// from the stored events, and histograms by action agree with counting the rows.
#[tokio::test]
async fn a_version_8_directory_gets_its_counts_per_action() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    store.create_org("acme", "Acme", now()).await.unwrap();
    let day = trail_model::time::MICROS_PER_DAY;
    let events: Vec<_> = (0..300i64)
        .map(|i| {
            let mut e = event("a", ["x.y", "x.z", "w.v"][i as usize % 3], now() - 2 * day + i * 555_000_000);
            if i % 4 == 0 {
                e.outcome = trail_model::Outcome::Failure;
            }
            e
        })
        .collect();
    store.append("acme", events, now()).await.unwrap();
    store.close();
    drop(store);
    let c = rusqlite::Connection::open(dir.path().join("trail.db")).unwrap();
    c.execute_batch("DROP TABLE action_slots; UPDATE meta SET value = 8 WHERE key = 'schema_version';")
        .unwrap();
    drop(c);

    let store = SqliteStore::open(dir.path()).unwrap();
    let window = trail_model::query::Filter { from: now() - 3 * day, to: now(), ..Default::default() };
    for (action, outcome, want) in [
        ("x.y", vec![], 100),
        ("w.v", vec![trail_model::Outcome::Failure], 25),
        ("x.", vec![trail_model::Outcome::Success], 150),
    ] {
        let a = if action.ends_with('.') {
            trail_model::query::ActionMatch::Prefix(action.into())
        } else {
            trail_model::query::ActionMatch::Exact(action.into())
        };
        let f = trail_model::query::Filter { action: vec![a], outcome, ..window.clone() };
        let counted: u64 = store.histogram("acme", &f, day).await.unwrap().iter().map(|b| b.count).sum();
        assert_eq!(counted, want, "{action}");
    }
    let c = rusqlite::Connection::open(dir.path().join("trail.db")).unwrap();
    let rows: i64 = c.query_row("SELECT sum(n) FROM action_slots", [], |r| r.get(0)).unwrap();
    assert_eq!(rows, 300, "every stored event counted once");
}

/// A data directory of schema version 9 (no counts per field value) opens in place: the dense slots
/// and their counts are built from the stored events, exactly as the writer had kept them, and
/// histograms by actor agree with the events.
#[tokio::test]
async fn a_version_9_directory_gets_its_counts_per_field() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let start = trail_store::conformance::append_dense_then_sparse(&store, "acme").await;
    store.close();
    drop(store);
    let tables = |c: &rusqlite::Connection| {
        let rows = |sql: &str| -> Vec<Vec<i64>> {
            let mut st = c.prepare(sql).unwrap();
            let n = st.column_count();
            st.query_map([], |r| (0..n).map(|i| r.get(i)).collect()).unwrap().map(Result::unwrap).collect()
        };
        (
            rows("SELECT * FROM dense_slots ORDER BY 1, 2"),
            rows("SELECT * FROM field_slots ORDER BY 1, 2, 3, 4"),
        )
    };
    let c = rusqlite::Connection::open(dir.path().join("trail.db")).unwrap();
    let kept = tables(&c);
    assert_eq!(kept.0.len(), 4, "the 40 minutes' four slots are dense, no other: {:?}", kept.0);
    c.execute_batch(
        "DROP TABLE dense_slots; DROP TABLE field_slots; UPDATE meta SET value = 9 WHERE key = 'schema_version';",
    )
    .unwrap();
    drop(c);

    let store = SqliteStore::open(dir.path()).unwrap();
    trail_store::conformance::assert_dense_then_sparse_histograms(&store, "acme", start).await;
    store.close();
    drop(store);
    let c = rusqlite::Connection::open(dir.path().join("trail.db")).unwrap();
    assert_eq!(tables(&c), kept, "the migration counts what the writer counted");
}

/// A writer remembers which ten minutes it saw sparse, but not past another process's appends to the
/// org: a slot another writer made dense counts this writer's later events too.
#[tokio::test]
async fn a_slot_another_writer_made_dense_counts_this_writers_later_events() {
    use trail_model::query::Filter;
    use trail_model::time::MICROS_PER_DAY;

    let dir = tempfile::tempdir().unwrap();
    let mine = SqliteStore::open(dir.path()).unwrap();
    mine.create_org("acme", "acme", now()).await.unwrap();
    let slot = 600 * 1_000_000;
    let start = (now() - MICROS_PER_DAY).div_euclid(slot) * slot;
    let at = |i: i64| event("al", "x.y", start + i * 1_000_000);
    // 20 events: a slot this writer now knows to be sparse.
    mine.append("acme", (0..20).map(at).collect(), now()).await.unwrap();
    // Another writer on the same directory (`trail import --data-dir`) makes it dense.
    let other = SqliteStore::open(dir.path()).unwrap();
    other.append("acme", (20..40).map(at).collect(), now()).await.unwrap();
    other.close();
    mine.append("acme", (40..45).map(at).collect(), now()).await.unwrap();

    let f = Filter { actor: vec!["al".into()], from: start - MICROS_PER_DAY, to: now(), ..Filter::default() };
    assert!(f.counted_at(MICROS_PER_DAY / 24), "the histogram below is answered from counts per value");
    let counted: u64 =
        mine.histogram("acme", &f, MICROS_PER_DAY / 24).await.unwrap().iter().map(|b| b.count).sum();
    assert_eq!(counted, 45);
}

/// A data directory of schema version 12 (no blocks of keys) opens in place: the span of times of
/// each block of keys is built from the stored events, exactly as the writer had kept it (blocks
/// holding two months, late events, two orgs, batches and single events), and free-text histograms
/// agree with the events.
#[tokio::test]
async fn a_version_12_directory_gets_its_blocks_of_keys() {
    use trail_model::query::Filter;
    use trail_model::time::{MICROS_PER_DAY, parse_rfc3339};

    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let boundary = parse_rfc3339("2026-03-01T00:00:00Z").unwrap();
    let at = |i: i64| {
        let late = if i % 17 == 3 { 500_000_000 } else { 0 };
        let mut e = event(&format!("user-{}", i % 3), "x.y", boundary - 100_000_000 + i * 1_000_000 - late);
        e.reason = Some(if i % 2 == 0 { "even".into() } else { "odd".into() });
        e
    };
    for org in ["acme", "globex"] {
        store.create_org(org, org, boundary - MICROS_PER_DAY).await.unwrap();
        store.append(org, (0..150).map(at).collect(), now()).await.unwrap();
        for i in 150..170 {
            store.append(org, vec![at(i)], now()).await.unwrap();
        }
    }
    store.close();
    drop(store);
    let blocks = |c: &rusqlite::Connection| -> Vec<(i64, i64, i64)> {
        let mut st = c.prepare("SELECT b, lo, hi FROM key_blocks ORDER BY b").unwrap();
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().map(Result::unwrap).collect()
    };
    let c = rusqlite::Connection::open(dir.path().join("trail.db")).unwrap();
    let kept = blocks(&c);
    assert_eq!(kept.len(), 6, "170 events of each org in three blocks of 64: {kept:?}");
    c.execute_batch("DROP TABLE key_blocks; UPDATE meta SET value = 12 WHERE key = 'schema_version';")
        .unwrap();
    drop(c);

    let store = SqliteStore::open(dir.path()).unwrap();
    let f = Filter {
        from: boundary - MICROS_PER_DAY,
        to: boundary + MICROS_PER_DAY,
        q: Some(trail_model::text::Search::parse("even").unwrap()),
        ..Filter::default()
    };
    let hours: Vec<u64> =
        store.histogram("acme", &f, 3_600_000_000).await.unwrap().iter().map(|b| b.count).collect();
    assert_eq!(hours.iter().sum::<u64>(), 85);
    store.close();
    drop(store);
    let c = rusqlite::Connection::open(dir.path().join("trail.db")).unwrap();
    assert_eq!(blocks(&c), kept, "the migration spans what the writer spanned");
}

/// A data directory of schema version 13 (every row with its whole leaf hash, Merkle nodes stored
/// from level 2) opens in place: the nodes below level 6 are deleted, the rows written before keep
/// their whole hashes and later ones the first 8 bytes, and roots, proofs and `trail verify` agree
/// with the events, across a block of 64 events that holds rows of both kinds and two months.
#[tokio::test]
async fn a_version_13_directory_hashes_its_lower_merkle_nodes_from_the_events() {
    use trail_model::query::{Filter, Query};
    use trail_model::time::{MICROS_PER_DAY, parse_rfc3339};

    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let boundary = parse_rfc3339("2026-03-01T00:00:00Z").unwrap();
    let at = |i: i64| event(&format!("user-{i}"), "x.y", boundary - 50_000_000 + i * 1_000_000);
    store.create_org("acme", "Acme", boundary - MICROS_PER_DAY).await.unwrap();
    for chunk in (0..100).collect::<Vec<i64>>().chunks(30) {
        store.append("acme", chunk.iter().map(|&i| at(i)).collect(), now()).await.unwrap();
    }
    let leaves = |store: SqliteStore| async move {
        let filter =
            Filter { from: boundary - MICROS_PER_DAY, to: boundary + MICROS_PER_DAY, ..Filter::default() };
        let mut q = Query { filter, limit: 1000, cursor: None };
        let mut records = Vec::new();
        loop {
            let page = store.query("acme", &q).await.unwrap();
            records.extend(page.records);
            match page.next {
                Some(c) => q.cursor = Some(c),
                None => break,
            }
        }
        records.sort_by_key(|r| r.event.seq);
        let leaves: Vec<trail_merkle::Hash> = records.iter().map(|r| r.leaf_hash()).collect();
        (store, leaves)
    };
    let (store, old) = leaves(store).await;
    assert_eq!(old.len(), 100);
    store.close();
    drop(store);

    // Schema 13, as the previous release wrote it: whole leaf hashes, nodes from level 2.
    let c = rusqlite::Connection::open(dir.path().join("trail.db")).unwrap();
    for m in ["ev_202602", "ev_202603"] {
        let keys: Vec<i64> = c
            .prepare(&format!("SELECT k FROM {m}"))
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        for k in keys {
            let seq = (k & ((1 << 40) - 1)) as usize;
            c.execute(&format!("UPDATE {m} SET leaf = ?1 WHERE k = ?2"), rusqlite::params![&old[seq][..], k])
                .unwrap();
        }
    }
    let mut frontier = trail_merkle::Frontier::new();
    c.execute("DELETE FROM tree_nodes", []).unwrap();
    for leaf in &old {
        for n in frontier.append(*leaf).into_iter().filter(|n| n.level >= 2) {
            c.execute(
                "INSERT INTO tree_nodes VALUES (1, ?1, ?2, ?3)",
                rusqlite::params![n.level, n.index as i64, &n.hash[..]],
            )
            .unwrap();
        }
    }
    c.execute("UPDATE meta SET value = 13 WHERE key = 'schema_version'", []).unwrap();
    drop(c);

    let store = SqliteStore::open(dir.path()).unwrap();
    // Seqs 100..160: the block of 64..127 now holds rows of both kinds.
    for chunk in (100..160).collect::<Vec<i64>>().chunks(25) {
        store.append("acme", chunk.iter().map(|&i| at(i)).collect(), now()).await.unwrap();
    }
    let (store, all) = leaves(store).await;
    assert_eq!(&all[..100], &old[..], "the events written before are the same events");
    for size in [1u64, 5, 63, 64, 65, 99, 100, 101, 127, 128, 129, 160] {
        let root = store.root("acme", size).await.unwrap();
        assert_eq!(root, trail_merkle::root(&all[..size as usize]), "root of {size}");
        for seq in [0, size / 2, size - 1, 64.min(size - 1), 99.min(size - 1)] {
            let proof = store.inclusion_proof("acme", seq, size).await.unwrap();
            trail_merkle::verify_inclusion(&all[seq as usize], seq, size, &proof, &root)
                .unwrap_or_else(|e| panic!("inclusion of {seq} in {size}: {e}"));
        }
        for from in [1u64, 64, 100].into_iter().filter(|&f| f <= size) {
            let proof = store.consistency_proof("acme", from, size).await.unwrap();
            trail_merkle::verify_consistency(
                from,
                size,
                &trail_merkle::root(&all[..from as usize]),
                &root,
                &proof,
            )
            .unwrap_or_else(|e| panic!("consistency {from} -> {size}: {e}"));
        }
    }
    store.close();
    drop(store);

    let c = rusqlite::Connection::open(dir.path().join("trail.db")).unwrap();
    let levels: Vec<(i64, i64)> = c
        .prepare("SELECT level, idx FROM tree_nodes ORDER BY level, idx")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(levels, [(6, 0), (6, 1), (7, 0)], "only the nodes of 64 events and more are stored");
    let kept: Vec<(i64, i64)> = ["ev_202602", "ev_202603"]
        .iter()
        .flat_map(|m| {
            c.prepare(&format!("SELECT k & 0xffffffffff, length(leaf) FROM {m}"))
                .unwrap()
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .map(Result::unwrap)
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(kept.len(), 160);
    for (seq, len) in kept {
        assert_eq!(len, if seq < 100 { 32 } else { 8 }, "the leaf kept in the row of seq {seq}");
    }
    let key = trail_merkle::Signer::from_secret_bytes("test", &[7; 32]).unwrap().verifier();
    let reports =
        trail_store_sqlite::verify::verify_data_dir(dir.path(), None, &key, &mut |_, _, _| {}).unwrap();
    assert_eq!(reports.len(), 1);
    assert_eq!((reports[0].events, &reports[0].problem), (160, &None));
}
