//! The event-id codec: a u64 sequence to and from 13 Crockford base32 characters.
//!
//! Every SSE frame carries an id and every resume parses one, so both directions sit on the
//! firehose's hot path; `encode_into` is the allocation-free form the frame encoder uses.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hearth::ids as id;

fn codec(c: &mut Criterion) {
    let seqs: Vec<u64> = (0..1024u64)
        .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (i % 40))
        .collect();
    let ids: Vec<String> = seqs.iter().map(|&s| id::encode(s)).collect();

    let mut group = c.benchmark_group("event_id");
    group.throughput(Throughput::Elements(seqs.len() as u64));
    group.bench_function("encode_into", |b| {
        let mut out = [0u8; id::ID_LEN];
        b.iter(|| {
            for &seq in &seqs {
                id::encode_into(black_box(seq), &mut out);
                black_box(&out);
            }
        })
    });
    group.bench_function("encode_string", |b| {
        b.iter(|| {
            for &seq in &seqs {
                black_box(id::encode(black_box(seq)));
            }
        })
    });
    group.bench_function("decode", |b| {
        b.iter(|| {
            for text in &ids {
                let _ = black_box(id::decode(black_box(text)));
            }
        })
    });
    group.throughput(Throughput::Elements(4));
    group.bench_function("decode_invalid", |b| {
        let bad = ["000000000000I", "G000000000000", "short", "00000000000000"];
        b.iter(|| {
            for text in &bad {
                let _ = black_box(id::decode(black_box(text)));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
