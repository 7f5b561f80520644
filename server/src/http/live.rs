//! `GET /inbox/stream`: the live stream as Server-Sent Events (SPEC §10), and [`Hub`],
//! the server's one reader of stored events that fans them out in memory.
//!
//! The hub follows `triggers.stored` for every tenant (`Client::subscribe`, on a
//! connection of its own, woken by the `triggers_stored` notification); it publishes
//! each event to its tenant's subscribers only (a subscriber is never woken for another
//! tenant's events), after raising `upto` (the last position it has published). Each
//! subscriber has a mailbox of at most [`MAILBOX_BYTES`] of events it has not taken
//! yet. A subscriber first subscribes, then replays from the database up to `upto`, then
//! takes published events past what it sent: an event is either at most `upto` when
//! read (replayed) or published after the subscription (received), so none is missed,
//! and none is sent twice. One whose mailbox overflows (it reads slower than events
//! come) loses the mailbox, not the events: it replays from where it was.
//!
//! What a stream can hold in memory is bounded in bytes: its mailbox, one replay page
//! ([`REPLAY_BYTES`], at least one event), and two events on their way to the socket;
//! a tenant has at most `max_live_streams` streams open (429 past them).

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::StreamExt;
use tokio::sync::{mpsc, watch, Notify};
use triggers_client::{Client, LiveFilter, Position, StoredEvent, KEY_PREFIX};

use crate::shards::Shards;

use super::auth::{over_limit, Tenant};
use super::error::{AppError, ErrorCode};
use super::parse::{self, containment_filters, param, Params};
use super::render::event_json;
use super::state::AppState;

