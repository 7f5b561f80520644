//! Webhook delivery (SPEC §10) from a real `triggers serve` to real HTTP receivers:
//! signed per Standard Webhooks (checked with a verifier written from the spec's text),
//! retried on the schedule with the same `webhook-id`, the event delivered once every
//! endpoint has it; 410 disables an endpoint, a redirect is a failure and is not
//! followed, Retry-After is honoured, a hanging receiver times out without holding a
//! worker; loopback and private targets are refused without `--webhook-allow-private`,
//! also behind a host name; a server SIGKILLed with deliveries in flight delivers each
//! at least once after a restart. The HTTP routes, tenant isolation on each of them,
//! rotation signing with both secrets, and `triggers endpoints`.

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use serde_json::Value;
use triggers_tests::hooks::Hook;
use triggers_tests::{serve_test_database, wait_until, Server, TempDir};

/// How a receiver answers one request.
#[derive(Clone, Copy, Debug)]
enum Answer {
    /// This status (a 3xx points elsewhere on the same receiver).
    Status(u16),
    /// 503 with `Retry-After: <seconds>`.
    RetryAfter(u32),
    /// Never.
    Hang,
    /// 200, after holding the request this long.
    Slow(Duration),
}

/// A receiver on 127.0.0.1 answering the scripted answers in turn (then 200).
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Hook>>>,
    script: Arc<Mutex<VecDeque<Answer>>>,
    /// Every answer after the script, instead of 200.
    then: Arc<Mutex<Option<Answer>>>,
    /// Requests being answered now, and the most there ever were.
    in_flight: Arc<Mutex<(usize, usize)>>,
}

impl Receiver {
    async fn start(script: &[u16]) -> (Receiver, String) {
        let answers: Vec<Answer> = script.iter().map(|s| Answer::Status(*s)).collect();
        Receiver::answering(&answers, None).await
    }

    async fn answering(script: &[Answer], then: Option<Answer>) -> (Receiver, String) {
        let receiver = Receiver::default();
        receiver.script.lock().unwrap().extend(script);
        *receiver.then.lock().unwrap() = then;
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(receiver.clone());
        let url = triggers_tests::serve_loopback(app).await;
        (receiver, url)
    }

    fn got(&self) -> Vec<Hook> {
        self.got.lock().unwrap().clone()
    }

    fn ids(&self) -> Vec<String> {
        self.got().into_iter().map(|r| r.id).collect()
    }

    fn most_in_flight(&self) -> usize {
        self.in_flight.lock().unwrap().1
    }
}

/// Counts a request in flight while it lives.
struct InFlight(Arc<Mutex<(usize, usize)>>);

