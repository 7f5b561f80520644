-- triggers: the dead-letter queue (SPEC §4.3): list a tenant's dead letters and move
-- them back to the queue. process.sql's _dead_letter is what puts them there.

/* The tenant's dead letters, oldest first. */
CREATE FUNCTION triggers.dead_letters(tenant text DEFAULT 'default', lim int DEFAULT 50)
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

/* Moves up to lim of the tenant's dead letters back to the queue, with fresh attempts. */
CREATE FUNCTION triggers.redrive(tenant text DEFAULT 'default', lim int DEFAULT 100)
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
