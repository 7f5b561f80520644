//! Where the API key is checked: `Authorization: Bearer <key>` → the key's tenant, for
//! every API route, with a short-lived cache of keys that passed, emptied whenever a
//! key is revoked anywhere (the `triggers_keys` notification).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{FromRef, FromRequestParts};
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
        let key = Client::from_ref(state).authenticate_key(token).await?;
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
    /// Whether revocations are being followed; without it nothing is cached.
    following: Arc<AtomicBool>,
}

impl Default for KeyCache {
    fn default() -> Self {
        KeyCache {
            entries: Arc::default(),
            ttl: Self::TTL,
            following: Arc::default(),
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
        if !self.following.load(Ordering::SeqCst) {
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

    /// Empties the cache on every revocation, for as long as the process runs: one
    /// LISTEN connection, reopened when it drops (the cache is off meanwhile).
    pub fn follow(&self, client: Client) {
        let cache = self.clone();
        tokio::spawn(async move {
            loop {
                match client.listener_on(KEYS_CHANNEL).await {
                    Ok(listener) => {
                        cache.following.store(true, Ordering::SeqCst);
                        while listener.notified().await.is_ok() {
                            cache.clear();
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "cannot listen for key revocations; not caching keys")
                    }
                }
                cache.following.store(false, Ordering::SeqCst);
                cache.clear();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
}
