//! Streaming each org's log to its destinations (webhooks, syslog collectors, Splunk HEC): at least
//! once, in `seq` order, from a persisted cursor that never passes what the receiver acknowledged.
//!
//! [`Streams`] keeps one delivery task per destination that is not paused, restarting it when the
//! destination changes. A task holds a lease in the store (several servers on one database never
//! deliver the same destination at once) and loops: read what the latest signed checkpoint covers
//! after the cursor ([`follow`]), keep what the filter passes, send one batch, and on the receiver's
//! acknowledgement move the cursor past it. A failed send is retried with exponential backoff and
//! jitter; a destination failing for longer than `streaming.pause_after_secs` is paused with the
//! reason, until someone resumes it. Nothing here is on the ingest path: a dead receiver only makes
//! its own cursor wait.

pub mod config;
pub mod deliver;
pub mod follow;
pub mod seal;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use rand::Rng;
use trail_model::siem::{self, Batch, Skipped};
use trail_model::time::{Micros, now};
use trail_store::{Destination, DestinationProgress, Store, StoreError};

use crate::settings::StreamingSettings;
use config::{DestinationConfig, Kind, PayloadFormat};
use deliver::Transport;
use follow::Entry;

pub const ACTIVE: &str = "active";
pub const FAILING: &str = "failing";
pub const PAUSED: &str = "paused";

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const LEASE: Micros = 30_000_000;
/// How often an idle task looks for new events (the checkpointer signs every 250 ms).
const IDLE: Duration = Duration::from_millis(200);
/// How long after a syslog write the connection must still be open for the write to count.
const SYSLOG_SETTLE: Duration = Duration::from_millis(20);

/// What a running delivery task reports (the API, `/readyz` and `/metrics` read it).
#[derive(Debug, Default)]
pub struct Live {
    pub lag_events: AtomicU64,
    /// Age of the oldest event not yet acknowledged, in microseconds (0 when caught up).
    pub lag_micros: AtomicU64,
}

/// Delivery counters per destination kind (bounded labels for `/metrics`).
#[derive(Debug, Default)]
pub struct KindCounters {
    pub events: AtomicU64,
    pub batches: AtomicU64,
    pub failures: AtomicU64,
}

struct Running {
    updated_at: Micros,
    kind: Kind,
    live: Arc<Live>,
    task: tokio::task::JoinHandle<()>,
}

/// One destination as the last reconciliation saw it, for `/readyz` and `/metrics`.
#[derive(Debug, Clone)]
pub struct Seen {
    pub org: String,
    pub id: String,
    pub name: String,
    pub kind: Kind,
    pub state: String,
    pub error: Option<String>,
}

/// The streaming supervisor; see the module documentation.
pub struct Streams {
    store: Arc<dyn Store>,
    pub sealer: seal::Sealer,
    settings: StreamingSettings,
    hostname: String,
    /// This process, as lease owner.
    node: String,
    wake: tokio::sync::Notify,
    running: Mutex<HashMap<(String, String), Running>>,
    seen: Mutex<Vec<Seen>>,
    counters: [KindCounters; 3],
}

impl std::fmt::Debug for Streams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streams").field("node", &self.node).finish_non_exhaustive()
    }
}

fn kind_index(k: Kind) -> usize {
    match k {
        Kind::Webhook => 0,
        Kind::Syslog => 1,
        Kind::SplunkHec => 2,
    }
}

pub const KINDS: [Kind; 3] = [Kind::Webhook, Kind::Syslog, Kind::SplunkHec];

