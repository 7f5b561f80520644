//! # triggers — the Postgres extension
//!
//! Event ingestion and delivery inside Postgres, on pgmq. This crate is the thin pgrx
//! layer: the schema and the SQL API live in `sql/` at the repository root, one file per
//! concept, loaded below in dependency order; the few helpers written in Rust are under
//! [`api`], each a thin wrapper over `triggers-core`, where anything without Postgres in
//! it lives and `cargo test` reaches it.
//!
//! | file | what it holds |
//! |---|---|
//! | `sql/bootstrap.sql` | tables, the `triggers.config` row, the pgmq queues |
//! | `sql/clock.sql` | `_now()`: the one clock, settable per session (`triggers.now`) |
//! | `sql/combine.sql` | figures from parts (metrics of one node or, in the proxy, of many) |
//! | `sql/validate.sql` | what a valid event is: every rule once |
//! | `sql/enqueue.sql` | `enqueue`, `enqueue_batch`, the wake-up NOTIFY |
//! | `sql/metrics.sql` | exact counters (statement triggers), `metrics()` |
//! | `sql/streams.sql` | ordered streams: the run claim, `streams()`, `resume_stream` |
//! | `sql/claim.sql` | the claim of events on no stream: tenants in turn, blind to dead rows |
//! | `sql/live.sql` | the live stream's reading side: `stored()` after a delivery position |
//! | `sql/process.sql` | `process_batch`: claim, store, retry backoff, the DLQ move |
//! | `sql/inbox.sql` | `inbox`, `get_event`, `ack`, `retry` |
//! | `sql/dlq.sql` | `dead_letters`, `redrive` |
//! | `sql/retention.sql` | `purge` |
//! | `sql/keys.sql` | API keys |
//! | `sql/webhooks.sql` | webhook endpoints and their sealed secrets |
//! | `sql/partitions.sql` | moving a PL/Proxy partition's tenants to another node |
//! | `sql/finalize.sql` | grants, once everything exists |
//!
//! ```sql
//! CREATE EXTENSION triggers CASCADE;   -- also creates pgmq and the queues
//! SELECT triggers.version();
//! ```

pub mod api;

::pgrx::pg_module_magic!(name, version);

// The tables, the settings row and the pgmq queues exist before any function.
pgrx::extension_sql_file!("../../sql/bootstrap.sql", name = "bootstrap", bootstrap);
// Each file after everything its functions call, SQL or Rust, so that a function is
// defined before any function that calls it.
pgrx::extension_sql_file!("../../sql/clock.sql", name = "clock");
// Figures from parts, touching no table: installed by triggers_proxy too.
pgrx::extension_sql_file!("../../sql/combine.sql", name = "combine");
pgrx::extension_sql_file!(
    "../../sql/validate.sql",
    name = "validate",
    requires = ["clock"]
);
// Moving a partition off or onto this node; enqueue asks it where a tenant is.
pgrx::extension_sql_file!(
    "../../sql/partitions.sql",
    name = "partitions",
    requires = ["clock", "validate"]
);
pgrx::extension_sql_file!(
    "../../sql/enqueue.sql",
    name = "enqueue",
    requires = ["validate", "partitions", api::ids::_uuid_v7]
);
pgrx::extension_sql_file!(
    "../../sql/metrics.sql",
    name = "metrics",
    requires = ["clock", "combine", "streams"]
);
pgrx::extension_sql_file!(
    "../../sql/streams.sql",
    name = "streams",
    requires = ["enqueue"]
);
pgrx::extension_sql_file!(
    "../../sql/claim.sql",
    name = "claim",
    requires = ["enqueue"]
);
pgrx::extension_sql_file!(
    "../../sql/live.sql",
    name = "live",
    requires = ["validate", "claim"]
);
pgrx::extension_sql_file!(
    "../../sql/process.sql",
    name = "process",
    requires = [
        "enqueue",
        "metrics",
        "streams",
        "claim",
        api::ids::_backoff_ms
    ]
);
pgrx::extension_sql_file!(
    "../../sql/inbox.sql",
    name = "inbox",
    requires = [
        "process",
        api::cursor::_cursor,
        api::cursor::_cursor_created_at,
        api::cursor::_cursor_event_id
    ]
);
pgrx::extension_sql_file!("../../sql/dlq.sql", name = "dlq", requires = ["process"]);
pgrx::extension_sql_file!(
    "../../sql/retention.sql",
    name = "retention",
    requires = ["metrics"]
);
pgrx::extension_sql_file!(
    "../../sql/keys.sql",
    name = "keys",
    requires = [
        "validate",
        api::ids::_random_token,
        api::keys::_bytes_equal,
        api::keys::_key_prefix
    ]
);
pgrx::extension_sql_file!(
    "../../sql/webhooks.sql",
    name = "webhooks",
    requires = [
        "validate",
        api::ids::_uuid_v7,
        api::webhooks::_new_webhook_secret,
        api::webhooks::_seal_secret,
        api::webhooks::_open_secret
    ]
);
// Last, once every SQL and Rust function exists.
pgrx::extension_sql_file!("../../sql/finalize.sql", name = "finalize", finalize);

#[cfg(any(test, feature = "pg_test"))]
mod test_support;
#[cfg(any(test, feature = "pg_test"))]
mod tests;

/// Hooks `cargo pgrx test` calls.
#[cfg(test)]
pub mod pg_test {
    /// Runs once before the tests, in the test database.
    pub fn setup(_options: Vec<&str>) {}

    /// Settings for the test cluster's postgresql.conf.
    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
