-- triggers: the SQL API (SPEC §3-§5). Runs last in CREATE EXTENSION, after the tables
-- (bootstrap.sql) and the Rust helpers (_uuid_v7, _cursor_*, _key_matches).
--
-- Errors use SQLSTATE class TG (see triggers-core's ErrorCode, the one table of them):
--   TG001 invalid payload      TG002 invalid metadata    TG003 payload too large
--   TG004 invalid parameter    TG005 invalid cursor      TG006 not found
--   TG007 invalid state        TG008 retries exhausted   TG009 invalid API key
-- Queue operations write pgmq's tables with static SQL (one statement each, plans
-- cached) rather than through pgmq's dynamic-SQL functions; the layout is pgmq 1.11's.

---------------------------------------------------------------------------------------
-- Validation helpers
---------------------------------------------------------------------------------------

-- Raises TG004 unless `value` is a sane identifier-like text (tenant, stream, key): 1 to
-- max_len characters, no ASCII control character (the same in every locale; /openapi.json
-- states it as a pattern).
CREATE FUNCTION triggers._check_text(field text, value text, max_len int DEFAULT 200)
RETURNS void LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF value IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'TG004', MESSAGE = format('%s must not be NULL', field);
    END IF;
    IF value = '' OR length(value) > max_len OR value ~ '[\x01-\x1f\x7f]' THEN
        RAISE EXCEPTION USING ERRCODE = 'TG004',
            MESSAGE = format('%s must be 1 to %s characters without control characters', field, max_len);
    END IF;
END $$;

-- Validates one event as enqueue receives it. `field` prefixes messages ("events[3].").
-- The payload's size is its stored (jsonb) size, which costs nothing to read.
CREATE FUNCTION triggers._check_event(
    field text, payload jsonb, metadata jsonb, idempotency_key text, stream text, debug text,
    max_bytes int DEFAULT NULL)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF payload IS NULL OR jsonb_typeof(payload) <> 'object' THEN
        RAISE EXCEPTION USING ERRCODE = 'TG001',
            MESSAGE = format('%spayload must be a JSON object, got %s', field,
                             coalesce(jsonb_typeof(payload), 'NULL'));
    END IF;
    IF metadata IS NOT NULL AND jsonb_typeof(metadata) <> 'object' THEN
        RAISE EXCEPTION USING ERRCODE = 'TG002',
            MESSAGE = format('%smetadata must be a JSON object or NULL, got %s', field, jsonb_typeof(metadata));
    END IF;
    IF max_bytes IS NULL THEN
        SELECT c.max_payload_bytes INTO max_bytes FROM triggers.config c;
    END IF;
    IF pg_column_size(payload) > max_bytes THEN
        RAISE EXCEPTION USING ERRCODE = 'TG003',
            MESSAGE = format('%spayload is %s bytes, over the limit of %s', field,
                             pg_column_size(payload), max_bytes);
    END IF;
    IF idempotency_key IS NOT NULL THEN
        PERFORM triggers._check_text(field || 'idempotency_key', idempotency_key, 255);
    END IF;
    IF stream IS NOT NULL THEN
        PERFORM triggers._check_text(field || 'stream', stream);
    END IF;
    IF debug IS NOT NULL AND debug NOT IN ('processing_error', 'dlq_routing', 'queue_delay', 'validation_error') THEN
        RAISE EXCEPTION USING ERRCODE = 'TG004',
            MESSAGE = format('%sdebug must be one of processing_error, dlq_routing, queue_delay, validation_error', field);
    END IF;
    IF debug = 'validation_error' THEN
        RAISE EXCEPTION USING ERRCODE = 'TG001',
            MESSAGE = format('%spayload rejected (debug flag validation_error)', field);
    END IF;
END $$;

-- Whether `value` passes _check_text (NULL passes: callers decide about NULL).
CREATE FUNCTION triggers._text_ok(value text, max_len int) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT value IS NULL OR (value <> '' AND length(value) <= max_len AND value !~ '[\x01-\x1f\x7f]')
$$;

-- Whether an event passes _check_event, as one expression (SQL functions the planner
-- inlines: no call at run time). The enqueue paths test this and call _check_event,
-- which names what is wrong, only when it is false.
CREATE FUNCTION triggers._event_ok(
    payload jsonb, metadata jsonb, idempotency_key text, stream text, debug text, max_bytes int)
RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_typeof(payload) = 'object'
                    AND pg_column_size(payload) <= max_bytes
                    AND (metadata IS NULL OR jsonb_typeof(metadata) = 'object')
                    AND triggers._text_ok(idempotency_key, 255)
                    AND triggers._text_ok(stream, 200)
                    AND (debug IS NULL OR debug IN ('processing_error', 'dlq_routing', 'queue_delay')),
                    false)
$$;

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

-- The next position on a stream (1, 2, 3, ...), taken in the caller's transaction.
CREATE FUNCTION triggers._next_seq(tenant text, stream text) RETURNS bigint
LANGUAGE sql AS $$
    INSERT INTO triggers.streams AS s (tenant, stream, last_seq) VALUES (tenant, stream, 1)
    ON CONFLICT (tenant, stream) DO UPDATE SET last_seq = s.last_seq + 1
    RETURNING s.last_seq
$$;

-- How long a queue_delay event waits before it can be processed.
CREATE FUNCTION triggers._debug_delay(debug text) RETURNS interval
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN debug = 'queue_delay' THEN interval '5 seconds' ELSE interval '0' END
$$;

---------------------------------------------------------------------------------------
-- Enqueue
---------------------------------------------------------------------------------------

/*
 * Wakes idle workers: NOTIFY triggers_events, delivered when the caller commits. A
 * session notifies at most once per config.notify_throttle_ms; the time of its last
 * notification is a session setting, so it only counts once that transaction commits
 * (set_config is rolled back with it). Worker protocol, which makes the throttle safe:
 * LISTEN; drain until process_batch reads nothing and no notification is pending;
 * check again at growing intervals until notify_throttle_ms has passed (anything
 * enqueued without a NOTIFY of its own is found then); then wait for a notification.
 */
CREATE FUNCTION triggers._wake(v_throttle int DEFAULT NULL) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_now float8 := extract(epoch FROM clock_timestamp()) * 1000;
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
    v_now timestamptz := clock_timestamp();
    cfg triggers.config;
