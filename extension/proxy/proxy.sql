-- triggers_proxy: the triggers SQL API in a proxy database, each call run by PL/Proxy
-- on the node that owns its tenant. Installed after combine.sql (the same figures from
-- parts as a node's). The cluster is named `triggers`, configured the standard way:
--   CREATE SERVER triggers FOREIGN DATA WRAPPER plproxy OPTIONS (p0 '…', p1 '…', …);
--   CREATE USER MAPPING FOR … SERVER triggers OPTIONS (user '…', password '…');
-- with a power-of-two number of partitions, several per node. A tenant's partition is
-- hashtext(tenant) & (partitions - 1); every node is a plain `triggers` install.
-- Signatures equal a node's (tests/tests/proxy.rs holds them to it).

-- The row types the API returns, as a node defines them.
CREATE TYPE triggers.events AS (
    event_id uuid, tenant text, stream text, seq bigint, payload jsonb, metadata jsonb,
    status text, created_at timestamptz, updated_at timestamptz, processed_at timestamptz,
    delivered_at timestamptz, retry_count integer, error_message text, idempotency_key text,
    manual_retries integer, position bigint);
CREATE TYPE triggers.inbox_row AS (
    event_id uuid, status text, payload jsonb, metadata jsonb, stream text, seq bigint,
    created_at timestamptz, updated_at timestamptz, processed_at timestamptz,
    delivered_at timestamptz, retry_count int, error_message text, idempotency_key text,
    cursor text, more boolean);
CREATE TYPE triggers.stored_row AS (
    position bigint, tenant text, event_id uuid, status text, payload jsonb, metadata jsonb,
    stream text, seq bigint, created_at timestamptz, updated_at timestamptz,
    processed_at timestamptz, delivered_at timestamptz, retry_count int, error_message text,
    idempotency_key text);
CREATE TYPE triggers.endpoint_row AS (
    endpoint_id uuid, url text, filter jsonb, description text, enabled boolean,
    disabled_reason text, rotating_until timestamptz, created_at timestamptz, updated_at timestamptz);
CREATE TYPE triggers.delivery_row AS (
    delivery_id bigint, endpoint_id uuid, event_id uuid, status text, attempts integer,
    next_attempt_at timestamptz, created_at timestamptz, finished_at timestamptz,
    last_status_code integer, last_latency_ms integer, last_error text);
CREATE TYPE triggers.attempt_row AS (
    delivery_id bigint, endpoint_id uuid, attempt integer, attempted_at timestamptz,
    status_code integer, latency_ms integer, response text, error text);

-- Partitions paused while they move to another node (`triggers partitions move`): their
-- calls are refused with 57P03 until the move is done. Empty the rest of the time.
CREATE TABLE triggers.paused_partitions (
    part      integer     PRIMARY KEY CHECK (part >= 0),
    paused_at timestamptz NOT NULL DEFAULT now()
);

/* The cluster's partitions: each one's entry (`p0 '…'`, `p1 '…'`, …), in order. */
CREATE FUNCTION triggers.partition_entries() RETURNS SETOF text
LANGUAGE sql STABLE AS $$
    SELECT substr(o, strpos(o, '=') + 1)
      FROM pg_catalog.pg_foreign_server s, unnest(s.srvoptions) o
     WHERE s.srvname = 'triggers' AND o ~ '^p[0-9]+='
     ORDER BY substr(o, 2, strpos(o, '=') - 2)::int
$$;
COMMENT ON FUNCTION triggers.partition_entries IS 'Each partition''s connection string in the cluster `triggers`, in order.';

/* How many partitions the cluster has. */
CREATE FUNCTION triggers._partitions() RETURNS int
LANGUAGE sql STABLE AS $$ SELECT count(*)::int FROM triggers.partition_entries() $$;
COMMENT ON FUNCTION triggers._partitions IS 'Internal: how many partitions the cluster `triggers` has.';

/* `hash`, unless its partition is paused: then 57P03, which callers retry. */
CREATE FUNCTION triggers._unless_paused(hash int) RETURNS int
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_part int := hash & (triggers._partitions() - 1);
BEGIN
    IF EXISTS (SELECT 1 FROM triggers.paused_partitions p WHERE p.part = v_part) THEN
        RAISE EXCEPTION USING ERRCODE = '57P03',
            MESSAGE = format('partition %s is moving to another node; retry in a moment', v_part);
    END IF;
    RETURN hash;
END $$;
COMMENT ON FUNCTION triggers._unless_paused IS 'Internal: a routing hash, or 57P03 while its partition is paused.';

-- Login roles bound to one tenant (grant_tenant), as on a node (sql/roles.sql): the
-- proxy is where a bound role's calls come in, so its routing checks the binding.
CREATE TABLE triggers.tenant_roles (
    role       regrole     PRIMARY KEY,
    tenant     text        NOT NULL CHECK (tenant <> ''),
    granted_at timestamptz NOT NULL DEFAULT now()
);

/* `tenant`, unless the session's role is bound to another (TG011); NULL is every tenant. */
CREATE FUNCTION triggers._allowed(tenant text) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_bound text;
BEGIN
    SELECT r.tenant INTO v_bound FROM triggers.tenant_roles r WHERE r.role = session_user::regrole;
    IF FOUND AND v_bound IS DISTINCT FROM tenant THEN
        RAISE EXCEPTION USING ERRCODE = 'TG011',
            MESSAGE = format('role %s acts only for tenant %s, not for %s', session_user, v_bound,
                             coalesce(tenant, 'every tenant'));
    END IF;
    RETURN tenant;
END $$;
COMMENT ON FUNCTION triggers._allowed IS 'Internal: a tenant, or TG011 when the session''s role is bound to another.';

/*
 * A routing hash, checked against the paused partitions and the bound roles only while
 * there are any. In every call: plpgsql, so that its query's plan is kept (a SQL
 * function with a subquery is planned again at each call: ~5 times the cost).
 */
CREATE FUNCTION triggers._open(hash int, tenant text) RETURNS int
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM triggers.paused_partitions) OR EXISTS (SELECT 1 FROM triggers.tenant_roles) THEN
        PERFORM triggers._allowed(tenant);
        RETURN triggers._unless_paused(hash);
    END IF;
    RETURN hash;
