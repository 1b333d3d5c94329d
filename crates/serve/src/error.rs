//! Errors as HTTP answers: a status and `{"error": "..."}` naming the problem.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

/// A request the service refuses or cannot answer.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// Seconds for a `Retry-After` header (503 when the queue is full).
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into(), retry_after: None }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError { status: StatusCode::SERVICE_UNAVAILABLE, message: message.into(), retry_after: Some(1) }
    }
}

/// Text from a client as it may be echoed in an error or a log line: control characters
/// escaped (no forged lines), at most `max` characters (the rest counted).
pub fn shown(text: &str, max: usize) -> String {
    let mut out: String =
        text.chars().take(max).flat_map(|c| if c.is_control() { c.escape_default().collect::<Vec<_>>() } else { vec![c] }).collect();
    let total = text.chars().count();
    if total > max {
        out += &format!("... ({} more characters)", total - max);
    }
    out
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(serde_json::json!({ "error": self.message }))).into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut().insert(header::RETRY_AFTER, s.into());
        }
        r
    }
}

/// The one place an engine failure becomes an HTTP status: 503 while no model is loaded, the
/// queue is full or the server stops (with Retry-After), 422 for an image or a request the
/// served model cannot take, 500 for a failed forward pass.
impl From<crate::engine::EngineError> for ApiError {
    fn from(e: crate::engine::EngineError) -> Self {
        use crate::engine::EngineError::*;
        let message = e.to_string();
        match e {
            NoModel | Busy | ShuttingDown => ApiError::unavailable(message),
            BadImage(_) | Unsupported(_) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message),
            Inference(_) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message),
        }
    }
}

impl From<axum::extract::multipart::MultipartError> for ApiError {
    fn from(e: axum::extract::multipart::MultipartError) -> Self {
        Self::new(e.status(), format!("malformed multipart body: {}", e.body_text()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineError;

    #[test]
    fn each_engine_failure_has_one_status() {
        let status = |e: EngineError| ApiError::from(e).status;
        assert_eq!(status(EngineError::NoModel), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(status(EngineError::Busy), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(status(EngineError::BadImage("x".into())), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(status(EngineError::Unsupported("x".into())), StatusCode::UNPROCESSABLE_ENTITY);
        let e = ApiError::from(EngineError::Inference("out of memory".into()));
        assert_eq!((e.status, e.message.as_str()), (StatusCode::INTERNAL_SERVER_ERROR, "inference failed: out of memory"));
    }

    #[test]
    fn echoed_text_is_one_bounded_line() {
        assert_eq!(shown("a\nserve: FORGED", 100), "a\\nserve: FORGED");
        let long = shown(&"x".repeat(5000), 10);
        assert_eq!(long, format!("{}... (4990 more characters)", "x".repeat(10)));
        assert_eq!(shown("☃☃", 1), "☃... (1 more characters)");
    }
}
