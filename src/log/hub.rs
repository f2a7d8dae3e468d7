//! The hub: fans committed events out to the connections that subscribed to them.
//!
//! The writer hands each commit's events to `Hub::publish`, which only queues them for the
//! hub's own thread (the fan-out thread) and returns: the writer answers its batch and moves
//! on. The fan-out thread owns the subscription tables and the mailboxes; connections
//! subscribe and unsubscribe by message, so neither side ever waits on the other's lock. For
//! each event it looks the key up in the tables and pushes one shared `Arc` into the bounded
//! mailbox of each matching subscriber; nothing is done for subscribers it does not match. A
//! mailbox that is full stops taking events and is marked lagging, and its reader, once it has
//! emptied it, catches up from the log from its own position before taking live events again.
//! So a slow reader costs a bounded amount of memory and is never cut off.
//!
//! `Feed` is the reading side, one per connection: it replays from the store, joins the live
//! events, and de-duplicates by sequence. It subscribes before it reads the store. When the
//! fan-out thread registers a mailbox it tells it the newest sequence it had handed out then:
//! every later event reaches the mailbox, and every earlier one is committed, so in the store.
//! The feed goes live only once its replay has reached that sequence (reading the store again
//! if it registered late); a copy that arrives both ways is dropped by the sequence check.
//!
//! The same thread ticks every half keep-alive interval, and tells a mailbox that has had no
//! event for a whole interval that a keep-alive is due: one timer for every stream.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::sync::Notify;

use super::frame::{self, Format};
use super::store::Replayed;
use super::subscriptions::{PatternSet, SubscriberId, SubscriptionTables};
use super::{Event, EventLog, LogError, PositionError};

/// Default mailbox size: how far a subscriber may fall behind live before it reads from the
/// store instead. Small, because an idle connection should cost little.
pub const DEFAULT_MAILBOX: usize = 128;

/// At most this many events are read from the store in one read transaction...
const SCAN_EVENTS: usize = 4096;
/// ...and a replay batch stops once its frames fill this much.
const BATCH_BYTES: usize = 64 << 10;

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

    /// The frame in `format`; encoded by the first subscriber that writes it, shared after.
    pub fn frame(&self, format: Format) -> Bytes {
        let cell = match format {
            Format::Native => &self.native,
            Format::Pubky => &self.pubky,
        };
        cell.get_or_init(|| match format {
            Format::Native => frame::native(&self.event),
            Format::Pubky => frame::pubky(&self.event),
        })
        .clone()
    }
}

/// Not yet given a slot by the fan-out thread.
const NO_SLOT: usize = usize::MAX;

/// A subscriber's bounded queue of live events.
#[derive(Debug)]
struct Mailbox {
    state: Mutex<MailboxState>,
    notify: Notify,
    /// Its place in the fan-out thread's tables (only that thread writes it).
    slot: AtomicUsize,
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
    /// Registered: every event published after this sequence reaches the queue.
    complete_after: Option<u64>,
    /// An event arrived since the last tick.
    active: bool,
    /// Ticks in a row without an event.
    quiet: u8,
    /// A keep-alive is due.
    keepalive: bool,
}

/// What a reader took from its mailbox.
#[derive(Debug, Default, Clone, Copy)]
struct Taken {
    /// Events were dropped after the queue filled; the reader must read the store.
    lagged: bool,
    closed: bool,
    keepalive: bool,
    complete_after: Option<u64>,
}

impl Mailbox {
    fn new() -> Mailbox {
        Mailbox {
            state: Mutex::new(MailboxState::default()),
            notify: Notify::new(),
            slot: AtomicUsize::new(NO_SLOT),
        }
    }

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
        state.active = true;
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

    /// Take every queued event into `into` (which must be empty) and the flags with them.
    fn take_all(&self, into: &mut VecDeque<Arc<SharedEvent>>) -> Taken {
        let mut state = self.lock();
        std::mem::swap(&mut state.queue, into);
        // An idle subscriber keeps no grown buffer; a steady trickle reuses a small one.
        if state.queue.capacity() > 16 {
            state.queue = VecDeque::new();
        }
        let taken = Taken {
            lagged: state.lagging,
            closed: state.closed,
            keepalive: state.keepalive,
            complete_after: state.complete_after,
        };
        state.lagging = false;
        state.keepalive = false;
        taken
    }

    fn complete_after(&self) -> Option<u64> {
        self.lock().complete_after
    }

    fn is_closed(&self) -> bool {
        self.lock().closed
    }

