//! triggers-http-load's rows for the live stream (`--only live`): latency from POST to
//! a subscriber, fan-out to 1,000 subscribers, POST throughput with 1,000 idle
//! subscribers attached, and memory per idle subscriber. Subscribers are raw keep-alive
//! connections reading `GET /inbox/stream` and counting events, so that the generator
//! takes as little of the shared cores as it can.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{drained, drive_http, percentile, wire};

/// An open `GET /inbox/stream`.
struct Subscriber {
    stream: TcpStream,
}

impl Subscriber {
    async fn open(addr: &str, key: &str, query: &str) -> Subscriber {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let request = format!(
            "GET /inbox/stream{query} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {key}\r\nAccept: text/event-stream\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.expect("write");
        // Up to the retry frame: the subscription is in place.
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while !seen.windows(6).any(|w| w == b"retry:") {
            let n = stream.read(&mut buf).await.expect("read");
            assert!(n > 0, "the server closed the stream");
            seen.extend_from_slice(&buf[..n]);
        }
        Subscriber { stream }
    }

    /// Counts events (`event: event` lines) into `count` until `want` have come; with
    /// `times`, also records, for each, now minus the `"t":` microseconds in its data.
    async fn count(
        mut self,
        want: u64,
        count: Arc<AtomicU64>,
        t0: Instant,
        mut times: Option<&mut Vec<Duration>>,
    ) {
        let mut buf = vec![0u8; 64 * 1024];
        let mut carry: Vec<u8> = Vec::new();
        let mut got = 0;
        while got < want {
            let n = self.stream.read(&mut buf).await.expect("read");
            assert!(n > 0, "the server closed the stream");
            carry.extend_from_slice(&buf[..n]);
            // Whole frames only; the rest waits for the next read.
            let Some(end) = carry.windows(2).rposition(|w| w == b"\n\n") else {
                continue;
            };
            let frames: Vec<u8> = carry.drain(..end + 2).collect();
            for line in frames.split(|&b| b == b'\n') {
                if line == b"event: event" {
                    got += 1;
                    count.fetch_add(1, Ordering::Relaxed);
                } else if let (Some(times), true) =
                    (times.as_deref_mut(), line.starts_with(b"data: "))
                {
                    if let Some(at) = find_micros(line) {
                        times.push(t0.elapsed().saturating_sub(Duration::from_micros(at)));
                    }
                }
            }
        }
    }
}

/// The number after `"t":` in a line (or a webhook's body: webhooks.rs).
pub(crate) fn find_micros(line: &[u8]) -> Option<u64> {
    let at = line.windows(4).position(|w| w == b"\"t\":")? + 4;
    let digits: Vec<u8> = line[at..]
        .iter()
        .copied()
        .take_while(u8::is_ascii_digit)
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

async fn subscribers(addr: &str, key: &str, query: &str, n: usize) -> Vec<Subscriber> {
    let mut all = Vec::with_capacity(n);
    for chunk in 0..n.div_ceil(100) {
        let open =
            (chunk * 100..((chunk + 1) * 100).min(n)).map(|_| Subscriber::open(addr, key, query));
        all.extend(join_all(open).await);
    }
    all
}

/// The live rows. `key` is tenant "bench"'s; `other` another tenant's.
pub async fn rows(
    client: &triggers_client::Client,
    addr: &str,
    key: &str,
    other: &str,
    secs: f64,
    raw: f64,
) {
    // Memory per idle subscriber: this process (server and generator) before and after
    // 1,000 subscribers of another tenant attach.
    let before = rss_kib();
    let idle = subscribers(addr, other, "", 1000).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let per = (rss_kib().saturating_sub(before)) as f64 / 1000.0;

    // POST /events with those 1,000 attached vs none (two rounds, alternating).
    let request = wire::request("POST", "/events", key, r#"{"payload":{"n":1}}"#);
    let (mut with, mut without) = (0.0, 0.0);
    let mut idle = Some(idle);
    for round in 0..2 {
        for attached in [round == 0, round != 0] {
            if !attached {
                idle = None; // closes them
            } else if idle.is_none() {
                idle = Some(subscribers(addr, other, "", 1000).await);
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            let (rate, _) = drive_http(addr, 64, secs / 2.0, request.clone()).await;
            if attached {
                with += rate / 2.0;
            } else {
                without += rate / 2.0;
            }
        }
    }
    drop(idle);
    println!(
        "| POST /events, 64 concurrent, 1,000 idle subscribers attached vs none | {with:.0} req/s | {without:.0} req/s (raw pgmq.send {raw:.0} tx/s) | {:.2} | ≥ 0.9 |",
        with / without
    );
    println!("| memory per idle subscriber (this process: server and generator) | {per:.1} KiB | | | < 64 KiB |");

    // Fan-out: 1,000 subscribers, 1,000 events (ten batches of 100).
    drained(client).await;
    let count = Arc::new(AtomicU64::new(0));
    let all = subscribers(addr, key, "", 1000).await;
    let t0 = Instant::now();
    let readers: Vec<_> = all
        .into_iter()
        .map(|s| tokio::spawn(s.count(1000, count.clone(), t0, None)))
        .collect();
    let started = Instant::now();
    let mut sender = wire::Conn::open(addr).await;
    for b in 0..10 {
        let body = serde_json::json!({"events": (0..100).map(|i| serde_json::json!({"payload": {"n": b * 100 + i}})).collect::<Vec<_>>()}).to_string();
        let (status, _) = sender
            .send(&wire::request("POST", "/events/batch", key, &body))
            .await;
        assert_eq!(status, 200);
    }
    join_all(readers).await;
    let fan = count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    println!("| fan-out: 1,000 events to 1,000 subscribers | {fan:.0} events/s delivered | | | ≥ 200,000 |");

    // Latency: 1,000 events/s offered (10 every 10 ms), 100 subscribers; the first one
    // times each event from its POST.
    drained(client).await;
    let subs = subscribers(addr, key, "", 100).await;
    let n_events = (1000.0 * secs) as u64;
    let t0 = Instant::now();
    let count = Arc::new(AtomicU64::new(0));
    let mut subs = subs.into_iter();
    let timed = {
        let first = subs.next().unwrap();
        let count = count.clone();
        tokio::spawn(async move {
            let mut times = Vec::new();
            first.count(n_events, count, t0, Some(&mut times)).await;
            times
        })
    };
    let rest: Vec<_> = subs
        .map(|s| tokio::spawn(s.count(n_events, count.clone(), t0, None)))
        .collect();
    let mut conns = join_all((0..10).map(|_| wire::Conn::open(addr))).await;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    for _ in 0..n_events / 10 {
        tick.tick().await;
        join_all(conns.iter_mut().map(|c| {
            let body = format!(r#"{{"payload":{{"t":{}}}}}"#, t0.elapsed().as_micros());
            async move {
                let (status, _) = c.send(&wire::request("POST", "/events", key, &body)).await;
                assert_eq!(status, 200);
            }
        }))
        .await;
    }
    let mut times = timed.await.unwrap();
    join_all(rest).await;
    times.sort();
    println!(
        "| POST /events → received on the stream, 1,000 events/s offered, 100 subscribers | p50 {:.1} ms, p99 {:.1} ms | | | p99 < 50 ms |",
        percentile(&times, 0.5),
        percentile(&times, 0.99)
    );
}
