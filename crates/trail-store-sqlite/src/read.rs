//! Read paths: queries, histograms and lookups, run on the reader pool's connections.
//!
//! Filters on interned columns become `col IN (SELECT id FROM dict WHERE …)`; free text is matched
//! while walking the time index or, for rare terms, read from the month's FTS5 index (see [`Plan`]).
//! Months are visited newest first, so a page usually touches one table.

use rusqlite::types::Value as Sql;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};
use trail_model::Outcome;
use trail_model::query::{ActionMatch, Filter, Query};
use trail_model::text::Search;
use trail_model::time::{Micros, month_of, month_start, next_month};
use trail_store::{Bucket, Page, RawPage, RawRecord, Record, Result, StoreError, page_from, raw_page_from};

use crate::schema::{MINUTE, SEQ_BITS, SLOT, events_table, fts_table, rowid};
use crate::{body, ids, sql_error};

pub fn org_id(conn: &Connection, slug: &str) -> Result<(i64, u64)> {
    conn.prepare_cached("SELECT id, tree_size FROM orgs WHERE slug = ?1")
        .and_then(|mut st| st.query_row([slug], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64))).optional())
        .map_err(sql_error)?
        .ok_or_else(|| StoreError::NotFound(format!("organization {slug}")))
}

pub fn tree_sizes(conn: &Connection) -> Result<Vec<(String, u64)>> {
    let mut st = conn.prepare_cached("SELECT slug, tree_size FROM orgs ORDER BY slug").map_err(sql_error)?;
    let rows = st.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64))).map_err(sql_error)?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(sql_error)
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

/// The WHERE clause (after `org = ? AND ts >= ? AND ts < ?`) for every filter but free text, with its
/// parameters. Free text is applied by the caller: see [`Plan`].
fn conditions(f: &Filter) -> (String, Vec<Sql>) {
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
    (sql, args)
}

/// Rows a free-text page reads newest first and matches in Rust before it estimates how far the walk
/// would have to go.
const WALK_SAMPLE: usize = 500;
/// Rows a free-text page may walk in all (about 4 µs a row, so ~80 ms at most) before the full-text
/// index takes over for the rest of the window.
const WALK_BUDGET: usize = 20_000;

/// The most rows one statement of the index-driven plan reads (and its sorter holds) after the rows
/// before them were dropped by the check: bodies are a few hundred bytes, so a few MB.
const MAX_READ: usize = 8_192;

/// The free-text walk of one page so far: rows read, and how many of them matched.
#[derive(Default)]
struct Walk {
    read: usize,
    found: usize,
}

impl Walk {
    /// How many more rows the walk may read for `missing` more matches; 0 hands over to the index.
    fn allowance(&self, missing: usize) -> usize {
        if self.read < WALK_SAMPLE {
            return WALK_SAMPLE - self.read;
        }
        let left = WALK_BUDGET.saturating_sub(self.read);
        if self.found == 0 || missing.saturating_mul(self.read).div_ceil(self.found) > left {
            return 0;
        }
        left
    }
}

/// How a month partition is read for a page.
///
/// Free text has two costs that pull in opposite directions. Driving from the FTS5 index costs one
/// row lookup per match in the org's month, whatever the time window: cheap for a rare term, seconds
/// for a term in every event (and a `k IN (SELECT rowid …)` semi-join would also hold every match in
/// memory). Walking the `(org, ts)` index newest first and matching each row in Rust costs one decode
/// per row until the page is full: cheap for a common term, the whole window for a rare one. (Asking
/// FTS5 how common a term is costs as much as the search: the last token is a prefix, and FTS5 merges
/// the doclists of every token with that prefix before returning the first row.) So a page first
/// walks [`WALK_SAMPLE`] rows, and goes on walking, up to [`WALK_BUDGET`] rows, only while the matches
/// seen so far say the page will fill within the budget; what the walk did not reach is read from the
/// index. Both read in the same newest-first order with the same matching semantics
/// (`trail_model::text`), so pages and cursors do not depend on the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    /// No free text: the `(org, ts)` index with the filters in SQL.
    Time,
    /// The `(org, ts)` index, free text matched in Rust.
    Walk,
    /// The FTS5 index drives; each match is looked up by key.
    Index,
}

/// `FROM … WHERE …` of a month's rows driven by its FTS5 index: the parameters are the FTS5 query and
/// the org's key range `[lo, hi)`, which must end where the org's index does (see [`crate::index`]).
/// The index is the attached `idx` database, and holds a table for the month only once it indexed
/// some of its events ([`crate::index::has_month`]). `CROSS JOIN` keeps FTS5 the outer loop, so
/// SQLite never collects the matches into a temporary index; the rows are `e`, and their columns need
/// no qualifier. A match whose row retention removed finds no `e` and drops out.
fn fts_join(month: u32) -> String {
    let (ev, fts) = (events_table(month), fts_table(month));
    format!(
        "FROM idx.{fts} CROSS JOIN {ev} AS e ON e.k = {fts}.rowid WHERE {fts} MATCH ? AND {fts}.rowid >= ? AND {fts}.rowid < ?"
    )
}

/// A prefix with at most this many terms in a month's index is looked up as those terms.
const FEW_EXPANSIONS: usize = 8;

