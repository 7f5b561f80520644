//! `#[pg_test]`s of sql/metrics.sql: exact counts, the per-minute history, and the
//! counters that only grow (Prometheus).

#[pgrx::pg_schema]
mod tests {
    use crate::test_support::{
        advance_clock, assert_error, count, enqueue_and_process, fast_retries, freeze_clock, one,
        run,
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

    #[pg_test]
    fn counters_follow_each_event_through_its_life() {
        freeze_clock();
        fast_retries(1);
        let enqueue = |args: &str| {
            run(&format!(
                "SELECT triggers.enqueue('{{}}', tenant => 'ctr'{args})"
            ))
        };
        enqueue(", idempotency_key => 'k1'");
        enqueue("");
        enqueue(", idempotency_key => 'k1'"); // a repeat: not queued, not counted
        run(
            r#"SELECT triggers.enqueue_batch('[{"payload":{}},{"payload":{},"idempotency_key":"k1"}]', 'ctr')"#,
        );
        enqueue(", debug => 'processing_error'");
        enqueue(", debug => 'dlq_routing'");
        let enqueued = || count("SELECT (triggers.counters('ctr')->>'enqueued')::bigint");
        assert_eq!(enqueued(), 5, "queued, none processed yet");
        advance_clock(30);
        // Three stored 30 ms after they were sent; processing_error backs off once;
        // dlq_routing goes straight to the dead-letter queue.
        run("SELECT * FROM triggers.process_batch(1000)");
        assert_eq!(enqueued(), 5, "four recorded, one backing off in the queue");
        advance_clock(10);
        // processing_error's second attempt is past max_retries (1): dead-lettered.
        run("SELECT * FROM triggers.process_batch(1000)");
        let plain: String = one("SELECT event_id::text FROM triggers.events WHERE tenant = 'ctr' AND status = 'pending' LIMIT 1");
        run(&format!("SELECT triggers.ack('{plain}', 'ctr')"));
        let failed: String = one("SELECT event_id::text FROM triggers.events WHERE tenant = 'ctr' AND error_message LIKE '%processing_error%'");
        run(&format!("SELECT triggers.retry('{failed}', 'ctr')"));
        advance_clock(5);
        // The manual retry carries no debug flag: stored, 45 ms after it was first sent.
        run("SELECT * FROM triggers.process_batch(1000)");
        run("SELECT triggers.redrive('ctr')");

        let check = |when: &str| {
            let c: pgrx::JsonB = one("SELECT triggers.counters('ctr')");
            let c = c.0;
            for (name, want) in [
                ("enqueued", 5),
                ("stored", 4),
                ("retried", 3),
                ("dead_lettered", 2),
                ("acknowledged", 1),
                ("latency_count", 4),
            ] {
                assert_eq!(c[name], want, "{name} {when}: {c}");
            }
            let sum = c["latency_sum_s"].as_f64().unwrap();
            assert!((sum - 0.135).abs() < 1e-9, "3 × 30 ms + 45 ms {when}: {c}");
            let buckets = c["latency_buckets"].as_array().unwrap();
            assert_eq!(buckets.len(), 16, "{c}");
            let at = |le: f64| {
                buckets
                    .iter()
                    .find(|b| (b["le_s"].as_f64().unwrap() - le).abs() / le < 0.06)
                    .unwrap()["count"]
                    .clone()
            };
            assert_eq!(at(0.025), 0, "none at or below ~25 ms {when}: {c}");
            assert_eq!(at(0.05), 4, "all at or below ~50 ms {when}: {c}");
            assert_eq!(at(300.0), 4, "{c}");
            let counts: Vec<i64> = buckets
                .iter()
                .map(|b| b["count"].as_i64().unwrap())
                .collect();
            assert!(
                counts.windows(2).all(|w| w[0] <= w[1]),
                "cumulative {when}: {c}"
            );
        };
        check("before the fold");
        run("SELECT triggers._fold_metrics()");
        check("after the fold");
        let all: pgrx::JsonB = one("SELECT triggers.counters()");
        assert!(all.0["enqueued"].as_i64().unwrap() >= 5);
        assert_error("SELECT triggers.counters('')", "TG004", "tenant");
    }
}
