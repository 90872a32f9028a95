//! The PostgreSQL schema: versioned, append-only migrations applied at open, and the monthly event
//! partitions created on demand.
//!
//! Migrations run in one transaction under `pg_advisory_xact_lock`, so any number of nodes may start at
//! once: the first applies them, the others wait and find nothing left to do. A database migrated by a
//! newer Trail is refused rather than guessed at. A migration, once released, is never edited: a
//! change is a new entry at the end of [`MIGRATIONS`].
//!
//! Every table is keyed by `org` (a `bigint`) first, so the schema can be distributed by org (Citus):
//! one org's events, ids, tree nodes, checkpoints, roles, groups, keys, invitations and exports live
//! together. `orgs` (slug → id), `users` and `sessions` are global and small (reference tables).
//!
//! Events are range-partitioned by `ts` into one table per UTC month (`events_YYYYMM`), so retention
//! drops a month with `DROP TABLE` rather than deleting rows. Text columns that are compared or sorted
//! use the `"C"` collation: byte order, as Rust sorts, whatever the database's locale. This module must
//! never change a released migration or create anything outside a migration but month partitions.

use deadpool_postgres::{GenericClient, Object};
use trail_model::time::{month_start, next_month};
use trail_store::{Result, StoreError};

use crate::pg_error;

/// Advisory lock key held while migrating ("trail" in ASCII, then 1).
const MIGRATION_LOCK: i64 = 0x7472_6169_6c00_0001;
/// Each node holds the two-key advisory lock `(NODE_LOCK, its backend pid)` on a connection of its own
/// while it runs, so other nodes can tell whether the node that claimed an export is still alive.
pub(crate) const NODE_LOCK: i32 = 0x7472_6169;
/// Advisory lock keys for creating (or dropping) one month's partition are this plus the month.
pub(crate) const PARTITION_LOCK_BASE: i64 = 0x7472_6169_6c01_0000;

/// `(version, description, SQL)`, applied in order.
/// The width of a `minute_counts` row, in microseconds.
pub(crate) const MINUTE: i64 = trail_model::query::COUNTED_MINUTE;
/// The width of an `action_slots` row (ten minutes), in microseconds.
pub(crate) const SLOT: i64 = trail_model::query::COUNTED_SLOT;

pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "initial schema", V1),
    (2, "where source trail became the server's alone; per-minute event counts", V2),
    (3, "read auditing and the console's opening time range, org settings; an export's kind", V3),
    (4, "streaming destinations; org documents (saved searches, alert rules, firings)", V4),
    (5, "user documents (second factors)", V5),
    (6, "how each session was signed in (password or single sign-on)", V6),
    (7, "events and failures per action and ten minutes, for histograms by action", V7),
    (8, "events and failures per field value and ten minutes, where an org's ten minutes are dense", V8),
];

/// An org's ten minutes get counts per field value once they hold this many events (the same as the
/// embedded store's `DENSE_SLOT`, which says why).
pub(crate) const DENSE_SLOT: i64 = 32;

/// Counts per actor, target type, project and source (`field`: 0 to 3, `trail_model::query::
/// CountedField::code`) and ten minutes, kept only for an org's dense ten minutes (`dense_slots`,
/// [`DENSE_SLOT`] events or more): built here from `minute_counts` and the events already stored,
/// then kept by every append in its transaction.
const V8: &str = r#"
CREATE TABLE dense_slots(
    org bigint NOT NULL,
    slot bigint NOT NULL,
    PRIMARY KEY (org, slot));
CREATE TABLE field_slots(
    org bigint NOT NULL,
    field smallint NOT NULL,
    value text COLLATE "C" NOT NULL,
    slot bigint NOT NULL,
    n bigint NOT NULL,
    failures bigint NOT NULL,
    PRIMARY KEY (org, field, value, slot));
