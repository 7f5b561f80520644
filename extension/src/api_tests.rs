//! `#[pg_test]`s of the SQL API: each function's happy path and each of its errors, by
//! SQLSTATE. Everything here runs in one backend and one transaction; behaviour that
//! needs separate connections (concurrent workers, a killed backend) is tested from
//! outside, in tests/tests/processing.rs.

#[pgrx::pg_schema]
mod tests {
    use crate::test_support::one;
    use pgrx::prelude::*;

    fn run(sql: &str) {
        Spi::run(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// "SQLSTATE message" of the error `sql` raises, or "ok".
    fn error_of(sql: &str) -> String {
        run("CREATE OR REPLACE FUNCTION pg_temp.error_of(q text) RETURNS text LANGUAGE plpgsql AS $f$
             BEGIN EXECUTE q; RETURN 'ok';
             EXCEPTION WHEN OTHERS THEN RETURN SQLSTATE || ' ' || SQLERRM; END $f$");
        let quoted = sql.replace('\'', "''");
        one(&format!("SELECT pg_temp.error_of('{quoted}')"))
    }

    fn assert_error(sql: &str, sqlstate: &str, message_part: &str) {
        let got = error_of(sql);
        assert!(
            got.starts_with(sqlstate) && got.contains(message_part),
            "{sql}\n  expected {sqlstate} '{message_part}'\n  got {got}"
        );
    }

    fn count(sql: &str) -> i64 {
        one(sql)
    }

    /// Sets retries and backoff so failures can be driven to the DLQ within a test:
    /// a retried message becomes visible again at once (vt in the past is readable).
    fn fast_retries(max_retries: i32) {
        run(&format!(
            "UPDATE triggers.config SET max_retries = {max_retries}, backoff_base_ms = 1, backoff_cap_ms = 1"
        ));
    }

    /// Makes every queued message visible now (instead of waiting out its backoff).
    fn make_visible() {
        run("UPDATE pgmq.q_triggers_events SET vt = now() - interval '1 second'");
    }

    // ---- enqueue ----------------------------------------------------------------

    #[pg_test]
    fn enqueue_queues_one_message_with_a_v7_id() {
        let id: pgrx::datum::Uuid = one("SELECT triggers.enqueue(payload => '{\"a\": 1}')");
        let version = id.as_bytes()[6] >> 4;
        assert_eq!(version, 7, "UUIDv7");
        let msg: pgrx::JsonB = one("SELECT message FROM pgmq.q_triggers_events");
        assert_eq!(msg.0["event_id"], id.to_string());
        assert_eq!(msg.0["tenant"], "default");
        assert_eq!(msg.0["payload"], serde_json::json!({"a": 1}));
    }

    #[pg_test]
    fn enqueue_rejects_bad_input_with_stable_codes() {
        assert_error(
            "SELECT triggers.enqueue(payload => NULL)",
            "TG001",
            "payload must be a JSON object, got NULL",
        );
        assert_error(
            "SELECT triggers.enqueue(payload => '[1]')",
            "TG001",
            "payload must be a JSON object, got array",
        );
        assert_error(
            "SELECT triggers.enqueue(payload => '\"x\"')",
            "TG001",
            "got string",
        );
        assert_error(
            "SELECT triggers.enqueue(payload => '{}', metadata => '[]')",
            "TG002",
            "metadata must be a JSON object",
        );
        run("UPDATE triggers.config SET max_payload_bytes = 20");
        assert_error(
            "SELECT triggers.enqueue(payload => '{\"big\": \"0123456789012345678901234567890\"}')",
            "TG003",
            "over the limit of 20",
        );
        assert_error(
            "SELECT triggers.enqueue(payload => '{}', tenant => '')",
            "TG004",
            "tenant must be",
        );
        assert_error(
            "SELECT triggers.enqueue(payload => '{}', tenant => NULL)",
            "TG004",
            "tenant must not be NULL",
        );
        assert_error(
            "SELECT triggers.enqueue(payload => '{}', tenant => E'a\\nb')",
            "TG004",
            "without control characters",
        );
        assert_error(
            &format!(
                "SELECT triggers.enqueue(payload => '{{}}', tenant => '{}')",
                "t".repeat(201)
            ),
            "TG004",
            "tenant must be 1 to 200 characters",
        );
        assert_error(
            "SELECT triggers.enqueue(payload => '{}', debug => 'explode')",
            "TG004",
            "debug must be one of",
        );
        assert_error(
            "SELECT triggers.enqueue(payload => '{}', debug => 'validation_error')",
            "TG001",
            "validation_error",
        );
        assert_error(
            &format!(
                "SELECT triggers.enqueue(payload => '{{}}', idempotency_key => '{}')",
                "k".repeat(256)
            ),
            "TG004",
            "idempotency_key must be",
        );
        assert_eq!(
            count("SELECT count(*) FROM pgmq.q_triggers_events"),
            0,
            "nothing queued"
        );
    }

    #[pg_test]
    fn enqueue_with_a_seen_idempotency_key_returns_the_first_id_and_queues_nothing() {
        let a: String =
            one("SELECT triggers.enqueue(payload => '{}', idempotency_key => 'k1')::text");
        let b: String =
            one("SELECT triggers.enqueue(payload => '{\"x\":2}', idempotency_key => 'k1')::text");
        let dup: bool = one(
            "SELECT duplicate FROM triggers.enqueue_ex(payload => '{}', idempotency_key => 'k1')",
        );
        assert_eq!(a, b);
        assert!(dup);
        // Keys are per tenant.
        let c: String =
            one("SELECT triggers.enqueue(payload => '{}', idempotency_key => 'k1', tenant => 'other')::text");
        assert_ne!(a, c);
        assert_eq!(count("SELECT count(*) FROM pgmq.q_triggers_events"), 2);
    }

    #[pg_test]
    fn enqueue_gives_each_stream_gapless_positions() {
        for _ in 0..3 {
            run("SELECT triggers.enqueue(payload => '{}', stream => 's')");
        }
        run("SELECT triggers.enqueue(payload => '{}', stream => 't')");
        let seqs: String = one(
            "SELECT string_agg((message->>'stream') || (message->>'seq'), ',' ORDER BY msg_id) FROM pgmq.q_triggers_events",
        );
        assert_eq!(seqs, "s1,s2,s3,t1");
    }

    #[pg_test]
    fn enqueue_batch_is_all_or_nothing_and_keeps_order() {
        let ids: i64 = count(
            "SELECT count(*) FROM triggers.enqueue_batch('[{\"payload\":{\"n\":1}},{\"payload\":{\"n\":2},\"idempotency_key\":\"b\"},{\"payload\":{\"n\":3},\"idempotency_key\":\"b\"}]')",
        );
        assert_eq!(ids, 3);
        // The repeated key inside the array maps to the first id and is queued once.
        assert_eq!(count("SELECT count(*) FROM pgmq.q_triggers_events"), 2);
        let order: String =
            one("SELECT string_agg(message->'payload'->>'n', ',' ORDER BY msg_id) FROM pgmq.q_triggers_events");
        assert_eq!(order, "1,2");
        assert_error(
            "SELECT triggers.enqueue_batch('[{\"payload\":{}}, {\"payload\":[1]}]')",
            "TG001",
            "events[1].payload must be a JSON object",
        );
        assert_error(
            "SELECT triggers.enqueue_batch('[{\"payload\":{}}, 5]')",
            "TG004",
            "events[1] must be a JSON object",
        );
        assert_error(
            "SELECT triggers.enqueue_batch('[{\"metadata\":{}}]')",
            "TG001",
            "events[0].payload is missing",
        );
        assert_error(
            "SELECT triggers.enqueue_batch('{}')",
            "TG004",
            "events must be a JSON array",
        );
        assert_error("SELECT triggers.enqueue_batch('[]')", "TG004", "1 to 10000");
        assert_eq!(
            count("SELECT count(*) FROM pgmq.q_triggers_events"),
            2,
            "failed batches queue nothing"
        );
    }

    #[pg_test]
    fn enqueue_batch_ex_says_which_events_were_duplicates() {
        run("SELECT triggers.enqueue(payload => '{}', idempotency_key => 'seen')");
        let got: String = one(
            "SELECT string_agg(duplicate::text, ',') FROM triggers.enqueue_batch_ex('[{\"payload\":{},\"idempotency_key\":\"seen\"},{\"payload\":{},\"idempotency_key\":\"z\"},{\"payload\":{},\"idempotency_key\":\"z\"},{\"payload\":{}}]')",
        );
        assert_eq!(got, "true,false,true,false");
        assert_eq!(count("SELECT count(*) FROM pgmq.q_triggers_events"), 3);
    }

    #[pg_test]
    fn enqueue_batch_without_keys_or_streams_queues_the_same_messages() {
        // No idempotency key, no stream: the one-statement path.
        let ids: String = one(
            "SELECT string_agg(event_id::text, ',') FROM triggers.enqueue_batch_ex('[{\"payload\":{\"n\":1},\"metadata\":{\"m\":1}},{\"payload\":{\"n\":2},\"metadata\":null},{\"payload\":{\"n\":3},\"debug\":\"queue_delay\"}]', 'acme')",
        );
        let queued: String = one(
            "SELECT string_agg(message->>'event_id', ',' ORDER BY msg_id) FROM pgmq.q_triggers_events",
        );
        assert_eq!(ids, queued, "ids come back in array order");
        let shapes: String = one(
            "SELECT string_agg(format('%s:%s:%s:%s', message->'payload'->>'n', message->>'tenant', \
                    coalesce(message->>'metadata', '-'), coalesce(message->>'debug', '-')), ' ' ORDER BY msg_id) \
               FROM pgmq.q_triggers_events",
        );
        assert_eq!(
            shapes,
            "1:acme:{\"m\": 1}:- 2:acme:-:- 3:acme:-:queue_delay"
        );
        assert_eq!(
            count("SELECT count(*) FROM pgmq.q_triggers_events WHERE vt > clock_timestamp() + interval '4 seconds'"),
            1,
            "queue_delay holds its event back"
        );
        // Each check still names the element that fails it.
        run("UPDATE triggers.config SET max_payload_bytes = 64");
        for (batch, code, message) in [
            ("[{\"payload\":{}}, {\"payload\":{\"big\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}}]", "TG003", "events[1].payload is"),
            ("[{\"payload\":{},\"metadata\":[1]}]", "TG002", "events[0].metadata must be a JSON object"),
            ("[{\"payload\":{}}, {\"payload\":{},\"debug\":\"nope\"}]", "TG004", "events[1].debug must be one of"),
            ("[{\"payload\":{},\"debug\":\"validation_error\"}]", "TG001", "events[0].payload rejected"),
            ("[{\"payload\":{},\"idempotency_key\":\"\"}]", "TG004", "events[0].idempotency_key must be 1 to 255"),
            ("[{\"payload\":{},\"stream\":7}]", "TG004", "events[0]: idempotency_key, stream and debug must be strings"),
        ] {
            assert_error(
                &format!("SELECT triggers.enqueue_batch('{batch}')"),
                code,
                message,
            );
        }
        assert_eq!(count("SELECT count(*) FROM pgmq.q_triggers_events"), 3);
    }

    // ---- process_batch --------------------------------------------------------------

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
        run("SELECT triggers.enqueue(payload => '{\"ok\": 1}')");
        let bad: String = one(
            "SELECT triggers.enqueue(payload => '{\"bad\": 1}', debug => 'processing_error')::text",
        );
        run("SELECT triggers.enqueue(payload => '{\"ok\": 2}')");
        let first: String = one("SELECT format('%s %s %s %s', read, stored, retried, dead_lettered) FROM triggers.process_batch()");
        assert_eq!(first, "3 2 1 0");
        for attempt in 2..=3 {
            make_visible();
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
    fn backoff_doubles_through_the_visibility_timeout() {
        run("UPDATE triggers.config SET max_retries = 5, backoff_base_ms = 1000, backoff_cap_ms = 3000");
        run("SELECT triggers.enqueue(payload => '{}', debug => 'processing_error')");
        let mut delays = Vec::new();
        for _ in 0..4 {
            run("SELECT * FROM triggers.process_batch()");
            let ms: f64 = one("SELECT round(extract(epoch FROM vt - clock_timestamp()) * 1000)::float8 FROM pgmq.q_triggers_events");
            delays.push(((ms / 1000.0).round()) as i64);
            make_visible();
        }
        assert_eq!(
            delays,
            vec![1, 2, 3, 3],
            "min(cap, base * 2^(attempt-1)) seconds"
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
    fn queue_delay_hides_the_event_for_a_while() {
        run("SELECT triggers.enqueue(payload => '{}', debug => 'queue_delay')");
        let got: i32 = one("SELECT read FROM triggers.process_batch()");
        assert_eq!(got, 0);
        make_visible();
        let got: i32 = one("SELECT stored FROM triggers.process_batch()");
        assert_eq!(got, 1);
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

    // ---- inbox, get_event, ack, retry ---------------------------------------------------

    fn enqueue_and_process(n: usize, tenant: &str) {
        for i in 0..n {
            run(&format!("SELECT triggers.enqueue(payload => '{{\"i\": {i}}}', metadata => '{{\"k\": \"{}\"}}', tenant => '{tenant}')", i % 2));
        }
        run("SELECT * FROM triggers.process_batch(1000)");
    }

    #[pg_test]
    fn inbox_pages_with_cursors_and_filters() {
        enqueue_and_process(5, "t");
        let page1: String =
            one("SELECT string_agg(payload->>'i', ',') FROM triggers.inbox('t', lim => 2)");
        assert_eq!(page1, "0,1");
        let cursor: String = one("SELECT cursor FROM triggers.inbox('t', lim => 2) OFFSET 1");
        let page2: String = one(&format!("SELECT string_agg(payload->>'i', ',') FROM triggers.inbox('t', after_cursor => '{cursor}', lim => 2)"));
        assert_eq!(page2, "2,3");
        let desc: String = one("SELECT string_agg(payload->>'i', ',') FROM triggers.inbox('t', \"order\" => 'desc', lim => 3)");
        assert_eq!(desc, "4,3,2");
        let meta: String = one("SELECT string_agg(payload->>'i', ',') FROM triggers.inbox('t', metadata_contains => '{\"k\": \"1\"}')");
        assert_eq!(meta, "1,3");
        let pay: String = one("SELECT string_agg(payload->>'i', ',') FROM triggers.inbox('t', payload_contains => '{\"i\": 4}')");
        assert_eq!(pay, "4");
        assert_eq!(
            count("SELECT count(*) FROM triggers.inbox('t', status => '{delivered}')"),
            0
        );
        assert_eq!(
            count("SELECT count(*) FROM triggers.inbox('t', to_time => '-infinity')"),
            0
        );
        assert_eq!(
            count("SELECT count(*) FROM triggers.inbox('t', min_retry_count => 1)"),
            0
        );
        assert_eq!(
            count("SELECT count(*) FROM triggers.inbox('other')"),
            0,
            "scoped by tenant"
        );
    }

    #[pg_test]
    fn inbox_rejects_bad_arguments() {
        assert_error(
            "SELECT * FROM triggers.inbox('t', status => '{bogus}')",
            "TG004",
            "status 'bogus' is not one of",
        );
        assert_error(
            "SELECT * FROM triggers.inbox('t', status => '{}')",
            "TG004",
            "at least one",
        );
        assert_error(
            "SELECT * FROM triggers.inbox('t', lim => 0)",
            "TG004",
            "lim must be 1 to 1000",
        );
        assert_error(
            "SELECT * FROM triggers.inbox('t', lim => 1001)",
            "TG004",
            "lim must be 1 to 1000",
        );
        assert_error(
            "SELECT * FROM triggers.inbox('t', after_cursor => 'garbage!')",
            "TG005",
            "not a cursor",
        );
        assert_error(
            "SELECT * FROM triggers.inbox('t', after_cursor => 'AAAA')",
            "TG005",
            "not a cursor",
        );
        assert_error(
            "SELECT * FROM triggers.inbox('t', \"order\" => 'sideways')",
            "TG004",
            "order must be",
        );
        assert_error(
            "SELECT * FROM triggers.inbox('t', metadata_contains => '[1]')",
            "TG004",
            "metadata_contains",
        );
    }

    #[pg_test]
    fn ack_delivers_once_and_is_idempotent() {
        enqueue_and_process(1, "t");
        let id: String = one("SELECT event_id::text FROM triggers.events");
        let status: String = one(&format!("SELECT status FROM triggers.ack('{id}', 't')"));
        assert_eq!(status, "delivered");
        let again: String = one(&format!("SELECT status FROM triggers.ack('{id}', 't')"));
        assert_eq!(again, "delivered");
        let m: String = one("SELECT format('%s %s', triggers.metrics()->>'pending', triggers.metrics()->>'delivered')");
        assert_eq!(m, "0 1", "counted once");
        assert_error(
            &format!("SELECT triggers.ack('{id}', 'other')"),
            "TG006",
            "not found",
        );
        assert_error(
            "SELECT triggers.ack('00000000-0000-0000-0000-000000000000', 't')",
            "TG006",
            "not found",
        );
        assert_error(
            "SELECT triggers.ack(NULL, 't')",
            "TG004",
            "event_id must not be NULL",
        );
        let got: String = one(&format!(
            "SELECT status FROM triggers.get_event('{id}', 't')"
        ));
        assert_eq!(got, "delivered");
        assert_error(
            &format!("SELECT triggers.get_event('{id}', 'other')"),
            "TG006",
            "not found",
        );
    }

    #[pg_test]
    fn retry_requeues_a_failed_event_at_most_three_times() {
        let id: String = one(
            "SELECT triggers.enqueue(payload => '{}', debug => 'dlq_routing', tenant => 't')::text",
        );
        run("SELECT * FROM triggers.process_batch()");
        assert_error(
            &format!("SELECT triggers.ack('{id}', 't')"),
            "TG007",
            "is failed",
        );
        for attempt in 1..=3 {
            let n: i32 = one(&format!("SELECT triggers.retry('{id}', 't')"));
            assert_eq!(n, attempt);
            assert_eq!(
                count("SELECT count(*) FROM pgmq.q_triggers_events_dlq"),
                0,
                "its dead letter is superseded"
            );
            // The retried message has no debug flag: it succeeds and the event is pending.
            let got: String =
                one("SELECT format('%s %s', read, stored) FROM triggers.process_batch()");
            assert_eq!(got, "1 1");
            let status: String = one(&format!(
                "SELECT status FROM triggers.get_event('{id}', 't')"
            ));
            assert_eq!(status, "pending");
            assert_error(
                &format!("SELECT triggers.retry('{id}', 't')"),
                "TG007",
                "only failed events",
            );
            // Fail it again for the next round.
            run(&format!(
                "UPDATE triggers.events SET status = 'failed' WHERE event_id = '{id}'"
            ));
        }
        assert_error(
            &format!("SELECT triggers.retry('{id}', 't')"),
            "TG008",
            "all 3 manual retries",
        );
        let rc: i32 = one(&format!(
            "SELECT retry_count FROM triggers.events WHERE event_id = '{id}'"
        ));
        assert_eq!(rc, 3, "manual retries count in retry_count");
        assert_error(
            &format!("SELECT triggers.retry('{id}', 'other')"),
            "TG006",
            "not found",
        );
    }

    // ---- dead letters, redrive --------------------------------------------------------------

    #[pg_test]
    fn redrive_moves_dead_letters_back_with_fresh_attempts() {
        fast_retries(0);
        run("SELECT triggers.enqueue(payload => '{}', debug => 'processing_error', tenant => 'a')");
        run("SELECT triggers.enqueue(payload => '{}', debug => 'dlq_routing', tenant => 'b')");
        run("SELECT * FROM triggers.process_batch()");
        assert_eq!(count("SELECT count(*) FROM triggers.dead_letters('a')"), 1);
        assert_eq!(count("SELECT count(*) FROM triggers.dead_letters('b')"), 1);
        let moved: i32 = one("SELECT triggers.redrive('a')");
        assert_eq!(moved, 1);
        assert_eq!(count("SELECT count(*) FROM triggers.dead_letters('a')"), 0);
        assert_eq!(
            count("SELECT count(*) FROM triggers.dead_letters('b')"),
            1,
            "other tenants untouched"
        );
        // Redriven without its debug flag, it is stored and the event flips to pending.
        let got: String = one("SELECT format('%s %s', read, stored) FROM triggers.process_batch()");
        assert_eq!(got, "1 1");
        assert_eq!(
            count("SELECT count(*) FROM triggers.events WHERE tenant = 'a' AND status = 'pending'"),
            1
        );
        assert_error("SELECT triggers.redrive('a', 0)", "TG004", "lim must be");
        assert_error(
            "SELECT * FROM triggers.dead_letters('a', 5000)",
            "TG004",
            "lim must be",
        );
    }

    // ---- metrics, purge -------------------------------------------------------------------

    #[pg_test]
    fn metrics_equal_counts_by_status() {
        enqueue_and_process(4, "m");
        run("SELECT triggers.enqueue(payload => '{}', tenant => 'm')");
        let id: String = one("SELECT event_id::text FROM triggers.events LIMIT 1");
        run(&format!("SELECT triggers.ack('{id}', 'm')"));
        let m: pgrx::JsonB = one("SELECT triggers.metrics('m')");
        let m = m.0;
        assert_eq!(m["total"], 4);
        assert_eq!(m["pending"], 3);
        assert_eq!(m["delivered"], 1);
        assert_eq!(m["failed"], 0);
        assert_eq!(m["queue_depth"], 1);
        assert_eq!(m["dlq_count"], 0);
        assert!(m["last_processed_at"].is_string());
        assert_eq!(
            m["processing_rate_per_min"], 0.8,
            "4 processed over a 5-minute window"
        );
        assert!(m["latency_ms"]["p50"].is_number(), "{m}");
        let overall: pgrx::JsonB = one("SELECT triggers.metrics()");
        assert_eq!(overall.0["total"], 4);
        assert_eq!(
            count("SELECT (triggers.metrics('nobody')->>'total')::bigint"),
            0
        );
    }

    #[pg_test]
    fn purge_deletes_old_finished_events_and_keeps_metrics_exact() {
        enqueue_and_process(3, "p");
        let id: String = one("SELECT event_id::text FROM triggers.events LIMIT 1");
        run(&format!("SELECT triggers.ack('{id}', 'p')"));
        run("UPDATE triggers.events SET updated_at = now() - interval '2 days'");
        let n: i64 = one("SELECT triggers.purge(interval '1 day')");
        assert_eq!(
            n, 1,
            "only the delivered one; pending events are never purged"
        );
        let m: String = one("SELECT format('%s %s', triggers.metrics()->>'total', triggers.metrics()->>'delivered')");
        assert_eq!(m, "2 0");
        assert_error(
            "SELECT triggers.purge(interval '-1 day')",
            "TG004",
            "non-negative",
        );
    }

    // ---- API keys ---------------------------------------------------------------------------

    #[pg_test]
    fn api_keys_authenticate_until_revoked_and_are_stored_hashed() {
        let key: String = one("SELECT triggers.create_api_key('acme', 'ci')");
        assert!(key.starts_with("trg_"), "{key}");
        let tenant: String = one(&format!("SELECT triggers.authenticate('{key}')"));
        assert_eq!(tenant, "acme");
        assert_eq!(count(&format!("SELECT count(*) FROM triggers.api_keys WHERE key_hash::text LIKE '%{key}%' OR key_id = '{key}'")), 0);
        let revoked: bool = one(&format!("SELECT triggers.revoke_api_key('other', '{key}')"));
        assert!(!revoked, "another tenant cannot revoke it");
        let revoked: bool = one(&format!("SELECT triggers.revoke_api_key('acme', '{key}')"));
        assert!(revoked);
        assert_error(
            &format!("SELECT triggers.authenticate('{key}')"),
            "TG009",
            "revoked",
        );
        assert_error("SELECT triggers.authenticate('nope')", "TG009", "malformed");
        assert_error("SELECT triggers.authenticate(NULL)", "TG009", "malformed");
        let wrong = format!("{}x", &key[..key.len() - 1]);
        assert_error(
            &format!("SELECT triggers.authenticate('{wrong}')"),
            "TG009",
            "not valid",
        );
        assert_error(
            "SELECT triggers.create_api_key('', 'x')",
            "TG004",
            "tenant must be",
        );
    }

    // ---- injection --------------------------------------------------------------------------

    #[pg_test]
    fn sql_in_text_arguments_is_inert() {
        let evil = "x'); DROP TABLE triggers.events; --";
        let e = evil.replace('\'', "''");
        run(&format!("SELECT triggers.enqueue(payload => '{{}}', tenant => '{e}', idempotency_key => '{e}', stream => '{e}')"));
        run("SELECT * FROM triggers.process_batch()");
        assert_eq!(
            count(&format!(
                "SELECT count(*) FROM triggers.inbox('{e}', stream => '{e}')"
            )),
            1
        );
        run(&format!("SELECT triggers.metrics('{e}')"));
        run(&format!("SELECT * FROM triggers.dead_letters('{e}')"));
        run(&format!("SELECT triggers.redrive('{e}')"));
        run(&format!("SELECT triggers.create_api_key('{e}', '{e}')"));
        assert_error(
            &format!("SELECT triggers.authenticate('{e}')"),
            "TG009",
            "malformed",
        );
        assert_error(
            &format!("SELECT * FROM triggers.inbox('t', after_cursor => '{e}')"),
            "TG005",
            "not a cursor",
        );
        assert_eq!(count("SELECT count(*) FROM pg_tables WHERE schemaname = 'triggers' AND tablename = 'events'"), 1);
        let tenant: String = one("SELECT tenant FROM triggers.events");
        assert_eq!(tenant, evil, "stored verbatim");
    }
}
