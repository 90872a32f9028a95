//! Retention over the embedded schema: per-org settings, reading a month's events for the archive,
//! and removing an archived month from the hot store.
//!
//! Removal keeps every pruned event's leaf hash (`pruned_leaves`), so Merkle proofs and `trail verify`
//! of the events still hot are unaffected. When no org has events left in a month, its two tables are
//! dropped whole; otherwise (orgs with different retention sharing a month) only the org's rows go,
//! with their full-text entries. It never removes an event the caller did not say it archived.

use rusqlite::{Connection, OptionalExtension, params};
use trail_model::time::{month_start, next_month};
use trail_store::{MonthSummary, OrgSettings, RawRecord, Result, StoreError};

use crate::read::org_id;
use crate::schema::{SEQ_BITS, events_table, rowid, seq_of};
use crate::sql_error;

pub fn org_settings(conn: &Connection, slug: &str) -> Result<Option<OrgSettings>> {
    let (org, _) = org_id(conn, slug)?;
    conn.prepare_cached(
        "SELECT hot_days, archive_days, legal_hold, legal_hold_reason, updated_at, updated_by, read_audit,
                default_range
         FROM org_settings WHERE org_id = ?1",
    )
    .and_then(|mut st| {
        st.query_row([org], |r| {
            Ok(OrgSettings {
                hot_days: r.get(0)?,
                archive_days: r.get(1)?,
                legal_hold: r.get(2)?,
                legal_hold_reason: r.get(3)?,
                updated_at: r.get(4)?,
                updated_by: r.get(5)?,
                read_audit: r.get(6)?,
                default_range: r.get(7)?,
            })
        })
        .optional()
    })
    .map_err(sql_error)
}

pub fn set_org_settings(conn: &Connection, org: i64, s: &OrgSettings) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO org_settings(org_id, hot_days, archive_days, legal_hold, legal_hold_reason, updated_at, updated_by,
                                  read_audit, default_range)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT(org_id) DO UPDATE SET hot_days = ?2, archive_days = ?3, legal_hold = ?4,
             legal_hold_reason = ?5, updated_at = ?6, updated_by = ?7, read_audit = ?8, default_range = ?9",
    )
    .and_then(|mut st| {
        st.execute(params![
            org,
            s.hot_days,
            s.archive_days,
            s.legal_hold,
            s.legal_hold_reason,
            s.updated_at,
            s.updated_by,
            s.read_audit,
            s.default_range
        ])
    })
    .map_err(sql_error)?;
    Ok(())
}

fn partitions(conn: &Connection) -> Result<Vec<u32>> {
    let mut st = conn.prepare_cached("SELECT month FROM partitions ORDER BY month").map_err(sql_error)?;
    let rows = st.query_map([], |r| r.get(0)).map_err(sql_error)?;
    rows.collect::<rusqlite::Result<_>>().map_err(sql_error)
}

fn org_range(org: i64) -> (i64, i64) {
    (org << SEQ_BITS, (org + 1) << SEQ_BITS)
}

pub fn event_months(conn: &Connection, slug: &str) -> Result<Vec<u32>> {
    let (org, _) = org_id(conn, slug)?;
    let (lo, hi) = org_range(org);
    let mut out = Vec::new();
    // A month whose prune is under way is on its way out (see `prune_begin`): a second pass must not
    // archive its rest again.
    let pruning: Vec<u32> = conn
        .prepare_cached("SELECT month FROM pruning WHERE org_id = ?1")
        .and_then(|mut st| st.query_map([org], |r| r.get(0))?.collect())
        .map_err(sql_error)?;
    for m in partitions(conn)?.into_iter().filter(|m| !pruning.contains(m)) {
        let any: Option<i64> = conn
            .prepare_cached(&format!("SELECT k FROM {} WHERE k >= ?1 AND k < ?2 LIMIT 1", events_table(m)))
            .and_then(|mut st| st.query_row([lo, hi], |r| r.get(0)).optional())
            .map_err(sql_error)?;
        if any.is_some() {
            out.push(m);
        }
    }
    Ok(out)
}

