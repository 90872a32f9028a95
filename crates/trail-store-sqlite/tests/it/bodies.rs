//! Compressed bodies: once the store has sampled enough events it packs new bodies against a
//! dictionary, rows stored before (or by an earlier release) stay as they were, and every reader —
//! queries, free text, lookups by id, the log in seq order, the full-text indexer — gets the
//! canonical bytes back. The whole conformance suite also runs on a store that packs from the start
//! (`packed` in `main.rs`).

use trail_model::query::{Filter, Query};
use trail_model::time::MICROS_PER_DAY;
use trail_store::Store;
use trail_store::conformance::{event, now};
use trail_store_sqlite::SqliteStore;

fn with_text(n: usize) -> trail_model::NewEvent {
    trail_model::NewEvent {
        id: Some(format!("e-{n}")),
        reason: Some(format!("word{n} shared")),
        ..event(&format!("user{}", n % 5), "component.deployed", now() - 1_000 + n as i64)
    }
}

fn first_byte_counts(dir: &std::path::Path) -> (i64, i64) {
    let c = rusqlite::Connection::open(dir.join(trail_store_sqlite::DB_FILE)).unwrap();
    let month = trail_model::time::month_of(now() - 1_000);
    c.query_row(
        &format!("SELECT sum(substr(body, 1, 1) = x'fe'), sum(substr(body, 1, 1) = x'01') FROM ev_{month}"),
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .unwrap()
}

#[tokio::test]
async fn raw_and_packed_bodies_read_back_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    store.create_org("acme", "Acme", now()).await.unwrap();
    // The first 100 are stored as they are (the dictionary is made from them), the rest packed.
    store.append("acme", (0..100).map(with_text).collect(), now()).await.unwrap();
    store.append("acme", (100..300).map(with_text).collect(), now()).await.unwrap();
    let (packed, raw) = first_byte_counts(dir.path());
    assert_eq!((packed, raw), (200, 100), "bodies packed once the dictionary exists");

    let all = store.events_after("acme", None, 1_000).await.unwrap();
    assert_eq!(all.len(), 300);
    for (n, r) in all.iter().enumerate() {
        let e = r.decode().unwrap();
        assert_eq!((e.seq, e.id.as_str()), (n as u64, format!("e-{n}").as_str()), "seq {n}");
        assert_eq!(trail_model::canonical::encode(&e), r.bytes, "canonical bytes at {n}");
    }
    for n in [0, 99, 100, 299] {
        let got = store.event("acme", &format!("e-{n}")).await.unwrap().unwrap();
        assert_eq!(got.bytes, all[n].bytes, "by id {n}");
    }
    let search = |term: &str| Query {
        filter: Filter {
            from: now() - MICROS_PER_DAY,
            to: now(),
            q: Some(trail_model::text::Search::parse(term).unwrap()),
            ..Default::default()
        },
        limit: 500,
        cursor: None,
    };
    assert_eq!(store.query("acme", &search("word250")).await.unwrap().records.len(), 1);
    assert_eq!(store.query("acme", &search("shared")).await.unwrap().records.len(), 300);
    // The indexer reads packed bodies too: rebuilt from scratch, it finds the same.
    store.close();
    drop(store);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.path().join(format!("trail-index.db{suffix}")));
    }
    let store = SqliteStore::open(dir.path()).unwrap();
    store.close();
    drop(store);
    let index = rusqlite::Connection::open(dir.path().join("trail-index.db")).unwrap();
    let month = trail_model::time::month_of(now() - 1_000);
    let hits: i64 = index
        .query_row(
            &format!("SELECT count(*) FROM fts_{month} WHERE fts_{month} MATCH 'word250 OR word5'"),
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(hits, 2, "the index was rebuilt from packed and raw bodies");
    let store = SqliteStore::open(dir.path()).unwrap();
    assert_eq!(store.query("acme", &search("word250")).await.unwrap().records.len(), 1);
}

/// A data directory deleted and made again in the same process (as benchmarks do) is a new database
/// whose dictionary has the same id as the old one's: its bodies must unpack with its own.
#[tokio::test]
async fn a_directory_made_again_unpacks_with_its_own_dictionary() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    let shaped = |n: usize, word: &str| trail_model::NewEvent {
        id: Some(format!("{word}-{n}")),
        reason: Some(format!("{word} {n} {}", word.repeat(20))),
        ..event(&format!("{word}{}", n % 5), &format!("{word}.deployed"), now() - 1_000 + n as i64)
    };
    for word in ["first", "second"] {
        let _ = std::fs::remove_dir_all(&path);
        let store = SqliteStore::open(&path).unwrap();
        store.create_org("acme", "Acme", now()).await.unwrap();
        store.append("acme", (0..100).map(|n| shaped(n, word)).collect(), now()).await.unwrap();
        store.append("acme", (100..200).map(|n| shaped(n, word)).collect(), now()).await.unwrap();
        let all = store.events_after("acme", None, 1_000).await.unwrap();
        assert_eq!(all.len(), 200, "{word}");
        for (n, r) in all.iter().enumerate() {
            let e = r.decode().unwrap_or_else(|e| panic!("{word} store, seq {n}: {e}"));
            assert_eq!(e.id, format!("{word}-{n}"));
        }
        drop(store);
    }
}
