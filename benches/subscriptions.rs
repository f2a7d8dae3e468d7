//! Match cost of the subscription tables at 1k, 100k and 1M subscriptions, of which a handful
//! match each event: the per-event cost must stay flat as the tables grow.
//!
//! Every size holds the same 256 "target" users, each with three patterns of its own that
//! match its events (`<u>/*`, `<u>/pub/app/posts/*`, and the exact file), plus two any-user
//! patterns that match every target event (`*/pub/*`, `*/pub/app/posts/*`); the rest is filler
//! spread over other users and other folders, shaped like real subscriptions (exact files,
//! folders, whole users, and any-user folders of up to 10k distinct apps). `hot` matches one key again and again; `rotating`
//! walks the 256 target users' keys, so the lookups do not all hit the same cache lines.
//!
//! Run: `cargo bench --bench subscriptions`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use hearth::log::subscriptions::{Pattern, SubscriberId, SubscriptionTables};

const TARGETS: usize = 256;
/// Distinct app folders that any-user filler patterns name.
const APPS: u64 = 10_000;
const Z32: &[u8; 32] = b"ybndrfg8ejkmcpqxot1uwisza345h769";

/// A deterministic generator: the bench builds the same tables every run.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A 52-character z-base32 string: shaped like a user key (the tables never decode it).
    fn user(&mut self) -> String {
        (0..52)
            .map(|_| Z32[(self.next() % 32) as usize] as char)
            .collect()
    }
}

struct Setup {
    tables: SubscriptionTables,
    /// One event key per target user, each matching exactly five subscriptions.
    keys: Vec<String>,
}

fn build(total: usize) -> Setup {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut tables = SubscriptionTables::new();
    let mut id: SubscriberId = 0;
    let mut add = |tables: &mut SubscriptionTables, pattern: Pattern| {
        id += 1;
        tables.insert(&pattern, id);
    };
    add(&mut tables, Pattern::AnyUserPrefix("/pub/".into()));
    add(
        &mut tables,
        Pattern::AnyUserPrefix("/pub/app/posts/".into()),
    );
    let mut keys = Vec::with_capacity(TARGETS);
    for _ in 0..TARGETS {
        let user = rng.user();
        add(&mut tables, Pattern::UserPrefix(format!("{user}/")));
        add(
            &mut tables,
            Pattern::UserPrefix(format!("{user}/pub/app/posts/")),
        );
        let key = format!("{user}/pub/app/posts/0034.json");
        add(&mut tables, Pattern::Exact(key.clone()));
        keys.push(key);
    }
    // Filler: none of it matches a target key.
    while tables.len() < total {
        let choice = rng.next() % 10;
        let n = rng.next() % 100_000;
        let pattern = match choice {
            0..=3 => Pattern::Exact(format!("{}/pub/app/posts/{n:04}.json", rng.user())),
            4..=5 => Pattern::UserPrefix(format!("{}/pub/app/posts/", rng.user())),
            6 => Pattern::UserPrefix(format!("{}/", rng.user())),
            7 => Pattern::UserPrefix(format!("{}/pub/app{n}/", rng.user())),
            // Any-user patterns name apps' folders: many subscribers, fewer distinct folders.
            8 => Pattern::AnyUserPrefix(format!("/pub/app{}/", n % APPS)),
            _ => Pattern::AnyUserExact(format!("/pub/app{}/profile.json", n % APPS)),
        };
        add(&mut tables, pattern);
    }
    Setup { tables, keys }
}

fn bench_match(c: &mut Criterion) {
    let mut group = c.benchmark_group("match");
    group
        .sample_size(60)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(1));
    for total in [1_000, 100_000, 1_000_000] {
        let setup = build(total);
        let mut out = Vec::new();
        setup.tables.matches(&setup.keys[0], &mut out);
        assert_eq!(
            out.len(),
            5,
            "a target event matches its five subscriptions"
        );

        group.bench_with_input(BenchmarkId::new("hot", total), &setup, |b, setup| {
            let mut out = Vec::new();
            b.iter(|| {
                setup.tables.matches(black_box(&setup.keys[0]), &mut out);
                black_box(out.len())
            })
        });
        group.bench_with_input(BenchmarkId::new("rotating", total), &setup, |b, setup| {
            let mut out = Vec::new();
            let mut next = 0;
            b.iter(|| {
                next = (next + 1) % TARGETS;
                setup.tables.matches(black_box(&setup.keys[next]), &mut out);
                black_box(out.len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_match);
criterion_main!(benches);
