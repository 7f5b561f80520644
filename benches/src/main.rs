//! The processing-core load harness. Starts a private cluster (the embedded default's
//! code, `synchronous_commit = on`), then measures each triggers operation beside the
//! raw pgmq operation it builds on, in the same run, and prints the ratios.
//!
//! ```text
//! cargo run --release -p triggers-benches --bin triggers-load \
//!     [-- --seconds 5] [--only enqueue,batch,drain,client,streams,latency]
//! ```
//! `--only claim` (never part of the default run: about 4 minutes at `--seconds 5`)
//! measures the claim under an old snapshot and behind another tenant's flood.
//! (Long: one measurement per table row, each with its baseline beside it; the ordered
//! streams' rows are in `streams.rs`.)

#[path = "claim.rs"]
mod claim;
#[path = "common.rs"]
mod common;
#[path = "streams.rs"]
mod streams;

use std::time::{Duration, Instant};

use common::connect;
use futures_util::future::join_all;
use tokio_postgres::{Client, Config, NoTls};

const ENQUEUE: &str = "SELECT triggers.enqueue(payload => '{\"n\": 1}'::jsonb)";

/// Runs `sql` (one statement, one transaction) on `conns` connections for `secs`;
/// returns statements per second. The clock starts once every connection is open.
async fn rate(config: &Config, conns: usize, secs: f64, sql: &'static str) -> f64 {
    let ready = std::sync::Arc::new(tokio::sync::Barrier::new(conns + 1));
    let tasks: Vec<_> = (0..conns)
        .map(|_| {
            let (config, ready) = (config.clone(), ready.clone());
            tokio::spawn(async move {
                let client = connect(&config).await;
                let statement = client.prepare(sql).await.expect("prepare");
                ready.wait().await;
                let deadline = Instant::now() + Duration::from_secs_f64(secs);
                let mut n = 0u64;
                while Instant::now() < deadline {
                    client.execute(&statement, &[]).await.expect("execute");
                    n += 1;
                }
                n
            })
        })
        .collect();
    ready.wait().await;
    let started = Instant::now();
    let total: u64 = join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.expect("task"))
        .sum();
    total as f64 / started.elapsed().as_secs_f64()
}

/// Runs each statement on its own (VACUUM refuses a transaction block).
async fn each(client: &Client, statements: &[&str]) {
    for sql in statements {
        client
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| match e.as_db_error() {
                Some(db) => panic!("{sql}: {} {}", db.code().code(), db.message()),
                None => panic!("{sql}: {e}"),
            });
    }
}

async fn reset(client: &Client) {
    each(
        client,
        &[
            "TRUNCATE pgmq.q_triggers_events, pgmq.q_triggers_events_dlq, pgmq.q_bench_raw,
                      triggers.events, triggers.idempotency_keys, triggers.streams,
                      triggers.stream_progress, triggers.metric_deltas, triggers.metric_totals,
                      triggers.latency_deltas, triggers.latency_minutes",
            "VACUUM ANALYZE pgmq.q_triggers_events, pgmq.q_bench_raw, triggers.events,
                            triggers.streams, triggers.stream_progress",
        ],
    )
    .await;
}

fn row(name: &str, ours: f64, baseline: f64, unit: &str, target: &str) {
    println!(
        "| {name} | {ours:.0} {unit} | {baseline:.0} {unit} | {:.2} | {target} |",
        ours / baseline
    );
}

