//! Appending events: one transaction per call, serialized per org across every node by a row lock
//! on the org's log head, never by anything shared between orgs.
//!
//! Inside the transaction: lock `log_heads` (`FOR UPDATE`), find duplicates among the batch's ids,
//! take the Merkle frontier (this node's cached one if the head still has its size, else reloaded from
//! at most 64 stored nodes), stamp each new event's `seq` into its canonical bytes, hash it, and write
//! the events, their ids, the completed tree nodes of level 2 and up, and the new head. COMMIT returns
//! after the WAL is flushed (`synchronous_commit`), and only then does the caller get its answer.
//!
//! Everything that does not depend on the log head (ids, canonical bytes, search text) is computed
//! before the lock is taken. This module must never write an event outside that locked transaction.

use std::collections::{BTreeSet, HashMap};

use deadpool_postgres::{GenericClient, Object, Transaction};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use trail_merkle::leaf_hash;
use trail_model::time::{Micros, month_of};
use trail_model::{NewEvent, Outcome, StoredEvent, canonical, text};
use trail_store::{Appended, Result, StoreError, mint_event_id};

use crate::integrity::{MIN_STORED_LEVEL, load_frontier};
use crate::{Inner, pg_error, schema, signed, unsigned};

/// An event made ready before the lock is taken; the transaction only stamps `seq` and hashes.
#[derive(Debug)]
pub(crate) struct Prepared {
    id: String,
    time: Micros,
    /// Whether the client gave `time` (else it is `received_at`), for telling a retry from a conflict.
    time_given: bool,
    month: u32,
    /// Canonical bytes; `seq` is stamped at append (overwritten, so a retried append may restamp).
    body: Vec<u8>,
    /// The searchable text's tokens joined by single spaces (`trail_model::text`).
    search: String,
    actor: String,
    action: String,
    target_type: String,
    target_id: Option<String>,
    project: Option<String>,
    source: Option<String>,
    failure: bool,
}

impl Prepared {
    pub(crate) fn new(org: &str, e: NewEvent, received_at: Micros) -> Self {
        let id = e.id.clone().unwrap_or_else(mint_event_id);
        let time_given = e.time.is_some();
        let s = StoredEvent::accept(e, org, 0, id, received_at);
        let body = canonical::encode(&s);
        let search = text::tokens(&text::searchable_text(&s)).join(" ");
        Self {
            time_given,
            time: s.time,
            month: month_of(s.time),
            body,
            search,
            failure: s.outcome == Outcome::Failure,
            id: s.id,
            actor: s.actor.id,
            action: s.action,
            target_type: s.target.kind,
            target_id: s.target.id,
            project: s.project,
            source: s.source,
        }
    }
}

/// Appends to an org's log; see the module documentation.
pub(crate) async fn append(inner: &Inner, slug: &str, mut events: Vec<Prepared>) -> Result<Vec<Appended>> {
    let org = inner.org_id(slug).await?;
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let months: BTreeSet<u32> = events.iter().map(|e| e.month).collect();
    let queue = match inner.appending.lock() {
        Ok(mut q) => q.entry(org).or_default().clone(),
        Err(_) => return Err(StoreError::Internal("the append queue lock is poisoned".into())),
    };
    let _turn = queue.lock().await;
    let mut client = inner.conn().await?;
    ensure_partitions(inner, &mut client, &months).await?;
    match write(inner, &mut client, org, &mut events).await? {
        Some(done) => Ok(done),
        None => {
            // Another node's retention dropped a month this node thought existed: forget what it
            // knows of partitions, create the missing one and try once more.
            if let Ok(mut p) = inner.partitions.lock() {
                p.clear();
            }
            ensure_partitions(inner, &mut client, &months).await?;
            write(inner, &mut client, org, &mut events)
                .await?
                .ok_or_else(|| StoreError::Unavailable("an event partition keeps disappearing".into()))
        }
    }
}

async fn ensure_partitions(inner: &Inner, client: &mut Object, months: &BTreeSet<u32>) -> Result<()> {
    for &month in months {
        let known = inner.partitions.lock().map(|p| p.contains(&month)).unwrap_or(false);
        if !known {
            schema::create_partition(client, month).await?;
            if let Ok(mut p) = inner.partitions.lock() {
                p.insert(month);
            }
        }
    }
    Ok(())
}

