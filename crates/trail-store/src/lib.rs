//! The storage contract of Trail: the [`Store`] trait every backend implements, the records it
//! exchanges, and (behind the `conformance` feature) the one test suite every backend must pass.
//!
//! The contract's invariants, which backends must keep and the conformance suite checks:
//! - an acknowledged append is durable (fsynced) before `append` returns;
//! - per organization, `seq` starts at 0 and has no gaps; it is the event's Merkle leaf index;
//! - stored canonical bytes never change; `(org, id)` identifies one event (idempotency);
//! - queries return newest first by `(time, seq)` and page without skips or repeats.
//!
//! This crate knows no SQL and no HTTP.
#![cfg_attr(test, allow(clippy::unwrap_used, reason = "tests fail loudly on purpose"))]

use async_trait::async_trait;
use trail_model::query::{Cursor, Filter, Query};
use trail_model::time::Micros;
use trail_model::{NewEvent, StoredEvent};

pub mod access;
mod cuts;
pub use cuts::CutPlan;
#[cfg(feature = "conformance")]
pub mod conformance;

pub use access::{
    ApiKey, Export, ExportFormat, ExportKind, ExportStatus, Group, Invitation, Org, Permission, Role, Scope,
    Session, User,
};

/// What can go wrong in a store, in the terms callers act on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The named thing does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// A uniqueness rule was violated (an org slug or email already taken).
    #[error("{0}")]
    Conflict(String),
    /// The storage cannot take writes right now (disk full, I/O error, read-only); nothing was stored.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// A tree size, leaf index or range outside the log.
    #[error("{0}")]
    OutOfRange(String),
    /// Stored data failed a consistency check.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// Anything else; the message is for the operator's log, never for API callers.
    #[error("internal store error: {0}")]
    Internal(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The outcome of appending one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// Stored now at `seq`.
    Created { id: String, seq: u64 },
    /// An event with this `id` and the same content was already stored in this org at `seq`; nothing
    /// new was stored (a retry).
    Duplicate { id: String, seq: u64 },
    /// An event with this `id` but different content is stored at `seq`; nothing new was stored, and
    /// the caller is told, since a reused id with new content is a bug a retry would hide
    /// (see `trail_model::canonical::same_content`).
    Conflict { id: String, seq: u64 },
}

impl Appended {
    pub fn seq(&self) -> u64 {
        match self {
            Appended::Created { seq, .. }
            | Appended::Duplicate { seq, .. }
            | Appended::Conflict { seq, .. } => *seq,
        }
    }

    pub fn id(&self) -> &str {
        match self {
            Appended::Created { id, .. } | Appended::Duplicate { id, .. } | Appended::Conflict { id, .. } => {
                id
            }
        }
    }
}

/// What `/metrics` reports about a store: cheap enough to read at every scrape.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct StoreStats {
    /// Events in hot storage, every org.
    pub events: u64,
    /// Bytes the store takes on disk (SQLite: its database files; PostgreSQL: its database).
    pub size_bytes: u64,
    pub exports_pending: u64,
    pub exports_running: u64,
    /// Per connection pool of this process: requests that found no connection free and waited.
    pub pools: Vec<PoolStats>,
    /// Memory the store holds in this process, by part (a fixed name each: a bounded label), so that
    /// growth can be told apart: bounded caches from structures that grow with the data by design.
    pub memory: Vec<(&'static str, u64)>,
}

/// Waits for one connection pool.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct PoolStats {
    /// A fixed name (`events`, `control`, `postgres`): a bounded label.
    pub name: &'static str,
    pub waits: u64,
    pub wait_seconds: f64,
}

/// Counts waits for a pool's connections (one per pool, updated without locks).
#[derive(Debug, Default)]
pub struct WaitCounter {
    waits: std::sync::atomic::AtomicU64,
    micros: std::sync::atomic::AtomicU64,
}

impl WaitCounter {
    pub fn add(&self, waited: std::time::Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        self.waits.fetch_add(1, Relaxed);
        self.micros.fetch_add(waited.as_micros() as u64, Relaxed);
    }

