//! Saved searches and alert rules as the store keeps them (org documents) and the API accepts them,
//! and the built-in templates.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use trail_model::query::{Filter, QueryContext, parse_filter};

use crate::error::ApiError;

/// Document kinds.
pub const SEARCH: &str = "saved_search";
pub const RULE: &str = "alert_rule";
pub const FIRING: &str = "alert_firing";
pub const CURSOR: &str = "alert_cursor";

/// The Audit Logs query parameters a search keeps: filters and free text, never a window.
const SEARCH_PARAMS: &[&str] =
    &["actor", "action", "target_type", "target_id", "project", "outcome", "source", "q"];

fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_field", message).with_field(field)
}

/// Parses a search's query string (`action=user.*&outcome=failure&q=…`) into a filter over all time.
pub fn search_filter(query: &str, field: &str) -> Result<Filter, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
        .map_err(|e| invalid(field, format!("{field} is not a query string: {e}")))?;
    if let Some((k, _)) = pairs.iter().find(|(k, _)| !SEARCH_PARAMS.contains(&k.as_str())) {
        return Err(invalid(
            field,
            format!(
                "{field}: {k} is not a search parameter (use {}; the time range is separate)",
                SEARCH_PARAMS.join(", ")
            ),
        ));
    }
    let now = trail_model::time::now();
    let ctx = QueryContext { now, oldest: i64::MIN / 2 };
    let mut f = parse_filter(&pairs, ctx).map_err(|e| invalid(field, format!("{field}: {}", e.message)))?;
    f.from = i64::MIN;
    f.to = i64::MAX;
    Ok(f)
}

/// A saved search of the Audit Logs page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedSearch {
    pub name: String,
    /// The filters and free text, as the page's query string (no window).
    pub query: String,
    /// The page's relative range (`24h`, `7d`, …) the search opens with.
    pub range: String,
    /// Visible to everyone who reads the org's log, or only to its owner.
    pub shared: bool,
    /// The user who saved it (their id).
    pub owner: String,
    pub owner_email: String,
    pub created_at: i64,
}

/// How matches group for a threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    /// All matches together.
    #[default]
    None,
    /// By `actor.id` (one account).
    Actor,
    /// By `target.type` and `target.id`.
    Target,
    /// By `actor.ip` (one address).
    Ip,
}

/// When a rule fires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Condition {
    /// Every matching event.
    Any {},
    /// At least `count` matches with `time`s within `window_secs` of each other (per group).
    Threshold {
        #[schemars(range(min = 1, max = 10000))]
        count: u32,
        #[schemars(range(min = 1, max = 86400))]
        window_secs: u64,
        #[serde(default)]
        group_by: GroupBy,
    },
    /// A matching event whose action no earlier event of the org's hot log has.
    NewAction {},
    /// A matching event by an actor an earlier event deactivated (`user.deleted`, `user.deactivated`,
    /// `user.disabled`, `user.suspended`, `user.removed`; undone by `user.activated`, `user.enabled`,
    /// `user.reactivated`, `user.restored`).
    DeactivatedActor {},
    /// An API key created, or a role that includes `USER-MANAGEMENT` or `KEY-MANAGEMENT` created, changed
    /// to include one, or given to a group or user.
    PrivilegeGrant {},
    /// A legal hold lifted, or hot or archive retention shortened.
    RetentionWeakened {},
    /// An export (or restore) that completed with more than `min_events` events.
    LargeExport {
        #[schemars(range(min = 0))]
        min_events: u64,
    },
}

impl Condition {
    pub fn check(&self) -> Result<(), ApiError> {
        if let Condition::Threshold { count, window_secs, .. } = self
            && (!(1..=10_000).contains(count) || !(1..=86_400).contains(window_secs))
        {
            return Err(invalid("condition", "a threshold needs count 1-10000 and window_secs 1-86400"));
        }
        Ok(())
    }

