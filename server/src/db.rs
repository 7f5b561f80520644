//! Opening the database a command uses: DATABASE_URL, or the embedded cluster (in
//! place when another `triggers` runs it, else started here). Either way the database
//! has the extension afterwards (schema.rs).

use std::path::{Path, PathBuf};

use crate::cli::DbArgs;
use crate::embedded::{Cluster, ClusterOptions};
use crate::error::StartupError;
use crate::schema;

/// The database a command works on.
pub struct Database {
    /// The client over it (in a sharded layout, the proxy's).
    pub client: triggers_client::Client,
    /// The nodes (of a sharded layout, `--nodes`; else the one database), and which
    /// serves which tenant.
    pub shards: crate::shards::Shards,
    /// The embedded cluster, when this process started it (stopped on drop).
    pub cluster: Option<Cluster>,
    /// Where it is, for messages.
    pub description: String,
}

/// What a command does with the database, which decides what a sharded layout needs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Calls the SQL API only (keys, send, metrics): a proxy alone will do.
    Calls,
    /// Runs workers (`triggers worker`): on a node's session, so with a proxy the nodes
    /// are needed; the nodes alone will do.
    Works,
    /// Serves the API and runs workers and the live stream (`triggers serve`): with
    /// nodes, the proxy too.
    Serves,
}

