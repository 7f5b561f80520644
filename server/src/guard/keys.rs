//! Checking API keys so that no flood of bad ones can fail a good one, and every bad one
//! costs the database a bounded number of lookups:
//!
//! - A token that is not `trg_<id>_<secret>` is refused here, without a lookup.
//! - The server knows which key ids exist (the *book*: every unrevoked id, read when it
//!   starts following a database's `triggers_keys` notifications and kept current by
//!   them: `+id` when a key is made, `id` when one is revoked).
//! - A key's record (tenant, SHA-256, expiry, revoked) is looked up by id once, on a
//!   small pool of its own that tenants' queries cannot hold, with concurrent lookups of
//!   one id joined; it is then trusted for the TTL and every token with that id is
//!   checked against it in memory. So wrong secrets for a real id cost at most one
//!   lookup per id per TTL, and the right secret is never refused because of them.
//! - An id the book does not know (a random one, or a key made a moment ago whose
//!   notification has not arrived yet) is looked up only within a budget: per client
//!   address ([`ClientKey`]) and for the whole server. A flood of random ids spends those
//!   budgets, never a known key's.
//!
//! While any database's notifications cannot be followed, nothing is trusted from memory
//! (every request looks its key up, as a revocation could be missed) and the book is not
//! consulted (every id is "unknown").

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::future::{BoxFuture, FutureExt, Shared};
use futures_util::StreamExt;
use triggers_client::{Client, Error, KEYS_CHANNEL};

use super::address::ClientKey;
use super::buckets::{Buckets, Refused};

/// At most this many key ids are known; past it, new ids are looked up as unknown ones.
const MAX_BOOK: usize = 1_000_000;
/// At most this many key records are kept; past it, stale ones go, then all.
const MAX_RECORDS: usize = 100_000;
/// At most this many client addresses have an unknown-id budget remembered at once.
const MAX_CLIENTS: usize = 50_000;
/// Lookups of unknown ids the whole server makes per minute at most.
pub const UNKNOWN_PER_MINUTE: u64 = 6_000;

/// A key's row, as the database has it.
#[derive(Clone, Debug)]
struct Record {
    tenant: String,
    hash: Vec<u8>,
    expires_at: Option<DateTime<Utc>>,
    revoked: bool,
    fetched: Instant,
}

/// Who a good key belongs to.
#[derive(Clone, Debug)]
pub struct Authenticated {
    /// The key's tenant.
    pub tenant: String,
    /// The key's public id.
    pub key_id: String,
}

/// Why a key was not accepted.
#[derive(Debug)]
pub enum Denied {
    /// Not `trg_<id>_<secret>`.
    Malformed,
    /// No such key, or not its secret.
    Invalid,
    /// The key was revoked.
    Revoked,
    /// The key has expired.
    Expired,
    /// This client (or every client together) looked up too many unknown ids lately.
    TooManyUnknown {
        /// Whether it is this client's budget (else the server's).
        this_client: bool,
        /// When to try again.
        wait: Duration,
    },
    /// The lookup failed.
    Database(Error),
}

type Lookup = Shared<BoxFuture<'static, Result<Option<Record>, Arc<Error>>>>;

/// Known key ids, key records and the budgets of unknown-id lookups. Cheap to clone.
#[derive(Clone)]
pub struct KeyStore {
    inner: Arc<Inner>,
}

struct Inner {
    lookups: Client,
    ttl: Duration,
    book: RwLock<HashSet<String>>,
    records: Mutex<HashMap<String, Record>>,
    inflight: Mutex<HashMap<String, Lookup>>,
    /// Databases whose notifications are followed, and how many are followed now (and
    /// their ids read into the book).
    followed: AtomicUsize,
    current: AtomicUsize,
    unknown_per_client: u64,
    per_client: Buckets<ClientKey>,
    per_server: Buckets<()>,
}

impl KeyStore {
    /// A store that looks keys up through `lookups` (a small pool of its own), trusts a
    /// record for `ttl` (0: never) and lets a client address look up
    /// `unknown_per_client` unknown ids a minute (0: no limit).
    pub fn new(lookups: Client, ttl: Duration, unknown_per_client: u32) -> KeyStore {
        KeyStore {
            inner: Arc::new(Inner {
                lookups,
                ttl,
                book: RwLock::default(),
                records: Mutex::default(),
                inflight: Mutex::default(),
                followed: AtomicUsize::new(0),
                current: AtomicUsize::new(0),
                unknown_per_client: u64::from(unknown_per_client),
                per_client: Buckets::new(MAX_CLIENTS),
                per_server: Buckets::new(1),
            }),
        }
    }

