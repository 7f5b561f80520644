-- triggers: producers' side (SPEC §3). enqueue and enqueue_batch put events on the pgmq
-- queue triggers_events, in the caller's transaction; process_batch (process.sql) takes
-- them from there. Queue operations write pgmq's tables with static SQL (one statement
-- each, plans cached) rather than through pgmq's dynamic-SQL functions; the layout they
-- rely on is pinned by a test (extension/src/tests/schema.rs).

-- The queue message of an event. Everything processing needs travels in it.
CREATE FUNCTION triggers._message(
    event_id uuid, tenant text, payload jsonb, metadata jsonb, idempotency_key text,
    stream text, seq bigint, debug text, created_at timestamptz)
RETURNS jsonb LANGUAGE sql STABLE AS $$
    -- STABLE, as jsonb_build_object is: then the planner inlines it into the caller's
    -- statement instead of running it as a function once per row.
    -- Optional values are absent or JSON null; readers take them with ->> or
    -- nullif(->, 'null'). The common event (no options) gets the smallest message.
    SELECT CASE WHEN metadata IS NULL AND idempotency_key IS NULL AND stream IS NULL AND debug IS NULL
           THEN jsonb_build_object('event_id', event_id, 'tenant', tenant, 'payload', payload,
                                   'created_at', created_at)
           ELSE jsonb_build_object(
                'event_id', event_id, 'tenant', tenant, 'payload', payload, 'metadata', metadata,
                'idempotency_key', idempotency_key, 'stream', stream, 'seq', seq, 'debug', debug,
                'created_at', created_at)
           END
$$;
COMMENT ON FUNCTION triggers._message IS 'Internal: the queue message of an event.';

-- The queue headers of an event: its tenant, which is its lane (claim.sql), and on a
-- stream its stream and seq, which the stream claim finds it by (streams.sql).
CREATE FUNCTION triggers._headers(tenant text, stream text, seq bigint) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN seq IS NOT NULL THEN jsonb_build_object('tenant', tenant, 'stream', stream, 'seq', seq)
                ELSE jsonb_build_object('tenant', tenant) END
$$;
COMMENT ON FUNCTION triggers._headers IS 'Internal: the queue headers of an event: {tenant}, or {tenant, stream, seq} on a stream.';