INSERT INTO dense_slots(org, slot)
    SELECT org, floor(minute / 10.0)::bigint AS slot FROM minute_counts GROUP BY org, slot HAVING sum(n) >= 32;
INSERT INTO field_slots(org, field, value, slot, n, failures)
    SELECT d.org, x.field, x.value, d.slot, count(*), count(*) FILTER (WHERE e.failure)
    FROM dense_slots d
    JOIN events e ON e.org = d.org AND e.ts >= d.slot * 600000000 AND e.ts < (d.slot + 1) * 600000000
    CROSS JOIN LATERAL (VALUES (0::smallint, e.actor), (1::smallint, e.target_type), (2::smallint, e.project),
                               (3::smallint, e.source)) AS x(field, value)
    WHERE x.value IS NOT NULL
    GROUP BY d.org, x.field, x.value, d.slot;
"#;

/// Counts per action and ten minutes, built from the events already stored and kept by every append
/// in its transaction (a histogram by action sums them instead of counting rows).
const V7: &str = r#"
CREATE TABLE action_slots(
    org bigint NOT NULL,
    action text COLLATE "C" NOT NULL,
    slot bigint NOT NULL,
    n bigint NOT NULL,
    failures bigint NOT NULL,
    PRIMARY KEY (org, action, slot));
INSERT INTO action_slots(org, action, slot, n, failures)
    SELECT org, action, floor(ts / 600000000.0)::bigint AS slot, count(*), count(*) FILTER (WHERE failure)
    FROM events GROUP BY org, action, slot;
"#;

/// A session records how its person signed in: an org that turns password sign-in off admits only
/// sessions of its own identity provider. Sessions from before were all made with a password.
const V6: &str = r#"
ALTER TABLE sessions ADD COLUMN method text COLLATE "C" NOT NULL DEFAULT 'password';
"#;

/// A user's documents: their TOTP enrolment, and what else a user (not an org) owns.
const V5: &str = r#"
CREATE TABLE user_documents(
    user_id text COLLATE "C" NOT NULL,
    kind text COLLATE "C" NOT NULL,
    body text NOT NULL,
    updated_at bigint NOT NULL,
    PRIMARY KEY (user_id, kind));
"#;

/// Where each org's log is streamed, with delivery progress and the lease that keeps one node
/// delivering each destination.
const V4: &str = r#"
CREATE TABLE destinations(
    org bigint NOT NULL,
    id text COLLATE "C" NOT NULL,
    config text NOT NULL,
    secret bytea,
    created_by text NOT NULL,
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL,
    cursor bigint NOT NULL,
    state text NOT NULL,
    error text,
    failing_since bigint,
    delivered_at bigint,
    delivered bigint NOT NULL DEFAULT 0,
    lease_owner text,
    lease_until bigint,
    PRIMARY KEY (org, id));
CREATE TABLE documents(
    org bigint NOT NULL,
    kind text COLLATE "C" NOT NULL,
    id text COLLATE "C" NOT NULL,
    body text NOT NULL,
    updated_at bigint NOT NULL,
    PRIMARY KEY (org, kind, id));
"#;

/// Before version 2, ingest could write `source: "trail"`: Trail's own records are told apart from
/// each org's current size onwards (new orgs: from 0). `minute_counts` holds each org's events and
/// failures per minute of `ts` (histograms without filters, or by outcome alone, read it), built here
/// from the events already stored and kept by every append in its transaction.
const V3: &str = "ALTER TABLE org_settings ADD COLUMN read_audit boolean NOT NULL DEFAULT true;
ALTER TABLE org_settings ADD COLUMN default_range text;
ALTER TABLE exports ADD COLUMN kind text NOT NULL DEFAULT 'query';
UPDATE exports SET kind = 'restore' WHERE filters::jsonb ->> 'archive' = 'true';";

