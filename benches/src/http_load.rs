//! The HTTP load harness. Starts a private cluster (synchronous_commit = on) and the
//! triggers server in this process (the router, 2 workers, `triggers serve`'s limits
//! with its rates raised past this load: every check runs, none refuses), then drives
//! it over loopback with a lean keep-alive load generator sharing the same 2 cores, and
//! prints each figure beside raw `pgmq.send` over direct connections, same run.
//!
//! ```text
//! cargo run --release -p triggers-benches --bin triggers-http-load \
//!     [-- --seconds 5] [--only raw,post,batch,visible] [--workers 2] [--limits on|off]
//! ```
//! `--only raw,live` (not in the default run) measures the live stream (live.rs);
//! `--only raw,webhooks` (not in the default run either) the webhook delivery path
//! (webhooks.rs); `--only isolation` what one tenant's stuck requests cost another
//! (isolation.rs; `--limits on` against `--limits off`).

#[path = "common.rs"]
mod common;
#[path = "isolation.rs"]
mod isolation;
#[path = "live.rs"]
mod live;
#[path = "webhooks.rs"]
mod webhooks;
#[path = "wire.rs"]
mod wire;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::{json, Value};
use tokio_postgres::NoTls;

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// One task per element of `states`, each running `step` on its state back to back for
/// `secs`; returns (steps per second, sorted latencies).
async fn drive<S, F, Fut>(states: Vec<S>, secs: f64, step: F) -> (f64, Vec<Duration>)
where
    S: Send + 'static,
    F: Fn(S) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = S> + Send,
{
    let step = Arc::new(step);
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let started = Instant::now();
    let tasks = states.into_iter().map(|mut state| {
        let step = step.clone();
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                state = step(state).await;
                latencies.push(t.elapsed());
            }
            latencies
        })
    });
    let mut all: Vec<Duration> = join_all(tasks)
        .await
        .into_iter()
        .flat_map(|r| r.expect("task"))
        .collect();
    let rate = all.len() as f64 / started.elapsed().as_secs_f64();
    all.sort();
    (rate, all)
}

/// `conns` keep-alive connections to `addr`, each sending `request` back to back.
async fn drive_http(addr: &str, conns: usize, secs: f64, request: Vec<u8>) -> (f64, Vec<Duration>) {
    let request = Arc::new(request);
    let states = join_all((0..conns).map(|_| wire::Conn::open(addr))).await;
    drive(states, secs, move |mut conn| {
        let request = request.clone();
        async move {
            let (status, body) = conn.send(&request).await;
            assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
            conn
        }
    })
    .await
}

