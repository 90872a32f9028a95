//! Exports (PRODUCT.md §6): request, history, status, download and signed manifest.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use trail_model::query::{QueryContext, parse_filter};
use trail_model::time::{format_rfc3339, now};
use trail_store::{Export, ExportFormat, ExportKind, ExportStatus};

use super::JsonBody;
use super::bodies::{ExportFormatName, NewExport, typed};
use crate::AppState;
use crate::auth::{self, ClientAddr, Principal};
use crate::error::{ApiError, ApiResult};
use crate::exports::{file_path, filter_pairs};

pub fn export_json(e: &Export) -> Value {
    json!({
        "id": e.id, "name": e.name, "format": e.format.as_str(), "kind": e.kind.as_str(), "filters": e.filters, "status": e.status.as_str(),
        "error": e.error, "requested_by": e.requested_by, "created_at": format_rfc3339(e.created_at),
        "started_at": e.started_at.map(format_rfc3339), "finished_at": e.finished_at.map(format_rfc3339),
        "expires_at": e.expires_at.map(format_rfc3339), "row_count": e.row_count, "size_bytes": e.size_bytes,
        "sha256": e.sha256,
    })
}

/// A file name for `Content-Disposition`: the export's name with anything outside a safe set replaced,
/// so a name can never traverse paths or break the header.
pub fn download_name(name: &str, format: ExportFormat) -> String {
    let base: String = name
        .chars()
        .take(100)
        .map(|c| if c.is_ascii_alphanumeric() || "-_. ".contains(c) { c } else { '_' })
        .collect();
    let base = base.trim_matches(['.', ' ']);
    let base = if base.is_empty() { "export" } else { base };
    format!("{base}.{}", format.extension())
}

pub async fn create(
    State(state): State<AppState>,
    Path(org): Path<String>,
    p: Principal,
    addr: ClientAddr,
    JsonBody(body): JsonBody,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let viewer = exporting_viewer(&state, &org, &p).await?;
    let body: NewExport = typed(body)?;
    let name = body.name.trim();
    if name.is_empty() || body.name.chars().count() > 200 {
        return Err(
            ApiError::bad_request("invalid_field", "name must be 1-200 characters").with_field("name")
        );
    }
    let format = match body.format {
        ExportFormatName::Csv => ExportFormat::Csv,
        ExportFormatName::Json => ExportFormat::Json,
    };
    let mut filters = Value::Object(body.filters.unwrap_or_default());
    let mut pairs = filter_pairs(&filters)?;
    if let Some((k, _)) = pairs.iter().find(|(_, v)| v.is_empty()) {
        return Err(super::empty_parameter(&format!("filters.{k}")));
    }
    if let Some(v) = viewer {
        // The export runs the filters it stores: the viewer's, narrowed to the token's.
        v.constrain(&mut pairs).map_err(|mut e| {
            e.field = e.field.map(|f| format!("filters.{f}"));
            e
        })?;
        filters = crate::exports::filters_object(&pairs);
    }
    let now = now();
    let filter = parse_filter(&pairs, QueryContext { now, oldest: state.hot_start(&org, now).await? })
        .map_err(|e| {
            let mut err = ApiError::from(e);
            err.field = err.field.map(|f| format!("filters.{f}"));
            err
        })?;
    // The window is fixed now, so an export run later covers what the caller saw.
    filters["from"] = json!(format_rfc3339(filter.from));
    filters["to"] = json!(format_rfc3339(filter.to));
    admit(&state, &org).await?;
    let owner = viewer.map_or_else(|| p.actor_id(), crate::viewer::Viewer::owner);
    let export =
        Export::pending(auth::random_id(), &org, name, format, ExportKind::Query, filters, owner, now);
    state.store.create_export(&export).await?;
    p.audit("export.created", "export")
        .target(&export.id, Some(export.name.clone()))
        .ip(addr.text())
        .info("format", format.as_str())
        .info("filters", export.filters.clone())
        .record(&state, &org)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(export_json(&export))))
}

/// The per-org bounds on exports (pending or running, and bytes of files kept), checked before an
/// export or restore is queued: one org cannot fill the queue or the disk for the others.
pub async fn admit(state: &AppState, org: &str) -> ApiResult<()> {
    let limits = &state.settings.exports;
    let exports = state.store.exports(org).await?;
    let queued =
        exports.iter().filter(|e| matches!(e.status, ExportStatus::Pending | ExportStatus::Running)).count();
    let too_many = |message: String| {
        let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_exports", message);
        e.retry_after = Some(60);
        e
    };
    if queued >= limits.max_pending_per_org {
        return Err(too_many(format!(
            "this organization has {queued} exports pending or running (at most {}); wait for one to finish",
            limits.max_pending_per_org
        )));
    }
    let kept = crate::exports::kept_bytes(&exports);
    if kept >= limits.max_bytes_per_org {
        return Err(too_many(format!(
            "this organization keeps {kept} bytes of export files (at most {}); they are deleted when they expire",
            limits.max_bytes_per_org
        )));
    }
    Ok(())
}

