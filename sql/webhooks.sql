-- triggers: webhook endpoints (SPEC §10). An endpoint belongs to a tenant and receives
-- the events its filter matches, signed with its secret (Standard Webhooks).
--
-- Secrets are sealed (AES-256-GCM, extension/src/api/webhooks.rs) under the secrets key
-- of the session, the setting `triggers.secrets_key`, which the server sets on each of
-- its connections from a key it keeps outside the database. A dump or a stolen backup
-- holds only sealed bytes: it cannot sign. Every function that makes or reads a secret
-- needs the key; the rest (listing, updating, deleting) do not.

-- The session's secrets key; 55000 when it is missing or too short to be one.
CREATE FUNCTION triggers._secrets_key() RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_key text := current_setting('triggers.secrets_key', true);
BEGIN
    IF coalesce(length(v_key), 0) < 32 THEN
        RAISE EXCEPTION USING ERRCODE = '55000',
            MESSAGE = 'triggers.secrets_key is not set: webhook secrets are sealed with it',
            HINT = 'The server sets it on its connections. In a session of your own: SET triggers.secrets_key = ''<the same key, 32 characters or more>''.';
    END IF;
    RETURN v_key;
END $$;
COMMENT ON FUNCTION triggers._secrets_key IS 'Internal: the session''s secrets key (triggers.secrets_key), or 55000.';