/// `q` in FTS5's syntax for `month`'s index, with each prefix that expands to at most
/// [`FEW_EXPANSIONS`] terms in the month's vocabulary looked up as those terms (`"x86_64"*` becomes
/// `"x86_64"`, or `("staging" OR "staging2")`), and at most how many events it matches when the
/// vocabulary said (the fewest of any prefix it resolved, counted over every org).
///
/// FTS5 answers a prefix by merging the doclists of every term it expands to into one buffer before
/// its first row: for `x86-64`, one term in 1.16M of a month's events, 0.39 s against 0.08 s for the
/// term itself. Asking the vocabulary (`fts5vocab`, which reads the doclists of the terms it lists)
/// costs about what one term's lookup does. `None` when a prefix expands to nothing: no event of the
/// month in the index matches. Terms the index gains meanwhile belong to events past the `indexed`
/// size the caller read, which it never asks the index for. When the vocabulary cannot be read the
/// query keeps its prefixes.
fn fts5_in(conn: &Connection, month: u32, q: &Search) -> Result<Option<(String, Option<u64>)>> {
    let vocab = format!("vocab_{month}");
    let created = conn.execute_batch(&format!(
        "CREATE VIRTUAL TABLE IF NOT EXISTS temp.{vocab} USING fts5vocab(idx, {}, row)",
        fts_table(month)
    ));
    let mut parts = Vec::new();
    let mut matches: Option<u64> = None;
    for t in q.index_terms() {
        if !t.prefix || created.is_err() {
            parts.push(t.to_fts5());
            continue;
        }
        let expanded: rusqlite::Result<Vec<(String, i64)>> = conn
            .prepare_cached(&format!(
                "SELECT term, doc FROM temp.{vocab} WHERE term >= ?1 AND term <= ?2 ORDER BY term LIMIT ?3"
            ))
            .and_then(|mut st| {
                // The bound keeps the vocabulary from reading the doclist of the term after the
                // prefix's (`success` after `staging`: 0.16 s against 0.03 s).
                let last = format!("{}{}", t.term, char::MAX);
                st.query_map(params![t.term, last, FEW_EXPANSIONS as i64 + 1], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?
                .collect()
            });
        match expanded {
            Ok(terms) if terms.is_empty() => return Ok(None),
            Ok(terms) if terms.len() <= FEW_EXPANSIONS => {
                let docs = terms.iter().map(|(_, n)| *n as u64).sum::<u64>();
                matches = Some(matches.map_or(docs, |m| m.min(docs)));
                let exact: Vec<String> = terms
                    .into_iter()
                    .map(|(term, _)| trail_model::text::IndexTerm { term, prefix: false }.to_fts5())
                    .collect();
                parts.push(if exact.len() == 1 {
                    exact[0].clone()
                } else {
                    format!("({})", exact.join(" OR "))
                });
            }
            _ => parts.push(t.to_fts5()),
        }
    }
    Ok(Some((parts.join(" AND "), matches)))
}

/// Where the index part of a month's search ends for `org`: its `indexed` size, or nothing when the
/// index has no table for the month yet.
fn indexed_in(conn: &Connection, org: i64, month: u32, indexed: u64) -> Result<i64> {
    Ok(if crate::index::has_month(conn, month)? { rowid(org, indexed) } else { rowid(org, 0) })
}

/// One month's rows for a page: `org`'s events with `lo <= ts < hi`, strictly before `before` in
/// newest-first order when given, keys below `max_k`, newest first.
struct Scan<'a> {
    month: u32,
    org: i64,
    lo: Micros,
    hi: Micros,
    before: Option<(Micros, i64)>,
    max_k: i64,
    /// Where the org's full-text index ends in this month: rows from here to `max_k` are read by key
    /// and matched in Rust when the index drives.
    indexed_k: i64,
    /// The free text in FTS5's syntax for the month's index ([`fts5_in`]), once the index drives.
    fts5: String,
    filter: &'a Filter,
    /// `conditions(filter)`, built once per page.
    cond: &'a (String, Vec<Sql>),
}

