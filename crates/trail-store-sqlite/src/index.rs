//! The full-text index, kept behind the log instead of inside each append.
//!
//! An append used to insert every event's text into its month's FTS5 table in the acknowledging
//! transaction; FTS5 then wrote its pending terms as a new segment at every commit and merged those
//! segments inside later appends, so the cost of search fell on ingest, most of all for small
//! requests. Now an append writes only the event, and the writer thread indexes afterwards, in
//! transactions of its own (`Writer::index_step`): when no append is waiting, or when the unindexed
//! tail grows past a bound. `orgs.indexed_size` records how much of each org's log the index holds:
//! every event with `seq < indexed_size` is indexed, none above it is.
//!
//! Readers stay exact without waiting for the indexer: a search driven by the index also reads the
//! events from `indexed_size` on (a key range, bounded by the indexer's lag) and matches them in
//! Rust, with the same matcher as every other plan. The index is derived data: a lost index
//! transaction (they commit without fsync) is redone from `indexed_size`, which commits with it.

use rusqlite::{Connection, params};
use trail_model::{canonical, text};
use trail_store::{Result, StoreError};

use crate::schema::{events_table, fts_table, rowid, seq_of};
use crate::sql_error;

/// Orgs whose index lags their log: `(org id, indexed_size, tree_size)`.
pub fn lagging(conn: &Connection) -> Result<Vec<(i64, u64, u64)>> {
    let mut st = conn
        .prepare_cached(
            "SELECT id, indexed_size, tree_size FROM orgs WHERE indexed_size < tree_size ORDER BY id",
        )
        .map_err(sql_error)?;
    let rows = st
        .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64, r.get::<_, i64>(2)? as u64)))
        .map_err(sql_error)?;
    rows.collect::<rusqlite::Result<_>>().map_err(sql_error)
}

/// Where an org's index ends: every event below this seq is indexed.
pub fn indexed_size(conn: &Connection, org: i64) -> Result<u64> {
    conn.prepare_cached("SELECT indexed_size FROM orgs WHERE id = ?1")
        .and_then(|mut st| st.query_row([org], |r| r.get::<_, i64>(0)))
        .map(|n| n as u64)
        .map_err(sql_error)
}

/// Indexes the org's events with `from <= seq < to` (every month partition holding some) and moves
/// its `indexed_size` to `to`, inside the caller's transaction. Returns how many events were indexed;
/// fewer than `to - from` when retention removed some before they were indexed.
pub fn index_range(conn: &Connection, org: i64, from: u64, to: u64) -> Result<usize> {
    let months: Vec<u32> = conn
        .prepare_cached("SELECT month FROM partitions")
        .and_then(|mut st| st.query_map([], |r| r.get(0))?.collect())
        .map_err(sql_error)?;
    let mut indexed = 0;
    for month in months {
        let mut read = conn
            .prepare_cached(&format!("SELECT k, body FROM {} WHERE k >= ?1 AND k < ?2", events_table(month)))
            .map_err(sql_error)?;
        let mut rows = read.query(params![rowid(org, from), rowid(org, to)]).map_err(sql_error)?;
        let mut insert = conn
            .prepare_cached(&format!("INSERT INTO {}(rowid, text) VALUES (?1, ?2)", fts_table(month)))
            .map_err(sql_error)?;
        while let Some(row) = rows.next().map_err(sql_error)? {
            let k: i64 = row.get(0).map_err(sql_error)?;
            let body = row
                .get_ref(1)
                .map_err(sql_error)?
                .as_blob()
                .map_err(|e| StoreError::Internal(e.to_string()))?;
            let event = canonical::decode(body).map_err(|e| {
                StoreError::Corrupt(format!("seq {}: stored event does not decode: {e}", seq_of(k)))
            })?;
            insert.execute(params![k, text::searchable_text(&event)]).map_err(sql_error)?;
            indexed += 1;
        }
    }
    conn.prepare_cached("UPDATE orgs SET indexed_size = ?1 WHERE id = ?2")
        .and_then(|mut st| st.execute(params![to as i64, org]))
        .map_err(sql_error)?;
    Ok(indexed)
}

