//! Integration tests of the embedded store: the shared conformance suite, plus what only SQLite has.
#![allow(clippy::unwrap_used, reason = "tests fail loudly on purpose")]

use trail_store_sqlite::SqliteStore;

async fn make() -> (SqliteStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (SqliteStore::open(dir.path()).unwrap(), dir)
}

trail_store::conformance_suite!(make);

mod durability;
mod retention;
