-- triggers: the live stream's reading side (SPEC §10). Each time processing stores an
-- event it takes a delivery position (process.sql, _store) and process_batch NOTIFYs
-- triggers_stored at commit. A reader resumes after a position and gets every event
-- stored after it, each once, in position order: a stream's events in seq order.
--
-- Positions come from a sequence, so they become visible out of order: a batch that
-- took positions 10..19 may commit after one that took 20..29. A reader that went on
-- from 29 would never see 10..19. So `stored` returns only positions below the settled
-- horizon (claim.sql's _settled): every position under it is committed or never will
-- be. Only transactions that write events hold it back, never an unrelated long one.

-- An event as the live stream carries it: its delivery position and the inbox's fields.
CREATE TYPE triggers.stored_row AS (
    position bigint, tenant text, event_id uuid, status text, payload jsonb, metadata jsonb,
    stream text, seq bigint, created_at timestamptz, updated_at timestamptz,
    processed_at timestamptz, delivered_at timestamptz, retry_count int, error_message text,
    idempotency_key text);

/*
 * Events stored after position `after` (0: from the first), in position order, up to
 * lim: a tenant's, or with tenant NULL every tenant's (a server's one reader). Filters
 * as in inbox: stream, metadata and payload containment (@>). Only settled positions
 * (see above), unless `upto` names a position a reader has already seen settled: then
 * exactly those in (after, upto]. A page also ends with the event that brings its
 * payloads and metadata to max_bytes (counted uncompressed; at least one event), so a
 * short page is not the end: read on from its last position until a page is empty.
 */
CREATE FUNCTION triggers.stored(
    tenant text,
    after bigint DEFAULT 0,
    lim int DEFAULT 100,
    stream text DEFAULT NULL,
    metadata_contains jsonb DEFAULT NULL,
    payload_contains jsonb DEFAULT NULL,
    upto bigint DEFAULT NULL,
    max_bytes int DEFAULT 4194304)
RETURNS SETOF triggers.stored_row
LANGUAGE plpgsql AS $$
DECLARE
    v_below bigint;
    v_row triggers.stored_row;
    v_bytes bigint := 0;
BEGIN
    PERFORM triggers._check_tenant(stored.tenant, or_all => true);
    IF stored.stream IS NOT NULL THEN
        PERFORM triggers._check_text('stream', stored.stream);
    END IF;
    IF after IS NULL OR after < 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'TG005', MESSAGE = format('after must be a position (0 or more), got %s', coalesce(after::text, 'NULL'));
    END IF;
    IF upto < 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'TG005', MESSAGE = format('upto must be a position (0 or more), got %s', upto);
    END IF;
    IF lim IS NULL OR lim < 1 OR lim > 10000 THEN
        RAISE EXCEPTION USING ERRCODE = 'TG004', MESSAGE = format('lim must be 1 to 10000, got %s', coalesce(lim::text, 'NULL'));
    END IF;
    IF max_bytes IS NULL OR max_bytes < 1 THEN
        RAISE EXCEPTION USING ERRCODE = 'TG004', MESSAGE = format('max_bytes must be 1 or more, got %s', coalesce(max_bytes::text, 'NULL'));
    END IF;
    PERFORM triggers._check_containment(metadata_contains, payload_contains);
    v_below := coalesce(upto + 1, triggers._settled('triggers.event_positions', 'triggers.events', 'live'));
    FOR v_row IN
    SELECT e.position, e.tenant, e.event_id, e.status, e.payload, e.metadata, e.stream, e.seq, e.created_at,
           e.updated_at, e.processed_at, e.delivered_at, e.retry_count, e.error_message, e.idempotency_key
      FROM triggers.events e
     WHERE e.position > after AND e.position < v_below
       AND (stored.tenant IS NULL OR e.tenant = stored.tenant)
       AND (stored.stream IS NULL OR e.stream = stored.stream)
       AND (metadata_contains IS NULL OR e.metadata @> metadata_contains)
       AND (payload_contains IS NULL OR e.payload @> payload_contains)
     ORDER BY e.position
     LIMIT lim
    LOOP
        RETURN NEXT v_row;
        v_bytes := v_bytes + triggers._size(v_row.payload) + triggers._size(v_row.metadata);
        EXIT WHEN v_bytes >= max_bytes;
    END LOOP;
END $$;
COMMENT ON FUNCTION triggers.stored IS
    'Events stored after a delivery position, in position order, each once though transactions commit out of order (a page at most lim events and about max_bytes): the live stream.';

-- The last delivery position settled, at least every position taken before the call
-- (it waits, up to 5 s, for the transactions that hold earlier ones to end): a reader
-- that starts here gets what is stored from now on, and nothing stored before is
-- missed by one that replays up to it. Positions are a database's own: `tenant` says
-- whose stream the caller reads, which a database alone does not need, but the PL/Proxy
-- proxy routes by (the tenant's node's horizon).
CREATE FUNCTION triggers.stored_horizon(tenant text DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_taken bigint := coalesce(pg_sequence_last_value('triggers.event_positions'), 0);
    v_until timestamptz := clock_timestamp() + interval '5 seconds';
    v_settled bigint;
BEGIN
    PERFORM triggers._check_tenant(tenant, or_all => true);
    LOOP
        v_settled := triggers._settled('triggers.event_positions', 'triggers.events', 'live') - 1;
        EXIT WHEN v_settled >= v_taken OR clock_timestamp() > v_until;
        PERFORM pg_sleep(0.005);
    END LOOP;
    RETURN v_settled;
END $$;
COMMENT ON FUNCTION triggers.stored_horizon IS
    'The last delivery position settled, at least every one taken before the call: start the live stream here to get what is stored from now on.';
