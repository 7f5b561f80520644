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
