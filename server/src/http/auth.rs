//! Where the API key is checked: `Authorization: Bearer <key>` → the key's tenant, for
//! every API route, with a short-lived cache of keys that passed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use triggers_client::Client;

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
        let tenant = Client::from_ref(state).authenticate(token).await?;
        keys.put(token, &tenant);
        Ok(Tenant(tenant))
    }
}

/// Keys that authenticated recently, so a busy client does not cost a database round
/// trip per request. An entry lives [`KeyCache::TTL`]: a revoked key stops working
/// within that time on every server. Failures are never cached.
#[derive(Clone, Default)]
pub struct KeyCache {
    entries: Arc<Mutex<HashMap<String, (String, Instant)>>>,
}

impl KeyCache {
    /// How long a successful authentication is trusted.
    pub const TTL: Duration = Duration::from_secs(10);
    /// At most this many keys are remembered; past it the cache starts over.
    const MAX: usize = 10_000;

    fn get(&self, token: &str) -> Option<String> {
        let entries = self.entries.lock().ok()?;
        entries
            .get(token)
            .filter(|(_, at)| at.elapsed() < Self::TTL)
            .map(|(tenant, _)| tenant.clone())
    }

    fn put(&self, token: &str, tenant: &str) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= Self::MAX {
                entries.clear();
            }
            entries.insert(token.to_string(), (tenant.to_string(), Instant::now()));
        }
    }
}
