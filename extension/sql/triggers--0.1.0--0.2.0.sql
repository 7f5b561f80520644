-- triggers 0.1.0 → 0.2.0 (ALTER EXTENSION triggers UPDATE). Keys can expire
-- (api_keys.expires_at, create_api_key's expires_at, authenticate_key), and a revocation
-- NOTIFYs triggers_keys so servers drop the key from their caches at once.
-- The functions are as sql/keys.sql has them; tests/tests/upgrade.rs holds an upgraded
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