#[cfg(test)]
mod tests {
    use trail_model::query::{Filter, Query};
    use trail_model::text::Search;
    use trail_model::time::parse_rfc3339;
    use trail_store::Store;
    use trail_store::conformance::event;

    use super::*;
    use crate::{SqliteStore, read};

    /// 1,200 events a millisecond apart in June 2026; "needle" is the actor of seqs 10, 300 and 650.
    /// The index is then taken back to seq 600, as if the indexer had not reached the rest: queries
    /// must find seq 650 by reading the tail, and the plan that drives from the index must run (the
    /// newest 500 events hold no match, so the walk hands over to it).
    #[tokio::test]
    async fn searches_read_what_the_index_does_not_hold_yet() {
        let dir = tempfile::tempdir().unwrap();
        let start = parse_rfc3339("2026-06-15T00:00:00Z").unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        store.create_org("acme", "Acme", start).await.unwrap();
        let needles = [10, 300, 650];
        let events = (0..1_200)
            .map(|i| {
                let actor = if needles.contains(&i) { "needle".to_string() } else { format!("user-{i}") };
                event(&actor, "x.y", start + i * 1_000)
            })
            .collect();
        store.append("acme", events, start).await.unwrap();
        store.close();
        drop(store);

        let conn = Connection::open(dir.path().join(crate::DB_FILE)).unwrap();
        let org: i64 = conn.query_row("SELECT id FROM orgs WHERE slug = 'acme'", [], |r| r.get(0)).unwrap();
        assert_eq!(indexed_size(&conn, org).unwrap(), 1_200, "closing leaves the index whole");
        let fts = fts_table(202606);
        let hits = |conn: &Connection| -> i64 {
            conn.query_row(&format!("SELECT count(*) FROM {fts} WHERE {fts} MATCH 'needle'"), [], |r| {
                r.get(0)
            })
            .unwrap()
        };
        assert_eq!(hits(&conn), 3);
        // Unindex seqs 600.. the way retention deletes from a contentless table.
        let mut rows =
            conn.prepare(&format!("SELECT k, body FROM {} WHERE k >= ?1", events_table(202606))).unwrap();
        let tail: Vec<(i64, Vec<u8>)> = rows
            .query_map([rowid(org, 600)], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        drop(rows);
        for (k, body) in tail {
            let text = text::searchable_text(&canonical::decode(&body).unwrap());
            conn.execute(
                &format!("INSERT INTO {fts}({fts}, rowid, text) VALUES ('delete', ?1, ?2)"),
                params![k, text],
            )
            .unwrap();
        }
        conn.execute("UPDATE orgs SET indexed_size = 600 WHERE id = ?1", [org]).unwrap();
        assert_eq!(hits(&conn), 2, "seq 650 is no longer in the index");

        let filter = Filter {
            from: start,
            to: start + 2_000_000,
            q: Some(Search::parse("needle").unwrap()),
            ..Default::default()
        };
        let page =
            read::query(&conn, "acme", &Query { filter: filter.clone(), limit: 10, cursor: None }).unwrap();
        let seqs: Vec<u64> = page.records.iter().map(|r| r.event.seq).collect();
        assert_eq!(seqs, [650, 300, 10], "newest first, the unindexed match included");
        let buckets = read::histogram(&conn, "acme", &filter, 1_000_000).unwrap();
        let counts: Vec<(i64, u64)> = buckets.iter().map(|b| (b.start - start, b.count)).collect();
        assert_eq!(counts, [(0, 3)], "the histogram counts it too");
        // One match per page: the cursor walks from the tail into the index without repeating.
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page =
                read::query(&conn, "acme", &Query { filter: filter.clone(), limit: 1, cursor }).unwrap();
            seen.extend(page.records.iter().map(|r| r.event.seq));
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, [650, 300, 10]);
        drop(conn);

        // The writer indexes the rest once it is idle or closing, each event once.
        let store = SqliteStore::open(dir.path()).unwrap();
        store.close();
        drop(store);
        let conn = Connection::open(dir.path().join(crate::DB_FILE)).unwrap();
        assert_eq!(indexed_size(&conn, org).unwrap(), 1_200);
        assert_eq!(hits(&conn), 3);
    }
}