const V2: &str = r#"
ALTER TABLE log_heads ADD COLUMN self_audit_from bigint NOT NULL DEFAULT 0;
UPDATE log_heads SET self_audit_from = tree_size;
CREATE TABLE minute_counts(
    org bigint NOT NULL,
    minute bigint NOT NULL,
    n bigint NOT NULL,
    failures bigint NOT NULL,
    PRIMARY KEY (org, minute));
INSERT INTO minute_counts(org, minute, n, failures)
    SELECT org, floor(ts / 60000000.0)::bigint AS minute, count(*), count(*) FILTER (WHERE failure)
    FROM events GROUP BY org, minute;
"#;

const V1: &str = r#"
CREATE TABLE orgs(
    org bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    slug text COLLATE "C" NOT NULL UNIQUE,
    name text NOT NULL,
    created_at bigint NOT NULL);

-- The log head: appends lock this row (FOR UPDATE), which serializes one org's appends across nodes.
CREATE TABLE log_heads(
    org bigint PRIMARY KEY,
    tree_size bigint NOT NULL DEFAULT 0);

-- `search` is the event's searchable text as lowercase tokens joined by single spaces
-- (trail_model::text); `body` the canonical bytes, the only full copy of the event.
CREATE TABLE events(
    org bigint NOT NULL,
    ts bigint NOT NULL,
    seq bigint NOT NULL,
    actor text COLLATE "C" NOT NULL,
    action text COLLATE "C" NOT NULL,
    target_type text COLLATE "C" NOT NULL,
    target_id text COLLATE "C",
    project text COLLATE "C",
    failure boolean NOT NULL,
    source text COLLATE "C",
    leaf bytea NOT NULL,
    search text COLLATE "C" NOT NULL,
    body bytea NOT NULL,
    PRIMARY KEY (org, ts, seq)
) PARTITION BY RANGE (ts);
CREATE INDEX events_by_seq ON events(org, seq);
CREATE INDEX events_by_actor ON events(org, actor, ts, seq);
-- Free text: the tokens as lexemes (no positions) find candidates; `search LIKE` then checks the
-- exact phrase-and-prefix semantics.
CREATE INDEX events_by_token ON events USING gin (array_to_tsvector(string_to_array(search, ' ')));

-- Idempotency and lookups by id: (org, id) → seq and the event's time (which names its partition).
CREATE TABLE event_ids(
    org bigint NOT NULL,
    id text COLLATE "C" NOT NULL,
    seq bigint NOT NULL,
    ts bigint NOT NULL,
    PRIMARY KEY (org, id));

-- Complete Merkle subtree hashes of level 2 and up; levels 0 and 1 come from the events' leaves.
CREATE TABLE tree_nodes(
    org bigint NOT NULL,
    level smallint NOT NULL,
    idx bigint NOT NULL,
    hash bytea NOT NULL,
    PRIMARY KEY (org, level, idx));

-- Leaf hashes of events retention removed, so proofs over them still work.
CREATE TABLE pruned_leaves(
    org bigint NOT NULL,
    seq bigint NOT NULL,
    leaf bytea NOT NULL,
    PRIMARY KEY (org, seq));

-- One root per size, ever: the primary key makes a second, different checkpoint impossible.
CREATE TABLE checkpoints(
    org bigint NOT NULL,
    size bigint NOT NULL,
    root bytea NOT NULL,
    note text NOT NULL,
    created_at bigint NOT NULL,
    PRIMARY KEY (org, size));

CREATE TABLE users(
    id text COLLATE "C" PRIMARY KEY,
    email text COLLATE "C" NOT NULL UNIQUE,
    password_hash text NOT NULL,
    server_admin boolean NOT NULL,
    created_at bigint NOT NULL);

CREATE TABLE sessions(
    id text COLLATE "C" PRIMARY KEY,
    user_id text COLLATE "C" NOT NULL,
    secret_hash bytea NOT NULL,
    created_at bigint NOT NULL,
    expires_at bigint NOT NULL,
    last_seen bigint NOT NULL);
