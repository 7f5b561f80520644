-- triggers: API keys (SPEC §6). Only a SHA-256 of a key is stored; the Rust helpers
-- _random_token and _bytes_equal (extension/src/api/keys.rs) make and compare them.

/*
 * Creates an API key for the tenant and returns it, in plaintext, this once:
 * trg_<key_id>_<secret>. Only its SHA-256 is stored. With `expires_at` the key is
 * refused from then on. NOTIFYs triggers_keys with '+' and the key id at commit. The key id starts with the tenant's hashtext in 8 hex digits
 * (combine.sql's _key_route): the PL/Proxy proxy routes a key to its tenant's node by it.
 */
CREATE FUNCTION triggers.create_api_key(tenant text, name text DEFAULT 'default',
    expires_at timestamptz DEFAULT NULL) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_key_id text;
    v_token text;
BEGIN
    PERFORM triggers._check_tenant(tenant);
    PERFORM triggers._check_text('name', name);
    v_key_id := lpad(to_hex(hashtext(tenant)), 8, '0') || triggers._random_token(9);
    IF expires_at <= triggers._now() OR expires_at = 'infinity' THEN
        RAISE EXCEPTION USING ERRCODE = 'TG004',
            MESSAGE = format('expires_at must be a time in the future, got %s', expires_at);
    END IF;
    v_token := triggers._key_prefix() || v_key_id || '_' || triggers._random_token(32);
    INSERT INTO triggers.api_keys (key_id, tenant, name, key_hash, expires_at)
    VALUES (v_key_id, create_api_key.tenant, create_api_key.name, sha256(convert_to(v_token, 'UTF8')),
            create_api_key.expires_at);
    -- Servers learn the new id at commit (+id), so they never have to ask a database
    -- whether an id they do not know exists (server/src/guard/keys.rs).
    PERFORM pg_notify('triggers_keys', '+' || v_key_id);
    RETURN v_token;
END $$;
COMMENT ON FUNCTION triggers.create_api_key IS
    'Creates an API key for a tenant (expiring at expires_at, if given) and returns it; only its hash is stored, so this is the only time it is shown.';

/*
 * Revokes a key of the tenant by its key id (or the whole key). True if it was active.
 * NOTIFYs triggers_keys with the key id at commit, so servers that trust the key from
 * a cache drop it at once.
 */
CREATE FUNCTION triggers.revoke_api_key(tenant text, api_key text) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_key_id text;
BEGIN
    PERFORM triggers._check_tenant(tenant);
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

/*
 * A valid key's tenant, id and expiry; TG009 for a malformed, unknown, revoked or
 * expired one. What a server caches a key by: never past its expiry.
 */
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

/* The tenant of a valid key; TG009 for a malformed, unknown, revoked or expired one. */
CREATE FUNCTION triggers.authenticate(token text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT a.tenant FROM triggers.authenticate_key(token) a
$$;
COMMENT ON FUNCTION triggers.authenticate IS 'The tenant of an API key, or TG009 for an unknown, revoked or expired key.';

-- The ids (trg_<id>_...) of keys revoked at or after `since`: what a server's live
-- streams poll, to end a stream whose key was revoked.
CREATE FUNCTION triggers.revoked_keys(since timestamptz) RETURNS SETOF text
LANGUAGE sql STABLE AS $$
    SELECT k.key_id FROM triggers.api_keys k WHERE k.revoked_at >= since
$$;
COMMENT ON FUNCTION triggers.revoked_keys IS 'The ids of API keys revoked at or after a time (live streams end on them).';

-- A server's key check (server/src/guard/keys.rs): the row of the key whose id `token`
-- carries (its secret is not looked at: the server compares the hash itself, so that
-- every secret tried with a known id is checked without another lookup). Empty for an
-- unknown id. The PL/Proxy proxy routes it by the id, as authenticate_key.
CREATE FUNCTION triggers._key_record(token text)
RETURNS TABLE(tenant text, key_hash bytea, expires_at timestamptz, revoked boolean)
LANGUAGE sql STABLE AS $$
    SELECT k.tenant, k.key_hash, k.expires_at, k.revoked_at IS NOT NULL
      FROM triggers.api_keys k
     WHERE k.key_id = substring(token FROM '^' || triggers._key_prefix() || '([A-Za-z0-9]+)_')
$$;
COMMENT ON FUNCTION triggers._key_record IS
    'Internal: the tenant, hash, expiry and revocation of the API key whose id a token carries (for a server''s key check).';

-- The ids of the keys not revoked: what a server knows exists.
CREATE FUNCTION triggers._key_ids() RETURNS SETOF text
LANGUAGE sql STABLE AS $$
    SELECT k.key_id FROM triggers.api_keys k WHERE k.revoked_at IS NULL
$$;
COMMENT ON FUNCTION triggers._key_ids IS 'Internal: the ids of every API key not revoked (a server''s book of known keys).';
