//! Trail's embedded store: one SQLite database in WAL mode under the data directory.
//!
//! All writes go through one writer thread that commits groups of jobs together (see [`writer`]);
//! reads run on a small pool of read-only connections on tokio's blocking threads. This crate and
//! `trail-store-postgres` are the only ones that know SQL; none knows HTTP.
#![cfg_attr(test, allow(clippy::unwrap_used, reason = "tests fail loudly on purpose"))]

mod access;
mod body;
mod destinations;
mod documents;
mod ids;
mod index;
mod integrity;
mod read;
mod retention;
pub mod schema;
pub mod space;
pub mod verify;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use async_trait::async_trait;
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension};
use tokio::sync::{Semaphore, oneshot};
use trail_model::NewEvent;
use trail_model::query::{Filter, Query};
use trail_model::time::Micros;
use trail_store::{
    ApiKey, Appended, Bucket, Destination, DestinationProgress, Document, Export, Group, Invitation,
    MonthSummary, Org, OrgSettings, Page, Permission, RawRecord, Record, Result, Role, Session, Store,
    StoreError, StoreStats, StoredCheckpoint, User,
};

use crate::writer::{Job, Task, Writer};

/// The database file inside the data directory.
pub const DB_FILE: &str = "trail.db";
const READERS: usize = 4;
/// Connections for the control plane's point reads (sessions, API keys, users, permissions, roles,
/// exports, settings): authentication never waits behind slow event queries holding every reader.
const CONTROL_READERS: usize = 2;

/// SQLite's page caches, in KiB, per connection and database: SQLite memory is caches filling to
/// these sizes as the files grow (`trail_store_memory_bytes{part="sqlite"}` shows it). Every page
/// also sits in the OS's cache, so a miss costs a `pread`, not a disk read. `trail-bench` at 1M
/// events (BENCHMARKS.md, eighth step) measured these caches at 64 MiB for the writer and 16 MiB
/// per reader against 4 MiB and 1 MiB: ingest, single events and every query shape alike within
/// the machine's noise; the soak's resident size ~95 MB lower. The sizes here sit between, with
/// headroom for the hot pages of larger stores: 16 + 4 × (4 + 4) + 2 × 2 = 52 MiB at most.
const WRITER_CACHE_KIB: i64 = 16 * 1024;
/// Per reader, for the log and again for the attached full-text index.
const READER_CACHE_KIB: i64 = 4 * 1024;
const CONTROL_CACHE_KIB: i64 = 2 * 1024;

/// Maps SQLite errors to what callers act on: a full disk or read-only file is "unavailable"
/// (retry later), a uniqueness violation a conflict, anything else internal.
pub(crate) fn sql_error(e: rusqlite::Error) -> StoreError {
    classify(&e)
}

pub(crate) fn classify(e: &rusqlite::Error) -> StoreError {
    match e {
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            ErrorCode::DiskFull
            | ErrorCode::ReadOnly
            | ErrorCode::CannotOpen
            | ErrorCode::SystemIoFailure
            | ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::PermissionDenied => StoreError::Unavailable(e.to_string()),
            ErrorCode::ConstraintViolation => StoreError::Conflict(e.to_string()),
            ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => StoreError::Corrupt(e.to_string()),
            _ => StoreError::Internal(e.to_string()),
        },
        _ => StoreError::Internal(e.to_string()),
    }
}

/// The embedded SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    jobs: Mutex<Option<mpsc::Sender<Box<dyn Job>>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Ends when the writer (which holds the only sender that wakes it) has.
    indexer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// What the indexer last counted as not yet indexed.
    index_lag: Arc<std::sync::atomic::AtomicU64>,
    /// The id map's run filters, shared by the writer and the readers.
    id_filters: Arc<ids::Filters>,
    /// The dictionary appends pack bodies with (made by the writer).
    body_dict: Arc<body::Current>,
    /// Dropping the sender stops the checkpointer.
    checkpoints: Mutex<Option<(mpsc::Sender<()>, std::thread::JoinHandle<()>)>>,
    /// Event queries, histograms, proofs, retention reads.
    readers: Pool,
    /// Access and settings lookups (see [`CONTROL_READERS`]).
    control: Pool,
}

impl std::fmt::Debug for dyn Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Job")
    }
}

