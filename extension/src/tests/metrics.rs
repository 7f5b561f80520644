//! `#[pg_test]`s of sql/metrics.sql: exact counts.

#[pgrx::pg_schema]
mod tests {
    use crate::test_support::{count, enqueue_and_process, one, run};
    use pgrx::prelude::*;

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
}