    /// The longest stretch of event time the condition looks back over.
    pub fn window_micros(&self) -> i64 {
        match self {
            Condition::Threshold { window_secs, .. } => *window_secs as i64 * 1_000_000,
            _ => 0,
        }
    }
}

/// A signed webhook a rule notifies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleWebhook {
    /// https:// (http:// only to this machine).
    #[schemars(length(max = 2000))]
    pub url: String,
    /// A PEM CA certificate to trust besides the system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    pub ca_pem: Option<String>,
}

impl RuleWebhook {
    /// The webhook as a streaming destination sees one: the same URL rules, TLS and signing.
    pub fn destination(&self, name: &str) -> crate::stream::config::DestinationConfig {
        crate::stream::config::DestinationConfig {
            name: name.to_string(),
            kind: crate::stream::config::Kind::Webhook,
            url: Some(self.url.clone()),
            address: None,
            tls: false,
            ca_pem: self.ca_pem.clone(),
            format: crate::stream::config::PayloadFormat::Json,
            filter: Default::default(),
            facility: trail_model::siem::FACILITY_LOG_AUDIT,
            index: None,
            sourcetype: None,
        }
    }
}

/// Where a firing goes besides the org's own log (`alert.fired`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Notify {
    /// Addresses mailed through the server's SMTP settings.
    #[schemars(length(max = 20))]
    pub emails: Vec<String>,
    pub webhook: Option<RuleWebhook>,
}

/// An alert rule: a search, a condition, a cool-down and where to notify.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub name: String,
    /// The search (as a saved search's query string); empty matches every event.
    pub search: String,
    pub condition: Condition,
    /// After a firing, the same rule (and group) stays quiet this long.
    pub cooldown_secs: u64,
    pub notify: Notify,
    pub enabled: bool,
    /// The template it was made from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    pub created_by: String,
    pub created_at: i64,
    /// The webhook's signing secret, sealed (never shown after creation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_secret: Option<String>,
    /// The log's size when the rule was made: it judges events from this seq on.
    #[serde(default)]
    pub from_seq: u64,
}

impl Rule {
    pub fn check(&self) -> Result<(), ApiError> {
        let name = self.name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(invalid("name", "name must be 1 to 100 characters"));
        }
        search_filter(&self.search, "search")?;
        self.condition.check()?;
        if self.cooldown_secs > 7 * 86_400 {
            return Err(invalid("cooldown_secs", "cooldown_secs must be at most 604800 (a week)"));
        }
        if let Some(e) = self.notify.emails.iter().find(|e| !crate::mail::valid_address(e)) {
            return Err(invalid("notify", format!("notify.emails: {e:?} is not an email address")));
        }
        if let Some(w) = &self.notify.webhook {
            w.destination(&self.name)
                .check()
                .map_err(|e| invalid("notify", format!("notify.webhook: {}", e.message)))?;
        }
        Ok(())
    }
}

/// A built-in rule an admin enables in one click.
#[derive(Debug, Clone)]
pub struct Template {
    pub id: &'static str,
    pub name: &'static str,
    pub description: &'static str,
    pub search: &'static str,
    pub condition: Condition,
    pub cooldown_secs: u64,
}

