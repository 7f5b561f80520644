-- triggers: the workflow (SPEC §4.1). process_batch claims queued messages and, for
-- each, validates -> stores -> counts (metrics.sql's triggers) -> removes it; failures
-- retry with exponential backoff, then go to the dead-letter queue (dlq.sql reads it).
-- Where retry backoff is decided: process_batch, with _backoff_ms (triggers-core).
-- (Long: process_batch is one transaction whose steps are easiest to follow in one place.)

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
COMMENT ON FUNCTION triggers._malformed IS 'Internal: why a message cannot be processed at all, or NULL.';

-- Why processing a well-formed message fails this attempt (a retryable failure), or NULL.
CREATE FUNCTION triggers._processing_error(message jsonb) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN message->>'debug' = 'processing_error' THEN 'processing failed (debug flag processing_error)' END
$$;
COMMENT ON FUNCTION triggers._processing_error IS 'Internal: why processing a message fails this attempt, or NULL.';

-- Where the DLQ move is: moves one message to the dead-letter queue and records the
-- event as failed.
CREATE FUNCTION triggers._dead_letter(msg_id bigint, message jsonb, read_ct int, error text)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_now timestamptz := triggers._now();
BEGIN
    INSERT INTO pgmq.q_triggers_events_dlq (vt, message, read_ct)
    VALUES (v_now, message || jsonb_build_object('error', error, 'failed_at', v_now, 'attempts', read_ct), 0);
    DELETE FROM pgmq.q_triggers_events q WHERE q.msg_id = _dead_letter.msg_id;
    PERFORM triggers._count(message->>'tenant', 'dead_lettered');
    -- An event row is written only for a message well-formed enough to describe one.
    IF triggers._malformed(message - 'debug') IS NULL THEN
        INSERT INTO triggers.events AS ev (event_id, tenant, stream, seq, payload, metadata, status,
                                          created_at, updated_at, retry_count, error_message, idempotency_key,
                                          position)
        VALUES ((message->>'event_id')::uuid, message->>'tenant', message->>'stream', (message->>'seq')::bigint,
                message->'payload', nullif(message->'metadata', 'null'), 'failed',
                coalesce((message->>'created_at')::timestamptz, v_now), v_now,
                greatest(read_ct - 1, 0), error,
                message->>'idempotency_key', NULL)
        ON CONFLICT ON CONSTRAINT events_pkey DO UPDATE
           SET status = 'failed', updated_at = v_now, error_message = EXCLUDED.error_message,
               retry_count = ev.retry_count + greatest(read_ct - 1, 0)
         WHERE ev.status <> 'delivered';
    END IF;
END $$;
COMMENT ON FUNCTION triggers._dead_letter IS 'Internal: moves a message to the dead-letter queue and records its event as failed.';

-- The order messages are stored in, k = 1, 2, ...: a stream's events in seq order.
CREATE FUNCTION triggers._storing_order(messages jsonb[], read_cts int[], OUT m jsonb, OUT rc int, OUT k bigint)
RETURNS SETOF record LANGUAGE sql IMMUTABLE AS $$
    SELECT t.m, t.rc, row_number() OVER (ORDER BY t.m->>'stream', (t.m->>'seq')::bigint, t.m->>'event_id')
      FROM unnest(messages, read_cts) AS t(m, rc)
$$;
COMMENT ON FUNCTION triggers._storing_order IS 'Internal: the order messages are stored in (a stream''s in seq order).';

-- Stores the given messages as pending events, with one insert. A stored row that had
-- failed becomes pending again (a retry or a redrive succeeded); one already pending or
-- delivered is left alone, so a message processed twice changes nothing.
CREATE FUNCTION triggers._store(messages jsonb[], read_cts int[])
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_now timestamptz := triggers._now();
    v_inserted bigint;
    v_positions bigint[];
BEGIN
    -- Delivery positions (live.sql), one per message, increasing in the order the
    -- messages are stored: a stream's events in seq order. Taken under the lock every
    -- writer of events holds, as the live stream's horizon requires.
    LOCK TABLE triggers.events IN ROW EXCLUSIVE MODE;
    SELECT array_agg(nextval('triggers.event_positions')) INTO v_positions
      FROM generate_series(1, cardinality(messages));
    INSERT INTO triggers.events AS ev (event_id, tenant, stream, seq, payload, metadata, status, created_at,
                                      updated_at, processed_at, retry_count, idempotency_key, position)
    SELECT (m->>'event_id')::uuid, m->>'tenant', m->>'stream', (m->>'seq')::bigint, m->'payload',
           nullif(m->'metadata', 'null'), 'pending',
           coalesce((m->>'created_at')::timestamptz, v_now), v_now, v_now,
           greatest(rc - 1, 0), m->>'idempotency_key', v_positions[k]
      FROM triggers._storing_order(messages, read_cts) AS t(m, rc, k)
     -- Events of a stream in seq order (stored in order, not only committed together).
     ORDER BY k
    ON CONFLICT ON CONSTRAINT events_pkey DO NOTHING;
    GET DIAGNOSTICS v_inserted = ROW_COUNT;
    -- Rows that existed already: only a failed one changes. A separate statement, run
    -- only when needed, because an UPDATE (or INSERT ... DO UPDATE) fires the metrics
    -- trigger for updates even when it changes nothing.
    IF v_inserted < cardinality(messages) THEN
        UPDATE triggers.events ev
           SET status = 'pending', processed_at = v_now, updated_at = v_now, error_message = NULL,
               retry_count = ev.retry_count + greatest(t.rc - 1, 0), position = v_positions[t.k]
          FROM triggers._storing_order(messages, read_cts) AS t(m, rc, k)
         WHERE ev.event_id = (t.m->>'event_id')::uuid AND ev.status = 'failed';
    END IF;
    -- Webhooks: the outbox rows of what was just stored (webhooks.sql).
    PERFORM triggers._write_deliveries(v_positions, v_now);
END $$;
COMMENT ON FUNCTION triggers._store IS 'Internal: stores messages as pending events; a failed event becomes pending again.';

-- A retryable failure: the message waits until `vt`, its attempt counted. On a stream
-- it keeps its place (nothing behind it may pass); on no stream it goes to the end of
-- its tenant's lane (a new msg_id), so that it never holds the lane's low-water mark
-- back while it waits (claim.sql).
CREATE FUNCTION triggers._back_off(msg_id bigint, vt timestamptz, read_ct int, error text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    WITH gone AS (
        DELETE FROM pgmq.q_triggers_events q
         WHERE q.msg_id = _back_off.msg_id AND NOT coalesce(q.headers ? 'seq', false)
        RETURNING q.enqueued_at, q.message, q.headers
    )
    INSERT INTO pgmq.q_triggers_events (enqueued_at, vt, read_ct, last_read_at, message, headers)
    SELECT g.enqueued_at, _back_off.vt, _back_off.read_ct, triggers._now(),
           g.message || jsonb_build_object('last_error', error), g.headers
      FROM gone g;
    IF NOT FOUND THEN
        UPDATE pgmq.q_triggers_events q
           SET vt = _back_off.vt, read_ct = _back_off.read_ct, last_read_at = triggers._now(),
               message = q.message || jsonb_build_object('last_error', error)
         WHERE q.msg_id = _back_off.msg_id;
    END IF;
END $$;
COMMENT ON FUNCTION triggers._back_off IS
    'Internal: a retryable failure waits until vt; on no stream it is queued again at the end of its lane.';

-- Whether this session's last triggers_stored notification is 50 ms old (real time);
-- if so, records now as its time (a session setting, rolled back with the transaction).
CREATE FUNCTION triggers._stored_notify_due() RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_now float8 := extract(epoch FROM clock_timestamp()) * 1000;
    v_last float8 := coalesce(nullif(current_setting('triggers.stored_notified_ms', true), '')::float8, 0);
BEGIN
    IF v_now - v_last >= 50 OR v_now < v_last THEN
        PERFORM set_config('triggers.stored_notified_ms', v_now::text, false);
        RETURN true;
    END IF;
    RETURN false;
END $$;
COMMENT ON FUNCTION triggers._stored_notify_due IS 'Internal: whether process_batch may NOTIFY triggers_stored again (50 ms per session).';

/*
 * Whether the transaction that last locked a queue row (the row's raw xmax) ended
 * without committing: a claim that never finished because its backend died, its
 * statement was cancelled (statement_timeout) or it was rolled back. A claim that
 * commits deletes or rewrites every message it processed, so a live message whose
 * xmax is set was either left alone by a committed claim (not counted) or held by one
 * that aborted (counted). Costs nothing when xmax is 0, the case of every message that
 * no claim has touched since it was queued or re-timed.
 */
CREATE FUNCTION triggers._claim_died(locker xid) RETURNS boolean
LANGUAGE sql VOLATILE AS $$
    -- pg_xact_status takes a 64-bit xid8: widen the 32-bit xid by its distance (mod
    -- 2^32, signed) from a 64-bit xid of now (this transaction's, else the next one's).
    SELECT CASE WHEN locker = '0'::xid THEN false
                ELSE coalesce(pg_xact_status((r - CASE WHEN d >= 2147483648 THEN d - 4294967296
                                                       WHEN d < -2147483648 THEN d + 4294967296
                                                       ELSE d END)::text::xid8) = 'aborted', false)
           END
      FROM (SELECT r, (r & 4294967295) - locker::text::bigint AS d
              FROM (SELECT coalesce(pg_current_xact_id_if_assigned(),
                                    pg_snapshot_xmax(pg_current_snapshot()))::text::bigint AS r) n) s
$$;
COMMENT ON FUNCTION triggers._claim_died IS
    'Internal: whether the last claim of a queue row (its xmax) aborted: backend died, statement cancelled, rolled back.';

/*
 * The workflow: claims up to batch_size visible messages, and for each: validate ->
 * store -> metrics -> remove.
 * One transaction; a failing message never aborts the others: the batch is stored in
 * one subtransaction and, if that fails, each message in its own. A retryable failure
 * backs off (min(cap, base * 2^(attempt-1))) through the message's visibility time;
 * past max_retries, and at once for malformed messages or debug=dlq_routing, the message
 * moves to triggers_events_dlq and the event is recorded as failed.
 * Events on a stream are claimed as runs in seq order (streams.sql) and stored in that
 * order; a run stops at the first event that cannot finish now, so nothing overtakes it.
 * Calls alternate between taking streams first and events on no stream first, each
 * side filling what the other leaves.
 * A claim that never finished (its backend died, or statement_timeout cancelled it,
 * which no exception handler sees) is counted by the next claim of its messages: each
 * gets one attempt more, is hidden for visibility_timeout seconds, and is from then on
 * claimed alone, one per call, so the message that kills its batch fails by itself and
 * reaches the dead-letter queue after max_retries while the others are stored.
 * NULL arguments take their values from triggers.config.
 */
CREATE FUNCTION triggers.process_batch(batch_size int DEFAULT NULL, visibility_timeout int DEFAULT NULL)
RETURNS TABLE(read int, stored int, retried int, dead_lettered int)
-- No JIT on the hot path (nor in what it calls): with a deep backlog a claim's estimate
-- passes jit_above_cost and compiling would cost 20-100 ms a call, running it < 1 ms.
LANGUAGE plpgsql SET jit = off AS $$
DECLARE
    cfg triggers.config;
    v_now timestamptz := triggers._now();
    v_alone record;
    v_streams_first boolean;
    -- Every claimed message, in claim order; the stream ones also in s_* (run order).
    v_ids bigint[] := '{}';
    v_msgs jsonb[] := '{}';
    v_read_cts int[] := '{}';
    v_died boolean[] := '{}';
    s_ids bigint[] := '{}';
    s_msgs jsonb[] := '{}';
    s_rcs int[] := '{}';
    s_lockers xid[] := '{}';
    s_keys text[] := '{}';
    s_seqs bigint[] := '{}';
    s_dones bigint[] := '{}';
    -- What to store, with each one's stream key, seq and the stream's done_seq (NULL
    -- off streams), so the per-message fallback can keep a stream's order.
    v_ok_ids bigint[] := '{}';
    v_ok_msgs jsonb[] := '{}';
    v_ok_rcs int[] := '{}';
    v_ok_keys text[] := '{}';
    v_ok_seqs bigint[] := '{}';
    v_ok_dones bigint[] := '{}';
    v_broken text[] := '{}';
    v_broken_seqs bigint[] := '{}';
    s_plans text[] := '{}';
    s_whys text[] := '{}';
    v_done_ids bigint[] := '{}';
    v_fail_ids bigint[] := '{}';
    v_fail_errors text[] := '{}';
    v_dlq_ids bigint[] := '{}';
    v_dlq_whys text[] := '{}';
    v_dead_ids bigint[] := '{}';
    v_cut boolean;
    v_plain boolean := false;
    v_why text;
    v_key text;
    v_done bigint;
    v_halted uuid;
    v_stop boolean;
    p_keys text[] := '{}';
    p_dones bigint[] := '{}';
    p_halted uuid[] := '{}';
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

    -- First, a message on no stream that was held by a claim that died, if one is
    -- visible: it is claimed alone, so if it kills this claim too, no other message is
    -- charged an attempt. The partial index makes this free when there is none.
    SELECT q.msg_id AS id, q.read_ct + 1 AS rc, q.message AS m, q.xmax AS locker INTO v_alone
      FROM pgmq.q_triggers_events q
     WHERE q.headers ? 'alone' AND NOT q.headers ? 'seq' AND q.vt <= v_now
     ORDER BY q.msg_id
     LIMIT 1
       FOR UPDATE SKIP LOCKED;
    IF FOUND THEN
        v_ids := ARRAY[v_alone.id];
        v_msgs := ARRAY[v_alone.m];
        v_read_cts := ARRAY[v_alone.rc];
        v_died := ARRAY[v_alone.locker <> '0'::xid AND triggers._claim_died(v_alone.locker)];
        IF triggers._malformed(v_alone.m) IS NOT NULL THEN
            v_dlq_ids := v_ids; v_dlq_whys := ARRAY[triggers._malformed(v_alone.m)];
        ELSIF triggers._processing_error(v_alone.m) IS NOT NULL THEN
            v_fail_ids := v_ids; v_fail_errors := ARRAY[triggers._processing_error(v_alone.m)];
        ELSE
            v_ok_ids := v_ids; v_ok_msgs := v_msgs; v_ok_rcs := v_read_cts;
            v_ok_keys := ARRAY[NULL::text]; v_ok_seqs := ARRAY[NULL::bigint]; v_ok_dones := ARRAY[NULL::bigint];
        END IF;
    ELSE
        v_streams_first := coalesce(current_setting('triggers.claim_turn', true), '') <> 'plain';
        PERFORM set_config('triggers.claim_turn', CASE WHEN v_streams_first THEN 'plain' ELSE 'streams' END, false);
        IF v_streams_first THEN
            SELECT * INTO s_ids, s_msgs, s_rcs, s_lockers, s_keys, s_seqs, s_dones
              FROM triggers._claim_runs(v_now, batch_size);
        END IF;
        IF cardinality(s_ids) < batch_size THEN
            -- Claim and validate, as one static statement: malformed or dlq_routing -> DLQ
            -- now; processing_error -> a retryable failure; the rest -> store. Claimed
            -- messages are row-locked until this transaction ends (other workers skip
            -- them), which is what pgmq.read's vt update buys, without writing a new
            -- version of every message: a committed batch deletes or re-times each
            -- message it claimed; an aborted one leaves them as they were, to be counted
            -- by the next claim.
            WITH claimed AS (
                SELECT c.id, c.rc, c.m, c.locker FROM triggers._claim_plain(v_now, batch_size - cardinality(s_ids)) c
            ), x AS MATERIALIZED (
                -- Materialized: inlined, _malformed would run once per FILTER below.
                SELECT c.id, c.m, c.rc, triggers._malformed(c.m) AS why,
                       triggers._processing_error(c.m) AS fail,
                       CASE WHEN c.locker = '0'::xid THEN false ELSE triggers._claim_died(c.locker) END AS died
                  FROM claimed c
            )
            -- One Aggregate node feeds every array the same rows in the same order, so
            -- the arrays line up without sorting each of them.
            SELECT coalesce(array_agg(x.id), '{}'), coalesce(array_agg(x.m), '{}'),
                   coalesce(array_agg(x.rc), '{}'), coalesce(array_agg(x.died), '{}'),
                   coalesce(array_agg(x.id) FILTER (WHERE x.why IS NULL AND x.fail IS NULL), '{}'),
                   coalesce(array_agg(x.m) FILTER (WHERE x.why IS NULL AND x.fail IS NULL), '{}'),
                   coalesce(array_agg(x.rc) FILTER (WHERE x.why IS NULL AND x.fail IS NULL), '{}'),
                   coalesce(array_agg(x.id) FILTER (WHERE x.why IS NULL AND x.fail IS NOT NULL), '{}'),
                   coalesce(array_agg(x.fail) FILTER (WHERE x.why IS NULL AND x.fail IS NOT NULL), '{}'),
                   coalesce(array_agg(x.id) FILTER (WHERE x.why IS NOT NULL), '{}'),
                   coalesce(array_agg(x.why) FILTER (WHERE x.why IS NOT NULL), '{}')
              INTO v_ids, v_msgs, v_read_cts, v_died, v_ok_ids, v_ok_msgs, v_ok_rcs,
                   v_fail_ids, v_fail_errors, v_dlq_ids, v_dlq_whys
              FROM x;
            v_ok_keys := array_fill(NULL::text, ARRAY[cardinality(v_ok_ids)]);
            v_ok_seqs := array_fill(NULL::bigint, ARRAY[cardinality(v_ok_ids)]);
            v_ok_dones := v_ok_seqs;
        END IF;
        IF NOT v_streams_first AND cardinality(v_ids) < batch_size THEN
            SELECT * INTO s_ids, s_msgs, s_rcs, s_lockers, s_keys, s_seqs, s_dones
              FROM triggers._claim_runs(v_now, batch_size - cardinality(v_ids));
        END IF;
        -- The stream messages join the others, in run order.
        IF cardinality(s_ids) > 0 THEN
            v_ids := v_ids || s_ids;
            v_msgs := v_msgs || s_msgs;
            v_read_cts := v_read_cts || s_rcs;
            v_died := v_died || ARRAY(SELECT CASE WHEN u.l = '0'::xid THEN false ELSE triggers._claim_died(u.l) END
                                        FROM unnest(s_lockers) WITH ORDINALITY AS u(l, o) ORDER BY u.o);
        END IF;
    END IF;
    v_n := cardinality(v_ids);
    IF v_n = 0 THEN
        PERFORM triggers._fold_metrics();
        RETURN NEXT;
        RETURN;
    END IF;

    IF true = ANY(v_died) THEN
        -- The last claim of these messages died with its transaction, so nothing of that
        -- attempt was written: count it now, in this transaction, which commits before
        -- any of them is tried again, and mark them to be claimed alone from now on.
        -- Messages claimed here whose last claim did not die are left as they are.
        FOR i IN 1..v_n LOOP
            CONTINUE WHEN NOT v_died[i];
            read := read + 1;
            IF v_read_cts[i] > cfg.max_retries THEN
                PERFORM triggers._dead_letter(v_ids[i], v_msgs[i], v_read_cts[i],
                    format('processing did not finish in %s attempts (the backend died or the statement was cancelled, e.g. by statement_timeout)',
                           v_read_cts[i]));
                dead_lettered := dead_lettered + 1;
                v_dead_ids := v_dead_ids || v_ids[i];
            ELSE
                UPDATE pgmq.q_triggers_events q
                   SET vt = v_now + make_interval(secs => visibility_timeout), read_ct = v_read_cts[i],
                       last_read_at = v_now, headers = coalesce(q.headers, '{}') || '{"alone": true}',
                       message = q.message || jsonb_build_object('last_error',
                           'processing did not finish (the backend died or the statement was cancelled)')
                 WHERE q.msg_id = v_ids[i];
                retried := retried + 1;
            END IF;
        END LOOP;
        -- Stream messages only counted here: their streams stay where they were, except
        -- that one whose head was dead-lettered moves past it, or halts on it.
        v_ok_ids := '{}'; v_done_ids := '{}';
    ELSE
        read := v_n;
        -- Sort the stream messages: a run stops (the rest of it is left as it is) after
        -- a message that fails now, and after a dead letter on a stream that halts.
        -- Their failures and dead letters wait until the store below has shown that
        -- nothing before them on their stream failed.
        -- As a rule none fails, and they all go to the store as they are.
        v_plain := NOT EXISTS (SELECT 1 FROM unnest(s_msgs) AS u(m)
                                WHERE triggers._malformed(u.m) IS NOT NULL OR triggers._processing_error(u.m) IS NOT NULL);
        IF v_plain THEN
            s_plans := array_fill('store'::text, ARRAY[cardinality(s_ids)]);
            v_ok_ids := v_ok_ids || s_ids;
            v_ok_msgs := v_ok_msgs || s_msgs;
            v_ok_rcs := v_ok_rcs || s_rcs;
            v_ok_keys := v_ok_keys || s_keys;
            v_ok_seqs := v_ok_seqs || s_seqs;
            v_ok_dones := v_ok_dones || s_dones;
        END IF;
        v_cut := false;
        FOR i IN 1..CASE WHEN v_plain THEN 0 ELSE cardinality(s_ids) END LOOP
            IF i = 1 OR s_keys[i] <> s_keys[i - 1] THEN
                v_cut := false;
            END IF;
            v_why := NULL;
            IF v_cut AND s_seqs[i] > s_dones[i] THEN
                s_plans := s_plans || 'leave'::text;
            ELSE
                v_why := triggers._malformed(s_msgs[i]);
                IF v_why IS NOT NULL THEN
                    s_plans := s_plans || 'dlq'::text;
                ELSE
                    v_why := triggers._processing_error(s_msgs[i]);
                    s_plans := s_plans || CASE WHEN v_why IS NOT NULL THEN 'fail' ELSE 'store' END;
                END IF;
            END IF;
            s_whys := s_whys || v_why;
            IF s_plans[i] = 'dlq' THEN
                v_cut := v_cut OR (cfg.stream_failure_policy = 'halt' AND s_seqs[i] > s_dones[i]);
            ELSIF s_plans[i] = 'fail' THEN
                v_cut := v_cut OR s_seqs[i] > s_dones[i];
            ELSIF s_plans[i] = 'store' THEN
                v_ok_ids := v_ok_ids || s_ids[i];
                v_ok_msgs := v_ok_msgs || s_msgs[i];
                v_ok_rcs := v_ok_rcs || s_rcs[i];
                v_ok_keys := v_ok_keys || s_keys[i];
                v_ok_seqs := v_ok_seqs || s_seqs[i];
                v_ok_dones := v_ok_dones || s_dones[i];
            END IF;
        END LOOP;

        FOR i IN 1..cardinality(v_dlq_ids) LOOP
            k := array_position(v_ids, v_dlq_ids[i]);
            PERFORM triggers._dead_letter(v_ids[k], v_msgs[k], v_read_cts[k], v_dlq_whys[i]);
            dead_lettered := dead_lettered + 1;
            v_dead_ids := v_dead_ids || v_ids[k];
        END LOOP;

        -- Store: the whole batch in one subtransaction; if anything in it fails, each
        -- message alone, so only the failing ones fail, and on a stream, nothing after
        -- a failure is stored (it waits for the next batch, behind the failure).
        IF cardinality(v_ok_ids) > 0 THEN
            BEGIN
                PERFORM triggers._store(v_ok_msgs, v_ok_rcs);
                v_done_ids := v_ok_ids;
            EXCEPTION WHEN OTHERS THEN
                FOR i IN 1..cardinality(v_ok_ids) LOOP
                    CONTINUE WHEN v_ok_keys[i] = ANY(v_broken) AND v_ok_seqs[i] > v_ok_dones[i];
                    BEGIN
                        PERFORM triggers._store(ARRAY[v_ok_msgs[i]], ARRAY[v_ok_rcs[i]]);
                        v_done_ids := v_done_ids || v_ok_ids[i];
                    EXCEPTION WHEN OTHERS THEN
                        v_fail_ids := v_fail_ids || v_ok_ids[i];
                        v_fail_errors := v_fail_errors || (SQLSTATE || ': ' || SQLERRM);
                        IF v_ok_seqs[i] > v_ok_dones[i] THEN
                            v_broken := v_broken || v_ok_keys[i];
                            v_broken_seqs := v_broken_seqs || v_ok_seqs[i];
                        END IF;
                    END;
                END LOOP;
            END;
            -- Remove what was stored. Deliberately here, in the top-level transaction that
            -- holds the row locks: a delete from inside a subtransaction would leave a
            -- MultiXact as the rows' xmax, which index scans can never mark as surely
            -- dead, so every later claim would walk past all of them until vacuum.
            DELETE FROM pgmq.q_triggers_events q WHERE q.msg_id = ANY(v_done_ids);
            stored := cardinality(v_done_ids);
        END IF;

        -- The stream messages' own outcomes, now that the store has run: a message
        -- behind a failed store on its stream is left as it was (it waits behind it);
        -- the others' dead letters and failures go ahead.
        FOR i IN 1..CASE WHEN v_plain AND cardinality(v_broken) = 0 THEN 0 ELSE cardinality(s_ids) END LOOP
            k := array_position(v_broken, s_keys[i]);
            IF s_plans[i] = 'leave'
               OR (k IS NOT NULL AND s_seqs[i] > v_broken_seqs[k] AND NOT s_ids[i] = ANY(v_done_ids)
                   AND NOT s_ids[i] = ANY(v_fail_ids)) THEN
                read := read - 1;  -- claimed, then left as it was: not read
                s_plans[i] := 'leave';
            ELSIF s_plans[i] = 'dlq' THEN
                PERFORM triggers._dead_letter(s_ids[i], s_msgs[i], s_rcs[i], s_whys[i]);
                dead_lettered := dead_lettered + 1;
                v_dead_ids := v_dead_ids || s_ids[i];
            ELSIF s_plans[i] = 'fail' THEN
                v_fail_ids := v_fail_ids || s_ids[i];
                v_fail_errors := v_fail_errors || s_whys[i];
            END IF;
        END LOOP;

        -- Retryable failures: back off, or dead-letter once attempts exceed max_retries.
        FOR i IN 1..cardinality(v_fail_ids) LOOP
            k := array_position(v_ids, v_fail_ids[i]);
            IF v_read_cts[k] > cfg.max_retries THEN
                PERFORM triggers._dead_letter(v_ids[k], v_msgs[k], v_read_cts[k], v_fail_errors[i]);
                dead_lettered := dead_lettered + 1;
                v_dead_ids := v_dead_ids || v_ids[k];
            ELSE
                PERFORM triggers._back_off(v_ids[k], v_now
                            + make_interval(secs => triggers._backoff_ms(v_read_cts[k], cfg.backoff_base_ms, cfg.backoff_cap_ms) / 1000.0),
                       v_read_cts[k], v_fail_errors[i]);
                PERFORM triggers._count(v_msgs[k]->>'tenant', 'retried');
                retried := retried + 1;
            END IF;
        END LOOP;
    END IF;

    -- Where each stream of the batch now stands: done_seq moves over the finished
    -- prefix of its run (stored, or dead-lettered when the stream continues past dead
    -- letters); a dead letter on a stream that halts stops it there.
    IF v_plain AND cardinality(v_broken) = 0 AND cardinality(s_ids) > 0 THEN
        -- Every stream message of the batch was stored: each stream is done up to its
        -- run's last seq (runs come in seq order, one after another).
        FOR i IN 1..cardinality(s_ids) LOOP
            IF (i = cardinality(s_ids) OR s_keys[i + 1] <> s_keys[i]) AND s_seqs[i] > s_dones[i] THEN
                p_keys := p_keys || s_keys[i];
                p_dones := p_dones || s_seqs[i];
                p_halted := p_halted || NULL::uuid;
            END IF;
        END LOOP;
    END IF;
    FOR i IN 1..CASE WHEN v_plain AND cardinality(v_broken) = 0 THEN 0 ELSE cardinality(s_ids) END LOOP
        IF i = 1 OR s_keys[i] <> s_keys[i - 1] THEN
            v_key := s_keys[i]; v_done := s_dones[i]; v_halted := NULL; v_stop := false;
        END IF;
        IF NOT v_stop AND s_seqs[i] > s_dones[i] THEN
            IF s_ids[i] = ANY(v_done_ids) THEN
                v_done := s_seqs[i];
            ELSIF s_ids[i] = ANY(v_dead_ids) AND cfg.stream_failure_policy = 'continue' THEN
                v_done := s_seqs[i];
            ELSIF s_ids[i] = ANY(v_dead_ids) THEN
                v_halted := (s_msgs[i]->>'event_id')::uuid;
                v_stop := true;
            ELSE
                v_stop := true;
            END IF;
        END IF;
        IF (i = cardinality(s_ids) OR s_keys[i + 1] <> s_keys[i])
           AND (v_done <> s_dones[i] OR v_halted IS NOT NULL) THEN
            p_keys := p_keys || v_key;
            p_dones := p_dones || v_done;
            p_halted := p_halted || v_halted;
        END IF;
    END LOOP;
    -- One primary-key update per stream of the batch (a handful, as a rule).
    FOR i IN 1..cardinality(p_keys) LOOP
        UPDATE triggers.stream_progress p
           SET done_seq = p_dones[i], halted_event = p_halted[i], updated_at = v_now
         WHERE p.tenant = split_part(p_keys[i], E'\x1f', 1) AND p.stream = split_part(p_keys[i], E'\x1f', 2);
    END LOOP;
    -- Live readers (live.sql): something was stored, delivered at commit. At most once
    -- per 50 ms per session (real time): NOTIFY takes a cluster-wide lock through
    -- commit, which cost the drain about a tenth when every batch sent one. A reader
    -- looks every 5 ms for 100 ms after it last found something, so a batch committed
    -- without a notification of its own is found as soon.
    IF stored > 0 AND triggers._stored_notify_due() THEN
        PERFORM pg_notify('triggers_stored', '');
    END IF;
    -- Under load, fold at most once a second per session; an idle worker folds at once.
    PERFORM triggers._fold_metrics(1000);
    RETURN NEXT;
END $$;
COMMENT ON FUNCTION triggers.process_batch IS
    'The workflow: claims up to batch_size messages (runs of streams in seq order) and for each validates, stores, counts and removes it, with retries, backoff and the dead-letter queue. One transaction; visibility_timeout hides the messages of a claim that never finished.';
