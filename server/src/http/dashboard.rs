//! `GET /` and `GET /assets/{file}`: the dashboard (SPEC §7). One page and its script and
//! style, embedded in the binary from `server/assets/` (no build step, no CDN). The page
//! needs no key to load; everything it shows comes from the API, called with the key the
//! user enters.
//!
//! For work on the page itself, `TRIGGERS_DASHBOARD_DIR=server/assets` makes the server
//! read the files from that directory on every request instead (edit, reload).

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::error::{AppError, ErrorCode};
use super::parse::NamePath;
use super::state::AppState;

/// `GET /`, `GET /assets/{file}`.
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/assets/{file}", get(asset))
}

/// The embedded files: name, content type, content.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../../assets/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../assets/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("../../assets/app.css"),
    ),
    (
        "icon.svg",
        "image/svg+xml",
        include_str!("../../assets/icon.svg"),
    ),
];

/// The page may load its own script, style and images and call its own origin, nothing
/// else: no inline script or style, no other origin, no framing, no plugins.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// `GET /`: the dashboard.
#[utoipa::path(get, path = "/", security(()), responses((status = 200, description = "The dashboard: one page; its API calls need the key", content_type = "text/html")))]
pub(super) async fn index() -> Response {
    serve("index.html").unwrap_or_else(|e| e.into_response())
}

/// `GET /assets/{file}`: the page's script, style and icon.
#[utoipa::path(get, path = "/assets/{file}", security(()), params(("file" = String, Path, description = "app.js, app.css or icon.svg")), responses((status = 200, description = "One of the dashboard's files", content((String = "text/javascript"), (String = "text/css"), (String = "image/svg+xml"))), (status = 404, description = "No such file", body = super::shapes::ErrorEnvelope)))]
pub(super) async fn asset(NamePath(file): NamePath) -> Response {
    if file == "index.html" {
        return AppError::new(ErrorCode::NotFound, "no such asset").into_response();
    }
    serve(&file).unwrap_or_else(|e| e.into_response())
}

fn serve(name: &str) -> Result<Response, AppError> {
    let (_, content_type, embedded) = ASSETS
        .iter()
        .find(|(n, _, _)| *n == name)
        .ok_or_else(|| AppError::new(ErrorCode::NotFound, "no such asset"))?;
    let body = match std::env::var_os("TRIGGERS_DASHBOARD_DIR") {
        Some(dir) => {
            std::fs::read_to_string(std::path::Path::new(&dir).join(name)).map_err(|e| {
                AppError::new(ErrorCode::NotFound, "no such asset").with_detail(e.to_string())
            })?
        }
        None => (*embedded).to_owned(),
    };
    let mut response = ([(header::CONTENT_TYPE, *content_type)], body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}
