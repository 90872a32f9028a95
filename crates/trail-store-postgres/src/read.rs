//! Read paths: filtered queries, histograms, lookups by id and following the log in seq order.
//!
//! A query is one statement on the partitioned `events` table: the window prunes it to the months it
//! covers, `(org, ts, seq)` (or `(org, actor, ts, seq)`) gives newest-first order, and paging continues
//! strictly below the cursor's `(ts, seq)`. Repeatable filters become `= ANY($n)` on an array, so
//! a statement's text depends only on which filters are present (prepared once per connection).
//! Free text (`q`, semantics of `trail_model::text`) becomes, per term, an index condition on the
//! token lexemes and an exact check on the token text: ` tok1 tok2 last` must occur in
//! `' ' || search`, which is "consecutive tokens, the last one as a prefix". Nothing here writes.

use crate::schema::{MINUTE, SLOT};
use deadpool_postgres::GenericClient;
use tokio_postgres::types::ToSql;
use trail_model::Outcome;
use trail_model::query::{ActionMatch, CountedField, Filter, Query};
use trail_model::text::Search;
use trail_model::time::Micros;
use trail_store::{Bucket, Page, RawPage, RawRecord, Record, Result, StoreError, page_from, raw_page_from};

use crate::{pg_error, signed, unsigned};

type Param = Box<dyn ToSql + Sync + Send>;

/// A WHERE clause under construction, with its parameters (`$1` is always the org).
struct Conditions {
    sql: String,
    params: Vec<Param>,
}

impl Conditions {
    fn new(org: i64) -> Self {
        Self { sql: "org = $1".into(), params: vec![Box::new(org)] }
    }

    /// Adds a parameter and returns its placeholder.
    fn param(&mut self, v: impl ToSql + Sync + Send + 'static) -> String {
        self.params.push(Box::new(v));
        format!("${}", self.params.len())
    }

    fn and(&mut self, clause: &str) {
        self.sql.push_str(" AND ");
        self.sql.push_str(clause);
    }

    fn any(&mut self, column: &str, values: &[String]) {
        if values.is_empty() {
            return;
        }
        let p = self.param(values.to_vec());
        self.and(&format!("{column} = ANY({p}::text[])"));
    }

    fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect()
    }
}

/// The filter's conditions beyond org and window.
fn filters(c: &mut Conditions, f: &Filter) {
    c.any("actor", &f.actor);
    c.any("target_type", &f.target_type);
    c.any("target_id", &f.target_id);
    c.any("project", &f.project);
    c.any("source", &f.source);
    if !f.action.is_empty() {
        let (mut exact, mut parts) = (Vec::new(), Vec::new());
        for a in &f.action {
            match a {
                ActionMatch::Exact(v) => exact.push(v.clone()),
                ActionMatch::Prefix(p) => {
                    let p = c.param(p.clone());
                    parts.push(format!("starts_with(action, {p})"));
                }
            }
        }
        if !exact.is_empty() {
            let p = c.param(exact);
            parts.push(format!("action = ANY({p}::text[])"));
        }
        c.and(&format!("({})", parts.join(" OR ")));
    }
    let failure = f.outcome.contains(&Outcome::Failure);
    if failure != f.outcome.contains(&Outcome::Success) {
        let p = c.param(failure);
        c.and(&format!("failure = {p}"));
    }
    if let Some(q) = &f.q {
        free_text(c, q);
    }
}

/// Free text: the exact check first (cheap, and it short-circuits when the planner filters rows of a
/// time-ordered scan), then the lexeme condition the GIN index answers.
fn free_text(c: &mut Conditions, q: &Search) {
    for term in &q.terms {
        let pattern = format!("% {}%", like_escape(&term.join(" ")));
        let p = c.param(pattern);
        c.and(&format!("(' ' || search) LIKE {p}"));
    }
    let p = c.param(tsquery(q));
    c.and(&format!("array_to_tsvector(string_to_array(search, ' ')) @@ {p}::text::tsquery"));
}

/// Tokens are letters and digits, so this never triggers; it keeps the pattern literal regardless.
fn like_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
}

