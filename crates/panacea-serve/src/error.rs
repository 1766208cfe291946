//! The crate's typed errors: [`ServeError`] for the library's callers, [`ApiError`] for one
//! HTTP request (a status, an OpenAI-style JSON body and the field at fault).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// What can go wrong starting or running the server or the engine.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Loading the model or running it.
    #[error(transparent)]
    Lm(#[from] panacea_lm::LmError),
    /// Reading an adapter folder.
    #[error(transparent)]
    Core(#[from] panacea_core::CoreError),
    /// Binding or serving the socket, or writing a file.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Options that cannot work together, with a hint.
    #[error("{0}")]
    Invalid(String),
    /// The engine thread stopped (it panicked or was shut down).
    #[error("the engine thread is gone: {0}")]
    EngineGone(String),
    /// A preference that is not a point of the simplex of the adapter's objectives.
    #[error("{0}")]
    Preference(#[from] crate::preference::PreferenceError),
}

impl ServeError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io { what: what.into(), source }
    }
}

/// A failed request: its HTTP status and the JSON body
/// `{"error": {"message", "type", "param", "code"}}` that OpenAI clients read.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// What is wrong, with a hint.
    pub message: String,
    /// The request field at fault (`preference`, `max_tokens`, ...), when there is one.
    pub param: Option<String>,
}

impl ApiError {
    /// 400: the request is malformed; `param` names the field.
    pub fn bad_request(param: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            param: param.map(str::to_owned),
        }
    }

    /// 413: the request (body, prompt, output or choices) is larger than the server's limit.
    pub fn too_large(param: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: message.into(),
            param: param.map(str::to_owned),
        }
    }

    /// 429: the queue is full; retry later.
    pub fn busy(message: impl Into<String>) -> Self {
        Self { status: StatusCode::TOO_MANY_REQUESTS, message: message.into(), param: None }
    }

    /// 503: the server is shutting down or its engine stopped.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self { status: StatusCode::SERVICE_UNAVAILABLE, message: message.into(), param: None }
    }

    /// 404: no such route.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self { status: StatusCode::NOT_FOUND, message: message.into(), param: None }
    }

    /// The OpenAI error type for the status.
    pub fn kind(&self) -> &'static str {
        match self.status {
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_exceeded",
            StatusCode::PAYLOAD_TOO_LARGE => "request_too_large",
            StatusCode::SERVICE_UNAVAILABLE => "server_unavailable",
            StatusCode::NOT_FOUND => "not_found",
            s if s.is_server_error() => "server_error",
            _ => "invalid_request_error",
        }
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({"error": {
            "message": self.message,
            "type": self.kind(),
            "param": self.param,
            "code": self.status.as_u16(),
        }})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}
