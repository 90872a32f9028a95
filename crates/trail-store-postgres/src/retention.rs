//! Retention over the PostgreSQL schema: per-org settings, reading a month's events for the archive,
//! and removing an archived month from the hot store.
//!
//! Removal runs in one transaction holding the org's log head lock (so no append lands in the month
//! meanwhile) and an advisory lock per month (so two nodes pruning different orgs of one month
//! cannot both leave the last rows behind and neither drop it). It keeps every pruned event's leaf
//! hash in `pruned_leaves`, forgets the events' ids, and drops the month's partition whole when no
//! org has rows left in it, else deletes the org's rows. It never removes an event the caller did not
//! say it archived: the month must hold exactly the archived count and last seq.

use deadpool_postgres::{GenericClient, Object};
use trail_model::time::{month_start, next_month};
use trail_store::{MonthSummary, OrgSettings, RawRecord, Result, StoreError};

use crate::schema::{MINUTE, PARTITION_LOCK_BASE, SLOT, partition, partitions};
use crate::{hash32, pg_error, signed, unsigned};

pub(crate) async fn org_settings<C: GenericClient>(c: &C, org: i64) -> Result<Option<OrgSettings>> {
    let row = c
        .query_opt(
            "SELECT hot_days, archive_days, legal_hold, legal_hold_reason, updated_at, updated_by, read_audit,
                    default_range
             FROM org_settings WHERE org = $1",
            &[&org],
        )
        .await
        .map_err(pg_error)?;
    let Some(r) = row else {
        return Ok(None);
    };
    let days = |i: usize| -> Result<u32> {
        let v: i32 = r.try_get(i).map_err(pg_error)?;
        u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("negative retention {v}")))
    };
    Ok(Some(OrgSettings {
        hot_days: days(0)?,
        archive_days: days(1)?,
        legal_hold: r.try_get(2).map_err(pg_error)?,
        legal_hold_reason: r.try_get(3).map_err(pg_error)?,
        updated_at: r.try_get(4).map_err(pg_error)?,
        updated_by: r.try_get(5).map_err(pg_error)?,
        read_audit: r.try_get(6).map_err(pg_error)?,
        default_range: r.try_get(7).map_err(pg_error)?,
    }))
}

pub(crate) async fn set_org_settings<C: GenericClient>(c: &C, org: i64, s: &OrgSettings) -> Result<()> {
    let days =
        |d: u32| i32::try_from(d).map_err(|_| StoreError::OutOfRange(format!("retention of {d} days")));
    c.execute(
        "INSERT INTO org_settings(org, hot_days, archive_days, legal_hold, legal_hold_reason, updated_at, updated_by,
                                  read_audit, default_range)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (org) DO UPDATE SET hot_days = $2, archive_days = $3, legal_hold = $4,
             legal_hold_reason = $5, updated_at = $6, updated_by = $7, read_audit = $8, default_range = $9",
        &[
            &org,
            &days(s.hot_days)?,
            &days(s.archive_days)?,
            &s.legal_hold,
            &s.legal_hold_reason,
            &s.updated_at,
            &s.updated_by,
            &s.read_audit,
            &s.default_range,
        ],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}

/// The months in which the org has hot events: one index probe per partition.
pub(crate) async fn event_months<C: GenericClient>(c: &C, org: i64) -> Result<Vec<u32>> {
    let months = partitions(c).await?;
    if months.is_empty() {
        return Ok(Vec::new());
    }
    let sql = months
        .iter()
        .map(|m| format!("SELECT {m} WHERE EXISTS (SELECT 1 FROM {} WHERE org = $1)", partition(*m)))
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let mut out = Vec::new();
    for r in c.query(&format!("{sql} ORDER BY 1"), &[&org]).await.map_err(pg_error)? {
        let m: i32 = r.try_get(0).map_err(pg_error)?;
        out.push(u32::try_from(m).map_err(|_| StoreError::Corrupt(format!("month {m}")))?);
    }
    Ok(out)
}

pub(crate) async fn month_events<C: GenericClient>(
    c: &C,
    org: i64,
    month: u32,
    after: Option<u64>,
    limit: usize,
) -> Result<Vec<RawRecord>> {
    let after = after.map_or(Ok(-1), |s| signed(s, "seq"))?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let st = c
        .prepare_cached(
            "SELECT ts, seq, body FROM events WHERE org = $1 AND ts >= $2 AND ts < $3 AND seq > $4
             ORDER BY seq LIMIT $5",
        )
        .await
        .map_err(pg_error)?;
    let rows = c
        .query(&st, &[&org, &month_start(month), &month_start(next_month(month)), &after, &limit])
        .await
        .map_err(pg_error)?;
    rows.iter()
        .map(|r| {
            Ok(RawRecord {
                time: r.try_get(0).map_err(pg_error)?,
                seq: unsigned(r.try_get(1).map_err(pg_error)?, "seq")?,
                bytes: r.try_get(2).map_err(pg_error)?,
            })
        })
        .collect()
}

