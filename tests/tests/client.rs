//! triggers-client against a real cluster: every call, every error variant, the
//! transactional outbox, the inbox stream over several pages, the listener, and the
//! examples as a user runs them.
//! (Long: one test per public call and error variant of the client.)

use std::time::Duration;

use futures_util::TryStreamExt;
use serde_json::json;
use triggers_client::{on, Client, DebugFlag, Error, InboxQuery, NewEvent, Order, Status};
use triggers_tests::{connect, test_database, PATIENCE};

async fn client_for(name: &str) -> (Client, tokio_postgres::Config) {
    let config = test_database(name).await;
    (Client::from_config(config.clone(), 4).unwrap(), config)
}

async fn drain(client: &Client) {
    while client.process_batch(None, None).await.unwrap().read > 0 {}
}

#[tokio::test(flavor = "multi_thread")]
async fn every_call_works_end_to_end() {
    let (client, _) = client_for("client_calls").await;
    client.ping().await.unwrap();
    assert_eq!(client.version().await.unwrap(), env!("CARGO_PKG_VERSION"));
    let settings = client.settings().await.unwrap();
    assert_eq!((settings.batch_size, settings.max_retries), (100, 3));
    assert_eq!(settings.stream_failure_policy, "continue");

    let first = client
        .enqueue(
            &NewEvent::new(json!({"n": 1}))
                .tenant("t")
                .metadata(json!({"m": 1}))
                .idempotency_key("k"),
        )
        .await
        .unwrap();
    assert!(!first.duplicate);
    let again = client
        .enqueue(
            &NewEvent::new(json!({"n": 1}))
                .tenant("t")
                .idempotency_key("k"),
        )
        .await
        .unwrap();
    assert_eq!((again.event_id, again.duplicate), (first.event_id, true));
    let batch = client
        .enqueue_batch(&[
            NewEvent::new(json!({"n": 2})).tenant("t").stream("s"),
            NewEvent::new(json!({"n": 3}))
                .tenant("t")
                .debug(DebugFlag::DlqRouting),
        ])
        .await
        .unwrap();
    assert_eq!(batch.len(), 2);

    let result = client.process_batch(Some(10), None).await.unwrap();
    assert_eq!(
        (result.read, result.stored, result.dead_lettered),
        (3, 2, 1)
    );

    let event = client.get_event("t", first.event_id).await.unwrap();
    assert_eq!(event.status, Status::Pending);
    assert_eq!(event.payload, json!({"n": 1}));
    assert_eq!(event.metadata, Some(json!({"m": 1})));
    assert_eq!(event.idempotency_key.as_deref(), Some("k"));
    let streamed = client.get_event("t", batch[0]).await.unwrap();
    assert_eq!(
        (streamed.stream.as_deref(), streamed.seq),
        (Some("s"), Some(1))
    );

    let acked = client.ack("t", first.event_id).await.unwrap();
    assert_eq!(acked.status, Status::Delivered);
    assert!(acked.delivered_at.is_some());

    let dead = client.dead_letters("t", 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].event_id, Some(batch[1]));
    assert!(dead[0].error.as_deref().unwrap().contains("dlq_routing"));
    assert_eq!(client.retry("t", batch[1]).await.unwrap(), 1);
    drain(&client).await;
    assert_eq!(
        client.get_event("t", batch[1]).await.unwrap().status,
        Status::Pending
    );

    client
        .enqueue(
            &NewEvent::new(json!({}))
                .tenant("t")
                .debug(DebugFlag::DlqRouting),
        )
        .await
        .unwrap();
    drain(&client).await;
    assert_eq!(client.redrive("t", 10).await.unwrap(), 1);

    let m = client.metrics(Some("t")).await.unwrap();
    assert_eq!((m.total, m.pending, m.delivered, m.failed), (4, 2, 1, 1));
    assert_eq!(m.queue_depth, 1, "the redriven message waits");
    let all = client.metrics(None).await.unwrap();
    assert_eq!(all.total, 4);
    assert!(all.last_processed_at.is_some());

    let page = client
        .inbox(
            &InboxQuery::new("t")
                .status([Status::Pending])
                .order(Order::Desc),
        )
        .await
        .unwrap();
    assert_eq!(page.events.len(), 2);
    assert!(page.events[0].created_at >= page.events[1].created_at);
    let filtered = client
        .inbox(&InboxQuery::new("t").metadata_contains(json!({"m": 1})))
        .await
        .unwrap();
    assert_eq!(filtered.events.len(), 1);

    let key = client.create_api_key("t", "ci").await.unwrap();
    assert!(key.starts_with(triggers_core_prefix()));
    assert_eq!(client.authenticate(&key).await.unwrap(), "t");
    assert!(client.revoke_api_key("t", &key).await.unwrap());

    assert_eq!(
        client.purge(Duration::from_secs(3600)).await.unwrap(),
        0,
        "nothing that old"
    );
}

fn triggers_core_prefix() -> &'static str {
    "trg_"
}

