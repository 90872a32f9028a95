//! Read paths: queries, histograms and lookups, run on the reader pool's connections.
//!
//! Filters on interned columns become `col IN (SELECT id FROM dict WHERE …)`; free text becomes a
//! rowid semi-join on the month's FTS5 index. Months are visited newest first, so a page usually
//! touches one table.

use rusqlite::types::Value as Sql;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};
use trail_model::query::{ActionMatch, Filter, Query};
use trail_model::time::{Micros, month_of, month_start, next_month};
use trail_store::{Bucket, Page, RawPage, RawRecord, Record, Result, StoreError, page_from, raw_page_from};

use crate::schema::{SEQ_BITS, events_table, fts_table, rowid};
use crate::sql_error;

pub fn org_id(conn: &Connection, slug: &str) -> Result<(i64, u64)> {
    conn.prepare_cached("SELECT id, tree_size FROM orgs WHERE slug = ?1")
        .and_then(|mut st| st.query_row([slug], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64))).optional())
        .map_err(sql_error)?
        .ok_or_else(|| StoreError::NotFound(format!("organization {slug}")))
}

/// Existing month partitions overlapping `[from, to)`, newest first.
fn months(conn: &Connection, from: Micros, to: Micros) -> Result<Vec<u32>> {
    let (lo, hi) = (month_of(from), month_of(to - 1));
    let mut st = conn
        .prepare_cached("SELECT month FROM partitions WHERE month BETWEEN ?1 AND ?2 ORDER BY month DESC")
        .map_err(sql_error)?;
    let rows = st.query_map([lo, hi], |r| r.get(0)).map_err(sql_error)?;
    rows.collect::<rusqlite::Result<Vec<u32>>>().map_err(sql_error)
}

/// The WHERE clause (after `org = ? AND ts >= ? AND ts < ?`) for a filter, with its parameters.
fn conditions(f: &Filter, fts: &str) -> (String, Vec<Sql>) {
    let mut sql = String::new();
    let mut args: Vec<Sql> = Vec::new();
    let mut interned = |col: &str, values: &[String]| {
        if values.is_empty() {
            return;
        }
        let marks = vec!["?"; values.len()].join(",");
        sql.push_str(&format!(" AND {col} IN (SELECT id FROM dict WHERE value IN ({marks}))"));
        args.extend(values.iter().map(|v| Sql::Text(v.clone())));
    };
    interned("actor", &f.actor);
    interned("ttype", &f.target_type);
    interned("tid", &f.target_id);
    interned("project", &f.project);
    interned("source", &f.source);
    if !f.action.is_empty() {
        let mut parts = Vec::new();
        for a in &f.action {
            match a {
                ActionMatch::Exact(v) => {
                    parts.push("value = ?");
                    args.push(Sql::Text(v.clone()));
                }
                ActionMatch::Prefix(p) => {
                    parts.push("(value >= ? AND value < ?)");
                    args.push(Sql::Text(p.clone()));
                    args.push(Sql::Text(format!("{p}{}", char::MAX)));
                }
            }
        }
        sql.push_str(&format!(" AND action IN (SELECT id FROM dict WHERE {})", parts.join(" OR ")));
    }
    let failure = f.outcome.contains(&trail_model::Outcome::Failure);
    let success = f.outcome.contains(&trail_model::Outcome::Success);
    if failure != success {
        sql.push_str(" AND outcome = ?");
        args.push(Sql::Integer(i64::from(failure)));
    }
    if let Some(q) = &f.q {
        sql.push_str(&format!(" AND k IN (SELECT rowid FROM {fts} WHERE {fts} MATCH ?)"));
        args.push(Sql::Text(q.to_fts5()));
    }
    (sql, args)
}

pub fn query(conn: &Connection, slug: &str, q: &Query) -> Result<Page> {
    let (rows, as_of) = rows(conn, slug, q)?;
    let records = rows.into_iter().map(|r| Record::from_bytes(r.bytes)).collect::<Result<Vec<_>>>()?;
    Ok(page_from(records, q, as_of))
}

pub fn query_raw(conn: &Connection, slug: &str, q: &Query) -> Result<RawPage> {
    let (rows, as_of) = rows(conn, slug, q)?;
    Ok(raw_page_from(rows, q, as_of))
}

