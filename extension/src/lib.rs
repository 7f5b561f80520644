//! # triggers — the Postgres extension
//!
//! Event ingestion and delivery inside Postgres, on pgmq. This crate is the thin pgrx
//! layer: the schema lives in `sql/` at the repository root, each SQL surface has one
//! file under [`api`], and anything without Postgres in it belongs in plain Rust that
//! `cargo test` reaches.
//!
//! ```sql
//! CREATE EXTENSION triggers CASCADE;   -- also creates pgmq and the queues
//! SELECT triggers.version();
//! ```

pub mod api;

::pgrx::pg_module_magic!(name, version);

// The tables, the settings row and the pgmq queues exist before any function.
pgrx::extension_sql_file!("../../sql/bootstrap.sql", name = "bootstrap", bootstrap);
// The SQL API, last, once the Rust helpers it calls exist.
pgrx::extension_sql_file!("../../sql/api.sql", name = "api", finalize);

#[cfg(any(test, feature = "pg_test"))]
mod api_tests;
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
