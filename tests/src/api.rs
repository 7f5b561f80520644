//! `app()` driven with `oneshot` against a real database, for the HTTP tests.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;
use triggers_client::Client;
use triggers_server::http::{app, AppState, Settings};

use crate::test_database;

/// The router of a fresh database, and a client of it.
pub struct Api {
    /// The router under test.
    pub router: axum::Router,
    /// A client of the same database.
    pub client: Client,
    /// The database's connection settings.
    pub config: tokio_postgres::Config,
}

/// What a route answered.
pub struct Reply {
    /// Its status.
    pub status: StatusCode,
    /// Its body as JSON (null when it was not JSON).
    pub body: Value,
    /// Its body as text.
    pub text: String,
    /// Its X-Correlation-ID.
    pub correlation: Option<String>,
}

impl Api {
    /// A fresh database `t_<name>` with the extension, and the router over it.
    pub async fn new(name: &str) -> Api {
        let config = test_database(name).await;
        let client = Client::from_config(config.clone(), 4).unwrap();
        Api {
            router: app(AppState::new(client.clone())),
            client,
            config,
        }
    }

    /// The same API with a limit of `per_minute` requests per key.
    pub fn limited(&self, per_minute: u32) -> Api {
        Api {
            router: app(AppState::with(self.client.clone(), {
                let mut settings = Settings::default();
                settings.tenant.requests_per_minute = per_minute;
                settings
            })),
            client: self.client.clone(),
            config: self.config.clone(),
        }
    }

    /// A new API key of `tenant`.
    pub async fn key(&self, tenant: &str) -> String {
        self.client.create_api_key(tenant, "test").await.unwrap()
    }

    /// Sends `request` through the router.
    pub async fn send(&self, request: Request<Body>) -> Reply {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let correlation = response
            .headers()
            .get("x-correlation-id")
            .map(|v| v.to_str().unwrap().to_string());
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            body,
            text,
            correlation,
        }
    }

    /// Sends a request; asserts it is no 5xx and carries a correlation id.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<&str>,
    ) -> Reply {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(key) = key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        if body.is_some() {
            request = request.header("content-type", "application/json");
        }
        let reply = self
            .send(
                request
                    .body(Body::from(body.unwrap_or("").to_string()))
                    .unwrap(),
            )
            .await;
        assert!(
            !reply.status.is_server_error(),
            "{method} {path}: {} {}",
            reply.status,
            reply.text
        );
        assert!(
            reply.correlation.is_some(),
            "X-Correlation-ID on {method} {path}"
        );
        reply
    }

    /// Sends a request and asserts its status and error code.
    pub async fn expect_error(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<&str>,
        status: u16,
        code: &str,
    ) {
        let reply = self.call(method, path, key, body).await;
        assert_eq!(
            reply.status.as_u16(),
            status,
            "{method} {path}: {}",
            reply.text
        );
        assert_eq!(
            reply.body["error"]["code"], code,
            "{method} {path}: {}",
            reply.text
        );
        assert_eq!(
            reply.body["error"]["correlation_id"].as_str(),
            reply.correlation.as_deref()
        );
    }
}
