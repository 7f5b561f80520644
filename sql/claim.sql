-- triggers: the claim of events on no stream (process.sql calls it). Two properties:
--
-- Fair across tenants. Each tenant's messages are a lane of the queue's lane index
-- (tenant, msg_id). A claim serves the tenants in turn, from where this session's last
-- claim stopped, each up to its share of the batch (weighted by tenants.weight); what a
-- tenant with fewer ready events leaves goes to those with more. A tenant's event waits
-- about one batch per other busy tenant, whatever their backlogs.
--
-- Blind to dead rows. A processed message is deleted, but while any snapshot older than
-- the delete exists (pg_dump, a long report, a forgotten BEGIN) its index entry cannot
-- be removed, and an index scan from the start of a lane would walk every one of them on
-- every claim. So each lane is scanned from a low-water mark: a msg_id below which the
-- lane holds no live message. Retries are queued again at the end of their lane (a new
-- msg_id), so a backing-off message does not hold the mark back. A mark may only pass
-- msg_ids that can no longer appear: a producer takes its msg_id after locking the queue
-- table (RowExclusiveLock, held to commit), so once every transaction that held that
-- lock when the sequence stood at L has ended, every msg_id up to L is committed or never
-- will be (_safe_msg_id). Marks and that horizon are session settings: no shared row is
-- written (a row updated per claim would itself grow a chain of dead versions under the
-- old snapshot), and they roll back with the transaction that set them.

/*
 * The highest value of sequence `seq` below which every value handed out is settled:
 * its transaction committed (its row is visible) or aborted. A writer takes a value of
 * `seq` only while it holds RowExclusiveLock on `rel` (an INSERT or UPDATE of `rel`
 * locks it before it computes the new row), and holds that lock until it ends. So each
 * call reads the sequence (L), then which other transactions hold that lock; once none
 * of those seen at the last round's reading still does, everything up to that round's L
 * has settled, and a new round starts (at once when nobody holds the lock). One
 * pg_locks read per call. The state is this session's (settings triggers.<name>_*),
 * rolled back with its transaction. Used for the claim's lanes (claim.sql, `seq` the
 * queue's msg_id) and the live stream's positions (live.sql).
 */
