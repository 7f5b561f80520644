//! `#[pg_test]`s of sql/live.sql: positions in storing order (a stream's in seq order),
//! a re-stored event taking a new one, filters, bounds and errors. (Out-of-order
//! commits need two connections: tests/tests/live.rs.) Other tests run beside these,
//! in transactions of their own that hold positions open, so reads name `upto` (every
//! position this transaction took is settled for itself) instead of waiting for them.

#[pgrx::pg_schema]
mod tests {
    use crate::test_support::{assert_error, count, enqueue_and_process, fast_retries, one, run};
    use pgrx::prelude::*;

    /// Every position so far: `upto` for reads that must not wait on other tests.
    const ALL: &str = "upto => 9000000000000000000";

    fn positions(sql_filter: &str) -> String {
        one(&format!(
            "SELECT coalesce(string_agg(position::text, ',' ORDER BY position), '') FROM triggers.stored({sql_filter}, {ALL})"
        ))
    }

    #[pg_test]
    fn stored_events_come_in_position_order_a_streams_in_seq_order() {
        for n in 1..=3 {
            run(&format!(
                "SELECT triggers.enqueue('{{\"n\": {n}}}', tenant => 't', stream => 's')"
            ));
        }
        run("SELECT triggers.enqueue('{\"plain\": true}', tenant => 't')");
        run("SELECT triggers.process_batch(100)");
        assert_eq!(
            one::<String>("SELECT string_agg(coalesce(seq::text, '-'), ',' ORDER BY position) FROM triggers.stored('t', upto => 9000000000000000000)"),
            "1,2,3,-"
        );
        // After a position: only what follows it; upto bounds it exactly.
        let second: i64 = one("SELECT position FROM triggers.events WHERE seq = 2");
        assert_eq!(
            count(&format!(
                "SELECT count(*) FROM triggers.stored('t', {second}, {ALL})"
            )),
            2
        );
        assert_eq!(
            count(&format!(
                "SELECT count(*) FROM triggers.stored('t', 0, upto => {second})"
            )),
            2
        );
    }

    #[pg_test]
    fn filters_are_the_inboxs_and_tenants_stay_apart() {
        run("SELECT triggers.enqueue('{\"k\": 1}', '{\"src\": \"web\"}', tenant => 'a', stream => 's')");
        run("SELECT triggers.enqueue('{\"k\": 2}', '{\"src\": \"app\"}', tenant => 'a')");
        run("SELECT triggers.enqueue('{\"k\": 3}', tenant => 'b')");
        run("SELECT triggers.process_batch(100)");
        assert_eq!(
            count("SELECT count(*) FROM triggers.stored('a', upto => 9000000000000000000)"),
            2
        );
        assert_eq!(
            count("SELECT count(*) FROM triggers.stored(NULL, upto => 9000000000000000000)"),
            3
        );
        assert_eq!(count("SELECT count(*) FROM triggers.stored('a', stream => 's', upto => 9000000000000000000)"), 1);
        assert_eq!(count("SELECT count(*) FROM triggers.stored('a', metadata_contains => '{\"src\": \"app\"}', upto => 9000000000000000000)"), 1);
        assert_eq!(count("SELECT count(*) FROM triggers.stored('a', payload_contains => '{\"k\": 1}', upto => 9000000000000000000)"), 1);
        assert_eq!(positions("'nobody'"), "");
    }

    #[pg_test]
    fn an_event_stored_again_after_failing_takes_a_new_position_and_a_dead_letter_none() {
        fast_retries(0);
        run("SELECT triggers.enqueue('{}', tenant => 't', debug => 'processing_error')");
        run("SELECT triggers.process_batch(100)");
        // Dead-lettered: in events as failed, with no position, not on the stream.
        assert_eq!(
            count(
                "SELECT count(*) FROM triggers.events WHERE status = 'failed' AND position IS NULL"
            ),
            1
        );
        assert_eq!(positions("'t'"), "");
        enqueue_and_process(1, "t");
        let before: i64 = one("SELECT max(position) FROM triggers.events");
        run("SELECT triggers.redrive('t')");
        // The redriven message has no debug flag any more: it is stored, after the others.
        run("SELECT triggers.process_batch(100)");
        assert_eq!(
            count(&format!(
                "SELECT count(*) FROM triggers.stored('t', {before}, {ALL})"
            )),
            1
        );
    }

    #[pg_test]
    fn bad_arguments_are_refused_with_stable_codes() {
        assert_error(
            "SELECT * FROM triggers.stored('t', -1)",
            "TG005",
            "after must be a position",
        );
        assert_error(
            "SELECT * FROM triggers.stored('t', NULL)",
            "TG005",
            "after must be a position",
        );
        assert_error(
            "SELECT * FROM triggers.stored('t', 0, 0)",
            "TG004",
            "lim must be 1 to 10000",
        );
        assert_error("SELECT * FROM triggers.stored('', 0)", "TG004", "tenant");
        assert_error(
            "SELECT * FROM triggers.stored('t', 0, 10, E'a\\x01')",
            "TG004",
            "stream",
        );
        assert_error(
            "SELECT * FROM triggers.stored('t', metadata_contains => '[1]')",
            "TG004",
            "metadata_contains",
        );
        assert_error(
            "SELECT * FROM triggers.stored('t', payload_contains => '1')",
            "TG004",
            "payload_contains",
        );
    }

    #[pg_test]
    fn the_horizon_covers_every_position_taken_before_it() {
        enqueue_and_process(3, "t");
        let taken: i64 = one("SELECT last_value FROM triggers.event_positions");
        assert!(one::<i64>("SELECT triggers.stored_horizon()") >= taken);
    }
}