#[tokio::test(flavor = "multi_thread")]
async fn every_error_variant_comes_from_its_sqlstate() {
    let (client, config) = client_for("client_errors").await;
    let err = client
        .enqueue(&NewEvent::new(json!([1])))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidPayload(ref m) if m.contains("payload")),
        "{err:?}"
    );
    let err = client
        .enqueue(&NewEvent::new(json!({})).metadata(json!(5)))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidMetadata(_)), "{err:?}");
    let big = "x".repeat(1_100_000);
    let err = client
        .enqueue(&NewEvent::new(json!({ "big": big })))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::PayloadTooLarge(_)), "{err:?}");
    let err = client
        .enqueue(&NewEvent::new(json!({})).tenant(""))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidParameter(_)), "{err:?}");
    let err = client
        .inbox(&InboxQuery::new("t").after("not-a-cursor!"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidCursor(_)), "{err:?}");
    let err = client
        .inbox(&InboxQuery::new("t").limit(0))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidParameter(_)), "{err:?}");
    let missing = triggers_client::EventId(uuid::Uuid::nil());
    let err = client.ack("t", missing).await.unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err:?}");

    let id = client
        .enqueue(
            &NewEvent::new(json!({}))
                .tenant("t")
                .debug(DebugFlag::DlqRouting),
        )
        .await
        .unwrap();
    drain(&client).await;
    let err = client.ack("t", id.event_id).await.unwrap_err();
    assert!(matches!(err, Error::InvalidState(_)), "{err:?}");
    for _ in 0..3 {
        client.retry("t", id.event_id).await.unwrap();
        // Make it fail again without processing, so the next retry is allowed.
        connect(&config)
            .await
            .execute(
                "UPDATE triggers.events SET status = 'failed' WHERE event_id = $1",
                &[&id.event_id.0],
            )
            .await
            .unwrap();
    }
    let err = client.retry("t", id.event_id).await.unwrap_err();
    assert!(matches!(err, Error::RetriesExhausted(_)), "{err:?}");
    assert_eq!(
        err.code(),
        Some(triggers_client::ErrorCode::RetriesExhausted)
    );
    let err = client.authenticate("trg_nope_nope").await.unwrap_err();
    assert!(matches!(err, Error::Unauthorized(_)), "{err:?}");

    // A database without the extension, and one that is not there at all.
    let mut admin = config.clone();
    admin.dbname("postgres");
    let bare = Client::from_config(admin, 1).unwrap();
    assert!(matches!(
        bare.ping().await.unwrap_err(),
        Error::ExtensionMissing
    ));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = Client::connect(&format!("postgres://x@127.0.0.1:{port}/x")).unwrap();
    let err = down.ping().await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(matches!(
        Client::connect("postgres://[bad").unwrap_err(),
        Error::InvalidUrl(_)
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn enqueue_in_the_callers_transaction_is_an_outbox() {
    let (client, config) = client_for("client_outbox").await;
    let mut db = connect(&config).await;
    db.batch_execute("CREATE TABLE orders (id int PRIMARY KEY, state text)")
        .await
        .unwrap();

    // Rolled back: neither the write nor the event.
    let tx = db.transaction().await.unwrap();
    tx.execute("INSERT INTO orders VALUES (1, 'paid')", &[])
        .await
        .unwrap();
    on(&tx)
        .enqueue(&NewEvent::new(json!({"order": 1})))
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(
        client.process_batch(None, None).await.unwrap().read,
        0,
        "nothing queued"
    );

    // Committed: both, and the event is processed.
    let tx = db.transaction().await.unwrap();
    tx.execute("INSERT INTO orders VALUES (2, 'paid')", &[])
        .await
        .unwrap();
    let sent = on(&tx)
        .enqueue(&NewEvent::new(json!({"order": 2})))
        .await
        .unwrap();
    // Not visible to processing before the commit.
    assert_eq!(client.process_batch(None, None).await.unwrap().read, 0);
    tx.commit().await.unwrap();
    assert_eq!(client.process_batch(None, None).await.unwrap().stored, 1);
    let event = client.get_event("default", sent.event_id).await.unwrap();
    assert_eq!(event.payload, json!({"order": 2}));

    // Every call is available on a transaction too.
    let tx = db.transaction().await.unwrap();
    let acked = on(&tx).ack("default", sent.event_id).await.unwrap();
    assert_eq!(acked.status, Status::Delivered);
    let m = on(&tx).metrics(Some("default")).await.unwrap();
    assert_eq!(m.delivered, 1);
    tx.rollback().await.unwrap();
    assert_eq!(
        client
            .get_event("default", sent.event_id)
            .await
            .unwrap()
            .status,
        Status::Pending
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn inbox_stream_follows_cursors_over_several_pages() {
    let (client, _) = client_for("client_stream").await;
    let events: Vec<NewEvent> = (0..250)
        .map(|n| NewEvent::new(json!({ "n": n })).tenant("s"))
        .collect();
    client.enqueue_batch(&events).await.unwrap();
    drain(&client).await;
    let seen: Vec<i64> = client
        .inbox_stream(InboxQuery::new("s").limit(40))
        .map_ok(|e| e.payload["n"].as_i64().unwrap())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(
        seen,
        (0..250).collect::<Vec<_>>(),
        "every event once, in order, over 7 pages"
    );
    let page = client
        .inbox(&InboxQuery::new("s").limit(100))
        .await
        .unwrap();
    let next = client
        .inbox(
            &InboxQuery::new("s")
                .limit(100)
                .after(page.next_cursor.unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(next.events[0].payload["n"], 100);
    let last = client
        .inbox(
            &InboxQuery::new("s")
                .limit(100)
                .after(next.next_cursor.unwrap()),
        )
        .await
        .unwrap();
    assert_eq!((last.events.len(), last.next_cursor), (50, None));
}

/// The listener wakes on an enqueue. (How soon is a benchmark: triggers-load's
/// "enqueue → Listener woken" row.)
#[tokio::test(flavor = "multi_thread")]
async fn the_listener_wakes_on_an_enqueue() {
    let (client, config) = client_for("client_listener").await;
    let listener = client.listener().await.unwrap();
    assert!(
        !listener.wait_for_events(Duration::ZERO).await.unwrap(),
        "nothing yet"
    );
    client.enqueue(&NewEvent::new(json!({}))).await.unwrap();
    assert!(listener.wait_for_events(PATIENCE).await.unwrap(), "woken");
    // And through the untimed wait a worker races against its own clock. (Another
    // session: the first one's next NOTIFY is throttled for notify_throttle_ms.)
    connect(&config)
        .await
        .batch_execute("SELECT triggers.enqueue(payload => '{}')")
        .await
        .unwrap();
    tokio::time::timeout(PATIENCE, listener.notified())
        .await
        .expect("woken")
        .unwrap();
}

/// A listener whose connection died says so (the worker then reconnects) rather than
/// waiting forever.
#[tokio::test(flavor = "multi_thread")]
async fn the_listener_reports_its_closed_connection() {
    let (client, config) = client_for("client_listener_closed").await;
    let listener = client.listener().await.unwrap();
    let admin = connect(&config).await;
    let killed: i64 = admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
              WHERE datname = current_database() AND query = 'LISTEN triggers_events'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(killed, 1);
    let waited = tokio::time::timeout(PATIENCE, listener.notified())
        .await
        .expect("the wait ends");
    assert!(matches!(waited, Err(Error::Unavailable(_))), "{waited:?}");
    // Every later wait too, timed or not.
    assert!(matches!(
        listener.wait_for_events(PATIENCE).await,
        Err(Error::Unavailable(_))
    ));
    assert!(matches!(
        listener.notified().await,
        Err(Error::Unavailable(_))
    ));
}

/// The examples, as a user runs them: the producer sends, the consumer acks them all,
/// subscribe follows the live stream and resumes.
#[tokio::test(flavor = "multi_thread")]
async fn the_producer_and_consumer_examples_run() {
    let (_, config) = client_for("client_examples").await;
    let url = triggers_tests::database_url(&config);
    let examples =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/examples");
    let run_with = |name: &str, args: &[&str]| {
        let output = std::process::Command::new(examples.join(name))
            .args(args)
            .env("DATABASE_URL", &url)
            .output()
            .unwrap_or_else(|e| panic!("{name}: {e} (cargo build -p triggers-client --examples)"));
        assert!(
            output.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let run = |name: &str, arg: &str| run_with(name, &[arg]);
    let lines_with = |text: &str, needle: &str| text.lines().filter(|l| l.contains(needle)).count();
    let produced = run("producer", "5");
    assert_eq!(lines_with(&produced, "duplicate=false"), 5, "{produced}");
    let again = run("producer", "5");
    assert_eq!(lines_with(&again, "duplicate=true"), 5, "{again}");
    let consumed = run("consumer", "5");
    assert_eq!(lines_with(&consumed, "acked "), 5, "{consumed}");
    assert!(consumed.contains("done: 5 acked"), "{consumed}");
    // The live stream from the start: the five stored events, each with its position.
    let followed = run_with("subscribe", &["5", "0"]);
    assert_eq!(followed.lines().count(), 5, "{followed}");
    let positions: Vec<i64> = followed
        .lines()
        .map(|l| l.split(' ').next().unwrap().parse().unwrap())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{followed}");
    // Resumed after the third: the last two.
    let resumed = run_with("subscribe", &["2", &positions[2].to_string()]);
    assert_eq!(
        resumed.lines().collect::<Vec<_>>(),
        followed.lines().skip(3).collect::<Vec<_>>()
    );
}

/// The debug flags are listed twice, once per language: `DebugFlag::ALL` in the client
/// (which the server parses and documents from) and `triggers._debug_flags()` in the
/// extension. They must be the same list.
#[tokio::test(flavor = "multi_thread")]
async fn the_clients_debug_flags_are_the_extensions() {
    let config = test_database("debug_flags").await;
    let db = connect(&config).await;
    let sql: Vec<String> = db
        .query_one("SELECT triggers._debug_flags()", &[])
        .await
        .unwrap()
        .get(0);
    let rust: Vec<String> = DebugFlag::ALL
        .iter()
        .map(|f| f.as_str().to_string())
        .collect();
    assert_eq!(rust, sql);
}