BEGIN
    SELECT * INTO cfg FROM triggers.config;
    IF NOT coalesce(enqueue_ex.tenant IS NOT NULL AND triggers._text_ok(enqueue_ex.tenant, 200)
                    AND triggers._event_ok(enqueue_ex.payload, enqueue_ex.metadata,
                                           enqueue_ex.idempotency_key, enqueue_ex.stream,
                                           enqueue_ex.debug, cfg.max_payload_bytes), false) THEN
        PERFORM triggers._check_text('tenant', enqueue_ex.tenant);
        PERFORM triggers._check_event('', enqueue_ex.payload, enqueue_ex.metadata,
                                      enqueue_ex.idempotency_key, enqueue_ex.stream, enqueue_ex.debug,
                                      cfg.max_payload_bytes);
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
    INSERT INTO pgmq.q_triggers_events (vt, message)
    VALUES (v_now + triggers._debug_delay(enqueue_ex.debug),
            triggers._message(enqueue_ex.event_id, enqueue_ex.tenant, enqueue_ex.payload,
                              enqueue_ex.metadata, enqueue_ex.idempotency_key, enqueue_ex.stream,
                              CASE WHEN enqueue_ex.stream IS NOT NULL
                                   THEN triggers._next_seq(enqueue_ex.tenant, enqueue_ex.stream) END,
                              enqueue_ex.debug, v_now));
    PERFORM triggers._wake(cfg.notify_throttle_ms);
END $$;

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

/*
 * Queues an array of events, `[{payload, metadata?, idempotency_key?, stream?, debug?}]`,
 * all or nothing, and returns for each, in order, its id and whether it repeated an
 * idempotency key seen before (within the array too), in which case it was not queued.
 */
CREATE FUNCTION triggers.enqueue_batch_ex(events jsonb, tenant text DEFAULT 'default')
RETURNS TABLE(event_id uuid, duplicate boolean) LANGUAGE plpgsql AS $$
DECLARE
    v_now timestamptz := clock_timestamp();
    v_n int;
    v_max int;
    v_first_bad bigint;
    v_keys boolean;
    v_streams boolean;
    v_bad record;
    v_ids uuid[];
    v_seqs bigint[];
BEGIN
    PERFORM triggers._check_text('tenant', enqueue_batch_ex.tenant);
    IF events IS NULL OR jsonb_typeof(events) <> 'array' THEN
        RAISE EXCEPTION USING ERRCODE = 'TG004', MESSAGE = 'events must be a JSON array';
    END IF;
    v_n := jsonb_array_length(events);
    IF v_n < 1 OR v_n > 10000 THEN
        RAISE EXCEPTION USING ERRCODE = 'TG004',
            MESSAGE = format('events must hold 1 to 10000 events, got %s', v_n);
    END IF;
    SELECT c.max_payload_bytes INTO v_max FROM triggers.config c;
    -- One pass over the array: does any element fail a check (the shape checks below and
    -- _event_ok), and does any carry an idempotency key or a stream? A batch that passes
    -- and has neither (the common case) takes the short path.
    SELECT min(ord) FILTER (WHERE NOT ok), coalesce(bool_or(key IS NOT NULL), false),
           coalesce(bool_or(stream IS NOT NULL), false)
      INTO v_first_bad, v_keys, v_streams
      FROM (SELECT ord, e->>'idempotency_key' AS key, e->>'stream' AS stream,
                   coalesce(jsonb_typeof(e) = 'object'
                        AND coalesce(jsonb_typeof(e->'idempotency_key') IN ('string', 'null'), true)
                        AND coalesce(jsonb_typeof(e->'stream') IN ('string', 'null'), true)
                        AND coalesce(jsonb_typeof(e->'debug') IN ('string', 'null'), true)
                        AND triggers._event_ok(e->'payload', nullif(e->'metadata', 'null'),
                                               e->>'idempotency_key', e->>'stream', e->>'debug', v_max),
                        false) AS ok
              FROM jsonb_array_elements(events) WITH ORDINALITY AS t(e, ord)) x;

    IF v_first_bad IS NOT NULL THEN
        -- Something is wrong: find it and say what. The first malformed element, if any, is
        -- reported by its index.
        SELECT ord - 1 AS i, e INTO v_bad
          FROM jsonb_array_elements(events) WITH ORDINALITY AS t(e, ord)
         WHERE jsonb_typeof(e) <> 'object'
            OR NOT (e ? 'payload')
            OR (e ? 'idempotency_key' AND jsonb_typeof(e->'idempotency_key') NOT IN ('string', 'null'))
            OR (e ? 'stream' AND jsonb_typeof(e->'stream') NOT IN ('string', 'null'))
            OR (e ? 'debug' AND jsonb_typeof(e->'debug') NOT IN ('string', 'null'))
         ORDER BY ord LIMIT 1;
        IF FOUND THEN
            IF jsonb_typeof(v_bad.e) <> 'object' THEN
                RAISE EXCEPTION USING ERRCODE = 'TG004', MESSAGE = format('events[%s] must be a JSON object', v_bad.i);
            ELSIF NOT (v_bad.e ? 'payload') THEN
                RAISE EXCEPTION USING ERRCODE = 'TG001', MESSAGE = format('events[%s].payload is missing', v_bad.i);
            ELSE
                RAISE EXCEPTION USING ERRCODE = 'TG004',
                    MESSAGE = format('events[%s]: idempotency_key, stream and debug must be strings', v_bad.i);
            END IF;
        END IF;
        PERFORM triggers._check_event(format('events[%s].', ord - 1), e->'payload',
                                      CASE WHEN jsonb_typeof(e->'metadata') = 'null' THEN NULL ELSE e->'metadata' END,
                                      e->>'idempotency_key', e->>'stream', e->>'debug', v_max)
           FROM jsonb_array_elements(events) WITH ORDINALITY AS t(e, ord);
    END IF;

    IF NOT v_keys AND NOT v_streams THEN
        -- No keys, no streams: every element is a new event; one statement queues them.
        RETURN QUERY
        WITH items AS MATERIALIZED (
            SELECT ord, e, triggers._uuid_v7() AS id
              FROM jsonb_array_elements(events) WITH ORDINALITY AS t(e, ord)
        ), queued AS (
            INSERT INTO pgmq.q_triggers_events (vt, message)
            SELECT v_now + triggers._debug_delay(e->>'debug'),
                   triggers._message(id, enqueue_batch_ex.tenant, e->'payload', nullif(e->'metadata', 'null'),
                                     NULL, NULL, NULL, e->>'debug', v_now)
              FROM items
             ORDER BY ord
        )
        SELECT items.id, false FROM items ORDER BY items.ord;
        PERFORM triggers._wake();
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
                          THEN triggers._next_seq(enqueue_batch_ex.tenant, e->>'stream') END ORDER BY ord)
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
        INSERT INTO pgmq.q_triggers_events (vt, message)
        SELECT v_now + triggers._debug_delay(e->>'debug'),
               triggers._message(id, enqueue_batch_ex.tenant, e->'payload',
                                 CASE WHEN jsonb_typeof(e->'metadata') = 'null' THEN NULL ELSE e->'metadata' END,
                                 e->>'idempotency_key', e->>'stream', v_seqs[ord], e->>'debug', v_now)
          FROM items WHERE id = fresh_id
         ORDER BY ord
    )
    SELECT items.id, items.id <> items.fresh_id FROM items ORDER BY items.ord;
    PERFORM triggers._wake();
