//! Subscription patterns and the tables that find an event's subscribers by its key.
//!
//! A pattern names a user (or `*`, any user) and a path; a trailing `*` makes it a byte prefix.
//! The tables keep exact patterns and prefixes apart, each ordered by key, as the design asks:
//! an event's subscribers are found by looking its key up, never by walking every
//! subscription, so the cost of an event grows with what it matches and with its key's length,
//! not with how many subscriptions exist (`benches/subscriptions.rs` measures it).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::Bound;

use crate::keys::{self, USER_KEY_LEN};

/// Identifies one subscriber (one SSE connection) in the tables.
pub type SubscriberId = u64;

/// The longest pattern accepted: a user, the longest path, and the `*`.
pub const MAX_PATTERN_BYTES: usize = USER_KEY_LEN + crate::path::MAX_PATH_BYTES + 1;

/// One subscription pattern, in the form the tables look it up by.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Pattern {
    /// `<z32><path>`: one file of one user. Holds the whole event key.
    Exact(String),
    /// `<z32><prefix>*`: that user's keys starting with the prefix. Holds `<z32><prefix>`.
    UserPrefix(String),
    /// `*<path>`: that path, for every user. Holds the path.
    AnyUserExact(String),
    /// `*<prefix>*`: paths starting with the prefix, for every user. Holds the prefix.
    AnyUserPrefix(String),
}

/// Why a string is not a pattern; the message is what a client sees in a 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("subscription {0:?}: a pattern is a user's 52-character public key, or *, followed by a path starting with /")]
    Shape(String),
    #[error("subscription {pattern:?}: {user:?} is not a valid public key ({reason})")]
    User {
        pattern: String,
        user: String,
        reason: String,
    },
    #[error("subscription {0:?}: * may only end the pattern or stand for the whole user")]
    Star(String),
    #[error("subscription is {0} bytes long; at most {MAX_PATTERN_BYTES} are allowed")]
    TooLong(usize),
}

impl Pattern {
    /// Parse the client's form: `<z32>/path`, `<z32>/prefix*`, `*/path`, `*/prefix*`.
    pub fn parse(text: &str) -> Result<Pattern, PatternError> {
        if text.len() > MAX_PATTERN_BYTES {
            return Err(PatternError::TooLong(text.len()));
        }
        let (user, path) = if let Some(path) = text.strip_prefix('*') {
            (None, path)
        } else {
            let user = text
                .get(..USER_KEY_LEN)
                .ok_or_else(|| PatternError::Shape(text.to_string()))?;
            let canonical = keys::canonical(user).map_err(|err| PatternError::User {
                pattern: text.to_string(),
                user: user.to_string(),
                reason: err.to_string(),
            })?;
            (Some(canonical), &text[USER_KEY_LEN..])
        };
        if !path.starts_with('/') {
            return Err(PatternError::Shape(text.to_string()));
        }
        let (path, wildcard) = match path.strip_suffix('*') {
            Some(prefix) => (prefix, true),
            None => (path, false),
        };
        if path.contains('*') {
            return Err(PatternError::Star(text.to_string()));
        }
        Ok(match (user, wildcard) {
            (Some(user), false) => Pattern::Exact(user + path),
            (Some(user), true) => Pattern::UserPrefix(user + path),
            (None, false) => Pattern::AnyUserExact(path.to_string()),
            (None, true) => Pattern::AnyUserPrefix(path.to_string()),
        })
    }

    /// Whether an event key (`<z32><path>`) matches: the definition the tables implement.
    pub fn matches(&self, key: &str) -> bool {
        let path = key.get(USER_KEY_LEN..).unwrap_or("");
        match self {
            Pattern::Exact(exact) => key == exact,
            Pattern::UserPrefix(prefix) => key.starts_with(prefix.as_str()),
            Pattern::AnyUserExact(exact) => path == exact,
            Pattern::AnyUserPrefix(prefix) => path.starts_with(prefix.as_str()),
        }
    }
}

impl fmt::Display for Pattern {
    /// The client's form, as `parse` reads it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Exact(key) => f.write_str(key),
            Pattern::UserPrefix(prefix) => write!(f, "{prefix}*"),
            Pattern::AnyUserExact(path) => write!(f, "*{path}"),
            Pattern::AnyUserPrefix(prefix) => write!(f, "*{prefix}*"),
        }
    }
}

/// The subscribers of one table entry, in ascending order. Nearly every entry has one
/// subscriber, kept inline: a list is allocated only for a second one.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Subscribers {
    One(SubscriberId),
    Many(Vec<SubscriberId>),
}

