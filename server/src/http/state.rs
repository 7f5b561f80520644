//! [`AppState`]: what every handler can reach (the database client, the rate limiter,
//! group commit, the key cache, the queue's bound).

use axum::extract::FromRef;
use triggers_client::Client;

use super::auth::KeyCache;
use super::backpressure::QueueBound;
use super::group::GroupCommit;
use super::limit::{Limiter, DEFAULT_RATE_LIMIT};
use super::live::Live;
use crate::shards::Shards;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The database, through the client crate.
    pub client: Client,
    /// The per-key rate limit, if any.
    pub limiter: Option<Limiter>,
    /// Group commit for POST /events.
    pub group: GroupCommit,
    /// Recently authenticated keys.
    pub keys: KeyCache,
    /// The live stream's readers and their subscribers.
    pub live: Live,
    /// Back-pressure: the queue's bound and depth.
    pub queue: QueueBound,
    /// The nodes (of a sharded layout, the client then the proxy's; else the one
    /// database).
    pub shards: Shards,
}

impl AppState {
    /// State over `client` with the default rate limit and two group committers.
    /// Needs a Tokio runtime (the committers are tasks).
    pub fn new(client: Client) -> AppState {
        AppState::over(client.clone(), Shards::single(client))
    }

    /// State over `client` for the API's calls (in a sharded layout, the proxy's) and
    /// `shards` for the live stream, key revocations and the queue's bound, on each node.
    pub fn over(client: Client, shards: Shards) -> AppState {
        let group = GroupCommit::start(client.clone(), 2, shards.is_sharded());
        let keys = KeyCache::default();
        for node in shards.nodes() {
            keys.follow(node.clone());
        }
        let live = Live::start(&shards);
        AppState {
            live,
            client,
            limiter: Some(Limiter::per_minute(DEFAULT_RATE_LIMIT)),
            group,
            keys,
            queue: QueueBound::start(&shards, 0),
            shards,
        }
    }

    /// The same refusing new events (503) while the queue holds `bound` messages or more
    /// (0: no bound); in a sharded layout, while the tenant's node's queue does.
    pub fn with_max_queue_depth(mut self, bound: i64) -> AppState {
        self.queue = QueueBound::start(&self.shards, bound);
        self
    }

    /// The same allowing `per_minute` failed authentications a minute per client
    /// address (0: no limit).
    pub fn with_auth_failures(mut self, per_minute: u32) -> AppState {
        self.keys.failures = super::auth::FailedAuth::per_minute(per_minute);
        self
    }

    /// The same trusting a key that authenticated for `ttl` (revocations still empty
    /// the cache at once).
    pub fn with_key_ttl(mut self, ttl: std::time::Duration) -> AppState {
        self.keys = self.keys.with_ttl(ttl);
        self
    }

    /// The same with the live stream's keep-alive comment every `every`.
    pub fn with_keep_alive(mut self, every: std::time::Duration) -> AppState {
        self.live = self.live.with_keep_alive(every);
        self
    }

    /// The same with `per_minute` requests per key (0: no limit).
    pub fn with_rate_limit(mut self, per_minute: u32) -> AppState {
        self.limiter = (per_minute > 0).then(|| Limiter::per_minute(per_minute));
        self
    }
}

// The parts the key check needs (auth.rs asks for them, not for the whole state).
impl FromRef<AppState> for Client {
    fn from_ref(state: &AppState) -> Client {
        state.client.clone()
    }
}

impl FromRef<AppState> for KeyCache {
    fn from_ref(state: &AppState) -> KeyCache {
        state.keys.clone()
    }
}
