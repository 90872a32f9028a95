//! Sign-in, sign-out and `GET /v1/me`.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use trail_model::time::format_rfc3339;

use super::bodies::{self, Typed};
use crate::AppState;
use crate::audit::Audit;
use crate::auth::{self, ClientAddr, Principal, SESSION_COOKIE};
use crate::error::{ApiError, ApiResult};
use crate::metrics::Metrics;
use crate::throttle;

pub async fn login(
    State(state): State<AppState>,
    addr: ClientAddr,
    Typed(body): Typed<bodies::Login>,
) -> ApiResult<Response> {
    let email = body.email.trim().to_lowercase();
    let password = body.password;
    // Bounded before any work: neither reaches the throttle, the store or Argon2 when oversized.
    if body.email.chars().count() > auth::MAX_EMAIL_LEN {
        return Err(ApiError::bad_request(
            "invalid_field",
            format!("email must be at most {} characters", auth::MAX_EMAIL_LEN),
        )
        .with_field("email"));
    }
    if password.chars().count() > auth::MAX_PASSWORD_CHARS {
        return Err(ApiError::bad_request(
            "invalid_field",
            format!("password must be at most {} characters", auth::MAX_PASSWORD_CHARS),
        )
        .with_field("password"));
    }
    let now = trail_model::time::now();
    // The attempt is counted before its password is checked, so concurrent guesses cannot pass
    // the limit; refused attempts cost no store read and no hashing.
    let reservation = match state.throttle.reserve(&email, addr.0, now) {
        Ok(r) => r,
        Err(blocked) => {
            Metrics::add(&state.metrics.sign_in_failures, 1);
            Metrics::add(&state.metrics.sign_in_throttled, 1);
            // Only the first refusal of a block is recorded: refused attempts must not let anyone
            // grow an org's append-only log without limit.
            if blocked.first {
                let user = state.store.user_by_email(&email).await?;
                record_failure(
                    &state,
                    &email,
                    user.as_ref(),
                    addr.text(),
                    "too many failed attempts; throttled",
                );
            }
            return Err(throttled(blocked));
        }
    };
    let user = match state.store.user_by_email(&email).await {
        Ok(u) => u,
        Err(e) => {
            state.throttle.cancelled(reservation);
            return Err(e.into());
        }
    };
    let phc = user.as_ref().map_or_else(|| auth::dummy_hash().to_string(), |u| u.password_hash.clone());
    let factor = match &user {
        Some(u) => match crate::mfa::enabled(&state, &u.id).await {
            Ok(f) => f,
            Err(e) => {
                state.throttle.cancelled(reservation);
                return Err(e);
            }
        },
        None => false,
    };
    // (An unknown account is checked against a dummy hash, which no password matches.)
    let ok =
        state.password_checks.verify_reserved(&state.throttle, reservation, password, phc, factor).await?;
    let Some(user) = user.as_ref().filter(|_| ok).cloned() else {
        Metrics::add(&state.metrics.sign_in_failures, 1);
        tracing::info!("sign-in failed");
        record_failure(&state, &email, user.as_ref(), addr.text(), "wrong email or password");
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
            "wrong email or password",
        ));
    };
    if factor {
        // The password was right; the session waits for the code.
        let now = trail_model::time::now();
        return Ok(Json(json!({
            "mfa_required": true,
            "challenge": crate::mfa::challenge(&state.challenges, &user.id, now),
            "expires_at": format_rfc3339(now + crate::mfa::CHALLENGE_SECS * 1_000_000),
        }))
        .into_response());
    }
    start_session(&state, &user, &addr, &[]).await
}

/// `POST /v1/auth/login/mfa`: a password's challenge and a code from the authenticator app (or a
/// recovery code) answer the session. Codes are throttled on the account's sign-in budget.
pub async fn login_mfa(
    State(state): State<AppState>,
    addr: ClientAddr,
    Typed(body): Typed<bodies::SecondFactor>,
) -> ApiResult<Response> {
    let now = trail_model::time::now();
    let expired = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_challenge",
            "this sign-in expired or is not valid; enter your password again",
        )
        .with_field("challenge")
    };
    let user_id = crate::mfa::challenged_user(&state.challenges, &body.challenge, now).ok_or_else(expired)?;
    let user = state.store.user(&user_id).await?.ok_or_else(expired)?;
    let reservation = state.throttle.reserve(&user.email, addr.0, now).map_err(|blocked| {
        Metrics::add(&state.metrics.sign_in_throttled, 1);
        throttled(blocked)
    })?;
    // One check of this user's codes at a time: the step or recovery code is spent before another
    // request can test it.
    let _checking = state.mfa_locks.of(&user.id).lock().await;
    let mut enrolment = match crate::mfa::enrolment(&state, &user.id).await {
        Ok(Some(e)) if e.confirmed_at.is_some() => e,
        Ok(_) => {
            state.throttle.cancelled(reservation);
            return Err(expired());
        }
        Err(e) => {
            state.throttle.cancelled(reservation);
            return Err(e);
        }
    };
    let accepted = match enrolment.accept(&state.sealer, &body.code, now) {
        Ok(a) => a,
        Err(e) => {
            state.throttle.cancelled(reservation);
            return Err(e);
        }
    };
    let Some(how) = accepted else {
        Metrics::add(&state.metrics.sign_in_failures, 1);
        record_failure(&state, &user.email, Some(&user), addr.text(), "wrong second-factor code");
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_code",
            "the code is wrong or was already used; enter the current code from your app, or a recovery code",
        )
        .with_field("code"));
    };
    // The step (or recovery code) is spent before the session exists: a code works once.
    crate::mfa::save(&state, &user.id, Some(&enrolment)).await?;
    state.throttle.succeeded(reservation);
    start_session(&state, &user, &addr, &[("second_factor", json!(how))]).await
}

