//! The single writer thread: every write goes through it, and appends from many requests are committed
//! together (group commit) so one fsync acknowledges a whole group.
//!
//! Each job runs inside its own SAVEPOINT so one failing job (an unknown org, a taken email) does not
//! undo its neighbours; replies are sent only after the group's COMMIT returned, i.e. after the WAL was
//! fsynced. If COMMIT fails, every job of the group is answered with the error and the in-memory
//! caches are reloaded from the database, so nothing acknowledged is ever lost or half-written.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, mpsc};

use rusqlite::{Connection, OptionalExtension, params};
use trail_model::query::CountedField;
use trail_model::time::{Micros, month_of};
use trail_model::{NewEvent, Outcome, StoredEvent, canonical};
use trail_store::{Appended, Result, StoreError, mint_event_id};

use trail_merkle::{Frontier, Hash, leaf_hash};

use crate::integrity::Nodes;
use crate::schema::{self, MIN_STORED_LEVEL, events_table, rowid};
use crate::{body, ids, space};
use crate::{classify, sql_error};

/// A unit of work for the writer thread.
pub trait Job: Send {
    /// Runs inside the group's transaction; returns whether it succeeded and how to reply after COMMIT.
    fn run(self: Box<Self>, w: &mut Writer) -> (bool, Finish);
    /// Answers without running, when no transaction could be started.
    fn fail(self: Box<Self>, message: &str);
    /// Whether the job runs in its own SAVEPOINT, so its failure is rolled back alone. Jobs without
    /// one must fail before writing anything, or their failure rolls back the whole group.
    fn savepoint(&self) -> bool;
}

/// Called with the outcome of the COMMIT that covered the job.
/// An event's interned values of each [`CountedField`], in [`CountedField::ALL`]'s order.
type Counted = [Option<i64>; 4];
/// [`CountedField::TargetType`]'s code.
const TARGET_TYPE: i16 = 1;
/// An append's events and failures per (slot, field code, interned value).
type FieldCounts = std::collections::BTreeMap<(i64, i16, i64), (i64, i64)>;

pub type Finish = Box<dyn FnOnce(std::result::Result<(), &str>) + Send>;

/// A closure and the channel its caller awaits.
pub struct Task<F, T> {
    pub f: F,
    pub reply: tokio::sync::oneshot::Sender<Result<T>>,
    pub savepoint: bool,
}

impl<F, T> Job for Task<F, T>
where
    F: FnOnce(&mut Writer) -> Result<T> + Send,
    T: Send + 'static,
{
    fn run(self: Box<Self>, w: &mut Writer) -> (bool, Finish) {
        let result = (self.f)(w);
        let reply = self.reply;
        let ok = result.is_ok();
        let finish: Finish = Box::new(move |commit| {
            let answer = match (commit, result) {
                (Ok(()), r) | (Err(_), r @ Err(_)) => r,
                (Err(msg), Ok(_)) => Err(StoreError::Unavailable(msg.to_string())),
            };
            // The caller may have gone away (client disconnected); the write stands either way.
            let _ = reply.send(answer);
        });
        (ok, finish)
    }

    fn fail(self: Box<Self>, message: &str) {
        let _ = self.reply.send(Err(StoreError::Unavailable(message.to_string())));
    }

    fn savepoint(&self) -> bool {
        self.savepoint
    }
}

/// An event made ready for the writer on the caller's thread: everything that does not depend on the
/// log head is computed before the writer sees it, so the single writer thread only checks for a
/// duplicate, stamps `seq` into the bytes and inserts. (Its searchable text is indexed later, by
/// [`crate::index`].)
#[derive(Debug)]
pub struct Prepared {
    id: String,
    time: Micros,
    /// Whether the client gave `time` (else it is `received_at`), for telling a retry from a conflict.
    time_given: bool,
    month: u32,
    /// Canonical bytes with `seq` 0, stamped by the writer.
    body: Vec<u8>,
    /// The same bytes packed against the store's dictionary, when it has one (see [`crate::body`]).
    packed: Option<Vec<u8>>,
    actor: String,
    action: String,
    target_type: String,
    target_id: Option<String>,
    project: Option<String>,
    source: Option<String>,
    failure: bool,
}

