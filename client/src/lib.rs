//! # triggers-client
//!
//! How Rust services produce and consume events with the `triggers` Postgres extension,
//! over tokio-postgres and a deadpool-postgres pool.
//!
//! ```no_run
//! use std::time::Duration;
//! use triggers_client::{Client, InboxQuery, NewEvent, Status};
//!
//! # async fn demo() -> Result<(), triggers_client::Error> {
//! let client = Client::connect("postgres://app:secret@localhost/app")?;
//!
//! // Produce.
//! let sent = client
//!     .enqueue(&NewEvent::new(serde_json::json!({"order": 42})).tenant("acme").idempotency_key("order-42"))
//!     .await?;
//!
//! // Process (the server's workers do this; any caller may).
//! client.process_batch(None, None).await?;
//!
//! // Consume: read what is pending, acknowledge it.
//! let page = client.inbox(&InboxQuery::new("acme").status([Status::Pending])).await?;
//! for event in &page.events {
//!     client.ack("acme", event.event_id).await?;
//! }
//!
//! // Sleep until something is enqueued, instead of polling.
//! let listener = client.listener().await?;
//! listener.wait_for_events(Duration::from_secs(30)).await?;
//! # let _ = sent;
//! # Ok(())
//! # }
//! ```
//!
//! Every call also runs on a connection or transaction of the caller's, through
//! [`on`]: enqueue inside your own transaction and the event exists exactly when your
//! writes commit (the transactional outbox).
#![deny(missing_docs)]

// Layout: client.rs (the pooled Client), exec.rs (how calls reach a connection: Exec,
// On, on), ops.rs (every SQL call, on On), inbox.rs (inbox queries), rows.rs (result
// rows → types), new_event.rs (NewEvent, DebugFlag, checks before sending),
// storable.rs (what Postgres cannot store), tls.rs (TLS from the URL's sslmode),
// types.rs (returned values: events, streams,
// metrics), error.rs.
mod client;
mod error;
mod exec;
mod inbox;
mod listener;
mod live;
mod new_event;
mod ops;
mod rows;
mod storable;
mod tls;
mod types;
mod webhooks;
#[cfg(feature = "worker-protocol")]
mod worker_protocol;

pub use client::{Client, VacuumState, DEFAULT_TIMEOUT};
pub use error::Error;
pub use exec::{on, Exec, On, Plain};
pub use inbox::{InboxQuery, Order, Page};
pub use listener::{Listener, CHANNEL, KEYS_CHANNEL, STORED_CHANNEL};
pub use live::{json_contains, LiveFilter, NotAPosition, Position, StoredEvent};
pub use new_event::{DebugFlag, NewEvent, UnknownDebugFlag};
pub use storable::check_texts;
pub use tls::{ConnectConfig, Verify};
pub use triggers_core::{ErrorCode, KEY_PREFIX};
pub use types::{
    BatchResult, Counters, DeadLetter, Enqueued, Event, EventId, KeyInfo, Latency, LatencyBucket,
    Metrics, MinuteStats, Settings, Status, StreamInfo, StreamPage, StreamState, UnknownStatus,
    UnknownStreamState,
};
pub use webhooks::{
    Attempt, Delivery, DeliveryLatency, Endpoint, EndpointChange, NewEndpoint, WebhookMetrics,
};
#[cfg(feature = "worker-protocol")]
pub use worker_protocol::{AttemptOutcome, ClaimedDelivery};
