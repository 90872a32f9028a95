//! The embedded store's schema.
//!
//! Events live in one table per UTC month of their `time` (`ev_YYYYMM`), so retention drops a whole
//! month with a `DROP TABLE` instead of deleting rows one by one (the month's contentless FTS5 index,
//! `fts_YYYYMM`, lives in `trail-index.db`: see [`crate::index`]). An event's key `k` (its rowid) is `(org_id << 40) | seq`: within a month, rowid order is
//! `(org, seq)` order, a lookup by `seq` needs no extra index, and the `(org, ts)` index ends in the rowid,
//! which is exactly the newest-first tie-break `(time, seq)`. Low-cardinality strings (actors, actions,
//! target types and ids, projects, sources) are interned as integers in `dict`, keeping rows and the
//! index narrow; the canonical bytes (`body`) are the only copy of the full event.
//!
//! Integrity: each event row keeps the first [`LEAF_CHECK`] bytes of its leaf hash (`leaf`, computed at
//! ingest; rows written before schema 14 keep all 32), so `trail verify` names the event whose bytes
//! changed. `tree_nodes` keeps every complete Merkle subtree hash of level [`MIN_STORED_LEVEL`] and
//! up; a lower node is hashed from the leaves of its block of `2^MIN_STORED_LEVEL` events (see
//! [`crate::integrity::Nodes`]), so any proof reads O(log n) rows and one block of events;
//! `checkpoints` keeps every signed checkpoint. When retention archives a month, its events' whole leaf
//! hashes go to `pruned_leaves` (keyed like the events), so proofs and `trail verify` for the events
//! still hot keep working; 40 bytes per pruned event.
/// The lowest Merkle level stored in `tree_nodes`: one row per 32 events (levels 6 and up), where
/// level 2 and up took one per two (24 B an event at 10M events).
pub const MIN_STORED_LEVEL: u8 = 6;
/// Bytes of an event's leaf hash kept in its row (schema 14; 32 before).
pub const LEAF_CHECK: usize = 8;

/// Whether a row's `leaf` column (a whole leaf hash, or its first [`LEAF_CHECK`] bytes) holds `leaf`.
pub fn leaf_check_holds(stored: &[u8], leaf: &trail_merkle::Hash) -> bool {
    (stored.len() == LEAF_CHECK || stored.len() == leaf.len()) && leaf.starts_with(stored)
}

use rusqlite::Connection;

/// 2: `orgs.self_audit_from` (where `source: "trail"` became the server's alone) and `minute_counts`
/// (events and failures per minute of `time`, for histograms).
/// 3: the full-text index left this file for `trail-index.db` (see [`crate::index`]).
/// 4: the id map became log-structured (`ids_tail` and runs, see [`crate::ids`]); `event_ids` is its
/// first run.
/// 5: `org_settings.read_audit` (whether reads of the log are recorded in it) and
/// `org_settings.default_range` (the console's opening time range); `exports.kind` (query or restore).
/// 8: `sessions.method` (how the person signed in: password or an org's single sign-on).
/// 9: `action_slots` (events and failures per action and 10 minutes, for histograms by action).
/// 10: `dense_slots` and `field_slots` (events and failures per actor, target type, project and source
/// and 10 minutes, kept only for an org's ten minutes that hold [`DENSE_SLOT`] events or more).
/// 11: nothing in this file; the full-text index beside it is in format 2 (`crate::index::FORMAT`:
/// token pairs, no positions), which releases before it would query with their own syntax and fail.
/// They refuse this version instead; this release rebuilds an index of an earlier format.
/// 12: nothing in this file; the index is in format 3 (pairs after `x86`, `user24` too). A release of
/// version 11 would add events without those pairs, and this release would then miss the events.
/// 13: `key_blocks` (the span of times of each [`KEY_BLOCK`] consecutive keys, for free-text
/// histograms), built from the stored events.
/// 14: rows keep [`LEAF_CHECK`] bytes of their leaf hash, and `tree_nodes` only levels
/// [`MIN_STORED_LEVEL`] and up (the lower levels' rows are deleted); the id map is keyed by the ids'
/// hashes (`crate::ids`), its tail and runs copied in the new shape. A release of version 13 would
/// look for the lower nodes, whole leaf hashes and ids.
pub const SCHEMA_VERSION: i64 = 14;
/// Keys per `key_blocks` row: an event's block is its key shifted right by this many bits. 64
/// events of a dense org span seconds to a minute, so nearly every block lies inside one bucket of
/// a histogram in hours or days; the rows cost ~0.3 bytes an event.
pub const KEY_BLOCK_BITS: u32 = 6;
pub const KEY_BLOCK: i64 = 1 << KEY_BLOCK_BITS;

