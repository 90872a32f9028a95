//! Saved searches and alert rules: Trail watches each org's log and notifies.
//!
//! [`Alerts::run`] follows every org that has enabled rules, in `seq` order from a persisted cursor
//! (so events whose `time` is late are judged when they arrive), four times a second. Each event is
//! judged by every enabled rule ([`eval`]); a firing is written once — its id is the triggering seq and
//! the rule, written create-only — then recorded in the org's own log as `alert.fired` (with an id
//! derived from the firing's, so it too is stored once) and notified by email and signed webhook.
//! The cursor is saved after the firings of the events before it are written.
//!
//! After a crash: events after the cursor are judged again; firings already written are not written,
//! logged or notified again; thresholds get their memory back by re-reading the events of their
//! longest window before the cursor (without firing); cool-downs come back from the recent firings;
//! firings whose notification had not been confirmed are notified again. So a firing is recorded
//! exactly once and notified at least once.

pub mod eval;
pub mod notify;
pub mod rules;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use trail_model::StoredEvent;
use trail_model::query::Filter;
use trail_model::time::{Micros, format_rfc3339, now};
use trail_store::{Document, Store, StoreError};

use crate::audit::Audit;
use eval::{Fire, History, RuleState};
use rules::{CURSOR, Condition, FIRING, RULE, Rule};

/// Events judged per read.
const BATCH: usize = 2000;
/// Firings an org keeps (the oldest are removed).
pub const KEEP_FIRINGS: usize = 1000;

/// A rule as the evaluator holds it.
struct Loaded {
    id: String,
    updated_at: Micros,
    rule: Rule,
    /// The search without its free text, which is judged on tokens shared by every rule.
    filter: Filter,
    text: Option<trail_model::text::Search>,
    state: RuleState,
}

impl Loaded {
    fn matches(&self, e: &StoredEvent, tokens: &mut Option<Vec<String>>) -> bool {
        self.filter.matches(e)
            && self.text.as_ref().is_none_or(|q| {
                q.matches_tokens(tokens.get_or_insert_with(|| trail_model::text::event_tokens(e)))
            })
    }
}

/// One org being watched.
struct OrgWatch {
    cursor: u64,
    rules: Vec<Loaded>,
    /// Actions known to be in the log (so no lookup is needed for them).
    seen_actions: std::collections::HashSet<String>,
    /// Actors known to be deactivated (true) or not, kept current by the (de)activations judged.
    deactivated: HashMap<String, bool>,
    /// Where the org's hot log begins (the first day of its oldest month): lookups search from here.
    hot_from: Micros,
}

/// Most entries of a watch's caches before they start over (each entry costs one lookup to rebuild).
const MAX_CACHED: usize = 100_000;

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct AlertCounters {
    pub fired: AtomicU64,
    pub email_failures: AtomicU64,
    pub webhook_failures: AtomicU64,
}

/// The alerting service (one per server).
pub struct Alerts {
    store: Arc<dyn Store>,
    pub notifier: notify::Notifier,
    watched: tokio::sync::Mutex<HashMap<String, OrgWatch>>,
    wake: tokio::sync::Notify,
    pub counters: AlertCounters,
    /// Rules whose last notification failed: (org, rule id) → the error.
    pub failing: Mutex<HashMap<(String, String), String>>,
}

impl std::fmt::Debug for Alerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alerts").finish_non_exhaustive()
    }
}

/// The log lookups of the stateful conditions, through the store.
struct StoreHistory<'a> {
    store: &'a dyn Store,
    org: &'a str,
    /// Actions already judged in this org (so no lookup is needed for them).
    seen: &'a std::collections::HashSet<String>,
    /// Actors whose (de)activation is known.
    deactivated: &'a HashMap<String, bool>,
    /// The start of the hot log.
    from: Micros,
}

