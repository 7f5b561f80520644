-- triggers: who may call what. Four roles carry the grants (finalize.sql gives each its
-- functions; the functions run as their owner, so no role needs a table):
--   triggers_producer  enqueue
--   triggers_consumer  read and acknowledge events, the live stream, metrics, webhook
--                      endpoints and deliveries
--   triggers_worker    process the queue and deliver webhooks, check API keys: what a
--                      server runs besides the API
--   triggers_admin     all of the above, API keys, retention, tenant bindings, moving
--                      partitions
-- and a login role can be bound to one tenant (grant_tenant): every function then acts
-- for that tenant only, whatever tenant it is passed, and refuses calls over all
-- tenants. Roles are the cluster's: made here unless they exist, kept by DROP EXTENSION.

DO $$
DECLARE
    v_role text;
BEGIN
    FOREACH v_role IN ARRAY ARRAY['triggers_producer', 'triggers_consumer', 'triggers_worker',
                                  'triggers_admin', 'triggers_bound'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = v_role) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', v_role);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL; -- made at this moment by an install in another database
            END;
        END IF;
    END LOOP;
    BEGIN
        GRANT triggers_producer, triggers_consumer, triggers_worker TO triggers_admin;
    EXCEPTION WHEN unique_violation THEN
        NULL;
    END;
END $$;

-- Login roles bound to a tenant (grant_tenant). A bound role is also a member of
-- triggers_bound, which is what every call checks first (_session_bound, from the
-- backend's membership cache): only a bound role's calls read this table.
CREATE TABLE triggers.tenant_roles (
    role       regrole     PRIMARY KEY,
    tenant     text        NOT NULL CHECK (tenant <> ''),
    granted_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE triggers.tenant_roles IS
    'Login roles bound to one tenant (triggers.grant_tenant): their calls act for it alone.';
SELECT pg_catalog.pg_extension_config_dump('triggers.tenant_roles', '');

-- _access_error for a member of triggers_bound: its binding, if it has one.
CREATE FUNCTION triggers._bound_error(tenant text) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_bound text;
BEGIN
    SELECT r.tenant INTO v_bound FROM triggers.tenant_roles r WHERE r.role = session_user::regrole;
    IF NOT FOUND OR v_bound = tenant THEN
        RETURN NULL;
    END IF;
    IF tenant IS NULL THEN
        RETURN format('TG011 role %s acts only for tenant %s, not for every tenant', session_user, v_bound);
    END IF;
    RETURN format('TG011 role %s acts only for tenant %s, not for %s', session_user, v_bound, tenant);
END $$;
COMMENT ON FUNCTION triggers._bound_error IS
    'Internal: why a bound role may not act for a tenant, or NULL when it is its own.';

-- Why the session may not act for `tenant` (NULL: every tenant at once), or NULL when it
-- may: a verdict (validate.sql). Inlined where it is called: for a role that is not
-- bound, one call of _session_bound.
CREATE FUNCTION triggers._access_error(tenant text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN triggers._session_bound() THEN triggers._bound_error(tenant) END
$$;
COMMENT ON FUNCTION triggers._access_error IS
    'Internal: why the session''s role may not act for a tenant (NULL: all tenants), or NULL when it may.';

-- Raises TG004 unless `tenant` is a valid tenant name, TG011 unless the session may act
-- for it. With or_all, NULL means every tenant (metrics(NULL), say).
CREATE FUNCTION triggers._check_tenant(tenant text, or_all boolean DEFAULT false)
RETURNS void LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF tenant IS NOT NULL OR NOT or_all THEN
        PERFORM triggers._check_text('tenant', tenant);
    END IF;
    PERFORM triggers._raise(triggers._access_error(tenant));
END $$;
COMMENT ON FUNCTION triggers._check_tenant IS
    'Internal: raises TG004 for a bad tenant name, TG011 when the session''s role is bound to another tenant.';

/*
 * Binds login role `role` to `tenant`: from its next call on, every function acts for
 * that tenant only (another tenant's name is refused with TG011, calls over every tenant
 * too). Binding again moves it to the new tenant. A superuser cannot be bound (it could
 * unbind itself).
 */
CREATE FUNCTION triggers.grant_tenant(role name, tenant text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_super boolean;
BEGIN
    PERFORM triggers._check_tenant(tenant);
    SELECT r.rolsuper INTO v_super FROM pg_catalog.pg_roles r WHERE r.rolname = grant_tenant.role;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'TG004', MESSAGE = format('role %s does not exist', coalesce(role::text, 'NULL'));
    END IF;
    IF v_super OR role IN ('triggers_producer', 'triggers_consumer', 'triggers_worker', 'triggers_admin', 'triggers_bound') THEN
        RAISE EXCEPTION USING ERRCODE = 'TG004', MESSAGE = format('role %s cannot be bound to a tenant', role);
    END IF;
    INSERT INTO triggers.tenant_roles AS r (role, tenant) VALUES (grant_tenant.role::regrole, grant_tenant.tenant)
    ON CONFLICT ON CONSTRAINT tenant_roles_pkey DO UPDATE SET tenant = excluded.tenant, granted_at = now();
    EXECUTE format('GRANT triggers_bound TO %I', role);
END $$;
COMMENT ON FUNCTION triggers.grant_tenant IS
    'Binds a login role to one tenant: its calls then act for that tenant only (TG011 for any other).';

/* Unbinds a role bound by grant_tenant; whether it was bound. */
CREATE FUNCTION triggers.revoke_tenant(role name) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_tenant text;
BEGIN
    IF role IS NULL OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = revoke_tenant.role) THEN
        RAISE EXCEPTION USING ERRCODE = 'TG004', MESSAGE = format('role %s does not exist', coalesce(role::text, 'NULL'));
    END IF;
    SELECT r.tenant INTO v_tenant FROM triggers.tenant_roles r WHERE r.role = revoke_tenant.role::regrole;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM triggers._check_tenant(v_tenant);
    DELETE FROM triggers.tenant_roles r WHERE r.role = revoke_tenant.role::regrole;
    EXECUTE format('REVOKE triggers_bound FROM %I', role);
    RETURN true;
END $$;
COMMENT ON FUNCTION triggers.revoke_tenant IS 'Unbinds a role bound to a tenant by grant_tenant; returns whether it was bound.';

/* The roles bound to a tenant, and to which. */
CREATE FUNCTION triggers.tenant_grants(OUT role name, OUT tenant text, OUT granted_at timestamptz)
RETURNS SETOF record LANGUAGE sql STABLE AS $$
    SELECT r.role::text::name, r.tenant, r.granted_at FROM triggers.tenant_roles r
     WHERE triggers._access_error(r.tenant) IS NULL
     ORDER BY 1
$$;
COMMENT ON FUNCTION triggers.tenant_grants IS 'The login roles bound to a tenant (grant_tenant), and to which.';