impl Subscribers {
    fn as_slice(&self) -> &[SubscriberId] {
        match self {
            Subscribers::One(id) => std::slice::from_ref(id),
            Subscribers::Many(ids) => ids,
        }
    }

    /// Add `id`; false if it was there.
    fn insert(&mut self, id: SubscriberId) -> bool {
        match self {
            Subscribers::One(one) if *one == id => false,
            Subscribers::One(one) => {
                let mut ids = vec![*one, id];
                ids.sort_unstable();
                *self = Subscribers::Many(ids);
                true
            }
            Subscribers::Many(ids) => match ids.binary_search(&id) {
                Ok(_) => false,
                Err(at) => {
                    ids.insert(at, id);
                    true
                }
            },
        }
    }

    /// Remove `id`; (whether it was there, whether none is left).
    fn remove(&mut self, id: SubscriberId) -> (bool, bool) {
        match self {
            Subscribers::One(one) => (*one == id, *one == id),
            Subscribers::Many(ids) => match ids.binary_search(&id) {
                Err(_) => (false, false),
                Ok(at) => {
                    ids.remove(at);
                    if let [last] = ids[..] {
                        *self = Subscribers::One(last);
                    }
                    (true, false)
                }
            },
        }
    }
}

/// One table: key -> subscribers, ordered by key.
type Table = BTreeMap<Box<[u8]>, Subscribers>;

/// Exact paths and path prefixes in tables ordered by path: for "any user", and for a user
/// with many patterns.
#[derive(Debug, Default)]
struct PathTables {
    exact: Table,
    prefix: Table,
}

impl PathTables {
    fn table_mut(&mut self, wildcard: bool) -> &mut Table {
        if wildcard {
            &mut self.prefix
        } else {
            &mut self.exact
        }
    }

    fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.prefix.is_empty()
    }

    fn insert(&mut self, wildcard: bool, path: &[u8], subscriber: SubscriberId) -> bool {
        let table = self.table_mut(wildcard);
        match table.get_mut(path) {
            Some(subscribers) => subscribers.insert(subscriber),
            None => {
                table.insert(path.into(), Subscribers::One(subscriber));
                true
            }
        }
    }

    fn remove(&mut self, wildcard: bool, path: &[u8], subscriber: SubscriberId) -> bool {
        let table = self.table_mut(wildcard);
        let Some(subscribers) = table.get_mut(path) else {
            return false;
        };
        let (removed, empty) = subscribers.remove(subscriber);
        if empty {
            table.remove(path);
        }
        removed
    }

    /// Visit the subscribers of every entry that `path` matches.
    fn for_each_match(&self, path: &[u8], visit: &mut impl FnMut(&[SubscriberId])) {
        if let Some(subscribers) = self.exact.get(path) {
            visit(subscribers.as_slice());
        }
        for_each_prefix_of(&self.prefix, path, visit);
    }
}

/// One pattern of one user: its path, whether it is a prefix, its subscribers.
#[derive(Debug)]
struct Entry {
    path: Box<[u8]>,
    wildcard: bool,
    subscribers: Subscribers,
}

/// A user's patterns. Nearly every user has a handful, kept in a small list that a match
/// reads whole (one or two cache lines and no tree to walk); past `SMALL_USER` they move to
/// ordered tables, so a user followed in many ways still costs a few ordered lookups.
#[derive(Debug)]
enum UserTables {
    Small(Vec<Entry>),
    Large(Box<PathTables>),
}

/// How many patterns a user's small list holds before it becomes ordered tables.
const SMALL_USER: usize = 8;

impl UserTables {
    fn insert(&mut self, wildcard: bool, path: &[u8], subscriber: SubscriberId) -> bool {
        let entries = match self {
            UserTables::Large(tables) => return tables.insert(wildcard, path, subscriber),
            UserTables::Small(entries) => entries,
        };
        if let Some(entry) = entries
            .iter_mut()
            .find(|e| e.wildcard == wildcard && *e.path == *path)
        {
            return entry.subscribers.insert(subscriber);
        }
        if entries.len() < SMALL_USER {
            entries.reserve_exact(1);
            entries.push(Entry {
                path: path.into(),
                wildcard,
                subscribers: Subscribers::One(subscriber),
            });
            return true;
        }
        let mut tables = PathTables::default();
        for entry in entries.drain(..) {
            tables
                .table_mut(entry.wildcard)
                .insert(entry.path, entry.subscribers);
        }
        let inserted = tables.insert(wildcard, path, subscriber);
        *self = UserTables::Large(Box::new(tables));
        inserted
    }

