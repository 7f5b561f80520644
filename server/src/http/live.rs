//! `GET /inbox/stream`: the live stream as Server-Sent Events (SPEC §10), and [`Hub`],
//! the server's one reader of stored events that fans them out in memory.
//!
//! The hub follows `triggers.stored` for every tenant (`Client::subscribe`, on a
//! connection of its own, woken by the `triggers_stored` notification); it publishes each event, on its tenant's channel
//! only (a subscriber is never woken for another tenant's events), after raising
//! `upto` (the last position it has published), and each channel keeps at most
//! [`BUFFER`] events for slow subscribers. A subscriber first subscribes, then replays from the database up to
//! `upto`, then takes published events past what it sent: an event is either at most
//! `upto` when read (replayed) or published after the subscription (received), so none
//! is missed, and none is sent twice. One that falls more than [`BUFFER`] behind
//! replays from where it was.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::StreamExt;
use tokio::sync::{broadcast, mpsc, watch};
use triggers_client::{Client, LiveFilter, Position, StoredEvent, KEY_PREFIX};

use crate::shards::Shards;

use super::auth::Tenant;
use super::error::{AppError, ErrorCode};
use super::parse::{self, containment_filters, param, Params};
use super::render::event_json;
use super::state::AppState;

/// Published events a tenant's channel keeps for subscribers that have not taken them yet.
pub const BUFFER: usize = 4096;
/// Events read per query, by the hub and by a replay.
const PAGE: i32 = 500;
/// The keep-alive comment's interval, unless the server is told otherwise.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How often the hub looks for revoked keys while anyone is subscribed.
const REVOCATIONS: Duration = Duration::from_millis(500);

/// A stored event as published: with its SSE data already written.
pub struct Published {
    position: Position,
    stored: StoredEvent,
    data: String,
}

impl Published {
    fn new(stored: StoredEvent) -> Published {
        Published {
            position: stored.position,
            data: event_json(&stored.event).to_string(),
            stored,
        }
    }

    fn sse(&self) -> SseEvent {
        SseEvent::default()
            .id(self.position.to_string())
            .event("event")
            .data(&self.data)
    }
}

/// The live stream's hubs: one per database whose positions it reads (the database, or
/// each node of a sharded layout), and which of them serves a tenant.
#[derive(Clone)]
pub struct Live {
    hubs: Vec<(Hub, Client)>,
    shards: Shards,
}

impl Live {
    /// A hub on each node.
    pub fn start(shards: &Shards) -> Live {
        Live {
            hubs: shards
                .nodes()
                .iter()
                .map(|node| (Hub::start(node.clone()), node.clone()))
                .collect(),
            shards: shards.clone(),
        }
    }

    /// The same, every stream sending a keep-alive comment every `every`.
    pub fn with_keep_alive(mut self, every: Duration) -> Live {
        for (hub, _) in &mut self.hubs {
            hub.keep_alive = every;
        }
        self
    }

    /// Ends every stream, now and from now on (the server is shutting down).
    pub fn close(&self) {
        for (hub, _) in &self.hubs {
            hub.close();
        }
    }

    /// The hub serving `tenant`, the client of its database, and where it is (its
    /// node, whose change ends the tenant's streams: [`moved_off`]).
    async fn for_tenant(&self, tenant: &str) -> Result<(Hub, Client, Place), AppError> {
        let node = self.shards.node_of(tenant).await?;
        let (hub, client) = self.hubs[node].clone();
        Ok((hub, client, (self.shards.clone(), node)))
    }
}

/// A tenant's node: the shards and the node's index.
type Place = (Shards, usize);

/// How often a stream of a sharded layout asks whether its tenant moved.
const MOVE_CHECK: Duration = Duration::from_secs(2);

/// Resolves once `tenant` is served by another node than `place`'s (its partition was
/// moved): its stream then ends, and the client's reconnection, with the last position
/// it got, is served by the new node's hub (a moved event keeps its position there).
async fn moved_off((shards, node): Place, tenant: String) {
    if !shards.is_sharded() {
        return std::future::pending().await;
    }
    loop {
        tokio::time::sleep(MOVE_CHECK).await;
        if matches!(shards.node_of(&tenant).await, Ok(now) if now != node) {
            return;
        }
    }
}

/// The server's one reader of stored events (of one database) and its subscribers'
/// meeting point.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
    keep_alive: Duration,
}

type Channel = broadcast::Sender<Arc<Published>>;

struct Inner {
    /// One channel per tenant with subscribers.
    channels: Mutex<HashMap<String, Channel>>,
    /// The last position published; -1 until the hub has found where "now" is.
    upto: AtomicI64,
    ready: watch::Sender<bool>,
    /// Ids of keys revoked while this server runs.
    revoked: watch::Sender<Arc<HashSet<String>>>,
    /// Set when the server shuts down: every stream ends, so that the graceful
    /// shutdown, which waits for open responses, does not wait for subscribers.
    closing: watch::Sender<bool>,
}

