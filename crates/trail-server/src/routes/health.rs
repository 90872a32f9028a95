//! Liveness, readiness, metrics and the OpenAPI document: unauthenticated by design, and free of
//! anything an org would consider private.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use std::sync::atomic::Ordering;

use serde_json::json;

use crate::AppState;
use crate::metrics::{self, Exposition};

pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Ready when the store takes reads and writes. A failing `audit.log` sink does not make the node
/// unready (ingest goes on and the sink catches up) but is reported as `degraded` with its error.
pub async fn readyz(State(state): State<AppState>) -> Response {
    match state.store.ready().await {
        Ok(()) => {
            let sink = state.sink.as_ref().map(|s| match s.error() {
                None => json!({"status": "ok", "lag_events": s.lag.load(Ordering::Relaxed)}),
                Some(e) => {
                    json!({"status": "failing", "error": e, "lag_events": s.lag.load(Ordering::Relaxed)})
                }
            });
            // Destinations that fail or are paused: delivery waits for them, the node serves on.
            let streams: Vec<_> = state
                .streams
                .seen()
                .into_iter()
                .filter(|s| s.state != crate::stream::ACTIVE)
                .map(|s| json!({"org": s.org, "destination": s.id, "name": s.name, "state": s.state, "error": s.error}))
                .collect();
            let degraded = sink.as_ref().is_some_and(|s| s["status"] == "failing") || !streams.is_empty();
            let mut body = json!({"status": if degraded { "degraded" } else { "ready" }, "sink": sink});
            if !streams.is_empty() {
                body["destinations"] = json!(streams);
            }
            Json(body).into_response()
        }
        Err(e) => crate::not_ready(e),
    }
}

/// Every family `/metrics` serves (README lists them). A store that cannot answer leaves its
/// families out for this scrape rather than failing it.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let mut out = Exposition::new();
    state.metrics.render(&mut out);
    metrics::render_process(&mut out);
    if let Some(s) = &state.sink {
        out.one(
            "trail_sink_lines_total",
            "counter",
            "Lines written to audit.log.",
            s.lines.load(Ordering::Relaxed),
        );
        out.one(
            "trail_sink_errors_total",
            "counter",
            "Failed audit.log write attempts.",
            s.errors.load(Ordering::Relaxed),
        );
        out.one(
            "trail_sink_lag_events",
            "gauge",
            "Events stored but not yet in audit.log.",
            s.lag.load(Ordering::Relaxed),
        );
        out.one(
            "trail_sink_up",
            "gauge",
            "Whether the last audit.log write succeeded.",
            u8::from(s.error().is_none()),
        );
    }
    render_streams(&mut out, &state.streams);
    let alerts = &state.alerts.counters;
    out.one(
        "trail_alerts_fired_total",
        "counter",
        "Alert rule firings written.",
        alerts.fired.load(Ordering::Relaxed),
    );
    out.family(
        "trail_alert_notification_failures_total",
        "counter",
        "Alert notifications that failed after their retries, by channel.",
        [
            ("channel=\"email\"", alerts.email_failures.load(Ordering::Relaxed)),
            ("channel=\"webhook\"", alerts.webhook_failures.load(Ordering::Relaxed)),
        ],
    );
    out.one(
        "trail_alert_rules_failing",
        "gauge",
        "Alert rules whose last notification failed (the console names them).",
        state.alerts.failing.lock().map(|f| f.len()).unwrap_or(0),
    );
    if let Ok(lag) = state.store.search_index_lag().await {
        out.one(
            "trail_search_index_lag_events",
            "gauge",
            "Events stored but not yet in the full-text index (searches read them row by row meanwhile).",
            lag,
        );
    }
    match state.store.stats().await {
        Ok(stats) => metrics::render_store(&mut out, &stats),
        Err(e) => tracing::warn!(error = %e, "the store's metrics are unavailable for this scrape"),
    }
    // Every append before the last complete checkpoint pass is signed; while some log has unsigned
    // appends, the oldest of them is at most this old.
    if let Ok(unsigned) = state.store.unsigned_heads().await {
        let covered = state.metrics.checkpoint_covered_at.load(Ordering::Relaxed);
        let lag = if unsigned.is_empty() {
            0.0
        } else {
            (trail_model::time::now() - covered as i64).max(0) as f64 / 1e6
        };
        out.one(
            "trail_checkpoint_lag_seconds",
            "gauge",
            "How long the oldest append not yet covered by a signed checkpoint has waited (at most; 0 when every log is signed).",
            lag,
        );
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], out.finish()).into_response()
}

/// Streaming, by destination kind and state only (bounded labels; each destination's own lag is in
/// the API and the console).
fn render_streams(out: &mut Exposition, streams: &crate::stream::Streams) {
    use crate::stream::{ACTIVE, FAILING, KINDS, PAUSED};
    let seen = streams.seen();
    let mut counts = Vec::new();
    for kind in KINDS {
        for st in [ACTIVE, FAILING, PAUSED] {
            let n = seen.iter().filter(|s| s.kind == kind && s.state == st).count();
            counts.push((format!("kind=\"{}\",state=\"{st}\"", kind.as_str()), n));
        }
    }
    out.family("trail_destinations", "gauge", "Streaming destinations by kind and state.", counts);
    let lag = |f: fn((u64, f64)) -> String| {
        KINDS
            .iter()
            .map(move |k| (format!("kind=\"{}\"", k.as_str()), f(streams.max_lag(*k))))
            .collect::<Vec<_>>()
    };
    out.family(
        "trail_destination_lag_events",
        "gauge",
        "Events not yet acknowledged by the furthest-behind delivering destination of the kind.",
        lag(|l| l.0.to_string()),
    );
    out.family(
        "trail_destination_lag_seconds",
        "gauge",
        "Age of the oldest event not yet acknowledged by a delivering destination of the kind.",
        lag(|l| format!("{:.3}", l.1)),
    );
    let counter = |f: fn(&crate::stream::KindCounters) -> u64| {
        KINDS
            .iter()
            .map(move |k| (format!("kind=\"{}\"", k.as_str()), f(streams.counters(*k))))
            .collect::<Vec<_>>()
    };
    out.family(
        "trail_destination_events_total",
        "counter",
        "Events acknowledged by destinations.",
        counter(|c| c.events.load(Ordering::Relaxed)),
    );
    out.family(
        "trail_destination_batches_total",
        "counter",
        "Batches acknowledged by destinations.",
        counter(|c| c.batches.load(Ordering::Relaxed)),
    );
    out.family(
        "trail_destination_failures_total",
        "counter",
        "Failed delivery attempts (each is retried with backoff).",
        counter(|c| c.failures.load(Ordering::Relaxed)),
    );
}

/// The action catalog: what each `resource.verb` means and where the console files it. Static and
/// public, like the document that describes it.
pub async fn actions() -> Json<serde_json::Value> {
    let actions: Vec<_> = trail_model::catalog::CATALOG
        .iter()
        .map(|a| json!({"action": a.name, "label": a.label, "category": a.category}))
        .collect();
    Json(json!({ "actions": actions }))
}

pub async fn openapi() -> Json<serde_json::Value> {
    Json(crate::openapi::document())
}
