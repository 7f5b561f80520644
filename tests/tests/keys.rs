//! API keys on a real `triggers serve`: a revocation takes effect at once on a server
//! that trusts keys from its cache (an hour here, so only the revocation's notification
//! can explain it); an expiring key is refused from its expiry on, whatever the cache;
//! `triggers keys create --expires-at`; an address guessing keys is refused more guesses,
//! never its own key.

use std::time::Duration;

use triggers_tests::{database_url, run, serve_test_database, triggers, wait_until};

/// GET /metrics with `key`: the status and the error message, if any.
async fn metrics_with(base: &str, key: &str) -> (u16, String) {
    let response = reqwest::Client::new()
        .get(format!("{base}/metrics"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    (
        status,
        body["error"]["message"].as_str().unwrap_or("").to_string(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_key_is_refused_at_once_and_an_expired_one_from_its_expiry() {
    let (server, key, db, config) =
        serve_test_database("keys_revoke", "t", &["--key-cache-ttl", "3600"]).await;
    let base = server.url.trim_end_matches('/').to_string();
    // Cached by the first request once the server follows revocations.
    wait_until("the key works", || async {
        metrics_with(&base, &key).await.0 == 200
    })
    .await;
    assert_eq!(metrics_with(&base, &key).await.0, 200);
    let revoked: bool = db
        .query_one("SELECT triggers.revoke_api_key('t', $1)", &[&key])
        .await
        .unwrap()
        .get(0);
    assert!(revoked);
    wait_until("the revoked key refused", || async {
        metrics_with(&base, &key).await == (401, "API key is revoked".to_string())
    })
    .await;

    let expiring: String = db
        .query_one(
            "SELECT triggers.create_api_key('t', 'short', expires_at => now() + interval '2 seconds')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(metrics_with(&base, &expiring).await.0, 200);
    wait_until("the expired key refused", || async {
        metrics_with(&base, &expiring).await == (401, "API key has expired".to_string())
    })
    .await;

    // The CLI makes expiring keys, and refuses a time that has passed or is no time.
    let cli = |args: &[&str]| {
        let mut command = triggers(&["keys", "create", "--tenant", "t"]);
        command
            .args(args)
            .env("DATABASE_URL", database_url(&config));
        run(command, Duration::from_secs(60))
    };
    let made = cli(&["--expires-at", "2999-01-01T00:00:00Z"]);
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let made = String::from_utf8_lossy(&made.stdout).trim().to_string();
    assert_eq!(metrics_with(&base, &made).await.0, 200);
    let past = cli(&["--expires-at", "2020-01-01T00:00:00Z"]);
    assert!(!past.status.success());
    assert!(
        String::from_utf8_lossy(&past.stderr).contains("expires_at must be a time in the future"),
        "{}",
        String::from_utf8_lossy(&past.stderr)
    );
    let garbage = cli(&["--expires-at", "tomorrow"]);
    assert!(!garbage.status.success());
    assert!(String::from_utf8_lossy(&garbage.stderr).contains("RFC 3339"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_address_guessing_keys_is_refused_more_guesses_but_never_its_own_key() {
    let (server, key, _db, _) =
        serve_test_database("keys_guessing", "t", &["--auth-failures-per-minute", "3"]).await;
    let base = server.url.trim_end_matches('/').to_string();
    for guess in 0..3 {
        let (status, message) = metrics_with(&base, &format!("trg_guess{guess}_nope")).await;
        assert_eq!((status, message.as_str()), (401, "API key is not valid"));
    }
    let response = reqwest::Client::new()
        .get(format!("{base}/metrics"))
        .bearer_auth("trg_guess4_nope")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 429);
    let wait: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "RATE_LIMIT_EXCEEDED");
    // Its own key is no guess: it is served (tests/tests/abuse.rs floods it harder).
    assert_eq!(metrics_with(&base, &key).await.0, 200);
}
