//! The dispatcher's admin listener.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use fanfare_fabric::SubscriptionTable;
use fanfare_telemetry::DispatcherMetrics;
use prometheus_client::registry::Registry;

#[derive(Clone)]
pub(crate) struct AdminState {
    pub registry: Arc<Registry>,
    pub table: SubscriptionTable,
    pub client: async_nats::Client,
    pub metrics: DispatcherMetrics,
}

pub(crate) fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/table", get(table))
        .with_state(state)
}

async fn readyz(State(state): State<AdminState>) -> Response {
    let connected = state.client.connection_state() == async_nats::connection::State::Connected;
    if connected && state.table.is_synced() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn metrics(State(state): State<AdminState>) -> Response {
    state.metrics.table_size(state.table.video_count());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        fanfare_telemetry::render(&state.registry),
    )
        .into_response()
}

/// The subscription table as this dispatcher sees it: `{"video":["frontend",..]}`.
async fn table(State(state): State<AdminState>) -> Response {
    Json(state.table.snapshot()).into_response()
}
