//! Saved searches (each reader's own, or shared with the org) and alert rules, their templates and
//! their firings. Everything here needs a person holding `LOG-MANAGEMENT` in the org; every change to
//! a rule is an event in the org's own log.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use serde_json::{Value, json};
use trail_model::time::{format_rfc3339, now};
use trail_store::{Document, Permission};

use super::bodies::{AlertRuleBody, EnableTemplate, NewSavedSearch, SavedSearchChange, typed};
use super::{JsonBody, query_pairs};
use crate::AppState;
use crate::alerts::rules::{self, FIRING, RULE, Rule, SEARCH, SavedSearch};
use crate::audit::Audit;
use crate::auth::{ClientAddr, Principal};
use crate::error::{ApiError, ApiResult};

/// Rules one org may have.
const MAX_RULES: usize = 200;
/// Saved searches one person may keep in an org.
const MAX_SEARCHES: usize = 200;

fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

// --- saved searches ------------------------------------------------------------------------------

fn search_json(d: &Document, s: &SavedSearch, me: &str) -> Value {
    json!({
        "id": d.id, "name": s.name, "query": s.query, "range": s.range, "shared": s.shared,
        "owner": s.owner_email, "mine": s.owner == me,
        "created_at": format_rfc3339(s.created_at), "updated_at": format_rfc3339(d.updated_at),
    })
}

/// The searches this person may see: their own and the shared ones.
async fn visible_searches(state: &AppState, org: &str, me: &str) -> ApiResult<Vec<(Document, SavedSearch)>> {
    let docs = state.store.documents(Some(org), SEARCH, usize::MAX, None).await?;
    Ok(docs
        .into_iter()
        .filter_map(|d| serde_json::from_value::<SavedSearch>(d.body.clone()).ok().map(|s| (d, s)))
        .filter(|(_, s)| s.shared || s.owner == me)
        .collect())
}

fn check_range(range: &str) -> ApiResult<()> {
    if super::bodies::RangeName::parse(range).is_none() {
        return Err(ApiError::bad_request(
            "invalid_field",
            format!(
                "range must be one of {}",
                super::bodies::RangeName::ALL.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ")
            ),
        )
        .with_field("range"));
    }
    Ok(())
}

fn check_name(name: &str) -> ApiResult<String> {
    let n = name.trim();
    if n.is_empty() || n.chars().count() > 100 {
        return Err(
            ApiError::bad_request("invalid_field", "name must be 1 to 100 characters").with_field("name")
        );
    }
    Ok(n.to_string())
}

pub async fn list_searches(
    State(state): State<AppState>,
    Path(org): Path<String>,
    p: Principal,
) -> ApiResult<Json<Value>> {
    p.require_permission(&state, &org, Permission::LogManagement).await?;
    let me = p.user()?.id.clone();
    let mut list = visible_searches(&state, &org, &me).await?;
    list.sort_by_key(|(_, s)| s.name.to_lowercase());
    Ok(Json(json!({"searches": list.iter().map(|(d, s)| search_json(d, s, &me)).collect::<Vec<_>>()})))
}

pub async fn create_search(
    State(state): State<AppState>,
    Path(org): Path<String>,
    p: Principal,
    JsonBody(body): JsonBody,
) -> ApiResult<(StatusCode, Json<Value>)> {
    p.require_permission(&state, &org, Permission::LogManagement).await?;
    let body: NewSavedSearch = typed(body)?;
    let user = p.user()?.clone();
    let name = check_name(&body.name)?;
    rules::search_filter(&body.query, "query")?;
    let range = body.range.unwrap_or_else(|| "24h".into());
    check_range(&range)?;
    let mine = visible_searches(&state, &org, &user.id)
        .await?
        .into_iter()
        .filter(|(_, s)| s.owner == user.id)
        .count();
    if mine >= MAX_SEARCHES {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "too_many_searches",
            format!("at most {MAX_SEARCHES} saved searches per person"),
        ));
    }
    let t = now();
    let s = SavedSearch {
        name,
        query: body.query,
        range,
        shared: body.shared.unwrap_or(false),
        owner: user.id.clone(),
        owner_email: user.email.clone(),
        created_at: t,
    };
    let d = Document {
        org: org.clone(),
        kind: SEARCH.into(),
        id: new_id("ss"),
        body: serde_json::to_value(&s).map_err(ApiError::internal)?,
        updated_at: t,
    };
    state.store.put_document(&d, true).await?;
    Ok((StatusCode::CREATED, Json(search_json(&d, &s, &user.id))))
}

