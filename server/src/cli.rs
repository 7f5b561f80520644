//! The command line (SPEC §8). Every setting is a flag and an environment variable.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Postgres-native event ingestion and delivery.
#[derive(Debug, Parser)]
#[command(name = "triggers", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server and its workers. Without DATABASE_URL it creates (first
    /// time) and starts a private Postgres cluster under --data-dir and stops it on exit.
    Serve(ServeArgs),
    /// Run workers only (no HTTP): process the queue until SIGINT/SIGTERM.
    Worker(WorkerArgs),
    /// Manage API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage webhook endpoints.
    #[command(subcommand)]
    Endpoints(EndpointsCommand),
    /// Enqueue one event: triggers send '{"order": 42}'.
    Send(SendArgs),
    /// Print the metrics as JSON.
    Metrics(MetricsArgs),
    /// Follow the live stream: print each event stored from now (or after --from) as a
    /// JSON line with its position, until interrupted.
    Tail(TailArgs),
    /// A sharded layout's partitions (DATABASE_URL is the proxy): list them, or move
    /// one to another node.
    #[command(subcommand)]
    Partitions(PartitionsCommand),
}

/// Where the database is: DATABASE_URL, or the embedded cluster in --data-dir.
#[derive(Debug, Clone, Args)]
pub struct DbArgs {
    /// Use this existing database instead of the embedded cluster.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Data directory of the embedded Postgres cluster (ignored with DATABASE_URL).
    #[arg(long, env = "TRIGGERS_DATA_DIR", default_value = "./.triggers")]
    pub data_dir: PathBuf,

    /// pg_config of the Postgres whose binaries run the embedded cluster
    /// [default: the pg_config on PATH].
    #[arg(long, env = "TRIGGERS_PG_CONFIG")]
    pub pg_config: Option<PathBuf>,

    /// File holding the key webhook secrets are sealed with, kept out of the database
    /// (created, mode 0600, when missing) [default: <data-dir>.secrets-key].
    #[arg(long, env = "TRIGGERS_SECRETS_KEY_FILE")]
    pub secrets_key_file: Option<PathBuf>,

    /// The node databases of a sharded layout, comma-separated; DATABASE_URL is then the
    /// PL/Proxy proxy database (README → Scale-out). Workers, webhook delivery and the
    /// live stream run on each node.
    #[arg(
        long,
        env = "TRIGGERS_NODES",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub nodes: Vec<String>,
}

/// Settings of `triggers serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to serve HTTP on (host:port).
    #[arg(long, env = "TRIGGERS_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,

    /// Worker tasks looping on process_batch (0: this server only serves HTTP).
    #[arg(long, env = "TRIGGERS_WORKERS", default_value_t = 2, value_parser = clap::value_parser!(u16).range(0..=64))]
    pub workers: u16,

    /// Requests per minute per API key (0: no limit); over it, 429 with Retry-After.
    #[arg(long, env = "TRIGGERS_RATE_LIMIT", default_value_t = crate::http::DEFAULT_RATE_LIMIT)]
    pub rate_limit: u32,

    /// Seconds between keep-alive comments on an idle live stream (GET /inbox/stream).
    #[arg(long, env = "TRIGGERS_KEEP_ALIVE", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub keep_alive: u64,

    /// Seconds a key that authenticated is trusted without asking the database again
    /// (a revocation on any server empties the cache at once; 0: no cache).
    #[arg(long, env = "TRIGGERS_KEY_CACHE_TTL", default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=86400))]
    pub key_cache_ttl: u64,

    /// Failed authentications a client address may have per minute; past it, 429 with
    /// Retry-After until its minute ends (0: no limit).
    #[arg(long, env = "TRIGGERS_AUTH_FAILURES_PER_MINUTE", default_value_t = crate::http::FailedAuth::PER_MINUTE)]
    pub auth_failures_per_minute: u32,

    /// POST /events answers 503 with Retry-After while the queue holds this many
    /// messages or more (0: no bound).
    #[arg(long, env = "TRIGGERS_MAX_QUEUE_DEPTH", default_value_t = 1_000_000, value_parser = clap::value_parser!(i64).range(0..=1_000_000_000))]
    pub max_queue_depth: i64,

    /// Webhook delivery tasks.
    #[command(flatten)]
    pub webhooks: WebhookArgs,

    /// The database.
    #[command(flatten)]
    pub db: DbArgs,
}

/// Settings of the webhook delivery workers.
#[derive(Debug, Clone, Args)]
pub struct WebhookArgs {
    /// Webhook delivery tasks (0: this process sends no webhooks).
    #[arg(long, env = "TRIGGERS_WEBHOOK_WORKERS", default_value_t = 4, value_parser = clap::value_parser!(u16).range(0..=64))]
    pub webhook_workers: u16,

    /// Let webhooks go to loopback, private, link-local and other non-public addresses
    /// (refused by default, checked on the address actually connected to).
    #[arg(long, env = "TRIGGERS_WEBHOOK_ALLOW_PRIVATE")]
    pub webhook_allow_private: bool,

    /// Seconds a receiver has to answer a delivery, body included; then the attempt
    /// has failed and is retried on the schedule.
    #[arg(long, env = "TRIGGERS_WEBHOOK_TIMEOUT", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub webhook_timeout: u64,
}

/// Settings of `triggers worker`.
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// Worker tasks looping on process_batch.
    #[arg(long, env = "TRIGGERS_WORKERS", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub workers: u16,

    /// Webhook delivery tasks.
    #[command(flatten)]
    pub webhooks: WebhookArgs,

    /// The database.
    #[command(flatten)]
    pub db: DbArgs,
}