    fn register(&self, head: u64) {
        self.lock().complete_after = Some(head);
        self.notify.notify_one();
    }

    /// One tick of the keep-alive clock.
    fn tick(&self) {
        let mut state = self.lock();
        if std::mem::take(&mut state.active) {
            state.quiet = 0;
            return;
        }
        state.quiet += 1;
        if state.quiet >= 2 {
            state.quiet = 0;
            state.keepalive = true;
            drop(state);
            self.notify.notify_one();
        }
    }

    fn close(&self) {
        self.lock().closed = true;
        self.notify.notify_one();
    }
}

/// What the fan-out thread is told.
enum Message {
    Publish(Vec<Arc<Event>>),
    Subscribe(Arc<Mailbox>, Arc<PatternSet>),
    Unsubscribe(Arc<Mailbox>, Arc<PatternSet>),
    Shutdown,
    /// Answered once everything sent before it is done, with the number of (pattern,
    /// subscriber) pairs and of mailboxes held (for tests).
    #[cfg(test)]
    Barrier(mpsc::Sender<(usize, usize)>),
    /// Holds the thread until the sender is dropped (for tests of late registration).
    #[cfg(test)]
    Pause(mpsc::Receiver<()>),
}

/// The fan-out point between the writer and the SSE connections.
pub struct Hub {
    to_fanout: mpsc::Sender<Message>,
    /// The newest sequence the fan-out thread has handed out.
    head: Arc<AtomicU64>,
    subscribers: AtomicUsize,
    closed: AtomicBool,
}

impl Hub {
    /// A hub whose newest event is `head` (the store's last sequence at start), with mailboxes
    /// of `mailbox_capacity` events, telling idle streams to send a keep-alive every
    /// `keepalive`. Starts the fan-out thread, which ends when the hub is dropped.
    pub fn new(head: u64, mailbox_capacity: usize, keepalive: Duration) -> Arc<Hub> {
        let (to_fanout, messages) = mpsc::channel();
        let shared_head = Arc::new(AtomicU64::new(head));
        let fanout = Fanout {
            tables: SubscriptionTables::new(),
            slots: Vec::new(),
            free: Vec::new(),
            head,
            shared_head: Arc::clone(&shared_head),
            capacity: mailbox_capacity.max(1),
            closed: false,
            scratch: Vec::new(),
        };
        let tick = (keepalive / 2).max(Duration::from_millis(10));
        let spawned = std::thread::Builder::new()
            .name("hearth-fanout".into())
            .spawn(move || {
                let run = std::panic::AssertUnwindSafe(|| fanout.run(messages, tick));
                if let Err(panic) = std::panic::catch_unwind(run) {
                    super::fatal("the fan-out thread", panic.as_ref());
                }
            });
        if let Err(err) = spawned {
            // Without its thread the hub delivers nothing: as fatal as a panic in it.
            super::fatal("starting the fan-out thread", &err.to_string());
        }
        Arc::new(Hub {
            to_fanout,
            head: shared_head,
            subscribers: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
        })
    }

    fn send(&self, message: Message) {
        // The thread only ends with the hub, or by a panic, which stops the process.
        let _ = self.to_fanout.send(message);
    }

    /// The newest sequence published (handed out to the mailboxes).
    pub fn head(&self) -> u64 {
        self.head.load(Ordering::Acquire)
    }

    /// How many connections are subscribed.
    pub fn subscribers(&self) -> usize {
        self.subscribers.load(Ordering::Relaxed)
    }

    /// Hand out a commit's events, in sequence order. Called by the writer after the commit is
    /// durable; it only queues them for the fan-out thread.
    pub fn publish(&self, events: Vec<Arc<Event>>) {
        if !events.is_empty() {
            self.send(Message::Publish(events));
        }
    }

    /// Register `patterns` for a new subscriber. Every event published after this call
    /// reaches it; its feed learns from which sequence on (see the module's notes).
    pub fn subscribe(self: &Arc<Self>, patterns: PatternSet) -> Subscription {
        let mailbox = Arc::new(Mailbox::new());
        let patterns = Arc::new(patterns);
        self.subscribers.fetch_add(1, Ordering::Relaxed);
        crate::telemetry::stream_open(1);
        if self.closed.load(Ordering::Acquire) {
            mailbox.close();
        } else {
            self.send(Message::Subscribe(
                Arc::clone(&mailbox),
                Arc::clone(&patterns),
            ));
        }
        Subscription {
            hub: Arc::clone(self),
            patterns,
            mailbox,
        }
    }