/// The built-in templates (README "Alerts" lists them).
pub fn templates() -> Vec<Template> {
    vec![
        Template {
            id: "failed-sign-ins-account",
            name: "Repeated failed sign-ins for one account",
            description: "5 failed sign-ins of one account within 10 minutes.",
            search: "action=user.sign_in_failed&action=user.login_failed",
            condition: Condition::Threshold { count: 5, window_secs: 600, group_by: GroupBy::Actor },
            cooldown_secs: 900,
        },
        Template {
            id: "failed-sign-ins-address",
            name: "Repeated failed sign-ins from one address",
            description: "20 failed sign-ins from one client address within 10 minutes, whatever the account.",
            search: "action=user.sign_in_failed&action=user.login_failed",
            condition: Condition::Threshold { count: 20, window_secs: 600, group_by: GroupBy::Ip },
            cooldown_secs: 900,
        },
        Template {
            id: "privilege-grant",
            name: "API key created or management role granted",
            description: "An API key is created, or a role with USER-MANAGEMENT or KEY-MANAGEMENT is created or granted.",
            search: "",
            condition: Condition::PrivilegeGrant {},
            cooldown_secs: 0,
        },
        Template {
            id: "retention-weakened",
            name: "Legal hold lifted or retention shortened",
            description: "A legal hold is lifted, or hot or archive retention is made shorter.",
            search: "action=retention.updated",
            condition: Condition::RetentionWeakened {},
            cooldown_secs: 0,
        },
        Template {
            id: "large-export",
            name: "Large export",
            description: "An export or restore completes with more than 100,000 events.",
            search: "action=export.completed",
            condition: Condition::LargeExport { min_events: 100_000 },
            cooldown_secs: 0,
        },
        Template {
            id: "deactivated-user-activity",
            name: "Activity by a deactivated user",
            description: "An event whose actor an earlier event deleted, deactivated, disabled or suspended.",
            search: "",
            condition: Condition::DeactivatedActor {},
            cooldown_secs: 3600,
        },
        Template {
            id: "new-action",
            name: "An action never seen before",
            description: "The first event of an action no earlier event of the organization has.",
            search: "",
            condition: Condition::NewAction {},
            cooldown_secs: 0,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn searches_take_filters_and_free_text_but_no_window() {
        let f = search_filter("action=user.*&outcome=failure&q=denied", "search").unwrap();
        assert_eq!((f.from, f.to, f.action.len(), f.outcome.len()), (i64::MIN, i64::MAX, 1, 1));
        assert!(f.q.is_some());
        assert_eq!(
            search_filter("from=2026-01-01T00:00:00Z", "search").unwrap_err().field.as_deref(),
            Some("search")
        );
        assert!(search_filter("outcome=maybe", "search").is_err());
        assert!(search_filter("", "search").unwrap().is_window_only());
    }

    #[test]
    fn conditions_refuse_fields_they_do_not_have() {
        let ok: Condition = serde_json::from_value(serde_json::json!({"kind": "any"})).unwrap();
        assert_eq!(ok, Condition::Any {});
        assert_eq!(serde_json::to_value(&ok).unwrap(), serde_json::json!({"kind": "any"}));
        assert!(serde_json::from_value::<Condition>(serde_json::json!({"kind": "any", "count": 3})).is_err());
        assert!(
            serde_json::from_value::<Condition>(serde_json::json!({"kind": "threshold", "count": 3}))
                .is_err()
        );
    }

    #[test]
    fn notifications_go_to_addresses_and_https_webhooks() {
        let mut rule = Rule {
            name: "r".into(),
            search: String::new(),
            condition: Condition::Any {},
            cooldown_secs: 0,
            notify: Notify { emails: vec!["secops@acme.io".into(), "admin@localhost".into()], webhook: None },
            enabled: true,
            template: None,
            created_by: "u".into(),
            created_at: 0,
            sealed_secret: None,
            from_seq: 0,
        };
        rule.check().unwrap();
        rule.notify.emails.push("not an address".into());
        assert_eq!(rule.check().unwrap_err().field.as_deref(), Some("notify"));
        rule.notify.emails.pop();
        rule.notify.webhook = Some(RuleWebhook { url: "http://hooks.example/x".into(), ca_pem: None });
        assert_eq!(rule.check().unwrap_err().field.as_deref(), Some("notify"), "https only, as destinations");
    }

    #[test]
    fn every_template_is_a_valid_rule() {
        for t in templates() {
            let rule = Rule {
                name: t.name.into(),
                search: t.search.into(),
                condition: t.condition.clone(),
                cooldown_secs: t.cooldown_secs,
                notify: Notify::default(),
                enabled: true,
                template: Some(t.id.into()),
                created_by: "u".into(),
                created_at: 0,
                sealed_secret: None,
                from_seq: 0,
            };
            rule.check().unwrap_or_else(|e| panic!("{}: {}", t.id, e.message));
        }
    }
}
