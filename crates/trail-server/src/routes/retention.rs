//! Retention settings, the archive listing and restores (PRODUCT.md §8).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};
use trail_model::time::{format_rfc3339, now, parse_rfc3339};
use trail_store::{Export, ExportFormat, ExportKind, OrgSettings, Permission};

use super::JsonBody;
use super::bodies::{NewRestore, OrgSettingsChange, typed};
use crate::AppState;
use crate::audit::Audit;
use crate::auth::{self, ClientAddr, Principal};
use crate::error::{ApiError, ApiResult};
use crate::retention::Policy;

fn settings_json(state: &AppState, s: Option<&OrgSettings>) -> Value {
    let p = Policy::of(&state.settings.retention, s);
    json!({
        "hot_days": p.hot_days,
        "archive_days": p.archive_days,
        "legal_hold": p.legal_hold,
        "legal_hold_reason": s.and_then(|s| s.legal_hold_reason.clone()),
        "read_audit": p.read_audit,
        "default_range": p.default_range,
        "updated_at": s.map(|s| format_rfc3339(s.updated_at)),
        "updated_by": s.and_then(|s| s.updated_by.clone()),
        "server_defaults": s.is_none(),
        "bounds": {"min_days": state.settings.retention.min_days, "max_days": state.settings.retention.max_days},
    })
}

pub async fn get(
    State(state): State<AppState>,
    Path(org): Path<String>,
    p: Principal,
) -> ApiResult<Json<Value>> {
    p.require_permission(&state, &org, Permission::OrgSettings).await?;
    let s = state.store.org_settings(&org).await?;
    Ok(Json(settings_json(&state, s.as_ref())))
}

pub async fn update(
    State(state): State<AppState>,
    Path(org): Path<String>,
    p: Principal,
    addr: ClientAddr,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Value>> {
    p.require_permission(&state, &org, Permission::OrgSettings).await?;
    let body: OrgSettingsChange = typed(body)?;
    const FIELDS: [&str; 6] =
        ["hot_days", "archive_days", "legal_hold", "legal_hold_reason", "read_audit", "default_range"];
    let old = state.store.org_settings(&org).await?;
    let current = Policy::of(&state.settings.retention, old.as_ref());
    let days = |k: &str, given: Option<u32>, current: u32| -> ApiResult<u32> {
        let Some(n) = given else { return Ok(current) };
        state
            .settings
            .retention
            .check_days(k, n)
            .map_err(|e| ApiError::bad_request("invalid_field", e).with_field(k))?;
        Ok(n)
    };
    let hot_days = days("hot_days", body.hot_days, current.hot_days)?;
    let archive_days = days("archive_days", body.archive_days, current.archive_days)?;
    let legal_hold = body.legal_hold.unwrap_or(current.legal_hold);
    let reason = match body.legal_hold_reason {
        None => old.as_ref().and_then(|s| s.legal_hold_reason.clone()),
        Some(None) => None,
        Some(Some(s)) if s.chars().count() <= 500 => Some(s.trim().to_string()).filter(|s| !s.is_empty()),
        Some(Some(_)) => {
            return Err(ApiError::bad_request(
                "invalid_field",
                "legal_hold_reason must be text of at most 500 characters",
            )
            .with_field("legal_hold_reason"));
        }
    };
    if legal_hold && reason.is_none() {
        return Err(ApiError::bad_request(
            "invalid_field",
            "a legal hold needs a legal_hold_reason (e.g. the case or ticket)",
        )
        .with_field("legal_hold_reason"));
    }
    let new = OrgSettings {
        hot_days,
        archive_days,
        legal_hold,
        legal_hold_reason: if legal_hold { reason } else { None },
        read_audit: body.read_audit.unwrap_or(current.read_audit),
        default_range: match body.default_range {
            Some(r) => Some(r.as_str().to_string()),
            None => old.as_ref().and_then(|s| s.default_range.clone()),
        },
        updated_at: now(),
        updated_by: Some(p.actor_id()),
    };
    state.store.set_org_settings(&org, &new).await?;
    state.forget_policy(&org);
    let before = settings_json(&state, old.as_ref());
    let after = settings_json(&state, Some(&new));
    let pick = |v: &Value| Value::Object(FIELDS.iter().map(|k| (k.to_string(), v[*k].clone())).collect());
    Audit::new(p.actor_id(), "retention.updated", "organization")
        .target(&org, None)
        .ip(addr.text())
        .info("before", pick(&before))
        .info("after", pick(&after))
        .record(&state, &org)
        .await?;
    // Turning read auditing off (or on) is its own event, easy to find and to alert on.
    if current.read_audit != new.read_audit {
        let action = if new.read_audit { "log.read_audit_enabled" } else { "log.read_audit_disabled" };
        Audit::new(p.actor_id(), action, "organization")
            .target(&org, None)
            .ip(addr.text())
            .record(&state, &org)
            .await?;
    }
    Ok(Json(after))
}

fn archive(state: &AppState) -> ApiResult<&crate::archive::Archive> {
    state.archive.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "archive_unavailable",
            "the archive storage is not available on this server",
        )
    })
}

