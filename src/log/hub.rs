//! The hub: fans committed events out to the connections that subscribed to them.
//!
//! The writer thread hands each commit's events to `Hub::publish`. For each event the hub looks
//! its key up in the subscription tables and pushes one shared `Arc` into the bounded mailbox of
//! each matching subscriber; nothing is done for subscribers it does not match. A mailbox that
//! is full stops taking events and is marked lagging, and its reader, once it has emptied it,
//! catches up from the log from its own position before taking live events again. So a slow
//! reader costs a bounded amount of memory and is never cut off.
//!
//! `Feed` is the reading side, one per connection: it replays from the store, joins the live
//! events, and de-duplicates by sequence. It subscribes before it reads the store, so that
//! whatever commits while it replays is either in the store when it reads it or in its mailbox
//! afterwards (or both, and then the sequence check drops the copy).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;

use super::frame;
use super::subscriptions::{Pattern, PatternSet, SubscriberId, SubscriptionTables};
use super::{Event, EventLog, LogError};

/// Default mailbox size: how far a subscriber may fall behind live before it reads from the
/// store instead. Small, because an idle connection should cost little.
pub const DEFAULT_MAILBOX: usize = 128;

/// How many events a feed reads from the store in one read transaction.
const SCAN_BATCH: usize = 512;

/// An event as the hub shares it: the event and its frames, each encoded at most once.
#[derive(Debug)]
pub struct SharedEvent {
    pub event: Arc<Event>,
    native: OnceLock<Bytes>,
    pubky: OnceLock<Bytes>,
}

impl SharedEvent {
    pub fn new(event: Arc<Event>) -> Self {
        SharedEvent {
            event,
            native: OnceLock::new(),
            pubky: OnceLock::new(),
        }
    }

    pub fn seq(&self) -> u64 {
        self.event.seq
    }

    /// Hearth's SSE frame; encoded by the first subscriber that writes it, shared after.
    pub fn native_frame(&self) -> Bytes {
        self.native
            .get_or_init(|| frame::native(&self.event))
            .clone()
    }

    /// Pubky's `/events-stream` frame, likewise.
    pub fn pubky_frame(&self) -> Bytes {
        self.pubky.get_or_init(|| frame::pubky(&self.event)).clone()
    }
}

/// A subscriber's bounded queue of live events.
#[derive(Debug, Default)]
struct Mailbox {
    state: Mutex<MailboxState>,
    notify: Notify,
}

#[derive(Debug, Default)]
struct MailboxState {
    /// Live events in sequence order. Grows on demand up to the hub's capacity: an idle
    /// subscriber holds no buffer.
    queue: VecDeque<Arc<SharedEvent>>,
    /// The queue overflowed and events after its last one were dropped.
    lagging: bool,
    /// The hub shut down.
    closed: bool,
}

/// What a mailbox had for its reader.
enum Take {
    Event(Arc<SharedEvent>),
    /// Events were dropped after the queue filled; the reader must read the store.
    Lagged,
    Empty,
    Closed,
}

impl Mailbox {
    fn lock(&self) -> MutexGuard<'_, MailboxState> {
        // A panic elsewhere while holding the lock leaves the queue itself intact.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn push(&self, event: &Arc<SharedEvent>, capacity: usize) {
        let mut state = self.lock();
        if state.closed || state.lagging {
            return;
        }
        let was_empty = state.queue.is_empty();
        if state.queue.len() >= capacity {
            state.lagging = true;
            return;
        }
        state.queue.push_back(Arc::clone(event));
        drop(state);
        // A reader only waits after finding the queue empty, so only that push needs to wake it
        // (`notify_one` keeps a permit if it is not waiting yet).
        if was_empty {
            self.notify.notify_one();
        }
    }

    fn take(&self) -> Take {
        let mut state = self.lock();
        if let Some(event) = state.queue.pop_front() {
            return Take::Event(event);
        }
        // Release a grown buffer once drained: idle connections stay small, while a steady
        // trickle keeps reusing a small one.
        if state.queue.capacity() > 16 {
            state.queue = VecDeque::new();
        }
        if state.lagging {
            state.lagging = false;
            return Take::Lagged;
        }
        if state.closed {
            return Take::Closed;
        }
        Take::Empty
    }

    fn close(&self) {
        self.lock().closed = true;
        self.notify.notify_one();
    }
}