/// Where the bytes of an id the org has are, for comparing a retry with them.
enum Known {
    Stored(Vec<u8>),
    /// An earlier event of the batch being appended (its bytes already stamped with its seq).
    Batch(usize),
}

/// Column arrays of the new events, inserted with one statement.
#[derive(Debug, Default)]
struct Columns<'a> {
    ts: Vec<i64>,
    seq: Vec<i64>,
    actor: Vec<&'a str>,
    action: Vec<&'a str>,
    target_type: Vec<&'a str>,
    target_id: Vec<Option<&'a str>>,
    project: Vec<Option<&'a str>>,
    failure: Vec<bool>,
    source: Vec<Option<&'a str>>,
    leaf: Vec<&'a [u8]>,
    search: Vec<&'a str>,
    body: Vec<&'a [u8]>,
    id: Vec<&'a str>,
}

/// One attempt; `None` when an insert found no partition for its month.
async fn write(
    inner: &Inner,
    client: &mut Object,
    org: i64,
    events: &mut [Prepared],
) -> Result<Option<Vec<Appended>>> {
    let tx = client.transaction().await.map_err(pg_error)?;
    let head = tx
        .prepare_cached("SELECT tree_size FROM log_heads WHERE org = $1 FOR UPDATE")
        .await
        .map_err(pg_error)?;
    let start: i64 = tx
        .query_opt(&head, &[&org])
        .await
        .map_err(pg_error)?
        .ok_or_else(|| StoreError::NotFound(format!("log of organization {org}")))?
        .try_get(0)
        .map_err(pg_error)?;
    let start = unsigned(start, "tree size")?;

    let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    // Ids the org already has, with the stored bytes (a retry or a conflict is told by content). The
    // id's time names the partition, so the join probes one month's (org, ts, seq) key.
    let st = tx
        .prepare_cached(
            "SELECT i.id, i.seq, e.body FROM event_ids i
             LEFT JOIN events e ON e.org = i.org AND e.ts = i.ts AND e.seq = i.seq
             WHERE i.org = $1 AND i.id = ANY($2)",
        )
        .await
        .map_err(pg_error)?;
    // id → (seq, where its bytes are: stored, or this batch's event at an index)
    let mut known: HashMap<String, (u64, Known)> = HashMap::new();
    for r in tx.query(&st, &[&org, &ids]).await.map_err(pg_error)? {
        let id: String = r.try_get(0).map_err(pg_error)?;
        let seq = unsigned(r.try_get(1).map_err(pg_error)?, "seq")?;
        let body: Option<Vec<u8>> = r.try_get(2).map_err(pg_error)?;
        let body = body.ok_or_else(|| {
            StoreError::Corrupt(format!("event {id} is indexed at seq {seq} but its row is missing"))
        })?;
        known.insert(id, (seq, Known::Stored(body)));
    }

    let cached = inner.frontiers.lock().ok().and_then(|mut f| f.remove(&org)).filter(|f| f.size() == start);
    let mut frontier = match cached {
        Some(f) => f,
        None => load_frontier(&tx, org, start).await?,
    };

    // Stamp, hash and fold every new event into the tree.
    let mut size = start;
    let mut out = Vec::with_capacity(events.len());
    let mut leaves: Vec<[u8; 32]> = Vec::with_capacity(events.len());
    let mut new: Vec<usize> = Vec::with_capacity(events.len());
    let (mut levels, mut indexes, mut hashes): (Vec<i16>, Vec<i64>, Vec<Vec<u8>>) = Default::default();
    for i in 0..events.len() {
        if let Some((seq, at)) = known.get(&events[i].id) {
            let e = &events[i];
            let stored = match at {
                Known::Stored(body) => body.as_slice(),
                Known::Batch(j) => events[*j].body.as_slice(),
            };
            let same = canonical::same_content(stored, &e.body, e.time_given)
                .map_err(|err| StoreError::Corrupt(format!("the stored event at seq {seq}: {err}")))?;
            let (id, seq) = (e.id.clone(), *seq);
            out.push(if same { Appended::Duplicate { id, seq } } else { Appended::Conflict { id, seq } });
            continue;
        }
        let e = &mut events[i];
        canonical::set_seq(&mut e.body, size).map_err(|err| StoreError::Internal(err.to_string()))?;
        let leaf = leaf_hash(&e.body);
        for n in frontier.append(leaf).into_iter().filter(|n| n.level >= MIN_STORED_LEVEL) {
            levels.push(i16::from(n.level));
            indexes.push(signed(n.index, "node index")?);
            hashes.push(n.hash.to_vec());
        }
        leaves.push(leaf);
        new.push(i);
        known.insert(e.id.clone(), (size, Known::Batch(i)));
        out.push(Appended::Created { id: e.id.clone(), seq: size });
        size += 1;
    }

    if !new.is_empty() {
        let mut c = Columns::default();
        for (n, &i) in new.iter().enumerate() {
            let e = &events[i];
            c.ts.push(e.time);
            c.seq.push(signed(start + n as u64, "seq")?);
            c.actor.push(&e.actor);
            c.action.push(&e.action);
            c.target_type.push(&e.target_type);
            c.target_id.push(e.target_id.as_deref());
            c.project.push(e.project.as_deref());
            c.failure.push(e.failure);
            c.source.push(e.source.as_deref());
            c.leaf.push(&leaves[n]);
            c.search.push(&e.search);
            c.body.push(&e.body);
            c.id.push(&e.id);
        }
        match insert_events(&tx, org, &c).await {
            Ok(()) => {}
            Err(e) if e.code() == Some(&SqlState::CHECK_VIOLATION) => return Ok(None),
            Err(e) => return Err(pg_error(e)),
        }
        let st = tx
            .prepare_cached(
                "INSERT INTO event_ids(org, id, seq, ts) SELECT $1::int8, * FROM unnest($2::text[], $3::int8[], $4::int8[])",
            )
            .await
            .map_err(pg_error)?;
        tx.execute(&st, &[&org, &c.id, &c.seq, &c.ts]).await.map_err(pg_error)?;
        // Appends to one org are serialized by the log head's lock, so these upserts never race.
        let st = tx
            .prepare_cached(
                "INSERT INTO minute_counts(org, minute, n, failures)
                 SELECT $1::int8, floor(ts / 60000000.0)::int8 AS m, count(*), count(*) FILTER (WHERE failure)
                 FROM unnest($2::int8[], $3::bool[]) AS t(ts, failure)
                 GROUP BY m ORDER BY m
                 ON CONFLICT (org, minute) DO UPDATE
                 SET n = minute_counts.n + excluded.n, failures = minute_counts.failures + excluded.failures",
            )
            .await
            .map_err(pg_error)?;
        tx.execute(&st, &[&org, &c.ts, &c.failure]).await.map_err(pg_error)?;
        let st = tx
            .prepare_cached(
                "INSERT INTO action_slots(org, action, slot, n, failures)
                 SELECT $1::int8, a, floor(ts / 600000000.0)::int8 AS s, count(*), count(*) FILTER (WHERE failure)
                 FROM unnest($2::text[], $3::int8[], $4::bool[]) AS t(a, ts, failure)
                 GROUP BY a, s ORDER BY a, s
                 ON CONFLICT (org, action, slot) DO UPDATE
                 SET n = action_slots.n + excluded.n, failures = action_slots.failures + excluded.failures",
            )
            .await
            .map_err(pg_error)?;
        tx.execute(&st, &[&org, &c.action, &c.ts, &c.failure]).await.map_err(pg_error)?;
        count_fields(&tx, org, &c).await?;
        if !levels.is_empty() {
            let st = tx
                .prepare_cached(
                    "INSERT INTO tree_nodes(org, level, idx, hash)
                     SELECT $1::int8, * FROM unnest($2::int2[], $3::int8[], $4::bytea[])",
                )
                .await
                .map_err(pg_error)?;
            tx.execute(&st, &[&org, &levels, &indexes, &hashes]).await.map_err(pg_error)?;
        }
        let st = tx
            .prepare_cached("UPDATE log_heads SET tree_size = $2 WHERE org = $1")
            .await
            .map_err(pg_error)?;
        tx.execute(&st, &[&org, &signed(size, "tree size")?]).await.map_err(pg_error)?;
    }
    tx.commit().await.map_err(pg_error)?;
    // Only a committed frontier is kept: after a failure the next append reloads it.
    if let Ok(mut f) = inner.frontiers.lock() {
        f.insert(org, frontier);
    }
    Ok(Some(out))
}