/// Makes the data directory readable by its owner alone (0700) and the database with its WAL and
/// shared-memory files 0600 — created so, and tightened in place for a directory an earlier release
/// wrote with the umask's 0755/0644. SQLite gives the files it creates beside the database the
/// database file's mode.
pub(crate) fn private_files(dir: &Path, db: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        // A directory the process cannot chmod (another owner, a read-only disk) still opens: the
        // write check below decides whether it is usable.
        let tighten =
            |p: &Path, mode: u32| match std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(path = %p.display(), error = %e, "cannot restrict to its owner"),
            };
        tighten(dir, 0o700);
        // Created empty with 0600 when new; an existing file, or one that cannot be created (a
        // read-only disk), is left to the open below, which says what is wrong.
        let _ = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(db);
        for suffix in ["", "-wal", "-shm"] {
            let mut name = db.as_os_str().to_owned();
            name.push(suffix);
            tighten(Path::new(&name), 0o600);
        }
    }
    #[cfg(not(unix))]
    let _ = (dir, db);
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Unavailable(format!("cannot create data directory {}: {e}", dir.display()))
        })?;
        let path = dir.join(DB_FILE);
        private_files(dir, &path)?;
        let conn = Connection::open(&path).map_err(sql_error)?;
        if let Some(p) = conn.path() {
            body::forget(p);
        }
        schema::configure(&conn, WRITER_CACHE_KIB).map_err(sql_error)?;
        schema::create(&conn).map_err(|e| match e {
            rusqlite::Error::InvalidParameterName(m) => StoreError::Corrupt(m),
            e => sql_error(e),
        })?;
        // Fold the WAL left by the previous process (a crash, a kill) into the database now, while no
        // other connection exists: otherwise repeated short runs could grow it without bound.
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "cannot checkpoint the WAL at open");
        }
        // Prove the database takes writes now, so a read-only disk is an error at start rather than
        // a server that refuses every event later.
        conn.execute(
            "INSERT OR REPLACE INTO meta(key, value) VALUES ('last_opened', ?1)",
            [trail_model::time::now()],
        )
        .map_err(|e| match sql_error(e) {
            StoreError::Unavailable(m) => {
                StoreError::Unavailable(format!("{} is not writable: {m}", path.display()))
            }
            other => other,
        })?;
        retention::finish_interrupted(&conn)?;
        let indexer = index::open(dir, &path)?;
        let index_lag = indexer.lag();
        let index_path = dir.join(index::INDEX_FILE);
        let (wake, woken) = mpsc::sync_channel(1);
        let indexer = index::spawn(indexer, woken)?;
        let id_filters = Arc::new(ids::Filters::default());
        let body_dict = Arc::new(body::Current::default());
        let w = Writer::new(conn, wake, id_filters.clone(), body_dict.clone()).map_err(sql_error)?;
        let readers = Pool::open(&path, Some(&index_path), READERS, READER_CACHE_KIB)?;
        let control = Pool::open(&path, None, CONTROL_READERS, CONTROL_CACHE_KIB)?;
        let (tx, rx) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("trail-sqlite-writer".into())
            .spawn(move || writer::run(w, rx))
            .map_err(|e| StoreError::Internal(format!("cannot start the writer thread: {e}")))?;
        let checkpoints = checkpointer(&path)?;
        Ok(Self {
            inner: Arc::new(Inner {
                path,
                jobs: Mutex::new(Some(tx)),
                writer: Mutex::new(Some(handle)),
                indexer: Mutex::new(Some(indexer)),
                index_lag,
                id_filters,
                body_dict,
                checkpoints: Mutex::new(Some(checkpoints)),
                readers,
                control,
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// [`Store::prune_month`] with `step` events moved per writer transaction, stopping after
    /// `max_steps` of them (as a crash would; tests use it): the writer commits between steps, so
    /// appends never wait for a whole month. Returns whether the prune finished.
    pub async fn prune_month_in_steps(
        &self,
        org: &str,
        month: u32,
        expect: MonthSummary,
        step: usize,
        max_steps: usize,
    ) -> Result<bool> {
        let org_slug = org.to_string();
        let id = self
            .write(move |w| {
                let id = w.org_id(&org_slug)?;
                retention::prune_begin(&w.conn, id, month, expect)?;
                Ok(id)
            })
            .await?;
        for n in 0..max_steps {
            if n > 0 {
                // In this process the steps queue behind appends anyway. A writer in another process
                // (the server, while `trail archive run` prunes) waits in SQLite's busy handler, which
                // tries again every 100 ms once it has waited a while: steps sent back to back took
                // the lock before it every time (the server's appends waited 0.8 s for a 250k-event
                // month, BENCHMARKS.md "eleventh step").
                tokio::time::sleep(retention::PRUNE_PAUSE).await;
            }
            let ended = self
                .write(move |w| {
                    let ended = retention::prune_step_or_end(&w.conn, id, month, expect.last_seq, step)?;
                    if ended == Some(true) {
                        w.forget_partition(month);
                    }
                    // The moved rows' pages go back to the file system in steps after this group.
                    w.reclaim.asked();
                    Ok(ended)
                })
                .await;
            let ended = match ended {
                Ok(ended) => ended,
                Err(e) => {
                    // A prune that moved nothing (the first step refused) is not under way: the
                    // month is listed again, as it was.
                    let _ = self.write(move |w| retention::prune_unbegin(&w.conn, id, month)).await;
                    return Err(e);
                }
            };
            if ended.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Stops taking writes, lets the writer finish every queued job, and waits for it.
    /// Everything acknowledged before was already durable; this only ends the threads cleanly.
    pub fn close(&self) {
        self.inner.stop();
    }

    /// Runs `f` on the writer thread, in its own savepoint inside the current group's transaction;
    /// resolves after COMMIT.
    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce(&mut Writer) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        self.submit(f, true).await
    }

    async fn submit<T, F>(&self, f: F, savepoint: bool) -> Result<T>
    where
        F: FnOnce(&mut Writer) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let sent = match self.inner.jobs.lock() {
            Ok(jobs) => jobs
                .as_ref()
                .map(|tx| tx.send(Box::new(Task { f, reply, savepoint }) as Box<dyn Job>).is_ok()),
            Err(_) => None,
        };
        if sent != Some(true) {
            return Err(StoreError::Unavailable("the store is shutting down".into()));
        }
        rx.await.map_err(|_| StoreError::Internal("the writer thread stopped".into()))?
    }

    /// Runs `f` on a reader connection on a blocking thread. Dropping the returned future (the client
    /// went away, or the request's deadline passed) interrupts `f`'s statement within a few thousand
    /// SQLite steps; the connection and its permit go back to the pool when the thread is done with
    /// them, not when the future is dropped.
    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        self.read_on(Which::Readers, f).await
    }

    /// Like [`Self::read`], on the control plane's own connections.
    async fn control<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        self.read_on(Which::Control, f).await
    }

    async fn read_on<T, F>(&self, which: Which, f: F) -> Result<T>
    where
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let pool = self.inner.pool(which);
        let permit = match pool.permits.try_acquire() {
            Ok(p) => p,
            Err(_) => {
                let started = std::time::Instant::now();
                let p = pool.permits.acquire().await;
                pool.waits.add(started.elapsed());
                p.map_err(|_| StoreError::Internal("reader pool closed".into()))?
            }
        };
        permit.forget();
        let cancelled = Arc::new(AtomicBool::new(false));
        let on_drop = CancelOnDrop(Some(cancelled.clone()));
        let inner = self.inner.clone();
        let out = tokio::task::spawn_blocking(move || {
            let pool = inner.pool(which);
            let mut lease = Lease { conn: pool.conns.lock().ok().and_then(|mut r| r.pop()), pool };
            let Some(conn) = lease.conn.as_mut() else {
                return Err(StoreError::Internal("no reader connection free".into()));
            };
            // Called every 10,000 virtual machine steps (well under a millisecond); `true` interrupts.
            conn.progress_handler(10_000, Some(move || cancelled.load(Ordering::Relaxed)))
                .map_err(sql_error)?;
            let out = f(conn);
            // Cannot fail but for lack of memory; the next read installs its own handler anyway.
            let _ = conn.progress_handler(0, None::<fn() -> bool>);
            out
        })
        .await
        .map_err(|e| StoreError::Internal(format!("reader task failed: {e}")))?;
        on_drop.disarm();
        out
    }
}