/// The block of keys an event's key is in (`key_blocks.b`).
pub fn key_block(k: i64) -> i64 {
    k >> KEY_BLOCK_BITS
}

/// The width of a `minute_counts` row.
pub const MINUTE: i64 = trail_model::query::COUNTED_MINUTE;

/// The width of an `action_slots` row: ten minutes.
pub const SLOT: i64 = trail_model::query::COUNTED_SLOT;

/// An org's ten minutes get counts per field value (`field_slots`) once they hold this many events.
/// Below it a histogram counts the slot's rows, fewer than this many: in sparse orgs nearly every
/// event is alone in its ten minutes, and a row per value and slot would cost more than the event
/// itself (BENCHMARKS.md sized it at ~43 B an event for 1M events in 50 orgs).
pub const DENSE_SLOT: i64 = 32;

/// The event-table column of each [`trail_model::query::CountedField`], by its code.
pub fn field_column(field: trail_model::query::CountedField) -> &'static str {
    use trail_model::query::CountedField;
    match field {
        CountedField::Actor => "actor",
        CountedField::TargetType => "ttype",
        CountedField::Project => "project",
        CountedField::Source => "source",
    }
}

/// The ten minutes an event time falls in (floor, also before 1970).
pub fn slot_of(ts: i64) -> i64 {
    ts.div_euclid(SLOT)
}

/// The minute an event time falls in (floor, also before 1970).
pub fn minute_of(ts: i64) -> i64 {
    ts.div_euclid(MINUTE)
}

/// SQL for [`minute_of`] over a column (SQLite's `/` truncates toward zero).
fn minute_sql(col: &str) -> String {
    format!("(CASE WHEN {col} >= 0 THEN {col} / {MINUTE} ELSE ({col} - {}) / {MINUTE} END)", MINUTE - 1)
}
/// Bits of the rowid that hold `seq`; the org id sits above them.
pub const SEQ_BITS: u32 = 40;

pub fn rowid(org_id: i64, seq: u64) -> i64 {
    (org_id << SEQ_BITS) | seq as i64
}

pub fn seq_of(rowid: i64) -> u64 {
    (rowid & ((1i64 << SEQ_BITS) - 1)) as u64
}

/// Plans that do not depend on bound values, for every connection of the store (SQLite's query planner
/// stability guarantee). Without it, a statement whose plan looked at a parameter's value (`LIMIT ?`,
/// or `col = ?` on part of a key, where the planner weighs whether the value is 0 or 1) is marked to
/// be planned again when that parameter is bound anew, and rusqlite's statement cache clears every
/// binding when a statement goes back to it: such a statement was parsed and planned again at every
/// use. Keying the id map by hash made its lookup one (`org_id = ? AND h = ?` on a three-column key),
/// and `trail import` of 1M events took 46 s against 33 s, 14% of its time in SQLite's parser.
pub fn stable_plans(conn: &Connection) -> rusqlite::Result<()> {
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true).map(|_| ())
}

