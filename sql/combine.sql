-- triggers: figures from parts. Each node computes the additive parts of its metrics
-- (counts, latency histograms, latency samples); these functions turn parts into the
-- figures the API returns. A single database combines its own one part; the PL/Proxy
-- proxy (extension triggers_proxy, which installs this same file) combines one part per
-- node, so `metrics(NULL)` over many nodes is exactly what one node holding all the
-- events would say. They touch no table.

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
