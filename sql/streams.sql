-- triggers: ordered streams (SPEC §4.4). Events on a (tenant, stream) are processed
-- strictly in seq order: at every instant, the seqs a stream has finished (stored, or
-- dead-lettered) are 1..k. process_batch (process.sql) claims runs of streams here.
--
-- How: a stream's messages carry {"tenant", "stream", "seq"} in the queue's headers,
-- indexed. A worker claims a stream by locking its stream_progress row (FOR UPDATE SKIP
-- LOCKED) for its whole batch, so no two workers ever hold one stream; it takes the
-- contiguous run of visible messages after done_seq, in seq order; it stores them in
-- order, cuts the run at the first one that cannot finish now (it backs off, the rest
-- waits), and moves done_seq. Streams are visited round-robin from where this session
-- last stopped, so a stream that waits (a backing-off head) or is held by another
-- worker costs one index probe and never holds the others back.

/*
 * Claims up to `cap` messages on streams: for each stream visited, its run — messages
 * done_seq+1, done_seq+2, ... while visible and contiguous — in seq order. Locks each
 * stream's progress row and each message returned. (A retried or redriven event that
 * its stream has already passed is queued without stream headers, as an event on no
 * stream: nothing waits for it and it waits for nothing.) Messages held by a claim that
 * died ("alone") come as runs of one.
 */
