//! `#[pg_test]`s of sql/keys.sql: API keys.

#[pgrx::pg_schema]
mod tests {
    use crate::test_support::{assert_error, count, one};
    use pgrx::prelude::*;

    #[pg_test]
    fn api_keys_authenticate_until_revoked_and_are_stored_hashed() {
        let key: String = one("SELECT triggers.create_api_key('acme', 'ci')");
        assert!(key.starts_with("trg_"), "{key}");
        let tenant: String = one(&format!("SELECT triggers.authenticate('{key}')"));
        assert_eq!(tenant, "acme");
        assert_eq!(count(&format!("SELECT count(*) FROM triggers.api_keys WHERE key_hash::text LIKE '%{key}%' OR key_id = '{key}'")), 0);
        let revoked: bool = one(&format!("SELECT triggers.revoke_api_key('other', '{key}')"));
        assert!(!revoked, "another tenant cannot revoke it");
        let revoked: bool = one(&format!("SELECT triggers.revoke_api_key('acme', '{key}')"));
        assert!(revoked);
        assert_error(
            &format!("SELECT triggers.authenticate('{key}')"),
            "TG009",
            "revoked",
        );
        assert_error("SELECT triggers.authenticate('nope')", "TG009", "malformed");
        assert_error("SELECT triggers.authenticate(NULL)", "TG009", "malformed");
        // The key with its last character changed (to one it is not already).
        let last = if key.ends_with('x') { 'y' } else { 'x' };
        let wrong = format!("{}{last}", &key[..key.len() - 1]);
        assert_error(
            &format!("SELECT triggers.authenticate('{wrong}')"),
            "TG009",
            "not valid",
        );
        assert_error(
            "SELECT triggers.create_api_key('', 'x')",
            "TG004",
            "tenant must be",
        );
    }

    #[pg_test]
    fn keys_expire_and_say_so() {
        crate::test_support::freeze_clock();
        let key: String = one(
            "SELECT triggers.create_api_key('acme', 'short', expires_at => triggers._now() + interval '1 hour')",
        );
        let row: String = one(&format!(
            "SELECT tenant || ' ' || (expires_at = triggers._now() + interval '1 hour') FROM triggers.authenticate_key('{key}')"
        ));
        assert_eq!(row, "acme true");
        crate::test_support::advance_clock(3_600_000);
        assert_error(
            &format!("SELECT triggers.authenticate('{key}')"),
            "TG009",
            "API key has expired",
        );
        assert_error(
            "SELECT triggers.create_api_key('acme', 'past', expires_at => triggers._now())",
            "TG004",
            "expires_at must be a time in the future",
        );
    }
}
