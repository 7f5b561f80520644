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

    // The outbox and the delivery state machine, on a stopped clock.

    fn setup() {
        freeze_clock();
        run("SELECT set_config('triggers.secrets_key', repeat('k', 32), false)");
    }

    fn endpoint(tenant: &str, filter: &str) -> String {
        one(&format!(
            "SELECT endpoint_id::text FROM triggers.create_endpoint('{tenant}', 'https://example.com/{tenant}', {filter})"
        ))
    }

    fn store(sql_events: &[&str]) {
        for e in sql_events {
            run(&format!("SELECT triggers.enqueue({e})"));
        }
        run("SELECT * FROM triggers.process_batch(1000)");
    }

    /// Claims due deliveries: "event_id endpoint attempt" sorted.
    fn claim() -> Vec<(i64, String, i32)> {
        let rows: Option<pgrx::JsonB> = Spi::get_one(
            "SELECT jsonb_agg(jsonb_build_array(delivery_id, endpoint_id, attempt) ORDER BY delivery_id) FROM triggers._claim_deliveries(100)",
        )
        .unwrap();
        rows.map(|j| {
            j.0.as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    (
                        r[0].as_i64().unwrap(),
                        r[1].as_str().unwrap().to_string(),
                        r[2].as_i64().unwrap() as i32,
                    )
                })
                .collect()
        })
        .unwrap_or_default()
    }

    fn record(delivery: i64, attempt: i32, status: &str, retry_after: &str) -> String {
        one(&format!(
            "SELECT s FROM triggers._record_attempts(ARRAY[{delivery}::bigint], ARRAY[{attempt}], ARRAY[{status}]::int[],
                 ARRAY[12], ARRAY['body'], ARRAY[NULL]::text[], ARRAY[{retry_after}]::int[]) s"
        ))
    }

    #[pg_test]
    fn storing_writes_one_delivery_per_matching_enabled_endpoint() {
        setup();
        let all = endpoint("t", "NULL");
        let orders = endpoint("t", r#"'{"stream": "orders"}'"#);
        let vip = endpoint("t", r#"'{"metadata": {"vip": true}}'"#);
        let off = endpoint("t", "NULL");
        run(&format!(
            "SELECT * FROM triggers.update_endpoint('t', '{off}', enabled => false)"
        ));
        endpoint("u", "NULL");
        store(&[
            "'{}', tenant => 't'",
            "'{}', tenant => 't', stream => 'orders'",
            r#"'{}', '{"vip": true}', tenant => 't'"#,
        ]);
        let per = |id: &str| {
            count(&format!(
                "SELECT count(*) FROM triggers.webhook_deliveries WHERE endpoint_id = '{id}'"
            ))
        };
        assert_eq!(
            (per(&all), per(&orders), per(&vip), per(&off)),
            (3, 1, 1, 0)
        );
        assert_eq!(
            count("SELECT count(*) FROM triggers.webhook_deliveries WHERE tenant = 'u'"),
            0
        );
        // Due at once (the schedule's first wait is 0), each once; then leased.
        assert_eq!(claim().len(), 5);
        assert_eq!(claim().len(), 0, "leased");
        advance_clock(60_000);
        let again = claim();
        assert_eq!(
            again.len(),
            5,
            "a lease that ran out: due again (at least once)"
        );
        assert!(again.iter().all(|c| c.2 == 2), "{again:?}");
    }

    #[pg_test]
    fn an_event_is_delivered_when_every_endpoint_has_it() {
        setup();
        let a = endpoint("t", "NULL");
        endpoint("t", r#"'{"stream": "s"}'"#);
        store(&["'{}', tenant => 't', stream => 's'"]);
        let claimed = claim();
        assert_eq!(claimed.len(), 2);
        let status =
            || one::<String>("SELECT status::text FROM triggers.events WHERE tenant = 't'");
        let (first, second) = if claimed[0].1 == a {
            (claimed[0].0, claimed[1].0)
        } else {
            (claimed[1].0, claimed[0].0)
        };
        assert_eq!(record(first, 1, "200", "NULL"), "succeeded");
        assert_eq!(status(), "pending", "one endpoint still to go");
        assert_eq!(record(second, 1, "204", "NULL"), "succeeded");
        assert_eq!(status(), "delivered");
        // The log: one attempt each, with its status and latency.
        assert_eq!(
            one::<String>("SELECT string_agg(status || ':' || last_status_code || ':' || last_latency_ms, ' ' ORDER BY last_status_code) FROM triggers.deliveries('t', endpoint_id => NULL, event_id => (SELECT event_id FROM triggers.events WHERE tenant = 't'))"),
            "succeeded:200:12 succeeded:204:12"
        );
    }

    #[pg_test]
    fn failures_follow_the_schedule_then_fail_and_retry_after_is_honoured() {
        setup();
        run("UPDATE triggers.config SET webhook_schedule_s = '{0, 10, 20}', webhook_jitter_pct = 10");
        endpoint("t", "NULL");
        store(&["'{}', tenant => 't'"]);
        let d = claim()[0].0;
        let due_in = || {
            one::<f64>(&format!("SELECT extract(epoch FROM next_attempt_at - triggers._now())::float8 FROM triggers.webhook_deliveries WHERE delivery_id = {d}"))
        };
        assert_eq!(record(d, 1, "500", "NULL"), "pending");
        let wait = due_in();
        assert!((9.0..=11.0).contains(&wait), "10 s ± 10 %: {wait}");
        advance_clock(11_000);
        assert_eq!(claim()[0].2, 2);
        assert_eq!(record(d, 2, "503", "120"), "pending");
        assert!(due_in() >= 120.0, "Retry-After beats the schedule");
        advance_clock(121_000);
        assert_eq!(claim()[0].2, 3);
        assert_eq!(
            record(d, 3, "NULL", "NULL"),
            "failed",
            "the last attempt of the schedule"
        );
        assert_eq!(claim().len(), 0);
        assert_eq!(count("SELECT count(*) FROM triggers.webhook_attempts"), 3);
        // A late answer to an old attempt changes nothing.
        assert_eq!(record(d, 2, "200", "NULL"), "failed");
        // recover makes it pending and due again.
        let e: String =
            one("SELECT endpoint_id::text FROM triggers.webhook_endpoints WHERE tenant = 't'");
        assert_eq!(
            count(&format!(
                "SELECT triggers.recover('t', '{e}', triggers._now() - interval '1 hour')"
            )),
            1
        );
        assert_eq!(claim().len(), 1);
    }

    #[pg_test]
    fn gone_or_failing_too_long_disables_the_endpoint_with_its_reason() {
        setup();
        run("UPDATE triggers.config SET webhook_schedule_s = '{0, 1, 1, 1, 1}', endpoint_disable_after_s = 60");
        let gone = endpoint("t", "NULL");
        store(&["'{}', tenant => 't'"]);
        let d = claim()[0].0;
        record(d, 1, "410", "NULL");
        let reason = |id: &str| {
            one::<String>(&format!("SELECT coalesce(disabled_reason, 'enabled') FROM triggers.endpoints('t') WHERE endpoint_id = '{id}'"))
        };
        assert_eq!(reason(&gone), "the receiver answered 410 Gone");
        advance_clock(5_000);
        assert_eq!(
            claim().len(),
            0,
            "a disabled endpoint's deliveries wait, kept"
        );
        run(&format!(
            "SELECT * FROM triggers.update_endpoint('t', '{gone}', enabled => true)"
        ));
        let again = claim();
        assert_eq!(again.len(), 1, "and go on when it is enabled again");
        // Failing for 60 s without a success disables it too.
        record(again[0].0, again[0].2, "500", "NULL");
        advance_clock(61_000);
        let next = claim();
        record(next[0].0, next[0].2, "500", "NULL");
        assert!(
            reason(&gone).starts_with("no successful delivery since "),
            "{}",
            reason(&gone)
        );
    }

    #[pg_test]
    fn resend_and_the_arguments_of_deliveries() {
        setup();
        let e = endpoint("t", r#"'{"stream": "nope"}'"#);
        store(&["'{}', tenant => 't'"]);
        let id: String = one("SELECT event_id::text FROM triggers.events WHERE tenant = 't'");
        assert_eq!(claim().len(), 0, "the filter matched nothing");
        // Resend ignores the filter: the owner asked for it.
        run(&format!("SELECT triggers.resend('t', '{id}', '{e}')"));
        assert_eq!(claim().len(), 1);
        assert_error(
            &format!("SELECT triggers.resend('u', '{id}', '{e}')"),
            "TG006",
            "",
        );
        assert_error(
            "SELECT * FROM triggers.deliveries('t')",
            "TG004",
            "event_id or an endpoint_id",
        );
        assert_error(
            &format!("SELECT * FROM triggers.deliveries('t', endpoint_id => '{e}', lim => 0)"),
            "TG004",
            "lim",
        );
        assert_error(
            &format!("SELECT triggers.recover('t', '{e}', NULL)"),
            "TG004",
            "since",
        );
        assert_eq!(
            count(&format!(
                "SELECT count(*) FROM triggers.deliveries('u', endpoint_id => '{e}')"
            )),
            0
        );
    }

    #[pg_test]
    fn at_most_webhook_endpoint_concurrency_attempts_are_in_flight_per_endpoint() {
        setup();
        run("UPDATE triggers.config SET webhook_endpoint_concurrency = 2");
        let slow = endpoint("t", r#"'{"stream": "slow"}'"#);
        let other = endpoint("t", r#"'{"stream": "other"}'"#);
        store(&[
            "'{}', tenant => 't', stream => 'slow'",
            "'{}', tenant => 't', stream => 'slow'",
            "'{}', tenant => 't', stream => 'slow'",
            "'{}', tenant => 't', stream => 'slow'",
            "'{}', tenant => 't', stream => 'other'",
        ]);
        let to =
            |claimed: &[(i64, String, i32)], id: &str| claimed.iter().filter(|c| c.1 == id).count();
        let first = claim();
        assert_eq!((to(&first, &slow), to(&first, &other)), (2, 1), "{first:?}");
        assert_eq!(claim().len(), 0, "two of slow in flight: none more");
        // One answered: one more of slow may go.
        let done = first.iter().find(|c| c.1 == slow).unwrap();
        record(done.0, done.2, "200", "NULL");
        let next = claim();
        assert_eq!(to(&next, &slow), 1, "{next:?}");
    }

    #[pg_test]
    fn metrics_attempt_logs_batched_records_and_purge() {
        setup();
        let a = endpoint("t", "NULL");
        endpoint("u", "NULL");
        store(&[
            "'{}', tenant => 't'",
            "'{}', tenant => 't'",
            "'{}', tenant => 'u'",
        ]);
        let claimed = claim();
        let ours: Vec<&(i64, String, i32)> = claimed.iter().filter(|c| c.1 == a).collect();
        assert_eq!(ours.len(), 2);
        // One transaction records both: a 500 (retried: pending) and a 200.
        let statuses = one::<String>(&format!(
            "SELECT string_agg(s, ' ') FROM triggers._record_attempts(ARRAY[{}, {}], ARRAY[1, 1], ARRAY[500, 200],
                 ARRAY[30, 10], ARRAY['no', 'ok'], ARRAY['HTTP 500', NULL], ARRAY[NULL, NULL]::int[]) s",
            ours[0].0, ours[1].0
        ));
        assert_eq!(statuses, "pending succeeded");
        let metrics = |tenant: &str| {
            one::<pgrx::JsonB>(&format!("SELECT triggers.webhook_metrics({tenant})")).0
        };
        let t = metrics("'t'");
        assert_eq!(
            (
                &t["pending"],
                &t["succeeded"],
                &t["failed"],
                &t["attempts"],
                &t["endpoints"]
            ),
            (
                &serde_json::json!(1),
                &serde_json::json!(1),
                &serde_json::json!(0),
                &serde_json::json!(2),
                &serde_json::json!(1)
            ),
            "{t}"
        );
        // Stored and received on a stopped clock: no time between them.
        assert_eq!(t["latency_ms"]["p99"], serde_json::json!(0.0), "{t}");
        assert_eq!(
            metrics("NULL")["attempts"],
            serde_json::json!(3),
            "every tenant's"
        );
        assert_eq!(
            metrics("'nobody'")["latency_ms"]["p50"],
            serde_json::Value::Null
        );
        // The timeline of the failed one, per delivery, in order.
        let event = one::<String>(&format!(
            "SELECT event_id::text FROM triggers.webhook_deliveries WHERE delivery_id = {}",
            ours[0].0
        ));
        assert_eq!(
            one::<String>(&format!(
                "SELECT string_agg(attempt || ':' || coalesce(status_code::text, '-') || ':' || coalesce(error, ''), ' ')
                   FROM triggers.delivery_attempts('t', '{event}')"
            )),
            "1:500:HTTP 500"
        );
        assert_eq!(
            count(&format!(
                "SELECT count(*) FROM triggers.delivery_attempts('u', '{event}')"
            )),
            0,
            "another tenant's event"
        );
        // Purge takes finished events' deliveries and attempts with them.
        run("SELECT triggers.ack(event_id, tenant) FROM triggers.events WHERE status = 'pending'");
        advance_clock(3_600_000);
        run("SELECT triggers.purge('1 minute')");
        assert_eq!(count("SELECT count(*) FROM triggers.webhook_deliveries"), 0);
        assert_eq!(count("SELECT count(*) FROM triggers.webhook_attempts"), 0);
    }
}
