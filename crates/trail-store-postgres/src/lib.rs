//! Trail's scale-out store: one PostgreSQL database shared by any number of stateless `trail serve`
//! nodes (PRODUCT.md §11).
//!
//! Every node may append to every org: an append locks the org's log head row (`log_heads`,
//! `SELECT … FOR UPDATE`), reloads the Merkle frontier from stored nodes when another node moved the
//! head, and writes events, ids, tree nodes and the new head in one transaction, so `seq` stays
//! gapless and the tree consistent without any lock across orgs. Events live in monthly range
//! partitions; every table is keyed by `org` first so the schema can be distributed by org (Citus).
//! See `schema.rs` for the tables and ARCHITECTURE.md for the choices.
//!
//! Each store ("node") keeps a pool of connections (deadpool-postgres) and one more connection that
//! holds an advisory lock for as long as the node runs, so other nodes can tell it is alive (see
//! `requeue_running_exports`). Connections are plain TCP (`NoTls`): run PostgreSQL on a trusted
//! network or behind a TLS tunnel. This crate and `trail-store-sqlite` are the only ones that know
//! SQL; none knows HTTP. Only `append.rs` inserts events.
#![cfg_attr(test, allow(clippy::unwrap_used, reason = "tests fail loudly on purpose"))]

mod access;
mod append;
mod destinations;
mod documents;
mod integrity;
mod read;
mod retention;
pub mod schema;
#[cfg(feature = "testing")]
pub mod testing;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;
use trail_merkle::Frontier;
use trail_model::NewEvent;
use trail_model::query::{Filter, Query};
use trail_model::time::Micros;
use trail_store::{
    ApiKey, Appended, Bucket, Destination, DestinationProgress, Document, Export, Group, Invitation,
    MonthSummary, Org, OrgSettings, Page, Permission, RawPage, RawRecord, Record, Result, Role, Session,
    Store, StoreError, StoreStats, StoredCheckpoint, User,
};

/// Connections one store keeps at most.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16;
/// How long a request waits for a free connection before the store answers `Unavailable`.
const POOL_WAIT: Duration = Duration::from_secs(30);

/// Maps PostgreSQL errors to what callers act on: anything that says "try again later" (a lost
/// connection, a full disk, a read-only standby, a shutdown, a deadlock) is `Unavailable`, a
/// uniqueness violation a `Conflict`, detected corruption `Corrupt`, anything else `Internal`.
pub(crate) fn pg_error(e: tokio_postgres::Error) -> StoreError {
    let Some(code) = e.code() else {
        // No SQLSTATE. A lost connection or an I/O error (timeouts included) is worth retrying; the
        // rest (a column of an unexpected type, a wrong row count, a parameter that does not encode)
        // is a bug that a retry cannot mend, and must not tell clients to come back later.
        let io = std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>());
        return if e.is_closed() || io {
            StoreError::Unavailable(e.to_string())
        } else {
            StoreError::Internal(e.to_string())
        };
    };
    let msg = e.as_db_error().map_or_else(|| e.to_string(), |d| d.message().to_string());
    classify(code, msg)
}

fn classify(code: &SqlState, msg: String) -> StoreError {
    let class = &code.code()[..2];
    if *code == SqlState::UNIQUE_VIOLATION {
        StoreError::Conflict(msg)
    } else if matches!(class, "08" | "53" | "57" | "58" | "40")
        || *code == SqlState::READ_ONLY_SQL_TRANSACTION
        || *code == SqlState::LOCK_NOT_AVAILABLE
    {
        // 08 connection, 53 insufficient resources (53100 disk full), 57 operator intervention
        // (shutdown, statement timeout), 58 system I/O, 40 serialization failure or deadlock.
        StoreError::Unavailable(msg)
    } else if *code == SqlState::DATA_CORRUPTED || *code == SqlState::INDEX_CORRUPTED {
        StoreError::Corrupt(msg)
    } else {
        StoreError::Internal(format!("{msg} (SQLSTATE {})", code.code()))
    }
}

fn pool_error(e: PoolError) -> StoreError {
    match e {
        PoolError::Backend(e) => pg_error(e),
        other => StoreError::Unavailable(format!("no database connection: {other}")),
    }
}

