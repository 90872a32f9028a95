//! The full-text index: a database file of its own (`trail-index.db`), kept by its own thread behind
//! the log.
//!
//! Appends used to insert every event's text into its month's FTS5 table in the acknowledging
//! transaction: FTS5 wrote its pending terms as a new segment at every commit and merged segments
//! inside later appends, so search cost fell on ingest (most of all on small requests) and a large
//! merge stalled it. Now an append writes only the event, and the indexer thread reads what was
//! committed and indexes it in transactions of up to [`STEP`] events, on its own connection to its
//! own file: it never holds the log's write lock, and runs on another core than the writer. Its
//! `indexed` table says how much of each org's log the index holds (every event below `size`, none
//! above), committed with the entries, so its commits need no fsync: a step lost to a power cut is
//! redone. The file is derived data: deleted, it is rebuilt from the log.
//!
//! Readers stay exact without waiting for the indexer: a search driven by the index also reads the
//! org's events from `size` on by key and matches them in Rust, with the same matcher as every other
//! plan (see `read.rs`). Entries of events that retention removed stay until their month leaves every
//! org (the month's table is then dropped); queries never see them, since every match is joined to
//! its event row.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use trail_merkle::{Hash, leaf_hash};
use trail_model::{canonical, text};
use trail_store::{Result, StoreError};

use crate::schema::{events_table, fts_table, leaf_check_holds, rowid, seq_of};
use crate::sql_error;

/// The index's file inside the data directory.
pub const INDEX_FILE: &str = "trail-index.db";
/// Events indexed per transaction (one FTS5 segment).
pub const STEP: u64 = 2_000;
/// Steps the indexer still takes after the store closes, so a short lag is not left for the next
/// start (a long one, as after an upgrade, is resumed then).
const STEPS_AT_CLOSE: usize = 100;
/// How long the indexer sleeps when nothing woke it (another process may have appended).
const IDLE: Duration = Duration::from_secs(1);
/// The index's write-ahead log is started over once it holds this much. SQLite's own checkpoints
/// (passive, at commit) copy what they can but never start the log over while searches keep
/// reading older snapshots of it, so under steady ingest and search it grew without bound (960 MB in
/// the 30-minute soak), and every page a search read was looked up in a wal-index that large.
const WAL_LIMIT_BYTES: i64 = 64 * 1024 * 1024;
/// How long a restarting checkpoint waits for searches on older snapshots before the indexer goes
/// on (and tries again after its next step): indexing pauses at most this long, and searches
/// read what the index lacks meanwhile.
const WAL_RESTART_WAIT: Duration = Duration::from_millis(500);

/// Creates (or opens) the index beside the log at `db` and checks that it describes this log: an
/// index that holds more of an org's log than the log itself, or whose last indexed event is not the
/// log's (a data directory restored from an older backup beside a newer index), is discarded and
/// rebuilt. Returns the indexer, ready for [`spawn`], with its connections to both files.
pub fn open(dir: &Path, db: &Path) -> Result<Indexer> {
    let path = dir.join(INDEX_FILE);
    crate::private_files(dir, &path)?;
    let log = open_log(db)?;
    let mut idx = open_index(&path).map_err(sql_error)?;
    let reason = match older_format(&idx)? {
        Some(reason) => Some(reason),
        None => mismatch(&idx, &log)?,
    };
    if let Some(reason) = reason {
        tracing::warn!(reason, "the full-text index does not match the log; rebuilding it");
        drop(idx);
        remove(&path)?;
        crate::private_files(dir, &path)?;
        idx = open_index(&path).map_err(sql_error)?;
        older_format(&idx)?; // gives the new, empty index this release's format
    }
    let reclaim = crate::space::Reclaim::new(&idx, false).map_err(sql_error)?;
    Ok(Indexer { log, idx, lag: Arc::default(), dropped_dead_months: None, first_after: 0, reclaim })
}

/// Removes a database file and the WAL and shared-memory files beside it.
fn remove(path: &Path) -> Result<()> {
    for suffix in ["", "-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        match std::fs::remove_file(&name) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(StoreError::Unavailable(format!("cannot remove {}: {e}", path.display())));
            }
            _ => {}
        }
    }
    Ok(())
}

