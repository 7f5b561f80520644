-- triggers 0.1.0 → 0.2.0 (ALTER EXTENSION triggers UPDATE). Keys can expire
-- (api_keys.expires_at, create_api_key's expires_at, authenticate_key), and a revocation
-- NOTIFYs triggers_keys so servers drop the key from their caches at once. Webhook
-- attempts are recorded by _record_attempts alone (successes there, failures through
-- _record_failure): _record_attempt, which had a second copy of the success rules, is gone.
-- The functions are as sql/keys.sql and sql/webhooks.sql have them; tests/tests/upgrade.rs holds an upgraded
-- database's catalog to a fresh install's.
\echo Use "ALTER EXTENSION triggers UPDATE TO '0.2.0'" to load this file. \quit

ALTER TABLE triggers.api_keys ADD COLUMN expires_at timestamptz NULL;

DROP FUNCTION triggers.create_api_key(text, text);
CREATE FUNCTION triggers.create_api_key(tenant text, name text DEFAULT 'default',
    expires_at timestamptz DEFAULT NULL) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_key_id text;
    v_token text;
BEGIN
    PERFORM triggers._check_text('tenant', tenant);
    PERFORM triggers._check_text('name', name);
    v_key_id := lpad(to_hex(hashtext(tenant)), 8, '0') || triggers._random_token(9);
    IF expires_at <= triggers._now() OR expires_at = 'infinity' THEN
        RAISE EXCEPTION USING ERRCODE = 'TG004',
            MESSAGE = format('expires_at must be a time in the future, got %s', expires_at);
    END IF;
    v_token := triggers._key_prefix() || v_key_id || '_' || triggers._random_token(32);
    INSERT INTO triggers.api_keys (key_id, tenant, name, key_hash, expires_at)
    VALUES (v_key_id, create_api_key.tenant, create_api_key.name, sha256(convert_to(v_token, 'UTF8')),
            create_api_key.expires_at);
    RETURN v_token;
END $$;
COMMENT ON FUNCTION triggers.create_api_key IS
    'Creates an API key for a tenant (expiring at expires_at, if given) and returns it; only its hash is stored, so this is the only time it is shown.';

REVOKE ALL ON FUNCTION triggers.create_api_key(text, text, timestamptz) FROM PUBLIC;

CREATE OR REPLACE FUNCTION triggers.revoke_api_key(tenant text, api_key text) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_key_id text;
BEGIN
    PERFORM triggers._check_text('tenant', tenant);
    IF api_key IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'TG004', MESSAGE = 'api_key must not be NULL';
    END IF;
    v_key_id := coalesce(substring(api_key FROM '^' || triggers._key_prefix() || '([A-Za-z0-9]+)_'), api_key);
    UPDATE triggers.api_keys k SET revoked_at = triggers._now()
     WHERE k.key_id = v_key_id AND k.tenant = revoke_api_key.tenant AND k.revoked_at IS NULL;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM pg_notify('triggers_keys', v_key_id);
    RETURN true;
END $$;
COMMENT ON FUNCTION triggers.revoke_api_key IS 'Revokes a tenant''s API key (the key, or its id); returns whether it was active.';

CREATE FUNCTION triggers.authenticate_key(token text, OUT tenant text, OUT key_id text, OUT expires_at timestamptz)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v triggers.api_keys;
BEGIN
    IF token IS NULL OR token !~ ('^' || triggers._key_prefix() || '[A-Za-z0-9]+_[A-Za-z0-9]+$') OR length(token) > 200 THEN
        RAISE EXCEPTION USING ERRCODE = 'TG009', MESSAGE = 'API key is malformed';
    END IF;
    SELECT * INTO v FROM triggers.api_keys k
     WHERE k.key_id = substring(token FROM '^' || triggers._key_prefix() || '([A-Za-z0-9]+)_');
    IF NOT FOUND OR NOT triggers._bytes_equal(v.key_hash, sha256(convert_to(token, 'UTF8'))) THEN
        RAISE EXCEPTION USING ERRCODE = 'TG009', MESSAGE = 'API key is not valid';
    END IF;
    IF v.revoked_at IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'TG009', MESSAGE = 'API key is revoked';
    END IF;
    IF v.expires_at <= triggers._now() THEN
        RAISE EXCEPTION USING ERRCODE = 'TG009', MESSAGE = 'API key has expired';
    END IF;
    tenant := v.tenant;
    key_id := v.key_id;
    expires_at := v.expires_at;
END $$;
COMMENT ON FUNCTION triggers.authenticate_key IS
    'The tenant, id and expiry of an API key, or TG009 for an unknown, revoked or expired key.';

REVOKE ALL ON FUNCTION triggers.authenticate_key(text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION triggers.authenticate(token text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT a.tenant FROM triggers.authenticate_key(token) a
$$;
COMMENT ON FUNCTION triggers.authenticate IS 'The tenant of an API key, or TG009 for an unknown, revoked or expired key.';

DROP FUNCTION triggers._record_attempt(bigint, int, int, int, text, text, int);
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

REVOKE ALL ON FUNCTION triggers._record_failure(bigint, int, int, int, text, text, int) FROM PUBLIC;

CREATE OR REPLACE FUNCTION triggers._record_attempts(delivery_ids bigint[], attempts int[], status_codes int[],
    latencies_ms int[], responses text[], errors text[], retry_afters_s int[])
RETURNS SETOF text LANGUAGE plpgsql AS $$
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

-- The workers' hot paths never JIT-compile (a deep backlog's estimates passed
-- jit_above_cost: ~100 ms compiling per claim that runs in < 1 ms).
ALTER FUNCTION triggers.process_batch(int, int) SET jit = off;
ALTER FUNCTION triggers._claim_deliveries(int, int) SET jit = off;
ALTER FUNCTION triggers._record_attempts(bigint[], int[], int[], int[], text[], text[], int[]) SET jit = off;

-- Figures from parts (combine.sql, which triggers_proxy installs too), so that the
-- PL/Proxy proxy combines every node's parts exactly.
/*
 * Events processed and latency percentiles (ms) from a log histogram: parallel arrays of
 * bucket numbers (metrics.sql's _latency_bucket) and counts; a bucket may repeat (parts
 * of several nodes), its counts add up.
 */
CREATE FUNCTION triggers._percentiles(buckets smallint[], counts bigint[],
    OUT processed bigint, OUT p50_ms numeric, OUT p95_ms numeric, OUT p99_ms numeric)
LANGUAGE sql IMMUTABLE AS $$
    WITH h AS (
        SELECT u.bucket, sum(u.n) AS n FROM unnest(buckets, counts) AS u(bucket, n) GROUP BY u.bucket
    ), c AS (
        SELECT h.bucket, sum(h.n) OVER (ORDER BY h.bucket) AS cum, sum(h.n) OVER () AS total FROM h
    ), p AS (
        SELECT max(c.total) AS total,
               min(c.bucket) FILTER (WHERE c.cum >= 0.50 * c.total) AS p50,
               min(c.bucket) FILTER (WHERE c.cum >= 0.95 * c.total) AS p95,
               min(c.bucket) FILTER (WHERE c.cum >= 0.99 * c.total) AS p99
          FROM c
    )
    SELECT coalesce(p.total, 0)::bigint, round((exp(p.p50 / 10.0) - 1)::numeric, 1),
           round((exp(p.p95 / 10.0) - 1)::numeric, 1), round((exp(p.p99 / 10.0) - 1)::numeric, 1)
      FROM p
$$;
COMMENT ON FUNCTION triggers._percentiles IS
    'Internal: events counted and latency p50/p95/p99 (ms) of a log histogram given as bucket and count arrays.';

/*
 * metrics() from its parts (_metrics_parts of each node): counts add up, the latest
 * processing time and the oldest queued message are the extremes, the percentiles are
 * those of the summed histograms.
 */
CREATE FUNCTION triggers._metrics_combine(tenant text, parts jsonb[]) RETURNS jsonb
-- STABLE, not IMMUTABLE: reading and writing timestamptz follows the session's TimeZone.
LANGUAGE sql STABLE AS $$
    WITH s AS (
        SELECT coalesce(sum((x->>'pending')::numeric), 0) AS pending,
               coalesce(sum((x->>'delivered')::numeric), 0) AS delivered,
               coalesce(sum((x->>'failed')::numeric), 0) AS failed,
               max((x->>'last_processed_at')::timestamptz) AS last_processed_at,
               coalesce(sum((x->>'queue_depth')::numeric), 0) AS queue_depth,
               max((x->>'oldest_queued_s')::numeric) AS oldest,
               coalesce(sum((x->>'dlq_count')::numeric), 0) AS dlq_count,
               coalesce(sum((x->>'streams_waiting')::numeric), 0) AS streams_waiting,
               coalesce(sum((x->>'streams_halted')::numeric), 0) AS streams_halted
          FROM unnest(parts) AS x
    ), h AS (
        SELECT array_agg(e.key::smallint) AS buckets, array_agg(e.value::bigint) AS counts
          FROM unnest(parts) AS x, jsonb_each_text(x->'latency') AS e
    )
    SELECT jsonb_build_object(
        'tenant', tenant,
        'total', s.pending + s.delivered + s.failed,
        'pending', s.pending,
        'delivered', s.delivered,
        'failed', s.failed,
        'queue_depth', s.queue_depth,
        'dlq_count', s.dlq_count,
        'streams_waiting', s.streams_waiting,
        'streams_halted', s.streams_halted,
        'last_processed_at', s.last_processed_at,
        'processing_rate_per_min', round(l.processed / 5.0, 1),
        'oldest_queued_age_s', round(coalesce(s.oldest, 0), 3),
        'latency_ms', jsonb_build_object('window_s', 300, 'p50', l.p50_ms, 'p95', l.p95_ms, 'p99', l.p99_ms))
      FROM s, h, triggers._percentiles(h.buckets, h.counts) AS l
$$;
COMMENT ON FUNCTION triggers._metrics_combine IS 'Internal: metrics() from the parts of one or more nodes.';

/*
 * counters() of several nodes as one: every count adds up, and so does each cumulative
 * latency bucket (the bounds are the same everywhere).
 */
CREATE FUNCTION triggers._counters_combine(tenant text, parts jsonb[]) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object(
        'tenant', tenant,
        'enqueued', coalesce(sum((x->>'enqueued')::numeric), 0),
        'stored', coalesce(sum((x->>'stored')::numeric), 0),
        'retried', coalesce(sum((x->>'retried')::numeric), 0),
        'dead_lettered', coalesce(sum((x->>'dead_lettered')::numeric), 0),
        'acknowledged', coalesce(sum((x->>'acknowledged')::numeric), 0),
        'latency_count', coalesce(sum((x->>'latency_count')::numeric), 0),
        'latency_sum_s', coalesce(sum((x->>'latency_sum_s')::numeric), 0),
        'latency_buckets', (
            SELECT jsonb_agg(jsonb_build_object('le_s', b.le_s, 'count', b.count) ORDER BY b.le_s)
              FROM (SELECT (e->>'le_s')::numeric AS le_s, sum((e->>'count')::numeric) AS count
                      FROM unnest(parts) AS y, jsonb_array_elements(y->'latency_buckets') AS e
                     GROUP BY 1) b))
      FROM unnest(parts) AS x
$$;
COMMENT ON FUNCTION triggers._counters_combine IS 'Internal: counters() of several nodes, added up.';

/*
 * webhook_metrics() from its parts (_webhook_metrics_parts of each node): counts add
 * up; the latency percentiles are those of all the recent successes' latencies together.
 */
CREATE FUNCTION triggers._webhook_metrics_combine(parts jsonb[]) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    WITH s AS (
        SELECT coalesce(sum((x->>'pending')::numeric), 0) AS pending,
               coalesce(sum((x->>'succeeded')::numeric), 0) AS succeeded,
               coalesce(sum((x->>'failed')::numeric), 0) AS failed,
               coalesce(sum((x->>'attempts')::numeric), 0) AS attempts,
               coalesce(sum((x->>'endpoints')::numeric), 0) AS endpoints
          FROM unnest(parts) AS x
    ), l AS (
        SELECT percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY ms::numeric::float8) AS p
          FROM unnest(parts) AS x, jsonb_array_elements_text(x->'latencies') AS ms
    )
    SELECT jsonb_build_object(
               'pending', s.pending, 'succeeded', s.succeeded, 'failed', s.failed, 'attempts', s.attempts,
               'endpoints', s.endpoints,
               'latency_ms', jsonb_build_object('p50', round(l.p[1]::numeric, 1), 'p95', round(l.p[2]::numeric, 1),
                                                'p99', round(l.p[3]::numeric, 1)))
      FROM s, l
$$;
COMMENT ON FUNCTION triggers._webhook_metrics_combine IS 'Internal: webhook_metrics() from the parts of one or more nodes.';

/*
 * metrics_history()'s rows: the `minutes` minutes (1 to 1440) up to `last` (a minute),
 * oldest first, each with the events processed and their latency percentiles, from
 * _latency_minutes — a node's own histogram, or, in the proxy, every node's (the same
 * bucket of the same minute from several nodes adds up).
 */
CREATE FUNCTION triggers._history(tenant text, minutes int, last timestamptz)
RETURNS TABLE(minute timestamptz, processed bigint, p50_ms numeric, p95_ms numeric, p99_ms numeric)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF minutes IS NULL OR minutes < 1 OR minutes > 1440 THEN
        RAISE EXCEPTION USING ERRCODE = 'TG004',
            MESSAGE = format('minutes must be 1 to 1440, got %s', coalesce(minutes::text, 'NULL'));
    END IF;
    RETURN QUERY
    WITH h AS (
        SELECT l.minute AS at, l.bucket, l.n
          FROM triggers._latency_minutes(_history.tenant, last - (minutes - 1) * interval '1 minute',
                                         last + interval '1 minute') l
    )
    SELECT m.at, p.processed, p.p50_ms, p.p95_ms, p.p99_ms
      FROM generate_series(last - (minutes - 1) * interval '1 minute', last, interval '1 minute') AS m(at)
      CROSS JOIN LATERAL triggers._percentiles(
          ARRAY(SELECT h.bucket FROM h WHERE h.at = m.at ORDER BY h.bucket),
          ARRAY(SELECT h.n FROM h WHERE h.at = m.at ORDER BY h.bucket)) AS p
     ORDER BY m.at;
END $$;
COMMENT ON FUNCTION triggers._history IS 'Internal: metrics_history() from the latency histograms of one node or several.';

/*
 * The number an API key routes by: keys name their tenant's hashtext in the first eight
 * hex digits of their id (trg_<8 hex><9 random>_<secret>), so the proxy sends
 * authentication to the tenant's node without a lookup. NULL for a key without it.
 */
CREATE FUNCTION triggers._key_route(token text) RETURNS int
LANGUAGE sql IMMUTABLE AS $$
    SELECT ('x' || substring(token FROM '^trg_([0-9a-f]{8})[A-Za-z0-9]{9}_'))::bit(32)::int
$$;
COMMENT ON FUNCTION triggers._key_route IS 'Internal: the tenant hash an API key carries (NULL when it carries none).';

DROP FUNCTION triggers._latency(text, timestamptz, timestamptz);
CREATE FUNCTION triggers._latency_minutes(tenant text, since timestamptz, until timestamptz)
RETURNS TABLE(minute timestamptz, bucket smallint, n bigint)
LANGUAGE sql STABLE AS $$
    SELECT l.minute, l.bucket, sum(l.n)::bigint
      FROM (SELECT m.tenant, m.minute, m.bucket, m.n FROM triggers.latency_minutes m
             WHERE m.minute >= since AND m.minute < until
            UNION ALL
            SELECT d.tenant, d.minute, d.bucket, d.n FROM triggers.latency_deltas d
             WHERE d.minute >= since AND d.minute < until) l
     WHERE _latency_minutes.tenant IS NULL OR l.tenant = _latency_minutes.tenant
     GROUP BY l.minute, l.bucket
$$;
COMMENT ON FUNCTION triggers._latency_minutes IS
    'Internal: the latency histogram per minute in [since, until), of a tenant or all.';

CREATE OR REPLACE FUNCTION triggers.metrics_history(tenant text DEFAULT NULL, minutes int DEFAULT 60)
RETURNS TABLE(minute timestamptz, processed bigint, p50_ms numeric, p95_ms numeric, p99_ms numeric)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF metrics_history.tenant IS NOT NULL THEN
        PERFORM triggers._check_text('tenant', metrics_history.tenant);
    END IF;
    RETURN QUERY SELECT * FROM triggers._history(metrics_history.tenant, minutes,
                                                 date_trunc('minute', triggers._now()));
END $$;
COMMENT ON FUNCTION triggers.metrics_history IS
    'Per minute over the last hour (or `minutes`): events processed and latency p50/p95/p99 (ms), of a tenant or all.';

CREATE FUNCTION triggers._metrics_parts(tenant text) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_counts record;
    v_queue record;
    v_dlq bigint;
    v_streams record;
    v_latency jsonb;
    v_since timestamptz := date_trunc('minute', now()) - interval '4 minutes';
BEGIN
    SELECT coalesce(sum(s.pending), 0) AS pending, coalesce(sum(s.delivered), 0) AS delivered,
           coalesce(sum(s.failed), 0) AS failed, max(s.last_processed_at) AS last_processed_at
      INTO v_counts
      FROM (SELECT t.tenant, t.pending, t.delivered, t.failed, t.last_processed_at FROM triggers.metric_totals t
            UNION ALL
            SELECT d.tenant, d.pending, d.delivered, d.failed, d.last_processed_at FROM triggers.metric_deltas d) s
     WHERE _metrics_parts.tenant IS NULL OR s.tenant = _metrics_parts.tenant;
    SELECT count(*) AS depth, extract(epoch FROM now() - min(q.enqueued_at)) AS oldest
      INTO v_queue
      FROM pgmq.q_triggers_events q WHERE _metrics_parts.tenant IS NULL OR q.message->>'tenant' = _metrics_parts.tenant;
    SELECT count(*) INTO v_dlq FROM pgmq.q_triggers_events_dlq d
     WHERE _metrics_parts.tenant IS NULL OR d.message->>'tenant' = _metrics_parts.tenant;
    -- Streams held back: halted on a dead head, or waiting on a head that backs off.
    SELECT count(*) FILTER (WHERE p.halted_event IS NOT NULL) AS halted,
           count(*) FILTER (WHERE p.halted_event IS NULL AND h.vt > triggers._now()) AS waiting
      INTO v_streams
      FROM triggers.stream_progress p
      LEFT JOIN LATERAL triggers._stream_head(p.tenant, p.stream, p.done_seq) h ON true
     WHERE _metrics_parts.tenant IS NULL OR p.tenant = _metrics_parts.tenant;
    SELECT jsonb_object_agg(b.bucket, b.n) INTO v_latency
      FROM (SELECT l.bucket, sum(l.n) AS n FROM triggers._latency_minutes(_metrics_parts.tenant, v_since, 'infinity') l
             GROUP BY l.bucket) b;
    RETURN jsonb_build_object(
        'pending', v_counts.pending, 'delivered', v_counts.delivered, 'failed', v_counts.failed,
        'last_processed_at', v_counts.last_processed_at,
        'queue_depth', v_queue.depth, 'oldest_queued_s', v_queue.oldest, 'dlq_count', v_dlq,
        'streams_waiting', v_streams.waiting, 'streams_halted', v_streams.halted,
        'latency', coalesce(v_latency, '{}'));
END $$;
COMMENT ON FUNCTION triggers._metrics_parts IS 'Internal: the additive parts of metrics(), of a tenant or all.';

CREATE OR REPLACE FUNCTION triggers.metrics(tenant text DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF tenant IS NOT NULL THEN
        PERFORM triggers._check_text('tenant', tenant);
    END IF;
    RETURN triggers._metrics_combine(tenant, ARRAY[triggers._metrics_parts(tenant)]);
END $$;
COMMENT ON FUNCTION triggers.metrics IS
    'Exact counts by status, queue and DLQ depth, processing rate and latency percentiles, of one tenant or all.';

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

CREATE OR REPLACE FUNCTION triggers.webhook_metrics(tenant text DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF tenant IS NOT NULL THEN
        PERFORM triggers._check_text('tenant', tenant);
    END IF;
    RETURN triggers._webhook_metrics_combine(ARRAY[triggers._webhook_metrics_parts(tenant)]);
END $$;
COMMENT ON FUNCTION triggers.webhook_metrics IS
    'Webhook deliveries by status, attempts, and stored-to-received latency of recent successes, for a tenant or all.';

-- The live stream's horizon names whose stream the caller reads (the proxy routes by it).
DROP FUNCTION triggers.stored_horizon();
CREATE FUNCTION triggers.stored_horizon(tenant text DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_taken bigint := coalesce(pg_sequence_last_value('triggers.event_positions'), 0);
    v_until timestamptz := clock_timestamp() + interval '5 seconds';
    v_settled bigint;
BEGIN
    LOOP
        v_settled := triggers._settled('triggers.event_positions', 'triggers.events', 'live') - 1;
        EXIT WHEN v_settled >= v_taken OR clock_timestamp() > v_until;
        PERFORM pg_sleep(0.005);
    END LOOP;
    RETURN v_settled;
END $$;
COMMENT ON FUNCTION triggers.stored_horizon IS
    'The last delivery position settled, at least every one taken before the call: start the live stream here to get what is stored from now on.';

REVOKE ALL ON FUNCTION triggers._percentiles(smallint[], bigint[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION triggers._metrics_combine(text, jsonb[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION triggers._counters_combine(text, jsonb[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION triggers._webhook_metrics_combine(jsonb[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION triggers._history(text, int, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION triggers._key_route(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION triggers._latency_minutes(text, timestamptz, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION triggers._metrics_parts(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION triggers._webhook_metrics_parts(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION triggers.stored_horizon(text) FROM PUBLIC;

-- The proxy passes its caller's secrets key to endpoint creation and rotation.
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

REVOKE ALL ON FUNCTION triggers._create_endpoint_keyed(text, text, text, jsonb, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION triggers._rotate_endpoint_secret_keyed(text, text, uuid) FROM PUBLIC;