/// The PostgreSQL store. Cheap to clone; all clones share one pool.
#[derive(Debug, Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pool: Pool,
    /// slug → org id. Orgs are never deleted or renamed, so an entry never goes stale.
    orgs: RwLock<HashMap<String, i64>>,
    /// Month partitions this node knows exist (another node's retention may drop one: then an insert
    /// fails, the set is cleared, and the append is retried once).
    partitions: Mutex<HashSet<u32>>,
    /// The frontier this node last committed per org. Used only when the locked log head still has
    /// its size; otherwise it is reloaded from stored nodes.
    frontiers: Mutex<HashMap<i64, Frontier>>,
    /// This node's liveness connection, holding its advisory lock (`None` once closed), and its
    /// backend pid, which names this node in `exports.claimed_by`.
    liveness: Mutex<Option<tokio_postgres::Client>>,
    node: i32,
    /// One queue per org for this node's appends: they wait here, holding no connection, rather than
    /// each holding a pooled connection while waiting for the org's row lock.
    appending: Mutex<HashMap<i64, Arc<tokio::sync::Mutex<()>>>>,
    /// Requests that found every pooled connection taken.
    waits: trail_store::WaitCounter,
}

impl PgStore {
    /// Connects to `url` (`postgres://user:password@host:port/db`), applies pending migrations under
    /// an advisory lock (safe when several nodes start at once) and checks the database is usable.
    pub async fn connect(url: &str) -> Result<Self> {
        let config: tokio_postgres::Config =
            url.parse().map_err(|e| StoreError::Internal(format!("invalid PostgreSQL URL: {e}")))?;
        Self::from_config(config, DEFAULT_MAX_CONNECTIONS).await
    }

    /// Like [`PgStore::connect`], from a parsed configuration and with a pool size.
    pub async fn from_config(mut config: tokio_postgres::Config, max_connections: usize) -> Result<Self> {
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        if config.get_application_name().is_none() {
            config.application_name("trail");
        }
        // Custom plans: every query's best index depends on its window and filters, which a generic
        // plan cannot see (a plan chosen for a 1-hour window is wrong for 90 days).
        let options = format!("{} -c plan_cache_mode=force_custom_plan", config.get_options().unwrap_or(""));
        config.options(options.trim_start());
        let (liveness, node) = liveness(&config).await?;
        let manager =
            Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(max_connections.max(2))
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(Duration::from_secs(15)))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Internal(format!("cannot build the connection pool: {e}")))?;
        let store = Self {
            inner: Arc::new(Inner {
                pool,
                orgs: RwLock::new(HashMap::new()),
                partitions: Mutex::new(HashSet::new()),
                frontiers: Mutex::new(HashMap::new()),
                appending: Mutex::new(HashMap::new()),
                waits: trail_store::WaitCounter::default(),
                liveness: Mutex::new(Some(liveness)),
                node,
            }),
        };
        let mut client = store.inner.conn().await?;
        // Refuse an unsuitable server before writing a schema into it.
        schema::check_server(&client).await?;
        schema::migrate(&mut client).await?;
        Ok(store)
    }

    /// Closes every pooled connection and the liveness connection (other nodes may then requeue this
    /// node's running exports); later calls fail with `Unavailable`.
    pub fn close(&self) {
        self.inner.pool.close();
        if let Ok(mut l) = self.inner.liveness.lock() {
            l.take();
        }
    }
}

/// A connection lent to one read. [`Cancellable::finish`] gives it back to the pool. Dropped before
/// that, the read was abandoned mid-statement: the statement is cancelled on the server, and the
/// connection is closed rather than pooled, so the cancel request (which PostgreSQL applies to whatever
/// the backend runs when it arrives) cannot hit the next user's statement.
pub(crate) struct Cancellable {
    client: Option<Object>,
    token: tokio_postgres::CancelToken,
}

impl Cancellable {
    pub(crate) fn client(&self) -> Result<&Object> {
        self.client.as_ref().ok_or_else(|| StoreError::Internal("connection already given back".into()))
    }

    pub(crate) fn finish(mut self) {
        self.client.take();
    }
}