END $$;

/*
 * Queues an array of events, `[{payload, metadata?, idempotency_key?, stream?, debug?}]`,
 * all or nothing, and returns their ids in order (a repeated idempotency key returns
 * the first event's id, within the array too).
 */
CREATE FUNCTION triggers.enqueue_batch(events jsonb, tenant text DEFAULT 'default')
RETURNS SETOF uuid LANGUAGE sql AS $$
    SELECT b.event_id FROM triggers.enqueue_batch_ex(events, tenant) b
$$;

---------------------------------------------------------------------------------------
-- Processing
---------------------------------------------------------------------------------------

-- Moves one message to the dead-letter queue and records the event as failed.
CREATE FUNCTION triggers._dead_letter(msg_id bigint, message jsonb, read_ct int, error text)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_now timestamptz := clock_timestamp();
BEGIN
    INSERT INTO pgmq.q_triggers_events_dlq (vt, message, read_ct)
    VALUES (v_now, message || jsonb_build_object('error', error, 'failed_at', v_now, 'attempts', read_ct), 0);
    DELETE FROM pgmq.q_triggers_events q WHERE q.msg_id = _dead_letter.msg_id;
    -- An event row is written only for a message well-formed enough to describe one.
    IF triggers._malformed(message - 'debug') IS NULL THEN
        INSERT INTO triggers.events AS ev (event_id, tenant, stream, seq, payload, metadata, status,
                                          created_at, updated_at, retry_count, error_message, idempotency_key)
        VALUES ((message->>'event_id')::uuid, message->>'tenant', message->>'stream', (message->>'seq')::bigint,
                message->'payload', nullif(message->'metadata', 'null'), 'failed',
                coalesce((message->>'created_at')::timestamptz, v_now), v_now,
                greatest(read_ct - 1, 0), error,
                message->>'idempotency_key')
        ON CONFLICT ON CONSTRAINT events_pkey DO UPDATE
           SET status = 'failed', updated_at = v_now, error_message = EXCLUDED.error_message,
               retry_count = ev.retry_count + greatest(read_ct - 1, 0)
         WHERE ev.status <> 'delivered';
    END IF;
END $$;

