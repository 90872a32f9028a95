//! Your second factor (`/v1/me/mfa…`) and an org's sign-in requirements (`/v1/orgs/{org}/sign-in`);
//! the factor itself is `crate::mfa`, sign-in with it `routes::session`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};
use trail_model::time::{format_rfc3339, now};
use trail_store::{Permission, User};

use super::JsonBody;
use super::bodies::{MfaCode, MfaStart, SignInSettings, typed};
use crate::AppState;
use crate::audit::Audit;
use crate::auth::{ClientAddr, Principal};
use crate::error::{ApiError, ApiResult};
use crate::mfa::{self, Enrolment, SIGN_IN, sign_in_rules};

fn person(p: &Principal) -> ApiResult<(&User, &str)> {
    match p {
        Principal::User { user, session_id, .. } => Ok((user, session_id)),
        _ => Err(ApiError::forbidden("only people who sign in have a second factor")),
    }
}

fn status_json(e: Option<&Enrolment>) -> Value {
    json!({
        "enabled": e.is_some_and(|e| e.confirmed_at.is_some()),
        "pending": e.is_some_and(|e| e.confirmed_at.is_none()),
        "confirmed_at": e.and_then(|e| e.confirmed_at).map(format_rfc3339),
        "recovery_codes_left": e.filter(|e| e.confirmed_at.is_some()).map_or(0, |e| e.recovery.len()),
    })
}

async fn record(state: &AppState, user: &User, action: &'static str, addr: &ClientAddr) -> ApiResult<()> {
    let orgs: Vec<String> = state.store.user_orgs(&user.id).await?.into_iter().map(|(o, _)| o.slug).collect();
    Audit::new(user.email.clone(), action, "user")
        .target(&user.id, Some(user.email.clone()))
        .ip(addr.text())
        .record_in(state, &orgs)
        .await
}

fn invalid_code() -> ApiError {
    ApiError::bad_request(
        "invalid_code",
        "the code is wrong or was already used; enter the current code from your app",
    )
    .with_field("code")
}

pub async fn status(State(state): State<AppState>, p: Principal) -> ApiResult<Json<Value>> {
    let (user, _) = person(&p)?;
    Ok(Json(status_json(mfa::enrolment(&state, &user.id).await?.as_ref())))
}

/// Starts (or starts again) an enrolment, with your password: the secret, its `otpauth://` URI and
/// QR code. Nothing changes at sign-in until a code confirms it.
pub async fn start(
    State(state): State<AppState>,
    p: Principal,
    addr: ClientAddr,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Value>> {
    let (user, _) = person(&p)?;
    let body: MfaStart = typed(body)?;
    if mfa::enabled(&state, &user.id).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "mfa_enabled",
            "two-factor sign-in is already on; turn it off first to enrol another app",
        ));
    }
    super::access::check_current_password(&state, user, &addr, body.current_password).await?;
    let (enrolment, secret) = Enrolment::new(&state.sealer);
    mfa::save(&state, &user.id, Some(&enrolment)).await?;
    let uri = mfa::otpauth_uri(&state.settings.server_name, &user.email, &secret);
    let qr = mfa::qr_svg(&uri)?;
    Ok(Json(json!({"secret": secret, "otpauth_uri": uri, "qr_svg": qr})))
}

/// Confirms an enrolment with a code from the app: two-factor sign-in is on from now, every other
/// session ends, and the recovery codes are answered (once).
pub async fn confirm(
    State(state): State<AppState>,
    p: Principal,
    addr: ClientAddr,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Value>> {
    let (user, session_id) = person(&p)?;
    let body: MfaCode = typed(body)?;
    let _checking = state.mfa_locks.of(&user.id).lock().await;
    let Some(mut e) = mfa::enrolment(&state, &user.id).await?.filter(|e| e.confirmed_at.is_none()) else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "no_enrolment",
            "start an enrolment first (POST /v1/me/mfa/totp), or it is already confirmed",
        ));
    };
    if !e.accept_code(&state.sealer, &body.code, now())? {
        return Err(invalid_code());
    }
    e.confirmed_at = Some(now());
    let codes = e.new_recovery_codes();
    mfa::save(&state, &user.id, Some(&e)).await?;
    // Sessions made with the password alone end; this one just proved the code.
    state.store.delete_user_sessions(&user.id, Some(session_id)).await?;
    record(&state, user, "user.mfa_enabled", &addr).await?;
    let mut out = status_json(Some(&e));
    out["recovery_codes"] = json!(codes);
    Ok(Json(out))
}

