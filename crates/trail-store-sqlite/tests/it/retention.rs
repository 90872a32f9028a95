//! What the conformance suite cannot see from outside: pruning an org's month that another org still
//! uses keeps the month (and its full-text index) for the other org while searches no longer find the
//! pruned events, and pruning the last org of a month drops the month's tables in both files.

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

fn found(store: &SqliteStore, org: &str, term: &str) -> impl Future<Output = usize> {
    let query = trail_model::query::Query {
        filter: trail_model::query::Filter {
            from: parse_rfc3339("2026-01-01T00:00:00Z").unwrap(),
            to: parse_rfc3339("2026-02-01T00:00:00Z").unwrap(),
            q: Some(trail_model::text::Search::parse(term).unwrap()),
            ..Default::default()
        },
        limit: 100,
        cursor: None,
    };
    let (store, org) = (store.clone(), org.to_string());
    async move { store.query(&org, &query).await.unwrap().records.len() }
}

/// Whether the month's table is in the log's file and its full-text table in the index's.
fn tables(dir: &std::path::Path) -> (bool, bool) {
    let has = |file: &str, name: &str| {
        let c = rusqlite::Connection::open(dir.join(file)).unwrap();
        c.query_row("SELECT count(*) FROM sqlite_master WHERE name = ?1", [name], |r| r.get::<_, i64>(0))
            .unwrap()
            == 1
    };
    (has(trail_store_sqlite::DB_FILE, "ev_202601"), has("trail-index.db", "fts_202601"))
}

#[tokio::test]
async fn pruning_keeps_a_shared_month_searchable_and_then_drops_it() {
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
    assert_eq!(tables(dir.path()), (true, true));
    let store = SqliteStore::open(dir.path()).unwrap();
    assert_eq!((found(&store, "acme", "acmeonly").await, found(&store, "other", "otheronly").await), (5, 1));

    store.prune_month("acme", 202601, MonthSummary { count: 5, last_seq: 4 }).await.unwrap();
    assert_eq!(found(&store, "acme", "acmeonly").await, 0, "the pruned org's events are not found");
    assert_eq!(found(&store, "other", "otheronly").await, 1, "the other org's are");
    // Their full-text entries stay in the shared month's index, but a free-text histogram, which FTS5
    // drives, joins each to its row and finds none.
    let histogram = trail_model::query::Filter {
        from: parse_rfc3339("2026-01-01T00:00:00Z").unwrap(),
        to: parse_rfc3339("2026-02-01T00:00:00Z").unwrap(),
        q: Some(trail_model::text::Search::parse("acmeonly").unwrap()),
        ..Default::default()
    };
    assert_eq!(store.histogram("acme", &histogram, trail_model::time::MICROS_PER_DAY).await.unwrap(), vec![]);
    store.close();
    drop(store);
    let index = rusqlite::Connection::open(dir.path().join("trail-index.db")).unwrap();
    let stale: i64 = index
        .query_row("SELECT count(*) FROM fts_202601 WHERE fts_202601 MATCH 'acmeonly'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(stale, 5, "the entries the histogram had to skip");
    drop(index);
    assert_eq!(tables(dir.path()), (true, true), "the month is still in use");

    let store = SqliteStore::open(dir.path()).unwrap();
    store.prune_month("other", 202601, MonthSummary { count: 1, last_seq: 0 }).await.unwrap();
    store.close();
    drop(store);
    assert_eq!(tables(dir.path()), (false, false), "the last org gone: the month's tables are dropped");
}

/// A pruned event's whole leaf hash is kept from its bytes, checked against the 8 bytes its row
/// kept: an event whose bytes changed on disk stops the prune (nothing removed) rather than having a
/// hash of the altered bytes kept for it.
#[tokio::test]
async fn pruning_refuses_an_event_whose_bytes_changed() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let now = parse_rfc3339("2026-03-15T00:00:00Z").unwrap();
    let jan = parse_rfc3339("2026-01-10T00:00:00Z").unwrap();
    store.create_org("acme", "acme", now).await.unwrap();
    store.append("acme", (0..5).map(|i| event("needle", jan + i)).collect(), now).await.unwrap();
    let flip = |from: &[u8], to: &[u8]| {
        let c = rusqlite::Connection::open(dir.path().join(trail_store_sqlite::DB_FILE)).unwrap();
        let k = (1i64 << 40) | 3;
        let mut body: Vec<u8> =
            c.query_row("SELECT body FROM ev_202601 WHERE k = ?1", [k], |r| r.get(0)).unwrap();
        let at = body.windows(from.len()).position(|w| w == from).expect("the reason is in the stored bytes");
        body[at..at + to.len()].copy_from_slice(to);
        c.execute("UPDATE ev_202601 SET body = ?1 WHERE k = ?2", rusqlite::params![body, k]).unwrap();
    };
    flip(b"needle", b"noodle");
    let summary = MonthSummary { count: 5, last_seq: 4 };
    let refused = store.prune_month("acme", 202601, summary).await;
    assert!(
        matches!(&refused, Err(trail_store::StoreError::Corrupt(m)) if m.contains("seq 3")),
        "{refused:?}"
    );
    assert_eq!(store.pruned_leaves("acme", 0, 5).await.unwrap(), vec![], "nothing kept");
    assert_eq!(store.event_months("acme").await.unwrap(), [202601], "nothing removed");

    flip(b"noodle", b"needle");
    store.prune_month("acme", 202601, summary).await.unwrap();
    let kept = store.pruned_leaves("acme", 0, 5).await.unwrap();
    assert_eq!(kept.len(), 5);
    assert!(kept.iter().all(|(_, leaf)| leaf != &[0; 32]));
}