impl StoreHistory<'_> {
    /// Events of the org's hot log matching `pairs`, up to 2, with their seqs.
    async fn find(&self, pairs: &[(String, String)]) -> Vec<StoredEvent> {
        let t = now();
        let ctx = trail_model::query::QueryContext { now: t, oldest: i64::MIN / 2 };
        let Ok(mut filter) = trail_model::query::parse_filter(pairs, ctx) else { return Vec::new() };
        // The whole hot log (its months are what a query reads), and event times are never far in the
        // future.
        filter.from = self.from;
        filter.to = t + trail_model::time::MICROS_PER_DAY;
        let q = trail_model::query::Query { filter, limit: 50, cursor: None };
        match self.store.query(self.org, &q).await {
            Ok(page) => page.records.into_iter().map(|r| r.event).collect(),
            Err(e) => {
                tracing::warn!(org = %self.org, error = %e, "an alert's lookup in the log failed");
                Vec::new()
            }
        }
    }
}

const DEACTIVATING: [&str; 5] =
    ["user.deleted", "user.deactivated", "user.disabled", "user.suspended", "user.removed"];
const REACTIVATING: [&str; 4] = ["user.activated", "user.enabled", "user.reactivated", "user.restored"];

#[async_trait::async_trait]
impl History for StoreHistory<'_> {
    async fn action_seen_before(&self, action: &str, seq: u64) -> bool {
        if self.seen.contains(action) {
            return true;
        }
        let found = self.find(&[("action".into(), action.into())]).await;
        found.iter().any(|e| e.seq < seq)
    }

    async fn deactivated(&self, actor: &str) -> bool {
        // Built from the log's (de)activations before the position, then kept current in seq order.
        self.deactivated.get(actor).copied().unwrap_or(false)
    }

    async fn role_grants_management(&self, role: &str) -> bool {
        self.role_grants(role).await
    }
}

impl StoreHistory<'_> {
    /// Every actor the hot log's (de)activations before `before` leave deactivated (or reactivated):
    /// read once when an org is first watched, by action (an indexed query), page by page.
    async fn deactivations(&self, before: u64) -> Result<HashMap<String, bool>, StoreError> {
        let pairs: Vec<(String, String)> = DEACTIVATING
            .iter()
            .chain(REACTIVATING.iter())
            .map(|a| ("action".to_string(), a.to_string()))
            .collect();
        let t = now();
        let ctx = trail_model::query::QueryContext { now: t, oldest: i64::MIN / 2 };
        let mut filter = trail_model::query::parse_filter(&pairs, ctx)
            .map_err(|e| StoreError::Corrupt(e.message.clone()))?;
        filter.from = self.from;
        filter.to = t + trail_model::time::MICROS_PER_DAY;
        let mut changes: Vec<(u64, String, bool)> = Vec::new();
        let mut cursor = None;
        loop {
            let q = trail_model::query::Query { filter: filter.clone(), limit: 1000, cursor };
            let page = self.store.query(self.org, &q).await?;
            for r in &page.records {
                if let Some(target) = r.event.target.id.as_ref().filter(|_| r.event.seq < before) {
                    changes.push((
                        r.event.seq,
                        target.clone(),
                        DEACTIVATING.contains(&r.event.action.as_str()),
                    ));
                }
            }
            match page.next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        changes.sort_by_key(|c| c.0);
        Ok(changes.into_iter().map(|(_, target, off)| (target, off)).collect())
    }

    async fn role_grants(&self, role: &str) -> bool {
        match self.store.roles(self.org).await {
            Ok(roles) => roles.iter().any(|r| {
                r.id == role
                    && r.permissions.iter().any(|p| {
                        matches!(
                            p,
                            trail_store::Permission::UserManagement | trail_store::Permission::KeyManagement
                        )
                    })
            }),
            Err(_) => false,
        }
    }
}

/// The firing document's id: the triggering seq (zero-padded, so ids sort by seq) and the rule.
fn firing_id(seq: u64, rule: &str) -> String {
    format!("{seq:020}-{rule}")
}

