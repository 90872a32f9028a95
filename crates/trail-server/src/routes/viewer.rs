//! Viewer tokens and the embedding settings (README "Embed the viewer"; the tokens themselves are
//! `crate::viewer`).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};
use trail_model::time::{MICROS_PER_SECOND, format_rfc3339, now};
use trail_store::{Permission, Scope};

use super::JsonBody;
use super::bodies::{EmbeddingSettings, NewViewerToken, ViewerPermission, typed};
use crate::AppState;
use crate::auth::{ClientAddr, Principal};
use crate::error::{ApiError, ApiResult};
use crate::viewer::{self, EndUser, Grant};

fn token_json(id: &str, g: &Grant) -> Value {
    let mut permissions = vec!["view"];
    if g.can_export {
        permissions.push("export");
    }
    json!({
        "id": id,
        "user": {"id": g.user.id, "name": g.user.name, "email": g.user.email},
        "permissions": permissions,
        "filter": crate::exports::filters_object(&g.filter),
        "created_by": g.created_by,
        "created_at": format_rfc3339(g.created_at),
        "expires_at": format_rfc3339(g.expires_at),
        "revoked_at": g.revoked_at.map(format_rfc3339),
    })
}

/// Listing and revoking: the minting key's kind (`viewer:mint`), or a person with LOG-MANAGEMENT.
async fn require_manage(state: &AppState, org: &str, p: &Principal) -> ApiResult<()> {
    match p {
        Principal::Key(_) => p.require_scope(org, Scope::ViewerMint),
        _ => p.require_permission(state, org, Permission::LogManagement).await,
    }
}

pub async fn mint(
    State(state): State<AppState>,
    Path(org): Path<String>,
    p: Principal,
    addr: ClientAddr,
    JsonBody(body): JsonBody,
) -> ApiResult<(StatusCode, Json<Value>)> {
    p.require_scope(&org, Scope::ViewerMint)?;
    let Principal::Key(key) = &p else { return Err(ApiError::forbidden("minting needs an API key")) };
    let body: NewViewerToken = typed(body)?;
    if body.user.name.as_ref().is_some_and(|n| n.is_empty() || n.chars().count() > 256) {
        return Err(ApiError::bad_request(
            "invalid_field",
            "user.name must be 1-256 characters (or left out)",
        )
        .with_field("user.name"));
    }
    let user = EndUser {
        id: body.user.id.trim().to_string(),
        // Only spaces: no name to show.
        name: body.user.name.map(|n| n.trim().to_string()).filter(|n| !n.is_empty()),
        email: body.user.email,
    };
    if user.id.is_empty() || user.id.chars().count() > 256 {
        return Err(
            ApiError::bad_request("invalid_field", "user.id must be 1-256 characters").with_field("user.id")
        );
    }
    if let Some(e) = &user.email
        && !viewer::email_like(e)
    {
        return Err(ApiError::bad_request(
            "invalid_field",
            format!("user.email {e} is not an email address"),
        )
        .with_field("user.email"));
    }
    let ttl = body.ttl_secs.unwrap_or(viewer::DEFAULT_TTL_SECS);
    if !(1..=viewer::MAX_TTL_SECS).contains(&ttl) {
        return Err(ApiError::bad_request(
            "invalid_field",
            format!("ttl_secs must be 1 to {} (an hour)", viewer::MAX_TTL_SECS),
        )
        .with_field("ttl_secs"));
    }
    // A field given without a value would fix nothing and open the whole org: refused.
    if let Some((k, _)) =
        body.filter.iter().flatten().find(|(_, v)| v.is_null() || v.as_array().is_some_and(Vec::is_empty))
    {
        return Err(crate::routes::empty_parameter(&format!("filter.{k}")));
    }
    let filter = match body.filter {
        Some(m) => crate::exports::filter_pairs(&Value::Object(m)).map_err(|mut e| {
            e.field = e.field.map(|f| f.replacen("filters.", "filter.", 1));
            e.message = e.message.replacen("filters", "filter", 1);
            e
        })?,
        None => Vec::new(),
    };
    viewer::check_filter(&filter)?;
    let t = now();
    let grant = Grant {
        secret_hash: String::new(),
        user,
        can_export: body.permissions.unwrap_or_default().contains(&ViewerPermission::Export),
        filter,
        created_by: key.id.clone(),
        created_at: t,
        expires_at: t + i64::from(ttl) * MICROS_PER_SECOND,
        revoked_at: None,
    };
    if viewer::prune(&state, &org).await? >= viewer::MAX_TOKENS {
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_viewer_tokens",
            format!(
                "this organization has {} live viewer tokens; mint more as some expire",
                viewer::MAX_TOKENS
            ),
        );
        e.retry_after = Some(60);
        return Err(e);
    }
    let (doc, token) = viewer::mint(&org, grant.clone());
    state.store.put_document(&doc, true).await?;
    p.audit("viewer_token.created", "viewer_token")
        .target(&doc.id, None)
        .ip(addr.text())
        .info("for", grant.user.id.clone())
        .info("export", grant.can_export)
        .info("filter", crate::exports::filters_object(&grant.filter))
        .info("expires_at", format_rfc3339(grant.expires_at))
        .record(&state, &org)
        .await?;
    let mut out = token_json(&doc.id, &grant);
    out["token"] = json!(token);
    out["embed_path"] = json!(format!("/embed/orgs/{org}/logs"));
    Ok((StatusCode::CREATED, Json(out)))
}

