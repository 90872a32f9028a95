//! Who read the log is in the log. A person's search (a query's first page, in the console or over
//! the API with a session) and each event they open are self-audit events, recorded once the answer
//! is ready (so a search is never among its own results); an event opened again by the same person
//! within 10 minutes is not recorded again (an integrity badge waiting for its checkpoint reloads it). An API key's reads are summed per key and
//! hour and recorded once the hour is over (`log.read_by_key`): a SIEM polling every few seconds adds
//! one event an hour, not thousands. An org may turn read auditing off (`read_audit`); the change is
//! itself recorded.
//!
//! Guarantees: a person's read is recorded before its answer is sent. If the store cannot record it
//! (a full disk), the read is still answered — an operator reading the log to find out what went
//! wrong must not be locked out by the failure — and the miss is logged at ERROR and counted in
//! `trail_read_audit_failures_total`. A key's hourly summary is held in memory until its hour ends
//! and written by the flusher; a crash loses the unwritten hours' counts, and a restart mid-hour
//! writes that hour in two parts.

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::{Value, json};
use trail_model::query::Filter;
use trail_model::time::{MICROS_PER_SECOND, Micros, format_rfc3339};
use trail_store::{ApiKey, Store, StoreError, User};

use crate::AppState;
use crate::audit::Audit;
use crate::auth::{ClientAddr, Principal};
use crate::error::ApiResult;

const HOUR: Micros = 3600 * MICROS_PER_SECOND;

/// One key's reads in one hour.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Tally {
    key_name: String,
    requests: u64,
    events: u64,
}

/// API keys' reads not yet recorded, by (org, key id, hour start); and the events people opened
/// lately, so one opened again and again (an integrity badge waiting for its checkpoint reloads it)
/// is recorded once per [`VIEW_AGAIN`].
#[derive(Debug, Default)]
pub struct KeyReads {
    open: Mutex<HashMap<(String, String, Micros), Tally>>,
    viewed: Mutex<HashMap<(String, String, String), Micros>>,
}

/// How long an event opened by the same person is not recorded again.
pub const VIEW_AGAIN: Micros = 10 * 60 * MICROS_PER_SECOND;
/// Most (org, reader, event) entries kept in memory before the stale ones are dropped.
const MAX_VIEWED: usize = 50_000;

impl KeyReads {
    fn add(&self, key: &ApiKey, events: u64, now: Micros) {
        let hour = now.div_euclid(HOUR) * HOUR;
        if let Ok(mut open) = self.open.lock() {
            let t = open.entry((key.org.clone(), key.id.clone(), hour)).or_default();
            t.key_name.clone_from(&key.name);
            t.requests += 1;
            t.events += events;
        }
    }

    /// Whether this is the reader's first opening of the event in [`VIEW_AGAIN`] (and notes it).
    fn first_view(&self, org: &str, reader: &str, id: &str, now: Micros) -> bool {
        let Ok(mut viewed) = self.viewed.lock() else { return true };
        if viewed.len() >= MAX_VIEWED {
            viewed.retain(|_, at| now - *at < VIEW_AGAIN);
            if viewed.len() >= MAX_VIEWED {
                viewed.clear();
            }
        }
        let key = (org.to_string(), reader.to_string(), id.to_string());
        match viewed.get(&key) {
            Some(at) if now - *at < VIEW_AGAIN => false,
            _ => {
                viewed.insert(key, now);
                true
            }
        }
    }

    /// Records every hour that ended before `now` (every hour, when `all`: at shutdown). An hour whose
    /// record fails is kept for the next flush.
    pub async fn flush(&self, store: &dyn Store, now: Micros, all: bool) -> Result<usize, StoreError> {
        let current = now.div_euclid(HOUR) * HOUR;
        let due: Vec<((String, String, Micros), Tally)> = match self.open.lock() {
            Ok(mut open) => {
                let keys: Vec<_> = open.keys().filter(|k| all || k.2 < current).cloned().collect();
                keys.into_iter().filter_map(|k| open.remove(&k).map(|t| (k, t))).collect()
            }
            Err(_) => return Ok(0),
        };
        let mut written = 0;
        let mut failed = None;
        for ((org, key, hour), t) in due {
            let audit = Audit::new(format!("api-key:{key}"), "log.read_by_key", "api_key")
                .service(Some(t.key_name.clone()))
                .target(key.clone(), Some(t.key_name.clone()))
                .info("hour", format_rfc3339(hour))
                .info("requests", t.requests)
                .info("events", t.events);
            match audit.append(store, &org).await {
                Ok(()) => written += 1,
                // An org deleted meanwhile has no log to record in.
                Err(StoreError::NotFound(_)) => {}
                Err(e) => {
                    if let Ok(mut open) = self.open.lock() {
                        let back = open.entry((org, key, hour)).or_default();
                        back.key_name = t.key_name;
                        back.requests += t.requests;
                        back.events += t.events;
                    }
                    failed = Some(e);
                }
            }
        }
        failed.map_or(Ok(written), Err)
    }
}

/// The filters of a search as the self-audit event shows them: parameter → value, or values.
fn filters_info(pairs: &[(String, String)], f: &Filter) -> Value {
    let kept: Vec<(String, String)> = pairs
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "limit" | "cursor" | "from" | "to"))
        .cloned()
        .collect();
    let mut m = crate::exports::filters_object(&kept);
    m["from"] = json!(format_rfc3339(f.from));
    m["to"] = json!(format_rfc3339(f.to));
    m
}