pub fn month_events(
    conn: &Connection,
    slug: &str,
    month: u32,
    after: Option<u64>,
    limit: usize,
) -> Result<Vec<RawRecord>> {
    let (org, _) = org_id(conn, slug)?;
    if !partitions(conn)?.contains(&month) {
        return Ok(Vec::new());
    }
    let lo = after.map_or(org << SEQ_BITS, |s| rowid(org, s) + 1);
    let hi = (org + 1) << SEQ_BITS;
    let mut st = conn
        .prepare_cached(&format!(
            "SELECT ts, k, body FROM {} WHERE k >= ?1 AND k < ?2 ORDER BY k LIMIT ?3",
            events_table(month)
        ))
        .map_err(sql_error)?;
    let rows = st
        .query_map(params![lo, hi, limit as i64], |r| {
            Ok((r.get(0)?, seq_of(r.get(1)?), r.get::<_, Vec<u8>>(2)?))
        })
        .map_err(sql_error)?;
    let mut out = Vec::new();
    for row in rows {
        let (time, seq, stored) = row.map_err(sql_error)?;
        out.push(RawRecord { time, seq, bytes: crate::body::unpack(conn, stored, seq)? });
    }
    Ok(out)
}

pub fn pruned_leaves(
    conn: &Connection,
    slug: &str,
    from: u64,
    to: u64,
) -> Result<Vec<(u64, trail_merkle::Hash)>> {
    let (org, _) = org_id(conn, slug)?;
    let mut st = conn
        .prepare_cached("SELECT k, leaf FROM pruned_leaves WHERE k >= ?1 AND k < ?2 ORDER BY k")
        .map_err(sql_error)?;
    let rows = st
        .query_map([rowid(org, from), rowid(org, to.min(1 << SEQ_BITS))], |r| {
            Ok((seq_of(r.get(0)?), r.get::<_, Vec<u8>>(1)?))
        })
        .map_err(sql_error)?;
    let mut out = Vec::new();
    for row in rows {
        let (seq, leaf) = row.map_err(sql_error)?;
        let leaf = leaf
            .try_into()
            .map_err(|_| StoreError::Corrupt(format!("pruned leaf of seq {seq} is not 32 bytes")))?;
        out.push((seq, leaf));
    }
    Ok(out)
}

/// Deletes an org's rows of a count table keyed `(org_id, <key>, slot)` whose slot is in `[lo, hi)`:
/// one key range per value of `key`, seeking from one value to the next. A range on `slot` alone reads
/// every count row of the org, since the keys hold the slot last (two million rows for a year of a
/// 10M-event org, inside the writer's transaction); an index by slot cost 12 bytes an event in sparse
/// orgs, where nearly every event has an `action_slots` row of its own (measured: W6 492 → 504 B).
/// An org has few actions, and `field_slots` holds only dense slots' values.
fn delete_slots(conn: &Connection, table: &str, key: &[&str], org: i64, (lo, hi): (i64, i64)) -> Result<()> {
    let cols = key.join(", ");
    let n = key.len();
    let marks: Vec<String> = (2..n + 2).map(|i| format!("?{i}")).collect();
    let equal: String = key.iter().zip(&marks).map(|(c, m)| format!(" AND {c} = {m}")).collect();
    let first = format!("SELECT {cols} FROM {table} WHERE org_id = ?1 ORDER BY {cols} LIMIT 1");
    let next = format!(
        "SELECT {cols} FROM {table} WHERE org_id = ?1 AND ({cols}) > ({}) ORDER BY {cols} LIMIT 1",
        marks.join(", ")
    );
    let delete =
        format!("DELETE FROM {table} WHERE org_id = ?1{equal} AND slot >= ?{} AND slot < ?{}", n + 2, n + 3);
    let values =
        |r: &rusqlite::Row<'_>| (0..n).map(|i| r.get::<_, i64>(i)).collect::<rusqlite::Result<Vec<i64>>>();
    let mut at: Option<Vec<i64>> = conn
        .prepare_cached(&first)
        .and_then(|mut st| st.query_row([org], values).optional())
        .map_err(sql_error)?;
    while let Some(value) = at {
        let mut args = vec![org];
        args.extend(&value);
        args.extend([lo, hi]);
        conn.prepare_cached(&delete)
            .and_then(|mut st| st.execute(rusqlite::params_from_iter(&args)))
            .map_err(sql_error)?;
        args.truncate(n + 1);
        at = conn
            .prepare_cached(&next)
            .and_then(|mut st| st.query_row(rusqlite::params_from_iter(&args), values).optional())
            .map_err(sql_error)?;
    }
    Ok(())
}