struct Inner {
    tables: SubscriptionTables,
    mailboxes: HashMap<SubscriberId, Arc<Mailbox>>,
    next_id: SubscriberId,
    closed: bool,
    /// Reused by `publish` to collect an event's subscribers.
    scratch: Vec<SubscriberId>,
}

/// The fan-out point between the writer and the SSE connections.
pub struct Hub {
    inner: Mutex<Inner>,
    /// The newest sequence published.
    head: AtomicU64,
    capacity: usize,
}

impl Hub {
    /// A hub whose newest event is `head` (the store's last sequence at start).
    pub fn new(head: u64, mailbox_capacity: usize) -> Arc<Hub> {
        Arc::new(Hub {
            inner: Mutex::new(Inner {
                tables: SubscriptionTables::new(),
                mailboxes: HashMap::new(),
                next_id: 1,
                closed: false,
                scratch: Vec::new(),
            }),
            head: AtomicU64::new(head),
            capacity: mailbox_capacity.max(1),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The newest sequence published.
    pub fn head(&self) -> u64 {
        self.head.load(Ordering::Acquire)
    }

    /// How many connections are subscribed.
    pub fn subscribers(&self) -> usize {
        self.lock().mailboxes.len()
    }

    /// Hand out a commit's events, in sequence order. Called by the writer after the commit is
    /// durable; it never blocks on a subscriber.
    pub fn publish(&self, events: Vec<Arc<Event>>) {
        let mut inner = self.lock();
        let Inner {
            tables,
            mailboxes,
            scratch,
            ..
        } = &mut *inner;
        let mut newest = None;
        for event in events {
            newest = Some(event.seq);
            tables.matches(&event.key, scratch);
            if scratch.is_empty() {
                continue;
            }
            let shared = Arc::new(SharedEvent::new(event));
            for id in scratch.iter() {
                if let Some(mailbox) = mailboxes.get(id) {
                    mailbox.push(&shared, self.capacity);
                }
            }
        }
        if let Some(seq) = newest {
            self.head.fetch_max(seq, Ordering::AcqRel);
        }
    }

    /// Register `patterns` for a new subscriber. From the moment this returns, every event
    /// published with a sequence above the returned subscription's `head_at_start` reaches it.
    pub fn subscribe(self: &Arc<Self>, patterns: PatternSet) -> Subscription {
        let mailbox = Arc::new(Mailbox::default());
        let mut inner = self.lock();
        let id = inner.next_id;
        inner.next_id += 1;
        if inner.closed {
            mailbox.close();
        }
        for pattern in patterns.patterns() {
            inner.tables.insert(pattern, id);
        }
        inner.mailboxes.insert(id, Arc::clone(&mailbox));
        // Read under the lock that `publish` holds while it pushes and advances the head.
        let head_at_start = self.head();
        drop(inner);
        crate::telemetry::stream_open(1);
        Subscription {
            hub: Arc::clone(self),
            id,
            patterns: Arc::new(patterns),
            mailbox,
            head_at_start,
        }
    }

    fn unsubscribe(&self, id: SubscriberId, patterns: &[Pattern]) {
        let mut inner = self.lock();
        for pattern in patterns {
            inner.tables.remove(pattern, id);
        }
        inner.mailboxes.remove(&id);
    }

    /// End every stream (cleanly, after what each already has) and refuse new ones: for shutdown.
    pub fn shutdown(&self) {
        let mut inner = self.lock();
        inner.closed = true;
        for mailbox in inner.mailboxes.values() {
            mailbox.close();
        }
    }
}

/// A registered subscriber; unregisters when dropped (when its connection goes away).
pub struct Subscription {
    hub: Arc<Hub>,
    id: SubscriberId,
    patterns: Arc<PatternSet>,
    mailbox: Arc<Mailbox>,
    head_at_start: u64,
}

impl Subscription {
    /// The hub's newest sequence when this subscription was registered.
    pub fn head_at_start(&self) -> u64 {
        self.head_at_start
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.unsubscribe(self.id, self.patterns.patterns());
        crate::telemetry::stream_open(-1);
    }
}

/// A further condition on events, beyond the patterns: Pubky's per-user cursors (an event of
/// a user is wanted only after that user's cursor).
pub type Floors = HashMap<String, u64>;

/// What a feed yields.
pub enum Step {
    Event(Arc<SharedEvent>),
    /// The replay reached the newest event (reported once, before the first live event).
    CaughtUp,
    /// Nothing arrived within the idle interval: time for a keep-alive.
    Idle,
    /// The hub shut down.
    Closed,
}

/// One connection's ordered, gap-free, duplicate-free view of the events it subscribed to.
pub struct Feed {
    log: EventLog,
    subscription: Subscription,
    floors: Option<Arc<Floors>>,
    /// The last sequence this feed has passed: delivered, or skipped as not matching.
    position: u64,
    /// Read from the store (or taken from the mailbox) and not yet handed out.
    pending: VecDeque<Arc<SharedEvent>>,
    /// Reading the store rather than the mailbox.
    catching_up: bool,
    reported_caught_up: bool,
}

impl Feed {
    /// A feed that starts after `after`, or at the newest event when `after` is `None`.
    /// `subscription` must come from the hub before this reads anything (so it does).
    pub fn new(
        log: EventLog,
        subscription: Subscription,
        after: Option<u64>,
        floors: Option<Floors>,
    ) -> Feed {
        let (position, catching_up) = match after {
            Some(after) => (after, true),
            None => (subscription.head_at_start, false),
        };
        Feed {
            log,
            subscription,
            floors: floors.map(Arc::new),
            position,
            pending: VecDeque::new(),
            catching_up,
            reported_caught_up: false,
        }
    }

    /// The next event, waiting up to `idle` for a live one.
    pub async fn next(&mut self, idle: Duration) -> Result<Step, LogError> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                crate::telemetry::event_delivered();
                return Ok(Step::Event(event));
            }
            if self.catching_up {
                // A long replay must not hold up shutdown.
                if self.subscription.mailbox.lock().closed {
                    return Ok(Step::Closed);
                }
                if !self.read_store().await? {
                    self.catching_up = false;
                }
                continue;
            }
            if !self.reported_caught_up {
                self.reported_caught_up = true;
                return Ok(Step::CaughtUp);
            }
            match self.subscription.mailbox.take() {
                Take::Event(event) => {
                    // Already replayed from the store, or not wanted under Pubky's cursors.
                    if event.seq() <= self.position || !self.wanted(&event.event) {
                        continue;
                    }
                    self.position = event.seq();
                    crate::telemetry::event_delivered();
                    return Ok(Step::Event(event));
                }
                Take::Lagged => {
                    crate::telemetry::stream_lagged();
                    self.catching_up = true
                }
                Take::Closed => return Ok(Step::Closed),
                Take::Empty => {
                    let notified = self.subscription.mailbox.notify.notified();
                    if tokio::time::timeout(idle, notified).await.is_err() {
                        return Ok(Step::Idle);
                    }
                }
            }
        }
    }

