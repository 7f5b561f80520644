//! `#[pg_test]`s of sql/streams.sql: strict seq order per stream, a failing head that
//! holds back its stream and nothing else, the continue and halt policies, resume.

#[pgrx::pg_schema]
mod tests {
    use crate::test_support::{advance_clock, assert_error, count, freeze_clock, one, run};
    use pgrx::prelude::*;

    fn enqueue(stream: &str, payload: &str) -> String {
        one(&format!(
            "SELECT triggers.enqueue(payload => '{payload}', tenant => 't', stream => '{stream}')::text"
        ))
    }

    fn enqueue_debug(stream: &str, debug: &str) -> String {
        one(&format!(
            "SELECT triggers.enqueue(payload => '{{}}', tenant => 't', stream => '{stream}', debug => '{debug}')::text"
        ))
    }

    fn stats() -> String {
        one("SELECT format('%s %s %s %s', read, stored, retried, dead_lettered) FROM triggers.process_batch()")
    }

    /// "seq:status" of a stream's stored events, in seq order.
    fn stored(stream: &str) -> String {
        one(&format!(
            "SELECT coalesce(string_agg(seq || ':' || status, ' ' ORDER BY seq), '') FROM triggers.events
              WHERE tenant = 't' AND stream = '{stream}'"
        ))
    }

    fn state(stream: &str) -> String {
        one(&format!(
            "SELECT format('%s %s %s', state, done_seq, coalesce(blocking_event::text, '-'))
               FROM triggers.streams('t') WHERE stream = '{stream}'"
        ))
    }

