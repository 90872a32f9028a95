//! Giving the pages SQLite frees back to the file system, a few at a time, and compacting a data
//! directory written before files could do that.
//!
//! Freed pages (a month that retention dropped, an id run a merge replaced, a migration's dropped
//! rows) stay in the file as free pages until something moves the pages after them into the holes
//! and truncates the file. With `auto_vacuum = INCREMENTAL`, `PRAGMA incremental_vacuum(N)` does
//! that for N pages in one write transaction. [`Reclaim`] runs it in small steps between the
//! writer's commits (and the indexer's), so giving back a month of a large store never holds a
//! write for long. Files made by releases before December 2026 have `auto_vacuum = NONE` and cannot do it: only a
//! full `VACUUM` changes that, which [`compact`] runs with the server stopped.
//!
//! Nothing here changes what the files hold, only where pages sit in them.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};
use trail_store::{Result, StoreError};

use crate::sql_error;

/// Pages given back per step: 2 MiB of 4 KiB pages, about 10–40 ms of writing on this machine's
/// disk, so that a commit waiting behind a step waits no longer than behind a large batch.
const STEP_PAGES: i64 = 512;
/// The pause between steps while giving back: at most one step per pause keeps the writer's time
/// for appends (a month of a 10M-event store, 2 GB, is given back in a few minutes).
const STEP_PAUSE: Duration = Duration::from_millis(50);
/// How often the writer looks at its file's free pages when nothing asked it to: retention run by
/// another process (`trail archive run`) frees pages this process does not hear of.
const CHECK_EVERY: Duration = Duration::from_secs(60);

/// Free pages kept in the file: a file that grows again soon (id runs are merged and replaced, FTS5
/// merges segments) reuses them instead of extending and shrinking over and over. A sixty-fourth of
/// the file, between 1 MiB and 16 MiB of 4 KiB pages.
fn slack(pages: i64) -> i64 {
    (pages / 64).clamp(256, 4096)
}

/// Whether free pages found by a periodic look (no one asked) are worth giving back: more than a
/// sixteenth of the file, and more than four times the slack. Id runs and FTS5 segments free and
/// reuse less than that between looks.
fn worth_it(free: i64, pages: i64) -> bool {
    free > (pages / 16).max(4 * slack(pages))
}

/// Gives back at most `max` free pages; answers how many the file has left free.
pub fn free_pages(conn: &Connection, max: i64) -> rusqlite::Result<i64> {
    // The pragma frees one page per row it returns: every row must be stepped through.
    let mut st = conn.prepare(&format!("PRAGMA incremental_vacuum({max})"))?;
    let mut rows = st.query([])?;
    while rows.next()?.is_some() {}
    conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))
}

/// Makes a new (empty) file give pages back; leaves an existing one as it is.
pub fn incremental_if_new(conn: &Connection) -> rusqlite::Result<()> {
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    if pages == 0 {
        conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
    }
    Ok(())
}

/// Whether a file gives pages back (`auto_vacuum = INCREMENTAL`, 2).
pub fn incremental(conn: &Connection) -> rusqlite::Result<bool> {
    conn.query_row("PRAGMA auto_vacuum", [], |r| r.get::<_, i64>(0)).map(|mode| mode == 2)
}

/// Free and total pages of a file.
fn pages(conn: &Connection) -> rusqlite::Result<(i64, i64)> {
    let free = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
    let total = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    Ok((free, total))
}

/// When and how much a connection's file gives back: steps of [`STEP_PAGES`] while it is asked to,
/// or while a periodic look finds enough free pages ([`worth_it`]), until [`slack`] remains.
#[derive(Debug)]
pub struct Reclaim {
    /// False for a file that cannot give pages back: then it never steps.
    incremental: bool,
    /// Looks on its own every [`CHECK_EVERY`] (the writer), or only when asked (the indexer, whose
    /// FTS5 merges free and reuse pages all the time).
    watch: bool,
    giving_back: bool,
    due: Instant,
}