impl Drop for Cancellable {
    fn drop(&mut self) {
        let Some(object) = self.client.take() else {
            return;
        };
        let client = Object::take(object);
        let token = self.token.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = token.cancel_query(NoTls).await {
                    tracing::warn!(error = %e, "cannot cancel an abandoned PostgreSQL statement");
                }
                drop(client);
            });
        }
    }
}

/// Opens this node's liveness connection and takes its advisory lock; returns it and its backend pid.
async fn liveness(config: &tokio_postgres::Config) -> Result<(tokio_postgres::Client, i32)> {
    let (client, connection) = config.connect(NoTls).await.map_err(pg_error)?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "the PostgreSQL liveness connection failed");
        }
    });
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .and_then(|r| r.try_get(0))
        .map_err(pg_error)?;
    client.execute("SELECT pg_advisory_lock($1, $2)", &[&schema::NODE_LOCK, &pid]).await.map_err(pg_error)?;
    Ok((client, pid))
}

impl Inner {
    pub(crate) async fn conn(&self) -> Result<Object> {
        let status = self.pool.status();
        if status.available > 0 || status.size < status.max_size {
            return self.pool.get().await.map_err(pool_error);
        }
        let started = std::time::Instant::now();
        let conn = self.pool.get().await.map_err(pool_error);
        self.waits.add(started.elapsed());
        conn
    }

    /// A pooled connection for a read whose caller may give up (a request past its deadline, a client
    /// that went away): see [`Cancellable`].
    pub(crate) async fn cancellable(&self) -> Result<Cancellable> {
        let client = self.conn().await?;
        let token = client.cancel_token();
        Ok(Cancellable { client: Some(client), token })
    }

    /// The org's numeric id; `NotFound` for an unknown slug.
    pub(crate) async fn org_id(&self, slug: &str) -> Result<i64> {
        if let Some(id) = self.orgs.read().ok().and_then(|m| m.get(slug).copied()) {
            return Ok(id);
        }
        let client = self.conn().await?;
        let id = access::lookup_org_id(&client, slug).await?;
        if let Ok(mut m) = self.orgs.write() {
            m.insert(slug.to_string(), id);
        }
        Ok(id)
    }

