//! Route table and the request-body extractor shared by handlers.

mod access;
mod alerts;
pub mod bodies;
mod destinations;
pub mod events;
mod exports;
mod health;
mod integrity;
mod keys;
mod mfa;
pub mod orgs;
mod retention;
pub(crate) mod session;
pub(crate) mod sso;
mod viewer;

pub use orgs::valid_slug;

use axum::Router;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use axum::routing::{delete, get, patch, post, put};
use serde_json::Value;

use crate::AppState;
use crate::error::ApiError;

/// Every API route. `openapi::document()` describes exactly these (a test holds them together).
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/v1/openapi.json"),
    ("GET", "/v1/actions"),
    ("POST", "/v1/auth/login"),
    ("POST", "/v1/auth/login/mfa"),
    ("GET", "/v1/auth/sso"),
    ("GET", "/v1/auth/sso/callback"),
    ("POST", "/v1/auth/logout"),
    ("GET", "/v1/me"),
    ("GET", "/v1/orgs"),
    ("POST", "/v1/orgs"),
    ("POST", "/v1/orgs/{org}/events"),
    ("GET", "/v1/orgs/{org}/events"),
    ("GET", "/v1/orgs/{org}/events/histogram"),
    ("GET", "/v1/orgs/{org}/events/{id}"),
    ("GET", "/v1/orgs/{org}/api-keys"),
    ("POST", "/v1/orgs/{org}/api-keys"),
    ("DELETE", "/v1/orgs/{org}/api-keys/{id}"),
    ("GET", "/v1/log-key"),
    ("GET", "/v1/orgs/{org}/checkpoint"),
    ("GET", "/v1/orgs/{org}/proofs/inclusion"),
    ("GET", "/v1/orgs/{org}/proofs/consistency"),
    ("POST", "/v1/me/password"),
    ("GET", "/v1/me/mfa"),
    ("POST", "/v1/me/mfa/totp"),
    ("POST", "/v1/me/mfa/totp/confirm"),
    ("POST", "/v1/me/mfa/disable"),
    ("POST", "/v1/me/mfa/recovery-codes"),
    ("GET", "/v1/orgs/{org}/sign-in"),
    ("PUT", "/v1/orgs/{org}/sign-in"),
    ("GET", "/v1/orgs/{org}/sso"),
    ("PUT", "/v1/orgs/{org}/sso"),
    ("DELETE", "/v1/orgs/{org}/sso"),
    ("GET", "/v1/orgs/{org}/roles"),
    ("POST", "/v1/orgs/{org}/roles"),
    ("GET", "/v1/orgs/{org}/roles/{id}"),
    ("PATCH", "/v1/orgs/{org}/roles/{id}"),
    ("DELETE", "/v1/orgs/{org}/roles/{id}"),
    ("GET", "/v1/orgs/{org}/groups"),
    ("POST", "/v1/orgs/{org}/groups"),
    ("GET", "/v1/orgs/{org}/groups/{id}"),
    ("PATCH", "/v1/orgs/{org}/groups/{id}"),
    ("DELETE", "/v1/orgs/{org}/groups/{id}"),
    ("PUT", "/v1/orgs/{org}/groups/{id}/roles/{role_id}"),
    ("DELETE", "/v1/orgs/{org}/groups/{id}/roles/{role_id}"),
    ("PUT", "/v1/orgs/{org}/groups/{id}/members/{user_id}"),
    ("DELETE", "/v1/orgs/{org}/groups/{id}/members/{user_id}"),
    ("GET", "/v1/orgs/{org}/users"),
    ("DELETE", "/v1/orgs/{org}/users/{id}"),
    ("GET", "/v1/orgs/{org}/invitations"),
    ("POST", "/v1/orgs/{org}/invitations"),
    ("DELETE", "/v1/orgs/{org}/invitations/{id}"),
    ("POST", "/v1/invitations/{token}/accept"),
    ("GET", "/v1/orgs/{org}/exports"),
    ("POST", "/v1/orgs/{org}/exports"),
    ("GET", "/v1/orgs/{org}/exports/{id}"),
    ("GET", "/v1/orgs/{org}/exports/{id}/download"),
    ("GET", "/v1/orgs/{org}/exports/{id}/manifest"),
    ("GET", "/v1/orgs/{org}/settings"),
    ("PATCH", "/v1/orgs/{org}/settings"),
    ("GET", "/v1/orgs/{org}/archives"),
    ("POST", "/v1/orgs/{org}/archives/restore"),
    ("GET", "/v1/orgs/{org}/events/feed"),
    ("GET", "/v1/orgs/{org}/destinations"),
    ("POST", "/v1/orgs/{org}/destinations"),
    ("GET", "/v1/orgs/{org}/destinations/{id}"),
    ("PUT", "/v1/orgs/{org}/destinations/{id}"),
    ("DELETE", "/v1/orgs/{org}/destinations/{id}"),
    ("POST", "/v1/orgs/{org}/destinations/{id}/pause"),
    ("POST", "/v1/orgs/{org}/destinations/{id}/resume"),
    ("POST", "/v1/orgs/{org}/destinations/{id}/rotate-secret"),
    ("GET", "/v1/orgs/{org}/searches"),
    ("POST", "/v1/orgs/{org}/searches"),
    ("PATCH", "/v1/orgs/{org}/searches/{id}"),
    ("DELETE", "/v1/orgs/{org}/searches/{id}"),
    ("GET", "/v1/orgs/{org}/alert-rules"),
    ("POST", "/v1/orgs/{org}/alert-rules"),
    ("GET", "/v1/orgs/{org}/alert-rules/{id}"),
    ("PUT", "/v1/orgs/{org}/alert-rules/{id}"),
    ("DELETE", "/v1/orgs/{org}/alert-rules/{id}"),
    ("GET", "/v1/orgs/{org}/alert-templates"),
    ("POST", "/v1/orgs/{org}/alert-templates/{id}"),
    ("GET", "/v1/orgs/{org}/alerts"),
    ("GET", "/v1/viewer"),
    ("GET", "/v1/orgs/{org}/viewer-tokens"),
    ("POST", "/v1/orgs/{org}/viewer-tokens"),
    ("DELETE", "/v1/orgs/{org}/viewer-tokens/{id}"),
    ("GET", "/v1/orgs/{org}/embedding"),
    ("PUT", "/v1/orgs/{org}/embedding"),
];

