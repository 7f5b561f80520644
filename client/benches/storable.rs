//! What every event costs the client before it is sent: `NewEvent::check` (the shape,
//! then the walk for what Postgres cannot store) of a 1 MiB payload, timed by
//! criterion: `cargo bench -p triggers-client` (numbers in `benches/README.md`).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::{json, Value};
use triggers_client::NewEvent;

/// A payload of about 1 MiB: many small objects, the worst case for the walk (a key,
/// strings and numbers every few bytes), and one long string, the best.
fn payloads() -> [(&'static str, Value); 2] {
    let items: Vec<Value> = (0..16_000)
        .map(|i| json!({"id": i, "name": format!("item {i}"), "price": 12.5, "tags": ["a", "b"]}))
        .collect();
    let objects = json!({ "items": items });
    let text = json!({ "blob": "x".repeat(1 << 20) });
    [("many small values", objects), ("one long string", text)]
}

fn check(c: &mut Criterion) {
    let mut group = c.benchmark_group("storable check, 1 MiB payload");
    for (name, payload) in payloads() {
        let bytes = serde_json::to_vec(&payload).unwrap().len();
        let event = NewEvent::new(payload);
        group.throughput(Throughput::Bytes(bytes as u64));
        group.bench_function(name, |b| b.iter(|| black_box(&event).check().unwrap()));
    }
    group.finish();
}

criterion_group!(benches, check);
criterion_main!(benches);
