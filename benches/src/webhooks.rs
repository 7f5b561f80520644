//! triggers-http-load's rows for webhooks (`--only webhooks`, SPEC §10): how fast the
//! delivery workers empty an outbox into one local receiver, the time from `POST /events`
//! to the webhook's arrival, and `POST /events` throughput with an endpoint enabled vs
//! none. The receiver is an axum route in this process answering 204; each baseline is
//! that same receiver driven directly by the harness's keep-alive client, so a ratio
//! says what the delivery path costs over a bare HTTP POST to the same place.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use clap::Parser;
use futures_util::future::join_all;
use triggers_server::cli::WebhookArgs;
use triggers_server::workers::delivery::delivery_workers;

use super::live::find_micros;
use super::{common, drained, drive, drive_http, percentile, wire};

/// The tenant of the `key` handed to [`rows`] (http_load.rs makes it for "bench").
const TENANT: &str = "bench";
/// The delivery workers' settings: `triggers serve`'s defaults (4 workers), with
/// loopback allowed. Parsed, so that settings added later keep their defaults.
#[derive(Parser)]
struct Settings {
    #[command(flatten)]
    webhooks: WebhookArgs,
}
/// The secrets key every connection of the keyed client carries (a throwaway cluster's).
const SECRETS_KEY: &str = "triggers-http-load-throwaway-secrets-key-0123456789";
/// How long a row waits for deliveries before it reports what it got.
const PATIENCE: Duration = Duration::from_secs(120);

/// What the receiver has seen since its last [`Receiver::reset`].
#[derive(Default)]
struct Seen {
    ids: HashSet<Box<str>>,
    duplicates: u64,
    /// When the latest new id came.
    last_new: Option<Instant>,
    /// For each new id whose body holds `"t":` (micros since `t0`): now − then.
    latencies: Vec<Duration>,
}

/// The local webhook receiver: 204 to `POST /`, recording each request's `webhook-id`.
struct Receiver {
    addr: SocketAddr,
    t0: Instant,
    distinct: AtomicU64,
    seen: Mutex<Seen>,
}

impl Receiver {
    async fn start(t0: Instant) -> Arc<Receiver> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let rx = Arc::new(Receiver {
            addr: listener.local_addr().unwrap(),
            t0,
            distinct: AtomicU64::new(0),
            seen: Mutex::default(),
        });
        let app = axum::Router::new()
            .route("/", axum::routing::post(receive))
            .with_state(rx.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        rx
    }

    fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    fn reset(&self) {
        *self.seen.lock().expect("receiver") = Seen::default();
        self.distinct.store(0, Ordering::Relaxed);
    }

    fn distinct(&self) -> u64 {
        self.distinct.load(Ordering::Relaxed)
    }

    fn duplicates(&self) -> u64 {
        self.seen.lock().expect("receiver").duplicates
    }

    /// Waits until `n` distinct ids have come, or `until`; returns how many came and when
    /// the last new one did.
    async fn wait(&self, n: u64, until: Instant) -> (u64, Option<Instant>) {
        while self.distinct() < n && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let seen = self.seen.lock().expect("receiver");
        (seen.ids.len() as u64, seen.last_new)
    }

    fn latencies(&self) -> Vec<Duration> {
        let mut all = std::mem::take(&mut self.seen.lock().expect("receiver").latencies);
        all.sort();
        all
    }
}

/// `POST /` of the receiver: the body is only searched for a send time.
async fn receive(State(rx): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let at = Instant::now();
    let Some(id) = headers.get("webhook-id").and_then(|v| v.to_str().ok()) else {
        return StatusCode::BAD_REQUEST;
    };
    let sent = find_micros(&body);
    let mut seen = rx.seen.lock().expect("receiver");
    if seen.ids.insert(id.into()) {
        seen.last_new = Some(at);
        if let Some(us) = sent {
            let latency = (at - rx.t0).saturating_sub(Duration::from_micros(us));
            seen.latencies.push(latency);
        }
        rx.distinct.fetch_add(1, Ordering::Relaxed);
    } else {
        seen.duplicates += 1;
    }
    StatusCode::NO_CONTENT
}