impl Scan<'_> {
    /// The statement and its parameters; `limit` rows at most. When the index drives, only what it
    /// holds (keys below `indexed_k`): the rest is [`Self::newest_unindexed`]'s.
    fn sql(&self, plan: Plan, limit: usize) -> (String, Vec<Sql>) {
        let ev = events_table(self.month);
        let mut args = Vec::new();
        let mut sql = match (plan, &self.filter.q) {
            (Plan::Index, Some(_)) => {
                args.extend([Sql::Text(self.fts5.clone()), Sql::Integer(rowid(self.org, 0))]);
                let indexed = format!("SELECT e.ts AS ts, e.k AS k, e.body AS body {}", fts_join(self.month));
                self.rest(indexed, self.indexed_k.min(self.max_k), &mut args)
            }
            _ => {
                args.push(Sql::Integer(self.org));
                let time = format!("SELECT ts, k, body FROM {ev} WHERE org = ? AND k < ?");
                self.rest(time, self.max_k, &mut args)
            }
        };
        sql.push_str(" ORDER BY ts DESC, k DESC LIMIT ?");
        args.push(Sql::Integer(limit as i64));
        (sql, args)
    }

    /// `select` (whose last parameter is an exclusive upper bound on the key, `max_k`) narrowed to the
    /// scan's time range, filters and position.
    fn rest(&self, select: String, max_k: i64, args: &mut Vec<Sql>) -> String {
        let (cond, cond_args) = self.cond;
        let mut sql = select;
        sql.push_str(" AND ts >= ? AND ts < ?");
        args.extend([Sql::Integer(max_k), Sql::Integer(self.lo), Sql::Integer(self.hi)]);
        sql.push_str(cond);
        args.extend(cond_args.iter().cloned());
        if let Some((ts, k)) = self.before {
            sql.push_str(" AND (ts < ? OR k < ?)");
            args.extend([Sql::Integer(ts), Sql::Integer(k)]);
        }
        sql
    }

    /// Up to `limit` rows in newest-first order, each passed to `keep`, which returns whether to go on.
    /// Returns how many rows were read.
    fn read(
        &self,
        conn: &Connection,
        plan: Plan,
        limit: usize,
        mut keep: impl FnMut(RawRecord) -> Result<bool>,
    ) -> Result<usize> {
        let (sql, args) = self.sql(plan, limit);
        let mut st = conn.prepare_cached(&sql).map_err(sql_error)?;
        let mut rows = st.query(params_from_iter(args)).map_err(sql_error)?;
        let mut read = 0;
        while let Some(row) = rows.next().map_err(sql_error)? {
            read += 1;
            if !keep(raw_row(conn, row)?)? {
                break;
            }
        }
        Ok(read)
    }

    /// The newest `n` rows the index does not hold yet (keys from `indexed_k` to `max_k`) that `q`
    /// matches, newest first. One pass in key order, each row checked in Rust: the index's lag is
    /// read once, whatever the page finds. (Read beside the index's matches in one sorted statement,
    /// a page that found nothing there read it again for every `limit` rows it passed over: under the
    /// soak's ingest, a lag of 25,000 events made a search for a prefix no event has take 5-30 s.)
    fn newest_unindexed(&self, conn: &Connection, q: &Search, n: usize) -> Result<Vec<RawRecord>> {
        if self.indexed_k >= self.max_k {
            return Ok(Vec::new());
        }
        let mut args = vec![Sql::Integer(self.indexed_k)];
        let select = format!("SELECT ts, k, body FROM {} WHERE k >= ? AND k < ?", events_table(self.month));
        let sql = self.rest(select, self.max_k, &mut args);
        let mut st = conn.prepare_cached(&sql).map_err(sql_error)?;
        let mut rows = st.query(params_from_iter(args)).map_err(sql_error)?;
        let mut found = Vec::new();
        while let Some(row) = rows.next().map_err(sql_error)? {
            let r = raw_row(conn, row)?;
            if q.matches(&r.decode()?) {
                found.push(r);
                if found.len() >= 2 * n {
                    newest_first(&mut found, n);
                }
            }
        }
        newest_first(&mut found, n);
        Ok(found)
    }
}

/// Keeps the newest `n` records, newest first (by time, then seq, as pages are ordered).
fn newest_first(records: &mut Vec<RawRecord>, n: usize) {
    records.sort_unstable_by_key(|r| std::cmp::Reverse((r.time, r.seq)));
    records.truncate(n);
}

/// A row of `ts, k, body`, its body unpacked.
fn raw_row(conn: &Connection, row: &rusqlite::Row) -> Result<RawRecord> {
    let seq = crate::schema::seq_of(row.get(1).map_err(sql_error)?);
    Ok(RawRecord {
        time: row.get(0).map_err(sql_error)?,
        seq,
        bytes: body::unpack(conn, row.get(2).map_err(sql_error)?, seq)?,
    })
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
    // Only free text reads the index; other pages cost no lookup in it.
    let indexed = match f.q {
        Some(_) => crate::index::indexed_size(conn, org)?.min(as_of),
        None => as_of,
    };
    let to = q.cursor.map_or(f.to, |c| c.time + 1);
    let need = q.limit + 1;
    let mut records = Vec::with_capacity(need);
    let mut walk = Walk::default();
    let cond = conditions(f);
    'months: for month in months(conn, f.from, to)? {
        let mut scan = Scan {
            month,
            org,
            lo: f.from.max(month_start(month)),
            hi: to.min(month_start(next_month(month))),
            before: q.cursor.map(|c| (c.time, rowid(org, c.seq))),
            max_k: rowid(org, as_of),
            indexed_k: match f.q {
                Some(_) => indexed_in(conn, org, month, indexed)?,
                None => rowid(org, as_of),
            },
            fts5: String::new(),
            filter: f,
            cond: &cond,
        };
        let mut plan = if f.q.is_some() { Plan::Walk } else { Plan::Time };
        while plan == Plan::Walk {
            let allowed = walk.allowance(need - records.len());
            if allowed == 0 {
                plan = Plan::Index;
                break;
            }
            let search = f.q.as_ref().expect("a walk has free text");
            let mut last = None;
            let read = scan.read(conn, Plan::Walk, allowed, |r| {
                last = Some((r.time, rowid(org, r.seq)));
                if search.matches(&r.decode()?) {
                    records.push(r);
                    walk.found += 1;
                }
                Ok(records.len() < need)
            })?;
            walk.read += read;
            if records.len() >= need {
                break 'months;
            }
            if read < allowed {
                continue 'months; // the walk read the whole month
            }
            if let Some((ts, k)) = last {
                scan.before = Some((ts, k));
                scan.hi = scan.hi.min(ts + 1);
            }
        }
        let want = need - records.len();
        let Some(search) = f.q.as_ref().filter(|_| plan == Plan::Index) else {
            scan.read(conn, plan, want, |r| {
                records.push(r);
                Ok(true)
            })?;
            if records.len() >= need {
                break;
            }
            continue;
        };
        let mut found = scan.newest_unindexed(conn, search, want)?;
        let fts5 = match scan.indexed_k > rowid(org, 0) {
            true => fts5_in(conn, month, search)?,
            false => None,
        };
        if let Some((fts5, _)) = fts5 {
            scan.fts5 = fts5;
            // The index answers some words with a superset (`Search::exact_in_index`: pairs or tokens
            // it found apart), so what it finds is checked against the reference too, reading on past
            // what it drops. Each statement sorts every match before its first row, so each next one
            // reads twice as many (up to `MAX_READ`): about log n statements pass over n dropped rows.
            let mut indexed = Vec::new();
            let mut limit = want;
            loop {
                let mut last = None;
                let read = scan.read(conn, plan, limit, |r| {
                    last = Some((r.time, rowid(org, r.seq)));
                    if search.matches(&r.decode()?) {
                        indexed.push(r);
                    }
                    Ok(indexed.len() < want)
                })?;
                if indexed.len() >= want || read < limit {
                    break;
                }
                limit = (limit * 2).min(MAX_READ.max(want - indexed.len()));
                if let Some((ts, k)) = last {
                    scan.before = Some((ts, k));
                    scan.hi = scan.hi.min(ts + 1);
                }
            }
            found.extend(indexed);
            newest_first(&mut found, want);
        }
        records.extend(found);
        if records.len() >= need {
            break;
        }
    }
    Ok((records, as_of))
}