impl Streams {
    pub fn new(
        store: Arc<dyn Store>,
        signer: &trail_merkle::Signer,
        settings: StreamingSettings,
        hostname: &str,
        data_dir: &std::path::Path,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            sealer: seal::Sealer::new(signer),
            settings,
            hostname: hostname.to_string(),
            node: node_id(data_dir),
            wake: tokio::sync::Notify::new(),
            running: Mutex::default(),
            seen: Mutex::default(),
            counters: Default::default(),
        })
    }

    /// A destination was created or changed: reconcile now rather than at the next tick.
    pub fn changed(&self) {
        self.wake.notify_one();
    }

    /// Stops a destination's task and waits until it is gone, so a change written next cannot be
    /// overwritten by the task's own progress.
    pub async fn stop(&self, org: &str, id: &str) {
        let running = self.running.lock().ok().and_then(|mut m| m.remove(&(org.to_string(), id.to_string())));
        if let Some(r) = running {
            r.task.abort();
            let _ = r.task.await;
        }
    }

    /// The running task's lag, when there is one.
    pub fn live(&self, org: &str, id: &str) -> Option<Arc<Live>> {
        let m = self.running.lock().ok()?;
        m.get(&(org.to_string(), id.to_string())).map(|r| r.live.clone())
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn counters(&self, k: Kind) -> &KindCounters {
        &self.counters[kind_index(k)]
    }

    /// Largest lag of any running destination of a kind: (events, seconds).
    pub fn max_lag(&self, k: Kind) -> (u64, f64) {
        let Ok(m) = self.running.lock() else { return (0, 0.0) };
        m.values().filter(|r| r.kind == k).fold((0, 0.0), |(e, s), r| {
            let secs = r.live.lag_micros.load(Ordering::Relaxed) as f64 / 1e6;
            (e.max(r.live.lag_events.load(Ordering::Relaxed)), if secs > s { secs } else { s })
        })
    }

    /// Reconciles every few seconds and whenever told, until dropped; stops every task then.
    pub async fn run(self: Arc<Self>) {
        struct StopAll(Arc<Streams>);
        impl Drop for StopAll {
            fn drop(&mut self) {
                if let Ok(mut m) = self.0.running.lock() {
                    for (_, r) in m.drain() {
                        r.task.abort();
                    }
                }
            }
        }
        let _stop = StopAll(self.clone());
        loop {
            if let Err(e) = self.reconcile().await {
                tracing::warn!(error = %e, "cannot read streaming destinations; will retry");
            }
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
        }
    }

    async fn reconcile(self: &Arc<Self>) -> Result<(), StoreError> {
        let all = self.store.destinations(None).await?;
        let mut seen = Vec::with_capacity(all.len());
        let mut m = self.running.lock().map_err(|_| StoreError::Corrupt("streams lock poisoned".into()))?;
        let mut want = std::collections::HashSet::new();
        for d in all {
            let cfg: DestinationConfig = match serde_json::from_value(d.config.clone()) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(org = %d.org, destination = %d.id, error = %e, "a destination's configuration is unreadable; it is not delivered");
                    continue;
                }
            };
            let key = (d.org.clone(), d.id.clone());
            seen.push(Seen {
                org: d.org.clone(),
                id: d.id.clone(),
                name: cfg.name.clone(),
                kind: cfg.kind,
                state: d.progress.state.clone(),
                error: d.progress.error.clone(),
            });
            if d.progress.state == PAUSED {
                continue;
            }
            want.insert(key.clone());
            let current = m.get(&key).is_some_and(|r| r.updated_at == d.updated_at && !r.task.is_finished());
            if !current {
                if let Some(old) = m.remove(&key) {
                    old.task.abort();
                }
                let live = Arc::new(Live::default());
                let task = tokio::spawn(deliver_loop(self.clone(), d.clone(), cfg.clone(), live.clone()));
                m.insert(key, Running { updated_at: d.updated_at, kind: cfg.kind, live, task });
            }
        }
        m.retain(|k, r| {
            let keep = want.contains(k);
            if !keep {
                r.task.abort();
            }
            keep
        });
        drop(m);
        if let Ok(mut s) = self.seen.lock() {
            *s = seen;
        }
        Ok(())
    }

    fn note_state(&self, org: &str, id: &str, p: &DestinationProgress) {
        if let Ok(mut seen) = self.seen.lock()
            && let Some(s) = seen.iter_mut().find(|s| s.org == org && s.id == id)
        {
            s.state = p.state.clone();
            s.error = p.error.clone();
        }
    }
}