/// The search if this person may change it: their own; a shared one also for ORG-SETTINGS holders.
async fn own_search(
    state: &AppState,
    org: &str,
    id: &str,
    p: &Principal,
) -> ApiResult<(Document, SavedSearch)> {
    let me = p.user()?.id.clone();
    let (d, s) = visible_searches(state, org, &me)
        .await?
        .into_iter()
        .find(|(d, _)| d.id == id)
        .ok_or_else(|| ApiError::not_found(format!("saved search {id}")))?;
    if s.owner != me && p.require_permission(state, org, Permission::OrgSettings).await.is_err() {
        return Err(ApiError::forbidden(
            "only its owner (or an ORG-SETTINGS holder, for a shared one) may change a saved search",
        ));
    }
    Ok((d, s))
}

pub async fn update_search(
    State(state): State<AppState>,
    Path((org, id)): Path<(String, String)>,
    p: Principal,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Value>> {
    p.require_permission(&state, &org, Permission::LogManagement).await?;
    let body: SavedSearchChange = typed(body)?;
    let (mut d, mut s) = own_search(&state, &org, &id, &p).await?;
    if let Some(n) = &body.name {
        s.name = check_name(n)?;
    }
    if let Some(q) = body.query {
        rules::search_filter(&q, "query")?;
        s.query = q;
    }
    if let Some(r) = body.range {
        check_range(&r)?;
        s.range = r;
    }
    if let Some(shared) = body.shared {
        s.shared = shared;
    }
    d.body = serde_json::to_value(&s).map_err(ApiError::internal)?;
    d.updated_at = now();
    state.store.put_document(&d, false).await?;
    Ok(Json(search_json(&d, &s, &p.user()?.id)))
}

pub async fn delete_search(
    State(state): State<AppState>,
    Path((org, id)): Path<(String, String)>,
    p: Principal,
) -> ApiResult<StatusCode> {
    p.require_permission(&state, &org, Permission::LogManagement).await?;
    own_search(&state, &org, &id, &p).await?;
    state.store.delete_document(&org, SEARCH, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

// --- alert rules -----------------------------------------------------------------------------------

fn rule_json(state: &AppState, d: &Document, r: &Rule) -> Value {
    let failing =
        state.alerts.failing.lock().ok().and_then(|f| f.get(&(d.org.clone(), d.id.clone())).cloned());
    json!({
        "id": d.id, "name": r.name, "search": r.search, "condition": r.condition,
        "condition_text": crate::alerts::describe(&r.condition),
        "cooldown_secs": r.cooldown_secs, "notify": r.notify, "enabled": r.enabled, "template": r.template,
        "created_by": r.created_by, "created_at": format_rfc3339(r.created_at), "updated_at": format_rfc3339(d.updated_at),
        "delivery_failing": failing,
    })
}

async fn find_rule(state: &AppState, org: &str, id: &str) -> ApiResult<(Document, Rule)> {
    let d = state
        .store
        .documents(Some(org), RULE, usize::MAX, None)
        .await?
        .into_iter()
        .find(|d| d.id == id)
        .ok_or_else(|| ApiError::not_found(format!("alert rule {id}")))?;
    let r = serde_json::from_value(d.body.clone()).map_err(ApiError::internal)?;
    Ok((d, r))
}

pub async fn list_rules(
    State(state): State<AppState>,
    Path(org): Path<String>,
    p: Principal,
) -> ApiResult<Json<Value>> {
    p.require_permission(&state, &org, Permission::LogManagement).await?;
    let mut out = Vec::new();
    for d in state.store.documents(Some(&org), RULE, usize::MAX, None).await? {
        if let Ok(r) = serde_json::from_value::<Rule>(d.body.clone()) {
            out.push(rule_json(&state, &d, &r));
        }
    }
    Ok(Json(json!({ "rules": out })))
}

pub async fn get_rule(
    State(state): State<AppState>,
    Path((org, id)): Path<(String, String)>,
    p: Principal,
) -> ApiResult<Json<Value>> {
    p.require_permission(&state, &org, Permission::LogManagement).await?;
    let (d, r) = find_rule(&state, &org, &id).await?;
    Ok(Json(rule_json(&state, &d, &r)))
}

/// A new signing secret for a rule's webhook, sealed for the rule and shown once.
fn webhook_secret(state: &AppState, r: &mut Rule) -> Option<String> {
    use base64::Engine;
    r.notify.webhook.as_ref()?;
    let secret = crate::stream::seal::new_signing_secret();
    r.sealed_secret = Some(
        base64::engine::general_purpose::STANDARD
            .encode(state.alerts.notifier.sealer().seal(secret.as_bytes())),
    );
    Some(secret)
}

/// Stores a new rule and records it; the answer (with a webhook secret, once).
async fn add_rule(
    state: &AppState,
    org: &str,
    p: &Principal,
    addr: &ClientAddr,
    mut r: Rule,
) -> ApiResult<(StatusCode, Json<Value>)> {
    r.check()?;
    if state.store.documents(Some(org), RULE, MAX_RULES, None).await?.len() >= MAX_RULES {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "too_many_rules",
            format!("an organization may have at most {MAX_RULES} alert rules"),
        ));
    }
    let secret = webhook_secret(state, &mut r);
    r.from_seq = state.store.tree_size(org).await?;
    let d = Document {
        org: org.to_string(),
        kind: RULE.into(),
        id: new_id("ar"),
        body: serde_json::to_value(&r).map_err(ApiError::internal)?,
        updated_at: now(),
    };
    state.store.put_document(&d, true).await?;
    Audit::new(p.actor_id(), "alert_rule.created", "alert_rule")
        .target(&d.id, Some(r.name.clone()))
        .ip(addr.text())
        .info("search", r.search.clone())
        .info("condition", crate::alerts::describe(&r.condition))
        .info("template", json!(r.template))
        .record(state, org)
        .await?;
    state.alerts.changed();
    let mut out = rule_json(state, &d, &r);
    if let Some(s) = secret {
        out["webhook_secret"] = json!(s);
    }
    Ok((StatusCode::CREATED, Json(out)))
}

fn rule_from(body: AlertRuleBody, p: &Principal, created_at: i64) -> Rule {
    Rule {
        name: body.name.trim().to_string(),
        search: body.search.unwrap_or_default(),
        condition: body.condition,
        cooldown_secs: body.cooldown_secs.unwrap_or(300),
        notify: body.notify.unwrap_or_default(),
        enabled: body.enabled.unwrap_or(true),
        template: None,
        created_by: p.actor_id(),
        created_at,
        sealed_secret: None,
        from_seq: 0,
    }
}

pub async fn create_rule(
    State(state): State<AppState>,
    Path(org): Path<String>,
    p: Principal,
    addr: ClientAddr,
    JsonBody(body): JsonBody,
) -> ApiResult<(StatusCode, Json<Value>)> {
    p.require_permission(&state, &org, Permission::LogManagement).await?;
    let body: AlertRuleBody = typed(body)?;
    add_rule(&state, &org, &p, &addr, rule_from(body, &p, now())).await
}

pub async fn update_rule(
    State(state): State<AppState>,
    Path((org, id)): Path<(String, String)>,
    p: Principal,
    addr: ClientAddr,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Value>> {
    p.require_permission(&state, &org, Permission::LogManagement).await?;
    let body: AlertRuleBody = typed(body)?;
    let (mut d, old) = find_rule(&state, &org, &id).await?;
    let mut r = rule_from(body, &p, old.created_at);
    r.created_by = old.created_by.clone();
    r.template = old.template.clone();
    // Enabled again, a rule watches from now: what arrived while it was off does not fire it.
    r.from_seq = if r.enabled && !old.enabled { state.store.tree_size(&org).await? } else { old.from_seq };
    r.check()?;
    // The webhook keeps its secret while its URL stays; a new URL gets a new one.
    let same_hook = r.notify.webhook.as_ref().map(|w| &w.url) == old.notify.webhook.as_ref().map(|w| &w.url);
    let secret = if same_hook {
        r.sealed_secret = old.sealed_secret.clone();
        None
    } else {
        webhook_secret(&state, &mut r)
    };
    d.body = serde_json::to_value(&r).map_err(ApiError::internal)?;
    d.updated_at = now();
    state.store.put_document(&d, false).await?;
    Audit::new(p.actor_id(), "alert_rule.updated", "alert_rule")
        .target(&id, Some(r.name.clone()))
        .ip(addr.text())
        .info("enabled", r.enabled)
        .info("search", r.search.clone())
        .info("condition", crate::alerts::describe(&r.condition))
        .record(&state, &org)
        .await?;
    state.alerts.changed();
    let mut out = rule_json(&state, &d, &r);
    if let Some(s) = secret {
        out["webhook_secret"] = json!(s);
    }
    Ok(Json(out))
}

pub async fn delete_rule(
    State(state): State<AppState>,
    Path((org, id)): Path<(String, String)>,
    p: Principal,
    addr: ClientAddr,
) -> ApiResult<StatusCode> {
    p.require_permission(&state, &org, Permission::LogManagement).await?;
    let (_, r) = find_rule(&state, &org, &id).await?;
    state.store.delete_document(&org, RULE, &id).await?;
    Audit::new(p.actor_id(), "alert_rule.deleted", "alert_rule")
        .target(&id, Some(r.name))
        .ip(addr.text())
        .record(&state, &org)
        .await?;
    state.alerts.changed();
    Ok(StatusCode::NO_CONTENT)
}

pub async fn list_templates(
    State(state): State<AppState>,
    Path(org): Path<String>,
    p: Principal,
) -> ApiResult<Json<Value>> {
    p.require_permission(&state, &org, Permission::LogManagement).await?;
    let used: Vec<String> = state
        .store
        .documents(Some(&org), RULE, usize::MAX, None)
        .await?
        .iter()
        .filter_map(|d| d.body["template"].as_str().map(str::to_string))
        .collect();
    let list: Vec<Value> = rules::templates()
        .into_iter()
        .map(|t| {
            json!({"id": t.id, "name": t.name, "description": t.description, "search": t.search,
                   "condition": t.condition, "cooldown_secs": t.cooldown_secs, "enabled": used.iter().any(|u| u == t.id)})
        })
        .collect();
    Ok(Json(json!({ "templates": list })))
}

/// Enables a template in one click: a rule made from it, with optional notifications.
pub async fn enable_template(
    State(state): State<AppState>,
    Path((org, id)): Path<(String, String)>,
    p: Principal,
    addr: ClientAddr,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    p.require_permission(&state, &org, Permission::LogManagement).await?;
    let body: EnableTemplate = if body.is_empty() {
        EnableTemplate::default()
    } else {
        typed(serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request("malformed_json", format!("the body is not valid JSON: {e}"))
        })?)?
    };
    let t = rules::templates()
        .into_iter()
        .find(|t| t.id == id)
        .ok_or_else(|| ApiError::not_found(format!("alert template {id}")))?;
    let r = Rule {
        name: t.name.into(),
        search: t.search.into(),
        condition: t.condition,
        cooldown_secs: t.cooldown_secs,
        notify: body.notify.unwrap_or_default(),
        enabled: true,
        template: Some(t.id.into()),
        created_by: p.actor_id(),
        created_at: now(),
        sealed_secret: None,
        from_seq: 0,
    };
    add_rule(&state, &org, &p, &addr, r).await
}