/// Counts per bucket of `width` from `f.from`. Without free text each bucket is one `count(*)` over its
/// slice of the `(org, ts)` index: six times faster than one `GROUP BY (ts - from) / width`, which
/// sorts every row through a temporary B-tree (0.12 s against 0.8 s for 4M events). Free text drives
/// from the FTS5 index joined to the rows and groups those, so memory stays bounded by the number of
/// buckets rather than the number of matches; the rows the index does not hold yet are read by key
/// and matched in Rust.
pub fn histogram(conn: &Connection, slug: &str, f: &Filter, width: Micros) -> Result<Vec<Bucket>> {
    let (org, size) = org_id(conn, slug)?;
    let mut counts = std::collections::BTreeMap::<i64, u64>::new();
    let (cond, cond_args) = conditions(f);
    if let Some(outcome) = f.counted_by_minute()
        && width >= MINUTE
    {
        return histogram_from_counts(conn, org, f, width, outcome, &Rollup::Minutes);
    }
    if let Some(outcome) = f.counted_by_action()
        && width >= SLOT
    {
        let (cond, args) = conditions(&Filter { action: f.action.clone(), ..Filter::default() });
        return histogram_from_counts(conn, org, f, width, outcome, &Rollup::Actions(&cond, &args));
    }
    if let Some((field, values, outcome)) = f.counted_by_field()
        && width >= SLOT
    {
        let marks = vec!["?"; values.len()].join(",");
        let ids: Vec<i64> = conn
            .prepare_cached(&format!("SELECT id FROM dict WHERE value IN ({marks})"))
            .and_then(|mut st| st.query_map(params_from_iter(values), |r| r.get(0))?.collect())
            .map_err(sql_error)?;
        if ids.is_empty() {
            return Ok(Vec::new()); // no event has any of these values
        }
        let dense: Vec<i64> = conn
            .prepare_cached(
                "SELECT slot FROM dense_slots WHERE org_id = ?1 AND slot >= ?2 AND slot <= ?3 ORDER BY slot",
            )
            .and_then(|mut st| {
                st.query_map(
                    params![org, crate::schema::slot_of(f.from), crate::schema::slot_of(f.to)],
                    |r| r.get(0),
                )?
                .collect()
            })
            .map_err(sql_error)?;
        let column = crate::schema::field_column(field);
        let marks = vec!["?"; ids.len()].join(",");
        let mut table_args = vec![Sql::Integer(field.code().into())];
        table_args.extend(ids.iter().map(|&id| Sql::Integer(id)));
        let rollup = Rollup::Fields {
            table: (format!(" AND field = ? AND value IN ({marks})"), table_args),
            rows: (format!(" AND {column} IN ({marks})"), ids.into_iter().map(Sql::Integer).collect()),
            dense,
        };
        return histogram_from_counts(conn, org, f, width, outcome, &rollup);
    }
    let indexed = match f.q {
        Some(_) => crate::index::indexed_size(conn, org)?.min(size),
        None => size,
    };
    for month in months(conn, f.from, f.to)? {
        let ev = events_table(month);
        let (lo, hi) = (f.from.max(month_start(month)), f.to.min(month_start(next_month(month))));
        let Some(q) = &f.q else {
            let sql = format!("SELECT count(*) FROM {ev} WHERE org = ? AND ts >= ? AND ts < ?{cond}");
            let mut st = conn.prepare_cached(&sql).map_err(sql_error)?;
            for b in (lo - f.from) / width..=(hi - 1 - f.from) / width {
                let start = f.from + b * width;
                let mut args = vec![
                    Sql::Integer(org),
                    Sql::Integer(start.max(lo)),
                    Sql::Integer(hi.min(start.saturating_add(width))),
                ];
                args.extend(cond_args.iter().cloned());
                let n: i64 = st.query_row(params_from_iter(args), |r| r.get(0)).map_err(sql_error)?;
                if n > 0 {
                    *counts.entry(b).or_default() += n as u64;
                }
            }
            continue;
        };
        let indexed_k = indexed_in(conn, org, month, indexed)?;
        let range = [Sql::Integer(lo), Sql::Integer(hi)];
        // The query for the month's index, and the part of its keys that can hold the window's events:
        // none when the index holds nothing of the org's month, a prefix expands to nothing, or no key
        // can hold an event of the window.
        let index = match indexed_k > rowid(org, 0) {
            true => match fts5_in(conn, month, q)? {
                Some((fts5, matches)) => {
                    Blocks::read(conn, month, (rowid(org, 0), indexed_k), (lo, hi), matches)?
                        .map(|blocks| (Sql::Text(fts5), blocks))
                }
                None => None,
            },
            false => None,
        };
        if let Some((fts5, blocks)) = index {
            let keys = [Sql::Integer(blocks.keys.0), Sql::Integer(blocks.keys.1)];
            if q.exact_in_index() && cond.is_empty() {
                let bucket = |ts: Micros| (ts - f.from) / width;
                blocks
                    .count(conn, month, &fts5, (lo, hi), bucket, |b, n| *counts.entry(b).or_default() += n)?;
            } else if q.exact_in_index() {
                let sql = format!(
                    "SELECT (ts - ?) / ? AS b, count(*) {} AND ts >= ? AND ts < ?{cond} GROUP BY b",
                    fts_join(month)
                );
                let mut args = vec![Sql::Integer(f.from), Sql::Integer(width), fts5];
                args.extend(keys);
                args.extend(range.iter().cloned());
                args.extend(cond_args.iter().cloned());
                let mut st = conn.prepare_cached(&sql).map_err(sql_error)?;
                let rows = st
                    .query_map(params_from_iter(args), |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))
                    .map_err(sql_error)?;
                for row in rows {
                    let (b, n) = row.map_err(sql_error)?;
                    *counts.entry(b).or_default() += n as u64;
                }
            } else {
                // The index answers this query with a superset (its pairs or tokens apart): each event
                // it finds is checked against the query.
                let sql = format!("SELECT ts, k, body {} AND ts >= ? AND ts < ?{cond}", fts_join(month));
                let mut args = vec![fts5];
                args.extend(keys);
                args.extend(range.iter().cloned());
                args.extend(cond_args.iter().cloned());
                count_matches(conn, &sql, args, q, |ts| {
                    *counts.entry((ts - f.from) / width).or_default() += 1
                })?;
            }
        }
        if indexed_k < rowid(org, size) {
            let sql =
                format!("SELECT ts, k, body FROM {ev} WHERE k >= ? AND k < ? AND ts >= ? AND ts < ?{cond}");
            let mut args = vec![Sql::Integer(indexed_k), Sql::Integer(rowid(org, size))];
            args.extend(range);
            args.extend(cond_args.iter().cloned());
            count_matches(conn, &sql, args, q, |ts| *counts.entry((ts - f.from) / width).or_default() += 1)?;
        }
    }
    Ok(counts.into_iter().map(|(b, count)| Bucket { start: f.from + b * width, count }).collect())
}

