//! Waiting without asserting a duration: for a condition, with a generous deadline, and
//! for notifications, in commit order.

use std::time::{Duration, Instant};

/// How long a test waits for a condition before it gives up: generous, because a
/// condition wait proves that something happens, never how fast (benches/ measure that).
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Polls `check` until it gives `Ok`, and returns what it gave; after [`PATIENCE`],
/// panics naming `what` and the last `Err` (what was seen instead). The one deadline
/// loop of the tests: [`wait_until`] is this for a plain condition.
pub async fn wait_for<T, E, F, Fut>(what: &str, mut check: F) -> T
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        match check().await {
            Ok(done) => return done,
            Err(seen) => assert!(
                Instant::now() < deadline,
                "{what}: not after {PATIENCE:?}: {seen}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls `check` until it holds; panics naming `what` after [`PATIENCE`].
pub async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    wait_for(what, || {
        let holds = check();
        async move {
            if holds.await {
                Ok(())
            } else {
                Err("it does not hold")
            }
        }
    })
    .await
}

/// The channel [`Notifications::until_marker`] marks with.
pub const MARKER_CHANNEL: &str = "triggers_test_marker";

/// A connection that LISTENs on `triggers_events` and on [`MARKER_CHANNEL`], and keeps
/// every notification (channel, payload) in delivery order. Postgres delivers
/// notifications in commit order, so "no NOTIFY" is checked without waiting out a
/// timeout: whatever committed before a marker was notified arrives before it.
pub struct Notifications {
    _client: tokio_postgres::Client,
    received: tokio::sync::mpsc::UnboundedReceiver<(String, String)>,
    markers: usize,
}

impl Notifications {
    /// Opens the listening connection.
    pub async fn listen(config: &tokio_postgres::Config) -> Notifications {
        use futures_util::StreamExt;
        let (client, mut connection) = config
            .connect(tokio_postgres::NoTls)
            .await
            .expect("connect");
        let (tx, received) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(Ok(message)) = messages.next().await {
                if let tokio_postgres::AsyncMessage::Notification(n) = message {
                    let _ = tx.send((n.channel().to_string(), n.payload().to_string()));
                }
            }
        });
        client
            .batch_execute(&format!("LISTEN triggers_events; LISTEN {MARKER_CHANNEL}"))
            .await
            .expect("listen");
        Notifications {
            _client: client,
            received,
            markers: 0,
        }
    }

    /// The next notification; panics after [`PATIENCE`].
    pub async fn next(&mut self) -> (String, String) {
        tokio::time::timeout(PATIENCE, self.received.recv())
            .await
            .unwrap_or_else(|_| panic!("no notification within {PATIENCE:?}"))
            .expect("the listening connection is open")
    }

    /// Notifies a marker from `session` (in a transaction of its own) and returns every
    /// notification delivered before it: all that committed before this call.
    pub async fn until_marker(
        &mut self,
        session: &tokio_postgres::Client,
    ) -> Vec<(String, String)> {
        self.markers += 1;
        let marker = format!("marker {}", self.markers);
        session
            .batch_execute(&format!("NOTIFY {MARKER_CHANNEL}, '{marker}'"))
            .await
            .expect("notify the marker");
        let mut before = Vec::new();
        loop {
            let note = self.next().await;
            if note == (MARKER_CHANNEL.to_string(), marker.clone()) {
                return before;
            }
            before.push(note);
        }
    }
}
