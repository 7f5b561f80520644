//! Webhook delivery (SPEC §10) from a real `triggers serve` to real HTTP receivers:
//! signed per Standard Webhooks (checked with a verifier written from the spec's text),
//! retried on the schedule with the same `webhook-id`, the event delivered once every
//! endpoint has it; 410 disables an endpoint, a redirect is a failure and is not
//! followed; loopback and private targets are refused without `--webhook-allow-private`,
//! also behind a host name.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use serde_json::Value;
use triggers_core::webhooks::{verify, Secret};
use triggers_tests::{serve_test_database, wait_until, Server, TempDir};

/// What a receiver got: path, webhook headers, body.
#[derive(Clone, Debug)]
struct Received {
    path: String,
    id: String,
    timestamp: String,
    signature: String,
    body: String,
}

/// A receiver on 127.0.0.1 answering the scripted statuses in turn (then 200); a
/// 3xx answer points elsewhere on the same receiver.
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<VecDeque<u16>>>,
}

impl Receiver {
    async fn start(script: &[u16]) -> (Receiver, String) {
        let receiver = Receiver::default();
        receiver.script.lock().unwrap().extend(script);
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (receiver, url)
    }

    fn got(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }
}

async fn receive(
    State(r): State<Receiver>,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> impl IntoResponse {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    r.got.lock().unwrap().push(Received {
        path: uri.path().to_string(),
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        body,
    });
    let status = r.script.lock().unwrap().pop_front().unwrap_or(200);
    let mut answer = (StatusCode::from_u16(status).unwrap(), "answered").into_response();
    if (300..400).contains(&status) {
        answer
            .headers_mut()
            .insert("location", "/elsewhere".parse().unwrap());
    }
    answer
}

/// A test database, a secrets key file, a server over both with `extra` flags, and a
/// session of the test's own with the same key.
async fn setup(name: &str, extra: &[&str]) -> (Server, tokio_postgres::Client, TempDir) {
    let dir = TempDir::new(name);
    let key = "5f".repeat(32);
    let key_file = dir.join("secrets.key");
    std::fs::write(&key_file, format!("{key}\n")).unwrap();
    let key_file = key_file.to_str().unwrap().to_string();
    let args: Vec<&str> = [
        "--workers",
        "1",
        "--webhook-workers",
        "2",
        "--secrets-key-file",
        &key_file,
    ]
    .into_iter()
    .chain(extra.iter().copied())
    .collect();
    let (server, _, db, _) = serve_test_database(name, "t", &args).await;
    db.batch_execute(&format!(
        "SELECT set_config('triggers.secrets_key', '{key}', false);
         UPDATE triggers.config SET webhook_schedule_s = '{{0,1,1,1}}', webhook_jitter_pct = 0;"
    ))
    .await
    .unwrap();
    (server, db, dir)
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
    let (_server, db, _dir) = setup("webhooks_retry", &["--webhook-allow-private"]).await;
    let (receiver, url) = Receiver::start(&[500, 503]).await;
    let (_, secret) = endpoint(&db, &format!("{url}/hooks")).await;
    let event = enqueue(&db).await;
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
    let secret = Secret::parse(&secret).unwrap();
    for r in &got {
        assert_eq!(
            (r.path.as_str(), r.id.as_str()),
            ("/hooks", event.as_str()),
            "the same webhook-id on every attempt"
        );
        let ts: i64 = r.timestamp.parse().unwrap();
        assert_eq!(
            verify(
                &secret,
                &r.id,
                &r.timestamp,
                &r.signature,
                r.body.as_bytes(),
                ts
            ),
            Ok(())
        );
        let body: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["type"], "event.stored");
        assert_eq!(body["data"]["event_id"], event.as_str());
        assert_eq!(body["data"]["payload"]["order"], 7);
    }
    // Every attempt logged, in order.
    let codes = triggers_tests::column::<i32>(
        &db,
        "SELECT a.status_code FROM triggers.webhook_attempts a JOIN triggers.webhook_deliveries d USING (delivery_id)
          WHERE d.event_id = $1::text::uuid ORDER BY a.attempt",
        &[&event],
    )
    .await;
    assert_eq!(codes, [500, 503, 200]);
}

#[tokio::test(flavor = "multi_thread")]
async fn gone_disables_the_endpoint_and_a_redirect_is_a_failure_not_followed() {
    let (_server, db, _dir) = setup("webhooks_gone", &["--webhook-allow-private"]).await;
    let (gone, gone_url) = Receiver::start(&[410]).await;
    let (moved, moved_url) = Receiver::start(&[302, 302, 302, 302]).await;
    let (gone_id, _) = endpoint(&db, &gone_url).await;
    let (moved_id, _) = endpoint(&db, &moved_url).await;
    enqueue(&db).await;
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
    assert!(last_errors(&db, moved_id).await[0].contains("redirect"));
    assert!(
        moved.got().iter().all(|r| r.path == "/"),
        "the Location was never followed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn loopback_and_private_targets_are_refused_without_the_flag() {
    let (_server, db, _dir) = setup("webhooks_private", &[]).await;
    let (receiver, url) = Receiver::start(&[]).await;
    let port = url.rsplit(':').next().unwrap().to_string();
    let targets = [
        url.clone(),
        "http://10.0.0.1/hooks".to_string(),
        format!("http://localhost:{port}/hooks"),
    ];
    let mut ids = Vec::new();
    for target in &targets {
        ids.push(endpoint(&db, target).await.0);
    }
    enqueue(&db).await;
    for (id, target) in ids.iter().zip(&targets) {
        wait_until(&format!("{target} refused"), || async {
            last_errors(&db, *id)
                .await
                .first()
                .is_some_and(|e| e.contains("refused"))
        })
        .await;
    }
    let errors = last_errors(&db, ids[2]).await;
    assert!(errors[0].contains("not a public address"), "{errors:?}");
    assert_eq!(receiver.got().len(), 0, "nothing reached the receiver");
}