/// Where the times of one org's indexed events in a month lie among their keys, from `key_blocks`
/// (the span of times of each block of [`crate::schema::KEY_BLOCK`] keys, kept by the writer): which
/// keys can hold events of a window, and for most of them which bucket, without reading the row.
/// Joining each of FTS5's matches to its row to learn its time cost ~0.6 µs a match (2–3 s for a
/// word in a third of a 10M-event org's 90 days); reading the blocks costs one row per 64 events.
///
/// A pruned event's entry may stay in the index (see [`crate::index`]), and its key in a block of
/// live events: the keys read are bounded by the org's rows in the month, which are all newer than
/// any it had pruned there (retention removes an org's whole month, and `seq` only grows), and a
/// match in a block without a row is read like any other.
struct Blocks {
    /// The keys `[lo, hi)` FTS5's matches are read from: the org's rows in the month, narrowed to the
    /// blocks that may hold events of the window.
    keys: (i64, i64),
    /// The block `spans` begins with.
    first: i64,
    /// The earliest and latest time in each block from `first` on; `None` where no row says. Empty
    /// when the blocks were not read ([`Self::read`]): every match is looked up.
    spans: Vec<Option<(Micros, Micros)>>,
}

impl Blocks {
    /// At most this many blocks (8M keys) are read for one month; past that every match is looked up.
    const MAX: i64 = 1 << 17;

