-- triggers: what a valid event is (SPEC §3). Each rule is written once, here.
--
-- The rules are SQL expressions that name what is wrong, or NULL when nothing is:
-- _text_error, _event_error and _element_error. Being LANGUAGE sql and STABLE, they are
-- inlined into the statements that call them, so the enqueue paths test thousands of
-- events in one pass at no per-call cost; _raise turns a verdict into the error.
-- A verdict is 'TGnnn message': the SQLSTATE (triggers-core's ErrorCode, the one table
-- of them), a space, the message.

-- Raises the error a verdict names; does nothing for NULL.
CREATE FUNCTION triggers._raise(verdict text) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF verdict IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = left(verdict, 5), MESSAGE = substr(verdict, 7);
    END IF;
END $$;
COMMENT ON FUNCTION triggers._raise IS 'Internal: raises the error a verdict (''TGnnn message'') names; NULL passes.';

-- Why `value` is not a sane identifier-like text (tenant, stream, key, name), or NULL:
-- 1 to max_len characters, no ASCII control character (the same in every locale;
-- /openapi.json states it as a pattern). NULL passes: callers decide about NULL.
CREATE FUNCTION triggers._text_error(field text, value text, max_len int DEFAULT 200) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN value <> '' AND length(value) <= max_len AND value !~ '[\x01-\x1f\x7f]' OR value IS NULL
                THEN NULL
                ELSE 'TG004 ' || field || ' must be 1 to ' || max_len::text || ' characters without control characters'
           END
$$;
COMMENT ON FUNCTION triggers._text_error IS
    'Internal: why a text is not 1 to max_len characters without control characters, or NULL (NULL passes).';

-- Raises TG004 unless `value` is present and passes _text_error.
CREATE FUNCTION triggers._check_text(field text, value text, max_len int DEFAULT 200)
RETURNS void LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF value IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'TG004', MESSAGE = format('%s must not be NULL', field);
    END IF;
    PERFORM triggers._raise(triggers._text_error(field, value, max_len));
END $$;
COMMENT ON FUNCTION triggers._check_text IS
    'Internal: raises TG004 unless a text is present, 1 to max_len characters, without control characters.';

-- Raises TG004 unless each containment filter (inbox, stored: `@>` on metadata and
-- payload) is NULL or a JSON object.
CREATE FUNCTION triggers._check_containment(metadata_contains jsonb, payload_contains jsonb)
RETURNS void LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF metadata_contains IS NOT NULL AND jsonb_typeof(metadata_contains) <> 'object' THEN
        RAISE EXCEPTION USING ERRCODE = 'TG004', MESSAGE = 'metadata_contains must be a JSON object';
    END IF;
    IF payload_contains IS NOT NULL AND jsonb_typeof(payload_contains) <> 'object' THEN
        RAISE EXCEPTION USING ERRCODE = 'TG004', MESSAGE = 'payload_contains must be a JSON object';
    END IF;
END $$;
COMMENT ON FUNCTION triggers._check_containment IS
    'Internal: raises TG004 unless the metadata and payload containment filters are NULL or JSON objects.';

-- The debug flags (SPEC §3.3), the one list of them: validation_error is refused at
-- enqueue, processing_error fails every attempt, queue_delay holds the event back
-- config.queue_delay_ms, dlq_routing sends it to the dead-letter queue at once.
CREATE FUNCTION triggers._debug_flags() RETURNS text[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT '{validation_error,processing_error,queue_delay,dlq_routing}'::text[]
$$;
COMMENT ON FUNCTION triggers._debug_flags IS 'Internal: the debug flags an event may carry, the one list of them.';

-- Why one event, as enqueue receives it, cannot be queued, or NULL. `field` prefixes
-- messages ("events[3]."). The payload's size is its stored (jsonb) size, which costs
-- nothing to read.
CREATE FUNCTION triggers._event_error(
    field text, payload jsonb, metadata jsonb, idempotency_key text, stream text, debug text, max_bytes int)
RETURNS text LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN jsonb_typeof(payload) IS DISTINCT FROM 'object' THEN
            'TG001 ' || field || 'payload must be a JSON object, got ' || coalesce(jsonb_typeof(payload), 'NULL')
        WHEN jsonb_typeof(metadata) <> 'object' THEN
            'TG002 ' || field || 'metadata must be a JSON object or NULL, got ' || jsonb_typeof(metadata)
        WHEN pg_column_size(payload) > max_bytes THEN
            'TG003 ' || field || 'payload is ' || pg_column_size(payload)::text || ' bytes, over the limit of ' || max_bytes::text
        ELSE coalesce(
            triggers._text_error(field || 'idempotency_key', idempotency_key, 255),
            triggers._text_error(field || 'stream', stream, 200),
            CASE WHEN debug IS NULL THEN NULL
                 WHEN NOT debug = ANY(triggers._debug_flags()) THEN
                     'TG004 ' || field || 'debug must be one of ' || array_to_string(triggers._debug_flags(), ', ')
                 WHEN debug = 'validation_error' THEN
                     'TG001 ' || field || 'payload rejected (debug flag validation_error)'
            END)
    END
$$;
COMMENT ON FUNCTION triggers._event_error IS
    'Internal: why an event cannot be queued (''TGnnn message''), or NULL; the one statement of the rules.';

-- The same for one element of enqueue_batch's array, which must first be an object
-- with a payload and string (or null) idempotency_key, stream and debug.
CREATE FUNCTION triggers._element_error(field text, e jsonb, max_bytes int) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN jsonb_typeof(e) IS DISTINCT FROM 'object' THEN 'TG004 ' || field || ' must be a JSON object'
        WHEN NOT (e ? 'payload') THEN 'TG001 ' || field || '.payload is missing'
        WHEN coalesce(jsonb_typeof(e->'idempotency_key') NOT IN ('string', 'null'), false)
          OR coalesce(jsonb_typeof(e->'stream') NOT IN ('string', 'null'), false)
          OR coalesce(jsonb_typeof(e->'debug') NOT IN ('string', 'null'), false) THEN
            'TG004 ' || field || ': idempotency_key, stream and debug must be strings'
        ELSE triggers._event_error(field || '.', e->'payload', nullif(e->'metadata', 'null'),
                                   e->>'idempotency_key', e->>'stream', e->>'debug', max_bytes)
    END
$$;
COMMENT ON FUNCTION triggers._element_error IS
    'Internal: why an element of enqueue_batch''s array cannot be queued, or NULL.';