END $$;
COMMENT ON FUNCTION triggers._open IS 'Internal: a routing hash, unless its partition is paused or the caller may not act for the tenant.';

/*
 * The hash a tenant's calls run on: its partition is this & (partitions - 1). A NULL
 * tenant goes where '' would, and that node refuses it as a node would.
 */
CREATE FUNCTION triggers._route(tenant text) RETURNS int
LANGUAGE sql STABLE AS $$ SELECT triggers._open(hashtext(coalesce(tenant, '')), coalesce(tenant, '')) $$;
COMMENT ON FUNCTION triggers._route IS 'Internal: the hash PL/Proxy routes a tenant''s calls by.';

/* The hash a key's calls run on: the tenant hash it carries, else partition 0 (which refuses it). */
CREATE FUNCTION triggers._key_hash(token text) RETURNS int
LANGUAGE sql STABLE AS $$ SELECT triggers._open(coalesce(triggers._key_route(token), 0), NULL) $$;
COMMENT ON FUNCTION triggers._key_hash IS 'Internal: the hash PL/Proxy routes an API key''s calls by.';

/* The partition of a tenant, out of `partitions` (a power of two): for operators. */
CREATE FUNCTION triggers.partition_of(tenant text, partitions int) RETURNS int
LANGUAGE sql IMMUTABLE AS $$ SELECT hashtext(coalesce(tenant, '')) & (partitions - 1) $$;
COMMENT ON FUNCTION triggers.partition_of IS 'The PL/Proxy partition a tenant''s calls run on, out of `partitions`.';

/* Pauses a partition: its calls are refused (57P03) until partition_resume. */
CREATE FUNCTION triggers.partition_pause(part int) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO triggers.paused_partitions (part) VALUES (partition_pause.part) ON CONFLICT DO NOTHING
$$;
COMMENT ON FUNCTION triggers.partition_pause IS 'Refuses a partition''s calls (57P03) until partition_resume: while it moves.';

CREATE FUNCTION triggers.partition_resume(part int) RETURNS void
LANGUAGE sql AS $$ DELETE FROM triggers.paused_partitions p WHERE p.part = partition_resume.part $$;
COMMENT ON FUNCTION triggers.partition_resume IS 'Serves a paused partition''s calls again.';