impl Alerts {
    pub fn new(store: Arc<dyn Store>, notifier: notify::Notifier) -> Arc<Self> {
        Arc::new(Self {
            store,
            notifier,
            watched: tokio::sync::Mutex::default(),
            wake: tokio::sync::Notify::new(),
            counters: AlertCounters::default(),
            failing: Mutex::default(),
        })
    }

    /// Rules changed: reload them now.
    pub fn changed(&self) {
        self.wake.notify_one();
    }

    /// Watches until dropped.
    pub async fn run(self: Arc<Self>) {
        if let Err(e) = self.renotify().await {
            tracing::warn!(error = %e, "cannot look for alert notifications to send again");
        }
        let mut reload = tokio::time::Instant::now();
        loop {
            if reload.elapsed() >= Duration::from_secs(2) {
                if let Err(e) = self.reload().await {
                    tracing::warn!(error = %e, "cannot read alert rules; will retry");
                }
                reload = tokio::time::Instant::now();
            }
            let orgs: Vec<String> = self.watched.lock().await.keys().cloned().collect();
            let mut busy = false;
            for org in orgs {
                match self.judge(&org).await {
                    Ok(more) => busy |= more,
                    Err(e) => {
                        tracing::warn!(org = %org, error = %e, "cannot judge events for alerts; will retry")
                    }
                }
            }
            if !busy {
                tokio::select! {
                    () = self.wake.notified() => reload = tokio::time::Instant::now() - Duration::from_secs(3),
                    () = tokio::time::sleep(Duration::from_millis(250)) => {}
                }
            }
        }
    }