#[derive(Debug, Clone, Copy)]
enum Which {
    Readers,
    Control,
}

impl Inner {
    fn pool(&self, which: Which) -> &Pool {
        match which {
            Which::Readers => &self.readers,
            Which::Control => &self.control,
        }
    }
}

/// Read-only connections and a permit for each.
#[derive(Debug)]
struct Pool {
    conns: Mutex<Vec<Connection>>,
    permits: Semaphore,
    /// Reads that found every connection taken.
    waits: trail_store::WaitCounter,
}

impl Pool {
    /// `n` read-only connections to the log, each with the full-text index attached as `idx` when
    /// given; each database of each connection caches up to `cache_kib`.
    fn open(path: &Path, index: Option<&Path>, n: usize, cache_kib: i64) -> Result<Self> {
        let mut conns = Vec::with_capacity(n);
        for _ in 0..n {
            let c = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(sql_error)?;
            c.busy_timeout(std::time::Duration::from_secs(10)).map_err(sql_error)?;
            schema::stable_plans(&c).map_err(sql_error)?;
            c.pragma_update(None, "cache_size", -cache_kib).map_err(sql_error)?;
            if let Some(index) = index {
                let index = index.to_str().ok_or_else(|| {
                    StoreError::Unavailable(format!("{} is not a UTF-8 path", index.display()))
                })?;
                c.execute("ATTACH DATABASE ?1 AS idx", [index]).map_err(sql_error)?;
                c.pragma_update(Some("idx"), "cache_size", -cache_kib).map_err(sql_error)?;
            }
            conns.push(c);
        }
        Ok(Self { conns: Mutex::new(conns), permits: Semaphore::new(n), waits: Default::default() })
    }
}

/// Bytes SQLite has allocated in this process, over every connection: page caches (bounded by each
/// connection's `cache_size`), statements and FTS5's pending terms.
#[allow(unsafe_code)]
fn sqlite_memory_used() -> u64 {
    // SAFETY: `sqlite3_memory_used` only reads SQLite's own counter; it takes no argument and is
    // safe to call from any thread at any time.
    let used = unsafe { rusqlite::ffi::sqlite3_memory_used() };
    u64::try_from(used).unwrap_or(0)
}

/// Tells a running read, when dropped before [`CancelOnDrop::disarm`], that nobody waits for its
/// answer any more.
struct CancelOnDrop(Option<Arc<AtomicBool>>);

impl CancelOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(flag) = &self.0 {
            flag.store(true, Ordering::Relaxed);
        }
    }
}