/// Checks a code or recovery code of an enabled factor for a change to it, on the sign-in budget.
async fn prove(state: &AppState, user: &User, addr: &ClientAddr, code: &str) -> ApiResult<Enrolment> {
    let Some(mut e) = mfa::enrolment(state, &user.id).await?.filter(|e| e.confirmed_at.is_some()) else {
        return Err(ApiError::new(StatusCode::CONFLICT, "mfa_not_enabled", "two-factor sign-in is not on"));
    };
    let reservation =
        state.throttle.reserve(&user.email, addr.0, now()).map_err(super::session::throttled)?;
    let accepted = match e.accept(&state.sealer, code, now()) {
        Ok(a) => a,
        Err(err) => {
            state.throttle.cancelled(reservation);
            return Err(err);
        }
    };
    if accepted.is_some() {
        state.throttle.succeeded(reservation);
        Ok(e)
    } else {
        Err(invalid_code())
    }
}

/// Turns two-factor sign-in off, with a current code or a recovery code (a session alone cannot).
pub async fn disable(
    State(state): State<AppState>,
    p: Principal,
    addr: ClientAddr,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Value>> {
    let (user, _) = person(&p)?;
    let body: MfaCode = typed(body)?;
    let _checking = state.mfa_locks.of(&user.id).lock().await;
    prove(&state, user, &addr, &body.code).await?;
    mfa::save(&state, &user.id, None).await?;
    record(&state, user, "user.mfa_disabled", &addr).await?;
    Ok(Json(status_json(None)))
}

/// New recovery codes (the old ones stop working), with a current code or a recovery code.
pub async fn recovery_codes(
    State(state): State<AppState>,
    p: Principal,
    addr: ClientAddr,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Value>> {
    let (user, _) = person(&p)?;
    let body: MfaCode = typed(body)?;
    let _checking = state.mfa_locks.of(&user.id).lock().await;
    let mut e = prove(&state, user, &addr, &body.code).await?;
    let codes = e.new_recovery_codes();
    mfa::save(&state, &user.id, Some(&e)).await?;
    record(&state, user, "user.recovery_codes_renewed", &addr).await?;
    let mut out = status_json(Some(&e));
    out["recovery_codes"] = json!(codes);
    Ok(Json(out))
}

pub async fn get_sign_in(
    State(state): State<AppState>,
    Path(org): Path<String>,
    p: Principal,
) -> ApiResult<Json<Value>> {
    p.require_permission(&state, &org, Permission::OrgSettings).await?;
    let doc = super::settings_document(&state, &org, SIGN_IN).await?;
    let require = doc.as_ref().is_some_and(|d| d.body["require_mfa"] == json!(true));
    let password = doc.as_ref().is_none_or(|d| d.body["password_sign_in"] != json!(false));
    let fields = json!({ "require_mfa": require, "password_sign_in": password });
    Ok(Json(super::settings_json(fields, doc.as_ref())))
}

pub async fn put_sign_in(
    State(state): State<AppState>,
    Path(org): Path<String>,
    p: Principal,
    addr: ClientAddr,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Value>> {
    p.require_permission(&state, &org, Permission::OrgSettings).await?;
    let (user, _) = person(&p)?;
    let body: SignInSettings = typed(body)?;
    // Requiring what you do not have would lock you out of this very setting.
    if body.require_mfa && !mfa::enabled(&state, &user.id).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "mfa_not_enabled",
            "set up your own two-factor sign-in before requiring it of everyone",
        )
        .with_field("require_mfa"));
    }
    // Turning passwords off is proven safe by signing in with the org's provider first.
    if !body.password_sign_in && p.method() != format!("sso:{org}") {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "sso_not_used",
            format!(
                "sign in with {org}'s identity provider (/v1/auth/sso?org={org}) before turning password sign-in off"
            ),
        )
        .with_field("password_sign_in"));
    }
    let before = sign_in_rules(&state, &org).await?;
    let fields = json!({ "require_mfa": body.require_mfa, "password_sign_in": body.password_sign_in });
    let doc = super::put_settings_document(&state, &org, SIGN_IN, fields.clone(), p.actor_id()).await?;
    if before.require_mfa != body.require_mfa {
        let action = if body.require_mfa { "sign_in.mfa_required" } else { "sign_in.mfa_optional" };
        p.audit(action, "organization").target(&org, None).ip(addr.text()).record(&state, &org).await?;
    }
    if before.password_sign_in != body.password_sign_in {
        let action =
            if body.password_sign_in { "sign_in.passwords_allowed" } else { "sign_in.passwords_refused" };
        p.audit(action, "organization").target(&org, None).ip(addr.text()).record(&state, &org).await?;
    }
    Ok(Json(super::settings_json(fields, Some(&doc))))
}
