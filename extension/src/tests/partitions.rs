//! `#[pg_test]`s of sql/partitions.sql: the steps of moving a partition, on one
//! database (the move across databases is tests/tests/partition_move.rs).

#[pgrx::pg_schema]
mod tests {
    use crate::test_support::{assert_error, count, one, run};
    use pgrx::prelude::*;

    /// A tenant in partition 2 of 8, and one in another partition.
    fn tenants() -> (String, String) {
        let pick = |cond: &str| -> String {
            one(&format!(
                "SELECT t FROM (SELECT 't' || i AS t FROM generate_series(1, 200) i) s
                  WHERE {cond} triggers._in_partition(t, 8, 2) LIMIT 1"
            ))
        };
        (pick(""), pick("NOT"))
    }

    fn enqueue(tenant: &str) -> String {
        format!("SELECT triggers.enqueue('{{}}', tenant => '{tenant}')")
    }

    #[pg_test]
    fn a_fenced_partition_refuses_its_events_and_hides_its_work_until_unfenced() {
        let (moving, other) = tenants();
        run(&enqueue(&moving));
        run(&enqueue(&other));
        let fence = "SELECT format('%s %s', hidden, busy) FROM triggers.partition_fence(8, 2)";
        assert_eq!(one::<String>(fence), "1 0");
        assert_eq!(one::<String>(fence), "0 0", "nothing left to hide");
        assert_error(
            &enqueue(&moving),
            "57P03",
            "no longer on this node: partition 2 of 8",
        );
        assert_error(
            &format!("SELECT * FROM triggers.enqueue_batch('[{{\"payload\": {{}}}}]', '{moving}')"),
            "57P03",
            "no longer on this node",
        );
        run(&enqueue(&other));
        // Processing takes the other tenant's events only.
        run("SELECT * FROM triggers.process_batch()");
        let stored = |t: &str| {
            count(&format!(
                "SELECT count(*) FROM triggers.events WHERE tenant = '{t}'"
            ))
        };
        assert_eq!((stored(&moving), stored(&other)), (0, 2));
        // Unfenced: its message is due again, its events accepted.
        assert_eq!(one::<i64>("SELECT triggers.partition_unfence(8, 2)"), 1);
        run(&enqueue(&moving));
        run("SELECT * FROM triggers.process_batch()");
        assert_eq!(stored(&moving), 2);
    }

    #[pg_test]
    fn drop_then_import_gives_back_every_row_with_its_ids_and_positions() {
        let (moving, other) = tenants();
        run(&enqueue(&moving));
        run("SELECT * FROM triggers.process_batch(1)");
        run(&enqueue(&moving));
        run(&enqueue(&other));
        run(&format!("SELECT triggers.create_api_key('{moving}', 'k')"));
        let before: String = one(&format!(
            "SELECT string_agg(event_id || ' ' || position, ',') FROM triggers.events WHERE tenant = '{moving}'"
        ));
        run("SELECT * FROM triggers.partition_fence(8, 2)");
        // Staged as the move's COPY would: every table's rows of the partition.
        run("SELECT triggers.partition_stage()");
        run("DO $$ DECLARE t record; BEGIN
               FOR t IN SELECT * FROM triggers.partition_tables(8, 2) LOOP
                 EXECUTE format('INSERT INTO pg_temp.%I %s', 'move_' || t.name, t.query);
               END LOOP; END $$");
        assert_error(
            "SELECT * FROM triggers.partition_import(8, 2)",
            "TG007",
            "already holds tenants of partition 2 of 8",
        );
        let dropped: i64 = one("SELECT sum(rows)::bigint FROM triggers.partition_drop(8, 2)");
        assert!(dropped >= 5, "{dropped}");
        let left: i64 = one(&format!(
            "SELECT (SELECT count(*) FROM triggers.events WHERE tenant = '{moving}')
                  + (SELECT count(*) FROM pgmq.q_triggers_events WHERE message->>'tenant' = '{moving}')
                  + (SELECT count(*) FROM triggers.api_keys WHERE tenant = '{moving}')
                  + (SELECT count(*) FROM triggers.metric_totals WHERE tenant = '{moving}')
                  + (SELECT count(*) FROM triggers.lanes WHERE tenant = '{moving}')"
        ));
        assert_eq!(left, 0);
        assert_eq!(
            count(&format!(
                "SELECT count(*) FROM triggers.events WHERE tenant = '{other}'"
            )),
            0
        );
        assert_eq!(
            count(&format!(
                "SELECT count(*) FROM pgmq.q_triggers_events WHERE message->>'tenant' = '{other}'"
            )),
            1
        );

        run("SELECT * FROM triggers.partition_import(8, 2)");
        let after: String = one(&format!(
            "SELECT string_agg(event_id || ' ' || position, ',') FROM triggers.events WHERE tenant = '{moving}'"
        ));
        assert_eq!(after, before, "the same events at the same positions");
        assert_eq!(
            count("SELECT count(*) FROM pgmq.q_triggers_events WHERE vt > '3000-01-01'"),
            0,
            "fenced times given back"
        );
        assert_eq!(
            one::<String>("SELECT state FROM triggers.partition_moves WHERE part = 2"),
            "in"
        );
        let metrics: String = one(&format!("SELECT format('%s %s', triggers.metrics('{moving}')->>'total', triggers.metrics('{moving}')->>'pending')"));
        assert_eq!(metrics, "1 1", "counters as they were, not counted again");
        // Its events are taken again, and its message is processed.
        run(&enqueue(&moving));
        run("SELECT * FROM triggers.process_batch()");
        assert_eq!(
            count(&format!(
                "SELECT count(*) FROM triggers.events WHERE tenant = '{moving}'"
            )),
            3
        );
    }

    #[pg_test]
    fn partition_arguments_are_checked() {
        for sql in [
            "SELECT * FROM triggers.partition_fence(3, 0)",
            "SELECT * FROM triggers.partition_fence(0, 0)",
            "SELECT * FROM triggers.partition_fence(NULL, 0)",
            "SELECT * FROM triggers.partition_tables(2097152, 0)",
        ] {
            assert_error(sql, "TG004", "partitions must be a power of two");
        }
        for sql in [
            "SELECT * FROM triggers.partition_fence(8, 8)",
            "SELECT triggers.partition_unfence(8, -1)",
            "SELECT * FROM triggers.partition_import(8, NULL)",
            "SELECT * FROM triggers.partition_drop(2, 5)",
        ] {
            assert_error(sql, "TG004", "partition must be from 0 to partitions - 1");
        }
        assert_error(
            "SELECT * FROM triggers.partition_drop(8, 1)",
            "TG007",
            "not fenced",
        );
    }
}