impl Reclaim {
    /// For a connection's file; a look is due at once (a migration or an earlier process may have
    /// left free pages).
    pub fn new(conn: &Connection, watch: bool) -> rusqlite::Result<Self> {
        let incremental = incremental(conn)?;
        let (free, total) = pages(conn)?;
        if !incremental && worth_it(free, total) {
            tracing::warn!(
                file = %conn.path().unwrap_or_default(),
                free_mib = free * page_size(conn)? / (1 << 20),
                "this file was made by a release that could not give freed space back to the \
                 file system; `trail admin compact`, with the server stopped, can"
            );
        }
        // What an earlier process left (a month dropped just before it stopped) is given back even by
        // a file that does not watch.
        let giving_back = incremental && worth_it(free, total);
        Ok(Self { incremental, watch, giving_back, due: Instant::now() })
    }

    /// Something was freed (retention dropped a month): give it back from the next step on.
    pub fn asked(&mut self) {
        self.giving_back = self.incremental;
        self.due = Instant::now();
    }

    /// How long until a step is due (for a thread waiting on its work queue).
    pub fn wait(&self) -> Duration {
        if !self.incremental || (!self.watch && !self.giving_back) {
            return CHECK_EVERY;
        }
        self.due.saturating_duration_since(Instant::now())
    }

    /// Takes one step if one is due: gives back up to [`STEP_PAGES`] pages, or looks at the free
    /// pages. A failure is logged and retried later; nothing depends on it.
    pub fn step(&mut self, conn: &Connection) {
        if self.wait() > Duration::ZERO {
            return;
        }
        if let Err(e) = self.try_step(conn) {
            tracing::warn!(error = %e, "cannot give free pages back to the file system; will retry");
            self.giving_back = false;
            self.due = Instant::now() + CHECK_EVERY;
        }
    }

    fn try_step(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        let (free, total) = pages(conn)?;
        let keep = slack(total);
        self.giving_back = (self.giving_back || worth_it(free, total)) && free > keep;
        if !self.giving_back {
            self.due = Instant::now() + CHECK_EVERY;
            return Ok(());
        }
        let left = free_pages(conn, STEP_PAGES.min(free - keep))?;
        self.giving_back = left > keep;
        self.due = Instant::now() + if self.giving_back { STEP_PAUSE } else { CHECK_EVERY };
        if !self.giving_back {
            tracing::info!(file = %conn.path().unwrap_or_default(), free_pages = left, "freed space given back");
        }
        Ok(())
    }
}

fn page_size(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA page_size", [], |r| r.get(0))
}

/// What [`compact`] did to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compacted {
    pub file: String,
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// Whether the file could give space back before (it can after).
    pub was_incremental: bool,
}

/// Rewrites each of the data directory's files (`VACUUM`) so that it holds no free pages and gives
/// pages back from then on (`auto_vacuum = INCREMENTAL`). Refuses while any other process has the
/// directory open (the server, `trail archive run`): the rewrite holds the file's only lock from
/// start to end, so nothing can write meanwhile, and a crash during it leaves the file as it was.
/// Needs free disk of about the largest file's size twice: SQLite's temporary copy (in the temporary
/// directory) and the write-ahead log (in the data directory).
pub fn compact(dir: &Path) -> Result<Vec<Compacted>> {
    let log = dir.join(crate::DB_FILE);
    if !log.is_file() {
        return Err(StoreError::NotFound(log.display().to_string()));
    }
    let files = [log, dir.join(crate::index::INDEX_FILE)];
    // Every file's lock before either is rewritten: a server started in between would otherwise
    // leave one file compacted and the other refused.
    let locked = files.iter().filter(|f| f.is_file()).map(|f| lock(f)).collect::<Result<Vec<_>>>()?;
    locked.into_iter().map(|(name, conn)| compact_file(name, &conn)).collect()
}

/// Opens a file and takes its exclusive lock, held until the connection is dropped.
fn lock(path: &Path) -> Result<(String, Connection)> {
    let name = path.display().to_string();
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sql_error)?;
    // Held from the first write to the connection's end: no other connection can open the file
    // meanwhile, and taking it fails while one has it open.
    conn.pragma_update(None, "locking_mode", "EXCLUSIVE").map_err(sql_error)?;
    if let Err(e) = conn.execute_batch("BEGIN EXCLUSIVE; COMMIT;") {
        return Err(match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                StoreError::Conflict(format!(
                    "{name} is in use by another process (is the server running?): stop it and try again"
                ))
            }
            _ => sql_error(e),
        });
    }
    Ok((name, conn))
}

