//! The router through `app()` and `oneshot`: no port, no server process.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;
use triggers_server::http::{app, AppState};

/// A state whose database is a closed loopback port: every query fails as "down".
fn state_with_database_down() -> AppState {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client =
        triggers_client::Client::connect(&format!("postgres://nobody@127.0.0.1:{port}/none"))
            .expect("a valid URL");
    AppState::new(client)
}

async fn send(request: Request<Body>) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
    let response = app(state_with_database_down())
        .oneshot(request)
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, headers, body)
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

#[tokio::test]
async fn health_is_ok_without_touching_the_database() {
    let (status, _, body) = send(get("/health")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, serde_json::json!({"status": "ok"}));
}

#[tokio::test]
async fn ready_is_503_in_the_error_envelope_when_the_database_is_down() {
    let (status, headers, body) = send(get("/ready")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let error = &body["error"];
    assert_eq!(error["code"], "SERVICE_UNAVAILABLE");
    assert_eq!(error["message"], "the database is unavailable");
    let id = headers["x-correlation-id"].to_str().unwrap();
    assert_eq!(error["correlation_id"], id);
    let ts = error["timestamp"].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(ts).is_ok(),
        "RFC 3339: {ts}"
    );
    assert!(
        ts.ends_with('Z') && ts.len() == "2026-01-01T00:00:00.000Z".len(),
        "UTC, ms: {ts}"
    );
    // The internal reason (connection refused) is logged, never sent.
    assert!(!body.to_string().contains("refused"), "{body}");
}

#[tokio::test]
async fn unknown_route_is_404_not_found_envelope() {
    let (status, _, body) = send(get("/no/such/route")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "NOT_FOUND");
}

#[tokio::test]
async fn correlation_id_is_echoed_when_sent() {
    let request = Request::get("/health")
        .header("X-Correlation-ID", "req-42.abc")
        .body(Body::empty())
        .unwrap();
    let (_, headers, _) = send(request).await;
    assert_eq!(headers["x-correlation-id"], "req-42.abc");
}

#[tokio::test]
async fn correlation_id_is_generated_when_missing_or_unsafe() {
    let (_, headers, _) = send(get("/health")).await;
    let generated = headers["x-correlation-id"].to_str().unwrap().to_string();
    assert!(uuid::Uuid::parse_str(&generated).is_ok(), "{generated}");

    // Too long or with characters that do not belong in logs: replaced, not echoed.
    for bad in ["x".repeat(129), "a b".to_string(), "a\"b".to_string()] {
        let request = Request::get("/health")
            .header("X-Correlation-ID", &bad)
            .body(Body::empty())
            .unwrap();
        let (_, headers, _) = send(request).await;
        let id = headers["x-correlation-id"].to_str().unwrap();
        assert_ne!(id, bad);
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    }
}

#[tokio::test]
async fn openapi_document_lists_every_route() {
    let (status, _, doc) = send(get("/openapi.json")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/events", "post"),
        ("/events/batch", "post"),
        ("/events/{id}", "get"),
        ("/inbox", "get"),
        ("/inbox/{id}/ack", "post"),
        ("/inbox/{id}/retry", "post"),
        ("/dlq", "get"),
        ("/dlq/redrive", "post"),
        ("/metrics", "get"),
        ("/metrics/prometheus", "get"),
        ("/health", "get"),
        ("/ready", "get"),
        ("/openapi.json", "get"),
        ("/", "get"),
        ("/assets/{file}", "get"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing"
        );
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["api_key"]["scheme"],
        "bearer"
    );
    assert!(doc["components"]["schemas"]["ErrorEnvelope"].is_object());
}

/// utoipa takes a `pattern` only as a literal, so the text rule is written out where each
/// field is declared; every copy must be the one rule the server names.
#[tokio::test]
async fn openapi_patterns_are_the_servers_text_rules() {
    use triggers_server::http::openapi::{HEADER_PATTERN, TEXT_PATTERN};
    let (_, _, doc) = send(get("/openapi.json")).await;
    let event_in = &doc["components"]["schemas"]["EventIn"]["properties"];
    for field in ["idempotency_key", "stream"] {
        assert_eq!(event_in[field]["pattern"], TEXT_PATTERN, "EventIn.{field}");
    }
    let param = |path: &str, method: &str, name: &str| {
        doc["paths"][path][method]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{method} {path} has no parameter {name}"))["schema"]
            ["pattern"]
            .clone()
    };
    assert_eq!(param("/inbox", "get", "stream"), TEXT_PATTERN);
    assert_eq!(param("/events", "post", "Idempotency-Key"), HEADER_PATTERN);
}
