//! The live stream (SPEC §10): `triggers.stored` and `Client::subscribe` over SQL, and
//! `GET /inbox/stream` of a real `triggers serve` read by a real SSE client. Resuming
//! never skips or repeats an event, even when transactions commit out of order.

use std::collections::HashSet;
use std::time::Duration;

use futures_util::future::join_all;
use futures_util::StreamExt;
use rand::Rng;
use serde_json::{json, Value};
use tokio_postgres::Client as Pg;
use triggers_client::{Client, LiveFilter, NewEvent, Position};
use triggers_tests::sse::Sse;
use triggers_tests::{
    column, connect, database_url, enqueue_many, serve_test_database, test_database, triggers,
    Server, PATIENCE,
};

/// The event ids of a tenant's stored events in position order: what a subscriber
/// must have received.
async fn stored_in_order(db: &Pg, tenant: &str) -> Vec<String> {
    column(
        db,
        "SELECT event_id::text FROM triggers.events WHERE tenant = $1 AND position IS NOT NULL ORDER BY position",
        &[&tenant],
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_position_taken_by_a_transaction_that_commits_later_is_not_skipped() {
    let config = test_database("live_out_of_order").await;
    let db = connect(&config).await;
    let reader = Client::from_config(config.clone(), 1).unwrap();
    let t = LiveFilter::tenant("t");
    // Transaction A stores ten events (positions 1..10) and stays open.
    enqueue_many(&db, "t", 10, None).await;
    let a = connect(&config).await;
    a.batch_execute("BEGIN; SELECT triggers.process_batch(10)")
        .await
        .unwrap();
    // B stores ten more after it (positions 11..20) and commits first.
    enqueue_many(&db, "t", 10, None).await;
    db.batch_execute("SELECT triggers.process_batch(10)")
        .await
        .unwrap();
    let b_positions: i64 =
        triggers_tests::scalar(&db, "SELECT min(position) FROM triggers.events").await;
    assert_eq!(b_positions, 11, "B's events come after A's positions");
    // A reader that resumed now and took B's events would go on from 20 and never see
    // 1..10: the stream holds B's back while A may still commit.
    assert_eq!(
        reader.stored(&t, Position(0), 100, None).await.unwrap(),
        vec![]
    );
    a.batch_execute("COMMIT").await.unwrap();
    let got: Vec<i64> = reader
        .stored(&t, Position(0), 100, None)
        .await
        .unwrap()
        .iter()
        .map(|e| e.position.0)
        .collect();
    assert_eq!(got, (1..=20).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread")]
async fn subscribe_follows_the_stream_and_resumes_after_the_last_event_it_yielded() {
    let config = test_database("live_subscribe").await;
    let db = connect(&config).await;
    let client = Client::from_config(config.clone(), 2).unwrap();
    let process = || async { while client.process_batch(None, None).await.unwrap().read > 0 {} };
    enqueue_many(&db, "t", 5, None).await;
    enqueue_many(&db, "other", 5, None).await;
    process().await;
    // From the start: the tenant's five, not the other tenant's.
    let first: Vec<_> = client
        .subscribe(LiveFilter::tenant("t"), Some(Position(0)))
        .take(5)
        .map(|e| e.unwrap())
        .collect()
        .await;
    assert!(first.iter().all(|e| e.tenant == "t"));
    // Resumed after the third: the fourth and fifth, then what is stored later.
    let resumed = client.subscribe(LiveFilter::tenant("t"), Some(first[2].position));
    futures_util::pin_mut!(resumed);
    let next: Vec<_> = (&mut resumed)
        .take(2)
        .map(|e| e.unwrap().event.event_id)
        .collect()
        .await;
    assert_eq!(next, [first[3].event.event_id, first[4].event.event_id]);
    client
        .enqueue(&NewEvent::new(json!({"later": true})).tenant("t"))
        .await
        .unwrap();
    process().await;
    let later = tokio::time::timeout(PATIENCE, resumed.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(later.event.payload, json!({"later": true}));
    // A filter the database refuses ends the stream with its error.
    let refused: Vec<_> = client
        .subscribe(LiveFilter::tenant("bad\u{1}tenant"), None)
        .collect()
        .await;
    assert!(matches!(
        refused.as_slice(),
        [Err(triggers_client::Error::InvalidParameter(_))]
    ));
}

/// A server on a test database, with its API key for tenant `t`.
async fn server(
    name: &str,
    workers: &str,
    extra: &[&str],
) -> (Server, String, Pg, tokio_postgres::Config) {
    let args: Vec<&str> = ["--workers", workers]
        .into_iter()
        .chain(extra.iter().copied())
        .collect();
    serve_test_database(name, "t", &args).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_subscriber_that_keeps_disconnecting_gets_every_event_once_in_order() {
    let (server, key, db, config) = server("live_resume", "4", &[]).await;
    const TOTAL: usize = 20_000;
    // 20,000 events queued over time, stored by four workers meanwhile.
    let producer = {
        let db = connect(&config).await;
        tokio::spawn(async move {
            for _ in 0..40 {
                enqueue_many(&db, "t", (TOTAL / 40) as i64, None).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let url = format!("{}/inbox/stream", server.url);
    let mut received: Vec<String> = Vec::new();
    let mut last = "0".to_string();
    let mut disconnects = 0;
    while received.len() < TOTAL {
        let mut sse = Sse::connect(&url, &key, Some(&last), &[]).await;
        assert_eq!(sse.status, 200);
        // Read a random number of events, then hang up mid-stream.
        let take = rand::rng().random_range(1..=1_200);
        for _ in 0..take {
            let Some(frame) = sse.next_event(PATIENCE).await else {
                break;
            };
            let event: Value = serde_json::from_str(&frame.data).unwrap();
            received.push(event["event_id"].as_str().unwrap().to_string());
            last = frame.id.expect("every event has an id");
            if received.len() == TOTAL {
                break;
            }
        }
        drop(sse);
        disconnects += 1;
    }
    producer.await.unwrap();
    assert!(disconnects >= 20, "only {disconnects} disconnects");
    let unique: HashSet<&String> = received.iter().collect();
    assert_eq!(unique.len(), received.len(), "an event came twice");
    assert_eq!(received, stored_in_order(&db, "t").await);
}

/// Reads `n` events from a stream; returns their payloads' `n`.
async fn read_events(sse: &mut Sse, n: usize) -> Vec<i64> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        let frame = sse.next_event(PATIENCE).await.expect("the stream goes on");
        let event: Value = serde_json::from_str(&frame.data).unwrap();
        got.push(event["payload"]["n"].as_i64().unwrap());
    }
    got
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_subscribers_get_the_same_events_over_the_servers_own_connections() {
    // One tenant, a thousand streams: past the default cap of 20, set no cap here.
    let (server, key, db, _) =
        server("live_fanout", "2", &["--tenant-max-live-streams", "0"]).await;
    let url = format!("{}/inbox/stream", server.url);
    let mut subscribers = Vec::new();
    for _ in 0..1000 {
        let mut sse = Sse::connect(&url, &key, None, &[]).await;
        assert_eq!(sse.status, 200);
        // The first frame (retry) says the subscription is in place.
        assert!(sse.next(PATIENCE).await.unwrap().retry.is_some());
        subscribers.push(sse);
    }
    let connections = || async {
        triggers_tests::scalar(
            &db,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND backend_type = 'client backend'",
        )
        .await
    };
    let before = connections().await;
    enqueue_many(&db, "t", 1000, None).await;
    let readers: Vec<_> = subscribers
        .into_iter()
        .map(|mut sse| tokio::spawn(async move { read_events(&mut sse, 1000).await }))
        .collect();
    let received: Vec<Vec<i64>> = join_all(readers)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    // Each got all of them in the order they were stored (two workers store batches
    // side by side, so not necessarily the order they were sent).
    let stored: Vec<i64> = column(
        &db,
        "SELECT (payload->>'n')::bigint FROM triggers.events ORDER BY position",
        &[],
    )
    .await;
    assert_eq!(stored.len(), 1000);
    assert!(received.iter().all(|r| *r == stored));
    // Subscribers cost no connection of their own: the server's count is what it was
    // (its pool, its workers, the hub's reader and listener, and this test's one).
    assert!(
        connections().await <= before.max(24),
        "{} connections",
        connections().await
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_subscriber_that_never_reads_holds_no_one_back_and_memory_stays_bounded() {
    let (server, key, db, _) = server("live_slow", "2", &[]).await;
    let url = format!("{}/inbox/stream", server.url);
    let mut stalled = Sse::connect(&url, &key, Some("0"), &[]).await;
    assert!(stalled.next(PATIENCE).await.unwrap().retry.is_some());
    let mut reader = Sse::connect(&url, &key, Some("0"), &[]).await;
    let before = server.rss_kib();
    for round in 0..4 {
        enqueue_many(&db, "t", 5_000, None).await;
        let got = read_events(&mut reader, 5_000).await;
        assert_eq!(got.len(), 5_000, "round {round}");
    }
    let grown = server.rss_kib().saturating_sub(before);
    // 20,000 events (about 6 MiB of JSON) went past a subscriber that read none: the
    // server keeps a bounded buffer, not a copy per subscriber.
    assert!(grown < 64 * 1024, "the server grew {grown} KiB");
    // The stalled one still gets every event, in order, once it reads.
    let late = read_events(&mut stalled, 20_000).await;
    assert_eq!(late.len(), 20_000);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_stream_keeps_alive_is_never_compressed_and_keeps_tenants_apart() {
    let (server, key, db, _) = server("live_edges", "2", &["--keep-alive", "1"]).await;
    let other: String = db
        .query_one("SELECT triggers.create_api_key('u', 'other')", &[])
        .await
        .unwrap()
        .get(0);
    let url = format!("{}/inbox/stream", server.url);
    let mut sse = Sse::connect(&url, &key, None, &[("accept-encoding", "gzip")]).await;
    assert_eq!(sse.status, 200);
    assert_eq!(sse.headers["content-type"], "text/event-stream");
    assert!(
        sse.headers.get("content-encoding").is_none(),
        "compressed: {:?}",
        sse.headers
    );
    assert_eq!(sse.headers["x-accel-buffering"], "no");
    assert!(sse.next(PATIENCE).await.unwrap().retry.is_some());
    // Idle: a keep-alive comment comes (every --keep-alive seconds).
    let idle = sse.next(PATIENCE).await.unwrap();
    assert!(
        idle.event.is_none() && !idle.comments.is_empty(),
        "{idle:?}"
    );
    // Tenant u's events never reach tenant t's stream; t's own arrive, unbuffered.
    let mut theirs = Sse::connect(&url, &other, None, &[]).await;
    enqueue_many(&db, "u", 3, None).await;
    enqueue_many(&db, "t", 2, None).await;
    let sorted = |mut v: Vec<i64>| {
        v.sort();
        v
    };
    assert_eq!(sorted(read_events(&mut sse, 2).await), [1, 2]);
    assert_eq!(sorted(read_events(&mut theirs, 3).await), [1, 2, 3]);
    // A position that is not one: 400 INVALID_CURSOR, as JSON.
    for bad in ["abc", "-1", "1.5", "99999999999999999999"] {
        let refused = Sse::connect(&url, &key, Some(bad), &[]).await;
        assert_eq!(refused.status, 400, "{bad}");
    }
    let bad = reqwest::Client::new()
        .get(format!("{url}?after=x"))
        .header("authorization", format!("Bearer {key}"))
        .send()
        .await
        .unwrap();
    let body: Value = bad.json().await.unwrap();
    assert_eq!(body["error"]["code"], "INVALID_CURSOR");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_ends_when_its_key_is_revoked() {
    let (server, key, db, _) = server("live_revoke", "2", &["--keep-alive", "1"]).await;
    let url = format!("{}/inbox/stream", server.url);
    let mut sse = Sse::connect(&url, &key, None, &[]).await;
    assert!(sse.next(PATIENCE).await.unwrap().retry.is_some());
    db.execute("SELECT triggers.revoke_api_key('t', $1)", &[&key])
        .await
        .unwrap();
    // Keep-alives every second until then; then the server ends the stream.
    while sse.next(PATIENCE).await.is_some() {}
}

#[tokio::test(flavor = "multi_thread")]
async fn triggers_tail_prints_each_stored_event_as_a_json_line_with_its_position() {
    let config = test_database("live_tail").await;
    let db = connect(&config).await;
    enqueue_many(&db, "t", 3, None).await;
    db.batch_execute("SELECT triggers.process_batch(100)")
        .await
        .unwrap();
    let mut command = triggers(&["tail", "--tenant", "t", "--from", "0", "--count", "3"]);
    command.env("DATABASE_URL", database_url(&config));
    let output = triggers_tests::run(command, PATIENCE);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines
            .iter()
            .map(|l| l["payload"]["n"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert!(lines
        .iter()
        .all(|l| l["position"].as_i64().is_some() && l["event_id"].is_string()));
    // A bad position is refused before anything runs.
    let mut bad = triggers(&["tail", "--from", "x"]);
    bad.env("DATABASE_URL", database_url(&config));
    let refused = triggers_tests::run(bad, PATIENCE);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not a position"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shutdown_ends_open_streams_instead_of_waiting_for_them() {
    let (mut server, key, _db, _) = server("live_shutdown", "1", &[]).await;
    let mut sse = Sse::connect(&format!("{}/inbox/stream", server.url), &key, None, &[]).await;
    assert!(sse.next(PATIENCE).await.unwrap().retry.is_some());
    // An open stream once held the graceful shutdown until the client went away.
    let status = server.stop_with(libc::SIGTERM, PATIENCE);
    assert!(status.success(), "{status}");
    assert!(sse.next(PATIENCE).await.is_none(), "the stream ended");
}
