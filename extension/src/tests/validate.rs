//! `#[pg_test]`s of sql/validate.sql: each rule of a valid event, by SQLSTATE, and input that must stay inert.

#[pgrx::pg_schema]
mod tests {
    use crate::test_support::{assert_error, count, one, run};
    use pgrx::prelude::*;

    #[pg_test]
    fn enqueue_rejects_bad_input_with_stable_codes() {
        assert_error(
            "SELECT triggers.enqueue(payload => NULL)",
            "TG001",
            "payload must be a JSON object, got NULL",
        );
        assert_error(
            "SELECT triggers.enqueue(payload => '[1]')",
            "TG001",
            "payload must be a JSON object, got array",
        );
        assert_error(
            "SELECT triggers.enqueue(payload => '\"x\"')",
            "TG001",
            "got string",
        );
        assert_error(
            "SELECT triggers.enqueue(payload => '{}', metadata => '[]')",
            "TG002",
            "metadata must be a JSON object",
        );
        run("UPDATE triggers.config SET max_payload_bytes = 20");
        assert_error(
            "SELECT triggers.enqueue(payload => '{\"big\": \"0123456789012345678901234567890\"}')",
            "TG003",
            "over the limit of 20",
        );
        assert_error(
            "SELECT triggers.enqueue(payload => '{}', tenant => '')",
            "TG004",
            "tenant must be",
        );
        assert_error(
            "SELECT triggers.enqueue(payload => '{}', tenant => NULL)",
            "TG004",
            "tenant must not be NULL",
        );
        assert_error(
            "SELECT triggers.enqueue(payload => '{}', tenant => E'a\\nb')",
            "TG004",
            "without control characters",
        );
        assert_error(
            &format!(
                "SELECT triggers.enqueue(payload => '{{}}', tenant => '{}')",
                "t".repeat(201)
            ),
            "TG004",
            "tenant must be 1 to 200 characters",
        );
        assert_error(
            "SELECT triggers.enqueue(payload => '{}', debug => 'explode')",
            "TG004",
            "debug must be one of",
        );
        assert_error(
            "SELECT triggers.enqueue(payload => '{}', debug => 'validation_error')",
            "TG001",
            "validation_error",
        );
        assert_error(
            &format!(
                "SELECT triggers.enqueue(payload => '{{}}', idempotency_key => '{}')",
                "k".repeat(256)
            ),
            "TG004",
            "idempotency_key must be",
        );
        assert_eq!(
            count("SELECT count(*) FROM pgmq.q_triggers_events"),
            0,
            "nothing queued"
        );
    }

    #[pg_test]
    fn sql_in_text_arguments_is_inert() {
        let evil = "x'); DROP TABLE triggers.events; --";
        let e = evil.replace('\'', "''");
        run(&format!("SELECT triggers.enqueue(payload => '{{}}', tenant => '{e}', idempotency_key => '{e}', stream => '{e}')"));
        run("SELECT * FROM triggers.process_batch()");
        assert_eq!(
            count(&format!(
                "SELECT count(*) FROM triggers.inbox('{e}', stream => '{e}')"
            )),
            1
        );
        run(&format!("SELECT triggers.metrics('{e}')"));
        run(&format!("SELECT * FROM triggers.dead_letters('{e}')"));
        run(&format!("SELECT triggers.redrive('{e}')"));
        run(&format!("SELECT triggers.create_api_key('{e}', '{e}')"));
        assert_error(
            &format!("SELECT triggers.authenticate('{e}')"),
            "TG009",
            "malformed",
        );
        assert_error(
            &format!("SELECT * FROM triggers.inbox('t', after_cursor => '{e}')"),
            "TG005",
            "not a cursor",
        );
        assert_eq!(count("SELECT count(*) FROM pg_tables WHERE schemaname = 'triggers' AND tablename = 'events'"), 1);
        let tenant: String = one("SELECT tenant FROM triggers.events");
        assert_eq!(tenant, evil, "stored verbatim");
    }
}
