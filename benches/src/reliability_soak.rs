//! The reliability soak (issue 16): the whole system at a steady 5,000 events/s for ten
//! minutes. The real `triggers serve` binary (release build, its defaults: workers,
//! webhook delivery workers) runs against a private cluster; this harness offers
//! `POST /events/batch` of 50 every 10 ms, keeps one live-stream subscriber reading
//! `GET /inbox/stream` (resuming with `?after=` if it is ever cut), runs a webhook
//! receiver for an endpoint that takes every event (so every event ends `delivered`),
//! and runs `triggers.purge(interval '30 seconds')` every 10 s as a user's cron would.
//! Every 10 s it samples the server's RSS, the queue depth and the on-disk size of the
//! queue, events and deliveries tables. At the end it waits for everything to drain and
//! checks: every event offered was accepted, stored once, streamed once and delivered
//! at least once with a valid signature (every 100th checked); the server logged no
//! error or warning.
//!
//! ```text
//! cargo build --release -p triggers-server
//! cargo run --release -p triggers-benches --bin triggers-reliability-soak [-- --seconds 600 --rate 5000]
//! ```

#[path = "common.rs"]
mod common;
#[path = "wire.rs"]
mod wire;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{json, Value};
use triggers_core::webhooks::{verify, Secret};

/// Events per `POST /events/batch`; one batch per [`TICK`] is the offered rate.
const BATCH: u64 = 50;
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// How long the end waits for the queue, the stream and the deliveries to catch up.
const DRAIN_PATIENCE: Duration = Duration::from_secs(300);

/// What the webhook receiver got.
#[derive(Default)]
struct Received {
    ids: HashSet<String>,
    requests: u64,
    checked: u64,
    bad_signatures: u64,
}

struct Receiver {
    secret: Mutex<Option<Secret>>,
    got: Mutex<Received>,
}

async fn receive(
    State(receiver): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let id = header("webhook-id");
    let mut got = receiver.got.lock().unwrap();
    got.requests += 1;
    if got.requests % 100 == 1 {
        let secret = receiver.secret.lock().unwrap().clone();
        if let Some(secret) = secret {
            let timestamp = header("webhook-timestamp");
            let now = timestamp.parse().unwrap_or_default();
            got.checked += 1;
            if verify(
                &secret,
                &id,
                &timestamp,
                &header("webhook-signature"),
                &body,
                now,
            )
            .is_err()
            {
                got.bad_signatures += 1;
            }
        }
    }
    got.ids.insert(id);
    StatusCode::NO_CONTENT
}