CREATE FUNCTION triggers._settled(seq regclass, rel regclass, name text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_safe bigint := coalesce(nullif(current_setting('triggers.' || name || '_settled', true), '')::bigint, 1);
    v_round bigint := nullif(current_setting('triggers.' || name || '_round', true), '')::bigint;
    v_waiting text[] := coalesce(nullif(current_setting('triggers.' || name || '_waiting', true), ''), '{}')::text[];
    v_last bigint;
    v_holders text[];
BEGIN
    -- The sequence first, the lock holders second (two statements, so the second reads
    -- pg_locks after the first read the sequence).
    v_last := coalesce(pg_sequence_last_value(seq), 0);
    SELECT coalesce(array_agg(l.virtualtransaction), '{}') INTO v_holders
      FROM pg_locks l
     WHERE l.locktype = 'relation' AND l.relation = rel
       AND l.mode = 'RowExclusiveLock' AND l.pid <> pg_backend_pid()
       AND l.database = (SELECT d.oid FROM pg_database d WHERE d.datname = current_database());
    IF v_round IS NULL OR NOT v_waiting && v_holders THEN
        IF v_round IS NOT NULL THEN
            v_safe := greatest(v_safe, v_round + 1);
        END IF;
        -- Nobody holds the lock now: everything up to L has settled already.
        IF cardinality(v_holders) = 0 THEN
            v_safe := greatest(v_safe, v_last + 1);
        END IF;
        PERFORM set_config('triggers.' || name || '_settled', v_safe::text, false),
                set_config('triggers.' || name || '_round', v_last::text, false),
                set_config('triggers.' || name || '_waiting', v_holders::text, false);
    END IF;
    RETURN v_safe;
END $$;
COMMENT ON FUNCTION triggers._settled IS
    'Internal: the value of a sequence below which every value handed out is settled (committed or aborted), in this session''s view.';

-- The msg_id below which every queue message is committed or aborted.
CREATE FUNCTION triggers._safe_msg_id() RETURNS bigint
LANGUAGE sql AS $$
    SELECT triggers._settled('pgmq.q_triggers_events_msg_id_seq', 'pgmq.q_triggers_events', 'claim')
$$;
COMMENT ON FUNCTION triggers._safe_msg_id IS
    'Internal: the msg_id below which every queue message is committed or aborted (this session''s view).';

/*
 * Claims up to `cap` ready messages on no stream, tenants in turn (see the top of this
 * file), each locked FOR UPDATE SKIP LOCKED.
 *
 * Which lanes to visit: the session keeps the lanes that may hold live messages, each
 * with its mark (setting triggers.lane_marks), and a frontier F (triggers.lane_seen):
 * every message below F belongs to one of those lanes or was gone when looked at. Each
 * call looks at the messages queued from F up to the safe horizon (at most 10,000 per
 * call: the tenants of new messages, found by msg_id, each message seen once per
 * session) and adds their lanes, marked at F; a lane whose mark query finds nothing
 * live is dropped. So a call costs the busy lanes and the new messages, never the idle
 * tenants, however many there are. A new session starts with every lane ever
 * registered (triggers.lanes) at mark 0, and F at the horizon.
 */
CREATE FUNCTION triggers._claim_plain(v_now timestamptz, cap int)
RETURNS TABLE(id bigint, rc int, m jsonb, locker xid)
LANGUAGE plpgsql AS $$
DECLARE
    v_cursor text := coalesce(current_setting('triggers.lane_cursor', true), '');
    v_marks jsonb := nullif(current_setting('triggers.lane_marks', true), '')::jsonb;
    v_seen bigint := nullif(current_setting('triggers.lane_seen', true), '')::bigint;
    v_safe bigint := triggers._safe_msg_id();
    v_upto bigint;
    v_lanes text[];
    v_weights int[];
    -- Per lane: claim from here on (its mark, then past what this call took from it).
    v_from bigint[];
    v_more int[];
    v_pass int[];
    v_total int;
    v_room int := cap;
    v_pass_room int;
    v_share int;
    v_first bigint;
    v_visits int := 0;
    v_last_served text;
    v_first_pass boolean := true;
    l_ids bigint[];
    l_rcs int[];
    l_msgs jsonb[];
    l_lockers xid[];
    c_ids bigint[] := '{}';
    c_rcs int[] := '{}';
    c_msgs jsonb[] := '{}';
    c_lockers xid[] := '{}';
    i int;
BEGIN
    IF v_marks IS NULL OR v_seen IS NULL THEN
        -- A new session: any registered lane may hold messages below the horizon (their
        -- producers registered the lane before committing them). Lane '' is for
        -- headless messages (put on the queue by pgmq.send, not by triggers).
        SELECT jsonb_object_agg(l.tenant, 0) INTO v_marks
          FROM (SELECT DISTINCT d.tenant FROM triggers.lanes d UNION SELECT '') l;
        v_seen := v_safe;
    ELSIF v_seen < v_safe THEN
        -- The lanes of the messages queued since the last look, marked where it began:
        -- anything of theirs below it was seen then.
        v_upto := least(v_safe, v_seen + 10000);
        SELECT (SELECT coalesce(jsonb_object_agg(n.lane, v_seen), '{}')
                  FROM (SELECT DISTINCT coalesce(q.headers->>'tenant', '') AS lane
                          FROM pgmq.q_triggers_events q
                         WHERE q.msg_id >= v_seen AND q.msg_id < v_upto
                           AND NOT coalesce(q.headers ? 'seq', false)) n) || v_marks
          INTO v_marks;
        v_seen := v_upto;
    END IF;
    -- The lanes in turn from the one after the cursor, '' last with weight 0: it gets
    -- what the tenants leave.
    SELECT coalesce(array_agg(k.lane ORDER BY k.lane = '', k.lane <= v_cursor, k.lane), '{}'),
           coalesce(array_agg(CASE WHEN k.lane = '' THEN 0 ELSE coalesce(t.weight, 1) END
                              ORDER BY k.lane = '', k.lane <= v_cursor, k.lane), '{}'),
           coalesce(array_agg(k.mark ORDER BY k.lane = '', k.lane <= v_cursor, k.lane), '{}')
      INTO v_lanes, v_weights, v_from
      FROM (SELECT e.key AS lane, e.value::bigint AS mark FROM jsonb_each_text(v_marks) e) k
      LEFT JOIN triggers.tenants t ON t.tenant = k.lane;
    v_pass := ARRAY(SELECT generate_series(1, cardinality(v_lanes)));
    -- The first pass gives each lane its share; later passes share what is left among
    -- the lanes that filled theirs (they may have more).
    WHILE v_room > 0 AND cardinality(v_pass) > 0 AND v_visits < 1000 LOOP
        v_total := (SELECT sum(v_weights[k]) FROM unnest(v_pass) k);  -- > 0 wherever it divides
        v_pass_room := v_room;
        v_more := '{}';
        FOREACH i IN ARRAY v_pass LOOP
            EXIT WHEN v_room = 0 OR v_visits >= 1000;
            v_visits := v_visits + 1;
            v_share := CASE WHEN v_weights[i] = 0 THEN v_room
                            ELSE least(v_room, greatest(1, ceil(v_pass_room::numeric * v_weights[i] / v_total)::int)) END;
            WITH c AS (
                SELECT q.msg_id, q.read_ct + 1 AS rc, q.message, q.xmax AS locker
                  FROM pgmq.q_triggers_events q
                 WHERE NOT coalesce(q.headers ? 'seq', false) AND coalesce(q.headers->>'tenant', '') = v_lanes[i]
                   AND q.msg_id >= v_from[i] AND q.vt <= v_now
                 ORDER BY q.msg_id
                 LIMIT v_share
                   FOR UPDATE SKIP LOCKED
            )
            SELECT coalesce(array_agg(c.msg_id ORDER BY c.msg_id), '{}'), coalesce(array_agg(c.rc ORDER BY c.msg_id), '{}'),
                   coalesce(array_agg(c.message ORDER BY c.msg_id), '{}'), coalesce(array_agg(c.locker ORDER BY c.msg_id), '{}')
              INTO l_ids, l_rcs, l_msgs, l_lockers
              FROM c;
            IF cardinality(l_ids) > 0 THEN
                c_ids := c_ids || l_ids; c_rcs := c_rcs || l_rcs; c_msgs := c_msgs || l_msgs; c_lockers := c_lockers || l_lockers;
                v_room := v_room - cardinality(l_ids);
                v_last_served := coalesce(v_last_served, v_lanes[i]);
                IF cardinality(l_ids) = v_share THEN
                    v_more := v_more || i;
                END IF;
            END IF;
            -- On the first visit, the lane's new mark: its first live message (ready or
            -- not, claimed here or by another worker), never past the safe horizon. A
            -- lane with no live message is dropped until discovery sees a new one (all
            -- of its messages to come are at or past the frontier, which never passes
            -- the horizon).
            IF v_first_pass AND v_from[i] < v_safe THEN
                SELECT q.msg_id INTO v_first
                  FROM pgmq.q_triggers_events q
                 WHERE NOT coalesce(q.headers ? 'seq', false) AND coalesce(q.headers->>'tenant', '') = v_lanes[i]
                   AND q.msg_id >= v_from[i]
                 ORDER BY q.msg_id
                 LIMIT 1;
                IF v_first IS NULL THEN
                    v_marks := v_marks - v_lanes[i];
                ELSIF least(v_first, v_safe) > v_from[i] THEN
                    v_marks := jsonb_set(v_marks, ARRAY[v_lanes[i]], to_jsonb(least(v_first, v_safe)));
                END IF;
            END IF;
            -- Later visits in this call start past what this one took.
            IF cardinality(l_ids) > 0 THEN
                v_from[i] := l_ids[cardinality(l_ids)] + 1;
            END IF;
        END LOOP;
        v_pass := v_more;
        v_first_pass := false;
    END LOOP;
    -- The next call starts after the first tenant served here: each goes first in turn.
    PERFORM set_config('triggers.lane_marks', v_marks::text, false),
            set_config('triggers.lane_seen', v_seen::text, false),
            set_config('triggers.lane_cursor', coalesce(v_last_served, v_cursor), false);
    RETURN QUERY SELECT * FROM unnest(c_ids, c_rcs, c_msgs, c_lockers);
END $$;
COMMENT ON FUNCTION triggers._claim_plain IS
    'Internal: claims ready messages on no stream, tenants in turn by weight, each lane from its low-water mark.';
