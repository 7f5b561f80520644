//! Worker tasks: each loops on `process_batch`, sleeps on the enqueue notification when
//! the queue is empty, and polls only as a fallback.
//!
//! The wake-up protocol matches `triggers._wake`: a producer session sends at most one
//! NOTIFY per `notify_throttle_ms`, so a worker that finds the queue empty looks again
//! after that long (the linger, read from `triggers.config`) before it sleeps. Shutdown
//! is checked between batches: a batch in flight always finishes (and commits) before
//! the worker exits.
//!
//! Under a steady trickle (events arriving faster than one batch's round trip but
//! slower than a full batch) a worker that loops at once pays one transaction, claim
//! and commit for every handful of events. After a batch that was not full it
//! therefore starts the next one `gather` after the last one started, so batches grow
//! with the load; a full batch means a backlog, and the next one starts at once.
//!
//! Every wait (linger, fallback poll, error backoff, gather) takes its time from a
//! [`Clock`]: the real one, or a [`ManualClock`] that a test advances, so the protocol
//! is tested by moving time rather than by sleeping.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use triggers_client::{Client, Error, Listener, Settings};

/// The linger until `triggers.config` has been read once (its default
/// `notify_throttle_ms`).
pub const DEFAULT_LINGER: Duration = Duration::from_millis(100);

/// A sleep of a [`Clock`].
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Where a worker's waits take their time from.
pub trait Clock: fmt::Debug + Send + Sync + 'static {
    /// The current instant.
    fn now(&self) -> Instant;
    /// Completes once `duration` has passed on this clock.
    fn sleep(&self, duration: Duration) -> Sleep;
}

/// The real clock (tokio's timer).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep(&self, duration: Duration) -> Sleep {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// A clock that stands still until [`ManualClock::advance`] moves it. Clones share
/// one time.
#[derive(Clone)]
pub struct ManualClock {
    origin: Instant,
    state: Arc<watch::Sender<Manual>>,
}

#[derive(Debug, Default)]
struct Manual {
    /// Time advanced since the clock was made.
    elapsed: Duration,
    /// Pending sleeps: (id, deadline as time since origin).
    sleeps: Vec<(u64, Duration)>,
    next_id: u64,
}

impl ManualClock {
    /// A clock at an arbitrary instant that moves only when told.
    pub fn new() -> ManualClock {
        ManualClock {
            origin: Instant::now(),
            state: Arc::new(watch::Sender::new(Manual::default())),
        }
    }

    /// Moves the clock forward; sleeps whose deadline it reaches complete.
    pub fn advance(&self, by: Duration) {
        self.state.send_modify(|s| s.elapsed += by);
    }

    /// How far the clock has been advanced.
    pub fn elapsed(&self) -> Duration {
        self.state.borrow().elapsed
    }

    /// The time left of each pending sleep, shortest first.
    pub fn sleeping(&self) -> Vec<Duration> {
        Self::left(&self.state.borrow())
    }

    /// Waits until the pending sleeps (time left, shortest first) satisfy `ready`:
    /// e.g. until a worker sleeps on its linger. No timeout of its own.
    pub async fn until_sleeping(&self, mut ready: impl FnMut(&[Duration]) -> bool) {
        let mut changes = self.state.subscribe();
        // The sender lives in self, so waiting cannot fail.
        let _ = changes.wait_for(|s| ready(&Self::left(s))).await;
    }

    fn left(state: &Manual) -> Vec<Duration> {
        let mut left: Vec<Duration> = state
            .sleeps
            .iter()
            .map(|(_, deadline)| deadline.saturating_sub(state.elapsed))
            .collect();
        left.sort();
        left
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock::new()
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualClock")
            .field("elapsed", &self.elapsed())
            .field("sleeping", &self.sleeping())
            .finish()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.origin + self.elapsed()
    }

    fn sleep(&self, duration: Duration) -> Sleep {
        let state = self.state.clone();
        Box::pin(async move {
            let (mut id, mut deadline) = (0, Duration::ZERO);
            state.send_modify(|s| {
                (id, deadline) = (s.next_id, s.elapsed + duration);
                s.next_id += 1;
                s.sleeps.push((id, deadline));
            });
            // Unregistered when done or dropped (a select! branch that lost).
            let _registered = Registered {
                state: state.clone(),
                id,
            };
            let mut changes = state.subscribe();
            let _ = changes.wait_for(|s| s.elapsed >= deadline).await;
        })
    }
}

struct Registered {
    state: Arc<watch::Sender<Manual>>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.state
            .send_modify(|s| s.sleeps.retain(|(id, _)| *id != self.id));
    }
}

/// How a worker waits.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// One more look this long after the queue turned empty. `None`: the database's
    /// `triggers.config.notify_throttle_ms`, read at start and with the batch size.
    pub linger: Option<Duration>,
    /// Longest sleep without a notification: the fallback poll.
    pub fallback_poll: Duration,
    /// Pause after a database error before trying again.
    pub error_backoff: Duration,
    /// Least time from the start of a batch that was not full to the start of the next.
    pub gather: Duration,
    /// How often the batch size and linger (`triggers.config`) are read again.
    pub settings_refresh: Duration,
    /// How often worker 0 vacuums the queue table while messages are being processed
    /// (`Client::vacuum_queue`, which skips a vacuum that could free nothing): the space
    /// of processed messages is reused within this long, whatever autovacuum's
    /// settings. `None`: never.
    pub vacuum_every: Option<Duration>,
    /// Where the waits above take their time from.
    pub clock: Arc<dyn Clock>,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            linger: None,
            fallback_poll: Duration::from_secs(5),
            error_backoff: Duration::from_secs(1),
            gather: Duration::from_millis(10),
            settings_refresh: Duration::from_secs(10),
            vacuum_every: Some(Duration::from_secs(10)),
            clock: Arc::new(SystemClock),
        }
    }
}