/// Opens DATABASE_URL, or the embedded cluster: started here, or, with `attach`,
/// used in place when another `triggers` process already runs it. With `--nodes`,
/// DATABASE_URL is a proxy and the nodes are opened too (a worker may have the nodes
/// alone).
pub async fn open(args: &DbArgs, attach: bool, role: Role) -> Result<Database, StartupError> {
    let key = match secrets_key(args)? {
        (key, None) => key,
        (new, Some(path)) => keep(new, &path)?,
    };
    let url = args
        .database_url
        .as_deref()
        .filter(|u| !u.trim().is_empty());
    if !args.nodes.is_empty() {
        let mut nodes = Vec::new();
        for (i, node) in args.nodes.iter().enumerate() {
            let what = format!("--nodes entry {}", i + 1);
            nodes.push(connect_url(node, &key, &what, Schema::Node).await?.0);
        }
        let Some(url) = url else {
            if role == Role::Serves {
                return Err(StartupError::Database(
                    "--nodes needs DATABASE_URL: the proxy database (with the triggers_proxy extension)".into(),
                ));
            }
            return Ok(Database {
                client: nodes[0].clone(),
                description: format!("{} nodes", nodes.len()),
                shards: crate::shards::Shards::nodes_only(nodes),
                cluster: None,
            });
        };
        let (proxy, _) = connect_url(url, &key, "DATABASE_URL", Schema::Proxy).await?;
        let shards = crate::shards::Shards::discover(proxy.clone(), nodes)
            .await
            .map_err(|e| StartupError::Database(format!("the proxy's partitions: {e}")))?;
        return Ok(Database {
            client: proxy,
            shards,
            cluster: None,
            description: format!("DATABASE_URL (proxy) over {} nodes", args.nodes.len()),
        });
    }
    if let Some(url) = url {
        let (client, found) = connect_url(url, &key, "DATABASE_URL", Schema::Node).await?;
        if role != Role::Calls && found == Schema::Proxy {
            return Err(StartupError::Database(
                "DATABASE_URL is a proxy database (triggers_proxy): give the nodes too, --nodes URL,URL,… \
                 (workers and the live stream run on each node)"
                    .into(),
            ));
        }
        return Ok(Database {
            shards: crate::shards::Shards::single(client.clone()),
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
                shards: crate::shards::Shards::single(client.clone()),
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
        shards: crate::shards::Shards::single(client.clone()),
        client,
        cluster: Some(cluster),
        description,
    })
}

/// A node database of a sharded layout, for an operator's command (no secrets key:
/// nothing is sealed or opened); the extension is created or updated there.
pub async fn node(url: &str, what: &str) -> Result<triggers_client::Client, StartupError> {
    Ok(connect_url(url, "", what, Schema::Node).await?.0)
}

/// A proxy database (with triggers_proxy), for an operator's command.
pub async fn proxy(url: &str, what: &str) -> Result<triggers_client::Client, StartupError> {
    Ok(connect_url(url, "", what, Schema::Proxy).await?.0)
}

/// What the database of a URL holds: asked for by the caller, found by [`connect_url`].
#[derive(Clone, Copy, PartialEq)]
enum Schema {
    /// The triggers extension (created or updated here).
    Node,
    /// The triggers_proxy extension (updated here; creating it needs the cluster's
    /// definition first, which is the operator's).
    Proxy,
}

/// A client for a URL (`what` names it in messages), checked by opening a connection
/// and creating or updating the extension the database must hold; and what the
/// database turned out to be (a proxy serves the API where a node is asked for, for
/// commands that only call it: keys, send).
async fn connect_url(
    url: &str,
    key: &str,
    what: &str,
    schema: Schema,
) -> Result<(triggers_client::Client, Schema), StartupError> {
    let client = triggers_client::Client::url_config(url)
        .and_then(|config| triggers_client::Client::from_config(with_key(config, key), 16))
        .map_err(|e| StartupError::Database(format!("{what}: {e}")))?;
    let conn = client.pool().get().await.map_err(|e| {
        // deadpool's own wrapping ("Error occurred while creating a new object") says
        // nothing a user can act on; the driver's error and its causes do.
        let why = match &e {
            deadpool_postgres::PoolError::Backend(e) => source_chain(e),
            other => other.to_string(),
        };
        StartupError::Database(format!("cannot connect to {what} ({}): {why}", where_(url)))
    })?;
    let found = if schema::is_proxy(&conn, what).await? {
        schema::update_proxy(&conn).await?;
        Schema::Proxy
    } else if schema == Schema::Proxy {
        return Err(StartupError::Database(format!(
            "{what} is not a proxy database: with --nodes it must have the triggers_proxy extension \
             (CREATE EXTENSION plproxy; CREATE SERVER triggers …; CREATE EXTENSION triggers_proxy; see README → Scale-out)"
        )));
    } else {
        schema::ensure_extension(&conn).await?;
        Schema::Node
    };
    Ok((client, found))
}

/// Host and port of a connection URL, never its password.
fn where_(url: &str) -> String {
    let Ok(config) = triggers_client::ConnectConfig::parse(url).map(|c| c.postgres) else {
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

/// The key webhook secrets are sealed with, from `--secrets-key-file` (default
/// `<data-dir>.secrets-key`); when that file does not exist yet, a new key (32 random
/// bytes, hex) and the file to keep it in ([`keep`]). It
/// never enters the database: each connection carries it as the session setting
/// `triggers.secrets_key` (sql/webhooks.sql).
fn secrets_key(args: &DbArgs) -> Result<(String, Option<PathBuf>), StartupError> {
    let path = args.secrets_key_file.clone().unwrap_or_else(|| {
        let mut name = args.data_dir.as_os_str().to_owned();
        name.push(".secrets-key");
        PathBuf::from(name)
    });
    match read_key(&path)? {
        Some(key) => Ok((key, None)),
        None => {
            let key = (0..32)
                .map(|_| format!("{:02x}", rand::random::<u8>()))
                .collect();
            Ok((key, Some(path)))
        }
    }
}

/// The key in `path`, or `None` when there is no such file. The file must be a regular
/// file (a symlink is refused) that only its owner can read.
fn read_key(path: &Path) -> Result<Option<String>, StartupError> {
    let Some(text) = crate::files::read(path)
        .map_err(|e| StartupError::Database(format!("secrets key: {e}")))?
    else {
        return Ok(None);
    };
    let key = text.trim().to_string();
    if key.len() < 32 || key.chars().any(|c| c.is_whitespace() || c == '\\') {
        return Err(StartupError::Database(format!(
            "secrets key: {} must hold one key of 32 or more characters, without spaces",
            path.display()
        )));
    }
    Ok(Some(key))
}

/// Writes a new key to `path` (mode 0600) unless another process got there first, in
/// which case that key is the one: returns the key to use. The file appears whole or
/// not at all (written aside, then linked into place); neither it nor the file aside is
/// ever written through something placed there before ([`crate::files::create_new`]).
fn keep(key: String, path: &Path) -> Result<String, StartupError> {
    let mut aside = path.as_os_str().to_owned();
    aside.push(format!(".{}", std::process::id()));
    let aside = PathBuf::from(aside);
    crate::files::create_new(&aside, format!("{key}\n").as_bytes())
        .map_err(|e| StartupError::Database(format!("secrets key: cannot create it: {e}")))?;
    let linked = std::fs::hard_link(&aside, path);
    let _ = std::fs::remove_file(&aside);
    match linked {
        Ok(()) => {
            tracing::info!(path = %path.display(), "made the key webhook secrets are sealed with; back it up apart from the database");
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            read_key(path)?.ok_or_else(|| {
                StartupError::Database(format!("secrets key: cannot read {}: {e}", path.display()))
            })
        }
        Err(e) => Err(StartupError::Database(format!(
            "secrets key: cannot create {}: {e}",
            path.display()
        ))),
    }
}

/// `config` with the secrets key as a session setting of every connection.
pub fn with_key(
    config: impl Into<triggers_client::ConnectConfig>,
    key: &str,
) -> triggers_client::ConnectConfig {
    let mut config = config.into();
    if key.is_empty() {
        return config;
    }
    let setting = format!("-c triggers.secrets_key={key}");
    let options = match config.postgres.get_options() {
        Some(existing) if !existing.is_empty() => format!("{existing} {setting}"),
        _ => setting,
    };
    config.postgres.options(&options);
    config
}
