//! Streaming destinations of an org, managed by holders of `ORG-SETTINGS` (every change a self-audit
//! event; a secret shown once), and the pull feed that SIEMs poll in `seq` order.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use serde_json::{Value, json};
use trail_model::time::{format_rfc3339, now, parse_rfc3339};
use trail_store::{Destination, DestinationProgress, Permission};

use super::bodies::{DestinationFields, NewDestination, Resume, typed};
use super::{JsonBody, query_pairs};
use crate::AppState;
use crate::audit::Audit;
use crate::auth::{ClientAddr, Principal};
use crate::error::{ApiError, ApiResult};
use crate::reads;
use crate::stream::config::{DestinationConfig, Kind};
use crate::stream::{self, ACTIVE, PAUSED, seal};

fn config_of(d: &Destination) -> ApiResult<DestinationConfig> {
    serde_json::from_value(d.config.clone()).map_err(ApiError::internal)
}

fn destination_json(state: &AppState, d: &Destination, cfg: &DestinationConfig) -> Value {
    let p = &d.progress;
    let live = state.streams.live(&d.org, &d.id);
    let lag = live.as_ref().map(|l| l.lag_events.load(std::sync::atomic::Ordering::Relaxed));
    let lag_secs =
        live.as_ref().map(|l| l.lag_micros.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1e6);
    let mut v = serde_json::to_value(cfg).unwrap_or_default();
    v["id"] = json!(d.id);
    v["endpoint"] = json!(cfg.endpoint());
    v["has_secret"] = json!(d.sealed_secret.is_some());
    v["created_by"] = json!(d.created_by);
    v["created_at"] = json!(format_rfc3339(d.created_at));
    v["updated_at"] = json!(format_rfc3339(d.updated_at));
    v["state"] = json!(p.state);
    v["error"] = json!(p.error);
    v["cursor"] = json!(p.cursor);
    v["delivered"] = json!(p.delivered);
    v["delivered_at"] = json!(p.delivered_at.map(format_rfc3339));
    v["failing_since"] = json!(p.failing_since.map(format_rfc3339));
    v["lag_events"] = json!(lag);
    v["lag_seconds"] = json!(lag_secs);
    v
}

async fn find(state: &AppState, org: &str, id: &str) -> ApiResult<Destination> {
    state
        .store
        .destinations(Some(org))
        .await?
        .into_iter()
        .find(|d| d.id == id)
        .ok_or_else(|| ApiError::not_found(format!("destination {id}")))
}

pub async fn list(
    State(state): State<AppState>,
    Path(org): Path<String>,
    p: Principal,
) -> ApiResult<Json<Value>> {
    p.require_permission(&state, &org, Permission::OrgSettings).await?;
    let mut out = Vec::new();
    for d in state.store.destinations(Some(&org)).await? {
        out.push(destination_json(&state, &d, &config_of(&d)?));
    }
    Ok(Json(json!({ "destinations": out })))
}

pub async fn get(
    State(state): State<AppState>,
    Path((org, id)): Path<(String, String)>,
    p: Principal,
) -> ApiResult<Json<Value>> {
    p.require_permission(&state, &org, Permission::OrgSettings).await?;
    let d = find(&state, &org, &id).await?;
    Ok(Json(destination_json(&state, &d, &config_of(&d)?)))
}

/// The secret a destination of this kind needs: a new signing secret for a webhook, the given token
/// for HEC, none for syslog.
fn secret_for(kind: Kind, token: Option<String>) -> ApiResult<Option<String>> {
    match (kind, token) {
        (Kind::Webhook, None) => Ok(Some(seal::new_signing_secret())),
        (Kind::SplunkHec, Some(t)) if !t.trim().is_empty() && t.len() <= 512 => Ok(Some(t)),
        (Kind::SplunkHec, _) => Err(ApiError::bad_request(
            "invalid_field",
            "a splunk_hec destination needs its HEC token (1 to 512 characters)",
        )
        .with_field("token")),
        (_, Some(_)) => Err(ApiError::bad_request("invalid_field", "token is for splunk_hec destinations")
            .with_field("token")),
        (Kind::Syslog, None) => Ok(None),
    }
}