/// Events moved per step of a prune: about 40 ms of expanding, hashing and deleting (2 µs an event,
/// measured on 8-byte leaf checks at 1M). The writer commits between steps, so appends wait for one
/// step rather than for the month: pruning a month in one transaction held writes for 3.0 s at 3.4M
/// events of whole leaves, ~2 µs an event with hashing (BENCHMARKS.md, "eleventh step").
pub const PRUNE_STEP: usize = 20_000;
/// The pause between a prune's steps (see `SqliteStore::prune_month_in_steps`): a month of 3.4M
/// events takes 170 steps, 17 s of pauses, in a background pass.
pub const PRUNE_PAUSE: std::time::Duration = std::time::Duration::from_millis(110);

/// Checks that the org's rows of `month` still hold exactly what was archived (those a prune
/// interrupted before already moved counted too), and records that a prune of it is under way, up to
/// which seq: from then on the month is not listed by [`event_months`], and a prune that a crash or a
/// shutdown stopped is finished when the store next opens ([`finish_interrupted`]). Runs in the
/// writer's transaction, before the [`prune_step`]s.
pub fn prune_begin(conn: &Connection, org: i64, month: u32, expect: MonthSummary) -> Result<()> {
    let ev = events_table(month);
    let (lo, hi) = org_range(org);
    let (count, last): (u64, Option<i64>) = match partition_exists(conn, month)? {
        false => (0, None),
        true => conn
            .query_row(
                &format!("SELECT count(*), max(k) FROM {ev} WHERE k >= ?1 AND k < ?2"),
                [lo, hi],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)),
            )
            .map_err(sql_error)?,
    };
    let moved: u64 = conn
        .query_row("SELECT moved FROM pruning WHERE org_id = ?1 AND month = ?2", [org, month as i64], |r| {
            r.get::<_, i64>(0)
        })
        .optional()
        .map_err(sql_error)?
        .map_or(0, |m| m as u64);
    // Steps move the lowest seqs first: the last seq stays until the last step.
    let last_holds = match last {
        Some(k) => seq_of(k) == expect.last_seq,
        None => moved > 0,
    };
    if count + moved != expect.count || !last_holds {
        return Err(StoreError::Conflict(format!(
            "month {month} holds {count} events (last seq {:?}, {moved} already moved) but {} (last seq {}) \
             were archived; nothing removed",
            last.map(seq_of),
            expect.count,
            expect.last_seq
        )));
    }
    conn.execute(
        "INSERT OR IGNORE INTO pruning(org_id, month, moved, last_seq) VALUES (?1, ?2, 0, ?3)",
        params![org, month as i64, expect.last_seq as i64],
    )
    .map_err(sql_error)?;
    Ok(())
}

