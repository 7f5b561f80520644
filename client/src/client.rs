//! [`Client`]: a connection pool and every call of the SQL API on a pooled connection.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Timeouts};
use futures_util::{Stream, StreamExt, TryStreamExt};

use crate::error::Error;
use crate::exec::On;
use crate::inbox::{InboxQuery, Page};
use crate::listener::Listener;
use crate::new_event::NewEvent;
use crate::tls::ConnectConfig;
use crate::types::{
    BatchResult, Counters, DeadLetter, Enqueued, Event, EventId, Metrics, MinuteStats, Settings,
    StreamInfo, StreamPage,
};

/// How long a call waits for a pooled connection, or for a new one to open, before it
/// gives up with [`Error::Unavailable`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// What [`Client::vacuum_queue`] remembers between calls: the oldest snapshot in the
/// cluster (its xmin) when it last vacuumed.
#[derive(Debug, Default, Clone)]
pub struct VacuumState {
    oldest_snapshot: Option<String>,
}

/// A handle to a database with the `triggers` extension. Cheap to clone; clones share
/// one connection pool.
#[derive(Clone, Debug)]
pub struct Client {
    pool: Pool,
    // Shared, so cloning a client (once per HTTP request in the server) stays cheap.
    config: Option<Arc<ConnectConfig>>,
}

impl Client {
    /// A client with its own pool for the database at `url` (a `postgres://` URL or a
    /// `key=value` connection string, TLS as its `sslmode` says: see [`ConnectConfig`]).
    /// No connection is opened until the first call.
    pub fn connect(url: &str) -> Result<Self, Error> {
        Self::from_config(Self::url_config(url)?, 16)
    }

    /// The connection settings [`Client::connect`] uses for `url`: as written, with
    /// [`DEFAULT_TIMEOUT`] to connect unless the URL names one. For a caller that adds
    /// settings of its own before [`Client::from_config`].
    pub fn url_config(url: &str) -> Result<ConnectConfig, Error> {
        let mut config = ConnectConfig::parse(url)?;
        if config.postgres.get_connect_timeout().is_none() {
            config.postgres.connect_timeout(DEFAULT_TIMEOUT);
        }
        Ok(config)
    }

