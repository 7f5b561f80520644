//! Back-pressure for `POST /events` and `POST /events/batch`: while the queue holds
//! `--max-queue-depth` messages or more, they answer 503 SERVICE_UNAVAILABLE with
//! `Retry-After` instead of letting the queue grow without limit (the system we replace
//! promised "queue full → 503"). The depth is counted once a second in the background,
//! up to the bound (so a count never costs more than the bound's rows), not per request.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::shards::Shards;

/// How often the queue is counted.
const EVERY: Duration = Duration::from_secs(1);

/// The queue's depth as last counted (each node's, in a sharded layout), and the bound
/// (0: none).
#[derive(Clone)]
pub struct QueueBound {
    bound: i64,
    depths: Vec<Arc<AtomicI64>>,
    shards: Shards,
}

impl QueueBound {
    /// Counts each node's queue every second while the process runs: a tenant is
    /// refused while its node's is at `bound`; `bound` 0 counts nothing and never
    /// refuses.
    pub fn start(shards: &Shards, bound: i64) -> QueueBound {
        let bound = bound.max(0);
        let depths: Vec<Arc<AtomicI64>> = shards.nodes().iter().map(|_| Arc::default()).collect();
        if bound > 0 {
            for (client, depth) in shards.nodes().iter().cloned().zip(depths.iter().cloned()) {
                tokio::spawn(async move {
                    loop {
                        match client.queue_depth(None, bound).await {
                            Ok(n) => depth.store(n, Ordering::Relaxed),
                            // The requests themselves will say the database is down.
                            Err(e) => tracing::debug!(error = %e, "cannot count the queue"),
                        }
                        tokio::time::sleep(EVERY).await;
                    }
                });
            }
        }
        QueueBound {
            bound,
            depths,
            shards: shards.clone(),
        }
    }

    /// Whether the queue `tenant`'s events go to takes more now ([`Refused::Full`] at its
    /// bound: the HTTP layer answers 503 with `Retry-After`).
    pub async fn admit(&self, tenant: &str) -> Result<(), Refused> {
        if self.bound == 0 {
            return Ok(());
        }
        let node = self
            .shards
            .node_of(tenant)
            .await
            .map_err(Refused::Database)?;
        let depth = self
            .depths
            .get(node)
            .map_or(0, |d| d.load(Ordering::Relaxed));
        if depth >= self.bound {
            return Err(Refused::Full {
                bound: self.bound,
                retry_after_s: EVERY.as_secs().max(1),
            });
        }
        Ok(())
    }
}

/// Why the queue takes no more events now.
#[derive(Debug)]
pub enum Refused {
    /// It holds `bound` messages (`--max-queue-depth`) or more; the depth is counted
    /// again within `retry_after_s`.
    Full { bound: i64, retry_after_s: u64 },
    /// Which node serves the tenant could not be told.
    Database(triggers_client::Error),
}