    fn wanted(&self, event: &Event) -> bool {
        match &self.floors {
            None => true,
            Some(floors) => floors
                .get(event.user())
                .is_some_and(|&floor| event.seq > floor),
        }
    }

    /// Read the next batch after `position` from the store into `pending`. False once the
    /// store has nothing after `position`.
    async fn read_store(&mut self) -> Result<bool, LogError> {
        let log = self.log.clone();
        let patterns = Arc::clone(&self.subscription.patterns);
        let floors = self.floors.clone();
        let after = self.position;
        let (last, found) = tokio::task::spawn_blocking(move || {
            let mut found = Vec::new();
            let last = log.scan(after, SCAN_BATCH, |event| {
                let wanted = patterns.matches(&event.key)
                    && floors.as_deref().is_none_or(|floors| {
                        floors
                            .get(event.user())
                            .is_some_and(|&floor| event.seq > floor)
                    });
                if wanted {
                    found.push(Arc::new(SharedEvent::new(Arc::new(event))));
                }
                true
            })?;
            Ok::<_, LogError>((last, found))
        })
        .await
        .map_err(|err| LogError::Task(err.to_string()))??;
        match last {
            None => Ok(false),
            Some(last) => {
                self.position = last;
                self.pending.extend(found);
                Ok(true)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::EventKind;

    const ALICE: &str = "o1gg96ewuojmopcjbz8895478wdtxtzzuxnfjjz8o8e77csa1ngo";

    fn event(seq: u64, path: &str) -> Arc<Event> {
        Arc::new(Event {
            seq,
            kind: EventKind::Put,
            key: format!("{ALICE}{path}"),
            ts_ms: 1,
            hash: Some([0; 32]),
            size: Some(1),
            origin: None,
        })
    }

    fn set(patterns: &[&str]) -> PatternSet {
        PatternSet::new(
            patterns
                .iter()
                .map(|p| Pattern::parse(p).expect("valid pattern")),
        )
    }

    fn drain(subscription: &Subscription) -> (Vec<u64>, bool) {
        let mut seqs = Vec::new();
        loop {
            match subscription.mailbox.take() {
                Take::Event(e) => seqs.push(e.seq()),
                Take::Lagged => return (seqs, true),
                Take::Empty | Take::Closed => return (seqs, false),
            }
        }
    }

    #[test]
    fn publishes_to_matching_subscribers_only_and_shares_frames() {
        let hub = Hub::new(0, 8);
        let posts = hub.subscribe(set(&["*/pub/posts/*"]));
        let all = hub.subscribe(set(&["*/pub/*", "*/pub/posts/*"]));
        hub.publish(vec![event(1, "/pub/posts/1"), event(2, "/pub/other")]);
        assert_eq!(hub.head(), 2);
        assert_eq!(drain(&posts), (vec![1], false));
        assert_eq!(drain(&all), (vec![1, 2], false));

        hub.publish(vec![event(3, "/pub/posts/3")]);
        let (Take::Event(a), Take::Event(b)) = (posts.mailbox.take(), all.mailbox.take()) else {
            panic!("both subscribers get the event");
        };
        assert!(Arc::ptr_eq(&a, &b), "one shared event");
        assert_eq!(a.native_frame().as_ptr(), b.native_frame().as_ptr());
    }

    #[test]
    fn a_full_mailbox_marks_lagging_and_drops() {
        let hub = Hub::new(0, 2);
        let slow = hub.subscribe(set(&["*/pub/*"]));
        hub.publish((1..=5).map(|seq| event(seq, "/pub/x")).collect());
        assert_eq!(drain(&slow), (vec![1, 2], true));
        // Lagging is reported once; new events queue again.
        hub.publish(vec![event(6, "/pub/x")]);
        assert_eq!(drain(&slow), (vec![6], false));
    }

    #[test]
    fn dropping_a_subscription_unregisters_it() {
        let hub = Hub::new(7, 2);
        let sub = hub.subscribe(set(&["*/pub/*"]));
        assert_eq!(sub.head_at_start(), 7);
        assert_eq!(hub.subscribers(), 1);
        drop(sub);
        assert_eq!(hub.subscribers(), 0);
        assert!(hub.lock().tables.is_empty());
    }

    /// A log, a hub, and a way to append that publishes each commit as the writer does.
    struct Fixture {
        _dir: tempfile::TempDir,
        store: crate::store::Store,
        log: EventLog,
        hub: Arc<Hub>,
    }

    impl Fixture {
        async fn new(capacity: usize) -> Fixture {
            let (dir, store, log) = crate::log::store::testing::temp_log();
            let hub = Hub::new(log.last_seq().expect("last seq"), capacity);
            Fixture {
                _dir: dir,
                store,
                log,
                hub,
            }
        }

        async fn put(&self, path: &str) -> u64 {
            let event = crate::log::store::testing::append(
                &self.store,
                &self.log,
                (*event(0, path)).clone(),
            );
            let seq = event.seq;
            self.hub.publish(vec![Arc::new(event)]);
            seq
        }
    }

    async fn collect(feed: &mut Feed, n: usize) -> Vec<u64> {
        let mut seqs = Vec::new();
        while seqs.len() < n {
            match feed.next(Duration::from_secs(10)).await.expect("next") {
                Step::Event(event) => seqs.push(event.seq()),
                Step::CaughtUp => {}
                Step::Idle | Step::Closed => panic!("feed stalled after {seqs:?}"),
            }
        }
        seqs
    }

    #[tokio::test]
    async fn a_lagging_feed_catches_up_from_the_store_in_order() {
        let f = Fixture::new(4).await;
        let matching: Vec<u64> = {
            let sub = f.hub.subscribe(set(&["*/pub/a/*"]));
            let mut feed = Feed::new(f.log.clone(), sub, None, None);
            let mut expected = Vec::new();
            for i in 0..100 {
                let seq = f
                    .put(&format!("/pub/{}/{i}", if i % 3 == 0 { "b" } else { "a" }))
                    .await;
                if i % 3 != 0 {
                    expected.push(seq);
                }
            }
            assert_eq!(collect(&mut feed, expected.len()).await, expected);
            expected
        };
        // Replay from the start, with live writes going on meanwhile.
        let sub = f.hub.subscribe(set(&["*/pub/a/*"]));
        let mut feed = Feed::new(f.log.clone(), sub, Some(0), None);
        let mut expected = matching;
        for i in 0..10 {
            expected.push(f.put(&format!("/pub/a/late{i}")).await);
        }
        assert_eq!(collect(&mut feed, expected.len()).await, expected);
        let last = f.put("/pub/a/last").await;
        assert_eq!(collect(&mut feed, 1).await, vec![last]);
        // Nothing else: at most the end of the replay is reported, then the feed idles.
        let mut step = feed.next(Duration::from_millis(10)).await.expect("next");
        if matches!(step, Step::CaughtUp) {
            step = feed.next(Duration::from_millis(10)).await.expect("next");
        }
        assert!(matches!(step, Step::Idle));
    }

    #[tokio::test]
    async fn floors_hold_back_a_users_events_until_after_their_cursor() {
        let f = Fixture::new(4).await;
        for i in 0..5 {
            f.put(&format!("/pub/{i}")).await;
        }
        let sub = f.hub.subscribe(set(&["*/pub/*"]));
        let floors = Floors::from([(ALICE.to_string(), 3)]);
        let mut feed = Feed::new(f.log.clone(), sub, Some(0), Some(floors));
        assert_eq!(collect(&mut feed, 2).await, vec![4, 5]);
        assert!(matches!(
            feed.next(Duration::from_millis(10)).await.expect("next"),
            Step::CaughtUp
        ));
    }

    #[test]
    fn shutdown_closes_mailboxes() {
        let hub = Hub::new(0, 2);
        let sub = hub.subscribe(set(&["*/pub/*"]));
        hub.shutdown();
        assert!(matches!(sub.mailbox.take(), Take::Closed));
        let late = hub.subscribe(set(&["*/pub/*"]));
        assert!(matches!(late.mailbox.take(), Take::Closed));
    }
}
