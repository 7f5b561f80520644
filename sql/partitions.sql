-- triggers: moving a PL/Proxy partition's tenants from this node to another (README →
-- Scale-out → Moving a partition). `triggers partitions move` drives it; each step here
-- is one call, safe to repeat, so a move cut short is finished by running it again:
--
--   source: partition_fence   events refused here, queued messages and due webhook
--                             deliveries of the partition hidden from this node's workers
--                             (their time moved 1000 years on), in-flight ones waited for
--   source → target: every row of the partition's tenants, copied (COPY, binary) from one
--                             snapshot into staging tables (partition_stage), then
--                             partition_import in the transaction that commits them
--   proxy: the partition's server entry switched to the target
--   source: partition_drop    the partition's rows deleted; it stays refused here
--
-- A partition is PL/Proxy's: hashtext(tenant) & (partitions - 1).

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