-- Why a message cannot be processed at all (goes straight to the DLQ), or NULL.
CREATE FUNCTION triggers._malformed(message jsonb) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN message IS NULL OR jsonb_typeof(message) <> 'object' THEN 'message is not a JSON object'
        WHEN NOT coalesce(message->>'event_id' ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$', false)
            THEN 'message has no valid event_id'
        WHEN coalesce(message->>'tenant', '') = '' THEN 'message has no tenant'
        WHEN jsonb_typeof(message->'payload') IS DISTINCT FROM 'object' THEN 'payload is not a JSON object'
        WHEN jsonb_typeof(message->'metadata') NOT IN ('object', 'null') THEN 'metadata is not a JSON object'
        WHEN (message->>'stream' IS NULL) <> (message->>'seq' IS NULL)
          OR (message->>'seq' IS NOT NULL AND NOT coalesce(message->>'seq' ~ '^[1-9][0-9]{0,17}$', false))
            THEN 'stream and seq must come together, seq a positive integer'
        WHEN message->>'debug' = 'dlq_routing' THEN 'routed to the dead-letter queue (debug flag dlq_routing)'
    END
$$;

-- Stores the given messages as pending events, with one insert. A stored row that had
-- failed becomes pending again (a retry or a redrive succeeded); one already pending or
-- delivered is left alone, so a message processed twice changes nothing.
CREATE FUNCTION triggers._store(messages jsonb[], read_cts int[])
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_now timestamptz := clock_timestamp();
    v_inserted bigint;
BEGIN
    INSERT INTO triggers.events AS ev (event_id, tenant, stream, seq, payload, metadata, status, created_at,
                                      updated_at, processed_at, retry_count, idempotency_key)
    SELECT (m->>'event_id')::uuid, m->>'tenant', m->>'stream', (m->>'seq')::bigint, m->'payload',
           nullif(m->'metadata', 'null'), 'pending',
           coalesce((m->>'created_at')::timestamptz, v_now), v_now, v_now,
           greatest(rc - 1, 0), m->>'idempotency_key'
      FROM unnest(messages, read_cts) AS t(m, rc)
     ORDER BY 1
    ON CONFLICT ON CONSTRAINT events_pkey DO NOTHING;
    GET DIAGNOSTICS v_inserted = ROW_COUNT;
    -- Rows that existed already: only a failed one changes. A separate statement, run
    -- only when needed, because an UPDATE (or INSERT ... DO UPDATE) fires the metrics
    -- trigger for updates even when it changes nothing.
    IF v_inserted < cardinality(messages) THEN
        UPDATE triggers.events ev
           SET status = 'pending', processed_at = v_now, updated_at = v_now, error_message = NULL,
               retry_count = ev.retry_count + greatest(t.rc - 1, 0)
          FROM unnest(messages, read_cts) AS t(m, rc)
         WHERE ev.event_id = (t.m->>'event_id')::uuid AND ev.status = 'failed';
    END IF;
END $$;

/*
 * The workflow: claims up to batch_size visible messages, and for each: validate ->
 * store -> metrics -> remove.
 * One transaction; a failing message never aborts the others: the batch is stored in
 * one subtransaction and, if that fails, each message in its own. A retryable failure
 * backs off (min(cap, base * 2^(attempt-1))) through the visibility timeout; past
 * max_retries, and at once for malformed messages or debug=dlq_routing, the message
 * moves to triggers_events_dlq and the event is recorded as failed.
 * NULL arguments take their values from triggers.config. visibility_timeout is checked
 * and kept for pgmq compatibility; claimed messages are held by row locks for the
 * transaction instead (see below), which hides them at least as long.
 */
CREATE FUNCTION triggers.process_batch(batch_size int DEFAULT NULL, visibility_timeout int DEFAULT NULL)
RETURNS TABLE(read int, stored int, retried int, dead_lettered int)
LANGUAGE plpgsql AS $$
DECLARE
    cfg triggers.config;
    v_ids bigint[];
    v_msgs jsonb[];
    v_read_cts int[];
    v_ok_ids bigint[] := '{}';
    v_ok_msgs jsonb[] := '{}';
    v_ok_rcs int[] := '{}';
    v_done_ids bigint[] := '{}';
    v_fail_ids bigint[] := '{}';
    v_fail_errors text[] := '{}';
    v_dlq_ids bigint[];
    v_dlq_whys text[];
    v_n int;
    i int;
    k int;
BEGIN
    SELECT * INTO cfg FROM triggers.config;
    batch_size := coalesce(batch_size, cfg.batch_size);
    visibility_timeout := coalesce(visibility_timeout, cfg.visibility_timeout_s);
    IF batch_size < 1 OR batch_size > 10000 THEN
        RAISE EXCEPTION USING ERRCODE = 'TG004', MESSAGE = format('batch_size must be 1 to 10000, got %s', batch_size);
    END IF;
    IF visibility_timeout < 1 OR visibility_timeout > 86400 THEN
        RAISE EXCEPTION USING ERRCODE = 'TG004',
            MESSAGE = format('visibility_timeout must be 1 to 86400 seconds, got %s', visibility_timeout);
    END IF;
    read := 0; stored := 0; retried := 0; dead_lettered := 0;

    -- Claim and validate, as one static statement: malformed or dlq_routing -> DLQ now;
    -- processing_error -> a retryable failure; the rest -> store. Claimed messages are
    -- row-locked until this transaction ends (other workers skip them), which is what
    -- pgmq.read's vt update buys, without writing a new version of every message: a
    -- committed batch deletes or re-times each message it claimed, and an aborted one
    -- leaves them untouched and available again at once.
    WITH claimed AS (
        SELECT q.msg_id AS id, q.read_ct + 1 AS rc, q.message AS m
          FROM pgmq.q_triggers_events q
         WHERE q.vt <= clock_timestamp()
         ORDER BY q.msg_id
         LIMIT batch_size
           FOR UPDATE SKIP LOCKED
    ), x AS MATERIALIZED (
        -- Materialized: inlined, _malformed would run once per FILTER below, not once.
        SELECT c.id, c.m, c.rc, triggers._malformed(c.m) AS why,
               coalesce(c.m->>'debug' = 'processing_error', false) AS fail
          FROM claimed c
    )
    -- One Aggregate node feeds every array the same rows in the same order, so the
    -- arrays line up without sorting each of them.
    SELECT array_agg(x.id), array_agg(x.m), array_agg(x.rc),
           coalesce(array_agg(x.id) FILTER (WHERE x.why IS NULL AND NOT x.fail), '{}'),
           coalesce(array_agg(x.m) FILTER (WHERE x.why IS NULL AND NOT x.fail), '{}'),
           coalesce(array_agg(x.rc) FILTER (WHERE x.why IS NULL AND NOT x.fail), '{}'),
           coalesce(array_agg(x.id) FILTER (WHERE x.why IS NULL AND x.fail), '{}'),
           coalesce(array_agg('processing failed (debug flag processing_error)'::text)
                    FILTER (WHERE x.why IS NULL AND x.fail), '{}'),
           coalesce(array_agg(x.id) FILTER (WHERE x.why IS NOT NULL), '{}'),
           coalesce(array_agg(x.why) FILTER (WHERE x.why IS NOT NULL), '{}')
      INTO v_ids, v_msgs, v_read_cts, v_ok_ids, v_ok_msgs, v_ok_rcs, v_fail_ids, v_fail_errors,
           v_dlq_ids, v_dlq_whys
      FROM x;
    v_n := coalesce(array_length(v_ids, 1), 0);
    read := v_n;
    IF v_n = 0 THEN
        PERFORM triggers._fold_metrics();
        RETURN NEXT;
        RETURN;
    END IF;

    FOR i IN 1..coalesce(array_length(v_dlq_ids, 1), 0) LOOP
        k := array_position(v_ids, v_dlq_ids[i]);
        PERFORM triggers._dead_letter(v_ids[k], v_msgs[k], v_read_cts[k], v_dlq_whys[i]);
        dead_lettered := dead_lettered + 1;
    END LOOP;

    -- Store: the whole batch in one subtransaction; if anything in it fails, each
    -- message alone, so only the failing ones fail.
    IF coalesce(array_length(v_ok_ids, 1), 0) > 0 THEN
        BEGIN
            PERFORM triggers._store(v_ok_msgs, v_ok_rcs);
            v_done_ids := v_ok_ids;
        EXCEPTION WHEN OTHERS THEN
            FOR i IN 1..array_length(v_ok_ids, 1) LOOP
                BEGIN
                    PERFORM triggers._store(ARRAY[v_ok_msgs[i]], ARRAY[v_ok_rcs[i]]);
                    v_done_ids := v_done_ids || v_ok_ids[i];
                EXCEPTION WHEN OTHERS THEN
                    v_fail_ids := v_fail_ids || v_ok_ids[i];
                    v_fail_errors := v_fail_errors || (SQLSTATE || ': ' || SQLERRM);
                END;
            END LOOP;
        END;
        -- Remove what was stored. Deliberately here, in the top-level transaction that
        -- holds the row locks: a delete from inside a subtransaction would leave a
        -- MultiXact as the rows' xmax, which index scans can never mark as surely dead,
        -- so every later claim would walk past all of them until vacuum.
        DELETE FROM pgmq.q_triggers_events q WHERE q.msg_id = ANY(v_done_ids);
        stored := coalesce(array_length(v_done_ids, 1), 0);
    END IF;

    -- Retryable failures: back off, or dead-letter once attempts exceed max_retries.
    FOR i IN 1..coalesce(array_length(v_fail_ids, 1), 0) LOOP
        k := array_position(v_ids, v_fail_ids[i]);
        IF v_read_cts[k] > cfg.max_retries THEN
            PERFORM triggers._dead_letter(v_ids[k], v_msgs[k], v_read_cts[k], v_fail_errors[i]);
            dead_lettered := dead_lettered + 1;
        ELSE
            UPDATE pgmq.q_triggers_events q
               SET vt = clock_timestamp()
                        + make_interval(secs => triggers._backoff_ms(v_read_cts[k], cfg.backoff_base_ms, cfg.backoff_cap_ms) / 1000.0),
                   read_ct = v_read_cts[k], last_read_at = clock_timestamp(),
                   message = q.message || jsonb_build_object('last_error', v_fail_errors[i])
             WHERE q.msg_id = v_ids[k];
            retried := retried + 1;
        END IF;
    END LOOP;
    -- Under load, fold at most once a second per session; an idle worker folds at once.
    PERFORM triggers._fold_metrics(1000);
    RETURN NEXT;
END $$;

---------------------------------------------------------------------------------------
-- Consumers: inbox, get_event, ack, retry
---------------------------------------------------------------------------------------

-- A row of the inbox: the event and the cursor that pages past it.
CREATE TYPE triggers.inbox_row AS (
    event_id uuid, status text, payload jsonb, metadata jsonb, stream text, seq bigint,
    created_at timestamptz, updated_at timestamptz, processed_at timestamptz,
    delivered_at timestamptz, retry_count int, error_message text, idempotency_key text,
    cursor text);

/*
 * A tenant's events in keyset order (created_at, event_id), ascending unless
 * order = 'desc'. Pass the `cursor` of the last row of a page as after_cursor for the
 * next page. Filters: status set, created_at range [from_time, to_time), stream,
 * metadata/payload containment (@>), retry_count range.
 */
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
    "order" text DEFAULT 'asc')
