//! Where the API key is checked (`Authorization: Bearer <key>` → the key's tenant, for
//! every API route) and the per-key and per-tenant limits that follow it are applied:
//! the key by [`KeyStore`] (guard/keys.rs), then the key's requests per minute, then, for
//! routes that read or write through the API's pool, a turn among the tenant's requests
//! in flight. A request is only counted against a key's budget once it has proved it
//! holds the key: wrong secrets spend nobody's budget.
//!
//! [`limits_layer`] keeps what a request was granted for as long as its response is being
//! made: the rate-limit headers (`X-RateLimit-Limit/Remaining/Reset`) it adds to the
//! response, and the tenant's turn, given back when the handler is done.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use axum::extract::{ConnectInfo, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tokio::sync::OwnedSemaphorePermit;

use super::error::{AppError, ErrorCode};
use super::state::AppState;
use crate::guard::{Authenticated, ClientKey, Denied, Over};

/// The tenant the request's API key belongs to, its requests per minute counted, with a
/// turn among the tenant's requests using the database. Every handler that touches data
/// takes one (or a [`Sender`]), so no route can reach another tenant's events.
#[derive(Debug, Clone)]
pub struct Tenant(pub String);

/// As [`Tenant`], without a turn: for `POST /events`, which goes through group commit's
/// own connections (bounded by the tenant's events per minute instead).
#[derive(Debug, Clone)]
pub struct Sender(pub String);

impl FromRequestParts<AppState> for Tenant {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let key = authenticate(parts, state).await?;
        let turn = state
            .tenants
            .turn(&key.tenant)
            .await
            .map_err(|over| over_limit(&over))?;
        if let Some(granted) = parts.extensions.get::<Granted>() {
            granted.lock().turn = turn;
        }
        Ok(Tenant(key.tenant))
    }
}

impl FromRequestParts<AppState> for Sender {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        Ok(Sender(authenticate(parts, state).await?.tenant))
    }
}

/// The request's key, checked, and one request counted against its per-minute limit.
async fn authenticate(parts: &Parts, state: &AppState) -> Result<Authenticated, AppError> {
    let header = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| {
            AppError::new(
                ErrorCode::MissingAuthorization,
                "send Authorization: Bearer <api key>",
            )
        })?;
    let value = header.to_str().map_err(|_| {
        AppError::new(
            ErrorCode::InvalidAuthScheme,
            "the Authorization header is not text",
        )
    })?;
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AppError::new(
            ErrorCode::InvalidAuthScheme,
            "use the Bearer scheme: Authorization: Bearer <api key>",
        ));
    }
    let client = ClientKey::from(client_address(parts, state));
    let key = state
        .keys
        .authenticate(token.trim(), client)
        .await
        .map_err(denied)?;
    let granted = parts.extensions.get::<Granted>();
    match state.tenants.request(&key.tenant, &key.key_id) {
        Ok(left) => {
            if let Some(granted) = granted {
                granted.lock().rate = (left.limit > 0).then_some(RateHeaders {
                    limit: left.limit,
                    remaining: left.remaining,
                    reset: left.reset_s,
                });
            }
            Ok(key)
        }
        Err((over, limit)) => {
            let e = over_limit(&over);
            if let Some(granted) = granted {
                granted.lock().rate = Some(RateHeaders {
                    limit,
                    remaining: 0,
                    reset: e.retry_after().unwrap_or(1),
                });
            }
            Err(e)
        }
    }
}

/// The client's address: the TCP peer, or who a trusted proxy forwarded for. A request
/// with no peer (a test driving the router in process) is 0.0.0.0.
fn client_address(parts: &Parts, state: &AppState) -> IpAddr {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
    state.trusted_proxies.client(peer, &parts.headers)
}

fn denied(denied: Denied) -> AppError {
    match denied {
        Denied::Malformed => AppError::new(ErrorCode::InvalidToken, "API key is malformed"),
        Denied::Invalid => AppError::new(ErrorCode::InvalidToken, "API key is not valid"),
        Denied::Revoked => AppError::new(ErrorCode::InvalidToken, "API key is revoked"),
        Denied::Expired => AppError::new(ErrorCode::InvalidToken, "API key has expired"),
        Denied::TooManyUnknown { this_client, wait } => {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let who = if this_client {
                "from this address"
            } else {
                "from all addresses together"
            };
            AppError::new(
                ErrorCode::RateLimitExceeded,
                format!("too many failed authentications {who}; retry in {secs} s"),
            )
            .with_retry_after(secs.max(1))
        }
        Denied::Database(e) => AppError::from(e),
    }
}

/// The error a tenant over one of its limits gets: 429, with Retry-After when waiting
/// helps.
pub fn over_limit(over: &Over) -> AppError {
    match over {
        Over::Rate { what, limit, wait } => {
            let secs = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
            AppError::new(
                ErrorCode::RateLimitExceeded,
                format!("over {limit} {what}; retry in {secs} s"),
            )
            .with_retry_after(secs)
        }
        Over::BatchOverQuota { events, limit } => AppError::new(
            ErrorCode::RateLimitExceeded,
            format!(
                "a batch of {events} events is more than this tenant's {limit} events per minute; send smaller batches"
            ),
        ),
        Over::Queued { limit } => AppError::new(
            ErrorCode::LimitExceeded,
            format!(
                "this tenant has {limit} events waiting in the queue, its share (max_queued); retry once they are processed"
            ),
        )
        .with_retry_after(1),
        Over::Busy { limit } => AppError::new(
            ErrorCode::LimitExceeded,
            format!("this tenant has {limit} requests in flight, its limit (max_concurrency); retry in a moment"),
        )
        .with_retry_after(1),
        Over::Streams { limit } => AppError::new(
            ErrorCode::LimitExceeded,
            format!("this tenant has {limit} live streams open, its limit (max_live_streams); close one first"),
        ),
    }
}

/// What a request was granted, kept by [`limits_layer`] until its response is made.
#[derive(Clone, Default)]
struct Granted(Arc<Mutex<Grant>>);

#[derive(Default)]
struct Grant {
    rate: Option<RateHeaders>,
    turn: Option<OwnedSemaphorePermit>,
}

struct RateHeaders {
    limit: u64,
    remaining: u64,
    reset: u64,
}

impl Granted {
    fn lock(&self) -> std::sync::MutexGuard<'_, Grant> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Middleware: holds what the request is granted (its tenant's turn) until the handler
/// has answered, and adds the key's `X-RateLimit-*` headers to the answer.
pub async fn limits_layer(mut request: Request, next: Next) -> Response {
    let granted = Granted::default();
    request.extensions_mut().insert(granted.clone());
    let mut response = next.run(request).await;
    let grant = std::mem::take(&mut *granted.lock());
    if let Some(rate) = grant.rate {
        for (name, value) in [
            ("x-ratelimit-limit", rate.limit),
            ("x-ratelimit-remaining", rate.remaining),
            ("x-ratelimit-reset", rate.reset),
        ] {
            response
                .headers_mut()
                .insert(HeaderName::from_static(name), HeaderValue::from(value));
        }
    }
    response
}