pub(crate) async fn pruned_leaves<C: GenericClient>(
    c: &C,
    org: i64,
    from: u64,
    to: u64,
) -> Result<Vec<(u64, trail_merkle::Hash)>> {
    let (from, to) = (signed(from, "seq")?, i64::try_from(to).unwrap_or(i64::MAX));
    let rows = c
        .query(
            "SELECT seq, leaf FROM pruned_leaves WHERE org = $1 AND seq >= $2 AND seq < $3 ORDER BY seq",
            &[&org, &from, &to],
        )
        .await
        .map_err(pg_error)?;
    rows.iter()
        .map(|r| {
            let seq = unsigned(r.try_get(0).map_err(pg_error)?, "seq")?;
            Ok((seq, hash32(r.try_get(1).map_err(pg_error)?, "a pruned leaf hash")?))
        })
        .collect()
}

/// Removes the org's events of `month` (see the module documentation). Returns whether the whole
/// partition was dropped.
pub(crate) async fn prune_month(
    client: &mut Object,
    org: i64,
    month: u32,
    expect: MonthSummary,
) -> Result<bool> {
    let table = partition(month);
    let tx = client.transaction().await.map_err(pg_error)?;
    tx.query_opt("SELECT 1 FROM log_heads WHERE org = $1 FOR UPDATE", &[&org]).await.map_err(pg_error)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&(PARTITION_LOCK_BASE + i64::from(month))])
        .await
        .map_err(pg_error)?;
    let exists: bool = tx
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
        .await
        .and_then(|r| r.try_get(0))
        .map_err(pg_error)?;
    let (count, last): (u64, Option<u64>) = if exists {
        let r = tx
            .query_one(&format!("SELECT count(*), max(seq) FROM {table} WHERE org = $1"), &[&org])
            .await
            .map_err(pg_error)?;
        let last: Option<i64> = r.try_get(1).map_err(pg_error)?;
        (unsigned(r.try_get(0).map_err(pg_error)?, "count")?, last.map(|l| unsigned(l, "seq")).transpose()?)
    } else {
        (0, None)
    };
    if count != expect.count || last != Some(expect.last_seq) {
        return Err(StoreError::Conflict(format!(
            "month {month} holds {count} events (last seq {last:?}) but {} (last seq {}) were archived; nothing removed",
            expect.count, expect.last_seq
        )));
    }
    tx.execute(
        &format!(
            "INSERT INTO pruned_leaves(org, seq, leaf) SELECT org, seq, leaf FROM {table} WHERE org = $1"
        ),
        &[&org],
    )
    .await
    .map_err(pg_error)?;
    tx.execute(
        "DELETE FROM event_ids WHERE org = $1 AND ts >= $2 AND ts < $3",
        &[&org, &month_start(month), &month_start(next_month(month))],
    )
    .await
    .map_err(pg_error)?;
    // Months are whole minutes: the month's counts go with its events.
    let minutes = (month_start(month).div_euclid(MINUTE), month_start(next_month(month)).div_euclid(MINUTE));
    tx.execute(
        "DELETE FROM minute_counts WHERE org = $1 AND minute >= $2 AND minute < $3",
        &[&org, &minutes.0, &minutes.1],
    )
    .await
    .map_err(pg_error)?;
    let slots = (month_start(month).div_euclid(SLOT), month_start(next_month(month)).div_euclid(SLOT));
    for table in ["action_slots", "field_slots", "dense_slots"] {
        tx.execute(
            &format!("DELETE FROM {table} WHERE org = $1 AND slot >= $2 AND slot < $3"),
            &[&org, &slots.0, &slots.1],
        )
        .await
        .map_err(pg_error)?;
    }
    let others: bool = tx
        .query_one(&format!("SELECT EXISTS (SELECT 1 FROM {table} WHERE org <> $1)"), &[&org])
        .await
        .and_then(|r| r.try_get(0))
        .map_err(pg_error)?;
    if others {
        tx.execute(&format!("DELETE FROM {table} WHERE org = $1"), &[&org]).await.map_err(pg_error)?;
    } else {
        // Locks `events` for the rest of this (short) transaction; queries wait, they do not fail.
        tx.batch_execute(&format!("DROP TABLE {table}")).await.map_err(pg_error)?;
    }
    tx.commit().await.map_err(pg_error)?;
    Ok(!others)
}
