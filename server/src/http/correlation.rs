//! `X-Correlation-ID`: echoed when the request carries a sane one, generated otherwise,
//! set on every response, in every log line of the request (the span of [`trace_layer`])
//! and in error envelopes. The trace layer also logs each 5xx once, with its
//! [`ErrorDetail`].

use std::time::Duration;

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tower_http::classify::{ServerErrorsAsFailures, SharedClassifier};
use tower_http::trace::{DefaultOnRequest, TraceLayer};
use tracing::Span;

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

/// Middleware, outermost: assigns the id, scopes error envelopes to it, and sets it on
/// the response.
pub async fn correlation_id(request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(&HEADER)
        .and_then(accept)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let mut response = CORRELATION_ID.scope(id.clone(), next.run(request)).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(HEADER.clone(), value);
    }
    response
}

/// The inside story of a 5xx, carried on the response (by `AppError`) for
/// [`on_response`] to log; the client never sees it.
#[derive(Debug, Clone)]
pub struct ErrorDetail(pub String);

/// Runs inside [`correlation_id`]'s scope, so the id is the task-local one.
fn span_for(request: &Request) -> Span {
    let id = current_correlation_id();
    tracing::info_span!(
        "request",
        correlation_id = %id,
        method = %request.method(),
        path = %request.uri().path()
    )
}

/// A 5xx is logged once, at error level, with what went wrong inside (the envelope
/// only says "internal error"); anything else at debug level.
fn on_response(response: &Response, latency: Duration, _span: &Span) {
    let status = response.status();
    let micros = latency.as_micros() as u64;
    if status.is_server_error() {
        let detail = response
            .extensions()
            .get::<ErrorDetail>()
            .map_or("", |d| d.0.as_str());
        tracing::error!(
            status = status.as_u16(),
            latency_us = micros,
            detail,
            "request failed"
        );
    } else {
        tracing::debug!(
            status = status.as_u16(),
            latency_us = micros,
            "request done"
        );
    }
}

/// The layer [`trace_layer`] builds.
pub type Trace = TraceLayer<
    SharedClassifier<ServerErrorsAsFailures>,
    fn(&Request) -> Span,
    DefaultOnRequest,
    fn(&Response, Duration, &Span),
    (),
    (),
    (),
>;

/// tower-http's request tracing: one span per request carrying the correlation id, and
/// the outcome logged by [`on_response`].
pub fn trace_layer() -> Trace {
    TraceLayer::new_for_http()
        .make_span_with(span_for as fn(&Request) -> Span)
        .on_response(on_response as fn(&Response, Duration, &Span))
        .on_body_chunk(())
        .on_eos(())
        .on_failure(())
}