fn compact_file(name: String, conn: &Connection) -> Result<Compacted> {
    let was_incremental = incremental(conn).map_err(sql_error)?;
    let bytes = |conn: &Connection| -> rusqlite::Result<u64> {
        let (_, total) = pages(conn)?;
        Ok((total * page_size(conn)?) as u64)
    };
    let bytes_before = bytes(conn).map_err(sql_error)?;
    conn.execute_batch(
        "PRAGMA wal_checkpoint(TRUNCATE);
         PRAGMA temp_store = FILE;
         PRAGMA auto_vacuum = INCREMENTAL;
         VACUUM;
         PRAGMA wal_checkpoint(TRUNCATE);",
    )
    .map_err(sql_error)?;
    let bytes_after = bytes(conn).map_err(sql_error)?;
    Ok(Compacted { file: name, bytes_before, bytes_after, was_incremental })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slack_is_a_sixty_fourth_between_one_and_sixteen_mib() {
        assert_eq!(slack(0), 256);
        assert_eq!(slack(64 * 1000), 1000);
        assert_eq!(slack(1 << 30), 4096);
    }

    #[test]
    fn a_periodic_look_gives_back_only_a_sixteenth_or_more() {
        let pages = 1_000_000;
        assert!(!worth_it(pages / 16, pages));
        assert!(worth_it(pages / 16 + 1, pages));
        // A small file keeps four times its slack before a look gives anything back.
        assert!(!worth_it(1024, 2000));
        assert!(worth_it(1025, 2000));
    }

    /// A file asked to give back frees in steps of at most [`STEP_PAGES`] down to its slack, and one
    /// opened with many pages free gives them back unasked; one that cannot (made with
    /// `auto_vacuum = NONE`) never frees anything.
    #[test]
    fn steps_give_back_down_to_the_slack() {
        let dir = tempfile::tempdir().unwrap();
        for (mode, shrinks) in [("INCREMENTAL", true), ("NONE", false)] {
            let conn = Connection::open(dir.path().join(format!("{mode}.db"))).unwrap();
            conn.execute_batch(&format!(
                "PRAGMA auto_vacuum = {mode}; PRAGMA journal_mode = WAL;
                 CREATE TABLE t(x BLOB); CREATE TABLE keep(x BLOB);
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
                 INSERT INTO t SELECT randomblob(4000) FROM n;
                 INSERT INTO keep SELECT randomblob(4000) FROM t LIMIT 500;"
            ))
            .unwrap();
            let mut reclaim = Reclaim::new(&conn, false).unwrap();
            assert_eq!(
                reclaim.wait(),
                CHECK_EVERY,
                "nothing free, nothing asked, and the indexer does not watch"
            );
            conn.execute_batch("DROP TABLE t").unwrap();
            let (free, total) = pages(&conn).unwrap();
            assert!(free >= 3000, "{free} pages free of {total}");
            reclaim.asked();
            assert_eq!(reclaim.wait() == Duration::ZERO, shrinks, "asked, a step is due at once");
            assert_eq!(Reclaim::new(&conn, false).unwrap().wait() == Duration::ZERO, shrinks, "or at open");
            let mut sizes = vec![total];
            for _ in 0..100 {
                reclaim.due = Instant::now();
                reclaim.step(&conn);
                sizes.push(pages(&conn).unwrap().1);
                if !reclaim.giving_back {
                    break;
                }
            }
            let (free_after, total_after) = pages(&conn).unwrap();
            if shrinks {
                assert_eq!(free_after, slack(total_after), "given back down to the slack");
                // Pointer-map pages that described the freed ones go too.
                assert!(total - total_after >= free - free_after, "{total} → {total_after} pages");
                assert!(
                    sizes.windows(2).all(|w| w[0] - w[1] <= STEP_PAGES + 2),
                    "steps of 512 pages: {sizes:?}"
                );
                assert_eq!(reclaim.wait(), CHECK_EVERY, "done: nothing due until asked again");
            } else {
                assert_eq!((free_after, total_after), (free, total));
            }
            let kept: i64 = conn.query_row("SELECT count(*) FROM keep", [], |r| r.get(0)).unwrap();
            assert_eq!(kept, 500);
        }
    }
}
