//! The processing core from outside, over separate connections: concurrent workers, a
//! backend killed mid-batch, the metrics invariant under a random mix of operations,
//! tenant isolation, and the enqueue wake-up.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_postgres::Client;
use triggers_tests::{connect, test_database};

async fn enqueue_many(client: &Client, n: usize, tenant: &str) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let events: Vec<serde_json::Value> = chunk
            .iter()
            .map(|i| serde_json::json!({"payload": {"i": i}}))
            .collect();
        client
            .query(
                "SELECT triggers.enqueue_batch($1, $2)",
                &[&serde_json::Value::from(events), &tenant],
            )
            .await
            .expect("enqueue_batch");
    }
}

/// Runs process_batch until the queue is drained (two empty reads in a row).
async fn drain(client: &Client, batch: i32) -> i64 {
    let mut stored = 0i64;
    let mut empty = 0;
    while empty < 2 {
        let row = client
            .query_one(
                "SELECT read, stored FROM triggers.process_batch($1)",
                &[&batch],
            )
            .await
            .expect("process_batch");
        let read: i32 = row.get(0);
        stored += i64::from(row.get::<_, i32>(1));
        empty = if read == 0 { empty + 1 } else { 0 };
    }
    stored
}

async fn scalar(client: &Client, sql: &str) -> i64 {
    client
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

/// SPEC §5: metrics equal count(*) of events by status, exactly.
async fn assert_metrics_match_rows(client: &Client, context: &str) {
    let row = client
        .query_one(
            "SELECT (m->>'pending')::bigint, (m->>'delivered')::bigint, (m->>'failed')::bigint,
                    (SELECT count(*) FROM triggers.events WHERE status = 'pending'),
                    (SELECT count(*) FROM triggers.events WHERE status = 'delivered'),
                    (SELECT count(*) FROM triggers.events WHERE status = 'failed')
               FROM triggers.metrics() m",
            &[],
        )
        .await
        .unwrap();
    let metrics: (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    let rows: (i64, i64, i64) = (row.get(3), row.get(4), row.get(5));
    assert_eq!(
        metrics, rows,
        "metrics (pending, delivered, failed) vs count(*) after {context}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_concurrent_workers_never_store_an_event_twice_or_lose_one() {
    let config = test_database("two_workers").await;
    let producer = connect(&config).await;
    enqueue_many(&producer, 3000, "default").await;
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let config = config.clone();
            tokio::spawn(async move { drain(&connect(&config).await, 25).await })
        })
        .collect();
    let mut stored = 0;
    for w in workers {
        stored += w.await.unwrap();
    }
    assert_eq!(stored, 3000, "each message stored by exactly one worker");
    assert_eq!(
        scalar(&producer, "SELECT count(*) FROM triggers.events").await,
        3000
    );
    assert_eq!(
        scalar(
            &producer,
            "SELECT count(DISTINCT payload->>'i') FROM triggers.events"
        )
        .await,
        3000
    );
    assert_eq!(
        scalar(&producer, "SELECT count(*) FROM pgmq.q_triggers_events").await,
        0
    );
    assert_metrics_match_rows(&producer, "two workers").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_killed_mid_batch_loses_nothing() {
    let config = test_database("killed_worker").await;
    let admin = connect(&config).await;
    enqueue_many(&admin, 300, "default").await;
    admin
        .batch_execute("UPDATE triggers.config SET visibility_timeout_s = 1")
        .await
        .unwrap();

    let victim = connect(&config).await;
    let pid: i32 = victim
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    // The victim claims and stores a batch, then hangs before committing.
    let hung = tokio::spawn(async move {
        victim
            .batch_execute(
                "BEGIN; SELECT * FROM triggers.process_batch(100); SELECT pg_sleep(60); COMMIT;",
            )
            .await
    });
    // Wait until its batch is claimed (read_ct set on 100 messages), then kill it.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let waiting: i64 = scalar(
            &admin,
            &format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {pid} AND query LIKE '%pg_sleep%' AND wait_event = 'PgSleep'"),
        )
        .await;
        if waiting == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "victim never reached pg_sleep"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let killed: bool = admin
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap()
        .get(0);
    assert!(killed);
    assert!(
        hung.await.unwrap().is_err(),
        "the victim's transaction died"
    );

    // Its work rolled back; after the visibility timeout everything is stored once.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let stored = drain(&admin, 100).await;
    assert_eq!(stored, 300);
    assert_eq!(
        scalar(&admin, "SELECT count(*) FROM triggers.events").await,
        300
    );
    assert_eq!(
        scalar(
            &admin,
            "SELECT count(DISTINCT event_id) FROM triggers.events"
        )
        .await,
        300
    );
    assert_metrics_match_rows(&admin, "a killed worker").await;
}

/// One random operation of the public API.
async fn random_op(client: &Client, rng: &mut StdRng, tenant: &str) -> String {
    let op = rng.random_range(0..8);
    let result = match op {
        0 | 1 => {
            let debug = ["", "", "", "processing_error", "dlq_routing"][rng.random_range(0..5)];
            let debug = (!debug.is_empty()).then_some(debug);
            let key = rng
                .random_bool(0.3)
                .then(|| format!("k{}", rng.random_range(0..20)));
            client
                .query(
                    "SELECT triggers.enqueue(payload => '{}'::jsonb, tenant => $1, idempotency_key => $2, debug => $3)",
                    &[&tenant, &key, &debug],
                )
                .await
                .map(|_| ())
        }
        2 => {
            let events = serde_json::json!([{"payload": {"b": 1}}, {"payload": {"b": 2}, "debug": "processing_error"}]);
            client
                .query("SELECT triggers.enqueue_batch($1, $2)", &[&events, &tenant])
                .await
                .map(|_| ())
        }
        3 | 4 => client
            .query("SELECT * FROM triggers.process_batch(7)", &[])
            .await
            .map(|_| ()),
        5 => client
            .query(
                "SELECT triggers.ack(event_id, tenant) FROM triggers.events
                      WHERE tenant = $1 AND status = 'pending' ORDER BY random() LIMIT 1",
                &[&tenant],
            )
            .await
            .map(|_| ()),
        6 => {
            let r = client
                .query(
                    "SELECT triggers.retry(event_id, tenant) FROM triggers.events
                      WHERE tenant = $1 AND status = 'failed' ORDER BY random() LIMIT 1",
                    &[&tenant],
                )
                .await;
            // Exhausted retries, or an event another connection just re-processed, are
            // expected answers, not failures of the test.
            match r {
                Err(e)
                    if e.code()
                        .is_some_and(|c| c.code() == "TG008" || c.code() == "TG007") =>
                {
                    Ok(())
                }
                other => other.map(|_| ()),
            }
        }
        _ => client
            .query("SELECT triggers.redrive($1, 3)", &[&tenant])
            .await
            .map(|_| ()),
    };
    result.unwrap_or_else(|e| panic!("operation {op} failed: {e:?}"));
    format!("op {op}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_equal_row_counts_after_a_random_mix_of_operations() {
    let config = test_database("metrics_invariant").await;
    let check = connect(&config).await;
    check
        .batch_execute(
            "UPDATE triggers.config SET max_retries = 1, backoff_base_ms = 1, backoff_cap_ms = 5",
        )
        .await
        .unwrap();
    for seed in 0..4u64 {
        // Three connections at once, each its own random sequence, then a quiescent check.
        let tasks: Vec<_> = (0..3u64)
            .map(|c| {
                let config = config.clone();
                tokio::spawn(async move {
                    let client = connect(&config).await;
                    let mut rng = StdRng::seed_from_u64(seed * 10 + c);
                    let tenant = ["a", "b"][(c % 2) as usize];
                    for _ in 0..40 {
                        random_op(&client, &mut rng, tenant).await;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_metrics_match_rows(&check, &format!("seed {seed}")).await;
        // Per tenant too.
        for tenant in ["a", "b"] {
            let row = check
                .query_one(
                    "SELECT (triggers.metrics($1)->>'total')::bigint, (SELECT count(*) FROM triggers.events WHERE tenant = $1)",
                    &[&tenant],
                )
                .await
                .unwrap();
            assert_eq!(
                row.get::<_, i64>(0),
                row.get::<_, i64>(1),
                "tenant {tenant}, seed {seed}"
            );
        }
    }
    // Drain everything (retries included) and check once more.
    tokio::time::sleep(Duration::from_millis(20)).await;
    check
        .batch_execute("UPDATE pgmq.q_triggers_events SET vt = now()")
        .await
        .unwrap();
    drain(&check, 100).await;
    assert_metrics_match_rows(&check, "the final drain").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_cannot_read_ack_or_retry_another_tenants_events() {
    let config = test_database("tenants").await;
    let client = connect(&config).await;
    let id: uuid::Uuid = client
        .query_one(
            "SELECT triggers.enqueue(payload => '{}', tenant => 'b', debug => 'dlq_routing')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    client
        .query("SELECT * FROM triggers.process_batch()", &[])
        .await
        .unwrap();
    for sql in [
        "SELECT * FROM triggers.get_event($1, 'a')",
        "SELECT * FROM triggers.ack($1, 'a')",
        "SELECT triggers.retry($1, 'a')",
    ] {
        let err = client.query(sql, &[&id]).await.expect_err(sql);
        assert_eq!(
            err.code().map(|c| c.code()),
            Some("TG006"),
            "{sql}: {err:?}"
        );
    }
    let seen: i64 = scalar(&client, "SELECT count(*) FROM triggers.inbox('a')").await;
    assert_eq!(seen, 0);
    let dlq: i64 = scalar(&client, "SELECT count(*) FROM triggers.dead_letters('a')").await;
    assert_eq!(dlq, 0);
    let moved: i32 = client
        .query_one("SELECT triggers.redrive('a')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(moved, 0);
    let total: i64 = scalar(&client, "SELECT (triggers.metrics('a')->>'total')::bigint").await;
    assert_eq!(total, 0);
    // And b still sees its own.
    let status: String = client
        .query_one("SELECT status FROM triggers.get_event($1, 'b')", &[&id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "failed");
}

#[tokio::test(flavor = "multi_thread")]
async fn enqueue_notifies_listening_workers_at_commit() {
    use futures_util::StreamExt;
    let config = test_database("notify").await;
    let (listener, mut connection) = config.connect(tokio_postgres::NoTls).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let tokio_postgres::AsyncMessage::Notification(n) = message {
                let _ = tx.send(n.channel().to_string());
            }
        }
    });
    listener
        .batch_execute("LISTEN triggers_events")
        .await
        .unwrap();
    let producer = connect(&config).await;
    producer
        .batch_execute("BEGIN; SELECT triggers.enqueue(payload => '{}');")
        .await
        .unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(200), rx.recv())
            .await
            .is_err(),
        "no wake-up before commit"
    );
    producer.batch_execute("COMMIT").await.unwrap();
    let channel = tokio::time::timeout(Duration::from_secs(2), rx.recv())
        .await
        .expect("woken")
        .unwrap();
    assert_eq!(channel, "triggers_events");
}

/// SPEC §4.6: every finished message is a dead row at the head of the queue that each
/// claim walks past until vacuum removes it; the embedded cluster's autovacuum looks
/// every second, so they are gone within seconds, not a minute.
#[tokio::test(flavor = "multi_thread")]
async fn finished_messages_are_vacuumed_away_within_seconds() {
    let config = test_database("vacuum").await;
    let client = connect(&config).await;
    enqueue_many(&client, 2000, "t").await;
    assert_eq!(drain(&client, 100).await, 2000);
    let vacuumed =
        "SELECT (autovacuum_count > 0 AND n_dead_tup = 0)::int::bigint FROM pg_stat_user_tables \
                    WHERE relid = 'pgmq.q_triggers_events'::regclass";
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while scalar(&client, vacuumed).await == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the queue's dead rows are still there after 15 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Stored events of tenant `t`, from the table itself.
async fn stored(client: &Client) -> i64 {
    scalar(
        client,
        "SELECT count(*) FROM triggers.events WHERE tenant = 't'",
    )
    .await
}

/// Polls until `n` events are stored; returns when that was seen.
async fn until_stored(client: &Client, n: i64) -> std::time::Instant {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while stored(client).await < n {
        assert!(
            std::time::Instant::now() < deadline,
            "{n} events never stored"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    std::time::Instant::now()
}

/// A server worker starts the next batch at once after a full one (a backlog) and
/// `gather` after the start of a partial one (a trickle), so batches grow with the load.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_gathers_after_a_partial_batch_but_not_after_a_full_one() {
    use triggers_server::worker::{self, WorkerOptions};
    let config = test_database("gather").await;
    let sql = connect(&config).await;
    let gather = Duration::from_millis(400);
    let options = WorkerOptions {
        gather,
        ..WorkerOptions::default()
    };
    // A backlog of 20 full batches: with a pause after each it would take 8 s.
    enqueue_many(&sql, 2000, "t").await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let client = triggers_client::Client::from_config(config.clone(), 2).unwrap();
    let started = std::time::Instant::now();
    let running = tokio::spawn(worker::run(0, client, options, stopped));
    let drained = until_stored(&sql, 2000).await - started;
    assert!(
        drained < gather * 5,
        "full batches back to back: {drained:?}"
    );

    // A trickle: the batch after a partial one waits out the gather time.
    enqueue_many(&sql, 10, "t").await;
    let first = until_stored(&sql, 2010).await;
    enqueue_many(&sql, 10, "t").await;
    let second = until_stored(&sql, 2020).await - first;
    assert!(
        second >= gather / 2,
        "the next batch came {second:?} after a partial one"
    );
    stop.send(true).unwrap();
    running.await.unwrap();
}

/// SPEC §4.6: under sustained load the queue stays small. Every finished message is a
/// dead row until vacuum; if vacuum fell behind, the queue's table and indexes would
/// grow with every event processed. Here 10,000 events/s flow through for 20 s and the
/// queue's size must level off instead of growing with the total.
#[tokio::test(flavor = "multi_thread")]
async fn the_queue_stays_small_under_sustained_load() {
    let config = test_database("soak").await;
    let producer = connect(&config).await;
    let consumer = connect(&config).await;
    let sampler = connect(&config).await;
    let run_for = Duration::from_secs(20);
    let started = std::time::Instant::now();

    let produce = tokio::spawn(async move {
        let mut sent = 0usize;
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        while started.elapsed() < run_for {
            tick.tick().await;
            enqueue_many(&producer, 100, "t").await;
            sent += 100;
        }
        sent
    });
    let consume = tokio::spawn(async move {
        let mut stored = 0i64;
        while started.elapsed() < run_for + Duration::from_secs(5) {
            let row = consumer
                .query_one("SELECT read, stored FROM triggers.process_batch(500)", &[])
                .await
                .expect("process_batch");
            stored += i64::from(row.get::<_, i32>(1));
            if row.get::<_, i32>(0) == 0 {
                if started.elapsed() > run_for {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        stored
    });
    let size = "SELECT pg_total_relation_size('pgmq.q_triggers_events')";
    let mut samples = Vec::new();
    while started.elapsed() < run_for {
        tokio::time::sleep(Duration::from_secs(1)).await;
        samples.push(scalar(&sampler, size).await);
    }
    let sent = produce.await.unwrap();
    // The consumer may have stopped just before the producer's last batch committed.
    let stored = consume.await.unwrap() + drain(&sampler, 500).await;
    assert_eq!(stored, sent as i64, "every event sent was stored");
    assert!(
        sent >= 100_000,
        "a sustained load: {sent} events in {run_for:?}"
    );

    let third = samples.len() / 3;
    let early = *samples[..third].iter().max().unwrap();
    let late = *samples[2 * third..].iter().max().unwrap();
    let mib = |b: i64| b as f64 / 1048576.0;
    println!(
        "queue size over {} s, {sent} events: {:?} MiB",
        samples.len(),
        samples
            .iter()
            .map(|b| (mib(*b) * 10.0).round() / 10.0)
            .collect::<Vec<_>>()
    );
    // With autovacuum's default one-minute naptime the queue grew steadily to 64 MiB here
    // (measured); with the embedded cluster's 1 s it levels off at about 4 MiB.
    assert!(
        late <= early * 2 && mib(late) < 16.0,
        "the queue grew with the load: {:.1} MiB in the first third, {:.1} MiB in the last",
        mib(early),
        mib(late)
    );
}