impl InFlight {
    fn new(counts: &Arc<Mutex<(usize, usize)>>) -> InFlight {
        let mut c = counts.lock().unwrap();
        c.0 += 1;
        c.1 = c.1.max(c.0);
        InFlight(counts.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.lock().unwrap().0 -= 1;
    }
}

async fn receive(
    State(r): State<Receiver>,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> impl IntoResponse {
    r.got
        .lock()
        .unwrap()
        .push(Hook::new(uri.path(), &headers, body));
    let _counted = InFlight::new(&r.in_flight);
    let next = r.script.lock().unwrap().pop_front();
    let next = next
        .or(*r.then.lock().unwrap())
        .unwrap_or(Answer::Status(200));
    let status = match next {
        Answer::Status(status) => status,
        Answer::RetryAfter(seconds) => {
            let mut answer = (StatusCode::SERVICE_UNAVAILABLE, "later").into_response();
            answer
                .headers_mut()
                .insert("retry-after", seconds.to_string().parse().unwrap());
            return answer;
        }
        Answer::Hang => std::future::pending().await,
        Answer::Slow(hold) => {
            tokio::time::sleep(hold).await;
            200
        }
    };
    let mut answer = (StatusCode::from_u16(status).unwrap(), "answered").into_response();
    if (300..400).contains(&status) {
        answer
            .headers_mut()
            .insert("location", "/elsewhere".parse().unwrap());
    }
    answer
}

/// A test's server and database.
struct Setup {
    server: Server,
    /// Tenant `t`'s API key.
    key: String,
    /// A session of the test's own, with the server's secrets key.
    db: tokio_postgres::Client,
    config: tokio_postgres::Config,
    /// The server's flags.
    args: Vec<String>,
    /// Where the server listens.
    base: String,
    _dir: TempDir,
}

impl Setup {
    /// A test database, a secrets key file, a server over both with `extra` flags,
    /// and a session of the test's own with the same key; retries 0, 1, 1, 1 s apart.
    async fn new(name: &str, extra: &[&str]) -> Setup {
        let dir = TempDir::new(name);
        let secrets_key = "5f".repeat(32);
        let key_file = dir.join("secrets.key");
        std::fs::write(&key_file, format!("{secrets_key}\n")).unwrap();
        // The server refuses a key file others can read.
        std::fs::set_permissions(
            &key_file,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        // Two delivery workers unless `extra` says how many.
        let workers = ["--webhook-workers", "2"];
        let workers = if extra.contains(&workers[0]) {
            &[][..]
        } else {
            &workers[..]
        };
        let args: Vec<String> = [
            "--workers",
            "1",
            "--secrets-key-file",
            key_file.to_str().unwrap(),
        ]
        .into_iter()
        .chain(workers.iter().copied())
        .chain(extra.iter().copied())
        .map(str::to_string)
        .collect();
        let borrowed: Vec<&str> = args.iter().map(String::as_str).collect();
        let (server, key, db, config) = serve_test_database(name, "t", &borrowed).await;
        db.batch_execute(&format!(
            "SELECT set_config('triggers.secrets_key', '{secrets_key}', false);
             UPDATE triggers.config SET webhook_schedule_s = '{{0,1,1,1}}', webhook_jitter_pct = 0;"
        ))
        .await
        .unwrap();
        let base = server.url.trim_end_matches('/').to_string();
        Setup {
            server,
            key,
            db,
            config,
            args,
            base,
            _dir: dir,
        }
    }

    /// The server again, on the same database with the same flags.
    fn restart(&mut self) {
        let mut command = triggers_tests::triggers(&["serve"]);
        command
            .env("DATABASE_URL", triggers_tests::database_url(&self.config))
            .args(["--rate-limit", "0"])
            .args([
                "--listen",
                &format!("127.0.0.1:{}", triggers_tests::free_port()),
            ])
            .args(&self.args);
        self.server = Server::start(command);
    }
}

async fn endpoint(db: &tokio_postgres::Client, url: &str) -> (uuid::Uuid, String) {
    let row = db
        .query_one(
            "SELECT endpoint_id, secret FROM triggers.create_endpoint('t', $1)",
            &[&url],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

async fn enqueue(db: &tokio_postgres::Client) -> String {
    db.query_one(
        "SELECT triggers.enqueue('{\"order\": 7}', tenant => 't')::text",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

/// The last error of each delivery to `endpoint`.
async fn last_errors(db: &tokio_postgres::Client, endpoint: uuid::Uuid) -> Vec<String> {
    triggers_tests::column::<Option<String>>(
        db,
        "SELECT last_error FROM triggers.deliveries('t', endpoint_id => $1)",
        &[&endpoint],
    )
    .await
    .into_iter()
    .map(Option::unwrap_or_default)
    .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_failing_twice_gets_three_signed_attempts_with_one_id_then_the_event_is_delivered(
) {
    let s = Setup::new("webhooks_retry", &["--webhook-allow-private"]).await;
    let db = &s.db;
    let (receiver, url) = Receiver::start(&[500, 503]).await;
    let (_, secret) = endpoint(db, &format!("{url}/hooks")).await;
    let event = enqueue(db).await;
    let status = || async {
        db.query_opt(
            "SELECT status::text FROM triggers.events WHERE event_id = $1::text::uuid",
            &[&event],
        )
        .await
        .unwrap()
        .map(|r| r.get::<_, String>(0))
    };
    wait_until("the event delivered", || async {
        status().await.as_deref() == Some("delivered")
    })
    .await;

    let got = receiver.got();
    assert_eq!(got.len(), 3, "{got:?}");
    for r in &got {
        assert_eq!(
            (r.path.as_str(), r.id.as_str()),
            ("/hooks", event.as_str()),
            "the same webhook-id on every attempt"
        );
        assert_eq!(r.verify(&secret), Ok(()));
        let body: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["type"], "event.stored");
        assert_eq!(body["data"]["event_id"], event.as_str());
        assert_eq!(body["data"]["payload"]["order"], 7);
    }
    // Every attempt logged, in order.
    let codes = triggers_tests::column::<i32>(
        db,
        "SELECT a.status_code FROM triggers.webhook_attempts a JOIN triggers.webhook_deliveries d USING (delivery_id)
          WHERE d.event_id = $1::text::uuid ORDER BY a.attempt",
        &[&event],
    )
    .await;
    assert_eq!(codes, [500, 503, 200]);
}

#[tokio::test(flavor = "multi_thread")]
async fn gone_disables_the_endpoint_and_a_redirect_is_a_failure_not_followed() {
    let s = Setup::new("webhooks_gone", &["--webhook-allow-private"]).await;
    let db = &s.db;
    let (gone, gone_url) = Receiver::start(&[410]).await;
    let (moved, moved_url) = Receiver::start(&[302, 302, 302, 302]).await;
    let (gone_id, _) = endpoint(db, &gone_url).await;
    let (moved_id, _) = endpoint(db, &moved_url).await;
    enqueue(db).await;
    wait_until("the endpoint disabled", || async {
        db.query_one(
            "SELECT disabled_reason FROM triggers.endpoints('t') WHERE endpoint_id = $1",
            &[&gone_id],
        )
        .await
        .unwrap()
        .get::<_, Option<String>>(0)
        .as_deref()
            == Some("the receiver answered 410 Gone")
    })
    .await;
    assert_eq!(gone.got().len(), 1);
    wait_until("the redirected delivery failed", || async {
        db.query_one(
            "SELECT status FROM triggers.deliveries('t', endpoint_id => $1)",
            &[&moved_id],
        )
        .await
        .unwrap()
        .get::<_, String>(0)
            == "failed"
    })
    .await;
    assert!(last_errors(db, moved_id).await[0].contains("redirect"));
    assert!(
        moved.got().iter().all(|r| r.path == "/"),
        "the Location was never followed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn loopback_and_private_targets_are_refused_without_the_flag() {
    let s = Setup::new("webhooks_private", &[]).await;
    let db = &s.db;
    let (receiver, url) = Receiver::start(&[]).await;
    let port = url.rsplit(':').next().unwrap().to_string();
    let targets = [
        url.clone(),
        "http://10.0.0.1/hooks".to_string(),
        format!("http://localhost:{port}/hooks"),
    ];
    let mut ids = Vec::new();
    for target in &targets {
        ids.push(endpoint(db, target).await.0);
    }
    enqueue(db).await;
    for (id, target) in ids.iter().zip(&targets) {
        wait_until(&format!("{target} refused"), || async {
            last_errors(db, *id)
                .await
                .first()
                .is_some_and(|e| e.contains("refused"))
        })
        .await;
    }
    // What a host name resolved to stays in the server: the stored error names no
    // address a tenant did not write itself.
    let errors = last_errors(db, ids[2]).await;
    assert!(errors[0].contains("no public address"), "{errors:?}");
    assert!(
        !errors[0].contains("127.0.0.1") && !errors[0].contains("::1"),
        "{errors:?}"
    );
    assert_eq!(receiver.got().len(), 0, "nothing reached the receiver");
}

/// The status of one of tenant `t`'s events.
async fn event_status(db: &tokio_postgres::Client, event: &str) -> Option<String> {
    db.query_opt(
        "SELECT status::text FROM triggers.events WHERE event_id = $1::text::uuid",
        &[&event],
    )
    .await
    .unwrap()
    .map(|r| r.get(0))
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_after_is_honoured() {
    let s = Setup::new("webhooks_retry_after", &["--webhook-allow-private"]).await;
    let db = &s.db;
    let (receiver, url) = Receiver::answering(&[Answer::RetryAfter(2)], None).await;
    let (endpoint_id, _) = endpoint(db, &url).await;
    let event = enqueue(db).await;
    wait_until("the event delivered", || async {
        event_status(db, &event).await.as_deref() == Some("delivered")
    })
    .await;
    assert_eq!(receiver.got().len(), 2);
    // The schedule alone would have tried again 1 s later; the second attempt waited
    // for the 2 s the receiver asked for (times from the database's own clock).
    let gap: f64 = db
        .query_one(
            "SELECT extract(epoch FROM max(a.attempted_at) - min(a.attempted_at))::float8
               FROM triggers.webhook_attempts a JOIN triggers.webhook_deliveries d USING (delivery_id)
              WHERE d.endpoint_id = $1",
            &[&endpoint_id],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        gap >= 2.0,
        "the second attempt came {gap} s after the first"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hanging_receiver_times_out_and_holds_no_worker() {
    let s = Setup::new(
        "webhooks_hang",
        &[
            "--webhook-allow-private",
            "--webhook-workers",
            "1",
            "--webhook-timeout",
            "1",
        ],
    )
    .await;
    let db = &s.db;
    db.batch_execute("UPDATE triggers.config SET webhook_endpoint_concurrency = 1")
        .await
        .unwrap();
    let (hanging, hanging_url) = Receiver::answering(&[], Some(Answer::Hang)).await;
    let (healthy, healthy_url) = Receiver::start(&[]).await;
    let (hanging_id, _) = endpoint(db, &hanging_url).await;
    endpoint(db, &healthy_url).await;
    let mut events = BTreeSet::new();
    for _ in 0..5 {
        events.insert(enqueue(db).await);
    }
    // The one worker keeps delivering to the healthy receiver while the other hangs.
    wait_until("every event at the healthy receiver", || async {
        healthy.ids().into_iter().collect::<BTreeSet<_>>() == events
    })
    .await;
    wait_until("hanging attempts given up", || async {
        last_errors(db, hanging_id)
            .await
            .iter()
            .any(|e| e.contains("no answer within 1 s"))
    })
    .await;
    assert_eq!(
        hanging.most_in_flight(),
        1,
        "webhook_endpoint_concurrency = 1 holds one request at the hanging receiver"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_killed_with_deliveries_in_flight_delivers_each_at_least_once_after_restart() {
    let mut s = Setup::new(
        "webhooks_sigkill",
        &["--webhook-allow-private", "--webhook-timeout", "5"],
    )
    .await;
    // Each request is held a second before its 200: some are in flight at the kill.
    let (receiver, url) =
        Receiver::answering(&[], Some(Answer::Slow(Duration::from_secs(1)))).await;
    endpoint(&s.db, &url).await;
    let mut events = BTreeSet::new();
    for _ in 0..20 {
        events.insert(enqueue(&s.db).await);
    }
    wait_until("a delivery in flight", || async {
        !receiver.got().is_empty()
    })
    .await;
    s.server.stop_with(libc::SIGKILL, Duration::from_secs(30));
    let before: BTreeSet<String> = receiver.ids().into_iter().collect();
    s.restart();
    let db = &s.db;
    wait_until("every event delivered", || async {
        triggers_tests::scalar(
            db,
            "SELECT count(*) FROM triggers.events WHERE status = 'delivered'",
        )
        .await
            == 20
    })
    .await;
    let ids = receiver.ids();
    let distinct: BTreeSet<String> = ids.iter().cloned().collect();
    assert_eq!(distinct, events, "every event reached the receiver");
    let again = before
        .iter()
        .filter(|id| ids.iter().filter(|i| i == id).count() > 1)
        .count();
    assert!(
        again > 0,
        "a request in flight at the kill is sent again (same webhook-id): {} received, {} distinct",
        ids.len(),
        distinct.len()
    );
}

/// `method path` with tenant key `key` and a JSON body; the status and the JSON answer.
async fn call(
    base: &str,
    method: reqwest::Method,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .request(method, format!("{base}{path}"))
        .bearer_auth(key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_http_routes_manage_endpoints_and_show_deliveries_to_their_tenant_only() {
    use reqwest::Method;
    let s = Setup::new("webhooks_http", &["--webhook-allow-private"]).await;
    let (db, base, key) = (&s.db, s.base.as_str(), s.key.as_str());
    let other: String = db
        .query_one("SELECT triggers.create_api_key('u', 'test')", &[])
        .await
        .unwrap()
        .get(0);
    let (receiver, url) = Receiver::start(&[]).await;

    let (status, created) = call(
        base,
        Method::POST,
        "/webhooks/endpoints",
        key,
        Some(serde_json::json!({"url": format!("{url}/in"), "description": "orders"})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["data"]["endpoint_id"].as_str().unwrap().to_string();
    let first_secret = created["data"]["secret"].as_str().unwrap().to_string();
    assert!(first_secret.starts_with("whsec_"));
    assert_eq!(created["data"]["enabled"], true);
    let (_, list) = call(base, Method::GET, "/webhooks/endpoints", key, None).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert!(
        list["data"][0].get("secret").is_none(),
        "a secret is shown only once"
    );
    let (status, patched) = call(
        base,
        Method::PATCH,
        &format!("/webhooks/endpoints/{id}"),
        key,
        Some(serde_json::json!({"description": "orders, EU"})),
    )
    .await;
    assert_eq!(
        (status, patched["data"]["description"].as_str()),
        (200, Some("orders, EU"))
    );

    // An event, delivered; its deliveries with every attempt.
    let (_, sent) = call(
        base,
        Method::POST,
        "/events",
        key,
        Some(serde_json::json!({"payload": {"n": 1}})),
    )
    .await;
    let event = sent["data"]["event_id"].as_str().unwrap().to_string();
    wait_until("delivered", || async {
        event_status(db, &event).await.as_deref() == Some("delivered")
    })
    .await;
    let (status, deliveries) = call(
        base,
        Method::GET,
        &format!("/events/{event}/deliveries"),
        key,
        None,
    )
    .await;
    assert_eq!(status, 200, "{deliveries}");
    let delivery = &deliveries["data"][0];
    assert_eq!(
        (
            delivery["status"].as_str(),
            delivery["endpoint_id"].as_str()
        ),
        (Some("succeeded"), Some(id.as_str()))
    );
    assert_eq!(delivery["attempt_log"][0]["status_code"], 200);
    let (_, by_endpoint) = call(
        base,
        Method::GET,
        &format!("/webhooks/endpoints/{id}/deliveries"),
        key,
        None,
    )
    .await;
    assert_eq!(by_endpoint["data"][0]["event_id"], event.as_str());

    // Rotation: the next delivery is signed with the new secret and the previous one.
    let (status, rotated) = call(
        base,
        Method::POST,
        &format!("/webhooks/endpoints/{id}/rotate-secret"),
        key,
        None,
    )
    .await;
    assert_eq!(status, 200, "{rotated}");
    let new_secret = rotated["data"]["secret"].as_str().unwrap().to_string();
    assert!(rotated["data"]["previous_valid_until"].is_string());
    let (status, resent) = call(
        base,
        Method::POST,
        &format!("/events/{event}/resend"),
        key,
        Some(serde_json::json!({"endpoint_id": id})),
    )
    .await;
    assert_eq!(
        (status, resent["data"]["status"].as_str()),
        (200, Some("pending")),
        "{resent}"
    );
    wait_until("the resend received", || async {
        receiver.got().len() == 2
    })
    .await;
    let again = &receiver.got()[1];
    assert_eq!(again.id, event, "the same webhook-id when resent");
    assert_eq!(again.signature.split(' ').count(), 2, "{}", again.signature);
    for secret in [&first_secret, &new_secret] {
        assert_eq!(again.verify(secret), Ok(()));
    }
    wait_until("the resend recorded", || async {
        let (_, d) = call(
            base,
            Method::GET,
            &format!("/events/{event}/deliveries"),
            key,
            None,
        )
        .await;
        d["data"][0]["attempt_log"].as_array().map(Vec::len) == Some(2)
            && d["data"][0]["status"] == "succeeded"
    })
    .await;
    let (status, recovered) = call(
        base,
        Method::POST,
        &format!("/webhooks/endpoints/{id}/recover"),
        key,
        Some(serde_json::json!({"since": "2020-01-01T00:00:00Z"})),
    )
    .await;
    assert_eq!(
        (status, recovered["data"]["recovered"].as_i64()),
        (200, Some(0))
    );
    let (_, metrics) = call(base, Method::GET, "/metrics", key, None).await;
    let webhooks = &metrics["data"]["webhooks"];
    assert_eq!(
        (
            webhooks["succeeded"].as_i64(),
            webhooks["attempts"].as_i64(),
            webhooks["pending"].as_i64()
        ),
        (Some(1), Some(2), Some(0)),
        "{webhooks}"
    );

    let text = reqwest::Client::new()
        .get(format!("{base}/metrics/prometheus"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "triggers_webhook_deliveries{tenant=\"t\",status=\"succeeded\"} 1",
        "triggers_webhook_deliveries{tenant=\"t\",status=\"pending\"} 0",
        "triggers_webhook_attempts{tenant=\"t\"} 2",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
    }
    assert!(text.contains("triggers_webhook_latency_seconds{tenant=\"t\",quantile=\"0.99\"}"));

    // Another tenant sees none of it, on every route.
    for (method, path, body) in [
        (Method::GET, format!("/webhooks/endpoints/{id}"), None),
        (
            Method::PATCH,
            format!("/webhooks/endpoints/{id}"),
            Some(serde_json::json!({"enabled": false})),
        ),
        (
            Method::POST,
            format!("/webhooks/endpoints/{id}/rotate-secret"),
            None,
        ),
        (
            Method::GET,
            format!("/webhooks/endpoints/{id}/deliveries"),
            None,
        ),
        (
            Method::POST,
            format!("/webhooks/endpoints/{id}/recover"),
            Some(serde_json::json!({"since": "2020-01-01T00:00:00Z"})),
        ),
        (Method::GET, format!("/events/{event}/deliveries"), None),
        (
            Method::POST,
            format!("/events/{event}/resend"),
            Some(serde_json::json!({"endpoint_id": id})),
        ),
        (Method::DELETE, format!("/webhooks/endpoints/{id}"), None),
    ] {
        let (status, answer) = call(base, method.clone(), &path, &other, body).await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (404, Some("NOT_FOUND")),
            "{method} {path}: {answer}"
        );
    }
    let (_, theirs) = call(base, Method::GET, "/webhooks/endpoints", &other, None).await;
    assert_eq!(theirs["data"], serde_json::json!([]));
    assert_eq!(
        call(base, Method::GET, "/metrics", &other, None).await.1["data"]["webhooks"]["attempts"],
        0
    );
    let (_, still) = call(
        base,
        Method::GET,
        &format!("/webhooks/endpoints/{id}"),
        key,
        None,
    )
    .await;
    assert_eq!(
        still["data"]["enabled"], true,
        "the other tenant changed nothing"
    );

    // Bad input: a clear 400, nothing changed.
    for (method, path, body, code) in [
        (
            Method::POST,
            "/webhooks/endpoints".to_string(),
            serde_json::json!({"url": "ftp://example.com"}),
            "INVALID_PARAMETER",
        ),
        (
            Method::POST,
            "/webhooks/endpoints".to_string(),
            serde_json::json!({"url": "https://example.com", "filter": {"streams": "x"}}),
            "INVALID_PARAMETER",
        ),
        (
            Method::POST,
            "/webhooks/endpoints".to_string(),
            serde_json::json!({"url": "https://example.com", "secret": "mine"}),
            "INVALID_PARAMETER",
        ),
        (
            Method::PATCH,
            format!("/webhooks/endpoints/{id}"),
            serde_json::json!({"enabled": "yes"}),
            "INVALID_PARAMETER",
        ),
        (
            Method::POST,
            format!("/webhooks/endpoints/{id}/recover"),
            serde_json::json!({"since": "yesterday"}),
            "INVALID_PARAMETER",
        ),
        (
            Method::POST,
            format!("/events/{event}/resend"),
            serde_json::json!({"endpoint_id": "nope"}),
            "INVALID_PARAMETER",
        ),
        (
            Method::GET,
            "/webhooks/endpoints/not-a-uuid".to_string(),
            Value::Null,
            "INVALID_PARAMETER",
        ),
    ] {
        let body = (!body.is_null()).then_some(body);
        let (status, answer) = call(base, method.clone(), &path, key, body).await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (400, Some(code)),
            "{method} {path}: {answer}"
        );
    }
    assert_eq!(
        call(base, Method::GET, "/webhooks/endpoints", key, None)
            .await
            .1["data"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let (status, _) = call(
        base,
        Method::DELETE,
        &format!("/webhooks/endpoints/{id}"),
        key,
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = call(
        base,
        Method::GET,
        &format!("/webhooks/endpoints/{id}"),
        key,
        None,
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_creates_lists_rotates_and_deletes_endpoints() {
    let s = Setup::new("webhooks_cli", &[]).await;
    let url = triggers_tests::database_url(&s.config);
    let key_file = s.args[s
        .args
        .iter()
        .position(|a| a == "--secrets-key-file")
        .unwrap()
        + 1]
    .clone();
    let cli = |args: &[&str]| {
        let mut command = triggers_tests::triggers(&["endpoints"]);
        command
            .args(args)
            .env("DATABASE_URL", &url)
            .env("TRIGGERS_SECRETS_KEY_FILE", &key_file);
        let out = triggers_tests::run(command, Duration::from_secs(60));
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, out, err) = cli(&[
        "create",
        "--url",
        "https://example.com/hooks",
        "--tenant",
        "t",
        "--stream",
        "orders",
    ]);
    assert_eq!(code, Some(0), "{err}");
    let created: Value = serde_json::from_str(out.trim()).unwrap();
    assert!(
        created["secret"].as_str().unwrap().starts_with("whsec_"),
        "{out}"
    );
    assert!(err.contains("shown only now"), "{err}");
    let id = created["endpoint_id"].as_str().unwrap().to_string();
    let (code, out, _) = cli(&["list", "--tenant", "t"]);
    let listed: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (
            code,
            listed["endpoint_id"].as_str(),
            listed["filter"]["stream"].as_str()
        ),
        (Some(0), Some(id.as_str()), Some("orders"))
    );
    let (code, out, _) = cli(&["rotate-secret", &id, "--tenant", "t"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("whsec_"));
    let (code, _, err) = cli(&["create", "--url", "file:///etc/passwd", "--tenant", "t"]);
    assert_ne!(code, Some(0));
    assert!(
        err.contains("url must be an http:// or https:// URL"),
        "{err}"
    );
    let (code, _, err) = cli(&["delete", &id, "--tenant", "u"]);
    assert_ne!(code, Some(0), "another tenant's endpoint is not deleted");
    assert!(err.contains("no endpoint"), "{err}");
    let (code, _, _) = cli(&["delete", &id, "--tenant", "t"]);
    assert_eq!(code, Some(0));
    let (_, out, _) = cli(&["list", "--tenant", "t"]);
    assert_eq!(out.trim(), "");
}
