//! HTTP errors of the V2 handlers: `{"error": "..."}` with the status the
//! protocol prescribes.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::metrics::Outcome;

/// Seconds a client should wait before retrying an overloaded or loading server.
const RETRY_AFTER_SECONDS: &str = "1";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("the model is not ready yet")]
    NotReady,
    #[error("too many requests in flight; retry later")]
    Overloaded,
    #[error("request body exceeds {0} bytes")]
    PayloadTooLarge(usize),
    #[error("request timed out after {} ms", .0.as_millis())]
    Timeout(Duration),
    /// Work stopped because its request was gone (past its deadline).
    #[error("the request timed out")]
    Cancelled,
    #[error("unsupported Content-Encoding {0:?}; send gzip, deflate or identity")]
    UnsupportedEncoding(String),
    /// The message is logged; the client sees a generic one.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::NotReady | ApiError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Timeout(_) | ApiError::Cancelled => StatusCode::GATEWAY_TIMEOUT,
            ApiError::UnsupportedEncoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn outcome(&self) -> Outcome {
        match self {
            ApiError::BadRequest(_)
            | ApiError::PayloadTooLarge(_)
            | ApiError::UnsupportedEncoding(_) => Outcome::BadRequest,
            ApiError::NotFound(_) => Outcome::NotFound,
            ApiError::NotReady => Outcome::NotReady,
            ApiError::Overloaded => Outcome::Overloaded,
            ApiError::Timeout(_) | ApiError::Cancelled => Outcome::Timeout,
            ApiError::Internal(_) => Outcome::Error,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = match &self {
            ApiError::Internal(_) => "inference failed; see the server log".to_string(),
            other => other.to_string(),
        };
        let mut response =
            (self.status(), axum::Json(serde_json::json!({ "error": message }))).into_response();
        if matches!(self, ApiError::Overloaded | ApiError::NotReady) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECONDS));
        }
        response
    }
}

impl From<super::v2::V2Error> for ApiError {
    fn from(e: super::v2::V2Error) -> ApiError {
        ApiError::BadRequest(e.to_string())
    }
}

impl From<super::v1::V1Error> for ApiError {
    fn from(e: super::v1::V1Error) -> ApiError {
        ApiError::BadRequest(e.to_string())
    }
}
