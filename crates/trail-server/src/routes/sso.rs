//! Single sign-on: the browser's round trip through the provider (`/v1/auth/sso`, its callback) and an
//! org's provider settings (`/v1/orgs/{org}/sso`). The flow itself is `crate::sso`.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use trail_store::Permission;

use super::JsonBody;
use super::bodies::{SsoSettings, typed};
use crate::AppState;
use crate::audit::Audit;
use crate::auth::{ClientAddr, Principal};
use crate::error::{ApiError, ApiResult};
use crate::sso::{self, FLOW_COOKIE, Realm};

/// `GET /v1/auth/sso?org=…&next=…`: sends the browser to the org's provider (without `org`, the
/// server's provider, for server administrators). Refusals go back to the sign-in page.
pub async fn start(State(state): State<AppState>, headers: HeaderMap, RawQuery(raw): RawQuery) -> Response {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(raw.as_deref().unwrap_or("")).unwrap_or_default();
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.trim().to_string());
    let org = get("org").filter(|o| !o.is_empty());
    let realm = match &org {
        Some(o) => Realm::Org(o.to_lowercase()),
        None => Realm::Server,
    };
    let next =
        get("next").filter(|n| n != "/" && crate::console::local_path(n)).unwrap_or_else(|| match &realm {
            Realm::Org(o) => format!("/orgs/{o}/logs"),
            Realm::Server => "/".into(),
        });
    // Started only from this site: a link elsewhere could otherwise sign a visitor in, silently, as
    // whoever a hostile org's provider says (login cross-site request forgery). Browsers say where a
    // navigation comes from; such a visitor lands on the sign-in page with the org filled in.
    let from_elsewhere = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|s| s == "cross-site" || s == "same-site");
    if from_elsewhere {
        return redirect(&refused_url("sso_cross_site", org.as_deref()), None);
    }
    match sso::begin(&state, &realm, next).await {
        Ok((url, flow)) => {
            let cookie = flow_cookie(&state, &flow, sso::FLOW_SECS);
            redirect(&url, Some(cookie))
        }
        Err(f) => {
            tracing::info!(code = f.code, detail = ?f.detail, "single sign-on not started");
            redirect(&refused_url(f.code, org.as_deref()), None)
        }
    }
}

/// `GET /v1/auth/sso/callback`: the provider's answer. Signs the person in and opens `next`, or
/// sends them back to the sign-in page with the reason.
pub async fn callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    addr: ClientAddr,
    RawQuery(raw): RawQuery,
) -> Response {
    let answer: sso::Callback = serde_urlencoded::from_str(raw.as_deref().unwrap_or("")).unwrap_or_default();
    let cookie = crate::auth::cookie_value(&headers, FLOW_COOKIE);
    // The flow is over either way: its cookie goes.
    let clear = flow_cookie(&state, "", 0);
    match sso::finish(&state, cookie, answer).await {
        Ok(signed_in) => match signed_in_page(&state, &addr, signed_in).await {
            Ok(mut resp) => {
                resp.headers_mut().append(header::SET_COOKIE, clear);
                resp
            }
            Err(e) => {
                tracing::error!(error = e.message, "cannot open a single sign-on session");
                redirect(&refused_url("sso_unavailable", None), Some(clear))
            }
        },
        Err(f) => {
            tracing::info!(code = f.code, detail = ?f.detail, "single sign-on refused");
            crate::metrics::Metrics::add(&state.metrics.sign_in_failures, 1);
            if let Some(org) = &f.record_in {
                let audit = Audit::new(
                    f.email.clone().unwrap_or_else(|| "unknown".into()),
                    "user.sign_in_failed",
                    "user",
                )
                .ip(addr.text())
                .info("method", "sso")
                .failed(format!("single sign-on refused: {}", f.detail));
                if let Err(e) = audit.record(&state, org).await {
                    tracing::error!(error = e.message, "cannot record a refused sign-in");
                }
            }
            redirect(&refused_url(f.code, f.org.as_deref()), Some(clear))
        }
    }
}