    pub fn stats(&self, name: &'static str) -> PoolStats {
        use std::sync::atomic::Ordering::Relaxed;
        PoolStats {
            name,
            waits: self.waits.load(Relaxed),
            wait_seconds: self.micros.load(Relaxed) as f64 / 1e6,
        }
    }
}

/// A stored event together with its canonical bytes (from which its leaf hash is computed).
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub event: StoredEvent,
    pub bytes: Vec<u8>,
}

impl Record {
    /// Decodes canonical bytes as read from storage.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self> {
        let event = trail_model::canonical::decode(&bytes)
            .map_err(|e| StoreError::Corrupt(format!("stored event does not decode: {e}")))?;
        Ok(Self { event, bytes })
    }

    pub fn leaf_hash(&self) -> trail_merkle::Hash {
        trail_merkle::leaf_hash(&self.bytes)
    }

    /// The JSON the API answers for this event.
    pub fn to_json(&self) -> serde_json::Value {
        self.event.to_json(&self.leaf_hash())
    }
}

/// One page of query results.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub records: Vec<Record>,
    /// Where the next page starts; `None` when this page is the last.
    pub next: Option<Cursor>,
}

/// A stored event's position and canonical bytes, not decoded (for exports).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRecord {
    pub time: Micros,
    pub seq: u64,
    pub bytes: Vec<u8>,
}

impl RawRecord {
    /// The event, decoded; `Corrupt` naming the seq when the stored bytes do not decode.
    pub fn decode(&self) -> Result<StoredEvent> {
        trail_model::canonical::decode(&self.bytes)
            .map_err(|e| StoreError::Corrupt(format!("seq {}: stored event does not decode: {e}", self.seq)))
    }
}

/// One page of undecoded query results.
#[derive(Debug, Clone, PartialEq)]
pub struct RawPage {
    pub records: Vec<RawRecord>,
    pub next: Option<Cursor>,
}

/// Builds a raw page from up to `limit + 1` records sorted newest first, like [`page_from`].
pub fn raw_page_from(mut records: Vec<RawRecord>, q: &Query, as_of: u64) -> RawPage {
    let next = if records.len() > q.limit {
        records.truncate(q.limit);
        records.last().map(|r| Cursor::new(&q.filter, r.time, r.seq, as_of))
    } else {
        None
    };
    RawPage { records, next }
}

/// The runs of units in `[first, last)` that are not in `covered` (sorted), as `[lo, hi)` pairs.
pub fn gaps(covered: &[i64], first: i64, last: i64) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    let mut at = first;
    for &unit in &covered[covered.partition_point(|&u| u < first)..] {
        if unit >= last {
            break;
        }
        if unit > at {
            out.push((at, unit));
        }
        at = unit + 1;
    }
    if at < last {
        out.push((at, last));
    }
    out
}

/// Event counts of one histogram bucket `[start, start + width)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    pub start: Micros,
    pub count: u64,
}

/// A signed checkpoint as stored: the tree size, its root, and the signed note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    pub size: u64,
    pub root: trail_merkle::Hash,
    /// The C2SP signed note (`tlog-checkpoint`), exactly as served.
    pub note: String,
    pub created_at: Micros,
}

/// A new event's id: the client's, or a freshly minted UUIDv7 (time-ordered, so indexes stay local).
pub fn mint_event_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Builds a page from up to `limit + 1` records sorted newest first, the way every backend must.
pub fn page_from(mut records: Vec<Record>, q: &Query, as_of: u64) -> Page {
    let next = if records.len() > q.limit {
        records.truncate(q.limit);
        records.last().map(|r| Cursor::new(&q.filter, r.event.time, r.event.seq, as_of))
    } else {
        None
    };
    Page { records, next }
}

