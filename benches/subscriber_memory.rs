//! Memory of subscriptions: the bytes one subscriber's patterns cost, in its own `PatternSet`
//! and in the shared `SubscriptionTables`, counted by a global allocator that tallies what is
//! live. Three shapes of 100 patterns each (the default cap per connection):
//!
//! - `users`: 100 whole users (`<user>/*`), as a firehose following 100 people;
//! - `events-stream`: 50 users x 2 paths (`<user>/pub/app/` and `<user>/pub/app/profile.json`),
//!   as Pubky's `/events-stream` multiplies them;
//! - `folders`: 100 any-user app folders (`*/pub/appN/`).
//!
//! Every subscriber names users of its own (nothing is shared between subscribers: the worst
//! case). Prints bytes per subscriber. Run: `cargo bench --bench subscriber_memory`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use hearth::log::subscriptions::{Pattern, PatternSet, SubscriberId, SubscriptionTables};

/// Tallies the bytes live on the heap.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: as the caller promised for `layout`.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const Z32: &[u8; 32] = b"ybndrfg8ejkmcpqxot1uwisza345h769";
const SUBSCRIBERS: usize = 1000;

struct XorShift(u64);

impl XorShift {
    fn user(&mut self) -> String {
        (0..52)
            .map(|_| {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                Z32[(self.0 % 32) as usize] as char
            })
            .collect()
    }
}

fn patterns(shape: &str, rng: &mut XorShift) -> Vec<Pattern> {
    match shape {
        "users" => (0..100)
            .map(|_| Pattern::UserPrefix(format!("{}/", rng.user())))
            .collect(),
        "events-stream" => (0..50)
            .flat_map(|_| {
                let user = rng.user();
                [
                    Pattern::UserPrefix(format!("{user}/pub/app/")),
                    Pattern::Exact(format!("{user}/pub/app/profile.json")),
                ]
            })
            .collect(),
        _ => (0..100)
            .map(|_| {
                rng.user();
                Pattern::AnyUserPrefix(format!("/pub/app{}/", rng.0 % 1_000_000))
            })
            .collect(),
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument picks shapes.
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    for shape in ["users", "events-stream", "folders"] {
        if !filter.is_empty() && !filter.iter().any(|f| shape.contains(f.as_str())) {
            continue;
        }
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        // Built outside the count: the pattern values as a request parses them.
        let inputs: Vec<Vec<Pattern>> = (0..SUBSCRIBERS)
            .map(|_| patterns(shape, &mut rng))
            .collect();
        let before = LIVE.load(Ordering::Relaxed);
        let mut tables = SubscriptionTables::new();
        let mut sets = Vec::with_capacity(SUBSCRIBERS);
        for (id, input) in inputs.into_iter().enumerate() {
            let set = PatternSet::new(input);
            for pattern in set.patterns() {
                tables.insert(pattern, id as SubscriberId);
            }
            sets.push(set);
        }
        let per = (LIVE.load(Ordering::Relaxed) - before) as f64 / SUBSCRIBERS as f64;
        println!(
            "subscriber_memory/{shape}: {per:.0} bytes per subscriber of 100 patterns \
             ({} pairs)",
            tables.len()
        );
        drop((tables, sets));
    }
}