pub async fn list(
    State(state): State<AppState>,
    Path(org): Path<String>,
    p: Principal,
) -> ApiResult<Json<Value>> {
    let viewer = exporting_viewer(&state, &org, &p).await?;
    let list = state.store.exports(&org).await?;
    let mine = |e: &&Export| viewer.is_none_or(|v| v.sees_export(e));
    Ok(Json(json!({"exports": list.iter().filter(mine).map(export_json).collect::<Vec<_>>()})))
}

/// Exports need `require_read`, or a viewer token minted to export (answered, to narrow with).
async fn exporting_viewer<'a>(
    state: &AppState,
    org: &str,
    p: &'a Principal,
) -> ApiResult<Option<&'a crate::viewer::Viewer>> {
    let viewer = p.require_view(state, org).await?;
    if viewer.is_some_and(|v| !v.grant.can_export) {
        return Err(ApiError::forbidden("this viewer token was not minted to export"));
    }
    Ok(viewer)
}

/// An export the caller may see: any of the org's, or, for a viewer, its user's within its filter.
async fn find(state: &AppState, org: &str, id: &str, p: &Principal) -> ApiResult<Export> {
    let viewer = exporting_viewer(state, org, p).await?;
    state
        .store
        .export(org, id)
        .await?
        .filter(|e| viewer.is_none_or(|v| v.sees_export(e)))
        .ok_or_else(|| ApiError::not_found(format!("export {id}")))
}

pub async fn get(
    State(state): State<AppState>,
    Path((org, id)): Path<(String, String)>,
    p: Principal,
) -> ApiResult<Json<Value>> {
    Ok(Json(export_json(&find(&state, &org, &id, &p).await?)))
}

fn ready(e: &Export) -> ApiResult<()> {
    match e.status {
        ExportStatus::Completed => Ok(()),
        ExportStatus::Expired => Err(ApiError::new(
            StatusCode::GONE,
            "export_expired",
            "this export's file was deleted after its retention",
        )),
        ExportStatus::Failed => Err(ApiError::new(
            StatusCode::CONFLICT,
            "export_failed",
            format!("this export failed: {}", e.error.as_deref().unwrap_or("unknown reason")),
        )),
        _ => Err(ApiError::new(
            StatusCode::CONFLICT,
            "export_not_ready",
            format!("this export is {}; download it once completed", e.status.as_str()),
        )),
    }
}

pub async fn download(
    State(state): State<AppState>,
    Path((org, id)): Path<(String, String)>,
    p: Principal,
    addr: ClientAddr,
) -> ApiResult<Response> {
    let e = find(&state, &org, &id, &p).await?;
    ready(&e)?;
    let file = tokio::fs::File::open(file_path(&state, &e)).await.map_err(|err| {
        if err.kind() == std::io::ErrorKind::NotFound {
            ApiError::new(StatusCode::GONE, "export_expired", "this export's file is gone")
        } else {
            ApiError::internal(err)
        }
    })?;
    p.audit("export.downloaded", "export")
        .target(&e.id, Some(e.name.clone()))
        .ip(addr.text())
        .record(&state, &org)
        .await?;
    let ctype = e.format.content_type();
    let disposition = format!("attachment; filename=\"{}\"", download_name(&e.name, e.format));
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(file, 1 << 16));
    Ok((
        [
            (header::CONTENT_TYPE, ctype.to_string()),
            (header::CONTENT_DISPOSITION, disposition),
            (header::CONTENT_LENGTH, e.size_bytes.to_string()),
        ],
        body,
    )
        .into_response())
}

pub async fn manifest(
    State(state): State<AppState>,
    Path((org, id)): Path<(String, String)>,
    p: Principal,
) -> ApiResult<Response> {
    let e = find(&state, &org, &id, &p).await?;
    if e.status != ExportStatus::Expired {
        ready(&e)?;
    }
    let note = e
        .manifest
        .ok_or_else(|| ApiError::new(StatusCode::CONFLICT, "export_not_ready", "no manifest yet"))?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], note).into_response())
}

#[cfg(test)]
mod tests {
    #[test]
    fn download_names_cannot_traverse_or_break_headers() {
        use trail_store::ExportFormat::{Csv, Json};
        assert_eq!(super::download_name("Q3 audit", Csv), "Q3 audit.csv");
        assert_eq!(super::download_name("../../etc/passwd", Json), "_.._etc_passwd.jsonl");
        assert_eq!(super::download_name("a\"b\r\nc", Csv), "a_b__c.csv");
        assert_eq!(super::download_name("..", Csv), "export.csv");
    }
}