    /// The blocks of `org`'s keys `[range.0, range.1)` in `month`; `None` when none of them can hold
    /// an event in `[lo, hi)`. When the index says the query matches at most `matches` events, fewer
    /// than a third of the blocks, the blocks are not read: looking each match up costs less.
    fn read(
        conn: &Connection,
        month: u32,
        range: (i64, i64),
        (lo, hi): (Micros, Micros),
        matches: Option<u64>,
    ) -> Result<Option<Self>> {
        use crate::schema::{KEY_BLOCK_BITS, key_block};
        let ev = events_table(month);
        let end = |order: &str| -> Result<Option<i64>> {
            conn.prepare_cached(&format!(
                "SELECT k FROM {ev} WHERE k >= ?1 AND k < ?2 ORDER BY k {order} LIMIT 1"
            ))
            .and_then(|mut st| st.query_row([range.0, range.1], |r| r.get(0)).optional())
            .map_err(sql_error)
        };
        let (Some(min_k), Some(max_k)) = (end("ASC")?, end("DESC")?) else { return Ok(None) };
        let (first, last) = (key_block(min_k), key_block(max_k));
        if last - first >= Self::MAX || matches.is_some_and(|m| m.saturating_mul(3) < (last - first) as u64) {
            return Ok(Some(Self { keys: (min_k, max_k + 1), first, spans: Vec::new() }));
        }
        let mut spans = vec![None; (last - first + 1) as usize];
        let mut st = conn
            .prepare_cached("SELECT b, lo, hi FROM key_blocks WHERE b >= ?1 AND b <= ?2")
            .map_err(sql_error)?;
        let mut rows = st.query([first, last]).map_err(sql_error)?;
        while let Some(row) = rows.next().map_err(sql_error)? {
            let b: i64 = row.get(0).map_err(sql_error)?;
            spans[(b - first) as usize] =
                Some((row.get(1).map_err(sql_error)?, row.get(2).map_err(sql_error)?));
        }
        let may_hold = |s: &Option<(Micros, Micros)>| s.is_none_or(|(a, z)| a < hi && z >= lo);
        let Some(start) = spans.iter().position(may_hold) else { return Ok(None) };
        let end = spans.iter().rposition(may_hold).unwrap_or(start);
        spans.truncate(end + 1);
        spans.drain(..start);
        let first = first + start as i64;
        let keys = (
            min_k.max(first << KEY_BLOCK_BITS),
            (max_k + 1).min((first + spans.len() as i64) << KEY_BLOCK_BITS),
        );
        Ok(Some(Self { keys, first, spans }))
    }

    /// Counts FTS5's matches of `fts5` among [`Self::keys`] whose events lie in `[lo, hi)`, calling
    /// `counted(bucket, n)` for runs of matches in one bucket. A match in a block wholly inside the
    /// window and one bucket is counted by its key, one in a block wholly outside is passed over, and
    /// any other is looked up.
    fn count(
        &self,
        conn: &Connection,
        month: u32,
        fts5: &Sql,
        (lo, hi): (Micros, Micros),
        bucket: impl Fn(Micros) -> i64,
        mut counted: impl FnMut(i64, u64),
    ) -> Result<()> {
        let fts = fts_table(month);
        let mut matches = conn
            .prepare_cached(&format!(
                "SELECT rowid FROM idx.{fts} WHERE {fts} MATCH ?1 AND rowid >= ?2 AND rowid < ?3"
            ))
            .map_err(sql_error)?;
        let mut time = conn
            .prepare_cached(&format!("SELECT ts FROM {} WHERE k = ?1", events_table(month)))
            .map_err(sql_error)?;
        let mut rows = matches.query(params![fts5, self.keys.0, self.keys.1]).map_err(sql_error)?;
        let mut run = (0, 0);
        while let Some(row) = rows.next().map_err(sql_error)? {
            let k: i64 = row.get(0).map_err(sql_error)?;
            let span = usize::try_from(crate::schema::key_block(k) - self.first)
                .ok()
                .and_then(|i| self.spans.get(i));
            let b = match span.copied().flatten() {
                Some((a, z)) if z < lo || a >= hi => continue,
                Some((a, z)) if a >= lo && z < hi && bucket(a) == bucket(z) => bucket(a),
                _ => match time.query_row([k], |r| r.get::<_, i64>(0)).optional().map_err(sql_error)? {
                    Some(ts) if ts >= lo && ts < hi => bucket(ts),
                    _ => continue,
                },
            };
            if b != run.0 && run.1 > 0 {
                counted(run.0, run.1);
                run.1 = 0;
            }
            run = (b, run.1 + 1);
        }
        if run.1 > 0 {
            counted(run.0, run.1);
        }
        Ok(())
    }
}

/// Runs `sql`, which selects `ts, k, body`, and calls `counted` with the time of each row `q` matches.
fn count_matches(
    conn: &Connection,
    sql: &str,
    args: Vec<Sql>,
    q: &trail_model::text::Search,
    mut counted: impl FnMut(Micros),
) -> Result<()> {
    let mut st = conn.prepare_cached(sql).map_err(sql_error)?;
    let mut rows = st.query(params_from_iter(args)).map_err(sql_error)?;
    while let Some(row) = rows.next().map_err(sql_error)? {
        let ts: Micros = row.get(0).map_err(sql_error)?;
        let seq = crate::schema::seq_of(row.get(1).map_err(sql_error)?);
        let record =
            RawRecord { time: ts, seq, bytes: body::unpack(conn, row.get(2).map_err(sql_error)?, seq)? };
        if q.matches(&record.decode()?) {
            counted(ts);
        }
    }
    Ok(())
}