/// Pages of a file, as its committed state says (a reader sees what the writer's steps gave back
/// before the write-ahead log is copied into the file).
fn page_count(dir: &std::path::Path, file: &str) -> i64 {
    let c = rusqlite::Connection::open(dir.join(file)).unwrap();
    c.query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap()
}

/// Words no dictionary compresses: the space a month takes is mostly its own.
fn noise(seed: u64, len: usize) -> String {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if i % 8 == 7 { ' ' } else { (b'a' + (x % 26) as u8) as char }
        })
        .collect()
}

/// A new store with org `acme`, on 2026-03-15 (`now`), and a day in January and one in February.
async fn acme_in_march() -> (tempfile::TempDir, SqliteStore, i64, i64, i64) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let now = parse_rfc3339("2026-03-15T00:00:00Z").unwrap();
    let (jan, feb) =
        (parse_rfc3339("2026-01-10T00:00:00Z").unwrap(), parse_rfc3339("2026-02-10T00:00:00Z").unwrap());
    store.create_org("acme", "acme", now).await.unwrap();
    (dir, store, now, jan, feb)
}

/// `trail verify` of a closed data directory's only org: events checked, and the problem if any.
fn verified(dir: &std::path::Path) -> (u64, Option<String>) {
    let key = trail_merkle::Signer::from_secret_bytes("test", &[7; 32]).unwrap().verifier();
    let reports = trail_store_sqlite::verify::verify_data_dir(dir, None, &key, &mut |_, _, _| {}).unwrap();
    (reports[0].events, reports[0].problem.as_ref().map(|p| p.reason.clone()))
}

