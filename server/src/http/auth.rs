//! `Authorization: Bearer <key>` → the key's tenant, for every API route.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::AppState;
use crate::error::{AppError, ErrorCode};

/// The tenant the request's API key belongs to. Every handler that touches data takes
/// one, so no route can reach another tenant's events.
#[derive(Debug, Clone)]
pub struct Tenant(pub String);

impl FromRequestParts<AppState> for Tenant {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
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
        let tenant = state.client.authenticate(token.trim()).await?;
        Ok(Tenant(tenant))
    }
}
