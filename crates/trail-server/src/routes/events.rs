//! Ingest and query of audit events (PRODUCT.md §4).

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use trail_model::event::{TimeBounds, admit_event};
use trail_model::query::{QueryContext, parse_filter, parse_query};
use trail_model::time::{MICROS_PER_SECOND, Micros, format_rfc3339, now};
use trail_model::{FieldError, NewEvent};
use trail_store::{Appended, Scope};

use super::{JsonBody, query_pairs};
use crate::AppState;
use crate::auth::{ClientAddr, Principal};
use crate::error::{ApiError, ApiResult};
use crate::metrics::Metrics;
use crate::reads;

fn rejected(index: usize, item: &Value, e: FieldError) -> Value {
    let mut err = json!({"code": e.code, "message": format!("{}: {}", if e.field.is_empty() { "event" } else { &e.field }, e.message)});
    if !e.field.is_empty() {
        err["field"] = json!(e.field);
    }
    let mut r = json!({"index": index, "status": "rejected", "error": err});
    if let Some(id) = item.get("id").and_then(Value::as_str) {
        r["id"] = json!(id);
    }
    r
}

/// Admission for ingest, before the body is read: at most `limits.max_concurrent_ingest` requests are
/// in flight; the rest are answered 503 with `Retry-After` at once, so a flood neither queues without
/// bound nor buffers unbounded bodies.
pub async fn admit(
    State(state): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Ok(_permit) = state.ingest_permits.clone().try_acquire_owned() else {
        let mut e = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "too many ingest requests at once; nothing of this request was stored, retry after the Retry-After delay",
        );
        e.retry_after = Some(1);
        return e.into_response();
    };
    next.run(req).await
}

pub async fn ingest(
    State(state): State<AppState>,
    Path(org): Path<String>,
    principal: Principal,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    principal.require_scope(&org, Scope::EventsWrite)?;
    let max = state.settings.limits.max_batch_events;
    let (items, single): (&[Value], bool) = match &body {
        Value::Object(m) if m.contains_key("events") => {
            if let Some(k) = m.keys().find(|k| *k != "events") {
                return Err(ApiError::bad_request(
                    "unknown_field",
                    format!("{k} is not allowed beside events"),
                )
                .with_field(k.as_str()));
            }
            match &m["events"] {
                Value::Array(a) if a.is_empty() => {
                    return Err(ApiError::bad_request("invalid_field", "events must not be empty")
                        .with_field("events"));
                }
                Value::Array(a) if a.len() > max => {
                    return Err(ApiError::bad_request(
                        "batch_too_large",
                        format!("a batch may hold at most {max} events"),
                    )
                    .with_field("events"));
                }
                Value::Array(a) => (a.as_slice(), false),
                _ => {
                    return Err(ApiError::bad_request("invalid_field", "events must be an array")
                        .with_field("events"));
                }
            }
        }
        Value::Object(_) => (std::slice::from_ref(&body), true),
        _ => {
            return Err(ApiError::bad_request(
                "invalid_body",
                "send one event object or {\"events\": [...]}",
            ));
        }
    };

    let received_at = now();
    let bounds = TimeBounds { now: received_at, oldest: state.hot_start(&org, received_at).await? };
    let mut results: Vec<Option<Value>> = vec![None; items.len()];
    let mut valid: Vec<NewEvent> = Vec::with_capacity(items.len());
    let mut positions = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let parsed = admit_event(item, bounds);
        match parsed {
            Ok(e) => {
                valid.push(e);
                positions.push(i);
            }
            Err(e) => results[i] = Some(rejected(i, item, e)),
        }
    }
    let rejected_n = items.len() - valid.len();
    Metrics::add(&state.metrics.events_rejected, rejected_n as u64);

    let mut conflicts = 0;
    if !valid.is_empty() {
        let appended = state.store.append(&org, valid, received_at).await?;
        for (pos, a) in positions.into_iter().zip(appended) {
            let (status, counter) = match &a {
                Appended::Created { .. } => ("created", &state.metrics.events_created),
                Appended::Duplicate { .. } => ("duplicate", &state.metrics.events_duplicate),
                Appended::Conflict { .. } => ("conflict", &state.metrics.events_conflict),
            };
            Metrics::add(counter, 1);
            let mut result = json!({"index": pos, "id": a.id(), "seq": a.seq(), "status": status});
            if let Appended::Conflict { seq, .. } = a {
                conflicts += 1;
                result["error"] = json!({
                    "code": "conflict",
                    "message": format!("an event with this id and different content is stored at seq {seq}; nothing was stored"),
                    "field": "id",
                });
            }
            results[pos] = Some(result);
        }
    }
    let results: Vec<Value> = results.into_iter().flatten().collect();
    // A lone event that was rejected or conflicts is a client error; a batch reports per item and
    // answers 200.
    if single && (rejected_n == 1 || conflicts == 1) {
        let error = results[0]["error"].clone();
        let status = if conflicts == 1 { StatusCode::CONFLICT } else { StatusCode::BAD_REQUEST };
        return Ok((status, Json(json!({"error": error, "results": results}))).into_response());
    }
    Ok(Json(json!({ "results": results })).into_response())
}