fn open_log(db: &Path) -> Result<Connection> {
    let c =
        Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .map_err(sql_error)?;
    c.busy_timeout(Duration::from_secs(10)).map_err(sql_error)?;
    crate::schema::stable_plans(&c).map_err(sql_error)?;
    Ok(c)
}

fn open_index(path: &Path) -> rusqlite::Result<Connection> {
    let c = Connection::open(path)?;
    crate::schema::stable_plans(&c)?;
    // Taken by a new file only, before WAL writes its header (see `space`).
    crate::space::incremental_if_new(&c)?;
    c.pragma_update(None, "journal_mode", "WAL")?;
    c.pragma_update(None, "synchronous", "NORMAL")?;
    // The log's file shrinks back to this when it starts over.
    c.pragma_update(None, "journal_size_limit", WAL_LIMIT_BYTES)?;
    c.busy_timeout(Duration::from_secs(10))?;
    c.execute_batch(
        "CREATE TABLE IF NOT EXISTS indexed(
             org_id INTEGER PRIMARY KEY, size INTEGER NOT NULL, last_leaf BLOB) STRICT;
         CREATE TABLE IF NOT EXISTS months(month INTEGER PRIMARY KEY) STRICT;",
    )?;
    Ok(c)
}

/// The index's format (`PRAGMA user_version` of its file). 3: each month's FTS5 table holds
/// [`text::index_text`] (an event's tokens, then its pairs of adjacent tokens) without positions
/// (`detail=none`), split at spaces only. 2: the same with pairs only after words (not `x86`).
/// Before (0): the searchable text as FTS5's unicode61 split it, with positions.
pub const FORMAT: i64 = 3;

/// Why an index in another format must be rebuilt, if it must. A new (empty) index is given
/// [`FORMAT`].
fn older_format(idx: &Connection) -> Result<Option<String>> {
    let format: i64 = idx.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(sql_error)?;
    if format == FORMAT {
        return Ok(None);
    }
    let empty: bool = idx
        .query_row(
            "SELECT NOT EXISTS (SELECT 1 FROM months) AND NOT EXISTS (SELECT 1 FROM indexed)",
            [],
            |r| r.get(0),
        )
        .map_err(sql_error)?;
    if empty {
        idx.pragma_update(None, "user_version", FORMAT).map_err(sql_error)?;
        return Ok(None);
    }
    Ok(Some(format!("the index is in format {format}; this release writes format {FORMAT}")))
}

/// Why the index cannot be trusted for this log, if it cannot.
fn mismatch(idx: &Connection, log: &Connection) -> Result<Option<String>> {
    let mut st = idx.prepare("SELECT org_id, size, last_leaf FROM indexed").map_err(sql_error)?;
    let rows: Vec<(i64, u64, Option<Vec<u8>>)> = st
        .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64, r.get(2)?)))
        .map_err(sql_error)?
        .collect::<rusqlite::Result<_>>()
        .map_err(sql_error)?;
    for (org, size, last_leaf) in rows {
        let tree_size: Option<i64> = log
            .query_row("SELECT tree_size FROM orgs WHERE id = ?1", [org], |r| r.get(0))
            .optional()
            .map_err(sql_error)?;
        match tree_size {
            None => return Ok(Some(format!("org {org} is indexed but not in the log"))),
            Some(t) if (t as u64) < size => {
                return Ok(Some(format!("org {org}: {size} events indexed, {t} in the log")));
            }
            _ => {}
        }
        if let (Some(expected), Some(seq)) = (last_leaf, size.checked_sub(1))
            && let Some(leaf) = leaf_at(log, org, seq)?
            && !Hash::try_from(expected.as_slice()).is_ok_and(|whole| leaf_check_holds(&leaf, &whole))
        {
            return Ok(Some(format!("org {org}: the event at seq {seq} is not the one indexed")));
        }
    }
    Ok(None)
}

/// The leaf hash the log holds for an org's seq (hot or pruned; of a hot event written since schema 14,
/// its first [`crate::schema::LEAF_CHECK`] bytes), if any.
fn leaf_at(log: &Connection, org: i64, seq: u64) -> Result<Option<Vec<u8>>> {
    let k = rowid(org, seq);
    for month in partitions(log)? {
        let leaf = log
            .prepare_cached(&format!("SELECT leaf FROM {} WHERE k = ?1", events_table(month)))
            .and_then(|mut st| st.query_row([k], |r| r.get(0)).optional())
            .map_err(sql_error)?;
        if leaf.is_some() {
            return Ok(leaf);
        }
    }
    log.prepare_cached("SELECT leaf FROM pruned_leaves WHERE k = ?1")
        .and_then(|mut st| st.query_row([k], |r| r.get(0)).optional())
        .map_err(sql_error)
}

