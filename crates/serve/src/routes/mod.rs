//! The HTTP surface: one small handler per endpoint over shared state, a bearer-token guard
//! on the retrain, jobs and Label Studio endpoints, and a layer counting every request for `/metrics`.

mod explain;
mod info;
mod label_studio;
mod predict;
mod queue;
mod retrain;
mod v2;

use crate::error::ApiError;
pub use crate::state::AppState;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;

/// The service's routes.
pub fn router(state: Arc<AppState>, max_body: usize) -> Router {
    let guarded = Router::new()
        .route("/retrain", post(retrain::start))
        .route("/jobs", get(retrain::jobs))
        .route("/jobs/{id}", get(retrain::job))
        .route("/label-studio/health", get(label_studio::health))
        .route("/label-studio/setup", post(label_studio::setup))
        .route("/label-studio/predict", post(label_studio::predict))
        .route("/label-studio/webhook", post(label_studio::webhook))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/", get(info::page))
        .route("/health", get(info::health))
        .route("/ready", get(info::ready))
        .route("/model", get(info::model))
        .route("/metrics", get(info::metrics))
        .route("/predict", post(predict::predict))
        .route("/explain", post(explain::explain))
        .route("/queue", get(queue::queue))
        .route("/uploads/{id}", get(queue::upload))
        .route("/v2", get(v2::server_metadata))
        .route("/v2/health/live", get(v2::live))
        .route("/v2/health/ready", get(v2::ready))
        .route("/v2/models/{name}", get(v2::metadata))
        .route("/v2/models/{name}/ready", get(v2::model_ready))
        .route("/v2/models/{name}/infer", post(v2::infer))
        .route("/v2/models/{name}/versions/{version}", get(v2::metadata))
        .route("/v2/models/{name}/versions/{version}/ready", get(v2::model_ready))
        .route("/v2/models/{name}/versions/{version}/infer", post(v2::infer))
        .merge(guarded)
        .fallback(|| async { ApiError::not_found("no such endpoint; see GET / for the page and the README for the API") })
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn_with_state(state.clone(), count))
        .with_state(state)
}

/// With `--token-file`, the request must carry `Authorization: Bearer <token>`, or Basic
/// credentials whose password is the token (how Label Studio authenticates to ML backends;
/// the webhook it makes for the backend is given the Bearer header through its API).
async fn require_token(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Result<Response, ApiError> {
    if let Some(token) = &state.token {
        let header = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
        let basic = header.strip_prefix("Basic ").and_then(|b| {
            use base64::Engine as _;
            let text = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b.trim()).ok()?).ok()?;
            text.split_once(':').map(|(_, password)| password.to_string())
        });
        let given = header.strip_prefix("Bearer ").map(String::from).or(basic);
        if given.as_deref() != Some(token.as_str()) {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "this endpoint needs Authorization: Bearer <token> (see serve --token-file)",
            ));
        }
    }
    Ok(next.run(req).await)
}

/// Counts the request by route and status, with its latency.
async fn count(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or("other".to_string(), |p| p.as_str().to_string());
    let start = std::time::Instant::now();
    let res = next.run(req).await;
    state.metrics.request(&route, res.status().as_u16(), start.elapsed().as_secs_f64());
    res
}
