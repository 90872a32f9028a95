//! Trail's HTTP server: the axum router, its handlers, authentication and the start-up sequence.
//!
//! This is the only crate that knows HTTP. It never touches SQL: everything durable goes through the
//! [`trail_store::Store`] trait, so every backend serves the same API.
#![cfg_attr(test, allow(clippy::unwrap_used, reason = "tests fail loudly on purpose"))]
// The OpenAPI document is one `json!` literal, deeper than the default macro recursion allows.
#![recursion_limit = "512"]

pub mod alerts;
pub mod archive;
pub mod audit;
pub mod auth;
pub mod console;

pub mod error;
pub mod exports;
pub mod integrity;
pub mod mail;
pub mod metrics;
pub mod mfa;
pub mod openapi;
pub mod reads;
pub mod retention;
pub mod routes;
mod serve;
pub mod settings;
pub mod sink;
pub mod sso;
mod state;
pub mod stream;
pub mod throttle;
pub mod viewer;

use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tower_http::request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use trail_model::time::now;
use trail_store::Store;

use crate::error::ApiError;
pub use crate::serve::Server;
pub use crate::settings::Settings;
pub use crate::state::{Activity, AppState};

#[derive(Clone, Copy, Debug)]
struct UuidRequestId;

impl MakeRequestId for UuidRequestId {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        HeaderValue::from_str(&uuid::Uuid::now_v7().to_string()).ok().map(RequestId::new)
    }
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The complete router with its middleware: request ids, tracing, timeouts, body limits, metrics.
pub fn router(state: AppState) -> Router {
    let limits = &state.settings.limits;
    let timeout = Duration::from_secs(limits.request_timeout_secs);
    routes::api(&state)
        .merge(console::routes())
        .fallback(|| async { ApiError::not_found("route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not accept that method",
            )
        })
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(middleware::from_fn_with_state(timeout, deadline))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request<Body>| {
            let id = req.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
                tracing::info_span!("request", method = %req.method(), path = %loggable_path(req.uri().path()), request_id = %id)
        }))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, UuidRequestId))
        .layer(middleware::map_response(nosniff))
        .with_state(state)
}

/// Every answer — JSON, HTML, or a framework's text/plain rejection — is taken as the type it states.
async fn nosniff(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert(axum::http::header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    resp
}

/// The request path as logged: an invitation token in the path (the API's `/v1/invitations/{token}/…`
/// or the console's `/invitations/{token}`) is a secret and never reaches the log.
pub fn loggable_path(path: &str) -> std::borrow::Cow<'_, str> {
    for prefix in ["/v1/invitations/", "/invitations/"] {
        if let Some(rest) = path.strip_prefix(prefix) {
            let tail = rest.split_once('/').map_or(String::new(), |(_, t)| format!("/{t}"));
            return std::borrow::Cow::Owned(format!("{prefix}[redacted]{tail}"));
        }
    }
    std::borrow::Cow::Borrowed(path)
}

/// Answers 408 with the usual JSON error when the handler is still running at
/// `limits.request_timeout_secs`, and drops it (the stores then interrupt the query it started).
async fn deadline(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!("the request took longer than {} s and was cancelled", limit.as_secs()),
        )
        .into_response(),
    }
}

async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |m| m.as_str()).to_string();
    let method = req.method().to_string();
    let start = Instant::now();
    let resp = next.run(req).await;
    state.metrics.observe(&method, &route, resp.status().as_u16(), start.elapsed().as_secs_f64());
    resp
}

/// Makes the first administrator: on a store where nobody has an account, `admin@localhost`, a server
/// administrator and an administrator of every org — of `default`, created first, when there is no
/// org (a directory whose orgs were made by `trail admin create-org` before the first start would
/// otherwise have no one who can sign in, and no command to make one). Returns the generated
/// password when none was given and this call created the account, so the caller can show it once.
pub async fn bootstrap(store: &dyn Store, admin_password: Option<&str>) -> Result<Option<String>, ApiError> {
    if store.has_users().await? {
        return Ok(None);
    }
    let generated = admin_password.is_none().then(auth::random_secret);
    let password = admin_password.or(generated.as_deref()).unwrap_or_default();
    let hash = auth::hash_password(password)?;
    let t = now();
    let mut orgs: Vec<String> = store.orgs().await?.into_iter().map(|o| o.slug).collect();
    if orgs.is_empty() {
        match store.create_org("default", "Default organization", t).await {
            Ok(_) => orgs.push("default".into()),
            // Another node sharing the database bootstrapped at the same moment.
            Err(trail_store::StoreError::Conflict(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
    let user = match store.create_user("admin@localhost", &hash, true, t).await {
        Ok(u) => u,
        // Another node made it first, with its own password: that one stands.
        Err(trail_store::StoreError::Conflict(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    for org in &orgs {
        store.add_org_admin(org, &user.id).await?;
    }
    Ok(generated)
}

/// The `Retry-After`-less 503 used while the store is not ready.
pub fn not_ready(cause: impl std::fmt::Display) -> Response {
    tracing::warn!(cause = %cause, "not ready");
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", "storage is not ready").into_response()
}

#[cfg(test)]
mod tests {
    #[test]
    fn invitation_tokens_never_reach_the_log() {
        let logged = super::loggable_path("/v1/invitations/abc123.s3cr3t/accept");
        assert_eq!(logged, "/v1/invitations/[redacted]/accept");
        assert_eq!(super::loggable_path("/invitations/abc123.s3cr3t"), "/invitations/[redacted]");
        assert_eq!(super::loggable_path("/v1/invitations/abc.s3cr3t"), "/v1/invitations/[redacted]");
        assert_eq!(super::loggable_path("/v1/orgs/default/events"), "/v1/orgs/default/events");
    }
}