fn partitions(log: &Connection) -> Result<Vec<u32>> {
    log.prepare_cached("SELECT month FROM partitions")
        .and_then(|mut st| st.query_map([], |r| r.get(0))?.collect())
        .map_err(sql_error)
}

/// Where an org's index ends, as a reader with the index attached as `idx` sees it: every event
/// below this seq is indexed.
pub fn indexed_size(conn: &Connection, org: i64) -> Result<u64> {
    conn.prepare_cached("SELECT size FROM idx.indexed WHERE org_id = ?1")
        .and_then(|mut st| st.query_row([org], |r| r.get::<_, i64>(0)).optional())
        .map(|n| n.unwrap_or(0) as u64)
        .map_err(sql_error)
}

/// Whether the index has a table for `month`, as a reader with the index attached sees it.
pub fn has_month(conn: &Connection, month: u32) -> Result<bool> {
    conn.prepare_cached("SELECT 1 FROM idx.months WHERE month = ?1")
        .and_then(|mut st| st.query_row([month], |_| Ok(())).optional())
        .map(|found| found.is_some())
        .map_err(sql_error)
}

/// Starts the indexer thread. It indexes whenever `wake` says something was appended, or every
/// [`IDLE`]; when every sender of `wake` is gone it takes at most [`STEPS_AT_CLOSE`] more steps and
/// returns.
pub fn spawn(mut ix: Indexer, wake: mpsc::Receiver<()>) -> Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("trail-sqlite-indexer".into())
        .spawn(move || {
            loop {
                let more = ix.step_logged();
                match wake.try_recv() {
                    Err(mpsc::TryRecvError::Disconnected) => break,
                    _ if more => continue,
                    _ => {}
                }
                ix.drop_dead_months_logged();
                ix.reclaim.step(&ix.idx);
                match wake.recv_timeout(IDLE.min(ix.reclaim.wait())) {
                    Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            }
            for _ in 0..STEPS_AT_CLOSE {
                if !ix.step_logged() {
                    break;
                }
            }
            ix.dropped_dead_months = None;
            ix.drop_dead_months_logged();
        })
        .map_err(|e| StoreError::Internal(format!("cannot start the indexer thread: {e}")))
}

/// What [`Indexer::bound_wal`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WalBound {
    /// The log is under its limit.
    Under,
    /// The log was copied into the file; the next step writes it from its start.
    Restarted,
    /// Searches kept reading older snapshots of the log past the wait.
    Held,
}

pub struct Indexer {
    /// Read-only, on the log.
    log: Connection,
    /// The index's own file.
    idx: Connection,
    /// Events the log holds and the index does not, as of the last step (`/metrics` reads it without
    /// touching either file).
    lag: Arc<AtomicU64>,
    /// When months that retention removed were last looked for.
    dropped_dead_months: Option<Instant>,
    /// The org the last step began with: the next begins with the next lagging org after it, so that
    /// when the indexer cannot keep up, every org's lag grows alike. (Steps used to begin with the
    /// first org every time: under the soak's load the last org's lag grew while the others' did
    /// not, and its searches read that lag row by row, up to the 30 s deadline.)
    first_after: i64,
    /// Gives back the pages of dropped months (only then: FTS5's merges free and reuse pages all
    /// the time).
    reclaim: crate::space::Reclaim,
}

impl std::fmt::Debug for Indexer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Indexer").field("lag", &self.lag).finish_non_exhaustive()
    }
}

impl Indexer {
    /// The indexer's lag, shared with the store.
    pub fn lag(&self) -> Arc<AtomicU64> {
        self.lag.clone()
    }