async fn context(state: &AppState, org: &str) -> ApiResult<QueryContext> {
    let now = now();
    Ok(QueryContext { now, oldest: state.hot_start(org, now).await? })
}

pub async fn query(
    State(state): State<AppState>,
    Path(org): Path<String>,
    principal: Principal,
    addr: ClientAddr,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Value>> {
    let viewer = principal.require_view(&state, &org).await?;
    let mut pairs = query_pairs(raw.as_deref())?;
    if let Some(v) = viewer {
        v.constrain(&mut pairs)?;
    }
    let q = parse_query(&pairs, context(&state, &org).await?)?;
    let page = state.store.query(&org, &q).await?;
    let paged = q.cursor.is_some();
    let search = reads::Search { pairs: &pairs, filter: &q.filter, returned: page.records.len(), paged };
    reads::searched(&state, &org, (&principal).into(), &addr, search).await?;
    let from = state.store.self_audit_from(&org).await?;
    let events: Vec<Value> = page
        .records
        .iter()
        .map(|r| {
            let mut v = r.to_json();
            v["self_audit"] = json!(crate::audit::is_self_audit(&r.event, from));
            v
        })
        .collect();
    Ok(Json(json!({"events": events, "next_cursor": page.next.map(|c| c.encode())})))
}

pub async fn one(
    State(state): State<AppState>,
    Path((org, id)): Path<(String, String)>,
    principal: Principal,
    addr: ClientAddr,
) -> ApiResult<Json<Value>> {
    let viewer = principal.require_view(&state, &org).await?;
    let record = state
        .store
        .event(&org, &id)
        .await?
        // Outside a viewer's filter, an event is not there for them.
        .filter(|r| viewer.is_none_or(|v| v.admits(&r.event)))
        .ok_or_else(|| ApiError::not_found(format!("event {id}")))?;
    reads::viewed(&state, &org, (&principal).into(), &addr, &id, record.event.seq).await?;
    let mut out = record.to_json();
    out["self_audit"] =
        json!(crate::audit::is_self_audit(&record.event, state.store.self_audit_from(&org).await?));
    let proof = super::integrity::proof_for(&state, &org, record.event.seq).await?;
    out["proof_pending"] = json!(proof.is_none());
    out["proof"] = proof.unwrap_or(Value::Null);
    Ok(Json(out))
}

/// Bucket widths the histogram picks from, smallest first.
const WIDTHS: &[Micros] =
    &[60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86_400, 2 * 86_400, 7 * 86_400];
const MAX_BUCKETS: Micros = 120;

fn parse_interval(s: &str) -> Option<Micros> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    // At most seven digits (leading zeros aside), as the document's pattern says.
    let n: Micros = num.parse().ok().filter(|n| (1..10_000_000).contains(n))?;
    // Checked: the number is the client's, and an overflow must be a 400, not a panic or a zero width.
    let secs = match unit {
        "" | "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        "d" => n.checked_mul(86_400),
        _ => None,
    }?;
    secs.checked_mul(MICROS_PER_SECOND).filter(|_| secs > 0)
}

/// The smallest bucket width from [`WIDTHS`] that gives at most [`MAX_BUCKETS`] buckets over `span`.
pub fn default_width(span: Micros) -> Micros {
    WIDTHS
        .iter()
        .map(|s| s * MICROS_PER_SECOND)
        .find(|w| span / w <= MAX_BUCKETS)
        .unwrap_or(7 * 86_400 * MICROS_PER_SECOND)
}

pub async fn histogram(
    State(state): State<AppState>,
    Path(org): Path<String>,
    principal: Principal,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Value>> {
    let viewer = principal.require_view(&state, &org).await?;
    let mut pairs = query_pairs(raw.as_deref())?;
    if let Some(v) = viewer {
        v.constrain(&mut pairs)?;
    }
    let interval = match pairs.iter().position(|(k, _)| k == "interval") {
        Some(i) => Some(parse_interval(&pairs.remove(i).1).ok_or_else(|| {
            ApiError::bad_request("invalid_field", "interval must be a number of seconds or like 5m, 1h, 1d")
                .with_field("interval")
        })?),
        None => None,
    };
    let filter = parse_filter(&pairs, context(&state, &org).await?)?;
    let span = filter.to - filter.from;
    let width = match interval {
        Some(w) if span / w > 10 * MAX_BUCKETS => {
            return Err(ApiError::bad_request("invalid_field", "interval is too small for this window")
                .with_field("interval"));
        }
        Some(w) => w,
        None => default_width(span),
    };
    let got = state.store.histogram(&org, &filter, width).await?;
    reads::counted(&state, &org, &principal).await?;
    let mut counts = got.into_iter().peekable();
    let mut buckets = Vec::new();
    let mut start = filter.from;
    while start < filter.to {
        let count = counts.next_if(|b| b.start == start).map_or(0, |b| b.count);
        buckets.push(json!({"start": format_rfc3339(start), "count": count}));
        // A bucket as wide as the client asked may end past the largest instant.
        let Some(next) = start.checked_add(width) else {
            break;
        };
        start = next;
    }
    Ok(Json(json!({
        "from": format_rfc3339(filter.from),
        "to": format_rfc3339(filter.to),
        "interval_seconds": width / MICROS_PER_SECOND,
        "buckets": buckets,
    })))
}
