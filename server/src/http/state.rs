//! [`AppState`]: what every handler can reach (the database clients, group commit, the
//! key store, the per-tenant limits, the queue's bound, the live stream), and
//! [`Settings`], the limits it is built with (`triggers serve`'s flags).

use std::time::Duration;

use triggers_client::Client;

use crate::guard::{KeyStore, Limits, Tenants, TrustedProxies};
use crate::services::group::GroupCommit;
use crate::services::live::Live;
use crate::services::queue_bound::QueueBound;
use crate::shards::Shards;

/// Connections the API's calls share (each tenant holds at most its concurrency).
pub const API_CONNECTIONS: usize = 16;
/// Connections key lookups have to themselves, so that no tenant's slow queries can
/// hold them.
pub const AUTH_CONNECTIONS: usize = 4;

/// The limits the server applies; [`Settings::default`] is `triggers serve`'s.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Per-tenant defaults (`triggers.tenants` overrides them per tenant); its
    /// `requests_per_minute` is `--rate-limit`, per API key.
    pub tenant: Limits,
    /// How long a key that authenticated is trusted from memory (0: never).
    pub key_cache_ttl: Duration,
    /// Lookups of unknown key ids per client address per minute (0: no limit).
    pub auth_failures_per_minute: u32,
    /// The queue's bound over all tenants (0: none).
    pub max_queue_depth: i64,
    /// The live stream's keep-alive interval.
    pub keep_alive: Duration,
    /// Proxies whose `Forwarded`/`X-Forwarded-For` say who the client is.
    pub trusted_proxies: TrustedProxies,
    /// The most an inbox page or a live-stream replay page holds, in bytes (at least
    /// one event).
    pub page_bytes: i32,
    /// The longest a statement of a request may run (0: no limit).
    pub statement_timeout: Duration,
}

/// The defaults of `triggers serve`'s flags (what a small SaaS would pick), one per limit.
pub mod defaults {
    /// Requests per minute per API key.
    pub const RATE_LIMIT: u32 = 1000;
    /// Events per minute per tenant (1,000 a second).
    pub const EVENTS_PER_MINUTE: u32 = 60_000;
    /// Events a tenant may have waiting in the queue: a tenth of the queue's bound.
    pub const MAX_QUEUED: i64 = 100_000;
    /// A tenant's requests using the database at once: half the API's connections.
    pub const CONCURRENCY: u32 = 8;
    /// Live streams a tenant may have open on one server.
    pub const MAX_LIVE_STREAMS: u32 = 20;
    /// Lookups of unknown key ids per client address per minute.
    pub const AUTH_FAILURES_PER_MINUTE: u32 = 30;
    /// The queue's bound over all tenants.
    pub const MAX_QUEUE_DEPTH: i64 = 1_000_000;
    /// Bytes an inbox page holds at most.
    pub const PAGE_BYTES: i32 = 4 << 20;
    /// Seconds a request's statement may run.
    pub const STATEMENT_TIMEOUT_S: u64 = 30;
    /// Seconds a key that authenticated is trusted from memory.
    pub const KEY_CACHE_TTL_S: u64 = 10;
}

/// The default requests per minute per API key.
pub const DEFAULT_RATE_LIMIT: u32 = defaults::RATE_LIMIT;

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            tenant: Limits {
                requests_per_minute: defaults::RATE_LIMIT,
                events_per_minute: defaults::EVENTS_PER_MINUTE,
                max_queued: defaults::MAX_QUEUED,
                concurrency: defaults::CONCURRENCY,
                max_live_streams: defaults::MAX_LIVE_STREAMS,
            },
            key_cache_ttl: Duration::from_secs(defaults::KEY_CACHE_TTL_S),
            auth_failures_per_minute: defaults::AUTH_FAILURES_PER_MINUTE,
            max_queue_depth: defaults::MAX_QUEUE_DEPTH,
            keep_alive: crate::services::live::KEEP_ALIVE,
            trusted_proxies: TrustedProxies::default(),
            page_bytes: defaults::PAGE_BYTES,
            statement_timeout: Duration::from_secs(defaults::STATEMENT_TIMEOUT_S),
        }
    }
}

impl Settings {
    /// The defaults without the per-key and per-tenant limits (no requests, events,
    /// queue share, concurrency or stream caps): for benchmarks and tests of other things.
    pub fn unlimited() -> Settings {
        Settings {
            tenant: Limits {
                requests_per_minute: 0,
                events_per_minute: 0,
                max_queued: 0,
                concurrency: 0,
                max_live_streams: 0,
            },
            ..Settings::default()
        }
    }
}

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The database for the API's calls (in a sharded layout, the proxy), its
    /// statements under the statement timeout.
    pub client: Client,
    /// Group commit for POST /events.
    pub group: GroupCommit,
    /// API keys: who is who.
    pub keys: KeyStore,
    /// The per-tenant limits.
    pub tenants: Tenants,
    /// Who a request comes from.
    pub trusted_proxies: TrustedProxies,
    /// The live stream's readers and their subscribers.
    pub live: Live,
    /// Back-pressure: the queue's bound and depth.
    pub queue: QueueBound,
    /// The nodes (of a sharded layout, the client then the proxy's; else the one
    /// database).
    pub shards: Shards,
    /// The most a page holds, in bytes.
    pub page_bytes: i32,
}

impl AppState {
    /// State over `client` with the default settings. Needs a Tokio runtime (the group
    /// committers and followers are tasks).
    pub fn new(client: Client) -> AppState {
        AppState::with(client, Settings::default())
    }

    /// State over `client` with `settings`.
    pub fn with(client: Client, settings: Settings) -> AppState {
        AppState::over(client.clone(), Shards::single(client), settings)
    }

    /// State over `client` for the API's calls (in a sharded layout, the proxy's) and
    /// `shards` for the live stream, key changes and the queue's bound, on each node.
    pub fn over(client: Client, shards: Shards, settings: Settings) -> AppState {
        let timeout = settings.statement_timeout.as_millis().to_string();
        let under_timeout = [("statement_timeout", timeout.as_str())];
        let api = client
            .sibling(&under_timeout, API_CONNECTIONS)
            .unwrap_or_else(|| client.clone());
        let lookups = client
            .sibling(&under_timeout, AUTH_CONNECTIONS)
            .unwrap_or_else(|| client.clone());
        let group = GroupCommit::start(api.clone(), 2, shards.is_sharded());
        let keys = KeyStore::new(
            lookups,
            settings.key_cache_ttl,
            settings.auth_failures_per_minute,
        );
        for node in shards.nodes() {
            keys.follow(node.clone());
        }
        let tenants = Tenants::new(settings.tenant, Some(api.clone()), pool_wait());
        let live = Live::start(&shards, settings.page_bytes).with_keep_alive(settings.keep_alive);
        AppState {
            queue: QueueBound::start(&shards, settings.max_queue_depth),
            live,
            client: api,
            group,
            keys,
            tenants,
            trusted_proxies: settings.trusted_proxies,
            shards,
            page_bytes: settings.page_bytes,
        }
    }
}

/// How long a request waits for its tenant's turn: as long as for a pooled connection.
fn pool_wait() -> Duration {
    triggers_client::DEFAULT_TIMEOUT
}