    /// One step; whether more is waiting. A failure is logged and retried at the next wake-up
    /// (queries stay exact meanwhile: they read what the index lacks).
    fn step_logged(&mut self) -> bool {
        self.step().unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot index events for free-text search; will retry");
            false
        })
    }

    /// At most once per [`IDLE`] (it reads both files' month lists; months leave only by retention).
    fn drop_dead_months_logged(&mut self) {
        if self.dropped_dead_months.is_some_and(|at| at.elapsed() < IDLE) {
            return;
        }
        self.dropped_dead_months = Some(Instant::now());
        if let Err(e) = self.drop_dead_months() {
            tracing::warn!(error = %e, "cannot drop the index of a removed month; will retry");
        }
    }

    /// Indexes up to [`STEP`] events of the orgs whose index lags their log, in one transaction.
    fn step(&mut self) -> Result<bool> {
        let (heads, behind) = self.behind()?;
        self.lag.store(behind, Ordering::Relaxed);
        if heads.is_empty() {
            return Ok(false);
        }
        let months = partitions(&self.log)?;
        self.idx.execute_batch("BEGIN IMMEDIATE").map_err(sql_error)?;
        let result = self.index(&heads, &months);
        let end = self.idx.execute_batch(if result.is_ok() { "COMMIT" } else { "ROLLBACK" });
        if end.is_err() {
            let _ = self.idx.execute_batch("ROLLBACK");
        }
        let (more, indexed) = result?;
        end.map_err(sql_error)?;
        self.lag.store(behind.saturating_sub(indexed), Ordering::Relaxed);
        if self.bound_wal(WAL_LIMIT_BYTES)? == WalBound::Held {
            tracing::debug!("searches hold the index's write-ahead log; it starts over after a later step");
        }
        Ok(more)
    }

    /// Starts the index's write-ahead log over once it holds `limit` bytes: a restarting checkpoint
    /// copies it into the file and waits up to [`WAL_RESTART_WAIT`] for the searches still reading
    /// older snapshots of it, so that the next step writes the log from its start. When they outlast
    /// the wait, a later step tries again.
    fn bound_wal(&mut self, limit: i64) -> Result<WalBound> {
        // (busy, frames in the log, frames copied into the file)
        let checkpoint = |c: &Connection, mode: &str| {
            c.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
            })
        };
        let page: i64 = self.idx.query_row("PRAGMA page_size", [], |r| r.get(0)).map_err(sql_error)?;
        let (_, frames) = checkpoint(&self.idx, "PASSIVE").map_err(sql_error)?;
        if frames * page < limit {
            return Ok(WalBound::Under);
        }
        self.idx.busy_timeout(WAL_RESTART_WAIT).map_err(sql_error)?;
        let restarted = checkpoint(&self.idx, "RESTART");
        self.idx.busy_timeout(Duration::from_secs(10)).map_err(sql_error)?;
        match restarted {
            Ok((0, _)) => Ok(WalBound::Restarted),
            Ok(_) => Ok(WalBound::Held),
            Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) => Ok(WalBound::Held),
            Err(e) => Err(sql_error(e)),
        }
    }

    /// The orgs whose index lags their log, with their log heads, and how many events that is in all.
    fn behind(&self) -> Result<(Vec<(i64, u64)>, u64)> {
        let mut heads: Vec<(i64, u64)> = self
            .log
            .prepare_cached("SELECT id, tree_size FROM orgs ORDER BY id")
            .and_then(|mut st| st.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?.collect())
            .map_err(sql_error)?;
        let sizes = self.sizes()?;
        heads.retain(|(org, head)| sizes.get(org).copied().unwrap_or(0) < *head);
        let behind = heads.iter().map(|(org, head)| head - sizes.get(org).copied().unwrap_or(0)).sum();
        Ok((heads, behind))
    }

    /// Every org's recorded size, in one read.
    fn sizes(&self) -> Result<HashMap<i64, u64>> {
        self.idx
            .prepare_cached("SELECT org_id, size FROM indexed")
            .and_then(|mut st| st.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?.collect())
            .map_err(sql_error)
    }

    /// Inside the step's transaction: indexes from each org's recorded size (read again here, as
    /// another process's indexer may have moved it) towards its log head. Returns whether more remain,
    /// and how many seqs the recorded sizes moved.
    fn index(&mut self, heads: &[(i64, u64)], months: &[u32]) -> Result<(bool, u64)> {
        let sizes = self.sizes()?;
        let mut budget = STEP;
        let lagging = |&&(org, head): &&(i64, u64)| sizes.get(&org).copied().unwrap_or(0) < head;
        let first = heads.iter().filter(lagging).position(|&(org, _)| org > self.first_after).unwrap_or(0);
        let mut order: Vec<(i64, u64)> = heads.iter().filter(lagging).copied().collect();
        order.rotate_left(first);
        if let Some(&(org, _)) = order.first() {
            self.first_after = org;
        }
        for (org, head) in order {
            let from = sizes.get(&org).copied().unwrap_or(0);
            if budget == 0 {
                return Ok((true, STEP));
            }
            let to = head.min(from + budget);
            let last_leaf = self.index_range(org, from, to, months)?;
            self.idx
                .prepare_cached(
                    "INSERT INTO indexed(org_id, size, last_leaf) VALUES (?1, ?2, ?3)
                     ON CONFLICT(org_id) DO UPDATE SET size = excluded.size, last_leaf = excluded.last_leaf",
                )
                .and_then(|mut st| st.execute(params![org, to as i64, last_leaf.as_ref().map(|h| &h[..])]))
                .map_err(sql_error)?;
            budget -= to - from;
            if to < head {
                return Ok((true, STEP - budget));
            }
        }
        Ok((false, STEP - budget))
    }

    /// Indexes the org's events with `from <= seq < to`; returns the leaf hash of seq `to - 1`
    /// (`None` when retention removed it first).
    fn index_range(&mut self, org: i64, from: u64, to: u64, months: &[u32]) -> Result<Option<Hash>> {
        let mut last_leaf = None;
        for &month in months {
            let mut read = self
                .log
                .prepare_cached(&format!(
                    "SELECT k, body FROM {} WHERE k >= ?1 AND k < ?2",
                    events_table(month)
                ))
                .map_err(sql_error)?;
            let mut rows = read.query(params![rowid(org, from), rowid(org, to)]).map_err(sql_error)?;
            let mut created = false;
            while let Some(row) = rows.next().map_err(sql_error)? {
                if !created {
                    self.create_month(month)?;
                    created = true;
                }
                let k: i64 = row.get(0).map_err(sql_error)?;
                let body = crate::body::unpack(&self.log, row.get(1).map_err(sql_error)?, seq_of(k))?;
                let event = canonical::decode(&body).map_err(|e| {
                    StoreError::Corrupt(format!("seq {}: stored event does not decode: {e}", seq_of(k)))
                })?;
                self.idx
                    .prepare_cached(&format!("INSERT INTO {}(rowid, text) VALUES (?1, ?2)", fts_table(month)))
                    .and_then(|mut st| st.execute(params![k, text::index_text(&event)]))
                    .map_err(sql_error)?;
                if seq_of(k) + 1 == to {
                    last_leaf = Some(leaf_hash(&body));
                }
            }
        }
        Ok(last_leaf)
    }

    fn create_month(&self, month: u32) -> Result<()> {
        let fts = fts_table(month);
        self.idx
            .execute_batch(&format!(
                "CREATE VIRTUAL TABLE IF NOT EXISTS {fts} USING fts5(
                     text, content='', columnsize=0, detail=none,
                     tokenize=\"unicode61 remove_diacritics 0 categories 'L* M* N* P* S* C*'\");
                 INSERT OR IGNORE INTO months(month) VALUES ({month});"
            ))
            .map_err(sql_error)
    }

    /// Drops the index of months the log no longer has (retention removed them from every org).
    fn drop_dead_months(&mut self) -> Result<()> {
        let live = partitions(&self.log)?;
        let indexed: Vec<u32> = self
            .idx
            .prepare_cached("SELECT month FROM months")
            .and_then(|mut st| st.query_map([], |r| r.get(0))?.collect())
            .map_err(sql_error)?;
        for month in indexed.into_iter().filter(|m| !live.contains(m)) {
            self.reclaim.asked();
            self.idx
                .execute_batch(&format!(
                    "BEGIN IMMEDIATE; DROP TABLE IF EXISTS {}; DELETE FROM months WHERE month = {month}; COMMIT;",
                    fts_table(month)
                ))
                .map_err(|e| {
                    let _ = self.idx.execute_batch("ROLLBACK");
                    sql_error(e)
                })?;
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use trail_model::query::{Filter, Query};
    use trail_model::text::Search;
    use trail_model::time::parse_rfc3339;
    use trail_store::Store;
    use trail_store::conformance::event;

    use super::*;
    use crate::{SqliteStore, read};

    fn remove_index(dir: &Path) {
        remove(&dir.join(INDEX_FILE)).unwrap();
    }

    /// Opens the store and closes it, which lets the indexer catch up.
    fn open_and_close(dir: &Path) {
        let store = SqliteStore::open(dir).unwrap();
        store.close();
    }

    /// Opens the store in `dir`, appends `events` to `org` (created), and closes it, which lets the
    /// indexer catch up.
    pub(crate) async fn stored(dir: &Path, org: &str, events: Vec<trail_model::NewEvent>) {
        let store = SqliteStore::open(dir).unwrap();
        store.create_org(org, org, events[0].time.unwrap()).await.unwrap();
        store.append(org, events, trail_model::time::now()).await.unwrap();
        store.close();
    }

    fn hits(dir: &Path, term: &str) -> i64 {
        let c = Connection::open(dir.join(INDEX_FILE)).unwrap();
        let fts = fts_table(202606);
        c.query_row(&format!("SELECT count(*) FROM {fts} WHERE {fts} MATCH ?1"), [term], |r| r.get(0))
            .unwrap()
    }

    /// The log of `dir` with its index attached as `idx`, as the store's readers open it.
    fn attached(dir: &Path) -> Connection {
        let conn = Connection::open(dir.join(crate::DB_FILE)).unwrap();
        conn.execute("ATTACH DATABASE ?1 AS idx", [dir.join(INDEX_FILE).to_str().unwrap()]).unwrap();
        conn
    }

    /// SQLite's steps for the first page (20 rows) of `q` in `acme` over `[from, to)`, which must find
    /// nothing.
    fn steps_of_an_empty_page(conn: &mut Connection, from: i64, to: i64, q: &str) -> u64 {
        let filter = Filter { from, to, q: Some(Search::parse(q).unwrap()), ..Default::default() };
        read::tests::work(conn, |c| {
            let page = read::query(c, "acme", &Query { filter, limit: 20, cursor: None }).unwrap();
            assert!(page.records.is_empty() && page.next.is_none());
        })
    }

    /// When the indexer lags several orgs, each step begins with the next of them: one org's lag does
    /// not wait behind the others'.
    #[tokio::test]
    async fn steps_take_lagging_orgs_in_turn() {
        let dir = tempfile::tempdir().unwrap();
        let start = parse_rfc3339("2026-06-15T00:00:00Z").unwrap();
        for org in ["a", "b", "c"] {
            stored(dir.path(), org, (0..2_500).map(|i| event("u", "x.y", start + i)).collect()).await;
        }
        remove_index(dir.path());
        let mut ix = open(dir.path(), &dir.path().join(crate::DB_FILE)).unwrap();
        let sizes = |ix: &Indexer| {
            let mut s: Vec<(i64, u64)> = ix.sizes().unwrap().into_iter().collect();
            s.sort();
            s.into_iter().map(|(_, n)| n).collect::<Vec<u64>>()
        };
        let steps = [[2_000, 0, 0], [2_000, 2_000, 0], [2_000, 2_000, 2_000], [2_500, 2_500, 2_500]];
        for (i, want) in steps.into_iter().enumerate() {
            let (heads, _) = ix.behind().unwrap();
            ix.index(&heads, &[202606]).unwrap();
            let mut got = sizes(&ix);
            got.resize(3, 0);
            assert_eq!(got, want, "after step {}", i + 1);
        }
    }

    /// An index written by an earlier release (format 0: positions, FTS5's own tokens) is rebuilt in
    /// this release's format at open, and searches find every event in it.
    #[tokio::test]
    async fn an_index_in_an_earlier_format_is_rebuilt() {
        let start = parse_rfc3339("2026-06-15T00:00:00Z").unwrap();
        let fts = fts_table(202606);
        // Each earlier format's table, holding nothing though `indexed` says it holds every event: only
        // a rebuild makes searches through it find them.
        let positions = format!(
            "DROP TABLE {fts};
             CREATE VIRTUAL TABLE {fts} USING fts5(text, content='', columnsize=0,
                 tokenize='unicode61 remove_diacritics 0');
             PRAGMA user_version = 0;"
        );
        let word_pairs = format!("INSERT INTO {fts}({fts}) VALUES ('delete-all'); PRAGMA user_version = 2;");
        for earlier in [positions, word_pairs] {
            let dir = tempfile::tempdir().unwrap();
            let actor = |i| if i % 10 == 0 { "x86-64" } else { "hay" };
            stored(dir.path(), "acme", (0..100).map(|i| event(actor(i), "x.y", start + i)).collect()).await;
            let c = Connection::open(dir.path().join(INDEX_FILE)).unwrap();
            c.execute_batch(&earlier).unwrap();
            drop(c);
            assert_eq!(hits(dir.path(), "x86"), 0);

            open_and_close(dir.path());
            let c = Connection::open(dir.path().join(INDEX_FILE)).unwrap();
            let format: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
            assert_eq!(format, FORMAT);
            let sql: String =
                c.query_row("SELECT sql FROM sqlite_master WHERE name = ?1", [&fts], |r| r.get(0)).unwrap();
            assert!(sql.contains("detail=none"), "{sql}");
            drop(c);
            assert_eq!(hits(dir.path(), "x86"), 10);
            assert_eq!(
                hits(dir.path(), "\"_x86_64\""),
                10,
                "the pairs are indexed: {}",
                hits(dir.path(), "hay")
            );
        }
    }

    /// The index's write-ahead log starts over once it is past its limit and no search holds an
    /// older snapshot of it; while one does, the indexer goes on and tries again later.
    #[tokio::test]
    async fn the_index_log_starts_over_once_no_search_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let start = parse_rfc3339("2026-06-15T00:00:00Z").unwrap();
        let events = (0..1_200).map(|i| event(&format!("user-{i}"), "x.y", start + i * 1_000)).collect();
        stored(dir.path(), "acme", events).await;
        remove_index(dir.path());
        let mut ix = open(dir.path(), &dir.path().join(crate::DB_FILE)).unwrap();
        let frames = |ix: &Indexer| -> i64 {
            ix.idx.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1)).unwrap()
        };
        assert_eq!(ix.bound_wal(i64::MAX).unwrap(), WalBound::Under);

        // A search reading the index as it was before the step.
        let search = Connection::open(dir.path().join(INDEX_FILE)).unwrap();
        search.execute_batch("BEGIN").unwrap();
        let _: i64 = search.query_row("SELECT count(*) FROM indexed", [], |r| r.get(0)).unwrap();
        ix.step().unwrap();
        let written = frames(&ix);
        assert!(written > 10, "the step wrote the log: {written} frames");
        assert_eq!(ix.bound_wal(1).unwrap(), WalBound::Held, "the search holds the log");
        assert!(frames(&ix) >= written, "the log goes on growing while held");

        search.execute_batch("COMMIT").unwrap();
        assert_eq!(ix.bound_wal(1).unwrap(), WalBound::Restarted);
        ix.idx
            .execute_batch("INSERT INTO months(month) VALUES (0); DELETE FROM months WHERE month = 0")
            .unwrap();
        let after = frames(&ix);
        assert!(after < written, "the next write starts the log over: {after} frames after {written}");
        drop(ix);
        assert_eq!(hits(dir.path(), "x"), 1_200, "every event is indexed");
    }

    /// 1,200 events a millisecond apart in June 2026; "needle" is the actor of seqs 10, 300 and 650.
    /// The index is then rebuilt to hold only seqs 0..600, as if the indexer had not reached the
    /// rest: queries must find seq 650 by reading the tail, through the plan that drives from the
    /// index (the newest 500 events hold no match, so the walk hands over to it).
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
        assert_eq!(hits(dir.path(), "needle"), 3, "closing leaves the index whole");

        remove_index(dir.path());
        let db = dir.path().join(crate::DB_FILE);
        let mut ix = open(dir.path(), &db).unwrap();
        let org: i64 = ix.log.query_row("SELECT id FROM orgs WHERE slug = 'acme'", [], |r| r.get(0)).unwrap();
        assert_eq!(ix.index(&[(org, 600)], &[202606]).unwrap(), (false, 600), "600 events are one step");
        assert_eq!(ix.behind().unwrap(), (vec![(org, 1_200)], 600), "what /metrics reports as lag");
        drop(ix);
        assert_eq!(hits(dir.path(), "needle"), 2, "seq 650 is not in the index");

        let conn = attached(dir.path());
        assert_eq!(indexed_size(&conn, org).unwrap(), 600);
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

        // The indexer picks up from 600, each event once.
        open_and_close(dir.path());
        assert_eq!(hits(dir.path(), "needle"), 3);
        assert_eq!(hits(dir.path(), "y"), 1_200, "every event of action x.y, once");
    }

    /// A search whose index part finds nothing still reads the events the index does not hold yet,
    /// each checked in Rust. It used to read them beside the index's matches in one sorted
    /// statement a page at a time, which cost the lag's square: under the soak's ingest a lag of
    /// 25,000 events made a search for a prefix no event has take 5-30 s. Four times the lag must
    /// cost four times the work (counted in SQLite's virtual machine steps: 410 and 1,580 here), not
    /// sixteen (43,330 and 839,251 before); reading twice as much per statement was still n log n
    /// (3,368 and 19,929).
    #[tokio::test]
    async fn a_search_reads_the_index_lag_once() {
        let start = parse_rfc3339("2026-06-15T00:00:00Z").unwrap();
        let mut work = Vec::new();
        for n in [3_000, 12_000] {
            let dir = tempfile::tempdir().unwrap();
            stored(dir.path(), "acme", (0..n).map(|i| event("hay", "x.y", start + i * 1_000)).collect())
                .await;
            remove_index(dir.path());
            drop(open(dir.path(), &dir.path().join(crate::DB_FILE)).unwrap()); // an empty index: every event is its lag
            let mut conn = attached(dir.path());
            work.push(steps_of_an_empty_page(&mut conn, start, start + n * 1_000, "needle"));
        }
        assert!(work[1] < 5 * work[0], "steps for 3,000 and 12,000 events: {work:?}");
    }

    /// A word of three tokens is the AND of its two pairs in the index: a superset, checked in Rust.
    /// When every event holds both pairs apart (`alpha-beta x beta-gamma`) and none the word, the
    /// index-driven page reads on past every dropped candidate, each statement twice as many as the
    /// last: log n statements, each sorting what is left. Four times the candidates cost 5.9 times
    /// the work (SQLite steps: 4,212 and 24,745), where page-sized reads, each sorting the rest
    /// again, cost 19 times (57,812 and 1,103,281).
    #[tokio::test]
    async fn a_search_passes_over_the_index_supersets_in_doubling_reads() {
        let start = parse_rfc3339("2026-06-15T00:00:00Z").unwrap();
        let mut work = Vec::new();
        for n in [3_000, 12_000] {
            let dir = tempfile::tempdir().unwrap();
            let events = (0..n).map(|i| event("alpha-beta x beta-gamma", "x.y", start + i * 1_000)).collect();
            stored(dir.path(), "acme", events).await;
            assert_eq!(hits(dir.path(), "_alpha_beta AND _beta_gamma"), n, "every event is a candidate");
            let mut conn = attached(dir.path());
            assert_eq!(indexed_size(&conn, 1).unwrap(), n as u64, "nothing is left to the lag");
            work.push(steps_of_an_empty_page(&mut conn, start, start + n * 1_000, "alpha-beta-gamma"));
        }
        assert!(work[1] < 8 * work[0], "steps for 3,000 and 12,000 candidates: {work:?}");
    }

    /// Without its index file, or beside a log restored from an older backup, the store rebuilds the
    /// index from the log instead of trusting it.
    #[tokio::test]
    async fn an_index_that_does_not_match_the_log_is_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let start = parse_rfc3339("2026-06-15T00:00:00Z").unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        store.create_org("acme", "Acme", start).await.unwrap();
        store.append("acme", vec![event("alice", "x.y", start)], start).await.unwrap();
        store.close();
        drop(store);
        let db = dir.path().join(crate::DB_FILE);
        let backup = std::fs::read(&db).unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        store.append("acme", vec![event("bob", "x.y", start + 1)], start).await.unwrap();
        store.close();
        drop(store);
        assert_eq!((hits(dir.path(), "alice"), hits(dir.path(), "bob")), (1, 1));

        // The log goes back to one event; then another event takes seq 1.
        std::fs::write(&db, backup).unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        store.append("acme", vec![event("carol", "x.y", start + 2)], start).await.unwrap();
        store.close();
        drop(store);
        assert_eq!(
            (hits(dir.path(), "alice"), hits(dir.path(), "bob"), hits(dir.path(), "carol")),
            (1, 0, 1),
            "bob's entry went with the index it was in"
        );

        remove_index(dir.path());
        open_and_close(dir.path());
        assert_eq!((hits(dir.path(), "alice"), hits(dir.path(), "carol")), (1, 1), "rebuilt from the log");
    }
}
