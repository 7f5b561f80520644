//! Tenant isolation on every route, found by enumerating the router rather than listing
//! routes by hand: the routes are read from the server's source (every `.route("…")`),
//! held equal to `/openapi.json`'s paths, and each method of each one is called with
//! tenant B's key on tenant A's ids, stream and endpoint. No answer may carry anything
//! of A's, none is a 5xx, and A's data is unchanged afterwards.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};
use triggers_tests::{scalar, serve_test_database, wait_until};

/// The paths the router serves, from the `.route("…")` calls in server/src/http/.
fn routed_paths() -> BTreeSet<String> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../server/src/http");
    let mut paths = BTreeSet::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let mut rest = text.as_str();
        while let Some(at) = rest.find(".route(") {
            rest = rest[at + ".route(".len()..].trim_start();
            if let Some(literal) = rest.strip_prefix('"') {
                let end = literal.find('"').unwrap();
                paths.insert(literal[..end].to_string());
            }
        }
    }
    paths
}

#[tokio::test(flavor = "multi_thread")]
async fn no_route_shows_or_changes_another_tenants_data() {
    let (server, a_key, db, _) = serve_test_database(
        "isolation",
        "a",
        &["--webhook-workers", "0", "--auth-failures-per-minute", "0"],
    )
    .await;
    let base = server.url.trim_end_matches('/').to_string();
    let b_key: String = db
        .query_one("SELECT triggers.create_api_key('b', 'test')", &[])
        .await
        .unwrap()
        .get(0);
    let http = reqwest::Client::new();
    // A's data: stored events on a stream (one failed, in the dead-letter queue), an
    // endpoint with a delivery, each carrying a marker no answer to B may contain.
    const MARKER: &str = "marker-of-tenant-a";
    let mut a_events = Vec::new();
    for (payload, debug) in [
        (json!({"secret": MARKER}), ""),
        (json!({"secret": MARKER, "n": 2}), "?debug=dlq_routing"),
    ] {
        let sent: Value = http
            .post(format!("{base}/events{debug}"))
            .bearer_auth(&a_key)
            .json(&json!({"payload": payload, "metadata": {"m": MARKER}, "stream": "a-stream"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        a_events.push(sent["data"]["event_id"].as_str().unwrap().to_string());
    }
    let endpoint: Value = http
        .post(format!("{base}/webhooks/endpoints"))
        .bearer_auth(&a_key)
        .json(&json!({"url": format!("https://example.com/{MARKER}"), "description": MARKER}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let endpoint_id = endpoint["data"]["endpoint_id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_until("A's events processed", || async {
        scalar(
            &db,
            "SELECT count(*) FROM triggers.events WHERE tenant = 'a'",
        )
        .await
            == 2
    })
    .await;
    let state = "SELECT (SELECT jsonb_agg(jsonb_build_array(event_id, status, retry_count) ORDER BY event_id)
                           FROM triggers.events WHERE tenant = 'a')
                   || (SELECT jsonb_agg(jsonb_build_array(endpoint_id, url, enabled, secret, description))
                         FROM triggers.webhook_endpoints WHERE tenant = 'a')
                   || jsonb_build_array((SELECT count(*) FROM pgmq.q_triggers_events_dlq),
                                        (SELECT count(*) FROM triggers.webhook_deliveries WHERE tenant = 'a'))";
    let before: Value = db.query_one(state, &[]).await.unwrap().get(0);

    // Every route of the router, and the document lists exactly those.
    let doc: Value = http
        .get(format!("{base}/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let documented: BTreeSet<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    assert_eq!(
        routed_paths(),
        documented,
        "the router's routes are the document's"
    );
    let secrets = [
        MARKER.to_string(),
        a_events[0].clone(),
        a_events[1].clone(),
        endpoint_id.clone(),
        "a-stream".to_string(),
    ];
    let mut called = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            if operation.get("security") == Some(&json!([{}])) {
                continue; // public: no tenant's data
            }
            let id = if path.starts_with("/webhooks/endpoints/") {
                endpoint_id.as_str()
            } else {
                a_events[0].as_str()
            };
            let url = format!(
                "{base}{}",
                path.replace("{id}", id).replace("{name}", "a-stream")
            );
            let body = match path.as_str() {
                "/events/{id}/resend" => json!({"endpoint_id": endpoint_id}),
                "/webhooks/endpoints/{id}/recover" => json!({"since": "2000-01-01T00:00:00Z"}),
                "/webhooks/endpoints/{id}" => {
                    json!({"enabled": false, "url": "https://example.com/b"})
                }
                "/webhooks/endpoints" => json!({"url": "https://example.com/b"}),
                "/events/batch" => json!({"events": [{"payload": {"b": 1}}]}),
                _ => json!({"payload": {"b": 1}}),
            };
            let request = http
                .request(method.to_uppercase().parse().unwrap(), &url)
                .bearer_auth(&b_key);
            let request = match method.as_str() {
                "post" | "patch" | "put" => request.json(&body),
                _ => request,
            };
            let mut response = request.send().await.unwrap();
            let status = response.status().as_u16();
            // A stream answers forever: what it sends in a second is its answer.
            let mut text = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                while let Ok(Some(chunk)) = response.chunk().await {
                    text.extend_from_slice(&chunk);
                }
            })
            .await;
            let text = String::from_utf8_lossy(&text);
            assert!(status < 500, "{method} {path}: {status} {text}");
            // What B sent may come back (a 404 names the id asked for); nothing else of A's.
            let sent = format!("{url} {body}");
            for secret in secrets.iter().filter(|s| !sent.contains(s.as_str())) {
                assert!(
                    !text.contains(secret.as_str()),
                    "{method} {path} showed tenant a's {secret} to tenant b: {text}"
                );
            }
            called += 1;
        }
    }
    assert!(called >= 25, "every keyed route called: {called}");
    let after: Value = db.query_one(state, &[]).await.unwrap().get(0);
    assert_eq!(
        after, before,
        "tenant a's data unchanged by tenant b's calls"
    );
}