/// Moves up to `step` of the org's rows of `month` up to `last_seq` (what was archived), lowest seqs
/// first, out of the hot store: keeps their whole leaf hashes in `pruned_leaves` and deletes the rows,
/// in the writer's transaction, so every seq is in exactly one of the two after each step. Returns
/// whether rows may be left.
///
/// A row's own leaf is kept when it holds all 32 bytes (written before schema 14); otherwise it is
/// hashed from the canonical bytes and checked against the row's first bytes. An event whose bytes no
/// longer match is not archived over: the step fails with nothing of it removed, and the prune stops
/// there (`trail verify` names the event).
pub fn prune_step(conn: &Connection, org: i64, month: u32, last_seq: u64, step: usize) -> Result<bool> {
    let ev = events_table(month);
    let (lo, _) = org_range(org);
    if !partition_exists(conn, month)? {
        // Another org's prune dropped it once this org's rows were all moved.
        return Ok(false);
    }
    let mut read = conn
        .prepare_cached(&format!(
            "SELECT k, leaf, body FROM {ev} WHERE k >= ?1 AND k <= ?2 ORDER BY k LIMIT ?3"
        ))
        .map_err(sql_error)?;
    let mut write =
        conn.prepare_cached("INSERT INTO pruned_leaves(k, leaf) VALUES (?1, ?2)").map_err(sql_error)?;
    let step = step.max(1);
    let mut rows = read.query(params![lo, rowid(org, last_seq), step as i64]).map_err(sql_error)?;
    let (mut moved, mut through) = (0i64, None);
    while let Some(r) = rows.next().map_err(sql_error)? {
        let k: i64 = r.get(0).map_err(sql_error)?;
        let stored: Vec<u8> = r.get(1).map_err(sql_error)?;
        let leaf = match trail_merkle::Hash::try_from(stored.as_slice()) {
            Ok(whole) => whole,
            Err(_) => {
                let seq = seq_of(k);
                let leaf =
                    trail_merkle::leaf_hash(&crate::body::unpack(conn, r.get(2).map_err(sql_error)?, seq)?);
                if !crate::schema::leaf_check_holds(&stored, &leaf) {
                    return Err(StoreError::Corrupt(format!(
                        "seq {seq}: the stored bytes do not match the leaf hash recorded at ingest; the prune stops before it"
                    )));
                }
                leaf
            }
        };
        write.execute(params![k, &leaf[..]]).map_err(sql_error)?;
        (moved, through) = (moved + 1, Some(k));
    }
    let Some(through) = through else { return Ok(false) };
    conn.execute(&format!("DELETE FROM {ev} WHERE k >= ?1 AND k <= ?2"), [lo, through]).map_err(sql_error)?;
    conn.execute(
        "UPDATE pruning SET moved = moved + ?3 WHERE org_id = ?1 AND month = ?2",
        params![org, month as i64, moved],
    )
    .map_err(sql_error)?;
    Ok(moved as usize == step)
}

/// One step of a prune in the writer's transaction, ending it when nothing is left to move (in the
/// same transaction, so that a crash cannot leave a month moved but not ended, which no pass would
/// list again). Returns `None` while rows are left, else whether the partition was dropped.
pub fn prune_step_or_end(
    conn: &Connection,
    org: i64,
    month: u32,
    last_seq: u64,
    step: usize,
) -> Result<Option<bool>> {
    if prune_step(conn, org, month, last_seq, step)? {
        return Ok(None);
    }
    prune_end(conn, org, month).map(Some)
}