/// Up to `limit + 1` matching rows, newest first, and the log size the page is a snapshot of.
fn rows(conn: &Connection, slug: &str, q: &Query) -> Result<(Vec<RawRecord>, u64)> {
    let (org, size) = org_id(conn, slug)?;
    let as_of = q.cursor.map_or(size, |c| c.as_of.min(size));
    let f = &q.filter;
    let to = q.cursor.map_or(f.to, |c| c.time + 1);
    let need = q.limit + 1;
    let mut records = Vec::with_capacity(need);
    for month in months(conn, f.from, to)? {
        let (ev, fts) = (events_table(month), fts_table(month));
        let (cond, mut args) = conditions(f, &fts);
        let mut sql =
            format!("SELECT ts, k, body FROM {ev} WHERE org = ? AND ts >= ? AND ts < ? AND k < ?{cond}");
        let mut head: Vec<Sql> = vec![
            Sql::Integer(org),
            Sql::Integer(f.from.max(month_start(month))),
            Sql::Integer(to.min(month_start(next_month(month)))),
            Sql::Integer(rowid(org, as_of)),
        ];
        if let Some(c) = &q.cursor {
            sql.push_str(" AND (ts < ? OR k < ?)");
            args.push(Sql::Integer(c.time));
            args.push(Sql::Integer(rowid(org, c.seq)));
        }
        sql.push_str(" ORDER BY ts DESC, k DESC LIMIT ?");
        args.push(Sql::Integer((need - records.len()) as i64));
        head.append(&mut args);
        let mut st = conn.prepare_cached(&sql).map_err(sql_error)?;
        let mut rows = st.query(params_from_iter(head)).map_err(sql_error)?;
        while let Some(row) = rows.next().map_err(sql_error)? {
            records.push(RawRecord {
                time: row.get(0).map_err(sql_error)?,
                seq: crate::schema::seq_of(row.get(1).map_err(sql_error)?),
                bytes: row.get(2).map_err(sql_error)?,
            });
        }
        if records.len() >= need {
            break;
        }
    }
    Ok((records, as_of))
}

pub fn histogram(conn: &Connection, slug: &str, f: &Filter, width: Micros) -> Result<Vec<Bucket>> {
    let (org, _) = org_id(conn, slug)?;
    let mut counts = std::collections::BTreeMap::<i64, u64>::new();
    for month in months(conn, f.from, f.to)? {
        let (ev, fts) = (events_table(month), fts_table(month));
        let (cond, args) = conditions(f, &fts);
        let sql = format!(
            "SELECT (ts - ?) / ? AS b, count(*) FROM {ev} WHERE org = ? AND ts >= ? AND ts < ?{cond} GROUP BY b"
        );
        let mut all: Vec<Sql> = vec![
            Sql::Integer(f.from),
            Sql::Integer(width),
            Sql::Integer(org),
            Sql::Integer(f.from.max(month_start(month))),
            Sql::Integer(f.to.min(month_start(next_month(month)))),
        ];
        all.extend(args);
        let mut st = conn.prepare_cached(&sql).map_err(sql_error)?;
        let rows = st
            .query_map(params_from_iter(all), |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))
            .map_err(sql_error)?;
        for row in rows {
            let (b, n) = row.map_err(sql_error)?;
            *counts.entry(b).or_default() += n as u64;
        }
    }
    Ok(counts.into_iter().map(|(b, count)| Bucket { start: f.from + b * width, count }).collect())
}

pub fn event(conn: &Connection, slug: &str, id: &str) -> Result<Option<Record>> {
    let (org, _) = org_id(conn, slug)?;
    let found: Option<(i64, u32)> = conn
        .prepare_cached("SELECT seq, month FROM event_ids WHERE org_id = ?1 AND id = ?2")
        .and_then(|mut st| st.query_row(params![org, id], |r| Ok((r.get(0)?, r.get(1)?))).optional())
        .map_err(sql_error)?;
    let Some((seq, month)) = found else {
        return Ok(None);
    };
    let body: Option<Vec<u8>> = conn
        .prepare_cached(&format!("SELECT body FROM {} WHERE k = ?1", events_table(month)))
        .and_then(|mut st| st.query_row([rowid(org, seq as u64)], |r| r.get(0)).optional())
        .map_err(sql_error)?;
    match body {
        Some(b) => Record::from_bytes(b).map(Some),
        None => {
            Err(StoreError::Corrupt(format!("event {id} is indexed at seq {seq} but its row is missing")))
        }
    }
}

const _: () = assert!(SEQ_BITS == 40);

/// The org's events after a seq, in seq order: each month partition gives its next `limit` rows by
/// key (which is seq order within the org) and the smallest `limit` of the union are kept.
pub fn events_after(
    conn: &Connection,
    slug: &str,
    after: Option<u64>,
    limit: usize,
) -> Result<Vec<RawRecord>> {
    let (org, size) = org_id(conn, slug)?;
    let lo = after.map_or(rowid(org, 0), |s| rowid(org, s) + 1);
    let hi = rowid(org, size);
    let mut st = conn.prepare_cached("SELECT month FROM partitions").map_err(sql_error)?;
    let months: Vec<u32> = st
        .query_map([], |r| r.get(0))
        .map_err(sql_error)?
        .collect::<rusqlite::Result<_>>()
        .map_err(sql_error)?;
    let mut out: Vec<RawRecord> = Vec::new();
    for m in months {
        let mut st = conn
            .prepare_cached(&format!(
                "SELECT ts, k, body FROM {} WHERE k >= ?1 AND k < ?2 ORDER BY k LIMIT ?3",
                events_table(m)
            ))
            .map_err(sql_error)?;
        let rows = st
            .query_map(params![lo, hi, limit as i64], |r| {
                Ok(RawRecord { time: r.get(0)?, seq: crate::schema::seq_of(r.get(1)?), bytes: r.get(2)? })
            })
            .map_err(sql_error)?;
        for row in rows {
            out.push(row.map_err(sql_error)?);
        }
    }
    out.sort_by_key(|r| r.seq);
    out.truncate(limit);
    Ok(out)
}