/// Runs one worker until `shutdown` turns true.
pub async fn run(
    id: usize,
    client: Client,
    options: WorkerOptions,
    mut shutdown: watch::Receiver<bool>,
) {
    let clock = options.clock.clone();
    let mut listener: Option<Listener> = None;
    let mut lingered = false;
    // The configuration (batch size, to tell a full batch; the linger), read now and
    // then; the last good read stays when a read fails.
    let mut settings: Option<Settings> = None;
    let mut settings_read: Option<Instant> = None;
    // Worker 0 vacuums the queue once `vacuum_every` has passed with messages processed.
    let mut vacuumed = clock.now();
    let mut vacuum = triggers_client::VacuumState::default();
    let mut processed = false;
    while !*shutdown.borrow() {
        if let Some(every) = options.vacuum_every.filter(|_| id == 0 && processed) {
            if clock.now() - vacuumed >= every {
                if let Err(e) = client.vacuum_queue(&mut vacuum).await {
                    tracing::debug!(worker = id, error = %e, "cannot vacuum the queue");
                }
                vacuumed = clock.now();
                processed = false;
            }
        }
        if listener.is_none() {
            match client.listener().await {
                Ok(l) => listener = Some(l),
                Err(e) => {
                    tracing::warn!(worker = id, error = %e, "cannot listen for wake-ups; polling")
                }
            }
        }
        if settings_read.is_none_or(|at| clock.now() - at >= options.settings_refresh) {
            match client.settings().await {
                Ok(s) => settings = Some(s),
                Err(e) => tracing::debug!(worker = id, error = %e, "cannot read triggers.config"),
            }
            settings_read = Some(clock.now());
        }
        let started = clock.now();
        let wait = match client.process_batch(None, None).await {
            Ok(batch) if batch.read > 0 => {
                lingered = false;
                processed = true;
                if settings.as_ref().is_some_and(|s| batch.read < s.batch_size) {
                    let rest = options.gather.saturating_sub(clock.now() - started);
                    if !rest.is_zero() {
                        tokio::select! {
                            () = clock.sleep(rest) => {}
                            _ = shutdown.changed() => {}
                        }
                    }
                }
                tracing::debug!(
                    worker = id,
                    read = batch.read,
                    stored = batch.stored,
                    "batch"
                );
                continue;
            }
            Ok(_) if !lingered => {
                lingered = true;
                options
                    .linger
                    .or(settings.as_ref().map(|s| throttle(s.notify_throttle_ms)))
                    .unwrap_or(DEFAULT_LINGER)
            }
            Ok(_) => options.fallback_poll,
            Err(e) => {
                tracing::warn!(worker = id, error = %e, "process_batch failed; retrying");
                listener = None;
                options.error_backoff
            }
        };
        tokio::select! {
            result = notified(listener.as_ref()) => match result {
                Ok(()) => lingered = false,
                Err(_) => listener = None,
            },
            () = clock.sleep(wait) => {}
            _ = shutdown.changed() => {}
        }
    }
    tracing::info!(worker = id, "worker stopped");
}

/// The next notification; never, without a listener.
pub(crate) async fn notified(listener: Option<&Listener>) -> Result<(), Error> {
    match listener {
        Some(l) => l.notified().await,
        None => std::future::pending().await,
    }
}

/// `notify_throttle_ms` as a duration (the column's CHECK keeps it 0 to 10,000).
fn throttle(ms: i32) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_manual_sleep_ends_when_the_clock_reaches_its_deadline_not_before() {
        let clock = ManualClock::new();
        let sleep = tokio::spawn(clock.sleep(Duration::from_millis(100)));
        clock
            .until_sleeping(|left| left == [Duration::from_millis(100)])
            .await;
        clock.advance(Duration::from_millis(99));
        assert_eq!(clock.sleeping(), [Duration::from_millis(1)]);
        clock.advance(Duration::from_millis(1));
        sleep.await.unwrap();
        assert!(clock.sleeping().is_empty(), "a finished sleep unregisters");
        assert_eq!(clock.now() - clock.origin, Duration::from_millis(100));
    }

    #[tokio::test]
    async fn a_dropped_manual_sleep_unregisters() {
        let clock = ManualClock::new();
        let mut sleep = clock.sleep(Duration::from_secs(1));
        let ready =
            std::future::poll_fn(|cx| std::task::Poll::Ready(sleep.as_mut().poll(cx).is_ready()))
                .await;
        assert!(!ready);
        assert_eq!(clock.sleeping(), [Duration::from_secs(1)]);
        drop(sleep);
        assert!(clock.sleeping().is_empty());
    }

    #[test]
    fn a_negative_throttle_is_no_linger() {
        assert_eq!(throttle(-1), Duration::ZERO);
        assert_eq!(throttle(250), Duration::from_millis(250));
    }
}