/// Every token of every term as a lexeme, the last of each term as a prefix: a necessary condition of
/// the exact semantics, which the index can answer.
fn tsquery(q: &Search) -> String {
    let mut parts = Vec::new();
    for term in &q.terms {
        let last = term.len().saturating_sub(1);
        for (i, tok) in term.iter().enumerate() {
            let quoted = format!("'{}'", tok.replace('\\', "\\\\").replace('\'', "''"));
            parts.push(if i == last { format!("{quoted}:*") } else { quoted });
        }
    }
    parts.join(" & ")
}

pub(crate) async fn tree_size<C: GenericClient>(client: &C, org: i64) -> Result<u64> {
    let st =
        client.prepare_cached("SELECT tree_size FROM log_heads WHERE org = $1").await.map_err(pg_error)?;
    let row = client
        .query_opt(&st, &[&org])
        .await
        .map_err(pg_error)?
        .ok_or_else(|| StoreError::NotFound(format!("log of organization {org}")))?;
    unsigned(row.try_get(0).map_err(pg_error)?, "tree size")
}

pub(crate) async fn self_audit_from<C: GenericClient>(client: &C, org: i64) -> Result<u64> {
    let st = client
        .prepare_cached("SELECT self_audit_from FROM log_heads WHERE org = $1")
        .await
        .map_err(pg_error)?;
    let row = client
        .query_opt(&st, &[&org])
        .await
        .map_err(pg_error)?
        .ok_or_else(|| StoreError::NotFound(format!("log of organization {org}")))?;
    unsigned(row.try_get(0).map_err(pg_error)?, "self_audit_from")
}

pub(crate) async fn tree_sizes<C: GenericClient>(client: &C) -> Result<Vec<(String, u64)>> {
    let st = client
        .prepare_cached(
            "SELECT o.slug, coalesce(h.tree_size, 0) FROM orgs o LEFT JOIN log_heads h ON h.org = o.org ORDER BY o.slug",
        )
        .await
        .map_err(pg_error)?;
    let rows = client.query(&st, &[]).await.map_err(pg_error)?;
    rows.iter()
        .map(|r| {
            Ok((r.try_get(0).map_err(pg_error)?, unsigned(r.try_get(1).map_err(pg_error)?, "tree size")?))
        })
        .collect()
}

pub(crate) async fn query<C: GenericClient>(client: &C, org: i64, q: &Query) -> Result<Page> {
    let (rows, as_of) = rows(client, org, q).await?;
    let records = rows.into_iter().map(|r| Record::from_bytes(r.bytes)).collect::<Result<Vec<_>>>()?;
    Ok(page_from(records, q, as_of))
}

pub(crate) async fn query_raw<C: GenericClient>(client: &C, org: i64, q: &Query) -> Result<RawPage> {
    let (rows, as_of) = rows(client, org, q).await?;
    Ok(raw_page_from(rows, q, as_of))
}

fn raw(r: &tokio_postgres::Row) -> Result<RawRecord> {
    Ok(RawRecord {
        time: r.try_get(0).map_err(pg_error)?,
        seq: unsigned(r.try_get(1).map_err(pg_error)?, "seq")?,
        bytes: r.try_get(2).map_err(pg_error)?,
    })
}

/// Up to `limit + 1` matching rows, newest first, and the log size the page is a snapshot of.
async fn rows<C: GenericClient>(client: &C, org: i64, q: &Query) -> Result<(Vec<RawRecord>, u64)> {
    let size = tree_size(client, org).await?;
    let as_of = q.cursor.map_or(size, |c| c.as_of.min(size));
    let f = &q.filter;
    let mut c = Conditions::new(org);
    let from = c.param(f.from);
    let to = c.param(q.cursor.map_or(f.to, |cur| f.to.min(cur.time + 1)));
    c.and(&format!("ts >= {from} AND ts < {to}"));
    let as_of_p = c.param(signed(as_of, "tree size")?);
    c.and(&format!("seq < {as_of_p}"));
    if let Some(cur) = &q.cursor {
        let (t, s) = (c.param(cur.time), c.param(signed(cur.seq, "seq")?));
        c.and(&format!("(ts, seq) < ({t}, {s})"));
    }
    filters(&mut c, f);
    let limit = c.param(i64::try_from(q.limit + 1).unwrap_or(i64::MAX));
    let sql =
        format!("SELECT ts, seq, body FROM events WHERE {} ORDER BY ts DESC, seq DESC LIMIT {limit}", c.sql);
    let st = client.prepare_cached(&sql).await.map_err(pg_error)?;
    let rows = client.query(&st, &c.refs()).await.map_err(pg_error)?;
    let records = rows.iter().map(raw).collect::<Result<Vec<_>>>()?;
    Ok((records, as_of))
}

