use deadpool_postgres::PoolError;

/// Everything a call can fail with. Variants are chosen from connection state and
/// SQLSTATEs, never from message text.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The connection URL or pool settings could not be used.
    #[error("invalid database URL: {0}")]
    InvalidUrl(String),
    /// No connection could be had: the database is down, unreachable or overloaded.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database answers but the `triggers` extension is not installed in it.
    #[error("the triggers extension is not installed in this database")]
    ExtensionMissing,
    /// Any other database error.
    #[error("database error: {0}")]
    Database(#[from] tokio_postgres::Error),
}

impl From<PoolError> for Error {
    fn from(e: PoolError) -> Self {
        match e {
            PoolError::Backend(e) if e.as_db_error().is_some() => Error::Database(e),
            other => Error::Unavailable(other.to_string()),
        }
    }
}

impl Error {
    /// True when the error says the database could not be reached, as opposed to a
    /// database that answered with an error.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::Unavailable(_) => true,
            Error::Database(e) => e.is_closed() || e.as_db_error().is_none(),
            _ => false,
        }
    }
}
