//! `#[pg_test]`s of sql/metrics.sql: exact counts, and the per-minute history.

#[pgrx::pg_schema]
mod tests {
    use crate::test_support::{
        advance_clock, assert_error, count, enqueue_and_process, freeze_clock, one, run,
    };
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

    #[pg_test]
    fn the_history_has_a_row_per_minute_with_what_was_processed_in_it() {
        freeze_clock();
        // Both tenants' events queued before each processing call, so that the claim
        // knows both lanes without waiting on other tests' open transactions.
        run("SELECT triggers.enqueue('{}', tenant => 'other')");
        enqueue_and_process(3, "h");
        advance_clock(120_000);
        for _ in 0..4 {
            run("SELECT triggers.enqueue('{}', tenant => 'other')");
        }
        enqueue_and_process(2, "h");
        let rows =
            "SELECT string_agg(processed::text, ',' ORDER BY minute) FROM triggers.metrics_history";
        // The last five minutes, the current one last: three events two minutes ago,
        // two now; all tenants: one and four more.
        assert_eq!(one::<String>(&format!("{rows}('h', 5)")), "0,0,3,0,2");
        assert_eq!(one::<String>(&format!("{rows}(NULL, 5)")), "0,0,4,0,6");
        assert_eq!(
            count("SELECT count(*) FROM triggers.metrics_history('h')"),
            60
        );
        // Percentiles where something was processed, NULL where nothing was.
        assert_eq!(
            count("SELECT count(*) FROM triggers.metrics_history('h', 5) WHERE (p50_ms IS NULL) = (processed = 0)"),
            5
        );
        // metrics() reads the same histogram: the last five minutes' rate.
        assert_eq!(
            one::<String>("SELECT triggers.metrics('h')->>'processing_rate_per_min'"),
            "1.0"
        );
        assert_error(
            "SELECT * FROM triggers.metrics_history('h', 0)",
            "TG004",
            "minutes must be 1 to 1440",
        );
        assert_error(
            "SELECT * FROM triggers.metrics_history('h', 1441)",
            "TG004",
            "minutes must be 1 to 1440",
        );
        assert_error(
            "SELECT * FROM triggers.metrics_history('', 5)",
            "TG004",
            "tenant",
        );
    }
}