impl Hub {
    /// Starts the reader and the revocation watch on `client`'s database.
    pub fn start(client: Client) -> Hub {
        let hub = Hub {
            inner: Arc::new(Inner {
                channels: Mutex::new(HashMap::new()),
                upto: AtomicI64::new(-1),
                ready: watch::Sender::new(false),
                revoked: watch::Sender::new(Arc::new(HashSet::new())),
                closing: watch::Sender::new(false),
            }),
            keep_alive: KEEP_ALIVE,
        };
        tokio::spawn(read(client.clone(), hub.inner.clone()));
        tokio::spawn(watch_revocations(client, hub.inner.clone()));
        hub
    }

    /// Ends every stream, now and from now on (the server is shutting down).
    pub fn close(&self) {
        self.inner.closing.send_replace(true);
    }

    /// Resolves once [`Hub::close`] has been called.
    fn closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut closing = self.inner.closing.subscribe();
        async move {
            let _ = closing.wait_for(|c| *c).await;
        }
    }

    /// A receiver of the tenant's published events.
    fn subscribe(&self, tenant: &str) -> broadcast::Receiver<Arc<Published>> {
        let mut channels = self
            .inner
            .channels
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        channels
            .entry(tenant.to_string())
            .or_insert_with(|| broadcast::channel(BUFFER).0)
            .subscribe()
    }

    async fn until_ready(&self) {
        let mut ready = self.inner.ready.subscribe();
        let _ = ready.wait_for(|r| *r).await;
    }

    fn upto(&self) -> Position {
        Position(self.inner.upto.load(Ordering::SeqCst))
    }
}

impl Inner {
    fn subscribers(&self) -> usize {
        let channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        channels
            .values()
            .map(broadcast::Sender::receiver_count)
            .sum()
    }

    /// Sends each event on its tenant's channel, if anyone listens; drops channels
    /// nobody listens to any more.
    fn publish(&self, events: Vec<StoredEvent>) {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        for stored in events {
            if let Some(channel) = channels.get(&stored.tenant) {
                let _ = channel.send(Arc::new(Published::new(stored)));
            }
        }
        channels.retain(|_, channel| channel.receiver_count() > 0);
    }
}

/// The hub's reader: where "now" is, then the live stream of every tenant from there
/// (`Client::subscribe`, which reconnects and resumes by itself), each run of events
/// that are ready published together.
async fn read(client: Client, inner: Arc<Inner>) {
    let start = loop {
        match client.stored_horizon(None).await {
            Ok(now) => break now,
            Err(e) => tracing::warn!(error = %e, "live stream reader: retrying in 1 s"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    inner.upto.store(start.0, Ordering::SeqCst);
    inner.ready.send_replace(true);
    let events = client
        .subscribe(LiveFilter::default(), Some(start))
        .ready_chunks(PAGE as usize);
    futures_util::pin_mut!(events);
    while let Some(ready) = events.next().await {
        let ready: Vec<StoredEvent> = ready
            .into_iter()
            .filter_map(|event| {
                event
                    .map_err(|e| tracing::error!(error = %e, "live stream reader"))
                    .ok()
            })
            .collect();
        if let Some(last) = ready.last() {
            // Raise upto first: a subscriber that reads it after this has the events
            // in its replay; one that subscribed before the sends below receives them.
            inner.upto.store(last.position.0, Ordering::SeqCst);
            inner.publish(ready);
        }
    }
    tracing::error!("live stream reader stopped: the stream refused its filter");
}

/// Collects the ids of keys revoked while this server runs, while anyone subscribes.
async fn watch_revocations(client: Client, inner: Arc<Inner>) {
    let mut since = chrono::Utc::now() - chrono::Duration::minutes(1);
    loop {
        tokio::time::sleep(REVOCATIONS).await;
        if inner.subscribers() == 0 {
            continue;
        }
        let asked = chrono::Utc::now();
        match client.revoked_keys(since).await {
            Ok(ids) => {
                let fresh: Vec<String> = ids
                    .into_iter()
                    .filter(|id| !inner.revoked.borrow().contains(id))
                    .collect();
                if !fresh.is_empty() {
                    inner.revoked.send_modify(|set| {
                        let mut more = (**set).clone();
                        more.extend(fresh);
                        *set = Arc::new(more);
                    });
                }
                // Overlap the next look with this one: clocks of server and database differ.
                since = asked - chrono::Duration::seconds(10);
            }
            Err(e) => tracing::debug!(error = %e, "cannot read revoked keys"),
        }
    }
}

/// `GET /inbox/stream`.
pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/inbox/stream", get(stream))
}

/// GET /inbox/stream
#[utoipa::path(get, path = "/inbox/stream", params(("stream" = Option<String>, Query, min_length = 1, max_length = 200, pattern = r"^[^\u0000-\u001F\u007F]*$"), ("after" = Option<String>, Query, pattern = "^[0-9]{1,18}$", description = "resume after this position (the id of the last event received); the Last-Event-ID header wins"), ("Last-Event-ID" = Option<String>, Header, description = "resume after this position")), responses((status = 200, description = "text/event-stream: `id:` the position, `event: event`, `data:` the event; a keep-alive comment every 15 s. Also filters metadata.<k>=v and payload.<k>=v by containment", content_type = "text/event-stream", body = String), (status = 400, description = "A bad filter, or a position that is not one (INVALID_CURSOR)", body = super::shapes::ErrorEnvelope)))]
pub(super) async fn stream(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    headers: HeaderMap,
    query: Params,
) -> Result<Response, AppError> {
    let pairs = parse::query(query, &["stream", "after"], true)?;
    let (hub, client, place) = state.live.for_tenant(&tenant).await?;
    let mut filter = LiveFilter::tenant(tenant);
    if let Some(stream) = param(&pairs, "stream") {
        triggers_client::check_texts(&[("stream", stream)])?;
        filter.stream = Some(stream.to_string());
    }
    (filter.metadata_contains, filter.payload_contains) = containment_filters(&pairs);
    let resume = match headers.get("last-event-id") {
        Some(value) => Some(value.to_str().unwrap_or("\u{fffd}")),
        None => param(&pairs, "after"),
    };
    let from = resume
        .map(|text| {
            text.trim()
                .parse::<Position>()
                .map_err(|e| AppError::new(ErrorCode::InvalidCursor, e.to_string()))
        })
        .transpose()?;
    let key_id = key_id(&headers);
    let keep_alive = hub.keep_alive;
    let closed = hub.closed();
    let (tx, rx) = mpsc::channel::<SseEvent>(64);
    tokio::spawn(follow(hub, client, place, filter, from, key_id, tx));
    let events = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|event| (Ok::<_, Infallible>(event), rx))
    })
    .take_until(closed);
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(keep_alive))
        .into_response();
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// The id of the API key in the request's Authorization header (checked already).
fn key_id(headers: &HeaderMap) -> Option<String> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let token = value.split_once(' ')?.1.trim();
    let rest = token.strip_prefix(KEY_PREFIX)?;
    Some(rest.split_once('_')?.0.to_string())
}

