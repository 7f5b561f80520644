//! `--only isolation`: what one tenant's stuck requests cost another. Tenant A sends 32
//! acks of an event whose row the harness holds locked, so each waits on the lock with
//! a connection; meanwhile tenant B times `GET /metrics` one after another. With the
//! per-tenant concurrency (`--limits on`, 8 turns of the API's 16 connections) B is
//! served as usual; without it (`--limits off`) A's requests take every connection.

use std::time::{Duration, Instant};

use tokio_postgres::NoTls;

use super::{percentile, wire};

/// Tenant A's requests that wait on the lock.
const STUCK: usize = 32;
/// B's requests, at most.
const PROBES: usize = 200;
/// How long one of B's requests may take before it counts as not served.
const PATIENCE: Duration = Duration::from_secs(2);
/// How long B keeps trying, at most.
const PROBING: Duration = Duration::from_secs(20);

/// Prints the row; `a` is a key of tenant `tenant_a`.
pub async fn rows(
    client: &triggers_client::Client,
    config: &tokio_postgres::Config,
    addr: &str,
    tenant_a: &str,
    a: &str,
) {
    let b = client
        .create_api_key("isolation-b", "load")
        .await
        .expect("key");
    let id = client
        .enqueue(&triggers_client::NewEvent::new(serde_json::json!({"n": 1})).tenant(tenant_a))
        .await
        .expect("enqueue")
        .event_id
        .to_string();
    let get = wire::request("GET", "/metrics", &b, "");
    let (alone, _) = probe(addr, &get).await;
    let (mut holder, connection) = config.connect(NoTls).await.expect("connect");
    tokio::spawn(connection);
    // Once the workers have stored the event, hold its row.
    let stored = "SELECT count(*) FROM triggers.events WHERE event_id = $1::text::uuid";
    while holder
        .query_one(stored, &[&id])
        .await
        .expect("stored")
        .get::<_, i64>(0)
        == 0
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let lock = holder.transaction().await.expect("begin");
    lock.execute(
        "SELECT 1 FROM triggers.events WHERE event_id = $1::text::uuid FOR UPDATE",
        &[&id],
    )
    .await
    .expect("lock");
    let stuck: Vec<_> = (0..STUCK)
        .map(|_| {
            let (addr, a, id) = (addr.to_string(), a.to_string(), id.clone());
            tokio::spawn(async move {
                let mut conn = wire::Conn::open(&addr).await;
                conn.send(&wire::request(
                    "POST",
                    &format!("/inbox/{id}/ack"),
                    &a,
                    "{}",
                ))
                .await
                .0
            })
        })
        .collect();
    // Let A's requests reach the lock (or their turn's queue).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let waiting: i64 = lock
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%triggers.ack%'",
            &[],
        )
        .await
        .expect("count")
        .get(0);

    let (served, timed_out) = probe(addr, &get).await;
    lock.rollback().await.expect("rollback");
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for request in stuck {
        *statuses.entry(request.await.expect("task")).or_default() += 1;
    }
    println!(
        "| tenant B's GET /metrics while tenant A has {STUCK} requests stuck on a lock ({waiting} of them holding a connection; A's answers {statuses:?}) | {} served, p50 {:.1} ms, p99 {:.1} ms; {timed_out} not served within {} s | alone: p50 {:.1} ms, p99 {:.1} ms | | B served as if alone |",
        served.len(),
        percentile(&served, 0.5),
        percentile(&served, 0.99),
        PATIENCE.as_secs(),
        percentile(&alone, 0.5),
        percentile(&alone, 0.99),
    );
}

/// Sends `request` one after another, up to [`PROBES`] times or for [`PROBING`]; returns
/// the sorted times of those answered within [`PATIENCE`] and how many were not.
async fn probe(addr: &str, request: &[u8]) -> (Vec<Duration>, usize) {
    let mut served = Vec::new();
    let mut timed_out = 0;
    let started = Instant::now();
    let mut conn = wire::Conn::open(addr).await;
    while served.len() + timed_out < PROBES && started.elapsed() < PROBING {
        let t = Instant::now();
        match tokio::time::timeout(PATIENCE, conn.send(request)).await {
            Ok((200, _)) => served.push(t.elapsed()),
            Ok((status, body)) => panic!("{status} {}", String::from_utf8_lossy(&body)),
            Err(_) => {
                timed_out += 1;
                conn = wire::Conn::open(addr).await;
            }
        }
    }
    served.sort();
    (served, timed_out)
}