/// Pragmas for every connection. `synchronous = FULL` in WAL mode fsyncs the WAL on every commit,
/// which is what makes "acknowledged" mean "durable".
pub fn configure(conn: &Connection, cache_kib: i64) -> rusqlite::Result<()> {
    stable_plans(conn)?;
    // Only a new file takes it, and only before `journal_mode = WAL` writes the file's header: an
    // existing file keeps the mode it was made with (see `space`). Asked only of a new file: on an
    // existing one the pragma writes the header page again, which waits for another process's writer.
    crate::space::incremental_if_new(conn)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // Most of the checkpointing runs on its own thread (see `checkpointer`), but a passive checkpoint
    // racing a steady stream of commits never finishes, so the WAL never starts over: it grew to the
    // limit (400 MB) and the writer's own checkpoint then copied all of it inside one commit (110 ms
    // stalls every 4 s under single-event load). At 16 MB the writer's checkpoint only copies what
    // the thread has not, and the WAL wraps: p99 at 5,000 requests/s went from 105 ms to 15 ms, at
    // the price of 10–20% of batch ingest at 10M events, where the writer copies more of the WAL
    // itself (BENCHMARKS.md measures the trade-off).
    conn.pragma_update(None, "wal_autocheckpoint", 4_096)?;
    conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "cache_size", -cache_kib)?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(())
}