/// The server process, its log lines at WARN or ERROR kept.
struct Server {
    child: Child,
    addr: String,
    complaints: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(url: &str, dir: &std::path::Path) -> Server {
        let binary = std::env::current_exe()
            .expect("this harness's path")
            .with_file_name("triggers");
        assert!(
            binary.exists(),
            "{} is missing: cargo build --release -p triggers-server first",
            binary.display()
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let addr = format!("127.0.0.1:{port}");
        let mut child = Command::new(&binary)
            .args([
                "serve",
                "--listen",
                &addr,
                "--rate-limit",
                "0",
                "--webhook-allow-private",
            ])
            .arg("--data-dir")
            .arg(dir.join("unused"))
            .arg("--secrets-key-file")
            .arg(dir.join("secrets-key"))
            .env("DATABASE_URL", url)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start triggers serve");
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let complaints = Arc::new(Mutex::new(Vec::new()));
        let kept = complaints.clone();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                if line.contains(r#""level":"WARN""#) || line.contains(r#""level":"ERROR""#) {
                    kept.lock().unwrap().push(line);
                }
            }
        });
        for line in stdout.lines().map_while(Result::ok) {
            if line.contains("listening on") {
                break;
            }
        }
        Server {
            child,
            addr,
            complaints,
        }
    }

    /// Resident memory in MiB, from /proc.
    fn rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .map_or(f64::NAN, |kib| kib / 1024.0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: kill with a pid we spawned and have not reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// Reads the live stream for good: counts events and distinct positions, resumes after
/// the last position whenever the stream is cut.
async fn subscribe(addr: String, key: String, events: Arc<AtomicU64>, cuts: Arc<AtomicU64>) {
    let http = reqwest::Client::new();
    let mut last: Option<String> = None;
    loop {
        let url = match &last {
            Some(position) => format!("http://{addr}/inbox/stream?after={position}"),
            None => format!("http://{addr}/inbox/stream"),
        };
        if let Ok(mut response) = http.get(url).bearer_auth(&key).send().await {
            let mut carry = String::new();
            while let Ok(Some(chunk)) = response.chunk().await {
                carry.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = carry.find("\n\n") {
                    let frame: String = carry.drain(..end + 2).collect();
                    let mut is_event = false;
                    for line in frame.lines() {
                        if let Some(id) = line.strip_prefix("id: ") {
                            last = Some(id.to_string());
                        } else if line == "event: event" {
                            is_event = true;
                        }
                    }
                    if is_event {
                        events.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        cuts.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One sample of what should stay bounded.
struct Sample {
    at: f64,
    rss_mib: f64,
    queue_depth: i64,
    queue_mib: f64,
    events_rows: i64,
    events_mib: f64,
    deliveries_mib: f64,
}

async fn sample(db: &tokio_postgres::Client, server: &Server, at: f64) -> Sample {
    let row = db
        .query_one(
            "SELECT (SELECT count(*) FROM pgmq.q_triggers_events),
                    pg_total_relation_size('pgmq.q_triggers_events'),
                    (SELECT count(*) FROM triggers.events),
                    pg_total_relation_size('triggers.events'),
                    pg_total_relation_size('triggers.webhook_deliveries')
                      + pg_total_relation_size('triggers.webhook_attempts')",
            &[],
        )
        .await
        .expect("sample");
    let mib = |i: usize| row.get::<_, i64>(i) as f64 / 1048576.0;
    Sample {
        at,
        rss_mib: server.rss_mib(),
        queue_depth: row.get(0),
        queue_mib: mib(1),
        events_rows: row.get(2),
        events_mib: mib(3),
        deliveries_mib: mib(4),
    }
}

/// (start, peak, end) of one column over the samples.
fn start_peak_end(samples: &[Sample], value: impl Fn(&Sample) -> f64) -> (f64, f64, f64) {
    let values: Vec<f64> = samples.iter().map(value).collect();
    let peak = values.iter().copied().fold(f64::MIN, f64::max);
    (values[0], peak, *values.last().unwrap())
}

/// The largest value in the second and in the last third of the run: a bounded
/// quantity's last third is no larger than its second (after the warm-up).
fn thirds(samples: &[Sample], value: impl Fn(&Sample) -> f64) -> (f64, f64) {
    let n = samples.len();
    let max = |s: &[Sample]| s.iter().map(&value).fold(f64::MIN, f64::max);
    (max(&samples[n / 3..2 * n / 3]), max(&samples[2 * n / 3..]))
}

#[tokio::main]
async fn main() {
    let secs = common::seconds_arg(600.0);
    let rate: u64 = common::arg("--rate")
        .and_then(|r| r.parse().ok())
        .unwrap_or(5000);
    let tick = Duration::from_secs_f64(BATCH as f64 / rate as f64);
    let (mut cluster, dir) = common::private_cluster("triggers-reliability-soak").await;
    let config = cluster.config();
    let url = format!(
        "postgres://{}:{}@127.0.0.1:{}/{}",
        config.get_user().unwrap(),
        String::from_utf8_lossy(config.get_password().unwrap()),
        config.get_ports()[0],
        config.get_dbname().unwrap()
    );
    let db = common::connect(&config).await;
    if let Some(cap) = common::arg("--endpoint-concurrency") {
        db.execute(
            "UPDATE triggers.config SET webhook_endpoint_concurrency = $1::text::int",
            &[&cap],
        )
        .await
        .expect("webhook_endpoint_concurrency");
    }
    let client = triggers_client::Client::from_config(config.clone(), 2).expect("client");
    let key = client.create_api_key("soak", "soak").await.expect("key");
    eprintln!("the cluster, for psql while it runs: {url}");
    let server = Server::start(&url, &dir);
    let addr = server.addr.clone();

    let receiver = Arc::new(Receiver {
        secret: Mutex::new(None),
        got: Mutex::new(Received::default()),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let receiver_url = format!("http://{}/", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .route("/", axum::routing::post(receive))
        .with_state(receiver.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let http = reqwest::Client::new();
    let created: Value = http
        .post(format!("http://{addr}/webhooks/endpoints"))
        .bearer_auth(&key)
        .json(&json!({"url": receiver_url}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let secret = created["data"]["secret"]
        .as_str()
        .expect("the endpoint's secret");
    *receiver.secret.lock().unwrap() = Some(Secret::parse(secret).unwrap());

    let (streamed, cuts) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    tokio::spawn(subscribe(
        addr.clone(),
        key.clone(),
        streamed.clone(),
        cuts.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;

    println!(
        "soak: {rate} events/s offered as POST /events/batch of {BATCH} every {:?} for {secs} s; \
         triggers serve (release, defaults) + 1 live-stream subscriber + 1 webhook endpoint taking \
         every event + purge(30 s) every 10 s; server, receiver and Postgres on this machine",
        tick
    );

    // The producer: batches on a fixed schedule over a few keep-alive connections, so a
    // slow answer delays one connection, not the schedule.
    let accepted = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(secs);
    let conns = 8u32;
    let producers: Vec<_> = (0..conns)
        .map(|n| {
            let (addr, key) = (addr.clone(), key.clone());
            let (accepted, refused) = (accepted.clone(), refused.clone());
            tokio::spawn(async move {
                let mut conn = wire::Conn::open(&addr).await;
                let mut every =
                    tokio::time::interval_at(tokio::time::Instant::now() + tick * n, tick * conns);
                let mut seq = 0u64;
                while Instant::now() < until {
                    every.tick().await;
                    let events: Vec<Value> = (0..BATCH)
                        .map(|i| json!({"payload": {"producer": n, "seq": seq + i}}))
                        .collect();
                    seq += BATCH;
                    let body = json!({ "events": events }).to_string();
                    let (status, _) = conn
                        .send(&wire::request("POST", "/events/batch", &key, &body))
                        .await;
                    if status == 200 {
                        accepted.fetch_add(BATCH, Ordering::Relaxed);
                    } else {
                        refused.fetch_add(BATCH, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();

    let purged = Arc::new(AtomicU64::new(0));
    let purger = {
        let purged = purged.clone();
        let db = common::connect(&config).await;
        if let Some(cap) = common::arg("--endpoint-concurrency") {
            db.execute(
                "UPDATE triggers.config SET webhook_endpoint_concurrency = $1::text::int",
                &[&cap],
            )
            .await
            .expect("webhook_endpoint_concurrency");
        }
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                let n: i64 = db
                    .query_one("SELECT triggers.purge(interval '30 seconds')", &[])
                    .await
                    .expect("purge")
                    .get(0);
                purged.fetch_add(n as u64, Ordering::Relaxed);
            }
        })
    };

    println!("\n| t (s) | server RSS (MiB) | accepted | queue depth | queue (MiB) | events rows | events (MiB) | deliveries+attempts (MiB) | streamed | webhooks received |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut samples = Vec::new();
    let mut next = Instant::now();
    while Instant::now() < until {
        let s = sample(&db, &server, started.elapsed().as_secs_f64()).await;
        println!(
            "| {:.0} | {:.1} | {} | {} | {:.1} | {} | {:.1} | {:.1} | {} | {} |",
            s.at,
            s.rss_mib,
            accepted.load(Ordering::Relaxed),
            s.queue_depth,
            s.queue_mib,
            s.events_rows,
            s.events_mib,
            s.deliveries_mib,
            streamed.load(Ordering::Relaxed),
            receiver.got.lock().unwrap().ids.len()
        );
        samples.push(s);
        next += SAMPLE_EVERY;
        tokio::time::sleep_until(next.into()).await;
    }
    for producer in producers {
        producer.await.expect("producer");
    }
    let load_secs = started.elapsed().as_secs_f64();
    let offered = accepted.load(Ordering::Relaxed) + refused.load(Ordering::Relaxed);
    samples.push(sample(&db, &server, load_secs).await);

    // Drain: the queue empty, every accepted event streamed and received.
    let sent = accepted.load(Ordering::Relaxed);
    let drain_started = Instant::now();
    loop {
        let depth = client.metrics(None).await.expect("metrics").queue_depth;
        let received = receiver.got.lock().unwrap().ids.len() as u64;
        if depth == 0 && streamed.load(Ordering::Relaxed) >= sent && received >= sent {
            break;
        }
        if drain_started.elapsed() > DRAIN_PATIENCE {
            println!("\nnot drained after {DRAIN_PATIENCE:?}: queue {depth}, streamed {}, received {received} of {sent}", streamed.load(Ordering::Relaxed));
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let drain_secs = drain_started.elapsed().as_secs_f64();
    purger.abort();
    let counters = client.counters(Some("soak")).await.expect("counters");
    let got = receiver.got.lock().unwrap();
    let complaints = server.complaints.lock().unwrap().clone();

    println!("\n| measure | start | peak | end | max in 2nd third → last third |");
    println!("|---|---|---|---|---|");
    let row = |name: &str, value: fn(&Sample) -> f64| {
        let (a, b, c) = start_peak_end(&samples, value);
        let (m2, m3) = thirds(&samples, value);
        println!("| {name} | {a:.1} | {b:.1} | {c:.1} | {m2:.1} → {m3:.1} |");
    };
    row("server RSS (MiB)", |s| s.rss_mib);
    row("queue table (MiB)", |s| s.queue_mib);
    row("events table (MiB)", |s| s.events_mib);
    row("webhook deliveries + attempts (MiB)", |s| s.deliveries_mib);
    row("events rows", |s| s.events_rows as f64);
    row("queue depth", |s| s.queue_depth as f64);
    println!(
        "\noffered {offered} events in {load_secs:.0} s ({:.0}/s); accepted {sent}, refused {}; \
         stored {} (counter), streamed {}, stream cut {} times; webhooks: {} distinct of {sent}, \
         {} requests, {} signatures checked, {} bad; purged {} events; drained in {drain_secs:.1} s; \
         server warnings/errors logged: {}",
        offered as f64 / load_secs,
        refused.load(Ordering::Relaxed),
        counters.stored,
        streamed.load(Ordering::Relaxed),
        cuts.load(Ordering::Relaxed),
        got.ids.len(),
        got.requests,
        got.checked,
        got.bad_signatures,
        purged.load(Ordering::Relaxed),
        complaints.len()
    );
    for line in complaints.iter().take(10) {
        println!("  {line}");
    }
    drop(got);
    drop(server);
    cluster.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