pub async fn create(
    State(state): State<AppState>,
    Path(org): Path<String>,
    p: Principal,
    addr: ClientAddr,
    JsonBody(body): JsonBody,
) -> ApiResult<(StatusCode, Json<Value>)> {
    p.require_permission(&state, &org, Permission::OrgSettings).await?;
    let body: NewDestination = typed(body)?;
    let existing = state.store.destinations(Some(&org)).await?;
    let max = state.settings.streaming.max_per_org;
    if existing.len() >= max {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "too_many_destinations",
            format!("an organization may have at most {max} destinations (streaming.max_per_org)"),
        ));
    }
    let cfg = body.fields.config();
    cfg.check()?;
    let size = state.store.tree_size(&org).await?;
    let cursor = match (body.start_seq, body.start_time.as_deref()) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request("invalid_field", "give start_seq or start_time, not both")
                .with_field("start_time"));
        }
        (Some(seq), None) if seq <= size => seq,
        (Some(_), None) => {
            return Err(ApiError::bad_request(
                "invalid_field",
                format!("start_seq must be at most the log's size, {size}"),
            )
            .with_field("start_seq"));
        }
        (None, Some(t)) => {
            let t = parse_rfc3339(t).ok_or_else(|| {
                ApiError::bad_request("invalid_field", "start_time must be an RFC 3339 time")
                    .with_field("start_time")
            })?;
            stream::seq_at_time(state.store.as_ref(), &org, t).await?
        }
        (None, None) => size,
    };
    let secret = secret_for(cfg.kind, body.fields.token)?;
    let t = now();
    let d = Destination {
        org: org.clone(),
        id: format!("dst_{}", uuid::Uuid::now_v7().simple()),
        config: serde_json::to_value(&cfg).map_err(ApiError::internal)?,
        sealed_secret: secret.as_deref().map(|s| state.streams.sealer.seal(s.as_bytes())),
        created_by: p.actor_id(),
        created_at: t,
        updated_at: t,
        progress: DestinationProgress { cursor, state: ACTIVE.into(), ..Default::default() },
    };
    state.store.put_destination(&d).await?;
    Audit::new(p.actor_id(), "destination.created", "destination")
        .target(&d.id, Some(cfg.name.clone()))
        .ip(addr.text())
        .info("kind", json!(cfg.kind.as_str()))
        .info("endpoint", json!(cfg.endpoint()))
        .info("format", json!(cfg.format.as_str()))
        .info("start_seq", json!(cursor))
        .record(&state, &org)
        .await?;
    tracing::info!(org = %org, destination = %d.id, endpoint = %cfg.endpoint(), "destination created");
    state.streams.changed();
    let mut out = destination_json(&state, &d, &cfg);
    if cfg.kind == Kind::Webhook {
        out["secret"] = json!(secret);
    }
    Ok((StatusCode::CREATED, Json(out)))
}

