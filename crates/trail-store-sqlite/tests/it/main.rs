//! Integration tests of the embedded store: the shared conformance suite, plus what only SQLite has.
#![allow(clippy::unwrap_used, reason = "tests fail loudly on purpose")]

use trail_store_sqlite::SqliteStore;

async fn make() -> (SqliteStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (SqliteStore::open(dir.path()).unwrap(), dir)
}

trail_store::conformance_suite!(make);

/// The suite again on a store that packs every body from the first (a dictionary is stored before
/// the store opens), so every reader meets packed bodies.
mod packed {
    use trail_store_sqlite::SqliteStore;

    async fn make() -> (SqliteStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        drop(SqliteStore::open(dir.path()).unwrap());
        let sample: Vec<u8> = (0..20)
            .flat_map(|n| {
                let e = trail_store::conformance::event(
                    &format!("user{n}"),
                    "x.y",
                    trail_store::conformance::now(),
                );
                let s = trail_model::StoredEvent::accept(e, "acme", 0, format!("id-{n}"), 0);
                trail_model::canonical::encode(&s)
            })
            .collect();
        let c = rusqlite::Connection::open(dir.path().join(trail_store_sqlite::DB_FILE)).unwrap();
        c.execute("INSERT INTO body_dicts(dict, created_at) VALUES (?1, 0)", [sample]).unwrap();
        drop(c);
        (SqliteStore::open(dir.path()).unwrap(), dir)
    }

    trail_store::conformance_suite!(make);
}

mod bodies;
mod durability;
mod ids;
mod retention;
