//! `triggers serve` and `triggers worker`: bind, bring up the database, run workers
//! (and HTTP) until SIGINT/SIGTERM, stop.

use std::net::{SocketAddr, ToSocketAddrs};

use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::cli::{ServeArgs, WorkerArgs};
use crate::db;
use crate::error::StartupError;
use crate::http::{app, AppState};
use crate::workers::delivery;
use crate::workers::processing::{self, WorkerOptions};
use crate::workers::tasks::Tasks;

/// How long `serve` waits at start for the key announcements to be followed.
const KEYS_FOLLOWED_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs the server until a shutdown signal, then stops the workers (after their
/// batch in flight) and the embedded cluster if any.
pub async fn serve(args: ServeArgs) -> Result<(), StartupError> {
    // Bind first: a busy port fails fast, before any cluster is created or started.
    let listener = bind(&args.listen)?;
    let addr = listener
        .local_addr()
        .map_err(|e| StartupError::Listen(e.to_string()))?;
    // Listen for signals before serving, so none between "listening" and serve is lost.
    let mut signals = Signals::new()?;
    let mut database = db::open(&args.db, false, db::Role::Serves).await?;
    let first_key = match &database.cluster {
        Some(cluster) if cluster.created() => database
            .client
            .create_api_key("default", "first-start")
            .await
            .ok(),
        _ => None,
    };

    let settings = args
        .limits
        .settings(std::time::Duration::from_secs(args.keep_alive));
    let state = AppState::over(database.client.clone(), database.shards.clone(), settings);
    // Serve once keys can be checked from memory (until then each request's key is
    // looked up, and /ready says 503).
    if !state.keys.wait_current(KEYS_FOLLOWED_WITHIN).await {
        tracing::warn!(
            "not following the database's key announcements yet; every key is looked up until then"
        );
    }
    println!(
        "triggers listening on http://{addr} (database: {})",
        database.description
    );
    if let Some(key) = first_key {
        println!("First start: an API key for tenant \"default\" (shown only now; make more with `triggers keys create`):");
        println!("  {key}");
        println!("Dashboard: open http://{addr}/ and paste the key.");
        println!("Try it:");
        println!(
            "  curl -s http://{addr}/events -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' -d '{{\"payload\":{{\"hello\":\"world\"}}}}'"
        );
    }
    tracing::info!(%addr, database = %database.description, workers = args.workers, "listening");
    let (workers, deliveries) = node_workers(&database, args.workers, &args.webhooks);
    let hub = state.live.clone();
    let service = app(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let result = axum::serve(listener, service)
        .with_graceful_shutdown(async move {
            signals.recv().await;
            // Open live streams would hold the graceful shutdown forever: end them.
            hub.close();
        })
        .await
        .map_err(|e| StartupError::Listen(e.to_string()));
    workers.stop().await;
    deliveries.stop().await;
    if let Some(cluster) = database.cluster.as_mut() {
        cluster.stop();
        tracing::info!("embedded cluster stopped");
    }
    result
}

/// Runs workers only, until a shutdown signal.
pub async fn worker(args: WorkerArgs) -> Result<(), StartupError> {
    let mut signals = Signals::new()?;
    let mut database = db::open(&args.db, true, db::Role::Works).await?;
    println!(
        "triggers: {} workers on {}",
        args.workers, database.description
    );
    let (workers, deliveries) = node_workers(&database, args.workers, &args.webhooks);
    signals.recv().await;
    workers.stop().await;
    deliveries.stop().await;
    if let Some(cluster) = database.cluster.as_mut() {
        cluster.stop();
    }
    Ok(())
}

/// SIGINT and SIGTERM, registered up front.
struct Signals {
    terminate: Signal,
    interrupt: Signal,
}

impl Signals {
    fn new() -> Result<Signals, StartupError> {
        let handle = |kind: SignalKind, name: &str| {
            signal(kind).map_err(|e| StartupError::Listen(format!("cannot handle {name}: {e}")))
        };
        Ok(Signals {
            terminate: handle(SignalKind::terminate(), "SIGTERM")?,
            interrupt: handle(SignalKind::interrupt(), "SIGINT")?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.terminate.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = self.interrupt.recv() => tracing::info!("SIGINT: shutting down"),
        }
    }
}

/// The processing workers (`n`) and the webhook delivery workers of the database, or of
/// each node of a sharded layout.
fn node_workers(
    database: &db::Database,
    n: u16,
    webhooks: &crate::cli::WebhookArgs,
) -> (Tasks, Tasks) {
    let (mut workers, mut deliveries) = (Vec::new(), Vec::new());
    for node in database.shards.nodes() {
        workers.push(processing_workers(node, n));
        deliveries.push(delivery::delivery_workers(node, webhooks));
    }
    (Tasks::join(workers), Tasks::join(deliveries))
}

/// The processing workers: each with a connection of its own (the claim keeps state in
/// its session); stopped, each finishes the batch in flight.
fn processing_workers(client: &triggers_client::Client, n: u16) -> Tasks {
    Tasks::spawn(n.into(), |id, stopped| {
        processing::run(
            id,
            client.dedicated().unwrap_or_else(|| client.clone()),
            WorkerOptions::default(),
            stopped,
        )
    })
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
