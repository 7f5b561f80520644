//! The HTTP API through `app()` and `oneshot`, against a real database: every route,
//! auth and tenant isolation, and malformed input of every kind answered with its 4xx.
//! (Long: one test per route and error, each a few lines; splitting it would split the
//! shared `Api` setup of each test binary's database for no reader's gain.)

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;
use triggers_tests::api::Api;

#[tokio::test(flavor = "multi_thread")]
async fn every_route_works_for_its_tenant() {
    let api = Api::new("http_routes").await;
    let key = api.key("acme").await;
    let k = Some(key.as_str());

    let sent = api
        .call(
            "POST",
            "/events",
            k,
            Some(r#"{"payload":{"n":1},"metadata":{"src":"web"}}"#),
        )
        .await;
    assert_eq!(sent.status, StatusCode::OK, "{}", sent.text);
    assert_eq!(sent.body["data"]["status"], "accepted");
    let id = sent.body["data"]["event_id"].as_str().unwrap().to_string();

    let keyed = Request::post("/events")
        .header("authorization", format!("Bearer {key}"))
        .header("idempotency-key", "order-1")
        .body(Body::from(r#"{"payload":{"n":2}}"#))
        .unwrap();
    let first = api.send(keyed).await;
    let again = api
        .send(
            Request::post("/events")
                .header("authorization", format!("Bearer {key}"))
                .header("idempotency-key", "order-1")
                .body(Body::from(r#"{"payload":{"n":2}}"#))
                .unwrap(),
        )
        .await;
    assert_eq!(
        first.body["data"]["event_id"],
        again.body["data"]["event_id"]
    );
    assert_eq!(again.body["data"]["duplicate"], true);

    let batch = api
        .call(
            "POST",
            "/events/batch",
            k,
            Some(r#"{"events":[{"payload":{"n":3}},{"payload":{"n":4},"stream":"s"}]}"#),
        )
        .await;
    assert_eq!(batch.body["data"]["count"], 2, "{}", batch.text);
    let dead = api
        .call(
            "POST",
            "/events?debug=dlq_routing",
            k,
            Some(r#"{"payload":{"n":5}}"#),
        )
        .await;
    let dead_id = dead.body["data"]["event_id"].as_str().unwrap().to_string();
    while api.client.process_batch(None, None).await.unwrap().read > 0 {}

    let inbox = api
        .call("GET", "/inbox?status=pending&limit=2", k, None)
        .await;
    assert_eq!(inbox.body["data"].as_array().unwrap().len(), 2);
    assert_eq!(inbox.body["limit"], 2);
    let cursor = inbox.body["next_cursor"].as_str().unwrap();
    let rest = api
        .call(
            "GET",
            &format!("/inbox?status=pending&cursor={cursor}"),
            k,
            None,
        )
        .await;
    assert_eq!(rest.body["data"].as_array().unwrap().len(), 2);
    let by_meta = api.call("GET", "/inbox?metadata.src=web", k, None).await;
    assert_eq!(by_meta.body["data"][0]["event_id"], id.as_str());
    let by_payload = api
        .call("GET", "/inbox?payload.n=4&order=desc", k, None)
        .await;
    assert_eq!(by_payload.body["data"][0]["stream"], "s");

    let event = api.call("GET", &format!("/events/{id}"), k, None).await;
    assert_eq!(event.body["data"]["status"], "pending");
    assert!(event.body["data"]["created_at"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    let acked = api.call("POST", &format!("/inbox/{id}/ack"), k, None).await;
    assert_eq!(acked.body["data"]["status"], "delivered");
    api.expect_error(
        "POST",
        &format!("/inbox/{id}/retry"),
        k,
        None,
        409,
        "INVALID_STATE",
    )
    .await;

    let dlq = api.call("GET", "/dlq", k, None).await;
    assert_eq!(dlq.body["data"][0]["event_id"], dead_id.as_str());
    let retried = api
        .call("POST", &format!("/inbox/{dead_id}/retry"), k, None)
        .await;
    assert_eq!(
        (
            retried.body["data"]["status"].as_str(),
            retried.body["data"]["new_attempt"].as_i64()
        ),
        (Some("retrying"), Some(1))
    );
    let redriven = api.call("POST", "/dlq/redrive", k, None).await;
    assert_eq!(
        redriven.body["data"]["redriven"], 0,
        "the retry superseded its dead letter"
    );

    let metrics = api.call("GET", "/metrics", k, None).await;
    assert_eq!(metrics.body["data"]["total"], 5, "{}", metrics.text);
    assert_eq!(metrics.body["data"]["delivered"], 1);
    let prom = api.call("GET", "/metrics/prometheus", k, None).await;
    assert!(
        prom.text
            .contains("triggers_events{tenant=\"acme\",status=\"delivered\"} 1"),
        "{}",
        prom.text
    );

    let page = api.call("GET", "/", None, None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text.contains("<title>triggers"), "{}", page.text);
    assert!(
        page.text.contains("data-metric=\"total\""),
        "the dashboard's cards"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_only_reaches_its_own_tenant() {
    let api = Api::new("http_tenants").await;
    let (a, b) = (api.key("a").await, api.key("b").await);
    let sent = api
        .call(
            "POST",
            "/events?debug=dlq_routing",
            Some(&a),
            Some(r#"{"payload":{}}"#),
        )
        .await;
    let id = sent.body["data"]["event_id"].as_str().unwrap().to_string();
    while api.client.process_batch(None, None).await.unwrap().read > 0 {}
    let b = Some(b.as_str());
    api.expect_error("GET", &format!("/events/{id}"), b, None, 404, "NOT_FOUND")
        .await;
    api.expect_error(
        "POST",
        &format!("/inbox/{id}/ack"),
        b,
        None,
        404,
        "NOT_FOUND",
    )
    .await;
    api.expect_error(
        "POST",
        &format!("/inbox/{id}/retry"),
        b,
        None,
        404,
        "NOT_FOUND",
    )
    .await;
    assert_eq!(
        api.call("GET", "/inbox", b, None).await.body["data"],
        json!([])
    );
    assert_eq!(
        api.call("GET", "/dlq", b, None).await.body["data"],
        json!([])
    );
    assert_eq!(
        api.call("POST", "/dlq/redrive", b, None).await.body["data"]["redriven"],
        0
    );
    assert_eq!(
        api.call("GET", "/metrics", b, None).await.body["data"]["total"],
        0
    );
    // a still sees its own.
    assert_eq!(
        api.call("GET", &format!("/events/{id}"), Some(&a), None)
            .await
            .body["data"]["status"],
        "failed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_of_every_kind_gets_its_4xx_never_a_5xx() {
    let api = Api::new("http_bad_input").await;
    let key = api.key("t").await;
    let k = Some(key.as_str());
    // Auth.
    api.expect_error("GET", "/inbox", None, None, 401, "MISSING_AUTHORIZATION")
        .await;
    let basic = Request::get("/inbox")
        .header("authorization", "Basic dXNlcjpwdw==")
        .body(Body::empty())
        .unwrap();
    let reply = api.send(basic).await;
    assert_eq!(
        (reply.status.as_u16(), reply.body["error"]["code"].as_str()),
        (401, Some("INVALID_AUTH_SCHEME"))
    );
    api.expect_error(
        "GET",
        "/inbox",
        Some("trg_unknown_key"),
        None,
        401,
        "INVALID_TOKEN",
    )
    .await;
    api.expect_error(
        "GET",
        "/inbox",
        Some("not a key at all"),
        None,
        401,
        "INVALID_TOKEN",
    )
    .await;
    let garbage = Request::get("/inbox")
        .header(
            "authorization",
            axum::http::HeaderValue::from_bytes(b"Bearer \xff\xfe").unwrap(),
        )
        .body(Body::empty())
        .unwrap();
    assert_eq!(api.send(garbage).await.status.as_u16(), 401);
    api.expect_error("GET", "/metrics", Some(""), None, 401, "INVALID_TOKEN")
        .await;

    // Bodies, query strings and paths: each its own 4xx.
    let two_mib = format!(r#"{{"payload":{{"x":"{}"}}}}"#, "a".repeat(2 * 1024 * 1024));
    let thousand_and_one = format!(
        r#"{{"events":[{}]}}"#,
        vec![r#"{"payload":{}}"#; 1001].join(",")
    );
    let cases: [(&str, &str, Option<&str>, u16, &str); 31] = [
        ("POST", "/events", Some("not json"), 400, "INVALID_JSON"),
        ("POST", "/events", Some(""), 400, "INVALID_JSON"),
        ("POST", "/events", Some("[1,2]"), 400, "INVALID_JSON"),
        ("POST", "/events", Some("{}"), 400, "INVALID_PAYLOAD"),
        (
            "POST",
            "/events",
            Some(r#"{"payload":[1]}"#),
            400,
            "INVALID_PAYLOAD",
        ),
        (
            "POST",
            "/events",
            Some(r#"{"payload":"x"}"#),
            400,
            "INVALID_PAYLOAD",
        ),
        (
            "POST",
            "/events",
            Some(r#"{"payload":null}"#),
            400,
            "INVALID_PAYLOAD",
        ),
        (
            "POST",
            "/events",
            Some(r#"{"payload":{},"metadata":"m"}"#),
            400,
            "INVALID_METADATA_TYPE",
        ),
        (
            "POST",
            "/events",
            Some(r#"{"payload":{},"idempotency_key":5}"#),
            400,
            "INVALID_PARAMETER",
        ),
        (
            "POST",
            "/events",
            Some(r#"{"payload":{},"paylaod":{}}"#),
            400,
            "INVALID_PARAMETER",
        ),
        (
            "POST",
            "/events",
            Some(two_mib.as_str()),
            413,
            "PAYLOAD_TOO_LARGE",
        ),
        (
            "POST",
            "/events?debug=validation_error",
            Some(r#"{"payload":{}}"#),
            400,
            "INVALID_PAYLOAD",
        ),
        (
            "POST",
            "/events?debug=explode",
            Some(r#"{"payload":{}}"#),
            400,
            "INVALID_PARAMETER",
        ),
        (
            "POST",
            "/events/batch",
            Some(r#"{"events":[]}"#),
            400,
            "INVALID_PARAMETER",
        ),
        (
            "POST",
            "/events/batch",
            Some(r#"{"events":{}}"#),
            400,
            "INVALID_PARAMETER",
        ),
        (
            "POST",
            "/events/batch",
            Some(r#"{"events":[{"payload":{}},7]}"#),
            400,
            "INVALID_PARAMETER",
        ),
        (
            "POST",
            "/events/batch",
            Some(r#"{"events":[{"payload":[]}]}"#),
            400,
            "INVALID_PAYLOAD",
        ),
        (
            "POST",
            "/events/batch",
            Some(thousand_and_one.as_str()),
            400,
            "INVALID_PARAMETER",
        ),
        ("GET", "/inbox?cursor=garbage!", None, 400, "INVALID_CURSOR"),
        ("GET", "/inbox?status=bogus", None, 400, "INVALID_PARAMETER"),
        ("GET", "/inbox?limit=abc", None, 400, "INVALID_PARAMETER"),
        ("GET", "/inbox?limit=5000", None, 400, "INVALID_PARAMETER"),
        ("GET", "/inbox?limit=0", None, 400, "INVALID_PARAMETER"),
        (
            "GET",
            "/inbox?order=sideways",
            None,
            400,
            "INVALID_PARAMETER",
        ),
        (
            "GET",
            "/inbox?from=yesterday",
            None,
            400,
            "INVALID_PARAMETER",
        ),
        ("GET", "/inbox?colour=red", None, 400, "INVALID_PARAMETER"),
        ("GET", "/events/not-a-uuid", None, 400, "INVALID_PARAMETER"),
        ("POST", "/inbox/123/ack", None, 400, "INVALID_PARAMETER"),
        (
            "GET",
            "/events/00000000-0000-0000-0000-000000000000",
            None,
            404,
            "NOT_FOUND",
        ),
        ("GET", "/dlq?limit=-1", None, 400, "INVALID_PARAMETER"),
        ("GET", "/nowhere", None, 404, "NOT_FOUND"),
    ];
    for (method, path, body, status, code) in cases {
        api.expect_error(method, path, k, body, status, code).await;
    }
    // And the server still answers.
    assert_eq!(
        api.call("GET", "/health", None, None).await.status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn each_key_is_rate_limited_with_429_and_retry_after() {
    let api = Api::new("http_rate_limit").await.limited(5);
    let (a, b) = (api.key("a").await, api.key("b").await);
    let get = |key: &str| {
        Request::get("/metrics")
            .header("authorization", format!("Bearer {key}"))
            .body(Body::empty())
            .unwrap()
    };
    let mut remaining = Vec::new();
    for _ in 0..5 {
        let response = api.router.clone().oneshot(get(&a)).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["x-ratelimit-limit"], "5");
        remaining.push(
            response.headers()["x-ratelimit-remaining"]
                .to_str()
                .unwrap()
                .parse::<u32>()
                .unwrap(),
        );
    }
    assert_eq!(remaining, vec![4, 3, 2, 1, 0]);
    let response = api.router.clone().oneshot(get(&a)).await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(response.headers()["x-ratelimit-remaining"], "0");
    let body: Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["error"]["code"], "RATE_LIMIT_EXCEEDED");
    // Another key has its own budget; liveness is never limited.
    assert_eq!(
        api.router.clone().oneshot(get(&b)).await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        api.call("GET", "/health", None, None).await.status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_posts_share_commits_but_keep_their_own_answers() {
    let api = Api::new("http_group").await;
    let key = api.key("g").await;
    let post = |path: &'static str, body: String, idempotency: Option<&'static str>| {
        let router = api.router.clone();
        let key = key.clone();
        async move {
            let mut request = Request::post(path).header("authorization", format!("Bearer {key}"));
            if let Some(k) = idempotency {
                request = request.header("idempotency-key", k);
            }
            let response = router
                .oneshot(request.body(Body::from(body)).unwrap())
                .await
                .unwrap();
            let status = response.status();
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            (status, serde_json::from_slice::<Value>(&bytes).unwrap())
        }
    };
    let mut calls = Vec::new();
    for i in 0..60 {
        // Events only the database refuses (the server checks shapes itself), so their
        // groups fail as a whole and fall back to one event at a time.
        let path = if i % 12 == 5 {
            "/events?debug=validation_error"
        } else {
            "/events"
        };
        calls.push(tokio::spawn(post(
            path,
            format!(r#"{{"payload":{{"i":{i}}}}}"#),
            None,
        )));
    }
    for _ in 0..10 {
        calls.push(tokio::spawn(post(
            "/events",
            r#"{"payload":{"same":true}}"#.to_string(),
            Some("same-key"),
        )));
    }
    let mut ok = std::collections::HashSet::new();
    let (mut bad, mut same_ids, mut firsts) = (0, std::collections::HashSet::new(), 0);
    for (n, call) in calls.into_iter().enumerate() {
        let (status, body) = call.await.unwrap();
        if n >= 60 {
            assert_eq!(status, StatusCode::OK, "{body}");
            same_ids.insert(body["data"]["event_id"].as_str().unwrap().to_string());
            firsts += usize::from(body["data"].get("duplicate").is_none());
        } else if n % 12 == 5 {
            assert_eq!(
                (status.as_u16(), body["error"]["code"].as_str()),
                (400, Some("INVALID_PAYLOAD")),
                "{body}"
            );
            bad += 1;
        } else {
            assert_eq!(status, StatusCode::OK, "{body}");
            ok.insert(body["data"]["event_id"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(
        (ok.len(), bad),
        (55, 5),
        "every good request accepted once, every bad one refused"
    );
    assert_eq!(
        (same_ids.len(), firsts),
        (1, 1),
        "one event for the repeated key, one first answer"
    );
    while api.client.process_batch(None, None).await.unwrap().read > 0 {}
    assert_eq!(api.client.metrics(Some("g")).await.unwrap().total, 56);
}

#[tokio::test(flavor = "multi_thread")]
async fn responses_are_gzipped_when_asked_and_keep_the_correlation_id() {
    let api = Api::new("http_gzip").await;
    let get = |gzip: bool| {
        let mut request = Request::builder()
            .uri("/openapi.json")
            .header("x-correlation-id", "trace-42");
        if gzip {
            request = request.header("accept-encoding", "gzip");
        }
        request.body(Body::empty()).unwrap()
    };
    let plain = api.router.clone().oneshot(get(false)).await.unwrap();
    assert_eq!(plain.status(), StatusCode::OK);
    assert!(plain.headers().get("content-encoding").is_none());
    let plain_len = plain.into_body().collect().await.unwrap().to_bytes().len();

    let gzipped = api.router.clone().oneshot(get(true)).await.unwrap();
    assert_eq!(gzipped.status(), StatusCode::OK);
    assert_eq!(gzipped.headers()["content-encoding"], "gzip");
    assert_eq!(gzipped.headers()["x-correlation-id"], "trace-42");
    let bytes = gzipped.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&bytes[..2], &[0x1f, 0x8b], "a gzip stream");
    assert!(
        bytes.len() * 3 < plain_len,
        "{} gzipped bytes of {plain_len}",
        bytes.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_history_has_a_row_per_minute_of_the_tenants_own_events() {
    let api = Api::new("http_history").await;
    let key = api.key("acme").await;
    let other = api.key("globex").await;
    for (k, n) in [(&key, 3), (&other, 2)] {
        for i in 0..n {
            let body = format!(r#"{{"payload":{{"n":{i}}}}}"#);
            let sent = api.call("POST", "/events", Some(k), Some(&body)).await;
            assert_eq!(sent.status, StatusCode::OK, "{}", sent.text);
        }
    }
    while api.client.process_batch(None, None).await.unwrap().read > 0 {}
    let hour = api.call("GET", "/metrics/history", Some(&key), None).await;
    assert_eq!(hour.status, StatusCode::OK, "{}", hour.text);
    let rows = hour.body["data"].as_array().unwrap();
    assert_eq!(rows.len(), 60);
    let processed: i64 = rows.iter().map(|r| r["processed"].as_i64().unwrap()).sum();
    assert_eq!(processed, 3, "only acme's own events: {}", hour.text);
    let last = &rows[59];
    assert!(
        last["minute"].as_str().unwrap().ends_with(":00.000Z"),
        "{last}"
    );
    let five = api
        .call("GET", "/metrics/history?minutes=5", Some(&key), None)
        .await;
    assert_eq!(five.body["data"].as_array().unwrap().len(), 5);
    for bad in ["minutes=0", "minutes=x", "hours=1"] {
        let path = format!("/metrics/history?{bad}");
        api.expect_error("GET", &path, Some(&key), None, 400, "INVALID_PARAMETER")
            .await;
    }
}
