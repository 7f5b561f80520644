//! Ordered streams through the client and the HTTP API (SPEC §4.4): listing a tenant's
//! streams page by page, one stream, a stream halted on its dead-lettered head
//! (`stream_failure_policy = 'halt'`) and resumed, each tenant seeing only its own, bad
//! input answered with its 4xx, and every answer in the shape `/openapi.json` gives it.

use axum::http::StatusCode;
use serde_json::{json, Value};
use triggers_client::{on, Client, DebugFlag, Error, EventId, NewEvent, StreamState};
use triggers_tests::api::Api;
use triggers_tests::{connect, test_database};

async fn drain(client: &Client) {
    while client.process_batch(None, None).await.unwrap().read > 0 {}
}

/// Sets `triggers.config.stream_failure_policy` through a pooled connection.
async fn set_policy(client: &Client, policy: &str) {
    client
        .pool()
        .get()
        .await
        .unwrap()
        .execute(
            "UPDATE triggers.config SET stream_failure_policy = $1",
            &[&policy],
        )
        .await
        .unwrap();
}

/// Tenant `t`: stream `a` halted on its dead-lettered head (seq 1) with seq 2 behind it,
/// stream `b` idle with its one event stored. Returns the head's id.
async fn halted_a_and_idle_b(client: &Client) -> EventId {
    set_policy(client, "halt").await;
    let head = client
        .enqueue(
            &NewEvent::new(json!({"n": 1}))
                .tenant("t")
                .stream("a")
                .debug(DebugFlag::DlqRouting),
        )
        .await
        .unwrap()
        .event_id;
    client
        .enqueue_batch(&[
            NewEvent::new(json!({"n": 2})).tenant("t").stream("a"),
            NewEvent::new(json!({"n": 1})).tenant("t").stream("b"),
        ])
        .await
        .unwrap();
    drain(client).await;
    head
}

