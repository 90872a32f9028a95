//! Sign-in, sign-out and `GET /v1/me`.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use trail_model::time::format_rfc3339;

use super::JsonBody;
use crate::AppState;
use crate::auth::{self, Principal, SESSION_COOKIE};
use crate::error::{ApiError, ApiResult};
use crate::metrics::Metrics;

fn string_field<'a>(body: &'a Value, name: &str) -> ApiResult<&'a str> {
    body.get(name).and_then(Value::as_str).ok_or_else(|| {
        ApiError::bad_request("invalid_field", format!("{name} is required and must be a string"))
            .with_field(name)
    })
}

pub async fn login(State(state): State<AppState>, JsonBody(body): JsonBody) -> ApiResult<Response> {
    let email = string_field(&body, "email")?.trim().to_string();
    let password = string_field(&body, "password")?.to_string();
    let user = state.store.user_by_email(&email).await?;
    let phc = user.as_ref().map_or_else(|| auth::dummy_hash().to_string(), |u| u.password_hash.clone());
    // Argon2 is deliberately slow: keep it off the async workers.
    let ok = tokio::task::spawn_blocking(move || auth::verify_password(&password, &phc))
        .await
        .map_err(ApiError::internal)?;
    let Some(user) = user.filter(|_| ok) else {
        Metrics::add(&state.metrics.sign_in_failures, 1);
        tracing::info!("sign-in failed");
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
            "wrong email or password",
        ));
    };
    let issued = auth::issue_session(&user.id, &state);
    state.store.create_session(&issued.session).await?;
    let max_age = state.settings.auth.session_max_hours * 3600;
    let secure = if state.settings.auth.secure_cookies { "; Secure" } else { "" };
    let cookie = format!(
        "{SESSION_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}",
        issued.token
    );
    let body = json!({
        "token": issued.token,
        "csrf_token": issued.csrf_token,
        "expires_at": format_rfc3339(issued.session.expires_at),
        "user": {"id": user.id, "email": user.email},
    });
    let mut resp = Json(body).into_response();
    resp.headers_mut()
        .insert(header::SET_COOKIE, HeaderValue::from_str(&cookie).map_err(ApiError::internal)?);
    Ok(resp)
}

pub async fn logout(State(state): State<AppState>, principal: Principal) -> ApiResult<Response> {
    let Principal::User { session_id, .. } = &principal else {
        return Err(ApiError::forbidden("API keys cannot sign out; revoke the key instead"));
    };
    state.store.delete_session(session_id).await?;
    state.forget_session(session_id);
    let clear = format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&clear).map_err(ApiError::internal)?);
    Ok(resp)
}

pub async fn me(State(state): State<AppState>, principal: Principal) -> ApiResult<Json<Value>> {
    let user = principal.user()?;
    let orgs = state.store.user_orgs(&user.id).await?;
    let orgs: Vec<Value> = orgs
        .into_iter()
        .map(|(o, perms)| {
            json!({"slug": o.slug, "name": o.name, "permissions": perms.iter().map(|p| p.as_str()).collect::<Vec<_>>()})
        })
        .collect();
    Ok(Json(json!({"id": user.id, "email": user.email, "server_admin": user.server_admin, "orgs": orgs})))
}
