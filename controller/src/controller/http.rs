//! `--listen ADDR`: `/healthz` (the controller's status as JSON; 200 when
//! the last pass converged every host and the directory is valid, 503 with
//! the reason otherwise), `/livez` (200 while the process serves) and
//! Prometheus `/metrics`; the dashboard at `/` and its data at
//! `/api/dashboard` (behind a password with `--dashboard-auth-env`).

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
        .route("/", get(dashboard_page))
        .route("/api/dashboard", get(dashboard_data))
        .with_state(shared)
}

/// `None` when the request may see the dashboard; else the answer.
fn refused(shared: &Shared, headers: &axum::http::HeaderMap) -> Option<axum::response::Response> {
    let expected = shared.dashboard_auth.as_ref()?;
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if super::dashboard::authorized(given, expected) {
        return None;
    }
    Some(
        (
            StatusCode::UNAUTHORIZED,
            [(
                header::WWW_AUTHENTICATE,
                "Basic realm=\"drover\", charset=\"UTF-8\"",
            )],
            "the dashboard asks for its user and password\n",
        )
            .into_response(),
    )
}

/// `GET /`: the dashboard's page, with no external asset.
async fn dashboard_page(
    State(shared): State<Arc<Shared>>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    if let Some(no) = refused(&shared, &headers) {
        return no;
    }
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'",
            ),
            (header::CACHE_CONTROL, "no-store"),
        ],
        super::dashboard::PAGE,
    )
        .into_response()
}

/// `GET /api/dashboard`: what the page shows, as JSON: the status of
/// `/healthz` and the dashboard's view.
async fn dashboard_data(
    State(shared): State<Arc<Shared>>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    if let Some(no) = refused(&shared, &headers) {
        return no;
    }
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(serde_json::json!({ "status": shared.status(), "view": shared.view() })),
    )
        .into_response()
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
