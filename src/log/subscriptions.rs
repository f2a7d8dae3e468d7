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

/// The subscribers of one table entry, sorted: iterating them is what fan-out does most.
type Subscribers = Vec<SubscriberId>;

/// One table: key -> subscribers, ordered by key.
type Table = BTreeMap<Box<[u8]>, Subscribers>;

/// The exact paths and the path prefixes of one user (or of "any user"), each ordered by path.
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

    /// Visit the subscribers of every entry that `path` matches.
    fn for_each_match(&self, path: &[u8], visit: &mut impl FnMut(&Subscribers)) {
        if let Some(subscribers) = self.exact.get(path) {
            visit(subscribers);
        }
        for_each_prefix_of(&self.prefix, path, visit);
    }
}

/// A user's z-base32 key, the fixed-length first part of every event key.
type UserKey = [u8; USER_KEY_LEN];

/// Every live subscription.
///
/// An event key is `<user><path>`, and the user part has a fixed length, so the per-user
/// tables hang off a hash index by user: one probe finds the only user whose patterns can
/// match. Below it, and for "any user", exact paths and prefixes are kept apart, each in a
/// table ordered by path, where an event's matches are found by looking its path up. The cost
/// of an event is one probe and a few ordered lookups in the tables of its own user and of
/// "any user", whatever the number of other users' subscriptions.
#[derive(Debug, Default)]
pub struct SubscriptionTables {
    users: HashMap<UserKey, PathTables>,
    any_user: PathTables,
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
        let tables = match user {
            Some(user) => self.users.entry(user).or_default(),
            None => &mut self.any_user,
        };
        let table = tables.table_mut(wildcard);
        let subscribers = match table.get_mut(path) {
            Some(subscribers) => subscribers,
            None => table.entry(path.into()).or_default(),
        };
        if let Err(at) = subscribers.binary_search(&subscriber) {
            subscribers.insert(at, subscriber);
            self.len += 1;
        }
    }

    /// Remove `subscriber` from `pattern`; entries and user tables go with their last one.
    pub fn remove(&mut self, pattern: &Pattern, subscriber: SubscriberId) {
        let (user, wildcard, path) = placement(pattern);
        let tables = match user {
            Some(user) => match self.users.get_mut(&user) {
                Some(tables) => tables,
                None => return,
            },
            None => &mut self.any_user,
        };
        let table = tables.table_mut(wildcard);
        let Some(subscribers) = table.get_mut(path) else {
            return;
        };
        let Ok(at) = subscribers.binary_search(&subscriber) else {
            return;
        };
        subscribers.remove(at);
        if subscribers.is_empty() {
            table.remove(path);
        }
        self.len -= 1;
        if let Some(user) = user {
            if self.users.get(&user).is_some_and(PathTables::is_empty) {
                self.users.remove(&user);
            }
        }
    }

    /// Visit the subscribers of every entry that `key` (`<z32><path>`) matches.
    fn for_each_match(&self, key: &str, visit: &mut impl FnMut(&Subscribers)) {
        let bytes = key.as_bytes();
        let (Some(user), Some(path)) = (bytes.get(..USER_KEY_LEN), bytes.get(USER_KEY_LEN..))
        else {
            return;
        };
        if let Some(tables) = UserKey::try_from(user)
            .ok()
            .and_then(|user| self.users.get(&user))
        {
            tables.for_each_match(path, visit);
        }
        self.any_user.for_each_match(path, visit);
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

    /// Whether `key` matches any subscription at all (a connection's own pattern set uses it
    /// to filter what it replays from the store).
    pub fn matches_any(&self, key: &str) -> bool {
        let mut found = false;
        self.for_each_match(key, &mut |_| found = true);
        found
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
fn for_each_prefix_of(table: &Table, key: &[u8], visit: &mut impl FnMut(&Subscribers)) {
    let mut upper: Bound<&[u8]> = Bound::Included(key);
    loop {
        let Some((entry, subscribers)) = table
            .range::<[u8], _>((Bound::Unbounded, upper))
            .next_back()
        else {
            return;
        };
        let shorter = if key.starts_with(entry) {
            visit(subscribers);
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

/// The patterns of one connection, as a small table of its own: replay from the store filters
/// by it without touching the shared tables.
#[derive(Debug, Default)]
pub struct PatternSet {
    patterns: Vec<Pattern>,
    table: SubscriptionTables,
}

impl PatternSet {
    /// Build from patterns; duplicates are kept once.
    pub fn new(patterns: impl IntoIterator<Item = Pattern>) -> Self {
        let mut patterns: Vec<Pattern> = patterns.into_iter().collect();
        patterns.sort();
        patterns.dedup();
        let mut table = SubscriptionTables::new();
        for pattern in &patterns {
            table.insert(pattern, 0);
        }
        PatternSet { patterns, table }
    }

    pub fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }

    pub fn matches(&self, key: &str) -> bool {
        self.table.matches_any(key)
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
            }
        }
    }
}