    fn remove(&mut self, wildcard: bool, path: &[u8], subscriber: SubscriberId) -> bool {
        match self {
            UserTables::Large(tables) => tables.remove(wildcard, path, subscriber),
            UserTables::Small(entries) => {
                let Some(at) = entries
                    .iter()
                    .position(|e| e.wildcard == wildcard && *e.path == *path)
                else {
                    return false;
                };
                let (removed, empty) = entries[at].subscribers.remove(subscriber);
                if empty {
                    entries.swap_remove(at);
                    entries.shrink_to_fit();
                }
                removed
            }
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            UserTables::Small(entries) => entries.is_empty(),
            UserTables::Large(tables) => tables.is_empty(),
        }
    }

    fn for_each_match(&self, path: &[u8], visit: &mut impl FnMut(&[SubscriberId])) {
        match self {
            UserTables::Large(tables) => tables.for_each_match(path, visit),
            UserTables::Small(entries) => {
                for entry in entries {
                    let hit = if entry.wildcard {
                        path.starts_with(&entry.path)
                    } else {
                        *path == *entry.path
                    };
                    if hit {
                        visit(entry.subscribers.as_slice());
                    }
                }
            }
        }
    }
}

/// A user's z-base32 key, the fixed-length first part of every event key.
type UserKey = [u8; USER_KEY_LEN];

/// The tables' hash: foldhash, seeded at random per table (no one can aim keys at one slot),
/// and a fraction of the cost of std's SipHash on these short keys.
type Hashing = foldhash::quality::RandomState;

/// "Any user" prefixes, found by hashing. A prefix is kept under its directory (itself up to
/// and including its last `/`), with the part after that (if any) in a short list there. An
/// event's path is looked up at each of its `/` whose length some kept directory has: one
/// probe per level of the path that matters, whatever the number of prefixes.
#[derive(Debug, Default)]
struct PrefixIndex {
    dirs: HashMap<Box<[u8]>, Dir, Hashing>,
    /// How many directories of each length are kept...
    lengths: HashMap<usize, usize, Hashing>,
    /// ...and the same as a bit per length, for the lookups.
    present: Vec<u64>,
}

#[derive(Debug, Default)]
struct Dir {
    /// Subscribers of the directory itself as a prefix.
    here: Option<Subscribers>,
    /// Prefixes that go on past the directory without another `/`: (what follows it, who).
    partial: Vec<(Box<[u8]>, Subscribers)>,
}

impl Dir {
    fn is_empty(&self) -> bool {
        self.here.is_none() && self.partial.is_empty()
    }
}

/// The directory part of a prefix (it always starts with `/`), and the rest.
fn split_dir(prefix: &[u8]) -> (&[u8], &[u8]) {
    let cut = prefix
        .iter()
        .rposition(|&b| b == b'/')
        .map_or(0, |at| at + 1);
    prefix.split_at(cut)
}

impl PrefixIndex {
    fn insert(&mut self, prefix: &[u8], subscriber: SubscriberId) -> bool {
        let (dir, rest) = split_dir(prefix);
        let entry = match self.dirs.get_mut(dir) {
            Some(entry) => entry,
            None => {
                let len = dir.len();
                *self.lengths.entry(len).or_default() += 1;
                let (word, bit) = (len / 64, len % 64);
                if self.present.len() <= word {
                    self.present.resize(word + 1, 0);
                }
                self.present[word] |= 1 << bit;
                self.dirs.entry(dir.into()).or_default()
            }
        };
        if rest.is_empty() {
            return match &mut entry.here {
                Some(subscribers) => subscribers.insert(subscriber),
                None => {
                    entry.here = Some(Subscribers::One(subscriber));
                    true
                }
            };
        }
        match entry.partial.iter_mut().find(|(r, _)| **r == *rest) {
            Some((_, subscribers)) => subscribers.insert(subscriber),
            None => {
                entry.partial.reserve_exact(1);
                entry
                    .partial
                    .push((rest.into(), Subscribers::One(subscriber)));
                true
            }
        }
    }