/// Posts up to `count` single events until `until`, one at a time with `pause` between
/// them, and returns the sorted times from sending each POST to its event answering
/// GET /events/{id} (stored, pending).
async fn probe_visibility(
    addr: &str,
    key: &str,
    count: usize,
    pause: Duration,
    until: Instant,
) -> Vec<Duration> {
    let mut conn = wire::Conn::open(addr).await;
    let mut visible = Vec::new();
    for n in 0..count {
        if Instant::now() >= until {
            break;
        }
        let body = format!(r#"{{"payload":{{"probe":{n}}}}}"#);
        let t = Instant::now();
        let (_, sent) = conn
            .send(&wire::request("POST", "/events", key, &body))
            .await;
        let sent: Value = serde_json::from_slice(&sent).expect("json");
        let id = sent["data"]["event_id"].as_str().expect("event_id");
        let get = wire::request("GET", &format!("/events/{id}"), key, "");
        while conn.send(&get).await.0 != 200 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        visible.push(t.elapsed());
        tokio::time::sleep(pause).await;
    }
    visible.sort();
    visible
}

/// The server's limits: by default `triggers serve`'s, with the per-key and per-tenant
/// rates and the tenant's queue share raised past what this load reaches, so that every
/// check runs on every request and none refuses one; `--limits off`: no per-key or
/// per-tenant limits at all.
fn settings() -> triggers_server::http::Settings {
    use triggers_server::http::Settings;
    match common::arg("--limits").as_deref() {
        Some("off") => Settings::unlimited(),
        None | Some("on") => {
            let mut settings = Settings::default();
            settings.tenant.requests_per_minute = u32::MAX;
            settings.tenant.events_per_minute = u32::MAX;
            settings.tenant.max_queued = 100_000_000;
            settings.max_queue_depth = 100_000_000;
            settings
        }
        Some(other) => {
            eprintln!("--limits {other}: expected on or off");
            std::process::exit(2)
        }
    }
}

/// Returns once the workers have emptied the queue.
async fn drained(client: &triggers_client::Client) {
    while client.metrics(None).await.expect("metrics").queue_depth > 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::main]
async fn main() {
    let secs = common::seconds_arg(5.0);
    let workers: usize = common::arg("--workers")
        .and_then(|w| w.parse().ok())
        .unwrap_or(2);
    let (mut cluster, dir) = common::private_cluster("triggers-http-load").await;
    let config = cluster.config();
    let client = triggers_client::Client::from_config(config.clone(), 32).expect("client");
    let key = client.create_api_key("bench", "load").await.expect("key");

    // The server, in this process: router + workers, with `triggers serve`'s limits
    // (`--limits off`: none).
    let state = triggers_server::http::AppState::with(client.clone(), settings());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, triggers_server::http::app(state)).await });
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    for id in 0..workers {
        tokio::spawn(triggers_server::workers::processing::run(
            id,
            client.clone(),
            Default::default(),
            stopped.clone(),
        ));
    }

    let (admin, connection) = config.connect(NoTls).await.unwrap();
    tokio::spawn(connection);
    admin
        .batch_execute("SELECT pgmq.create('bench_raw')")
        .await
        .unwrap();
    println!(
        "synchronous_commit = on; {secs} s per measurement; server ({workers} workers) and load \
         generator in one process\n"
    );
    println!("| measure | triggers over HTTP | raw pgmq.send, direct | ratio | target |");
    println!("|---|---|---|---|---|");

    // Baseline: raw pgmq.send on 64 direct connections, one per transaction.
    let raw = if common::selected("raw") {
        let mut conns = Vec::new();
        for _ in 0..64 {
            let (c, connection) = config.connect(NoTls).await.unwrap();
            tokio::spawn(connection);
            conns.push(c);
        }
        drive(conns, secs, |c| async move {
            c.execute("SELECT pgmq.send('bench_raw', '{\"n\": 1}'::jsonb)", &[])
                .await
                .expect("send");
            c
        })
        .await
        .0
    } else {
        f64::NAN
    };

    if common::selected("post") {
        let request = wire::request("POST", "/events", &key, r#"{"payload":{"n":1}}"#);
        // Beside the load, one more connection times single events end to end, so
        // visibility is also measured while the workers are busiest.
        let probes = {
            let (addr, key) = (addr.clone(), key.clone());
            let until = Instant::now() + Duration::from_secs_f64(secs);
            tokio::spawn(async move {
                probe_visibility(&addr, &key, usize::MAX, Duration::from_millis(10), until).await
            })
        };
        let (rate, latencies) = drive_http(&addr, 64, secs, request).await;
        let visible = probes.await.expect("probes");
        println!(
            "| POST /events, 64 concurrent | {rate:.0} req/s, p50 {:.1} ms, p99 {:.1} ms | {raw:.0} tx/s | {:.2} | ≥ 10,000 req/s, p99 < 20 ms |",
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            rate / raw
        );
        println!(
            "| POST → visible as pending (GET /events/{{id}}) during that load, {} probes | p50 {:.1} ms, p99 {:.1} ms | | | p99 < 50 ms |",
            visible.len(),
            percentile(&visible, 0.5),
            percentile(&visible, 0.99)
        );
    }

    if common::selected("batch") {
        // Each measurement starts from an empty queue, not from the last one's backlog.
        drained(&client).await;
        let batch =
            json!({"events": (0..100).map(|i| json!({"payload": {"n": i}})).collect::<Vec<Value>>()})
                .to_string();
        let request = wire::request("POST", "/events/batch", &key, &batch);
        let (rate, _) = drive_http(&addr, 8, secs, request).await;
        println!(
            "| POST /events/batch of 100, 8 concurrent | {:.0} events/s | {raw:.0} tx/s | {:.2} | ≥ 50,000 events/s |",
            rate * 100.0,
            rate * 100.0 / raw
        );
    }

    if common::selected("visible") {
        // Let the workers drain what the load left, then time single events end to end.
        drained(&client).await;
        let forever = Instant::now() + Duration::from_secs(3600);
        let visible = probe_visibility(&addr, &key, 300, Duration::from_millis(3), forever).await;
        println!(
            "| POST → visible as pending (GET /events/{{id}}), workers idle, 300 probes | p50 {:.1} ms, p99 {:.1} ms | | | p99 < 50 ms |",
            percentile(&visible, 0.5),
            percentile(&visible, 0.99)
        );
    }
    if common::named("live") {
        drained(&client).await;
        let other = client.create_api_key("idle", "load").await.expect("key");
        live::rows(&client, &addr, &key, &other, secs, raw).await;
    }
    if common::named("isolation") {
        drained(&client).await;
        isolation::rows(&client, &config, &addr, "bench", &key).await;
    }
    if common::named("webhooks") {
        drained(&client).await;
        webhooks::rows(&client, &config, &addr, &key, secs).await;
    }
    drop(admin);
    cluster.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
