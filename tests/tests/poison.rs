//! A poison message: one whose processing kills the backend or trips statement_timeout,
//! neither of which an exception handler sees, so the batch transaction dies with it and
//! writes nothing, not even the attempt. The next claim counts the attempt that died
//! (its messages' row locks name an aborted transaction), and processes those messages
//! one at a time from then on: the poison message reaches the dead-letter queue after
//! max_retries, and the healthy messages of its batch are stored.
//!
//! Each attempt is a new session with its own clock (`triggers.now`), an hour after the
//! last one, so the visibility timeout of a claim that died has always passed: no test
//! here waits on the wall clock.

use tokio_postgres::Client;
use triggers_tests::{connect, scalar, test_database};

/// A trigger that makes the processing of `{"poison": "kill"}` terminate its own
/// backend, and of `{"poison": "slow"}` outlast any statement_timeout. Only for the
/// pending row process_batch stores, not the failed row the dead-letter move writes.
const POISON: &str = "
    CREATE FUNCTION public.poison() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF NEW.status = 'pending' AND NEW.payload->>'poison' = 'kill' THEN
            PERFORM pg_terminate_backend(pg_backend_pid());
            PERFORM pg_sleep(60);
        ELSIF NEW.status = 'pending' AND NEW.payload->>'poison' = 'slow' THEN
            PERFORM pg_sleep(600);
        END IF;
        RETURN NEW;
    END $$;
    CREATE TRIGGER poison BEFORE INSERT ON triggers.events
        FOR EACH ROW EXECUTE FUNCTION public.poison();
    UPDATE triggers.config SET max_retries = 2, visibility_timeout_s = 60;";

/// Enqueues two healthy events, the poison one, and two more, in one batch's reach;
/// returns the poison event's id.
async fn enqueue_around(admin: &Client, poison: &str) -> String {
    admin.batch_execute(POISON).await.expect("poison trigger");
    let mut poison_id = String::new();
    for payload in [
        serde_json::json!({"n": 1}),
        serde_json::json!({"n": 2}),
        serde_json::json!({"poison": poison}),
        serde_json::json!({"n": 3}),
        serde_json::json!({"n": 4}),
    ] {
        let id: uuid::Uuid = admin
            .query_one("SELECT triggers.enqueue($1)", &[&payload])
            .await
            .expect("enqueue")
            .get(0);
        if payload.get("poison").is_some() {
            poison_id = id.to_string();
        }
    }
    poison_id
}

/// Calls process_batch from fresh sessions, each an hour later than the last, until
/// the queue is empty; returns how many calls failed (the backend died or the
/// statement was cancelled). Panics if the queue is still not empty after `max_calls`:
/// a poison message retried forever.
async fn drain_in_fresh_sessions(
    config: &tokio_postgres::Config,
    admin: &Client,
    session_setup: &str,
    max_calls: usize,
) -> usize {
    let mut failed = 0;
    for call in 1..=max_calls {
        if scalar(admin, "SELECT count(*) FROM pgmq.q_triggers_events").await == 0 {
            return failed;
        }
        let worker = connect(config).await;
        worker
            .batch_execute(&format!(
                "SET triggers.test_clock = on; SELECT set_config('triggers.now', ('2100-01-01 00:00:00+00'::timestamptz + {call} * interval '1 hour')::text, false); {session_setup}"
            ))
            .await
            .expect("session setup");
        if worker
            .query_one("SELECT read FROM triggers.process_batch(10)", &[])
            .await
            .is_err()
        {
            failed += 1;
        }
    }
    panic!("the queue is not empty after {max_calls} calls: a poison message is retried forever");
}

async fn assert_poison_dead_lettered_and_the_rest_stored(admin: &Client, poison_id: &str) {
    let poison: (String, i32, String) = {
        let row = admin
            .query_one(
                "SELECT status, retry_count, error_message FROM triggers.events WHERE event_id = $1::text::uuid",
                &[&poison_id],
            )
            .await
            .expect("the poison event is recorded");
        (row.get(0), row.get(1), row.get(2))
    };
    assert_eq!(poison.0, "failed");
    assert_eq!(
        poison.1, 2,
        "three attempts: the first and max_retries = 2 more"
    );
    assert!(
        poison
            .2
            .starts_with("processing did not finish in 3 attempts"),
        "{}",
        poison.2
    );
    assert_eq!(
        scalar(admin, "SELECT count(*) FROM pgmq.q_triggers_events_dlq").await,
        1
    );
    assert_eq!(
        scalar(
            admin,
            "SELECT count(*) FROM triggers.events WHERE status = 'pending' AND payload ? 'n'"
        )
        .await,
        4,
        "every healthy message of the poisoned batch is stored"
    );
    let metrics: serde_json::Value = admin
        .query_one("SELECT triggers.metrics()", &[])
        .await
        .expect("metrics")
        .get(0);
    assert_eq!(metrics["pending"], 4);
    assert_eq!(metrics["failed"], 1);
    assert_eq!(metrics["queue_depth"], 0);
}

#[tokio::test]
async fn a_message_that_kills_the_backend_reaches_the_dlq_after_max_retries() {
    let config = test_database("poison_kill").await;
    let admin = connect(&config).await;
    let poison_id = enqueue_around(&admin, "kill").await;
    let failed = drain_in_fresh_sessions(&config, &admin, "", 30).await;
    assert_eq!(failed, 3, "the backend died on each of the three attempts");
    assert_poison_dead_lettered_and_the_rest_stored(&admin, &poison_id).await;
}

#[tokio::test]
async fn a_message_that_trips_statement_timeout_reaches_the_dlq_after_max_retries() {
    let config = test_database("poison_timeout").await;
    let admin = connect(&config).await;
    let poison_id = enqueue_around(&admin, "slow").await;
    let failed =
        drain_in_fresh_sessions(&config, &admin, "SET statement_timeout = '1s';", 30).await;
    assert_eq!(
        failed, 3,
        "statement_timeout cancelled each of the three attempts"
    );
    assert_poison_dead_lettered_and_the_rest_stored(&admin, &poison_id).await;
}