    /// Whether every followed database's notifications are being followed now (until
    /// then every request's key is looked up).
    pub fn current(&self) -> bool {
        let followed = self.inner.followed.load(Ordering::SeqCst);
        followed > 0 && self.inner.current.load(Ordering::SeqCst) == followed
    }

    /// The tenant and id of `token`, or why not, for a request from `client`.
    pub async fn authenticate(
        &self,
        token: &str,
        client: ClientKey,
    ) -> Result<Authenticated, Denied> {
        let id = triggers_core::key_id(token).ok_or(Denied::Malformed)?;
        let current = self.current();
        let trusted = current && !self.inner.ttl.is_zero();
        if trusted {
            if let Some(record) = self.cached(id) {
                return check(id, &record, token);
            }
        }
        let known = current && self.known(id);
        // A lookup of an unknown id is paid for by the request that starts it; those
        // that join it while it runs pay nothing.
        let (record, paid) = self
            .lookup(id, token, || {
                if known {
                    Ok(false)
                } else {
                    self.spend_unknown(client).map(|()| true)
                }
            })
            .await?;
        let record = record.map_err(|e| {
            Denied::Database(
                Arc::try_unwrap(e).unwrap_or_else(|e| Error::Unavailable(e.to_string())),
            )
        })?;
        let Some(record) = record else {
            if known {
                self.forget(id);
            }
            return Err(Denied::Invalid);
        };
        if paid {
            self.refund_unknown(client);
        }
        if trusted {
            self.remember(id, &record);
        }
        if current && !record.revoked {
            self.learn(id);
        }
        check(id, &record, token)
    }

    fn cached(&self, id: &str) -> Option<Record> {
        let records = self.inner.records.lock().unwrap_or_else(|e| e.into_inner());
        records
            .get(id)
            .filter(|r| r.fetched.elapsed() < self.inner.ttl)
            .cloned()
    }

    fn remember(&self, id: &str, record: &Record) {
        let mut records = self.inner.records.lock().unwrap_or_else(|e| e.into_inner());
        if records.len() >= MAX_RECORDS && !records.contains_key(id) {
            let ttl = self.inner.ttl;
            records.retain(|_, r| r.fetched.elapsed() < ttl);
            if records.len() >= MAX_RECORDS {
                records.clear();
            }
        }
        records.insert(id.to_string(), record.clone());
    }

    fn known(&self, id: &str) -> bool {
        let book = self.inner.book.read().unwrap_or_else(|e| e.into_inner());
        book.contains(id)
    }

    fn learn(&self, id: &str) {
        if self.known(id) {
            return;
        }
        let mut book = self.inner.book.write().unwrap_or_else(|e| e.into_inner());
        if book.len() < MAX_BOOK {
            book.insert(id.to_string());
        }
    }

    fn forget(&self, id: &str) {
        self.inner
            .book
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        self.drop_record(id);
    }