pub fn api(state: &AppState) -> Router<AppState> {
    let max_body = state.settings.limits.max_body_bytes;
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/v1/openapi.json", get(health::openapi))
        .route("/v1/actions", get(health::actions))
        .route("/v1/auth/login", post(session::login))
        .route("/v1/auth/login/mfa", post(session::login_mfa))
        .route("/v1/auth/sso", get(sso::start))
        .route("/v1/auth/sso/callback", get(sso::callback))
        .route("/v1/auth/logout", post(session::logout))
        .route("/v1/me/mfa", get(mfa::status))
        .route("/v1/me/mfa/totp", post(mfa::start))
        .route("/v1/me/mfa/totp/confirm", post(mfa::confirm))
        .route("/v1/me/mfa/disable", post(mfa::disable))
        .route("/v1/me/mfa/recovery-codes", post(mfa::recovery_codes))
        .route("/v1/orgs/{org}/sign-in", get(mfa::get_sign_in).put(mfa::put_sign_in))
        .route(
            "/v1/orgs/{org}/sso",
            get(sso::get_settings).put(sso::put_settings).delete(sso::delete_settings),
        )
        .route("/v1/me", get(session::me))
        .route("/v1/orgs", get(orgs::list).post(orgs::create))
        .route(
            "/v1/orgs/{org}/events",
            post(events::ingest)
                .route_layer(axum::middleware::from_fn_with_state(state.clone(), events::admit))
                .get(events::query),
        )
        .route("/v1/orgs/{org}/events/histogram", get(events::histogram))
        .route("/v1/orgs/{org}/events/{id}", get(events::one))
        .route("/v1/orgs/{org}/api-keys", get(keys::list).post(keys::create))
        .route("/v1/orgs/{org}/api-keys/{id}", delete(keys::revoke))
        .route("/v1/log-key", get(integrity::log_key))
        .route("/v1/orgs/{org}/checkpoint", get(integrity::checkpoint))
        .route("/v1/orgs/{org}/proofs/inclusion", get(integrity::inclusion))
        .route("/v1/orgs/{org}/proofs/consistency", get(integrity::consistency))
        .route("/v1/me/password", post(access::change_password))
        .route("/v1/orgs/{org}/roles", get(access::list_roles).post(access::create_role))
        .route(
            "/v1/orgs/{org}/roles/{id}",
            get(access::get_role).patch(access::update_role).delete(access::delete_role),
        )
        .route("/v1/orgs/{org}/groups", get(access::list_groups).post(access::create_group))
        .route(
            "/v1/orgs/{org}/groups/{id}",
            get(access::get_group).patch(access::update_group).delete(access::delete_group),
        )
        .route(
            "/v1/orgs/{org}/groups/{id}/roles/{role_id}",
            put(access::add_group_role).delete(access::remove_group_role),
        )
        .route(
            "/v1/orgs/{org}/groups/{id}/members/{user_id}",
            put(access::add_group_member).delete(access::remove_group_member),
        )
        .route("/v1/orgs/{org}/users", get(access::list_users))
        .route("/v1/orgs/{org}/users/{id}", delete(access::remove_user))
        .route("/v1/orgs/{org}/invitations", get(access::list_invitations).post(access::create_invitations))
        .route("/v1/orgs/{org}/invitations/{id}", delete(access::revoke_invitation))
        .route("/v1/invitations/{token}/accept", post(access::accept_invitation))
        .route("/v1/orgs/{org}/exports", get(exports::list).post(exports::create))
        .route("/v1/orgs/{org}/exports/{id}", get(exports::get))
        .route("/v1/orgs/{org}/exports/{id}/download", get(exports::download))
        .route("/v1/orgs/{org}/exports/{id}/manifest", get(exports::manifest))
        .route("/v1/orgs/{org}/events/feed", get(destinations::feed))
        .route("/v1/orgs/{org}/searches", get(alerts::list_searches).post(alerts::create_search))
        .route("/v1/orgs/{org}/searches/{id}", patch(alerts::update_search).delete(alerts::delete_search))
        .route("/v1/orgs/{org}/alert-rules", get(alerts::list_rules).post(alerts::create_rule))
        .route(
            "/v1/orgs/{org}/alert-rules/{id}",
            get(alerts::get_rule).put(alerts::update_rule).delete(alerts::delete_rule),
        )
        .route("/v1/orgs/{org}/alert-templates", get(alerts::list_templates))
        .route("/v1/orgs/{org}/alert-templates/{id}", post(alerts::enable_template))
        .route("/v1/orgs/{org}/alerts", get(alerts::history))
        .route("/v1/viewer", get(viewer::current))
        .route("/v1/orgs/{org}/viewer-tokens", get(viewer::list).post(viewer::mint))
        .route("/v1/orgs/{org}/viewer-tokens/{id}", delete(viewer::revoke))
        .route("/v1/orgs/{org}/embedding", get(viewer::get_embedding).put(viewer::put_embedding))
        .route("/v1/orgs/{org}/destinations", get(destinations::list).post(destinations::create))
        .route(
            "/v1/orgs/{org}/destinations/{id}",
            get(destinations::get).put(destinations::update).delete(destinations::delete),
        )
        .route("/v1/orgs/{org}/destinations/{id}/pause", post(destinations::pause))
        .route("/v1/orgs/{org}/destinations/{id}/resume", post(destinations::resume))
        .route("/v1/orgs/{org}/destinations/{id}/rotate-secret", post(destinations::rotate_secret))
        .route("/v1/orgs/{org}/settings", get(retention::get).patch(retention::update))
        .route("/v1/orgs/{org}/archives", get(retention::list))
        .route("/v1/orgs/{org}/archives/restore", post(retention::restore))
        .route_layer(axum::middleware::from_fn(utf8_path))
        // Bodies are read by `JsonBody` with this limit; axum's default (2 MiB) would cut in first.
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
}

