//! What a test's webhook receiver got, and checking its signature with the verifier of
//! `triggers-core` (written from the Standard Webhooks spec's text).

use axum::http::HeaderMap;
use triggers_core::webhooks::{verify, Secret, VerifyError};

/// One request a receiver got: its path, the three Standard Webhooks headers, the body.
#[derive(Clone, Debug)]
pub struct Hook {
    /// The request's path.
    pub path: String,
    /// `webhook-id`.
    pub id: String,
    /// `webhook-timestamp`.
    pub timestamp: String,
    /// `webhook-signature`.
    pub signature: String,
    /// The body, as sent.
    pub body: String,
}

impl Hook {
    /// The request to `path` with `headers` and `body` (a missing header is empty).
    pub fn new(path: &str, headers: &HeaderMap, body: String) -> Hook {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        Hook {
            path: path.to_string(),
            id: header("webhook-id"),
            timestamp: header("webhook-timestamp"),
            signature: header("webhook-signature"),
            body,
        }
    }

    /// Checks its signature against `secret` (`whsec_…`), as of its own timestamp.
    pub fn verify(&self, secret: &str) -> Result<(), VerifyError> {
        let secret = Secret::parse(secret).expect("a whsec_ secret");
        let now: i64 = self.timestamp.parse().unwrap_or_default();
        verify(
            &secret,
            &self.id,
            &self.timestamp,
            &self.signature,
            self.body.as_bytes(),
            now,
        )
    }
}

/// A receiver on a loopback port that answers every POST to `/` with 204 and keeps
/// what it got.
pub struct Receiver {
    /// Where to send: `http://127.0.0.1:<port>/`.
    pub url: String,
    /// Every request, in the order they came.
    pub got: std::sync::Arc<std::sync::Mutex<Vec<Hook>>>,
}

impl Receiver {
    /// Starts one on the current runtime.
    pub async fn start() -> Receiver {
        type Got = std::sync::Arc<std::sync::Mutex<Vec<Hook>>>;
        async fn receive(
            axum::extract::State(got): axum::extract::State<Got>,
            headers: HeaderMap,
            body: axum::body::Bytes,
        ) -> axum::http::StatusCode {
            let hook = Hook::new("/", &headers, String::from_utf8_lossy(&body).into_owned());
            got.lock().unwrap().push(hook);
            axum::http::StatusCode::NO_CONTENT
        }
        let got: Got = Default::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .route("/", axum::routing::post(receive))
            .with_state(got.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { url, got }
    }

    /// What it got so far.
    pub fn hooks(&self) -> Vec<Hook> {
        self.got.lock().unwrap().clone()
    }
}
