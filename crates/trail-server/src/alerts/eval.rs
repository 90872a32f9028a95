//! Deciding, event by event in `seq` order, whether a rule fires. Pure but for the [`History`]
//! lookups the stateful conditions make, so the decisions are tested without a server.
//!
//! Windows are over event `time`, so an event that arrives late still counts with the events it
//! belongs with: a threshold fires when some window of `window_secs` holding the new event holds
//! `count` matches of its group. Each group keeps the matches within `window + LATE_HORIZON` of the
//! newest `time` it has seen (at most [`MAX_PER_GROUP`]), so an event more than an hour later than
//! its group's newest is judged with what is left. The matches of a firing are used up: the next
//! firing needs `count` new ones. After a firing the rule (per group) is quiet for its cool-down,
//! measured on the server's clock; matches arriving then are used up too, so a burst fires once.

use std::collections::HashMap;

use trail_model::StoredEvent;
use trail_model::time::Micros;

use super::rules::{Condition, GroupBy};

/// How much later than its group's newest match an event may be and still count fully.
pub const LATE_HORIZON: Micros = 3_600_000_000;
/// Matches a group keeps at most.
pub const MAX_PER_GROUP: usize = 10_000;
/// Groups a rule keeps at most (the least recently matched go first).
pub const MAX_GROUPS: usize = 10_000;
/// Seqs a firing lists (its count says how many matched).
pub const MAX_LISTED: usize = 100;

/// A rule firing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fire {
    /// The group (`actor`, `target` or `ip` value) for grouped thresholds.
    pub key: Option<String>,
    pub seqs: Vec<u64>,
    pub count: u64,
    pub time_from: Micros,
    pub time_to: Micros,
}

/// What the stateful conditions ask of the org's log.
#[async_trait::async_trait]
pub trait History: Send + Sync {
    /// Whether an event before `seq` has this action.
    async fn action_seen_before(&self, action: &str, seq: u64) -> bool;
    /// Whether an earlier event deactivated `actor`, and none reactivated it since.
    async fn deactivated(&self, actor: &str) -> bool;
    /// Whether the org's role `role` includes USER-MANAGEMENT or KEY-MANAGEMENT.
    async fn role_grants_management(&self, role: &str) -> bool;
}

/// What one rule remembers between events.
#[derive(Debug, Default)]
pub struct RuleState {
    /// Per group: (time, seq) of matches, sorted by time.
    groups: HashMap<String, Vec<(Micros, u64)>>,
    /// Per group: when it last fired (server clock).
    pub last_fired: HashMap<String, Micros>,
    /// Per group: the newest time seen, and a use counter for eviction.
    newest: HashMap<String, (Micros, u64)>,
    uses: u64,
}

fn group_key(by: GroupBy, e: &StoredEvent) -> Option<String> {
    match by {
        GroupBy::None => Some(String::new()),
        GroupBy::Actor => Some(e.actor.id.clone()),
        GroupBy::Target => Some(format!("{}/{}", e.target.kind, e.target.id.as_deref().unwrap_or(""))),
        // Events without an address do not group by one.
        GroupBy::Ip => e.actor.ip.clone(),
    }
}

const MANAGEMENT: [&str; 2] = ["USER-MANAGEMENT", "KEY-MANAGEMENT"];

fn grants_management(v: Option<&serde_json::Value>) -> bool {
    v.and_then(|p| p.as_array())
        .is_some_and(|ps| ps.iter().any(|p| p.as_str().is_some_and(|p| MANAGEMENT.contains(&p))))
}

fn info<'a>(e: &'a StoredEvent, path: &[&str]) -> Option<&'a serde_json::Value> {
    let (first, rest) = path.split_first()?;
    let mut v = e.info.as_ref()?.get(*first)?;
    for k in rest {
        v = v.get(*k)?;
    }
    Some(v)
}