/// The events' rows, as one multi-row `INSERT … SELECT FROM unnest(…)` (see ARCHITECTURE.md for the
/// measurement against binary COPY).
async fn insert_events(tx: &Transaction<'_>, org: i64, c: &Columns<'_>) -> Result<(), tokio_postgres::Error> {
    let st = tx
        .prepare_cached(
            "INSERT INTO events(org, ts, seq, actor, action, target_type, target_id, project, failure, source,
                                leaf, search, body)
             SELECT $1::int8, * FROM unnest($2::int8[], $3::int8[], $4::text[], $5::text[], $6::text[],
                 $7::text[], $8::text[], $9::bool[], $10::text[], $11::bytea[], $12::text[], $13::bytea[])",
        )
        .await?;
    tx.execute(
        &st,
        &[
            &org,
            &c.ts,
            &c.seq,
            &c.actor,
            &c.action,
            &c.target_type,
            &c.target_id,
            &c.project,
            &c.failure,
            &c.source,
            &c.leaf,
            &c.search,
            &c.body,
        ],
    )
    .await
    .map(|_| ())
}

/// One batch's events per (slot, field, value), as `x(field, value)` beside `b.s` and `b.failure`.
const BATCH_VALUES: &str =
    "FROM unnest($2::int8[], $3::bool[], $4::text[], $5::text[], $6::text[], $7::text[])
         AS b0(ts, failure, actor, target_type, project, source)
     CROSS JOIN LATERAL (SELECT floor(b0.ts / 600000000.0)::int8 AS s, b0.failure) AS b
     CROSS JOIN LATERAL (VALUES (0::int2, b0.actor), (1::int2, b0.target_type), (2::int2, b0.project),
                                (3::int2, b0.source)) AS x(field, value)";