/// Issues a password session for a user who proved who they are, records the sign-in, and answers
/// the session with its cookie.
pub async fn start_session(
    state: &AppState,
    user: &trail_store::User,
    addr: &ClientAddr,
    info: &[(&str, Value)],
) -> ApiResult<Response> {
    let (issued, cookie) = open_session(state, user, addr, "password", info).await?;
    let body = json!({
        "token": issued.token,
        "csrf_token": issued.csrf_token,
        "expires_at": format_rfc3339(issued.session.expires_at),
        "user": {"id": user.id, "email": user.email},
    });
    let mut resp = Json(body).into_response();
    resp.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(resp)
}

/// Issues a session signed in by `method`, records the sign-in (with `info`) in the orgs it reaches
/// (a single sign-on session only its org), and answers its cookie.
pub async fn open_session(
    state: &AppState,
    user: &trail_store::User,
    addr: &ClientAddr,
    method: &str,
    info: &[(&str, Value)],
) -> ApiResult<(auth::IssuedSession, HeaderValue)> {
    let orgs: Vec<String> =
        auth::reachable_orgs(state, user, method).await?.into_iter().map(|(o, _)| o.slug).collect();
    let issued = auth::issue_session(&user.id, method, state);
    state.store.create_session(&issued.session).await?;
    let mut audit = Audit::new(user.email.clone(), "user.signed_in", "user")
        .target(&user.id, Some(user.email.clone()))
        .ip(addr.text());
    for (k, v) in info {
        audit = audit.info(k, v.clone());
    }
    audit.record_in(state, &orgs).await?;
    let max_age = state.settings.auth.session_max_hours * 3600;
    let secure = if state.settings.auth.secure_cookies { "; Secure" } else { "" };
    let cookie = format!(
        "{SESSION_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}",
        issued.token
    );
    Ok((issued, HeaderValue::from_str(&cookie).map_err(ApiError::internal)?))
}

/// The 429 for an account or address that used up its failures.
pub fn throttled(blocked: throttle::Blocked) -> ApiError {
    let wait = blocked.retry_after;
    let mut e = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_attempts",
        format!("too many failed attempts; try again in {wait} seconds"),
    );
    e.retry_after = Some(wait);
    e
}

/// Records a failed sign-in in the orgs of the account, if it exists, without making the caller wait:
/// answering after the writes would tell apart accounts that exist from those that do not.
fn record_failure(
    state: &AppState,
    email: &str,
    user: Option<&trail_store::User>,
    ip: Option<String>,
    reason: &'static str,
) {
    let Some(user_id) = user.map(|u| u.id.clone()) else { return };
    let (state, email) = (state.clone(), email.to_string());
    tokio::spawn(async move {
        let orgs: Vec<String> = match state.store.user_orgs(&user_id).await {
            Ok(o) => o.into_iter().map(|(o, _)| o.slug).collect(),
            Err(e) => {
                tracing::error!(error = %e, "cannot record a failed sign-in");
                return;
            }
        };
        if let Err(e) = Audit::new(email, "user.sign_in_failed", "user")
            .ip(ip)
            .failed(reason)
            .record_in(&state, &orgs)
            .await
        {
            tracing::error!(error = e.message, "cannot record a failed sign-in");
        }
    });
}

pub async fn logout(
    State(state): State<AppState>,
    principal: Principal,
    addr: ClientAddr,
) -> ApiResult<Response> {
    let Principal::User { session_id, user, method } = &principal else {
        return Err(ApiError::forbidden("API keys cannot sign out; revoke the key instead"));
    };
    state.store.delete_session(session_id).await?;
    state.activity.forget_session(session_id);
    let orgs: Vec<String> =
        auth::reachable_orgs(&state, user, method).await?.into_iter().map(|(o, _)| o.slug).collect();
    Audit::new(user.email.clone(), "user.signed_out", "user")
        .target(&user.id, Some(user.email.clone()))
        .ip(addr.text())
        .record_in(&state, &orgs)
        .await?;
    let clear = format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&clear).map_err(ApiError::internal)?);
    Ok(resp)
}

pub async fn me(State(state): State<AppState>, principal: Principal) -> ApiResult<Json<Value>> {
    let user = principal.user()?;
    let orgs = auth::reachable_orgs(&state, user, principal.method()).await?;
    let orgs: Vec<Value> = orgs
        .into_iter()
        .map(|(o, perms)| {
            json!({"slug": o.slug, "name": o.name, "permissions": perms.iter().map(|p| p.as_str()).collect::<Vec<_>>()})
        })
        .collect();
    Ok(Json(json!({"id": user.id, "email": user.email, "server_admin": user.server_admin, "orgs": orgs})))
}