/// Who read: a person (a console or API session), an API key, or a host product's user in the
/// embedded viewer (a person too, named by the host product).
#[derive(Debug, Clone, Copy)]
pub enum Reader<'a> {
    Person(&'a User),
    Key(&'a ApiKey),
    Viewer(&'a crate::viewer::Viewer),
}

impl<'a> From<&'a Principal> for Reader<'a> {
    fn from(p: &'a Principal) -> Self {
        match p {
            Principal::User { user, .. } => Reader::Person(user),
            Principal::Key(k) => Reader::Key(k),
            Principal::Viewer(v) => Reader::Viewer(v),
        }
    }
}

impl Reader<'_> {
    /// A person's read as a self-audit event (`None` for a key, whose reads are summed).
    fn audit(&self, action: &'static str, target_type: &'static str) -> Option<Audit> {
        match self {
            Reader::Person(user) => Some(Audit::new(user.email.clone(), action, target_type)),
            Reader::Viewer(v) => Some(v.audit(action, target_type)),
            Reader::Key(_) => None,
        }
    }
}

/// One search: its parameters, the filter they resolved to, and how many events it returned.
#[derive(Debug, Clone, Copy)]
pub struct Search<'a> {
    pub pairs: &'a [(String, String)],
    pub filter: &'a Filter,
    pub returned: usize,
    /// A page after the first: the same search, not recorded again.
    pub paged: bool,
}

/// Records a search: a person's as its own event, a key's in its hourly summary.
pub async fn searched(
    state: &AppState,
    org: &str,
    who: Reader<'_>,
    addr: &ClientAddr,
    s: Search<'_>,
) -> ApiResult<()> {
    if !state.policy(org).await?.read_audit {
        return Ok(());
    }
    match (who, who.audit("log.searched", "log")) {
        (Reader::Key(key), _) => state.key_reads.add(key, s.returned as u64, trail_model::time::now()),
        (_, Some(audit)) if !s.paged => {
            let audit = audit
                .target(org, None)
                .ip(addr.text())
                .info("filters", filters_info(s.pairs, s.filter))
                .info("returned", s.returned as u64);
            record(state, org, audit).await;
        }
        _ => {}
    }
    Ok(())
}

/// Records that one event was opened.
pub async fn viewed(
    state: &AppState,
    org: &str,
    who: Reader<'_>,
    addr: &ClientAddr,
    id: &str,
    seq: u64,
) -> ApiResult<()> {
    if !state.policy(org).await?.read_audit {
        return Ok(());
    }
    match (who, who.audit("log.event_viewed", "event")) {
        (Reader::Key(key), _) => state.key_reads.add(key, 1, trail_model::time::now()),
        (_, Some(audit)) => {
            if state.key_reads.first_view(org, &audit.actor, id, trail_model::time::now()) {
                record(state, org, audit.target(id, None).ip(addr.text()).info("seq", seq)).await;
            }
        }
        (_, None) => {}
    }
    Ok(())
}

/// Records a person's read; a failure is logged and counted, and the read goes on (see above).
async fn record(state: &AppState, org: &str, audit: Audit) {
    let action = audit.action;
    if let Err(e) = audit.record(state, org).await {
        crate::metrics::Metrics::add(&state.metrics.read_audit_failures, 1);
        tracing::error!(org = %org, action, error = %e.message, "a read of the log could not be recorded in it");
    }
}

/// Counts a key's read that returns no events (a histogram).
pub async fn counted(state: &AppState, org: &str, who: &Principal) -> ApiResult<()> {
    if let Principal::Key(key) = who
        && state.policy(org).await?.read_audit
    {
        state.key_reads.add(key, 0, trail_model::time::now());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str, org: &str) -> ApiKey {
        ApiKey {
            id: id.into(),
            org: org.into(),
            name: format!("{id} name"),
            scopes: vec![],
            secret_hash: [0; 32],
            created_by: None,
            created_at: 0,
            expires_at: None,
            revoked_at: None,
            last_used_at: None,
        }
    }

    #[test]
    fn reads_are_summed_per_org_key_and_hour() {
        let r = KeyReads::default();
        let t = 1_000 * HOUR + 5;
        r.add(&key("k1", "acme"), 50, t);
        r.add(&key("k1", "acme"), 10, t + HOUR - 10);
        r.add(&key("k1", "acme"), 7, t + HOUR);
        r.add(&key("k2", "acme"), 1, t);
        r.add(&key("k1", "globex"), 2, t);
        let open = r.open.lock().unwrap();
        assert_eq!(open.len(), 4);
        let t1 = &open[&("acme".to_string(), "k1".to_string(), 1_000 * HOUR)];
        assert_eq!((t1.requests, t1.events), (2, 60));
        assert_eq!(open[&("acme".to_string(), "k1".to_string(), 1_001 * HOUR)].events, 7);
    }

    #[test]
    fn a_search_shows_its_filters() {
        let pairs: Vec<(String, String)> =
            [("actor", "a"), ("actor", "b"), ("action", "x.*"), ("limit", "5")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        let f = Filter { from: 0, to: HOUR, ..Filter::default() };
        assert_eq!(
            filters_info(&pairs, &f),
            json!({"actor": ["a", "b"], "action": "x.*", "from": "1970-01-01T00:00:00.000Z", "to": "1970-01-01T01:00:00.000Z"})
        );
    }
}
