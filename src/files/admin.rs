//! What the admin reads: users and signup tokens a page at a time, and the counts of the
//! status page. Each read is one read transaction; lists are small (users of one server), so
//! a page is cut from the sorted whole rather than from an index per sort order.

use super::tables::{decode, SignupTokenRecord, UserRecord};
use super::Files;
use crate::store::StoreError;

/// Which users a listing keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UserFilter {
    #[default]
    All,
    Enabled,
    Disabled,
}

/// How a user listing is ordered (then by key, so ties keep a stable order).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UserOrder {
    #[default]
    CreatedAt,
    UsedBytes,
}

/// One page of a listing, and the cursor of the next one when there is more.
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<(String, T)>,
    pub next_cursor: Option<String>,
}

/// Totals for the status page and `GET /info`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub users: u64,
    pub disabled_users: u64,
    pub used_bytes: u64,
    pub signup_tokens: u64,
    pub unused_signup_tokens: u64,
}

impl Files {
    /// A page of users after `cursor` (a user key from the previous page), in `order`
    /// (reversed when asked). `Ok(None)` when the cursor names no user.
    pub fn users_page(
        &self,
        filter: UserFilter,
        order: UserOrder,
        reverse: bool,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Option<Page<UserRecord>>, StoreError> {
        let txn = self.env.read_txn()?;
        let mut all = Vec::new();
        for entry in self.tables.users.iter(&txn)? {
            let (key, bytes) = entry?;
            all.push((key.to_string(), decode::<UserRecord>(bytes)?));
        }
        let sort_key = |(key, user): &(String, UserRecord)| {
            let value = match order {
                UserOrder::CreatedAt => user.created_ms,
                UserOrder::UsedBytes => user.used_bytes,
            };
            (value, key.clone())
        };
        let start = match cursor {
            None => None,
            Some(cursor) => match all.iter().find(|(key, _)| key == cursor) {
                None => return Ok(None),
                Some(entry) => Some(sort_key(entry)),
            },
        };
        all.retain(|(_, user)| match filter {
            UserFilter::All => true,
            UserFilter::Enabled => !user.disabled,
            UserFilter::Disabled => user.disabled,
        });
        all.sort_by_key(sort_key);
        if reverse {
            all.reverse();
        }
        if let Some(start) = start {
            all.retain(|entry| {
                let here = sort_key(entry);
                if reverse {
                    here < start
                } else {
                    here > start
                }
            });
        }
        Ok(Some(cut_page(all, limit)))
    }

    /// A page of signup tokens after `cursor`, in token order; `used` keeps only used
    /// (`Some(true)`) or unused (`Some(false)`) ones.
    pub fn signup_tokens_page(
        &self,
        used: Option<bool>,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<SignupTokenRecord>, StoreError> {
        let txn = self.env.read_txn()?;
        let mut items = Vec::new();
        let start = match cursor {
            None => std::ops::Bound::Unbounded,
            Some(cursor) => std::ops::Bound::Excluded(cursor),
        };
        let range = (start, std::ops::Bound::Unbounded);
        for entry in self.tables.signup_tokens.range(&txn, &range)? {
            let (token, bytes) = entry?;
            let record: SignupTokenRecord = decode(bytes)?;
            if used.is_none_or(|used| used == record.used_by.is_some()) {
                items.push((token.to_string(), record));
                if items.len() > limit {
                    break;
                }
            }
        }
        Ok(cut_page(items, limit))
    }

    /// Users, disabled users, bytes stored, signup tokens and unused ones.
    pub fn counts(&self) -> Result<Counts, StoreError> {
        let txn = self.env.read_txn()?;
        let mut counts = Counts::default();
        for entry in self.tables.users.iter(&txn)? {
            let (_, bytes) = entry?;
            let user: UserRecord = decode(bytes)?;
            counts.users += 1;
            counts.disabled_users += u64::from(user.disabled);
            counts.used_bytes += user.used_bytes;
        }
        for entry in self.tables.signup_tokens.iter(&txn)? {
            let (_, bytes) = entry?;
            let token: SignupTokenRecord = decode(bytes)?;
            counts.signup_tokens += 1;
            counts.unused_signup_tokens += u64::from(token.used_by.is_none());
        }
        Ok(counts)
    }
}

/// The first `limit` items, and the last one's key as the next cursor when more follow.
fn cut_page<T>(mut items: Vec<(String, T)>, limit: usize) -> Page<T> {
    let next_cursor = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|(key, _)| key.clone())
    } else {
        None
    };
    Page { items, next_cursor }
}