/// An org's settings kept as a document of their own (`id` "settings"): the embedding origins, the
/// sign-in requirements. Read, and written with who changed them.
pub(crate) async fn settings_document(
    state: &AppState,
    org: &str,
    kind: &str,
) -> crate::error::ApiResult<Option<trail_store::Document>> {
    Ok(state.store.document(org, kind, "settings").await?)
}

pub(crate) async fn put_settings_document(
    state: &AppState,
    org: &str,
    kind: &str,
    mut fields: Value,
    by: String,
) -> crate::error::ApiResult<trail_store::Document> {
    fields["updated_by"] = Value::String(by);
    let doc = trail_store::Document {
        org: org.to_string(),
        kind: kind.to_string(),
        id: "settings".into(),
        body: fields,
        updated_at: trail_model::time::now(),
    };
    state.store.put_document(&doc, false).await?;
    Ok(doc)
}

/// Settings as the API answers them: the fields, and when and by whom they were last changed.
pub(crate) fn settings_json(mut fields: Value, doc: Option<&trail_store::Document>) -> Value {
    fields["updated_at"] =
        doc.map_or(Value::Null, |d| Value::String(trail_model::time::format_rfc3339(d.updated_at)));
    fields["updated_by"] = doc.and_then(|d| d.body.get("updated_by").cloned()).unwrap_or(Value::Null);
    fields
}