impl Prepared {
    pub fn new(org: &str, e: NewEvent, received_at: Micros, dict: Option<&body::Dict>) -> Self {
        let id = e.id.clone().unwrap_or_else(mint_event_id);
        let time_given = e.time.is_some();
        let s = StoredEvent::accept(e, org, 0, id, received_at);
        let body = canonical::encode(&s);
        Self {
            time_given,
            packed: dict.map(|d| body::pack(d, &body)),
            time: s.time,
            month: month_of(s.time),
            body,
            failure: s.outcome == Outcome::Failure,
            id: s.id,
            actor: s.actor.id,
            action: s.action,
            target_type: s.target.kind,
            target_id: s.target.id,
            project: s.project,
            source: s.source,
        }
    }
}

/// Most jobs committed together: bounds latency of the first job in a group.
const MAX_GROUP_JOBS: usize = 256;

/// The writer's connection and the caches only it may change.
#[derive(Debug)]
pub struct Writer {
    pub conn: Connection,
    /// slug → (org id, tree size)
    orgs: HashMap<String, (i64, u64)>,
    dict: HashMap<String, i64>,
    partitions: HashSet<u32>,
    /// org id → the right edge of its Merkle tree, to hash each append in O(log n).
    frontiers: HashMap<i64, Frontier>,
    /// Whether the current savepoint-less job has written anything.
    dirty: bool,
    /// Whether the current group appended events (the indexer is woken after its COMMIT).
    appended: bool,
    /// Events the current group created: the id map's upkeep does work in proportion.
    created: usize,
    /// What the id map's tail holds, as far as this writer knows, and the merge rows earned by
    /// groups since the last step (see [`ids::upkeep`]).
    id_tail: Option<i64>,
    id_credit: usize,
    /// Wakes the full-text indexer.
    wake: mpsc::SyncSender<()>,
    /// The id map's runs as this connection last read them, and every connection's filters.
    runs: ids::Runs,
    filters: Arc<ids::Filters>,
    /// The dictionary appends pack with; while the store has none (`sample` is `Some`), bodies
    /// sampled to make it, and one made in the current group (published after its COMMIT).
    body_dict: Arc<body::Current>,
    sample: Option<Vec<Vec<u8>>>,
    made: Option<Arc<body::Dict>>,
    /// Ten-minute slots this writer knows are not dense, with their events, so that an append that
    /// leaves such a slot sparse asks the database nothing: in a sparse org nearly every event is
    /// alone in its slot.
    ///
    /// Only a hint: a slot is marked dense from the database's own counts, so an entry that counts too
    /// few events costs a slot left uncounted a little longer (histograms count its few rows), never a
    /// wrong count. Dense slots are not remembered: whether a slot is dense decides what is counted,
    /// and retention (in any process) may forget a dense slot. Entries are dropped whenever the
    /// writer's view may be stale: after a rollback, and when another process appended to the org
    /// (whose appends may have made a slot dense).
    sparse: HashMap<(i64, i64), i64>,
    /// Gives the file's free pages back between groups (after retention, a migration, or when a
    /// periodic look finds many).
    pub reclaim: space::Reclaim,
}

/// Slots a writer remembers before it forgets them all (a few MB; an import of old events in random
/// time order touches many).
const MAX_SPARSE_KNOWN: usize = 100_000;

impl Writer {
    pub fn new(
        conn: Connection,
        wake: mpsc::SyncSender<()>,
        filters: Arc<ids::Filters>,
        body_dict: Arc<body::Current>,
    ) -> rusqlite::Result<Self> {
        let newest = body::newest(&conn)?;
        let sample = newest.is_none().then(Vec::new);
        let reclaim = space::Reclaim::new(&conn, true)?;
        if let Some(d) = newest {
            body_dict.set(d);
        }
        let mut w = Self {
            conn,
            orgs: HashMap::new(),
            dict: HashMap::new(),
            partitions: HashSet::new(),
            frontiers: HashMap::new(),
            dirty: false,
            appended: false,
            created: 0,
            id_tail: None,
            id_credit: 0,
            wake,
            runs: ids::Runs::default(),
            filters,
            body_dict,
            sample,
            made: None,
            sparse: HashMap::new(),
            reclaim,
        };
        w.reload()?;
        Ok(w)
    }