/// Creates the fixed tables on a new database (idempotent).
pub fn create(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "
        CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value ANY) STRICT;
        CREATE TABLE IF NOT EXISTS orgs(
            id INTEGER PRIMARY KEY, slug TEXT NOT NULL UNIQUE, name TEXT NOT NULL,
            created_at INTEGER NOT NULL, tree_size INTEGER NOT NULL DEFAULT 0,
            self_audit_from INTEGER NOT NULL DEFAULT 0) STRICT;
        CREATE TABLE IF NOT EXISTS dict(id INTEGER PRIMARY KEY, value TEXT NOT NULL UNIQUE) STRICT;
        CREATE TABLE IF NOT EXISTS partitions(month INTEGER PRIMARY KEY) STRICT;

        CREATE TABLE IF NOT EXISTS tree_nodes(
            org_id INTEGER NOT NULL, level INTEGER NOT NULL, idx INTEGER NOT NULL, hash BLOB NOT NULL,
            PRIMARY KEY(org_id, level, idx)) STRICT, WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS checkpoints(
            org_id INTEGER NOT NULL, size INTEGER NOT NULL, root BLOB NOT NULL, note TEXT NOT NULL,
            created_at INTEGER NOT NULL, PRIMARY KEY(org_id, size)) STRICT, WITHOUT ROWID;

        CREATE TABLE IF NOT EXISTS users(
            id TEXT PRIMARY KEY, email TEXT NOT NULL UNIQUE, password_hash TEXT NOT NULL,
            server_admin INTEGER NOT NULL, created_at INTEGER NOT NULL) STRICT;
        CREATE TABLE IF NOT EXISTS roles(
            org_id INTEGER NOT NULL, id TEXT NOT NULL, name TEXT NOT NULL, description TEXT NOT NULL,
            permissions TEXT NOT NULL, builtin INTEGER NOT NULL,
            PRIMARY KEY(org_id, id), UNIQUE(org_id, name)) STRICT;
        CREATE TABLE IF NOT EXISTS groups(
            org_id INTEGER NOT NULL, id TEXT NOT NULL, name TEXT NOT NULL, description TEXT NOT NULL,
            builtin INTEGER NOT NULL, PRIMARY KEY(org_id, id), UNIQUE(org_id, name)) STRICT;
        CREATE TABLE IF NOT EXISTS group_roles(
            org_id INTEGER NOT NULL, group_id TEXT NOT NULL, role_id TEXT NOT NULL,
            PRIMARY KEY(org_id, group_id, role_id)) STRICT, WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS group_members(
            org_id INTEGER NOT NULL, group_id TEXT NOT NULL, user_id TEXT NOT NULL,
            PRIMARY KEY(org_id, group_id, user_id)) STRICT, WITHOUT ROWID;
        CREATE INDEX IF NOT EXISTS group_members_by_user ON group_members(user_id, org_id);
        CREATE TABLE IF NOT EXISTS sessions(
            id TEXT PRIMARY KEY, user_id TEXT NOT NULL, secret_hash BLOB NOT NULL,
            created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, last_seen INTEGER NOT NULL,
            method TEXT NOT NULL DEFAULT 'password') STRICT;
        CREATE INDEX IF NOT EXISTS sessions_by_user ON sessions(user_id);
        CREATE TABLE IF NOT EXISTS api_keys(
            id TEXT PRIMARY KEY, org_id INTEGER NOT NULL, name TEXT NOT NULL, scopes TEXT NOT NULL,
            secret_hash BLOB NOT NULL, created_by TEXT, created_at INTEGER NOT NULL,
            expires_at INTEGER, revoked_at INTEGER, last_used_at INTEGER) STRICT;
        CREATE TABLE IF NOT EXISTS invitations(
            id TEXT PRIMARY KEY, org_id INTEGER NOT NULL, email TEXT NOT NULL, groups TEXT NOT NULL,
            secret_hash BLOB NOT NULL, created_by TEXT NOT NULL, created_at INTEGER NOT NULL,
            expires_at INTEGER NOT NULL, accepted_at INTEGER, revoked_at INTEGER) STRICT;
        CREATE INDEX IF NOT EXISTS invitations_by_org ON invitations(org_id, created_at);
        CREATE TABLE IF NOT EXISTS exports(
            id TEXT PRIMARY KEY, org_id INTEGER NOT NULL, name TEXT NOT NULL, format TEXT NOT NULL,
            filters TEXT NOT NULL, status TEXT NOT NULL, error TEXT, requested_by TEXT NOT NULL,
            created_at INTEGER NOT NULL, started_at INTEGER, finished_at INTEGER, expires_at INTEGER,
            row_count INTEGER NOT NULL DEFAULT 0, size_bytes INTEGER NOT NULL DEFAULT 0, sha256 TEXT,
            manifest TEXT, kind TEXT NOT NULL DEFAULT 'query') STRICT;
        CREATE INDEX IF NOT EXISTS exports_by_org ON exports(org_id, created_at);
        CREATE INDEX IF NOT EXISTS exports_by_status ON exports(status, created_at);
        CREATE INDEX IF NOT EXISTS api_keys_by_org ON api_keys(org_id, created_at);
        CREATE TABLE IF NOT EXISTS org_settings(
            org_id INTEGER PRIMARY KEY, hot_days INTEGER NOT NULL, archive_days INTEGER NOT NULL,
            legal_hold INTEGER NOT NULL, legal_hold_reason TEXT, updated_at INTEGER NOT NULL,
            updated_by TEXT, read_audit INTEGER NOT NULL DEFAULT 1, default_range TEXT) STRICT;
        CREATE TABLE IF NOT EXISTS destinations(
            org_id INTEGER NOT NULL, id TEXT NOT NULL, config TEXT NOT NULL, secret BLOB,
            created_by TEXT NOT NULL, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,
            cursor INTEGER NOT NULL, state TEXT NOT NULL, error TEXT, failing_since INTEGER,
            delivered_at INTEGER, delivered INTEGER NOT NULL DEFAULT 0, lease_owner TEXT, lease_until INTEGER,
            PRIMARY KEY(org_id, id)) STRICT;
        CREATE TABLE IF NOT EXISTS documents(
            org_id INTEGER NOT NULL, kind TEXT NOT NULL, id TEXT NOT NULL, body TEXT NOT NULL,
            updated_at INTEGER NOT NULL, PRIMARY KEY(org_id, kind, id)) STRICT, WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS user_documents(
            user_id TEXT NOT NULL, kind TEXT NOT NULL, body TEXT NOT NULL, updated_at INTEGER NOT NULL,
            PRIMARY KEY(user_id, kind)) STRICT, WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS pruned_leaves(k INTEGER PRIMARY KEY, leaf BLOB NOT NULL) STRICT;
        -- A prune under way: the org's events of the month already moved to `pruned_leaves`, and the
        -- last archived seq (see retention::prune_begin).
        CREATE TABLE IF NOT EXISTS pruning(
            org_id INTEGER NOT NULL, month INTEGER NOT NULL, moved INTEGER NOT NULL, last_seq INTEGER NOT NULL,
            PRIMARY KEY(org_id, month)) STRICT, WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS minute_counts(
            org_id INTEGER NOT NULL, minute INTEGER NOT NULL, n INTEGER NOT NULL, failures INTEGER NOT NULL,
            PRIMARY KEY(org_id, minute)) STRICT, WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS key_blocks(
            b INTEGER PRIMARY KEY, lo INTEGER NOT NULL, hi INTEGER NOT NULL) STRICT;
        CREATE TABLE IF NOT EXISTS action_slots(
            org_id INTEGER NOT NULL, action INTEGER NOT NULL, slot INTEGER NOT NULL, n INTEGER NOT NULL,
            failures INTEGER NOT NULL, PRIMARY KEY(org_id, action, slot)) STRICT, WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS dense_slots(
            org_id INTEGER NOT NULL, slot INTEGER NOT NULL, PRIMARY KEY(org_id, slot)) STRICT, WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS field_slots(
            org_id INTEGER NOT NULL, field INTEGER NOT NULL, value INTEGER NOT NULL, slot INTEGER NOT NULL,
            n INTEGER NOT NULL, failures INTEGER NOT NULL,
            PRIMARY KEY(org_id, field, value, slot)) STRICT, WITHOUT ROWID;
        ",
    )?;
    crate::ids::create(conn)?;
    conn.execute_batch(crate::body::CREATE)?;
    let version: Option<i64> =
        conn.query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |r| r.get(0)).ok();
    match version {
        None => {
            conn.execute("INSERT INTO meta(key, value) VALUES ('schema_version', ?1)", [SCHEMA_VERSION])?;
        }
        Some(v) if v == SCHEMA_VERSION => {}
        // Version 1 let ingest write `source: "trail"`: every event already in an org's log may be
        // either, so Trail's own records are told apart from the current size onwards. One
        // transaction: an interrupted migration leaves the old version and runs again.
        // The histogram's per-minute counts are built from the events already stored, month by month,
        // in the same transaction.
        Some(v @ 1..=13) => {
            let tx = conn.unchecked_transaction()?;
            let months: Vec<u32> = tx
                .prepare("SELECT month FROM partitions ORDER BY month")?
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            if v == 1 {
                tx.execute_batch(
                    "ALTER TABLE orgs ADD COLUMN self_audit_from INTEGER NOT NULL DEFAULT 0;
                     UPDATE orgs SET self_audit_from = tree_size;",
                )?;
                for &month in &months {
                    tx.execute(&backfill_minute_counts(month), [])?;
                }
            }
            // Versions 1 and 2 kept a month's full-text index beside its events; it is rebuilt in
            // `trail-index.db` by the indexer, and queries stay exact while it catches up.
            if v <= 2 {
                for &month in &months {
                    tx.execute_batch(&format!("DROP TABLE IF EXISTS {}", fts_table(month)))?;
                }
            }
            // Versions 1 to 3 kept every id in one B-tree: it becomes the id map's first run.
            if v <= 3 {
                crate::ids::adopt_event_ids(&tx)?;
            }
            // Version 5 records reads of the log, unless an org turns it off, and lets an org choose
            // the console's opening time range.
            if v <= 4 && !has_column(&tx, "org_settings", "read_audit")? {
                tx.execute_batch(
                    "ALTER TABLE org_settings ADD COLUMN read_audit INTEGER NOT NULL DEFAULT 1",
                )?;
            }
            if v <= 4 && !has_column(&tx, "org_settings", "default_range")? {
                tx.execute_batch("ALTER TABLE org_settings ADD COLUMN default_range TEXT")?;
            }
            // Version 5 names an export's kind; before, a restore was marked by `"archive": true` in
            // its filters (which stays in the old rows, and in their signed manifests).
            if v <= 4 && !has_column(&tx, "exports", "kind")? {
                tx.execute_batch(
                    "ALTER TABLE exports ADD COLUMN kind TEXT NOT NULL DEFAULT 'query';
                     UPDATE exports SET kind = 'restore' WHERE json_extract(filters, '$.archive') = 1;",
                )?;
            }
            // Version 6 streams logs to destinations and keeps org documents (saved searches, alert
            // rules and their firings): their tables are created above, empty. Version 7 keeps users'
            // documents (second factors), likewise.
            // Version 8 records how a session was signed in; every earlier one used a password.
            if v <= 7 && !has_column(&tx, "sessions", "method")? {
                tx.execute_batch("ALTER TABLE sessions ADD COLUMN method TEXT NOT NULL DEFAULT 'password'")?;
            }
            // Version 9 counts events per action and ten minutes: built from the stored events (the
            // table was created above, empty; an interrupted migration left it empty and runs again).
            if v <= 8 {
                tx.execute("DELETE FROM action_slots", [])?;
                for &month in &months {
                    tx.execute(&backfill_action_slots(month), [])?;
                }
            }
            // Version 10 counts events per field value and ten minutes where an org's ten minutes are
            // dense: which are is read from `minute_counts`, their counts from the stored events.
            if v <= 9 {
                tx.execute_batch("DELETE FROM dense_slots; DELETE FROM field_slots;")?;
                tx.execute(&mark_dense_slots(), [])?;
                for &month in &months {
                    for field in trail_model::query::CountedField::ALL {
                        tx.execute(&backfill_field_slots(month, field, ""), [])?;
                    }
                }
            }
            // Version 13 keeps the span of times of each block of keys: built from the stored events
            // (an interrupted migration left the table empty and runs again).
            if v <= 12 {
                tx.execute("DELETE FROM key_blocks", [])?;
                for &month in &months {
                    tx.execute(&backfill_key_blocks(month), [])?;
                }
            }
            // Version 14 hashes the Merkle nodes below `MIN_STORED_LEVEL` from their events, and keys
            // the id map by the ids' hashes.
            if v <= 13 {
                tx.execute("DELETE FROM tree_nodes WHERE level < ?1", [MIN_STORED_LEVEL])?;
                crate::ids::rekey(&tx)?;
            }
            tx.execute("UPDATE meta SET value = ?1 WHERE key = 'schema_version'", [SCHEMA_VERSION])?;
            tx.commit()?;
            // The pages a migration freed are given back by the writer's first steps (`space`).
        }
        Some(v) => {
            return Err(rusqlite::Error::InvalidParameterName(format!(
                "database schema version {v} is newer than this trail ({SCHEMA_VERSION})"
            )));
        }
    }
    Ok(())
}

