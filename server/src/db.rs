//! Opening the database a command uses: DATABASE_URL, or the embedded cluster (in
//! place when another `triggers` runs it, else started here). Either way the database
//! has the extension afterwards (schema.rs).

use crate::cli::DbArgs;
use crate::embedded::{Cluster, ClusterOptions};
use crate::error::StartupError;
use crate::schema;

/// The database a command works on.
pub struct Database {
    /// The client over it.
    pub client: triggers_client::Client,
    /// The embedded cluster, when this process started it (stopped on drop).
    pub cluster: Option<Cluster>,
    /// Where it is, for messages.
    pub description: String,
}

/// Opens DATABASE_URL, or the embedded cluster: started here, or, with `attach`,
/// used in place when another `triggers` process already runs it.
pub async fn open(args: &DbArgs, attach: bool) -> Result<Database, StartupError> {
    if let Some(url) = args
        .database_url
        .as_deref()
        .filter(|u| !u.trim().is_empty())
    {
        let client = connect_url(url).await?;
        return Ok(Database {
            client,
            cluster: None,
            description: "DATABASE_URL".into(),
        });
    }
    if attach {
        if let Some(config) = Cluster::running(&args.data_dir) {
            let client = triggers_client::Client::from_config(config, 4)
                .map_err(|e| StartupError::Database(e.to_string()))?;
            let description = format!("running embedded cluster in {}", args.data_dir.display());
            return Ok(Database {
                client,
                cluster: None,
                description,
            });
        }
    }
    let options = ClusterOptions {
        data_dir: args.data_dir.clone(),
        pg_config: args.pg_config.clone(),
    };
    let cluster = Cluster::start(&options).await?;
    let client = triggers_client::Client::from_config(cluster.config(), 16)
        .map_err(|e| StartupError::Database(e.to_string()))?;
    let description = format!("embedded cluster in {}", cluster.dir().display());
    Ok(Database {
        client,
        cluster: Some(cluster),
        description,
    })
}

/// A client for DATABASE_URL, checked by opening a connection and creating the
/// extensions if they are missing.
async fn connect_url(url: &str) -> Result<triggers_client::Client, StartupError> {
    let client = triggers_client::Client::connect(url)
        .map_err(|e| StartupError::Database(format!("DATABASE_URL: {e}")))?;
    let conn = client.pool().get().await.map_err(|e| {
        // deadpool's own wrapping ("Error occurred while creating a new object") says
        // nothing a user can act on; the driver's error and its causes do.
        let why = match &e {
            deadpool_postgres::PoolError::Backend(e) => source_chain(e),
            other => other.to_string(),
        };
        StartupError::Database(format!(
            "cannot connect to DATABASE_URL ({}): {why}",
            where_(url)
        ))
    })?;
    schema::ensure_extension(&conn).await?;
    Ok(client)
}

/// Host and port of a connection URL, never its password.
fn where_(url: &str) -> String {
    let Ok(config) = url.parse::<tokio_postgres::Config>() else {
        return "?".to_string();
    };
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}")
}

/// An error and its causes on one line ("error connecting to server: Connection refused").
fn source_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