/// Whether a matching event meets a stateless or store-backed condition (thresholds aside).
async fn meets(condition: &Condition, e: &StoredEvent, history: &dyn History) -> bool {
    match condition {
        Condition::Any {} | Condition::Threshold { .. } => true,
        Condition::NewAction {} => !history.action_seen_before(&e.action, e.seq).await,
        Condition::DeactivatedActor {} => history.deactivated(&e.actor.id).await,
        Condition::PrivilegeGrant {} => match e.action.as_str() {
            "api_key.created" => true,
            "role.created" => grants_management(info(e, &["permissions"])),
            "role.updated" => {
                grants_management(info(e, &["after", "permissions"]))
                    && info(e, &["after", "permissions"]) != info(e, &["before", "permissions"])
            }
            "group.role_added" | "user.role_assigned" => {
                let role = info(e, &["role"]).and_then(|r| r.as_str());
                match role {
                    Some(r) => MANAGEMENT.contains(&r) || history.role_grants_management(r).await,
                    None => false,
                }
            }
            _ => false,
        },
        Condition::RetentionWeakened {} => {
            let before = |k: &str| info(e, &["before", k]).cloned();
            let after = |k: &str| info(e, &["after", k]).cloned();
            let shorter =
                |k: &str| match (before(k).and_then(|v| v.as_u64()), after(k).and_then(|v| v.as_u64())) {
                    (Some(b), Some(a)) => a < b,
                    _ => false,
                };
            let lifted = before("legal_hold") == Some(serde_json::Value::Bool(true))
                && after("legal_hold") == Some(serde_json::Value::Bool(false));
            e.action == "retention.updated" && (lifted || shorter("hot_days") || shorter("archive_days"))
        }
        Condition::LargeExport { min_events } => {
            e.action == "export.completed"
                && info(e, &["row_count"]).and_then(|v| v.as_u64()).is_some_and(|n| n > *min_events)
        }
    }
}

impl RuleState {
    /// Judges one event that matched the rule's search; `now` is the server's clock. `Some` when the
    /// rule fires (and is not cooling down).
    pub async fn observe(
        &mut self,
        condition: &Condition,
        cooldown: Micros,
        e: &StoredEvent,
        now: Micros,
        history: &dyn History,
    ) -> Option<Fire> {
        if !meets(condition, e, history).await {
            return None;
        }
        let (key, fire) = match condition {
            Condition::Threshold { count, window_secs, group_by } => {
                let key = group_key(*group_by, e)?;
                let window = *window_secs as i64 * 1_000_000;
                let fire = self.threshold(&key, e, *count as usize, window);
                (key, fire?)
            }
            _ => (
                String::new(),
                Fire { key: None, seqs: vec![e.seq], count: 1, time_from: e.time, time_to: e.time },
            ),
        };
        let cooling = self.last_fired.get(&key).is_some_and(|t| now - t < cooldown);
        if cooling {
            return None;
        }
        self.last_fired.insert(key, now);
        Some(fire)
    }

    fn threshold(&mut self, key: &str, e: &StoredEvent, count: usize, window: Micros) -> Option<Fire> {
        self.uses += 1;
        if !self.groups.contains_key(key) && self.groups.len() >= MAX_GROUPS {
            // Forget the group matched least recently.
            if let Some(old) = self.newest.iter().min_by_key(|(_, (_, used))| *used).map(|(k, _)| k.clone()) {
                self.groups.remove(&old);
                self.newest.remove(&old);
            }
        }
        let list = self.groups.entry(key.to_string()).or_default();
        let newest = self.newest.entry(key.to_string()).or_insert((e.time, 0));
        newest.0 = newest.0.max(e.time);
        newest.1 = self.uses;
        let at = list.partition_point(|(t, _)| *t <= e.time);
        list.insert(at, (e.time, e.seq));
        let keep_from = newest.0 - window - LATE_HORIZON;
        let stale = list.partition_point(|(t, _)| *t < keep_from);
        list.drain(..stale.max(list.len().saturating_sub(MAX_PER_GROUP)));
        // A window [start, start + window] holding the new event: start from a match at most `window`
        // before it, up to the new event itself. None can hold `count` when fewer lie within
        // `window` on either side of it.
        let first = list.partition_point(|(t, _)| *t < e.time - window);
        if list.partition_point(|(t, _)| *t <= e.time + window) - first < count {
            return None;
        }
        for i in first..list.len() {
            let start = list[i].0;
            if start > e.time {
                break;
            }
            let end = list.partition_point(|(t, _)| *t <= start + window);
            if end - i >= count {
                let taken: Vec<(Micros, u64)> = list.drain(i..end).collect();
                let mut seqs: Vec<u64> = taken.iter().map(|(_, s)| *s).collect();
                seqs.sort_unstable();
                seqs.truncate(MAX_LISTED);
                return Some(Fire {
                    key: (!key.is_empty()).then(|| key.to_string()),
                    count: taken.len() as u64,
                    seqs,
                    time_from: taken.first().map_or(e.time, |t| t.0),
                    time_to: taken.last().map_or(e.time, |t| t.0),
                });
            }
        }
        None
    }

