//! `--listen ADDR`: `/healthz` (the controller's status as JSON; 200 when
//! the last pass converged every host and the directory is valid, 503 with
//! the reason otherwise), `/livez` (200 while the process serves) and
//! Prometheus `/metrics`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::Shared;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/livez", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/hooks/git", post(git_hook))
        .with_state(shared)
}

async fn healthz(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let status = shared.status();
    let code = if status.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(status))
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        shared.metrics.encode(),
    )
}

/// `POST /hooks/git`: a signed delivery starts a fetch at once (several
/// while one runs are one more fetch); a bad or missing signature is 401
/// and starts nothing; without a secret configured the endpoint is off.
async fn git_hook(
    State(shared): State<Arc<Shared>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> impl IntoResponse {
    let Some(follow) = shared.follow.as_ref() else {
        return (StatusCode::NOT_FOUND, "not following a Git remote\n");
    };
    let Some(secret) = follow.secret.as_ref() else {
        return (
            StatusCode::NOT_FOUND,
            "webhooks are off: no --webhook-secret-env\n",
        );
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    match crate::git::hooks::verify(secret, &body, header) {
        Some(forge) => {
            shared.metrics.count(&shared.metrics.webhooks, "accepted");
            tracing::info!(forge = forge.as_str(), "webhook delivery; fetching now");
            follow.wake.notify_one();
            (StatusCode::ACCEPTED, "fetching\n")
        }
        None => {
            shared.metrics.count(&shared.metrics.webhooks, "refused");
            tracing::warn!("a webhook delivery without a good signature was refused");
            (StatusCode::UNAUTHORIZED, "bad or missing signature\n")
        }
    }
}

/// Serves until `stop`.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    let app = router(shared);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
    {
        tracing::error!(error = %e, "the HTTP server stopped");
    }
}