CREATE INDEX sessions_by_user ON sessions(user_id);

CREATE TABLE roles(
    org bigint NOT NULL,
    id text COLLATE "C" NOT NULL,
    name text COLLATE "C" NOT NULL,
    description text NOT NULL,
    permissions text[] NOT NULL,
    builtin boolean NOT NULL,
    PRIMARY KEY (org, id),
    UNIQUE (org, name));

CREATE TABLE groups(
    org bigint NOT NULL,
    id text COLLATE "C" NOT NULL,
    name text COLLATE "C" NOT NULL,
    description text NOT NULL,
    builtin boolean NOT NULL,
    PRIMARY KEY (org, id),
    UNIQUE (org, name));

CREATE TABLE group_roles(
    org bigint NOT NULL,
    group_id text COLLATE "C" NOT NULL,
    role_id text COLLATE "C" NOT NULL,
    PRIMARY KEY (org, group_id, role_id));

CREATE TABLE group_members(
    org bigint NOT NULL,
    group_id text COLLATE "C" NOT NULL,
    user_id text COLLATE "C" NOT NULL,
    PRIMARY KEY (org, group_id, user_id));
CREATE INDEX group_members_by_user ON group_members(user_id, org);

CREATE TABLE api_keys(
    org bigint NOT NULL,
    id text COLLATE "C" NOT NULL,
    name text NOT NULL,
    scopes text[] NOT NULL,
    secret_hash bytea NOT NULL,
    created_by text,
    created_at bigint NOT NULL,
    expires_at bigint,
    revoked_at bigint,
    last_used_at bigint,
    PRIMARY KEY (org, id));