    fn remove(&mut self, prefix: &[u8], subscriber: SubscriberId) -> bool {
        let (dir, rest) = split_dir(prefix);
        let Some(entry) = self.dirs.get_mut(dir) else {
            return false;
        };
        let removed = if rest.is_empty() {
            match &mut entry.here {
                None => false,
                Some(subscribers) => {
                    let (removed, empty) = subscribers.remove(subscriber);
                    if empty {
                        entry.here = None;
                    }
                    removed
                }
            }
        } else {
            match entry.partial.iter().position(|(r, _)| **r == *rest) {
                None => false,
                Some(at) => {
                    let (removed, empty) = entry.partial[at].1.remove(subscriber);
                    if empty {
                        entry.partial.swap_remove(at);
                        entry.partial.shrink_to_fit();
                    }
                    removed
                }
            }
        };
        if entry.is_empty() {
            self.dirs.remove(dir);
            let len = dir.len();
            if let Some(count) = self.lengths.get_mut(&len) {
                *count -= 1;
                if *count == 0 {
                    self.lengths.remove(&len);
                    self.present[len / 64] &= !(1 << (len % 64));
                }
            }
            if self.dirs.is_empty() {
                *self = PrefixIndex::default();
            }
        }
        removed
    }

    fn for_each_match(&self, path: &[u8], visit: &mut impl FnMut(&[SubscriberId])) {
        if self.dirs.is_empty() {
            return;
        }
        let longest = self.present.len() * 64;
        for (at, _) in path
            .iter()
            .enumerate()
            .take(longest)
            .filter(|(_, &b)| b == b'/')
        {
            let len = at + 1;
            let kept = self
                .present
                .get(len / 64)
                .is_some_and(|word| word & (1 << (len % 64)) != 0);
            if !kept {
                continue;
            }
            let Some(dir) = self.dirs.get(&path[..len]) else {
                continue;
            };
            if let Some(subscribers) = &dir.here {
                visit(subscribers.as_slice());
            }
            let after = &path[len..];
            for (rest, subscribers) in &dir.partial {
                if after.starts_with(rest) {
                    visit(subscribers.as_slice());
                }
            }
        }
    }
}

/// Every live subscription.
///
/// An event key is `<user><path>`, and the user part has a fixed length, so the per-user
/// tables hang off a hash index by user: one probe finds the only user whose patterns can
/// match, and that user's few patterns are read in one small list. "Any user" exact paths are
/// a hash index by path (one probe), and "any user" prefixes a hash index by directory (one
/// probe per level of the path at which some prefix is kept). The cost of an event is a few
/// probes, whatever the number of subscriptions (`benches/subscriptions.rs` measures it from
/// 1,000 to 1,000,000).
#[derive(Debug, Default)]
pub struct SubscriptionTables {
    users: HashMap<UserKey, UserTables, Hashing>,
    any_exact: HashMap<Box<[u8]>, Subscribers, Hashing>,
    any_prefix: PrefixIndex,
    /// (pattern, subscriber) pairs held.
    len: usize,
}

/// Where a pattern lives: its user (or any), whether it is a prefix, and its path.
fn placement(pattern: &Pattern) -> (Option<UserKey>, bool, &[u8]) {
    fn split(key: &str) -> (Option<UserKey>, &[u8]) {
        let bytes = key.as_bytes();
        let user = bytes
            .get(..USER_KEY_LEN)
            .and_then(|user| UserKey::try_from(user).ok());
        (user, bytes.get(USER_KEY_LEN..).unwrap_or(&[]))
    }
    match pattern {
        Pattern::Exact(key) => {
            let (user, path) = split(key);
            (user, false, path)
        }
        Pattern::UserPrefix(key) => {
            let (user, path) = split(key);
            (user, true, path)
        }
        Pattern::AnyUserExact(path) => (None, false, path.as_bytes()),
        Pattern::AnyUserPrefix(path) => (None, true, path.as_bytes()),
    }
}

impl SubscriptionTables {
    pub fn new() -> Self {
        Self::default()
    }

    /// How many (pattern, subscriber) pairs are held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Add `subscriber` under `pattern`; adding the same pair twice keeps one.
    pub fn insert(&mut self, pattern: &Pattern, subscriber: SubscriberId) {
        let (user, wildcard, path) = placement(pattern);
        let inserted = match (user, wildcard) {
            (Some(user), _) => self
                .users
                .entry(user)
                .or_insert_with(|| UserTables::Small(Vec::new()))
                .insert(wildcard, path, subscriber),
            (None, false) => match self.any_exact.get_mut(path) {
                Some(subscribers) => subscribers.insert(subscriber),
                None => {
                    self.any_exact
                        .insert(path.into(), Subscribers::One(subscriber));
                    true
                }
            },
            (None, true) => self.any_prefix.insert(path, subscriber),
        };
        if inserted {
            self.len += 1;
        }
    }