    /// A client with its own pool of at most `max_size` connections for `config` (a
    /// [`ConnectConfig`], or tokio-postgres settings: TLS if the server offers it,
    /// its certificate not checked).
    pub fn from_config(config: impl Into<ConnectConfig>, max_size: usize) -> Result<Self, Error> {
        let config = config.into();
        let manager = Manager::from_config(
            config.postgres.clone(),
            config.tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(max_size)
            .runtime(Runtime::Tokio1)
            .timeouts(Timeouts {
                wait: Some(DEFAULT_TIMEOUT),
                create: Some(DEFAULT_TIMEOUT),
                recycle: Some(DEFAULT_TIMEOUT),
            })
            .build()
            .map_err(|e| Error::InvalidUrl(e.to_string()))?;
        Ok(Self {
            pool,
            config: Some(Arc::new(config)),
        })
    }

    /// A client over a pool the caller already has. [`Client::listener`] needs the
    /// connection settings too: pass them, or use [`Listener::connect`].
    pub fn from_pool(pool: Pool, config: Option<ConnectConfig>) -> Self {
        Self {
            pool,
            config: config.map(Arc::new),
        }
    }

    /// The connection settings, when the client was built from a URL or a config.
    pub fn config(&self) -> Option<&tokio_postgres::Config> {
        self.config.as_deref().map(|c| &c.postgres)
    }

    /// The connection settings with TLS, when the client was built from a URL or a config.
    pub fn connect_config(&self) -> Option<&ConnectConfig> {
        self.config.as_deref()
    }

    /// The pool this client draws connections from.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The SQL API on a pooled connection (statements prepared once per connection).
    pub(crate) async fn pooled(&self) -> Result<On<crate::exec::Pooled>, Error> {
        let conn = self.pool.get().await?;
        let tls = self.config.as_deref().map(|c| c.tls.clone());
        Ok(On {
            conn: crate::exec::Pooled::new(conn, tls),
        })
    }

    /// Checks that the database answers and has the `triggers` extension (or, a proxy,
    /// `triggers_proxy`).
    pub async fn ping(&self) -> Result<(), Error> {
        let conn = self.pool.get().await?;
        let row = conn
            .query_opt(
                "SELECT 1 FROM pg_catalog.pg_extension WHERE extname IN ('triggers', 'triggers_proxy')",
                &[],
            )
            .await?;
        row.map(|_| ()).ok_or(Error::ExtensionMissing)
    }

    /// The version of the `triggers` extension installed in the database.
    pub async fn version(&self) -> Result<String, Error> {
        let conn = self.pool.get().await?;
        Ok(conn
            .query_one("SELECT triggers.version()", &[])
            .await?
            .get(0))
    }

    /// Through a PL/Proxy proxy (`triggers_proxy`): the partition of `tenant` out of
    /// `partitions`, as PL/Proxy routes its calls.
    pub async fn partition_of(&self, tenant: &str, partitions: usize) -> Result<usize, Error> {
        let conn = self.pool.get().await?;
        let partition: i32 = conn
            .query_one(
                "SELECT triggers.partition_of($1, $2)",
                &[&tenant, &(partitions.min(i32::MAX as usize) as i32)],
            )
            .await?
            .get(0);
        Ok(partition.max(0) as usize)
    }

    /// Through a PL/Proxy proxy: the connection string of each partition of the
    /// cluster `triggers` (`CREATE SERVER triggers … OPTIONS (p0 '…', …)`), in order.
    pub async fn partition_entries(&self) -> Result<Vec<String>, Error> {
        let conn = self.pool.get().await?;
        let rows = conn
            .query("SELECT e FROM triggers.partition_entries() e", &[])
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// A dedicated connection that wakes on every enqueue.
    pub async fn listener(&self) -> Result<Listener, Error> {
        let config = self.config.as_ref().ok_or_else(|| {
            Error::InvalidParameter(
                "this client was built from a pool without settings; use Listener::connect".into(),
            )
        })?;
        Listener::connect(config).await
    }

    /// A listener on another channel ([`crate::STORED_CHANNEL`]: events were stored).
    pub async fn listener_on(&self, channel: &str) -> Result<Listener, Error> {
        let config = self.config.as_ref().ok_or_else(|| {
            Error::InvalidParameter(
                "this client was built from a pool without settings; use Listener::connect_to"
                    .into(),
            )
        })?;
        Listener::connect_to(config, channel).await
    }

    /// Queues one event.
    pub async fn enqueue(&self, event: &NewEvent) -> Result<Enqueued, Error> {
        self.pooled().await?.enqueue(event).await
    }

    /// Queues events of one tenant, all or nothing; returns their ids in order.
    pub async fn enqueue_batch(&self, events: &[NewEvent]) -> Result<Vec<EventId>, Error> {
        self.pooled().await?.enqueue_batch(events).await
    }

    /// Queues events of one tenant, all or nothing; for each, its id and whether it
    /// repeated an idempotency key.
    pub async fn enqueue_batch_ex(&self, events: &[NewEvent]) -> Result<Vec<Enqueued>, Error> {
        self.pooled().await?.enqueue_batch_ex(events).await
    }

    /// Runs the processing workflow once (`None`s take the configured values).
    pub async fn process_batch(
        &self,
        batch_size: Option<i32>,
        visibility_timeout_s: Option<i32>,
    ) -> Result<BatchResult, Error> {
        self.pooled()
            .await?
            .process_batch(batch_size, visibility_timeout_s)
            .await
    }

    /// One page of an inbox query.
    pub async fn inbox(&self, query: &InboxQuery) -> Result<Page, Error> {
        self.pooled().await?.inbox(query).await
    }

    /// Every event an inbox query matches, following cursors page after page.
    pub fn inbox_stream(&self, query: InboxQuery) -> impl Stream<Item = Result<Event, Error>> + '_ {
        query.stream_on(self)
    }

    /// One event of the tenant.
    pub async fn get_event(&self, tenant: &str, id: EventId) -> Result<Event, Error> {
        self.pooled().await?.get_event(tenant, id).await
    }

    /// Marks a pending event delivered (idempotent).
    pub async fn ack(&self, tenant: &str, id: EventId) -> Result<Event, Error> {
        self.pooled().await?.ack(tenant, id).await
    }

    /// Re-queues a failed event; returns the manual attempt number (1 to `max_manual_retries`, 3 by default).
    pub async fn retry(&self, tenant: &str, id: EventId) -> Result<i32, Error> {
        self.pooled().await?.retry(tenant, id).await
    }

    /// The tenant's dead letters, oldest first.
    pub async fn dead_letters(&self, tenant: &str, limit: i32) -> Result<Vec<DeadLetter>, Error> {
        self.pooled().await?.dead_letters(tenant, limit).await
    }

    /// Moves up to `limit` of the tenant's dead letters back to the queue.
    pub async fn redrive(&self, tenant: &str, limit: i32) -> Result<i32, Error> {
        self.pooled().await?.redrive(tenant, limit).await
    }

    /// One page of the tenant's ordered streams, by name: up to `limit` (1 to 1000)
    /// after the stream whose `cursor` is `after` (`None`: from the first).
    pub async fn streams(
        &self,
        tenant: &str,
        limit: i32,
        after: Option<&str>,
    ) -> Result<StreamPage, Error> {
        self.pooled().await?.streams(tenant, limit, after).await
    }

    /// One of the tenant's streams, `None` if it has none of that name.
    pub async fn stream(&self, tenant: &str, name: &str) -> Result<Option<StreamInfo>, Error> {
        self.pooled().await?.stream(tenant, name).await
    }

    /// Skips the dead-lettered head a halted stream waits on; returns the new `done_seq`.
    pub async fn resume_stream(&self, tenant: &str, name: &str) -> Result<i64, Error> {
        self.pooled().await?.resume_stream(tenant, name).await
    }

    /// The processing settings (`triggers.config`).
    pub async fn settings(&self) -> Result<Settings, Error> {
        self.pooled().await?.settings().await
    }

    /// Metrics of one tenant, or of all with `None`.
    pub async fn metrics(&self, tenant: Option<&str>) -> Result<Metrics, Error> {
        self.pooled().await?.metrics(tenant).await
    }

    /// Creates a webhook endpoint; returns its id and its secret (shown only now).
    pub async fn create_endpoint(
        &self,
        tenant: &str,
        url: &str,
        filter: Option<&serde_json::Value>,
        description: Option<&str>,
    ) -> Result<crate::NewEndpoint, Error> {
        self.pooled()
            .await?
            .create_endpoint(tenant, url, filter, description)
            .await
    }

    /// The tenant's webhook endpoints.
    pub async fn endpoints(&self, tenant: &str) -> Result<Vec<crate::Endpoint>, Error> {
        self.pooled().await?.endpoints(tenant).await
    }

    /// The tenant's webhook deliveries of an event or to an endpoint.
    pub async fn deliveries(
        &self,
        tenant: &str,
        event_id: Option<EventId>,
        endpoint_id: Option<uuid::Uuid>,
        limit: i32,
    ) -> Result<Vec<crate::Delivery>, Error> {
        self.pooled()
            .await?
            .deliveries(tenant, event_id, endpoint_id, limit)
            .await
    }

    /// Changes a webhook endpoint (see [`On::update_endpoint`]).
    pub async fn update_endpoint(
        &self,
        tenant: &str,
        endpoint_id: uuid::Uuid,
        change: &crate::EndpointChange,
    ) -> Result<crate::Endpoint, Error> {
        self.pooled()
            .await?
            .update_endpoint(tenant, endpoint_id, change)
            .await
    }

    /// One webhook endpoint of the tenant.
    pub async fn endpoint(
        &self,
        tenant: &str,
        endpoint_id: uuid::Uuid,
    ) -> Result<crate::Endpoint, Error> {
        self.pooled().await?.endpoint(tenant, endpoint_id).await
    }

    /// A new secret for an endpoint (see [`On::rotate_endpoint_secret`]).
    pub async fn rotate_endpoint_secret(
        &self,
        tenant: &str,
        endpoint_id: uuid::Uuid,
    ) -> Result<String, Error> {
        self.pooled()
            .await?
            .rotate_endpoint_secret(tenant, endpoint_id)
            .await
    }

    /// Deletes a webhook endpoint; whether it existed.
    pub async fn delete_endpoint(
        &self,
        tenant: &str,
        endpoint_id: uuid::Uuid,
    ) -> Result<bool, Error> {
        self.pooled()
            .await?
            .delete_endpoint(tenant, endpoint_id)
            .await
    }

    /// Sends a stored event to an endpoint again (see [`On::resend`]).
    pub async fn resend(
        &self,
        tenant: &str,
        event_id: EventId,
        endpoint_id: uuid::Uuid,
    ) -> Result<i64, Error> {
        self.pooled()
            .await?
            .resend(tenant, event_id, endpoint_id)
            .await
    }

    /// Queues again an endpoint's failed deliveries (see [`On::recover`]).
    pub async fn recover(
        &self,
        tenant: &str,
        endpoint_id: uuid::Uuid,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<i64, Error> {
        self.pooled()
            .await?
            .recover(tenant, endpoint_id, since)
            .await
    }

    /// Every attempt at delivering one of the tenant's events.
    pub async fn delivery_attempts(
        &self,
        tenant: &str,
        event_id: EventId,
    ) -> Result<Vec<crate::Attempt>, Error> {
        self.pooled()
            .await?
            .delivery_attempts(tenant, event_id)
            .await
    }

    /// Webhook metrics of one tenant, or of all with `None`.
    pub async fn webhook_metrics(
        &self,
        tenant: Option<&str>,
    ) -> Result<crate::WebhookMetrics, Error> {
        self.pooled().await?.webhook_metrics(tenant).await
    }

    /// The counters that only grow and the all-time latency histogram (for Prometheus).
    pub async fn counters(&self, tenant: Option<&str>) -> Result<Counters, Error> {
        self.pooled().await?.counters(tenant).await
    }

    /// Per minute over the last `minutes` (1 to 1440): events processed and latency.
    pub async fn metrics_history(
        &self,
        tenant: Option<&str>,
        minutes: i32,
    ) -> Result<Vec<MinuteStats>, Error> {
        self.pooled().await?.metrics_history(tenant, minutes).await
    }

    /// Deletes delivered and failed events unchanged for `older_than`; returns how many.
    pub async fn purge(&self, older_than: Duration) -> Result<i64, Error> {
        self.pooled().await?.purge(older_than).await
    }

    /// Vacuums the queue table (`VACUUM (SKIP_LOCKED)`: skipped while another vacuum runs;
    /// a no-op with a warning for a role that does not own it), so the space of
    /// processed messages is reused within seconds instead of at autovacuum's next
    /// visit (a minute, by default); true if it ran. Not while the oldest snapshot in
    /// the cluster is the one `state` saw at its last vacuum: nothing deleted since
    /// could be freed, and scanning the grown table for nothing would only push the hot
    /// queue pages out of shared buffers. (Other users' snapshots are visible to a
    /// superuser or a member of `pg_read_all_stats`; otherwise it always runs.)
    pub async fn vacuum_queue(&self, state: &mut VacuumState) -> Result<bool, Error> {
        let conn = self.pool.get().await?;
        let oldest: Option<String> = conn
            .query_opt(
                "SELECT backend_xmin::text FROM pg_catalog.pg_stat_activity
                  WHERE backend_xmin IS NOT NULL AND pid <> pg_backend_pid()
                  ORDER BY age(backend_xmin) DESC LIMIT 1",
                &[],
            )
            .await?
            .map(|row| row.get(0));
        if oldest.is_some() && oldest == state.oldest_snapshot {
            return Ok(false);
        }
        conn.batch_execute("VACUUM (SKIP_LOCKED) pgmq.q_triggers_events")
            .await?;
        state.oldest_snapshot = oldest;
        Ok(true)
    }

    /// A client with a pool of one connection to the same database: for a worker,
    /// whose claim keeps per-session state (each lane's low-water mark, sql/claim.sql)
    /// that a shared pool would spread over many connections. None without settings
    /// (a client made [`Client::from_pool`] without them).
    pub fn dedicated(&self) -> Option<Client> {
        let config = self.config.as_deref()?.clone();
        Client::from_config(config, 1).ok()
    }

    /// A client with a pool of its own (`max_size` connections) to the same database,
    /// every connection with these session settings (`SET name = value` at connect,
    /// added to those the settings already have): a pool whose statements run under a
    /// `statement_timeout`, say. None without settings (a client made
    /// [`Client::from_pool`] without them). Values are written as `-c name=value`
    /// options: no spaces or backslashes in them.
    pub fn sibling(&self, settings: &[(&str, &str)], max_size: usize) -> Option<Client> {
        let mut config = self.config.as_deref()?.clone();
        let mut options = config
            .postgres
            .get_options()
            .unwrap_or_default()
            .to_string();
        for (name, value) in settings {
            if !options.is_empty() {
                options.push(' ');
            }
            options.push_str(&format!("-c {name}={value}"));
        }
        config.postgres.options(&options);
        Client::from_config(config, max_size).ok()
    }

    /// Events waiting in the work queue (queued or scheduled, on a stream or not), of
    /// one tenant or of all, counted up to `up_to` (see [`On::queue_depth`]).
    pub async fn queue_depth(&self, tenant: Option<&str>, up_to: i64) -> Result<i64, Error> {
        self.pooled().await?.queue_depth(tenant, up_to).await
    }

    /// Creates an API key for the tenant; the plaintext is returned this once.
    pub async fn create_api_key(&self, tenant: &str, name: &str) -> Result<String, Error> {
        self.pooled().await?.create_api_key(tenant, name).await
    }

    /// Revokes one of the tenant's keys; true if it was active.
    pub async fn revoke_api_key(&self, tenant: &str, key: &str) -> Result<bool, Error> {
        self.pooled().await?.revoke_api_key(tenant, key).await
    }

    /// The tenant a key belongs to; [`Error::Unauthorized`] for a bad key.
    pub async fn authenticate(&self, token: &str) -> Result<String, Error> {
        self.pooled().await?.authenticate(token).await
    }

    /// A valid key's tenant, id and expiry; [`Error::Unauthorized`] for a bad key.
    pub async fn authenticate_key(&self, token: &str) -> Result<crate::KeyInfo, Error> {
        self.pooled().await?.authenticate_key(token).await
    }

    /// Creates an API key that is refused from `expires_at` on (never with `None`).
    pub async fn create_expiring_api_key(
        &self,
        tenant: &str,
        name: &str,
        expires_at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<String, Error> {
        self.pooled()
            .await?
            .create_expiring_api_key(tenant, name, expires_at)
            .await
    }
}

impl InboxQuery {
    /// Every matching event, page after page, following cursors until the end.
    pub fn stream_on(self, client: &Client) -> impl Stream<Item = Result<Event, Error>> + '_ {
        futures_util::stream::try_unfold(Some(self), move |state| async move {
            let Some(query) = state else {
                return Ok::<_, Error>(None);
            };
            let page = client.inbox(&query).await?;
            let next = page.next_cursor.clone().map(|c| query.clone().after(c));
            Ok(Some((
                futures_util::stream::iter(page.events.into_iter().map(Ok)),
                next,
            )))
        })
        .try_flatten()
        .boxed()
    }
}