-- Why `url` cannot be an endpoint's, or NULL: http(s), a host, at most 2,000
-- characters, no spaces or control characters. (Where it leads is checked when a
-- delivery connects, on the address actually connected to.)
CREATE FUNCTION triggers._url_error(url text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN url IS NULL THEN 'TG004 url must not be NULL'
        WHEN length(url) > 2000 OR url !~* '^https?://[^/?#@[:space:]]+([/?#]|$)' OR url ~ '[\x01-\x20\x7f]'
            THEN 'TG004 url must be an http:// or https:// URL with a host, at most 2000 characters, without spaces'
    END
$$;
COMMENT ON FUNCTION triggers._url_error IS 'Internal: why a URL cannot be an endpoint''s, or NULL.';

-- Why `filter` is not an endpoint filter, or NULL: NULL (every event) or an object with
-- `stream` (a stream name) and/or `metadata` (an object the event's metadata must contain).
CREATE FUNCTION triggers._filter_error(filter jsonb) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN filter IS NULL THEN NULL
        WHEN jsonb_typeof(filter) <> 'object' OR filter - 'stream' - 'metadata' <> '{}'
            THEN 'TG004 filter must be an object with "stream" and/or "metadata"'
        WHEN filter ? 'stream' AND (jsonb_typeof(filter->'stream') <> 'string'
                                    OR triggers._text_error('filter.stream', filter->>'stream') IS NOT NULL)
            THEN 'TG004 filter.stream must be a stream name (1 to 200 characters without control characters)'
        WHEN filter ? 'metadata' AND jsonb_typeof(filter->'metadata') <> 'object'
            THEN 'TG004 filter.metadata must be an object'
    END
$$;
COMMENT ON FUNCTION triggers._filter_error IS 'Internal: why a jsonb is not an endpoint filter, or NULL.';

-- Whether an event (its stream and metadata) matches an endpoint's filter.
CREATE FUNCTION triggers._filter_matches(filter jsonb, stream text, metadata jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT filter IS NULL
        OR ((NOT filter ? 'stream' OR coalesce(filter->>'stream' = stream, false))
            AND (NOT filter ? 'metadata' OR coalesce(metadata, '{}') @> (filter->'metadata')))
$$;
COMMENT ON FUNCTION triggers._filter_matches IS 'Internal: whether an event''s stream and metadata match an endpoint filter.';

-- The tenant's endpoint, locked when `for_update`; TG006 when it has none of that id.
CREATE FUNCTION triggers._endpoint(tenant text, endpoint_id uuid, for_update boolean)
RETURNS triggers.webhook_endpoints LANGUAGE plpgsql AS $$
DECLARE
    v triggers.webhook_endpoints;
BEGIN
    PERFORM triggers._check_text('tenant', tenant);
    IF endpoint_id IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'TG004', MESSAGE = 'endpoint_id must not be NULL';
    END IF;
    IF for_update THEN
        SELECT * INTO v FROM triggers.webhook_endpoints e
         WHERE e.endpoint_id = _endpoint.endpoint_id AND e.tenant = _endpoint.tenant FOR UPDATE;
    ELSE
        SELECT * INTO v FROM triggers.webhook_endpoints e
         WHERE e.endpoint_id = _endpoint.endpoint_id AND e.tenant = _endpoint.tenant;
    END IF;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'TG006', MESSAGE = format('no endpoint %s', endpoint_id);
    END IF;
    RETURN v;
END $$;
COMMENT ON FUNCTION triggers._endpoint IS 'Internal: a tenant''s endpoint by id, or TG006.';

/*
 * Creates an endpoint for the tenant: where to POST (http or https), which events
 * (`filter`: NULL for all, or {"stream", "metadata"} by containment) and a note.
 * Returns its id and its secret (whsec_…), shown this once. Needs triggers.secrets_key.
 */
CREATE FUNCTION triggers.create_endpoint(tenant text, url text, filter jsonb DEFAULT NULL,
    description text DEFAULT NULL, OUT endpoint_id uuid, OUT secret text)
LANGUAGE plpgsql AS $$
DECLARE
    v_now timestamptz := triggers._now();
BEGIN
    PERFORM triggers._check_text('tenant', create_endpoint.tenant);
    PERFORM triggers._raise(coalesce(triggers._url_error(url), triggers._filter_error(filter),
                                     triggers._text_error('description', description, 1000)));
    endpoint_id := triggers._uuid_v7();
    secret := triggers._new_webhook_secret();
    INSERT INTO triggers.webhook_endpoints (endpoint_id, tenant, url, filter, description, secret,
                                            created_at, updated_at)
    VALUES (create_endpoint.endpoint_id, create_endpoint.tenant, url, nullif(filter, '{}'), description,
            triggers._seal_secret(create_endpoint.secret, triggers._secrets_key()), v_now, v_now);
END $$;
COMMENT ON FUNCTION triggers.create_endpoint IS
    'Creates a webhook endpoint; returns its id and its secret (whsec_…), shown only now. Needs triggers.secrets_key.';

-- An endpoint as endpoints() shows it: never its secrets; rotating_until is when the
-- previous secret stops signing, while it still does.
CREATE TYPE triggers.endpoint_row AS (
    endpoint_id     uuid,
    url             text,
    filter          jsonb,
    description     text,
    enabled         boolean,
    disabled_reason text,
    rotating_until  timestamptz,
    created_at      timestamptz,
    updated_at      timestamptz
);

/* The tenant's endpoints, oldest first, without their secrets. */
CREATE FUNCTION triggers.endpoints(tenant text)
RETURNS SETOF triggers.endpoint_row
LANGUAGE plpgsql STABLE AS $$
BEGIN
    PERFORM triggers._check_text('tenant', endpoints.tenant);
    RETURN QUERY
    SELECT e.endpoint_id, e.url, e.filter, e.description, e.enabled, e.disabled_reason,
           CASE WHEN e.previous_until > triggers._now() THEN e.previous_until END, e.created_at, e.updated_at
      FROM triggers.webhook_endpoints e
     WHERE e.tenant = endpoints.tenant
     ORDER BY e.created_at, e.endpoint_id;
END $$;
COMMENT ON FUNCTION triggers.endpoints IS 'The tenant''s webhook endpoints (never their secrets).';

/*
 * Changes what is given of an endpoint: url, filter ('{}' for every event), enabled,
 * description; NULL leaves it as it is. Disabling records 'disabled by its owner';
 * enabling clears the reason. Returns the endpoint as endpoints() shows it.
 */
CREATE FUNCTION triggers.update_endpoint(tenant text, endpoint_id uuid, url text DEFAULT NULL,
    filter jsonb DEFAULT NULL, enabled boolean DEFAULT NULL, description text DEFAULT NULL)
RETURNS SETOF triggers.endpoint_row LANGUAGE plpgsql AS $$
DECLARE
    v triggers.webhook_endpoints := triggers._endpoint(update_endpoint.tenant, update_endpoint.endpoint_id, true);
BEGIN
    IF url IS NOT NULL THEN
        PERFORM triggers._raise(triggers._url_error(url));
    END IF;
    PERFORM triggers._raise(coalesce(triggers._filter_error(filter),
                                     triggers._text_error('description', description, 1000)));
    UPDATE triggers.webhook_endpoints e
       SET url = coalesce(update_endpoint.url, e.url),
           filter = CASE WHEN update_endpoint.filter IS NULL THEN e.filter ELSE nullif(update_endpoint.filter, '{}') END,
           description = coalesce(update_endpoint.description, e.description),
           enabled = coalesce(update_endpoint.enabled, e.enabled),
           disabled_reason = CASE WHEN update_endpoint.enabled THEN NULL
                                  WHEN NOT update_endpoint.enabled AND e.enabled THEN 'disabled by its owner'
                                  ELSE e.disabled_reason END,
           updated_at = triggers._now()
     WHERE e.endpoint_id = v.endpoint_id;
    RETURN QUERY SELECT * FROM triggers.endpoints(update_endpoint.tenant) r
                  WHERE r.endpoint_id = update_endpoint.endpoint_id;
END $$;
COMMENT ON FUNCTION triggers.update_endpoint IS
    'Changes an endpoint''s url, filter (''{}'': every event), enabled or description; NULL keeps a value.';

/*
 * Gives an endpoint a new secret and returns it (shown this once); the old one keeps
 * signing beside it for 24 hours, so receivers can switch without losing a delivery.
 * Needs triggers.secrets_key.
 */
CREATE FUNCTION triggers.rotate_endpoint_secret(tenant text, endpoint_id uuid) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v triggers.webhook_endpoints := triggers._endpoint(rotate_endpoint_secret.tenant, rotate_endpoint_secret.endpoint_id, true);
    v_secret text := triggers._new_webhook_secret();
    v_now timestamptz := triggers._now();
BEGIN
    UPDATE triggers.webhook_endpoints e
       SET previous_secret = e.secret, previous_until = v_now + interval '24 hours',
           secret = triggers._seal_secret(v_secret, triggers._secrets_key()), updated_at = v_now
     WHERE e.endpoint_id = v.endpoint_id;
    RETURN v_secret;
END $$;
COMMENT ON FUNCTION triggers.rotate_endpoint_secret IS
    'A new secret for an endpoint (returned once); the previous one keeps signing for 24 hours. Needs triggers.secrets_key.';

/* Deletes an endpoint of the tenant; true if it existed. */
CREATE FUNCTION triggers.delete_endpoint(tenant text, endpoint_id uuid) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM triggers._check_text('tenant', tenant);
    IF endpoint_id IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'TG004', MESSAGE = 'endpoint_id must not be NULL';
    END IF;
    DELETE FROM triggers.webhook_endpoints e
     WHERE e.endpoint_id = delete_endpoint.endpoint_id AND e.tenant = delete_endpoint.tenant;
    RETURN FOUND;
END $$;
COMMENT ON FUNCTION triggers.delete_endpoint IS 'Deletes a tenant''s webhook endpoint; returns whether it existed.';

/*
 * The secrets an endpoint signs with now, newest first: its secret, and the previous
 * one while a rotation overlaps. For the delivery workers; needs triggers.secrets_key.
 */
CREATE FUNCTION triggers._endpoint_secrets(endpoint_id uuid) RETURNS text[]
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v triggers.webhook_endpoints;
    v_key text := triggers._secrets_key();
    v_secrets text[];
BEGIN
    SELECT * INTO v FROM triggers.webhook_endpoints e WHERE e.endpoint_id = _endpoint_secrets.endpoint_id;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    v_secrets := ARRAY[triggers._open_secret(v.secret, v_key)];
    IF v.previous_until > triggers._now() THEN
        v_secrets := v_secrets || triggers._open_secret(v.previous_secret, v_key);
    END IF;
    IF array_position(v_secrets, NULL) IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = '55000',
            MESSAGE = format('the secrets of endpoint %s do not open with this triggers.secrets_key', endpoint_id);
    END IF;
    RETURN v_secrets;
END $$;
COMMENT ON FUNCTION triggers._endpoint_secrets IS
    'Internal: the secrets an endpoint signs with now (newest first), unsealed with triggers.secrets_key.';
