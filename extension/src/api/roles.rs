//! Tenant-bound roles (sql/roles.sql): whether the session's login role is bound to one
//! tenant. Asked on every call of the API, so it is the role-membership cache Postgres
//! keeps anyway, not a query.

use pgrx::prelude::*;

/// Whether the session's login role is a member of `triggers_bound`, the role
/// `triggers.grant_tenant` makes a bound role a member of (a superuser is not, unless
/// granted it explicitly).
#[pg_extern(stable, parallel_safe)]
pub fn _session_bound() -> bool {
    // SAFETY: plain catalog lookups through the backend's caches; no pointer escapes.
    unsafe {
        let marker = pg_sys::get_role_oid(c"triggers_bound".as_ptr(), true);
        marker != pg_sys::InvalidOid
            && pg_sys::is_member_of_role_nosuper(pg_sys::GetSessionUserId(), marker)
    }
}

pgrx::extension_sql!(
    "COMMENT ON FUNCTION triggers._session_bound IS 'Internal: whether the session''s login role is bound to a tenant (a member of triggers_bound).';",
    name = "comment_session_bound",
    requires = [_session_bound]
);