/// Path parameters must be UTF-8 once percent-decoded (`/v1/orgs/%FF/events`); checked before the
/// handler because axum's own `Path` rejection is plain text, not the JSON error every answer has.
async fn utf8_path(req: Request, next: axum::middleware::Next) -> axum::response::Response {
    if !percent_decodes_to_utf8(req.uri().path()) {
        return axum::response::IntoResponse::into_response(ApiError::bad_request(
            "invalid_path",
            "the path is malformed: percent-encoded bytes must be UTF-8",
        ));
    }
    next.run(req).await
}

/// The body as an object whose keys are all in `known` (else 400 `invalid_body` / `unknown_field`
/// naming the key and the fields there are).
pub(crate) fn fields<'a>(
    body: &'a Value,
    known: &[&str],
) -> crate::error::ApiResult<&'a serde_json::Map<String, Value>> {
    let Some(m) = body.as_object() else {
        return Err(ApiError::bad_request("invalid_body", "send a JSON object"));
    };
    match m.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(ApiError::bad_request(
            "unknown_field",
            format!("{k} is not a field here; the fields are {}", known.join(", ")),
        )
        .with_field(k.as_str())),
        None => Ok(m),
    }
}

/// A JSON request body: checks the content type, the size limit and the syntax, each with its own
/// clear error, before any handler logic runs.
#[derive(Debug)]
pub struct JsonBody(pub Value);

impl FromRequest<AppState> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let limit = state.settings.limits.max_body_bytes;
        let ctype = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let mime = ctype.split(';').next().unwrap_or("").trim();
        if !mime.eq_ignore_ascii_case("application/json") {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with Content-Type: application/json",
            ));
        }
        let too_large = || {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the body may be at most {limit} bytes"),
            )
        };
        let declared =
            req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
        if declared.is_some_and(|n| n > limit) {
            return Err(too_large());
        }
        let bytes = axum::body::to_bytes(req.into_body(), limit).await.map_err(|_| too_large())?;
        let value = serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::bad_request("malformed_json", format!("the body is not valid JSON: {e}"))
        })?;
        Ok(JsonBody(value))
    }
}

/// Query-string pairs in order, with repeats (`actor=a&actor=b`). Percent-encoded bytes must be
/// UTF-8: decoding them lossily (as `serde_urlencoded` does) would silently turn `actor=%FF` into a
/// filter for `U+FFFD`. An empty value (`limit=`) is refused everywhere, naming the parameter: it
/// is neither a value nor clearly "absent", and guessing would hide a client's bug.
pub fn query_pairs(raw: Option<&str>) -> Result<Vec<(String, String)>, ApiError> {
    let raw = raw.unwrap_or("");
    if !percent_decodes_to_utf8(raw) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "the query string is malformed: percent-encoded bytes must be UTF-8",
        ));
    }
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw)
        .map_err(|e| ApiError::bad_request("invalid_query", format!("the query string is malformed: {e}")))?;
    if let Some((k, _)) = pairs.iter().find(|(_, v)| v.is_empty()) {
        return Err(empty_parameter(k));
    }
    Ok(pairs)
}

/// The one answer to an empty parameter, in a query string or an export's filters.
pub fn empty_parameter(name: &str) -> ApiError {
    ApiError::bad_request(
        "empty_parameter",
        format!("{name} is empty: leave the parameter out, or give it a value"),
    )
    .with_field(name)
}

/// Whether `raw` is UTF-8 once its `%XX` escapes are decoded (a `%` without two hex digits is kept).
fn percent_decodes_to_utf8(raw: &str) -> bool {
    let b = raw.as_bytes();
    let hex = |i: usize| b.get(i).and_then(|&c| char::from(c).to_digit(16));
    let mut decoded = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        match (c, hex(i + 1), hex(i + 2)) {
            (b'%', Some(high), Some(low)) => {
                decoded.push((high * 16 + low) as u8);
                i += 3;
            }
            _ => {
                decoded.push(c);
                i += 1;
            }
        }
    }
    std::str::from_utf8(&decoded).is_ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn query_strings_must_be_utf8_once_decoded() {
        assert!(super::percent_decodes_to_utf8("actor=Z%C3%BCrich&q=a+b%20c&odd=%&x=%4"));
        assert!(!super::percent_decodes_to_utf8("actor=%FF%FE"));
        assert!(!super::percent_decodes_to_utf8("%C0%AF=1"));
        assert!(!super::percent_decodes_to_utf8("q=%ED%A0%80"));
    }
}
