-- triggers: exact metrics (SPEC §5). Statement triggers on events append deltas;
-- _fold_metrics folds them into totals; metrics() reads both.

CREATE FUNCTION triggers._latency_bucket(latency interval) RETURNS smallint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT least(300, greatest(0, round(ln(1 + greatest(extract(epoch FROM latency), 0) * 1000) * 10)))::smallint
$$;
COMMENT ON FUNCTION triggers._latency_bucket IS 'Internal: the log-scale latency histogram bucket of a duration.';

-- The processing latency of an event, in seconds (NULL until it is processed).
CREATE FUNCTION triggers._latency_s(created_at timestamptz, processed_at timestamptz) RETURNS float8
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT greatest(extract(epoch FROM processed_at - created_at), 0)::float8
$$;
COMMENT ON FUNCTION triggers._latency_s IS 'Internal: an event''s processing latency in seconds, NULL before it is processed.';

CREATE FUNCTION triggers._count_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO triggers.metric_deltas (tenant, pending, delivered, failed, last_processed_at, enqueued, stored,
                                        latency_sum_s)
    SELECT n.tenant, count(*) FILTER (WHERE n.status = 'pending'), count(*) FILTER (WHERE n.status = 'delivered'),
           count(*) FILTER (WHERE n.status = 'failed'), max(n.processed_at), count(*),
           count(*) FILTER (WHERE n.status = 'pending'),
           coalesce(sum(triggers._latency_s(n.created_at, n.processed_at)), 0)
      FROM new_rows n GROUP BY n.tenant;
    INSERT INTO triggers.latency_deltas (tenant, minute, bucket, n)
    SELECT n.tenant, date_trunc('minute', n.processed_at), triggers._latency_bucket(n.processed_at - n.created_at), count(*)
      FROM new_rows n WHERE n.processed_at IS NOT NULL
     GROUP BY 1, 2, 3;
    RETURN NULL;
END $$;
COMMENT ON FUNCTION triggers._count_insert IS 'Internal: statement trigger appending metric deltas for inserted events.';

-- A status change moves one count to another; failed -> pending is the event stored
-- again (after a manual retry), any -> delivered an acknowledgement.
CREATE FUNCTION triggers._count_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO triggers.metric_deltas (tenant, pending, delivered, failed, last_processed_at, stored,
                                        acknowledged, latency_sum_s)
    SELECT d.tenant, sum(d.p), sum(d.d), sum(d.f), max(d.processed_at), sum(d.s), sum(d.a), coalesce(sum(d.l), 0)
      FROM (SELECT n.tenant, (n.status = 'pending')::int - (o.status = 'pending')::int AS p,
                   (n.status = 'delivered')::int - (o.status = 'delivered')::int AS d,
                   (n.status = 'failed')::int - (o.status = 'failed')::int AS f,
                   (n.status = 'pending' AND o.status = 'failed')::int AS s,
                   (n.status = 'delivered' AND o.status <> 'delivered')::int AS a,
                   CASE WHEN n.processed_at IS DISTINCT FROM o.processed_at
                        THEN triggers._latency_s(n.created_at, n.processed_at) END AS l,
                   n.processed_at
              FROM new_rows n JOIN old_rows o ON o.event_id = n.event_id) d
     GROUP BY d.tenant
    HAVING sum(d.p) <> 0 OR sum(d.d) <> 0 OR sum(d.f) <> 0 OR sum(d.s) <> 0 OR sum(d.a) <> 0
        OR count(d.l) > 0;
    INSERT INTO triggers.latency_deltas (tenant, minute, bucket, n)
    SELECT n.tenant, date_trunc('minute', n.processed_at), triggers._latency_bucket(n.processed_at - n.created_at), count(*)
      FROM new_rows n JOIN old_rows o ON o.event_id = n.event_id
     WHERE n.processed_at IS NOT NULL AND n.processed_at IS DISTINCT FROM o.processed_at
     GROUP BY 1, 2, 3;
    RETURN NULL;
