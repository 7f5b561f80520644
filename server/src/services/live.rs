//! The live stream's runtime (SPEC §10): [`Hub`], the server's one reader of stored
//! events that fans them out in memory, and [`follow`], one subscriber's replay then
//! live events (`GET /inbox/stream` in `http/live.rs` sends them as Server-Sent Events).
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
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{mpsc, watch, Notify};
use triggers_client::{Client, Error, LiveFilter, Position, StoredEvent};

use crate::render::event_json;
use crate::shards::Shards;

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

/// A stored event as published: with its data (the event as JSON) already written.
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

    /// Its position: the id a client resumes after.
    pub fn position(&self) -> Position {
        self.position
    }

    /// The event as JSON.
    pub fn data(&self) -> &str {
        &self.data
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
    pub async fn for_tenant(&self, tenant: &str) -> Result<(Hub, Client, Place), Error> {
        let node = self.shards.node_of(tenant).await?;
        let (hub, client) = self.hubs[node].clone();
        Ok((hub, client, (self.shards.clone(), node)))
    }
}

/// A tenant's node: the shards and the node's index.
pub type Place = (Shards, usize);

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

    /// The keep-alive comment's interval for its streams.
    pub fn keep_alive(&self) -> Duration {
        self.keep_alive
    }

    /// Resolves once [`Hub::close`] has been called (the server is shutting down).
    pub fn closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
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

/// One subscriber: replay, then live, until the client goes, its key is revoked, or
/// the server stops. Sends into `tx`, which the response body drains.
pub async fn follow(
    hub: Hub,
    client: Client,
    place: Place,
    filter: LiveFilter,
    from: Option<Position>,
    key_id: Option<String>,
    tx: mpsc::Sender<Arc<Published>>,
) {
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
                if tx.send(Arc::new(Published::new(stored))).await.is_err() {
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
                        && tx.send(event).await.is_err()
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
