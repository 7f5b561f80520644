//! Waking on the enqueue notification instead of polling.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::Notify;

use crate::{ConnectConfig, Error};

/// The channel `triggers.enqueue` notifies.
pub const CHANNEL: &str = "triggers_events";

/// The channel `triggers.process_batch` notifies when it stored events (the live stream).
pub const STORED_CHANNEL: &str = "triggers_stored";

/// The channel `triggers.revoke_api_key` notifies (servers drop cached keys).
pub const KEYS_CHANNEL: &str = "triggers_keys";

/// A connection that LISTENs for new events. A notification that arrives while nobody
/// waits is kept, so none is lost between two waits.
pub struct Listener {
    _client: tokio_postgres::Client,
    woken: Arc<Notify>,
    closed: Arc<AtomicBool>,
}

impl Listener {
    /// Opens a dedicated connection and LISTENs on [`CHANNEL`].
    pub async fn connect(config: &ConnectConfig) -> Result<Listener, Error> {
        Listener::connect_to(config, CHANNEL).await
    }

    /// Opens a dedicated connection and LISTENs on `channel`.
    pub async fn connect_to(config: &ConnectConfig, channel: &str) -> Result<Listener, Error> {
        let (client, mut connection) = config
            .postgres
            .connect(config.tls.clone())
            .await
            .map_err(|e| Error::Unavailable(e.to_string()))?;
        let woken = Arc::new(Notify::new());
        let closed = Arc::new(AtomicBool::new(false));
        let (w, c) = (woken.clone(), closed.clone());
        tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(Ok(message)) = messages.next().await {
                if let tokio_postgres::AsyncMessage::Notification(_) = message {
                    w.notify_one();
                }
            }
            c.store(true, Ordering::SeqCst);
            w.notify_one();
        });
        client.batch_execute(&format!("LISTEN {channel}")).await?;
        Ok(Listener {
            _client: client,
            woken,
            closed,
        })
    }

    /// Waits until events were enqueued (true) or `timeout` passed (false).
    pub async fn wait_for_events(&self, timeout: Duration) -> Result<bool, Error> {
        match tokio::time::timeout(timeout, self.notified()).await {
            Ok(result) => result.map(|()| true),
            Err(_) if self.is_closed() => Err(closed()),
            Err(_) => Ok(false),
        }
    }

    /// Waits, with no timeout of its own, until events were enqueued; an error once
    /// the listening connection closed. For a caller that races it against its own
    /// timer (`select!`).
    pub async fn notified(&self) -> Result<(), Error> {
        // A closed connection left one wake-up behind, which an earlier wait may have
        // taken: look before waiting.
        if !self.is_closed() {
            self.woken.notified().await;
        }
        if self.is_closed() {
            return Err(closed());
        }
        Ok(())
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}

fn closed() -> Error {
    Error::Unavailable("the listening connection closed".into())
}