/// The session's cookie, and a page that opens `next` from this site (a redirect straight from the
/// provider's navigation would not carry the `SameSite=Strict` session cookie to the first page).
async fn signed_in_page(state: &AppState, addr: &ClientAddr, s: sso::SignedIn) -> ApiResult<Response> {
    let method = s.realm.method();
    let mut info = vec![("method", json!("sso"))];
    if !s.joined.is_empty() {
        info.push(("groups_joined", json!(s.joined)));
    }
    if !s.left.is_empty() {
        info.push(("groups_left", json!(s.left)));
    }
    let (_, cookie) = super::session::open_session(state, &s.user, addr, &method, &info).await?;
    let next = html_escape(&s.next);
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Signing in</title>\
         <meta http-equiv=\"refresh\" content=\"0;url={next}\"></head>\
         <body><main><p>Signed in. <a href=\"{next}\">Continue</a></p></main></body></html>"
    );
    let mut resp =
        (StatusCode::OK, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response();
    resp.headers_mut().insert(header::SET_COOKIE, cookie);
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('"', "&quot;").replace('<', "&lt;").replace('>', "&gt;")
}

fn refused_url(code: &str, org: Option<&str>) -> String {
    let mut pairs = vec![("sso_error", code)];
    if let Some(o) = org {
        pairs.push(("org", o));
    }
    format!("/login?{}", serde_urlencoded::to_string(pairs).unwrap_or_default())
}

fn redirect(to: &str, cookie: Option<HeaderValue>) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    if let Some(c) = cookie {
        resp.headers_mut().insert(header::SET_COOKIE, c);
    }
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The flow cookie: `Lax`, so the provider's navigation back brings it, and only for `/v1/auth`.
fn flow_cookie(state: &AppState, value: &str, max_age: i64) -> HeaderValue {
    let secure = if state.settings.auth.secure_cookies { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{FLOW_COOKIE}={value}; Path=/v1/auth; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("trail_sso=; Path=/v1/auth; Max-Age=0"))
}

/// The provider settings as answered: never the client secret.
pub(crate) fn settings_view(state: &AppState, doc: Option<&trail_store::Document>) -> Value {
    let fields = match doc.and_then(|d| serde_json::from_value::<sso::Provider>(d.body.clone()).ok()) {
        Some(p) => json!({
            "configured": true,
            "issuer": p.issuer,
            "client_id": p.client_id,
            "client_secret_set": !p.client_secret.is_empty(),
            "scopes": p.scopes,
            "groups_claim": p.groups_claim,
            "group_map": p.group_map,
        }),
        None => json!({
            "configured": false, "issuer": null, "client_id": null, "client_secret_set": false,
            "scopes": [], "groups_claim": null, "group_map": [],
        }),
    };
    let mut out = super::settings_json(fields, doc);
    out["redirect_uri"] = json!(sso::redirect_uri(state));
    out
}

pub async fn get_settings(
    State(state): State<AppState>,
    Path(org): Path<String>,
    p: Principal,
) -> ApiResult<Json<Value>> {
    p.require_permission(&state, &org, Permission::OrgSettings).await?;
    let doc = super::settings_document(&state, &org, sso::KIND).await?;
    Ok(Json(settings_view(&state, doc.as_ref())))
}

/// Who may choose the org's provider: someone holding every permission here, since the provider then
/// says who is who (it could name any member, or put anyone in any mapped group). While the org
/// admits only its provider's sessions, only such a session may change it.
async fn require_provider_admin(state: &AppState, org: &str, p: &Principal) -> ApiResult<()> {
    p.require_permission(state, org, Permission::OrgSettings).await?;
    let user = p.user()?;
    let held = state.store.permissions(org, &user.id).await?.unwrap_or_default();
    if !Permission::ALL.iter().all(|perm| held.contains(perm)) {
        return Err(ApiError::forbidden(format!(
            "choosing the identity provider of {org} needs every permission there: the provider decides who its members are"
        )));
    }
    if !crate::mfa::sign_in_rules(state, org).await?.password_sign_in && p.method() != format!("sso:{org}") {
        return Err(ApiError::forbidden(format!(
            "{org} admits only its identity provider's sessions; sign in with it to change it"
        )));
    }
    Ok(())
}

