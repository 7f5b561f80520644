-- triggers: retention. purge deletes what is finished and old.

/*
 * Deletes delivered and failed events (and their idempotency keys and webhook
 * deliveries with their attempts) last changed more than older_than ago, pgmq archive rows as old, and latency history older than a day.
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
        v_cutoff := triggers._now() - older_than;
    EXCEPTION WHEN datetime_field_overflow THEN
        -- Older than the calendar reaches back: nothing is that old.
        v_cutoff := '-infinity';
    END;
    WITH gone AS (
        DELETE FROM triggers.events e
         WHERE e.status IN ('delivered', 'failed') AND e.updated_at < v_cutoff
        RETURNING e.tenant, e.idempotency_key, e.event_id
    ), keys AS (
        DELETE FROM triggers.idempotency_keys k USING gone g
         WHERE k.tenant = g.tenant AND k.idempotency_key = g.idempotency_key
    ), deliveries AS (
        -- Their webhook deliveries, and with them every attempt's log.
        DELETE FROM triggers.webhook_deliveries d USING gone g WHERE d.event_id = g.event_id
    )
    SELECT count(*) INTO v_n FROM gone;
    DELETE FROM pgmq.a_triggers_events a WHERE a.archived_at < v_cutoff;
    DELETE FROM pgmq.a_triggers_events_dlq a WHERE a.archived_at < v_cutoff;
    PERFORM triggers._fold_metrics();
    DELETE FROM triggers.latency_minutes l WHERE l.minute < triggers._now() - interval '1 day';
    RETURN v_n;
END $$;
COMMENT ON FUNCTION triggers.purge IS
    'Deletes delivered and failed events (and their idempotency keys, webhook deliveries, archives, latency history) older than older_than; returns how many events.';
