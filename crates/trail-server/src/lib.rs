//! Trail's HTTP server: the axum router, its handlers, authentication and the start-up sequence.
//!
//! This is the only crate that knows HTTP. It never touches SQL: everything durable goes through the
//! [`trail_store::Store`] trait, so every backend serves the same API.
#![cfg_attr(test, allow(clippy::unwrap_used, reason = "tests fail loudly on purpose"))]
// The OpenAPI document is one `json!` literal, deeper than the default macro recursion allows.
#![recursion_limit = "512"]

pub mod archive;
pub mod audit;
pub mod auth;
pub mod console;

pub mod error;
pub mod exports;
pub mod integrity;
pub mod mail;
pub mod metrics;
pub mod openapi;
pub mod reads;
pub mod retention;
pub mod routes;
pub mod settings;
pub mod sink;
pub mod throttle;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tower_http::request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use trail_model::time::{Micros, now};
use trail_store::Store;

use crate::error::ApiError;
use crate::metrics::Metrics;
pub use crate::settings::Settings;

/// Everything a handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub settings: Arc<Settings>,
    pub metrics: Arc<Metrics>,
    /// Signs checkpoints; its public key is served at `/v1/log-key`.
    pub signer: Arc<trail_merkle::Signer>,
    /// Uses of sessions and API keys not yet written to the store (flushed every few seconds).
    pub activity: Arc<Activity>,
    /// API keys' reads, recorded once per key and hour (see [`reads`]).
    pub key_reads: Arc<reads::KeyReads>,
    pub throttle: Arc<throttle::Throttle>,
    /// Permits for Argon2 work (sign-in, password changes, new accounts).
    pub password_checks: auth::PasswordChecks,
    /// Permits for ingest requests in flight (`limits.max_concurrent_ingest`).
    pub ingest_permits: Arc<tokio::sync::Semaphore>,
    /// Where archived events are (`None` when the configured archive cannot be opened; `trail serve`
    /// refuses to start then, so only embedders see it).
    pub archive: Option<archive::Archive>,
    /// The `audit.log` sink's health, while it runs.
    pub sink: Option<Arc<sink::SinkStatus>>,
    /// Orgs' retention policies, read from the store at most every few seconds.
    policies: Arc<Mutex<HashMap<String, (Instant, retention::Policy)>>>,
}

/// How long a node trusts its cached copy of an org's retention policy (another node may change it).
const POLICY_TTL: Duration = Duration::from_secs(5);

/// Recent uses of sessions (for sliding expiry) and API keys (for "last used"), batched so a busy
/// ingest key does not cost a write per request.
#[derive(Debug, Default)]
pub struct Activity {
    sessions: Mutex<HashMap<String, Micros>>,
    keys: Mutex<HashMap<String, Micros>>,
}

impl Activity {
    pub fn session_used(&self, id: &str, at: Micros) {
        if let Ok(mut m) = self.sessions.lock() {
            m.insert(id.to_string(), at);
        }
    }

    pub fn key_used(&self, id: &str, at: Micros) {
        if let Ok(mut m) = self.keys.lock() {
            m.insert(id.to_string(), at);
        }
    }

    /// The latest use of a session seen here and not yet flushed.
    pub fn session_seen(&self, id: &str) -> Option<Micros> {
        self.sessions.lock().ok().and_then(|m| m.get(id).copied())
    }

    pub fn forget_session(&self, id: &str) {
        if let Ok(mut m) = self.sessions.lock() {
            m.remove(id);
        }
    }

