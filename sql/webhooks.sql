-- triggers: webhook endpoints (SPEC §10). An endpoint belongs to a tenant and receives
-- the events its filter matches, signed with its secret (Standard Webhooks).
--
-- Secrets are sealed (AES-256-GCM, extension/src/api/webhooks.rs) under the secrets key
-- of the session, the setting `triggers.secrets_key`, which the server sets on each of
-- its connections from a key it keeps outside the database. A dump or a stolen backup
-- holds only sealed bytes: it cannot sign. Every function that makes or reads a secret
-- needs the key; the rest (listing, updating, deleting) do not.

-- The session's secrets key; 55000 when it is missing or too short to be one.
CREATE FUNCTION triggers._secrets_key() RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_key text := current_setting('triggers.secrets_key', true);
BEGIN
    IF coalesce(length(v_key), 0) < 32 THEN
        RAISE EXCEPTION USING ERRCODE = '55000',
            MESSAGE = 'triggers.secrets_key is not set: webhook secrets are sealed with it',
            HINT = 'The server sets it on its connections. In a session of your own: SET triggers.secrets_key = ''<the same key, 32 characters or more>''.';
    END IF;
    RETURN v_key;
END $$;
COMMENT ON FUNCTION triggers._secrets_key IS 'Internal: the session''s secrets key (triggers.secrets_key), or 55000.';