CREATE FUNCTION triggers._claim_streams(v_now timestamptz, cap int)
RETURNS TABLE(id bigint, rc int, m jsonb, locker xid, tenant text, stream text, seq bigint, done_seq bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_start_t text := coalesce(current_setting('triggers.stream_cursor_tenant', true), '');
    v_start_s text := coalesce(current_setting('triggers.stream_cursor_stream', true), '');
    v_t text := v_start_t;
    v_s text := v_start_s;
    v_nt text;
    v_ns text;
    v_wrapped boolean := false;
    v_visits int := 0;
    v_n int := 0;
    v_done bigint;
    v_got int;
BEGIN
    LOOP
        EXIT WHEN v_n >= cap OR v_visits >= 1000;
        -- The next stream with queued messages after the cursor: one index probe.
        SELECT q.headers->>'tenant', q.headers->>'stream' INTO v_nt, v_ns
          FROM pgmq.q_triggers_events q
         WHERE q.headers ? 'seq' AND (q.headers->>'tenant', q.headers->>'stream') > (v_t, v_s)
         ORDER BY q.headers->>'tenant', q.headers->>'stream', (q.headers->>'seq')::bigint
         LIMIT 1;
        IF NOT FOUND THEN
            EXIT WHEN v_wrapped OR v_start_t = '';
            v_wrapped := true;
            v_t := '';
            v_s := '';
            CONTINUE;
        END IF;
        -- Around once: the second pass ends after the stream the first began after.
        EXIT WHEN v_wrapped AND (v_nt, v_ns) > (v_start_t, v_start_s);
        v_t := v_nt;
        v_s := v_ns;
        v_visits := v_visits + 1;
        SELECT p.done_seq INTO v_done
          FROM triggers.stream_progress p
         WHERE p.tenant = v_t AND p.stream = v_s AND p.halted_event IS NULL
           FOR UPDATE SKIP LOCKED;
        IF NOT FOUND THEN
            -- Halted or held by another worker: skip it, without waiting. Missing (a
            -- stream queued before progress rows existed): create it, and hold it.
            CONTINUE WHEN EXISTS (SELECT 1 FROM triggers.stream_progress p
                                   WHERE p.tenant = v_t AND p.stream = v_s);
            INSERT INTO triggers.stream_progress AS p (tenant, stream) VALUES (v_t, v_s)
            ON CONFLICT DO NOTHING;
            CONTINUE WHEN NOT FOUND;
            v_done := 0;
        END IF;
        -- The run, in one statement: the messages after done_seq in seq order, kept
        -- while they are visible and contiguous; one held by a claim that died only
        -- first, and then alone.
        RETURN QUERY
        SELECT x.msg_id, x.rc, x.message, x.locker, v_t, v_s, x.seq, v_done
          FROM (SELECT c.*, bool_and(c.vt <= v_now AND c.seq = c.first_seq + c.rn - 1
                                     AND (c.rn = 1 OR NOT c.first_alone))
                            OVER (ORDER BY c.rn) AS keep
                  FROM (SELECT q.msg_id, q.read_ct + 1 AS rc, q.message, q.locker, q.vt,
                               (q.headers->>'seq')::bigint AS seq,
                               row_number() OVER (ORDER BY (q.headers->>'seq')::bigint) AS rn,
                               first_value((q.headers->>'seq')::bigint) OVER (ORDER BY (q.headers->>'seq')::bigint) AS first_seq,
                               first_value(q.headers ? 'alone') OVER (ORDER BY (q.headers->>'seq')::bigint) AS first_alone
                          FROM (SELECT q.*, q.xmax AS locker FROM pgmq.q_triggers_events q
                                 WHERE q.headers ? 'seq' AND q.headers->>'tenant' = v_t
                                   AND q.headers->>'stream' = v_s AND (q.headers->>'seq')::bigint > v_done
                                 ORDER BY (q.headers->>'seq')::bigint
                                 LIMIT cap - v_n
                                   FOR UPDATE SKIP LOCKED) q) c) x
         WHERE x.keep
         ORDER BY x.seq;
        GET DIAGNOSTICS v_got = ROW_COUNT;
        v_n := v_n + v_got;
    END LOOP;
    -- Next time, start after the last stream visited: round-robin across streams.
    PERFORM set_config('triggers.stream_cursor_tenant', v_t, false),
            set_config('triggers.stream_cursor_stream', v_s, false);
END $$;
COMMENT ON FUNCTION triggers._claim_streams IS
    'Internal: claims runs of stream messages in seq order, one worker per stream, round-robin across streams.';

-- _claim_streams as process_batch takes it: one array per column, in run order, each
-- stream named by its key tenant || E'\x1f' || stream.
CREATE FUNCTION triggers._claim_runs(v_now timestamptz, cap int,
    OUT ids bigint[], OUT msgs jsonb[], OUT rcs int[], OUT lockers xid[], OUT keys text[],
    OUT seqs bigint[], OUT dones bigint[])
LANGUAGE sql AS $$
    SELECT coalesce(array_agg(c.id), '{}'), coalesce(array_agg(c.m), '{}'), coalesce(array_agg(c.rc), '{}'),
           coalesce(array_agg(c.locker), '{}'), coalesce(array_agg(c.tenant || E'\x1f' || c.stream), '{}'),
           coalesce(array_agg(c.seq), '{}'), coalesce(array_agg(c.done_seq), '{}')
      FROM triggers._claim_streams(v_now, cap) c
$$;
COMMENT ON FUNCTION triggers._claim_runs IS 'Internal: _claim_streams as arrays, in run order.';

-- The queue headers of an event queued again (retry, redrive): its stream's, so that it
-- takes its place on the stream again, unless the stream has passed it (policy
-- 'continue'): then it goes as an event on no stream, in its tenant's lane.
CREATE FUNCTION triggers._requeue_headers(tenant text, stream text, seq bigint) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN seq > coalesce((SELECT p.done_seq FROM triggers.stream_progress p
                                      WHERE p.tenant = _requeue_headers.tenant
                                        AND p.stream = _requeue_headers.stream), 0)
                THEN triggers._headers(tenant, stream, seq) ELSE triggers._headers(tenant, NULL, NULL) END
$$;
COMMENT ON FUNCTION triggers._requeue_headers IS
    'Internal: the queue headers of an event queued again: its stream''s, unless the stream has passed it.';

-- The head of a stream: its first queued message after done_seq (none: nothing queued).
CREATE FUNCTION triggers._stream_head(tenant text, stream text, done_seq bigint,
    OUT msg_id bigint, OUT vt timestamptz, OUT event_id uuid, OUT last_error text)
LANGUAGE sql STABLE AS $$
    SELECT q.msg_id, q.vt, (q.message->>'event_id')::uuid, q.message->>'last_error' FROM pgmq.q_triggers_events q
     WHERE q.headers ? 'seq' AND q.headers->>'tenant' = _stream_head.tenant
       AND q.headers->>'stream' = _stream_head.stream AND (q.headers->>'seq')::bigint > _stream_head.done_seq
     ORDER BY (q.headers->>'seq')::bigint
     LIMIT 1
$$;
COMMENT ON FUNCTION triggers._stream_head IS 'Internal: a stream''s first queued message after done_seq.';

-- The rows of streams() and stream(): a tenant's streams by name after `after_cursor`,
-- or just the one named `one_stream`.
CREATE FUNCTION triggers._stream_rows(tenant text, one_stream text, lim int, after_cursor text)
RETURNS TABLE(stream text, last_seq bigint, done_seq bigint, state text, blocking_event uuid,
    blocking_error text, next_attempt_at timestamptz, cursor text)
LANGUAGE sql STABLE AS $$
    SELECT s.stream, s.last_seq, coalesce(p.done_seq, 0),
           CASE WHEN p.halted_event IS NOT NULL THEN 'halted'
                WHEN h.msg_id IS NULL THEN 'idle'
                WHEN h.vt > triggers._now() THEN 'waiting'
                ELSE 'active' END,
           coalesce(p.halted_event, CASE WHEN h.vt > triggers._now() THEN h.event_id END),
           CASE WHEN p.halted_event IS NOT NULL
                THEN (SELECT e.error_message FROM triggers.events e WHERE e.event_id = p.halted_event)
                WHEN h.vt > triggers._now() THEN h.last_error END,
           CASE WHEN p.halted_event IS NULL AND h.vt > triggers._now() THEN h.vt END,
           s.stream
      FROM triggers.streams s
      LEFT JOIN triggers.stream_progress p ON p.tenant = s.tenant AND p.stream = s.stream
      LEFT JOIN LATERAL triggers._stream_head(s.tenant, s.stream, coalesce(p.done_seq, 0)) h ON true
     WHERE s.tenant = _stream_rows.tenant
       AND (one_stream IS NULL OR s.stream = one_stream)
       AND (after_cursor IS NULL OR s.stream > after_cursor)
     ORDER BY s.stream
     LIMIT lim
$$;
COMMENT ON FUNCTION triggers._stream_rows IS 'Internal: the rows of streams() and stream().';

/*
 * A tenant's streams by name, after `after_cursor` (the `cursor` of the last row of a
 * page): last_seq (handed out), done_seq (finished up to), state — idle (nothing
 * queued), active (queued and ready, or being processed), waiting (its head backs off
 * after a failure), halted (on a dead-lettered head, policy 'halt') — and the event
 * that blocks it when waiting or halted, with its last error and, when waiting, when
 * its next attempt is due.
 */
CREATE FUNCTION triggers.streams(tenant text, lim int DEFAULT 50, after_cursor text DEFAULT NULL)
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

/* One stream of the tenant, as streams() shows it; no row when there is none. */
CREATE FUNCTION triggers.stream(tenant text, name text)
RETURNS TABLE(stream text, last_seq bigint, done_seq bigint, state text, blocking_event uuid,
    blocking_error text, next_attempt_at timestamptz, cursor text)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    PERFORM triggers._check_tenant(stream.tenant);
    PERFORM triggers._check_text('stream', stream.name);
    RETURN QUERY SELECT * FROM triggers._stream_rows(stream.tenant, stream.name, 1, NULL);
END $$;
COMMENT ON FUNCTION triggers.stream IS 'One stream of the tenant, as streams() shows it; no row when there is none.';

/*
 * Skips the dead-lettered head a stream is halted on (policy 'halt'), so the stream
 * goes on with the next event; returns the new done_seq. TG006 for an unknown stream,
 * TG007 for one that is not halted. (Retrying or redriving the head resumes it too,
 * with the head processed first.)
 */
CREATE FUNCTION triggers.resume_stream(tenant text, stream text) RETURNS bigint
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
