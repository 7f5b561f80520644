//! The command line (SPEC §8). Every setting is a flag and an environment variable.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::http::defaults;

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

    /// Seconds between keep-alive comments on an idle live stream (GET /inbox/stream).
    #[arg(long, env = "TRIGGERS_KEEP_ALIVE", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub keep_alive: u64,

    /// The limits that keep one client or tenant from taking the server from the others.
    #[command(flatten)]
    pub limits: LimitArgs,

    /// Webhook delivery tasks.
    #[command(flatten)]
    pub webhooks: WebhookArgs,

    /// The database.
    #[command(flatten)]
    pub db: DbArgs,
}

/// The limits of `triggers serve` (README → Limits). The per-tenant ones are defaults: a
/// tenant's row in `triggers.tenants` may set its own.
#[derive(Debug, Clone, Args)]
pub struct LimitArgs {
    /// Requests per minute per API key (0: no limit); over it, 429 with Retry-After.
    /// Counted once the key is checked: a wrong key spends no one's budget.
    #[arg(long, env = "TRIGGERS_RATE_LIMIT", default_value_t = defaults::RATE_LIMIT)]
    pub rate_limit: u32,

    /// Events per minute per tenant, a batch counting each of its events (0: no limit);
    /// over it, 429 RATE_LIMIT_EXCEEDED with Retry-After.
    #[arg(long, env = "TRIGGERS_TENANT_EVENTS_PER_MINUTE", default_value_t = defaults::EVENTS_PER_MINUTE)]
    pub tenant_events_per_minute: u32,

    /// Events a tenant may have waiting in the queue, its share of --max-queue-depth
    /// (0: no limit); at it, 429 LIMIT_EXCEEDED, while other tenants' events go in.
    #[arg(long, env = "TRIGGERS_TENANT_MAX_QUEUED", default_value_t = defaults::MAX_QUEUED, value_parser = clap::value_parser!(i64).range(0..=1_000_000_000))]
    pub tenant_max_queued: i64,

    /// Requests of one tenant using the database at once (0: no limit); more wait for a
    /// turn up to 5 s, then 429 LIMIT_EXCEEDED. Sending events is not counted (it goes
    /// through group commit, bounded by --tenant-events-per-minute).
    #[arg(long, env = "TRIGGERS_TENANT_CONCURRENCY", default_value_t = defaults::CONCURRENCY)]
    pub tenant_concurrency: u32,

    /// Live streams (GET /inbox/stream) a tenant may have open on this server (0: no
    /// limit); past it, 429 LIMIT_EXCEEDED.
    #[arg(long, env = "TRIGGERS_TENANT_MAX_LIVE_STREAMS", default_value_t = defaults::MAX_LIVE_STREAMS)]
    pub tenant_max_live_streams: u32,

    /// POST /events answers 503 with Retry-After while the queue holds this many
    /// messages or more, over all tenants (0: no bound).
    #[arg(long, env = "TRIGGERS_MAX_QUEUE_DEPTH", default_value_t = defaults::MAX_QUEUE_DEPTH, value_parser = clap::value_parser!(i64).range(0..=1_000_000_000))]
    pub max_queue_depth: i64,

    /// Bytes of payload and metadata an inbox page or a live-stream replay page holds
    /// at most (a page holds at least one event and ends early, with its cursor).
    #[arg(long, env = "TRIGGERS_MAX_PAGE_BYTES", default_value_t = defaults::PAGE_BYTES, value_parser = clap::value_parser!(i32).range(1024..=268_435_456))]
    pub max_page_bytes: i32,

    /// Seconds a request's SQL statement may run before Postgres cancels it (0: no
    /// limit). A client that disconnects cancels its statement at once.
    #[arg(long, env = "TRIGGERS_STATEMENT_TIMEOUT", default_value_t = defaults::STATEMENT_TIMEOUT_S, value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub statement_timeout: u64,

    /// Seconds a key that authenticated is trusted without asking the database again
    /// (a revocation on any server drops it at once; 0: no cache).
    #[arg(long, env = "TRIGGERS_KEY_CACHE_TTL", default_value_t = defaults::KEY_CACHE_TTL_S, value_parser = clap::value_parser!(u64).range(0..=86400))]
    pub key_cache_ttl: u64,

    /// Authentications with a key id this server does not know (each costs a database
    /// lookup) that one client address may make per minute; past it, 429 with
    /// Retry-After (0: no limit). Keys the server knows are never refused by it.
    #[arg(long, env = "TRIGGERS_AUTH_FAILURES_PER_MINUTE", default_value_t = defaults::AUTH_FAILURES_PER_MINUTE)]
    pub auth_failures_per_minute: u32,

    /// Proxies (load balancers) whose Forwarded / X-Forwarded-For headers say who the
    /// client is, comma-separated addresses or CIDRs (e.g. 10.0.0.0/8); from any other
    /// peer those headers are ignored. IPv6 clients are counted per /64.
    #[arg(long, env = "TRIGGERS_TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: crate::guard::TrustedProxies,
}

impl LimitArgs {
    /// The server's settings from these flags.
    pub fn settings(&self, keep_alive: std::time::Duration) -> crate::http::Settings {
        crate::http::Settings {
            tenant: crate::guard::Limits {
                requests_per_minute: self.rate_limit,
                events_per_minute: self.tenant_events_per_minute,
                max_queued: self.tenant_max_queued,
                concurrency: self.tenant_concurrency,
                max_live_streams: self.tenant_max_live_streams,
            },
            key_cache_ttl: std::time::Duration::from_secs(self.key_cache_ttl),
            auth_failures_per_minute: self.auth_failures_per_minute,
            max_queue_depth: self.max_queue_depth,
            keep_alive,
            trusted_proxies: self.trusted_proxies.clone(),
            page_bytes: self.max_page_bytes,
            statement_timeout: std::time::Duration::from_secs(self.statement_timeout),
        }
    }
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

    /// Send webhooks through this HTTP(S) proxy (http://host:port). Without it no proxy
    /// is used, whatever HTTP_PROXY/HTTPS_PROXY/ALL_PROXY say. The proxy resolves and
    /// connects in the server's place, so it must refuse private addresses itself.
    #[arg(long, env = "TRIGGERS_WEBHOOK_PROXY", value_parser = parse_proxy)]
    pub webhook_proxy: Option<reqwest::Proxy>,
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

fn parse_proxy(text: &str) -> Result<reqwest::Proxy, String> {
    let url =
        url::Url::parse(text).map_err(|e| format!("not a URL ({e}), e.g. http://proxy:3128"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(
            "must be an http:// or https:// URL with a host, e.g. http://proxy:3128".into(),
        );
    }
    reqwest::Proxy::all(url).map_err(|e| e.to_string())
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
