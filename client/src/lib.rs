//! # triggers-client
//!
//! Async Rust access to a database with the `triggers` extension, over tokio-postgres
//! and a deadpool-postgres pool.
//!
//! ```no_run
//! # async fn demo() -> Result<(), triggers_client::Error> {
//! let client = triggers_client::Client::connect("postgres://app@localhost/app")?;
//! client.ping().await?;
//! println!("triggers {}", client.version().await?);
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod error;

pub use error::Error;

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Timeouts};

/// How long a call waits for a pooled connection, or for a new one to open, before it
/// gives up with [`Error::Unavailable`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// A handle to a database with the `triggers` extension. Cheap to clone; clones share
/// one connection pool.
#[derive(Clone)]
pub struct Client {
    pool: Pool,
}

impl Client {
    /// A client with its own pool for the database at `url` (a `postgres://` URL or a
    /// `key=value` connection string). No connection is opened until the first call.
    pub fn connect(url: &str) -> Result<Self, Error> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| Error::InvalidUrl(e.to_string()))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(DEFAULT_TIMEOUT);
        }
        Self::from_config(config, 16)
    }

    /// A client with its own pool of at most `max_size` connections for `config`.
    pub fn from_config(config: tokio_postgres::Config, max_size: usize) -> Result<Self, Error> {
        let manager = Manager::from_config(
            config,
            tokio_postgres::NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(max_size)
            .runtime(Runtime::Tokio1)
            .timeouts(Timeouts {
                wait: Some(DEFAULT_TIMEOUT),
                create: Some(DEFAULT_TIMEOUT),
                recycle: Some(DEFAULT_TIMEOUT),
            })
            .build()
            .map_err(|e| Error::InvalidUrl(e.to_string()))?;
        Ok(Self { pool })
    }

    /// A client over a pool the caller already has.
    pub fn from_pool(pool: Pool) -> Self {
        Self { pool }
    }

    /// The pool this client draws connections from.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Checks that the database answers and has the `triggers` extension.
    pub async fn ping(&self) -> Result<(), Error> {
        let conn = self.pool.get().await?;
        let row = conn
            .query_opt(
                "SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'triggers'",
                &[],
            )
            .await?;
        match row {
            Some(_) => Ok(()),
            None => Err(Error::ExtensionMissing),
        }
    }

    /// The version of the `triggers` extension installed in the database.
    pub async fn version(&self) -> Result<String, Error> {
        let conn = self.pool.get().await?;
        let row = conn.query_one("SELECT triggers.version()", &[]).await?;
        Ok(row.get(0))
    }
}
