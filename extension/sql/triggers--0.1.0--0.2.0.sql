-- triggers 0.1.0 → 0.2.0 (ALTER EXTENSION triggers UPDATE). Keys can expire
-- (api_keys.expires_at, create_api_key's expires_at, authenticate_key), and a revocation
-- NOTIFYs triggers_keys so servers drop the key from their caches at once. Webhook
-- attempts are recorded by _record_attempts alone (successes there, failures through
-- _record_failure): _record_attempt, which had a second copy of the success rules, is gone.
-- A partition of a sharded layout can move to another node (sql/partitions.sql; enqueue refuses a
-- tenant whose partition moved off). The functions are as sql/keys.sql and sql/webhooks.sql have them; tests/tests/upgrade.rs holds an upgraded
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

-- Moving a partition of a sharded layout off or onto a node (sql/partitions.sql), and
-- enqueue refusing the events of a tenant whose partition moved off.
CREATE TABLE triggers.partition_moves (
    partitions integer     NOT NULL CHECK (partitions BETWEEN 1 AND 1048576 AND (partitions & (partitions - 1)) = 0),
    part       integer     NOT NULL CHECK (part >= 0 AND part < partitions),
    state      text        NOT NULL CHECK (state IN ('out', 'in')),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (partitions, part)
);
SELECT pg_catalog.pg_extension_config_dump('triggers.partition_moves', '');

/* Whether `tenant` is in partition `part` of `partitions` (never for NULL or ''). */
CREATE FUNCTION triggers._in_partition(tenant text, partitions int, part int) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT tenant <> '' AND (hashtext(tenant) & (partitions - 1)) = part
$$;
COMMENT ON FUNCTION triggers._in_partition IS 'Internal: whether a tenant is in PL/Proxy partition part of partitions.';

/*
 * Why an event of `tenant` may not be queued here, or NULL: its partition moved off this
 * node. In every enqueue: plpgsql, so that its query's plan is kept (a SQL function's is
 * made again at each call, ~10 times the cost).
 */
CREATE FUNCTION triggers._placement_error(tenant text) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_error text;
BEGIN
    SELECT '57P03 tenant ' || quote_literal(tenant) || ' is no longer on this node: partition '
           || m.part || ' of ' || m.partitions || ' moved (or is moving) to another; send through the proxy'
      INTO v_error
      FROM triggers.partition_moves m
     WHERE m.state = 'out' AND triggers._in_partition(tenant, m.partitions, m.part)
     LIMIT 1;
    RETURN v_error;
END $$;
COMMENT ON FUNCTION triggers._placement_error IS
    'Internal: the error (57P03) for an event of a tenant whose partition moved off this node, or NULL.';

/* Raises TG004 unless `part` is a partition of `partitions` (a power of two). */
CREATE FUNCTION triggers._check_partition(partitions int, part int) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF partitions IS NULL OR partitions < 1 OR partitions > 1048576 OR (partitions & (partitions - 1)) <> 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'TG004', MESSAGE = 'partitions must be a power of two from 1 to 1048576';
    END IF;
    IF part IS NULL OR part < 0 OR part >= partitions THEN
        RAISE EXCEPTION USING ERRCODE = 'TG004', MESSAGE = 'partition must be from 0 to partitions - 1';
    END IF;
END $$;
COMMENT ON FUNCTION triggers._check_partition IS 'Internal: raises TG004 unless part is one of partitions (a power of two).';

/*
 * What a partition's tenants own, table by table: the name of its staging table, the
 * table, the query that selects the partition's rows of it, and that query's condition
 * on a row `x` (tenant-keyed tables by tenant, attempts by their delivery's, queued
 * messages by the tenant in them).
 */
CREATE FUNCTION triggers.partition_tables(partitions int, part int)
RETURNS TABLE(name text, rel regclass, query text, selects text)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    PERFORM triggers._check_partition(partitions, part);
    RETURN QUERY
    SELECT t.name, t.rel::regclass, format('SELECT x.* FROM %s x WHERE %s', t.rel, w.selects), w.selects
      FROM (VALUES
            ('events', 'triggers.events', 'x.tenant'),
            ('idempotency_keys', 'triggers.idempotency_keys', 'x.tenant'),
            ('streams', 'triggers.streams', 'x.tenant'),
            ('lanes', 'triggers.lanes', 'x.tenant'),
            ('tenants', 'triggers.tenants', 'x.tenant'),
            ('stream_progress', 'triggers.stream_progress', 'x.tenant'),
            ('metric_deltas', 'triggers.metric_deltas', 'x.tenant'),
            ('metric_totals', 'triggers.metric_totals', 'x.tenant'),
            ('latency_deltas', 'triggers.latency_deltas', 'x.tenant'),
            ('latency_minutes', 'triggers.latency_minutes', 'x.tenant'),
            ('latency_totals', 'triggers.latency_totals', 'x.tenant'),
            ('api_keys', 'triggers.api_keys', 'x.tenant'),
            ('webhook_endpoints', 'triggers.webhook_endpoints', 'x.tenant'),
            ('webhook_deliveries', 'triggers.webhook_deliveries', 'x.tenant'),
            ('webhook_attempts', 'triggers.webhook_attempts',
             '(SELECT d.tenant FROM triggers.webhook_deliveries d WHERE d.delivery_id = x.delivery_id)'),
            ('queue', 'pgmq.q_triggers_events', 'x.message->>''tenant'''),
            ('dlq', 'pgmq.q_triggers_events_dlq', 'x.message->>''tenant'''),
            ('archive', 'pgmq.a_triggers_events', 'x.message->>''tenant'''),
            ('dlq_archive', 'pgmq.a_triggers_events_dlq', 'x.message->>''tenant''')) t(name, rel, tenant),
     LATERAL (SELECT format('triggers._in_partition(%s, %s, %s)', t.tenant, partitions, part) AS selects) w;
END $$;
COMMENT ON FUNCTION triggers.partition_tables IS
    'What a partition''s tenants own: per table, its staging table''s name, the query selecting their rows, its condition.';

-- A message's or delivery's time while its partition is fenced: 1000 years on, so that
-- no claim finds it due, and the fence can tell what it already moved.
CREATE FUNCTION triggers._fenced(t timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE AS $$ SELECT t + interval '1000 years' $$;
CREATE FUNCTION triggers._unfenced(t timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN t > '3000-01-01'::timestamptz THEN t - interval '1000 years' ELSE t END
$$;
COMMENT ON FUNCTION triggers._fenced IS 'Internal: a fenced message''s or delivery''s time (1000 years on).';
COMMENT ON FUNCTION triggers._unfenced IS 'Internal: a time as it was before _fenced (any other time as it is).';

/*
 * Step 1, on the source: refuses the partition's events from now on (_placement_error)
 * and hides its queued messages and pending webhook deliveries from this node's
 * workers, skipping what a worker holds. Returns how many it hid this call and how many
 * are busy: a message a worker holds (it may queue a retry or a dead letter of it) or a
 * delivery in flight (its outcome lands here). Call again until both are 0, after every
 * transaction that began before the first call has ended (a producer that passed the
 * check before it); from then on nothing of the partition changes here.
 */
CREATE FUNCTION triggers.partition_fence(partitions int, part int, OUT hidden bigint, OUT busy bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_n bigint;
BEGIN
    PERFORM triggers._check_partition(partitions, part);
    INSERT INTO triggers.partition_moves AS m (partitions, part, state)
    VALUES (partition_fence.partitions, partition_fence.part, 'out')
    ON CONFLICT ON CONSTRAINT partition_moves_pkey DO UPDATE SET state = 'out', updated_at = now()
     WHERE m.state <> 'out';
    WITH free AS (
        SELECT q.msg_id FROM pgmq.q_triggers_events q
         WHERE q.vt < '3000-01-01' AND triggers._in_partition(q.message->>'tenant', partitions, part)
           FOR UPDATE SKIP LOCKED)
    UPDATE pgmq.q_triggers_events q SET vt = triggers._fenced(q.vt) FROM free WHERE q.msg_id = free.msg_id;
    GET DIAGNOSTICS hidden = ROW_COUNT;
    WITH free AS (
        SELECT d.delivery_id FROM triggers.webhook_deliveries d
         WHERE d.status = 'pending' AND d.next_attempt_at < '3000-01-01'
           AND triggers._in_partition(d.tenant, partitions, part)
           FOR UPDATE SKIP LOCKED)
    UPDATE triggers.webhook_deliveries d SET next_attempt_at = triggers._fenced(d.next_attempt_at)
      FROM free WHERE d.delivery_id = free.delivery_id;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    hidden := hidden + v_n;
    -- A statement of its own, so a snapshot of its own: what others hold or committed meanwhile.
    SELECT (SELECT count(*) FROM pgmq.q_triggers_events q
             WHERE q.vt < '3000-01-01' AND triggers._in_partition(q.message->>'tenant', partitions, part))
         + (SELECT count(*) FROM triggers.webhook_deliveries d
             WHERE d.status = 'pending' AND (d.next_attempt_at < '3000-01-01' OR d.leased_until > triggers._now())
               AND triggers._in_partition(d.tenant, partitions, part))
      INTO busy;
END $$;
COMMENT ON FUNCTION triggers.partition_fence IS
    'Moving a partition, on the source: refuse its events here and hide its queued work from this node''s workers.';

/* Undoes partition_fence: for a move given up before its partition was switched. */
CREATE FUNCTION triggers.partition_unfence(partitions int, part int) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_n bigint;
    v_m bigint;
BEGIN
    PERFORM triggers._check_partition(partitions, part);
    UPDATE pgmq.q_triggers_events q SET vt = triggers._unfenced(q.vt)
     WHERE q.vt > '3000-01-01' AND triggers._in_partition(q.message->>'tenant', partitions, part);
    GET DIAGNOSTICS v_n = ROW_COUNT;
    UPDATE triggers.webhook_deliveries d SET next_attempt_at = triggers._unfenced(d.next_attempt_at)
     WHERE d.status = 'pending' AND d.next_attempt_at > '3000-01-01'
       AND triggers._in_partition(d.tenant, partitions, part);
    GET DIAGNOSTICS v_m = ROW_COUNT;
    DELETE FROM triggers.partition_moves m
     WHERE m.partitions = partition_unfence.partitions AND m.part = partition_unfence.part;
    PERFORM pg_notify('triggers_events', '');
    RETURN v_n + v_m;
END $$;
COMMENT ON FUNCTION triggers.partition_unfence IS
    'Undoes partition_fence (a move given up before the switch): the partition''s work is this node''s again.';

/*
 * Step 2, on the target, in the transaction that will import: a temporary staging
 * table like each of partition_tables (dropped at commit), for COPY … FROM STDIN.
 */
CREATE FUNCTION triggers.partition_stage() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    t record;
BEGIN
    FOR t IN SELECT * FROM triggers.partition_tables(1, 0) LOOP
        EXECUTE format('CREATE TEMPORARY TABLE %I (LIKE %s) ON COMMIT DROP', 'move_' || t.name, t.rel);
    END LOOP;
END $$;
COMMENT ON FUNCTION triggers.partition_stage IS
    'Moving a partition, on the target: staging tables (pg_temp.move_<name>) for the copied rows, dropped at commit.';

/*
 * Step 2, on the target: the staged rows into the tables. Events keep their ids and
 * live-stream positions (the position sequence is raised past them), queued messages
 * and deliveries take new ids here (attempts follow their delivery), fenced times are
 * given back, leases dropped. Refuses a node that already holds tenants of the
 * partition. Marks the partition as moved in. Returns rows per table.
 */
CREATE FUNCTION triggers.partition_import(partitions int, part int)
RETURNS TABLE(name text, rows bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_held text;
    v_max bigint;
BEGIN
    PERFORM triggers._check_partition(partitions, part);
    SELECT string_agg(DISTINCT h.tenant, ', ') INTO v_held FROM (
        SELECT l.tenant FROM triggers.lanes l UNION ALL SELECT k.tenant FROM triggers.api_keys k
        UNION ALL SELECT e.tenant FROM triggers.webhook_endpoints e UNION ALL SELECT t.tenant FROM triggers.tenants t) h
     WHERE triggers._in_partition(h.tenant, partitions, part);
    IF v_held IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'TG007',
            MESSAGE = format('this node already holds tenants of partition %s of %s (%s)', part, partitions, left(v_held, 200));
    END IF;
    LOCK TABLE triggers.events IN ROW EXCLUSIVE MODE;
    INSERT INTO triggers.events SELECT * FROM pg_temp.move_events;
    -- Positions ahead of the moved events', taken while events is locked (live.sql's horizon).
    SELECT max(e.position) INTO v_max FROM pg_temp.move_events e;
    IF v_max IS NOT NULL AND v_max > coalesce(pg_sequence_last_value('triggers.event_positions'), 0) THEN
        PERFORM setval('triggers.event_positions', v_max);
    END IF;
    -- The insert counted the events as new; the copied counters are the true ones.
    DELETE FROM triggers.metric_deltas d WHERE triggers._in_partition(d.tenant, partitions, part);
    DELETE FROM triggers.latency_deltas d WHERE triggers._in_partition(d.tenant, partitions, part);
    INSERT INTO triggers.metric_deltas SELECT * FROM pg_temp.move_metric_deltas;
    INSERT INTO triggers.metric_totals SELECT * FROM pg_temp.move_metric_totals;
    INSERT INTO triggers.latency_deltas SELECT * FROM pg_temp.move_latency_deltas;
    INSERT INTO triggers.latency_minutes SELECT * FROM pg_temp.move_latency_minutes;
    INSERT INTO triggers.latency_totals SELECT * FROM pg_temp.move_latency_totals;
    INSERT INTO triggers.idempotency_keys SELECT * FROM pg_temp.move_idempotency_keys;
    INSERT INTO triggers.streams SELECT * FROM pg_temp.move_streams;
    INSERT INTO triggers.lanes SELECT DISTINCT l.tenant FROM pg_temp.move_lanes l;
    INSERT INTO triggers.tenants SELECT * FROM pg_temp.move_tenants;
    INSERT INTO triggers.stream_progress SELECT * FROM pg_temp.move_stream_progress;
    INSERT INTO triggers.api_keys SELECT * FROM pg_temp.move_api_keys;
    INSERT INTO triggers.webhook_endpoints SELECT * FROM pg_temp.move_webhook_endpoints;
    -- Deliveries take new ids; (endpoint_id, event_id) is unique and finds each again.
    WITH moved AS (
        INSERT INTO triggers.webhook_deliveries AS w (tenant, endpoint_id, event_id, status, attempts,
                                                      next_attempt_at, leased_until, created_at, finished_at)
        SELECT d.tenant, d.endpoint_id, d.event_id, d.status, d.attempts, triggers._unfenced(d.next_attempt_at),
               NULL, d.created_at, d.finished_at
          FROM pg_temp.move_webhook_deliveries d ORDER BY d.delivery_id
        RETURNING w.delivery_id, w.endpoint_id, w.event_id)
    INSERT INTO triggers.webhook_attempts
    SELECT m.delivery_id, a.attempt, a.attempted_at, a.status_code, a.latency_ms, a.response, a.error
      FROM pg_temp.move_webhook_attempts a
      JOIN pg_temp.move_webhook_deliveries d ON d.delivery_id = a.delivery_id
      JOIN moved m ON m.endpoint_id = d.endpoint_id AND m.event_id = d.event_id;
    -- Queued messages take new ids, in their order.
    INSERT INTO pgmq.q_triggers_events (read_ct, enqueued_at, last_read_at, vt, message, headers)
    SELECT q.read_ct, q.enqueued_at, q.last_read_at, triggers._unfenced(q.vt), q.message, q.headers
      FROM pg_temp.move_queue q ORDER BY q.msg_id;
    INSERT INTO pgmq.q_triggers_events_dlq (read_ct, enqueued_at, last_read_at, vt, message, headers)
    SELECT q.read_ct, q.enqueued_at, q.last_read_at, q.vt, q.message, q.headers
      FROM pg_temp.move_dlq q ORDER BY q.msg_id;
    INSERT INTO pgmq.a_triggers_events
    SELECT nextval(pg_get_serial_sequence('pgmq.q_triggers_events', 'msg_id')), a.read_ct, a.enqueued_at,
           a.last_read_at, a.archived_at, a.vt, a.message, a.headers
      FROM pg_temp.move_archive a ORDER BY a.msg_id;
    INSERT INTO pgmq.a_triggers_events_dlq
    SELECT nextval(pg_get_serial_sequence('pgmq.q_triggers_events_dlq', 'msg_id')), a.read_ct, a.enqueued_at,
           a.last_read_at, a.archived_at, a.vt, a.message, a.headers
      FROM pg_temp.move_dlq_archive a ORDER BY a.msg_id;
    INSERT INTO triggers.partition_moves AS m (partitions, part, state)
    VALUES (partition_import.partitions, partition_import.part, 'in')
    ON CONFLICT ON CONSTRAINT partition_moves_pkey DO UPDATE SET state = 'in', updated_at = now();
    -- Wake this node's workers for the queued messages.
    PERFORM pg_notify('triggers_events', '');
    FOR name IN SELECT t.name FROM triggers.partition_tables(1, 0) t LOOP
        EXECUTE format('SELECT count(*) FROM pg_temp.%I', 'move_' || name) INTO rows;
        RETURN NEXT;
    END LOOP;
END $$;
COMMENT ON FUNCTION triggers.partition_import IS
    'Moving a partition, on the target: the staged rows into the tables (new queue and delivery ids, positions kept).';

/*
 * Step 4, on the source, once the proxy routes the partition to the target: deletes
 * every row of the partition's tenants. The partition stays refused here
 * (partition_moves). Returns rows deleted per table.
 */
CREATE FUNCTION triggers.partition_drop(partitions int, part int)
RETURNS TABLE(name text, rows bigint)
LANGUAGE plpgsql AS $$
DECLARE
    t record;
BEGIN
    PERFORM triggers._check_partition(partitions, part);
    IF NOT EXISTS (SELECT 1 FROM triggers.partition_moves m
                    WHERE m.partitions = partition_drop.partitions AND m.part = partition_drop.part
                      AND m.state = 'out') THEN
        RAISE EXCEPTION USING ERRCODE = 'TG007',
            MESSAGE = format('partition %s of %s is not fenced on this node (partition_fence first)', part, partitions);
    END IF;
    -- Events first: deleting them appends metric deltas, which the metric tables' turn
    -- then deletes with the rest. Attempts go with their deliveries.
    FOR t IN SELECT * FROM triggers.partition_tables(partitions, part) p
              ORDER BY p.name <> 'events', p.name = 'webhook_endpoints', p.name LOOP
        CONTINUE WHEN t.name = 'webhook_attempts';
        EXECUTE format('WITH gone AS (DELETE FROM %s x WHERE %s RETURNING 1) SELECT count(*) FROM gone',
                       t.rel, t.selects)
           INTO rows;
        name := t.name;
        RETURN NEXT;
    END LOOP;
END $$;
COMMENT ON FUNCTION triggers.partition_drop IS
    'Moving a partition, on the source, after the switch: deletes its tenants'' rows; its events stay refused here.';

/*
 * This database: name, port and its server's start time (partition_node through a
 * proxy, which passes its argument along: `part` is not used).
 */
CREATE FUNCTION triggers._node(part int DEFAULT NULL) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT current_database() || ' on port ' || current_setting('port') || ', up since '
           || extract(epoch FROM pg_postmaster_start_time())
$$;
COMMENT ON FUNCTION triggers._node IS 'Internal: which database this is (name, port, server start).';

CREATE OR REPLACE FUNCTION triggers.enqueue_ex(
    payload jsonb,
    metadata jsonb DEFAULT NULL,
    tenant text DEFAULT 'default',
    idempotency_key text DEFAULT NULL,
    stream text DEFAULT NULL,
    debug text DEFAULT NULL,
    OUT event_id uuid,
    OUT duplicate boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_now timestamptz := triggers._now();
    v_error text;
    v_seq bigint;
    cfg triggers.config;
BEGIN
    SELECT * INTO cfg FROM triggers.config;
    v_error := coalesce(CASE WHEN enqueue_ex.tenant IS NULL THEN 'TG004 tenant must not be NULL' END,
                        triggers._text_error('tenant', enqueue_ex.tenant, 200),
                        triggers._event_error('', enqueue_ex.payload, enqueue_ex.metadata,
                                              enqueue_ex.idempotency_key, enqueue_ex.stream,
                                              enqueue_ex.debug, cfg.max_payload_bytes),
                        triggers._placement_error(enqueue_ex.tenant));
    IF v_error IS NOT NULL THEN
        PERFORM triggers._raise(v_error);
    END IF;
    event_id := triggers._uuid_v7();
    duplicate := false;
    IF enqueue_ex.idempotency_key IS NOT NULL THEN
        INSERT INTO triggers.idempotency_keys AS k (tenant, idempotency_key, event_id, created_at)
        VALUES (enqueue_ex.tenant, enqueue_ex.idempotency_key, enqueue_ex.event_id, v_now)
        ON CONFLICT DO NOTHING;
        IF NOT FOUND THEN
            SELECT k.event_id INTO event_id FROM triggers.idempotency_keys k
             WHERE k.tenant = enqueue_ex.tenant AND k.idempotency_key = enqueue_ex.idempotency_key;
            duplicate := true;
            RETURN;
        END IF;
    END IF;
    IF enqueue_ex.stream IS NOT NULL THEN
        -- A stream that exists: one UPDATE. Its first event: the upsert and its progress row.
        UPDATE triggers.streams s SET last_seq = s.last_seq + 1
         WHERE s.tenant = enqueue_ex.tenant AND s.stream = enqueue_ex.stream
        RETURNING s.last_seq INTO v_seq;
        IF NOT FOUND THEN
            v_seq := triggers._stream_seq(enqueue_ex.tenant, enqueue_ex.stream);
        END IF;
    END IF;
    INSERT INTO pgmq.q_triggers_events (vt, message, headers)
    VALUES (v_now + triggers._debug_delay(enqueue_ex.debug, cfg.queue_delay_ms),
            triggers._message(enqueue_ex.event_id, enqueue_ex.tenant, enqueue_ex.payload,
                              enqueue_ex.metadata, enqueue_ex.idempotency_key, enqueue_ex.stream,
                              v_seq, enqueue_ex.debug, v_now),
            triggers._headers(enqueue_ex.tenant, enqueue_ex.stream, v_seq));
    PERFORM triggers._register_tenant(enqueue_ex.tenant);
    PERFORM triggers._wake(cfg.notify_throttle_ms);
END $$;
COMMENT ON FUNCTION triggers.enqueue_ex IS
    'enqueue, also saying whether the idempotency key was seen before (duplicate).';

CREATE OR REPLACE FUNCTION triggers.enqueue_batch_ex(events jsonb, tenant text DEFAULT 'default')
RETURNS TABLE(event_id uuid, duplicate boolean) LANGUAGE plpgsql AS $$
DECLARE
    v_now timestamptz := triggers._now();
    cfg triggers.config;
    v_n int;
    v_error text;
    v_keys boolean;
    v_streams boolean;
    v_ids uuid[];
    v_seqs bigint[];
BEGIN
    PERFORM triggers._check_text('tenant', enqueue_batch_ex.tenant);
    PERFORM triggers._raise(triggers._placement_error(enqueue_batch_ex.tenant));
    IF events IS NULL OR jsonb_typeof(events) <> 'array' THEN
        RAISE EXCEPTION USING ERRCODE = 'TG004', MESSAGE = 'events must be a JSON array';
    END IF;
    v_n := jsonb_array_length(events);
    IF v_n < 1 OR v_n > 10000 THEN
        RAISE EXCEPTION USING ERRCODE = 'TG004',
            MESSAGE = format('events must hold 1 to 10000 events, got %s', v_n);
    END IF;
    SELECT * INTO cfg FROM triggers.config;
    -- One pass over the array: the first element that breaks a rule (validate.sql), and
    -- does any carry an idempotency key or a stream? A batch with neither (the common
    -- case) takes the short path.
    SELECT (array_agg(err ORDER BY ord) FILTER (WHERE err IS NOT NULL))[1],
           coalesce(bool_or(key IS NOT NULL), false), coalesce(bool_or(stream IS NOT NULL), false)
      INTO v_error, v_keys, v_streams
      FROM (SELECT ord, e->>'idempotency_key' AS key, e->>'stream' AS stream,
                   triggers._element_error('events[' || (ord - 1)::text || ']', e, cfg.max_payload_bytes) AS err
              FROM jsonb_array_elements(events) WITH ORDINALITY AS t(e, ord)) x;
    IF v_error IS NOT NULL THEN
        PERFORM triggers._raise(v_error);
    END IF;

    IF NOT v_keys AND NOT v_streams THEN
        -- No keys, no streams: every element is a new event; one statement queues them.
        RETURN QUERY
        WITH items AS MATERIALIZED (
            SELECT ord, e, triggers._uuid_v7() AS id
              FROM jsonb_array_elements(events) WITH ORDINALITY AS t(e, ord)
        ), queued AS (
            INSERT INTO pgmq.q_triggers_events (vt, message, headers)
            SELECT v_now + triggers._debug_delay(e->>'debug', cfg.queue_delay_ms),
                   triggers._message(id, enqueue_batch_ex.tenant, e->'payload', nullif(e->'metadata', 'null'),
                                     NULL, NULL, NULL, e->>'debug', v_now),
                   triggers._headers(enqueue_batch_ex.tenant, NULL, NULL)
              FROM items
             ORDER BY ord
        )
        SELECT items.id, false FROM items ORDER BY items.ord;
        PERFORM triggers._register_tenant(enqueue_batch_ex.tenant);
        PERFORM triggers._wake(cfg.notify_throttle_ms);
        RETURN;
    END IF;

    SELECT array_agg(triggers._uuid_v7() ORDER BY ord) INTO v_ids
      FROM generate_series(1, v_n) AS ord;

    -- Claim the keys; a key seen before (or earlier in this array) keeps its first id.
    INSERT INTO triggers.idempotency_keys AS k (tenant, idempotency_key, event_id, created_at)
    SELECT enqueue_batch_ex.tenant, e->>'idempotency_key', v_ids[ord], v_now
      FROM jsonb_array_elements(events) WITH ORDINALITY AS t(e, ord)
     WHERE e->>'idempotency_key' IS NOT NULL
     -- Key order, so concurrent batches lock keys in one order and cannot deadlock;
     -- within a key, array order, so the first occurrence wins.
     ORDER BY e->>'idempotency_key', ord
    ON CONFLICT DO NOTHING;

    -- Lock the streams in name order first (concurrent batches cannot deadlock), then
    -- hand out positions in array order to the events that will be queued.
    INSERT INTO triggers.streams (tenant, stream, last_seq)
    SELECT DISTINCT enqueue_batch_ex.tenant, e->>'stream', 0
      FROM jsonb_array_elements(events) AS t(e) WHERE e->>'stream' IS NOT NULL
     ORDER BY 2
    ON CONFLICT DO NOTHING;
    PERFORM 1 FROM triggers.streams s
     WHERE s.tenant = enqueue_batch_ex.tenant
       AND s.stream IN (SELECT e->>'stream' FROM jsonb_array_elements(events) AS t(e))
     ORDER BY s.stream FOR UPDATE;
    SELECT array_agg(CASE WHEN e->>'stream' IS NOT NULL AND NOT EXISTS (
                              SELECT 1 FROM triggers.idempotency_keys k
                               WHERE k.tenant = enqueue_batch_ex.tenant
                                 AND k.idempotency_key = e->>'idempotency_key'
                                 AND k.event_id <> v_ids[ord])
                          THEN triggers._stream_seq(enqueue_batch_ex.tenant, e->>'stream') END ORDER BY ord)
      INTO v_seqs
      FROM (SELECT e, ord FROM jsonb_array_elements(events) WITH ORDINALITY AS t(e, ord) ORDER BY ord) x;

    RETURN QUERY
    WITH items AS (
        SELECT ord, e, v_ids[ord] AS fresh_id,
               coalesce((SELECT k.event_id FROM triggers.idempotency_keys k
                          WHERE k.tenant = enqueue_batch_ex.tenant
                            AND k.idempotency_key = e->>'idempotency_key'), v_ids[ord]) AS id
          FROM jsonb_array_elements(events) WITH ORDINALITY AS t(e, ord)
    ), queued AS (
        INSERT INTO pgmq.q_triggers_events (vt, message, headers)
        SELECT v_now + triggers._debug_delay(e->>'debug', cfg.queue_delay_ms),
               triggers._message(id, enqueue_batch_ex.tenant, e->'payload', nullif(e->'metadata', 'null'),
                                 e->>'idempotency_key', e->>'stream', v_seqs[ord], e->>'debug', v_now),
               triggers._headers(enqueue_batch_ex.tenant, e->>'stream', v_seqs[ord])
          FROM items WHERE id = fresh_id
         ORDER BY ord
    )
    SELECT items.id, items.id <> items.fresh_id FROM items ORDER BY items.ord;
    PERFORM triggers._register_tenant(enqueue_batch_ex.tenant);
    PERFORM triggers._wake(cfg.notify_throttle_ms);
END $$;
COMMENT ON FUNCTION triggers.enqueue_batch_ex IS
    'enqueue_batch, also saying for each event whether it repeated an idempotency key.';

-- Tenant-safe under abuse (issue 26): the test clock needs a superuser's switch; roles,
-- tenant-bound logins, per-tenant limits (triggers.tenants, config.max_endpoints),
-- byte-bounded pages, the key check's lookups. Functions as sql/*.sql have them.
CREATE FUNCTION triggers."_test_clock"() RETURNS bool
STABLE STRICT PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', '_test_clock_wrapper';
COMMENT ON FUNCTION triggers._test_clock IS 'Internal: whether the superuser-only setting triggers.test_clock lets triggers.now stand in for the clock.';
CREATE FUNCTION triggers."_session_bound"() RETURNS bool
STABLE STRICT PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', '_session_bound_wrapper';
COMMENT ON FUNCTION triggers._session_bound IS 'Internal: whether the session''s login role is bound to a tenant (a member of triggers_bound).';
CREATE FUNCTION triggers."_size"("value" anyelement) RETURNS bigint
IMMUTABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', '_size_wrapper';
COMMENT ON FUNCTION triggers._size IS 'Internal: a value''s size uncompressed, in bytes, from its header (what a page''s byte budget counts).';
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
                NULL; -- made at this moment by an install in another database
            END;
        END IF;
    END LOOP;
    BEGIN
        GRANT triggers_producer, triggers_consumer, triggers_worker TO triggers_admin;
    EXCEPTION WHEN unique_violation THEN
        NULL;
    END;
END $$;
CREATE TABLE triggers.tenant_roles (
    role       regrole     PRIMARY KEY,
    tenant     text        NOT NULL CHECK (tenant <> ''),
    granted_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE triggers.tenant_roles IS
    'Login roles bound to one tenant (triggers.grant_tenant): their calls act for it alone.';
SELECT pg_catalog.pg_extension_config_dump('triggers.tenant_roles', '');

ALTER TABLE triggers.tenants
    ADD COLUMN requests_per_minute integer NULL CHECK (requests_per_minute >= 0),
    ADD COLUMN events_per_minute   integer NULL CHECK (events_per_minute >= 0),
    ADD COLUMN max_queued          bigint  NULL CHECK (max_queued >= 0),
    ADD COLUMN max_concurrency     integer NULL CHECK (max_concurrency >= 0),
    ADD COLUMN max_live_streams    integer NULL CHECK (max_live_streams >= 0),
    ADD COLUMN max_endpoints       integer NULL CHECK (max_endpoints >= 0);
ALTER TABLE triggers.config
    ADD COLUMN max_endpoints integer NOT NULL DEFAULT 100 CHECK (max_endpoints >= 0);
DROP FUNCTION triggers.inbox(text, text[], text, int, timestamptz, timestamptz, text, jsonb, jsonb, int, int, text);
ALTER TYPE triggers.inbox_row ADD ATTRIBUTE more boolean;
DROP FUNCTION triggers.stored(text, bigint, int, text, jsonb, jsonb, bigint);
CREATE FUNCTION triggers._bound_error(tenant text) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_bound text;
BEGIN
    SELECT r.tenant INTO v_bound FROM triggers.tenant_roles r WHERE r.role = session_user::regrole;
    IF NOT FOUND OR v_bound = tenant THEN
        RETURN NULL;
    END IF;
    IF tenant IS NULL THEN
        RETURN format('TG011 role %s acts only for tenant %s, not for every tenant', session_user, v_bound);
    END IF;
    RETURN format('TG011 role %s acts only for tenant %s, not for %s', session_user, v_bound, tenant);
END $$;
COMMENT ON FUNCTION triggers._bound_error IS
    'Internal: why a bound role may not act for a tenant, or NULL when it is its own.';

CREATE FUNCTION triggers._access_error(tenant text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN triggers._session_bound() THEN triggers._bound_error(tenant) END
$$;
COMMENT ON FUNCTION triggers._access_error IS
    'Internal: why the session''s role may not act for a tenant (NULL: all tenants), or NULL when it may.';

CREATE FUNCTION triggers._check_tenant(tenant text, or_all boolean DEFAULT false)
RETURNS void LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF tenant IS NOT NULL OR NOT or_all THEN
        PERFORM triggers._check_text('tenant', tenant);
    END IF;
    PERFORM triggers._raise(triggers._access_error(tenant));
END $$;
COMMENT ON FUNCTION triggers._check_tenant IS
    'Internal: raises TG004 for a bad tenant name, TG011 when the session''s role is bound to another tenant.';

CREATE FUNCTION triggers.grant_tenant(role name, tenant text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_super boolean;
BEGIN
    PERFORM triggers._check_tenant(tenant);
    SELECT r.rolsuper INTO v_super FROM pg_catalog.pg_roles r WHERE r.rolname = grant_tenant.role;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'TG004', MESSAGE = format('role %s does not exist', coalesce(role::text, 'NULL'));
    END IF;
    IF v_super OR role IN ('triggers_producer', 'triggers_consumer', 'triggers_worker', 'triggers_admin', 'triggers_bound') THEN
        RAISE EXCEPTION USING ERRCODE = 'TG004', MESSAGE = format('role %s cannot be bound to a tenant', role);
    END IF;
    INSERT INTO triggers.tenant_roles AS r (role, tenant) VALUES (grant_tenant.role::regrole, grant_tenant.tenant)
    ON CONFLICT ON CONSTRAINT tenant_roles_pkey DO UPDATE SET tenant = excluded.tenant, granted_at = now();
    EXECUTE format('GRANT triggers_bound TO %I', role);
END $$;
COMMENT ON FUNCTION triggers.grant_tenant IS
    'Binds a login role to one tenant: its calls then act for that tenant only (TG011 for any other).';

CREATE FUNCTION triggers.revoke_tenant(role name) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_tenant text;
BEGIN
    IF role IS NULL OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = revoke_tenant.role) THEN
        RAISE EXCEPTION USING ERRCODE = 'TG004', MESSAGE = format('role %s does not exist', coalesce(role::text, 'NULL'));
    END IF;
    SELECT r.tenant INTO v_tenant FROM triggers.tenant_roles r WHERE r.role = revoke_tenant.role::regrole;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM triggers._check_tenant(v_tenant);
    DELETE FROM triggers.tenant_roles r WHERE r.role = revoke_tenant.role::regrole;
    EXECUTE format('REVOKE triggers_bound FROM %I', role);
    RETURN true;
END $$;
COMMENT ON FUNCTION triggers.revoke_tenant IS 'Unbinds a role bound to a tenant by grant_tenant; returns whether it was bound.';

CREATE FUNCTION triggers.tenant_grants(OUT role name, OUT tenant text, OUT granted_at timestamptz)
RETURNS SETOF record LANGUAGE sql STABLE AS $$
    SELECT r.role::text::name, r.tenant, r.granted_at FROM triggers.tenant_roles r
     WHERE triggers._access_error(r.tenant) IS NULL
     ORDER BY 1
$$;
COMMENT ON FUNCTION triggers.tenant_grants IS 'The login roles bound to a tenant (grant_tenant), and to which.';

CREATE OR REPLACE FUNCTION triggers._now() RETURNS timestamptz
LANGUAGE sql VOLATILE AS $$
    SELECT CASE WHEN triggers._test_clock()
                THEN coalesce(nullif(current_setting('triggers.now', true), '')::timestamptz, clock_timestamp())
                ELSE clock_timestamp() END
$$;
COMMENT ON FUNCTION triggers._now IS
    'Internal: the time: clock_timestamp(), or the session setting triggers.now where the superuser-only triggers.test_clock allows it (tests).';

CREATE OR REPLACE FUNCTION triggers.dead_letters(tenant text DEFAULT 'default', lim int DEFAULT 50)
RETURNS TABLE(msg_id bigint, event_id uuid, error text, attempts int, failed_at timestamptz, message jsonb)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    PERFORM triggers._check_tenant(tenant);
    IF lim IS NULL OR lim < 1 OR lim > 1000 THEN
        RAISE EXCEPTION USING ERRCODE = 'TG004', MESSAGE = format('lim must be 1 to 1000, got %s', coalesce(lim::text, 'NULL'));
    END IF;
    RETURN QUERY
    SELECT d.msg_id,
           CASE WHEN triggers._malformed(d.message - 'debug') IS NULL THEN (d.message->>'event_id')::uuid END,
           d.message->>'error', (d.message->>'attempts')::int, (d.message->>'failed_at')::timestamptz,
           d.message
      FROM pgmq.q_triggers_events_dlq d
     WHERE d.message->>'tenant' = dead_letters.tenant
     ORDER BY d.msg_id
     LIMIT lim;
END $$;
COMMENT ON FUNCTION triggers.dead_letters IS 'The tenant''s messages in the dead-letter queue.';

CREATE OR REPLACE FUNCTION triggers.redrive(tenant text DEFAULT 'default', lim int DEFAULT 100)
RETURNS int LANGUAGE plpgsql AS $$
DECLARE
    v_n int;
BEGIN
    PERFORM triggers._check_tenant(tenant);
    IF lim IS NULL OR lim < 1 OR lim > 10000 THEN
        RAISE EXCEPTION USING ERRCODE = 'TG004', MESSAGE = format('lim must be 1 to 10000, got %s', coalesce(lim::text, 'NULL'));
    END IF;
    WITH moved AS (
        DELETE FROM pgmq.q_triggers_events_dlq d
         WHERE d.msg_id IN (SELECT x.msg_id FROM pgmq.q_triggers_events_dlq x
                             WHERE x.message->>'tenant' = redrive.tenant
                             ORDER BY x.msg_id LIMIT lim FOR UPDATE SKIP LOCKED)
        RETURNING d.msg_id, d.message - 'error' - 'failed_at' - 'attempts' - 'last_error' - 'debug' AS m
    ), queued AS (
        INSERT INTO pgmq.q_triggers_events (vt, message, headers)
        SELECT triggers._now(), mv.m,
               CASE WHEN triggers._malformed(mv.m) IS NULL
                    THEN triggers._requeue_headers(mv.m->>'tenant', mv.m->>'stream', (mv.m->>'seq')::bigint) END
          FROM moved mv ORDER BY mv.msg_id
        RETURNING message
    ), unhalted AS (
        -- A stream halted on a redriven event takes it back at its head.
        UPDATE triggers.stream_progress p SET halted_event = NULL, updated_at = triggers._now()
          FROM queued qd
         WHERE p.tenant = qd.message->>'tenant' AND p.stream = qd.message->>'stream'
           AND p.halted_event = CASE WHEN triggers._malformed(qd.message) IS NULL
                                     THEN (qd.message->>'event_id')::uuid END
    )
    SELECT count(*) INTO v_n FROM queued;
    IF v_n > 0 THEN
        PERFORM triggers._count(tenant, 'retried', v_n);
        PERFORM triggers._register_tenant(tenant);
        PERFORM triggers._wake();
    END IF;
    RETURN v_n;
END $$;
COMMENT ON FUNCTION triggers.redrive IS
    'Moves up to lim of the tenant''s dead-lettered messages back to the queue; returns how many.';

CREATE OR REPLACE FUNCTION triggers.enqueue_ex(
    payload jsonb,
    metadata jsonb DEFAULT NULL,
    tenant text DEFAULT 'default',
    idempotency_key text DEFAULT NULL,
    stream text DEFAULT NULL,
    debug text DEFAULT NULL,
    OUT event_id uuid,
    OUT duplicate boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_now timestamptz := triggers._now();
    v_error text;
    v_seq bigint;
    cfg triggers.config;
BEGIN
    SELECT * INTO cfg FROM triggers.config;
    v_error := coalesce(CASE WHEN enqueue_ex.tenant IS NULL THEN 'TG004 tenant must not be NULL' END,
                        triggers._text_error('tenant', enqueue_ex.tenant, 200),
                        triggers._access_error(enqueue_ex.tenant),
                        triggers._event_error('', enqueue_ex.payload, enqueue_ex.metadata,
                                              enqueue_ex.idempotency_key, enqueue_ex.stream,
                                              enqueue_ex.debug, cfg.max_payload_bytes),
                        triggers._placement_error(enqueue_ex.tenant));
    IF v_error IS NOT NULL THEN
        PERFORM triggers._raise(v_error);
    END IF;
    event_id := triggers._uuid_v7();
    duplicate := false;
    IF enqueue_ex.idempotency_key IS NOT NULL THEN
        INSERT INTO triggers.idempotency_keys AS k (tenant, idempotency_key, event_id, created_at)
        VALUES (enqueue_ex.tenant, enqueue_ex.idempotency_key, enqueue_ex.event_id, v_now)
        ON CONFLICT DO NOTHING;
        IF NOT FOUND THEN
            SELECT k.event_id INTO event_id FROM triggers.idempotency_keys k
             WHERE k.tenant = enqueue_ex.tenant AND k.idempotency_key = enqueue_ex.idempotency_key;
            duplicate := true;
            RETURN;
        END IF;
    END IF;
    IF enqueue_ex.stream IS NOT NULL THEN
        -- A stream that exists: one UPDATE. Its first event: the upsert and its progress row.
        UPDATE triggers.streams s SET last_seq = s.last_seq + 1
         WHERE s.tenant = enqueue_ex.tenant AND s.stream = enqueue_ex.stream
        RETURNING s.last_seq INTO v_seq;
        IF NOT FOUND THEN
            v_seq := triggers._stream_seq(enqueue_ex.tenant, enqueue_ex.stream);
        END IF;
    END IF;
    INSERT INTO pgmq.q_triggers_events (vt, message, headers)
    VALUES (v_now + triggers._debug_delay(enqueue_ex.debug, cfg.queue_delay_ms),
            triggers._message(enqueue_ex.event_id, enqueue_ex.tenant, enqueue_ex.payload,
                              enqueue_ex.metadata, enqueue_ex.idempotency_key, enqueue_ex.stream,
                              v_seq, enqueue_ex.debug, v_now),
            triggers._headers(enqueue_ex.tenant, enqueue_ex.stream, v_seq));
    PERFORM triggers._register_tenant(enqueue_ex.tenant);
    PERFORM triggers._wake(cfg.notify_throttle_ms);
END $$;
COMMENT ON FUNCTION triggers.enqueue_ex IS
    'enqueue, also saying whether the idempotency key was seen before (duplicate).';

CREATE OR REPLACE FUNCTION triggers.enqueue_batch_ex(events jsonb, tenant text DEFAULT 'default')
RETURNS TABLE(event_id uuid, duplicate boolean) LANGUAGE plpgsql AS $$
DECLARE
    v_now timestamptz := triggers._now();
    cfg triggers.config;
    v_n int;
    v_error text;
    v_keys boolean;
    v_streams boolean;
    v_ids uuid[];
    v_seqs bigint[];
BEGIN
    PERFORM triggers._check_tenant(enqueue_batch_ex.tenant);
    PERFORM triggers._raise(triggers._placement_error(enqueue_batch_ex.tenant));
    IF events IS NULL OR jsonb_typeof(events) <> 'array' THEN
        RAISE EXCEPTION USING ERRCODE = 'TG004', MESSAGE = 'events must be a JSON array';
    END IF;
    v_n := jsonb_array_length(events);
    IF v_n < 1 OR v_n > 10000 THEN
        RAISE EXCEPTION USING ERRCODE = 'TG004',
            MESSAGE = format('events must hold 1 to 10000 events, got %s', v_n);
    END IF;
    SELECT * INTO cfg FROM triggers.config;
    -- One pass over the array: the first element that breaks a rule (validate.sql), and
    -- does any carry an idempotency key or a stream? A batch with neither (the common
    -- case) takes the short path.
    SELECT (array_agg(err ORDER BY ord) FILTER (WHERE err IS NOT NULL))[1],
           coalesce(bool_or(key IS NOT NULL), false), coalesce(bool_or(stream IS NOT NULL), false)
      INTO v_error, v_keys, v_streams
      FROM (SELECT ord, e->>'idempotency_key' AS key, e->>'stream' AS stream,
                   triggers._element_error('events[' || (ord - 1)::text || ']', e, cfg.max_payload_bytes) AS err
              FROM jsonb_array_elements(events) WITH ORDINALITY AS t(e, ord)) x;
    IF v_error IS NOT NULL THEN
        PERFORM triggers._raise(v_error);
    END IF;

    IF NOT v_keys AND NOT v_streams THEN
        -- No keys, no streams: every element is a new event; one statement queues them.
        RETURN QUERY
        WITH items AS MATERIALIZED (
            SELECT ord, e, triggers._uuid_v7() AS id
              FROM jsonb_array_elements(events) WITH ORDINALITY AS t(e, ord)
        ), queued AS (
            INSERT INTO pgmq.q_triggers_events (vt, message, headers)
            SELECT v_now + triggers._debug_delay(e->>'debug', cfg.queue_delay_ms),
                   triggers._message(id, enqueue_batch_ex.tenant, e->'payload', nullif(e->'metadata', 'null'),
                                     NULL, NULL, NULL, e->>'debug', v_now),
                   triggers._headers(enqueue_batch_ex.tenant, NULL, NULL)
              FROM items
             ORDER BY ord
        )
        SELECT items.id, false FROM items ORDER BY items.ord;
        PERFORM triggers._register_tenant(enqueue_batch_ex.tenant);
        PERFORM triggers._wake(cfg.notify_throttle_ms);
        RETURN;
    END IF;

    SELECT array_agg(triggers._uuid_v7() ORDER BY ord) INTO v_ids
      FROM generate_series(1, v_n) AS ord;

    -- Claim the keys; a key seen before (or earlier in this array) keeps its first id.
    INSERT INTO triggers.idempotency_keys AS k (tenant, idempotency_key, event_id, created_at)
    SELECT enqueue_batch_ex.tenant, e->>'idempotency_key', v_ids[ord], v_now
      FROM jsonb_array_elements(events) WITH ORDINALITY AS t(e, ord)
     WHERE e->>'idempotency_key' IS NOT NULL
     -- Key order, so concurrent batches lock keys in one order and cannot deadlock;
     -- within a key, array order, so the first occurrence wins.
     ORDER BY e->>'idempotency_key', ord
    ON CONFLICT DO NOTHING;

    -- Lock the streams in name order first (concurrent batches cannot deadlock), then
    -- hand out positions in array order to the events that will be queued.
    INSERT INTO triggers.streams (tenant, stream, last_seq)
    SELECT DISTINCT enqueue_batch_ex.tenant, e->>'stream', 0
      FROM jsonb_array_elements(events) AS t(e) WHERE e->>'stream' IS NOT NULL
     ORDER BY 2
    ON CONFLICT DO NOTHING;
    PERFORM 1 FROM triggers.streams s
     WHERE s.tenant = enqueue_batch_ex.tenant
       AND s.stream IN (SELECT e->>'stream' FROM jsonb_array_elements(events) AS t(e))
     ORDER BY s.stream FOR UPDATE;
    SELECT array_agg(CASE WHEN e->>'stream' IS NOT NULL AND NOT EXISTS (
                              SELECT 1 FROM triggers.idempotency_keys k
                               WHERE k.tenant = enqueue_batch_ex.tenant
                                 AND k.idempotency_key = e->>'idempotency_key'
                                 AND k.event_id <> v_ids[ord])
                          THEN triggers._stream_seq(enqueue_batch_ex.tenant, e->>'stream') END ORDER BY ord)
      INTO v_seqs
      FROM (SELECT e, ord FROM jsonb_array_elements(events) WITH ORDINALITY AS t(e, ord) ORDER BY ord) x;

    RETURN QUERY
    WITH items AS (
        SELECT ord, e, v_ids[ord] AS fresh_id,
               coalesce((SELECT k.event_id FROM triggers.idempotency_keys k
                          WHERE k.tenant = enqueue_batch_ex.tenant
                            AND k.idempotency_key = e->>'idempotency_key'), v_ids[ord]) AS id
          FROM jsonb_array_elements(events) WITH ORDINALITY AS t(e, ord)
    ), queued AS (
        INSERT INTO pgmq.q_triggers_events (vt, message, headers)
        SELECT v_now + triggers._debug_delay(e->>'debug', cfg.queue_delay_ms),
               triggers._message(id, enqueue_batch_ex.tenant, e->'payload', nullif(e->'metadata', 'null'),
                                 e->>'idempotency_key', e->>'stream', v_seqs[ord], e->>'debug', v_now),
               triggers._headers(enqueue_batch_ex.tenant, e->>'stream', v_seqs[ord])
          FROM items WHERE id = fresh_id
         ORDER BY ord
    )
    SELECT items.id, items.id <> items.fresh_id FROM items ORDER BY items.ord;
    PERFORM triggers._register_tenant(enqueue_batch_ex.tenant);
    PERFORM triggers._wake(cfg.notify_throttle_ms);
END $$;
COMMENT ON FUNCTION triggers.enqueue_batch_ex IS
    'enqueue_batch, also saying for each event whether it repeated an idempotency key.';

CREATE FUNCTION triggers.inbox(
    tenant text,
    status text[] DEFAULT '{pending,delivered,failed}',
    after_cursor text DEFAULT NULL,
    lim int DEFAULT 50,
    from_time timestamptz DEFAULT NULL,
    to_time timestamptz DEFAULT NULL,
    stream text DEFAULT NULL,
    metadata_contains jsonb DEFAULT NULL,
    payload_contains jsonb DEFAULT NULL,
    min_retry_count int DEFAULT NULL,
    max_retry_count int DEFAULT NULL,
    "order" text DEFAULT 'asc',
    max_bytes int DEFAULT 4194304)
RETURNS SETOF triggers.inbox_row
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_ts timestamptz;
    v_id uuid;
    v_bad text;
    v_row triggers.inbox_row;
    v_bytes bigint := 0;
BEGIN
    PERFORM triggers._check_tenant(inbox.tenant);
    IF inbox.stream IS NOT NULL THEN
        -- The rule streams are stored under: a filter that breaks it is a mistake, not
        -- a query for nothing.
        PERFORM triggers._check_text('stream', inbox.stream);
    END IF;
    IF inbox.status IS NULL OR cardinality(inbox.status) = 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'TG004', MESSAGE = 'status must name at least one of pending, delivered, failed';
    END IF;
    SELECT s INTO v_bad FROM unnest(inbox.status) s
     WHERE s IS NULL OR s NOT IN ('pending', 'delivered', 'failed') LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'TG004',
            MESSAGE = format('status %s is not one of pending, delivered, failed', coalesce(quote_literal(v_bad), 'NULL'));
    END IF;
    IF lim IS NULL OR lim < 1 OR lim > 1000 THEN
        RAISE EXCEPTION USING ERRCODE = 'TG004', MESSAGE = format('lim must be 1 to 1000, got %s', coalesce(lim::text, 'NULL'));
    END IF;
    IF max_bytes IS NULL OR max_bytes < 1 THEN
        RAISE EXCEPTION USING ERRCODE = 'TG004', MESSAGE = format('max_bytes must be 1 or more, got %s', coalesce(max_bytes::text, 'NULL'));
    END IF;
    IF "order" IS NULL OR "order" NOT IN ('asc', 'desc') THEN
        RAISE EXCEPTION USING ERRCODE = 'TG004', MESSAGE = 'order must be asc or desc';
    END IF;
    PERFORM triggers._check_containment(metadata_contains, payload_contains);
    IF after_cursor IS NOT NULL THEN
        v_ts := triggers._cursor_created_at(after_cursor);
        v_id := triggers._cursor_event_id(after_cursor);
        IF v_ts IS NULL OR v_id IS NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'TG005', MESSAGE = 'after_cursor is not a cursor returned by inbox';
        END IF;
    END IF;
    FOR v_row IN
    SELECT e.event_id, e.status, e.payload, e.metadata, e.stream, e.seq, e.created_at, e.updated_at,
           e.processed_at, e.delivered_at, e.retry_count, e.error_message, e.idempotency_key,
           triggers._cursor(e.created_at, e.event_id), false
      FROM triggers.events e
     WHERE e.tenant = inbox.tenant
       AND e.status = ANY(inbox.status)
       AND (v_ts IS NULL OR ("order" = 'asc' AND (e.created_at, e.event_id) > (v_ts, v_id))
                         OR ("order" = 'desc' AND (e.created_at, e.event_id) < (v_ts, v_id)))
       AND (from_time IS NULL OR e.created_at >= from_time)
       AND (to_time IS NULL OR e.created_at < to_time)
       AND (inbox.stream IS NULL OR e.stream = inbox.stream)
       AND (metadata_contains IS NULL OR e.metadata @> metadata_contains)
       AND (payload_contains IS NULL OR e.payload @> payload_contains)
       AND (min_retry_count IS NULL OR e.retry_count >= min_retry_count)
       AND (max_retry_count IS NULL OR e.retry_count <= max_retry_count)
     ORDER BY CASE WHEN "order" = 'asc' THEN e.created_at END ASC,
              CASE WHEN "order" = 'asc' THEN e.event_id END ASC,
              CASE WHEN "order" = 'desc' THEN e.created_at END DESC,
              CASE WHEN "order" = 'desc' THEN e.event_id END DESC
     LIMIT lim
    LOOP
        v_bytes := v_bytes + triggers._size(v_row.payload) + triggers._size(v_row.metadata);
        IF v_bytes >= max_bytes THEN
            v_row.more := true;
            RETURN NEXT v_row;
            RETURN;
        END IF;
        RETURN NEXT v_row;
    END LOOP;
END $$;
COMMENT ON FUNCTION triggers.inbox IS
    'A tenant''s events in keyset order (created_at, event_id), filtered, a page at most lim events and about max_bytes; pass the last row''s cursor for the next page.';

CREATE OR REPLACE FUNCTION triggers._event(event_id uuid, tenant text, for_update boolean) RETURNS triggers.events
LANGUAGE plpgsql AS $$
DECLARE
    v triggers.events;
BEGIN
    IF event_id IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'TG004', MESSAGE = 'event_id must not be NULL';
    END IF;
    PERFORM triggers._check_tenant(tenant);
    IF for_update THEN
        SELECT * INTO v FROM triggers.events e
         WHERE e.event_id = _event.event_id AND e.tenant = _event.tenant
           FOR UPDATE;
    ELSE
        SELECT * INTO v FROM triggers.events e
         WHERE e.event_id = _event.event_id AND e.tenant = _event.tenant;
    END IF;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'TG006', MESSAGE = format('event %s not found', event_id);
    END IF;
    RETURN v;
END $$;
COMMENT ON FUNCTION triggers._event IS 'Internal: one event of a tenant, optionally locked, or TG006.';

CREATE OR REPLACE FUNCTION triggers.create_api_key(tenant text, name text DEFAULT 'default',
    expires_at timestamptz DEFAULT NULL) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_key_id text;
    v_token text;
BEGIN
    PERFORM triggers._check_tenant(tenant);
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
    -- Servers learn the new id at commit (+id), so they never have to ask a database
    -- whether an id they do not know exists (server/src/guard/keys.rs).
    PERFORM pg_notify('triggers_keys', '+' || v_key_id);
    RETURN v_token;
END $$;
COMMENT ON FUNCTION triggers.create_api_key IS
    'Creates an API key for a tenant (expiring at expires_at, if given) and returns it; only its hash is stored, so this is the only time it is shown.';

CREATE OR REPLACE FUNCTION triggers.revoke_api_key(tenant text, api_key text) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_key_id text;
BEGIN
    PERFORM triggers._check_tenant(tenant);
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

CREATE FUNCTION triggers._key_record(token text)
RETURNS TABLE(tenant text, key_hash bytea, expires_at timestamptz, revoked boolean)
LANGUAGE sql STABLE AS $$
    SELECT k.tenant, k.key_hash, k.expires_at, k.revoked_at IS NOT NULL
      FROM triggers.api_keys k
     WHERE k.key_id = substring(token FROM '^' || triggers._key_prefix() || '([A-Za-z0-9]+)_')
$$;
COMMENT ON FUNCTION triggers._key_record IS
    'Internal: the tenant, hash, expiry and revocation of the API key whose id a token carries (for a server''s key check).';

CREATE FUNCTION triggers._key_ids() RETURNS SETOF text
LANGUAGE sql STABLE AS $$
    SELECT k.key_id FROM triggers.api_keys k WHERE k.revoked_at IS NULL
$$;
COMMENT ON FUNCTION triggers._key_ids IS 'Internal: the ids of every API key not revoked (a server''s book of known keys).';

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

CREATE FUNCTION triggers.stored(
    tenant text,
    after bigint DEFAULT 0,
    lim int DEFAULT 100,
    stream text DEFAULT NULL,
    metadata_contains jsonb DEFAULT NULL,
    payload_contains jsonb DEFAULT NULL,
    upto bigint DEFAULT NULL,
    max_bytes int DEFAULT 4194304)
RETURNS SETOF triggers.stored_row
LANGUAGE plpgsql AS $$
DECLARE
    v_below bigint;
    v_row triggers.stored_row;
    v_bytes bigint := 0;
BEGIN
    PERFORM triggers._check_tenant(stored.tenant, or_all => true);
    IF stored.stream IS NOT NULL THEN
        PERFORM triggers._check_text('stream', stored.stream);
    END IF;
    IF after IS NULL OR after < 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'TG005', MESSAGE = format('after must be a position (0 or more), got %s', coalesce(after::text, 'NULL'));
    END IF;
    IF upto < 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'TG005', MESSAGE = format('upto must be a position (0 or more), got %s', upto);
    END IF;
    IF lim IS NULL OR lim < 1 OR lim > 10000 THEN
        RAISE EXCEPTION USING ERRCODE = 'TG004', MESSAGE = format('lim must be 1 to 10000, got %s', coalesce(lim::text, 'NULL'));
    END IF;
    IF max_bytes IS NULL OR max_bytes < 1 THEN
        RAISE EXCEPTION USING ERRCODE = 'TG004', MESSAGE = format('max_bytes must be 1 or more, got %s', coalesce(max_bytes::text, 'NULL'));
    END IF;
    PERFORM triggers._check_containment(metadata_contains, payload_contains);
    v_below := coalesce(upto + 1, triggers._settled('triggers.event_positions', 'triggers.events', 'live'));
    FOR v_row IN
    SELECT e.position, e.tenant, e.event_id, e.status, e.payload, e.metadata, e.stream, e.seq, e.created_at,
           e.updated_at, e.processed_at, e.delivered_at, e.retry_count, e.error_message, e.idempotency_key
      FROM triggers.events e
     WHERE e.position > after AND e.position < v_below
       AND (stored.tenant IS NULL OR e.tenant = stored.tenant)
       AND (stored.stream IS NULL OR e.stream = stored.stream)
       AND (metadata_contains IS NULL OR e.metadata @> metadata_contains)
       AND (payload_contains IS NULL OR e.payload @> payload_contains)
     ORDER BY e.position
     LIMIT lim
    LOOP
        RETURN NEXT v_row;
        v_bytes := v_bytes + triggers._size(v_row.payload) + triggers._size(v_row.metadata);
        EXIT WHEN v_bytes >= max_bytes;
    END LOOP;
END $$;
COMMENT ON FUNCTION triggers.stored IS
    'Events stored after a delivery position, in position order, each once though transactions commit out of order (a page at most lim events and about max_bytes): the live stream.';

CREATE OR REPLACE FUNCTION triggers.stored_horizon(tenant text DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_taken bigint := coalesce(pg_sequence_last_value('triggers.event_positions'), 0);
    v_until timestamptz := clock_timestamp() + interval '5 seconds';
    v_settled bigint;
BEGIN
    PERFORM triggers._check_tenant(tenant, or_all => true);
    LOOP
        v_settled := triggers._settled('triggers.event_positions', 'triggers.events', 'live') - 1;
        EXIT WHEN v_settled >= v_taken OR clock_timestamp() > v_until;
        PERFORM pg_sleep(0.005);
    END LOOP;
    RETURN v_settled;
END $$;
COMMENT ON FUNCTION triggers.stored_horizon IS
    'The last delivery position settled, at least every one taken before the call: start the live stream here to get what is stored from now on.';

CREATE OR REPLACE FUNCTION triggers.metrics_history(tenant text DEFAULT NULL, minutes int DEFAULT 60)
RETURNS TABLE(minute timestamptz, processed bigint, p50_ms numeric, p95_ms numeric, p99_ms numeric)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    PERFORM triggers._check_tenant(metrics_history.tenant, or_all => true);
    RETURN QUERY SELECT * FROM triggers._history(metrics_history.tenant, minutes,
                                                 date_trunc('minute', triggers._now()));
END $$;
COMMENT ON FUNCTION triggers.metrics_history IS
    'Per minute over the last hour (or `minutes`): events processed and latency p50/p95/p99 (ms), of a tenant or all.';

CREATE OR REPLACE FUNCTION triggers.metrics(tenant text DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
BEGIN
    PERFORM triggers._check_tenant(tenant, or_all => true);
    RETURN triggers._metrics_combine(tenant, ARRAY[triggers._metrics_parts(tenant)]);
END $$;
COMMENT ON FUNCTION triggers.metrics IS
    'Exact counts by status, queue and DLQ depth, processing rate and latency percentiles, of one tenant or all.';

CREATE OR REPLACE FUNCTION triggers.counters(tenant text DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v record;
    v_buckets jsonb;
    v_count bigint;
BEGIN
    PERFORM triggers._check_tenant(tenant, or_all => true);
    -- Enqueued costs producers nothing: an event is counted when processing first
    -- records it (the insert trigger), and until then found in the queue as a message
    -- whose event has no row yet. One snapshot sees each event in exactly one of the two.
    SELECT coalesce(sum(s.enqueued), 0) + (
               SELECT count(*) FROM pgmq.q_triggers_events q
                WHERE (counters.tenant IS NULL OR q.message->>'tenant' = counters.tenant)
                  AND triggers._malformed(q.message - 'debug') IS NULL  -- an event's (its id a uuid)
                  AND NOT EXISTS (SELECT 1 FROM triggers.events e
                                   WHERE e.event_id = CASE WHEN triggers._malformed(q.message - 'debug') IS NULL
                                                          THEN (q.message->>'event_id')::uuid END)) AS enqueued,
           coalesce(sum(s.stored), 0) AS stored,
           coalesce(sum(s.retried), 0) AS retried, coalesce(sum(s.dead_lettered), 0) AS dead_lettered,
           coalesce(sum(s.acknowledged), 0) AS acknowledged, coalesce(sum(s.latency_sum_s), 0) AS latency_sum_s
      INTO v
      FROM (SELECT t.tenant, t.enqueued, t.stored, t.retried, t.dead_lettered, t.acknowledged, t.latency_sum_s
              FROM triggers.metric_totals t
            UNION ALL
            SELECT d.tenant, d.enqueued, d.stored, d.retried, d.dead_lettered, d.acknowledged, d.latency_sum_s
              FROM triggers.metric_deltas d) s
     WHERE counters.tenant IS NULL OR s.tenant = counters.tenant;
    WITH h AS (
        SELECT l.bucket, sum(l.n) AS n
          FROM (SELECT t.tenant, t.bucket, t.n FROM triggers.latency_totals t
                UNION ALL
                SELECT d.tenant, d.bucket, d.n FROM triggers.latency_deltas d) l
         WHERE counters.tenant IS NULL OR l.tenant = counters.tenant
         GROUP BY l.bucket
    ), bounds AS (
        -- Bucket b holds latencies below exp((b + 0.5) / 10) - 1 ms (_latency_bucket rounds).
        SELECT DISTINCT round(10 * ln(1 + t) - 0.5)::int AS b
          FROM unnest('{1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000}'::float8[]) t
    )
    SELECT jsonb_agg(jsonb_build_object(
               'le_s', round(((exp((bounds.b + 0.5) / 10.0) - 1) / 1000)::numeric, 9),
               'count', (SELECT coalesce(sum(h.n), 0) FROM h WHERE h.bucket <= bounds.b)) ORDER BY bounds.b),
           (SELECT coalesce(sum(h.n), 0) FROM h)
      INTO v_buckets, v_count
      FROM bounds;
    RETURN jsonb_build_object(
        'tenant', tenant,
        'enqueued', v.enqueued, 'stored', v.stored, 'retried', v.retried,
        'dead_lettered', v.dead_lettered, 'acknowledged', v.acknowledged,
        'latency_count', v_count, 'latency_sum_s', v.latency_sum_s, 'latency_buckets', v_buckets);
END $$;
COMMENT ON FUNCTION triggers.counters IS
    'Counters that only grow (enqueued, stored, retried, dead_lettered, acknowledged) and the all-time latency histogram, of one tenant or all.';

CREATE OR REPLACE FUNCTION triggers.streams(tenant text, lim int DEFAULT 50, after_cursor text DEFAULT NULL)
RETURNS TABLE(stream text, last_seq bigint, done_seq bigint, state text, blocking_event uuid,
    blocking_error text, next_attempt_at timestamptz, cursor text)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    PERFORM triggers._check_tenant(streams.tenant);
    IF lim IS NULL OR lim < 1 OR lim > 1000 THEN
        RAISE EXCEPTION USING ERRCODE = 'TG004', MESSAGE = format('lim must be 1 to 1000, got %s', coalesce(lim::text, 'NULL'));
    END IF;
    PERFORM triggers._raise(triggers._text_error('after_cursor', after_cursor, 200));
    RETURN QUERY SELECT * FROM triggers._stream_rows(streams.tenant, NULL, lim, after_cursor);
END $$;
COMMENT ON FUNCTION triggers.streams IS
    'A tenant''s streams: last_seq, done_seq, state (idle, active, waiting, halted) and the blocking event; page with the last row''s cursor.';

CREATE OR REPLACE FUNCTION triggers.stream(tenant text, name text)
RETURNS TABLE(stream text, last_seq bigint, done_seq bigint, state text, blocking_event uuid,
    blocking_error text, next_attempt_at timestamptz, cursor text)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    PERFORM triggers._check_tenant(stream.tenant);
    PERFORM triggers._check_text('stream', stream.name);
    RETURN QUERY SELECT * FROM triggers._stream_rows(stream.tenant, stream.name, 1, NULL);
END $$;
COMMENT ON FUNCTION triggers.stream IS 'One stream of the tenant, as streams() shows it; no row when there is none.';

CREATE OR REPLACE FUNCTION triggers.resume_stream(tenant text, stream text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v triggers.stream_progress;
    v_seq bigint;
BEGIN
    PERFORM triggers._check_tenant(tenant);
    PERFORM triggers._check_text('stream', stream);
    SELECT * INTO v FROM triggers.stream_progress p
     WHERE p.tenant = resume_stream.tenant AND p.stream = resume_stream.stream
       FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'TG006', MESSAGE = format('stream %s not found', stream);
    END IF;
    IF v.halted_event IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'TG007', MESSAGE = format('stream %s is not halted', stream);
    END IF;
    SELECT e.seq INTO v_seq FROM triggers.events e WHERE e.event_id = v.halted_event;
    UPDATE triggers.stream_progress p
       SET done_seq = greatest(p.done_seq, coalesce(v_seq, p.done_seq + 1)), halted_event = NULL,
           updated_at = triggers._now()
     WHERE p.tenant = v.tenant AND p.stream = v.stream
    RETURNING p.done_seq INTO v_seq;
    PERFORM triggers._wake();
    RETURN v_seq;
END $$;
COMMENT ON FUNCTION triggers.resume_stream IS
    'Skips the dead-lettered head a halted stream waits on; returns the new done_seq.';

CREATE OR REPLACE FUNCTION triggers._endpoint(tenant text, endpoint_id uuid, for_update boolean)
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

CREATE OR REPLACE FUNCTION triggers.create_endpoint(tenant text, url text, filter jsonb DEFAULT NULL,
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

CREATE OR REPLACE FUNCTION triggers.endpoints(tenant text)
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

CREATE OR REPLACE FUNCTION triggers.delete_endpoint(tenant text, endpoint_id uuid) RETURNS boolean
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

CREATE OR REPLACE FUNCTION triggers.deliveries(tenant text, event_id uuid DEFAULT NULL, endpoint_id uuid DEFAULT NULL,
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

CREATE OR REPLACE FUNCTION triggers.delivery_attempts(tenant text, event_id uuid) RETURNS SETOF triggers.attempt_row
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

CREATE OR REPLACE FUNCTION triggers.webhook_metrics(tenant text DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
BEGIN
    PERFORM triggers._check_tenant(tenant, or_all => true);
    RETURN triggers._webhook_metrics_combine(ARRAY[triggers._webhook_metrics_parts(tenant)]);
END $$;
COMMENT ON FUNCTION triggers.webhook_metrics IS
    'Webhook deliveries by status, attempts, and stored-to-received latency of recent successes, for a tenant or all.';

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
-- End of the tenant-safety changes.
