//! `#[pg_test]`s of sql/dlq.sql: dead letters and redrive.

#[pgrx::pg_schema]
mod tests {
    use crate::test_support::{assert_error, count, fast_retries, one, run};
    use pgrx::prelude::*;

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
}
