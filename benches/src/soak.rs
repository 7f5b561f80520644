//! The soak: does the queue stay small under sustained load? Every finished message is
//! a dead row until vacuum removes it; if vacuum fell behind, the queue's table and
//! indexes would grow with every event processed (SPEC §4.6). Offers 10,000 events/s
//! (100 every 10 ms) for `--seconds`, drains with one consumer, samples the queue's
//! size every second, then does the same through raw pgmq in the same run (a private
//! cluster with the embedded default's settings, `autovacuum_naptime = 1s`).
//!
//! ```text
//! cargo run --release -p triggers-benches --bin triggers-soak [-- --seconds 20 --only triggers,raw]
//! ```

#[path = "common.rs"]
mod common;

use std::time::{Duration, Instant};

use common::connect;
use tokio_postgres::Config;

/// One side of the comparison: how it produces 100 events, drains up to 500 (returns
/// how many it finished), and which table is its queue.
struct Side {
    name: &'static str,
    produce: &'static str,
    consume: &'static str,
    queue: &'static str,
}

const TRIGGERS: Side = Side {
    name: "triggers",
    produce: "SELECT count(*) FROM triggers.enqueue_batch((SELECT jsonb_agg(jsonb_build_object('payload', \
              jsonb_build_object('i', i))) FROM generate_series(1, 100) i))",
    consume: "SELECT stored FROM triggers.process_batch(500)",
    queue: "pgmq.q_triggers_events",
};

const RAW: Side = Side {
    name: "raw",
    produce: "SELECT count(*) FROM pgmq.send_batch('bench_raw', (SELECT array_agg(jsonb_build_object('i', i)) \
              FROM generate_series(1, 100) i))",
    consume: "WITH r AS (SELECT msg_id FROM pgmq.read('bench_raw', 30, 500)) \
              SELECT count(*)::int FROM r WHERE pgmq.delete('bench_raw', msg_id)",
    queue: "pgmq.q_bench_raw",
};

/// What one soak measured.
struct Soak {
    sent: i64,
    finished: i64,
    secs: f64,
    /// The queue's total size (table, indexes, TOAST) each second, in bytes.
    samples: Vec<i64>,
}

impl Soak {
    fn rate(&self) -> f64 {
        self.finished as f64 / self.secs
    }

    /// The largest size in the first and in the last third of the run, in MiB.
    fn thirds(&self) -> (f64, f64) {
        let third = (self.samples.len() / 3).max(1);
        let max = |s: &[i64]| s.iter().copied().max().unwrap_or(0) as f64 / 1048576.0;
        (
            max(&self.samples[..third]),
            max(&self.samples[self.samples.len() - third..]),
        )
    }
}

async fn soak(config: &Config, side: &Side, run_for: Duration) -> Soak {
    let producer = connect(config).await;
    let consumer = connect(config).await;
    let sampler = connect(config).await;
    let started = Instant::now();
    let produce = {
        let sql = side.produce;
        tokio::spawn(async move {
            let mut sent = 0i64;
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            while started.elapsed() < run_for {
                tick.tick().await;
                sent += producer
                    .query_one(sql, &[])
                    .await
                    .expect("produce")
                    .get::<_, i64>(0);
            }
            sent
        })
    };
    let consume = {
        let sql = side.consume;
        tokio::spawn(async move {
            let mut finished = 0i64;
            loop {
                let got: i32 = consumer.query_one(sql, &[]).await.expect("consume").get(0);
                finished += i64::from(got);
                if got == 0 {
                    if started.elapsed() > run_for {
                        break finished;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        })
    };
    let size = format!("SELECT pg_total_relation_size('{}')", side.queue);
    let mut samples = Vec::new();
    while started.elapsed() < run_for {
        tokio::time::sleep(Duration::from_secs(1)).await;
        samples.push(sampler.query_one(&size, &[]).await.unwrap().get(0));
    }
    let sent = produce.await.unwrap();
    let mut finished = consume.await.unwrap();
    let secs = started.elapsed().as_secs_f64();
    // The consumer may have stopped just before the producer's last batch committed.
    loop {
        let got: i32 = sampler.query_one(side.consume, &[]).await.unwrap().get(0);
        if got == 0 {
            break;
        }
        finished += i64::from(got);
    }
    assert_eq!(
        finished, sent,
        "{}: every event sent was finished",
        side.name
    );
    Soak {
        sent,
        finished,
        secs,
        samples,
    }
}

#[tokio::main]
async fn main() {
    let run_for = Duration::from_secs_f64(common::seconds_arg(20.0));
    let (mut cluster, dir, admin) = common::cluster_with_raw_queue("triggers-soak").await;
    let config = cluster.config();
    println!(
        "10,000 events/s offered for {run_for:?} per side, one consumer, autovacuum_naptime = 1s\n"
    );

    let mut results = Vec::new();
    for side in [&TRIGGERS, &RAW] {
        if common::selected(side.name) {
            let soak = soak(&config, side, run_for).await;
            let mib = |b: &i64| (*b as f64 / 1048576.0 * 10.0).round() / 10.0;
            println!(
                "{}: {} events; queue size each second (MiB): {:?}",
                side.name,
                soak.sent,
                soak.samples.iter().map(mib).collect::<Vec<_>>()
            );
            results.push((side.name, soak));
        }
    }

    println!("\n| measure | triggers | raw pgmq | ratio | target |");
    println!("|---|---|---|---|---|");
    let of = |name: &str| results.iter().find(|(n, _)| *n == name).map(|(_, s)| s);
    let cell = |v: Option<f64>, unit: &str| match (v, unit) {
        (None, _) => "–".to_string(),
        (Some(v), "MiB") => format!("{v:.1} MiB"),
        (Some(v), unit) => format!("{v:.0} {unit}"),
    };
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "–".to_string(),
    };
    let (ours, raw) = (of("triggers"), of("raw"));
    let rate = (ours.map(Soak::rate), raw.map(Soak::rate));
    println!(
        "| events/s finished (10,000 offered) | {} | {} | {} | ≥ 9,500 events/s |",
        cell(rate.0, "events/s"),
        cell(rate.1, "events/s"),
        ratio(rate.0, rate.1)
    );
    let early = (ours.map(|s| s.thirds().0), raw.map(|s| s.thirds().0));
    let late = (ours.map(|s| s.thirds().1), raw.map(|s| s.thirds().1));
    println!(
        "| queue size, largest in the first third | {} | {} | {} | |",
        cell(early.0, "MiB"),
        cell(early.1, "MiB"),
        ratio(early.0, early.1)
    );
    println!(
        "| queue size, largest in the last third | {} | {} | {} | ≤ 2 × first third, < 16 MiB |",
        cell(late.0, "MiB"),
        cell(late.1, "MiB"),
        ratio(late.0, late.1)
    );
    if let (Some(early), Some(late)) = (early.0, late.0) {
        println!(
            "\ntriggers' queue, last third / first third: {:.2} (it levels off if ≤ 2)",
            late / early.max(f64::MIN_POSITIVE)
        );
    }

    drop(admin);
    cluster.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