    /// Remove `subscriber` from `pattern`; entries and user tables go with their last one.
    pub fn remove(&mut self, pattern: &Pattern, subscriber: SubscriberId) {
        let (user, wildcard, path) = placement(pattern);
        let removed = match (user, wildcard) {
            (Some(user), _) => {
                let Some(tables) = self.users.get_mut(&user) else {
                    return;
                };
                let removed = tables.remove(wildcard, path, subscriber);
                if tables.is_empty() {
                    self.users.remove(&user);
                }
                removed
            }
            (None, false) => {
                let Some(subscribers) = self.any_exact.get_mut(path) else {
                    return;
                };
                let (removed, empty) = subscribers.remove(subscriber);
                if empty {
                    self.any_exact.remove(path);
                }
                removed
            }
            (None, true) => self.any_prefix.remove(path, subscriber),
        };
        if removed {
            self.len -= 1;
        }
        // Tables that shrank a lot give their memory back.
        if self.users.capacity() > 64 && self.users.len() < self.users.capacity() / 4 {
            self.users.shrink_to_fit();
        }
        if self.any_exact.capacity() > 64 && self.any_exact.len() < self.any_exact.capacity() / 4 {
            self.any_exact.shrink_to_fit();
        }
    }

    /// Visit the subscribers of every entry that `key` (`<z32><path>`) matches.
    fn for_each_match(&self, key: &str, visit: &mut impl FnMut(&[SubscriberId])) {
        let bytes = key.as_bytes();
        let (Some(user), Some(path)) = (bytes.get(..USER_KEY_LEN), bytes.get(USER_KEY_LEN..))
        else {
            return;
        };
        if !self.users.is_empty() {
            if let Some(tables) = UserKey::try_from(user)
                .ok()
                .and_then(|user| self.users.get(&user))
            {
                tables.for_each_match(path, visit);
            }
        }
        if !self.any_exact.is_empty() {
            if let Some(subscribers) = self.any_exact.get(path) {
                visit(subscribers.as_slice());
            }
        }
        self.any_prefix.for_each_match(path, visit);
    }

    /// Every subscriber that `key` (`<z32><path>`) matches, each once, in ascending order,
    /// in `out` (which is cleared first).
    pub fn matches(&self, key: &str, out: &mut Vec<SubscriberId>) {
        out.clear();
        let mut sources = 0;
        self.for_each_match(key, &mut |subscribers| {
            out.extend_from_slice(subscribers);
            sources += 1;
        });
        // One entry's list is sorted and has no duplicates; only a union needs the work.
        if sources > 1 {
            out.sort_unstable();
            out.dedup();
        }
    }

    /// Whether `key` matches any subscription at all.
    pub fn matches_any(&self, key: &str) -> bool {
        let mut found = false;
        self.for_each_match(key, &mut |_| found = true);
        found
    }

    /// How many users have patterns of their own (for tests of the memory they hold).
    #[cfg(test)]
    fn user_count(&self) -> usize {
        self.users.len()
    }
}

/// Visit every entry of `table` whose key is a prefix of `key`, longest first.
///
/// A walk down the ordered keys: take the greatest entry not above the current bound. If it is
/// a prefix of `key`, it matches, and shorter prefixes all sort below it. If it is not, it
/// shares some first `c` bytes with `key`, and every prefix of `key` still to be found is at
/// most `key[..c]` (a longer one would sort between that entry and the bound, where there is
/// nothing). Each step either finds a match or shortens the bound, so a lookup costs
/// O((matches + steps) log n), with steps at most the key's length and in practice one or two.
/// Every entry is a path, so it starts with `/`: the walk stops at the empty bound.
fn for_each_prefix_of(table: &Table, key: &[u8], visit: &mut impl FnMut(&[SubscriberId])) {
    if table.is_empty() {
        return;
    }
    let mut upper: Bound<&[u8]> = Bound::Included(key);
    loop {
        let Some((entry, subscribers)) = table
            .range::<[u8], _>((Bound::Unbounded, upper))
            .next_back()
        else {
            return;
        };
        let shorter = if key.starts_with(entry) {
            visit(subscribers.as_slice());
            upper = Bound::Excluded(&key[..entry.len()]);
            entry.len()
        } else {
            let common = entry.iter().zip(key).take_while(|(a, b)| a == b).count();
            upper = Bound::Included(&key[..common]);
            common
        };
        if shorter == 0 {
            return;
        }
    }
}

