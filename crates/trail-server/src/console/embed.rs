//! The embedded viewer's page (README "Embed the viewer"): a static shell whose script reads the viewer
//! token from the URL fragment and builds the Audit Logs page from the API. The page holds no data, so
//! it is served without credentials; what differs per org is who may frame it — the origins the org
//! allows (`PUT /v1/orgs/{org}/embedding`), as `frame-ancestors`, and nowhere when it allows none.

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::AppState;

const SHELL: &str = include_str!("../../static/embed.html");

pub async fn page(State(state): State<AppState>, Path(org): Path<String>) -> Response {
    let plain = |code: StatusCode, text: &'static str| {
        super::harden((code, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
    };
    if !crate::routes::valid_slug(&org) {
        return plain(StatusCode::NOT_FOUND, "no such organization");
    }
    let origins = match state.store.org(&org).await {
        Ok(Some(_)) => crate::viewer::allowed_origins(&state, &org).await,
        Ok(None) => return plain(StatusCode::NOT_FOUND, "no such organization"),
        Err(e) => Err(e.into()),
    };
    let Ok(origins) = origins else {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "the viewer is unavailable; try again shortly");
    };
    // Origins were checked when set (scheme://host[:port]): nothing in them can end the directive.
    let ancestors = if origins.is_empty() { "'none'".to_string() } else { origins.join(" ") };
    let csp = format!(
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors {ancestors}; base-uri 'none'; form-action 'none'"
    );
    let mut r = ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], SHELL).into_response();
    let h = r.headers_mut();
    match HeaderValue::from_str(&csp) {
        Ok(v) => h.insert(header::CONTENT_SECURITY_POLICY, v),
        Err(_) => {
            return plain(StatusCode::INTERNAL_SERVER_ERROR, "the viewer's allowed origins are unreadable");
        }
    };
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