END $$;
COMMENT ON FUNCTION triggers._count_update IS 'Internal: statement trigger appending metric deltas for status changes.';

-- Counts `n` events of a tenant in one of the counters no status change shows,
-- 'retried' or 'dead_lettered' (a delta row, like the triggers'). Failure paths only:
-- nothing on the way of an event that succeeds writes here.
CREATE FUNCTION triggers._count(tenant text, counter text, n bigint DEFAULT 1) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO triggers.metric_deltas (tenant, retried, dead_lettered)
    SELECT coalesce(_count.tenant, ''), CASE counter WHEN 'retried' THEN n ELSE 0 END,
           CASE counter WHEN 'dead_lettered' THEN n ELSE 0 END
     WHERE n > 0
$$;
COMMENT ON FUNCTION triggers._count IS 'Internal: adds to the retried or dead_lettered counter of a tenant.';

CREATE FUNCTION triggers._count_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO triggers.metric_deltas (tenant, pending, delivered, failed)
    SELECT o.tenant, -count(*) FILTER (WHERE o.status = 'pending'), -count(*) FILTER (WHERE o.status = 'delivered'),
           -count(*) FILTER (WHERE o.status = 'failed')
      FROM old_rows o GROUP BY o.tenant;
    RETURN NULL;
END $$;
COMMENT ON FUNCTION triggers._count_delete IS 'Internal: statement trigger appending metric deltas for deleted events.';

-- Folds the appended deltas into the totals. One caller at a time (others skip); the
-- deltas it cannot see yet (uncommitted) wait for the next fold. Readers sum totals and
-- deltas, so folding is housekeeping, not correctness: a session folds at most once per
-- min_interval_ms (its last fold's time is a session setting, kept only if it commits).
CREATE FUNCTION triggers._fold_metrics(min_interval_ms int DEFAULT 0) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_now float8 := triggers._now_ms();
    v_last float8 := coalesce(nullif(current_setting('triggers.folded_at_ms', true), '')::float8, 0);
BEGIN
    IF v_now - v_last < min_interval_ms AND v_now >= v_last THEN
        RETURN;
    END IF;
    IF NOT pg_try_advisory_xact_lock(hashtext('triggers._fold_metrics')) THEN
        RETURN;
    END IF;
    PERFORM set_config('triggers.folded_at_ms', v_now::text, false);
    WITH d AS (DELETE FROM triggers.metric_deltas RETURNING *)
    INSERT INTO triggers.metric_totals AS t (tenant, pending, delivered, failed, last_processed_at, enqueued,
                                             stored, retried, dead_lettered, acknowledged, latency_sum_s)
    SELECT d.tenant, sum(d.pending), sum(d.delivered), sum(d.failed), max(d.last_processed_at), sum(d.enqueued),
           sum(d.stored), sum(d.retried), sum(d.dead_lettered), sum(d.acknowledged), sum(d.latency_sum_s)
      FROM d GROUP BY d.tenant
    ON CONFLICT (tenant) DO UPDATE
       SET pending = t.pending + EXCLUDED.pending, delivered = t.delivered + EXCLUDED.delivered,
           failed = t.failed + EXCLUDED.failed,
           last_processed_at = greatest(t.last_processed_at, EXCLUDED.last_processed_at),
           enqueued = t.enqueued + EXCLUDED.enqueued, stored = t.stored + EXCLUDED.stored,
           retried = t.retried + EXCLUDED.retried, dead_lettered = t.dead_lettered + EXCLUDED.dead_lettered,
           acknowledged = t.acknowledged + EXCLUDED.acknowledged,
           latency_sum_s = t.latency_sum_s + EXCLUDED.latency_sum_s;
    WITH d AS (DELETE FROM triggers.latency_deltas RETURNING *),
    minutes AS (
        INSERT INTO triggers.latency_minutes AS l (tenant, minute, bucket, n)
        SELECT d.tenant, d.minute, d.bucket, sum(d.n) FROM d GROUP BY 1, 2, 3
        ON CONFLICT (tenant, minute, bucket) DO UPDATE SET n = l.n + EXCLUDED.n
    )
    INSERT INTO triggers.latency_totals AS l (tenant, bucket, n)
    SELECT d.tenant, d.bucket, sum(d.n) FROM d GROUP BY 1, 2
    ON CONFLICT (tenant, bucket) DO UPDATE SET n = l.n + EXCLUDED.n;
END $$;
COMMENT ON FUNCTION triggers._fold_metrics IS 'Internal: folds metric deltas into the totals, one session at a time.';

CREATE TRIGGER events_count_insert AFTER INSERT ON triggers.events
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION triggers._count_insert();
CREATE TRIGGER events_count_update AFTER UPDATE ON triggers.events
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION triggers._count_update();
CREATE TRIGGER events_count_delete AFTER DELETE ON triggers.events
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION triggers._count_delete();

/*
 * The processing-latency log histogram (created_at to processed_at; each bucket about
 * 10% wide) of a tenant (all with NULL), per minute in [since, until): what metrics()
 * and metrics_history() compute their percentiles from (combine.sql), and what the
 * PL/Proxy proxy gathers from every node.
 */
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

/*
 * The last `minutes` minutes (1 to 1440, default 60), oldest first, the current one
 * last: for each, how many events of the tenant (all with NULL) were processed and
 * their latency percentiles (ms; NULL in a minute without events). For charts.
 */
CREATE FUNCTION triggers.metrics_history(tenant text DEFAULT NULL, minutes int DEFAULT 60)
RETURNS TABLE(minute timestamptz, processed bigint, p50_ms numeric, p95_ms numeric, p99_ms numeric)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    PERFORM triggers._check_tenant(metrics_history.tenant, or_all => true);
    RETURN QUERY SELECT * FROM triggers._history(metrics_history.tenant, minutes,
                                                 date_trunc('minute', triggers._now()));
END $$;
COMMENT ON FUNCTION triggers.metrics_history IS
    'Per minute over the last hour (or `minutes`): events processed and latency p50/p95/p99 (ms), of a tenant or all.';

/*
 * The additive parts of metrics() (combine.sql's _metrics_combine makes the figures):
 * counts by status, the latest processing time, queue depth and its oldest message's age
 * (s), DLQ count, streams waiting and halted, and the latency histogram of the last five
 * minutes as {bucket: count}.
 */
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

/*
 * Metrics of one tenant, or of all when tenant is NULL: total, pending, delivered,
 * failed (exact), queue_depth, dlq_count, streams_waiting, streams_halted,
 * last_processed_at, processing_rate_per_min (last 5 minutes), oldest_queued_age_s, and latency_ms p50/p95/p99 from created_at
 * to processed_at over the last 5 minutes (from a log histogram, within about 10%).
 */
CREATE FUNCTION triggers.metrics(tenant text DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
BEGIN
    PERFORM triggers._check_tenant(tenant, or_all => true);
    RETURN triggers._metrics_combine(tenant, ARRAY[triggers._metrics_parts(tenant)]);
END $$;
COMMENT ON FUNCTION triggers.metrics IS
    'Exact counts by status, queue and DLQ depth, processing rate and latency percentiles, of one tenant or all.';

/*
 * The counters that only grow, of one tenant or all (NULL), for Prometheus: events
 * enqueued (repeated idempotency keys not counted), stored, retried (queued again after
 * a failure: back-off, manual retry, redrive), dead_lettered and acknowledged; and the
 * processing-latency histogram over all time: `latency_count`, `latency_sum_s` and
 * `latency_buckets`, cumulative counts at upper bounds `le_s` (seconds). The bounds are
 * edges of the stored log histogram (metrics.sql's buckets, about 10% apart) nearest to
 * 1, 2.5, 5, 10, 25, 50, 100, 250, 500 ms, 1, 2.5, 5, 10, 30, 60 s and 5 min, so every
 * count is exact for its bound.
 */
CREATE FUNCTION triggers.counters(tenant text DEFAULT NULL) RETURNS jsonb
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
