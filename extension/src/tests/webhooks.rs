//! `#[pg_test]`s of sql/webhooks.sql: endpoints, their sealed secrets, rotation, filters,
//! tenant isolation, and every bad argument by SQLSTATE.

#[pgrx::pg_schema]
mod tests {
    use crate::test_support::{advance_clock, assert_error, count, freeze_clock, one, run};
    use pgrx::prelude::*;
    use triggers_core::webhooks::Secret;

    const KEY: &str = "0123456789abcdef0123456789abcdef-test";

    fn with_key() {
        run(&format!(
            "SELECT set_config('triggers.secrets_key', '{KEY}', false)"
        ));
    }

    /// Creates an endpoint of tenant `t`; returns (id, secret).
    fn create(url: &str, filter: &str) -> (String, String) {
        let row: String = one(&format!(
            "SELECT endpoint_id || ' ' || secret FROM triggers.create_endpoint('t', '{url}', {filter})"
        ));
        let (id, secret) = row.split_once(' ').unwrap();
        (id.to_string(), secret.to_string())
    }

    fn secrets(id: &str) -> Vec<String> {
        let v: Vec<Option<String>> = one(&format!("SELECT triggers._endpoint_secrets('{id}')"));
        v.into_iter().map(Option::unwrap).collect()
    }

    #[pg_test]
    fn an_endpoints_secret_is_shown_once_and_stored_sealed() {
        with_key();
        let (id, secret) = create("https://example.com/hooks", "NULL");
        let parsed = Secret::parse(&secret).expect("whsec_ and base64 of 24 to 64 bytes");
        assert_eq!(parsed.to_text(), secret);
        // The table holds neither the secret nor its bytes.
        assert_eq!(
            count(&format!(
                "SELECT count(*) FROM triggers.webhook_endpoints
                  WHERE position(convert_to('{secret}', 'UTF8') IN secret) > 0
                     OR position(decode(substr('{secret}', 7), 'base64') IN secret) > 0"
            )),
            0
        );
        assert_eq!(secrets(&id), vec![secret.clone()]);
        // Another key opens nothing; no key at all is an error that says what to do.
        run("SELECT set_config('triggers.secrets_key', repeat('x', 40), false)");
        assert_error(
            &format!("SELECT triggers._endpoint_secrets('{id}')"),
            "55000",
            "do not open with this triggers.secrets_key",
        );
        run("SELECT set_config('triggers.secrets_key', '', false)");
        assert_error(
            "SELECT triggers.create_endpoint('t', 'https://example.com')",
            "55000",
            "triggers.secrets_key is not set",
        );
        // Listing, updating and deleting need no key.
        assert_eq!(count("SELECT count(*) FROM triggers.endpoints('t')"), 1);
    }

    #[pg_test]
    fn a_rotated_secret_signs_beside_the_new_one_for_24_hours() {
        freeze_clock();
        with_key();
        let (id, old) = create("https://example.com/hooks", "NULL");
        let new: String = one(&format!(
            "SELECT triggers.rotate_endpoint_secret('t', '{id}')"
        ));
        assert_ne!(new, old);
        assert_eq!(secrets(&id), vec![new.clone(), old]);
        assert_eq!(
            one::<String>(&format!("SELECT (rotating_until - triggers._now())::text FROM triggers.endpoints('t') WHERE endpoint_id = '{id}'")),
            "1 day"
        );
        advance_clock(24 * 3600 * 1000);
        assert_eq!(secrets(&id), vec![new]);
        assert_eq!(
            count(&format!("SELECT count(*) FROM triggers.endpoints('t') WHERE endpoint_id = '{id}' AND rotating_until IS NULL")),
            1
        );
    }

