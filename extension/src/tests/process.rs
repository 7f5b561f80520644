//! `#[pg_test]`s of sql/process.sql: the workflow, retries, backoff and the dead-letter move.

#[pgrx::pg_schema]
mod tests {
    use crate::test_support::{
        advance_clock, assert_error, count, fast_retries, freeze_clock, one, run,
    };
    use pgrx::prelude::*;

    #[pg_test]
    fn process_batch_stores_validates_and_removes() {
        run("SELECT triggers.enqueue(payload => '{\"n\": 1}', metadata => '{\"m\": true}', idempotency_key => 'x')");
        run("SELECT triggers.enqueue(payload => '{\"n\": 2}', stream => 's')");
        let got: String = one("SELECT format('%s %s %s %s', read, stored, retried, dead_lettered) FROM triggers.process_batch()");
        assert_eq!(got, "2 2 0 0");
        assert_eq!(
            count("SELECT count(*) FROM pgmq.q_triggers_events"),
            0,
            "removed from the queue"
        );
        assert_eq!(count("SELECT count(*) FROM triggers.events WHERE status = 'pending' AND processed_at IS NOT NULL"), 2);
        let keyed: String = one("SELECT format('%s %s', metadata, retry_count) FROM triggers.events WHERE idempotency_key = 'x'");
        assert_eq!(keyed, "{\"m\": true} 0");
        let streamed: String = one(
            "SELECT format('%s %s', stream, seq) FROM triggers.events WHERE stream IS NOT NULL",
        );
        assert_eq!(streamed, "s 1");
        let empty: String =
            one("SELECT format('%s %s', read, stored) FROM triggers.process_batch()");
        assert_eq!(empty, "0 0");
    }
    #[pg_test]
    fn payload_and_metadata_are_stored_exactly_nulls_included() {
        run("SELECT triggers.enqueue(payload => '{\"a\": null, \"b\": {\"c\": null}}', metadata => '{\"m\": null}')");
        run("SELECT * FROM triggers.process_batch()");
        let got: String = one("SELECT payload::text || ' ' || metadata::text FROM triggers.events");
        assert_eq!(got, "{\"a\": null, \"b\": {\"c\": null}} {\"m\": null}");
    }
    #[pg_test]
    fn process_batch_rejects_bad_arguments() {
        assert_error(
            "SELECT * FROM triggers.process_batch(0)",
            "TG004",
            "batch_size must be 1 to 10000",
        );
        assert_error(
            "SELECT * FROM triggers.process_batch(10, 0)",
            "TG004",
            "visibility_timeout must be",
        );
    }
    #[pg_test]
    fn a_message_failing_every_attempt_lands_in_the_dlq_while_the_rest_is_stored() {
        fast_retries(2);
        freeze_clock();
        run("SELECT triggers.enqueue(payload => '{\"ok\": 1}')");
        let bad: String = one(
            "SELECT triggers.enqueue(payload => '{\"bad\": 1}', debug => 'processing_error')::text",
        );
        run("SELECT triggers.enqueue(payload => '{\"ok\": 2}')");
        let first: String = one("SELECT format('%s %s %s %s', read, stored, retried, dead_lettered) FROM triggers.process_batch()");
        assert_eq!(first, "3 2 1 0");
        for attempt in 2..=3 {
            advance_clock(1);
            let got: String = one("SELECT format('%s %s %s %s', read, stored, retried, dead_lettered) FROM triggers.process_batch()");
            let want = if attempt <= 2 { "1 0 1 0" } else { "1 0 0 1" };
            assert_eq!(got, want, "attempt {attempt}");
        }
        assert_eq!(count("SELECT count(*) FROM pgmq.q_triggers_events"), 0);
        assert_eq!(count("SELECT count(*) FROM pgmq.q_triggers_events_dlq"), 1);
        let row: String = one(&format!(
            "SELECT format('%s %s %s', status, retry_count, error_message) FROM triggers.events WHERE event_id = '{bad}'"
        ));
        assert_eq!(
            row,
            "failed 2 processing failed (debug flag processing_error)"
        );
        assert_eq!(
            count("SELECT count(*) FROM triggers.events WHERE status = 'pending'"),
            2
        );
    }
    #[pg_test]
    fn backoff_doubles_up_to_the_cap() {
        run("UPDATE triggers.config SET max_retries = 5, backoff_base_ms = 1000, backoff_cap_ms = 3000");
        freeze_clock();
        run("SELECT triggers.enqueue(payload => '{}', debug => 'processing_error')");
        let mut delays = Vec::new();
        for _ in 0..4 {
            assert_eq!(
                one::<i32>("SELECT retried FROM triggers.process_batch()"),
                1
            );
            let ms: i64 = one(
                "SELECT (extract(epoch FROM vt - triggers._now()) * 1000)::bigint FROM pgmq.q_triggers_events",
            );
            delays.push(ms);
            // A millisecond early, the message is still hidden; at its time, it is back.
            advance_clock(ms - 1);
            assert_eq!(one::<i32>("SELECT read FROM triggers.process_batch()"), 0);
            advance_clock(1);
        }
        assert_eq!(
            delays,
            vec![1000, 2000, 3000, 3000],
            "min(cap, base * 2^(attempt-1)) milliseconds"
        );
    }

