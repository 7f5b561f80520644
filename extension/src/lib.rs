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
//! | `sql/clock.sql` | `_now()`: the one clock, settable per session (`triggers.now`) where a superuser allows it |
//! | `sql/combine.sql` | figures from parts (metrics of one node or, in the proxy, of many) |
//! | `sql/validate.sql` | what a valid event is: every rule once |
//! | `sql/roles.sql` | the four roles, tenant-bound logins (`grant_tenant`), the check every call makes |
//! | `sql/enqueue.sql` | `enqueue`, `enqueue_batch`, the wake-up NOTIFY |
//! | `sql/metrics.sql` | exact counters (statement triggers), `metrics()` |
//! | `sql/streams.sql` | ordered streams: the run claim, `streams()`, `resume_stream` |
//! | `sql/claim.sql` | the claim of events on no stream: tenants in turn, blind to dead rows |
//! | `sql/live.sql` | the live stream's reading side: `stored()` after a delivery position |
//! | `sql/process.sql` | `process_batch`: claim, store, retry backoff, the DLQ move |
//! | `sql/inbox.sql` | `inbox`, `get_event`, `ack`, `retry` |
//! | `sql/dlq.sql` | `dead_letters`, `redrive` |
//! | `sql/limits.sql` | per-tenant limits: `tenant_limits()`, `queue_depth()`, the endpoint cap |
//! | `sql/retention.sql` | `purge` |
//! | `sql/keys.sql` | API keys |
//! | `sql/webhooks.sql` | webhook endpoints and their sealed secrets |
//! | `sql/partitions.sql` | moving a PL/Proxy partition's tenants to another node |
//! | `sql/finalize.sql` | grants to the roles and who each function runs as, once everything exists |
//!
//! ```sql
//! CREATE EXTENSION triggers CASCADE;   -- also creates pgmq and the queues
//! SELECT triggers.version();
//! ```

pub mod api;

::pgrx::pg_module_magic!(name, version);

/// Runs when a backend loads the library: defines the extension's own settings.
#[pgrx::pg_guard]
pub extern "C-unwind" fn _PG_init() {
    api::clock::define_settings();
}

// The tables, the settings row and the pgmq queues exist before any function.
pgrx::extension_sql_file!("../../sql/bootstrap.sql", name = "bootstrap", bootstrap);
// Each file after everything its functions call, SQL or Rust, so that a function is
// defined before any function that calls it.
pgrx::extension_sql_file!(
    "../../sql/clock.sql",
    name = "clock",
    requires = [api::clock::_test_clock]
);
// Figures from parts, touching no table: installed by triggers_proxy too.
pgrx::extension_sql_file!("../../sql/combine.sql", name = "combine");
pgrx::extension_sql_file!(
    "../../sql/validate.sql",
    name = "validate",
    requires = ["clock"]
);
// Roles, tenant-bound logins, and the check every call makes.
pgrx::extension_sql_file!(
    "../../sql/roles.sql",
    name = "roles",
    requires = ["validate", api::roles::_session_bound]
);
// Moving a partition off or onto this node; enqueue asks it where a tenant is.
pgrx::extension_sql_file!(
    "../../sql/partitions.sql",
    name = "partitions",
    requires = ["clock", "validate", "roles"]
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
    requires = ["validate", "claim", api::size::_size]
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
        api::size::_size,
        api::cursor::_cursor,
        api::cursor::_cursor_created_at,
        api::cursor::_cursor_event_id
    ]
);
pgrx::extension_sql_file!("../../sql/dlq.sql", name = "dlq", requires = ["process"]);
// Per-tenant limits the database keeps, and what servers read to apply theirs.
pgrx::extension_sql_file!(
    "../../sql/limits.sql",
    name = "limits",
    requires = ["roles", "claim"]
);
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
        "roles",
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
        "limits",
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
        // The tests move time through triggers.now (test_support::freeze_clock).
        vec!["triggers.test_clock = on"]
    }
}
