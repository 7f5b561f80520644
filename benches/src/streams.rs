//! triggers-load's rows for ordered streams (SPEC §4.4): each measurement on streams
//! beside the same one on no stream, in the same run.

use tokio_postgres::{Client, Config};

use super::{drain, drain_rate, each, percentiles, rate, reset, row, ENQUEUE};

const PROCESS: &str = "SELECT read FROM triggers.process_batch(100)";

/// The stream rows of the table: draining over many streams and on one, each
/// `process_batch` call's time, and enqueue on streams.
pub async fn rows(config: &Config, admin: &Client, secs: f64) {
    // Draining 100,000 events over 1,000 streams, on one stream, and on none (the
    // baseline of both); two rounds in opposite orders.
    const N: i64 = 100_000;
    let sides = [None, Some("'s' || (i % 1000)"), Some("'solo'")];
    let mut rates = [0.0; 3];
    for round in 0..2 {
        for k in 0..sides.len() {
            let side = if round == 0 { k } else { sides.len() - 1 - k };
            reset(admin).await;
            fill(admin, N, sides[side]).await;
            rates[side] += drain_rate(config, 2, PROCESS).await / 2.0;
            assert_drained(admin, N).await;
        }
    }
    row(
        "drain 100k over 1,000 streams vs no stream, process_batch(100), 2 conn",
        rates[1],
        rates[0],
        "events/s",
        "≥ 0.8",
    );
    row(
        "drain 100k on one stream vs no stream, process_batch(100), 2 conn",
        rates[2],
        rates[0],
        "events/s",
        "≥ 0.5",
    );

    // Each process_batch(100) call's time while 4 callers drain 6,000 events in 30
    // streams, vs on no stream; four rounds, alternating which side goes first. At 100
    // per call one drain is only ~60 calls, hence the rounds.
    let (mut ours, mut base) = (Vec::new(), Vec::new());
    for round in 0..4 {
        for side in [round % 2, 1 - round % 2] {
            reset(admin).await;
            fill(admin, 6_000, (side == 1).then_some("'s' || (i % 30)")).await;
            let times = drain(config, 4, PROCESS)
                .await
                .1
                .into_iter()
                .map(|(_, ms)| ms);
            assert_drained(admin, 6_000).await;
            let samples = if side == 1 { &mut ours } else { &mut base };
            samples.extend(times);
        }
    }
    let (calls_ours, calls_base) = (ours.len(), base.len());
    let ((o50, o99), (b50, b99)) = (percentiles(&mut ours), percentiles(&mut base));
    println!(
        "| process_batch(100) call time, 6,000 events in 30 streams vs no stream, 4 callers \
         ({calls_ours} and {calls_base} calls; ratio of the p99s) | p50 {o50:.2} ms, p99 {o99:.2} ms \
         | p50 {b50:.2} ms, p99 {b99:.2} ms | {:.2} | p99 < 5 ms |",
        o99 / b99
    );

    // One enqueue per transaction on a stream picked at random from 1,000 per call, vs
    // on no stream; two rounds in alternating order.
    const ON_STREAMS: &str = "SELECT triggers.enqueue(payload => '{\"n\": 1}'::jsonb, \
                              stream => 's' || floor(random() * 1000)::int)";
    let (mut ours, mut base) = (0.0, 0.0);
    for round in 0..2 {
        for side in [round, 1 - round] {
            reset(admin).await;
            if side == 0 {
                base += rate(config, 8, secs / 2.0, ENQUEUE).await / 2.0;
            } else {
                ours += rate(config, 8, secs / 2.0, ON_STREAMS).await / 2.0;
            }
        }
    }
    row(
        "enqueue on 1,000 streams (one at random per call) vs no stream, 8 conn",
        ours,
        base,
        "tx/s",
        "≥ 0.8",
    );
}

/// Queues events 1..=n through enqueue_batch (10,000 at a time), each on the stream
/// `stream` (SQL over `i`), or on none; then analyzes the queue.
async fn fill(admin: &Client, n: i64, stream: Option<&str>) {
    let stream = stream.map_or(String::new(), |s| format!(", 'stream', {s}"));
    let mut from = 1;
    while from <= n {
        let to = (from + 9_999).min(n);
        let sql = format!(
            "SELECT count(*) FROM triggers.enqueue_batch((SELECT jsonb_agg(jsonb_build_object('payload', jsonb_build_object('n', i){stream})) FROM generate_series({from}, {to}) i))"
        );
        each(admin, &[&sql]).await;
        from = to + 1;
    }
    each(
        admin,
        &["VACUUM ANALYZE pgmq.q_triggers_events, triggers.streams, triggers.stream_progress"],
    )
    .await;
}

/// Panics unless the queue is empty, all `n` events are stored and every stream has
/// finished every seq it handed out.
async fn assert_drained(admin: &Client, n: i64) {
    let r = admin
        .query_one(
            "SELECT (SELECT count(*) FROM pgmq.q_triggers_events),
                    (SELECT count(*) FROM triggers.events),
                    (SELECT count(*) FROM triggers.streams s
                       LEFT JOIN triggers.stream_progress p USING (tenant, stream)
                      WHERE coalesce(p.done_seq, 0) <> s.last_seq)",
            &[],
        )
        .await
        .expect("drained?");
    let (queued, stored, unfinished): (i64, i64, i64) = (r.get(0), r.get(1), r.get(2));
    assert_eq!(
        (queued, stored, unfinished),
        (0, n, 0),
        "queue empty, every event stored, every stream finished"
    );
}