/// Keeps `field_slots` for the ten minutes this batch touched, after its events and their
/// `minute_counts` are written: a slot already dense adds the batch's counts; a slot the batch made
/// dense ([`DENSE_SLOT`] events) is counted from its rows, the batch's included; any other slot stays
/// uncounted (a histogram counts its few rows).
async fn count_fields(tx: &Transaction<'_>, org: i64, c: &Columns<'_>) -> Result<()> {
    let params: [&(dyn ToSql + Sync); 7] =
        [&org, &c.ts, &c.failure, &c.actor, &c.target_type, &c.project, &c.source];
    let st = tx
        .prepare_cached(&format!(
            "INSERT INTO field_slots(org, field, value, slot, n, failures)
             SELECT $1::int8, x.field, x.value, b.s, count(*), count(*) FILTER (WHERE b.failure)
             {BATCH_VALUES}
             WHERE x.value IS NOT NULL AND EXISTS (SELECT 1 FROM dense_slots d WHERE d.org = $1 AND d.slot = b.s)
             GROUP BY x.field, x.value, b.s ORDER BY x.field, x.value, b.s
             ON CONFLICT (org, field, value, slot) DO UPDATE
             SET n = field_slots.n + excluded.n, failures = field_slots.failures + excluded.failures"
        ))
        .await
        .map_err(pg_error)?;
    tx.execute(&st, &params).await.map_err(pg_error)?;
    let st = tx
        .prepare_cached(&format!(
            "WITH touched AS (SELECT DISTINCT floor(ts / 600000000.0)::int8 AS s FROM unnest($2::int8[]) AS t(ts)),
             dense AS (
                 INSERT INTO dense_slots(org, slot)
                 SELECT $1::int8, t.s FROM touched t
                 WHERE NOT EXISTS (SELECT 1 FROM dense_slots d WHERE d.org = $1 AND d.slot = t.s)
                   AND (SELECT coalesce(sum(n), 0) FROM minute_counts m
                        WHERE m.org = $1 AND m.minute >= t.s * 10 AND m.minute < t.s * 10 + 10) >= {}
                 RETURNING slot)
             INSERT INTO field_slots(org, field, value, slot, n, failures)
             SELECT $1::int8, x.field, x.value, d.slot, count(*), count(*) FILTER (WHERE e.failure)
             FROM dense d
             JOIN events e ON e.org = $1 AND e.ts >= d.slot * 600000000 AND e.ts < (d.slot + 1) * 600000000
             CROSS JOIN LATERAL (VALUES (0::int2, e.actor), (1::int2, e.target_type), (2::int2, e.project),
                                        (3::int2, e.source)) AS x(field, value)
             WHERE x.value IS NOT NULL
             GROUP BY x.field, x.value, d.slot",
            schema::DENSE_SLOT
        ))
        .await
        .map_err(pg_error)?;
    tx.execute(&st, &[&org, &c.ts]).await.map_err(pg_error)?;
    Ok(())
}