/// A new data directory's files give pages back (`auto_vacuum = INCREMENTAL`), and pruning a month
/// gives its space back to the file system: the writer and the indexer free the pages in steps after
/// the prune, while the other month stays readable and the log verifies.
#[tokio::test]
async fn pruning_gives_the_months_space_back_to_the_file_system() {
    let (dir, store, now, jan, feb) = acme_in_march().await;
    for chunk in 0..8u64 {
        let events = (0..1000).map(|i| event(&noise(chunk * 1000 + i, 480), jan + (chunk * 1000 + i) as i64));
        store.append("acme", events.collect(), now).await.unwrap();
    }
    store.append("acme", (0..100).map(|i| event("februaryonly", feb + i)).collect(), now).await.unwrap();
    store.close();
    drop(store);
    for file in [trail_store_sqlite::DB_FILE, "trail-index.db"] {
        let c = rusqlite::Connection::open(dir.path().join(file)).unwrap();
        let mode: i64 = c.query_row("PRAGMA auto_vacuum", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, 2, "{file} is made with auto_vacuum = INCREMENTAL");
    }
    let before = |file| page_count(dir.path(), file);
    let (log_before, index_before) = (before(trail_store_sqlite::DB_FILE), before("trail-index.db"));

    let store = SqliteStore::open(dir.path()).unwrap();
    store.prune_month("acme", 202601, MonthSummary { count: 8000, last_seq: 7999 }).await.unwrap();
    // January is nearly all of both files: each ends below half its size (the log keeps 1 MiB of
    // free pages), in steps of 2 MiB (the writer's at most every 50 ms, the indexer's once it has
    // seen the month go).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let shrunk = |file, before: i64| page_count(dir.path(), file) * 2 < before;
    while !(shrunk(trail_store_sqlite::DB_FILE, log_before) && shrunk("trail-index.db", index_before)) {
        assert!(
            std::time::Instant::now() < deadline,
            "pages given back: log {} of {log_before}, index {} of {index_before}",
            page_count(dir.path(), trail_store_sqlite::DB_FILE),
            page_count(dir.path(), "trail-index.db")
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let february = trail_model::query::Query {
        filter: trail_model::query::Filter {
            from: feb - trail_model::time::MICROS_PER_DAY,
            to: feb + trail_model::time::MICROS_PER_DAY,
            q: Some(trail_model::text::Search::parse("februaryonly").unwrap()),
            ..Default::default()
        },
        limit: 1000,
        cursor: None,
    };
    assert_eq!(store.query("acme", &february).await.unwrap().records.len(), 100);
    store.close();
    drop(store);
    assert_eq!(verified(dir.path()), (8100, None));
}

/// A prune moves a month out in steps, each its own transaction: stopped after two steps (as a crash
/// would stop it), every event is in exactly one place (its row or its kept leaf), so proofs and
/// `trail verify` hold; the month is no longer listed for retention; a prune whose expectation does
/// not match refuses, counting what was moved; and the next open finishes what was begun.
#[tokio::test]
async fn a_prune_stopped_between_steps_is_consistent_and_finishes_when_run_again() {
    let (dir, store, now, jan, feb) = acme_in_march().await;
    // January's events interleave with February's in seq order.
    let events = (0..20).map(|i| event("needle", if i % 2 == 0 { jan + i } else { feb + i }));
    store.append("acme", events.collect(), now).await.unwrap();
    let january = MonthSummary { count: 10, last_seq: 18 };
    let root_before = store.root("acme", 20).await.unwrap();

    let done = store.prune_month_in_steps("acme", 202601, january, 3, 2).await.unwrap();
    assert!(!done);
    let kept: Vec<u64> =
        store.pruned_leaves("acme", 0, 20).await.unwrap().into_iter().map(|(s, _)| s).collect();
    assert_eq!(kept, [0, 2, 4, 6, 8, 10], "two steps of three, lowest seqs first");
    let hot = |dir: &std::path::Path| -> Vec<i64> {
        let c = rusqlite::Connection::open(dir.join(trail_store_sqlite::DB_FILE)).unwrap();
        c.prepare("SELECT k & 0xffffffffff FROM ev_202601 ORDER BY k")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    assert_eq!(hot(dir.path()), [12, 14, 16, 18]);
    assert_eq!(store.root("acme", 20).await.unwrap(), root_before, "the tree is the same");
    for seq in [0, 11, 12, 19] {
        let proof = store.inclusion_proof("acme", seq, 20).await.unwrap();
        let leaf = match store.pruned_leaves("acme", seq, seq + 1).await.unwrap().first() {
            Some((_, leaf)) => *leaf,
            None => trail_merkle::leaf_hash(
                &store.events_after("acme", seq.checked_sub(1), 1).await.unwrap()[0].bytes,
            ),
        };
        trail_merkle::verify_inclusion(&leaf, seq, 20, &proof, &root_before).unwrap();
    }
    // A retention pass does not see the month again (it would archive its rest a second time).
    assert_eq!(store.event_months("acme").await.unwrap(), [202602]);
    let wrong = store.prune_month("acme", 202601, MonthSummary { count: 11, last_seq: 18 }).await;
    assert!(
        matches!(&wrong, Err(trail_store::StoreError::Conflict(m)) if m.contains("6 already moved")),
        "{wrong:?}"
    );
    store.close();
    drop(store);
    assert_eq!(verified(dir.path()), (20, None), "half moved, the log verifies");

    // The next open finishes what was begun.
    let store = SqliteStore::open(dir.path()).unwrap();
    assert_eq!(store.pruned_leaves("acme", 0, 20).await.unwrap().len(), 10);
    assert_eq!(store.event_months("acme").await.unwrap(), [202602]);
    store.close();
    drop(store);
    assert!(!tables(dir.path()).0, "January's table is dropped");
    let c = rusqlite::Connection::open(dir.path().join(trail_store_sqlite::DB_FILE)).unwrap();
    let pending: i64 = c.query_row("SELECT count(*) FROM pruning", [], |r| r.get(0)).unwrap();
    assert_eq!(pending, 0);
    assert_eq!(verified(dir.path()), (20, None));
}
