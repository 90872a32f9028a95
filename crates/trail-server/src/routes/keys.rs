//! API keys of an org: created and revoked by holders of `KEY-MANAGEMENT`; the secret is shown once.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};
use trail_model::time::{format_rfc3339, now, parse_rfc3339};
use trail_store::{ApiKey, Permission, Scope};

use super::JsonBody;
use super::bodies::{NewApiKey, typed};
use crate::AppState;
use crate::audit::Audit;
use crate::auth::{self, ClientAddr, Principal};
use crate::error::{ApiError, ApiResult};

pub fn key_json(k: &ApiKey) -> Value {
    json!({
        "id": k.id,
        "name": k.name,
        "scopes": k.scopes.iter().map(Scope::as_str).collect::<Vec<_>>(),
        "created_by": k.created_by,
        "created_at": format_rfc3339(k.created_at),
        "expires_at": k.expires_at.map(format_rfc3339),
        "revoked_at": k.revoked_at.map(format_rfc3339),
        "last_used_at": k.last_used_at.map(format_rfc3339),
    })
}

pub async fn list(
    State(state): State<AppState>,
    Path(org): Path<String>,
    principal: Principal,
) -> ApiResult<Json<Value>> {
    principal.require_permission(&state, &org, Permission::KeyManagement).await?;
    let keys = state.store.api_keys(&org).await?;
    Ok(Json(json!({"api_keys": keys.iter().map(key_json).collect::<Vec<_>>()})))
}

pub async fn create(
    State(state): State<AppState>,
    Path(org): Path<String>,
    principal: Principal,
    addr: ClientAddr,
    JsonBody(body): JsonBody,
) -> ApiResult<(StatusCode, Json<Value>)> {
    principal.require_permission(&state, &org, Permission::KeyManagement).await?;
    let body: NewApiKey = typed(body)?;
    let name = body.name.trim().to_string();
    if name.is_empty() || body.name.chars().count() > 100 {
        return Err(
            ApiError::bad_request("invalid_field", "name must be 1-100 characters").with_field("name")
        );
    }
    if body.scopes.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_field",
            "scopes must be a non-empty list of \"events:write\" and \"events:read\"",
        )
        .with_field("scopes"));
    }
    let mut scopes: Vec<Scope> = body.scopes.iter().map(|s| Scope::from(*s)).collect();
    scopes.sort();
    scopes.dedup();
    let expires_at = match &body.expires_at {
        None => None,
        Some(s) => Some(parse_rfc3339(s).filter(|t| *t > now()).ok_or_else(|| {
            ApiError::bad_request("invalid_field", "expires_at must be a future RFC 3339 time")
                .with_field("expires_at")
        })?),
    };
    // A key that reads events (or mints viewer tokens that do) reads what LOG-MANAGEMENT reads: only
    // a holder may hand one out.
    if scopes.contains(&Scope::EventsRead) || scopes.contains(&Scope::ViewerMint) {
        super::access::require_grantable(&state, &org, &principal, &[Permission::LogManagement]).await?;
    }
    let (key, secret) = auth::new_api_key(&org, &name, scopes, Some(principal.actor_id()), expires_at);
    state.store.create_api_key(&key).await?;
    Audit::new(principal.actor_id(), "api_key.created", "api_key")
        .target(&key.id, Some(key.name.clone()))
        .ip(addr.text())
        .info("scopes", json!(key.scopes.iter().map(Scope::as_str).collect::<Vec<_>>()))
        .record(&state, &org)
        .await?;
    tracing::info!(org = %org, key_id = %key.id, "API key created");
    let mut out = key_json(&key);
    out["secret"] = json!(secret);
    Ok((StatusCode::CREATED, Json(out)))
}

pub async fn revoke(
    State(state): State<AppState>,
    Path((org, id)): Path<(String, String)>,
    principal: Principal,
    addr: ClientAddr,
) -> ApiResult<StatusCode> {
    principal.require_permission(&state, &org, Permission::KeyManagement).await?;
    state.store.revoke_api_key(&org, &id, now()).await?;
    Audit::new(principal.actor_id(), "api_key.revoked", "api_key")
        .target(&id, None)
        .ip(addr.text())
        .record(&state, &org)
        .await?;
    tracing::info!(org = %org, key_id = %id, "API key revoked");
    Ok(StatusCode::NO_CONTENT)
}
