//! The processing core from outside, over separate connections: concurrent workers, a
//! backend killed mid-batch, the metrics invariant under a random mix of operations,
//! tenant isolation, the enqueue wake-up and its throttle, and vacuum of the queue.
//! (The worker loop has its own file, worker.rs; the queue under sustained load is a
//! benchmark, `triggers-soak`.)
//! (Long: the multi-connection scenarios share their drain and metrics-check helpers.)

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_postgres::Client;
use triggers_tests::{
    connect, scalar, test_database, wait_for, wait_until, HungWorker, Notifications,
};

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

    // A worker claims and stores a batch, then hangs before committing; it is killed.
    HungWorker::start(&config, &admin, 100)
        .await
        .kill(&admin)
        .await;

    // Its work rolled back, leaving its messages untouched: claimable again as soon as
    // the dying backend has released its row locks (which may come a moment after
    // its client saw the connection close). The next claim counts the attempt that died
    // and hides those messages for visibility_timeout_s (30 s); this session's clock
    // moves a minute between drains, so that passes at once. Then each is stored once.
    admin
        .batch_execute(
            "SET triggers.test_clock = on; SELECT set_config('triggers.now', (clock_timestamp() + interval '1 hour')::text, false)",
        )
        .await
        .unwrap();
    let stored = std::cell::Cell::new(drain(&admin, 100).await);
    wait_for("300 stored", || async {
        if stored.get() < 300 {
            admin
                .batch_execute(
                    "SET triggers.test_clock = on; SELECT set_config('triggers.now', (triggers._now() + interval '1 minute')::text, false)",
                )
                .await
                .unwrap();
            stored.set(stored.get() + drain(&admin, 100).await);
        }
        match stored.get() {
            300.. => Ok(()),
            n => Err(format!("{n} of 300")),
        }
    })
    .await;
    assert_eq!(stored.get(), 300);
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
    assert_eq!(
        scalar(
            &admin,
            "SELECT count(*) FROM triggers.events WHERE retry_count = 1"
        )
        .await,
        100,
        "the attempt that died is counted for each message of its batch"
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
    // Drain everything (retries included: every backoff ends now) and check once more.
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
    let config = test_database("notify").await;
    let mut notifications = Notifications::listen(&config).await;
    let producer = connect(&config).await;
    let other = connect(&config).await;
    producer
        .batch_execute("BEGIN; SELECT triggers.enqueue(payload => '{}');")
        .await
        .unwrap();
    let seen = notifications.until_marker(&other).await;
    assert!(seen.is_empty(), "no wake-up before commit: {seen:?}");
    producer.batch_execute("COMMIT").await.unwrap();
    assert_eq!(
        notifications.until_marker(&other).await,
        [("triggers_events".to_string(), String::new())],
        "one wake-up at commit"
    );
}

/// `triggers._wake`'s throttle, with the producer session's time set through
/// `triggers.now`: a session notifies at most once per `notify_throttle_ms`, counted
/// from its last notification. Each enqueue is its own transaction; the marker after
/// it collects exactly the notifications committed before it.
#[tokio::test(flavor = "multi_thread")]
async fn a_session_notifies_at_most_once_per_notify_throttle_ms() {
    let config = test_database("notify_throttle").await;
    let mut notifications = Notifications::listen(&config).await;
    let producer = connect(&config).await;
    producer
        .batch_execute("UPDATE triggers.config SET notify_throttle_ms = 100")
        .await
        .unwrap();
    for (at, notifies) in [
        ("00:00:00", true),
        ("00:00:00.05", false),
        ("00:00:00.1", true),
        ("00:00:00.199", false),
        ("00:00:00.2", true),
    ] {
        producer
            .batch_execute(&format!(
                "SET triggers.test_clock = on; SET triggers.now = '2030-01-01 {at}+00'; SELECT triggers.enqueue(payload => '{{}}')"
            ))
            .await
            .unwrap();
        let seen = notifications.until_marker(&producer).await;
        assert_eq!(
            seen.len(),
            usize::from(notifies),
            "enqueue at t0 + {at}: {seen:?}"
        );
    }
}

/// SPEC §4.6: every finished message is a dead row at the head of the queue that each
/// claim walks past until vacuum removes it. The embedded cluster (which these tests
/// run on) has autovacuum look every second, not every minute, and autovacuum alone
/// removes the dead rows the drain left. (How the queue's size holds up under
/// sustained load is a benchmark: `triggers-soak`.)
#[tokio::test(flavor = "multi_thread")]
async fn autovacuum_looks_every_second_and_removes_finished_messages() {
    let config = test_database("vacuum").await;
    let client = connect(&config).await;
    let naptime: String = client
        .query_one("SHOW autovacuum_naptime", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(naptime, "1s");
    enqueue_many(&client, 2000, "t").await;
    assert_eq!(drain(&client, 100).await, 2000);
    let vacuumed =
        "SELECT (autovacuum_count > 0 AND n_dead_tup = 0)::int::bigint FROM pg_stat_user_tables \
                    WHERE relid = 'pgmq.q_triggers_events'::regclass";
    wait_until("autovacuum removed the queue's dead rows", || async {
        scalar(&client, vacuumed).await == 1
    })
    .await;
}