/// The org's firings, newest first (`rule=` one rule's, `limit` ≤ 200, `before=` an id to page on).
pub async fn history(
    State(state): State<AppState>,
    Path(org): Path<String>,
    p: Principal,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Value>> {
    p.require_permission(&state, &org, Permission::LogManagement).await?;
    let (mut rule, mut limit, mut before) = (None, 50usize, None);
    for (k, v) in query_pairs(raw.as_deref())? {
        match k.as_str() {
            "rule" => rule = Some(v),
            "before" => before = Some(v),
            "limit" => {
                limit = v.parse().ok().filter(|n| (1..=200).contains(n)).ok_or_else(|| {
                    ApiError::bad_request("invalid_field", "limit must be 1 to 200").with_field("limit")
                })?;
            }
            _ => {
                return Err(ApiError::bad_request(
                    "unknown_parameter",
                    format!("{k} is not a parameter here"),
                )
                .with_field(k));
            }
        }
    }
    let mut out = Vec::new();
    let mut cursor = before;
    // Firings of one rule are read in pages of the org's firings until enough are found.
    loop {
        let page = state.store.documents(Some(&org), FIRING, 200, cursor.as_deref()).await?;
        let done = page.len() < 200;
        cursor = page.last().map(|d| d.id.clone());
        out.extend(
            page.iter()
                .filter(|d| rule.as_deref().is_none_or(|r| d.body["rule_id"] == r))
                .map(crate::alerts::firing_json),
        );
        if done || out.len() >= limit {
            break;
        }
    }
    out.truncate(limit);
    let next =
        if out.len() == limit { out.last().and_then(|f| f["id"].as_str().map(str::to_string)) } else { None };
    Ok(Json(json!({"firings": out, "next_before": next})))
}
