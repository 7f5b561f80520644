//! The database's schema: the `triggers` extension (and pgmq, which it requires),
//! created where missing, for the embedded cluster and for DATABASE_URL alike.

use crate::error::StartupError;

/// Creates pgmq and triggers in the connected database unless they exist, and updates
/// an older triggers to the installed version (`ALTER EXTENSION triggers UPDATE`, through
/// the upgrade scripts). Serialised by an advisory lock so servers starting together do
/// not race. Nothing is asked of a database whose extension is current, so a server can
/// run as a role that may use the extension but not own it (README → Roles).
pub async fn ensure_extension(client: &tokio_postgres::Client) -> Result<(), StartupError> {
    if is_current(client, "triggers").await? {
        return Ok(());
    }
    client
        .batch_execute(
            "BEGIN;
             SELECT pg_advisory_xact_lock(hashtext('triggers: create extension'));
             CREATE EXTENSION IF NOT EXISTS triggers CASCADE;
             SET LOCAL client_min_messages = warning;
             ALTER EXTENSION triggers UPDATE;
             COMMIT;",
        )
        .await
        .map_err(|e| {
            let detail = e.as_db_error().map_or_else(|| e.to_string(), |d| d.message().to_string());
            StartupError::Database(format!(
                "cannot create or update the triggers extension: {detail} (scripts/setup.sh installs it into the system Postgres; \
                 a role that does not own it needs it created and current already)"
            ))
        })
}

/// Whether extension `name` is installed at the version the server's Postgres has.
async fn is_current(client: &tokio_postgres::Client, name: &str) -> Result<bool, StartupError> {
    Ok(client
        .query_opt(
            "SELECT 1 FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_available_extensions a
                ON a.name = e.extname WHERE e.extname = $1 AND e.extversion = a.default_version",
            &[&name],
        )
        .await
        .map_err(|e| StartupError::Database(e.to_string()))?
        .is_some())
}

/// Updates the connected proxy's `triggers_proxy` to the installed version.
pub async fn update_proxy(client: &tokio_postgres::Client) -> Result<(), StartupError> {
    if is_current(client, "triggers_proxy").await? {
        return Ok(());
    }
    client
        .batch_execute("SET client_min_messages = warning; ALTER EXTENSION triggers_proxy UPDATE")
        .await
        .map_err(|e| {
            StartupError::Database(format!("cannot update the triggers_proxy extension: {e}"))
        })
}

/// Whether the connected database (`what`, in messages) is a proxy (has `triggers_proxy`).
pub async fn is_proxy(client: &tokio_postgres::Client, what: &str) -> Result<bool, StartupError> {
    Ok(client
        .query_opt(
            "SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'triggers_proxy'",
            &[],
        )
        .await
        .map_err(|e| StartupError::Database(format!("{what}: {e}")))?
        .is_some())
}