    #[pg_test]
    fn dlq_routing_and_malformed_messages_go_to_the_dlq_at_once() {
        let routed: String =
            one("SELECT triggers.enqueue(payload => '{}', debug => 'dlq_routing')::text");
        run("SELECT pgmq.send('triggers_events', '{\"no\": \"event\"}')");
        let got: String = one("SELECT format('%s %s %s %s', read, stored, retried, dead_lettered) FROM triggers.process_batch()");
        assert_eq!(got, "2 0 0 2");
        let row: String = one(&format!(
            "SELECT format('%s %s', status, retry_count) FROM triggers.events WHERE event_id = '{routed}'"
        ));
        assert_eq!(row, "failed 0");
        let errors: String = one(
            "SELECT string_agg(error, ' | ' ORDER BY msg_id) FROM triggers.dead_letters('default')",
        );
        assert_eq!(
            errors,
            "routed to the dead-letter queue (debug flag dlq_routing)"
        );
        // The malformed message names no tenant: no tenant sees it, the DLQ table keeps it.
        let malformed: String = one(
            "SELECT message->>'error' FROM pgmq.q_triggers_events_dlq WHERE NOT message ? 'tenant'",
        );
        assert_eq!(malformed, "message has no valid event_id");
        // The malformed message names no event, so only one event row exists.
        assert_eq!(count("SELECT count(*) FROM triggers.events"), 1);
    }
    #[pg_test]
    fn queue_delay_hides_the_event_for_config_queue_delay_ms() {
        run("UPDATE triggers.config SET queue_delay_ms = 2500");
        freeze_clock();
        run("SELECT triggers.enqueue(payload => '{}', debug => 'queue_delay')");
        assert_eq!(one::<i32>("SELECT read FROM triggers.process_batch()"), 0);
        advance_clock(2499);
        assert_eq!(one::<i32>("SELECT read FROM triggers.process_batch()"), 0);
        advance_clock(1);
        assert_eq!(one::<i32>("SELECT stored FROM triggers.process_batch()"), 1);
    }

    #[pg_test]
    fn a_message_processed_twice_is_stored_once_and_counted_once() {
        run("SELECT triggers.enqueue(payload => '{}')");
        // A copy of the same message, as a redelivery after a crash would produce.
        run("INSERT INTO pgmq.q_triggers_events (vt, message) SELECT vt, message FROM pgmq.q_triggers_events");
        let got: String =
            one("SELECT format('%s %s', read, dead_lettered) FROM triggers.process_batch()");
        assert_eq!(got, "2 0");
        assert_eq!(count("SELECT count(*) FROM triggers.events"), 1);
        assert_eq!(count("SELECT (triggers.metrics()->>'pending')::bigint"), 1);
    }

    /// Runs process_batch in a subtransaction that then aborts, as a claim whose backend
    /// died or whose statement was cancelled: nothing it did stays, not even a count.
    fn claim_and_die() {
        run("DO $$ BEGIN
                 PERFORM * FROM triggers.process_batch();
                 RAISE EXCEPTION 'the claim dies';
             EXCEPTION WHEN raise_exception THEN NULL;
             END $$");
    }

    fn stats() -> String {
        one("SELECT format('%s %s %s %s', read, stored, retried, dead_lettered) FROM triggers.process_batch()")
    }

    #[pg_test]
    fn a_claim_that_died_is_counted_and_its_messages_are_then_processed_alone() {
        run("UPDATE triggers.config SET max_retries = 1, visibility_timeout_s = 30");
        freeze_clock();
        let ok1: String = one("SELECT triggers.enqueue(payload => '{\"n\": 1}')::text");
        let ok2: String = one("SELECT triggers.enqueue(payload => '{\"n\": 2}')::text");
        let ok3: String = one("SELECT triggers.enqueue(payload => '{\"n\": 3}')::text");
        claim_and_die();
        // The next claim counts the attempt that died for each message it held, and hides
        // them for visibility_timeout_s; nothing is stored yet.
        assert_eq!(stats(), "3 0 3 0");
        assert_eq!(count("SELECT count(*) FROM pgmq.q_triggers_events WHERE read_ct = 1 AND headers ? 'alone'"), 3);
        advance_clock(29_999);
        assert_eq!(stats(), "0 0 0 0");
        advance_clock(1);
        // From now on, one at a time. (A second death, and the dead-letter queue after
        // max_retries, needs transactions that really commit in between: that is
        // tests/tests/poison.rs, with a killed backend and with statement_timeout.)
        for _ in 0..3 {
            assert_eq!(stats(), "1 1 0 0");
        }
        assert_eq!(stats(), "0 0 0 0");
        let rows: String = one(&format!(
            "SELECT string_agg(format('%s %s', status, retry_count), ', ' ORDER BY event_id)
               FROM triggers.events WHERE event_id IN ('{ok1}', '{ok2}', '{ok3}')"
        ));
        assert_eq!(
            rows, "pending 1, pending 1, pending 1",
            "the attempt that died is counted"
        );
    }

    #[pg_test]
    fn a_committed_claim_that_left_messages_alone_is_not_counted() {
        freeze_clock();
        for n in 1..=3 {
            run(&format!(
                "SELECT triggers.enqueue(payload => '{{\"n\": {n}}}')"
            ));
        }
        // A committed transaction (here: this one) that locked the rows and changed nothing.
        run("SELECT count(*) FROM (SELECT 1 FROM pgmq.q_triggers_events FOR UPDATE) x");
        assert_eq!(stats(), "3 3 0 0");
    }
}