/// A request to the receiver shaped like a delivery (same headers, a body of the same
/// shape and about the same size), for the baselines; `payload` is the event's.
fn direct_request(n: u64, payload: &str) -> Vec<u8> {
    let id = format!("00000000-0000-7000-8000-{n:012}");
    let body = format!(
        r#"{{"type":"event.stored","timestamp":"2026-01-01T00:00:00.000000Z","data":{{"event_id":"{id}","status":"pending","payload":{payload},"metadata":{{}},"stream":null,"seq":null,"created_at":"2026-01-01T00:00:00.000000Z","updated_at":"2026-01-01T00:00:00.000000Z","processed_at":"2026-01-01T00:00:00.000000Z","delivered_at":null,"retry_count":0,"error_message":null}}}}"#
    );
    format!(
        "POST / HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nwebhook-id: {id}\r\n\
         webhook-timestamp: 1767225600\r\nwebhook-signature: v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4=\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// `config` with the throwaway secrets key on every connection, as the server does.
fn with_key(config: tokio_postgres::Config) -> tokio_postgres::Config {
    triggers_server::db::with_key(config, SECRETS_KEY).postgres
}

/// Counts of the endpoint's deliveries in `status`.
async fn deliveries(db: &tokio_postgres::Client, endpoint: &str, status: &str) -> i64 {
    db.query_one(
        "SELECT count(*) FROM triggers.webhook_deliveries WHERE endpoint_id = $1::text::uuid AND status = $2",
        &[&endpoint, &status],
    )
    .await
    .expect("count deliveries")
    .get(0)
}

/// Waits until the endpoint has `n` deliveries in `status`, or `until`; returns the count.
async fn wait_deliveries(
    db: &tokio_postgres::Client,
    endpoint: &str,
    status: &str,
    n: i64,
    until: Instant,
) -> i64 {
    loop {
        let count = deliveries(db, endpoint, status).await;
        if count == n || Instant::now() >= until {
            return count;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits for the queue to be empty and the endpoint's outbox to hold nothing pending,
/// so that a measurement does not pay for the last one's backlog; says so if it gives up.
async fn settled(client: &triggers_client::Client, db: &tokio_postgres::Client, endpoint: &str) {
    drained(client).await;
    let left = wait_deliveries(db, endpoint, "pending", 0, Instant::now() + PATIENCE).await;
    if left > 0 {
        println!("| (note: {left} deliveries still pending after {} s; the next row runs beside them) | | | | |", PATIENCE.as_secs());
    }
}

/// When deliveries fall short: what their attempts got, most common first.
async fn why(db: &tokio_postgres::Client) {
    let rows = db
        .query(
            "SELECT coalesce(status_code::text, '-'), coalesce(left(error, 200), '-'), count(*)
               FROM triggers.webhook_attempts GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 5",
            &[],
        )
        .await
        .expect("attempts");
    if rows.is_empty() {
        eprintln!("webhooks: no attempt logged at all (the delivery workers' warnings are above)");
    }
    for row in rows {
        let (status, error, count): (String, String, i64) = (row.get(0), row.get(1), row.get(2));
        eprintln!("webhooks: {count} attempts got status {status}, error {error}");
    }
}

async fn set_enabled(db: &tokio_postgres::Client, endpoint: &str, enabled: bool) {
    db.execute(
        "SELECT FROM triggers.update_endpoint($1, $2::text::uuid, enabled => $3)",
        &[&TENANT, &endpoint, &enabled],
    )
    .await
    .expect("update_endpoint");
}

/// Offers `n` requests at 1,000 a second (10 connections, one each every 10 ms, as
/// live.rs's latency row does); `make(i, micros)` is the i-th request, stamped with its
/// send time in micros since `t0`; each answer must have status `expect`.
async fn offer(addr: &str, n: u64, t0: Instant, expect: u16, make: impl Fn(u64, u128) -> Vec<u8>) {
    let mut conns = join_all((0..10).map(|_| wire::Conn::open(addr))).await;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    for round in 0..n / 10 {
        tick.tick().await;
        join_all(conns.iter_mut().enumerate().map(|(i, c)| {
            let request = make(round * 10 + i as u64, t0.elapsed().as_micros());
            async move {
                let (status, body) = c.send(&request).await;
                assert_eq!(status, expect, "{}", String::from_utf8_lossy(&body));
            }
        }))
        .await;
    }
}

/// The webhook rows. `key` is tenant "bench"'s API key; `addr` the server's; `config`
/// the cluster's (the delivery workers get a client of their own, carrying the secrets
/// key); `client` the harness's, for [`drained`].
pub async fn rows(
    client: &triggers_client::Client,
    config: &tokio_postgres::Config,
    addr: &str,
    key: &str,
    secs: f64,
) {
    // The delivery workers' warnings (cannot claim, cannot record) on stderr; the
    // processing workers' are left out: they warn when the cluster stops under them.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "triggers_server::workers::delivery=warn".into()),
        )
        .try_init();
    let keyed = triggers_client::Client::from_config(with_key(config.clone()), 16).expect("client");
    let db = common::connect(&with_key(config.clone())).await;
    let t0 = Instant::now();
    let rx = Receiver::start(t0).await;
    let cap: i32 = db
        .query_one(
            "SELECT webhook_endpoint_concurrency FROM triggers.config",
            &[],
        )
        .await
        .expect("config")
        .get(0);
    let args = Settings::parse_from(["triggers-http-load", "--webhook-allow-private"]).webhooks;
    let n_workers = args.webhook_workers;
    // The claim keeps at most `cap` requests in flight to one endpoint over all workers:
    // the baselines' connections.
    let conns = cap.clamp(1, 1000) as usize;
    let direct_addr = rx.addr.to_string();

    // Baseline of deliveries/s: the receiver's ceiling over `conns` keep-alive connections.
    let ceiling = {
        let sent = Arc::new(AtomicU64::new(0));
        let states = join_all((0..conns).map(|_| wire::Conn::open(&direct_addr))).await;
        let (rate, _) = drive(states, secs, move |mut conn| {
            let request = direct_request(sent.fetch_add(1, Ordering::Relaxed), r#"{"n":1}"#);
            async move {
                let (status, body) = conn.send(&request).await;
                assert_eq!(status, 204, "{}", String::from_utf8_lossy(&body));
                conn
            }
        })
        .await;
        rate
    };
    rx.reset();

    // Deliveries/s: N events stored with their outbox rows while no delivery worker
    // runs (the queue drained first, so only these get deliveries), then the workers.
    drained(client).await;
    let endpoint = keyed
        .create_endpoint(TENANT, &rx.url(), None, Some("triggers-http-load"))
        .await
        .expect("create_endpoint")
        .endpoint_id
        .to_string();
    let n = ((4000.0 * secs) as u64).div_ceil(100) * 100;
    {
        let batch = serde_json::json!({"events": (0..100).map(|i| serde_json::json!({"payload": {"n": i}})).collect::<Vec<_>>()}).to_string();
        let request = wire::request("POST", "/events/batch", key, &batch);
        let next = Arc::new(AtomicU64::new(0));
        let senders = (0..8).map(|_| {
            let (request, next) = (request.clone(), next.clone());
            async move {
                let mut conn = wire::Conn::open(addr).await;
                while next.fetch_add(100, Ordering::Relaxed) < n {
                    let (status, body) = conn.send(&request).await;
                    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
                }
            }
        });
        join_all(senders).await;
    }
    drained(client).await;
    let pending = wait_deliveries(
        &db,
        &endpoint,
        "pending",
        n as i64,
        Instant::now() + PATIENCE,
    )
    .await;
    assert_eq!(
        pending, n as i64,
        "the outbox should hold a delivery per stored event"
    );
    let started = Instant::now();
    let workers = delivery_workers(&keyed, &args);
    let (got, last) = rx.wait(n, started + PATIENCE).await;
    let received = last.map_or(started.elapsed(), |at| at - started);
    let succeeded = wait_deliveries(
        &db,
        &endpoint,
        "succeeded",
        n as i64,
        Instant::now() + PATIENCE,
    )
    .await;
    let recorded = started.elapsed();
    // Done when every id has come and every delivery is recorded `succeeded`.
    let (rate, short) = if got == n && succeeded == n as i64 {
        (n as f64 / recorded.as_secs_f64(), String::new())
    } else {
        (
            got as f64 / received.as_secs_f64(),
            format!(
                ", only {got} received and {succeeded} succeeded of {n} within {} s",
                PATIENCE.as_secs()
            ),
        )
    };
    if got < n {
        why(&db).await;
    }
    println!(
        "| webhooks: {n} stored events → one local receiver, {n_workers} delivery workers, endpoint concurrency {cap} | {rate:.0} deliveries/s (all received after {:.2} s, all `succeeded` after {:.2} s; {} duplicates{short}) | raw POST to the receiver, {conns} keep-alive connections: {ceiling:.0} req/s | {:.2} | ≥ 5,000 deliveries/s |",
        received.as_secs_f64(),
        recorded.as_secs_f64(),
        rx.duplicates(),
        rate / ceiling
    );

    // POST → received: 1,000 events/s offered, processing and delivery workers running.
    // Baseline: the same pacing straight to the receiver (one HTTP hop).
    settled(client, &db, &endpoint).await;
    let offered = (1000.0 * secs) as u64 / 10 * 10;
    rx.reset();
    offer(&direct_addr, offered, t0, 204, |i, us| {
        direct_request(i, &format!(r#"{{"t":{us}}}"#))
    })
    .await;
    rx.wait(offered, Instant::now() + PATIENCE).await;
    let direct = rx.latencies();
    rx.reset();
    offer(addr, offered, t0, 200, |_, us| {
        wire::request(
            "POST",
            "/events",
            key,
            &format!(r#"{{"payload":{{"t":{us}}}}}"#),
        )
    })
    .await;
    let (got, _) = rx.wait(offered, Instant::now() + PATIENCE).await;
    let times = rx.latencies();
    let short = if got < offered {
        format!(", only {got} of {offered} within {} s", PATIENCE.as_secs())
    } else {
        String::new()
    };
    println!(
        "| webhooks: POST /events → webhook received, 1,000 events/s offered | p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms ({} received, {} duplicates{short}) | raw POST to the receiver at the same pace: p50 {:.2} ms, p99 {:.2} ms | {:.1} | p99 < 100 ms |",
        percentile(&times, 0.5),
        percentile(&times, 0.95),
        percentile(&times, 0.99),
        times.len(),
        rx.duplicates(),
        percentile(&direct, 0.5),
        percentile(&direct, 0.99),
        percentile(&times, 0.99) / percentile(&direct, 0.99)
    );

    // POST /events throughput with the endpoint enabled (workers delivering meanwhile)
    // vs disabled (no enabled endpoint: processing writes no outbox rows), two rounds
    // alternating which goes first, each from an empty queue and outbox.
    let request = wire::request("POST", "/events", key, r#"{"payload":{"n":1}}"#);
    let (mut on, mut off) = (0.0, 0.0);
    for round in 0..2 {
        for enabled in [round == 0, round != 0] {
            // Settled while the endpoint is still as it was: a disabled endpoint's
            // pending deliveries would wait for it forever.
            settled(client, &db, &endpoint).await;
            set_enabled(&db, &endpoint, enabled).await;
            let (rate, _) = drive_http(addr, 64, secs / 2.0, request.clone()).await;
            if enabled {
                on += rate / 2.0;
            } else {
                off += rate / 2.0;
            }
        }
    }
    println!(
        "| webhooks: POST /events, 64 concurrent, endpoint enabled (delivering) vs disabled (none enabled) | {on:.0} req/s | {off:.0} req/s | {:.2} | ≥ 0.7 |",
        on / off
    );
    workers.stop().await;

    // The producer's share alone: the same, with no delivery worker running, so the
    // endpoint costs only the outbox rows processing writes in the storing transaction
    // (on 2 cores, the row above also pays for delivering on the same CPUs).
    let (mut outbox, mut none) = (0.0, 0.0);
    for round in 0..2 {
        for enabled in [round == 0, round != 0] {
            drained(client).await;
            set_enabled(&db, &endpoint, enabled).await;
            let (rate, _) = drive_http(addr, 64, secs / 2.0, request.clone()).await;
            if enabled {
                outbox += rate / 2.0;
            } else {
                none += rate / 2.0;
            }
        }
    }
    drained(client).await;
    db.execute(
        "DELETE FROM triggers.webhook_deliveries WHERE status = 'pending'",
        &[],
    )
    .await
    .expect("clear the outbox");
    println!(
        "| webhooks: POST /events, 64 concurrent, endpoint enabled, delivery workers stopped (outbox rows only) vs disabled | {outbox:.0} req/s | {none:.0} req/s | {:.2} | (the outbox's cost) |",
        outbox / none
    );
}