/* Which database serves partition `part` (for checking a move's entries). */
CREATE FUNCTION triggers.partition_node(part int) RETURNS text
LANGUAGE plproxy AS $$ CLUSTER 'triggers'; RUN ON part; TARGET triggers._node; $$;
COMMENT ON FUNCTION triggers.partition_node IS 'The database that serves a partition: database, port and start time.';

/* This proxy's version: the API it speaks is that of the same triggers version. */
CREATE FUNCTION triggers.version() RETURNS text
LANGUAGE sql STABLE AS $$ SELECT e.extversion FROM pg_catalog.pg_extension e WHERE e.extname = 'triggers_proxy' $$;
COMMENT ON FUNCTION triggers.version IS 'The version of the triggers API this proxy serves.';

-- Calls of one tenant: run on its node, as they are.

CREATE FUNCTION triggers.enqueue(payload jsonb, metadata jsonb DEFAULT NULL, tenant text DEFAULT 'default',
    idempotency_key text DEFAULT NULL, stream text DEFAULT NULL, debug text DEFAULT NULL) RETURNS uuid
LANGUAGE plproxy AS $$ CLUSTER 'triggers'; RUN ON triggers._route(tenant); $$;

CREATE FUNCTION triggers.enqueue_ex(payload jsonb, metadata jsonb DEFAULT NULL, tenant text DEFAULT 'default',
    idempotency_key text DEFAULT NULL, stream text DEFAULT NULL, debug text DEFAULT NULL,
    OUT event_id uuid, OUT duplicate boolean)
LANGUAGE plproxy AS $$ CLUSTER 'triggers'; RUN ON triggers._route(tenant); $$;

CREATE FUNCTION triggers.enqueue_batch(events jsonb, tenant text DEFAULT 'default') RETURNS SETOF uuid
LANGUAGE plproxy AS $$ CLUSTER 'triggers'; RUN ON triggers._route(tenant); $$;

CREATE FUNCTION triggers.enqueue_batch_ex(events jsonb, tenant text DEFAULT 'default')
RETURNS TABLE(event_id uuid, duplicate boolean)
LANGUAGE plproxy AS $$ CLUSTER 'triggers'; RUN ON triggers._route(tenant); $$;

CREATE FUNCTION triggers.get_event(event_id uuid, tenant text DEFAULT 'default') RETURNS triggers.events
LANGUAGE plproxy AS $$ CLUSTER 'triggers'; RUN ON triggers._route(tenant); $$;

CREATE FUNCTION triggers.ack(event_id uuid, tenant text DEFAULT 'default') RETURNS triggers.events
LANGUAGE plproxy AS $$ CLUSTER 'triggers'; RUN ON triggers._route(tenant); $$;

CREATE FUNCTION triggers.retry(event_id uuid, tenant text DEFAULT 'default') RETURNS integer
LANGUAGE plproxy AS $$ CLUSTER 'triggers'; RUN ON triggers._route(tenant); $$;

CREATE FUNCTION triggers.inbox(tenant text, status text[] DEFAULT '{pending,delivered,failed}',
    after_cursor text DEFAULT NULL, lim integer DEFAULT 50, from_time timestamptz DEFAULT NULL,
    to_time timestamptz DEFAULT NULL, stream text DEFAULT NULL, metadata_contains jsonb DEFAULT NULL,
    payload_contains jsonb DEFAULT NULL, min_retry_count integer DEFAULT NULL,
    max_retry_count integer DEFAULT NULL, "order" text DEFAULT 'asc', max_bytes integer DEFAULT 4194304)
RETURNS SETOF triggers.inbox_row
LANGUAGE plproxy AS $$ CLUSTER 'triggers'; RUN ON triggers._route(tenant); $$;

CREATE FUNCTION triggers.dead_letters(tenant text DEFAULT 'default', lim integer DEFAULT 50)
RETURNS TABLE(msg_id bigint, event_id uuid, error text, attempts integer, failed_at timestamptz, message jsonb)
LANGUAGE plproxy AS $$ CLUSTER 'triggers'; RUN ON triggers._route(tenant); $$;

