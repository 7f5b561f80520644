//! The pure-Rust hot spots of a request and a delivery, timed by criterion:
//! `cargo bench -p triggers-core` (numbers in `benches/README.md`).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use triggers_core::webhooks::{open, seal, signature_header, verify, Secret};
use triggers_core::{constant_time_eq, key_hash, key_id, Cursor};

/// A delivery's body of about `n` bytes.
fn body(n: usize) -> Vec<u8> {
    let mut body = br#"{"type":"event.stored","data":{"payload":""#.to_vec();
    body.resize(n.saturating_sub(3), b'x');
    body.extend_from_slice(br#""}}"#);
    body
}

fn webhooks(c: &mut Criterion) {
    let secret = Secret::from_bytes(&[7; 32]).unwrap();
    let mut group = c.benchmark_group("standard webhooks");
    for size in [1 << 10, 64 << 10] {
        let body = body(size);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(format!("sign {} KiB", size >> 10), |b| {
            b.iter(|| {
                signature_header(
                    std::slice::from_ref(&secret),
                    black_box("msg_1"),
                    1_700_000_000,
                    black_box(&body),
                )
            })
        });
        let header = signature_header(std::slice::from_ref(&secret), "msg_1", 1_700_000_000, &body);
        group.bench_function(format!("verify {} KiB", size >> 10), |b| {
            b.iter(|| {
                verify(
                    &secret,
                    "msg_1",
                    "1700000000",
                    black_box(&header),
                    black_box(&body),
                    1_700_000_000,
                )
                .unwrap()
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("secret sealing");
    let plaintext = secret.to_text();
    group.bench_function("seal", |b| {
        b.iter(|| {
            seal(
                black_box("the server's key"),
                [1; 12],
                black_box(plaintext.as_bytes()),
            )
        })
    });
    let sealed = seal("the server's key", [1; 12], plaintext.as_bytes());
    group.bench_function("open", |b| {
        b.iter(|| open(black_box("the server's key"), black_box(&sealed)).unwrap())
    });
    group.finish();
}

fn cursors(c: &mut Criterion) {
    let cursor = Cursor {
        created_at_us: 1_765_000_000_123_456,
        event_id: [0xab; 16],
    };
    let text = cursor.encode();
    c.bench_function("cursor encode", |b| b.iter(|| black_box(&cursor).encode()));
    c.bench_function("cursor decode", |b| {
        b.iter(|| Cursor::decode(black_box(&text)).unwrap())
    });
}

fn keys(c: &mut Criterion) {
    let token = "trg_310987d7MQCrMDHrU_QyCByGsCvJhANkiisERgvmuJOG4bQbzk";
    let hash = key_hash(token);
    c.bench_function("key id of a token", |b| b.iter(|| key_id(black_box(token))));
    c.bench_function("key hash (SHA-256)", |b| {
        b.iter(|| key_hash(black_box(token)))
    });
    let same = key_hash(token);
    c.bench_function("key comparison (constant time, 32 bytes)", |b| {
        b.iter(|| constant_time_eq(black_box(&hash), black_box(&same)))
    });
}

criterion_group!(benches, webhooks, cursors, keys);
criterion_main!(benches);
