//! `X-Correlation-ID`: echoed when the request carries a sane one, generated otherwise,
//! set on every response, in every log line of the request, and in error envelopes.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use crate::error::ErrorDetail;

/// The header carrying the id.
pub static HEADER: HeaderName = HeaderName::from_static("x-correlation-id");

tokio::task_local! {
    static CORRELATION_ID: String;
}

/// The id of the request being handled, or `""` outside a request.
pub fn current_correlation_id() -> String {
    CORRELATION_ID.try_with(Clone::clone).unwrap_or_default()
}

/// A client-supplied id is kept only when it is short and plain, so it is safe to log
/// and to echo in a header.
fn accept(value: &HeaderValue) -> Option<String> {
    let s = value.to_str().ok()?;
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':');
    (!s.is_empty() && s.len() <= 128 && s.chars().all(plain)).then(|| s.to_string())
}

/// Middleware: assigns the id, scopes logs and errors to it, logs 5xx details once.
pub async fn correlation_id(request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(&HEADER)
        .and_then(accept)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let span = tracing::info_span!(
        "request",
        correlation_id = %id,
        method = %request.method(),
        path = %request.uri().path()
    );
    let mut response = CORRELATION_ID
        .scope(id.clone(), next.run(request))
        .instrument(span.clone())
        .await;
    let status = response.status();
    let _enter = span.enter();
    if status.is_server_error() {
        let detail = response
            .extensions()
            .get::<ErrorDetail>()
            .map(|d| d.0.as_str());
        tracing::error!(
            status = status.as_u16(),
            detail = detail.unwrap_or(""),
            "request failed"
        );
    } else {
        tracing::debug!(status = status.as_u16(), "request done");
    }
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(HEADER.clone(), value);
    }
    response
}