/// Finishes the prunes an earlier process began and did not end (a crash, a kill, a shutdown during
/// one), at open, before the writer starts: their months were archived up to the recorded seq when
/// they began. One transaction per step. A prune that cannot finish (an event whose bytes changed)
/// is logged and left: the month stays, unlisted, and `trail verify` names the event.
pub fn finish_interrupted(conn: &Connection) -> Result<()> {
    let pending: Vec<(i64, u32, u64)> = conn
        .prepare("SELECT org_id, month, last_seq FROM pruning ORDER BY org_id, month")
        .and_then(|mut st| {
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64)))?.collect()
        })
        .map_err(sql_error)?;
    for (org, month, last_seq) in pending {
        let finished = loop {
            conn.execute_batch("BEGIN IMMEDIATE").map_err(sql_error)?;
            let step = prune_step_or_end(conn, org, month, last_seq, PRUNE_STEP);
            let end = if step.is_ok() { "COMMIT" } else { "ROLLBACK" };
            conn.execute_batch(end).map_err(sql_error)?;
            match step {
                Ok(None) => continue,
                Ok(Some(_)) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        match finished {
            Ok(()) => tracing::info!(org_id = org, month, "finished a prune an earlier process began"),
            Err(e) => {
                tracing::error!(org_id = org, month, error = %e, "cannot finish a prune an earlier process began")
            }
        }
    }
    Ok(())
}

/// Forgets a prune that [`prune_begin`] recorded and no step moved anything of.
pub fn prune_unbegin(conn: &Connection, org: i64, month: u32) -> Result<()> {
    conn.execute(
        "DELETE FROM pruning WHERE org_id = ?1 AND month = ?2 AND moved = 0",
        params![org, month as i64],
    )
    .map(|_| ())
    .map_err(sql_error)
}

fn partition_exists(conn: &Connection, month: u32) -> Result<bool> {
    conn.query_row("SELECT count(*) FROM partitions WHERE month = ?1", [month], |r| r.get(0))
        .map_err(sql_error)
}

/// Ends a prune once [`prune_step`] moved every archived row: removes the month's counts (unless the
/// org still has rows in it, appended past what was archived) and drops its partition when it holds
/// no row left (of any org). Returns whether the partition was dropped.
pub fn prune_end(conn: &Connection, org: i64, month: u32) -> Result<bool> {
    let ev = events_table(month);
    let (lo, hi) = org_range(org);
    conn.execute("DELETE FROM pruning WHERE org_id = ?1 AND month = ?2", params![org, month as i64])
        .map_err(sql_error)?;
    if !partition_exists(conn, month)? {
        return Ok(false);
    }
    let left: Option<i64> = conn
        .query_row(&format!("SELECT k FROM {ev} WHERE k >= ?1 AND k < ?2 LIMIT 1"), [lo, hi], |r| r.get(0))
        .optional()
        .map_err(sql_error)?;
    if left.is_some() {
        return Ok(false);
    }
    // The id map keeps the month's ids: stale entries, which lookups skip (see `ids.rs`).
    // Months are whole minutes: the month's counts go with its events.
    conn.execute(
        "DELETE FROM minute_counts WHERE org_id = ?1 AND minute >= ?2 AND minute < ?3",
        params![
            org,
            crate::schema::minute_of(month_start(month)),
            crate::schema::minute_of(month_start(next_month(month)))
        ],
    )
    .map_err(sql_error)?;
    // And its counts per action and per field value, and the slots that have the latter.
    let slots =
        (crate::schema::slot_of(month_start(month)), crate::schema::slot_of(month_start(next_month(month))));
    delete_slots(conn, "action_slots", &["action"], org, slots)?;
    delete_slots(conn, "field_slots", &["field", "value"], org, slots)?;
    conn.execute(
        "DELETE FROM dense_slots WHERE org_id = ?1 AND slot >= ?2 AND slot < ?3",
        params![org, slots.0, slots.1],
    )
    .map_err(sql_error)?;
    let others: Option<i64> = conn
        .query_row(&format!("SELECT k FROM {ev} LIMIT 1"), [], |r| r.get(0))
        .optional()
        .map_err(sql_error)?;
    // The month's full-text entries are the index's (see `index.rs`): dropped with the month once no
    // org has rows in it; until then a pruned event's entry finds no row and drops out of searches.
    if others.is_some() {
        return Ok(false);
    }
    conn.execute_batch(&format!("DROP TABLE {ev}; DELETE FROM partitions WHERE month = {month};"))
        .map_err(sql_error)?;
    Ok(true)
}
