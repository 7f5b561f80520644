-- triggers: consumers' side (SPEC §4): the inbox, one event, ack and retry. Events are
-- here once process_batch (process.sql) has stored them.

-- A row of the inbox: the event, the cursor that pages past it, and whether the page
-- stopped after it at its byte budget (more may follow: pass its cursor).
CREATE TYPE triggers.inbox_row AS (
    event_id uuid, status text, payload jsonb, metadata jsonb, stream text, seq bigint,
    created_at timestamptz, updated_at timestamptz, processed_at timestamptz,
    delivered_at timestamptz, retry_count int, error_message text, idempotency_key text,
    cursor text, more boolean);

/*
 * A tenant's events in keyset order (created_at, event_id), ascending unless
 * order = 'desc'. Pass the `cursor` of the last row of a page as after_cursor for the
 * next page. Filters: status set, created_at range [from_time, to_time), stream,
 * metadata/payload containment (@>), retry_count range. A page holds at most `lim`
 * events and about `max_bytes` of payload and metadata (counted uncompressed): it ends
 * with the event that reaches the budget (at least one event), whose `more` is true.
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

-- The event row of `event_id` for `tenant` (locked when for_update), or TG006.
CREATE FUNCTION triggers._event(event_id uuid, tenant text, for_update boolean) RETURNS triggers.events
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

/* One event of the tenant; TG006 when there is none (or it is not processed yet). */
CREATE FUNCTION triggers.get_event(event_id uuid, tenant text DEFAULT 'default')
RETURNS triggers.events LANGUAGE sql AS $$
    SELECT triggers._event(event_id, tenant, false)
$$;
COMMENT ON FUNCTION triggers.get_event IS 'One event of the tenant, or TG006 not found.';

/* Marks a pending event delivered. Idempotent; TG007 for a failed event. */
CREATE FUNCTION triggers.ack(event_id uuid, tenant text DEFAULT 'default')
RETURNS triggers.events LANGUAGE plpgsql AS $$
DECLARE
    v triggers.events := triggers._event(event_id, tenant, true);
    v_now timestamptz := triggers._now();
BEGIN
    IF v.status = 'failed' THEN
        RAISE EXCEPTION USING ERRCODE = 'TG007',
            MESSAGE = format('event %s is failed, not pending; retry it first', event_id);
    END IF;
    IF v.status = 'pending' THEN
        UPDATE triggers.events e SET status = 'delivered', delivered_at = v_now, updated_at = v_now
         WHERE e.event_id = v.event_id
        RETURNING * INTO v;
    END IF;
    RETURN v;
END $$;
COMMENT ON FUNCTION triggers.ack IS 'Marks a pending event delivered (idempotent); returns the event.';

/*
 * Re-queues a failed event (at most config.max_manual_retries times). TG007 when it is
 * not failed, TG008 when its manual retries are used up. Returns the new manual attempt number.
 */
CREATE FUNCTION triggers.retry(event_id uuid, tenant text DEFAULT 'default') RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    v triggers.events := triggers._event(retry.event_id, retry.tenant, true);
    v_now timestamptz := triggers._now();
    v_max int;
BEGIN
    IF v.status <> 'failed' THEN
        RAISE EXCEPTION USING ERRCODE = 'TG007',
            MESSAGE = format('event %s is %s, only failed events can be retried', v.event_id, v.status);
    END IF;
    SELECT c.max_manual_retries INTO v_max FROM triggers.config c;
    IF v.manual_retries >= v_max THEN
        RAISE EXCEPTION USING ERRCODE = 'TG008',
            MESSAGE = format('event %s has used all %s manual retries', v.event_id, v_max);
    END IF;
    UPDATE triggers.events e SET manual_retries = e.manual_retries + 1, retry_count = e.retry_count + 1,
                                 updated_at = v_now
     WHERE e.event_id = v.event_id;
    -- Its dead letter, if any, is superseded by the new attempt.
    DELETE FROM pgmq.q_triggers_events_dlq d
     WHERE d.message->>'event_id' = v.event_id::text AND d.message->>'tenant' = v.tenant;
    INSERT INTO pgmq.q_triggers_events (vt, message, headers)
    VALUES (v_now,
            triggers._message(v.event_id, v.tenant, v.payload, v.metadata, v.idempotency_key, v.stream,
                              v.seq, NULL, v.created_at),
            triggers._requeue_headers(v.tenant, v.stream, v.seq));
    PERFORM triggers._count(v.tenant, 'retried');
    PERFORM triggers._register_tenant(v.tenant);
    -- On a stream halted on this event, the event takes its place again at the head.
    IF v.stream IS NOT NULL THEN
        UPDATE triggers.stream_progress p SET halted_event = NULL, updated_at = v_now
         WHERE p.tenant = v.tenant AND p.stream = v.stream AND p.halted_event = v.event_id;
    END IF;
    PERFORM triggers._wake();
    RETURN v.manual_retries + 1;
END $$;
COMMENT ON FUNCTION triggers.retry IS
    'Queues a failed event again (at most config.max_manual_retries times); returns the new attempt number.';
