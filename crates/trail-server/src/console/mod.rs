//! The web console (PRODUCT.md §5, and the admin parts of §3 and §6): server-rendered pages (askama
//! templates in `templates/`) with one small hand-written script (`static/console.js`) for what must
//! happen in the browser: loading more rows, export status, time zones, the integrity badge and
//! sending admin forms to the JSON API.
//!
//! Pages read through the same store and checks as the API, and every change goes through the API
//! itself (the script sends forms as JSON with the session's CSRF token), so validation, authorization
//! and self-audit live in one place. A page the user has no permission for is not linked, and answers
//! 403 when asked for anyway. Pages never show anything of an org the user is not a member of.

mod embed;
mod pages;

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::AppState;

const SCRIPT: &str = include_str!("../../static/console.js");
const VERIFY: &str = include_str!("../../static/verify.js");
const EMBED: &str = include_str!("../../static/embed.js");
const STYLE: &str = include_str!("../../static/console.css");

/// Whether a `next` address is a path of this site (never an open redirect). Browsers drop tabs and
/// newlines from URLs, so `/\t/evil.example` would become `//evil.example`.
pub fn local_path(v: &str) -> bool {
    v.starts_with('/') && !v.starts_with("//") && !v.contains('\\') && !v.chars().any(char::is_control)
}

/// The console's routes (not under `/v1`, not in the OpenAPI document).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(pages::home))
        .route("/login", get(pages::login))
        .route("/account", get(pages::account))
        .route("/invitations/{token}", get(pages::accept_invitation))
        .route("/orgs/{org}/logs", get(pages::logs))
        .route("/orgs/{org}/logs/rows", get(pages::log_rows))
        .route("/orgs/{org}/logs/{id}", get(pages::event))
        .route("/orgs/{org}/exports", get(pages::exports))
        .route("/orgs/{org}/archive", get(pages::archive))
        .route("/orgs/{org}/alerts", get(pages::alerts))
        .route("/orgs/{org}/admin/{page}", get(pages::admin))
        .route("/embed/orgs/{org}/logs", get(embed::page))
        .route("/static/console.js", get(|| async { asset(SCRIPT, "text/javascript; charset=utf-8") }))
        .route("/static/verify.js", get(|| async { asset(VERIFY, "text/javascript; charset=utf-8") }))
        .route("/static/embed.js", get(|| async { asset(EMBED, "text/javascript; charset=utf-8") }))
        .route("/static/console.css", get(|| async { asset(STYLE, "text/css; charset=utf-8") }))
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    r
}

/// Headers every console page carries: no framing, no sniffing, scripts only from here.
pub fn harden(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// An HTML page, or a redirect.
#[derive(Debug)]
pub enum Page {
    Html(String),
    Redirect(String),
    Status(StatusCode, String),
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        let r = match self {
            Page::Html(body) => ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response(),
            Page::Status(code, body) => {
                (code, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
            }
            Page::Redirect(to) => (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response(),
        };
        harden(r)
    }
}