    /// End every stream (cleanly, after what each already has) and refuse new ones: for shutdown.
    pub fn shutdown(&self) {
        self.closed.store(true, Ordering::Release);
        self.send(Message::Shutdown);
    }

    /// Wait until the fan-out thread has handled everything sent before; what it holds then
    /// ((pattern, subscriber) pairs, mailboxes).
    #[cfg(test)]
    pub(crate) fn barrier(&self) -> (usize, usize) {
        let (done, wait) = mpsc::channel();
        self.send(Message::Barrier(done));
        wait.recv().unwrap_or_default()
    }

    /// Hold the fan-out thread until the returned sender is dropped.
    #[cfg(test)]
    pub(crate) fn pause(&self) -> mpsc::Sender<()> {
        let (release, wait) = mpsc::channel();
        self.send(Message::Pause(wait));
        release
    }
}

/// The fan-out thread's state: the tables, and the mailboxes by slot.
struct Fanout {
    tables: SubscriptionTables,
    slots: Vec<Option<Arc<Mailbox>>>,
    free: Vec<usize>,
    /// The newest sequence handed out.
    head: u64,
    shared_head: Arc<AtomicU64>,
    capacity: usize,
    closed: bool,
    /// Reused to collect an event's subscribers.
    scratch: Vec<SubscriberId>,
}