-- Why `url` cannot be an endpoint's, or NULL: http(s), a host, at most 2,000
-- characters, no spaces or control characters. (Where it leads is checked when a
-- delivery connects, on the address actually connected to.)
CREATE FUNCTION triggers._url_error(url text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN url IS NULL THEN 'TG004 url must not be NULL'
        WHEN length(url) > 2000 OR url !~* '^https?://[^/?#@[:space:]]+([/?#]|$)' OR url ~ '[\x01-\x20\x7f]'
            THEN 'TG004 url must be an http:// or https:// URL with a host, at most 2000 characters, without spaces'
    END
$$;
COMMENT ON FUNCTION triggers._url_error IS 'Internal: why a URL cannot be an endpoint''s, or NULL.';

-- Why `filter` is not an endpoint filter, or NULL: NULL (every event) or an object with
-- `stream` (a stream name) and/or `metadata` (an object the event's metadata must contain).
CREATE FUNCTION triggers._filter_error(filter jsonb) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN filter IS NULL THEN NULL
        WHEN jsonb_typeof(filter) <> 'object' OR filter - 'stream' - 'metadata' <> '{}'
            THEN 'TG004 filter must be an object with "stream" and/or "metadata"'
        WHEN filter ? 'stream' AND (jsonb_typeof(filter->'stream') <> 'string'
                                    OR triggers._text_error('filter.stream', filter->>'stream') IS NOT NULL)
            THEN 'TG004 filter.stream must be a stream name (1 to 200 characters without control characters)'
        WHEN filter ? 'metadata' AND jsonb_typeof(filter->'metadata') <> 'object'
            THEN 'TG004 filter.metadata must be an object'
    END
$$;
COMMENT ON FUNCTION triggers._filter_error IS 'Internal: why a jsonb is not an endpoint filter, or NULL.';

-- Whether an event (its stream and metadata) matches an endpoint's filter.
CREATE FUNCTION triggers._filter_matches(filter jsonb, stream text, metadata jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT filter IS NULL
        OR ((NOT filter ? 'stream' OR coalesce(filter->>'stream' = stream, false))
            AND (NOT filter ? 'metadata' OR coalesce(metadata, '{}') @> (filter->'metadata')))
$$;
COMMENT ON FUNCTION triggers._filter_matches IS 'Internal: whether an event''s stream and metadata match an endpoint filter.';

-- The tenant's endpoint, locked when `for_update`; TG006 when it has none of that id.
CREATE FUNCTION triggers._endpoint(tenant text, endpoint_id uuid, for_update boolean)
RETURNS triggers.webhook_endpoints LANGUAGE plpgsql AS $$
DECLARE
    v triggers.webhook_endpoints;
BEGIN
    PERFORM triggers._check_tenant(tenant);
    IF endpoint_id IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'TG004', MESSAGE = 'endpoint_id must not be NULL';
    END IF;
    IF for_update THEN
        SELECT * INTO v FROM triggers.webhook_endpoints e
         WHERE e.endpoint_id = _endpoint.endpoint_id AND e.tenant = _endpoint.tenant FOR UPDATE;
    ELSE
        SELECT * INTO v FROM triggers.webhook_endpoints e
         WHERE e.endpoint_id = _endpoint.endpoint_id AND e.tenant = _endpoint.tenant;
    END IF;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'TG006', MESSAGE = format('no endpoint %s', endpoint_id);
    END IF;
    RETURN v;
END $$;
COMMENT ON FUNCTION triggers._endpoint IS 'Internal: a tenant''s endpoint by id, or TG006.';

/*
 * Creates an endpoint for the tenant: where to POST (http or https), which events
 * (`filter`: NULL for all, or {"stream", "metadata"} by containment) and a note.
 * Returns its id and its secret (whsec_…), shown this once. Needs triggers.secrets_key.
 * TG010 once the tenant has max_endpoints (triggers.tenants, else triggers.config).
 */
CREATE FUNCTION triggers.create_endpoint(tenant text, url text, filter jsonb DEFAULT NULL,
    description text DEFAULT NULL, OUT endpoint_id uuid, OUT secret text)
LANGUAGE plpgsql AS $$
DECLARE
    v_now timestamptz := triggers._now();
BEGIN
    PERFORM triggers._check_tenant(create_endpoint.tenant);
    PERFORM triggers._raise(coalesce(triggers._url_error(url), triggers._filter_error(filter),
                                     triggers._text_error('description', description, 1000)));
    -- One creation at a time per tenant, so the count below stays true until commit.
    PERFORM pg_advisory_xact_lock(hashtext('triggers.endpoints'), hashtext(create_endpoint.tenant));
    PERFORM triggers._raise(triggers._endpoint_limit_error(create_endpoint.tenant));
    endpoint_id := triggers._uuid_v7();
    secret := triggers._new_webhook_secret();
    INSERT INTO triggers.webhook_endpoints (endpoint_id, tenant, url, filter, description, secret,
                                            created_at, updated_at)
    VALUES (create_endpoint.endpoint_id, create_endpoint.tenant, url, nullif(filter, '{}'), description,
            triggers._seal_secret(create_endpoint.secret, triggers._secrets_key()), v_now, v_now);
END $$;
COMMENT ON FUNCTION triggers.create_endpoint IS
    'Creates a webhook endpoint; returns its id and its secret (whsec_…), shown only now. Needs triggers.secrets_key.';

-- An endpoint as endpoints() shows it: never its secrets; rotating_until is when the
-- previous secret stops signing, while it still does.
CREATE TYPE triggers.endpoint_row AS (
    endpoint_id     uuid,
    url             text,
    filter          jsonb,
    description     text,
    enabled         boolean,
    disabled_reason text,
    rotating_until  timestamptz,
    created_at      timestamptz,
    updated_at      timestamptz
);

/* The tenant's endpoints, oldest first, without their secrets. */
CREATE FUNCTION triggers.endpoints(tenant text)
RETURNS SETOF triggers.endpoint_row
LANGUAGE plpgsql STABLE AS $$
BEGIN
    PERFORM triggers._check_tenant(endpoints.tenant);
    RETURN QUERY
    SELECT e.endpoint_id, e.url, e.filter, e.description, e.enabled, e.disabled_reason,
           CASE WHEN e.previous_until > triggers._now() THEN e.previous_until END, e.created_at, e.updated_at
      FROM triggers.webhook_endpoints e
     WHERE e.tenant = endpoints.tenant
     ORDER BY e.created_at, e.endpoint_id;
END $$;
COMMENT ON FUNCTION triggers.endpoints IS 'The tenant''s webhook endpoints (never their secrets).';

/* One endpoint of the tenant, as endpoints() shows it; TG006 when it has none of that id. */
CREATE FUNCTION triggers.endpoint(tenant text, endpoint_id uuid)
RETURNS SETOF triggers.endpoint_row
LANGUAGE plpgsql STABLE AS $$
BEGIN
    PERFORM triggers._endpoint(endpoint.tenant, endpoint.endpoint_id, false);
    RETURN QUERY SELECT * FROM triggers.endpoints(endpoint.tenant) r WHERE r.endpoint_id = endpoint.endpoint_id;
END $$;
COMMENT ON FUNCTION triggers.endpoint IS 'One of the tenant''s webhook endpoints (never its secrets), or TG006.';

/*
 * Changes what is given of an endpoint: url, filter ('{}' for every event), enabled,
 * description; NULL leaves it as it is. Disabling records 'disabled by its owner';
 * enabling clears the reason. Returns the endpoint as endpoints() shows it.
 */
CREATE FUNCTION triggers.update_endpoint(tenant text, endpoint_id uuid, url text DEFAULT NULL,
    filter jsonb DEFAULT NULL, enabled boolean DEFAULT NULL, description text DEFAULT NULL)
RETURNS SETOF triggers.endpoint_row LANGUAGE plpgsql AS $$
DECLARE
    v triggers.webhook_endpoints := triggers._endpoint(update_endpoint.tenant, update_endpoint.endpoint_id, true);
BEGIN
    IF url IS NOT NULL THEN
        PERFORM triggers._raise(triggers._url_error(url));
    END IF;
    PERFORM triggers._raise(coalesce(triggers._filter_error(filter),
                                     triggers._text_error('description', description, 1000)));
    UPDATE triggers.webhook_endpoints e
       SET url = coalesce(update_endpoint.url, e.url),
           filter = CASE WHEN update_endpoint.filter IS NULL THEN e.filter ELSE nullif(update_endpoint.filter, '{}') END,
           description = coalesce(update_endpoint.description, e.description),
           enabled = coalesce(update_endpoint.enabled, e.enabled),
           disabled_reason = CASE WHEN update_endpoint.enabled THEN NULL
                                  WHEN NOT update_endpoint.enabled AND e.enabled THEN 'disabled by its owner'
                                  ELSE e.disabled_reason END,
           updated_at = triggers._now()
     WHERE e.endpoint_id = v.endpoint_id;
    RETURN QUERY SELECT * FROM triggers.endpoints(update_endpoint.tenant) r
                  WHERE r.endpoint_id = update_endpoint.endpoint_id;
END $$;
COMMENT ON FUNCTION triggers.update_endpoint IS
    'Changes an endpoint''s url, filter (''{}'': every event), enabled or description; NULL keeps a value.';

/*
 * Gives an endpoint a new secret and returns it (shown this once); the old one keeps
 * signing beside it for 24 hours, so receivers can switch without losing a delivery.
 * Needs triggers.secrets_key.
 */
CREATE FUNCTION triggers.rotate_endpoint_secret(tenant text, endpoint_id uuid) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v triggers.webhook_endpoints := triggers._endpoint(rotate_endpoint_secret.tenant, rotate_endpoint_secret.endpoint_id, true);
    v_secret text := triggers._new_webhook_secret();
    v_now timestamptz := triggers._now();
BEGIN
    UPDATE triggers.webhook_endpoints e
       SET previous_secret = e.secret, previous_until = v_now + interval '24 hours',
           secret = triggers._seal_secret(v_secret, triggers._secrets_key()), updated_at = v_now
     WHERE e.endpoint_id = v.endpoint_id;
    RETURN v_secret;
END $$;
COMMENT ON FUNCTION triggers.rotate_endpoint_secret IS
    'A new secret for an endpoint (returned once); the previous one keeps signing for 24 hours. Needs triggers.secrets_key.';

/*
 * create_endpoint and rotate_endpoint_secret with the secrets key given, for the
 * PL/Proxy proxy: its calls reach the node on connections of PL/Proxy's, which carry no
 * session setting of the caller's, so the proxy passes the key of its caller's session
 * (set for this transaction only; it is never stored).
 */
CREATE FUNCTION triggers._create_endpoint_keyed(secrets_key text, tenant text, url text, filter jsonb,
    description text, OUT endpoint_id uuid, OUT secret text)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('triggers.secrets_key', coalesce(secrets_key, ''), true);
    SELECT c.endpoint_id, c.secret INTO endpoint_id, secret
      FROM triggers.create_endpoint(tenant, url, filter, description) c;
END $$;
COMMENT ON FUNCTION triggers._create_endpoint_keyed IS 'Internal: create_endpoint with the secrets key passed (the proxy''s).';

CREATE FUNCTION triggers._rotate_endpoint_secret_keyed(secrets_key text, tenant text, endpoint_id uuid) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('triggers.secrets_key', coalesce(secrets_key, ''), true);
    RETURN triggers.rotate_endpoint_secret(tenant, endpoint_id);
END $$;
COMMENT ON FUNCTION triggers._rotate_endpoint_secret_keyed IS 'Internal: rotate_endpoint_secret with the secrets key passed (the proxy''s).';

/* Deletes an endpoint of the tenant; true if it existed. */
CREATE FUNCTION triggers.delete_endpoint(tenant text, endpoint_id uuid) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM triggers._check_tenant(tenant);
    IF endpoint_id IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'TG004', MESSAGE = 'endpoint_id must not be NULL';
    END IF;
    DELETE FROM triggers.webhook_endpoints e
     WHERE e.endpoint_id = delete_endpoint.endpoint_id AND e.tenant = delete_endpoint.tenant;
    RETURN FOUND;
END $$;
COMMENT ON FUNCTION triggers.delete_endpoint IS 'Deletes a tenant''s webhook endpoint; returns whether it existed.';

/*
 * The secrets an endpoint signs with now, newest first: its secret, and the previous
 * one while a rotation overlaps. For the delivery workers; needs triggers.secrets_key.
 */
CREATE FUNCTION triggers._endpoint_secrets(endpoint_id uuid) RETURNS text[]
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v triggers.webhook_endpoints;
    v_key text := triggers._secrets_key();
    v_secrets text[];
BEGIN
    SELECT * INTO v FROM triggers.webhook_endpoints e WHERE e.endpoint_id = _endpoint_secrets.endpoint_id;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    v_secrets := ARRAY[triggers._open_secret(v.secret, v_key)];
    IF v.previous_until > triggers._now() THEN
        v_secrets := v_secrets || triggers._open_secret(v.previous_secret, v_key);
    END IF;
    IF array_position(v_secrets, NULL) IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = '55000',
            MESSAGE = format('the secrets of endpoint %s do not open with this triggers.secrets_key', endpoint_id);
    END IF;
    RETURN v_secrets;
END $$;
COMMENT ON FUNCTION triggers._endpoint_secrets IS
    'Internal: the secrets an endpoint signs with now (newest first), unsealed with triggers.secrets_key.';

-- ---------------------------------------------------------------- deliveries

-- The transactional outbox: a delivery for each event stored with `positions` (by this
-- _store call) and each enabled endpoint of its tenant whose filter matches, due after
-- the schedule's first wait. Called by _store, in the storing transaction: no event is
-- stored without its deliveries. Costs one look at an empty table when no endpoint exists.
CREATE FUNCTION triggers._write_deliveries(positions bigint[], v_now timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM triggers.webhook_endpoints e WHERE e.enabled) THEN
        RETURN;
    END IF;
    INSERT INTO triggers.webhook_deliveries (tenant, endpoint_id, event_id, next_attempt_at, created_at)
    SELECT ev.tenant, e.endpoint_id, ev.event_id,
           v_now + make_interval(secs => (SELECT c.webhook_schedule_s[1] FROM triggers.config c)), v_now
      FROM triggers.events ev
      JOIN triggers.webhook_endpoints e ON e.tenant = ev.tenant AND e.enabled
     WHERE ev.position = ANY(positions)
       AND triggers._filter_matches(e.filter, ev.stream, ev.metadata)
     ORDER BY ev.position
    ON CONFLICT ON CONSTRAINT webhook_deliveries_endpoint_id_event_id_key DO NOTHING;
END $$;
COMMENT ON FUNCTION triggers._write_deliveries IS
    'Internal: the outbox rows of just-stored events, one per matching enabled endpoint.';

/*
 * For the delivery workers: takes up to `lim` due deliveries of enabled endpoints,
 * oldest due first, at most webhook_endpoint_concurrency in flight per endpoint (over
 * all workers: claims take turns, they are short), counts the attempt and leases each
 * for `lease_s` seconds. The caller commits at once and sends; an attempt whose result
 * is never recorded (the server died) is due again when the lease ends: at least once.
 * Each endpoint is a lane read in order from its own index, so a backlog of one
 * endpoint costs a claim no more than its free slots.
 */
CREATE FUNCTION triggers._claim_deliveries(lim int, lease_s int DEFAULT 60)
RETURNS TABLE(delivery_id bigint, endpoint_id uuid, tenant text, url text, event_id uuid, attempt int)
-- No JIT: the lanes' LIMIT is unknown to the generic plan, so with a deep outbox its
-- estimate passes jit_above_cost, and compiling took ~100 ms a claim (the soak saw
-- deliveries fall from 3,700/s to 550/s); running it takes < 1 ms.
LANGUAGE plpgsql SET jit = off AS $$
DECLARE
    v_now timestamptz := triggers._now();
    v_cap int := (SELECT c.webhook_endpoint_concurrency FROM triggers.config c);
    v_ids bigint[];
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('triggers._claim_deliveries'));
    -- A claim lost in a crash only loses its lease: the delivery is due again, as when
    -- the server dies before recording. So it need not wait for the WAL flush.
    PERFORM set_config('synchronous_commit', 'off', true);
    -- The ids first, then an update by primary key: joined to the lanes' query, the
    -- generic plan plpgsql settles on hash-joins a scan of the whole table instead.
    SELECT array_agg(due.delivery_id) INTO v_ids FROM (
        SELECT d.delivery_id
          FROM triggers.webhook_endpoints e
         CROSS JOIN LATERAL (
               SELECT v_cap - count(*) AS free FROM triggers.webhook_deliveries f
                WHERE f.endpoint_id = e.endpoint_id AND f.leased_until > v_now AND f.status = 'pending') l
         CROSS JOIN LATERAL (
               SELECT x.delivery_id, x.next_attempt_at FROM triggers.webhook_deliveries x
                WHERE x.endpoint_id = e.endpoint_id AND x.status = 'pending' AND x.next_attempt_at <= v_now
                ORDER BY x.next_attempt_at
                LIMIT greatest(l.free, 0)
                  FOR UPDATE SKIP LOCKED) d
         WHERE e.enabled
         ORDER BY d.next_attempt_at, d.delivery_id
         LIMIT lim) due;
    IF v_ids IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY
    UPDATE triggers.webhook_deliveries d
       SET attempts = d.attempts + 1, next_attempt_at = v_now + make_interval(secs => lease_s),
           leased_until = v_now + make_interval(secs => lease_s)
      FROM triggers.webhook_endpoints e
     WHERE d.delivery_id = ANY(v_ids) AND e.endpoint_id = d.endpoint_id
    RETURNING d.delivery_id, d.endpoint_id, d.tenant, e.url, d.event_id, d.attempts;
END $$;
COMMENT ON FUNCTION triggers._claim_deliveries IS
    'Internal: due deliveries for a worker, at most webhook_endpoint_concurrency in flight per endpoint, each attempt counted and leased.';

/*
 * Records that attempt `attempt` of a delivery failed: the receiver's status (NULL when
 * none: `error` says why; never a 2xx, which _record_attempts records), latency, the
 * start of its answer, and Retry-After (seconds) if it sent one. The next attempt per
 * webhook_schedule_s (± jitter, not before Retry-After), or failed after the last; 410
 * disables the endpoint, and so does failing for endpoint_disable_after_s without a
 * success. Returns the delivery's status.
 */
CREATE FUNCTION triggers._record_failure(delivery_id bigint, attempt int, status_code int, latency_ms int,
    response text, error text, retry_after_s int DEFAULT NULL) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_now timestamptz := triggers._now();
    cfg triggers.config;
    d triggers.webhook_deliveries;
    v_last boolean;
    v_wait float8;
    v_failing_since timestamptz;
BEGIN
    SELECT * INTO cfg FROM triggers.config;
    SELECT * INTO d FROM triggers.webhook_deliveries w WHERE w.delivery_id = _record_failure.delivery_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;  -- its endpoint was deleted meanwhile
    END IF;
    INSERT INTO triggers.webhook_attempts (delivery_id, attempt, attempted_at, status_code, latency_ms, response, error)
    VALUES (d.delivery_id, attempt, v_now, status_code, latency_ms, left(response, 1000), left(error, 1000))
    ON CONFLICT DO NOTHING;
    IF d.status <> 'pending' OR d.attempts <> attempt THEN
        RETURN d.status;  -- a late answer to an attempt whose lease ran out: logged only
    END IF;
    v_last := attempt >= cardinality(cfg.webhook_schedule_s);
    IF v_last THEN
        UPDATE triggers.webhook_deliveries w
           SET status = 'failed', finished_at = v_now, next_attempt_at = NULL, leased_until = NULL
         WHERE w.delivery_id = d.delivery_id;
    ELSE
        v_wait := cfg.webhook_schedule_s[attempt + 1]
                  * (1 + cfg.webhook_jitter_pct / 100.0 * (2 * random() - 1));
        UPDATE triggers.webhook_deliveries w
           SET next_attempt_at = v_now + make_interval(secs => greatest(v_wait, coalesce(retry_after_s, 0))),
               leased_until = NULL
         WHERE w.delivery_id = d.delivery_id;
    END IF;
    UPDATE triggers.webhook_endpoints e SET failing_since = coalesce(e.failing_since, v_now)
     WHERE e.endpoint_id = d.endpoint_id
    RETURNING e.failing_since INTO v_failing_since;
    IF status_code = 410 THEN
        UPDATE triggers.webhook_endpoints e
           SET enabled = false, disabled_reason = 'the receiver answered 410 Gone', updated_at = v_now
         WHERE e.endpoint_id = d.endpoint_id AND e.enabled;
    ELSIF v_now - v_failing_since >= make_interval(secs => cfg.endpoint_disable_after_s) THEN
        UPDATE triggers.webhook_endpoints e
           SET enabled = false, updated_at = v_now,
               disabled_reason = format('no successful delivery since %s (endpoint_disable_after_s = %s)',
                                        to_char(v_failing_since AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
                                        cfg.endpoint_disable_after_s)
         WHERE e.endpoint_id = d.endpoint_id AND e.enabled;
    END IF;
    RETURN CASE WHEN v_last THEN 'failed' ELSE 'pending' END;
END $$;
COMMENT ON FUNCTION triggers._record_failure IS
    'Internal: logs a failed attempt and moves its delivery on: the next attempt, or failed; may disable the endpoint.';

/*
 * Records what attempts got, in one transaction (a worker records its requests'
 * outcomes together: one commit, not one each). A 2xx succeeds the delivery, and its
 * event is delivered once every delivery of it has succeeded; successes, the common
 * case, are recorded set-wise, a handful of statements for all of them; failures one
 * by one through _record_failure. Returns each delivery's status afterwards, in order
 * (NULL when its endpoint was deleted meanwhile).
 */
CREATE FUNCTION triggers._record_attempts(delivery_ids bigint[], attempts int[], status_codes int[],
    latencies_ms int[], responses text[], errors text[], retry_afters_s int[])
RETURNS SETOF text LANGUAGE plpgsql SET jit = off AS $$
DECLARE
    v_now timestamptz := triggers._now();
    v_endpoints uuid[];
    v_events uuid[];
BEGIN
    -- Successes: log them, then finish the deliveries whose attempt this still is (a
    -- late answer to an attempt whose lease ran out is logged only).
    INSERT INTO triggers.webhook_attempts (delivery_id, attempt, attempted_at, status_code, latency_ms, response, error)
    SELECT i.id, i.attempt, v_now, i.code, i.latency, left(i.response, 1000), left(i.error, 1000)
      FROM unnest(_record_attempts.delivery_ids, _record_attempts.attempts, _record_attempts.status_codes,
                  latencies_ms, responses, errors) AS i(id, attempt, code, latency, response, error)
     WHERE i.code BETWEEN 200 AND 299
    ON CONFLICT DO NOTHING;
    WITH done AS (
        UPDATE triggers.webhook_deliveries d
           SET status = 'succeeded', finished_at = v_now, next_attempt_at = NULL, leased_until = NULL
          FROM unnest(_record_attempts.delivery_ids, _record_attempts.attempts, _record_attempts.status_codes)
               AS i(id, attempt, code)
         WHERE i.code BETWEEN 200 AND 299 AND d.delivery_id = i.id
           AND d.status = 'pending' AND d.attempts = i.attempt
        RETURNING d.endpoint_id, d.event_id
    )
    SELECT array_agg(DISTINCT done.endpoint_id), array_agg(DISTINCT done.event_id) INTO v_endpoints, v_events FROM done;
    IF v_events IS NOT NULL THEN
        UPDATE triggers.webhook_endpoints e SET failing_since = NULL
         WHERE e.endpoint_id = ANY(v_endpoints) AND e.failing_since IS NOT NULL;
        -- Each event is delivered once every delivery of it has succeeded; rows locked
        -- in one order, so two workers finishing deliveries of the same events wait,
        -- never deadlock.
        PERFORM 1 FROM triggers.events ev
          WHERE ev.event_id = ANY(v_events) AND ev.status = 'pending'
          ORDER BY ev.event_id FOR UPDATE;
        UPDATE triggers.events ev SET status = 'delivered', delivered_at = v_now, updated_at = v_now
         WHERE ev.event_id = ANY(v_events) AND ev.status = 'pending'
           AND NOT EXISTS (SELECT 1 FROM triggers.webhook_deliveries o
                            WHERE o.event_id = ev.event_id AND o.status <> 'succeeded');
    END IF;
    -- Failures (or no answer): the schedule, Retry-After and the disabling rules.
    FOR i IN 1..coalesce(cardinality(delivery_ids), 0) LOOP
        IF status_codes[i] IS NULL OR status_codes[i] NOT BETWEEN 200 AND 299 THEN
            PERFORM triggers._record_failure(delivery_ids[i], attempts[i], status_codes[i], latencies_ms[i],
                                             responses[i], errors[i], retry_afters_s[i]);
        END IF;
    END LOOP;
    RETURN QUERY
    SELECT d.status FROM unnest(delivery_ids) WITH ORDINALITY AS u(id, n)
      LEFT JOIN triggers.webhook_deliveries d ON d.delivery_id = u.id
     ORDER BY u.n;
END $$;
COMMENT ON FUNCTION triggers._record_attempts IS
    'Internal: attempts'' outcomes in one transaction, successes set-wise, failures through _record_failure.';

-- A delivery as deliveries() shows it, with its last attempt.
CREATE TYPE triggers.delivery_row AS (
    delivery_id     bigint,
    endpoint_id     uuid,
    event_id        uuid,
    status          text,
    attempts        integer,
    next_attempt_at timestamptz,
    created_at      timestamptz,
    finished_at     timestamptz,
    last_status_code integer,
    last_latency_ms integer,
    last_error      text
);

/*
 * The tenant's deliveries of one event or to one endpoint (or both), newest event first,
 * each with its last attempt. TG004 unless one of them is given.
 */
CREATE FUNCTION triggers.deliveries(tenant text, event_id uuid DEFAULT NULL, endpoint_id uuid DEFAULT NULL,
    lim int DEFAULT 50) RETURNS SETOF triggers.delivery_row
LANGUAGE plpgsql STABLE AS $$
BEGIN
    PERFORM triggers._check_tenant(tenant);
    IF event_id IS NULL AND endpoint_id IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'TG004', MESSAGE = 'give an event_id or an endpoint_id';
    END IF;
    IF lim IS NULL OR lim < 1 OR lim > 1000 THEN
        RAISE EXCEPTION USING ERRCODE = 'TG004', MESSAGE = format('lim must be 1 to 1000, got %s', coalesce(lim::text, 'NULL'));
    END IF;
    RETURN QUERY
    SELECT d.delivery_id, d.endpoint_id, d.event_id, d.status, d.attempts,
           CASE WHEN d.status = 'pending' THEN d.next_attempt_at END, d.created_at, d.finished_at,
           a.status_code, a.latency_ms, a.error
      FROM triggers.webhook_deliveries d
      LEFT JOIN LATERAL (SELECT * FROM triggers.webhook_attempts x WHERE x.delivery_id = d.delivery_id
                          ORDER BY x.attempt DESC LIMIT 1) a ON true
     WHERE d.tenant = deliveries.tenant
       AND (deliveries.event_id IS NULL OR d.event_id = deliveries.event_id)
       AND (deliveries.endpoint_id IS NULL OR d.endpoint_id = deliveries.endpoint_id)
     ORDER BY d.event_id DESC, d.endpoint_id
     LIMIT lim;
END $$;
COMMENT ON FUNCTION triggers.deliveries IS
    'A tenant''s webhook deliveries of an event or to an endpoint, newest event first, with the last attempt of each.';

/*
 * Sends a stored event of the tenant to one of its endpoints again, now (whatever the
 * filter says): its delivery becomes pending and due. Returns the delivery id.
 */
CREATE FUNCTION triggers.resend(tenant text, event_id uuid, endpoint_id uuid) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_endpoint triggers.webhook_endpoints := triggers._endpoint(resend.tenant, resend.endpoint_id, false);
    v_event triggers.events := triggers._event(resend.event_id, resend.tenant, false);
    v_now timestamptz := triggers._now();
    v_id bigint;
BEGIN
    IF v_event.status = 'failed' THEN
        RAISE EXCEPTION USING ERRCODE = 'TG007',
            MESSAGE = format('event %s failed processing: it was never stored, so it is not delivered', v_event.event_id);
    END IF;
    INSERT INTO triggers.webhook_deliveries AS w (tenant, endpoint_id, event_id, next_attempt_at, created_at)
    VALUES (resend.tenant, v_endpoint.endpoint_id, v_event.event_id, v_now, v_now)
    ON CONFLICT ON CONSTRAINT webhook_deliveries_endpoint_id_event_id_key DO UPDATE
       SET status = 'pending', next_attempt_at = v_now, finished_at = NULL
    RETURNING w.delivery_id INTO v_id;
    RETURN v_id;
END $$;
COMMENT ON FUNCTION triggers.resend IS 'Delivers a stored event to one of the tenant''s endpoints again, now; returns the delivery id.';

/* Makes the endpoint's failed deliveries created since `since` pending and due now; returns how many. */
CREATE FUNCTION triggers.recover(tenant text, endpoint_id uuid, since timestamptz) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_endpoint triggers.webhook_endpoints := triggers._endpoint(recover.tenant, recover.endpoint_id, false);
    v_n bigint;
BEGIN
    IF since IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'TG004', MESSAGE = 'since must not be NULL';
    END IF;
    UPDATE triggers.webhook_deliveries w
       SET status = 'pending', next_attempt_at = triggers._now(), finished_at = NULL
     WHERE w.endpoint_id = v_endpoint.endpoint_id AND w.status = 'failed' AND w.created_at >= since;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    RETURN v_n;
END $$;
COMMENT ON FUNCTION triggers.recover IS
    'Queues again every failed delivery to an endpoint created since a time; returns how many.';

-- One attempt as delivery_attempts() shows it.
CREATE TYPE triggers.attempt_row AS (
    delivery_id  bigint,
    endpoint_id  uuid,
    attempt      integer,
    attempted_at timestamptz,
    status_code  integer,
    latency_ms   integer,
    response     text,
    error        text
);

/* Every attempt at delivering one of the tenant's events, to each endpoint, in order. */
CREATE FUNCTION triggers.delivery_attempts(tenant text, event_id uuid) RETURNS SETOF triggers.attempt_row
LANGUAGE plpgsql STABLE AS $$
BEGIN
    PERFORM triggers._check_tenant(tenant);
    IF event_id IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'TG004', MESSAGE = 'event_id must not be NULL';
    END IF;
    RETURN QUERY
    SELECT d.delivery_id, d.endpoint_id, a.attempt, a.attempted_at, a.status_code, a.latency_ms, a.response, a.error
      FROM triggers.webhook_deliveries d
      JOIN triggers.webhook_attempts a ON a.delivery_id = d.delivery_id
     WHERE d.tenant = delivery_attempts.tenant AND d.event_id = delivery_attempts.event_id
     ORDER BY d.delivery_id, a.attempt;
END $$;
COMMENT ON FUNCTION triggers.delivery_attempts IS 'Every logged attempt at delivering a tenant''s event, per delivery, in order.';

/*
 * The additive parts of webhook_metrics() (combine.sql makes the figures): deliveries by
 * status, attempts, endpoints, and the latency (ms, stored to received) of each
 * endpoint's last 1,000 successes.
 */
CREATE FUNCTION triggers._webhook_metrics_parts(tenant text) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    WITH eps AS (
        SELECT e.endpoint_id FROM triggers.webhook_endpoints e
         WHERE _webhook_metrics_parts.tenant IS NULL OR e.tenant = _webhook_metrics_parts.tenant
    ), counts AS (
        SELECT count(*) FILTER (WHERE d.status = 'pending') AS pending,
               count(*) FILTER (WHERE d.status = 'succeeded') AS succeeded,
               count(*) FILTER (WHERE d.status = 'failed') AS failed,
               coalesce(sum(d.attempts), 0) AS attempts
          FROM eps JOIN triggers.webhook_deliveries d ON d.endpoint_id = eps.endpoint_id
    ), recent AS (
        SELECT extract(epoch FROM r.finished_at - r.created_at) * 1000 AS ms
          FROM eps CROSS JOIN LATERAL (
                SELECT x.finished_at, x.created_at FROM triggers.webhook_deliveries x
                 WHERE x.endpoint_id = eps.endpoint_id AND x.status = 'succeeded'
                 ORDER BY x.event_id DESC LIMIT 1000) r
    )
    SELECT jsonb_build_object(
               'pending', c.pending, 'succeeded', c.succeeded, 'failed', c.failed, 'attempts', c.attempts,
               'endpoints', (SELECT count(*) FROM eps),
               'latencies', coalesce((SELECT jsonb_agg(recent.ms) FROM recent), '[]'))
      FROM counts c
$$;
COMMENT ON FUNCTION triggers._webhook_metrics_parts IS 'Internal: the additive parts of webhook_metrics(), of a tenant or all.';

/*
 * Webhook metrics of a tenant (NULL: all): deliveries kept by status, attempts made
 * (claimed, so one in flight counts), and the latency from stored to received of the
 * last 1,000 successful deliveries of each endpoint (p50/p95/p99, milliseconds).
 */
CREATE FUNCTION triggers.webhook_metrics(tenant text DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
BEGIN
    PERFORM triggers._check_tenant(tenant, or_all => true);
    RETURN triggers._webhook_metrics_combine(ARRAY[triggers._webhook_metrics_parts(tenant)]);
END $$;
COMMENT ON FUNCTION triggers.webhook_metrics IS
    'Webhook deliveries by status, attempts, and stored-to-received latency of recent successes, for a tenant or all.';

-- For the delivery workers: the events of claimed deliveries, in one read.
CREATE FUNCTION triggers._delivery_events(event_ids uuid[]) RETURNS SETOF triggers.events
LANGUAGE sql STABLE AS $$
    SELECT * FROM triggers.events e WHERE e.event_id = ANY(event_ids)
$$;
COMMENT ON FUNCTION triggers._delivery_events IS 'Internal: the events of claimed deliveries, for the delivery workers.';