/// This server's name as lease owner: kept in `<data_dir>/node-id`, so a restarted server takes its
/// destinations back at once instead of waiting for its former self's lease to run out.
fn node_id(data_dir: &std::path::Path) -> String {
    let path = data_dir.join("node-id");
    if let Ok(id) = std::fs::read_to_string(&path)
        && !id.trim().is_empty()
    {
        return id.trim().to_string();
    }
    let id = uuid::Uuid::now_v7().to_string();
    if let Err(e) = std::fs::write(&path, &id) {
        tracing::warn!(file = %path.display(), error = %e, "cannot keep this server's node id; after a restart its destinations wait for the old lease (30 s)");
    }
    id
}

/// The first seq at or after `time` (by receipt), found by bisecting the log: where a backfill from
/// a time starts.
pub async fn seq_at_time(store: &dyn Store, org: &str, time: Micros) -> Result<u64, StoreError> {
    let (mut lo, mut hi) = (0u64, store.tree_size(org).await?);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let first = store.events_after(org, mid.checked_sub(1), 1).await?;
        match first.first() {
            Some(r) => {
                let e = trail_model::canonical::decode(&r.bytes)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                if e.received_at >= time { hi = mid } else { lo = r.seq + 1 }
            }
            None => hi = mid,
        }
    }
    Ok(lo)
}

/// One event as the destination's format writes it (JSON value; CEF as a JSON string).
fn render(
    cfg: &DestinationConfig,
    e: &trail_model::StoredEvent,
    leaf: &trail_merkle::Hash,
) -> serde_json::Value {
    let api = e.to_json(leaf);
    match cfg.format {
        PayloadFormat::Json => api,
        PayloadFormat::Ocsf => siem::ocsf(e, &api, env!("CARGO_PKG_VERSION")),
        PayloadFormat::Cef => siem::cef(e, &B64.encode(leaf), env!("CARGO_PKG_VERSION")).into(),
    }
}

/// What one read of the log becomes.
struct Prepared {
    first: u64,
    last: u64,
    /// (event, rendered) for the events the filter passes.
    events: Vec<(trail_model::StoredEvent, serde_json::Value)>,
    skipped: Vec<Skipped>,
    oldest_received: Option<Micros>,
}

fn prepare(cfg: &DestinationConfig, entries: &[Entry]) -> Result<Prepared, String> {
    let mut p = Prepared {
        first: entries.first().map_or(0, Entry::seq),
        last: entries.last().map_or(0, Entry::seq),
        events: Vec::new(),
        skipped: Vec::new(),
        oldest_received: None,
    };
    for entry in entries {
        match entry {
            Entry::Event(r) => {
                let leaf = trail_merkle::leaf_hash(&r.bytes);
                let e =
                    trail_model::canonical::decode(&r.bytes).map_err(|e| format!("seq {}: {e}", r.seq))?;
                p.oldest_received.get_or_insert(e.received_at);
                if cfg.filter.passes(&e) {
                    let v = render(cfg, &e, &leaf);
                    p.events.push((e, v));
                } else {
                    p.skipped.push(Skipped {
                        seq: r.seq,
                        leaf_hash: B64.encode(leaf),
                        why: "filtered".into(),
                    });
                }
            }
            Entry::Archived { seq, leaf } => {
                p.skipped.push(Skipped { seq: *seq, leaf_hash: B64.encode(leaf), why: "archived".into() });
            }
        }
    }
    Ok(p)
}