#[tokio::main]
async fn main() {
    let secs = common::seconds_arg(5.0);
    let (mut cluster, dir, admin) = common::cluster_with_raw_queue("triggers-load").await;
    let config = cluster.config();
    let sc: String = admin
        .query_one("SHOW synchronous_commit", &[])
        .await
        .unwrap()
        .get(0);
    println!("synchronous_commit = {sc}; {secs} s per measurement\n");
    println!("| measure | triggers | baseline (raw pgmq; raw tokio-postgres for the client; no stream for the stream rows) | ratio | target |");
    println!("|---|---|---|---|---|");

    // Two rounds in alternating order (raw first, then ours first), so neither side
    // always runs on the warmer or the more bloated cluster.
    if common::selected("enqueue") {
        const RAW_SEND: &str = "SELECT pgmq.send('bench_raw', '{\"n\": 1}'::jsonb)";
        for conns in [1usize, 8, 32] {
            let (mut raw, mut ours) = (0.0, 0.0);
            for round in 0..2 {
                for side in [round, 1 - round] {
                    reset(&admin).await;
                    if side == 0 {
                        raw += rate(&config, conns, secs / 2.0, RAW_SEND).await / 2.0;
                    } else {
                        ours += rate(&config, conns, secs / 2.0, ENQUEUE).await / 2.0;
                    }
                }
            }
            row(
                &format!("enqueue, {conns} conn"),
                ours,
                raw,
                "tx/s",
                "≥ 0.85",
            );
        }
    }

    // enqueue_batch of 100 vs pgmq.send_batch of 100, events per second.
    if common::selected("batch") {
        reset(&admin).await;
        let raw = 100.0
        * rate(
            &config,
            2,
            secs,
            "SELECT pgmq.send_batch('bench_raw', (SELECT array_agg(jsonb_build_object('n', i)) FROM generate_series(1, 100) i))",
        )
        .await;
        reset(&admin).await;
        let ours = 100.0
        * rate(
            &config,
            2,
            secs,
            "SELECT count(*) FROM triggers.enqueue_batch((SELECT jsonb_agg(jsonb_build_object('payload', jsonb_build_object('n', i))) FROM generate_series(1, 100) i))",
        )
        .await;
        row(
            "enqueue_batch(100), 2 conn",
            ours,
            raw,
            "events/s",
            "≥ 50,000 events/s",
        );
    }

    // Draining 100,000 events: process_batch(100) vs pgmq read(100) + delete.
    if common::selected("drain") {
        let n = 100_000;
        reset(&admin).await;
        let fill_raw = format!(
        "SELECT pgmq.send_batch('bench_raw', (SELECT array_agg(jsonb_build_object('n', i)) FROM generate_series(1, {n}) i))"
    );
        each(&admin, &[&fill_raw]).await;
        for chunk in 0..n / 10_000 {
            let fill_ours = format!(
            "SELECT count(*) FROM triggers.enqueue_batch((SELECT jsonb_agg(jsonb_build_object('payload', jsonb_build_object('n', i))) FROM generate_series({}, {}) i))",
            chunk * 10_000 + 1,
            (chunk + 1) * 10_000
        );
            each(&admin, &[&fill_ours]).await;
        }
        each(
            &admin,
            &["VACUUM ANALYZE pgmq.q_bench_raw, pgmq.q_triggers_events"],
        )
        .await;
        let raw = drain_rate(
            &config,
            2,
            "WITH r AS (SELECT msg_id FROM pgmq.read('bench_raw', 30, 100))
         SELECT count(*)::int FROM r WHERE pgmq.delete('bench_raw', msg_id)",
        )
        .await;
        let ours = drain_rate(&config, 2, "SELECT read FROM triggers.process_batch(100)").await;
        let stored: i64 = admin
            .query_one("SELECT count(*) FROM triggers.events", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(stored, n, "every event stored");
        row(
            "drain 100k, process_batch(100) vs read+delete, 2 conn",
            ours,
            raw,
            "events/s",
            "≥ 30,000 events/s, ≥ 0.5",
        );
    }

    // triggers-client's enqueue vs the same SQL through raw tokio-postgres.
    if common::selected("client") {
        let (mut raw, mut ours) = (0.0, 0.0);
        for round in 0..2 {
            for side in [round, 1 - round] {
                reset(&admin).await;
                if side == 0 {
                    raw += raw_enqueue_rate(&config, secs / 2.0).await / 2.0;
                } else {
                    ours += client_enqueue_rate(&config, secs / 2.0).await / 2.0;
                }
            }
        }
        row(
            "triggers-client enqueue vs raw tokio-postgres, 1 conn",
            ours,
            raw,
            "calls/s",
            "≥ 0.95",
        );
    }

    if common::selected("streams") {
        streams::rows(&config, &admin, secs).await;
    }

    if common::named("claim") {
        claim::rows(&config, &admin, secs).await;
    }

    // 1,000 events from enqueue to stored, with a worker woken by the notification.
    if common::selected("latency") {
        reset(&admin).await;
        let latency = enqueue_to_stored(&config, 1000).await;
        println!("\n1,000 events, enqueue_batch commit → all stored by a LISTENing worker: {latency:.1} ms (target < 100 ms)");

        // An enqueue's wake-up, through triggers-client's Listener: from the call to the
        // listener woken, vs a bare pg_notify on the same channel (what a wake-up costs
        // beyond the notification itself).
        reset(&admin).await;
        let (ours, raw) = wake_latency(&config, 200).await;
        println!(
            "\ncall → triggers-client Listener woken, 200 each, alternating: \
         enqueue p50 {:.2} ms, p99 {:.2} ms; pg_notify p50 {:.2} ms, p99 {:.2} ms; \
         p50 ratio {:.2} (target: p99 < 50 ms)",
            ours.0,
            ours.1,
            raw.0,
            raw.1,
            ours.0 / raw.0
        );
    }

    drop(admin);
    cluster.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

const ENQUEUE_EX: &str = "SELECT event_id, duplicate FROM triggers.enqueue_ex(payload => $1, \
     metadata => $2, tenant => $3, idempotency_key => $4, stream => $5, debug => $6)";

/// Calls per second of `call`, run back to back for `secs`.
async fn per_second<F: std::future::Future<Output = ()>>(
    secs: f64,
    mut call: impl FnMut() -> F,
) -> f64 {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let started = Instant::now();
    let mut n = 0u64;
    while Instant::now() < deadline {
        call().await;
        n += 1;
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// `enqueue_ex` through a prepared statement on a raw tokio-postgres connection.
async fn raw_enqueue_rate(config: &Config, secs: f64) -> f64 {
    let client = connect(config).await;
    let statement = client.prepare(ENQUEUE_EX).await.expect("prepare");
    let payload = serde_json::json!({"n": 1});
    let none: Option<&str> = None;
    let none_json: Option<serde_json::Value> = None;
    per_second(secs, || async {
        client
            .query_one(
                &statement,
                &[&payload, &none_json, &"default", &none, &none, &none],
            )
            .await
            .expect("enqueue");
    })
    .await
}

/// The same through `triggers_client::Client::enqueue` (a pool of one connection).
async fn client_enqueue_rate(config: &Config, secs: f64) -> f64 {
    let client = triggers_client::Client::from_config(config.clone(), 1).expect("client");
    let event = triggers_client::NewEvent::new(serde_json::json!({"n": 1}));
    client.enqueue(&event).await.expect("warm up");
    per_second(secs, || async {
        client.enqueue(&event).await.expect("enqueue");
    })
    .await
}

/// Drains with `conns` connections, each running `sql` (which returns the messages it
/// handled) until a call handles none. Returns the seconds it took and, for each call
/// that handled some, how many and its time in ms.
async fn drain(config: &Config, conns: usize, sql: &'static str) -> (f64, Vec<(i64, f64)>) {
    let started = Instant::now();
    let tasks = (0..conns).map(|_| {
        let config = config.clone();
        tokio::spawn(async move {
            let client = connect(&config).await;
            let statement = client.prepare(sql).await.expect("prepare");
            let mut calls = Vec::new();
            loop {
                let call = Instant::now();
                let got: i32 = client
                    .query_one(&statement, &[])
                    .await
                    .expect("drain")
                    .get(0);
                if got == 0 {
                    break calls;
                }
                calls.push((i64::from(got), call.elapsed().as_secs_f64() * 1000.0));
            }
        })
    });
    let calls: Vec<(i64, f64)> = join_all(tasks)
        .await
        .into_iter()
        .flat_map(|r| r.expect("task"))
        .collect();
    (started.elapsed().as_secs_f64(), calls)
}

/// [`drain`]'s rate: messages per second.
async fn drain_rate(config: &Config, conns: usize, sql: &'static str) -> f64 {
    let (secs, calls) = drain(config, conns, sql).await;
    calls.iter().map(|(got, _)| *got).sum::<i64>() as f64 / secs
}

/// Milliseconds from the commit of a 1,000-event enqueue_batch until a worker that was
/// idle (LISTENing) has stored all of them.
async fn enqueue_to_stored(config: &Config, n: i64) -> f64 {
    use futures_util::StreamExt;
    let (worker, mut connection) = config.connect(NoTls).await.expect("connect");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let tokio_postgres::AsyncMessage::Notification(_) = message {
                let _ = tx.send(());
            }
        }
    });
    worker
        .batch_execute("LISTEN triggers_events")
        .await
        .unwrap();
    let worker_task = tokio::spawn(async move {
        rx.recv().await;
        let mut stored = 0i64;
        while stored < n {
            let row = worker
                .query_one("SELECT stored FROM triggers.process_batch(500)", &[])
                .await
                .unwrap();
            stored += i64::from(row.get::<_, i32>(0));
        }
        Instant::now()
    });
    let producer = connect(config).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let committed = {
        producer
            .query(
                &format!("SELECT triggers.enqueue_batch((SELECT jsonb_agg(jsonb_build_object('payload', jsonb_build_object('n', i))) FROM generate_series(1, {n}) i))"),
                &[],
            )
            .await
            .unwrap();
        Instant::now()
    };
    let done = worker_task.await.unwrap();
    done.saturating_duration_since(committed).as_secs_f64() * 1000.0
}

/// (p50, p99) in milliseconds from the start of an `enqueue` (a session that notifies on
/// every commit) to a woken `triggers_client::Listener`, and the same for a bare
/// `pg_notify('triggers_events', '')`; `n` samples each, the two alternating.
async fn wake_latency(config: &Config, n: usize) -> ((f64, f64), (f64, f64)) {
    let listener = triggers_client::Listener::connect(&config.clone().into())
        .await
        .expect("listen");
    let producer = connect(config).await;
    producer
        .batch_execute("SET triggers.notify_throttle_ms = 0")
        .await
        .unwrap();
    let enqueue = producer
        .prepare("SELECT triggers.enqueue(payload => '{}'::jsonb)")
        .await
        .unwrap();
    let notify = producer
        .prepare("SELECT pg_notify('triggers_events', '')")
        .await
        .unwrap();
    let (mut ours, mut raw) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..2 * n {
        let (statement, samples) = if i % 2 == 0 {
            (&enqueue, &mut ours)
        } else {
            (&notify, &mut raw)
        };
        let started = Instant::now();
        producer.execute(statement, &[]).await.expect("notify");
        assert!(
            listener
                .wait_for_events(Duration::from_secs(10))
                .await
                .expect("listening"),
            "no wake-up within 10 s"
        );
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    (percentiles(&mut ours), percentiles(&mut raw))
}

/// (p50, p99) of `samples`.
fn percentiles(samples: &mut [f64]) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99))
}