    /// The org's id, or `None` when it does not exist.
    pub(crate) async fn find_org(&self, slug: &str) -> Result<Option<i64>> {
        match self.org_id(slug).await {
            Ok(id) => Ok(Some(id)),
            Err(StoreError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub(crate) fn remember_org(&self, slug: &str, id: i64) {
        if let Ok(mut m) = self.orgs.write() {
            m.insert(slug.to_string(), id);
        }
    }
}

#[async_trait]
impl Store for PgStore {
    async fn stats(&self) -> Result<StoreStats> {
        let c = self.inner.conn().await?;
        let row = c
            .query_one(
                "SELECT pg_database_size(current_database()),
                        (SELECT coalesce(sum(n), 0)::bigint FROM minute_counts),
                        (SELECT count(*) FROM exports WHERE status = 'pending'),
                        (SELECT count(*) FROM exports WHERE status = 'running')",
                &[],
            )
            .await
            .map_err(pg_error)?;
        let n = |i: usize| -> Result<u64> { unsigned(row.try_get(i).map_err(pg_error)?, "a count") };
        Ok(StoreStats {
            size_bytes: n(0)?,
            events: n(1)?,
            exports_pending: n(2)?,
            exports_running: n(3)?,
            pools: vec![self.inner.waits.stats("postgres")],
            memory: Vec::new(),
        })
    }

    async fn create_org(&self, slug: &str, name: &str, now: Micros) -> Result<Org> {
        access::create_org(&self.inner, slug, name, now).await
    }

    async fn org(&self, slug: &str) -> Result<Option<Org>> {
        access::org(&self.inner.conn().await?, slug).await
    }

    async fn orgs(&self) -> Result<Vec<Org>> {
        access::orgs(&self.inner.conn().await?).await
    }

    async fn create_user(
        &self,
        email: &str,
        password_hash: &str,
        server_admin: bool,
        now: Micros,
    ) -> Result<User> {
        let email = email.to_lowercase();
        access::create_user(&self.inner.conn().await?, &email, password_hash, server_admin, now).await
    }

    async fn user(&self, id: &str) -> Result<Option<User>> {
        access::user_where(&self.inner.conn().await?, access::UserKey::Id, id).await
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<User>> {
        let email = email.to_lowercase();
        access::user_where(&self.inner.conn().await?, access::UserKey::Email, &email).await
    }

    async fn has_users(&self) -> Result<bool> {
        let row = self
            .inner
            .conn()
            .await?
            .query_one("SELECT EXISTS(SELECT 1 FROM users)", &[])
            .await
            .map_err(pg_error)?;
        Ok(row.get(0))
    }

    async fn add_org_admin(&self, org: &str, user_id: &str) -> Result<()> {
        let org = self.inner.org_id(org).await?;
        access::add_member(&self.inner.conn().await?, org, access::ADMIN_GROUP_ID, user_id).await
    }

    async fn permissions(&self, org: &str, user_id: &str) -> Result<Option<Vec<Permission>>> {
        let Some(org) = self.inner.find_org(org).await? else {
            return Ok(None);
        };
        access::permissions(&self.inner.conn().await?, org, user_id).await
    }

    async fn user_orgs(&self, user_id: &str) -> Result<Vec<(Org, Vec<Permission>)>> {
        access::user_orgs(&self.inner.conn().await?, user_id).await
    }

    async fn create_session(&self, session: &Session) -> Result<()> {
        access::create_session(&self.inner.conn().await?, session).await
    }

    async fn session(&self, id: &str) -> Result<Option<Session>> {
        access::session(&self.inner.conn().await?, id).await
    }

    async fn delete_session(&self, id: &str) -> Result<()> {
        access::delete_session(&self.inner.conn().await?, id).await
    }

    async fn create_api_key(&self, key: &ApiKey) -> Result<()> {
        let org = self.inner.org_id(&key.org).await?;
        access::create_api_key(&self.inner.conn().await?, org, key).await
    }

    async fn api_key(&self, id: &str) -> Result<Option<ApiKey>> {
        access::api_key(&self.inner.conn().await?, id).await
    }

    async fn api_keys(&self, org: &str) -> Result<Vec<ApiKey>> {
        let org = self.inner.org_id(org).await?;
        access::api_keys(&self.inner.conn().await?, org).await
    }

    async fn revoke_api_key(&self, org: &str, id: &str, now: Micros) -> Result<()> {
        let org = self.inner.org_id(org).await?;
        access::revoke_api_key(&self.inner.conn().await?, org, id, now).await
    }

    async fn touch_sessions(&self, seen: Vec<(String, Micros)>) -> Result<()> {
        access::touch(&self.inner.conn().await?, access::Touched::Sessions, seen).await
    }

    async fn delete_user_sessions(&self, user_id: &str, keep: Option<&str>) -> Result<()> {
        access::delete_user_sessions(&self.inner.conn().await?, user_id, keep).await
    }

    async fn touch_api_keys(&self, used: Vec<(String, Micros)>) -> Result<()> {
        access::touch(&self.inner.conn().await?, access::Touched::ApiKeys, used).await
    }

    async fn set_password(&self, user_id: &str, password_hash: &str) -> Result<()> {
        access::set_password(&self.inner.conn().await?, user_id, password_hash).await
    }

    async fn roles(&self, org: &str) -> Result<Vec<Role>> {
        let org = self.inner.org_id(org).await?;
        access::roles(&self.inner.conn().await?, org).await
    }

    async fn create_role(&self, org: &str, role: &Role) -> Result<()> {
        let org = self.inner.org_id(org).await?;
        access::create_role(&self.inner.conn().await?, org, role).await
    }

    async fn update_role(&self, org: &str, role: &Role) -> Result<()> {
        let org = self.inner.org_id(org).await?;
        access::update_role(&self.inner.conn().await?, org, role).await
    }

    async fn delete_role(&self, org: &str, id: &str) -> Result<()> {
        let org = self.inner.org_id(org).await?;
        access::delete_role(&mut self.inner.conn().await?, org, id).await
    }

    async fn groups(&self, org: &str) -> Result<Vec<Group>> {
        let org = self.inner.org_id(org).await?;
        access::groups(&self.inner.conn().await?, org).await
    }

    async fn create_group(&self, org: &str, group: &Group) -> Result<()> {
        let org = self.inner.org_id(org).await?;
        access::create_group(&self.inner.conn().await?, org, group).await
    }

    async fn update_group(&self, org: &str, id: &str, name: &str, description: &str) -> Result<()> {
        let org = self.inner.org_id(org).await?;
        access::update_group(&self.inner.conn().await?, org, id, name, description).await
    }

    async fn delete_group(&self, org: &str, id: &str) -> Result<()> {
        let org = self.inner.org_id(org).await?;
        access::delete_group(&mut self.inner.conn().await?, org, id).await
    }

    async fn set_group_role(&self, org: &str, group: &str, role: &str, present: bool) -> Result<()> {
        let org = self.inner.org_id(org).await?;
        access::set_group_role(&self.inner.conn().await?, org, group, role, present).await
    }

    async fn set_group_member(&self, org: &str, group: &str, user_id: &str, present: bool) -> Result<()> {
        let org = self.inner.org_id(org).await?;
        access::set_group_member(&mut self.inner.conn().await?, org, group, user_id, present).await
    }

    async fn sync_groups(&self, org: &str, user_id: &str, groups: &[(String, bool)]) -> Result<()> {
        let org = self.inner.org_id(org).await?;
        access::sync_groups(&mut self.inner.conn().await?, org, user_id, groups).await
    }

    async fn org_users(&self, org: &str) -> Result<Vec<(User, Vec<String>)>> {
        let org = self.inner.org_id(org).await?;
        access::org_users(&self.inner.conn().await?, org).await
    }

    async fn remove_org_user(&self, org: &str, user_id: &str) -> Result<()> {
        let org = self.inner.org_id(org).await?;
        access::remove_org_user(&mut self.inner.conn().await?, org, user_id).await
    }

    async fn create_invitation(&self, invitation: &Invitation) -> Result<()> {
        let org = self.inner.org_id(&invitation.org).await?;
        access::create_invitation(&self.inner.conn().await?, org, invitation).await
    }

    async fn invitation(&self, id: &str) -> Result<Option<Invitation>> {
        access::invitation(&self.inner.conn().await?, id).await
    }

    async fn invitations(&self, org: &str) -> Result<Vec<Invitation>> {
        let org = self.inner.org_id(org).await?;
        access::invitations(&self.inner.conn().await?, org).await
    }

    async fn revoke_invitation(&self, org: &str, id: &str, now: Micros) -> Result<()> {
        let org = self.inner.org_id(org).await?;
        access::revoke_invitation(&self.inner.conn().await?, org, id, now).await
    }

    async fn accept_invitation(&self, id: &str, user_id: &str, now: Micros) -> Result<()> {
        access::accept_invitation(&mut self.inner.conn().await?, id, user_id, now).await
    }

    async fn create_export(&self, export: &Export) -> Result<()> {
        let org = self.inner.org_id(&export.org).await?;
        access::create_export(&self.inner.conn().await?, org, export).await
    }

    async fn export(&self, org: &str, id: &str) -> Result<Option<Export>> {
        let org = self.inner.org_id(org).await?;
        access::export(&self.inner.conn().await?, org, id).await
    }

    async fn exports(&self, org: &str) -> Result<Vec<Export>> {
        let org = self.inner.org_id(org).await?;
        access::exports(&self.inner.conn().await?, org).await
    }

    async fn claim_export(&self, now: Micros, max_running_per_org: usize) -> Result<Option<Export>> {
        access::claim_export(&self.inner.conn().await?, now, self.inner.node, max_running_per_org).await
    }

    async fn update_export(&self, export: &Export) -> Result<()> {
        let org = self.inner.org_id(&export.org).await?;
        access::update_export(&self.inner.conn().await?, org, export).await
    }

    async fn requeue_running_exports(&self) -> Result<u64> {
        access::requeue_running(&self.inner.conn().await?, self.inner.node).await
    }

    async fn expired_exports(&self, now: Micros) -> Result<Vec<Export>> {
        access::expired_exports(&self.inner.conn().await?, now).await
    }

    async fn append(&self, org: &str, events: Vec<NewEvent>, received_at: Micros) -> Result<Vec<Appended>> {
        let prepared = events.into_iter().map(|e| append::Prepared::new(org, e, received_at)).collect();
        append::append(&self.inner, org, prepared).await
    }

    async fn query(&self, org: &str, q: &Query) -> Result<Page> {
        let org = self.inner.org_id(org).await?;
        let conn = self.inner.cancellable().await?;
        let page = read::query(conn.client()?, org, q).await;
        conn.finish();
        page
    }

    async fn query_raw(&self, org: &str, q: &Query) -> Result<RawPage> {
        let org = self.inner.org_id(org).await?;
        let conn = self.inner.cancellable().await?;
        let page = read::query_raw(conn.client()?, org, q).await;
        conn.finish();
        page
    }

    async fn event(&self, org: &str, id: &str) -> Result<Option<Record>> {
        let org = self.inner.org_id(org).await?;
        read::event(&self.inner.conn().await?, org, id).await
    }

    async fn events_after(&self, org: &str, after: Option<u64>, limit: usize) -> Result<Vec<RawRecord>> {
        let org = self.inner.org_id(org).await?;
        read::events_after(&self.inner.conn().await?, org, after, limit).await
    }

    async fn histogram(&self, org: &str, filter: &Filter, width: Micros) -> Result<Vec<Bucket>> {
        if width <= 0 {
            return Err(StoreError::Internal("histogram bucket width must be positive".into()));
        }
        let org = self.inner.org_id(org).await?;
        let conn = self.inner.cancellable().await?;
        // One snapshot for all of its statements: a slot made dense between reading the dense slots
        // and summing their counts would otherwise be counted twice (or subtracted unadded).
        let client = conn.client()?;
        client.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await.map_err(pg_error)?;
        let buckets = read::histogram(client, org, filter, width).await;
        // A connection whose transaction did not end is dropped (closed), never pooled.
        client.batch_execute(if buckets.is_ok() { "COMMIT" } else { "ROLLBACK" }).await.map_err(pg_error)?;
        conn.finish();
        buckets
    }

    async fn tree_size(&self, org: &str) -> Result<u64> {
        let org = self.inner.org_id(org).await?;
        read::tree_size(&self.inner.conn().await?, org).await
    }

    async fn self_audit_from(&self, org: &str) -> Result<u64> {
        let org = self.inner.org_id(org).await?;
        read::self_audit_from(&self.inner.conn().await?, org).await
    }

    async fn tree_sizes(&self) -> Result<Vec<(String, u64)>> {
        read::tree_sizes(&self.inner.conn().await?).await
    }

    async fn root(&self, org: &str, size: u64) -> Result<trail_merkle::Hash> {
        let org = self.inner.org_id(org).await?;
        integrity::root(&self.inner.conn().await?, org, size).await
    }

    async fn inclusion_proof(&self, org: &str, seq: u64, size: u64) -> Result<Vec<trail_merkle::Hash>> {
        let org = self.inner.org_id(org).await?;
        integrity::inclusion(&self.inner.conn().await?, org, seq, size).await
    }

    async fn consistency_proof(&self, org: &str, from: u64, to: u64) -> Result<Vec<trail_merkle::Hash>> {
        let org = self.inner.org_id(org).await?;
        integrity::consistency(&self.inner.conn().await?, org, from, to).await
    }

    async fn add_checkpoint(&self, org: &str, checkpoint: &StoredCheckpoint) -> Result<()> {
        let org = self.inner.org_id(org).await?;
        integrity::add_checkpoint(&self.inner.conn().await?, org, checkpoint).await
    }

    async fn latest_checkpoint(&self, org: &str) -> Result<Option<StoredCheckpoint>> {
        let org = self.inner.org_id(org).await?;
        integrity::latest_checkpoint(&self.inner.conn().await?, org).await
    }

    async fn checkpoints(&self, org: &str) -> Result<Vec<StoredCheckpoint>> {
        let org = self.inner.org_id(org).await?;
        integrity::checkpoints(&self.inner.conn().await?, org).await
    }

    async fn unsigned_heads(&self) -> Result<Vec<(String, u64)>> {
        integrity::unsigned_heads(&self.inner.conn().await?).await
    }

    async fn org_settings(&self, org: &str) -> Result<Option<OrgSettings>> {
        let org = self.inner.org_id(org).await?;
        retention::org_settings(&self.inner.conn().await?, org).await
    }

    async fn set_org_settings(&self, org: &str, settings: &OrgSettings) -> Result<()> {
        let org = self.inner.org_id(org).await?;
        retention::set_org_settings(&self.inner.conn().await?, org, settings).await
    }

    async fn event_months(&self, org: &str) -> Result<Vec<u32>> {
        let org = self.inner.org_id(org).await?;
        retention::event_months(&self.inner.conn().await?, org).await
    }

    async fn month_events(
        &self,
        org: &str,
        month: u32,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<RawRecord>> {
        let org = self.inner.org_id(org).await?;
        retention::month_events(&self.inner.conn().await?, org, month, after, limit).await
    }

    async fn prune_month(&self, org: &str, month: u32, expect: MonthSummary) -> Result<()> {
        let org = self.inner.org_id(org).await?;
        let dropped = retention::prune_month(&mut self.inner.conn().await?, org, month, expect).await?;
        if dropped && let Ok(mut p) = self.inner.partitions.lock() {
            p.remove(&month);
        }
        Ok(())
    }

    async fn pruned_leaves(&self, org: &str, from: u64, to: u64) -> Result<Vec<(u64, trail_merkle::Hash)>> {
        let org = self.inner.org_id(org).await?;
        retention::pruned_leaves(&self.inner.conn().await?, org, from, to).await
    }

    async fn destinations(&self, org: Option<&str>) -> Result<Vec<Destination>> {
        let org = match org {
            Some(o) => Some(self.inner.org_id(o).await?),
            None => None,
        };
        destinations::list(&self.inner.conn().await?, org).await
    }

    async fn put_destination(&self, destination: &Destination) -> Result<()> {
        let org = self.inner.org_id(&destination.org).await?;
        destinations::put(&self.inner.conn().await?, org, destination).await
    }

    async fn delete_destination(&self, org: &str, id: &str) -> Result<()> {
        let org = self.inner.org_id(org).await?;
        destinations::delete(&self.inner.conn().await?, org, id).await
    }

    async fn set_destination_progress(
        &self,
        org: &str,
        id: &str,
        progress: &DestinationProgress,
    ) -> Result<()> {
        let org = self.inner.org_id(org).await?;
        destinations::set_progress(&self.inner.conn().await?, org, id, progress).await
    }

    async fn lease_destination(
        &self,
        org: &str,
        id: &str,
        owner: &str,
        now: Micros,
        until: Micros,
    ) -> Result<bool> {
        let org = self.inner.org_id(org).await?;
        destinations::lease(&self.inner.conn().await?, org, id, owner, now, until).await
    }

    async fn documents(
        &self,
        org: Option<&str>,
        kind: &str,
        limit: usize,
        before: Option<&str>,
    ) -> Result<Vec<Document>> {
        let org = match org {
            Some(o) => Some(self.inner.org_id(o).await?),
            None => None,
        };
        documents::list(&self.inner.conn().await?, org, kind, limit, before).await
    }

    async fn document(&self, org: &str, kind: &str, id: &str) -> Result<Option<Document>> {
        let org_id = self.inner.org_id(org).await?;
        documents::get(&self.inner.conn().await?, org_id, org, kind, id).await
    }

    async fn user_document(&self, user_id: &str, kind: &str) -> Result<Option<(serde_json::Value, Micros)>> {
        documents::user_get(&self.inner.conn().await?, user_id, kind).await
    }

    async fn set_user_document(
        &self,
        user_id: &str,
        kind: &str,
        body: Option<&serde_json::Value>,
        now: Micros,
    ) -> Result<()> {
        documents::user_set(&self.inner.conn().await?, user_id, kind, body, now).await
    }

    async fn put_document(&self, document: &Document, create_only: bool) -> Result<bool> {
        let org = self.inner.org_id(&document.org).await?;
        documents::put(&self.inner.conn().await?, org, document, create_only).await
    }

    async fn delete_document(&self, org: &str, kind: &str, id: &str) -> Result<()> {
        let org = self.inner.org_id(org).await?;
        documents::delete(&self.inner.conn().await?, org, kind, id).await
    }

    async fn ready(&self) -> Result<()> {
        let client = self.inner.conn().await?;
        let standby: bool = client
            .query_one("SELECT pg_is_in_recovery()", &[])
            .await
            .and_then(|r| r.try_get(0))
            .map_err(pg_error)?;
        if standby {
            return Err(StoreError::Unavailable("the database is a read-only standby".into()));
        }
        Ok(())
    }
}

/// Converts a stored `bigint` that must not be negative (a seq, a size, a count).
pub(crate) fn unsigned(v: i64, what: &str) -> Result<u64> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("negative {what} {v}")))
}

/// Converts a seq or size the caller gave to the `bigint` PostgreSQL stores.
pub(crate) fn signed(v: u64, what: &str) -> Result<i64> {
    i64::try_from(v).map_err(|_| StoreError::OutOfRange(format!("{what} {v} is too large")))
}

/// A stored 32-byte hash.
pub(crate) fn hash32(v: Vec<u8>, what: &str) -> Result<[u8; 32]> {
    v.try_into().map_err(|_| StoreError::Corrupt(format!("{what} is not 32 bytes")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Errors without a SQLSTATE that come from a bug, not the connection, are not "retry later".
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn client_side_errors_are_internal() {
        let Some(db) = crate::testing::TestDb::create().await else {
            return;
        };
        let client = db.client().await;
        let no_row = client.query_one("SELECT 1 WHERE false", &[]).await.unwrap_err();
        assert!(matches!(pg_error(no_row), StoreError::Internal(_)));
        let row = client.query_one("SELECT 1::int4", &[]).await.unwrap();
        let wrong_type = row.try_get::<_, String>(0).unwrap_err();
        assert!(matches!(pg_error(wrong_type), StoreError::Internal(_)));
    }

    #[test]
    fn errors_map_to_what_callers_act_on() {
        let class = |c: &str| classify(&SqlState::from_code(c), "m".into());
        assert!(matches!(class("23505"), StoreError::Conflict(_)));
        for code in ["53100", "25006", "57P01", "08006", "40001", "40P01", "58030", "57014"] {
            assert!(matches!(class(code), StoreError::Unavailable(_)), "{code}");
        }
        assert!(matches!(class("XX001"), StoreError::Corrupt(_)));
        assert!(matches!(class("42P01"), StoreError::Internal(_)));
    }

    /// A read abandoned mid-statement is cancelled on the server, and its connection is not pooled.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_abandoned_read_is_cancelled_on_the_server() {
        let Some(db) = crate::testing::TestDb::create().await else {
            return;
        };
        let store = db.store().await;
        let sleep = "SELECT pg_sleep(60) /* an_abandoned_read_is_cancelled_on_the_server */";
        let mut backend: Option<i32> = None;
        let read = async {
            let conn = store.inner.cancellable().await?;
            let pid = conn.client()?.query_one("SELECT pg_backend_pid()", &[]).await.map_err(pg_error)?;
            backend = Some(pid.get(0));
            conn.client()?.execute(sleep, &[]).await.map_err(pg_error)?;
            conn.finish();
            Ok::<(), StoreError>(())
        };
        assert!(tokio::time::timeout(Duration::from_millis(500), read).await.is_err(), "the caller gave up");
        let backend = backend.expect("the read reached its statement");
        let observer = db.client().await;
        // The whole connection goes, not only its statement: a pooled one would stay, idle.
        let open = || async {
            let n: i64 = observer
                .query_one("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", &[&backend])
                .await
                .unwrap()
                .get(0);
            n > 0
        };
        // Generous bound: the point is that it ends long before the statement's 60 s.
        let mut gone = false;
        for _ in 0..200 {
            if !open().await {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(gone, "the abandoned statement's connection is still open on the server");
        // The pool lends connections as before.
        for _ in 0..3 {
            store.orgs().await.unwrap();
        }
    }
}