pub(crate) async fn histogram<C: GenericClient>(
    client: &C,
    org: i64,
    f: &Filter,
    width: Micros,
) -> Result<Vec<Bucket>> {
    if let Some(outcome) = f.counted_by_minute()
        && width >= MINUTE
    {
        return histogram_from_counts(client, org, f, width, outcome, &Counts::Minutes).await;
    }
    if let Some(outcome) = f.counted_by_action()
        && width >= SLOT
    {
        let (mut exact, mut prefixes) = (Vec::new(), Vec::new());
        for a in &f.action {
            match a {
                ActionMatch::Exact(v) => exact.push(v.clone()),
                ActionMatch::Prefix(p) => prefixes.push(p.clone()),
            }
        }
        let counts = Counts::Actions { exact, prefixes };
        return histogram_from_counts(client, org, f, width, outcome, &counts).await;
    }
    if let Some((field, values, outcome)) = f.counted_by_field()
        && width >= SLOT
    {
        let st = client
            .prepare_cached(
                "SELECT slot FROM dense_slots WHERE org = $1 AND slot >= $2 AND slot <= $3 ORDER BY slot",
            )
            .await
            .map_err(pg_error)?;
        let range = [f.from.div_euclid(SLOT), f.to.div_euclid(SLOT)];
        let dense = client
            .query(&st, &[&org, &range[0], &range[1]])
            .await
            .map_err(pg_error)?
            .iter()
            .map(|r| r.try_get(0).map_err(pg_error))
            .collect::<Result<Vec<i64>>>()?;
        let counts = Counts::Fields { field, code: field.code(), values: values.to_vec(), dense };
        return histogram_from_counts(client, org, f, width, outcome, &counts).await;
    }
    let mut c = Conditions::new(org);
    let from = c.param(f.from);
    let to = c.param(f.to);
    c.and(&format!("ts >= {from} AND ts < {to}"));
    filters(&mut c, f);
    let w = c.param(width);
    let sql = format!(
        "SELECT (ts - {from}) / {w} AS b, count(*) FROM events WHERE {} GROUP BY b ORDER BY b",
        c.sql
    );
    let st = client.prepare_cached(&sql).await.map_err(pg_error)?;
    let mut out = Vec::new();
    for r in client.query(&st, &c.refs()).await.map_err(pg_error)? {
        let b: i64 = r.try_get(0).map_err(pg_error)?;
        let n: i64 = r.try_get(1).map_err(pg_error)?;
        out.push(Bucket { start: f.from + b * width, count: unsigned(n, "count")? });
    }
    Ok(out)
}

/// The counts a histogram sums its whole units from.
enum Counts {
    /// `minute_counts`: every event, per minute.
    Minutes,
    /// `action_slots`: the events of some actions (exact, or by prefix), per ten minutes.
    Actions { exact: Vec<String>, prefixes: Vec<String> },
    /// `field_slots`: the events of some values of one field per ten minutes, kept only for the org's
    /// `dense` slots (sorted); the other slots' few rows are counted.
    Fields { field: CountedField, code: i16, values: Vec<String>, dense: Vec<i64> },
}

impl Counts {
    fn table(&self) -> (&'static str, &'static str, Micros) {
        match self {
            Counts::Minutes => ("minute_counts", "minute", MINUTE),
            Counts::Actions { .. } => ("action_slots", "slot", SLOT),
            Counts::Fields { .. } => ("field_slots", "slot", SLOT),
        }
    }