/// The storage behind a Trail server. Organizations are named by slug throughout.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    // --- organizations and access -------------------------------------------------------------

    /// Creates an organization with its built-in `admin` role and `Administrators` group.
    /// `Conflict` if the slug is taken.
    async fn create_org(&self, slug: &str, name: &str, now: Micros) -> Result<Org>;
    async fn org(&self, slug: &str) -> Result<Option<Org>>;
    async fn orgs(&self) -> Result<Vec<Org>>;

    /// Creates a user; `Conflict` if the email is taken (emails compare case-insensitively).
    async fn create_user(
        &self,
        email: &str,
        password_hash: &str,
        server_admin: bool,
        now: Micros,
    ) -> Result<User>;
    async fn user(&self, id: &str) -> Result<Option<User>>;
    async fn user_by_email(&self, email: &str) -> Result<Option<User>>;
    /// Whether anyone has an account on this server.
    async fn has_users(&self) -> Result<bool>;
    /// Adds a user to the org's built-in `Administrators` group.
    async fn add_org_admin(&self, org: &str, user_id: &str) -> Result<()>;
    /// The user's effective permissions in an org (union over their groups' roles), or `None` when
    /// the user is not a member. Evaluated from storage on every call: no caching across requests.
    async fn permissions(&self, org: &str, user_id: &str) -> Result<Option<Vec<Permission>>>;
    /// The orgs a user belongs to, with their effective permissions in each.
    async fn user_orgs(&self, user_id: &str) -> Result<Vec<(Org, Vec<Permission>)>>;

    async fn create_session(&self, session: &Session) -> Result<()>;
    async fn session(&self, id: &str) -> Result<Option<Session>>;
    async fn delete_session(&self, id: &str) -> Result<()>;

    async fn create_api_key(&self, key: &ApiKey) -> Result<()>;
    async fn api_key(&self, id: &str) -> Result<Option<ApiKey>>;
    /// The org's keys, including revoked ones, oldest first.
    async fn api_keys(&self, org: &str) -> Result<Vec<ApiKey>>;
    /// Revokes a key of this org; `NotFound` if the org has no such key.
    async fn revoke_api_key(&self, org: &str, id: &str, now: Micros) -> Result<()>;

    /// Records when sessions were last seen (sliding expiry).
    async fn touch_sessions(&self, seen: Vec<(String, Micros)>) -> Result<()>;
    /// Ends every session of a user, except `keep` (the caller's own, after a password change).
    async fn delete_user_sessions(&self, user_id: &str, keep: Option<&str>) -> Result<()>;
    /// Records when API keys were last used.
    async fn touch_api_keys(&self, used: Vec<(String, Micros)>) -> Result<()>;
    async fn set_password(&self, user_id: &str, password_hash: &str) -> Result<()>;

    async fn roles(&self, org: &str) -> Result<Vec<Role>>;
    /// Creates a custom role; `Conflict` if the name is taken.
    async fn create_role(&self, org: &str, role: &Role) -> Result<()>;
    /// Replaces name, description and permissions of a custom role.
    async fn update_role(&self, org: &str, role: &Role) -> Result<()>;
    /// Deletes a custom role and takes it from every group.
    async fn delete_role(&self, org: &str, id: &str) -> Result<()>;

    async fn groups(&self, org: &str) -> Result<Vec<Group>>;
    async fn create_group(&self, org: &str, group: &Group) -> Result<()>;
    async fn update_group(&self, org: &str, id: &str, name: &str, description: &str) -> Result<()>;
    async fn delete_group(&self, org: &str, id: &str) -> Result<()>;
    /// Adds (`present`) or removes a role of a group; idempotent. `NotFound` for an unknown group or role.
    async fn set_group_role(&self, org: &str, group: &str, role: &str, present: bool) -> Result<()>;
    /// Adds or removes a member of a group; idempotent. `NotFound` for an unknown group or user.
    async fn set_group_member(&self, org: &str, group: &str, user_id: &str, present: bool) -> Result<()>;
    /// Puts a user in (`true`) or takes them out of each group, in one step, whether or not they are a
    /// member yet: an identity provider's group map, the other way (besides an invitation) into an
    /// org. Groups that no longer exist are skipped; `Conflict` (and nothing changed) when it would
    /// leave the org without an administrator.
    async fn sync_groups(&self, org: &str, user_id: &str, groups: &[(String, bool)]) -> Result<()>;
    /// Members of an org with the ids of their groups there.
    async fn org_users(&self, org: &str) -> Result<Vec<(User, Vec<String>)>>;
    /// Takes a user out of every group of the org.
    async fn remove_org_user(&self, org: &str, user_id: &str) -> Result<()>;

    async fn create_invitation(&self, invitation: &Invitation) -> Result<()>;
    async fn invitation(&self, id: &str) -> Result<Option<Invitation>>;
    /// The org's invitations, newest first.
    async fn invitations(&self, org: &str) -> Result<Vec<Invitation>>;
    async fn revoke_invitation(&self, org: &str, id: &str, now: Micros) -> Result<()>;
    /// Marks the invitation used and puts the user in its groups, atomically; `Conflict` if it was
    /// already used or revoked.
    async fn accept_invitation(&self, id: &str, user_id: &str, now: Micros) -> Result<()>;

    // --- exports --------------------------------------------------------------------------------

    async fn create_export(&self, export: &Export) -> Result<()>;
    async fn export(&self, org: &str, id: &str) -> Result<Option<Export>>;
    /// The org's exports, newest first.
    async fn exports(&self, org: &str) -> Result<Vec<Export>>;
    /// Takes a pending export and marks it running, atomically, so two workers (or two nodes) never
    /// run the same export. Fair across orgs: an org with `max_running_per_org` exports running is
    /// skipped, and among the rest the org with the fewest running goes first (then the oldest
    /// export), so one org's queue never makes another's wait behind it.
    async fn claim_export(&self, now: Micros, max_running_per_org: usize) -> Result<Option<Export>>;
    /// Writes an export's status and results.
    async fn update_export(&self, export: &Export) -> Result<()>;
    /// Puts exports left running by a stopped server back to pending; returns how many.
    async fn requeue_running_exports(&self) -> Result<u64>;
    /// Completed exports whose files are due for deletion.
    async fn expired_exports(&self, now: Micros) -> Result<Vec<Export>>;

    // --- events ---------------------------------------------------------------------------------

    /// Appends validated events to an org's log, in order, and returns once they are durable.
    /// An event whose `id` the org already has is not stored again: answered `Duplicate` when its
    /// content is the same, `Conflict` when it is not.
    /// Events without an `id` get a minted one; without a `time`, `received_at`.
    async fn append(&self, org: &str, events: Vec<NewEvent>, received_at: Micros) -> Result<Vec<Appended>>;

    /// Events matching `q.filter`, newest first, at most `q.limit`, continuing after `q.cursor`.
    async fn query(&self, org: &str, q: &Query) -> Result<Page>;

    /// The same page as [`Store::query`], with the events' canonical bytes undecoded.
    async fn query_raw(&self, org: &str, q: &Query) -> Result<RawPage> {
        let page = self.query(org, q).await?;
        let records = page
            .records
            .into_iter()
            .map(|r| RawRecord { time: r.event.time, seq: r.event.seq, bytes: r.bytes })
            .collect();
        Ok(RawPage { records, next: page.next })
    }

    /// One event by its id.
    async fn event(&self, org: &str, id: &str) -> Result<Option<Record>>;

    /// The org's hot events with `seq` after `after` (exclusive; all from the start when `None`), in
    /// `seq` order, at most `limit`: how followers such as the file sink read the log. Archived events
    /// are skipped.
    async fn events_after(&self, org: &str, after: Option<u64>, limit: usize) -> Result<Vec<RawRecord>>;

    /// Counts of matching events per bucket of `width` starting at `filter.from`; empty buckets omitted.
    async fn histogram(&self, org: &str, filter: &Filter, width: Micros) -> Result<Vec<Bucket>>;

    /// The number of events in the org's log (the next `seq`).
    async fn tree_size(&self, org: &str) -> Result<u64>;

    /// The first seq from which `source: "trail"` in the org's log is Trail's own record: events
    /// before it were stored by a release whose ingest accepted that source from anyone. 0 for
    /// every org created since.
    async fn self_audit_from(&self, org: &str) -> Result<u64>;

    /// Every org's slug and log size, by slug, in one read (for tasks that follow every log, such as
    /// the `audit.log` sink, which asks several times a second).
    async fn tree_sizes(&self) -> Result<Vec<(String, u64)>>;

    /// Events stored but not yet in the backend's full-text index, over every org. Searches stay
    /// exact meanwhile (they read what the index lacks); this says how much they read that way. 0 for
    /// a backend that indexes inside the append.
    async fn search_index_lag(&self) -> Result<u64> {
        Ok(0)
    }

    /// Sizes, counts and pool waits for `/metrics`.
    async fn stats(&self) -> Result<StoreStats>;

    // --- integrity ------------------------------------------------------------------------------

    /// The Merkle root of the org's first `size` events; `OutOfRange` beyond the log.
    async fn root(&self, org: &str, size: u64) -> Result<trail_merkle::Hash>;
    /// RFC 9162 inclusion proof of `seq` in the tree of `size` events.
    async fn inclusion_proof(&self, org: &str, seq: u64, size: u64) -> Result<Vec<trail_merkle::Hash>>;
    /// RFC 9162 consistency proof between the trees of `from` and `to` events.
    async fn consistency_proof(&self, org: &str, from: u64, to: u64) -> Result<Vec<trail_merkle::Hash>>;
    /// Stores a signed checkpoint; idempotent for the same root, `Conflict` for another root.
    async fn add_checkpoint(&self, org: &str, checkpoint: &StoredCheckpoint) -> Result<()>;
    async fn latest_checkpoint(&self, org: &str) -> Result<Option<StoredCheckpoint>>;
    /// Every checkpoint of the org, smallest first.
    async fn checkpoints(&self, org: &str) -> Result<Vec<StoredCheckpoint>>;
    /// Orgs whose log has grown since their latest checkpoint, with the current size.
    async fn unsigned_heads(&self) -> Result<Vec<(String, u64)>>;

    // --- retention -------------------------------------------------------------------------------

    /// The org's retention settings, `None` until an administrator first changes them (the server's
    /// defaults apply).
    async fn org_settings(&self, org: &str) -> Result<Option<OrgSettings>>;
    async fn set_org_settings(&self, org: &str, settings: &OrgSettings) -> Result<()>;
    /// The UTC months (`YYYYMM`) that hold hot events of the org, oldest first.
    async fn event_months(&self, org: &str) -> Result<Vec<u32>>;
    /// The org's hot events whose `time` lies in `month`, in `seq` order, after `after` (exclusive),
    /// at most `limit`, with their canonical bytes.
    async fn month_events(
        &self,
        org: &str,
        month: u32,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<RawRecord>>;
    /// Removes the org's events of `month` from the hot store once they are archived, atomically:
    /// their leaf hashes are kept (proofs and verification of what remains need them), their ids are
    /// forgotten, and the month's partition is dropped whole when no org has events left in it.
    /// `Conflict` (and nothing removed) unless the month holds exactly `expect` (count and last seq),
    /// so an event that arrived after the archive was written is never removed unarchived.
    async fn prune_month(&self, org: &str, month: u32, expect: MonthSummary) -> Result<()>;
    /// The leaf hashes kept for pruned events of the org with `seq` in `[from, to)`, in `seq` order.
    async fn pruned_leaves(&self, org: &str, from: u64, to: u64) -> Result<Vec<(u64, trail_merkle::Hash)>>;

    // --- streaming destinations ------------------------------------------------------------------

    /// The streaming destinations of an org, or of every org with `None`, oldest first.
    async fn destinations(&self, org: Option<&str>) -> Result<Vec<Destination>>;
    /// Creates the destination with its progress, or replaces an existing one's configuration, secret
    /// and `updated_at` (its progress is kept: see [`Store::set_destination_progress`]).
    async fn put_destination(&self, destination: &Destination) -> Result<()>;
    /// `NotFound` when the org has no such destination.
    async fn delete_destination(&self, org: &str, id: &str) -> Result<()>;
    /// Records how far delivery got. `NotFound` when the destination was deleted meanwhile.
    async fn set_destination_progress(
        &self,
        org: &str,
        id: &str,
        progress: &DestinationProgress,
    ) -> Result<()>;
    /// Takes or renews the right to deliver to a destination until `until`, for the process `owner`:
    /// granted when nobody holds it, `owner` does, or the holder's lease ran out before `now`. Several
    /// servers on one database thus never deliver the same destination at once.
    async fn lease_destination(
        &self,
        org: &str,
        id: &str,
        owner: &str,
        now: Micros,
        until: Micros,
    ) -> Result<bool>;

    // --- documents -------------------------------------------------------------------------------

    /// An org's documents of one kind (or of every org with `None`), by id descending, at most `limit`,
    /// those with an id below `before` when given.
    async fn documents(
        &self,
        org: Option<&str>,
        kind: &str,
        limit: usize,
        before: Option<&str>,
    ) -> Result<Vec<Document>>;
    /// One document of an org, if there is one.
    async fn document(&self, org: &str, kind: &str, id: &str) -> Result<Option<Document>>;
    /// Writes a document. With `create_only`, an existing one is kept and `false` answered (so a
    /// deterministic id makes a write happen once); otherwise it is replaced.
    async fn put_document(&self, document: &Document, create_only: bool) -> Result<bool>;
    /// `NotFound` when there is no such document.
    async fn delete_document(&self, org: &str, kind: &str, id: &str) -> Result<()>;

    // --- user documents ----------------------------------------------------------------------------

    /// A user's JSON document of one kind (their second factor, …) and when it was written.
    async fn user_document(&self, user_id: &str, kind: &str) -> Result<Option<(serde_json::Value, Micros)>>;
    /// Writes (replaces) a user's document, or removes it with `None`.
    async fn set_user_document(
        &self,
        user_id: &str,
        kind: &str,
        body: Option<&serde_json::Value>,
        now: Micros,
    ) -> Result<()>;

    /// Whether the store can serve reads and take writes.
    async fn ready(&self) -> Result<()>;
}

