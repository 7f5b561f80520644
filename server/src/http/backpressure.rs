//! Back-pressure for `POST /events` and `POST /events/batch`: while the queue holds
//! `--max-queue-depth` messages or more, they answer 503 SERVICE_UNAVAILABLE with
//! `Retry-After` instead of letting the queue grow without limit (the system we replace
//! promised "queue full → 503"). The depth is counted once a second in the background,
//! up to the bound (so a count never costs more than the bound's rows), not per request.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use triggers_client::Client;

use super::error::{AppError, ErrorCode};

/// How often the queue is counted.
const EVERY: Duration = Duration::from_secs(1);

/// The queue's depth as last counted, and the bound (0: none).
#[derive(Clone, Default)]
pub struct QueueBound {
    bound: i64,
    depth: Arc<AtomicI64>,
}

impl QueueBound {
    /// Counts the queue of `client` every second while the process runs; `bound` 0
    /// counts nothing and never refuses.
    pub fn start(client: Client, bound: i64) -> QueueBound {
        let gauge = QueueBound {
            bound: bound.max(0),
            depth: Arc::default(),
        };
        if gauge.bound > 0 {
            let (depth, bound) = (gauge.depth.clone(), gauge.bound);
            tokio::spawn(async move {
                loop {
                    match client.queue_depth_up_to(bound).await {
                        Ok(n) => depth.store(n, Ordering::Relaxed),
                        // The requests themselves will say the database is down.
                        Err(e) => tracing::debug!(error = %e, "cannot count the queue"),
                    }
                    tokio::time::sleep(EVERY).await;
                }
            });
        }
        gauge
    }

    /// 503 with Retry-After while the queue is at its bound.
    pub fn admit(&self) -> Result<(), AppError> {
        let depth = self.depth.load(Ordering::Relaxed);
        if self.bound > 0 && depth >= self.bound {
            return Err(AppError::new(
                ErrorCode::ServiceUnavailable,
                format!(
                    "the queue is full ({} messages waiting, --max-queue-depth); retry later",
                    self.bound
                ),
            )
            .with_retry_after(EVERY.as_secs().max(1)));
        }
        Ok(())
    }
}
