//! `triggers serve`: bind, bring up the database, serve until SIGINT/SIGTERM, stop.

use std::net::{SocketAddr, ToSocketAddrs};

use tokio::signal::unix::{signal, SignalKind};

use crate::cli::ServeArgs;
use crate::db;
use crate::embedded::{Cluster, ClusterOptions};
use crate::error::StartupError;
use crate::http::{app, AppState};
use crate::worker::{self, WorkerOptions};

/// Runs the server until a shutdown signal, then stops the embedded cluster if any.
pub async fn serve(args: ServeArgs) -> Result<(), StartupError> {
    // Bind first: a busy port fails fast, before any cluster is created or started.
    let listener = bind(&args.listen)?;
    let addr = listener
        .local_addr()
        .map_err(|e| StartupError::Listen(e.to_string()))?;
    // Listen for signals before serving, so none between "listening" and serve is lost.
    let mut terminate = signal(SignalKind::terminate())
        .map_err(|e| StartupError::Listen(format!("cannot handle SIGTERM: {e}")))?;
    let mut interrupt = signal(SignalKind::interrupt())
        .map_err(|e| StartupError::Listen(format!("cannot handle SIGINT: {e}")))?;

    let database_url = args.database_url.filter(|url| !url.trim().is_empty());
    let (client, mut cluster, database) = match database_url {
        Some(url) => (connect_url(&url).await?, None, "DATABASE_URL".to_string()),
        None => {
            let options = ClusterOptions {
                data_dir: args.data_dir,
                pg_config: args.pg_config,
            };
            let cluster = Cluster::start(&options).await?;
            let client = triggers_client::Client::from_config(cluster.config(), 16)
                .map_err(|e| StartupError::Database(e.to_string()))?;
            let database = format!("embedded cluster in {}", cluster.dir().display());
            (client, Some(cluster), database)
        }
    };

    println!("triggers listening on http://{addr} (database: {database})");
    tracing::info!(%addr, %database, "listening");
    let shutdown = async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = interrupt.recv() => tracing::info!("SIGINT: shutting down"),
        }
    };
    let (stop_workers, workers_stopped) = tokio::sync::watch::channel(false);
    let workers: Vec<_> = (0..args.workers as usize)
        .map(|id| {
            tokio::spawn(worker::run(
                id,
                client.clone(),
                WorkerOptions::default(),
                workers_stopped.clone(),
            ))
        })
        .collect();
    let result = axum::serve(listener, app(AppState { client }))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| StartupError::Listen(e.to_string()));
    // Workers finish the batch in flight, then exit; only then does Postgres stop.
    let _ = stop_workers.send(true);
    for w in workers {
        let _ = w.await;
    }
    if let Some(cluster) = cluster.as_mut() {
        cluster.stop();
        tracing::info!("embedded cluster stopped");
    }
    result
}

fn bind(listen: &str) -> Result<tokio::net::TcpListener, StartupError> {
    let addrs: Vec<SocketAddr> = listen
        .to_socket_addrs()
        .map_err(|e| StartupError::Listen(format!("bad --listen address '{listen}': {e}")))?
        .collect();
    let mut last = None;
    for addr in addrs {
        match std::net::TcpListener::bind(addr) {
            Ok(listener) => {
                listener
                    .set_nonblocking(true)
                    .map_err(|e| StartupError::Listen(e.to_string()))?;
                return tokio::net::TcpListener::from_std(listener)
                    .map_err(|e| StartupError::Listen(e.to_string()));
            }
            Err(e) => last = Some(format!("cannot listen on {addr}: {e}")),
        }
    }
    Err(StartupError::Listen(last.unwrap_or_else(|| {
        format!("'{listen}' resolves to no address")
    })))
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
    db::ensure_extension(&conn).await?;
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
