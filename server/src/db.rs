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
    let key = secrets_key(args)?;
    if let Some(url) = args
        .database_url
        .as_deref()
        .filter(|u| !u.trim().is_empty())
    {
        let client = connect_url(url, &key).await?;
        return Ok(Database {
            client,
            cluster: None,
            description: "DATABASE_URL".into(),
        });
    }
    if attach {
        if let Some(config) = Cluster::running(&args.data_dir) {
            let client = triggers_client::Client::from_config(with_key(config, &key), 4)
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
    let client = triggers_client::Client::from_config(with_key(cluster.config(), &key), 16)
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
async fn connect_url(url: &str, key: &str) -> Result<triggers_client::Client, StartupError> {
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|e| StartupError::Database(format!("DATABASE_URL: invalid URL: {e}")))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(triggers_client::DEFAULT_TIMEOUT);
    }
    let client = triggers_client::Client::from_config(with_key(config, key), 16)
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

/// The key webhook secrets are sealed with: read from `--secrets-key-file` (default
/// `<data-dir>.secrets-key`), or made there (32 random bytes, hex, mode 0600) the
/// first time. It never enters the database: each connection carries it as the session
/// setting `triggers.secrets_key` (sql/webhooks.sql).
fn secrets_key(args: &DbArgs) -> Result<String, StartupError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = args.secrets_key_file.clone().unwrap_or_else(|| {
        let mut name = args.data_dir.as_os_str().to_owned();
        name.push(".secrets-key");
        std::path::PathBuf::from(name)
    });
    let fail = |what: &str, e: std::io::Error| {
        StartupError::Database(format!("secrets key: {what} {}: {e}", path.display()))
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let key = text.trim().to_string();
            if key.len() < 32 || key.chars().any(|c| c.is_whitespace() || c == '\\') {
                return Err(StartupError::Database(format!(
                    "secrets key: {} must hold one key of 32 or more characters, without spaces",
                    path.display()
                )));
            }
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key: String = (0..32)
                .map(|_| format!("{:02x}", rand::random::<u8>()))
                .collect();
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| fail("cannot create", e))?;
            writeln!(file, "{key}").map_err(|e| fail("cannot write", e))?;
            tracing::info!(path = %path.display(), "made the secrets key webhook secrets are sealed with; keep it with the database's backups, apart from them");
            Ok(key)
        }
        Err(e) => Err(fail("cannot read", e)),
    }
}

/// `config` with the secrets key as a session setting of every connection.
fn with_key(mut config: tokio_postgres::Config, key: &str) -> tokio_postgres::Config {
    let setting = format!("-c triggers.secrets_key={key}");
    let options = match config.get_options() {
        Some(existing) if !existing.is_empty() => format!("{existing} {setting}"),
        _ => setting,
    };
    config.options(&options);
    config
}
