//! Rate limiting per API key (GCRA, from the governor crate): `--rate-limit` requests
//! per minute, with bursts up to the same number. Keyed by the key's public id, before
//! the key is checked against the database, so guessing keys is limited too.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::{Quota, RateLimiter};
use triggers_client::KEY_PREFIX;

use super::error::{AppError, ErrorCode};

/// The default per-key rate limit, requests per minute.
pub const DEFAULT_RATE_LIMIT: u32 = 1000;

type Keyed = RateLimiter<
    String,
    governor::state::keyed::DefaultKeyedStateStore<String>,
    DefaultClock,
    StateInformationMiddleware,
>;

/// A per-key limit of `per_minute` requests.
#[derive(Clone)]
pub struct Limiter {
    per_minute: u32,
    limiter: Arc<Keyed>,
}

impl Limiter {
    /// `per_minute` requests per minute per key (at least 1).
    pub fn per_minute(per_minute: u32) -> Limiter {
        let n = NonZeroU32::new(per_minute.max(1)).unwrap_or(NonZeroU32::MIN);
        Limiter {
            per_minute: n.get(),
            limiter: Arc::new(
                RateLimiter::keyed(Quota::per_minute(n))
                    .with_middleware::<StateInformationMiddleware>(),
            ),
        }
    }
}

/// The key's public id (what follows [`KEY_PREFIX`] up to the next `_`), or the whole
/// token when it has none.
fn key_id(request: &Request) -> Option<String> {
    let value = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let token = value.split_once(' ')?.1.trim();
    let id = token
        .strip_prefix(KEY_PREFIX)
        .and_then(|rest| rest.split('_').next())
        .unwrap_or(token);
    Some(id.chars().take(64).collect())
}

fn header(name: &'static str, value: u64) -> (HeaderName, HeaderValue) {
    (HeaderName::from_static(name), HeaderValue::from(value))
}

/// Middleware: 429 RATE_LIMIT_EXCEEDED with Retry-After when a key is over its limit;
/// X-RateLimit-Limit/Remaining/Reset on every keyed response.
pub async fn rate_limit(
    State(limiter): State<Option<Limiter>>,
    request: Request,
    next: Next,
) -> Response {
    let (Some(limiter), Some(key)) = (limiter.as_ref(), key_id(&request)) else {
        return next.run(request).await;
    };
    let limit = u64::from(limiter.per_minute);
    match limiter.limiter.check_key(&key) {
        Ok(snapshot) => {
            let mut response = next.run(request).await;
            let remaining = u64::from(snapshot.remaining_burst_capacity());
            // Seconds until the bucket is full again.
            let reset = (limit - remaining) * 60 / limit.max(1);
            for (name, value) in [
                header("x-ratelimit-limit", limit),
                header("x-ratelimit-remaining", remaining),
                header("x-ratelimit-reset", reset),
            ] {
                response.headers_mut().insert(name, value);
            }
            response
        }
        Err(not_until) => {
            let wait: Duration = not_until.wait_time_from(DefaultClock::default().now());
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let mut response = AppError::new(
                ErrorCode::RateLimitExceeded,
                format!("over {limit} requests per minute for this key; retry in {secs} s"),
            )
            .into_response();
            for (name, value) in [
                header("retry-after", secs),
                header("x-ratelimit-limit", limit),
                header("x-ratelimit-remaining", 0),
                header("x-ratelimit-reset", secs),
            ] {
                response.headers_mut().insert(name, value);
            }
            response
        }
    }
}
