//! `#[pg_test]`s of sql/inbox.sql: the inbox, get_event, ack and retry.

#[pgrx::pg_schema]
mod tests {
    use crate::test_support::{assert_error, count, enqueue_and_process, one, run};
    use pgrx::prelude::*;

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
}