/// A webhook batch with its proof against `checkpoint`.
async fn webhook_body(
    store: &dyn Store,
    d: &Destination,
    cfg: &DestinationConfig,
    p: Prepared,
    checkpoint: &trail_store::StoredCheckpoint,
) -> Result<Vec<u8>, StoreError> {
    let frontier = if p.first == 0 {
        Vec::new()
    } else {
        // The audit path of the last leaf of a tree is the frontier of the tree before it.
        let mut path = store.inclusion_proof(&d.org, p.first, p.first + 1).await?;
        path.reverse();
        path
    };
    let consistency = store.consistency_proof(&d.org, p.last + 1, checkpoint.size).await?;
    let batch = Batch {
        trail_batch: Batch::VERSION,
        org: d.org.clone(),
        destination: d.id.clone(),
        first_seq: p.first,
        last_seq: p.last,
        format: cfg.format.as_str().into(),
        events: p.events.into_iter().map(|(_, v)| v).collect(),
        skipped: p.skipped,
        frontier: frontier.iter().map(|h| B64.encode(h)).collect(),
        checkpoint: checkpoint.note.clone(),
        consistency: consistency.iter().map(|h| B64.encode(h)).collect(),
    };
    serde_json::to_vec(&batch).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// HEC's event envelope, one JSON object per event, concatenated.
fn hec_body(
    cfg: &DestinationConfig,
    hostname: &str,
    events: &[(trail_model::StoredEvent, serde_json::Value)],
) -> Vec<u8> {
    let mut out = Vec::new();
    for (e, v) in events {
        let mut env = serde_json::Map::new();
        env.insert(
            "time".into(),
            serde_json::json!(
                format!("{}.{:06}", e.time.div_euclid(1_000_000), e.time.rem_euclid(1_000_000))
                    .parse::<f64>()
                    .unwrap_or(0.0)
            ),
        );
        env.insert("host".into(), hostname.into());
        env.insert("source".into(), format!("trail:{}", e.org).into());
        env.insert(
            "sourcetype".into(),
            cfg.sourcetype.clone().unwrap_or_else(|| format!("trail:{}", cfg.format.as_str())).into(),
        );
        if let Some(index) = &cfg.index {
            env.insert("index".into(), index.clone().into());
        }
        env.insert("event".into(), v.clone());
        out.extend_from_slice(serde_json::Value::Object(env).to_string().as_bytes());
        out.push(b'\n');
    }
    out
}

/// Octet-counted RFC 5424 messages for syslog.
fn syslog_bytes(
    cfg: &DestinationConfig,
    hostname: &str,
    events: &[(trail_model::StoredEvent, serde_json::Value)],
) -> Vec<u8> {
    let mut out = Vec::new();
    for (e, v) in events {
        let msg = match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        out.extend_from_slice(
            siem::octet_counted(&siem::rfc5424(e, cfg.facility, hostname, &msg)).as_bytes(),
        );
    }
    out
}

/// Delivers one destination until it is paused, deleted or the task is aborted.
async fn deliver_loop(streams: Arc<Streams>, d: Destination, cfg: DestinationConfig, live: Arc<Live>) {
    let store = streams.store.clone();
    let (org, id) = (d.org.clone(), d.id.clone());
    let mut progress = d.progress.clone();
    let save = |p: DestinationProgress| {
        let (store, org, id, streams) = (store.clone(), org.clone(), id.clone(), streams.clone());
        async move {
            streams.note_state(&org, &id, &p);
            match store.set_destination_progress(&org, &id, &p).await {
                Ok(()) => true,
                Err(StoreError::NotFound(_)) => false,
                Err(e) => {
                    tracing::warn!(org = %org, destination = %id, error = %e, "cannot record delivery progress; will retry");
                    true
                }
            }
        }
    };
    let secret = match d.sealed_secret.as_deref().map(|s| streams.sealer.open(s)) {
        None => Ok(String::new()),
        Some(Ok(b)) => String::from_utf8(b).map_err(|_| "the destination's secret is not text".to_string()),
        Some(Err(e)) => Err(e),
    };
    let transport = secret.and_then(|s| Transport::new(&cfg, s));
    let mut transport = match transport {
        Ok(t) => t,
        Err(e) => {
            progress.state = PAUSED.into();
            progress.error = Some(format!("cannot start delivery: {e}"));
            save(progress).await;
            return;
        }
    };
    let counters = streams.counters(cfg.kind);
    let settings = streams.settings.clone();
    let batch_max = match cfg.kind {
        Kind::SplunkHec => settings.batch_max_events.clamp(1, 1000),
        _ => settings.batch_max_events.clamp(1, 10_000),
    };
    let mut read_from = progress.cursor;
    let mut lease_until: Micros = 0;
    let mut backoff = Duration::from_secs(1);
    let mut last_sent = Instant::now();
    let mut saved_at = Instant::now();
    let mut unsaved = false;
    // Syslog: batches written but not yet committed, (cursor after it, its event count, when written),
    // oldest first; each is committed once the connection is seen to have held a moment after it.
    let mut pending: std::collections::VecDeque<(u64, u64, Instant)> = std::collections::VecDeque::new();
    loop {
        let t = now();
        if lease_until - t < LEASE * 2 / 3 {
            match store.lease_destination(&org, &id, &streams.node, t, t + LEASE).await {
                Ok(true) => lease_until = t + LEASE,
                Ok(false) => {
                    // Another server delivers it; take over if its lease runs out.
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(org = %org, destination = %id, error = %e, "cannot take the delivery lease; will retry");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    continue;
                }
            }
        }
        if let Transport::Syslog(s) = &mut transport
            && pending.front().is_some_and(|p| p.2.elapsed() >= SYSLOG_SETTLE)
        {
            if s.alive() {
                // A collector that died on a write has had a moment to show it; it did not.
                while let Some(&(cursor, n, _)) = pending.front().filter(|p| p.2.elapsed() >= SYSLOG_SETTLE) {
                    pending.pop_front();
                    progress.cursor = cursor;
                    progress.delivered += n;
                    progress.delivered_at = Some(now());
                    counters.events.fetch_add(n, Ordering::Relaxed);
                    unsaved = true;
                }
            } else {
                // The collector went away after those writes: send them again.
                pending.clear();
                read_from = progress.cursor;
            }
        }
        if unsaved && (pending.is_empty() || saved_at.elapsed() >= Duration::from_millis(250)) {
            if !save(progress.clone()).await {
                return;
            }
            unsaved = false;
            saved_at = Instant::now();
        }
        let checkpoint = match store.latest_checkpoint(&org).await {
            Ok(Some(c)) => c,
            Ok(None) => {
                tokio::time::sleep(IDLE).await;
                continue;
            }
            Err(e) => {
                tracing::warn!(org = %org, error = %e, "cannot read the latest checkpoint; will retry");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Ok(size) = store.tree_size(&org).await {
            live.lag_events.store(size.saturating_sub(progress.cursor), Ordering::Relaxed);
        }
        if read_from >= checkpoint.size {
            if pending.is_empty() {
                live.lag_micros.store(0, Ordering::Relaxed);
                tokio::time::sleep(IDLE).await;
            } else {
                tokio::time::sleep(SYSLOG_SETTLE).await;
            }
            continue;
        }
        let entries = match follow::read(
            store.as_ref(),
            &org,
            read_from,
            checkpoint.size,
            batch_max,
            cfg.kind == Kind::Webhook,
        )
        .await
        {
            Ok(e) if !e.is_empty() => e,
            Ok(_) => {
                tokio::time::sleep(IDLE).await;
                continue;
            }
            Err(e) => {
                tracing::warn!(org = %org, error = %e, "cannot read the log for delivery; will retry");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let prepared = match prepare(&cfg, &entries) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(org = %org, destination = %id, error = %e, "an event cannot be read for delivery");
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
        };
        if let Some(r) = prepared.oldest_received {
            live.lag_micros.store((now() - r).max(0) as u64, Ordering::Relaxed);
        }
        let (first, last, n) = (prepared.first, prepared.last, prepared.events.len() as u64);
        if n == 0 {
            match cfg.kind {
                Kind::Webhook
                    if entries.len() < batch_max && last_sent.elapsed() < Duration::from_secs(10) =>
                {
                    // Only filtered events so far: wait for one to send, or send the proof alone later.
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
                Kind::Webhook => {}
                _ => {
                    read_from = last + 1;
                    match pending.back_mut() {
                        // Filtered out after a batch not yet committed: committed with it.
                        Some((cursor, _, _)) => *cursor = read_from,
                        None => {
                            progress.cursor = read_from;
                            unsaved = true;
                        }
                    }
                    continue;
                }
            }
        }
        let label = format!("{org}/{first}-{last}");
        let sent = match (&mut transport, cfg.kind) {
            (Transport::Syslog(s), _) => {
                s.send(&syslog_bytes(&cfg, &streams.hostname, &prepared.events)).await
            }
            (t, Kind::SplunkHec) => t.post(hec_body(&cfg, &streams.hostname, &prepared.events), &label).await,
            (t, _) => match webhook_body(store.as_ref(), &d, &cfg, prepared, &checkpoint).await {
                Ok(body) => t.post(body, &label).await,
                Err(e) => Err(format!("cannot build the batch's proof: {e}")),
            },
        };
        match sent {
            Ok(()) => {
                counters.batches.fetch_add(1, Ordering::Relaxed);
                last_sent = Instant::now();
                backoff = Duration::from_secs(1);
                let recovered = progress.state != ACTIVE;
                progress.state = ACTIVE.into();
                progress.error = None;
                progress.failing_since = None;
                read_from = last + 1;
                if matches!(transport, Transport::Syslog(_)) {
                    pending.push_back((read_from, n, Instant::now()));
                    if recovered {
                        unsaved = true;
                    }
                    continue;
                }
                progress.cursor = read_from;
                progress.delivered += n;
                progress.delivered_at = Some(now());
                counters.events.fetch_add(n, Ordering::Relaxed);
                if recovered {
                    tracing::info!(org = %org, destination = %id, "delivery works again; catching up");
                }
                if !save(progress.clone()).await {
                    return;
                }
                unsaved = false;
                saved_at = Instant::now();
            }
            Err(e) => {
                counters.failures.fetch_add(1, Ordering::Relaxed);
                let t = now();
                let since = *progress.failing_since.get_or_insert(t);
                let first_failure = progress.state != FAILING;
                progress.state = FAILING.into();
                progress.error = Some(e.clone());
                read_from = progress.cursor;
                pending.clear();
                if let Transport::Syslog(s) = &mut transport {
                    s.disconnect();
                }
                if first_failure {
                    tracing::warn!(org = %org, destination = %id, endpoint = %cfg.endpoint(), error = %e, "delivery failed; retrying with backoff");
                }
                let failing_for = Duration::from_micros((t - since).max(0) as u64);
                if failing_for >= Duration::from_secs(settings.pause_after_secs) {
                    progress.state = PAUSED.into();
                    progress.error =
                        Some(format!("paused after failing for {} s: {e}", failing_for.as_secs()));
                    tracing::error!(org = %org, destination = %id, error = %e, "delivery paused after failing too long; resume it when the receiver is back");
                    save(progress).await;
                    return;
                }
                if (first_failure || saved_at.elapsed() >= Duration::from_secs(30))
                    && !save(progress.clone()).await
                {
                    return;
                }
                saved_at = Instant::now();
                let cap = Duration::from_secs(settings.max_backoff_secs.max(1));
                let jittered = backoff.mul_f64(rand::thread_rng().gen_range(0.5..1.0));
                tokio::time::sleep(jittered.min(cap)).await;
                backoff = (backoff * 2).min(cap);
            }
        }
    }
}