    /// The condition on the events (as `e`) and its parameters, numbered from `$n`.
    fn on_rows(&self, n: usize) -> (String, Vec<&(dyn ToSql + Sync)>) {
        match self {
            Counts::Minutes => (String::new(), Vec::new()),
            Counts::Actions { exact, prefixes } => (of_actions("e.action", n), vec![exact, prefixes]),
            Counts::Fields { field, values, .. } => {
                (format!(" AND e.{} = ANY(${n}::text[])", field_column(*field)), vec![values])
            }
        }
    }

    /// The same condition on the counts table, numbered from `$n`.
    fn on_counts(&self, n: usize) -> (String, Vec<&(dyn ToSql + Sync)>) {
        match self {
            Counts::Minutes => (String::new(), Vec::new()),
            Counts::Actions { exact, prefixes } => (of_actions("action", n), vec![exact, prefixes]),
            Counts::Fields { code, values, .. } => {
                (format!(" AND field = ${n} AND value = ANY(${}::text[])", n + 1), vec![code, values])
            }
        }
    }
}

/// Some actions, exact (`$n`) or by prefix (`$n+1`), on a column.
fn of_actions(col: &str, n: usize) -> String {
    format!(
        " AND ({col} = ANY(${n}::text[]) OR EXISTS (SELECT 1 FROM unnest(${}::text[]) AS x(p) WHERE starts_with({col}, x.p)))",
        n + 1
    )
}

/// The events' column of a counted field.
fn field_column(field: CountedField) -> &'static str {
    match field {
        CountedField::Actor => "actor",
        CountedField::TargetType => "target_type",
        CountedField::Project => "project",
        CountedField::Source => "source",
    }
}

/// A histogram from counts kept per unit of time, in three statements whatever the number of events:
/// the whole units inside each bucket from their counts, and the parts of the units that a bucket
/// boundary (or the window's start and end) cuts, and the slots `field_slots` does not count, from
/// the `(org, ts)` index ([`Counts`]). Of a unit cut by a bucket boundary and counted, only the
/// smaller side is counted from rows; the other side is the unit's count less it (as in the embedded
/// store): a last-hour chart in minutes from an instant off the minute then reads at most half of
/// each minute's rows, not all of them. With `outcome`, only events of that outcome are counted
/// (`failures`, or `n - failures`).
async fn histogram_from_counts<C: GenericClient>(
    client: &C,
    org: i64,
    f: &Filter,
    width: Micros,
    outcome: Option<Outcome>,
    counts_of: &Counts,
) -> Result<Vec<Bucket>> {
    let (measure, rows) = match outcome {
        None => ("n", ""),
        Some(Outcome::Failure) => ("failures", " AND e.failure"),
        Some(Outcome::Success) => ("n - failures", " AND NOT e.failure"),
    };
    let (table, column, unit) = counts_of.table();
    let dense = match counts_of {
        Counts::Fields { dense, .. } => Some(dense.as_slice()),
        _ => None,
    };
    let plan = trail_store::CutPlan::new(f.from, f.to, width, unit, dense);
    let of: Vec<i64> = (0..plan.lo.len() as i64).collect();
    let (cond, cond_params) = counts_of.on_rows(5);
    let st = client
        .prepare_cached(&format!(
            "SELECT s.k, count(*) FROM unnest($2::int8[], $3::int8[], $4::int8[]) AS s(lo, hi, k)
             JOIN events e ON e.org = $1 AND e.ts >= s.lo AND e.ts < s.hi{rows}{cond} GROUP BY s.k"
        ))
        .await
        .map_err(pg_error)?;
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&org, &plan.lo, &plan.hi, &of];
    params.extend(cond_params);
    let mut counted = vec![0; plan.lo.len()];
    for r in client.query(&st, &params).await.map_err(pg_error)? {
        let (k, n): (i64, i64) = (r.try_get(0).map_err(pg_error)?, r.try_get(1).map_err(pg_error)?);
        let Some(slot) = usize::try_from(k).ok().and_then(|k| counted.get_mut(k)) else {
            return Err(StoreError::Internal(format!("the histogram's row count {k} names no cut")));
        };
        *slot = n;
    }
    // Every whole unit of the window, summed per bucket by the bucket its start falls in…
    let (cond, cond_params) = counts_of.on_counts(7);
    let st = client
        .prepare_cached(&format!(
            "SELECT ({column} * $2 - $3) / $4 AS b, sum({measure})::int8 FROM {table}
             WHERE org = $1 AND {column} >= $5 AND {column} < $6{cond} GROUP BY b"
        ))
        .await
        .map_err(pg_error)?;
    let mut params: Vec<&(dyn ToSql + Sync)> =
        vec![&org, &unit, &f.from, &width, &plan.range.0, &plan.range.1];
    params.extend(cond_params);
    let mut whole = Vec::new();
    for r in client.query(&st, &params).await.map_err(pg_error)? {
        whole.push((r.try_get(0).map_err(pg_error)?, r.try_get(1).map_err(pg_error)?));
    }
    // …and the counts of the units a boundary cuts, which move ([`trail_store::CutPlan::assemble`]).
    let units: Vec<i64> = plan.owners.keys().copied().collect();
    let (cond, cond_params) = counts_of.on_counts(3);
    let st = client
        .prepare_cached(&format!(
            "SELECT {column}, sum({measure})::int8 FROM {table} WHERE org = $1 AND {column} = ANY($2){cond} GROUP BY {column}"
        ))
        .await
        .map_err(pg_error)?;
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&org, &units];
    params.extend(cond_params);
    let mut owned = Vec::new();
    for r in client.query(&st, &params).await.map_err(pg_error)? {
        owned.push((r.try_get(0).map_err(pg_error)?, r.try_get(1).map_err(pg_error)?));
    }
    let counts = plan.assemble(&counted, whole, owned);
    counts
        .into_iter()
        .map(|(b, n)| {
            let count = unsigned(n, "count").map_err(|_| {
                StoreError::Corrupt(format!(
                    "the {table} counts of bucket {b} add up to {n}: a unit counts fewer events than its rows"
                ))
            })?;
            Ok(Bucket { start: f.from + b * width, count })
        })
        .collect()
}

