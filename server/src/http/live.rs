//! `GET /inbox/stream`: the live stream as Server-Sent Events (SPEC §10): `id:` the
//! position, `event: event`, `data:` the event, from `services::live` (the hub and
//! each subscriber's replay then live events); a tenant has at most `max_live_streams`
//! streams open (429 past them).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use triggers_client::{LiveFilter, Position};

use super::auth::{over_limit, Tenant};
use super::error::{AppError, ErrorCode};
use super::parse::{self, containment_filters, param, Params};
use super::state::AppState;
use crate::services::live::{follow, Published};

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/inbox/stream", get(stream))
}

/// GET /inbox/stream
#[utoipa::path(get, path = "/inbox/stream", params(("stream" = Option<String>, Query, min_length = 1, max_length = 200, pattern = r"^[^\u0000-\u001F\u007F]*$"), ("after" = Option<String>, Query, pattern = "^[0-9]{1,18}$", description = "resume after this position (the id of the last event received); the Last-Event-ID header wins"), ("Last-Event-ID" = Option<String>, Header, description = "resume after this position")), responses((status = 200, description = "text/event-stream: `id:` the position, `event: event`, `data:` the event; a keep-alive comment every 15 s. Also filters metadata.<k>=v and payload.<k>=v by containment", content_type = "text/event-stream", body = String), (status = 400, description = "A bad filter, or a position that is not one (INVALID_CURSOR)", body = super::shapes::ErrorEnvelope)))]
pub(super) async fn stream(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    headers: HeaderMap,
    query: Params,
) -> Result<Response, AppError> {
    let pairs = parse::query(query, &["stream", "after"], true)?;
    let slot = state
        .tenants
        .open_stream(&tenant)
        .map_err(|o| over_limit(&o))?;
    let (hub, client, place) = state.live.for_tenant(&tenant).await?;
    let mut filter = LiveFilter::tenant(tenant);
    if let Some(stream) = param(&pairs, "stream") {
        triggers_client::check_texts(&[("stream", stream)])?;
        filter.stream = Some(stream.to_string());
    }
    (filter.metadata_contains, filter.payload_contains) = containment_filters(&pairs);
    let resume = match headers.get("last-event-id") {
        Some(value) => Some(value.to_str().unwrap_or("\u{fffd}")),
        None => param(&pairs, "after"),
    };
    let from = resume
        .map(|text| {
            text.trim()
                .parse::<Position>()
                .map_err(|e| AppError::new(ErrorCode::InvalidCursor, e.to_string()))
        })
        .transpose()?;
    let key_id = key_id(&headers);
    let keep_alive = hub.keep_alive();
    let closed = hub.closed();
    // Two events on their way at most: the rest waits in the mailbox or the database.
    let (tx, rx) = mpsc::channel::<Arc<Published>>(2);
    tokio::spawn(async move {
        follow(hub, client, place, filter, from, key_id, tx).await;
        drop(slot);
    });
    // First the reconnect delay a browser's EventSource uses (no id, so it moves no
    // one's last position), then the events.
    let retry = SseEvent::default().retry(Duration::from_secs(1));
    let events = futures_util::stream::once(async move { Ok::<_, Infallible>(retry) })
        .chain(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv()
                .await
                .map(|event| (Ok::<_, Infallible>(sse(&event)), rx))
        }))
        .take_until(closed);
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(keep_alive))
        .into_response();
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// The id of the API key in the request's Authorization header (checked already).
fn key_id(headers: &HeaderMap) -> Option<String> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let token = value.split_once(' ')?.1.trim();
    triggers_core::key_id(token).map(str::to_string)
}

/// A published event as an SSE event.
fn sse(event: &Published) -> SseEvent {
    SseEvent::default()
        .id(event.position().to_string())
        .event("event")
        .data(event.data())
}