pub async fn update(
    State(state): State<AppState>,
    Path((org, id)): Path<(String, String)>,
    p: Principal,
    addr: ClientAddr,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Value>> {
    p.require_permission(&state, &org, Permission::OrgSettings).await?;
    let body: DestinationFields = typed(body)?;
    let mut d = find(&state, &org, &id).await?;
    let old = config_of(&d)?;
    let cfg = body.config();
    if cfg.kind != old.kind {
        return Err(ApiError::bad_request(
            "invalid_field",
            "a destination's kind cannot change; create another destination",
        )
        .with_field("kind"));
    }
    cfg.check()?;
    if let Some(token) = body.token {
        let secret = secret_for(cfg.kind, Some(token))?;
        d.sealed_secret = secret.as_deref().map(|s| state.streams.sealer.seal(s.as_bytes()));
    }
    state.streams.stop(&org, &id).await;
    d.config = serde_json::to_value(&cfg).map_err(ApiError::internal)?;
    d.updated_at = now();
    state.store.put_destination(&d).await?;
    Audit::new(p.actor_id(), "destination.updated", "destination")
        .target(&d.id, Some(cfg.name.clone()))
        .ip(addr.text())
        .info("endpoint", json!(cfg.endpoint()))
        .info("format", json!(cfg.format.as_str()))
        .record(&state, &org)
        .await?;
    state.streams.changed();
    Ok(Json(destination_json(&state, &d, &cfg)))
}

pub async fn delete(
    State(state): State<AppState>,
    Path((org, id)): Path<(String, String)>,
    p: Principal,
    addr: ClientAddr,
) -> ApiResult<StatusCode> {
    p.require_permission(&state, &org, Permission::OrgSettings).await?;
    let d = find(&state, &org, &id).await?;
    let cfg = config_of(&d)?;
    state.streams.stop(&org, &id).await;
    state.store.delete_destination(&org, &id).await?;
    Audit::new(p.actor_id(), "destination.deleted", "destination")
        .target(&id, Some(cfg.name))
        .ip(addr.text())
        .record(&state, &org)
        .await?;
    state.streams.changed();
    Ok(StatusCode::NO_CONTENT)
}

/// Pauses delivery (`pause`), or resumes it (`resume`), optionally replaying from a seq.
async fn set_state(
    state: &AppState,
    org: &str,
    id: &str,
    p: &Principal,
    addr: &ClientAddr,
    resume: Option<Option<u64>>,
) -> ApiResult<Json<Value>> {
    p.require_permission(state, org, Permission::OrgSettings).await?;
    let mut d = find(state, org, id).await?;
    let cfg = config_of(&d)?;
    let size = state.store.tree_size(org).await?;
    state.streams.stop(org, id).await;
    // The task is gone: re-read what it last recorded.
    d = find(state, org, id).await?;
    let (action, from) = match resume {
        None => {
            d.progress.state = PAUSED.into();
            d.progress.error = Some(format!("paused by {}", p.actor_id()));
            ("destination.paused", None)
        }
        Some(from) => {
            if let Some(seq) = from {
                if seq > size {
                    return Err(ApiError::bad_request(
                        "invalid_field",
                        format!("from_seq must be at most the log's size, {size}"),
                    )
                    .with_field("from_seq"));
                }
                d.progress.cursor = seq;
            }
            d.progress.state = ACTIVE.into();
            d.progress.error = None;
            d.progress.failing_since = None;
            ("destination.resumed", from)
        }
    };
    state.store.set_destination_progress(org, id, &d.progress).await?;
    d.updated_at = now();
    state.store.put_destination(&d).await?;
    let mut audit =
        Audit::new(p.actor_id(), action, "destination").target(id, Some(cfg.name.clone())).ip(addr.text());
    if let Some(seq) = from {
        audit = audit.info("from_seq", json!(seq));
    }
    audit.record(state, org).await?;
    state.streams.changed();
    Ok(Json(destination_json(state, &d, &cfg)))
}

pub async fn pause(
    State(state): State<AppState>,
    Path((org, id)): Path<(String, String)>,
    p: Principal,
    addr: ClientAddr,
) -> ApiResult<Json<Value>> {
    set_state(&state, &org, &id, &p, &addr, None).await
}

pub async fn resume(
    State(state): State<AppState>,
    Path((org, id)): Path<(String, String)>,
    p: Principal,
    addr: ClientAddr,
    body: axum::body::Bytes,
) -> ApiResult<Json<Value>> {
    p.require_permission(&state, &org, Permission::OrgSettings).await?;
    // The body is optional: without one, delivery resumes where it stopped.
    let from = if body.is_empty() {
        None
    } else {
        let v = serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request("malformed_json", format!("the body is not valid JSON: {e}"))
        })?;
        typed::<Resume>(v)?.from_seq
    };
    set_state(&state, &org, &id, &p, &addr, Some(from)).await
}