    /// Makes the store of an event fail while its retry_count is below the payload's
    /// "fail_attempts": a failure on the first attempts only.
    fn inject_failures() {
        run("CREATE FUNCTION pg_temp.fail_first() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 IF NEW.status = 'pending' AND NEW.retry_count < coalesce((NEW.payload->>'fail_attempts')::int, 0) THEN
                     RAISE EXCEPTION 'injected failure';
                 END IF;
                 RETURN NEW;
             END $$;
             CREATE TRIGGER fail_first BEFORE INSERT ON triggers.events
                 FOR EACH ROW EXECUTE FUNCTION pg_temp.fail_first()");
    }

    #[pg_test]
    fn a_stream_is_stored_in_seq_order_in_one_batch() {
        for n in 1..=5 {
            enqueue("a", &format!("{{\"n\": {n}}}"));
        }
        run("SELECT triggers.enqueue('{}', tenant => 't')");
        assert_eq!(stats(), "6 6 0 0");
        assert_eq!(
            stored("a"),
            "1:pending 2:pending 3:pending 4:pending 5:pending"
        );
        assert_eq!(state("a"), "idle 5 -");
    }

    #[pg_test]
    fn a_failing_head_holds_back_its_stream_and_no_other() {
        run("UPDATE triggers.config SET max_retries = 2, backoff_base_ms = 1000, backoff_cap_ms = 1000");
        freeze_clock();
        let head = enqueue_debug("a", "processing_error");
        enqueue("a", "{\"n\": 2}");
        enqueue("a", "{\"n\": 3}");
        for n in 1..=3 {
            enqueue("b", &format!("{{\"n\": {n}}}"));
        }
        // b is stored; a's head fails and the rest of a waits behind it.
        assert_eq!(stats(), "4 3 1 0");
        assert_eq!(stored("a"), "");
        assert_eq!(stored("b"), "1:pending 2:pending 3:pending");
        assert_eq!(state("a"), format!("waiting 0 {head}"));
        // What blocks it, and until when (the clock stands still: now + 1 s of backoff).
        assert_eq!(
            one::<String>("SELECT blocking_error || ' until ' || (next_attempt_at - triggers._now())::text FROM triggers.stream('t', 'a')"),
            "processing failed (debug flag processing_error) until 00:00:01"
        );
        // While the head backs off, nothing of a is claimed.
        assert_eq!(stats(), "0 0 0 0");
        advance_clock(1000);
        assert_eq!(stats(), "1 0 1 0");
        assert_eq!(stored("a"), "");
        advance_clock(1000);
        // Third attempt: over max_retries, dead-lettered; a continues past it (the
        // default policy), in the next batch.
        assert_eq!(stats(), "1 0 0 1");
        assert_eq!(stats(), "2 2 0 0");
        assert_eq!(stored("a"), "1:failed 2:pending 3:pending");
        assert_eq!(state("a"), "idle 3 -");
    }

    #[pg_test]
    fn a_head_that_fails_twice_then_succeeds_is_not_overtaken() {
        run("UPDATE triggers.config SET backoff_base_ms = 1000, backoff_cap_ms = 1000");
        inject_failures();
        freeze_clock();
        enqueue("a", "{\"n\": 1, \"fail_attempts\": 2}");
        enqueue("a", "{\"n\": 2}");
        enqueue("a", "{\"n\": 3}");
        // The head's store fails; 2 and 3, claimed with it, are left behind it.
        assert_eq!(stats(), "1 0 1 0");
        advance_clock(1000);
        assert_eq!(stats(), "1 0 1 0");
        assert_eq!(stored("a"), "");
        advance_clock(1000);
        assert_eq!(stats(), "3 3 0 0");
        assert_eq!(stored("a"), "1:pending 2:pending 3:pending");
        let retries: String = one(
            "SELECT string_agg(retry_count::text, ' ' ORDER BY seq) FROM triggers.events WHERE stream = 'a'",
        );
        assert_eq!(retries, "2 0 0");
    }

    #[pg_test]
    fn a_halting_stream_waits_for_its_dead_head_until_resumed() {
        run("UPDATE triggers.config SET stream_failure_policy = 'halt'");
        let head = enqueue_debug("a", "dlq_routing");
        enqueue("a", "{\"n\": 2}");
        enqueue("b", "{\"n\": 1}");
        assert_eq!(stats(), "2 1 0 1");
        assert_eq!(stored("a"), "1:failed");
        assert_eq!(state("a"), format!("halted 0 {head}"));
        assert_eq!(stats(), "0 0 0 0");
        assert_error(
            "SELECT triggers.resume_stream('t', 'b')",
            "TG007",
            "stream b is not halted",
        );
        assert_error(
            "SELECT triggers.resume_stream('t', 'nope')",
            "TG006",
            "stream nope not found",
        );
        assert_eq!(one::<i64>("SELECT triggers.resume_stream('t', 'a')"), 1);
        assert_eq!(stats(), "1 1 0 0");
        assert_eq!(stored("a"), "1:failed 2:pending");
        assert_eq!(state("a"), "idle 2 -");
    }

    #[pg_test]
    fn a_retried_head_of_a_halted_stream_goes_back_to_its_place() {
        run("UPDATE triggers.config SET stream_failure_policy = 'halt'");
        let head = enqueue_debug("a", "dlq_routing");
        enqueue("a", "{\"n\": 2}");
        assert_eq!(stats(), "1 0 0 1");
        assert_eq!(
            one::<i32>(&format!("SELECT triggers.retry('{head}', 't')")),
            1
        );
        assert_eq!(stats(), "2 2 0 0");
        assert_eq!(stored("a"), "1:pending 2:pending");
        let order: String = one(
            "SELECT string_agg(seq::text, ' ' ORDER BY processed_at, seq) FROM triggers.events WHERE stream = 'a'",
        );
        assert_eq!(order, "1 2");
        assert_eq!(count("SELECT count(*) FROM pgmq.q_triggers_events_dlq"), 0);
    }

    #[pg_test]
    fn a_redriven_head_of_a_halted_stream_goes_back_to_its_place() {
        run("UPDATE triggers.config SET stream_failure_policy = 'halt'");
        enqueue_debug("a", "dlq_routing");
        enqueue("a", "{\"n\": 2}");
        assert_eq!(stats(), "1 0 0 1");
        assert_eq!(one::<i32>("SELECT triggers.redrive('t')"), 1);
        assert_eq!(stats(), "2 2 0 0");
        assert_eq!(stored("a"), "1:pending 2:pending");
    }

    #[pg_test]
    fn streams_pages_by_name_and_checks_its_arguments() {
        for s in ["c", "a", "b"] {
            enqueue(s, "{}");
        }
        let page: String =
            one("SELECT string_agg(stream, ',') FROM triggers.streams('t', lim => 2)");
        assert_eq!(page, "a,b");
        let next: String =
            one("SELECT string_agg(stream, ',') FROM triggers.streams('t', after_cursor => 'b')");
        assert_eq!(next, "c");
        assert_eq!(state("a"), "active 0 -");
        assert_error(
            "SELECT * FROM triggers.streams('t', lim => 0)",
            "TG004",
            "lim must be 1 to 1000",
        );
        assert_error(
            "SELECT * FROM triggers.streams(NULL)",
            "TG004",
            "tenant must not be NULL",
        );
    }

    #[pg_test]
    fn a_retried_head_of_a_stream_that_went_on_is_stored_without_moving_it_back() {
        let head = enqueue_debug("a", "dlq_routing");
        enqueue("a", "{\"n\": 2}");
        // continue (the default): the dead head is passed, 2 is stored.
        assert_eq!(stats(), "2 1 0 1");
        assert_eq!(state("a"), "idle 2 -");
        assert_eq!(
            one::<i32>(&format!("SELECT triggers.retry('{head}', 't')")),
            1
        );
        // The stream is past it: it is stored as it comes, and done_seq stays.
        assert_eq!(stats(), "1 1 0 0");
        assert_eq!(stored("a"), "1:pending 2:pending");
        assert_eq!(state("a"), "idle 2 -");
    }

    #[pg_test]
    fn streams_of_two_tenants_are_apart() {
        enqueue("a", "{}");
        run("SELECT triggers.enqueue('{}', tenant => 'u', stream => 'a')");
        assert_eq!(stats(), "2 2 0 0");
        assert_eq!(count("SELECT count(*) FROM triggers.streams('u')"), 1);
        assert_eq!(
            count("SELECT count(*) FROM triggers.stream_progress WHERE done_seq = 1"),
            2
        );
    }
}