    /// Re-reads every cache from the database (after a rollback).
    fn reload(&mut self) -> rusqlite::Result<()> {
        self.orgs.clear();
        self.sparse.clear();
        self.dict.clear();
        self.partitions.clear();
        let mut st = self.conn.prepare("SELECT slug, id, tree_size FROM orgs")?;
        let rows = st.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, (r.get::<_, i64>(1)?, r.get::<_, i64>(2)? as u64)))
        })?;
        for row in rows {
            let (slug, v) = row?;
            self.orgs.insert(slug, v);
        }
        let mut st = self.conn.prepare("SELECT month FROM partitions")?;
        for m in st.query_map([], |r| r.get::<_, u32>(0))? {
            self.partitions.insert(m?);
        }
        drop(st);
        self.frontiers.clear();
        for (id, size) in self.orgs.values() {
            let nodes = Nodes::new(&self.conn, *id).map_err(store_to_sql)?;
            let frontier = Frontier::from_source(*size, &nodes).map_err(store_to_sql)?;
            self.frontiers.insert(*id, frontier);
        }
        Ok(())
    }

    pub fn org_id(&self, slug: &str) -> Result<i64> {
        self.orgs.get(slug).map(|o| o.0).ok_or_else(|| StoreError::NotFound(format!("organization {slug}")))
    }

    /// Registers an org created in this transaction.
    pub fn add_org(&mut self, slug: &str, id: i64) {
        self.orgs.insert(slug.to_string(), (id, 0));
        self.frontiers.insert(id, Frontier::new());
    }

    fn intern(&mut self, value: &str) -> rusqlite::Result<i64> {
        if let Some(id) = self.dict.get(value) {
            return Ok(*id);
        }
        let mut st =
            self.conn.prepare_cached("INSERT INTO dict(value) VALUES (?1) ON CONFLICT(value) DO NOTHING")?;
        st.execute([value])?;
        let id = self
            .conn
            .prepare_cached("SELECT id FROM dict WHERE value = ?1")?
            .query_row([value], |r| r.get(0))?;
        if self.dict.len() > 1_000_000 {
            self.dict.clear();
        }
        self.dict.insert(value.to_string(), id);
        Ok(id)
    }

    fn intern_opt(&mut self, value: Option<&str>) -> rusqlite::Result<Option<i64>> {
        value.map(|v| self.intern(v)).transpose()
    }

    /// Re-reads an org's log head when another process (`trail import --data-dir`, `trail admin
    /// create-org`) changed it since this writer cached it. Inside the write transaction, so the head
    /// cannot move again before this append commits. One point read per append job.
    fn sync_head(&mut self, org: &str) -> Result<()> {
        let stored: Option<(i64, i64)> = self
            .conn
            .prepare_cached("SELECT id, tree_size FROM orgs WHERE slug = ?1")
            .and_then(|mut st| st.query_row([org], |r| Ok((r.get(0)?, r.get(1)?))).optional())
            .map_err(sql_error)?;
        let Some((id, size)) = stored else {
            return Err(StoreError::NotFound(format!("organization {org}")));
        };
        if self.orgs.get(org) == Some(&(id, size as u64)) {
            return Ok(());
        }
        tracing::debug!(org, size, "log head changed outside this process; reloading it");
        self.sparse.retain(|&(o, _), _| o != id);
        self.orgs.insert(org.to_string(), (id, size as u64));
        let frontier = Frontier::from_source(size as u64, &Nodes::new(&self.conn, id)?)?;
        self.frontiers.insert(id, frontier);
        self.partitions.clear();
        let mut st = self.conn.prepare("SELECT month FROM partitions").map_err(sql_error)?;
        let months = st.query_map([], |r| r.get::<_, u32>(0)).map_err(sql_error)?;
        for m in months {
            self.partitions.insert(m.map_err(sql_error)?);
        }
        Ok(())
    }

    /// A month partition dropped in this transaction (retention).
    pub fn forget_partition(&mut self, month: u32) {
        self.partitions.remove(&month);
    }

    fn ensure_partition(&mut self, month: u32) -> rusqlite::Result<()> {
        if self.partitions.insert(month) {
            schema::create_partition(&self.conn, month)?;
        }
        Ok(())
    }

    /// Appends prepared events to an org's log inside the current transaction.
    pub fn append(&mut self, org: &str, events: Vec<Prepared>) -> Result<Vec<Appended>> {
        // Fails before writing anything, so appends need no savepoint.
        self.sync_head(org)?;
        let (org_id, mut size) =
            *self.orgs.get(org).ok_or_else(|| StoreError::NotFound(format!("organization {org}")))?;
        self.runs.refresh(&self.conn, &self.filters).map_err(sql_error)?;
        self.dirty = true;
        self.appended = true;
        let mut out = Vec::with_capacity(events.len());
        // Per-minute counts of what this append creates, for histograms (a batch spans few minutes).
        let mut minutes = std::collections::BTreeMap::<i64, (i64, i64)>::new();
        let mut slots = std::collections::BTreeMap::<(i64, i64), (i64, i64)>::new();
        let mut fields = FieldCounts::new();
        let mut blocks = std::collections::BTreeMap::<i64, (i64, i64)>::new();
        for mut e in events {
            // An id whose event is still stored is a duplicate or a conflict. The map answers every
            // entry of the id's hash: retention leaves stale entries, and two ids may share a hash.
            if let Some((seq, stored)) = self.earlier(org_id, &e.id)? {
                let same = canonical::same_content(&stored, &e.body, e.time_given)
                    .map_err(|err| StoreError::Corrupt(format!("the stored event at seq {seq}: {err}")))?;
                out.push(if same {
                    Appended::Duplicate { id: e.id, seq }
                } else {
                    Appended::Conflict { id: e.id, seq }
                });
                continue;
            }
            ids::insert(&self.conn, org_id, &e.id, size, e.month).map_err(sql_error)?;
            self.created += 1;
            if let Some(sample) = &mut self.sample
                && sample.len() < body::SAMPLE
            {
                sample.push(e.body.clone());
            }
            canonical::set_seq(&mut e.body, size).map_err(|err| StoreError::Internal(err.to_string()))?;
            let leaf = leaf_hash(&e.body);
            let (action, counted) = self.insert(org_id, size, &e, &leaf).map_err(sql_error)?;
            let completed = self
                .frontiers
                .get_mut(&org_id)
                .ok_or_else(|| StoreError::Internal(format!("no Merkle frontier for {org}")))?
                .append(leaf);
            for n in completed.iter().filter(|n| n.level >= MIN_STORED_LEVEL) {
                self.conn
                    .prepare_cached(
                        "INSERT INTO tree_nodes(org_id, level, idx, hash) VALUES (?1, ?2, ?3, ?4)",
                    )
                    .and_then(|mut st| st.execute(params![org_id, n.level, n.index as i64, &n.hash[..]]))
                    .map_err(sql_error)?;
            }
            let block = blocks.entry(schema::key_block(rowid(org_id, size))).or_insert((e.time, e.time));
            *block = (block.0.min(e.time), block.1.max(e.time));
            let minute = minutes.entry(schema::minute_of(e.time)).or_default();
            *minute = (minute.0 + 1, minute.1 + i64::from(e.failure));
            let slot = schema::slot_of(e.time);
            let by_action = slots.entry((action, slot)).or_default();
            *by_action = (by_action.0 + 1, by_action.1 + i64::from(e.failure));
            for (field, value) in CountedField::ALL.into_iter().zip(counted) {
                if let Some(value) = value {
                    let by_value = fields.entry((slot, field.code(), value)).or_default();
                    *by_value = (by_value.0 + 1, by_value.1 + i64::from(e.failure));
                }
            }
            out.push(Appended::Created { id: e.id, seq: size });
            size += 1;
            // Keep the cache in step so a duplicate later in the same batch is found by the query above.
            if let Some(head) = self.orgs.get_mut(org) {
                head.1 = size;
            }
        }
        for (minute, (n, failures)) in minutes {
            self.conn
                .prepare_cached(
                    "INSERT INTO minute_counts(org_id, minute, n, failures) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(org_id, minute) DO UPDATE
                     SET n = n + excluded.n, failures = failures + excluded.failures",
                )
                .and_then(|mut st| st.execute(params![org_id, minute, n, failures]))
                .map_err(sql_error)?;
        }
        for ((action, slot), (n, failures)) in slots {
            self.conn
                .prepare_cached(
                    "INSERT INTO action_slots(org_id, action, slot, n, failures) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT(org_id, action, slot) DO UPDATE
                     SET n = n + excluded.n, failures = failures + excluded.failures",
                )
                .and_then(|mut st| st.execute(params![org_id, action, slot, n, failures]))
                .map_err(sql_error)?;
        }
        self.count_fields(org_id, &fields).map_err(sql_error)?;
        for (b, (lo, hi)) in blocks {
            self.conn
                .prepare_cached(
                    "INSERT INTO key_blocks(b, lo, hi) VALUES (?1, ?2, ?3)
                     ON CONFLICT(b) DO UPDATE SET lo = min(lo, excluded.lo), hi = max(hi, excluded.hi)",
                )
                .and_then(|mut st| st.execute(params![b, lo, hi]))
                .map_err(sql_error)?;
        }
        // The log head is written with every job, so a later job's rollback can re-read it.
        self.conn
            .prepare_cached("UPDATE orgs SET tree_size = ?1 WHERE id = ?2")
            .and_then(|mut st| st.execute(params![size as i64, org_id]))
            .map_err(sql_error)?;
        Ok(out)
    }

    /// The stored event that took `id` in the org, if one is still stored: `(seq, canonical bytes)`.
    fn earlier(&self, org_id: i64, id: &str) -> Result<Option<(u64, Vec<u8>)>> {
        for (seq, month) in ids::find(&self.conn, &self.runs, org_id, id).map_err(sql_error)? {
            if let Some(stored) = self.stored(org_id, seq, month)? {
                let stored_id = canonical::id_of(&stored)
                    .map_err(|err| StoreError::Corrupt(format!("the stored event at seq {seq}: {err}")))?;
                if stored_id == id {
                    return Ok(Some((seq, stored)));
                }
            }
        }
        Ok(None)
    }

    /// The canonical bytes of the event at `seq` (in `month`'s partition), if it is still stored.
    fn stored(&self, org_id: i64, seq: u64, month: u32) -> Result<Option<Vec<u8>>> {
        if !self.partitions.contains(&month) {
            return Ok(None);
        }
        let packed: Option<Vec<u8>> = self
            .conn
            .prepare_cached(&format!("SELECT body FROM {} WHERE k = ?1", events_table(month)))
            .and_then(|mut st| st.query_row([rowid(org_id, seq)], |r| r.get(0)).optional())
            .map_err(sql_error)?;
        packed.map(|b| body::unpack(&self.conn, b, seq)).transpose()
    }

    /// Makes the store's first body dictionary once enough bodies were sampled (in its own savepoint;
    /// published after the group's COMMIT).
    fn make_dict(&mut self) {
        let Some(sample) = &self.sample else {
            return;
        };
        if sample.len() < body::SAMPLE || self.made.is_some() {
            return;
        }
        let made = self.conn.execute_batch("SAVEPOINT dict").and_then(|()| {
            match body::make(&self.conn, sample, trail_model::time::now()) {
                Ok(d) => self.conn.execute_batch("RELEASE dict").map(|()| d),
                Err(e) => {
                    self.conn.execute_batch("ROLLBACK TO dict; RELEASE dict")?;
                    Err(e)
                }
            }
        });
        match made {
            Ok(d) => self.made = Some(d),
            Err(e) => {
                tracing::error!(error = %e, "cannot make the body dictionary; bodies stay uncompressed")
            }
        }
    }

    /// After a COMMIT: a dictionary made in it is what appends pack with from now on.
    fn committed(&mut self, ok: bool) {
        if let Some(d) = self.made.take()
            && ok
        {
            tracing::info!(
                dictionary = d.id,
                bytes = d.bytes.len(),
                "event bodies are compressed from now on"
            );
            self.body_dict.set(d);
            self.sample = None;
        }
    }

    /// The id map's upkeep for the group's appends, in its own savepoint: a failure is logged and
    /// undone without failing the appends (the map stays correct, only not yet compacted).
    fn id_map_upkeep(&mut self) {
        let created = std::mem::take(&mut self.created);
        if created == 0 {
            return;
        }
        let step = |conn: &Connection, tail: &mut Option<i64>, credit: &mut usize| -> rusqlite::Result<()> {
            conn.execute_batch("SAVEPOINT ids")?;
            match ids::upkeep(conn, &ids::TUNING, created, tail, credit) {
                Ok(()) => conn.execute_batch("RELEASE ids"),
                Err(e) => {
                    conn.execute_batch("ROLLBACK TO ids; RELEASE ids")?;
                    Err(e)
                }
            }
        };
        if let Err(e) = step(&self.conn, &mut self.id_tail, &mut self.id_credit) {
            self.id_tail = None;
            tracing::error!(error = %e, "the id map's upkeep failed; it is retried with the next appends");
        }
    }

    /// Inserts an event's row; answers its action's dictionary id.
    /// Inserts one event's row; returns its interned action and [`Counted`] values.
    fn insert(
        &mut self,
        org_id: i64,
        seq: u64,
        e: &Prepared,
        leaf: &Hash,
    ) -> rusqlite::Result<(i64, Counted)> {
        self.ensure_partition(e.month)?;
        let k = rowid(org_id, seq);
        let actor = self.intern(&e.actor)?;
        let action = self.intern(&e.action)?;
        let ttype = self.intern(&e.target_type)?;
        let tid = self.intern_opt(e.target_id.as_deref())?;
        let project = self.intern_opt(e.project.as_deref())?;
        let source = self.intern_opt(e.source.as_deref())?;
        self.conn
            .prepare_cached(&format!(
                "INSERT INTO {}(k, org, ts, actor, action, ttype, tid, project, outcome, source, body, leaf)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                events_table(e.month)
            ))?
            .execute(params![
                k,
                org_id,
                e.time,
                actor,
                action,
                ttype,
                tid,
                project,
                e.failure,
                source,
                e.packed.as_ref().unwrap_or(&e.body),
                &leaf[..schema::LEAF_CHECK]
            ])?;
        Ok((action, [Some(actor), Some(ttype), project, source]))
    }

    /// Keeps `field_slots` for the ten minutes this append touched, after its events and their
    /// `minute_counts` are written: a slot already dense adds the append's counts; a slot the append
    /// made dense ([`schema::DENSE_SLOT`] events) is counted from its rows, this append's included;
    /// any other slot stays uncounted (a histogram counts its few rows).
    fn count_fields(&mut self, org_id: i64, fields: &FieldCounts) -> rusqlite::Result<()> {
        let mut slots: Vec<i64> = fields.keys().map(|&(slot, ..)| slot).collect();
        slots.dedup();
        debug_assert_eq!(CountedField::TargetType.code(), TARGET_TYPE);
        if self.sparse.len() > MAX_SPARSE_KNOWN {
            self.sparse.clear();
        }
        for slot in slots {
            let mine = fields.range((slot, i16::MIN, i64::MIN)..=(slot, i16::MAX, i64::MAX));
            // Every event has a target type: their counts sum to the append's events in the slot.
            let appended: i64 = mine.clone().filter(|(k, _)| k.1 == TARGET_TYPE).map(|(_, v)| v.0).sum();
            if let Some(before) = self.sparse.get_mut(&(org_id, slot))
                && *before + appended < schema::DENSE_SLOT
            {
                *before += appended;
                continue;
            }
            // Whether the slot is dense, and its events so far (this append's included): one statement.
            let minutes = slot * 10;
            let (dense, events): (bool, i64) = self
                .conn
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM dense_slots WHERE org_id = ?1 AND slot = ?2),
                            (SELECT coalesce(sum(n), 0) FROM minute_counts
                             WHERE org_id = ?1 AND minute >= ?3 AND minute < ?4)",
                )?
                .query_row(params![org_id, slot, minutes, minutes + 10], |r| Ok((r.get(0)?, r.get(1)?)))?;
            if !dense && events < schema::DENSE_SLOT {
                self.sparse.insert((org_id, slot), events);
                continue;
            }
            self.sparse.remove(&(org_id, slot));
            if !dense {
                self.conn
                    .prepare_cached("INSERT INTO dense_slots(org_id, slot) VALUES (?1, ?2)")?
                    .execute(params![org_id, slot])?;
            }
            // A slot this append filled on its own (a bulk load in time order) is counted from the
            // append's own counts, like a dense one; one it completed is counted from its rows.
            if dense || events == appended {
                for (&(_, field, value), &(n, failures)) in mine {
                    self.conn
                        .prepare_cached(
                            "INSERT INTO field_slots(org_id, field, value, slot, n, failures) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                             ON CONFLICT(org_id, field, value, slot) DO UPDATE
                             SET n = n + excluded.n, failures = failures + excluded.failures",
                        )?
                        .execute(params![org_id, field, value, slot, n, failures])?;
                }
                continue;
            }
            let month = month_of(slot * schema::SLOT);
            for field in CountedField::ALL {
                self.conn
                    .prepare_cached(&schema::backfill_field_slots(
                        month,
                        field,
                        " AND d.org_id = ?1 AND d.slot = ?2",
                    ))?
                    .execute(params![org_id, slot])?;
            }
        }
        Ok(())
    }
}

