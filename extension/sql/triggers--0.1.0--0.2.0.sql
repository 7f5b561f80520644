-- triggers 0.1.0 → 0.2.0 (ALTER EXTENSION triggers UPDATE). Keys can expire
-- (api_keys.expires_at, create_api_key's expires_at, authenticate_key), and a revocation
-- NOTIFYs triggers_keys so servers drop the key from their caches at once. Webhook
-- attempts are recorded by _record_attempts alone (successes there, failures through
-- _record_failure): _record_attempt, which had a second copy of the success rules, is gone.
-- The functions are as sql/keys.sql and sql/webhooks.sql have them; tests/tests/upgrade.rs holds an upgraded
-- database's catalog to a fresh install's.
\echo Use "ALTER EXTENSION triggers UPDATE TO '0.2.0'" to load this file. \quit

ALTER TABLE triggers.api_keys ADD COLUMN expires_at timestamptz NULL;

DROP FUNCTION triggers.create_api_key(text, text);
CREATE FUNCTION triggers.create_api_key(tenant text, name text DEFAULT 'default',
    expires_at timestamptz DEFAULT NULL) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_key_id text := triggers._random_token(9);
    v_token text;
BEGIN
    PERFORM triggers._check_text('tenant', tenant);
    PERFORM triggers._check_text('name', name);
    IF expires_at <= triggers._now() OR expires_at = 'infinity' THEN
        RAISE EXCEPTION USING ERRCODE = 'TG004',
            MESSAGE = format('expires_at must be a time in the future, got %s', expires_at);
    END IF;
    v_token := triggers._key_prefix() || v_key_id || '_' || triggers._random_token(32);
    INSERT INTO triggers.api_keys (key_id, tenant, name, key_hash, expires_at)
    VALUES (v_key_id, create_api_key.tenant, create_api_key.name, sha256(convert_to(v_token, 'UTF8')),
            create_api_key.expires_at);
    RETURN v_token;
END $$;
COMMENT ON FUNCTION triggers.create_api_key IS
    'Creates an API key for a tenant (expiring at expires_at, if given) and returns it; only its hash is stored, so this is the only time it is shown.';

REVOKE ALL ON FUNCTION triggers.create_api_key(text, text, timestamptz) FROM PUBLIC;

CREATE OR REPLACE FUNCTION triggers.revoke_api_key(tenant text, api_key text) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_key_id text;
BEGIN
    PERFORM triggers._check_text('tenant', tenant);
    IF api_key IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'TG004', MESSAGE = 'api_key must not be NULL';
    END IF;
    v_key_id := coalesce(substring(api_key FROM '^' || triggers._key_prefix() || '([A-Za-z0-9]+)_'), api_key);
    UPDATE triggers.api_keys k SET revoked_at = triggers._now()
     WHERE k.key_id = v_key_id AND k.tenant = revoke_api_key.tenant AND k.revoked_at IS NULL;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM pg_notify('triggers_keys', v_key_id);
    RETURN true;
END $$;
COMMENT ON FUNCTION triggers.revoke_api_key IS 'Revokes a tenant''s API key (the key, or its id); returns whether it was active.';

CREATE FUNCTION triggers.authenticate_key(token text, OUT tenant text, OUT key_id text, OUT expires_at timestamptz)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v triggers.api_keys;
BEGIN
    IF token IS NULL OR token !~ ('^' || triggers._key_prefix() || '[A-Za-z0-9]+_[A-Za-z0-9]+$') OR length(token) > 200 THEN
        RAISE EXCEPTION USING ERRCODE = 'TG009', MESSAGE = 'API key is malformed';
    END IF;
    SELECT * INTO v FROM triggers.api_keys k
     WHERE k.key_id = substring(token FROM '^' || triggers._key_prefix() || '([A-Za-z0-9]+)_');
    IF NOT FOUND OR NOT triggers._bytes_equal(v.key_hash, sha256(convert_to(token, 'UTF8'))) THEN
        RAISE EXCEPTION USING ERRCODE = 'TG009', MESSAGE = 'API key is not valid';
    END IF;
    IF v.revoked_at IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'TG009', MESSAGE = 'API key is revoked';
    END IF;
    IF v.expires_at <= triggers._now() THEN
        RAISE EXCEPTION USING ERRCODE = 'TG009', MESSAGE = 'API key has expired';
    END IF;
    tenant := v.tenant;
    key_id := v.key_id;
    expires_at := v.expires_at;
END $$;
COMMENT ON FUNCTION triggers.authenticate_key IS
    'The tenant, id and expiry of an API key, or TG009 for an unknown, revoked or expired key.';

REVOKE ALL ON FUNCTION triggers.authenticate_key(text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION triggers.authenticate(token text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT a.tenant FROM triggers.authenticate_key(token) a
$$;
COMMENT ON FUNCTION triggers.authenticate IS 'The tenant of an API key, or TG009 for an unknown, revoked or expired key.';

DROP FUNCTION triggers._record_attempt(bigint, int, int, int, text, text, int);
CREATE FUNCTION triggers._record_failure(delivery_id bigint, attempt int, status_code int, latency_ms int,
    response text, error text, retry_after_s int DEFAULT NULL) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_now timestamptz := triggers._now();
    cfg triggers.config;
    d triggers.webhook_deliveries;
    v_last boolean;
    v_wait float8;
    v_failing_since timestamptz;
BEGIN
    SELECT * INTO cfg FROM triggers.config;
    SELECT * INTO d FROM triggers.webhook_deliveries w WHERE w.delivery_id = _record_failure.delivery_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;  -- its endpoint was deleted meanwhile
    END IF;
    INSERT INTO triggers.webhook_attempts (delivery_id, attempt, attempted_at, status_code, latency_ms, response, error)
    VALUES (d.delivery_id, attempt, v_now, status_code, latency_ms, left(response, 1000), left(error, 1000))
    ON CONFLICT DO NOTHING;
    IF d.status <> 'pending' OR d.attempts <> attempt THEN
        RETURN d.status;  -- a late answer to an attempt whose lease ran out: logged only
    END IF;
    v_last := attempt >= cardinality(cfg.webhook_schedule_s);
    IF v_last THEN
        UPDATE triggers.webhook_deliveries w
           SET status = 'failed', finished_at = v_now, next_attempt_at = NULL, leased_until = NULL
         WHERE w.delivery_id = d.delivery_id;
    ELSE
        v_wait := cfg.webhook_schedule_s[attempt + 1]
                  * (1 + cfg.webhook_jitter_pct / 100.0 * (2 * random() - 1));
        UPDATE triggers.webhook_deliveries w
           SET next_attempt_at = v_now + make_interval(secs => greatest(v_wait, coalesce(retry_after_s, 0))),
               leased_until = NULL
         WHERE w.delivery_id = d.delivery_id;
    END IF;
    UPDATE triggers.webhook_endpoints e SET failing_since = coalesce(e.failing_since, v_now)
     WHERE e.endpoint_id = d.endpoint_id
    RETURNING e.failing_since INTO v_failing_since;
    IF status_code = 410 THEN
        UPDATE triggers.webhook_endpoints e
           SET enabled = false, disabled_reason = 'the receiver answered 410 Gone', updated_at = v_now
         WHERE e.endpoint_id = d.endpoint_id AND e.enabled;
    ELSIF v_now - v_failing_since >= make_interval(secs => cfg.endpoint_disable_after_s) THEN
        UPDATE triggers.webhook_endpoints e
           SET enabled = false, updated_at = v_now,
               disabled_reason = format('no successful delivery since %s (endpoint_disable_after_s = %s)',
                                        to_char(v_failing_since AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
                                        cfg.endpoint_disable_after_s)
         WHERE e.endpoint_id = d.endpoint_id AND e.enabled;
    END IF;
    RETURN CASE WHEN v_last THEN 'failed' ELSE 'pending' END;
END $$;
COMMENT ON FUNCTION triggers._record_failure IS
    'Internal: logs a failed attempt and moves its delivery on: the next attempt, or failed; may disable the endpoint.';

REVOKE ALL ON FUNCTION triggers._record_failure(bigint, int, int, int, text, text, int) FROM PUBLIC;

CREATE OR REPLACE FUNCTION triggers._record_attempts(delivery_ids bigint[], attempts int[], status_codes int[],
    latencies_ms int[], responses text[], errors text[], retry_afters_s int[])
RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
    v_now timestamptz := triggers._now();
    v_endpoints uuid[];
    v_events uuid[];
BEGIN
    -- Successes: log them, then finish the deliveries whose attempt this still is (a
    -- late answer to an attempt whose lease ran out is logged only).
    INSERT INTO triggers.webhook_attempts (delivery_id, attempt, attempted_at, status_code, latency_ms, response, error)
    SELECT i.id, i.attempt, v_now, i.code, i.latency, left(i.response, 1000), left(i.error, 1000)
      FROM unnest(_record_attempts.delivery_ids, _record_attempts.attempts, _record_attempts.status_codes,
                  latencies_ms, responses, errors) AS i(id, attempt, code, latency, response, error)
     WHERE i.code BETWEEN 200 AND 299
    ON CONFLICT DO NOTHING;
    WITH done AS (
        UPDATE triggers.webhook_deliveries d
           SET status = 'succeeded', finished_at = v_now, next_attempt_at = NULL, leased_until = NULL
          FROM unnest(_record_attempts.delivery_ids, _record_attempts.attempts, _record_attempts.status_codes)
               AS i(id, attempt, code)
         WHERE i.code BETWEEN 200 AND 299 AND d.delivery_id = i.id
           AND d.status = 'pending' AND d.attempts = i.attempt
        RETURNING d.endpoint_id, d.event_id
    )
    SELECT array_agg(DISTINCT done.endpoint_id), array_agg(DISTINCT done.event_id) INTO v_endpoints, v_events FROM done;
    IF v_events IS NOT NULL THEN
        UPDATE triggers.webhook_endpoints e SET failing_since = NULL
         WHERE e.endpoint_id = ANY(v_endpoints) AND e.failing_since IS NOT NULL;
        -- Each event is delivered once every delivery of it has succeeded; rows locked
        -- in one order, so two workers finishing deliveries of the same events wait,
        -- never deadlock.
        PERFORM 1 FROM triggers.events ev
          WHERE ev.event_id = ANY(v_events) AND ev.status = 'pending'
          ORDER BY ev.event_id FOR UPDATE;
        UPDATE triggers.events ev SET status = 'delivered', delivered_at = v_now, updated_at = v_now
         WHERE ev.event_id = ANY(v_events) AND ev.status = 'pending'
           AND NOT EXISTS (SELECT 1 FROM triggers.webhook_deliveries o
                            WHERE o.event_id = ev.event_id AND o.status <> 'succeeded');
    END IF;
    -- Failures (or no answer): the schedule, Retry-After and the disabling rules.
    FOR i IN 1..coalesce(cardinality(delivery_ids), 0) LOOP
        IF status_codes[i] IS NULL OR status_codes[i] NOT BETWEEN 200 AND 299 THEN
            PERFORM triggers._record_failure(delivery_ids[i], attempts[i], status_codes[i], latencies_ms[i],
                                             responses[i], errors[i], retry_afters_s[i]);
        END IF;
    END LOOP;
    RETURN QUERY
    SELECT d.status FROM unnest(delivery_ids) WITH ORDINALITY AS u(id, n)
      LEFT JOIN triggers.webhook_deliveries d ON d.delivery_id = u.id
     ORDER BY u.n;
END $$;
COMMENT ON FUNCTION triggers._record_attempts IS
    'Internal: attempts'' outcomes in one transaction, successes set-wise, failures through _record_failure.';

-- The workers' hot paths never JIT-compile (a deep backlog's estimates passed
-- jit_above_cost: ~100 ms compiling per claim that runs in < 1 ms).
ALTER FUNCTION triggers.process_batch(int, int) SET jit = off;
ALTER FUNCTION triggers._claim_deliveries(int, int) SET jit = off;
ALTER FUNCTION triggers._record_attempts(bigint[], int[], int[], int[], text[], text[], int[]) SET jit = off;