RETURNS SETOF triggers.inbox_row
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_ts timestamptz;
    v_id uuid;
    v_bad text;
BEGIN
    PERFORM triggers._check_text('tenant', inbox.tenant);
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
    IF "order" IS NULL OR "order" NOT IN ('asc', 'desc') THEN
        RAISE EXCEPTION USING ERRCODE = 'TG004', MESSAGE = 'order must be asc or desc';
    END IF;
    IF metadata_contains IS NOT NULL AND jsonb_typeof(metadata_contains) <> 'object' THEN
        RAISE EXCEPTION USING ERRCODE = 'TG004', MESSAGE = 'metadata_contains must be a JSON object';
    END IF;
    IF payload_contains IS NOT NULL AND jsonb_typeof(payload_contains) <> 'object' THEN
        RAISE EXCEPTION USING ERRCODE = 'TG004', MESSAGE = 'payload_contains must be a JSON object';
    END IF;
    IF after_cursor IS NOT NULL THEN
        v_ts := triggers._cursor_created_at(after_cursor);
        v_id := triggers._cursor_event_id(after_cursor);
        IF v_ts IS NULL OR v_id IS NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'TG005', MESSAGE = 'after_cursor is not a cursor returned by inbox';
        END IF;
    END IF;
    RETURN QUERY
    SELECT e.event_id, e.status, e.payload, e.metadata, e.stream, e.seq, e.created_at, e.updated_at,
           e.processed_at, e.delivered_at, e.retry_count, e.error_message, e.idempotency_key,
           triggers._cursor(e.created_at, e.event_id)
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
     LIMIT lim;
END $$;

-- The event row of `event_id` for `tenant` (locked when for_update), or TG006.
CREATE FUNCTION triggers._event(event_id uuid, tenant text, for_update boolean) RETURNS triggers.events
LANGUAGE plpgsql AS $$
DECLARE
    v triggers.events;
BEGIN
    IF event_id IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'TG004', MESSAGE = 'event_id must not be NULL';
    END IF;
    PERFORM triggers._check_text('tenant', tenant);
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

/* One event of the tenant; TG006 when there is none (or it is not processed yet). */
CREATE FUNCTION triggers.get_event(event_id uuid, tenant text DEFAULT 'default')
RETURNS triggers.events LANGUAGE sql AS $$
    SELECT triggers._event(event_id, tenant, false)
$$;

/* Marks a pending event delivered. Idempotent; TG007 for a failed event. */
CREATE FUNCTION triggers.ack(event_id uuid, tenant text DEFAULT 'default')
RETURNS triggers.events LANGUAGE plpgsql AS $$
DECLARE
    v triggers.events := triggers._event(event_id, tenant, true);
BEGIN
    IF v.status = 'failed' THEN
        RAISE EXCEPTION USING ERRCODE = 'TG007',
            MESSAGE = format('event %s is failed, not pending; retry it first', event_id);
    END IF;
    IF v.status = 'pending' THEN
        UPDATE triggers.events e SET status = 'delivered', delivered_at = clock_timestamp(),
                                     updated_at = clock_timestamp()
         WHERE e.event_id = v.event_id
        RETURNING * INTO v;
    END IF;
    RETURN v;
END $$;

/*
 * Re-queues a failed event (at most 3 manual retries). TG007 when it is not failed,
 * TG008 when its manual retries are used up. Returns the new manual attempt number.
 */
CREATE FUNCTION triggers.retry(event_id uuid, tenant text DEFAULT 'default') RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    v triggers.events := triggers._event(retry.event_id, retry.tenant, true);
BEGIN
    IF v.status <> 'failed' THEN
        RAISE EXCEPTION USING ERRCODE = 'TG007',
            MESSAGE = format('event %s is %s, only failed events can be retried', v.event_id, v.status);
    END IF;
    IF v.manual_retries >= 3 THEN
        RAISE EXCEPTION USING ERRCODE = 'TG008',
            MESSAGE = format('event %s has used all 3 manual retries', v.event_id);
    END IF;
    UPDATE triggers.events e SET manual_retries = e.manual_retries + 1, retry_count = e.retry_count + 1,
                                 updated_at = clock_timestamp()
     WHERE e.event_id = v.event_id;
    -- Its dead letter, if any, is superseded by the new attempt.
    DELETE FROM pgmq.q_triggers_events_dlq d
     WHERE d.message->>'event_id' = v.event_id::text AND d.message->>'tenant' = v.tenant;
    INSERT INTO pgmq.q_triggers_events (vt, message)
    VALUES (clock_timestamp(),
            triggers._message(v.event_id, v.tenant, v.payload, v.metadata, v.idempotency_key, v.stream,
                              v.seq, NULL, v.created_at));
    PERFORM triggers._wake();
    RETURN v.manual_retries + 1;
END $$;

---------------------------------------------------------------------------------------
-- Dead letters
---------------------------------------------------------------------------------------

/* The tenant's dead letters, oldest first. */
CREATE FUNCTION triggers.dead_letters(tenant text DEFAULT 'default', lim int DEFAULT 50)
RETURNS TABLE(msg_id bigint, event_id uuid, error text, attempts int, failed_at timestamptz, message jsonb)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    PERFORM triggers._check_text('tenant', tenant);
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

/* Moves up to lim of the tenant's dead letters back to the queue, with fresh attempts. */
CREATE FUNCTION triggers.redrive(tenant text DEFAULT 'default', lim int DEFAULT 100)
RETURNS int LANGUAGE plpgsql AS $$
DECLARE
    v_n int;