/// A reader connection taken from the pool with its permit; both go back when it is dropped, even if
/// the read panicked (a connection that was closed takes its permit with it, so permits always count
/// the connections in the pool).
struct Lease<'a> {
    conn: Option<Connection>,
    pool: &'a Pool,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take()
            && let Ok(mut r) = self.pool.conns.lock()
        {
            r.push(conn);
            self.pool.permits.add_permits(1);
        }
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn stats(&self) -> Result<StoreStats> {
        let dir = self.inner.path.parent().map(Path::to_path_buf).unwrap_or_default();
        let (events, exports_pending, exports_running) = self
            .control(|c| {
                c.query_row(
                    "SELECT (SELECT coalesce(sum(n), 0) FROM minute_counts),
                            (SELECT count(*) FROM exports WHERE status = 'pending'),
                            (SELECT count(*) FROM exports WHERE status = 'running')",
                    [],
                    |r| {
                        Ok((
                            r.get::<_, i64>(0)? as u64,
                            r.get::<_, i64>(1)? as u64,
                            r.get::<_, i64>(2)? as u64,
                        ))
                    },
                )
                .map_err(sql_error)
            })
            .await?;
        // The log and the full-text index, each with its write-ahead log and shared memory.
        let size_bytes = [DB_FILE, index::INDEX_FILE]
            .iter()
            .flat_map(|f| ["", "-wal", "-shm"].map(|suffix| dir.join(format!("{f}{suffix}"))))
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum();
        Ok(StoreStats {
            events,
            size_bytes,
            exports_pending,
            exports_running,
            pools: vec![self.inner.readers.waits.stats("events"), self.inner.control.waits.stats("control")],
            memory: vec![("sqlite", sqlite_memory_used()), ("id_filters", self.inner.id_filters.bytes())],
        })
    }

    async fn create_org(&self, slug: &str, name: &str, now: Micros) -> Result<Org> {
        let (slug, name) = (slug.to_string(), name.to_string());
        self.write(move |w| access::create_org(w, &slug, &name, now)).await
    }

    async fn org(&self, slug: &str) -> Result<Option<Org>> {
        let slug = slug.to_string();
        self.control(move |c| access::org(c, &slug)).await
    }

    async fn orgs(&self) -> Result<Vec<Org>> {
        self.control(access::orgs).await
    }

    async fn create_user(
        &self,
        email: &str,
        password_hash: &str,
        server_admin: bool,
        now: Micros,
    ) -> Result<User> {
        let (email, hash) = (email.to_lowercase(), password_hash.to_string());
        self.write(move |w| access::create_user(&w.conn, &email, &hash, server_admin, now)).await
    }

    async fn user(&self, id: &str) -> Result<Option<User>> {
        let id = id.to_string();
        self.control(move |c| access::user_where(c, "id", &id)).await
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<User>> {
        let email = email.to_lowercase();
        self.control(move |c| access::user_where(c, "email", &email)).await
    }

    async fn has_users(&self) -> Result<bool> {
        self.control(|c| {
            c.query_row("SELECT EXISTS(SELECT 1 FROM users)", [], |r| r.get(0)).map_err(sql_error)
        })
        .await
    }

    async fn add_org_admin(&self, org: &str, user_id: &str) -> Result<()> {
        let (org, user) = (org.to_string(), user_id.to_string());
        self.write(move |w| {
            let org_id = w.org_id(&org)?;
            access::add_member(&w.conn, org_id, access::ADMIN_GROUP_ID, &user)
        })
        .await
    }

    async fn permissions(&self, org: &str, user_id: &str) -> Result<Option<Vec<Permission>>> {
        let (org, user) = (org.to_string(), user_id.to_string());
        self.control(move |c| {
            let Ok((org_id, _)) = read::org_id(c, &org) else {
                return Ok(None);
            };
            access::permissions(c, org_id, &user)
        })
        .await
    }

    async fn user_orgs(&self, user_id: &str) -> Result<Vec<(Org, Vec<Permission>)>> {
        let user = user_id.to_string();
        self.control(move |c| access::user_orgs(c, &user)).await
    }

    async fn create_session(&self, session: &Session) -> Result<()> {
        let s = session.clone();
        self.write(move |w| access::create_session(&w.conn, &s)).await
    }

    async fn session(&self, id: &str) -> Result<Option<Session>> {
        let id = id.to_string();
        self.control(move |c| access::session(c, &id)).await
    }

    async fn delete_session(&self, id: &str) -> Result<()> {
        let id = id.to_string();
        self.write(move |w| access::delete_session(&w.conn, &id)).await
    }

    async fn create_api_key(&self, key: &ApiKey) -> Result<()> {
        let k = key.clone();
        self.write(move |w| {
            let org_id = w.org_id(&k.org)?;
            access::create_api_key(&w.conn, org_id, &k)
        })
        .await
    }

    async fn api_key(&self, id: &str) -> Result<Option<ApiKey>> {
        let id = id.to_string();
        self.control(move |c| access::api_key(c, &id)).await
    }

    async fn api_keys(&self, org: &str) -> Result<Vec<ApiKey>> {
        let org = org.to_string();
        self.control(move |c| access::api_keys(c, &org)).await
    }

    async fn revoke_api_key(&self, org: &str, id: &str, now: Micros) -> Result<()> {
        let (org, id) = (org.to_string(), id.to_string());
        self.write(move |w| {
            let org_id = w.org_id(&org)?;
            access::revoke_api_key(&w.conn, org_id, &id, now)
        })
        .await
    }

    async fn touch_sessions(&self, seen: Vec<(String, Micros)>) -> Result<()> {
        self.write(move |w| access::touch_sessions(&w.conn, &seen)).await
    }

    async fn delete_user_sessions(&self, user_id: &str, keep: Option<&str>) -> Result<()> {
        let (user, keep) = (user_id.to_string(), keep.map(str::to_string));
        self.write(move |w| access::delete_user_sessions(&w.conn, &user, keep.as_deref())).await
    }

    async fn touch_api_keys(&self, used: Vec<(String, Micros)>) -> Result<()> {
        self.write(move |w| access::touch_api_keys(&w.conn, &used)).await
    }

    async fn set_password(&self, user_id: &str, password_hash: &str) -> Result<()> {
        let (user, hash) = (user_id.to_string(), password_hash.to_string());
        self.write(move |w| access::set_password(&w.conn, &user, &hash)).await
    }

    async fn roles(&self, org: &str) -> Result<Vec<Role>> {
        let org = org.to_string();
        self.control(move |c| access::roles(c, read::org_id(c, &org)?.0)).await
    }

    async fn create_role(&self, org: &str, role: &Role) -> Result<()> {
        let (org, role) = (org.to_string(), role.clone());
        self.write(move |w| access::create_role(&w.conn, w.org_id(&org)?, &role)).await
    }

    async fn update_role(&self, org: &str, role: &Role) -> Result<()> {
        let (org, role) = (org.to_string(), role.clone());
        self.write(move |w| access::update_role(&w.conn, w.org_id(&org)?, &role)).await
    }

    async fn delete_role(&self, org: &str, id: &str) -> Result<()> {
        let (org, id) = (org.to_string(), id.to_string());
        self.write(move |w| access::delete_role(&w.conn, w.org_id(&org)?, &id)).await
    }

    async fn groups(&self, org: &str) -> Result<Vec<Group>> {
        let org = org.to_string();
        self.control(move |c| access::groups(c, read::org_id(c, &org)?.0)).await
    }

    async fn create_group(&self, org: &str, group: &Group) -> Result<()> {
        let (org, group) = (org.to_string(), group.clone());
        self.write(move |w| access::create_group(&w.conn, w.org_id(&org)?, &group)).await
    }

    async fn update_group(&self, org: &str, id: &str, name: &str, description: &str) -> Result<()> {
        let (org, id, name, description) =
            (org.to_string(), id.to_string(), name.to_string(), description.to_string());
        self.write(move |w| access::update_group(&w.conn, w.org_id(&org)?, &id, &name, &description)).await
    }

    async fn delete_group(&self, org: &str, id: &str) -> Result<()> {
        let (org, id) = (org.to_string(), id.to_string());
        self.write(move |w| access::delete_group(&w.conn, w.org_id(&org)?, &id)).await
    }

    async fn set_group_role(&self, org: &str, group: &str, role: &str, present: bool) -> Result<()> {
        let (org, group, role) = (org.to_string(), group.to_string(), role.to_string());
        self.write(move |w| access::set_group_role(&w.conn, w.org_id(&org)?, &group, &role, present)).await
    }

    async fn set_group_member(&self, org: &str, group: &str, user_id: &str, present: bool) -> Result<()> {
        let (org, group, user) = (org.to_string(), group.to_string(), user_id.to_string());
        self.write(move |w| access::set_group_member(&w.conn, w.org_id(&org)?, &group, &user, present)).await
    }

    async fn sync_groups(&self, org: &str, user_id: &str, groups: &[(String, bool)]) -> Result<()> {
        let (org, user, groups) = (org.to_string(), user_id.to_string(), groups.to_vec());
        self.write(move |w| access::sync_groups(&w.conn, w.org_id(&org)?, &user, &groups)).await
    }

    async fn org_users(&self, org: &str) -> Result<Vec<(User, Vec<String>)>> {
        let org = org.to_string();
        self.control(move |c| access::org_users(c, read::org_id(c, &org)?.0)).await
    }

    async fn remove_org_user(&self, org: &str, user_id: &str) -> Result<()> {
        let (org, user) = (org.to_string(), user_id.to_string());
        self.write(move |w| access::remove_org_user(&w.conn, w.org_id(&org)?, &user)).await
    }

    async fn create_invitation(&self, invitation: &Invitation) -> Result<()> {
        let inv = invitation.clone();
        self.write(move |w| access::create_invitation(&w.conn, w.org_id(&inv.org)?, &inv)).await
    }

    async fn invitation(&self, id: &str) -> Result<Option<Invitation>> {
        let id = id.to_string();
        self.control(move |c| access::invitation(c, &id)).await
    }

    async fn invitations(&self, org: &str) -> Result<Vec<Invitation>> {
        let org = org.to_string();
        self.control(move |c| access::invitations(c, read::org_id(c, &org)?.0)).await
    }

    async fn revoke_invitation(&self, org: &str, id: &str, now: Micros) -> Result<()> {
        let (org, id) = (org.to_string(), id.to_string());
        self.write(move |w| access::revoke_invitation(&w.conn, w.org_id(&org)?, &id, now)).await
    }

    async fn accept_invitation(&self, id: &str, user_id: &str, now: Micros) -> Result<()> {
        let (id, user) = (id.to_string(), user_id.to_string());
        self.write(move |w| access::accept_invitation(&w.conn, &id, &user, now)).await
    }

    async fn create_export(&self, export: &Export) -> Result<()> {
        let e = export.clone();
        self.write(move |w| access::create_export(&w.conn, w.org_id(&e.org)?, &e)).await
    }

    async fn export(&self, org: &str, id: &str) -> Result<Option<Export>> {
        let (org, id) = (org.to_string(), id.to_string());
        self.control(move |c| access::export(c, read::org_id(c, &org)?.0, &id)).await
    }

    async fn exports(&self, org: &str) -> Result<Vec<Export>> {
        let org = org.to_string();
        self.control(move |c| access::exports(c, read::org_id(c, &org)?.0)).await
    }

    async fn claim_export(&self, now: Micros, max_running_per_org: usize) -> Result<Option<Export>> {
        self.write(move |w| access::claim_export(&w.conn, now, max_running_per_org)).await
    }

    async fn update_export(&self, export: &Export) -> Result<()> {
        let e = export.clone();
        self.write(move |w| access::update_export(&w.conn, &e)).await
    }

    async fn requeue_running_exports(&self) -> Result<u64> {
        self.write(|w| access::requeue_running(&w.conn)).await
    }

    async fn expired_exports(&self, now: Micros) -> Result<Vec<Export>> {
        self.control(move |c| access::expired_exports(c, now)).await
    }

    async fn append(&self, org: &str, events: Vec<NewEvent>, received_at: Micros) -> Result<Vec<Appended>> {
        let dict = self.inner.body_dict.get();
        let prepared: Vec<writer::Prepared> =
            events.into_iter().map(|e| writer::Prepared::new(org, e, received_at, dict.as_deref())).collect();
        let org = org.to_string();
        self.submit(move |w| w.append(&org, prepared), false).await
    }

    async fn query(&self, org: &str, q: &Query) -> Result<Page> {
        let (org, q) = (org.to_string(), q.clone());
        self.read(move |c| read::query(c, &org, &q)).await
    }

    async fn query_raw(&self, org: &str, q: &Query) -> Result<trail_store::RawPage> {
        let (org, q) = (org.to_string(), q.clone());
        self.read(move |c| read::query_raw(c, &org, &q)).await
    }

    async fn event(&self, org: &str, id: &str) -> Result<Option<Record>> {
        let (org, id) = (org.to_string(), id.to_string());
        let filters = self.inner.id_filters.clone();
        self.read(move |c| read::event(c, &filters, &org, &id)).await
    }

    async fn events_after(&self, org: &str, after: Option<u64>, limit: usize) -> Result<Vec<RawRecord>> {
        let org = org.to_string();
        self.read(move |c| read::events_after(c, &org, after, limit)).await
    }

    async fn histogram(&self, org: &str, filter: &Filter, width: Micros) -> Result<Vec<Bucket>> {
        if width <= 0 {
            return Err(StoreError::Internal("histogram bucket width must be positive".into()));
        }
        let (org, f) = (org.to_string(), filter.clone());
        // One snapshot for all of its statements: a slot made dense between reading the dense slots
        // and summing their counts would otherwise be counted twice.
        self.read(move |c| {
            let snapshot = c.unchecked_transaction().map_err(sql_error)?;
            read::histogram(&snapshot, &org, &f, width)
        })
        .await
    }

    async fn tree_size(&self, org: &str) -> Result<u64> {
        let org = org.to_string();
        self.read(move |c| read::org_id(c, &org).map(|(_, size)| size)).await
    }

    async fn search_index_lag(&self) -> Result<u64> {
        Ok(self.inner.index_lag.load(Ordering::Relaxed))
    }

    async fn self_audit_from(&self, org: &str) -> Result<u64> {
        let org = org.to_string();
        self.control(move |c| {
            c.prepare_cached("SELECT self_audit_from FROM orgs WHERE slug = ?1")
                .and_then(|mut st| st.query_row([&org], |r| r.get::<_, i64>(0)).optional())
                .map_err(sql_error)?
                .map(|from| from as u64)
                .ok_or_else(|| StoreError::NotFound(format!("organization {org}")))
        })
        .await
    }

    async fn tree_sizes(&self) -> Result<Vec<(String, u64)>> {
        self.read(read::tree_sizes).await
    }

    async fn root(&self, org: &str, size: u64) -> Result<trail_merkle::Hash> {
        let org = org.to_string();
        self.read(move |c| {
            let (id, tree_size) = read::org_id(c, &org)?;
            integrity::root(&integrity::Nodes::new(c, id)?, size, tree_size)
        })
        .await
    }

    async fn inclusion_proof(&self, org: &str, seq: u64, size: u64) -> Result<Vec<trail_merkle::Hash>> {
        let org = org.to_string();
        self.read(move |c| {
            let (id, tree_size) = read::org_id(c, &org)?;
            integrity::inclusion(&integrity::Nodes::new(c, id)?, seq, size, tree_size)
        })
        .await
    }

    async fn consistency_proof(&self, org: &str, from: u64, to: u64) -> Result<Vec<trail_merkle::Hash>> {
        let org = org.to_string();
        self.read(move |c| {
            let (id, tree_size) = read::org_id(c, &org)?;
            integrity::consistency(&integrity::Nodes::new(c, id)?, from, to, tree_size)
        })
        .await
    }

    async fn add_checkpoint(&self, org: &str, checkpoint: &StoredCheckpoint) -> Result<()> {
        let (org, cp) = (org.to_string(), checkpoint.clone());
        self.write(move |w| {
            let id = w.org_id(&org)?;
            integrity::add_checkpoint(&w.conn, id, &cp)
        })
        .await
    }

    async fn latest_checkpoint(&self, org: &str) -> Result<Option<StoredCheckpoint>> {
        let org = org.to_string();
        self.read(move |c| integrity::latest_checkpoint(c, read::org_id(c, &org)?.0)).await
    }

    async fn checkpoints(&self, org: &str) -> Result<Vec<StoredCheckpoint>> {
        let org = org.to_string();
        self.read(move |c| integrity::checkpoints(c, read::org_id(c, &org)?.0)).await
    }

    async fn unsigned_heads(&self) -> Result<Vec<(String, u64)>> {
        self.read(integrity::unsigned_heads).await
    }

    async fn destinations(&self, org: Option<&str>) -> Result<Vec<Destination>> {
        let org = org.map(str::to_string);
        self.control(move |c| {
            let id = org.map(|o| read::org_id(c, &o).map(|(id, _)| id)).transpose()?;
            destinations::list(c, id)
        })
        .await
    }

    async fn put_destination(&self, destination: &Destination) -> Result<()> {
        let d = destination.clone();
        self.write(move |w| destinations::put(&w.conn, w.org_id(&d.org)?, &d)).await
    }

    async fn delete_destination(&self, org: &str, id: &str) -> Result<()> {
        let (org, id) = (org.to_string(), id.to_string());
        self.write(move |w| destinations::delete(&w.conn, w.org_id(&org)?, &id)).await
    }

    async fn set_destination_progress(
        &self,
        org: &str,
        id: &str,
        progress: &DestinationProgress,
    ) -> Result<()> {
        let (org, id, p) = (org.to_string(), id.to_string(), progress.clone());
        self.write(move |w| destinations::set_progress(&w.conn, w.org_id(&org)?, &id, &p)).await
    }

    async fn lease_destination(
        &self,
        org: &str,
        id: &str,
        owner: &str,
        now: Micros,
        until: Micros,
    ) -> Result<bool> {
        let (org, id, owner) = (org.to_string(), id.to_string(), owner.to_string());
        self.write(move |w| destinations::lease(&w.conn, w.org_id(&org)?, &id, &owner, now, until)).await
    }

    async fn documents(
        &self,
        org: Option<&str>,
        kind: &str,
        limit: usize,
        before: Option<&str>,
    ) -> Result<Vec<Document>> {
        let (org, kind, before) = (org.map(str::to_string), kind.to_string(), before.map(str::to_string));
        self.control(move |c| {
            let id = org.map(|o| read::org_id(c, &o).map(|(id, _)| id)).transpose()?;
            documents::list(c, id, &kind, limit, before.as_deref())
        })
        .await
    }

    async fn document(&self, org: &str, kind: &str, id: &str) -> Result<Option<Document>> {
        let (org, kind, id) = (org.to_string(), kind.to_string(), id.to_string());
        self.control(move |c| {
            let (org_id, _) = read::org_id(c, &org)?;
            documents::get(c, org_id, &org, &kind, &id)
        })
        .await
    }

    async fn user_document(&self, user_id: &str, kind: &str) -> Result<Option<(serde_json::Value, Micros)>> {
        let (user_id, kind) = (user_id.to_string(), kind.to_string());
        self.control(move |c| documents::user_get(c, &user_id, &kind)).await
    }

    async fn set_user_document(
        &self,
        user_id: &str,
        kind: &str,
        body: Option<&serde_json::Value>,
        now: Micros,
    ) -> Result<()> {
        let (user_id, kind, body) = (user_id.to_string(), kind.to_string(), body.cloned());
        self.write(move |w| documents::user_set(&w.conn, &user_id, &kind, body.as_ref(), now)).await
    }

    async fn put_document(&self, document: &Document, create_only: bool) -> Result<bool> {
        let d = document.clone();
        self.write(move |w| documents::put(&w.conn, w.org_id(&d.org)?, &d, create_only)).await
    }

    async fn delete_document(&self, org: &str, kind: &str, id: &str) -> Result<()> {
        let (org, kind, id) = (org.to_string(), kind.to_string(), id.to_string());
        self.write(move |w| documents::delete(&w.conn, w.org_id(&org)?, &kind, &id)).await
    }

    async fn ready(&self) -> Result<()> {
        self.read(|c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(sql_error)).await?;
        self.write(|_| Ok(())).await
    }

    async fn org_settings(&self, org: &str) -> Result<Option<OrgSettings>> {
        let org = org.to_string();
        self.control(move |c| retention::org_settings(c, &org)).await
    }

    async fn set_org_settings(&self, org: &str, settings: &OrgSettings) -> Result<()> {
        let (org, s) = (org.to_string(), settings.clone());
        self.write(move |w| retention::set_org_settings(&w.conn, w.org_id(&org)?, &s)).await
    }

    async fn event_months(&self, org: &str) -> Result<Vec<u32>> {
        let org = org.to_string();
        self.read(move |c| retention::event_months(c, &org)).await
    }

    async fn month_events(
        &self,
        org: &str,
        month: u32,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<RawRecord>> {
        let org = org.to_string();
        self.read(move |c| retention::month_events(c, &org, month, after, limit)).await
    }

    async fn prune_month(&self, org: &str, month: u32, expect: MonthSummary) -> Result<()> {
        self.prune_month_in_steps(org, month, expect, retention::PRUNE_STEP, usize::MAX).await.map(|_| ())
    }

    async fn pruned_leaves(&self, org: &str, from: u64, to: u64) -> Result<Vec<(u64, trail_merkle::Hash)>> {
        let org = org.to_string();
        self.read(move |c| retention::pruned_leaves(c, &org, from, to)).await
    }
}

impl Inner {
    fn stop(&self) {
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.take();
        }
        if let Some(h) = self.writer.lock().ok().and_then(|mut h| h.take()) {
            let _ = h.join();
        }
        if let Some(h) = self.indexer.lock().ok().and_then(|mut h| h.take()) {
            let _ = h.join();
        }
        if let Some((tx, h)) = self.checkpoints.lock().ok().and_then(|mut c| c.take()) {
            drop(tx);
            let _ = h.join();
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Copies the WAL back into the database every half second on its own connection, so the writer's
/// commits never pay for it. A passive checkpoint never blocks the writer or readers; the last one
/// (at close) truncates the WAL.
fn checkpointer(path: &Path) -> Result<(mpsc::Sender<()>, std::thread::JoinHandle<()>)> {
    let conn = Connection::open(path).map_err(sql_error)?;
    conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(sql_error)?;
    let (tx, rx) = mpsc::channel::<()>();
    let handle = std::thread::Builder::new()
        .name("trail-sqlite-checkpoint".into())
        .spawn(move || {
            let interval = std::time::Duration::from_millis(500);
            while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(interval) {
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::warn!(error = %e, "WAL checkpoint failed; will retry");
                }
            }
            let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        })
        .map_err(|e| StoreError::Internal(format!("cannot start the checkpoint thread: {e}")))?;
    Ok((tx, handle))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A statement that runs for minutes unless interrupted (about three billion steps).
    const ENDLESS: &str = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 3000000000) \
                           SELECT count(*) FROM n";

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_read_interrupts_its_statement_and_frees_its_connection() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        for _ in 0..3 {
            let endless = store.read(|c| c.query_row(ENDLESS, [], |r| r.get::<_, i64>(0)).map_err(sql_error));
            // The caller gives up (a deadline, a client that went away).
            assert!(tokio::time::timeout(Duration::from_millis(100), endless).await.is_err());
        }
        // Every connection serves again: as many reads as the pool has, each waiting (up to 30 s) until
        // all of them hold a connection at the same time. Were a dropped statement still running on
        // one, they could not.
        let holding = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let reads: Vec<_> = (0..READERS)
            .map(|_| {
                let (store, holding) = (store.clone(), holding.clone());
                tokio::spawn(async move {
                    store
                        .read(move |_| {
                            holding.fetch_add(1, Ordering::SeqCst);
                            let until = std::time::Instant::now() + Duration::from_secs(30);
                            while holding.load(Ordering::SeqCst) < READERS
                                && std::time::Instant::now() < until
                            {
                                std::thread::sleep(Duration::from_millis(5));
                            }
                            Ok(holding.load(Ordering::SeqCst) == READERS)
                        })
                        .await
                })
            })
            .collect();
        for r in reads {
            assert!(r.await.unwrap().unwrap(), "a reader connection is still busy with a dropped statement");
        }
        // A read that is not dropped is not interrupted, and leaves nothing behind for the next one.
        let n = store
            .read(|c| {
                c.query_row("WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 200000) SELECT count(*) FROM n", [], |r| r.get::<_, i64>(0))
                    .map_err(sql_error)
            })
            .await
            .unwrap();
        assert_eq!(n, 200_000);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn authentication_does_not_wait_behind_slow_event_reads() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let session = Session {
            id: "s1".into(),
            user_id: "u1".into(),
            secret_hash: [7; 32],
            created_at: 1,
            expires_at: i64::MAX,
            last_seen: 1,
            method: "password".into(),
        };
        store.create_session(&session).await.unwrap();
        // Every event reader busy with a statement that runs until interrupted (a 92-day histogram, a
        // free-text scan: what matters is that they hold every connection).
        let busy: Vec<_> = (0..READERS)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    let endless =
                        store.read(|c| c.query_row(ENDLESS, [], |r| r.get::<_, i64>(0)).map_err(sql_error));
                    tokio::time::timeout(Duration::from_secs(60), endless).await.is_err()
                })
            })
            .collect();
        while store.inner.readers.permits.available_permits() > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Sessions, keys and users are read beside them; the guard only keeps a failure from hanging.
        let found = tokio::time::timeout(Duration::from_secs(30), store.session("s1")).await;
        assert_eq!(found.expect("a session lookup waited for the event readers").unwrap(), Some(session));
        assert!(tokio::time::timeout(Duration::from_secs(30), store.api_key("nope")).await.is_ok());
        assert!(tokio::time::timeout(Duration::from_secs(30), store.user_by_email("a@b")).await.is_ok());
        assert_eq!(
            store.inner.readers.permits.available_permits(),
            0,
            "the event readers were busy throughout"
        );
        for b in busy {
            b.abort();
        }
    }
}
