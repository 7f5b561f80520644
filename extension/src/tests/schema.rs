//! `#[pg_test]`s of sql/bootstrap.sql: what `CREATE EXTENSION triggers CASCADE` must leave behind.

#[pgrx::pg_schema]
mod tests {
    use crate::test_support::one;
    use pgrx::prelude::*;

    #[pg_test]
    fn create_extension_cascade_installs_pgmq_and_triggers() {
        let n: i64 = one("SELECT count(*) FROM pg_extension WHERE extname IN ('pgmq', 'triggers')");
        assert_eq!(n, 2);
    }

    #[pg_test]
    fn extension_lives_in_schema_triggers_and_is_not_relocatable() {
        let schema: String = one(
            "SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'triggers'",
        );
        assert_eq!(schema, "triggers");
        let relocatable: bool =
            one("SELECT extrelocatable FROM pg_extension WHERE extname = 'triggers'");
        assert!(!relocatable);
    }

    #[pg_test]
    fn version_returns_the_crate_version() {
        let v: String = one("SELECT triggers.version()");
        assert_eq!(v, env!("CARGO_PKG_VERSION"));
    }

    #[pg_test]
    fn events_table_has_every_column_of_the_spec() {
        let got: String = one(
            "SELECT string_agg(format('%s %s %s %s', column_name, data_type, is_nullable,
                                      coalesce(column_default, '-')), E'\\n' ORDER BY ordinal_position)
               FROM information_schema.columns
              WHERE table_schema = 'triggers' AND table_name = 'events'",
        );
        let want = "\
event_id uuid NO -
tenant text NO -
stream text YES -
seq bigint YES -
payload jsonb NO -
metadata jsonb YES -
status text NO -
created_at timestamp with time zone NO -
updated_at timestamp with time zone NO -
processed_at timestamp with time zone YES -
delivered_at timestamp with time zone YES -
retry_count integer NO 0
error_message text YES -
idempotency_key text YES -
manual_retries integer NO 0
position bigint YES nextval('triggers.event_positions'::regclass)";
        assert_eq!(got, want);
    }

    #[pg_test]
    fn events_primary_key_is_event_id() {
        let got: String = one(
            "SELECT string_agg(pg_get_constraintdef(oid), '; ' ORDER BY conname)
               FROM pg_constraint
              WHERE conrelid = 'triggers.events'::regclass AND contype IN ('p', 'u')",
        );
        assert_eq!(got, "PRIMARY KEY (event_id)");
    }

    #[pg_test(
        error = "duplicate key value violates unique constraint \"events_tenant_idempotency_key_key\""
    )]
    fn events_idempotency_key_is_unique_per_tenant() {
        let insert = |tenant: &str| {
            Spi::run(&format!(
                "INSERT INTO triggers.events (event_id, tenant, payload, status, created_at, updated_at, idempotency_key)
                 VALUES (gen_random_uuid(), '{tenant}', '{{}}', 'pending', now(), now(), 'k')"
            ))
            .unwrap();
        };
        insert("a");
        insert("b"); // another tenant may use the same key
        insert("a");
    }

    #[pg_test]
    fn every_function_has_a_description() {
        let missing = Spi::get_one::<String>(
            "SELECT string_agg(p.proname, ', ' ORDER BY p.proname)
               FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
              WHERE n.nspname = 'triggers' AND obj_description(p.oid, 'pg_proc') IS NULL",
        )
        .unwrap();
        assert_eq!(missing, None, "functions without COMMENT ON FUNCTION");
    }

    #[pg_test]
    fn events_indexes_cover_status_tenant_and_created_at() {
        let got: String = one(
            "SELECT string_agg(regexp_replace(indexdef, '^.* USING btree ', ''), '; ' ORDER BY indexdef)
               FROM pg_indexes WHERE schemaname = 'triggers' AND tablename = 'events'",
        );
        for want in [
            "(status, created_at)",
            "(tenant, status, created_at, event_id)",
            "(created_at)",
            "(event_id)",
            "(tenant, idempotency_key)",
        ] {
            assert!(got.contains(want), "no index on {want} in: {got}");
        }
    }

    fn insert_event(status: &str, payload: &str) {
        Spi::run(&format!(
            "INSERT INTO triggers.events (event_id, tenant, payload, status, created_at, updated_at)
             VALUES (gen_random_uuid(), 'default', {payload}, '{status}', now(), now())"
        ))
        .unwrap();
    }

    #[pg_test]
    fn events_accepts_each_status_of_the_lifecycle() {
        for status in ["pending", "delivered", "failed"] {
            insert_event(status, "'{}'");
        }
        let n: i64 = one("SELECT count(*) FROM triggers.events");
        assert_eq!(n, 3);
    }

    #[pg_test(
        error = "new row for relation \"events\" violates check constraint \"events_status_check\""
    )]
    fn events_check_rejects_an_unknown_status() {
        insert_event("processing", "'{}'");
    }

    #[pg_test(
        error = "null value in column \"payload\" of relation \"events\" violates not-null constraint"
    )]
    fn events_payload_cannot_be_null() {
        insert_event("pending", "NULL");
    }

    #[pg_test(
        error = "new row for relation \"events\" violates check constraint \"events_payload_check\""
    )]
    fn events_payload_must_be_an_object() {
        insert_event("pending", "'[1, 2]'");
    }

    #[pg_test]
    fn config_holds_the_spec_defaults() {
        let got: String = one(
            "SELECT format('%s %s %s %s %s %s %s', max_retries, backoff_base_ms, backoff_cap_ms,
                           max_payload_bytes, batch_size, visibility_timeout_s, notify_throttle_ms)
               FROM triggers.config",
        );
        assert_eq!(got, "3 1000 300000 1048576 100 30 100");
        let rows: i64 = one("SELECT count(*) FROM triggers.config");
        assert_eq!(rows, 1);
    }

    #[pg_test(
        error = "new row for relation \"config\" violates check constraint \"config_max_retries_check\""
    )]
    fn config_rejects_an_out_of_range_setting() {
        Spi::run("UPDATE triggers.config SET max_retries = -1").unwrap();
    }

    #[pg_test(error = "duplicate key value violates unique constraint \"config_pkey\"")]
    fn config_has_only_one_row() {
        Spi::run("INSERT INTO triggers.config DEFAULT VALUES").unwrap();
    }

    #[pg_test]
    fn pgmq_queues_exist_for_events_and_dead_letters() {
        let got: String = one(
            "SELECT string_agg(queue_name, ',' ORDER BY queue_name) FROM pgmq.list_queues()
              WHERE queue_name LIKE 'triggers%'",
        );
        assert_eq!(got, "triggers_events,triggers_events_dlq");
        // The queue really works: a message goes in and comes back out.
        let id: i64 = one("SELECT * FROM pgmq.send('triggers_events', '{\"probe\": true}')");
        let read: i64 = one("SELECT msg_id FROM pgmq.read('triggers_events', 30, 1)");
        assert_eq!(id, read);
    }

    /// The columns of one table, as "name type [default]", in order.
    fn layout(table: &str) -> String {
        one(&format!(
            "SELECT string_agg(concat_ws(' ', a.attname, format_type(a.atttypid, a.atttypmod),
                                         nullif(a.attidentity, ''), pg_get_expr(d.adbin, d.adrelid)),
                               ', ' ORDER BY a.attnum)
               FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
              WHERE a.attrelid = '{table}'::regclass AND a.attnum > 0 AND NOT a.attisdropped"
        ))
    }

    /// The SQL API writes pgmq's tables with static SQL (sql/enqueue.sql, process.sql,
    /// dlq.sql, retention.sql) instead of calling pgmq's functions. This pins the layout
    /// it relies on: a pgmq upgrade that changes it fails here, not in production.
    #[pg_test]
    fn pgmq_queue_tables_have_the_layout_the_static_sql_relies_on() {
        let queue = "msg_id bigint a, read_ct integer 0, enqueued_at timestamp with time zone now(), \
                     last_read_at timestamp with time zone, vt timestamp with time zone, message jsonb, headers jsonb";
        assert_eq!(layout("pgmq.q_triggers_events"), queue);
        assert_eq!(layout("pgmq.q_triggers_events_dlq"), queue);
        let archive = "msg_id bigint, read_ct integer 0, enqueued_at timestamp with time zone now(), \
                       last_read_at timestamp with time zone, archived_at timestamp with time zone now(), \
                       vt timestamp with time zone, message jsonb, headers jsonb";
        assert_eq!(layout("pgmq.a_triggers_events"), archive);
        assert_eq!(layout("pgmq.a_triggers_events_dlq"), archive);
        // process_batch claims by msg_id order with vt <= now, and reads a message's last
        // claimant from its xmax: a heap table with these indexes.
        let indexes: String = one(
            "SELECT string_agg(indexdef, '; ' ORDER BY indexname) FROM pg_indexes
              WHERE schemaname = 'pgmq' AND tablename = 'q_triggers_events'",
        );
        assert_eq!(
            indexes,
            "CREATE INDEX q_triggers_events_alone_idx ON pgmq.q_triggers_events USING btree (msg_id) \
             WHERE ((headers ? 'alone'::text) AND (NOT (headers ? 'seq'::text))); \
             CREATE INDEX q_triggers_events_lane_idx ON pgmq.q_triggers_events USING btree \
             (COALESCE((headers ->> 'tenant'::text), ''::text), msg_id) \
             WHERE (NOT COALESCE((headers ? 'seq'::text), false)); \
             CREATE UNIQUE INDEX q_triggers_events_pkey ON pgmq.q_triggers_events USING btree (msg_id); \
             CREATE INDEX q_triggers_events_stream_idx ON pgmq.q_triggers_events USING btree \
             (((headers ->> 'tenant'::text)), ((headers ->> 'stream'::text)), \
             (((headers ->> 'seq'::text))::bigint)) WHERE (headers ? 'seq'::text); \
             CREATE INDEX q_triggers_events_vt_idx ON pgmq.q_triggers_events USING btree (vt)"
        );
        let am: String = one(
            "SELECT amname::text FROM pg_class c JOIN pg_am a ON a.oid = c.relam
                               WHERE c.oid = 'pgmq.q_triggers_events'::regclass",
        );
        assert_eq!(am, "heap");
        // The claim's safe horizon (claim.sql) reads the msg_id sequence: every value up
        // to its last_value must have been handed out, so no session may cache values.
        let cache: i64 = one("SELECT cache_size FROM pg_sequences
                               WHERE schemaname = 'pgmq' AND sequencename = 'q_triggers_events_msg_id_seq'");
        assert_eq!(cache, 1);
    }
}
