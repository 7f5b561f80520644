//! Where the API key is checked: `Authorization: Bearer <key>` → the key's tenant, for
//! every API route, with a short-lived cache of keys that passed, emptied whenever a
//! key is revoked anywhere (the `triggers_keys` notification).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRef, FromRequestParts};
use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use triggers_client::{Client, KEYS_CHANNEL};

use super::error::{AppError, ErrorCode};

/// The tenant the request's API key belongs to. Every handler that touches data takes
/// one, so no route can reach another tenant's events.
#[derive(Debug, Clone)]
pub struct Tenant(pub String);

impl<S> FromRequestParts<S> for Tenant
where
    S: Send + Sync,
    Client: FromRef<S>,
    KeyCache: FromRef<S>,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
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
        let token = token.trim();
        let keys = KeyCache::from_ref(state);
        if let Some(tenant) = keys.get(token) {
            return Ok(Tenant(tenant));
        }
        // Guessing keys: an address with too many failed authentications in the last
        // minute is refused before its key is even looked at.
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        if let Some(wait) = peer.and_then(|ip| keys.failures.blocked(ip)) {
            return Err(AppError::new(
                ErrorCode::RateLimitExceeded,
                format!("too many failed authentications from this address; retry in {wait} s"),
            )
            .with_retry_after(wait));
        }
        let key = match Client::from_ref(state).authenticate_key(token).await {
            Ok(key) => key,
            Err(e) => {
                let e = AppError::from(e);
                if let (Some(ip), ErrorCode::InvalidToken) = (peer, e.code()) {
                    keys.failures.failed(ip);
                }
                return Err(e);
            }
        };
        keys.put(token, &key.tenant, key.expires_at);
        Ok(Tenant(key.tenant))
    }
}

/// Keys that authenticated recently, so a busy client does not cost a database round
/// trip per request. An entry lives its TTL (10 s), never past the key's expiry, and
/// every entry goes as soon as a key is revoked on any server: [`KeyCache::follow`]
/// listens for `triggers.revoke_api_key`'s notification (and, while it cannot listen,
/// the cache holds nothing). Failures are never cached.
#[derive(Clone)]
pub struct KeyCache {
    entries: Arc<Mutex<HashMap<String, (String, Instant)>>>,
    ttl: Duration,
    /// Databases whose revocations are followed ([`KeyCache::follow`]), and how many of
    /// them are being listened to now: unless all are, nothing is cached.
    followed: Arc<AtomicUsize>,
    listening: Arc<AtomicUsize>,
    /// Failed authentications by client address.
    pub failures: FailedAuth,
}

impl Default for KeyCache {
    fn default() -> Self {
        KeyCache {
            entries: Arc::default(),
            ttl: Self::TTL,
            followed: Arc::default(),
            listening: Arc::default(),
            failures: FailedAuth::default(),
        }
    }
}

impl KeyCache {
    /// How long a successful authentication is trusted, at most.
    pub const TTL: Duration = Duration::from_secs(10);
    /// At most this many keys are remembered; past it the cache starts over.
    const MAX: usize = 10_000;

    /// The same cache trusting an authentication for `ttl`.
    pub fn with_ttl(mut self, ttl: Duration) -> KeyCache {
        self.ttl = ttl;
        self
    }

    fn get(&self, token: &str) -> Option<String> {
        let entries = self.entries.lock().ok()?;
        entries
            .get(token)
            .filter(|(_, until)| Instant::now() < *until)
            .map(|(tenant, _)| tenant.clone())
    }

    fn put(&self, token: &str, tenant: &str, expires_at: Option<DateTime<Utc>>) {
        let followed = self.followed.load(Ordering::SeqCst);
        if followed == 0 || self.listening.load(Ordering::SeqCst) != followed {
            return;
        }
        let left = expires_at.map_or(self.ttl, |at| {
            (at - Utc::now()).to_std().unwrap_or_default().min(self.ttl)
        });
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= Self::MAX {
                entries.clear();
            }
            entries.insert(
                token.to_string(),
                (tenant.to_string(), Instant::now() + left),
            );
        }
    }

    fn clear(&self) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.clear();
        }
    }

    /// Empties the cache on every revocation in `client`'s database, for as long as the
    /// process runs: one LISTEN connection, reopened when it drops (the cache is off
    /// meanwhile). A sharded layout follows every node.
    pub fn follow(&self, client: Client) {
        let cache = self.clone();
        cache.followed.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            loop {
                match client.listener_on(KEYS_CHANNEL).await {
                    Ok(listener) => {
                        cache.listening.fetch_add(1, Ordering::SeqCst);
                        while listener.notified().await.is_ok() {
                            cache.clear();
                        }
                        cache.listening.fetch_sub(1, Ordering::SeqCst);
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "cannot listen for key revocations; not caching keys")
                    }
                }
                cache.clear();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
}

/// Failed authentications per client address (the TCP peer: behind a proxy that is the
/// proxy, so put the limit there), in windows of a minute: at `per_minute` failures the
/// address is refused (429 with Retry-After) until its window ends.
#[derive(Clone)]
pub struct FailedAuth {
    per_minute: u32,
    windows: Arc<Mutex<HashMap<IpAddr, (Instant, u32)>>>,
}

impl Default for FailedAuth {
    fn default() -> Self {
        FailedAuth {
            per_minute: FailedAuth::PER_MINUTE,
            windows: Arc::default(),
        }
    }
}

impl FailedAuth {
    /// Failed authentications an address may have per minute by default.
    pub const PER_MINUTE: u32 = 30;
    const WINDOW: Duration = Duration::from_secs(60);
    /// At most this many addresses are remembered; past it the oldest windows go.
    const MAX: usize = 100_000;

    /// The same allowing `per_minute` failures a minute per address (0: no limit).
    pub fn per_minute(per_minute: u32) -> FailedAuth {
        FailedAuth {
            per_minute,
            ..FailedAuth::default()
        }
    }

    /// Seconds until `ip` may try again, if it is refused now.
    fn blocked(&self, ip: IpAddr) -> Option<u64> {
        let windows = self.windows.lock().ok()?;
        let (start, failures) = windows.get(&ip)?;
        let left = Self::WINDOW.checked_sub(start.elapsed())?;
        (self.per_minute > 0 && *failures >= self.per_minute).then(|| left.as_secs().max(1))
    }

    /// Counts a failed authentication of `ip`.
    fn failed(&self, ip: IpAddr) {
        if self.per_minute == 0 {
            return;
        }
        if let Ok(mut windows) = self.windows.lock() {
            if windows.len() >= Self::MAX {
                windows.retain(|_, (start, _)| start.elapsed() < Self::WINDOW);
            }
            let window = windows.entry(ip).or_insert((Instant::now(), 0));
            if window.0.elapsed() >= Self::WINDOW {
                *window = (Instant::now(), 0);
            }
            window.1 += 1;
        }
    }
}