pub async fn put_settings(
    State(state): State<AppState>,
    Path(org): Path<String>,
    p: Principal,
    addr: ClientAddr,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Value>> {
    require_provider_admin(&state, &org, &p).await?;
    let body: SsoSettings = typed(body)?;
    let invalid = |field: &str, m: String| ApiError::bad_request("invalid_field", m).with_field(field);
    sso::check_issuer(&body.issuer).map_err(|m| invalid("issuer", m))?;
    if body.client_id.trim().is_empty() {
        return Err(invalid("client_id", "client_id must not be blank".into()));
    }
    let before = super::settings_document(&state, &org, sso::KIND).await?;
    let kept = before.as_ref().and_then(|d| d.body["client_secret"].as_str().map(str::to_string));
    let secret = match (body.client_secret.as_deref(), kept) {
        (Some(s), _) if s.trim().is_empty() => {
            return Err(invalid("client_secret", "client_secret must not be blank".into()));
        }
        (Some(s), _) => state.sso.seal_secret(s),
        (None, Some(k)) => k,
        (None, None) => {
            return Err(invalid(
                "client_secret",
                "the provider's client_secret is needed the first time".into(),
            ));
        }
    };
    let groups = state.store.groups(&org).await?;
    for (i, rule) in body.group_map.iter().enumerate() {
        if !groups.iter().any(|g| g.id == rule.group) {
            return Err(invalid(
                &format!("group_map[{i}].group"),
                format!("organization {org} has no group {}", rule.group),
            ));
        }
        if rule.value.trim().is_empty() {
            return Err(invalid(
                &format!("group_map[{i}].value"),
                "a provider group must not be blank".into(),
            ));
        }
    }
    let mut scopes: Vec<String> = Vec::new();
    for s in body.scopes {
        if s != "openid" && !scopes.contains(&s) {
            scopes.push(s);
        }
    }
    let provider = sso::Provider {
        issuer: body.issuer,
        client_id: body.client_id.trim().to_string(),
        client_secret: secret,
        scopes,
        groups_claim: body.groups_claim,
        group_map: body.group_map,
        admin_groups: Vec::new(),
    };
    let fields = serde_json::to_value(&provider).map_err(ApiError::internal)?;
    let doc = super::put_settings_document(&state, &org, sso::KIND, fields, p.actor_id()).await?;
    p.audit("sign_in.sso_configured", "organization")
        .target(&org, None)
        .ip(addr.text())
        .info("issuer", provider.issuer.clone())
        .info("client_id", provider.client_id.clone())
        .record(&state, &org)
        .await?;
    Ok(Json(settings_view(&state, Some(&doc))))
}

/// Removes the org's provider. Refused while password sign-in is off (nobody could sign in).
pub async fn delete_settings(
    State(state): State<AppState>,
    Path(org): Path<String>,
    p: Principal,
    addr: ClientAddr,
) -> ApiResult<StatusCode> {
    require_provider_admin(&state, &org, &p).await?;
    if !crate::mfa::sign_in_rules(&state, &org).await?.password_sign_in {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "password_sign_in_off",
            "turn password sign-in back on (PUT /v1/orgs/{org}/sign-in) before removing the identity provider",
        ));
    }
    match state.store.delete_document(&org, sso::KIND, "settings").await {
        Ok(()) => {}
        Err(trail_store::StoreError::NotFound(_)) => {
            return Err(ApiError::not_found(format!("organization {org} has no identity provider")));
        }
        Err(e) => return Err(e.into()),
    }
    p.audit("sign_in.sso_removed", "organization")
        .target(&org, None)
        .ip(addr.text())
        .record(&state, &org)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