/// One subscriber: replay, then live, until the client goes, its key is revoked, or
/// the server stops. Sends into `tx`, which the response body drains.
async fn follow(
    hub: Hub,
    client: Client,
    place: Place,
    filter: LiveFilter,
    from: Option<Position>,
    key_id: Option<String>,
    tx: mpsc::Sender<SseEvent>,
) {
    // The reconnect delay a browser's EventSource uses; no id, so it moves no one's
    // last position.
    if tx
        .send(SseEvent::default().retry(Duration::from_secs(1)))
        .await
        .is_err()
    {
        return;
    }
    // Until the hub knows where "now" is (its database may be down), or the client goes.
    tokio::select! {
        () = hub.until_ready() => {}
        () = tx.closed() => return,
    }
    let mut revoked = hub.inner.revoked.subscribe();
    let tenant = filter.tenant.clone().unwrap_or_default();
    let mut published = hub.subscribe(&tenant);
    let mut last = from.unwrap_or_else(|| hub.upto());
    let moved = moved_off(place, tenant.clone());
    tokio::pin!(moved);
    loop {
        // Replay: what was published before this subscription, from the database.
        let upto = hub.upto();
        while last < upto {
            let events = match client.stored(&filter, last, PAGE, Some(upto)).await {
                Ok(events) => events,
                Err(e) => {
                    tracing::warn!(error = %e, "live stream replay failed; ending the stream");
                    return;
                }
            };
            let full = events.len() == PAGE as usize;
            for stored in events {
                last = stored.position;
                if tx.send(Published::new(stored).sse()).await.is_err() {
                    return;
                }
            }
            if !full {
                last = upto;
            }
        }
        // Live: what is published from now on, past what was sent.
        loop {
            let event = tokio::select! {
                event = published.recv() => event,
                _ = revoked.changed() => {
                    if key_id.as_ref().is_some_and(|id| revoked.borrow().contains(id)) {
                        return;
                    }
                    continue;
                }
                () = tx.closed() => return,
                () = &mut moved => return,
            };
            match event {
                Ok(event) if event.position > last => {
                    last = event.position;
                    if filter.matches(&event.stored.tenant, &event.stored.event)
                        && tx.send(event.sse()).await.is_err()
                    {
                        return;
                    }
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Too far behind: take the rest from the database.
                    published = hub.subscribe(&tenant);
                    break;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}