/// Bytes of published events a subscriber's mailbox holds at most (at least one event).
pub const MAILBOX_BYTES: usize = 1 << 20;
/// Bytes a replay page holds at most (at least one event).
pub const REPLAY_BYTES: i32 = 1 << 20;
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

    /// What it takes in memory, about: its data twice (as JSON, and parsed).
    fn bytes(&self) -> usize {
        2 * self.data.len()
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
    /// A hub on each node; replays read pages of at most `page_bytes`.
    pub fn start(shards: &Shards, page_bytes: i32) -> Live {
        Live {
            hubs: shards
                .nodes()
                .iter()
                .map(|node| (Hub::start(node.clone(), page_bytes), node.clone()))
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
    page_bytes: i32,
}

struct Inner {
    /// Each tenant's subscribers, by subscription number.
    mailboxes: Mutex<HashMap<String, HashMap<u64, Arc<Mailbox>>>>,
    next_subscription: AtomicU64,
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
    pub fn start(client: Client, page_bytes: i32) -> Hub {
        let hub = Hub {
            inner: Arc::new(Inner {
                mailboxes: Mutex::new(HashMap::new()),
                next_subscription: AtomicU64::new(0),
                upto: AtomicI64::new(-1),
                ready: watch::Sender::new(false),
                revoked: watch::Sender::new(Arc::new(HashSet::new())),
                closing: watch::Sender::new(false),
            }),
            keep_alive: KEEP_ALIVE,
            page_bytes: page_bytes.clamp(1, REPLAY_BYTES),
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

    /// A mailbox for the tenant's published events, until the subscription drops.
    fn subscribe(&self, tenant: &str) -> Subscription {
        let id = self.inner.next_subscription.fetch_add(1, Ordering::Relaxed);
        let mailbox = Arc::new(Mailbox::default());
        self.inner
            .mailboxes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(tenant.to_string())
            .or_default()
            .insert(id, mailbox.clone());
        Subscription {
            inner: self.inner.clone(),
            tenant: tenant.to_string(),
            id,
            mailbox,
        }
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
        let mailboxes = self.mailboxes.lock().unwrap_or_else(|e| e.into_inner());
        mailboxes.values().map(HashMap::len).sum()
    }

    /// Puts each event in its tenant's subscribers' mailboxes, if it has any.
    fn publish(&self, events: Vec<StoredEvent>) {
        let mailboxes = self.mailboxes.lock().unwrap_or_else(|e| e.into_inner());
        for stored in events {
            if let Some(subscribers) = mailboxes.get(&stored.tenant) {
                let event = Arc::new(Published::new(stored));
                for mailbox in subscribers.values() {
                    mailbox.put(&event);
                }
            }
        }
    }
}

/// Published events a subscriber has not taken yet, at most [`MAILBOX_BYTES`] of them
/// (at least one event); past it, it is emptied and marked overflowed.
#[derive(Default)]
struct Mailbox {
    state: Mutex<MailboxState>,
    wake: Notify,
}

#[derive(Default)]
struct MailboxState {
    events: VecDeque<Arc<Published>>,
    bytes: usize,
    overflowed: bool,
}

impl Mailbox {
    fn put(&self, event: &Arc<Published>) {
        {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if state.overflowed {
                return;
            }
            if !state.events.is_empty() && state.bytes + event.bytes() > MAILBOX_BYTES {
                // What it holds goes now, not when the subscriber reads again: it will
                // read those events from the database.
                *state = MailboxState {
                    overflowed: true,
                    ..MailboxState::default()
                };
            } else {
                state.bytes += event.bytes();
                state.events.push_back(event.clone());
            }
        }
        self.wake.notify_one();
    }
}

/// What a subscriber takes from its mailbox.
enum Taken {
    Event(Arc<Published>),
    /// The mailbox overflowed: what was in it is to be read from the database.
    Overflowed,
}

/// A subscriber's mailbox, taken out of the hub when dropped.
struct Subscription {
    inner: Arc<Inner>,
    tenant: String,
    id: u64,
    mailbox: Arc<Mailbox>,
}

impl Subscription {
    /// The next published event, waiting for one.
    async fn take(&self) -> Taken {
        loop {
            {
                let mut state = self.mailbox.state.lock().unwrap_or_else(|e| e.into_inner());
                if std::mem::take(&mut state.overflowed) {
                    return Taken::Overflowed;
                }
                if let Some(event) = state.events.pop_front() {
                    state.bytes -= event.bytes();
                    return Taken::Event(event);
                }
            }
            // A put between the look above and this wait left a permit: no wake is lost.
            self.mailbox.wake.notified().await;
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut mailboxes = self
            .inner
            .mailboxes
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(subscribers) = mailboxes.get_mut(&self.tenant) {
            subscribers.remove(&self.id);
            if subscribers.is_empty() {
                mailboxes.remove(&self.tenant);
            }
        }
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
    let slot = state
        .tenants
        .open_stream(&tenant)
        .map_err(|o| over_limit(&o))?;
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
    // Two events on their way at most: the rest waits in the mailbox or the database.
    let (tx, rx) = mpsc::channel::<SseEvent>(2);
    tokio::spawn(async move {
        follow(hub, client, place, filter, from, key_id, tx).await;
        drop(slot);
    });
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
    let published = hub.subscribe(&tenant);
    let mut last = from.unwrap_or_else(|| hub.upto());
    let moved = moved_off(place, tenant.clone());
    tokio::pin!(moved);
    loop {
        // Replay: what was published before this subscription, from the database, a
        // page (of at most `page_bytes`) at a time, until a page comes back empty.
        let upto = hub.upto();
        while last < upto {
            let events = match client
                .stored_within(&filter, last, PAGE, Some(upto), Some(hub.page_bytes))
                .await
            {
                Ok(events) => events,
                Err(e) => {
                    tracing::warn!(error = %e, "live stream replay failed; ending the stream");
                    return;
                }
            };
            if events.is_empty() {
                last = upto;
            }
            for stored in events {
                last = stored.position;
                if tx.send(Published::new(stored).sse()).await.is_err() {
                    return;
                }
            }
        }
        // Live: what is published from now on, past what was sent.
        loop {
            let taken = tokio::select! {
                taken = published.take() => taken,
                _ = revoked.changed() => {
                    if key_id.as_ref().is_some_and(|id| revoked.borrow().contains(id)) {
                        return;
                    }
                    continue;
                }
                () = tx.closed() => return,
                () = &mut moved => return,
            };
            match taken {
                Taken::Event(event) if event.position > last => {
                    last = event.position;
                    if filter.matches(&event.stored.tenant, &event.stored.event)
                        && tx.send(event.sse()).await.is_err()
                    {
                        return;
                    }
                }
                Taken::Event(_) => {}
                // Too far behind: take the rest from the database.
                Taken::Overflowed => break,
            }
        }
    }
}