-- The tenant's lane exists (a triggers.lanes row: claim.sql). A session remembers the
-- last tenant it registered, so a producer sending for one tenant looks once per
-- session. (The setting rolls back with a transaction that rolls back, so it never
-- vouches for a row that was not committed.) Never waits on another producer.
CREATE FUNCTION triggers._register_tenant(tenant text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('triggers.registered_tenant', true) IS DISTINCT FROM tenant THEN
        INSERT INTO triggers.lanes (tenant) SELECT _register_tenant.tenant
         WHERE NOT EXISTS (SELECT 1 FROM triggers.lanes l WHERE l.tenant = _register_tenant.tenant);
        PERFORM set_config('triggers.registered_tenant', tenant, false);
    END IF;
END $$;
COMMENT ON FUNCTION triggers._register_tenant IS 'Internal: makes sure a tenant has its lane (a triggers.lanes row).';

-- The next position on a stream (1, 2, 3, ...), taken in the caller's transaction, and
-- for its first event the stream's progress row (created here, by the producer, so that
-- no two workers race to create it).
CREATE FUNCTION triggers._stream_seq(tenant text, stream text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_seq bigint;
BEGIN
    INSERT INTO triggers.streams AS s (tenant, stream, last_seq) VALUES (_stream_seq.tenant, _stream_seq.stream, 1)
    ON CONFLICT ON CONSTRAINT streams_pkey DO UPDATE SET last_seq = s.last_seq + 1
    RETURNING s.last_seq INTO v_seq;
    IF v_seq = 1 THEN
        INSERT INTO triggers.stream_progress AS p (tenant, stream) VALUES (_stream_seq.tenant, _stream_seq.stream)
        ON CONFLICT DO NOTHING;
    END IF;
    RETURN v_seq;
END $$;
COMMENT ON FUNCTION triggers._stream_seq IS 'Internal: the next position on a stream; the first creates its progress row.';

-- How long an event waits before it can be processed: config.queue_delay_ms for
-- debug = queue_delay, else not at all.
CREATE FUNCTION triggers._debug_delay(debug text, delay_ms int) RETURNS interval
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN debug = 'queue_delay' THEN delay_ms * interval '1 millisecond' ELSE interval '0' END
$$;
COMMENT ON FUNCTION triggers._debug_delay IS 'Internal: how long a debug=queue_delay event waits (config.queue_delay_ms).';

/*
 * Wakes idle workers: NOTIFY triggers_events, delivered when the caller commits. A
 * session notifies at most once per config.notify_throttle_ms; the time of its last
 * notification is a session setting, so it only counts once that transaction commits
 * (set_config is rolled back with it). Worker protocol, which makes the throttle safe:
 * LISTEN; drain until process_batch reads nothing and no notification is pending;
 * check once more notify_throttle_ms later (anything enqueued without a NOTIFY of its
 * own is found then); then wait for a notification. server/src/worker.rs follows it.
 */
CREATE FUNCTION triggers._wake(v_throttle int DEFAULT NULL) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_now float8 := triggers._now_ms();
    v_last float8 := coalesce(nullif(current_setting('triggers.notified_at_ms', true), '')::float8, 0);
BEGIN
    -- A session may set its own throttle (triggers.notify_throttle_ms), e.g. a server's
    -- group committer that commits few, large transactions and wants every one seen.
    v_throttle := coalesce(nullif(current_setting('triggers.notify_throttle_ms', true), '')::int, v_throttle);
    IF v_throttle IS NULL THEN
        SELECT c.notify_throttle_ms INTO v_throttle FROM triggers.config c;
    END IF;
    IF v_now - v_last >= v_throttle OR v_now < v_last THEN
        PERFORM pg_notify('triggers_events', '');
        PERFORM set_config('triggers.notified_at_ms', v_now::text, false);
    END IF;
END $$;
COMMENT ON FUNCTION triggers._wake IS 'Internal: NOTIFY triggers_events, at most once per notify_throttle_ms per session.';

/*
 * Queues one event and returns its id and whether it was a repeat of an idempotency
 * key already seen for the tenant (then nothing is queued and the first id returns).
 */
CREATE FUNCTION triggers.enqueue_ex(
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

/*
 * Queues one event for processing and returns its id (a UUIDv7). With an idempotency
 * key seen before for the tenant, returns the first event's id and queues nothing.
 */
CREATE FUNCTION triggers.enqueue(
    payload jsonb,
    metadata jsonb DEFAULT NULL,
    tenant text DEFAULT 'default',
    idempotency_key text DEFAULT NULL,
    stream text DEFAULT NULL,
    debug text DEFAULT NULL)
RETURNS uuid LANGUAGE sql AS $$
    SELECT (triggers.enqueue_ex(payload, metadata, tenant, idempotency_key, stream, debug)).event_id
$$;
COMMENT ON FUNCTION triggers.enqueue IS
    'Queues one event (payload: a JSON object) and returns its id; a repeated idempotency key returns the first event''s id and queues nothing.';

/*
 * Queues an array of events, `[{payload, metadata?, idempotency_key?, stream?, debug?}]`,
 * all or nothing, and returns for each, in order, its id and whether it repeated an
 * idempotency key seen before (within the array too), in which case it was not queued.
 */
CREATE FUNCTION triggers.enqueue_batch_ex(events jsonb, tenant text DEFAULT 'default')
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

/*
 * Queues an array of events, `[{payload, metadata?, idempotency_key?, stream?, debug?}]`,
 * all or nothing, and returns their ids in order (a repeated idempotency key returns
 * the first event's id, within the array too).
 */
CREATE FUNCTION triggers.enqueue_batch(events jsonb, tenant text DEFAULT 'default')
RETURNS SETOF uuid LANGUAGE sql AS $$
    SELECT b.event_id FROM triggers.enqueue_batch_ex(events, tenant) b
$$;
COMMENT ON FUNCTION triggers.enqueue_batch IS
    'Queues an array of events [{payload, metadata?, idempotency_key?, stream?, debug?}], all or nothing; returns their ids in order.';