/// A JSON document of an org that the server types: a saved search, an alert rule, an alert's firing,
/// an evaluator's position. The store keeps it whole and orders documents of a kind by id.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub org: String,
    pub kind: String,
    pub id: String,
    pub body: serde_json::Value,
    pub updated_at: Micros,
}

/// Where an org's log is streamed (a SIEM's webhook, syslog collector or HTTP Event Collector) and how
/// far delivery got. The store keeps the server's configuration whole, as JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct Destination {
    pub org: String,
    pub id: String,
    /// The server's typed configuration (kind, endpoint, format, filters).
    pub config: serde_json::Value,
    /// The destination's secret (a webhook's signing key, a collector's token), sealed by the server.
    pub sealed_secret: Option<Vec<u8>>,
    pub created_by: String,
    pub created_at: Micros,
    pub updated_at: Micros,
    pub progress: DestinationProgress,
}

/// How far a destination's delivery got.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DestinationProgress {
    /// The next seq to deliver: every event below it was acknowledged by the receiver or filtered out.
    pub cursor: u64,
    /// `active`, `failing` or `paused`.
    pub state: String,
    /// Why the last attempt failed, or why delivery is paused.
    pub error: Option<String>,
    /// When the current run of failures began.
    pub failing_since: Option<Micros>,
    /// When a receiver last acknowledged a batch.
    pub delivered_at: Option<Micros>,
    /// Events acknowledged since the destination was created.
    pub delivered: u64,
}