    /// Loads the enabled rules of every org; new orgs start at their cursor (or the log's end).
    async fn reload(&self) -> Result<(), StoreError> {
        let docs = self.store.documents(None, RULE, usize::MAX, None).await?;
        let mut by_org: HashMap<String, Vec<(Document, Rule)>> = HashMap::new();
        for d in docs {
            match serde_json::from_value::<Rule>(d.body.clone()) {
                Ok(r) if r.enabled => by_org.entry(d.org.clone()).or_default().push((d, r)),
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(org = %d.org, rule = %d.id, error = %e, "an alert rule is unreadable; it is not evaluated")
                }
            }
        }
        let mut watched = self.watched.lock().await;
        watched.retain(|org, _| by_org.contains_key(org));
        for (org, rules) in by_org {
            if !watched.contains_key(&org) {
                // Where judging resumes: the saved position, or (the first time) where the oldest
                // rule began, saved at once so a crash before the first batch resumes there too.
                let cursor = match self.store.documents(Some(&org), CURSOR, 1, None).await?.first() {
                    Some(d) => d.body["next_seq"].as_u64().unwrap_or(0),
                    None => {
                        let from = rules.iter().map(|(_, r)| r.from_seq).min().unwrap_or(0);
                        self.save_cursor(&org, from).await?;
                        from
                    }
                };
                watched.insert(
                    org.clone(),
                    OrgWatch {
                        cursor,
                        rules: Vec::new(),
                        seen_actions: Default::default(),
                        deactivated: HashMap::new(),
                        hot_from: 0,
                    },
                );
                let w = watched.get_mut(&org).ok_or_else(|| StoreError::Corrupt("watch".into()))?;
                self.load_rules(&org, w, rules).await?;
                self.warm_up(&org, w).await?;
            } else if let Some(w) = watched.get_mut(&org) {
                self.load_rules(&org, w, rules).await?;
            }
            // Once per watched org: where its hot log begins (retention only moves it later, so an
            // older start merely makes lookups read a few empty months), and its (de)activations.
            if let Some(w) = watched.get_mut(&org).filter(|w| w.hot_from == 0) {
                let months = self.store.event_months(&org).await?;
                w.hot_from = months.first().map_or_else(now, |m| trail_model::time::month_start(*m));
                let history = StoreHistory {
                    store: self.store.as_ref(),
                    org: &org,
                    seen: &w.seen_actions,
                    deactivated: &w.deactivated,
                    from: w.hot_from,
                };
                let known = history.deactivations(w.cursor).await?;
                w.deactivated = known;
            }
        }
        Ok(())
    }

    async fn load_rules(
        &self,
        org: &str,
        w: &mut OrgWatch,
        rules: Vec<(Document, Rule)>,
    ) -> Result<(), StoreError> {
        let mut old: HashMap<String, Loaded> = w.rules.drain(..).map(|l| (l.id.clone(), l)).collect();
        for (d, rule) in rules {
            if let Some(l) = old.remove(&d.id).filter(|l| l.updated_at == d.updated_at) {
                w.rules.push(l);
                continue;
            }
            let Ok(mut filter) = rules::search_filter(&rule.search, "search") else { continue };
            let text = filter.q.take();
            let mut state = RuleState::default();
            // Cool-downs survive a restart: the rule's recent firings say when it last fired.
            for f in self.store.documents(Some(org), FIRING, 200, None).await? {
                if f.body["rule_id"] == d.id.as_str() {
                    let key = f.body["key"].as_str().unwrap_or("").to_string();
                    let at = f.body["fired_at_micros"].as_i64().unwrap_or(0);
                    let e = state.last_fired.entry(key).or_insert(at);
                    *e = (*e).max(at);
                }
            }
            w.rules.push(Loaded { id: d.id.clone(), updated_at: d.updated_at, rule, filter, text, state });
        }
        Ok(())
    }

    /// Thresholds remember the events of their window before the cursor (after a restart).
    async fn warm_up(&self, org: &str, w: &mut OrgWatch) -> Result<(), StoreError> {
        let window = w.rules.iter().map(|l| l.rule.condition.window_micros()).max().unwrap_or(0);
        if window == 0 || w.cursor == 0 {
            return Ok(());
        }
        let from =
            crate::stream::seq_at_time(self.store.as_ref(), org, now() - window - eval::LATE_HORIZON).await?;
        let mut next = from;
        while next < w.cursor {
            let entries =
                crate::stream::follow::read(self.store.as_ref(), org, next, w.cursor, BATCH, false).await?;
            let Some(last) = entries.last().map(|e| e.seq()) else { break };
            for entry in &entries {
                let crate::stream::follow::Entry::Event(r) = entry else { continue };
                let Ok(e) = trail_model::canonical::decode(&r.bytes) else { continue };
                let mut tokens = None;
                for l in &mut w.rules {
                    if l.matches(&e, &mut tokens) {
                        l.state.remember(&l.rule.condition, &e);
                    }
                }
            }
            next = last + 1;
        }
        Ok(())
    }

    /// Judges the org's events after its cursor; whether more are waiting.
    async fn judge(self: &Arc<Self>, org: &str) -> Result<bool, StoreError> {
        let mut watched = self.watched.lock().await;
        let Some(w) = watched.get_mut(org) else { return Ok(false) };
        let size = self.store.tree_size(org).await?;
        if w.cursor >= size {
            return Ok(false);
        }
        let entries =
            crate::stream::follow::read(self.store.as_ref(), org, w.cursor, size, BATCH, false).await?;
        let Some(last) = entries.last().map(|e| e.seq()) else { return Ok(false) };
        let mut fired: Vec<(usize, Fire)> = Vec::new();
        for entry in &entries {
            let crate::stream::follow::Entry::Event(r) = entry else { continue };
            let e =
                trail_model::canonical::decode(&r.bytes).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            // An alert's own record is never judged (no rule can fire on its own firing).
            if e.action == "alert.fired" {
                continue;
            }
            let t = now();
            let mut tokens = None;
            for (i, l) in w.rules.iter_mut().enumerate() {
                if e.seq < l.rule.from_seq || !l.matches(&e, &mut tokens) {
                    continue;
                }
                let history = StoreHistory {
                    store: self.store.as_ref(),
                    org,
                    seen: &w.seen_actions,
                    deactivated: &w.deactivated,
                    from: w.hot_from,
                };
                let cooldown = l.rule.cooldown_secs as i64 * 1_000_000;
                if let Some(fire) = l.state.observe(&l.rule.condition, cooldown, &e, t, &history).await {
                    fired.push((i, fire));
                }
            }
            if w.seen_actions.len() >= MAX_CACHED {
                w.seen_actions.clear();
            }
            w.seen_actions.insert(e.action.clone());
            // The judged (de)activations keep the actor cache current.
            if let Some(target) = &e.target.id {
                if DEACTIVATING.contains(&e.action.as_str()) {
                    w.deactivated.insert(target.clone(), true);
                } else if REACTIVATING.contains(&e.action.as_str()) {
                    w.deactivated.insert(target.clone(), false);
                }
            }
        }
        let any_fired = !fired.is_empty();
        for (i, fire) in fired {
            let l = &w.rules[i];
            self.record(org, &l.id, &l.rule, fire).await?;
        }
        if any_fired {
            self.prune(org).await;
        }
        w.cursor = last + 1;
        self.save_cursor(org, w.cursor).await?;
        Ok(entries.len() >= BATCH)
    }

    async fn save_cursor(&self, org: &str, next_seq: u64) -> Result<(), StoreError> {
        let doc = Document {
            org: org.to_string(),
            kind: CURSOR.into(),
            id: "cursor".into(),
            body: json!({ "next_seq": next_seq }),
            updated_at: now(),
        };
        self.store.put_document(&doc, false).await.map(|_| ())
    }

    /// Writes a firing once, records it in the org's log and notifies.
    async fn record(
        self: &Arc<Self>,
        org: &str,
        rule_id: &str,
        rule: &Rule,
        fire: Fire,
    ) -> Result<(), StoreError> {
        let trigger = fire.seqs.last().copied().unwrap_or(0);
        let id = firing_id(trigger, rule_id);
        let t = now();
        let link = self.notifier.link(org, &rule.search, fire.time_from, fire.time_to);
        let body = json!({
            "rule_id": rule_id,
            "rule_name": rule.name,
            "condition": rule.condition,
            "fired_at": format_rfc3339(t),
            "fired_at_micros": t,
            "key": fire.key,
            "count": fire.count,
            "seqs": fire.seqs,
            "time_from": format_rfc3339(fire.time_from),
            "time_to": format_rfc3339(fire.time_to),
            "link": link,
            "deliveries": [],
            "delivered": false,
        });
        let doc = Document { org: org.to_string(), kind: FIRING.into(), id: id.clone(), body, updated_at: t };
        // Written before a restart, the firing is not written again; its record in the log is
        // appended again (stored once: its id is fixed), in case the crash came between the two.
        // Its notifications are sent again at start if they had not finished.
        let new = self.store.put_document(&doc, true).await?;
        if new {
            self.counters.fired.fetch_add(1, Ordering::Relaxed);
        }
        let mut audit = Audit::new("trail", "alert.fired", "alert_rule")
            .system("Trail alerts")
            .target(rule_id, Some(rule.name.clone()))
            .info("firing", id.clone())
            .info("count", fire.count)
            .info("seqs", json!(fire.seqs.iter().take(20).collect::<Vec<_>>()))
            .info("link", link)
            .with_id(format!("alert-{id}"));
        if let Some(k) = &fire.key {
            audit = audit.info("key", k.clone());
        }
        audit.append(self.store.as_ref(), org).await?;
        if new {
            self.deliver(doc, rule.clone());
        }
        Ok(())
    }

    /// Keeps the newest [`KEEP_FIRINGS`] firings of an org (once a judged batch fired), reading past
    /// them a page at a time.
    async fn prune(&self, org: &str) {
        let Ok(newest) = self.store.documents(Some(org), FIRING, KEEP_FIRINGS, None).await else { return };
        let Some(last_kept) = newest.last().filter(|_| newest.len() == KEEP_FIRINGS).map(|d| d.id.clone())
        else {
            return;
        };
        if let Ok(old) = self.store.documents(Some(org), FIRING, 1000, Some(&last_kept)).await {
            for d in old {
                let _ = self.store.delete_document(org, FIRING, &d.id).await;
            }
        }
    }

    /// Sends a firing's notifications in the background and records the results in it.
    fn deliver(self: &Arc<Self>, mut doc: Document, rule: Rule) {
        let this = self.clone();
        tokio::spawn(async move {
            let deliveries = this.notifier.send(&this.store, &doc, &rule).await;
            let failed: Vec<&notify::Delivery> = deliveries.iter().filter(|d| !d.ok).collect();
            for d in &failed {
                let counter = if d.channel == "email" {
                    &this.counters.email_failures
                } else {
                    &this.counters.webhook_failures
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
            let key = (doc.org.clone(), doc.body["rule_id"].as_str().unwrap_or("").to_string());
            if let Ok(mut f) = this.failing.lock() {
                match failed.first() {
                    Some(d) => {
                        f.insert(key, format!("{}: {}", d.channel, d.error.clone().unwrap_or_default()));
                    }
                    None => {
                        f.remove(&key);
                    }
                }
            }
            doc.body["deliveries"] = json!(deliveries);
            doc.body["delivered"] = json!(true);
            doc.updated_at = now();
            if let Err(e) = this.store.put_document(&doc, false).await {
                tracing::warn!(org = %doc.org, firing = %doc.id, error = %e, "cannot record an alert's notification results");
            }
        });
    }

    /// Notifies again the firings whose notification was not finished (after a restart).
    async fn renotify(self: &Arc<Self>) -> Result<(), StoreError> {
        let firings = self.store.documents(None, FIRING, 10_000, None).await?;
        let rules = self.store.documents(None, RULE, usize::MAX, None).await?;
        for f in firings.into_iter().filter(|f| f.body["delivered"] == false) {
            let rule = rules
                .iter()
                .find(|r| r.org == f.org && r.id == f.body["rule_id"].as_str().unwrap_or(""))
                .and_then(|r| serde_json::from_value::<Rule>(r.body.clone()).ok());
            if let Some(rule) = rule {
                self.deliver(f, rule);
            }
        }
        Ok(())
    }
}

/// The condition in words, for notifications and the console.
pub fn describe(c: &Condition) -> String {
    match c {
        Condition::Any {} => "any matching event".into(),
        Condition::Threshold { count, window_secs, group_by } => {
            let by = match group_by {
                rules::GroupBy::None => String::new(),
                rules::GroupBy::Actor => " by the same actor".into(),
                rules::GroupBy::Target => " on the same target".into(),
                rules::GroupBy::Ip => " from the same address".into(),
            };
            format!("at least {count} matching events{by} within {window_secs} s")
        }
        Condition::NewAction {} => "an action never seen before in the organization".into(),
        Condition::DeactivatedActor {} => "activity by a deactivated user".into(),
        Condition::PrivilegeGrant {} => {
            "an API key created, or a role with USER-MANAGEMENT or KEY-MANAGEMENT granted".into()
        }
        Condition::RetentionWeakened {} => "a legal hold lifted or retention shortened".into(),
        Condition::LargeExport { min_events } => format!("an export of more than {min_events} events"),
    }
}

/// A firing's document as the API shows it.
pub fn firing_json(d: &Document) -> Value {
    let mut v = d.body.clone();
    v["id"] = json!(d.id);
    if let Some(m) = v.as_object_mut() {
        m.remove("fired_at_micros");
    }
    v
}
