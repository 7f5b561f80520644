//! `#[pg_test]`s of sql/retention.sql: purge.

#[pgrx::pg_schema]
mod tests {
    use crate::test_support::{assert_error, enqueue_and_process, one, run};
    use pgrx::prelude::*;

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
}