/// An org's retention settings (PRODUCT.md §8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgSettings {
    /// Days events stay queryable.
    pub hot_days: u32,
    /// Days archived events are kept after leaving the hot store.
    pub archive_days: u32,
    /// While set, nothing of the org is deleted (archiving still happens).
    pub legal_hold: bool,
    pub legal_hold_reason: Option<String>,
    /// Whether reads of the log (searches, event views, API keys' reads) are recorded in it.
    pub read_audit: bool,
    /// The time range the console's Audit Logs page opens with (`24h`, `30d`, …); `None`: 24 hours.
    pub default_range: Option<String>,
    pub updated_at: Micros,
    pub updated_by: Option<String>,
}

/// What an archived month held: checked again before the hot copy is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MonthSummary {
    pub count: u64,
    pub last_seq: u64,
}

#[cfg(test)]
mod tests {
    use super::gaps;

    #[test]
    fn gaps_are_the_units_not_covered() {
        assert_eq!(gaps(&[], 3, 9), [(3, 9)]);
        assert_eq!(gaps(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 3, 9), []);
        assert_eq!(gaps(&[0, 4, 5, 8, 12], 3, 9), [(3, 4), (6, 8)]);
        assert_eq!(gaps(&[3, 8], 3, 9), [(4, 8)]);
        assert_eq!(gaps(&[9, 10], 3, 9), [(3, 9)]);
        assert_eq!(gaps(&[5], 5, 5), []);
    }
}