BEGIN
    PERFORM triggers._check_text('tenant', tenant);
    IF lim IS NULL OR lim < 1 OR lim > 10000 THEN
        RAISE EXCEPTION USING ERRCODE = 'TG004', MESSAGE = format('lim must be 1 to 10000, got %s', coalesce(lim::text, 'NULL'));
    END IF;
    WITH moved AS (
        DELETE FROM pgmq.q_triggers_events_dlq d
         WHERE d.msg_id IN (SELECT x.msg_id FROM pgmq.q_triggers_events_dlq x
                             WHERE x.message->>'tenant' = redrive.tenant
                             ORDER BY x.msg_id LIMIT lim FOR UPDATE SKIP LOCKED)
        RETURNING d.msg_id, d.message
    )
    INSERT INTO pgmq.q_triggers_events (vt, message)
    SELECT clock_timestamp(), m.message - 'error' - 'failed_at' - 'attempts' - 'last_error' - 'debug'
      FROM moved m ORDER BY m.msg_id;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    IF v_n > 0 THEN
        PERFORM triggers._wake();
    END IF;
    RETURN v_n;
END $$;

---------------------------------------------------------------------------------------
-- Metrics (SPEC §5), kept exact by statement triggers on events
---------------------------------------------------------------------------------------

CREATE FUNCTION triggers._latency_bucket(latency interval) RETURNS smallint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT least(300, greatest(0, round(ln(1 + greatest(extract(epoch FROM latency), 0) * 1000) * 10)))::smallint
$$;

CREATE FUNCTION triggers._count_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO triggers.metric_deltas (tenant, pending, delivered, failed, last_processed_at)
    SELECT n.tenant, count(*) FILTER (WHERE n.status = 'pending'), count(*) FILTER (WHERE n.status = 'delivered'),
           count(*) FILTER (WHERE n.status = 'failed'), max(n.processed_at)
      FROM new_rows n GROUP BY n.tenant;
    INSERT INTO triggers.latency_deltas (tenant, minute, bucket, n)
    SELECT n.tenant, date_trunc('minute', n.processed_at), triggers._latency_bucket(n.processed_at - n.created_at), count(*)
      FROM new_rows n WHERE n.processed_at IS NOT NULL
     GROUP BY 1, 2, 3;
    RETURN NULL;
END $$;

CREATE FUNCTION triggers._count_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO triggers.metric_deltas (tenant, pending, delivered, failed, last_processed_at)
    SELECT d.tenant, sum(d.p), sum(d.d), sum(d.f), max(d.processed_at)
      FROM (SELECT n.tenant, (n.status = 'pending')::int AS p, (n.status = 'delivered')::int AS d,
                   (n.status = 'failed')::int AS f, n.processed_at
              FROM new_rows n
            UNION ALL
            SELECT o.tenant, -(o.status = 'pending')::int, -(o.status = 'delivered')::int,
                   -(o.status = 'failed')::int, NULL
              FROM old_rows o) d
     GROUP BY d.tenant
    HAVING sum(d.p) <> 0 OR sum(d.d) <> 0 OR sum(d.f) <> 0;
    INSERT INTO triggers.latency_deltas (tenant, minute, bucket, n)
    SELECT n.tenant, date_trunc('minute', n.processed_at), triggers._latency_bucket(n.processed_at - n.created_at), count(*)
      FROM new_rows n JOIN old_rows o ON o.event_id = n.event_id
     WHERE n.processed_at IS NOT NULL AND n.processed_at IS DISTINCT FROM o.processed_at
     GROUP BY 1, 2, 3;
    RETURN NULL;
END $$;

CREATE FUNCTION triggers._count_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO triggers.metric_deltas (tenant, pending, delivered, failed)
    SELECT o.tenant, -count(*) FILTER (WHERE o.status = 'pending'), -count(*) FILTER (WHERE o.status = 'delivered'),
           -count(*) FILTER (WHERE o.status = 'failed')
      FROM old_rows o GROUP BY o.tenant;
    RETURN NULL;
END $$;

