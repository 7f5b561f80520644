//! Worker tasks: each loops on `process_batch`, sleeps on the enqueue notification when
//! the queue is empty, and polls only as a fallback.
//!
//! The wake-up protocol matches `triggers._wake`: a producer session sends at most one
//! NOTIFY per `notify_throttle_ms`, so a worker that finds the queue empty looks again
//! after that long before it sleeps. Shutdown is checked between batches: a batch in
//! flight always finishes (and commits) before the worker exits.
//!
//! Under a steady trickle (events arriving faster than one batch's round trip but
//! slower than a full batch) a worker that loops at once pays one transaction, claim
//! and commit for every handful of events. After a batch that was not full it
//! therefore starts the next one `gather` after the last one started, so batches grow
//! with the load; a full batch means a backlog, and the next one starts at once.

use std::time::{Duration, Instant};

use tokio::sync::watch;
use triggers_client::{Client, Listener};

/// How a worker waits.
#[derive(Debug, Clone, Copy)]
pub struct WorkerOptions {
    /// One more look this long after the queue turned empty (notify_throttle_ms).
    pub linger: Duration,
    /// Longest sleep without a notification: the fallback poll.
    pub fallback_poll: Duration,
    /// Pause after a database error before trying again.
    pub error_backoff: Duration,
    /// Least time from the start of a batch that was not full to the start of the next.
    pub gather: Duration,
    /// How often the batch size (`triggers.config`) is read again.
    pub settings_refresh: Duration,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            linger: Duration::from_millis(100),
            fallback_poll: Duration::from_secs(5),
            error_backoff: Duration::from_secs(1),
            gather: Duration::from_millis(10),
            settings_refresh: Duration::from_secs(10),
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
    let mut listener: Option<Listener> = None;
    let mut lingered = false;
    // The configured batch size (to tell a full batch), read now and then.
    let mut batch_size: Option<i32> = None;
    let mut settings_read: Option<Instant> = None;
    while !*shutdown.borrow() {
        if listener.is_none() {
            match client.listener().await {
                Ok(l) => listener = Some(l),
                Err(e) => {
                    tracing::warn!(worker = id, error = %e, "cannot listen for wake-ups; polling")
                }
            }
        }
        if settings_read.is_none_or(|at| at.elapsed() >= options.settings_refresh) {
            batch_size = client.settings().await.ok().map(|s| s.batch_size);
            settings_read = Some(Instant::now());
        }
        let started = Instant::now();
        let wait = match client.process_batch(None, None).await {
            Ok(batch) if batch.read > 0 => {
                lingered = false;
                if batch_size.is_some_and(|full| batch.read < full) {
                    if let Some(rest) = options.gather.checked_sub(started.elapsed()) {
                        tokio::time::sleep(rest).await;
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
                options.linger
            }
            Ok(_) => options.fallback_poll,
            Err(e) => {
                tracing::warn!(worker = id, error = %e, "process_batch failed; retrying");
                listener = None;
                options.error_backoff
            }
        };
        let woken = async {
            match &listener {
                Some(l) => l.wait_for_events(wait).await,
                None => {
                    tokio::time::sleep(wait).await;
                    Ok(false)
                }
            }
        };
        tokio::select! {
            result = woken => match result {
                Ok(true) => lingered = false,
                Ok(false) => {}
                Err(_) => listener = None,
            },
            _ = shutdown.changed() => {}
        }
    }
    tracing::info!(worker = id, "worker stopped");
}