    /// Fills a threshold's memory from an event already judged before a restart, without firing.
    pub fn remember(&mut self, condition: &Condition, e: &StoredEvent) {
        if let Condition::Threshold { window_secs, group_by, .. } = condition
            && let Some(key) = group_key(*group_by, e)
        {
            // A count no window reaches: only remembers.
            let _ = self.threshold(&key, e, usize::MAX, *window_secs as i64 * 1_000_000);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trail_model::{Actor, ActorType, Outcome, Target};

    struct NoHistory;

    #[async_trait::async_trait]
    impl History for NoHistory {
        async fn action_seen_before(&self, action: &str, _: u64) -> bool {
            action != "brand.new"
        }
        async fn deactivated(&self, actor: &str) -> bool {
            actor == "gone"
        }
        async fn role_grants_management(&self, role: &str) -> bool {
            role == "custom-admin"
        }
    }

    const SEC: Micros = 1_000_000;

    fn ev(seq: u64, time_secs: i64, actor: &str) -> StoredEvent {
        StoredEvent {
            org: "acme".into(),
            seq,
            id: format!("e{seq}"),
            time: time_secs * SEC,
            received_at: 0,
            actor: Actor {
                id: actor.into(),
                kind: ActorType::User,
                name: None,
                ip: Some("192.0.2.1".into()),
                user_agent: None,
            },
            action: "user.sign_in_failed".into(),
            target: Target { kind: "user".into(), id: None, name: None },
            project: None,
            outcome: Outcome::Failure,
            reason: None,
            source: None,
            info: None,
        }
    }

    async fn run(cond: &Condition, cooldown_secs: i64, events: &[(u64, i64, &str, i64)]) -> Vec<Fire> {
        let mut st = RuleState::default();
        let mut out = Vec::new();
        for (seq, t, actor, now) in events {
            if let Some(f) =
                st.observe(cond, cooldown_secs * SEC, &ev(*seq, *t, actor), now * SEC, &NoHistory).await
            {
                out.push(f);
            }
        }
        out
    }

    #[tokio::test]
    async fn a_threshold_fires_at_the_nth_match_within_the_window_per_group() {
        let cond = Condition::Threshold { count: 3, window_secs: 60, group_by: GroupBy::Actor };
        // ana: 3 within 60 s (fires at the third); bob: 3 spread over 2 minutes (never).
        let fires = run(
            &cond,
            0,
            &[
                (0, 0, "ana", 0),
                (1, 10, "bob", 1),
                (2, 30, "ana", 2),
                (3, 70, "bob", 3),
                (4, 50, "ana", 4),
                (5, 140, "bob", 5),
            ],
        )
        .await;
        assert_eq!(fires.len(), 1);
        assert_eq!(
            (fires[0].key.as_deref(), &fires[0].seqs, fires[0].count),
            (Some("ana"), &vec![0, 2, 4], 3)
        );
    }

    #[tokio::test]
    async fn late_events_count_with_the_window_they_belong_to() {
        let cond = Condition::Threshold { count: 3, window_secs: 60, group_by: GroupBy::None };
        // Arrive in seq order with times 100, 500, then 110 and 120 (late): the late ones complete
        // the window around 100.
        let fires =
            run(&cond, 0, &[(0, 100, "a", 0), (1, 500, "a", 1), (2, 110, "a", 2), (3, 120, "a", 3)]).await;
        assert_eq!(fires.len(), 1);
        assert_eq!(
            (fires[0].seqs.clone(), fires[0].time_from, fires[0].time_to),
            (vec![0, 2, 3], 100 * SEC, 120 * SEC)
        );
    }

    #[tokio::test]
    async fn a_burst_fires_once_inside_the_cool_down() {
        let any = Condition::Any {};
        let fires =
            run(&any, 300, &[(0, 0, "a", 0), (1, 1, "a", 10), (2, 2, "a", 299), (3, 3, "a", 301)]).await;
        assert_eq!(
            fires.iter().map(|f| f.seqs[0]).collect::<Vec<_>>(),
            [0, 3],
            "quiet for 300 s after a firing"
        );
        let cond = Condition::Threshold { count: 2, window_secs: 60, group_by: GroupBy::None };
        let burst: Vec<(u64, i64, &str, i64)> = (0..10).map(|i| (i, i as i64, "a", i as i64)).collect();
        let fires = run(&cond, 600, &burst).await;
        assert_eq!(fires.len(), 1, "ten matches in a burst: one firing");
    }

    #[tokio::test]
    async fn stateful_conditions_ask_the_log() {
        let mut e = ev(7, 0, "gone");
        let mut st = RuleState::default();
        assert!(st.observe(&Condition::DeactivatedActor {}, 0, &e, 0, &NoHistory).await.is_some());
        e.actor.id = "here".into();
        assert!(st.observe(&Condition::DeactivatedActor {}, 0, &e, 0, &NoHistory).await.is_none());
        e.action = "brand.new".into();
        assert!(st.observe(&Condition::NewAction {}, 0, &e, 0, &NoHistory).await.is_some());
        e.action = "role.created".into();
        e.info = serde_json::json!({"permissions": ["LOG-MANAGEMENT"]}).as_object().cloned();
        assert!(st.observe(&Condition::PrivilegeGrant {}, 0, &e, 0, &NoHistory).await.is_none());
        e.info = serde_json::json!({"permissions": ["KEY-MANAGEMENT"]}).as_object().cloned();
        assert!(st.observe(&Condition::PrivilegeGrant {}, 0, &e, 0, &NoHistory).await.is_some());
        e.action = "group.role_added".into();
        e.info = serde_json::json!({"role": "custom-admin"}).as_object().cloned();
        assert!(st.observe(&Condition::PrivilegeGrant {}, 0, &e, 0, &NoHistory).await.is_some());
        e.action = "retention.updated".into();
        e.info = serde_json::json!({"before": {"hot_days": 365, "legal_hold": false}, "after": {"hot_days": 90, "legal_hold": false}})
            .as_object()
            .cloned();
        assert!(st.observe(&Condition::RetentionWeakened {}, 0, &e, 0, &NoHistory).await.is_some());
        e.info =
            serde_json::json!({"before": {"hot_days": 90}, "after": {"hot_days": 365}}).as_object().cloned();
        assert!(st.observe(&Condition::RetentionWeakened {}, 0, &e, 0, &NoHistory).await.is_none());
        e.action = "export.completed".into();
        e.info = serde_json::json!({"row_count": 150_000}).as_object().cloned();
        assert!(
            st.observe(&Condition::LargeExport { min_events: 100_000 }, 0, &e, 0, &NoHistory).await.is_some()
        );
        assert!(
            st.observe(&Condition::LargeExport { min_events: 200_000 }, 0, &e, 0, &NoHistory).await.is_none()
        );
    }
}