/// The patterns of one connection: replay from the store filters by them, and the hub's
/// tables are built from them. Only the patterns themselves are kept, sorted (by kind, then by
/// text), so each kind is one run of the list and a key is matched by binary searches in the
/// runs: a connection's own filter costs nothing beyond its patterns' text.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PatternSet {
    patterns: Vec<Pattern>,
}

impl PatternSet {
    /// Build from patterns; duplicates are kept once.
    pub fn new(patterns: impl IntoIterator<Item = Pattern>) -> Self {
        let mut patterns: Vec<Pattern> = patterns.into_iter().collect();
        patterns.sort();
        patterns.dedup();
        patterns.shrink_to_fit();
        PatternSet { patterns }
    }

    pub fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }

    /// The patterns of one kind (`rank`): a run of the sorted list.
    fn run(&self, kind: u8) -> &[Pattern] {
        let start = self.patterns.partition_point(|p| rank(p) < kind);
        let len = self.patterns[start..].partition_point(|p| rank(p) == kind);
        &self.patterns[start..start + len]
    }

    pub fn matches(&self, key: &str) -> bool {
        let path = key.get(USER_KEY_LEN..).unwrap_or("");
        exact_in(self.run(0), key)
            || prefix_in(self.run(1), key)
            || exact_in(self.run(2), path)
            || prefix_in(self.run(3), path)
    }

    /// The users every pattern names, sorted, if every pattern names one (no `*`): their
    /// events can then be read through the log's per-user index.
    pub fn users(&self) -> Option<Vec<&str>> {
        let mut users: Vec<&str> = Vec::new();
        for pattern in &self.patterns {
            let key = match pattern {
                Pattern::Exact(key) | Pattern::UserPrefix(key) => key,
                Pattern::AnyUserExact(_) | Pattern::AnyUserPrefix(_) => return None,
            };
            users.push(key.get(..USER_KEY_LEN)?);
        }
        users.sort_unstable();
        users.dedup();
        Some(users)
    }
}

/// A pattern's kind, in the order `Pattern` sorts its kinds.
fn rank(p: &Pattern) -> u8 {
    match p {
        Pattern::Exact(_) => 0,
        Pattern::UserPrefix(_) => 1,
        Pattern::AnyUserExact(_) => 2,
        Pattern::AnyUserPrefix(_) => 3,
    }
}

/// Whether `text` is one of `run` (sorted, all of one kind).
fn exact_in(run: &[Pattern], text: &str) -> bool {
    run.binary_search_by(|p| pattern_text(p).cmp(text)).is_ok()
}

/// Whether some pattern of `run` (sorted, all prefixes of one kind) is a prefix of `text`:
/// the ordered walk of `for_each_prefix_of`, on a sorted list.
fn prefix_in(run: &[Pattern], text: &str) -> bool {
    let key = text.as_bytes();
    let mut end = run.partition_point(|p| pattern_text(p).as_bytes() <= key);
    while end > 0 {
        let entry = pattern_text(&run[end - 1]).as_bytes();
        if key.starts_with(entry) {
            return true;
        }
        let common = entry.iter().zip(key).take_while(|(a, b)| a == b).count();
        if common == 0 {
            return false;
        }
        let bound = &key[..common];
        end = run[..end].partition_point(|p| pattern_text(p).as_bytes() <= bound);
    }
    false
}

