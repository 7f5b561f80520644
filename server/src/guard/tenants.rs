//! What one tenant may take of the server, so that no tenant can starve the others:
//! requests per minute per key, events per minute (a batch counts each event), events
//! waiting in the queue (its share of `--max-queue-depth`), requests using the
//! database at once, and open live streams. Each has a default (a flag) and may be set
//! per tenant in `triggers.tenants` (read again every few seconds, through
//! `triggers.tenant_limits()`); an empty column means the default.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use triggers_client::{Client, Error};

use super::buckets::{Buckets, Left, Refused};

/// How often the per-tenant settings are read again.
const RELOAD: Duration = Duration::from_secs(5);
/// How old a tenant's queue count may be before it is counted again.
const RECOUNT: Duration = Duration::from_secs(1);
/// At most this many tenants and keys are remembered by each limit.
const MAX_TRACKED: usize = 100_000;

/// The limits of one tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Requests a minute, per API key (0: no limit).
    pub requests_per_minute: u32,
    /// Events a minute, a batch counting each of its events (0: no limit).
    pub events_per_minute: u32,
    /// Events waiting in the queue at most (0: no limit).
    pub max_queued: i64,
    /// Requests using the database at once; more wait their turn (0: no limit).
    pub concurrency: u32,
    /// Live streams open at once, on this server (0: no limit).
    pub max_live_streams: u32,
}

/// Per-tenant values of `triggers.tenants` (`None`: the default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Overrides {
    requests_per_minute: Option<u32>,
    events_per_minute: Option<u32>,
    max_queued: Option<i64>,
    concurrency: Option<u32>,
    max_live_streams: Option<u32>,
}

/// Why a tenant's request was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum Over {
    /// Over its requests or events per minute: retry after the wait.
    Rate {
        /// What was limited, for the message ("requests per minute for this key").
        what: &'static str,
        /// The limit.
        limit: u64,
        /// When to retry.
        wait: Duration,
    },
    /// More events in one batch than a minute's quota: never accepted as it is.
    BatchOverQuota {
        /// Events in the batch.
        events: u64,
        /// The quota.
        limit: u64,
    },
    /// As many events queued as its share allows.
    Queued {
        /// The share.
        limit: i64,
    },
    /// As many requests in flight as it may have, for longer than a request waits.
    Busy {
        /// The limit.
        limit: u32,
    },
    /// As many live streams open as it may have.
    Streams {
        /// The limit.
        limit: u32,
    },
}

/// The per-tenant limits and their counters. Cheap to clone.
#[derive(Clone)]
pub struct Tenants {
    inner: Arc<Inner>,
}

struct Inner {
    defaults: Limits,
    overrides: RwLock<HashMap<String, Overrides>>,
    requests: Buckets<String>,
    events: Buckets<String>,
    inflight: Mutex<HashMap<String, Arc<Semaphore>>>,
    streams: Mutex<HashMap<String, u32>>,
    queued: Mutex<HashMap<String, (i64, Instant)>>,
    counting: Mutex<HashSet<String>>,
    /// How long a request waits for its tenant's turn before it is refused.
    wait: Duration,
    client: Option<Client>,
}

impl Tenants {
    /// Limits `defaults` for every tenant; with `client`, also the per-tenant values of
    /// `triggers.tenants` (read now and every few seconds) and queue counts.
    pub fn new(defaults: Limits, client: Option<Client>, wait: Duration) -> Tenants {
        let tenants = Tenants {
            inner: Arc::new(Inner {
                defaults,
                overrides: RwLock::default(),
                requests: Buckets::new(MAX_TRACKED),
                events: Buckets::new(MAX_TRACKED),
                inflight: Mutex::default(),
                streams: Mutex::default(),
                queued: Mutex::default(),
                counting: Mutex::default(),
                wait,
                client,
            }),
        };
        if let Some(client) = tenants.inner.client.clone() {
            let weak = Arc::downgrade(&tenants.inner);
            tokio::spawn(async move {
                loop {
                    let Some(inner) = weak.upgrade() else { return };
                    match read_overrides(&client).await {
                        Ok(map) => {
                            *inner.overrides.write().unwrap_or_else(|e| e.into_inner()) = map
                        }
                        Err(e) => tracing::debug!(error = %e, "cannot read triggers.tenants"),
                    }
                    drop(inner);
                    tokio::time::sleep(RELOAD).await;
                }
            });
        }
        tenants
    }