-- Folds the appended deltas into the totals. One caller at a time (others skip); the
-- deltas it cannot see yet (uncommitted) wait for the next fold. Readers sum totals and
-- deltas, so folding is housekeeping, not correctness: a session folds at most once per
-- min_interval_ms (its last fold's time is a session setting, kept only if it commits).
CREATE FUNCTION triggers._fold_metrics(min_interval_ms int DEFAULT 0) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_now float8 := extract(epoch FROM clock_timestamp()) * 1000;
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
    INSERT INTO triggers.metric_totals AS t (tenant, pending, delivered, failed, last_processed_at)
    SELECT d.tenant, sum(d.pending), sum(d.delivered), sum(d.failed), max(d.last_processed_at)
      FROM d GROUP BY d.tenant
    ON CONFLICT (tenant) DO UPDATE
       SET pending = t.pending + EXCLUDED.pending, delivered = t.delivered + EXCLUDED.delivered,
           failed = t.failed + EXCLUDED.failed,
           last_processed_at = greatest(t.last_processed_at, EXCLUDED.last_processed_at);
    WITH d AS (DELETE FROM triggers.latency_deltas RETURNING *)
    INSERT INTO triggers.latency_minutes AS l (tenant, minute, bucket, n)
    SELECT d.tenant, d.minute, d.bucket, sum(d.n) FROM d GROUP BY 1, 2, 3
    ON CONFLICT (tenant, minute, bucket) DO UPDATE SET n = l.n + EXCLUDED.n;
END $$;

CREATE TRIGGER events_count_insert AFTER INSERT ON triggers.events
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION triggers._count_insert();
CREATE TRIGGER events_count_update AFTER UPDATE ON triggers.events
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION triggers._count_update();
CREATE TRIGGER events_count_delete AFTER DELETE ON triggers.events
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION triggers._count_delete();

/*
 * Metrics of one tenant, or of all when tenant is NULL: total, pending, delivered,
 * failed (exact), queue_depth, dlq_count, last_processed_at, processing_rate_per_min
 * (last 5 minutes), oldest_queued_age_s, and latency_ms p50/p95/p99 from created_at
 * to processed_at over the last 5 minutes (from a log histogram, within about 10%).
 */
CREATE FUNCTION triggers.metrics(tenant text DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_counts record;
    v_queue record;
    v_dlq bigint;
    v_lat record;
    v_since timestamptz := date_trunc('minute', now()) - interval '4 minutes';
BEGIN
    IF tenant IS NOT NULL THEN
        PERFORM triggers._check_text('tenant', tenant);
    END IF;
    SELECT coalesce(sum(s.pending), 0) AS pending, coalesce(sum(s.delivered), 0) AS delivered,
           coalesce(sum(s.failed), 0) AS failed, max(s.last_processed_at) AS last_processed_at
      INTO v_counts
      FROM (SELECT t.tenant, t.pending, t.delivered, t.failed, t.last_processed_at FROM triggers.metric_totals t
            UNION ALL
            SELECT d.tenant, d.pending, d.delivered, d.failed, d.last_processed_at FROM triggers.metric_deltas d) s
     WHERE metrics.tenant IS NULL OR s.tenant = metrics.tenant;
    SELECT count(*) AS depth, extract(epoch FROM now() - min(q.enqueued_at)) AS oldest
      INTO v_queue
      FROM pgmq.q_triggers_events q WHERE metrics.tenant IS NULL OR q.message->>'tenant' = metrics.tenant;
    SELECT count(*) INTO v_dlq FROM pgmq.q_triggers_events_dlq d
     WHERE metrics.tenant IS NULL OR d.message->>'tenant' = metrics.tenant;
    WITH h AS (
        SELECT l.bucket, sum(l.n) AS n
          FROM (SELECT m.tenant, m.minute, m.bucket, m.n FROM triggers.latency_minutes m WHERE m.minute >= v_since
                UNION ALL
                SELECT d.tenant, d.minute, d.bucket, d.n FROM triggers.latency_deltas d WHERE d.minute >= v_since) l
         WHERE metrics.tenant IS NULL OR l.tenant = metrics.tenant
         GROUP BY l.bucket
    ), c AS (
        SELECT h.bucket, sum(h.n) OVER (ORDER BY h.bucket) AS cum, sum(h.n) OVER () AS total FROM h
    )
    SELECT max(c.total) AS total,
           min(c.bucket) FILTER (WHERE c.cum >= 0.50 * c.total) AS p50,
           min(c.bucket) FILTER (WHERE c.cum >= 0.95 * c.total) AS p95,
           min(c.bucket) FILTER (WHERE c.cum >= 0.99 * c.total) AS p99
      INTO v_lat FROM c;
    RETURN jsonb_build_object(
        'tenant', tenant,
        'total', v_counts.pending + v_counts.delivered + v_counts.failed,
        'pending', v_counts.pending,
        'delivered', v_counts.delivered,
        'failed', v_counts.failed,
        'queue_depth', v_queue.depth,
        'dlq_count', v_dlq,
        'last_processed_at', v_counts.last_processed_at,
        'processing_rate_per_min', round(coalesce(v_lat.total, 0) / 5.0, 1),
        'oldest_queued_age_s', round(coalesce(v_queue.oldest, 0)::numeric, 3),
        'latency_ms', jsonb_build_object(
            'window_s', 300,
            'p50', round((exp(v_lat.p50 / 10.0) - 1)::numeric, 1),
            'p95', round((exp(v_lat.p95 / 10.0) - 1)::numeric, 1),
            'p99', round((exp(v_lat.p99 / 10.0) - 1)::numeric, 1)));
END $$;

---------------------------------------------------------------------------------------
-- Retention
---------------------------------------------------------------------------------------

/*
 * Deletes delivered and failed events (and their idempotency keys) last changed more
 * than older_than ago, pgmq archive rows as old, and latency history older than a day.
 * Pending events are never purged. Returns the number of events deleted.
 */
CREATE FUNCTION triggers.purge(older_than interval) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_cutoff timestamptz;
    v_n bigint;
BEGIN
    IF older_than IS NULL OR older_than < interval '0' THEN
        RAISE EXCEPTION USING ERRCODE = 'TG004', MESSAGE = 'older_than must be a non-negative interval';
    END IF;
    BEGIN
        v_cutoff := clock_timestamp() - older_than;
    EXCEPTION WHEN datetime_field_overflow THEN
        -- Older than the calendar reaches back: nothing is that old.
        v_cutoff := '-infinity';
    END;
    WITH gone AS (
        DELETE FROM triggers.events e
         WHERE e.status IN ('delivered', 'failed') AND e.updated_at < v_cutoff
        RETURNING e.tenant, e.idempotency_key
    ), keys AS (
        DELETE FROM triggers.idempotency_keys k USING gone g
         WHERE k.tenant = g.tenant AND k.idempotency_key = g.idempotency_key
    )
    SELECT count(*) INTO v_n FROM gone;
    DELETE FROM pgmq.a_triggers_events a WHERE a.archived_at < v_cutoff;
    DELETE FROM pgmq.a_triggers_events_dlq a WHERE a.archived_at < v_cutoff;
    PERFORM triggers._fold_metrics();
    DELETE FROM triggers.latency_minutes l WHERE l.minute < clock_timestamp() - interval '1 day';
    RETURN v_n;
END $$;

---------------------------------------------------------------------------------------
-- API keys
---------------------------------------------------------------------------------------

/*
 * Creates an API key for the tenant and returns it, in plaintext, this once:
 * trg_<key_id>_<secret>. Only its SHA-256 is stored.
 */
CREATE FUNCTION triggers.create_api_key(tenant text, name text DEFAULT 'default') RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_key_id text := triggers._random_token(9);
    v_token text;
BEGIN
    PERFORM triggers._check_text('tenant', tenant);
    PERFORM triggers._check_text('name', name);
    v_token := 'trg_' || v_key_id || '_' || triggers._random_token(32);
    INSERT INTO triggers.api_keys (key_id, tenant, name, key_hash)
    VALUES (v_key_id, create_api_key.tenant, create_api_key.name, sha256(convert_to(v_token, 'UTF8')));
    RETURN v_token;
END $$;

/* Revokes a key of the tenant by its key id (or the whole key). True if it was active. */
CREATE FUNCTION triggers.revoke_api_key(tenant text, api_key text) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_key_id text;
BEGIN
    PERFORM triggers._check_text('tenant', tenant);
    IF api_key IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'TG004', MESSAGE = 'api_key must not be NULL';
    END IF;
    v_key_id := coalesce(substring(api_key FROM '^trg_([A-Za-z0-9]+)_'), api_key);
    UPDATE triggers.api_keys k SET revoked_at = clock_timestamp()
     WHERE k.key_id = v_key_id AND k.tenant = revoke_api_key.tenant AND k.revoked_at IS NULL;
    RETURN FOUND;
END $$;

/* The tenant of a valid key; TG009 for a malformed, unknown or revoked one. */
CREATE FUNCTION triggers.authenticate(token text) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v triggers.api_keys;
BEGIN
    IF token IS NULL OR token !~ '^trg_[A-Za-z0-9]+_[A-Za-z0-9]+$' OR length(token) > 200 THEN
        RAISE EXCEPTION USING ERRCODE = 'TG009', MESSAGE = 'API key is malformed';
    END IF;
    SELECT * INTO v FROM triggers.api_keys k WHERE k.key_id = substring(token FROM '^trg_([A-Za-z0-9]+)_');
    IF NOT FOUND OR NOT triggers._bytes_equal(v.key_hash, sha256(convert_to(token, 'UTF8'))) THEN
        RAISE EXCEPTION USING ERRCODE = 'TG009', MESSAGE = 'API key is not valid';
    END IF;
    IF v.revoked_at IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'TG009', MESSAGE = 'API key is revoked';
    END IF;
    RETURN v.tenant;
END $$;

---------------------------------------------------------------------------------------
-- Descriptions (psql: \df+ triggers.*). Names are unique in the schema, so no
-- argument lists; a pg_test checks that no function goes without one.
---------------------------------------------------------------------------------------
COMMENT ON FUNCTION triggers.version IS 'Version of the triggers extension.';
COMMENT ON FUNCTION triggers.enqueue IS
    'Queues one event (payload: a JSON object) and returns its id; a repeated idempotency key returns the first event''s id and queues nothing.';
COMMENT ON FUNCTION triggers.enqueue_ex IS
    'enqueue, also saying whether the idempotency key was seen before (duplicate).';
COMMENT ON FUNCTION triggers.enqueue_batch IS
    'Queues an array of events [{payload, metadata?, idempotency_key?, stream?, debug?}], all or nothing; returns their ids in order.';
COMMENT ON FUNCTION triggers.enqueue_batch_ex IS
    'enqueue_batch, also saying for each event whether it repeated an idempotency key.';
COMMENT ON FUNCTION triggers.process_batch IS
    'The workflow: claims up to batch_size messages and for each validates, stores, counts and removes it, with retries, backoff and the dead-letter queue. One transaction.';
COMMENT ON FUNCTION triggers.inbox IS
    'A tenant''s events in keyset order (created_at, event_id), filtered; pass the last row''s cursor for the next page.';
COMMENT ON FUNCTION triggers.get_event IS 'One event of the tenant, or TG006 not found.';
COMMENT ON FUNCTION triggers.ack IS 'Marks a pending event delivered (idempotent); returns the event.';
COMMENT ON FUNCTION triggers.retry IS
    'Queues a failed event again (at most 3 manual retries); returns the new attempt number.';
COMMENT ON FUNCTION triggers.dead_letters IS 'The tenant''s messages in the dead-letter queue.';
COMMENT ON FUNCTION triggers.redrive IS
    'Moves up to lim of the tenant''s dead-lettered messages back to the queue; returns how many.';
COMMENT ON FUNCTION triggers.metrics IS
    'Exact counts by status, queue and DLQ depth, processing rate and latency percentiles, of one tenant or all.';
COMMENT ON FUNCTION triggers.purge IS
    'Deletes delivered and failed events (and their idempotency keys, archives, latency history) older than older_than; returns how many events.';
COMMENT ON FUNCTION triggers.create_api_key IS
    'Creates an API key for a tenant and returns it; only its hash is stored, so this is the only time it is shown.';
COMMENT ON FUNCTION triggers.revoke_api_key IS 'Revokes a tenant''s API key (the key, or its id); returns whether it was active.';
COMMENT ON FUNCTION triggers.authenticate IS 'The tenant of an API key, or TG009 for an unknown or revoked key.';
COMMENT ON FUNCTION triggers._check_text IS 'Internal: raises TG004 unless a text is 1 to max_len characters without control characters.';
COMMENT ON FUNCTION triggers._text_ok IS 'Internal: whether a text passes _check_text (NULL passes).';
COMMENT ON FUNCTION triggers._check_event IS 'Internal: raises the error that names what is wrong with an event.';
COMMENT ON FUNCTION triggers._event_ok IS 'Internal: whether an event passes _check_event, as one inlinable expression.';
COMMENT ON FUNCTION triggers._message IS 'Internal: the queue message of an event.';
COMMENT ON FUNCTION triggers._next_seq IS 'Internal: the next gapless position on a stream.';
COMMENT ON FUNCTION triggers._debug_delay IS 'Internal: how long a debug=queue_delay event waits.';
COMMENT ON FUNCTION triggers._wake IS 'Internal: NOTIFY triggers_events, at most once per notify_throttle_ms per session.';
COMMENT ON FUNCTION triggers._dead_letter IS 'Internal: moves a message to the dead-letter queue and records its event as failed.';
COMMENT ON FUNCTION triggers._malformed IS 'Internal: why a message cannot be processed at all, or NULL.';
COMMENT ON FUNCTION triggers._store IS 'Internal: stores messages as pending events; a failed event becomes pending again.';
COMMENT ON FUNCTION triggers._event IS 'Internal: one event of a tenant, optionally locked, or TG006.';
COMMENT ON FUNCTION triggers._latency_bucket IS 'Internal: the log-scale latency histogram bucket of a duration.';
COMMENT ON FUNCTION triggers._count_insert IS 'Internal: statement trigger appending metric deltas for inserted events.';
COMMENT ON FUNCTION triggers._count_update IS 'Internal: statement trigger appending metric deltas for status changes.';
COMMENT ON FUNCTION triggers._count_delete IS 'Internal: statement trigger appending metric deltas for deleted events.';
COMMENT ON FUNCTION triggers._fold_metrics IS 'Internal: folds metric deltas into the totals, one session at a time.';
COMMENT ON FUNCTION triggers._uuid_v7 IS 'Internal: a new UUIDv7 (time-ordered).';
COMMENT ON FUNCTION triggers._random_token IS 'Internal: len random characters from [0-9A-Za-z], from Postgres''s strong random source.';
COMMENT ON FUNCTION triggers._backoff_ms IS 'Internal: min(cap, base * 2^(attempt-1)) in milliseconds.';
COMMENT ON FUNCTION triggers._bytes_equal IS 'Internal: constant-time comparison of two byte strings.';
COMMENT ON FUNCTION triggers._cursor IS 'Internal: the opaque inbox cursor of (created_at, event_id).';
COMMENT ON FUNCTION triggers._cursor_created_at IS 'Internal: the created_at of an inbox cursor, or NULL if malformed.';
COMMENT ON FUNCTION triggers._cursor_event_id IS 'Internal: the event_id of an inbox cursor, or NULL if malformed.';

---------------------------------------------------------------------------------------
-- Grants: the API is for roles the database owner chooses; nothing for PUBLIC.
---------------------------------------------------------------------------------------
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA triggers FROM PUBLIC;
