//! Why `triggers serve` (or a one-shot command) could not start: one line on stderr and
//! a non-zero exit. The HTTP API's errors are in http/error.rs.

/// Why `triggers serve` could not start. Its `Display` is the one line a user sees.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// No usable `pg_config` for the embedded cluster.
    #[error("pg_config: {0}")]
    PgConfig(String),
    /// The data directory cannot be used.
    #[error("data directory: {0}")]
    DataDir(String),
    /// The embedded Postgres could not be created or started.
    #[error("embedded postgres: {0}")]
    Postgres(String),
    /// The database (embedded or `DATABASE_URL`) refused us.
    #[error("database: {0}")]
    Database(String),
    /// The HTTP listener could not be opened.
    #[error("listen: {0}")]
    Listen(String),
    /// A one-shot command was refused (the extension's message says why).
    #[error("{0}")]
    Command(String),
}

/// The HTTP error codes, at the path they had before they moved to `http::error`.
pub use crate::http::error::ErrorCode;
