//! Plain HTTP on the gRPC port: `/healthz`, `/metrics` (Prometheus text format), downloads
//! under `/api/v1/`, and the pages of the district dashboard and the stock desk (`ui`).

pub(crate) mod api;
pub mod ui;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::app::App;
use crate::metrics::Metrics;

/// What every HTTP handler gets.
#[derive(Debug, Clone)]
pub(crate) struct WebState {
    pub(crate) app: App,
    metrics: Metrics,
    /// Whether the server is reached over TLS (then cookies are `Secure`).
    pub(crate) tls: bool,
}

/// The HTTP routes; `tls` when the port is served over TLS.
pub fn router(app: App, metrics: Metrics, tls: bool) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .route("/api/v1/epcis", get(api::epcis))
        .merge(ui::routes())
        // Forms are small; a bigger body is refused with 413 before any handler reads it.
        .layer(axum::extract::DefaultBodyLimit::max(crate::limits::MAX_FORM_BYTES))
        .with_state(WebState { app, metrics, tls })
}

async fn healthz(State(s): State<WebState>) -> impl IntoResponse {
    match s.app.store().ping().await {
        Ok(()) => (StatusCode::OK, "ok\n"),
        Err(e) => {
            tracing::warn!(error = %e, "health check failed");
            (StatusCode::SERVICE_UNAVAILABLE, "storage unavailable\n")
        }
    }
}

async fn metrics_text(State(s): State<WebState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.metrics.render())
}
