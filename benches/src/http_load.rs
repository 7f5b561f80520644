//! The HTTP load harness. Starts a private cluster (synchronous_commit = on) and the
//! triggers server in this process (the router, 2 workers, no rate limit), then drives
//! it over loopback with a concurrent load generator sharing the same 2 cores, and
//! prints each figure beside raw `pgmq.send` over direct connections, same run.
//!
//! ```text
//! cargo run --release -p triggers-benches --bin triggers-http-load [-- --seconds 5]
//! ```

#[path = "common.rs"]
mod common;

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

/// `conns` tasks each sending `request()` back to back for `secs`; returns
/// (requests per second, sorted latencies).
async fn drive<F, Fut>(conns: usize, secs: f64, request: F) -> (f64, Vec<Duration>)
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let request = Arc::new(request);
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let started = Instant::now();
    let tasks = (0..conns).map(|_| {
        let request = request.clone();
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                request().await;
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

#[tokio::main]
async fn main() {
    let secs = common::seconds_arg(5.0);
    let (mut cluster, dir) = common::private_cluster("triggers-http-load").await;
    let config = cluster.config();
    let client = triggers_client::Client::from_config(config.clone(), 32).expect("client");
    let key = client.create_api_key("bench", "load").await.expect("key");

    // The server, in this process: router + 2 workers, no rate limit.
    let state = triggers_server::http::AppState::new(client.clone()).with_rate_limit(0);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, triggers_server::http::app(state)).await });
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    for id in 0..2 {
        tokio::spawn(triggers_server::worker::run(
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
    println!("synchronous_commit = on; {secs} s per measurement; server and load generator in one process\n");
    println!("| measure | triggers over HTTP | raw pgmq.send, direct | ratio | target |");
    println!("|---|---|---|---|---|");

    // Baseline: raw pgmq.send on 64 direct connections, one per transaction.
    let raw = {
        let mut conns = Vec::new();
        for _ in 0..64 {
            let (c, connection) = config.connect(NoTls).await.unwrap();
            tokio::spawn(connection);
            conns.push(Arc::new(c));
        }
        let conns = Arc::new(conns);
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        drive(64, secs, move || {
            let c = conns[next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 64].clone();
            async move {
                c.execute("SELECT pgmq.send('bench_raw', '{\"n\": 1}'::jsonb)", &[])
                    .await
                    .expect("send");
            }
        })
        .await
        .0
    };

    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(128)
        .build()
        .unwrap();
    let auth = format!("Bearer {key}");
    let (rate, latencies) = {
        let (http, auth, url) = (http.clone(), auth.clone(), format!("{base}/events"));
        drive(64, secs, move || {
            let request = http
                .post(&url)
                .header("authorization", &auth)
                .body(r#"{"payload":{"n":1}}"#);
            async move {
                let response = request.send().await.expect("post");
                assert_eq!(response.status(), 200);
            }
        })
        .await
    };
    println!(
        "| POST /events, 64 concurrent | {rate:.0} req/s, p50 {:.1} ms, p99 {:.1} ms | {raw:.0} tx/s | {:.2} | ≥ 10,000 req/s, p99 < 20 ms |",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        rate / raw
    );

    let batch: String =
        json!({"events": (0..100).map(|i| json!({"payload": {"n": i}})).collect::<Vec<Value>>()})
            .to_string();
    let (rate, _) = {
        let (http, auth, url) = (http.clone(), auth.clone(), format!("{base}/events/batch"));
        drive(8, secs, move || {
            let request = http
                .post(&url)
                .header("authorization", &auth)
                .body(batch.clone());
            async move {
                let response = request.send().await.expect("batch");
                assert_eq!(response.status(), 200);
            }
        })
        .await
    };
    println!(
        "| POST /events/batch of 100, 8 concurrent | {:.0} events/s | {raw:.0} tx/s | {:.2} | ≥ 50,000 events/s |",
        rate * 100.0,
        rate * 100.0 / raw
    );

    // Let the workers drain what the load left, then time single events end to end.
    while client.metrics(None).await.unwrap().queue_depth > 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut visible = Vec::new();
    for n in 0..300 {
        let t = Instant::now();
        let sent: Value = http
            .post(format!("{base}/events"))
            .header("authorization", &auth)
            .body(format!(r#"{{"payload":{{"probe":{n}}}}}"#))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = sent["data"]["event_id"].as_str().unwrap().to_string();
        loop {
            let status = http
                .get(format!("{base}/events/{id}"))
                .header("authorization", &auth)
                .send()
                .await
                .unwrap()
                .status();
            if status == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        visible.push(t.elapsed());
        // Spread the probes out, so each finds the workers idle.
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    visible.sort();
    println!(
        "| POST → visible as pending (GET /events/{{id}}), workers idle, 300 probes | p50 {:.1} ms, p99 {:.1} ms | | | p99 < 50 ms |",
        percentile(&visible, 0.5),
        percentile(&visible, 0.99)
    );
    drop(admin);
    cluster.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