/// Whether a table has a column (a migration that adds one may meet a table created with it).
pub(crate) fn has_column(conn: &Connection, table: &str, column: &str) -> rusqlite::Result<bool> {
    let mut st = conn.prepare(&format!("SELECT 1 FROM pragma_table_info('{table}') WHERE name = ?1"))?;
    st.exists([column])
}

/// Adds one month partition's events to `key_blocks` (a migration; the writer keeps them after). A
/// block can hold events of two months: the second month widens what the first wrote.
pub fn backfill_key_blocks(month: u32) -> String {
    format!(
        "INSERT INTO key_blocks(b, lo, hi)
         SELECT k >> {KEY_BLOCK_BITS} AS b, min(ts), max(ts) FROM {} WHERE true GROUP BY b
         ON CONFLICT(b) DO UPDATE SET lo = min(lo, excluded.lo), hi = max(hi, excluded.hi)",
        events_table(month)
    )
}

/// Adds one month partition's events to `action_slots` (a migration; the writer keeps them after).
pub fn backfill_action_slots(month: u32) -> String {
    let s = slot_sql("ts");
    format!(
        "INSERT INTO action_slots(org_id, action, slot, n, failures)
         SELECT org, action, {s} AS slot, count(*), sum(outcome) FROM {} WHERE true GROUP BY org, action, slot
         ON CONFLICT(org_id, action, slot) DO UPDATE SET n = n + excluded.n, failures = failures + excluded.failures",
        events_table(month)
    )
}