    /// The limits of `tenant`.
    pub fn limits(&self, tenant: &str) -> Limits {
        let d = self.inner.defaults;
        let overrides = self
            .inner
            .overrides
            .read()
            .unwrap_or_else(|e| e.into_inner());
        let Some(o) = overrides.get(tenant) else {
            return d;
        };
        Limits {
            requests_per_minute: o.requests_per_minute.unwrap_or(d.requests_per_minute),
            events_per_minute: o.events_per_minute.unwrap_or(d.events_per_minute),
            max_queued: o.max_queued.unwrap_or(d.max_queued),
            concurrency: o.concurrency.unwrap_or(d.concurrency),
            max_live_streams: o.max_live_streams.unwrap_or(d.max_live_streams),
        }
    }

    /// One request of key `key_id` of `tenant`, counted against its per-key limit.
    pub fn request(&self, tenant: &str, key_id: &str) -> Result<Left, (Over, u64)> {
        let limit = u64::from(self.limits(tenant).requests_per_minute);
        self.inner
            .requests
            .take(&key_id.to_string(), 1, limit, Instant::now())
            .map_err(|r| (rate("requests per minute for this key", limit, r), limit))
    }

    /// `n` events of `tenant` about to be queued: within its events per minute and its
    /// share of the queue? Counts them against the quota when they are.
    pub fn admit_events(&self, tenant: &str, n: u64) -> Result<(), Over> {
        let limits = self.limits(tenant);
        if limits.max_queued > 0 {
            if let Some(queued) = self.queued(tenant, limits.max_queued) {
                if queued >= limits.max_queued {
                    return Err(Over::Queued {
                        limit: limits.max_queued,
                    });
                }
            }
        }
        let limit = u64::from(limits.events_per_minute);
        match self
            .inner
            .events
            .take(&tenant.to_string(), n, limit, Instant::now())
        {
            Ok(_) => Ok(()),
            Err(Refused::TooMany) => Err(Over::BatchOverQuota { events: n, limit }),
            Err(r) => Err(rate("events per minute for this tenant", limit, r)),
        }
    }

    /// The tenant's queued events as last counted (up to `limit`); a count older than a
    /// second is renewed in the background, never in the request's way (`None` until
    /// the first count).
    fn queued(&self, tenant: &str, limit: i64) -> Option<i64> {
        let last = self
            .inner
            .queued
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(tenant)
            .copied();
        if last.is_none_or(|(_, at)| at.elapsed() >= RECOUNT) {
            self.recount(tenant, limit);
        }
        last.map(|(n, _)| n)
    }

    fn recount(&self, tenant: &str, limit: i64) {
        let Some(client) = self.inner.client.clone() else {
            return;
        };
        if !self
            .inner
            .counting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(tenant.to_string())
        {
            return;
        }
        let inner = self.inner.clone();
        let tenant = tenant.to_string();
        tokio::spawn(async move {
            match client.queue_depth(Some(&tenant), limit).await {
                Ok(n) => {
                    let mut queued = inner.queued.lock().unwrap_or_else(|e| e.into_inner());
                    if queued.len() >= MAX_TRACKED {
                        queued.retain(|_, (_, at)| at.elapsed() < RECOUNT);
                    }
                    queued.insert(tenant.clone(), (n, Instant::now()));
                }
                Err(e) => tracing::debug!(error = %e, tenant, "cannot count a tenant's queue"),
            }
            inner
                .counting
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&tenant);
        });
    }

    /// A turn to use the database for one of `tenant`'s requests, waiting for one while
    /// the tenant has its limit in flight (up to the wait given at construction).
    pub async fn turn(&self, tenant: &str) -> Result<Option<OwnedSemaphorePermit>, Over> {
        let limit = self.limits(tenant).concurrency;
        if limit == 0 {
            return Ok(None);
        }
        let semaphore = {
            let mut inflight = self
                .inner
                .inflight
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if inflight.len() >= MAX_TRACKED {
                // Idle tenants' semaphores hold nothing worth keeping.
                inflight.retain(|_, s| Arc::strong_count(s) > 1);
            }
            let semaphore = inflight
                .entry(tenant.to_string())
                .or_insert_with(|| Arc::new(Semaphore::new(limit as usize)));
            // A changed limit takes effect with a new semaphore, once this one is idle.
            if Arc::strong_count(semaphore) == 1 && semaphore.available_permits() != limit as usize
            {
                *semaphore = Arc::new(Semaphore::new(limit as usize));
            }
            semaphore.clone()
        };
        match tokio::time::timeout(self.inner.wait, semaphore.acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Some(permit)),
            _ => Err(Over::Busy { limit }),
        }
    }

    /// One more live stream of `tenant`, held until the returned guard drops.
    pub fn open_stream(&self, tenant: &str) -> Result<StreamSlot, Over> {
        let limit = self.limits(tenant).max_live_streams;
        let mut streams = self.inner.streams.lock().unwrap_or_else(|e| e.into_inner());
        let open = streams.entry(tenant.to_string()).or_insert(0);
        if limit > 0 && *open >= limit {
            return Err(Over::Streams { limit });
        }
        *open += 1;
        Ok(StreamSlot {
            inner: self.inner.clone(),
            tenant: tenant.to_string(),
        })
    }
}