/// The viewer token making the request: who it is for, what it may do, until when.
pub async fn current(p: Principal) -> ApiResult<Json<Value>> {
    match &p {
        Principal::Viewer(v) => {
            let mut out = token_json(&v.id, &v.grant);
            out["org"] = json!(v.org);
            Ok(Json(out))
        }
        _ => Err(ApiError::forbidden("this endpoint answers a viewer token only")),
    }
}

pub async fn list(
    State(state): State<AppState>,
    Path(org): Path<String>,
    p: Principal,
) -> ApiResult<Json<Value>> {
    require_manage(&state, &org, &p).await?;
    let t = now();
    let docs = viewer::grants(&state, &org).await?;
    let tokens: Vec<Value> = docs
        .iter()
        .filter_map(|d| serde_json::from_value::<Grant>(d.body.clone()).ok().map(|g| (d, g)))
        .filter(|(_, g)| g.expires_at > t && g.revoked_at.is_none())
        .map(|(d, g)| token_json(&d.id, &g))
        .collect();
    Ok(Json(json!({ "viewer_tokens": tokens })))
}

pub async fn revoke(
    State(state): State<AppState>,
    Path((org, id)): Path<(String, String)>,
    p: Principal,
    addr: ClientAddr,
) -> ApiResult<StatusCode> {
    require_manage(&state, &org, &p).await?;
    let not_found = || ApiError::not_found(format!("viewer token {id}"));
    let mut doc = state.store.document(&org, viewer::KIND, &id).await?.ok_or_else(not_found)?;
    let mut grant: Grant = serde_json::from_value(doc.body.clone()).map_err(ApiError::internal)?;
    if grant.revoked_at.is_none() {
        grant.revoked_at = Some(now());
        doc.body = serde_json::to_value(&grant).map_err(ApiError::internal)?;
        doc.updated_at = now();
        state.store.put_document(&doc, false).await?;
        p.audit("viewer_token.revoked", "viewer_token")
            .target(&id, None)
            .ip(addr.text())
            .info("for", grant.user.id.clone())
            .record(&state, &org)
            .await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

pub async fn get_embedding(
    State(state): State<AppState>,
    Path(org): Path<String>,
    p: Principal,
) -> ApiResult<Json<Value>> {
    p.require_permission(&state, &org, Permission::OrgSettings).await?;
    let doc = super::settings_document(&state, &org, viewer::EMBEDDING).await?;
    let origins = viewer::origins_of(doc.as_ref());
    Ok(Json(super::settings_json(json!({ "allowed_origins": origins }), doc.as_ref())))
}

pub async fn put_embedding(
    State(state): State<AppState>,
    Path(org): Path<String>,
    p: Principal,
    addr: ClientAddr,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Value>> {
    p.require_permission(&state, &org, Permission::OrgSettings).await?;
    let body: EmbeddingSettings = typed(body)?;
    if body.allowed_origins.len() > 20 {
        return Err(ApiError::bad_request("invalid_field", "at most 20 allowed_origins")
            .with_field("allowed_origins"));
    }
    let mut origins = Vec::new();
    for (i, o) in body.allowed_origins.iter().enumerate() {
        let o = viewer::check_origin(o.trim()).map_err(|why| {
            ApiError::bad_request("invalid_field", why).with_field(format!("allowed_origins[{i}]"))
        })?;
        if !origins.contains(&o) {
            origins.push(o);
        }
    }
    let before = viewer::allowed_origins(&state, &org).await?;
    let fields = json!({ "allowed_origins": origins });
    let doc =
        super::put_settings_document(&state, &org, viewer::EMBEDDING, fields.clone(), p.actor_id()).await?;
    p.audit("embedding.updated", "organization")
        .target(&org, None)
        .ip(addr.text())
        .info("before", json!(before))
        .info("after", json!(origins))
        .record(&state, &org)
        .await?;
    Ok(Json(super::settings_json(fields, Some(&doc))))
}
