//! Ordered streams from outside, over separate connections (SPEC §4.4), each test one
//! way a peer got per-key ordering wrong: a blocked head that starved every other key
//! (pg-boss #849), concurrent workers that ran two jobs of one key at once (Graphile
//! #621), a failed job that went to the back and was overtaken (Graphile #493, in the
//! pg_tests), and a worker killed while it held a stream.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_postgres::Client;
use triggers_tests::{connect, scalar, test_database, HungWorker};

/// Every stream's finished seqs (stored or failed events) are exactly 1..k: describes
/// the streams where they are not (empty when there is none).
async fn broken_streams(client: &Client) -> String {
    client
        .query_one(
            "SELECT coalesce(string_agg(stream || ' finished ' || seqs, '; '), '')
               FROM (SELECT stream, string_agg(seq::text, ',' ORDER BY seq) AS seqs
                       FROM triggers.events WHERE stream IS NOT NULL
                      GROUP BY tenant, stream HAVING count(*) <> max(seq)) x",
            &[],
        )
        .await
        .expect("the prefix check")
        .get(0)
}

/// Logs the order in which events are stored (a sequence, in insert order).
const STORE_LOG: &str = "
    CREATE SEQUENCE public.store_order;
    CREATE TABLE public.store_log (n bigint, stream text, seq bigint);
    CREATE FUNCTION public.log_store() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF NEW.stream IS NOT NULL THEN
            INSERT INTO public.store_log VALUES (nextval('public.store_order'), NEW.stream, NEW.seq);
        END IF;
        RETURN NEW;
    END $$;
    CREATE TRIGGER log_store AFTER INSERT ON triggers.events
        FOR EACH ROW EXECUTE FUNCTION public.log_store();";

/// Makes the store of an event fail while its retry_count is below the payload's
/// "fail_attempts": a failure on the first attempts only.
const FAIL_FIRST: &str = "
    CREATE FUNCTION public.fail_first() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF NEW.status = 'pending' AND NEW.retry_count < coalesce((NEW.payload->>'fail_attempts')::int, 0) THEN
            RAISE EXCEPTION 'injected failure';
        END IF;
        RETURN NEW;
    END $$;
    CREATE TRIGGER fail_first BEFORE INSERT ON triggers.events
        FOR EACH ROW EXECUTE FUNCTION public.fail_first();";

