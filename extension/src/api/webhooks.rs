//! Webhook endpoint secrets (sql/webhooks.sql): made from strong random bytes, sealed
//! for storage and opened for signing with triggers-core. The sealing key is the
//! caller's argument: the SQL reads it from the session (`triggers.secrets_key`), never
//! from a table.

use pgrx::prelude::*;
use triggers_core::webhooks::{self, Secret};

use super::ids::strong_random;

/// A new endpoint secret: `whsec_` and the base64 of 32 strong random bytes.
#[pg_extern(volatile, parallel_safe)]
pub fn _new_webhook_secret() -> String {
    let mut bytes = [0u8; 32];
    strong_random(&mut bytes);
    Secret::from_bytes(&bytes)
        .expect("32 bytes make a secret")
        .to_text()
}

/// `secret` sealed under `key` (AES-256-GCM, a fresh random nonce).
#[pg_extern(volatile, parallel_safe)]
pub fn _seal_secret(secret: &str, key: &str) -> Vec<u8> {
    let mut nonce = [0u8; 12];
    strong_random(&mut nonce);
    webhooks::seal(key, nonce, secret.as_bytes())
}

/// What `_seal_secret` sealed under `key`; NULL for another key or altered bytes.
#[pg_extern(immutable, parallel_safe)]
pub fn _open_secret(sealed: &[u8], key: &str) -> Option<String> {
    webhooks::open(key, sealed).and_then(|plain| String::from_utf8(plain).ok())
}

pgrx::extension_sql!(
    r#"
COMMENT ON FUNCTION triggers._new_webhook_secret IS 'Internal: a new endpoint secret, whsec_ and base64 of 32 strong random bytes.';
COMMENT ON FUNCTION triggers._seal_secret IS 'Internal: an endpoint secret sealed (AES-256-GCM) under a key kept outside the database.';
COMMENT ON FUNCTION triggers._open_secret IS 'Internal: an endpoint secret unsealed, or NULL for the wrong key.';
"#,
    name = "comment_webhook_secrets",
    requires = [_new_webhook_secret, _seal_secret, _open_secret]
);