    fn drop_record(&self, id: &str) {
        self.inner
            .records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    /// Spends one unknown-id lookup of `client`'s budget and of the server's (the
    /// client's first, so one client's flood does not spend the server's).
    fn spend_unknown(&self, client: ClientKey) -> Result<(), Denied> {
        let inner = &self.inner;
        let now = Instant::now();
        let refused = |this_client: bool, r: Refused| Denied::TooManyUnknown {
            this_client,
            wait: match r {
                Refused::Wait(wait) => wait,
                Refused::TooMany => Duration::from_secs(60),
            },
        };
        inner
            .per_client
            .take(&client, 1, inner.unknown_per_client, now)
            .map_err(|r| refused(true, r))?;
        if let Err(r) = inner.per_server.take(&(), 1, UNKNOWN_PER_MINUTE, now) {
            inner
                .per_client
                .give_back(&client, 1, inner.unknown_per_client);
            return Err(refused(false, r));
        }
        Ok(())
    }

    /// Gives back what [`KeyStore::spend_unknown`] took, for a lookup that found a key:
    /// the budgets count lookups that find nothing (a key made a moment ago is not an
    /// attack).
    fn refund_unknown(&self, client: ClientKey) {
        let inner = &self.inner;
        inner
            .per_client
            .give_back(&client, 1, inner.unknown_per_client);
        inner.per_server.give_back(&(), 1, UNKNOWN_PER_MINUTE);
    }

    /// The record of `id` from the database (through `token`, which a PL/Proxy proxy
    /// routes by), joined with any lookup of the same id in flight; a new lookup starts
    /// only if `start` allows it, and says whether this request started it (`start`'s
    /// answer) or joined one.
    async fn lookup(
        &self,
        id: &str,
        token: &str,
        start: impl FnOnce() -> Result<bool, Denied>,
    ) -> Result<(Result<Option<Record>, Arc<Error>>, bool), Denied> {
        let (shared, started) = {
            let mut inflight = self
                .inner
                .inflight
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            match inflight.get(id) {
                Some(shared) => (shared.clone(), false),
                None => {
                    let paid = start()?;
                    let client = self.inner.lookups.clone();
                    let token = token.to_string();
                    let shared = async move { fetch(&client, &token).await.map_err(Arc::new) }
                        .boxed()
                        .shared();
                    inflight.insert(id.to_string(), shared.clone());
                    (shared, paid)
                }
            }
        };
        let result = shared.await;
        self.inner
            .inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        Ok((result, started))
    }

    /// Waits up to `deadline` for [`KeyStore::current`]; whether it is.
    pub async fn wait_current(&self, deadline: Duration) -> bool {
        let until = tokio::time::Instant::now() + deadline;
        while !self.current() {
            if tokio::time::Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    /// Follows `node`'s key notifications for as long as the process runs: reads its
    /// key ids into the book once listening, then adds and drops as keys are made and
    /// revoked; reconnects when the connection drops (meanwhile nothing is trusted from
    /// memory).
    pub fn follow(&self, node: Client) {
        let store = self.clone();
        store.inner.followed.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            loop {
                if let Err(e) = store.follow_once(&node).await {
                    tracing::debug!(error = %e, "cannot follow API key changes; not trusting keys from memory");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }

    async fn follow_once(&self, node: &Client) -> Result<(), Error> {
        let config = node
            .connect_config()
            .ok_or_else(|| Error::InvalidParameter("a client without settings".into()))?;
        let (client, mut connection) = config
            .postgres
            .connect(config.tls.clone())
            .await
            .map_err(|e| Error::Unavailable(e.to_string()))?;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let driver = tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(Ok(message)) = messages.next().await {
                if let tokio_postgres::AsyncMessage::Notification(n) = message {
                    if tx.send(n.payload().to_string()).is_err() {
                        break;
                    }
                }
            }
        });
        // Listen first, then read: a key made in between is in one or the other.
        client
            .batch_execute(&format!("LISTEN {KEYS_CHANNEL}"))
            .await?;
        let rows = client.query("SELECT triggers._key_ids()", &[]).await?;
        {
            let mut book = self.inner.book.write().unwrap_or_else(|e| e.into_inner());
            for row in rows {
                if book.len() >= MAX_BOOK {
                    break;
                }
                book.insert(row.get(0));
            }
        }
        self.inner.current.fetch_add(1, Ordering::SeqCst);
        while let Some(payload) = rx.recv().await {
            match payload.strip_prefix('+') {
                Some(made) => self.learn(made),
                // A revocation: the next request with it looks it up (and finds it
                // revoked); it stays known, so that lookup spends no budget.
                None => self.drop_record(&payload),
            }
        }
        self.inner.current.fetch_sub(1, Ordering::SeqCst);
        self.inner
            .records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        driver.abort();
        Ok(())
    }
}

/// Whether `record` is the key `token`: its secret first, so whether a key is revoked or
/// expired is told only to someone who holds it.
fn check(id: &str, record: &Record, token: &str) -> Result<Authenticated, Denied> {
    if !triggers_core::constant_time_eq(&record.hash, &triggers_core::key_hash(token)) {
        return Err(Denied::Invalid);
    }
    if record.revoked {
        return Err(Denied::Revoked);
    }
    if record.expires_at.is_some_and(|at| at <= Utc::now()) {
        return Err(Denied::Expired);
    }
    Ok(Authenticated {
        tenant: record.tenant.clone(),
        key_id: id.to_string(),
    })
}

async fn fetch(client: &Client, token: &str) -> Result<Option<Record>, Error> {
    let conn = client.pool().get().await?;
    let statement = conn
        .prepare_cached(
            "SELECT tenant, key_hash, expires_at, revoked FROM triggers._key_record($1)",
        )
        .await?;
    let row = conn.query_opt(&statement, &[&token]).await?;
    Ok(row.map(|row| Record {
        tenant: row.get(0),
        hash: row.get(1),
        expires_at: row.get(2),
        revoked: row.get(3),
        fetched: Instant::now(),
    }))
}