impl Fanout {
    fn run(mut self, messages: mpsc::Receiver<Message>, tick: Duration) {
        let mut next_tick = Instant::now() + tick;
        loop {
            let now = Instant::now();
            if now >= next_tick {
                for mailbox in self.slots.iter().flatten() {
                    mailbox.tick();
                }
                next_tick = now + tick;
            }
            match messages.recv_timeout(next_tick.saturating_duration_since(now)) {
                Ok(message) => self.handle(message),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    fn handle(&mut self, message: Message) {
        match message {
            Message::Publish(events) => self.publish(events),
            Message::Subscribe(mailbox, patterns) => {
                if self.closed {
                    mailbox.close();
                    return;
                }
                let slot = match self.free.pop() {
                    Some(slot) => slot,
                    None => {
                        self.slots.push(None);
                        self.slots.len() - 1
                    }
                };
                for pattern in patterns.patterns() {
                    self.tables.insert(pattern, slot as SubscriberId);
                }
                mailbox.slot.store(slot, Ordering::Relaxed);
                mailbox.register(self.head);
                self.slots[slot] = Some(mailbox);
            }
            Message::Unsubscribe(mailbox, patterns) => {
                let slot = mailbox.slot.load(Ordering::Relaxed);
                if slot == NO_SLOT {
                    return;
                }
                for pattern in patterns.patterns() {
                    self.tables.remove(pattern, slot as SubscriberId);
                }
                self.slots[slot] = None;
                self.free.push(slot);
                if self.free.len() == self.slots.len() {
                    self.slots = Vec::new();
                    self.free = Vec::new();
                }
            }
            Message::Shutdown => {
                self.closed = true;
                for mailbox in self.slots.iter().flatten() {
                    mailbox.close();
                }
            }
            #[cfg(test)]
            Message::Barrier(done) => {
                let held = self.slots.iter().flatten().count();
                let _ = done.send((self.tables.len(), held));
            }
            #[cfg(test)]
            Message::Pause(wait) => {
                let _ = wait.recv();
            }
        }
    }

    fn publish(&mut self, events: Vec<Arc<Event>>) {
        let mut newest = None;
        for event in events {
            newest = Some(event.seq);
            self.tables.matches(&event.key, &mut self.scratch);
            if self.scratch.is_empty() {
                continue;
            }
            let shared = Arc::new(SharedEvent::new(event));
            for &slot in &self.scratch {
                if let Some(Some(mailbox)) = self.slots.get(slot as usize) {
                    mailbox.push(&shared, self.capacity);
                }
            }
        }
        if let Some(seq) = newest {
            self.head = self.head.max(seq);
            self.shared_head.store(self.head, Ordering::Release);
        }
    }
}

/// A registered subscriber; unregisters when dropped (when its connection goes away).
pub struct Subscription {
    hub: Arc<Hub>,
    patterns: Arc<PatternSet>,
    mailbox: Arc<Mailbox>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.subscribers.fetch_sub(1, Ordering::Relaxed);
        crate::telemetry::stream_open(-1);
        self.hub.send(Message::Unsubscribe(
            Arc::clone(&self.mailbox),
            Arc::clone(&self.patterns),
        ));
    }
}

/// A further condition on events, beyond the patterns: Pubky's per-user cursors (an event of
/// a user is wanted only after that user's cursor).
pub type Floors = HashMap<String, u64>;

/// What a feed yields.
pub enum Step {
    /// The frames of `events` events, in order, in one buffer: one write.
    Frames { bytes: Bytes, events: u64 },
    /// The replay reached the newest event (reported once, before the first live event).
    CaughtUp,
    /// Nothing arrived for the keep-alive interval: time for a keep-alive.
    Idle,
    /// The hub shut down.
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading the store.
    Replay,
    /// Taking events from the mailbox.
    Live,
}

/// One connection's ordered, gap-free, duplicate-free view of the events it subscribed to.
pub struct Feed {
    log: EventLog,
    subscription: Subscription,
    format: Format,
    floors: Option<Arc<Floors>>,
    /// When every pattern names a user: those users, each with its floor, for replay
    /// through the log's per-user index.
    users: Option<Arc<Vec<(String, u64)>>>,
    /// The last sequence this feed has passed (delivered, or skipped as not matching); `None`
    /// for a live-only feed until its mailbox is registered.
    position: Option<u64>,
    phase: Phase,
    /// The last store read reached the end of its snapshot.
    store_done: bool,
    reported_caught_up: bool,
    /// Events taken from the mailbox (kept to reuse its buffer).
    taken: VecDeque<Arc<SharedEvent>>,
    /// The first read may start below what retention keeps (see `starting_at_oldest_retained`).
    trimmed_start_ok: bool,
}

impl Feed {
    /// A feed that starts after `after`, or at the newest event when `after` is `None`,
    /// writing frames in `format`. `subscription` must come from the hub before this reads
    /// anything (so it does).
    pub fn new(
        log: EventLog,
        subscription: Subscription,
        format: Format,
        after: Option<u64>,
        floors: Option<Floors>,
    ) -> Feed {
        let users = subscription.patterns.users().map(|users| {
            let floor = |user: &str| {
                floors
                    .as_ref()
                    .and_then(|floors| floors.get(user).copied())
                    .unwrap_or(0)
            };
            Arc::new(
                users
                    .into_iter()
                    .map(|user| (user.to_string(), floor(user)))
                    .collect(),
            )
        });
        Feed {
            log,
            subscription,
            format,
            floors: floors.map(Arc::new),
            users,
            position: after,
            phase: if after.is_some() {
                Phase::Replay
            } else {
                Phase::Live
            },
            store_done: false,
            reported_caught_up: false,
            taken: VecDeque::new(),
            trimmed_start_ok: false,
        }
    }

    /// Start at the oldest retained event when `after` is older than retention keeps, rather
    /// than fail: for Pubky's cursors, where no cursor means "from the beginning" and the
    /// beginning is what is kept. Trimming after the feed started is still an error.
    pub fn starting_at_oldest_retained(mut self) -> Feed {
        self.trimmed_start_ok = true;
        self
    }

    /// The next frames, at most `max` events of them (`max` at least 1), waiting for live
    /// events when there are none.
    pub async fn next(&mut self, max: u64) -> Result<Step, LogError> {
        let max = max.max(1);
        loop {
            if self.phase == Phase::Replay {
                // A long replay must not hold up shutdown.
                if self.subscription.mailbox.is_closed() {
                    return Ok(Step::Closed);
                }
                if self.store_done {
                    // Live events can take over once the mailbox is complete from a sequence
                    // the replay has reached; until it is registered, wait for it.
                    match self.subscription.mailbox.complete_after() {
                        None => {
                            self.subscription.mailbox.notify.notified().await;
                            continue;
                        }
                        Some(from) if from <= self.position.unwrap_or(0) => {
                            self.phase = Phase::Live;
                            continue;
                        }
                        // Registered after the replay read: what it missed is in the store now.
                        Some(_) => {}
                    }
                }
                let (bytes, events, replayed) = self.read_store(max).await?;
                self.position = Some(replayed.reached);
                self.store_done = replayed.done;
                if events > 0 {
                    return Ok(Step::Frames { bytes, events });
                }
                continue;
            }
            if !self.reported_caught_up {
                self.reported_caught_up = true;
                return Ok(Step::CaughtUp);
            }
            let taken = self.subscription.mailbox.take_all(&mut self.taken);
            if self.position.is_none() {
                // A live-only feed starts where its mailbox is complete.
                self.position = taken.complete_after;
            }
            let mut frames: Vec<Bytes> = Vec::new();
            if let Some(position) = self.position.as_mut() {
                for event in self.taken.drain(..) {
                    // Already replayed from the store, or not wanted under Pubky's cursors.
                    if event.seq() <= *position {
                        continue;
                    }
                    *position = event.seq();
                    let wanted = match &self.floors {
                        None => true,
                        Some(floors) => floors
                            .get(event.event.user())
                            .is_some_and(|&floor| event.seq() > floor),
                    };
                    if wanted && (frames.len() as u64) < max {
                        frames.push(event.frame(self.format));
                    }
                }
            }
            self.taken.clear();
            if self.taken.capacity() > 16 {
                self.taken = VecDeque::new();
            }
            if taken.lagged {
                crate::telemetry::stream_lagged();
                self.phase = Phase::Replay;
                self.store_done = false;
            }
            if !frames.is_empty() {
                return Ok(Step::Frames {
                    events: frames.len() as u64,
                    bytes: join(frames),
                });
            }
            if taken.closed {
                return Ok(Step::Closed);
            }
            if taken.keepalive {
                return Ok(Step::Idle);
            }
            if !taken.lagged {
                self.subscription.mailbox.notify.notified().await;
            }
        }
    }

    /// Read the next batch after `position` from the store: the frames of at most `max`
    /// matching events, in one buffer, and how far the read got.
    async fn read_store(&mut self, max: u64) -> Result<(Bytes, u64, Replayed), LogError> {
        let log = self.log.clone();
        let patterns = Arc::clone(&self.subscription.patterns);
        let floors = self.floors.clone();
        let users = self.users.clone();
        let format = self.format;
        let after = self.position.unwrap_or(0);
        let trimmed_start_ok = std::mem::take(&mut self.trimmed_start_ok);
        tokio::task::spawn_blocking(move || {
            let scope: Option<Vec<(&str, u64)>> = users
                .as_deref()
                .map(|users| users.iter().map(|(u, f)| (u.as_str(), *f)).collect());
            let mut out = BytesMut::new();
            let mut events = 0u64;
            // Reading by user, each user's range already starts after its floor.
            let floors = floors.filter(|_| scope.is_none());
            let replayed = log.replay(after, scope.as_deref(), SCAN_EVENTS, |event| {
                let wanted = patterns.matches(event.key)
                    && floors.as_deref().is_none_or(|floors| {
                        floors
                            .get(event.user())
                            .is_some_and(|&floor| event.seq > floor)
                    });
                if wanted {
                    if out.capacity() == 0 {
                        out.reserve(BATCH_BYTES + 4096);
                    }
                    format.encode_into(&mut out, event);
                    events += 1;
                }
                events < max && out.len() < BATCH_BYTES
            })?;
            // Retention trimmed events after this feed's position before it could read them:
            // passing over them silently would be a gap, so the feed fails as a resume would.
            match replayed.first {
                _ if trimmed_start_ok => {}
                Some(oldest) if after.saturating_add(1) < oldest => {
                    return Err(PositionError::Dropped { after, oldest }.into());
                }
                None if replayed.reached > after => {
                    let newest = replayed.reached;
                    return Err(PositionError::NoneRetained { after, newest }.into());
                }
                _ => {}
            }
            Ok::<_, LogError>((out.freeze(), events, replayed))
        })
        .await
        .map_err(|err| LogError::Task(err.to_string()))?
    }
}

/// Frames in one buffer (one shared frame is handed out as it is).
fn join(frames: Vec<Bytes>) -> Bytes {
    if frames.len() == 1 {
        return frames.into_iter().next().unwrap_or_default();
    }
    let mut out = BytesMut::with_capacity(frames.iter().map(Bytes::len).sum());
    for frame in &frames {
        out.extend_from_slice(frame);
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::subscriptions::Pattern;
    use crate::log::EventKind;

    const ALICE: &str = "o1gg96ewuojmopcjbz8895478wdtxtzzuxnfjjz8o8e77csa1ngo";
    const BOB: &str = "8pinxxgqs41n4aididenw5apqp1urfmzdztr8jt4abrkdn435ewo";
    const IDLE: Duration = Duration::from_secs(3600);

    fn event_of(user: &str, seq: u64, path: &str) -> Arc<Event> {
        Arc::new(Event {
            seq,
            kind: EventKind::Put,
            key: format!("{user}{path}"),
            ts_ms: 1,
            hash: Some([0; 32]),
            size: Some(1),
            origin: None,
        })
    }

    fn event(seq: u64, path: &str) -> Arc<Event> {
        event_of(ALICE, seq, path)
    }

    fn set(patterns: &[&str]) -> PatternSet {
        PatternSet::new(
            patterns
                .iter()
                .map(|p| Pattern::parse(p).expect("valid pattern")),
        )
    }

    fn drain(subscription: &Subscription) -> (Vec<u64>, bool) {
        let mut taken = VecDeque::new();
        let flags = subscription.mailbox.take_all(&mut taken);
        (taken.iter().map(|e| e.seq()).collect(), flags.lagged)
    }

    #[test]
    fn publishes_to_matching_subscribers_only_and_shares_frames() {
        let hub = Hub::new(0, 8, IDLE);
        let posts = hub.subscribe(set(&["*/pub/posts/*"]));
        let all = hub.subscribe(set(&["*/pub/*", "*/pub/posts/*"]));
        hub.publish(vec![event(1, "/pub/posts/1"), event(2, "/pub/other")]);
        hub.barrier();
        assert_eq!(hub.head(), 2);
        assert_eq!(drain(&posts), (vec![1], false));
        assert_eq!(drain(&all), (vec![1, 2], false));

        hub.publish(vec![event(3, "/pub/posts/3")]);
        hub.barrier();
        let (mut a, mut b) = (VecDeque::new(), VecDeque::new());
        posts.mailbox.take_all(&mut a);
        all.mailbox.take_all(&mut b);
        assert!(Arc::ptr_eq(&a[0], &b[0]), "one shared event");
        let (fa, fb) = (a[0].frame(Format::Native), b[0].frame(Format::Native));
        assert_eq!(fa.as_ptr(), fb.as_ptr());
    }

    #[test]
    fn a_full_mailbox_marks_lagging_and_drops() {
        let hub = Hub::new(0, 2, IDLE);
        let slow = hub.subscribe(set(&["*/pub/*"]));
        hub.publish((1..=5).map(|seq| event(seq, "/pub/x")).collect());
        hub.barrier();
        assert_eq!(drain(&slow), (vec![1, 2], true));
        // Lagging is reported once; new events queue again.
        hub.publish(vec![event(6, "/pub/x")]);
        hub.barrier();
        assert_eq!(drain(&slow), (vec![6], false));
    }

    #[test]
    fn registration_tells_the_mailbox_where_it_is_complete() {
        let hub = Hub::new(7, 2, IDLE);
        hub.publish(vec![event(8, "/pub/a")]);
        let sub = hub.subscribe(set(&["*/pub/*"]));
        hub.barrier();
        assert_eq!(sub.mailbox.complete_after(), Some(8));
        hub.publish(vec![event(9, "/pub/a")]);
        hub.barrier();
        assert_eq!(drain(&sub), (vec![9], false));
    }

    #[test]
    fn dropping_a_subscription_unregisters_it() {
        let hub = Hub::new(7, 2, IDLE);
        let sub = hub.subscribe(set(&["*/pub/*", &format!("{ALICE}/*")]));
        assert_eq!(hub.subscribers(), 1);
        assert_eq!(hub.barrier(), (2, 1));
        drop(sub);
        assert_eq!(hub.subscribers(), 0);
        assert_eq!(hub.barrier(), (0, 0));
    }

    #[test]
    fn a_quiet_mailbox_is_told_to_keep_alive() {
        let hub = Hub::new(0, 2, Duration::from_millis(20));
        let sub = hub.subscribe(set(&["*/pub/*"]));
        // Ticks come every 10 ms; wait for the flag, however long the machine takes.
        loop {
            let mut taken = VecDeque::new();
            if sub.mailbox.take_all(&mut taken).keepalive {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// A log, a hub, and a way to append that publishes each commit as the writer does.
    struct Fixture {
        _dir: tempfile::TempDir,
        store: crate::store::Store,
        log: EventLog,
        hub: Arc<Hub>,
    }

    impl Fixture {
        fn new(capacity: usize) -> Fixture {
            let (dir, store, log) = crate::log::store::testing::temp_log();
            let hub = Hub::new(log.last_seq().expect("last seq"), capacity, IDLE);
            Fixture {
                _dir: dir,
                store,
                log,
                hub,
            }
        }

        fn put_of(&self, user: &str, path: &str) -> u64 {
            let event = crate::log::store::testing::append(
                &self.store,
                &self.log,
                (*event_of(user, 0, path)).clone(),
            );
            let seq = event.seq;
            self.hub.publish(vec![Arc::new(event)]);
            seq
        }

        fn put(&self, path: &str) -> u64 {
            self.put_of(ALICE, path)
        }

        fn feed(&self, patterns: &[&str], after: Option<u64>, floors: Option<Floors>) -> Feed {
            let sub = self.hub.subscribe(set(patterns));
            Feed::new(self.log.clone(), sub, Format::Native, after, floors)
        }
    }

    /// The ids in a buffer of native frames.
    fn ids(bytes: &[u8]) -> Vec<u64> {
        std::str::from_utf8(bytes)
            .expect("frames are UTF-8")
            .lines()
            .filter_map(|line| line.strip_prefix("id: "))
            .map(|id| crate::ids::decode(id).expect("an id"))
            .collect()
    }

    async fn collect(feed: &mut Feed, n: usize) -> Vec<u64> {
        let mut seqs = Vec::new();
        while seqs.len() < n {
            match feed.next(u64::MAX).await.expect("next") {
                Step::Frames { bytes, events } => {
                    let got = ids(&bytes);
                    assert_eq!(got.len() as u64, events);
                    seqs.extend(got);
                }
                Step::CaughtUp => {}
                Step::Idle | Step::Closed => panic!("feed stalled after {seqs:?}"),
            }
        }
        seqs
    }

    /// Whether the feed has nothing more: at most the end of the replay, then a wait.
    async fn nothing_more(feed: &mut Feed) -> bool {
        let step = tokio::time::timeout(Duration::from_millis(50), feed.next(u64::MAX)).await;
        match step {
            Ok(Ok(Step::CaughtUp)) => {
                tokio::time::timeout(Duration::from_millis(50), feed.next(u64::MAX))
                    .await
                    .is_err()
            }
            Ok(_) => false,
            Err(_) => true,
        }
    }

    #[tokio::test]
    async fn a_lagging_feed_catches_up_from_the_store_in_order() {
        let f = Fixture::new(4);
        let matching: Vec<u64> = {
            let mut feed = f.feed(&["*/pub/a/*"], None, None);
            // A live-only feed starts once registered.
            f.hub.barrier();
            let mut expected = Vec::new();
            for i in 0..100 {
                let seq = f.put(&format!("/pub/{}/{i}", if i % 3 == 0 { "b" } else { "a" }));
                if i % 3 != 0 {
                    expected.push(seq);
                }
            }
            assert_eq!(collect(&mut feed, expected.len()).await, expected);
            expected
        };
        // Replay from the start, with live writes going on meanwhile.
        let mut feed = f.feed(&["*/pub/a/*"], Some(0), None);
        let mut expected = matching;
        for i in 0..10 {
            expected.push(f.put(&format!("/pub/a/late{i}")));
        }
        assert_eq!(collect(&mut feed, expected.len()).await, expected);
        let last = f.put("/pub/a/last");
        assert_eq!(collect(&mut feed, 1).await, vec![last]);
        assert!(nothing_more(&mut feed).await);
    }

    /// Retention that trims events a reading feed has not reached is never a silent gap: the
    /// feed fails with the position error a resume from there would get (410).
    #[tokio::test]
    async fn a_feed_overtaken_by_retention_fails_rather_than_skip() {
        let f = Fixture::new(4);
        for i in 0..10 {
            f.put(&format!("/pub/a/{i}"));
        }
        let mut feed = f.feed(&["*/pub/*"], Some(0), None);
        let Step::Frames { events, .. } = feed.next(2).await.expect("first frames") else {
            panic!("frames first");
        };
        assert_eq!(events, 2);
        let mut txn = f.store.env().write_txn().expect("txn");
        assert_eq!(f.log.trim(&mut txn, 6, None, 100).expect("trim"), 6);
        txn.commit().expect("commit");
        match feed.next(u64::MAX).await {
            Err(LogError::Position(PositionError::Dropped { after, oldest })) => {
                assert_eq!((after, oldest), (2, 7));
            }
            Ok(_) => panic!("the feed went on past trimmed events"),
            Err(err) => panic!("another error: {err}"),
        }
        // Everything trimmed: the same, with nothing retained to name.
        let mut feed = f.feed(&["*/pub/*"], Some(6), None);
        let mut txn = f.store.env().write_txn().expect("txn");
        f.log.trim(&mut txn, 10, None, 100).expect("trim");
        txn.commit().expect("commit");
        assert!(matches!(
            feed.next(u64::MAX).await,
            Err(LogError::Position(PositionError::NoneRetained {
                after: 6,
                newest: 10
            }))
        ));
    }

    #[tokio::test]
    async fn floors_hold_back_a_users_events_until_after_their_cursor() {
        let f = Fixture::new(4);
        for i in 0..5 {
            f.put(&format!("/pub/{i}"));
        }
        let floors = Floors::from([(ALICE.to_string(), 3)]);
        let mut feed = f.feed(&[&format!("{ALICE}/pub/*")], Some(0), Some(floors));
        assert_eq!(collect(&mut feed, 2).await, vec![4, 5]);
        assert!(matches!(
            feed.next(u64::MAX).await.expect("next"),
            Step::CaughtUp
        ));
        // Live, the floor still holds for a second user's stream of its own events.
        let seq = f.put("/pub/live");
        assert_eq!(collect(&mut feed, 1).await, vec![seq]);
    }

    #[tokio::test]
    async fn a_feed_takes_at_most_what_it_is_asked_for() {
        let f = Fixture::new(64);
        for i in 0..10 {
            f.put(&format!("/pub/{i}"));
        }
        let mut feed = f.feed(&["*/pub/*"], Some(0), None);
        let Step::Frames { bytes, events } = feed.next(3).await.expect("next") else {
            panic!("frames");
        };
        assert_eq!((ids(&bytes), events), (vec![1, 2, 3], 3));
        assert_eq!(collect(&mut feed, 7).await, (4..=10).collect::<Vec<_>>());
    }

    /// The fan-out thread registers a subscription only after a commit that happened while
    /// the feed replayed: the feed still gets every event once, in order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn late_registration_with_concurrent_publishes_has_no_gap_or_duplicate() {
        let f = Arc::new(Fixture::new(8));
        for i in 0..50 {
            f.put_of(if i % 2 == 0 { ALICE } else { BOB }, &format!("/pub/{i}"));
        }
        for patterns in [vec!["*/pub/*".to_string()], vec![format!("{ALICE}/*")]] {
            let release = f.hub.pause();
            let refs: Vec<&str> = patterns.iter().map(String::as_str).collect();
            let mut feed = f.feed(&refs, Some(0), None);
            let writer = {
                let f = Arc::clone(&f);
                std::thread::spawn(move || {
                    let mut release = Some(release);
                    for i in 0..200 {
                        f.put_of(if i % 2 == 0 { ALICE } else { BOB }, &format!("/pub/w{i}"));
                        if i == 20 {
                            // The fan-out thread goes on (and registers the feed) mid-way.
                            release.take();
                        }
                    }
                })
            };
            // Read while the writer goes on: the replay, the wait for registration, live.
            let mut got = Vec::new();
            let wanted = |seq: u64| {
                let mut key = String::new();
                f.log
                    .scan(seq - 1, 1, |e| {
                        key = e.key;
                        false
                    })
                    .expect("scan");
                PatternSet::new(refs.iter().map(|p| Pattern::parse(p).expect("pattern")))
                    .matches(&key)
            };
            // Read until the writer is done and its last wanted event arrived. A step that
            // waits is given up after a moment to look again (the writer may have finished
            // meanwhile); dropping a pending step loses nothing (the feed's position only moves
            // with what it hands out). The guard only fails a stalled feed.
            let guard = std::time::Instant::now() + Duration::from_secs(120);
            loop {
                let finished = writer.is_finished() && {
                    let last = f.log.last_seq().expect("last");
                    got.last().copied() >= (1..=last).rev().find(|&s| wanted(s))
                };
                if finished {
                    break;
                }
                assert!(
                    std::time::Instant::now() < guard,
                    "the feed stalled after {got:?}"
                );
                let step =
                    tokio::time::timeout(Duration::from_millis(100), feed.next(u64::MAX)).await;
                match step {
                    Err(_) => {}
                    Ok(step) => match step.expect("next") {
                        Step::Frames { bytes, .. } => got.extend(ids(&bytes)),
                        Step::CaughtUp | Step::Idle => {}
                        Step::Closed => panic!("closed"),
                    },
                }
            }
            writer.join().expect("writer");
            let last = f.log.last_seq().expect("last");
            let expected: Vec<u64> = (1..=last).filter(|&s| wanted(s)).collect();
            assert_eq!(got, expected, "{patterns:?}");
        }
    }

    #[test]
    fn shutdown_closes_mailboxes() {
        let hub = Hub::new(0, 2, IDLE);
        let sub = hub.subscribe(set(&["*/pub/*"]));
        hub.shutdown();
        hub.barrier();
        assert!(sub.mailbox.is_closed());
        let late = hub.subscribe(set(&["*/pub/*"]));
        assert!(late.mailbox.is_closed());
    }
}