/// An open live stream, counted against its tenant's limit until dropped.
pub struct StreamSlot {
    inner: Arc<Inner>,
    tenant: String,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut streams = self.inner.streams.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(open) = streams.get_mut(&self.tenant) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                streams.remove(&self.tenant);
            }
        }
    }
}

fn rate(what: &'static str, limit: u64, refused: Refused) -> Over {
    Over::Rate {
        what,
        limit,
        wait: match refused {
            Refused::Wait(wait) => wait,
            Refused::TooMany => Duration::from_secs(60),
        },
    }
}

async fn read_overrides(client: &Client) -> Result<HashMap<String, Overrides>, Error> {
    let conn = client.pool().get().await?;
    let rows = conn
        .query(
            "SELECT tenant, requests_per_minute, events_per_minute, max_queued, max_concurrency, \
                    max_live_streams FROM triggers.tenant_limits()",
            &[],
        )
        .await?;
    let non_negative = |v: Option<i32>| v.map(|v| v.max(0) as u32);
    Ok(rows
        .iter()
        .map(|row| {
            (
                row.get::<_, String>(0),
                Overrides {
                    requests_per_minute: non_negative(row.get(1)),
                    events_per_minute: non_negative(row.get(2)),
                    max_queued: row.get::<_, Option<i64>>(3).map(|v| v.max(0)),
                    concurrency: non_negative(row.get(4)),
                    max_live_streams: non_negative(row.get(5)),
                },
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Limits {
        Limits {
            requests_per_minute: 10,
            events_per_minute: 100,
            max_queued: 0,
            concurrency: 2,
            max_live_streams: 2,
        }
    }

    #[test]
    fn a_batch_counts_each_event_and_tenants_are_apart() {
        let tenants = Tenants::new(defaults(), None, Duration::ZERO);
        assert_eq!(tenants.admit_events("a", 60), Ok(()));
        assert!(matches!(
            tenants.admit_events("a", 60),
            Err(Over::Rate { limit: 100, .. })
        ));
        assert_eq!(tenants.admit_events("b", 100), Ok(()));
        assert_eq!(
            tenants.admit_events("c", 101),
            Err(Over::BatchOverQuota {
                events: 101,
                limit: 100
            })
        );
    }

    #[test]
    fn requests_are_counted_per_key() {
        let tenants = Tenants::new(defaults(), None, Duration::ZERO);
        for _ in 0..10 {
            assert!(tenants.request("t", "k1").is_ok());
        }
        assert!(tenants.request("t", "k1").is_err());
        assert!(tenants.request("t", "k2").is_ok());
    }

    #[test]
    fn overrides_replace_only_what_they_set() {
        let tenants = Tenants::new(defaults(), None, Duration::ZERO);
        tenants.inner.overrides.write().unwrap().insert(
            "big".into(),
            Overrides {
                events_per_minute: Some(0),
                max_live_streams: Some(5),
                ..Overrides::default()
            },
        );
        let big = tenants.limits("big");
        assert_eq!((big.events_per_minute, big.max_live_streams), (0, 5));
        assert_eq!(big.requests_per_minute, 10);
        assert_eq!(tenants.limits("small"), defaults());
        assert_eq!(tenants.admit_events("big", 1_000_000), Ok(()));
    }

    #[test]
    fn live_streams_are_counted_until_they_close() {
        let tenants = Tenants::new(defaults(), None, Duration::ZERO);
        let first = tenants.open_stream("t").unwrap();
        let _second = tenants.open_stream("t").unwrap();
        assert_eq!(
            tenants.open_stream("t").err(),
            Some(Over::Streams { limit: 2 })
        );
        assert!(tenants.open_stream("u").is_ok());
        drop(first);
        assert!(tenants.open_stream("t").is_ok());
    }

    #[tokio::test]
    async fn a_tenant_waits_for_its_turn_and_others_do_not() {
        let tenants = Tenants::new(defaults(), None, Duration::from_millis(50));
        let one = tenants.turn("t").await.unwrap();
        let _two = tenants.turn("t").await.unwrap();
        assert_eq!(tenants.turn("t").await.err(), Some(Over::Busy { limit: 2 }));
        assert!(tenants.turn("u").await.unwrap().is_some());
        drop(one);
        assert!(tenants.turn("t").await.unwrap().is_some());
    }
}