/// Marks every org's ten minutes that hold [`DENSE_SLOT`] events or more as dense (a migration; the
/// writer marks them after).
fn mark_dense_slots() -> String {
    let slot = "(CASE WHEN minute >= 0 THEN minute / 10 ELSE (minute - 9) / 10 END)";
    format!(
        "INSERT INTO dense_slots(org_id, slot)
         SELECT org_id, {slot} AS s FROM minute_counts GROUP BY org_id, s HAVING sum(n) >= {DENSE_SLOT}"
    )
}

/// Counts one field's values in the dense slots of one month partition into `field_slots`, the
/// slots narrowed by `and` (SQL on `d.org_id` and `d.slot`, e.g. one org's one slot, with its
/// parameters). Ten minutes never straddle a month (months start at midnight), so a slot's events
/// are all in one partition.
pub fn backfill_field_slots(month: u32, field: trail_model::query::CountedField, and: &str) -> String {
    let (col, code) = (field_column(field), field.code());
    let (lo, hi) = (
        slot_of(trail_model::time::month_start(month)),
        slot_of(trail_model::time::month_start(trail_model::time::next_month(month))),
    );
    format!(
        "INSERT INTO field_slots(org_id, field, value, slot, n, failures)
         SELECT d.org_id, {code}, e.{col}, d.slot, count(*), sum(e.outcome)
         FROM dense_slots d JOIN {} e ON e.org = d.org_id AND e.ts >= d.slot * {SLOT} AND e.ts < (d.slot + 1) * {SLOT}
         WHERE d.slot >= {lo} AND d.slot < {hi} AND e.{col} IS NOT NULL{and}
         GROUP BY d.org_id, e.{col}, d.slot
         ON CONFLICT(org_id, field, value, slot) DO UPDATE
         SET n = n + excluded.n, failures = failures + excluded.failures",
        events_table(month)
    )
}