/// The counts a histogram sums its whole units from.
enum Rollup<'a> {
    /// `minute_counts`: every event, per minute.
    Minutes,
    /// `action_slots`: the events of some actions (the condition on `action` and its arguments), per
    /// ten minutes.
    Actions(&'a str, &'a [Sql]),
    /// `field_slots`: the events of some values of one field per ten minutes, kept only for the
    /// org's `dense` slots (sorted); the other slots' few rows are counted. `table` is the condition
    /// on `field_slots` and `rows` the same on the events' column, each with its arguments.
    Fields { table: (String, Vec<Sql>), rows: (String, Vec<Sql>), dense: Vec<i64> },
}

/// A histogram from counts kept per unit of time ([`Rollup`]): the whole units inside each bucket are
/// summed from their counts (one range of the primary key per bucket, per action for
/// `action_slots`, per value for `field_slots`); of a unit that a bucket boundary (or the window's
/// own start and end) cuts, the smaller side is counted from the time index and the other is the
/// unit's count less it (at most half a unit of rows a cut), and the units a rollup does not count
/// are counted from the time index (fewer than [`crate::schema::DENSE_SLOT`] rows a slot). The cost
/// grows with the window's units and buckets and the rows of half a unit at each cut, not with the
/// number of events outside them. With `outcome`, only events of that outcome are counted
/// (`failures`, or `n - failures`).
fn histogram_from_counts(
    conn: &Connection,
    org: i64,
    f: &Filter,
    width: Micros,
    outcome: Option<Outcome>,
    rollup: &Rollup,
) -> Result<Vec<Bucket>> {
    let (table, column, unit, (table_cond, table_args), (cond, cond_args), dense) = match rollup {
        Rollup::Minutes => ("minute_counts", "minute", MINUTE, ("", &[][..]), ("", &[][..]), None),
        Rollup::Actions(cond, args) => ("action_slots", "slot", SLOT, (*cond, *args), (*cond, *args), None),
        Rollup::Fields { table, rows, dense } => (
            "field_slots",
            "slot",
            SLOT,
            (table.0.as_str(), &table.1[..]),
            (rows.0.as_str(), &rows.1[..]),
            Some(dense),
        ),
    };
    let (measure, rows) = match outcome {
        None => ("n", ""),
        Some(Outcome::Failure) => ("failures", " AND outcome = 1"),
        Some(Outcome::Success) => ("n - failures", " AND outcome = 0"),
    };
    let partitions: std::collections::HashSet<u32> = conn
        .prepare_cached("SELECT month FROM partitions")
        .and_then(|mut st| st.query_map([], |r| r.get(0))?.collect())
        .map_err(sql_error)?;
    let count_rows = |lo: Micros, hi: Micros| -> Result<u64> {
        // A span of under two units: one month partition, or two when a month begins inside it.
        let (mut total, mut month) = (0, month_of(lo));
        loop {
            if partitions.contains(&month) {
                let (a, b) = (lo.max(month_start(month)), hi.min(month_start(next_month(month))));
                let sql = format!(
                    "SELECT count(*) FROM {} WHERE org = ?1 AND ts >= ?2 AND ts < ?3{rows}{cond}",
                    events_table(month)
                );
                let mut args = vec![Sql::Integer(org), Sql::Integer(a), Sql::Integer(b)];
                args.extend(cond_args.iter().cloned());
                let n: i64 = conn
                    .prepare_cached(&sql)
                    .and_then(|mut st| st.query_row(params_from_iter(args), |r| r.get(0)))
                    .map_err(sql_error)?;
                total += n as u64;
            }
            month = next_month(month);
            if month_start(month) >= hi {
                return Ok(total);
            }
        }
    };
    let mut sum = conn
        .prepare_cached(&format!(
            "SELECT sum({measure}) FROM {table} WHERE org_id = ?1 AND {column} >= ?2 AND {column} < ?3{table_cond}"
        ))
        .map_err(sql_error)?;
    let mut summed = |first: i64, last: i64| -> Result<u64> {
        let mut args = vec![Sql::Integer(org), Sql::Integer(first), Sql::Integer(last)];
        args.extend(table_args.iter().cloned());
        let n: Option<i64> = sum.query_row(params_from_iter(args), |r| r.get(0)).map_err(sql_error)?;
        Ok(n.unwrap_or(0) as u64)
    };
    // The rule is `trail_store::CutPlan`'s, shared with PostgreSQL: per bucket, its whole units'
    // counts (one range of the primary key); of a unit a bucket boundary cuts and whose count is
    // kept, only the smaller side from rows (an hour in minutes from an instant off the minute reads
    // at most half of its rows, where it read all of them); the window's cut ends and the units
    // without a count from rows.
    let plan = trail_store::CutPlan::new(f.from, f.to, width, unit, dense.map(Vec::as_slice));
    let rows = plan
        .lo
        .iter()
        .zip(&plan.hi)
        .map(|(&lo, &hi)| Ok(count_rows(lo, hi)? as i64))
        .collect::<Result<Vec<i64>>>()?;
    let whole = (0..plan.buckets)
        .map(|b| match plan.units_of(b) {
            (first, last) if first < last => Ok((b, summed(first, last)? as i64)),
            _ => Ok((b, 0)),
        })
        .collect::<Result<Vec<_>>>()?;
    let owned = plan.owners.keys().map(|&u| Ok((u, summed(u, u + 1)? as i64))).collect::<Result<Vec<_>>>()?;
    plan.assemble(&rows, whole, owned)
        .into_iter()
        .map(|(b, n)| {
            let count = u64::try_from(n).map_err(|_| {
                StoreError::Corrupt(format!(
                    "the {table} counts of bucket {b} add up to {n}: a unit counts fewer events than its rows"
                ))
            })?;
            Ok(Bucket { start: f.from + b * width, count })
        })
        .collect()
}

