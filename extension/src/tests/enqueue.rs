//! `#[pg_test]`s of sql/enqueue.sql: enqueue and enqueue_batch.

#[pgrx::pg_schema]
mod tests {
    use crate::test_support::{assert_error, count, one, run};
    use pgrx::prelude::*;

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
}
