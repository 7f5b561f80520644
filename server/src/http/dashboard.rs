//! `GET /`: the dashboard's place. The live dashboard is not built yet; until it is,
//! this page says so and links the routes that work.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::state::AppState;

/// `GET /`.
pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/", get(index))
}

/// What `GET /` serves until the dashboard is built.
const PLACEHOLDER: &str = r#"<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>triggers</title></head>
<body>
<h1>triggers</h1>
<p>This page is a placeholder: the live dashboard is not built yet.</p>
<p>The HTTP API works now. Its routes:</p>
<ul>
<li><a href="/openapi.json">/openapi.json</a>: the OpenAPI document of every route</li>
<li><a href="/health">/health</a> and <a href="/ready">/ready</a>: liveness and readiness</li>
<li><a href="/metrics">/metrics</a> and <a href="/metrics/prometheus">/metrics/prometheus</a>: counts by status, queue depth, latency</li>
<li><a href="/inbox">/inbox</a>: stored events, with ack and retry</li>
<li><a href="/dlq">/dlq</a>: the dead-letter queue</li>
<li>POST /events and /events/batch: send events</li>
</ul>
<p>Each of these but /health, /ready and /openapi.json needs an API key:
<code>Authorization: Bearer &lt;key&gt;</code> (<code>triggers keys create</code> makes one).</p>
</body>
</html>
"#;

/// `GET /`: the placeholder page.
#[utoipa::path(get, path = "/", security(()), responses((status = 200, description = "A placeholder page: the dashboard is not built yet; it links the API's routes", content_type = "text/html")))]
pub(super) async fn index() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        PLACEHOLDER,
    )
        .into_response()
}