CREATE FUNCTION triggers.redrive(tenant text DEFAULT 'default', lim integer DEFAULT 100) RETURNS integer
LANGUAGE plproxy AS $$ CLUSTER 'triggers'; RUN ON triggers._route(tenant); $$;

CREATE FUNCTION triggers.streams(tenant text, lim integer DEFAULT 50, after_cursor text DEFAULT NULL)
RETURNS TABLE(stream text, last_seq bigint, done_seq bigint, state text, blocking_event uuid,
              blocking_error text, next_attempt_at timestamptz, cursor text)
LANGUAGE plproxy AS $$ CLUSTER 'triggers'; RUN ON triggers._route(tenant); $$;

CREATE FUNCTION triggers.stream(tenant text, name text)
RETURNS TABLE(stream text, last_seq bigint, done_seq bigint, state text, blocking_event uuid,
              blocking_error text, next_attempt_at timestamptz, cursor text)
LANGUAGE plproxy AS $$ CLUSTER 'triggers'; RUN ON triggers._route(tenant); $$;

CREATE FUNCTION triggers.resume_stream(tenant text, stream text) RETURNS bigint
LANGUAGE plproxy AS $$ CLUSTER 'triggers'; RUN ON triggers._route(tenant); $$;

CREATE FUNCTION triggers.create_api_key(tenant text, name text DEFAULT 'default',
    expires_at timestamptz DEFAULT NULL) RETURNS text
LANGUAGE plproxy AS $$ CLUSTER 'triggers'; RUN ON triggers._route(tenant); $$;

CREATE FUNCTION triggers.revoke_api_key(tenant text, api_key text) RETURNS boolean
LANGUAGE plproxy AS $$ CLUSTER 'triggers'; RUN ON triggers._route(tenant); $$;