pub(crate) async fn event<C: GenericClient>(client: &C, org: i64, id: &str) -> Result<Option<Record>> {
    // The id's time names the partition, so the join probes one month's (org, ts, seq) key.
    let st = client
        .prepare_cached(
            "SELECT i.seq, e.body FROM event_ids i
             LEFT JOIN events e ON e.org = i.org AND e.ts = i.ts AND e.seq = i.seq
             WHERE i.org = $1 AND i.id = $2",
        )
        .await
        .map_err(pg_error)?;
    let Some(row) = client.query_opt(&st, &[&org, &id]).await.map_err(pg_error)? else {
        return Ok(None);
    };
    let seq: i64 = row.try_get(0).map_err(pg_error)?;
    match row.try_get::<_, Option<Vec<u8>>>(1).map_err(pg_error)? {
        Some(body) => Record::from_bytes(body).map(Some),
        None => {
            Err(StoreError::Corrupt(format!("event {id} is indexed at seq {seq} but its row is missing")))
        }
    }
}

/// The org's hot events after a seq, in seq order (a merge of each month's `(org, seq)` index).
pub(crate) async fn events_after<C: GenericClient>(
    client: &C,
    org: i64,
    after: Option<u64>,
    limit: usize,
) -> Result<Vec<RawRecord>> {
    let after = after.map_or(Ok(-1), |s| signed(s, "seq"))?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let st = client
        .prepare_cached("SELECT ts, seq, body FROM events WHERE org = $1 AND seq > $2 ORDER BY seq LIMIT $3")
        .await
        .map_err(pg_error)?;
    client.query(&st, &[&org, &after, &limit]).await.map_err(pg_error)?.iter().map(raw).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_text_becomes_an_exact_pattern_and_a_lexeme_prefilter() {
        let q = Search::parse("req-5f2 Bob").unwrap();
        assert_eq!(tsquery(&q), "'req' & '5f2':* & 'bob':*");
        let mut c = Conditions::new(1);
        free_text(&mut c, &q);
        assert_eq!(
            c.sql,
            "org = $1 AND (' ' || search) LIKE $2 AND (' ' || search) LIKE $3 \
             AND array_to_tsvector(string_to_array(search, ' ')) @@ $4::text::tsquery"
        );
        assert_eq!(like_escape("a_b%c\\"), "a\\_b\\%c\\\\");
    }
}