    #[pg_test]
    fn endpoints_are_updated_disabled_and_deleted_by_their_tenant_only() {
        with_key();
        let (id, _) = create("https://example.com/a", r#"'{"stream": "orders"}'"#);
        let shown: String = one(&format!(
            "SELECT url || ' ' || filter::text || ' ' || enabled FROM triggers.endpoints('t') WHERE endpoint_id = '{id}'"
        ));
        assert_eq!(shown, r#"https://example.com/a {"stream": "orders"} true"#);
        // Another tenant sees nothing of it and can change nothing.
        assert_eq!(count("SELECT count(*) FROM triggers.endpoints('u')"), 0);
        for call in [
            format!("SELECT * FROM triggers.update_endpoint('u', '{id}', enabled => false)"),
            format!("SELECT triggers.rotate_endpoint_secret('u', '{id}')"),
        ] {
            assert_error(&call, "TG006", "no endpoint");
        }
        assert!(!one::<bool>(&format!(
            "SELECT triggers.delete_endpoint('u', '{id}')"
        )));
        // Disabled by its owner (with the reason), enabled again, filter cleared, url changed.
        run(&format!(
            "SELECT * FROM triggers.update_endpoint('t', '{id}', enabled => false)"
        ));
        assert_eq!(
            one::<String>(&format!(
                "SELECT disabled_reason FROM triggers.endpoints('t') WHERE endpoint_id = '{id}'"
            )),
            "disabled by its owner"
        );
        let after: String = one(&format!(
            "SELECT url || ' ' || coalesce(filter::text, 'all') || ' ' || enabled || ' ' || coalesce(disabled_reason, '-')
               FROM triggers.update_endpoint('t', '{id}', url => 'http://example.com/b', filter => '{{}}', enabled => true)"
        ));
        assert_eq!(after, "http://example.com/b all true -");
        assert!(one::<bool>(&format!(
            "SELECT triggers.delete_endpoint('t', '{id}')"
        )));
        assert!(!one::<bool>(&format!(
            "SELECT triggers.delete_endpoint('t', '{id}')"
        )));
        assert_error(
            &format!("SELECT * FROM triggers.update_endpoint('t', '{id}', enabled => true)"),
            "TG006",
            "no endpoint",
        );
    }

    #[pg_test]
    fn filters_match_by_stream_and_metadata_containment() {
        let matches = |filter: &str, stream: &str, metadata: &str| -> bool {
            one(&format!(
                "SELECT triggers._filter_matches({filter}, {stream}, {metadata})"
            ))
        };
        assert!(matches("NULL", "NULL", "NULL"));
        assert!(matches(r#"'{"stream": "a"}'"#, "'a'", "NULL"));
        assert!(!matches(r#"'{"stream": "a"}'"#, "'b'", "NULL"));
        assert!(!matches(r#"'{"stream": "a"}'"#, "NULL", "NULL"));
        assert!(matches(
            r#"'{"metadata": {"k": 1}}'"#,
            "NULL",
            r#"'{"k": 1, "j": 2}'"#
        ));
        assert!(!matches(
            r#"'{"metadata": {"k": 1}}'"#,
            "NULL",
            r#"'{"k": 2}'"#
        ));
        assert!(!matches(r#"'{"metadata": {"k": 1}}'"#, "NULL", "NULL"));
        assert!(matches(
            r#"'{"stream": "a", "metadata": {}}'"#,
            "'a'",
            "NULL"
        ));
    }

    #[pg_test]
    fn bad_arguments_are_refused_with_tg004() {
        with_key();
        for (call, part) in [
            ("SELECT triggers.create_endpoint('t', NULL)", "url must not be NULL"),
            ("SELECT triggers.create_endpoint('t', 'ftp://example.com')", "http:// or https://"),
            ("SELECT triggers.create_endpoint('t', 'https://')", "http:// or https://"),
            ("SELECT triggers.create_endpoint('t', 'https://exa mple.com')", "http:// or https://"),
            ("SELECT triggers.create_endpoint('t', 'https://user@example.com')", "http:// or https://"),
            ("SELECT triggers.create_endpoint('t', 'https://example.com/' || repeat('a', 2000))", "at most 2000"),
            ("SELECT triggers.create_endpoint('t', 'https://example.com', '[]')", "filter must be an object"),
            ("SELECT triggers.create_endpoint('t', 'https://example.com', '{\"x\": 1}')", "filter must be an object"),
            ("SELECT triggers.create_endpoint('t', 'https://example.com', '{\"stream\": 5}')", "filter.stream"),
            ("SELECT triggers.create_endpoint('t', 'https://example.com', '{\"stream\": \"\"}')", "filter.stream"),
            ("SELECT triggers.create_endpoint('t', 'https://example.com', '{\"metadata\": []}')", "filter.metadata"),
            ("SELECT triggers.create_endpoint('t', 'https://example.com', NULL, repeat('d', 1001))", "description"),
            ("SELECT triggers.create_endpoint('', 'https://example.com')", "tenant"),
            ("SELECT triggers.create_endpoint(NULL, 'https://example.com')", "tenant"),
            ("SELECT triggers.endpoints(NULL)", "tenant"),
            ("SELECT triggers.delete_endpoint('t', NULL)", "endpoint_id"),
            ("SELECT triggers.rotate_endpoint_secret('t', NULL)", "endpoint_id"),
        ] {
            assert_error(call, "TG004", part);
        }
        let (id, _) = create("https://example.com", "NULL");
        assert_error(
            &format!("SELECT * FROM triggers.update_endpoint('t', '{id}', url => 'nope')"),
            "TG004",
            "http:// or https://",
        );
    }
}