-- Making and rotating a secret seals it with the secrets key: the caller's session
-- setting triggers.secrets_key, passed to the node with the call (PL/Proxy's
-- connections carry no setting of the caller's).
CREATE FUNCTION triggers._create_endpoint_keyed(secrets_key text, tenant text, url text, filter jsonb,
    description text, OUT endpoint_id uuid, OUT secret text)
LANGUAGE plproxy AS $$ CLUSTER 'triggers'; RUN ON triggers._route(tenant); $$;

CREATE FUNCTION triggers.create_endpoint(tenant text, url text, filter jsonb DEFAULT NULL,
    description text DEFAULT NULL, OUT endpoint_id uuid, OUT secret text)
LANGUAGE sql AS $$
    SELECT * FROM triggers._create_endpoint_keyed(current_setting('triggers.secrets_key', true), tenant, url,
                                                  filter, description)
$$;

CREATE FUNCTION triggers.endpoints(tenant text) RETURNS SETOF triggers.endpoint_row
LANGUAGE plproxy AS $$ CLUSTER 'triggers'; RUN ON triggers._route(tenant); $$;

CREATE FUNCTION triggers.endpoint(tenant text, endpoint_id uuid) RETURNS SETOF triggers.endpoint_row
LANGUAGE plproxy AS $$ CLUSTER 'triggers'; RUN ON triggers._route(tenant); $$;

CREATE FUNCTION triggers.update_endpoint(tenant text, endpoint_id uuid, url text DEFAULT NULL,
    filter jsonb DEFAULT NULL, enabled boolean DEFAULT NULL, description text DEFAULT NULL)
RETURNS SETOF triggers.endpoint_row
LANGUAGE plproxy AS $$ CLUSTER 'triggers'; RUN ON triggers._route(tenant); $$;

CREATE FUNCTION triggers._rotate_endpoint_secret_keyed(secrets_key text, tenant text, endpoint_id uuid)
RETURNS text
LANGUAGE plproxy AS $$ CLUSTER 'triggers'; RUN ON triggers._route(tenant); $$;

CREATE FUNCTION triggers.rotate_endpoint_secret(tenant text, endpoint_id uuid) RETURNS text
LANGUAGE sql AS $$
    SELECT triggers._rotate_endpoint_secret_keyed(current_setting('triggers.secrets_key', true), tenant, endpoint_id)
$$;

CREATE FUNCTION triggers.delete_endpoint(tenant text, endpoint_id uuid) RETURNS boolean
LANGUAGE plproxy AS $$ CLUSTER 'triggers'; RUN ON triggers._route(tenant); $$;

CREATE FUNCTION triggers.deliveries(tenant text, event_id uuid DEFAULT NULL, endpoint_id uuid DEFAULT NULL,
    lim integer DEFAULT 50) RETURNS SETOF triggers.delivery_row
LANGUAGE plproxy AS $$ CLUSTER 'triggers'; RUN ON triggers._route(tenant); $$;

CREATE FUNCTION triggers.delivery_attempts(tenant text, event_id uuid) RETURNS SETOF triggers.attempt_row
LANGUAGE plproxy AS $$ CLUSTER 'triggers'; RUN ON triggers._route(tenant); $$;

CREATE FUNCTION triggers.resend(tenant text, event_id uuid, endpoint_id uuid) RETURNS bigint
LANGUAGE plproxy AS $$ CLUSTER 'triggers'; RUN ON triggers._route(tenant); $$;

CREATE FUNCTION triggers.recover(tenant text, endpoint_id uuid, since timestamptz) RETURNS bigint
LANGUAGE plproxy AS $$ CLUSTER 'triggers'; RUN ON triggers._route(tenant); $$;

-- Keys: run on the node their tenant hash names.

CREATE FUNCTION triggers.authenticate_key(token text, OUT tenant text, OUT key_id text, OUT expires_at timestamptz)
LANGUAGE plproxy AS $$ CLUSTER 'triggers'; RUN ON triggers._key_hash(token); $$;

CREATE FUNCTION triggers.authenticate(token text) RETURNS text
LANGUAGE plproxy AS $$ CLUSTER 'triggers'; RUN ON triggers._key_hash(token); $$;

CREATE FUNCTION triggers.revoked_keys(since timestamptz) RETURNS SETOF text
LANGUAGE plproxy AS $$ CLUSTER 'triggers'; RUN ON ALL; $$;

CREATE FUNCTION triggers._key_record(token text)
RETURNS TABLE(tenant text, key_hash bytea, expires_at timestamptz, revoked boolean)
LANGUAGE plproxy AS $$ CLUSTER 'triggers'; RUN ON triggers._key_hash(token); $$;

CREATE FUNCTION triggers._key_ids() RETURNS SETOF text
LANGUAGE plproxy AS $$ CLUSTER 'triggers'; RUN ON ALL; $$;

-- The live stream: positions are each node's own, so a reader names its tenant.

CREATE FUNCTION triggers._stored_horizon_of(tenant text) RETURNS bigint
LANGUAGE plproxy AS $$ CLUSTER 'triggers'; RUN ON triggers._route(tenant); TARGET triggers.stored_horizon; $$;

CREATE FUNCTION triggers._stored_of(tenant text, after bigint, lim int, stream text,
    metadata_contains jsonb, payload_contains jsonb, upto bigint, max_bytes int) RETURNS SETOF triggers.stored_row
LANGUAGE plproxy AS $$ CLUSTER 'triggers'; RUN ON triggers._route(tenant); TARGET triggers.stored; $$;

/* The tenant's node's horizon; every tenant's (NULL) has no meaning over several nodes. */
CREATE FUNCTION triggers.stored_horizon(tenant text DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql AS $$
BEGIN
    IF tenant IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'TG004',
            MESSAGE = 'stored_horizon needs a tenant through the proxy: positions are each node''s own';
    END IF;
    RETURN triggers._stored_horizon_of(tenant);
END $$;

/* The tenant's stored events after a position of its node; every tenant's only on a node. */
CREATE FUNCTION triggers.stored(tenant text, after bigint DEFAULT 0, lim integer DEFAULT 100,
    stream text DEFAULT NULL, metadata_contains jsonb DEFAULT NULL, payload_contains jsonb DEFAULT NULL,
    upto bigint DEFAULT NULL, max_bytes integer DEFAULT 4194304) RETURNS SETOF triggers.stored_row
LANGUAGE plpgsql AS $$
BEGIN
    IF tenant IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'TG004',
            MESSAGE = 'stored needs a tenant through the proxy: every tenant''s stream is read on each node';
    END IF;
    RETURN QUERY SELECT * FROM triggers._stored_of(tenant, after, lim, stream, metadata_contains,
                                                   payload_contains, upto, max_bytes);
END $$;

-- Figures: a tenant's from its node; every tenant's (NULL) combined from every node's
-- parts exactly as one node combines its own (combine.sql).

CREATE FUNCTION triggers._metrics_of(tenant text) RETURNS jsonb
LANGUAGE plproxy AS $$ CLUSTER 'triggers'; RUN ON triggers._route(tenant); TARGET triggers.metrics; $$;
CREATE FUNCTION triggers._metrics_parts(tenant text) RETURNS SETOF jsonb
LANGUAGE plproxy AS $$ CLUSTER 'triggers'; RUN ON ALL; $$;

CREATE FUNCTION triggers.metrics(tenant text DEFAULT NULL) RETURNS jsonb
LANGUAGE sql AS $$
    SELECT CASE WHEN tenant IS NOT NULL THEN triggers._metrics_of(tenant)
                ELSE triggers._metrics_combine(triggers._allowed(NULL), ARRAY(SELECT triggers._metrics_parts(NULL))) END
$$;

CREATE FUNCTION triggers._counters_of(tenant text) RETURNS jsonb
LANGUAGE plproxy AS $$ CLUSTER 'triggers'; RUN ON triggers._route(tenant); TARGET triggers.counters; $$;
CREATE FUNCTION triggers._counters_all(tenant text) RETURNS SETOF jsonb
LANGUAGE plproxy AS $$ CLUSTER 'triggers'; RUN ON ALL; TARGET triggers.counters; $$;

CREATE FUNCTION triggers.counters(tenant text DEFAULT NULL) RETURNS jsonb
LANGUAGE sql AS $$
    SELECT CASE WHEN tenant IS NOT NULL THEN triggers._counters_of(tenant)
                ELSE triggers._counters_combine(triggers._allowed(NULL), ARRAY(SELECT triggers._counters_all(NULL))) END
$$;

CREATE FUNCTION triggers._webhook_metrics_of(tenant text) RETURNS jsonb
LANGUAGE plproxy AS $$ CLUSTER 'triggers'; RUN ON triggers._route(tenant); TARGET triggers.webhook_metrics; $$;
CREATE FUNCTION triggers._webhook_metrics_parts(tenant text) RETURNS SETOF jsonb
LANGUAGE plproxy AS $$ CLUSTER 'triggers'; RUN ON ALL; $$;

CREATE FUNCTION triggers.webhook_metrics(tenant text DEFAULT NULL) RETURNS jsonb
LANGUAGE sql AS $$
    SELECT CASE WHEN tenant IS NOT NULL THEN triggers._webhook_metrics_of(tenant)
                ELSE triggers._webhook_metrics_combine(ARRAY(SELECT triggers._webhook_metrics_parts(triggers._allowed(NULL)))) END
$$;

CREATE FUNCTION triggers._metrics_history_of(tenant text, minutes int)
RETURNS TABLE(minute timestamptz, processed bigint, p50_ms numeric, p95_ms numeric, p99_ms numeric)
LANGUAGE plproxy AS $$ CLUSTER 'triggers'; RUN ON triggers._route(tenant); TARGET triggers.metrics_history; $$;
CREATE FUNCTION triggers._latency_minutes(tenant text, since timestamptz, until timestamptz)
RETURNS TABLE(minute timestamptz, bucket smallint, n bigint)
LANGUAGE plproxy AS $$ CLUSTER 'triggers'; RUN ON ALL; $$;

CREATE FUNCTION triggers.metrics_history(tenant text DEFAULT NULL, minutes integer DEFAULT 60)
RETURNS TABLE(minute timestamptz, processed bigint, p50_ms numeric, p95_ms numeric, p99_ms numeric)
LANGUAGE plpgsql AS $$
BEGIN
    IF metrics_history.tenant IS NOT NULL THEN
        RETURN QUERY SELECT * FROM triggers._metrics_history_of(metrics_history.tenant, minutes);
    ELSE
        RETURN QUERY SELECT * FROM triggers._history(triggers._allowed(NULL), minutes, date_trunc('minute', now()));
    END IF;
END $$;

-- Work on every node: the sum of what each did.

CREATE FUNCTION triggers._process_batch_all(batch_size integer, visibility_timeout integer)
RETURNS TABLE(read integer, stored integer, retried integer, dead_lettered integer)
LANGUAGE plproxy AS $$ CLUSTER 'triggers'; RUN ON ALL; TARGET triggers.process_batch; $$;

/* One batch on every node (workers run per node; this is for a caller with only the proxy). */
CREATE FUNCTION triggers.process_batch(batch_size integer DEFAULT NULL, visibility_timeout integer DEFAULT NULL)
RETURNS TABLE(read integer, stored integer, retried integer, dead_lettered integer)
LANGUAGE sql AS $$
    SELECT coalesce(sum(b.read), 0)::int, coalesce(sum(b.stored), 0)::int,
           coalesce(sum(b.retried), 0)::int, coalesce(sum(b.dead_lettered), 0)::int
      FROM triggers._process_batch_all(batch_size, visibility_timeout) b
$$;

CREATE FUNCTION triggers._purge_all(older_than interval) RETURNS SETOF bigint
LANGUAGE plproxy AS $$ CLUSTER 'triggers'; RUN ON ALL; TARGET triggers.purge; $$;

CREATE FUNCTION triggers.purge(older_than interval) RETURNS bigint
LANGUAGE sql AS $$ SELECT coalesce(sum(n), 0)::bigint FROM triggers._purge_all(older_than) n $$;

-- Per-tenant limits and queue depth: a tenant's from its node; every tenant's from all.

CREATE FUNCTION triggers.tenant_limits(OUT tenant text, OUT requests_per_minute int,
    OUT events_per_minute int, OUT max_queued bigint, OUT max_concurrency int,
    OUT max_live_streams int, OUT max_endpoints int)
RETURNS SETOF record
LANGUAGE plproxy AS $$ CLUSTER 'triggers'; RUN ON ALL; $$;

CREATE FUNCTION triggers._queue_depth_of(tenant text, up_to bigint) RETURNS bigint
LANGUAGE plproxy AS $$ CLUSTER 'triggers'; RUN ON triggers._route(tenant); TARGET triggers.queue_depth; $$;
CREATE FUNCTION triggers._queue_depth_all(tenant text, up_to bigint) RETURNS SETOF bigint
LANGUAGE plproxy AS $$ CLUSTER 'triggers'; RUN ON ALL; TARGET triggers.queue_depth; $$;

CREATE FUNCTION triggers.queue_depth(tenant text DEFAULT NULL, up_to bigint DEFAULT 1000000)
RETURNS bigint LANGUAGE sql AS $$
    SELECT CASE WHEN tenant IS NOT NULL THEN triggers._queue_depth_of(tenant, up_to)
                ELSE (SELECT least(coalesce(sum(n), 0), up_to)::bigint
                        FROM triggers._queue_depth_all(triggers._allowed(NULL), up_to) n) END
$$;

/* Binds a login role to one tenant: its calls through this proxy act for it alone. */
CREATE FUNCTION triggers.grant_tenant(role name, tenant text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM triggers._allowed(tenant);
    IF tenant IS NULL OR tenant = '' THEN
        RAISE EXCEPTION USING ERRCODE = 'TG004', MESSAGE = 'tenant must be 1 to 200 characters without control characters';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = grant_tenant.role AND NOT r.rolsuper) THEN
        RAISE EXCEPTION USING ERRCODE = 'TG004', MESSAGE = format('role %s does not exist or cannot be bound', coalesce(role::text, 'NULL'));
    END IF;
    INSERT INTO triggers.tenant_roles AS r (role, tenant) VALUES (grant_tenant.role::regrole, grant_tenant.tenant)
    ON CONFLICT ON CONSTRAINT tenant_roles_pkey DO UPDATE SET tenant = excluded.tenant, granted_at = now();
END $$;

/* Unbinds a role; whether it was bound. */
CREATE FUNCTION triggers.revoke_tenant(role name) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM triggers._allowed((SELECT r.tenant FROM triggers.tenant_roles r WHERE r.role::text = revoke_tenant.role));
    DELETE FROM triggers.tenant_roles r WHERE r.role::text = revoke_tenant.role;
    RETURN FOUND;
END $$;

/* The roles bound to a tenant through this proxy, and to which. */
CREATE FUNCTION triggers.tenant_grants(OUT role name, OUT tenant text, OUT granted_at timestamptz)
RETURNS SETOF record LANGUAGE sql STABLE AS $$
    SELECT r.role::text::name, r.tenant, r.granted_at FROM triggers.tenant_roles r ORDER BY 1
$$;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA triggers FROM PUBLIC;

-- Roles, as on a node (sql/roles.sql). PL/Proxy functions run as their caller, so every
-- role may also run the routing helpers and read what they read; the helpers that run a
-- call on the nodes are each granted with the function that uses them.
DO $$
DECLARE
    v_role text;
BEGIN
    FOREACH v_role IN ARRAY ARRAY['triggers_producer', 'triggers_consumer', 'triggers_worker',
                                  'triggers_admin', 'triggers_bound'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = v_role) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', v_role);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;
            END;
        END IF;
    END LOOP;
    BEGIN
        GRANT triggers_producer, triggers_consumer, triggers_worker TO triggers_admin;
    EXCEPTION WHEN unique_violation THEN
        NULL;
    END;
END $$;

GRANT USAGE ON SCHEMA triggers TO triggers_producer, triggers_consumer, triggers_worker, triggers_admin;
GRANT SELECT ON triggers.paused_partitions, triggers.tenant_roles
    TO triggers_producer, triggers_consumer, triggers_worker, triggers_admin;
GRANT EXECUTE ON FUNCTION triggers._route, triggers._open, triggers._allowed, triggers._unless_paused,
    triggers._partitions, triggers.partition_entries, triggers._key_hash, triggers._key_route,
    triggers.version
    TO triggers_producer, triggers_consumer, triggers_worker, triggers_admin;
GRANT EXECUTE ON FUNCTION triggers.enqueue, triggers.enqueue_ex, triggers.enqueue_batch,
    triggers.enqueue_batch_ex
    TO triggers_producer;
GRANT EXECUTE ON FUNCTION triggers.inbox, triggers.get_event, triggers.ack, triggers.retry,
    triggers.dead_letters, triggers.redrive, triggers.streams, triggers.stream,
    triggers.resume_stream, triggers.stored, triggers._stored_of, triggers.stored_horizon,
    triggers._stored_horizon_of, triggers.metrics, triggers._metrics_of, triggers._metrics_parts,
    triggers._metrics_combine, triggers._percentiles, triggers.counters, triggers._counters_of,
    triggers._counters_all, triggers._counters_combine, triggers.metrics_history,
    triggers._metrics_history_of, triggers._history, triggers._latency_minutes,
    triggers.queue_depth, triggers._queue_depth_of, triggers._queue_depth_all,
    triggers.create_endpoint, triggers._create_endpoint_keyed, triggers.endpoints,
    triggers.endpoint, triggers.update_endpoint, triggers.rotate_endpoint_secret,
    triggers._rotate_endpoint_secret_keyed, triggers.delete_endpoint, triggers.deliveries,
    triggers.resend, triggers.recover, triggers.delivery_attempts, triggers.webhook_metrics,
    triggers._webhook_metrics_of, triggers._webhook_metrics_parts, triggers._webhook_metrics_combine
    TO triggers_consumer;
GRANT EXECUTE ON FUNCTION triggers.process_batch, triggers._process_batch_all, triggers.authenticate,
    triggers.authenticate_key, triggers.revoked_keys, triggers._key_record, triggers._key_ids,
    triggers.tenant_limits, triggers.queue_depth, triggers._queue_depth_of, triggers._queue_depth_all
    TO triggers_worker;
GRANT EXECUTE ON FUNCTION triggers.create_api_key, triggers.revoke_api_key, triggers.purge,
    triggers._purge_all, triggers.grant_tenant, triggers.revoke_tenant, triggers.tenant_grants,
    triggers.partition_of, triggers.partition_node, triggers.partition_pause, triggers.partition_resume
    TO triggers_admin;
-- Binding a role writes triggers.tenant_roles, which no role may write itself.
ALTER FUNCTION triggers.grant_tenant(name, text) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION triggers.revoke_tenant(name) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