fn pattern_text(p: &Pattern) -> &str {
    match p {
        Pattern::Exact(t)
        | Pattern::UserPrefix(t)
        | Pattern::AnyUserExact(t)
        | Pattern::AnyUserPrefix(t) => t,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ALICE: &str = "o1gg96ewuojmopcjbz8895478wdtxtzzuxnfjjz8o8e77csa1ngo";
    const BOB: &str = "8pinxxgqs41n4aididenw5apqp1urfmzdztr8jt4abrkdn435ewo";

    fn key(user: &str, path: &str) -> String {
        format!("{user}{path}")
    }

    fn p(text: &str) -> Pattern {
        Pattern::parse(text).expect(text)
    }

    fn matched(tables: &SubscriptionTables, key: &str) -> Vec<SubscriberId> {
        let mut out = Vec::new();
        tables.matches(key, &mut out);
        out
    }

    #[test]
    fn parses_the_four_kinds() {
        assert_eq!(
            p(&format!("{ALICE}/pub/app/profile.json")),
            Pattern::Exact(key(ALICE, "/pub/app/profile.json"))
        );
        assert_eq!(
            p(&format!("{ALICE}/*")),
            Pattern::UserPrefix(key(ALICE, "/"))
        );
        assert_eq!(
            p(&format!("{ALICE}/pub/app/posts/*")),
            Pattern::UserPrefix(key(ALICE, "/pub/app/posts/"))
        );
        assert_eq!(
            p("*/pub/app/posts/*"),
            Pattern::AnyUserPrefix("/pub/app/posts/".into())
        );
        assert_eq!(p("*/pub/*"), Pattern::AnyUserPrefix("/pub/".into()));
        assert_eq!(
            p("*/pub/app/profile.json"),
            Pattern::AnyUserExact("/pub/app/profile.json".into())
        );
        for text in [
            format!("{ALICE}/pub/a"),
            format!("{ALICE}/pub/*"),
            "*/pub/x".to_string(),
            "*/pub/*".to_string(),
        ] {
            assert_eq!(p(&text).to_string(), text);
        }
    }

    #[test]
    fn refuses_malformed_patterns() {
        let bad_user = "l".repeat(52);
        let loose_user = "z".repeat(52);
        for (text, what) in [
            ("", "shape"),
            ("*", "shape"),
            ("**", "shape"),
            ("*pub/*", "shape"),
            ("alice/pub/*", "shape"),
            (ALICE, "shape"),
            (&format!("{ALICE}pub/*"), "shape"),
            (&format!("{bad_user}/pub/*"), "user"),
            (&format!("{loose_user}/pub/*"), "user"),
            (&format!("{ALICE}/pub/*/x"), "star"),
            (&format!("{ALICE}/pub/**"), "star"),
            ("*/pub/*x*", "star"),
            (&format!("{}/pub/é", &ALICE[..51]), "user"),
        ] {
            let err = Pattern::parse(text).expect_err(text);
            let kind = match err {
                PatternError::Shape(_) => "shape",
                PatternError::User { .. } => "user",
                PatternError::Star(_) => "star",
                PatternError::TooLong(_) => "long",
            };
            assert_eq!(kind, what, "{text}: {err}");
        }
        let long = format!("*/{}", "a".repeat(MAX_PATTERN_BYTES));
        assert!(matches!(
            Pattern::parse(&long),
            Err(PatternError::TooLong(_))
        ));
    }

    #[test]
    fn finds_exactly_the_matching_subscribers() {
        let mut t = SubscriptionTables::new();
        t.insert(&p(&format!("{ALICE}/pub/app/profile.json")), 1);
        t.insert(&p(&format!("{ALICE}/*")), 2);
        t.insert(&p(&format!("{ALICE}/pub/app/posts/*")), 3);
        t.insert(&p("*/pub/app/posts/*"), 4);
        t.insert(&p("*/pub/*"), 5);
        t.insert(&p("*/pub/app/profile.json"), 6);
        t.insert(&p(&format!("{BOB}/pub/app/posts/*")), 7);
        t.insert(&p(&format!("{ALICE}/pub/app/posts/1*")), 8);
        t.insert(&p(&format!("{ALICE}/pub/app/post*")), 9);

        assert_eq!(
            matched(&t, &key(ALICE, "/pub/app/profile.json")),
            vec![1, 2, 5, 6]
        );
        assert_eq!(
            matched(&t, &key(ALICE, "/pub/app/posts/1.json")),
            vec![2, 3, 4, 5, 8, 9]
        );
        assert_eq!(
            matched(&t, &key(ALICE, "/pub/app/posts/2.json")),
            vec![2, 3, 4, 5, 9]
        );
        assert_eq!(
            matched(&t, &key(BOB, "/pub/app/posts/1.json")),
            vec![4, 5, 7]
        );
        assert_eq!(matched(&t, &key(BOB, "/pub/other")), vec![5]);
        assert_eq!(matched(&t, &key(BOB, "/pub/app/profile.json")), vec![5, 6]);
        assert_eq!(matched(&t, &key(ALICE, "/pub/app/postsX")), vec![2, 5, 9]);
    }

    #[test]
    fn a_subscriber_with_two_matching_patterns_appears_once() {
        let mut t = SubscriptionTables::new();
        t.insert(&p(&format!("{ALICE}/*")), 7);
        t.insert(&p("*/pub/*"), 7);
        t.insert(&p("*/pub/app/*"), 7);
        t.insert(&p("*/pub/app/*"), 7);
        assert_eq!(t.len(), 3);
        assert_eq!(matched(&t, &key(ALICE, "/pub/app/x")), vec![7]);
    }

    #[test]
    fn removing_leaves_the_others() {
        let mut t = SubscriptionTables::new();
        let all = p("*/pub/*");
        t.insert(&all, 1);
        t.insert(&all, 2);
        t.remove(&all, 1);
        t.remove(&all, 1);
        assert_eq!(matched(&t, &key(ALICE, "/pub/x")), vec![2]);
        t.remove(&all, 2);
        assert!(t.is_empty());
        assert!(matched(&t, &key(ALICE, "/pub/x")).is_empty());
    }

    #[test]
    fn pattern_set_filters_replay() {
        let set = PatternSet::new([p(&format!("{BOB}/pub/a/*")), p("*/pub/b"), p("*/pub/b")]);
        assert_eq!(set.patterns().len(), 2);
        assert!(set.matches(&key(BOB, "/pub/a/1")));
        assert!(set.matches(&key(ALICE, "/pub/b")));
        assert!(!set.matches(&key(ALICE, "/pub/a/1")));
        assert!(!set.matches(&key(ALICE, "/pub/bc")));
    }

    fn arb_path() -> impl Strategy<Value = String> {
        // A small alphabet so that prefixes collide often.
        proptest::collection::vec(prop_oneof!["a", "b", "/", "ab", "é"], 0..8)
            .prop_map(|parts| format!("/{}", parts.concat()))
    }

    fn arb_pattern() -> impl Strategy<Value = Pattern> {
        (
            prop_oneof![Just(None), Just(Some(ALICE)), Just(Some(BOB))],
            arb_path(),
            any::<bool>(),
        )
            .prop_map(|(user, path, star)| {
                let text = format!(
                    "{}{path}{}",
                    user.unwrap_or("*"),
                    if star { "*" } else { "" }
                );
                Pattern::parse(&text).expect("generated patterns are valid")
            })
    }

    proptest! {
        /// The tables agree with the definition (`Pattern::matches`) on every key.
        #[test]
        fn tables_agree_with_the_definition(
            patterns in proptest::collection::vec(arb_pattern(), 0..40),
            keys in proptest::collection::vec(
                (prop_oneof![Just(ALICE), Just(BOB)], arb_path()), 1..20),
        ) {
            let mut t = SubscriptionTables::new();
            for (id, pattern) in patterns.iter().enumerate() {
                t.insert(pattern, id as SubscriberId % 7);
            }
            for (user, path) in keys {
                let k = key(user, &path);
                let mut expected: Vec<SubscriberId> = patterns
                    .iter()
                    .enumerate()
                    .filter(|(_, pattern)| pattern.matches(&k))
                    .map(|(id, _)| id as SubscriberId % 7)
                    .collect();
                expected.sort_unstable();
                expected.dedup();
                prop_assert_eq!(matched(&t, &k), expected.clone());
                prop_assert_eq!(t.matches_any(&k), !expected.is_empty());
                let set = PatternSet::new(patterns.iter().cloned());
                prop_assert_eq!(set.matches(&k), !expected.is_empty());
            }
        }

        /// Removing leaves exactly what remains, and removing everything leaves nothing.
        #[test]
        fn removal_agrees_with_the_definition(
            patterns in proptest::collection::vec(arb_pattern(), 0..60),
            keys in proptest::collection::vec(
                (prop_oneof![Just(ALICE), Just(BOB)], arb_path()), 1..20),
        ) {
            let mut t = SubscriptionTables::new();
            for (id, pattern) in patterns.iter().enumerate() {
                t.insert(pattern, id as SubscriberId % 5);
            }
            let (gone, kept): (Vec<_>, Vec<_>) =
                patterns.iter().enumerate().partition(|(id, _)| id % 5 < 2);
            for (id, pattern) in &gone {
                t.remove(pattern, *id as SubscriberId % 5);
            }
            for (user, path) in keys {
                let k = key(user, &path);
                let mut expected: Vec<SubscriberId> = kept
                    .iter()
                    .filter(|(_, pattern)| pattern.matches(&k))
                    .map(|(id, _)| *id as SubscriberId % 5)
                    .collect();
                expected.sort_unstable();
                expected.dedup();
                prop_assert_eq!(matched(&t, &k), expected);
            }
            for (id, pattern) in &kept {
                t.remove(pattern, *id as SubscriberId % 5);
            }
            prop_assert!(t.is_empty());
            prop_assert_eq!(t.user_count(), 0);
        }
    }
}