/// SQL for [`slot_of`] over a column.
fn slot_sql(col: &str) -> String {
    format!("(CASE WHEN {col} >= 0 THEN {col} / {SLOT} ELSE ({col} - {}) / {SLOT} END)", SLOT - 1)
}

/// Adds one month partition's events to `minute_counts` (a migration; the writer keeps them after).
pub fn backfill_minute_counts(month: u32) -> String {
    let m = minute_sql("ts");
    format!(
        "INSERT INTO minute_counts(org_id, minute, n, failures)
         SELECT org, {m} AS minute, count(*), sum(outcome) FROM {} WHERE true GROUP BY org, minute
         ON CONFLICT(org_id, minute) DO UPDATE SET n = n + excluded.n, failures = failures + excluded.failures",
        events_table(month)
    )
}

pub fn events_table(month: u32) -> String {
    format!("ev_{month}")
}

pub fn fts_table(month: u32) -> String {
    format!("fts_{month}")
}

/// Creates one month's event table and its time index.
pub fn create_partition(conn: &Connection, month: u32) -> rusqlite::Result<()> {
    let ev = events_table(month);
    conn.execute_batch(&format!(
        "
        CREATE TABLE IF NOT EXISTS {ev}(
            k INTEGER PRIMARY KEY, org INTEGER NOT NULL, ts INTEGER NOT NULL,
            actor INTEGER NOT NULL, action INTEGER NOT NULL, ttype INTEGER NOT NULL, tid INTEGER,
            project INTEGER, outcome INTEGER NOT NULL, source INTEGER, body BLOB NOT NULL,
            leaf BLOB NOT NULL) STRICT;
        CREATE INDEX IF NOT EXISTS {ev}_time ON {ev}(org, ts);
        INSERT OR IGNORE INTO partitions(month) VALUES ({month});
        "
    ))
}