-- Keys authenticate by id alone (not unique on its own: a distributed table's unique keys include org).
CREATE INDEX api_keys_by_id ON api_keys(id);

CREATE TABLE invitations(
    org bigint NOT NULL,
    id text COLLATE "C" NOT NULL,
    email text NOT NULL,
    groups text[] NOT NULL,
    secret_hash bytea NOT NULL,
    created_by text NOT NULL,
    created_at bigint NOT NULL,
    expires_at bigint NOT NULL,
    accepted_at bigint,
    revoked_at bigint,
    PRIMARY KEY (org, id));
CREATE INDEX invitations_by_id ON invitations(id);

CREATE TABLE exports(
    org bigint NOT NULL,
    id text COLLATE "C" NOT NULL,
    name text NOT NULL,
    format text NOT NULL,
    filters text NOT NULL,
    status text NOT NULL,
    error text,
    requested_by text NOT NULL,
    created_at bigint NOT NULL,
    started_at bigint,
    finished_at bigint,
    expires_at bigint,
    row_count bigint NOT NULL DEFAULT 0,
    size_bytes bigint NOT NULL DEFAULT 0,
    sha256 text,
    manifest text,
    -- The node running it: the backend pid of that node's liveness connection (see requeue).
    claimed_by integer,
    PRIMARY KEY (org, id));
CREATE INDEX exports_pending ON exports(created_at, id) WHERE status = 'pending';
CREATE INDEX exports_by_status ON exports(status, expires_at);

CREATE TABLE org_settings(
    org bigint PRIMARY KEY,
    hot_days integer NOT NULL,
    archive_days integer NOT NULL,
    legal_hold boolean NOT NULL,
    legal_hold_reason text,
    updated_at bigint NOT NULL,
    updated_by text);
"#;

/// Applies pending migrations, holding the migration lock for the whole transaction.
pub async fn migrate(client: &mut Object) -> Result<()> {
    let tx = client.transaction().await.map_err(pg_error)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(pg_error)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations(
             version integer PRIMARY KEY, description text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await
    .map_err(pg_error)?;
    let applied: Vec<i32> = tx
        .query("SELECT version FROM schema_migrations ORDER BY version", &[])
        .await
        .map_err(pg_error)?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<std::result::Result<_, _>>()
        .map_err(pg_error)?;
    let newest_known = MIGRATIONS.last().map_or(0, |m| m.0);
    if let Some(v) = applied.iter().find(|v| **v > newest_known) {
        return Err(StoreError::Corrupt(format!(
            "database schema version {v} is newer than this trail ({newest_known}); upgrade trail"
        )));
    }
    for (version, description, sql) in MIGRATIONS.iter().filter(|m| !applied.contains(&m.0)) {
        tracing::info!(version, description, "applying database migration");
        tx.batch_execute(sql).await.map_err(pg_error)?;
        tx.execute(
            "INSERT INTO schema_migrations(version, description) VALUES ($1, $2)",
            &[version, description],
        )
        .await
        .map_err(pg_error)?;
    }
    tx.commit().await.map_err(pg_error)
}

/// Refuses a server that cannot keep Trail's promises: text must be UTF-8, and a commit must be
/// durable when it returns (`synchronous_commit` not `off`).
pub async fn check_server(client: &Object) -> Result<()> {
    let row = client
        .query_one(
            "SELECT current_setting('server_encoding'), current_setting('synchronous_commit'),
                    current_setting('fsync')",
            &[],
        )
        .await
        .map_err(pg_error)?;
    let get = |i: usize| row.try_get::<_, String>(i).map_err(pg_error);
    let (encoding, sync, fsync) = (get(0)?, get(1)?, get(2)?);
    if encoding != "UTF8" {
        return Err(StoreError::Unavailable(format!(
            "the database's encoding is {encoding}; Trail needs UTF8 (CREATE DATABASE … ENCODING 'UTF8')"
        )));
    }
    if sync == "off" {
        return Err(StoreError::Unavailable(
            "synchronous_commit is off, so an acknowledged event could be lost; set it to on \
             (e.g. ALTER ROLE … SET synchronous_commit = on)"
                .into(),
        ));
    }
    if fsync != "on" {
        tracing::warn!("PostgreSQL runs with fsync off: a crash of the database host can lose events");
    }
    Ok(())
}

/// The partition holding events whose `ts` falls in `month` (`YYYYMM`).
pub fn partition(month: u32) -> String {
    format!("events_{month}")
}

/// Creates a month's partition if it does not exist, in its own short transaction: DDL on a
/// partitioned table locks its parent, which must not be held for the length of an append.
pub(crate) async fn create_partition(client: &mut Object, month: u32) -> Result<()> {
    let tx = client.transaction().await.map_err(pg_error)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&(PARTITION_LOCK_BASE + i64::from(month))])
        .await
        .map_err(pg_error)?;
    let exists: bool = tx
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&partition(month)])
        .await
        .and_then(|r| r.try_get(0))
        .map_err(pg_error)?;
    if !exists {
        tracing::info!(month, "creating event partition");
        tx.batch_execute(&format!(
            "CREATE TABLE {} PARTITION OF events FOR VALUES FROM ({}) TO ({})",
            partition(month),
            month_start(month),
            month_start(next_month(month))
        ))
        .await
        .map_err(pg_error)?;
    }
    tx.commit().await.map_err(pg_error)
}

/// The months that have a partition, oldest first.
pub(crate) async fn partitions<C: GenericClient>(client: &C) -> Result<Vec<u32>> {
    let rows = client
        .query(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'events'::regclass",
            &[],
        )
        .await
        .map_err(pg_error)?;
    let mut months = Vec::with_capacity(rows.len());
    for r in rows {
        let name: String = r.try_get(0).map_err(pg_error)?;
        if let Some(m) = name.strip_prefix("events_").and_then(|m| m.parse().ok()) {
            months.push(m);
        }
    }
    months.sort_unstable();
    Ok(months)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_migration_marks_dense_slots_at_the_writers_threshold() {
        assert!(super::V8.contains(&format!("HAVING sum(n) >= {};", super::DENSE_SLOT)));
    }
}
