-- triggers: runs last in CREATE EXTENSION, once every SQL and Rust function exists.
-- The same block ends extension/sql/triggers--0.1.0--0.2.0.sql (tests/tests/upgrade.rs
-- holds the two catalogs equal, grants included).

-- Nothing for PUBLIC: the four roles of roles.sql carry the grants.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA triggers FROM PUBLIC;

-- Who each entry point runs as: the extension's owner, so that a role needs EXECUTE on
-- it and nothing on any table (a role that may read its tenant's inbox may not SELECT
-- from triggers.events); with the system catalog as its search_path, so that a caller's
-- search_path cannot change what a name in it means. The entry points are the functions
-- without a leading underscore, and the internal ones a server or a PL/Proxy proxy
-- calls by name. The helpers they call run in the same context.
DO $$
DECLARE
    v_fn regprocedure;
BEGIN
    FOR v_fn IN
        SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
         WHERE p.pronamespace = 'triggers'::regnamespace
           AND p.prolang <> (SELECT l.oid FROM pg_catalog.pg_language l WHERE l.lanname = 'c')
           AND (p.proname !~ '^_' OR p.proname IN (
                    '_key_record', '_key_ids', '_claim_deliveries', '_delivery_events',
                    '_record_attempts', '_endpoint_secrets', '_create_endpoint_keyed',
                    '_rotate_endpoint_secret_keyed', '_metrics_parts', '_webhook_metrics_parts',
                    '_latency_minutes', '_node'))
         ORDER BY p.oid
    LOOP
        EXECUTE format('ALTER FUNCTION %s SECURITY DEFINER SET search_path = pg_catalog, pg_temp', v_fn);
    END LOOP;
END $$;

GRANT USAGE ON SCHEMA triggers TO triggers_producer, triggers_consumer, triggers_worker, triggers_admin;

-- Producers: queue events.
GRANT EXECUTE ON FUNCTION triggers.enqueue, triggers.enqueue_ex, triggers.enqueue_batch,
    triggers.enqueue_batch_ex, triggers.version
    TO triggers_producer;

-- Consumers: read, acknowledge and retry events, follow the live stream, see metrics,
-- manage webhook endpoints and their deliveries.
GRANT EXECUTE ON FUNCTION triggers.inbox, triggers.get_event, triggers.ack, triggers.retry,
    triggers.dead_letters, triggers.redrive, triggers.streams, triggers.stream,
    triggers.resume_stream, triggers.stored, triggers.stored_horizon, triggers.metrics,
    triggers.counters, triggers.metrics_history, triggers.queue_depth, triggers.create_endpoint,
    triggers.endpoints, triggers.endpoint, triggers.update_endpoint,
    triggers.rotate_endpoint_secret, triggers.delete_endpoint, triggers.deliveries,
    triggers.resend, triggers.recover, triggers.delivery_attempts, triggers.webhook_metrics,
    triggers.version
    TO triggers_consumer;

-- Workers: process the queue, deliver webhooks (the secrets they sign with included),
-- check API keys, read the settings and per-tenant limits: what a server runs.
GRANT EXECUTE ON FUNCTION triggers.process_batch, triggers.authenticate,
    triggers.authenticate_key, triggers.revoked_keys, triggers._key_record, triggers._key_ids,
    triggers._claim_deliveries, triggers._delivery_events, triggers._record_attempts,
    triggers._endpoint_secrets, triggers.tenant_limits, triggers.queue_depth, triggers.version
    TO triggers_worker;
GRANT SELECT ON triggers.config TO triggers_worker;

-- Admins: everything above (roles.sql makes them members), API keys, retention, tenant
-- bindings, moving partitions, and what a PL/Proxy proxy calls on a node.
GRANT EXECUTE ON FUNCTION triggers.create_api_key, triggers.revoke_api_key, triggers.purge,
    triggers.grant_tenant, triggers.revoke_tenant, triggers.tenant_grants,
    triggers.partition_tables, triggers.partition_fence, triggers.partition_unfence,
    triggers.partition_stage, triggers.partition_import, triggers.partition_drop,
    triggers._create_endpoint_keyed, triggers._rotate_endpoint_secret_keyed,
    triggers._metrics_parts, triggers._webhook_metrics_parts, triggers._latency_minutes,
    triggers._node
    TO triggers_admin;
