//! `#[pg_test]`s of sql/claim.sql: tenants served in turn and by weight, retries queued
//! again at the end of their lane, every lane drained. (That a claim reads a bounded
//! number of index entries under an old snapshot, and that a mark never passes a
//! message still being enqueued, needs separate connections: tests/tests/claim.rs.)

#[pgrx::pg_schema]
mod tests {
    use crate::test_support::{count, fast_retries, freeze_clock, one, run};
    use pgrx::prelude::*;

    fn flood(tenant: &str, n: usize) {
        run(&format!(
            "SELECT triggers.enqueue_batch((SELECT jsonb_agg(jsonb_build_object('payload', jsonb_build_object('n', g)))
                                              FROM generate_series(1, {n}) g), '{tenant}')"
        ));
    }

    fn stored(tenant: &str) -> i64 {
        count(&format!(
            "SELECT count(*) FROM triggers.events WHERE tenant = '{tenant}'"
        ))
    }

    #[pg_test]
    fn a_quiet_tenant_is_served_in_the_first_batch_behind_any_flood() {
        flood("loud", 5000);
        run("SELECT triggers.enqueue('{\"hello\": 1}', tenant => 'quiet')");
        run("SELECT triggers.process_batch(100)");
        assert_eq!(stored("quiet"), 1);
        // What the quiet tenant did not need went to the loud one: the batch was full.
        assert_eq!(stored("loud"), 99);
    }

    #[pg_test]
    fn busy_tenants_take_turns_and_share_by_weight() {
        run("INSERT INTO triggers.tenants (tenant, weight) VALUES ('heavy', 3), ('light', 1)");
        flood("heavy", 1000);
        flood("light", 1000);
        run("SELECT triggers.process_batch(100)");
        assert_eq!((stored("heavy"), stored("light")), (75, 25));
        run("SELECT triggers.process_batch(100)");
        assert_eq!((stored("heavy"), stored("light")), (150, 50));
    }

    #[pg_test]
    fn each_busy_tenant_goes_first_in_turn() {
        for t in ["a", "b", "c"] {
            flood(t, 300);
        }
        // A batch smaller than the number of tenants: each call serves the next one.
        let firsts: Vec<String> = (0..3)
            .map(|_| {
                run("SELECT triggers.process_batch(1)");
                one("SELECT tenant FROM triggers.events ORDER BY processed_at DESC, tenant LIMIT 1")
            })
            .collect();
        let mut sorted = firsts.clone();
        sorted.sort();
        assert_eq!(sorted, ["a", "b", "c"], "served in turn: {firsts:?}");
    }

    #[pg_test]
    fn a_retried_message_goes_to_the_end_of_its_lane() {
        fast_retries(3);
        freeze_clock();
        run("SELECT triggers.enqueue('{}', tenant => 't', debug => 'processing_error')");
        run("SELECT triggers.enqueue('{\"n\": 2}', tenant => 't')");
        let before: i64 = one("SELECT min(msg_id) FROM pgmq.q_triggers_events");
        run("SELECT triggers.process_batch(100)");
        // The failing message is queued again with a msg_id past every other, its
        // attempt counted and its tenant kept; the other was stored.
        assert_eq!(
            count(&format!(
                "SELECT count(*) FROM pgmq.q_triggers_events
                  WHERE msg_id > {before} + 1 AND read_ct = 1 AND headers->>'tenant' = 't'
                    AND message->>'last_error' LIKE 'processing failed%'"
            )),
            1
        );
        assert_eq!(stored("t"), 1);
    }

    #[pg_test]
    fn messages_put_on_the_queue_without_triggers_are_claimed_too() {
        flood("t", 10);
        run("SELECT pgmq.send('triggers_events', '{\"not\": \"an event\"}')");
        let stats: String = one(
            "SELECT format('%s %s %s', read, stored, dead_lettered) FROM triggers.process_batch(100)",
        );
        assert_eq!(stats, "11 10 1");
    }

    #[pg_test]
    fn every_tenant_gets_its_lane_from_its_first_event() {
        run("SELECT triggers.enqueue('{}', tenant => 'x')");
        run("SELECT triggers.enqueue('{}', tenant => 'y')");
        run("SELECT triggers.enqueue('{}', tenant => 'x')");
        flood("z", 3);
        assert_eq!(
            one::<String>("SELECT string_agg(tenant, ' ' ORDER BY tenant) FROM triggers.lanes"),
            "x y z"
        );
        crate::test_support::assert_error(
            "INSERT INTO triggers.tenants (tenant, weight) VALUES ('x', 0)",
            "23514",
            "tenants_weight_check",
        );
    }
}
