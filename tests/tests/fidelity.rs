//! Fidelity: input Postgres cannot store is a named 4xx (or a class-22 SQLSTATE) at every
//! entry point, never a 5xx; what goes in comes out unaltered (exact numbers, Unicode,
//! key order as jsonb keeps them); and bytes of any shape never make the server fail.
//! (Long: one table of cases per entry point — HTTP, client, SQL — kept side by side so
//! that a rule added to one is seen missing from the others.)

use axum::body::Body;
use axum::http::Request;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use triggers_client::{Client, Error, InboxQuery, NewEvent};
use triggers_tests::api::Api;
use triggers_tests::{connect, test_database};

/// Every field of every route that takes text, with a NUL in it: 400, the code, the field.
#[tokio::test(flavor = "multi_thread")]
async fn a_nul_anywhere_over_http_is_a_400_naming_the_field() {
    let api = Api::new("fidelity_nul_http").await;
    let key = api.key("acme").await;
    let k = Some(key.as_str());
    let nul = r"a\u0000b";
    let event = |field: &str| match field {
        "payload" => format!(r#"{{"payload":{{"s":"{nul}"}}}}"#),
        "payload key" => format!(r#"{{"payload":{{"{nul}":1}}}}"#),
        "metadata" => format!(r#"{{"payload":{{}},"metadata":{{"m":["{nul}"]}}}}"#),
        "metadata key" => format!(r#"{{"payload":{{}},"metadata":{{"{nul}":1}}}}"#),
        "idempotency_key" => format!(r#"{{"payload":{{}},"idempotency_key":"{nul}"}}"#),
        "stream" => format!(r#"{{"payload":{{}},"stream":"{nul}"}}"#),
        _ => unreachable!(),
    };
    let cases = [
        ("payload", "INVALID_PAYLOAD", "payload.s"),
        ("payload key", "INVALID_PAYLOAD", "payload has a key"),
        ("metadata", "INVALID_PARAMETER", "metadata.m[0]"),
        ("metadata key", "INVALID_PARAMETER", "metadata has a key"),
        ("idempotency_key", "INVALID_PARAMETER", "idempotency_key"),
        ("stream", "INVALID_PARAMETER", "stream"),
    ];
    for (field, code, named) in cases {
        let body = event(field);
        let reply = api.call("POST", "/events", k, Some(&body)).await;
        assert_eq!(reply.status, 400, "{field}: {}", reply.text);
        assert_eq!(reply.body["error"]["code"], code, "{field}");
        let message = reply.body["error"]["message"].as_str().unwrap();
        assert!(message.contains(named), "{field}: {message}");
        assert!(message.contains("NUL character"), "{field}: {message}");

        let batch = format!(r#"{{"events":[{{"payload":{{}}}},{body}]}}"#);
        let reply = api.call("POST", "/events/batch", k, Some(&batch)).await;
        assert_eq!(reply.status, 400, "batch {field}: {}", reply.text);
        assert_eq!(reply.body["error"]["code"], code, "batch {field}");
        let message = reply.body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("events[1].{}", named.split(' ').next().unwrap())),
            "batch {field}: {message}"
        );
    }
    for (method, path, named) in [
        ("GET", "/inbox?stream=a%00b", "'stream'"),
        ("GET", "/inbox?metadata.k=%00", "'metadata.k'"),
        ("GET", "/inbox?payload.k=x%00", "'payload.k'"),
        ("GET", "/inbox?metadata.%00=1", "'metadata.\\u0000'"),
        ("GET", "/inbox?cursor=%00", "'cursor'"),
        ("GET", "/inbox?status=pending%00", "'status'"),
        ("GET", "/inbox?from=%00", "'from'"),
        ("GET", "/dlq?limit=%00", "'limit'"),
        ("POST", "/dlq/redrive?limit=1%00", "'limit'"),
        ("POST", "/events?debug=%00", "'debug'"),
        ("GET", "/events/%00", "not an event id"),
        ("POST", "/inbox/%00/ack", "not an event id"),
        ("POST", "/inbox/a%00/retry", "not an event id"),
    ] {
        let body = (method == "POST").then_some(r#"{"payload":{}}"#);
        let reply = api.call(method, path, k, body).await;
        assert_eq!(reply.status, 400, "{method} {path}: {}", reply.text);
        assert_eq!(reply.body["error"]["code"], "INVALID_PARAMETER", "{path}");
        let message = reply.body["error"]["message"].as_str().unwrap();
        assert!(message.contains(named), "{path}: {message}");
    }
    // Nothing of it was stored, and the database was never asked.
    assert_eq!(
        api.client.metrics(Some("acme")).await.unwrap().queue_depth,
        0
    );
}

/// Numbers `numeric` cannot hold are named 4xx too, on every route that takes JSON.
#[tokio::test(flavor = "multi_thread")]
async fn a_number_postgres_cannot_store_is_a_400_naming_the_field() {
    let api = Api::new("fidelity_numbers_http").await;
    let key = api.key("acme").await;
    let k = Some(key.as_str());
    for (body, code, named) in [
        (
            r#"{"payload":{"n":1e131072}}"#,
            "INVALID_PAYLOAD",
            "payload.n",
        ),
        (
            r#"{"payload":{"a":[0,1e-16384]}}"#,
            "INVALID_PAYLOAD",
            "payload.a[1]",
        ),
        (
            r#"{"payload":{},"metadata":{"x":-9e999999999}}"#,
            "INVALID_PARAMETER",
            "metadata.x",
        ),
    ] {
        let reply = api.call("POST", "/events", k, Some(body)).await;
        assert_eq!(reply.status, 400, "{body}: {}", reply.text);
        assert_eq!(reply.body["error"]["code"], code, "{body}");
        let message = reply.body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(named) && message.contains("numeric"),
            "{message}"
        );
    }
    let reply = api.call("GET", "/inbox?payload.n=1e999999", k, None).await;
    assert_eq!(reply.status, 400, "{}", reply.text);
    assert!(reply.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("payload_contains.n"));
    // At the limits: accepted.
    let edge = r#"{"payload":{"big":1e131071,"small":1e-16383}}"#;
    let reply = api.call("POST", "/events", k, Some(edge)).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
}

/// A bad event sent at the same time as good ones fails alone: the good ones are
/// committed, none of them sees the error, and nothing answers 5xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bad_event_among_concurrent_good_ones_fails_alone() {
    let api = Api::new("fidelity_group").await;
    let key = api.key("acme").await;
    let requests = (0..40).map(|i| {
        let body = if i % 10 == 3 {
            r#"{"payload":{"x":"\u0000"}}"#.to_string()
        } else {
            format!(r#"{{"payload":{{"i":{i}}}}}"#)
        };
        let (router, key) = (api.router.clone(), key.clone());
        tokio::spawn(async move {
            use tower::ServiceExt;
            let request = Request::post("/events")
                .header("authorization", format!("Bearer {key}"))
                .body(Body::from(body))
                .unwrap();
            (i, router.oneshot(request).await.unwrap().status().as_u16())
        })
    });
    for handle in requests {
        let (i, status) = handle.await.unwrap();
        assert_eq!(status, if i % 10 == 3 { 400 } else { 200 }, "request {i}");
    }
    assert_eq!(
        api.client.metrics(Some("acme")).await.unwrap().queue_depth,
        36
    );
}

/// The SQL functions: Postgres refuses a NUL in a text or jsonb argument while binding
/// it, before any function runs, with a class-22 SQLSTATE; the session goes on.
#[tokio::test(flavor = "multi_thread")]
async fn a_nul_in_any_sql_argument_is_a_data_exception_not_a_crash() {
    let config = test_database("fidelity_nul_sql").await;
    let db = connect(&config).await;
    let text = "a\0b";
    let nul_json = r#"{"k":"\u0000"}"#;
    let uuid = "'00000000-0000-0000-0000-000000000000'";
    let mut cases: Vec<(String, &str)> = Vec::new();
    // Every text and jsonb argument of every public function.
    for f in ["enqueue", "enqueue_ex"] {
        cases.push((format!("SELECT triggers.{f}($1::text::jsonb)"), nul_json));
        cases.push((
            format!("SELECT triggers.{f}('{{}}', $1::text::jsonb)"),
            nul_json,
        ));
        for arg in ["tenant", "idempotency_key", "stream", "debug"] {
            cases.push((format!("SELECT triggers.{f}('{{}}', {arg} => $1)"), text));
        }
    }
    for f in ["enqueue_batch", "enqueue_batch_ex"] {
        let batch = r#"[{"payload":{"\u0000":1}}]"#;
        cases.push((
            format!("SELECT * FROM triggers.{f}($1::text::jsonb)"),
            batch,
        ));
        cases.push((
            format!("SELECT * FROM triggers.{f}('[{{\"payload\":{{}}}}]', $1)"),
            text,
        ));
    }
    cases.push(("SELECT * FROM triggers.inbox($1)".into(), text));
    cases.push(("SELECT * FROM triggers.inbox('t', ARRAY[$1])".into(), text));
    for arg in ["after_cursor", "stream", "\"order\""] {
        cases.push((
            format!("SELECT * FROM triggers.inbox('t', {arg} => $1)"),
            text,
        ));
    }
    for arg in ["metadata_contains", "payload_contains"] {
        cases.push((
            format!("SELECT * FROM triggers.inbox('t', {arg} => $1::text::jsonb)"),
            nul_json,
        ));
    }
    for f in ["get_event", "ack", "retry"] {
        cases.push((format!("SELECT * FROM triggers.{f}({uuid}, $1)"), text));
    }
    for f in ["dead_letters", "redrive", "metrics", "authenticate"] {
        cases.push((format!("SELECT * FROM triggers.{f}($1)"), text));
    }
    cases.push(("SELECT triggers.create_api_key($1, 'n')".into(), text));
    cases.push(("SELECT triggers.create_api_key('t', $1)".into(), text));
    cases.push(("SELECT triggers.revoke_api_key($1, 'k')".into(), text));
    cases.push(("SELECT triggers.revoke_api_key('t', $1)".into(), text));
    for (sql, value) in &cases {
        let error = db.query(sql.as_str(), &[value]).await.expect_err(sql);
        let code = error
            .code()
            .map(|c| c.code().to_string())
            .unwrap_or_default();
        assert!(code.starts_with("22"), "{sql}: {code} {error}");
        let one: i32 = db.query_one("SELECT 1", &[]).await.unwrap().get(0);
        assert_eq!(one, 1, "the session survives {sql}");
    }
    // Input that does reach a function and that Postgres could not compute with is
    // answered in the function's own terms: an interval older than the calendar
    // purges nothing instead of overflowing.
    let purged: i64 = db
        .query_one("SELECT triggers.purge(interval '100000000 years')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(purged, 0);
}

/// The client refuses what Postgres cannot store before sending it, naming the field,
/// with the TG-class error the extension would have raised.
#[tokio::test(flavor = "multi_thread")]
async fn the_client_names_the_field_postgres_cannot_store() {
    let client = Client::from_config(test_database("fidelity_client").await, 2).unwrap();
    let nul: Value = serde_json::from_str(r#"{"a":{"b":"x\u0000"}}"#).unwrap();
    let invalid = |e: Error| match e {
        Error::InvalidPayload(m) | Error::InvalidParameter(m) => m,
        other => panic!("expected a named TG error, got {other:?}"),
    };
    let m = invalid(
        client
            .enqueue(&NewEvent::new(nul.clone()))
            .await
            .unwrap_err(),
    );
    assert!(m.starts_with("payload.a.b contains a NUL character"), "{m}");
    let m = invalid(
        client
            .enqueue(&NewEvent::new(json!({})).metadata(nul.clone()))
            .await
            .unwrap_err(),
    );
    assert!(m.starts_with("metadata.a.b"), "{m}");
    for event in [
        NewEvent::new(json!({})).stream("s\0"),
        NewEvent::new(json!({})).idempotency_key("k\0"),
        NewEvent::new(json!({})).tenant("t\0"),
    ] {
        assert!(invalid(client.enqueue(&event).await.unwrap_err()).contains("NUL"));
    }
    let batch = [NewEvent::new(json!({})), NewEvent::new(nul.clone())];
    let m = invalid(client.enqueue_batch(&batch).await.unwrap_err());
    assert!(m.starts_with("events[1].payload.a.b"), "{m}");
    let huge: Value = serde_json::from_str(r#"{"n":1e200000}"#).unwrap();
    let m = invalid(client.enqueue(&NewEvent::new(huge)).await.unwrap_err());
    assert!(
        m.contains("payload.n is a number Postgres cannot store"),
        "{m}"
    );
    let m = invalid(
        client
            .inbox(&InboxQuery::new("t").stream("\0"))
            .await
            .unwrap_err(),
    );
    assert!(m.starts_with("stream contains"), "{m}");
    let m = invalid(
        client
            .inbox(&InboxQuery::new("t").metadata_contains(nul))
            .await
            .unwrap_err(),
    );
    assert!(m.starts_with("metadata_contains.a.b"), "{m}");
    let m = invalid(client.create_api_key("t", "n\0").await.unwrap_err());
    assert!(m.starts_with("name contains"), "{m}");
    let m = invalid(client.authenticate("trg_\0").await.unwrap_err());
    assert!(m.starts_with("token contains"), "{m}");
    let m = invalid(client.dead_letters("\0", 1).await.unwrap_err());
    assert!(m.starts_with("tenant contains"), "{m}");
}

/// The client's verdict on a number is Postgres's own, at and around numeric's limits.
#[tokio::test(flavor = "multi_thread")]
async fn the_clients_numeric_limits_are_postgres_limits() {
    let config = test_database("fidelity_numeric").await;
    let db = connect(&config).await;
    let client = Client::from_config(config, 2).unwrap();
    let mut rng = StdRng::seed_from_u64(9);
    let mut numbers: Vec<String> = [
        "1e131071",
        "1e131072",
        "9.9e131071",
        "0.001e131074",
        "0.001e131075",
        "1e-16383",
        "1e-16384",
        "0e-16384",
        "0.5e-16382",
        "0.5e-16383",
        "-0",
        "0e1073741822",
        "0e1073741823",
        "1E+5",
        "1.000e-16380",
    ]
    .map(str::to_string)
    .to_vec();
    for _ in 0..60 {
        let mantissa = format!(
            "{}.{}",
            rng.random_range(0..1000),
            "0".repeat(rng.random_range(1..5))
        );
        let exponent = if rng.random_bool(0.5) {
            rng.random_range(131_060..131_080)
        } else {
            -rng.random_range(16_370..16_390)
        };
        numbers.push(format!("{mantissa}e{exponent}"));
    }
    for number in numbers {
        let text = format!(r#"{{"n":{number}}}"#);
        let postgres_stores = db
            .query_one("SELECT $1::text::jsonb", &[&text])
            .await
            .is_ok();
        let payload: Value = serde_json::from_str(&text).unwrap();
        let client_says = client.enqueue(&NewEvent::new(payload)).await;
        assert_eq!(
            client_says.is_ok(),
            postgres_stores,
            "{number}: client {client_says:?}"
        );
    }
}

/// One payload at the edges: big and tiny numbers, exact decimals, -0, Unicode of
/// every kind, escapes, keys out of order and repeated.
const EDGES: &str = r#"{
  "zz": 1, "a": 2, "ab": 3, "b": {"y": [1, 2], "x": null},
  "p53_plus_1": 9007199254740993, "u64_max_plus_1": 18446744073709551616,
  "big": 12345678901234567890123, "dec": 0.1000000000000000055511151231257827,
  "d30": 123456789012345678.901234567890, "e400": 1e400, "em400": 1e-400,
  "neg0": -0, "negf": -0.0, "exp": 1.5E+3, "trailing": 1.50,
  "emoji": "😀", "pair": "\ud83d\ude00", "combining": "e\u0301", "rtl": "שלום عليكم",
  "zwj": "👩‍👩‍👧", "escapes": "tab\t nl\n quote\" backslash\\ slash\/ ctl\u001f",
  "dup": 1, "dup": 2
}"#;

/// What jsonb keeps of `raw`, as compact JSON in jsonb's key order.
async fn jsonb_of(db: &tokio_postgres::Client, raw: &str) -> String {
    let text: String = db
        .query_one("SELECT $1::text::jsonb::text", &[&raw])
        .await
        .unwrap()
        .get(0);
    compact(&text)
}

/// The top-level keys of [`EDGES`] in the order they first appear in `text`.
fn key_order(text: &str) -> Vec<&'static str> {
    let mut keys = vec![
        "zz",
        "a",
        "ab",
        "b",
        "p53_plus_1",
        "u64_max_plus_1",
        "big",
        "dec",
        "d30",
        "e400",
        "em400",
        "neg0",
        "negf",
        "exp",
        "trailing",
        "emoji",
        "pair",
        "combining",
        "rtl",
        "zwj",
        "escapes",
        "dup",
    ];
    keys.sort_by_key(|k| text.find(&format!("\"{k}\":")));
    keys
}

/// `text` re-serialized compactly, keeping key order and every digit.
fn compact(text: &str) -> String {
    serde_json::from_str::<Value>(text).unwrap().to_string()
}

/// HTTP in, SQL in and client in: each comes back from HTTP, SQL and the client exactly
/// as jsonb stores it: every digit, every character, jsonb's key order.
#[tokio::test(flavor = "multi_thread")]
async fn what_goes_in_comes_out_exactly_as_jsonb_keeps_it() {
    let api = Api::new("fidelity_round_trip").await;
    let key = api.key("acme").await;
    let k = Some(key.as_str());
    let config = test_database("fidelity_round_trip_sql").await;
    let db = connect(&config).await;
    let want = jsonb_of(&db, EDGES).await;
    assert!(want.contains("12345678901234567890123") && want.contains("9007199254740993"));
    assert!(
        want.contains(&format!("1{}", "0".repeat(400))),
        "1e400 kept whole"
    );

    // In: HTTP, the client, SQL (on the API's database).
    let body = format!(r#"{{"payload":{EDGES},"metadata":{EDGES}}}"#);
    let reply = api.call("POST", "/events", k, Some(&body)).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let http_id = reply.body["data"]["event_id"].as_str().unwrap().to_string();
    let payload: Value = serde_json::from_str(EDGES).unwrap();
    let client_id = api
        .client
        .enqueue(
            &NewEvent::new(payload.clone())
                .tenant("acme")
                .metadata(payload),
        )
        .await
        .unwrap()
        .event_id
        .to_string();
    let api_db = connect(api.client.config().unwrap()).await;
    let sql_id: uuid::Uuid = api_db
        .query_one(
            "SELECT triggers.enqueue($1::text::jsonb, $1::text::jsonb, 'acme')",
            &[&EDGES],
        )
        .await
        .unwrap()
        .get(0);
    api.client.process_batch(Some(10), None).await.unwrap();

    for id in [http_id, client_id, sql_id.to_string()] {
        // Out: HTTP (the raw response text, not a re-parse of it)...
        let reply = api.call("GET", &format!("/events/{id}"), k, None).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        let data = &reply.body["data"];
        assert_eq!(data["payload"].to_string(), want, "HTTP payload of {id}");
        assert_eq!(data["metadata"].to_string(), want, "HTTP metadata of {id}");
        assert!(
            reply.text.contains("12345678901234567890123"),
            "{}",
            reply.text
        );
        // ...SQL...
        let stored: String = api_db
            .query_one(
                "SELECT payload::text FROM triggers.events WHERE event_id = $1::text::uuid",
                &[&id],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(compact(&stored), want, "SQL payload of {id}");
        // Key order read off the raw texts, so it cannot be hidden by a map that sorts.
        let jsonb_order = key_order(&stored);
        assert_eq!(
            key_order(&reply.text),
            jsonb_order,
            "HTTP key order of {id}"
        );
        // ...and the client.
        let event = api
            .client
            .get_event("acme", id.parse().unwrap())
            .await
            .unwrap();
        assert_eq!(event.payload.to_string(), want, "client payload of {id}");
        assert_eq!(
            key_order(&event.payload.to_string()),
            jsonb_order,
            "client key order"
        );
    }
    let page = api
        .call("GET", "/inbox?payload.big=12345678901234567890123", k, None)
        .await;
    assert_eq!(
        page.body["data"].as_array().unwrap().len(),
        3,
        "{}",
        page.text
    );
    let page = api
        .call("GET", "/inbox?payload.big=12345678901234567890124", k, None)
        .await;
    assert_eq!(
        page.body["data"].as_array().unwrap().len(),
        0,
        "no f64 rounding in filters"
    );
}

/// A few thousand mangled bodies (truncated, bytes flipped, invalid UTF-8, wrong types,
/// deep nesting, huge numbers, NULs), seeded: none is a 5xx, each 4xx is the envelope
/// with a known code, and the server still answers a good request after them.
#[tokio::test(flavor = "multi_thread")]
async fn mangled_bodies_never_make_a_5xx() {
    let api = Api::new("fidelity_bytes").await.limited(0);
    let key = api.key("acme").await;
    let seeds = [
        r#"{"payload":{"order":42,"items":[{"sku":"a","qty":1.5}],"note":"é😀"},"metadata":{"src":"web"},"idempotency_key":"k-1","stream":"s"}"#,
        r#"{"events":[{"payload":{"n":1}},{"payload":{"n":2},"metadata":{"m":true}}]}"#,
    ];
    let codes: Vec<&str> = triggers_server::error::ErrorCode::ALL
        .iter()
        .map(|c| c.as_str())
        .collect();
    let mut rng = StdRng::seed_from_u64(20261124);
    let mut statuses = std::collections::BTreeMap::new();
    for i in 0..2000 {
        let seed = seeds[i % 2].as_bytes();
        let path = if i % 2 == 0 {
            "/events"
        } else {
            "/events/batch"
        };
        let body = mangle(&mut rng, seed);
        let request = Request::post(path)
            .header("authorization", format!("Bearer {key}"))
            .body(Body::from(body.clone()))
            .unwrap();
        let reply = api.send(request).await;
        let shown = String::from_utf8_lossy(&body)
            .chars()
            .take(200)
            .collect::<String>();
        assert!(
            reply.status.as_u16() < 500,
            "{path} {shown}: {} {}",
            reply.status,
            reply.text
        );
        if reply.status != 200 {
            let code = reply.body["error"]["code"].as_str().unwrap_or_default();
            assert!(codes.contains(&code), "{path} {shown}: {}", reply.text);
        }
        *statuses.entry(reply.status.as_u16()).or_insert(0) += 1;
    }
    // The mangling reaches both sides: some bodies still pass, most are refused.
    assert!(statuses.get(&200).is_some_and(|n| *n > 20), "{statuses:?}");
    assert!(statuses.get(&400).is_some_and(|n| *n > 500), "{statuses:?}");
    let reply = api
        .call("POST", "/events", Some(&key), Some(seeds[0]))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
}

/// One mangling of `seed`, chosen by `rng`.
fn mangle(rng: &mut StdRng, seed: &[u8]) -> Vec<u8> {
    let mut body = seed.to_vec();
    let at = rng.random_range(0..body.len());
    match rng.random_range(0..10) {
        0 => body.truncate(at),
        1 => body[at] = rng.random(),
        2 => body.insert(at, [0xff, 0xc0, 0x80, 0xed][rng.random_range(0..4)]),
        3 => {
            let deep = rng.random_range(100..20_000);
            let nested = format!("{}1{}", "[".repeat(deep), "]".repeat(deep));
            body = format!(r#"{{"payload":{{"deep":{nested}}}}}"#).into_bytes();
        }
        4 => {
            let number = [
                "1e999999999",
                "-1e-999999",
                "1e131072",
                "123456789012345678901234567890",
                "1e400",
                "-0",
                "0.1e-16383",
                "9007199254740993",
            ][rng.random_range(0..8)];
            body = format!(r#"{{"payload":{{"n":{number}}},"metadata":{{"m":{number}}}}}"#)
                .into_bytes();
        }
        5 => {
            let value = [
                r#"[]"#,
                "1",
                r#""s""#,
                "null",
                "true",
                r#"{"a":"\u0000"}"#,
                r#""\ud800""#,
            ][rng.random_range(0..7)];
            let field = ["payload", "metadata", "stream", "idempotency_key", "events"]
                [rng.random_range(0..5)];
            body = format!(r#"{{"payload":{{}},"{field}":{value}}}"#).into_bytes();
        }
        6 => {
            body.splice(at..at, *b"\\u0000");
        }
        7 => {
            let cut = rng.random_range(at..body.len());
            body.drain(at..cut);
        }
        8 => body = rng.random_iter().take(at).collect(),
        _ => {
            let end = rng.random_range(at..body.len());
            let copy = body[at..end].to_vec();
            body.splice(at..at, copy);
        }
    };
    body
}
