//! triggers-load's rows for the claim at scale (sql/claim.sql): an old snapshot held in
//! the middle of a steady load, and one tenant's event behind another's flood. Each is
//! one run; the previous design's figures come from the same harness run against that
//! build of the extension (README → Benchmarks → The claim at scale).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_postgres::{Client, Config};

use super::{connect, each, percentiles, reset};

const PROCESS: &str = "SELECT read FROM triggers.process_batch(100)";

/// The queue table's size with its indexes, in MiB.
async fn queue_mib(admin: &Client) -> f64 {
    let bytes: i64 = admin
        .query_one(
            "SELECT pg_total_relation_size('pgmq.q_triggers_events')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    bytes as f64 / (1024.0 * 1024.0)
}

/// Offers `per_second` events (batches of 40 every 10 ms) until `stop`.
fn producer(
    config: &Config,
    per_second: u32,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<u64> {
    let config = config.clone();
    tokio::spawn(async move {
        let client = connect(&config).await;
        let per_tick = per_second / 100;
        let statement = client
            .prepare(
                "SELECT count(*) FROM triggers.enqueue_batch((SELECT jsonb_agg(jsonb_build_object('payload', jsonb_build_object('n', i)))
                                                                 FROM generate_series(1, $1::int) i))",
            )
            .await
            .unwrap();
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut sent = 0u64;
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            client
                .execute(&statement, &[&(per_tick as i32)])
                .await
                .unwrap();
            sent += u64::from(per_tick);
        }
        sent
    })
}

/// One process_batch call that read something: when it started (seconds since the
/// run's start), how long it took (ms), how many messages it read.
type Call = (f64, f64, i32);

/// A worker: process_batch(100) until `stop`, resting 5 ms when a call finds nothing;
/// returns every call that read something.
fn worker(
    config: &Config,
    t0: Instant,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<Call>> {
    let config = config.clone();
    tokio::spawn(async move {
        let client = connect(&config).await;
        let statement = client.prepare(PROCESS).await.unwrap();
        let mut calls = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            let read: i32 = client.query_one(&statement, &[]).await.unwrap().get(0);
            if read == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            } else {
                calls.push((
                    started.duration_since(t0).as_secs_f64(),
                    started.elapsed().as_secs_f64() * 1000.0,
                    read,
                ));
            }
        }
        calls
    })
}

/// What `triggers serve`'s worker 0 does (`WorkerOptions::vacuum_every`): vacuum the
/// queue every 10 s while there is work, until `stop`.
fn janitor(config: &Config, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    let client = triggers_client::Client::from_config(config.clone(), 1).unwrap();
    tokio::spawn(async move {
        let mut state = triggers_client::VacuumState::default();
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_secs(10)).await;
            client.vacuum_queue(&mut state).await.unwrap();
        }
    })
}

/// Sizes of the hot tables (with indexes), in MiB.
async fn hot_tables(admin: &Client) -> String {
    let row = admin
        .query_one(
            "SELECT pg_total_relation_size('triggers.metric_deltas'), pg_total_relation_size('triggers.latency_deltas'),
                    pg_total_relation_size('triggers.metric_totals')",
            &[],
        )
        .await
        .unwrap();
    let mib = |i: usize| row.get::<_, i64>(i) as f64 / (1024.0 * 1024.0);
    format!(
        "metric_deltas {:.2} MiB, latency_deltas {:.2} MiB, metric_totals {:.2} MiB",
        mib(0),
        mib(1),
        mib(2)
    )
}