pub async fn list(
    State(state): State<AppState>,
    Path(org): Path<String>,
    p: Principal,
) -> ApiResult<Json<Value>> {
    p.require_read(&state, &org).await?;
    let entries = archive(&state)?.list(Some(&org)).await.map_err(|e| {
        tracing::error!(error = %e, "cannot list the archive");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "archive_unavailable",
            "the archive storage cannot be read right now",
        )
    })?;
    let parts: Vec<Value> = entries
        .iter()
        .filter(|e| e.manifest.org == org)
        .map(|e| {
            let m = &e.manifest;
            json!({"period": m.period, "first_seq": m.first_seq, "last_seq": m.last_seq, "row_count": m.row_count,
                   "time_min": m.time_min, "time_max": m.time_max, "size_bytes": m.size_bytes, "sha256": m.sha256,
                   "archived_at": m.archived_at, "file": e.data_path(), "manifest": e.manifest_path})
        })
        .collect();
    Ok(Json(json!({"parts": parts})))
}

pub async fn restore(
    State(state): State<AppState>,
    Path(org): Path<String>,
    p: Principal,
    addr: ClientAddr,
    JsonBody(body): JsonBody,
) -> ApiResult<(StatusCode, Json<Value>)> {
    p.require_read(&state, &org).await?;
    archive(&state)?;
    let body: NewRestore = typed(body)?;
    let time = |k: &str, v: &str| -> ApiResult<i64> {
        parse_rfc3339(v).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_field",
                format!("{k} must be an RFC 3339 time, e.g. 2025-01-01T00:00:00Z"),
            )
            .with_field(k)
        })
    };
    let (from, to) = (time("from", &body.from)?, time("to", &body.to)?);
    if from >= to {
        return Err(ApiError::bad_request("invalid_window", "from must be before to").with_field("from"));
    }
    let name = match body.name.as_deref() {
        Some(n) if !n.trim().is_empty() && n.chars().count() <= 200 => n.trim().to_string(),
        Some(_) => {
            return Err(
                ApiError::bad_request("invalid_field", "name must be 1-200 characters").with_field("name")
            );
        }
        None => format!("restore {} to {}", format_rfc3339(from), format_rfc3339(to)),
    };
    let filters = json!({"from": format_rfc3339(from), "to": format_rfc3339(to)});
    super::exports::admit(&state, &org).await?;
    let export = Export::pending(
        auth::random_id(),
        &org,
        &name,
        ExportFormat::Json,
        ExportKind::Restore,
        filters,
        p.actor_id(),
        now(),
    );
    state.store.create_export(&export).await?;
    Audit::new(p.actor_id(), "export.created", "export")
        .target(&export.id, Some(export.name.clone()))
        .ip(addr.text())
        .info("format", "json")
        .info("filters", export.filters.clone())
        .record(&state, &org)
        .await?;

    Ok((StatusCode::ACCEPTED, Json(super::exports::export_json(&export))))
}