#[tokio::test(flavor = "multi_thread")]
async fn a_stuck_head_never_slows_a_thousand_healthy_streams() {
    let config = test_database("streams_stuck").await;
    let db = connect(&config).await;
    db.batch_execute(
        "UPDATE triggers.config SET max_retries = 100, backoff_base_ms = 3600000, backoff_cap_ms = 3600000",
    )
    .await
    .unwrap();
    // The stuck stream sorts first, and its head is the oldest message of all.
    db.batch_execute(
        "SELECT triggers.enqueue('{}', tenant => 't', stream => 'aaa', debug => 'processing_error');
         SELECT triggers.enqueue('{}', tenant => 't', stream => 'aaa') FROM generate_series(1, 50);",
    )
    .await
    .unwrap();
    let events: Vec<serde_json::Value> = (0..1000)
        .map(|i| serde_json::json!({"payload": {"i": i}, "stream": format!("s{i:04}")}))
        .collect();
    db.execute(
        "SELECT triggers.enqueue_batch($1, 't')",
        &[&serde_json::Value::from(events)],
    )
    .await
    .unwrap();
    // Every call finds a full batch of healthy work while the head backs off: 1,000
    // events in ten calls of 100, plus the one that tried the head.
    let mut calls = 0;
    let mut stored = 0i64;
    while stored < 1000 {
        calls += 1;
        assert!(calls <= 12, "{stored} of 1,000 stored after {calls} calls");
        let row = db
            .query_one("SELECT stored FROM triggers.process_batch(100)", &[])
            .await
            .unwrap();
        stored += i64::from(row.get::<_, i32>(0));
    }
    assert_eq!(
        scalar(
            &db,
            "SELECT count(*) FROM triggers.events WHERE stream = 'aaa'"
        )
        .await,
        0,
        "nothing of the stuck stream overtook its head"
    );
    let state: String = db
        .query_one(
            "SELECT state FROM triggers.streams('t') WHERE stream = 'aaa'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(state, "waiting");
    let metrics: serde_json::Value = db
        .query_one("SELECT triggers.metrics('t')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(metrics["streams_waiting"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_concurrent_workers_keep_every_stream_in_order() {
    let config = test_database("streams_concurrent").await;
    let db = connect(&config).await;
    db.batch_execute(STORE_LOG).await.unwrap();
    db.batch_execute(FAIL_FIRST).await.unwrap();
    db.batch_execute(
        "UPDATE triggers.config SET max_retries = 2, backoff_base_ms = 1, backoff_cap_ms = 5",
    )
    .await
    .unwrap();
    // 50 streams x 200 events, in random order across streams; some fail every
    // attempt (to the DLQ, and the stream continues), some fail their first attempt.
    let mut rng = StdRng::seed_from_u64(20261124);
    let mut events = Vec::new();
    for _ in 0..10_000 {
        let stream = format!("s{:02}", rng.random_range(0..50));
        let mut event = serde_json::json!({"payload": {}, "stream": stream});
        match rng.random_range(0..100) {
            0..=1 => event["debug"] = "processing_error".into(),
            2..=6 => event["payload"]["fail_attempts"] = 1.into(),
            _ => {}
        }
        events.push(event);
    }
    for chunk in events.chunks(1000) {
        db.execute(
            "SELECT triggers.enqueue_batch($1, 't')",
            &[&serde_json::Value::from(chunk.to_vec())],
        )
        .await
        .unwrap();
    }
    let done = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (config, done) = (config.clone(), done.clone());
            tokio::spawn(async move {
                let worker = connect(&config).await;
                while !done.load(Ordering::Relaxed) {
                    worker
                        .query_one("SELECT read FROM triggers.process_batch(50)", &[])
                        .await
                        .expect("process_batch");
                }
            })
        })
        .collect();
    // The prefix invariant, sampled from a separate connection while they run.
    let mut samples = 0;
    loop {
        let broken = broken_streams(&db).await;
        assert!(
            broken.is_empty(),
            "a later seq finished before an earlier one: {broken}"
        );
        samples += 1;
        let queued = scalar(&db, "SELECT count(*) FROM pgmq.q_triggers_events").await;
        if queued == 0 && samples >= 50 {
            break;
        }
        assert!(samples < 100_000, "the queue did not drain");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    done.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    assert_eq!(broken_streams(&db).await, "");
    assert_eq!(
        scalar(&db, "SELECT count(*) FROM triggers.events").await,
        10_000
    );
    assert_eq!(
        scalar(
            &db,
            "SELECT count(DISTINCT (stream, seq)) FROM public.store_log"
        )
        .await,
        10_000,
        "every event stored once"
    );
    // In the order of storing, each stream's seqs only go up.
    assert_eq!(
        scalar(
            &db,
            "SELECT count(*) FROM (SELECT seq < lag(seq) OVER (PARTITION BY stream ORDER BY n) AS back
                                     FROM public.store_log) x WHERE back"
        )
        .await,
        0,
        "a stream's events were stored out of seq order"
    );
    assert_eq!(
        scalar(&db, "SELECT count(*) FROM triggers.stream_progress WHERE done_seq <> (SELECT last_seq FROM triggers.streams s WHERE s.tenant = stream_progress.tenant AND s.stream = stream_progress.stream)").await,
        0,
        "every stream finished"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_killed_while_holding_a_stream_loses_and_reorders_nothing() {
    let config = test_database("streams_killed").await;
    let admin = connect(&config).await;
    admin.batch_execute(STORE_LOG).await.unwrap();
    admin
        .batch_execute(
            "SELECT triggers.enqueue(jsonb_build_object('n', n), tenant => 't', stream => 'only')
               FROM generate_series(1, 300) n",
        )
        .await
        .unwrap();
    let hung = HungWorker::start(&config, &admin, 100).await;
    // While it holds the stream, nobody else takes any of it.
    let read: i32 = admin
        .query_one("SELECT read FROM triggers.process_batch(100)", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(read, 0, "a second worker took a run of a held stream");
    hung.kill(&admin).await;
    // The clock moves a minute per drain, past the visibility timeout of the claim
    // that died; the stream finishes, in order, each event once.
    let mut stored = 0i64;
    for _ in 0..1000 {
        admin
            .batch_execute("SET triggers.test_clock = on; SELECT set_config('triggers.now', (triggers._now() + interval '1 minute')::text, false)")
            .await
            .unwrap();
        let row = admin
            .query_one("SELECT stored FROM triggers.process_batch(100)", &[])
            .await
            .unwrap();
        stored += i64::from(row.get::<_, i32>(0));
        if stored == 300 {
            break;
        }
    }
    assert_eq!(stored, 300);
    assert_eq!(broken_streams(&admin).await, "");
    assert_eq!(
        scalar(
            &admin,
            "SELECT count(*) FROM (SELECT seq < lag(seq) OVER (ORDER BY n) AS back FROM public.store_log) x WHERE back"
        )
        .await,
        0
    );
    assert_eq!(
        scalar(&admin, "SELECT count(DISTINCT seq) FROM public.store_log").await,
        300
    );
}
