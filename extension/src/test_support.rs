//! Helpers shared by the `#[pg_test]` modules.

use pgrx::prelude::*;

/// The single value `sql` returns; panics (failing the test) on an error or NULL.
pub fn one<T: pgrx::datum::FromDatum + pgrx::datum::IntoDatum>(sql: &str) -> T {
    Spi::get_one::<T>(sql)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .unwrap_or_else(|| panic!("{sql}: returned NULL"))
}

/// Runs `sql`; panics on an error.
pub fn run(sql: &str) {
    Spi::run(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// "SQLSTATE message" of the error `sql` raises, or "ok".
pub fn error_of(sql: &str) -> String {
    run(
        "CREATE OR REPLACE FUNCTION pg_temp.error_of(q text) RETURNS text LANGUAGE plpgsql AS $f$
         BEGIN EXECUTE q; RETURN 'ok';
         EXCEPTION WHEN OTHERS THEN RETURN SQLSTATE || ' ' || SQLERRM; END $f$",
    );
    let quoted = sql.replace('\'', "''");
    one(&format!("SELECT pg_temp.error_of('{quoted}')"))
}

/// Panics unless `sql` raises `sqlstate` with a message containing `message_part`.
pub fn assert_error(sql: &str, sqlstate: &str, message_part: &str) {
    let got = error_of(sql);
    assert!(
        got.starts_with(sqlstate) && got.contains(message_part),
        "{sql}\n  expected {sqlstate} '{message_part}'\n  got {got}"
    );
}

/// The bigint `sql` returns.
pub fn count(sql: &str) -> i64 {
    one(sql)
}

/// Sets retries and backoff so failures can be driven to the DLQ within a test.
pub fn fast_retries(max_retries: i32) {
    run(&format!(
        "UPDATE triggers.config SET max_retries = {max_retries}, backoff_base_ms = 1, backoff_cap_ms = 1"
    ));
}

/// Stops this session's clock (`triggers.now`) at a fixed instant; every extension
/// function reads the time from it until the test ends (its transaction rolls back).
pub fn freeze_clock() {
    run("SELECT set_config('triggers.now', '2030-01-01 00:00:00+00', false)");
}

/// Moves the session's clock forward by `ms` milliseconds (freezing it first if needed).
pub fn advance_clock(ms: i64) {
    run(&format!(
        "SELECT set_config('triggers.now', (triggers._now() + {ms} * interval '1 millisecond')::text, false)"
    ));
}

/// Enqueues `n` events for `tenant` (metadata k = "0" or "1", alternating) and
/// processes them.
pub fn enqueue_and_process(n: usize, tenant: &str) {
    for i in 0..n {
        run(&format!(
            "SELECT triggers.enqueue(payload => '{{\"i\": {i}}}', metadata => '{{\"k\": \"{}\"}}', tenant => '{tenant}')",
            i % 2
        ));
    }
    run("SELECT * FROM triggers.process_batch(1000)");
}
