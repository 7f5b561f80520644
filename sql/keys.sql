-- triggers: API keys (SPEC §6). Only a SHA-256 of a key is stored; the Rust helpers
-- _random_token and _bytes_equal (extension/src/api/keys.rs) make and compare them.

/*
 * Creates an API key for the tenant and returns it, in plaintext, this once:
 * trg_<key_id>_<secret>. Only its SHA-256 is stored.
 */
CREATE FUNCTION triggers.create_api_key(tenant text, name text DEFAULT 'default') RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_key_id text := triggers._random_token(9);
    v_token text;
BEGIN
    PERFORM triggers._check_text('tenant', tenant);
    PERFORM triggers._check_text('name', name);
    v_token := triggers._key_prefix() || v_key_id || '_' || triggers._random_token(32);
    INSERT INTO triggers.api_keys (key_id, tenant, name, key_hash)
    VALUES (v_key_id, create_api_key.tenant, create_api_key.name, sha256(convert_to(v_token, 'UTF8')));
    RETURN v_token;
END $$;
COMMENT ON FUNCTION triggers.create_api_key IS
    'Creates an API key for a tenant and returns it; only its hash is stored, so this is the only time it is shown.';

/* Revokes a key of the tenant by its key id (or the whole key). True if it was active. */
CREATE FUNCTION triggers.revoke_api_key(tenant text, api_key text) RETURNS boolean
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
    RETURN FOUND;
END $$;
COMMENT ON FUNCTION triggers.revoke_api_key IS 'Revokes a tenant''s API key (the key, or its id); returns whether it was active.';

/* The tenant of a valid key; TG009 for a malformed, unknown or revoked one. */
CREATE FUNCTION triggers.authenticate(token text) RETURNS text
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
    RETURN v.tenant;
END $$;
COMMENT ON FUNCTION triggers.authenticate IS 'The tenant of an API key, or TG009 for an unknown or revoked key.';

-- The ids (trg_<id>_...) of keys revoked at or after `since`: what a server's live
-- streams poll, to end a stream whose key was revoked.
CREATE FUNCTION triggers.revoked_keys(since timestamptz) RETURNS SETOF text
LANGUAGE sql STABLE AS $$
    SELECT k.key_id FROM triggers.api_keys k WHERE k.revoked_at >= since
$$;
COMMENT ON FUNCTION triggers.revoked_keys IS 'The ids of API keys revoked at or after a time (live streams end on them).';
