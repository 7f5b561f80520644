-- triggers: what one tenant may take. The limits a server applies per request live in
-- the server (server/src/guard/tenants.rs: its flags are the defaults, the columns of
-- triggers.tenants override them per tenant, read through tenant_limits()); the one the
-- database keeps for every caller is the number of webhook endpoints (create_endpoint).

/*
 * Every tenant with a limit of its own in triggers.tenants: requests per minute per API
 * key, events per minute, events queued at most, requests using the database at once,
 * live streams open on a server, webhook endpoints. NULL: the default. A server reads it
 * every few seconds.
 */
CREATE FUNCTION triggers.tenant_limits(OUT tenant text, OUT requests_per_minute int,
    OUT events_per_minute int, OUT max_queued bigint, OUT max_concurrency int,
    OUT max_live_streams int, OUT max_endpoints int)
RETURNS SETOF record LANGUAGE sql STABLE AS $$
    SELECT t.tenant, t.requests_per_minute, t.events_per_minute, t.max_queued, t.max_concurrency,
           t.max_live_streams, t.max_endpoints
      FROM triggers.tenants t
     WHERE num_nonnulls(t.requests_per_minute, t.events_per_minute, t.max_queued, t.max_concurrency,
                        t.max_live_streams, t.max_endpoints) > 0
       AND triggers._access_error(t.tenant) IS NULL
     ORDER BY t.tenant
$$;
COMMENT ON FUNCTION triggers.tenant_limits IS
    'The tenants with limits of their own in triggers.tenants (NULL: the default), for servers to apply.';

/*
 * Messages waiting in the work queue (ready, delayed or backing off; on a stream or
 * not) of `tenant`, or of every tenant with NULL, counted up to `up_to` so that a count
 * never walks more than that many index entries: what back-pressure compares with its
 * bounds.
 */
CREATE FUNCTION triggers.queue_depth(tenant text DEFAULT NULL, up_to bigint DEFAULT 1000000)
RETURNS bigint LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_plain bigint;
    v_streams bigint;
BEGIN
    PERFORM triggers._check_tenant(queue_depth.tenant, or_all => true);
    IF up_to IS NULL OR up_to < 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'TG004', MESSAGE = format('up_to must be 0 or more, got %s', coalesce(up_to::text, 'NULL'));
    END IF;
    IF queue_depth.tenant IS NULL THEN
        RETURN (SELECT count(*) FROM (SELECT 1 FROM pgmq.q_triggers_events LIMIT up_to) q);
    END IF;
    -- The lanes index (events on no stream) and the streams index (bootstrap.sql).
    SELECT count(*) INTO v_plain FROM (
        SELECT 1 FROM pgmq.q_triggers_events q
         WHERE coalesce(q.headers->>'tenant', '') = queue_depth.tenant AND NOT coalesce(q.headers ? 'seq', false)
         LIMIT up_to) q;
    SELECT count(*) INTO v_streams FROM (
        SELECT 1 FROM pgmq.q_triggers_events q
         WHERE q.headers ? 'seq' AND q.headers->>'tenant' = queue_depth.tenant
         LIMIT greatest(up_to - v_plain, 0)) q;
    RETURN v_plain + v_streams;
END $$;
COMMENT ON FUNCTION triggers.queue_depth IS
    'Messages waiting in the queue, of one tenant or of all, counted up to up_to.';

-- Why `tenant` may not have another webhook endpoint (TG010), or NULL: its
-- triggers.tenants.max_endpoints, else config.max_endpoints (0: no limit). The caller
-- holds the tenant's endpoint lock (create_endpoint), so two creations at once cannot
-- both pass the count.
CREATE FUNCTION triggers._endpoint_limit_error(tenant text) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_max int;
    v_have bigint;
BEGIN
    SELECT coalesce(t.max_endpoints, c.max_endpoints) INTO v_max
      FROM triggers.config c LEFT JOIN triggers.tenants t ON t.tenant = _endpoint_limit_error.tenant;
    IF v_max = 0 THEN
        RETURN NULL;
    END IF;
    SELECT count(*) INTO v_have FROM (
        SELECT 1 FROM triggers.webhook_endpoints e WHERE e.tenant = _endpoint_limit_error.tenant LIMIT v_max) e;
    IF v_have < v_max THEN
        RETURN NULL;
    END IF;
    RETURN format('TG010 tenant %s has %s webhook endpoints, its limit (max_endpoints); delete one first', tenant, v_max);
END $$;
COMMENT ON FUNCTION triggers._endpoint_limit_error IS
    'Internal: TG010 when a tenant has as many webhook endpoints as it may (max_endpoints), else NULL.';