/// 4,000 events/s offered to two workers; another session holds one REPEATABLE READ
/// snapshot through the middle phase. Prints each phase's process_batch p50/p99 and
/// the queue's size, with default autovacuum settings (naptime one minute) and, with
/// `--janitor`, the server's own VACUUM of the queue every 10 s.
async fn old_snapshot(config: &Config, admin: &Client, secs: f64) {
    let (before, held, after) = (6.0 * secs, 24.0 * secs, 12.0 * secs);
    reset(admin).await;
    each(
        admin,
        &[
            "ALTER SYSTEM SET autovacuum_naptime = '1min'",
            "SELECT pg_reload_conf()",
        ],
    )
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let workers: Vec<_> = (0..2).map(|_| worker(config, t0, stop.clone())).collect();
    let offered = producer(config, 4_000, stop.clone());
    let janitor = std::env::args()
        .any(|a| a == "--janitor")
        .then(|| janitor(config, stop.clone()));
    tokio::time::sleep(Duration::from_secs_f64(before)).await;
    let mib_before = queue_mib(admin).await;
    let holder = connect(config).await;
    holder
        .batch_execute(
            "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM triggers.config",
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs_f64(held)).await;
    let mib_held = queue_mib(admin).await;
    let hot_held = hot_tables(admin).await;
    holder.batch_execute("COMMIT").await.unwrap();
    tokio::time::sleep(Duration::from_secs_f64(after)).await;
    let mib_after = queue_mib(admin).await;
    stop.store(true, Ordering::Relaxed);
    let sent = offered.await.unwrap();
    if let Some(janitor) = janitor {
        janitor.await.unwrap();
    }
    let calls: Vec<Call> = futures_util::future::join_all(workers)
        .await
        .into_iter()
        .flat_map(|w| w.unwrap())
        .collect();
    each(
        admin,
        &[
            "ALTER SYSTEM RESET autovacuum_naptime",
            "SELECT pg_reload_conf()",
        ],
    )
    .await;
    let during = |from: f64, to: f64| -> Vec<&Call> {
        calls
            .iter()
            .filter(|(at, _, _)| *at >= from && *at < to)
            .collect()
    };
    // Per phase: a call's p50 and p99, the calls, messages per call and the mean time
    // per message (a call takes longer the fuller its batch: a backlog fills them).
    let phase = |from: f64, to: f64| {
        let inside = during(from, to);
        let mut ms: Vec<f64> = inside.iter().map(|(_, ms, _)| *ms).collect();
        let (p50, p99) = percentiles(&mut ms);
        let read: i64 = inside.iter().map(|(_, _, n)| i64::from(*n)).sum();
        format!(
            "{p50:.1} ms | {p99:.1} ms | {} | {:.0} | {:.3} ms |",
            ms.len(),
            read as f64 / ms.len().max(1) as f64,
            ms.iter().sum::<f64>() / read.max(1) as f64
        )
    };
    let p99 = |from: f64, to: f64| {
        let mut ms: Vec<f64> = during(from, to).iter().map(|(_, ms, _)| *ms).collect();
        percentiles(&mut ms).1
    };
    println!(
        "\n4,000 events/s offered ({sent} sent), 2 workers, default autovacuum; a REPEATABLE READ snapshot held {held:.0} s:"
    );
    println!("| phase | process_batch p50 | p99 | calls | messages per call | ms per message |");
    println!("|---|---|---|---|---|---|");
    println!("| before ({before:.0} s) | {}", phase(1.0, before));
    println!(
        "| snapshot held ({held:.0} s) | {}",
        phase(before, before + held)
    );
    println!(
        "| its last {:.0} s | {}",
        secs * 2.0,
        phase(before + held - secs * 2.0, before + held)
    );
    println!(
        "| after ({after:.0} s) | {}",
        phase(before + held, before + held + after)
    );
    println!(
        "held p99 / before p99: {:.2} (target ≤ 2); queue table + indexes: {mib_before:.1} MiB before the snapshot, {mib_held:.1} MiB when it ended, {mib_after:.1} MiB {after:.0} s later",
        p99(before, before + held) / p99(1.0, before)
    );
    println!("when the snapshot ended: {hot_held}");
}

/// 200,000 events of one tenant queued, then one of another: how long the quiet
/// tenant's event waits to be stored, two workers draining.
async fn flood_and_one(config: &Config, admin: &Client) {
    reset(admin).await;
    for _ in 0..20 {
        each(
            admin,
            &["SELECT count(*) FROM triggers.enqueue_batch((SELECT jsonb_agg(jsonb_build_object('payload', jsonb_build_object('n', i)))
                                                              FROM generate_series(1, 10000) i), 'flood')"],
        )
        .await;
    }
    each(admin, &["VACUUM ANALYZE pgmq.q_triggers_events"]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let workers: Vec<_> = (0..2).map(|_| worker(config, t0, stop.clone())).collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sent = Instant::now();
    let id: String = admin
        .query_one(
            "SELECT triggers.enqueue('{\"hello\": 1}', tenant => 'quiet')::text",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    loop {
        let stored: i64 = admin
            .query_one(
                "SELECT count(*) FROM triggers.events WHERE event_id = $1::text::uuid",
                &[&id],
            )
            .await
            .unwrap()
            .get(0);
        if stored == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let waited = sent.elapsed().as_secs_f64() * 1000.0;
    stop.store(true, Ordering::Relaxed);
    let calls: usize = futures_util::future::join_all(workers)
        .await
        .into_iter()
        .map(|w| w.unwrap().len())
        .sum();
    println!(
        "\n200,000 events of one tenant queued, then 1 of another, 2 workers: the quiet tenant's event stored {waited:.1} ms after its enqueue ({calls} calls in all)"
    );
}

/// The claim rows: `--only claim`.
pub async fn rows(config: &Config, admin: &Client, secs: f64) {
    flood_and_one(config, admin).await;
    old_snapshot(config, admin, secs).await;
}