/// The writer thread's loop: take a group of jobs, run them in one transaction, commit, reply; between
/// groups, and while waiting for one, a step of giving free pages back when one is due.
/// Returns when every sender is gone and the queue is drained.
pub fn run(mut w: Writer, jobs: mpsc::Receiver<Box<dyn Job>>) {
    loop {
        w.reclaim.step(&w.conn);
        let first = match jobs.recv_timeout(w.reclaim.wait()) {
            Ok(job) => job,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let mut group = vec![first];
        while group.len() < MAX_GROUP_JOBS {
            match jobs.try_recv() {
                Ok(j) => group.push(j),
                Err(_) => break,
            }
        }
        if let Err(e) = w.conn.execute_batch("BEGIN IMMEDIATE") {
            let msg = describe(&e);
            tracing::error!(error = %msg, "cannot begin a write transaction");
            group.into_iter().for_each(|job| job.fail(&msg));
            continue;
        }
        let mut finishers: Vec<Finish> = Vec::with_capacity(group.len());
        let mut poisoned: Option<String> = None;
        for job in group {
            if let Some(msg) = &poisoned {
                job.fail(msg);
                continue;
            }
            let (finish, poison) = run_job(&mut w, job);
            finishers.push(finish);
            poisoned = poison;
        }
        if poisoned.is_none() {
            w.id_map_upkeep();
            w.make_dict();
        }
        w.created = 0;
        let commit = match &poisoned {
            None => w.conn.execute_batch("COMMIT").map_err(|e| describe(&e)),
            Some(msg) => Err(msg.clone()),
        };
        let outcome = match commit {
            Ok(()) => Ok(()),
            Err(msg) => {
                tracing::error!(error = %msg, "write transaction failed; nothing of this group was stored");
                let _ = w.conn.execute_batch("ROLLBACK");
                if let Err(e) = w.reload() {
                    tracing::error!(error = %e, "cannot reload caches after a rollback");
                }
                Err(msg)
            }
        };
        w.committed(outcome.is_ok());
        for f in finishers {
            f(outcome.as_ref().map(|_| ()).map_err(String::as_str));
        }
        if std::mem::take(&mut w.appended) && outcome.is_ok() {
            // A full channel means the indexer has a wake-up pending already.
            let _ = w.wake.try_send(());
        }
    }
}

/// Loading a frontier reads through the store's error type; the writer's caches speak rusqlite.
fn store_to_sql(e: StoreError) -> rusqlite::Error {
    rusqlite::Error::InvalidParameterName(e.to_string())
}

fn describe(e: &rusqlite::Error) -> String {
    match classify(e) {
        StoreError::Unavailable(m) => m,
        other => other.to_string(),
    }
}

/// Runs one job, inside a savepoint when it asks for one. Returns its finisher, and a message when
/// the job failed without a savepoint after possibly writing: then the whole group must roll back.
fn run_job(w: &mut Writer, job: Box<dyn Job>) -> (Finish, Option<String>) {
    if !job.savepoint() {
        w.dirty = false;
        let (ok, finish) = job.run(w);
        return (finish, (!ok && w.dirty).then(|| "a write failed; the group was rolled back".to_string()));
    }
    if let Err(e) = w.conn.execute_batch("SAVEPOINT job") {
        let msg = describe(&e);
        job.fail(&msg);
        return (Box::new(|_| {}), None);
    }
    let (ok, finish) = job.run(w);
    let end = if ok { "RELEASE job" } else { "ROLLBACK TO job; RELEASE job" };
    if let Err(e) = w.conn.execute_batch(end) {
        tracing::error!(error = %e, "cannot end a savepoint");
    }
    if !ok && let Err(e) = w.reload() {
        tracing::error!(error = %e, "cannot reload caches after a rollback");
    }
    (finish, None)
}
