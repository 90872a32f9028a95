//! Integrity endpoints (PRODUCT.md §7): the log key, checkpoints, inclusion and consistency proofs.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use super::query_pairs;
use crate::AppState;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};

fn text(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

pub fn b64(hashes: &[trail_merkle::Hash]) -> Vec<String> {
    hashes.iter().map(|h| STANDARD.encode(h)).collect()
}

/// The log's public key in signed-note verifier format: `<name>+<key id>+<base64(0x01 ‖ key)>`.
pub async fn log_key(State(state): State<AppState>) -> Response {
    text(format!("{}\n", state.signer.verifier_key()))
}

pub async fn checkpoint(
    State(state): State<AppState>,
    Path(org): Path<String>,
    principal: Principal,
) -> ApiResult<Response> {
    principal.require_view(&state, &org).await?;
    match state.store.latest_checkpoint(&org).await? {
        Some(cp) => Ok(text(cp.note)),
        None => Err(ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "no_checkpoint",
            "this organization's log has no checkpoint yet; one is signed within a second of the first event",
        )),
    }
}

/// Reads the named non-negative integer parameters, rejecting anything else.
fn numbers<const N: usize>(raw: Option<&str>, names: [&'static str; N]) -> ApiResult<[u64; N]> {
    let mut out = [None; N];
    for (k, v) in query_pairs(raw)? {
        let Some(i) = names.iter().position(|n| *n == k) else {
            return Err(ApiError::bad_request("unknown_parameter", format!("{k} is not a parameter here"))
                .with_field(k));
        };
        let n = v.parse::<u64>().map_err(|_| {
            ApiError::bad_request("invalid_field", format!("{k} must be a non-negative integer"))
                .with_field(k.clone())
        })?;
        if out[i].replace(n).is_some() {
            return Err(
                ApiError::bad_request("invalid_field", format!("{k} may be given only once")).with_field(k)
            );
        }
    }
    let mut done = [0; N];
    for (i, v) in out.iter().enumerate() {
        done[i] = v.ok_or_else(|| {
            ApiError::bad_request("missing_field", format!("{} is required", names[i])).with_field(names[i])
        })?;
    }
    Ok(done)
}

pub async fn inclusion(
    State(state): State<AppState>,
    Path(org): Path<String>,
    principal: Principal,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Value>> {
    principal.require_view(&state, &org).await?;
    let [seq, tree_size] = numbers(raw.as_deref(), ["seq", "tree_size"])?;
    let hashes = state.store.inclusion_proof(&org, seq, tree_size).await?;
    Ok(Json(json!({"seq": seq, "tree_size": tree_size, "hashes": b64(&hashes)})))
}

pub async fn consistency(
    State(state): State<AppState>,
    Path(org): Path<String>,
    principal: Principal,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Value>> {
    principal.require_view(&state, &org).await?;
    let [from, to] = numbers(raw.as_deref(), ["from", "to"])?;
    let hashes = state.store.consistency_proof(&org, from, to).await?;
    Ok(Json(json!({"from": from, "to": to, "hashes": b64(&hashes)})))
}

/// The inclusion proof of `seq` against the org's latest checkpoint, or `None` while the event is newer
/// than it (the next checkpoint follows within a second).
pub async fn proof_for(state: &AppState, org: &str, seq: u64) -> ApiResult<Option<Value>> {
    let Some(cp) = state.store.latest_checkpoint(org).await? else {
        return Ok(None);
    };
    if seq >= cp.size {
        return Ok(None);
    }
    let hashes = state.store.inclusion_proof(org, seq, cp.size).await?;
    Ok(Some(json!({"tree_size": cp.size, "hashes": b64(&hashes), "checkpoint": cp.note})))
}
