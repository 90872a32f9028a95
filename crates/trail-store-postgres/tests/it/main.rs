//! Integration tests of the PostgreSQL store: the shared conformance suite, and what only a database
//! shared by several nodes has (`multi_node`).
//!
//! Each test creates its own database (`trail_test_<random>`, dropped afterwards), so tests run in
//! parallel. The server is `TRAIL_TEST_POSTGRES` (e.g. `postgres://trail:trail@127.0.0.1/postgres`, a
//! role allowed to create databases), else the same URL as a default; when the default cannot be
//! reached every test prints `SKIPPED (no PostgreSQL at …)` on stderr and passes. A URL given in
//! `TRAIL_TEST_POSTGRES` that cannot be reached fails the tests instead: CI must not skip silently.
#![allow(clippy::unwrap_used, reason = "tests fail loudly on purpose")]

mod multi_node;

use trail_store_postgres::PgStore;
use trail_store_postgres::testing::TestDb;

async fn make() -> Option<(PgStore, TestDb)> {
    let db = TestDb::create().await?;
    let store = db.store().await;
    Some((store, db))
}

trail_store::conformance_suite!(optional make);