/// A new signing secret for a webhook; the old one stops working at once.
pub async fn rotate_secret(
    State(state): State<AppState>,
    Path((org, id)): Path<(String, String)>,
    p: Principal,
    addr: ClientAddr,
) -> ApiResult<Json<Value>> {
    p.require_permission(&state, &org, Permission::OrgSettings).await?;
    let mut d = find(&state, &org, &id).await?;
    let cfg = config_of(&d)?;
    if cfg.kind != Kind::Webhook {
        return Err(ApiError::bad_request(
            "not_a_webhook",
            "only webhook destinations have a signing secret; change a HEC token with PUT",
        ));
    }
    let secret = seal::new_signing_secret();
    state.streams.stop(&org, &id).await;
    d.sealed_secret = Some(state.streams.sealer.seal(secret.as_bytes()));
    d.updated_at = now();
    state.store.put_destination(&d).await?;
    Audit::new(p.actor_id(), "destination.secret_rotated", "destination")
        .target(&id, Some(cfg.name.clone()))
        .ip(addr.text())
        .record(&state, &org)
        .await?;
    state.streams.changed();
    let mut out = destination_json(&state, &d, &cfg);
    out["secret"] = json!(secret);
    Ok(Json(out))
}

/// The log in `seq` order after `after_seq`, up to the latest signed checkpoint, for SIEMs that poll:
/// unlike queries by `time`, nothing that arrives late is ever behind the position.
pub async fn feed(
    State(state): State<AppState>,
    Path(org): Path<String>,
    p: Principal,
    addr: ClientAddr,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Value>> {
    p.require_read(&state, &org).await?;
    let pairs = query_pairs(raw.as_deref())?;
    let (mut after, mut limit) = (None, 100usize);
    for (k, v) in &pairs {
        let n: u64 = v.parse().map_err(|_| {
            ApiError::bad_request("invalid_field", format!("{k} must be a non-negative integer"))
                .with_field(k.clone())
        })?;
        match k.as_str() {
            "after_seq" => after = Some(n),
            "limit" if (1..=1000).contains(&n) => limit = n as usize,
            "limit" => {
                return Err(
                    ApiError::bad_request("invalid_field", "limit must be 1 to 1000").with_field("limit")
                );
            }
            _ => {
                return Err(ApiError::bad_request(
                    "unknown_parameter",
                    format!("{k} is not a parameter here"),
                )
                .with_field(k.clone()));
            }
        }
    }
    let checkpoint = state.store.latest_checkpoint(&org).await?;
    let end = checkpoint.as_ref().map_or(0, |c| c.size);
    let next = after.map_or(0, |a| a.saturating_add(1));
    let entries = stream::follow::read(state.store.as_ref(), &org, next, end, limit, false).await?;
    let from = state.store.self_audit_from(&org).await?;
    let mut events = Vec::with_capacity(entries.len());
    let mut last = after;
    for entry in &entries {
        if let stream::follow::Entry::Event(r) = entry {
            let e = trail_model::canonical::decode(&r.bytes).map_err(ApiError::internal)?;
            let mut v = e.to_json(&trail_merkle::leaf_hash(&r.bytes));
            v["self_audit"] = json!(crate::audit::is_self_audit(&e, from));
            events.push(v);
            last = Some(r.seq);
        }
    }
    let filter = trail_model::query::Filter::default();
    let search =
        reads::Search { pairs: &pairs, filter: &filter, returned: events.len(), paged: after.is_some() };
    reads::searched(&state, &org, (&p).into(), &addr, search).await?;
    Ok(Json(json!({
        "events": events,
        "next_after_seq": last,
        "checkpoint": checkpoint.map(|c| c.note),
        "tree_size": end,
    })))
}