/// `triggers keys ...`
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create an API key for a tenant and print it (it is shown only this once).
    Create {
        /// The tenant the key belongs to.
        #[arg(long, default_value = "default")]
        tenant: String,
        /// A name to recognise the key by.
        #[arg(long, default_value = "cli")]
        name: String,
        /// When the key stops working (RFC 3339, e.g. 2027-01-01T00:00:00Z) [default: never].
        #[arg(long, value_parser = parse_time)]
        expires_at: Option<chrono::DateTime<chrono::Utc>>,
        /// The database.
        #[command(flatten)]
        db: DbArgs,
    },
}

/// `triggers endpoints ...`
#[derive(Debug, Subcommand)]
pub enum EndpointsCommand {
    /// Create a webhook endpoint for a tenant and print its id and secret (the secret
    /// is shown only this once).
    Create {
        /// Where deliveries are POSTed (http:// or https://).
        #[arg(long)]
        url: String,
        /// The tenant the endpoint belongs to.
        #[arg(long, default_value = "default")]
        tenant: String,
        /// Only events on this stream.
        #[arg(long)]
        stream: Option<String>,
        /// Only events whose metadata contains this JSON object.
        #[arg(long)]
        metadata: Option<String>,
        /// A note to recognise it by.
        #[arg(long)]
        description: Option<String>,
        /// The database.
        #[command(flatten)]
        db: DbArgs,
    },
    /// Print a tenant's endpoints as JSON lines (never their secrets).
    List {
        /// The tenant.
        #[arg(long, default_value = "default")]
        tenant: String,
        /// The database.
        #[command(flatten)]
        db: DbArgs,
    },
    /// Give an endpoint a new secret and print it; the previous one signs too for 24 h.
    RotateSecret {
        /// The endpoint's id.
        id: uuid::Uuid,
        /// The tenant.
        #[arg(long, default_value = "default")]
        tenant: String,
        /// The database.
        #[command(flatten)]
        db: DbArgs,
    },
    /// Delete an endpoint and its deliveries.
    Delete {
        /// The endpoint's id.
        id: uuid::Uuid,
        /// The tenant.
        #[arg(long, default_value = "default")]
        tenant: String,
        /// The database.
        #[command(flatten)]
        db: DbArgs,
    },
}

/// `triggers partitions ...`
#[derive(Debug, Subcommand)]
pub enum PartitionsCommand {
    /// Print each partition of the proxy's cluster as a JSON line: its entry, and
    /// whether it is paused (moving).
    List {
        /// The database (DATABASE_URL: the proxy).
        #[command(flatten)]
        db: DbArgs,
    },
    /// Move one partition's tenants to another node without losing or repeating an
    /// event: pause it at the proxy, fence it on --from, copy it to --to, switch its
    /// entry, delete it from --from, resume. Run it again to finish a move cut short.
    Move(PartitionsMoveArgs),
}

/// Settings of `triggers partitions move`.
#[derive(Debug, Clone, Args)]
pub struct PartitionsMoveArgs {
    /// The partition (0 to partitions - 1; `SELECT triggers.partition_of(tenant, n)`).
    pub partition: u32,
    /// The node that serves it now (a URL this command can connect to).
    #[arg(long)]
    pub from: String,
    /// The node taking it over (the extension is created there if missing).
    #[arg(long)]
    pub to: String,
    /// --to as the proxy's cluster should name it (libpq key=value, no user or
    /// password: the user mapping gives them) [default: the existing entry of that
    /// database, else `dbname=… host=… port=…` from --to].
    #[arg(long)]
    pub entry: Option<String>,
    /// The other proxy databases of the layout, comma-separated: the partition is
    /// paused, switched and resumed in each as in DATABASE_URL's.
    #[arg(long, value_delimiter = ',')]
    pub other_proxies: Vec<String>,
    /// Give up a move cut short before its rows were copied: the partition is --from's
    /// again, and served.
    #[arg(long)]
    pub abort: bool,
    /// The database (DATABASE_URL: the proxy).
    #[command(flatten)]
    pub db: DbArgs,
}

/// Settings of `triggers send`.
#[derive(Debug, Clone, Args)]
pub struct SendArgs {
    /// The payload: a JSON object.
    pub payload: String,
    /// The tenant.
    #[arg(long, default_value = "default")]
    pub tenant: String,
    /// Metadata: a JSON object.
    #[arg(long)]
    pub metadata: Option<String>,
    /// An idempotency key.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// An ordering stream.
    #[arg(long)]
    pub stream: Option<String>,
    /// The database.
    #[command(flatten)]
    pub db: DbArgs,
}

/// Settings of `triggers metrics`.
#[derive(Debug, Clone, Args)]
pub struct MetricsArgs {
    /// One tenant's metrics [default: all tenants].
    #[arg(long)]
    pub tenant: Option<String>,
    /// The database.
    #[command(flatten)]
    pub db: DbArgs,
}

/// Settings of `triggers tail`.
#[derive(Debug, Clone, Args)]
pub struct TailArgs {
    /// The tenant whose events to follow.
    #[arg(long, default_value = "default")]
    pub tenant: String,
    /// Only events on this stream.
    #[arg(long)]
    pub stream: Option<String>,
    /// Resume after this position (the `position` of a line printed before) [default: now].
    #[arg(long, value_parser = parse_position)]
    pub from: Option<triggers_client::Position>,
    /// Stop after this many events [default: never].
    #[arg(long)]
    pub count: Option<u64>,
    /// The database.
    #[command(flatten)]
    pub db: DbArgs,
}

fn parse_time(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| format!("not an RFC 3339 time ({e}), e.g. 2027-01-01T00:00:00Z"))
}

fn parse_position(text: &str) -> Result<triggers_client::Position, String> {
    text.parse()
        .map_err(|e: triggers_client::NotAPosition| e.to_string())
}
