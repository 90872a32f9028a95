//! Liveness, readiness, metrics and the OpenAPI document: unauthenticated by design, and free of
//! anything an org would consider private.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use std::sync::atomic::Ordering;

use serde_json::json;

use crate::AppState;

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
            let degraded = sink.as_ref().is_some_and(|s| s["status"] == "failing");
            Json(json!({"status": if degraded { "degraded" } else { "ready" }, "sink": sink})).into_response()
        }
        Err(e) => crate::not_ready(e),
    }
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    let mut text = state.metrics.render();
    if let Some(s) = &state.sink {
        use std::fmt::Write;
        let _ = write!(
            text,
            "# HELP trail_sink_lines_total Lines written to audit.log.\n# TYPE trail_sink_lines_total counter\ntrail_sink_lines_total {}\n\
             # HELP trail_sink_errors_total Failed audit.log write attempts.\n# TYPE trail_sink_errors_total counter\ntrail_sink_errors_total {}\n\
             # HELP trail_sink_lag_events Events stored but not yet in audit.log.\n# TYPE trail_sink_lag_events gauge\ntrail_sink_lag_events {}\n\
             # HELP trail_sink_up Whether the last audit.log write succeeded.\n# TYPE trail_sink_up gauge\ntrail_sink_up {}\n",
            s.lines.load(Ordering::Relaxed),
            s.errors.load(Ordering::Relaxed),
            s.lag.load(Ordering::Relaxed),
            u8::from(s.error().is_none()),
        );
    }
    if let Ok(lag) = state.store.search_index_lag().await {
        use std::fmt::Write;
        let _ = write!(
            text,
            "# HELP trail_search_index_lag_events Events stored but not yet in the full-text index (searches read them row by row meanwhile).\n# TYPE trail_search_index_lag_events gauge\ntrail_search_index_lag_events {lag}\n"
        );
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
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