#[tokio::test(flavor = "multi_thread")]
async fn the_client_lists_reads_and_resumes_a_tenants_streams() {
    let config = test_database("streams_client").await;
    let client = Client::from_config(config.clone(), 4).unwrap();
    assert_eq!(
        client.settings().await.unwrap().stream_failure_policy,
        "continue"
    );
    let head = halted_a_and_idle_b(&client).await;
    assert_eq!(
        client.settings().await.unwrap().stream_failure_policy,
        "halt"
    );

    let all = client.streams("t", 50, None).await.unwrap();
    assert_eq!(all.next_cursor, None, "a short page is the last");
    let seen: Vec<_> = all
        .streams
        .iter()
        .map(|s| {
            (
                s.name.as_str(),
                s.last_seq,
                s.done_seq,
                s.state,
                s.blocking_event,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("a", 2, 0, StreamState::Halted, Some(head)),
            ("b", 1, 1, StreamState::Idle, None)
        ]
    );

    // Page by page, following cursors.
    let first = client.streams("t", 1, None).await.unwrap();
    assert_eq!(first.streams[0].name, "a");
    let cursor = first.next_cursor.expect("a full page has a next cursor");
    let second = client.streams("t", 1, Some(&cursor)).await.unwrap();
    assert_eq!(second.streams[0].name, "b");
    let end = client
        .streams("t", 1, second.next_cursor.as_deref())
        .await
        .unwrap();
    assert_eq!((end.streams.len(), end.next_cursor), (0, None));

    // One stream.
    let a = client.stream("t", "a").await.unwrap().expect("stream a");
    assert_eq!(
        (a.state, a.blocking_event),
        (StreamState::Halted, Some(head))
    );
    assert_eq!(
        (a.blocking_error.as_deref(), a.next_attempt_at),
        (
            Some("routed to the dead-letter queue (debug flag dlq_routing)"),
            None
        ),
        "why it is halted; no attempt is due"
    );
    assert_eq!(client.stream("t", "nope").await.unwrap(), None);
    let metrics = client.metrics(Some("t")).await.unwrap();
    assert_eq!((metrics.streams_halted, metrics.streams_waiting), (1, 0));

    // Resume: only a halted stream, only a known one.
    let err = client.resume_stream("t", "b").await.unwrap_err();
    assert!(
        matches!(err, Error::InvalidState(ref m) if m == "stream b is not halted"),
        "{err:?}"
    );
    let err = client.resume_stream("t", "nope").await.unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err:?}");

    // The same calls on the caller's transaction: rolled back, still halted.
    let mut db = connect(&config).await;
    let tx = db.transaction().await.unwrap();
    assert_eq!(on(&tx).streams("t", 10, None).await.unwrap(), all);
    assert_eq!(on(&tx).stream("t", "a").await.unwrap(), Some(a));
    assert_eq!(on(&tx).resume_stream("t", "a").await.unwrap(), 1);
    tx.rollback().await.unwrap();
    assert_eq!(
        client.stream("t", "a").await.unwrap().unwrap().state,
        StreamState::Halted
    );

    assert_eq!(client.resume_stream("t", "a").await.unwrap(), 1);
    let err = client.resume_stream("t", "a").await.unwrap_err();
    assert!(matches!(err, Error::InvalidState(_)), "{err:?}");
    drain(&client).await;
    let a = client.stream("t", "a").await.unwrap().unwrap();
    assert_eq!(
        (a.last_seq, a.done_seq, a.state, a.blocking_event),
        (2, 2, StreamState::Idle, None),
        "the head skipped, seq 2 stored"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn one_stream_is_found_past_the_first_thousand() {
    let config = test_database("streams_lookup").await;
    let client = Client::from_config(config, 2).unwrap();
    let events: Vec<NewEvent> = (0..1100)
        .map(|i| {
            NewEvent::new(json!({"i": i}))
                .tenant("big")
                .stream(format!("s{i:04}"))
        })
        .collect();
    client.enqueue_batch(&events).await.unwrap();
    for name in ["s0000", "s0999", "s1000", "s1099"] {
        let found = client.stream("big", name).await.unwrap();
        assert_eq!(
            found.map(|s| (s.name, s.last_seq, s.state)),
            Some((name.to_string(), 1, StreamState::Active)),
            "{name}"
        );
    }
    for missing in ["s", "s0999x", "s1100", "zzz"] {
        assert_eq!(
            client.stream("big", missing).await.unwrap(),
            None,
            "{missing}"
        );
    }
    let page = client.streams("big", 1000, None).await.unwrap();
    assert_eq!(page.next_cursor.as_deref(), Some("s0999"));
    let rest = client.streams("big", 1000, Some("s0999")).await.unwrap();
    assert_eq!((rest.streams.len(), rest.next_cursor), (100, None));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_clients_stream_calls_refuse_bad_input_by_name() {
    let config = test_database("streams_bad_input").await;
    let client = Client::from_config(config, 2).unwrap();
    let bad = |r: Result<_, Error>, field: &str| match r {
        Err(Error::InvalidParameter(m)) => assert!(m.contains(field), "{m}"),
        other => panic!("{field}: {other:?}"),
    };
    bad(client.streams("t", 0, None).await.map(|_| ()), "lim");
    bad(client.streams("t", 1001, None).await.map(|_| ()), "lim");
    bad(client.streams("", 10, None).await.map(|_| ()), "tenant");
    bad(
        client.streams("t", 10, Some("a\0b")).await.map(|_| ()),
        "after_cursor contains a NUL",
    );
    bad(
        client.streams("t", 10, Some("a\tb")).await.map(|_| ()),
        "after_cursor",
    );
    bad(
        client
            .streams("t", 10, Some(&"x".repeat(201)))
            .await
            .map(|_| ()),
        "after_cursor",
    );
    for name in ["", "a\u{1}", "a\u{7f}", &"x".repeat(201)] {
        bad(client.stream("t", name).await.map(|_| ()), "stream");
        bad(client.resume_stream("t", name).await.map(|_| ()), "stream");
    }
    bad(
        client.stream("t", "a\0").await.map(|_| ()),
        "stream contains a NUL",
    );
    bad(
        client.resume_stream("t", "a\0").await.map(|_| ()),
        "stream contains a NUL",
    );
    bad(client.stream("t\0", "a").await.map(|_| ()), "tenant");
    bad(client.resume_stream("", "a").await.map(|_| ()), "tenant");
}

#[tokio::test(flavor = "multi_thread")]
async fn each_tenant_sees_only_its_own_streams() {
    let config = test_database("streams_tenants").await;
    let client = Client::from_config(config, 2).unwrap();
    halted_a_and_idle_b(&client).await;
    let page = client.streams("u", 50, None).await.unwrap();
    assert_eq!((page.streams.len(), page.next_cursor), (0, None));
    assert_eq!(client.stream("u", "a").await.unwrap(), None);
    let err = client.resume_stream("u", "a").await.unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err:?}");
    assert_eq!(
        client.stream("t", "a").await.unwrap().unwrap().state,
        StreamState::Halted,
        "t's stream untouched"
    );
}

/// Whether `value` is what `schema` (of the OpenAPI document `doc`) describes: types,
/// enums, formats, required properties and no property the document does not name.
fn conforms(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.trim_start_matches("#/components/schemas/");
        return conforms(doc, &doc["components"]["schemas"][name], value, at);
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(options) = schema[key].as_array() {
            return match options.iter().any(|o| conforms(doc, o, value, at).is_ok()) {
                true => Ok(()),
                false => Err(format!("{at}: {value} fits none of {schema}")),
            };
        }
    }
    if let Some(allowed) = schema["enum"].as_array() {
        if !allowed.contains(value) {
            return Err(format!("{at}: {value} is not one of {allowed:?}"));
        }
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    let kind = match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    let typed = types.is_empty()
        || types.contains(&kind)
        || (kind == "integer" && types.contains(&"number"));
    if !typed {
        return Err(format!(
            "{at}: {value} is {kind}, the document says {types:?}"
        ));
    }
    match value {
        Value::String(s) if schema["format"] == "uuid" && uuid::Uuid::parse_str(s).is_err() => {
            Err(format!("{at}: '{s}' is not a uuid"))
        }
        Value::Object(object) => {
            let properties = schema["properties"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            if let Some(key) = object.keys().find(|k| !properties.contains_key(*k)) {
                return Err(format!("{at}: '{key}' is not in the document"));
            }
            let required = schema["required"].as_array().into_iter().flatten();
            if let Some(key) = required
                .filter_map(Value::as_str)
                .find(|k| !object.contains_key(*k))
            {
                return Err(format!("{at}: '{key}' is missing"));
            }
            object.iter().try_for_each(|(key, item)| {
                conforms(doc, &properties[key], item, &format!("{at}.{key}"))
            })
        }
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, item)| conforms(doc, &schema["items"], item, &format!("{at}[{i}]"))),
        _ => Ok(()),
    }
}

/// Asserts the document lists the answer's status for the route, and its body in the
/// shape the document gives.
fn as_documented(doc: &Value, method: &str, path: &str, status: StatusCode, body: &Value) {
    let response = &doc["paths"][path][method]["responses"][status.as_str()];
    assert!(
        response.is_object(),
        "{method} {path} does not document {status}"
    );
    let schema = &response["content"]["application/json"]["schema"];
    assert!(schema.is_object(), "{method} {path} {status} has no schema");
    if let Err(why) = conforms(doc, schema, body, &format!("{method} {path} {status}")) {
        panic!("{why}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_stream_routes_work_for_their_tenant_as_documented() {
    let api = Api::new("streams_http").await;
    let doc = api.call("GET", "/openapi.json", None, None).await.body;
    let key = api.key("t").await;
    let k = Some(key.as_str());
    set_policy(&api.client, "halt").await;
    let head = api
        .call(
            "POST",
            "/events?debug=dlq_routing",
            k,
            Some(r#"{"payload":{"n":1},"stream":"a"}"#),
        )
        .await;
    let head = head.body["data"]["event_id"].as_str().unwrap().to_string();
    api.call(
        "POST",
        "/events/batch",
        k,
        Some(r#"{"events":[{"payload":{"n":2},"stream":"a"},{"payload":{},"stream":"b/c"}]}"#),
    )
    .await;
    drain(&api.client).await;

    let list = api.call("GET", "/streams", k, None).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text);
    as_documented(&doc, "get", "/streams", list.status, &list.body);
    assert_eq!(
        list.body["data"]["streams"],
        json!([
            {"name": "a", "last_seq": 2, "done_seq": 0, "state": "halted", "blocking_event": head,
             "blocking_error": "routed to the dead-letter queue (debug flag dlq_routing)", "next_attempt_at": null},
            {"name": "b/c", "last_seq": 1, "done_seq": 1, "state": "idle", "blocking_event": null,
             "blocking_error": null, "next_attempt_at": null},
        ])
    );
    assert_eq!(
        (
            &list.body["data"]["next_cursor"],
            &list.body["data"]["limit"]
        ),
        (&Value::Null, &json!(50))
    );
    assert!(list.body["timestamp"].as_str().unwrap().ends_with('Z'));

    let first = api.call("GET", "/streams?limit=1", k, None).await;
    as_documented(&doc, "get", "/streams", first.status, &first.body);
    assert_eq!(first.body["data"]["streams"][0]["name"], "a");
    let cursor = first.body["data"]["next_cursor"].as_str().unwrap();
    let second = api
        .call("GET", &format!("/streams?limit=1&cursor={cursor}"), k, None)
        .await;
    assert_eq!(second.body["data"]["streams"][0]["name"], "b/c");

    let a = api.call("GET", "/streams/a", k, None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    as_documented(&doc, "get", "/streams/{name}", a.status, &a.body);
    assert_eq!(a.body["data"]["state"], "halted");
    assert_eq!(a.body["data"]["blocking_event"], head.as_str());
    // A name with a '/' is addressed percent-encoded.
    let slashed = api.call("GET", "/streams/b%2Fc", k, None).await;
    assert_eq!(slashed.body["data"]["name"], "b/c", "{}", slashed.text);

    let metrics = api.call("GET", "/metrics", k, None).await;
    assert_eq!(metrics.body["data"]["streams_halted"], 1);
    let prom = api.call("GET", "/metrics/prometheus", k, None).await;
    assert!(
        prom.text
            .contains("triggers_streams{tenant=\"t\",state=\"halted\"} 1"),
        "{}",
        prom.text
    );

    // Resume: 200 once, then 409; unknown, 404.
    let resumed = api.call("POST", "/streams/a/resume", k, None).await;
    assert_eq!(resumed.status, StatusCode::OK, "{}", resumed.text);
    as_documented(
        &doc,
        "post",
        "/streams/{name}/resume",
        resumed.status,
        &resumed.body,
    );
    assert_eq!(
        (
            &resumed.body["data"]["name"],
            &resumed.body["data"]["done_seq"]
        ),
        (&json!("a"), &json!(1))
    );
    for (method, path, status, code) in [
        ("post", "/streams/a/resume", 409, "INVALID_STATE"),
        ("post", "/streams/b%2Fc/resume", 409, "INVALID_STATE"),
        ("post", "/streams/nope/resume", 404, "NOT_FOUND"),
        ("get", "/streams/nope", 404, "NOT_FOUND"),
    ] {
        let reply = api.call(&method.to_uppercase(), path, k, None).await;
        assert_eq!(reply.status.as_u16(), status, "{path}: {}", reply.text);
        assert_eq!(reply.body["error"]["code"], code, "{path}");
        let documented = if path.ends_with("/resume") {
            "/streams/{name}/resume"
        } else {
            "/streams/{name}"
        };
        as_documented(&doc, method, documented, reply.status, &reply.body);
    }
    drain(&api.client).await;
    let a = api.call("GET", "/streams/a", k, None).await;
    assert_eq!(
        (&a.body["data"]["state"], &a.body["data"]["done_seq"]),
        (&json!("idle"), &json!(2))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_sees_none_of_another_tenants_streams() {
    let api = Api::new("streams_http_tenants").await;
    halted_a_and_idle_b(&api.client).await;
    let (t, u) = (api.key("t").await, api.key("u").await);
    let u = Some(u.as_str());
    let list = api.call("GET", "/streams", u, None).await;
    assert_eq!(list.body["data"]["streams"], json!([]), "{}", list.text);
    api.expect_error("GET", "/streams/a", u, None, 404, "NOT_FOUND")
        .await;
    api.expect_error("POST", "/streams/a/resume", u, None, 404, "NOT_FOUND")
        .await;
    let a = api.call("GET", "/streams/a", Some(&t), None).await;
    assert_eq!(a.body["data"]["state"], "halted", "t's stream untouched");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_to_the_stream_routes_gets_its_4xx() {
    let api = Api::new("streams_http_bad_input").await;
    let doc = api.call("GET", "/openapi.json", None, None).await.body;
    let key = api.key("t").await;
    let k = Some(key.as_str());
    let long = "x".repeat(201);
    let cases = [
        ("GET", "/streams?limit=0", 400, "INVALID_PARAMETER"),
        ("GET", "/streams?limit=1001", 400, "INVALID_PARAMETER"),
        ("GET", "/streams?limit=ten", 400, "INVALID_PARAMETER"),
        ("GET", "/streams?cursor=", 400, "INVALID_PARAMETER"),
        ("GET", "/streams?cursor=a%09b", 400, "INVALID_PARAMETER"),
        ("GET", "/streams?cursor=a%00b", 400, "INVALID_PARAMETER"),
        (
            "GET",
            &format!("/streams?cursor={long}"),
            400,
            "INVALID_PARAMETER",
        ),
        ("GET", "/streams?status=halted", 400, "INVALID_PARAMETER"),
        ("GET", "/streams/a%00", 400, "INVALID_PARAMETER"),
        ("GET", "/streams/a%01", 400, "INVALID_PARAMETER"),
        ("GET", "/streams/a%7F", 400, "INVALID_PARAMETER"),
        ("GET", "/streams/%FF", 400, "INVALID_PARAMETER"),
        ("GET", &format!("/streams/{long}"), 400, "INVALID_PARAMETER"),
        ("POST", "/streams/a%00/resume", 400, "INVALID_PARAMETER"),
        ("POST", "/streams/a%0A/resume", 400, "INVALID_PARAMETER"),
        (
            "POST",
            &format!("/streams/{long}/resume"),
            400,
            "INVALID_PARAMETER",
        ),
        ("POST", "/streams", 405, "METHOD_NOT_ALLOWED"),
        ("GET", "/streams/a/resume", 405, "METHOD_NOT_ALLOWED"),
        ("DELETE", "/streams/a", 405, "METHOD_NOT_ALLOWED"),
    ];
    for (method, path, status, code) in cases {
        api.expect_error(method, path, k, None, status, code).await;
    }
    for (method, path) in [
        ("GET", "/streams"),
        ("GET", "/streams/a"),
        ("POST", "/streams/a/resume"),
    ] {
        api.expect_error(method, path, None, None, 401, "MISSING_AUTHORIZATION")
            .await;
    }
    // The document lists each of these answers for its route.
    let reply = api.call("GET", "/streams/a%01", k, None).await;
    as_documented(&doc, "get", "/streams/{name}", reply.status, &reply.body);
    let reply = api.call("GET", "/streams?limit=0", k, None).await;
    as_documented(&doc, "get", "/streams", reply.status, &reply.body);
}
