//! Upgrading in place: a database created at the first release (0.1.0, its install
//! script kept in extension/releases/) with events, keys, an endpoint and metrics is
//! taken to the current version by `ALTER EXTENSION triggers UPDATE` (the scripts in
//! extension/sql/), keeps every one of them, and ends with the same catalog as a fresh
//! install of the current version: every function's definition, column, index,
//! constraint, trigger, type, comment and grant of the extension (a catalog diff).

use std::collections::BTreeSet;

use triggers_tests::{connect, empty_database, scalar, test_database};

const FIRST_RELEASE: &str = "0.1.0";
const SECRETS_KEY: &str = "upgrade-test-secrets-key-0123456789abcdef";

/// The extension's schema as sorted lines, one per object, each with what defines it.
async fn catalog(db: &tokio_postgres::Client) -> BTreeSet<String> {
    let sql = r#"
        WITH ns AS (SELECT oid, nspname FROM pg_namespace WHERE nspname IN ('triggers', 'pgmq')),
        rels AS (SELECT c.oid, c.relname, c.relkind, ns.nspname FROM pg_class c JOIN ns ON ns.oid = c.relnamespace)
        SELECT 'member ' || pg_describe_object(d.classid, d.objid, d.objsubid)
          FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
         WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e' AND e.extname = 'triggers'
        UNION ALL
        SELECT 'function ' || p.oid::regprocedure || ' ' || pg_get_functiondef(p.oid)
               || ' acl=' || coalesce(p.proacl::text, '-') || ' comment=' || coalesce(obj_description(p.oid, 'pg_proc'), '-')
          FROM pg_proc p JOIN ns ON ns.oid = p.pronamespace WHERE p.prokind IN ('f', 'p')
        UNION ALL
        SELECT 'column ' || r.nspname || '.' || r.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
               || ' notnull=' || a.attnotnull || ' default=' || coalesce(pg_get_expr(ad.adbin, ad.adrelid), '-')
          FROM rels r JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
          LEFT JOIN pg_attrdef ad ON ad.adrelid = r.oid AND ad.adnum = a.attnum
         WHERE r.relkind IN ('r', 'c', 'v', 'p')
        UNION ALL
        SELECT 'relation ' || r.nspname || '.' || r.relname || ' kind=' || r.relkind::text
               || ' comment=' || coalesce(obj_description(r.oid, 'pg_class'), '-')
               || ' acl=' || coalesce((SELECT c.relacl::text FROM pg_class c WHERE c.oid = r.oid), '-')
          FROM rels r
        UNION ALL
        SELECT 'index ' || i.schemaname || '.' || i.indexname || ' ' || i.indexdef
          FROM pg_indexes i WHERE i.schemaname IN ('triggers', 'pgmq')
        UNION ALL
        SELECT 'constraint ' || r.nspname || '.' || r.relname || '.' || c.conname || ' ' || pg_get_constraintdef(c.oid)
          FROM pg_constraint c JOIN rels r ON r.oid = c.conrelid
        UNION ALL
        SELECT 'trigger ' || pg_get_triggerdef(t.oid)
          FROM pg_trigger t JOIN rels r ON r.oid = t.tgrelid WHERE NOT t.tgisinternal
        UNION ALL
        SELECT 'type ' || ns.nspname || '.' || t.typname || ' ' || t.typtype::text
          FROM pg_type t JOIN ns ON ns.oid = t.typnamespace
        UNION ALL
        SELECT 'sequence ' || s.schemaname || '.' || s.sequencename || ' ' || s.data_type || ' ' || s.increment_by
          FROM pg_sequences s WHERE s.schemaname IN ('triggers', 'pgmq')
        UNION ALL
        SELECT 'config ' || array_to_string(e.extconfig::regclass[]::text[], ',') || ' ' || coalesce(array_to_string(e.extcondition, ','), '-')
          FROM pg_extension e WHERE e.extname = 'triggers'
    "#;
    db.query(sql, &[])
        .await
        .expect("catalog")
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_first_release_upgrades_in_place_keeping_its_data_to_a_fresh_installs_schema() {
    let config = empty_database("upgrade_old").await;
    let old = connect(&config).await;
    old.batch_execute(&format!(
        "CREATE EXTENSION triggers VERSION '{FIRST_RELEASE}' CASCADE;
         SELECT set_config('triggers.secrets_key', '{SECRETS_KEY}', false);"
    ))
    .await
    .expect("the first release installs");
    // What a user of the first release has: stored, delivered and failed events, an
    // acknowledgement, an idempotency key, a stream, a key, an endpoint.
    old.batch_execute(
        "SELECT triggers.enqueue('{\"n\": 1}', tenant => 'a', idempotency_key => 'k1');
         SELECT triggers.enqueue('{\"n\": 2}', tenant => 'a', stream => 's');
         SELECT triggers.enqueue('{\"n\": 3}', tenant => 'b');
         SELECT triggers.enqueue('{\"n\": 4}', tenant => 'b', debug => 'dlq_routing');
         SELECT * FROM triggers.process_batch(100);
         SELECT triggers.ack(event_id, tenant) FROM triggers.events WHERE payload->>'n' = '1';",
    )
    .await
    .expect("events");
    let key: String = old
        .query_one("SELECT triggers.create_api_key('a', 'old key')", &[])
        .await
        .unwrap()
        .get(0);
    let endpoint: uuid::Uuid = old
        .query_one(
            "SELECT endpoint_id FROM triggers.create_endpoint('a', 'https://example.com/hooks')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let snapshot = "SELECT jsonb_build_object(
            'metrics', triggers.metrics(NULL) - 'processing_rate_per_min' - 'oldest_queued_age_s' - 'latency_ms',
            'events', (SELECT jsonb_agg(jsonb_build_array(event_id, status, payload, stream, seq) ORDER BY event_id) FROM triggers.events),
            'keys', (SELECT jsonb_agg(key_id ORDER BY key_id) FROM triggers.api_keys),
            'endpoints', (SELECT jsonb_agg(jsonb_build_array(endpoint_id, url)) FROM triggers.webhook_endpoints),
            'dlq', (SELECT count(*) FROM pgmq.q_triggers_events_dlq))::text";
    let before: String = old.query_one(snapshot, &[]).await.unwrap().get(0);

    old.batch_execute("ALTER EXTENSION triggers UPDATE")
        .await
        .expect("ALTER EXTENSION triggers UPDATE");
    let version: String = old
        .query_one(
            "SELECT extversion FROM pg_extension WHERE extname = 'triggers'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        version,
        env!("CARGO_PKG_VERSION"),
        "updated to the current version"
    );
    let after: String = old.query_one(snapshot, &[]).await.unwrap().get(0);
    assert_eq!(after, before, "every event, key, endpoint and metric kept");
    // Still working: the old key, the endpoint's sealed secret, processing; and what the
    // new version added.
    let tenant: String = old
        .query_one("SELECT triggers.authenticate($1)", &[&key])
        .await
        .unwrap()
        .get(0);
    assert_eq!(tenant, "a");
    let secrets: Vec<String> = old
        .query_one("SELECT triggers._endpoint_secrets($1)", &[&endpoint])
        .await
        .unwrap()
        .get(0);
    assert_eq!(secrets.len(), 1);
    old.batch_execute(
        "SELECT triggers.enqueue('{\"n\": 5}', tenant => 'a'); SELECT * FROM triggers.process_batch(100);",
    )
    .await
    .unwrap();
    assert_eq!(
        scalar(&old, "SELECT count(*) FROM triggers.events").await,
        5
    );
    let expiring: String = old
        .query_one(
            "SELECT triggers.create_api_key('a', 'new key', expires_at => now() + interval '1 hour')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(expiring.starts_with("trg_"));

    // The same schema as a fresh install of the current version.
    let fresh = connect(&test_database("upgrade_fresh").await).await;
    let (upgraded, installed) = (catalog(&old).await, catalog(&fresh).await);
    let only_upgraded: Vec<&String> = upgraded.difference(&installed).collect();
    let only_fresh: Vec<&String> = installed.difference(&upgraded).collect();
    assert!(
        only_upgraded.is_empty() && only_fresh.is_empty(),
        "the upgraded schema differs from a fresh install's:\n only after the upgrade: {only_upgraded:#?}\n only in a fresh install: {only_fresh:#?}"
    );
    assert!(
        upgraded.len() > 300,
        "the catalog was read: {} lines",
        upgraded.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_started_on_a_first_release_database_upgrades_it() {
    let config = empty_database("upgrade_serve").await;
    let db = connect(&config).await;
    db.batch_execute(&format!(
        "CREATE EXTENSION triggers VERSION '{FIRST_RELEASE}' CASCADE;
         SELECT triggers.enqueue('{{\"n\": 1}}', tenant => 't');"
    ))
    .await
    .unwrap();
    let mut command = triggers_tests::triggers(&["serve"]);
    command
        .env("DATABASE_URL", triggers_tests::database_url(&config))
        .args([
            "--listen",
            &format!("127.0.0.1:{}", triggers_tests::free_port()),
        ]);
    let _server = triggers_tests::Server::start(command);
    let version: String = db
        .query_one(
            "SELECT extversion FROM pg_extension WHERE extname = 'triggers'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, env!("CARGO_PKG_VERSION"));
    triggers_tests::wait_until("the old event stored by the new version", || async {
        scalar(&db, "SELECT count(*) FROM triggers.events").await == 1
    })
    .await;
}