pub fn event(conn: &Connection, filters: &ids::Filters, slug: &str, id: &str) -> Result<Option<Record>> {
    // One snapshot: the run list and the runs it names (a merge may drop runs meanwhile).
    let tx = conn.unchecked_transaction().map_err(sql_error)?;
    let (org, _) = org_id(&tx, slug)?;
    let mut runs = ids::Runs::default();
    runs.refresh(&tx, filters).map_err(sql_error)?;
    // Every entry of the id's hash: the one whose event has this id (retention leaves stale entries).
    for (seq, month) in ids::find(&tx, &runs, org, id).map_err(sql_error)? {
        let partition: bool = tx
            .query_row("SELECT 1 FROM partitions WHERE month = ?1", [month], |_| Ok(()))
            .optional()
            .map_err(sql_error)?
            .is_some();
        let k = rowid(org, seq);
        let body: Option<Vec<u8>> = if partition {
            tx.prepare_cached(&format!("SELECT body FROM {} WHERE k = ?1", events_table(month)))
                .and_then(|mut st| st.query_row([k], |r| r.get(0)).optional())
                .map_err(sql_error)?
        } else {
            None
        };
        if let Some(stored) = body {
            let record = Record::from_bytes(body::unpack(&tx, stored, seq)?)?;
            if record.event.id == id {
                return Ok(Some(record));
            }
            continue;
        }
        // Retention leaves the id map's entries behind; a pruned event's leaf hash is kept.
        let pruned = tx
            .query_row("SELECT 1 FROM pruned_leaves WHERE k = ?1", [k], |_| Ok(()))
            .optional()
            .map_err(sql_error)?
            .is_some();
        if !pruned {
            return Err(StoreError::Corrupt(format!(
                "event {id} is indexed at seq {seq} but its row is missing"
            )));
        }
    }
    Ok(None)
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
                Ok((r.get(0)?, crate::schema::seq_of(r.get(1)?), r.get::<_, Vec<u8>>(2)?))
            })
            .map_err(sql_error)?;
        for row in rows {
            let (time, seq, stored) = row.map_err(sql_error)?;
            out.push(RawRecord { time, seq, bytes: body::unpack(conn, stored, seq)? });
        }
    }
    out.sort_by_key(|r| r.seq);
    out.truncate(limit);
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use trail_model::time::{MICROS_PER_SECOND, parse_rfc3339};
    use trail_store::conformance::event;

    use super::*;

    /// SQLite's virtual machine steps (in hundreds) that `run` takes on `conn`.
    pub(crate) fn work(conn: &mut Connection, run: impl FnOnce(&Connection)) -> u64 {
        let steps = Arc::new(AtomicU64::new(0));
        let counted = steps.clone();
        conn.progress_handler(
            100,
            Some(move || {
                counted.fetch_add(1, Ordering::Relaxed);
                false
            }),
        )
        .unwrap();
        run(conn);
        conn.progress_handler(0, None::<fn() -> bool>).unwrap();
        steps.load(Ordering::Relaxed)
    }

    /// An hour in one-minute buckets from an instant 17 s past a minute (what a chart of the last hour
    /// asks for) cuts every minute in two. Each cut minute's count is kept, so only its smaller side is
    /// counted from the rows: the histogram reads about 17/60 of the hour's rows, where it read every
    /// one (its work was that of counting them all).
    #[tokio::test]
    async fn an_hour_in_minutes_off_the_minute_counts_the_smaller_side_of_each_cut() {
        let dir = tempfile::tempdir().unwrap();
        let start = parse_rfc3339("2026-06-15T00:00:00Z").unwrap();
        // Ten events a second for an hour and a minute.
        let events = (0..36_600).map(|i| event("a", "x.y", start + i * MICROS_PER_SECOND / 10)).collect();
        crate::index::tests::stored(dir.path(), "acme", events).await;
        let mut conn = Connection::open(dir.path().join(crate::DB_FILE)).unwrap();
        let from = start + 17 * MICROS_PER_SECOND;
        let to = from + 3_600 * MICROS_PER_SECOND;
        let every_row = work(&mut conn, |c| {
            let sql = format!(
                "SELECT count(*) FROM {} WHERE org = 1 AND ts >= ?1 AND ts < ?2",
                events_table(202606)
            );
            let n: i64 = c.query_row(&sql, [from, to], |r| r.get(0)).unwrap();
            assert_eq!(n, 36_000);
        });
        let histogram = work(&mut conn, |c| {
            let f = Filter { from, to, ..Filter::default() };
            let buckets = super::histogram(c, "acme", &f, 60 * MICROS_PER_SECOND).unwrap();
            assert_eq!(buckets.len(), 60);
            assert!(buckets.iter().all(|b| b.count == 600), "{buckets:?}");
        });
        assert!(histogram * 2 < every_row, "histogram {histogram}, counting every row {every_row}");
    }
}
