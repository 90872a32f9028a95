//! Liveness, readiness, metrics and the OpenAPI document: unauthenticated by design, and free of
//! anything an org would consider private.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::AppState;

pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

pub async fn readyz(State(state): State<AppState>) -> Response {
    match state.store.ready().await {
        Ok(()) => Json(json!({"status": "ready"})).into_response(),
        Err(e) => crate::not_ready(e),
    }
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render()).into_response()
}

pub async fn openapi() -> Json<serde_json::Value> {
    Json(crate::openapi::document())
}