    /// Writes pending uses to the store.
    pub async fn flush(&self, store: &dyn Store) -> Result<(), trail_store::StoreError> {
        let sessions: Vec<_> = self.sessions.lock().map(|mut m| m.drain().collect()).unwrap_or_default();
        let keys: Vec<_> = self.keys.lock().map(|mut m| m.drain().collect()).unwrap_or_default();
        if !sessions.is_empty() {
            store.touch_sessions(sessions).await?;
        }
        if !keys.is_empty() {
            store.touch_api_keys(keys).await?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl AppState {
    pub fn new(store: Arc<dyn Store>, settings: Settings, signer: trail_merkle::Signer) -> Self {
        let settings_ingest_permits = settings.limits.max_concurrent_ingest.max(1);
        Self {
            store,
            metrics: Arc::new(Metrics::default()),
            signer: Arc::new(signer),
            activity: Arc::default(),
            key_reads: Arc::default(),
            throttle: Arc::default(),
            password_checks: auth::PasswordChecks::default(),
            ingest_permits: Arc::new(tokio::sync::Semaphore::new(settings_ingest_permits)),
            archive: match archive::Archive::open(&settings) {
                Ok(a) => Some(a),
                Err(e) => {
                    tracing::error!(error = %e, "the archive cannot be opened; retention and restores are off");
                    None
                }
            },
            policies: Arc::default(),
            sink: None,
            settings: Arc::new(settings),
        }
    }

    /// An org's retention policy: its own settings, or the server's defaults.
    pub async fn policy(&self, org: &str) -> Result<retention::Policy, ApiError> {
        if let Ok(cache) = self.policies.lock()
            && let Some((at, p)) = cache.get(org)
            && at.elapsed() < POLICY_TTL
        {
            return Ok(*p);
        }
        let p = retention::Policy::of(&self.settings.retention, self.store.org_settings(org).await?.as_ref());
        if let Ok(mut cache) = self.policies.lock() {
            if cache.len() > 10_000 {
                cache.clear();
            }
            cache.insert(org.to_string(), (Instant::now(), p));
        }
        Ok(p)
    }

    /// Drops the cached policy after this node changed it.
    pub fn forget_policy(&self, org: &str) {
        if let Ok(mut cache) = self.policies.lock() {
            cache.remove(org);
        }
    }

    /// The oldest event time still in the org's hot retention.
    pub async fn hot_start(&self, org: &str, now: Micros) -> Result<Micros, ApiError> {
        Ok(self.policy(org).await?.hot_start(now))
    }

    /// The public base URL used in links (invitations): `public_url`, or the listen address.
    pub fn public_url(&self) -> String {
        let configured = self.settings.public_url.trim_end_matches('/');
        if configured.is_empty() {
            format!("http://{}", self.settings.listen)
        } else {
            configured.to_string()
        }
    }
}

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

/// Creates org `default` and `admin@localhost` on an empty store. Returns the generated password
/// when none was given, so the caller can show it once.
pub async fn bootstrap(store: &dyn Store, admin_password: Option<&str>) -> Result<Option<String>, ApiError> {
    if !store.orgs().await?.is_empty() {
        return Ok(None);
    }
    let generated = admin_password.is_none().then(auth::random_secret);
    let password = admin_password.or(generated.as_deref()).unwrap_or_default();
    let hash = auth::hash_password(password)?;
    let t = now();
    match store.create_org("default", "Default organization", t).await {
        Ok(_) => {}
        // Another node sharing the database bootstrapped at the same moment.
        Err(trail_store::StoreError::Conflict(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let user = match store.user_by_email("admin@localhost").await? {
        Some(u) => u,
        None => match store.create_user("admin@localhost", &hash, true, t).await {
            Ok(u) => u,
            Err(trail_store::StoreError::Conflict(_)) => store
                .user_by_email("admin@localhost")
                .await?
                .ok_or_else(|| ApiError::internal("the first administrator vanished while being created"))?,
            Err(e) => return Err(e.into()),
        },
    };
    store.add_org_admin("default", &user.id).await?;
    Ok(generated)
}

/// A bound, not yet running server.
#[derive(Debug)]
pub struct Server {
    listener: tokio::net::TcpListener,
    state: AppState,
}

impl Server {
    pub async fn bind(mut state: AppState) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(state.settings.listen).await?;
        // With port 0 the real address is known only now; links (public_url) must use it.
        let mut settings = (*state.settings).clone();
        settings.listen = listener.local_addr()?;
        state.settings = Arc::new(settings);
        Ok(Self { listener, state })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then stops accepting and finishes in-flight requests. The
    /// checkpointer runs alongside; a last pass after shutdown signs what the final requests appended.
    pub async fn run(
        mut self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let sink = match sink::SinkConfig::from_settings(&self.state.settings.sinks.file)
            .map_err(std::io::Error::other)?
        {
            Some(cfg) => {
                let (status, task) = sink::start(self.state.store.clone(), cfg, sink::system_clock())?;
                self.state.sink = Some(status.clone());
                Some((task, tokio::spawn(reopen_on_sighup(status))))
            }
            None => None,
        };
        let (store, signer, name) =
            (self.state.store.clone(), self.state.signer.clone(), self.state.settings.server_name.clone());
        let checkpointer = tokio::spawn(integrity::run_checkpointer(
            store.clone(),
            signer.clone(),
            name.clone(),
            self.state.metrics.clone(),
        ));
        let activity = self.state.activity.clone();
        let key_reads = self.state.key_reads.clone();
        let flusher = tokio::spawn({
            let (activity, key_reads, store) = (activity.clone(), key_reads.clone(), store.clone());
            async move {
                let mut tick = tokio::time::interval(Duration::from_secs(5));
                loop {
                    tick.tick().await;
                    if let Err(e) = activity.flush(store.as_ref()).await {
                        tracing::warn!(error = %e, "cannot record session and key activity; will retry");
                    }
                    if let Err(e) = key_reads.flush(store.as_ref(), trail_model::time::now(), false).await {
                        tracing::warn!(error = %e, "cannot record API keys' reads; will retry");
                    }
                }
            }
        });
        let exporter = tokio::spawn(exports::run_exporter(self.state.clone()));
        let retention = self.state.archive.clone().map(|archive| {
            let settings = &self.state.settings;
            let r = retention::Retention::new(
                store.clone(),
                archive,
                signer.clone(),
                &settings.server_name,
                settings.retention.clone(),
            );
            tokio::spawn(retention::run_job(r, settings.retention.interval_secs, self.state.metrics.clone()))
        });
        let header_timeout = Duration::from_secs(self.state.settings.limits.request_timeout_secs.max(1));
        let served = serve_connections(self.listener, router(self.state), header_timeout, shutdown).await;
        checkpointer.abort();
        flusher.abort();
        exporter.abort();
        if let Some((task, hup)) = sink {
            task.abort();
            hup.abort();
        }
        if let Some(r) = retention {
            r.abort();
        }
        if let Err(e) = activity.flush(store.as_ref()).await {
            tracing::warn!(error = %e, "cannot record session and key activity at shutdown");
        }
        if let Err(e) = key_reads.flush(store.as_ref(), trail_model::time::now(), true).await {
            tracing::warn!(error = %e, "cannot record API keys' reads at shutdown");
        }
        if let Err(e) = integrity::checkpoint_once(store.as_ref(), &signer, &name).await {
            tracing::warn!(error = %e, "final checkpoint failed");
        }
        served
    }
}

/// Accepts connections and serves HTTP/1.1 on each until `shutdown`, then lets in-flight requests
/// finish. Unlike `axum::serve` it bounds the time a client may take to send its request head
/// (`header_timeout`), so slow or silent clients (slow-loris) cannot hold connections forever.
async fn serve_connections(
    listener: tokio::net::TcpListener,
    app: Router,
    header_timeout: Duration,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use tower::{Service, ServiceExt};
    let mut make = app.into_make_service_with_connect_info::<SocketAddr>();
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                // Out of descriptors and the like: wait a little rather than spin.
                Err(e) => {
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(svc) = make.call(remote).await;
        let svc = hyper_util::service::TowerToHyperService::new(
            svc.map_request(|req: axum::http::Request<hyper::body::Incoming>| req.map(Body::new)),
        );
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(header_timeout)
            .serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Reopens `audit.log` on SIGHUP, so an external logrotate can move it away.
async fn reopen_on_sighup(status: Arc<sink::SinkStatus>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else { return };
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reopening audit.log");
            status.request_reopen();
        }
    }
    #[cfg(not(unix))]
    drop(status);
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
