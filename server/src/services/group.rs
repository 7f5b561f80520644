//! Group commit for `POST /events`. One commit per request caps near the single-row
//! commit rate (SPEC §6); instead, concurrent requests are gathered and enqueued with
//! one `enqueue_batch_ex` per tenant, all in one transaction, and each request is
//! answered after that commit, so a 200 still means "committed". Requests queue up
//! while a commit is in flight, so under load groups grow by themselves and no timer
//! delays a lone request. Through a PL/Proxy proxy every call commits on its node by
//! itself (a transaction in the proxy would not undo it), so there the tenants of a
//! group go each in a call of its own, all at once.
//!
//! Errors stay per request: a group that the database refuses as a whole (one bad
//! event) is retried one event at a time, so only the bad request sees the error; only
//! a database that cannot be reached fails every request of the group (503).

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Mutex};
use triggers_client::{Client, Enqueued, Error, NewEvent};

/// Most requests in one group.
pub const MAX_GROUP: usize = 500;
/// Connections the committers share: a group's tenants commit at once on up to this many.
const CONNECTIONS: usize = 16;

type Reply = oneshot::Sender<Result<Enqueued, Error>>;

/// The handle handlers enqueue through.
#[derive(Clone)]
pub struct GroupCommit {
    tx: mpsc::Sender<(NewEvent, Reply)>,
}

impl GroupCommit {
    /// Starts `committers` tasks sharing one queue of requests. They get connections of
    /// their own that NOTIFY on every commit (a group is few, large transactions, so
    /// the per-session NOTIFY throttle would only delay workers). `proxy`: the client is
    /// a PL/Proxy proxy's (no transaction spans tenants).
    pub fn start(client: Client, committers: usize, proxy: bool) -> GroupCommit {
        let client = client
            .sibling(
                &[("triggers.notify_throttle_ms", "0")],
                CONNECTIONS.max(committers),
            )
            .unwrap_or(client);
        let (tx, rx) = mpsc::channel::<(NewEvent, Reply)>(MAX_GROUP * 8);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..committers.max(1) {
            tokio::spawn(run(client.clone(), rx.clone(), !proxy));
        }
        GroupCommit { tx }
    }

    /// Enqueues `event` in the next group and waits for that group's commit.
    pub async fn enqueue(&self, event: NewEvent) -> Result<Enqueued, Error> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((event, reply))
            .await
            .map_err(|_| Error::Unavailable("the server is shutting down".into()))?;
        answer
            .await
            .map_err(|_| Error::Unavailable("the server is shutting down".into()))?
    }
}

async fn run(
    client: Client,
    rx: Arc<Mutex<mpsc::Receiver<(NewEvent, Reply)>>>,
    one_transaction: bool,
) {
    loop {
        let mut group = Vec::new();
        {
            let mut rx = rx.lock().await;
            let Some(first) = rx.recv().await else {
                return;
            };
            group.push(first);
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(next) => group.push(next),
                    Err(_) => break,
                }
            }
        }
        commit(&client, group, one_transaction).await;
    }
}

async fn commit(client: &Client, group: Vec<(NewEvent, Reply)>, one_transaction: bool) {
    let mut by_tenant: HashMap<String, (Vec<NewEvent>, Vec<Reply>)> = HashMap::new();
    for (event, reply) in group {
        let (events, replies) = by_tenant
            .entry(event.tenant_name().to_string())
            .or_default();
        events.push(event);
        replies.push(reply);
    }
    let by_tenant: Vec<(Vec<NewEvent>, Vec<Reply>)> = by_tenant.into_values().collect();
    if one_transaction {
        match in_one_transaction(client, &by_tenant).await {
            Ok(all) => {
                for ((_, replies), results) in by_tenant.into_iter().zip(all) {
                    for (reply, result) in replies.into_iter().zip(results) {
                        let _ = reply.send(Ok(result));
                    }
                }
                return;
            }
            Err(e) if e.is_unavailable() => {
                unavailable(by_tenant.into_iter().flat_map(|(_, replies)| replies), &e);
                return;
            }
            // The database refused something: each tenant alone, below.
            Err(_) => {}
        }
    }
    futures_util::future::join_all(
        by_tenant
            .into_iter()
            .map(|(events, replies)| commit_tenant(client, events, replies)),
    )
    .await;
}

/// Every tenant's events of a group in one transaction: their ids, tenant by tenant.
async fn in_one_transaction(
    client: &Client,
    by_tenant: &[(Vec<NewEvent>, Vec<Reply>)],
) -> Result<Vec<Vec<Enqueued>>, Error> {
    if let [(events, _)] = by_tenant {
        return Ok(vec![client.enqueue_batch_ex(events).await?]);
    }
    let mut conn = client.pool().get().await?;
    let tx = conn.transaction().await?;
    let mut all = Vec::with_capacity(by_tenant.len());
    for (events, _) in by_tenant {
        all.push(triggers_client::on(&*tx).enqueue_batch_ex(events).await?);
    }
    tx.commit().await?;
    Ok(all)
}

/// One tenant's part of a group: one `enqueue_batch_ex`.
async fn commit_tenant(client: &Client, events: Vec<NewEvent>, replies: Vec<Reply>) {
    match client.enqueue_batch_ex(&events).await {
        Ok(results) => {
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(Ok(result));
            }
        }
        // One event the database refuses would fail them all: answer each alone.
        // Only a database that cannot be reached fails the whole group.
        Err(e) if !e.is_unavailable() => {
            for (event, reply) in events.iter().zip(replies) {
                let _ = reply.send(client.enqueue(event).await);
            }
        }
        Err(e) => unavailable(replies, &e),
    }
}

/// Answers every request of `replies`: the database cannot be reached.
fn unavailable(replies: impl IntoIterator<Item = Reply>, e: &Error) {
    let message = e.to_string();
    for reply in replies {
        let _ = reply.send(Err(Error::Unavailable(message.clone())));
    }
}
