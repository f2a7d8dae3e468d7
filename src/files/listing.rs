//! Directory listings: the paths under a directory, in path order, a page at a time.
//!
//! A directory's entries are one key range (see `tree`), in name order, which is path order.
//! A shallow listing reads that range alone: a subdirectory is one entry, however much it
//! holds. A deep listing walks the tree depth first, one range per directory on the way down.
//! The cursor is a seek, not a skip: a deep page costs what it returns (and the directories it
//! passes through), never what comes before it.

use std::ops::Bound;

use heed::RoTxn;

use super::tree::dir_prefix;
use super::Files;
use crate::store::StoreError;

/// What a directory listing asks for.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    pub limit: usize,
    /// List after this path (exclusive). A cursor naming a directory (`.../sub/`) skips what
    /// is below it as well.
    pub cursor: Option<String>,
    pub reverse: bool,
    /// Only the directory's direct children; subdirectories once each, ending with `/`.
    pub shallow: bool,
}

type Entries<'t> = Box<dyn Iterator<Item = heed::Result<(&'t [u8], &'t [u8])>> + 't>;

/// One directory being read: its path, where names start in its keys, and its range.
struct Frame<'t> {
    dir: String,
    prefix_len: usize,
    entries: Entries<'t>,
}

impl Files {
    /// The paths under `dir` (which ends with `/`), in path order, as listing asks. A cursor
    /// that is not under `dir` is ignored.
    pub fn list(
        &self,
        user: &str,
        dir: &str,
        options: &ListOptions,
    ) -> Result<Vec<String>, StoreError> {
        let txn = self.env.read_txn()?;
        let after = options
            .cursor
            .as_deref()
            .and_then(|cursor| cursor.strip_prefix(dir))
            .filter(|rest| !rest.is_empty());
        let mut stack = Vec::new();
        match after {
            // The cursor's own directory first: its name, or the subdirectory it is in.
            Some(rest) if options.shallow => {
                let name = rest.find('/').map_or(rest, |slash| &rest[..=slash]);
                stack.push(self.frame(&txn, user, dir, Some(name), options.reverse)?);
            }
            // Deep: resume in each directory on the cursor's way down, deepest on top.
            Some(rest) => {
                let mut current = dir.to_string();
                let mut segments = rest.split('/').peekable();
                while let Some(segment) = segments.next() {
                    if segments.peek().is_some() {
                        let name = format!("{segment}/");
                        stack.push(self.frame(
                            &txn,
                            user,
                            &current,
                            Some(&name),
                            options.reverse,
                        )?);
                        current.push_str(&name);
                    } else if !segment.is_empty() {
                        stack.push(self.frame(
                            &txn,
                            user,
                            &current,
                            Some(segment),
                            options.reverse,
                        )?);
                    }
                }
            }
            None => stack.push(self.frame(&txn, user, dir, None, options.reverse)?),
        }
        let mut out = Vec::new();
        while out.len() < options.limit {
            let Some(top) = stack.last_mut() else {
                break;
            };
            let Some(entry) = top.entries.next() else {
                stack.pop();
                continue;
            };
            let (key, _) = entry?;
            let name = key
                .get(top.prefix_len..)
                .and_then(|name| std::str::from_utf8(name).ok())
                .ok_or_else(|| {
                    StoreError::Corrupt(format!("an entry of {} has no UTF-8 name", top.dir))
                })?;
            let path = format!("{}{name}", top.dir);
            if name.ends_with('/') && !options.shallow {
                stack.push(self.frame(&txn, user, &path, None, options.reverse)?);
            } else {
                out.push(path);
            }
        }
        Ok(out)
    }

    /// The entries of `dir`, after (or in reverse, before) the entry `after`, exclusive.
    fn frame<'t>(
        &self,
        txn: &'t RoTxn<'_, heed::WithoutTls>,
        user: &str,
        dir: &str,
        after: Option<&str>,
        reverse: bool,
    ) -> Result<Frame<'t>, StoreError> {
        let prefix = dir_prefix(user, dir);
        let upper = prefix_upper_bound(&prefix);
        let resume = after.map(|name| [prefix.as_slice(), name.as_bytes()].concat());
        let entries: Entries<'t> = match (&resume, reverse) {
            (None, false) => Box::new(self.tables.tree.prefix_iter(txn, &prefix)?),
            (None, true) => Box::new(self.tables.tree.rev_prefix_iter(txn, &prefix)?),
            (Some(resume), false) => {
                let range = (
                    Bound::Excluded(resume.as_slice()),
                    Bound::Excluded(upper.as_slice()),
                );
                Box::new(self.tables.tree.range(txn, &range)?)
            }
            (Some(resume), true) => {
                let range = (
                    Bound::Included(prefix.as_slice()),
                    Bound::Excluded(resume.as_slice()),
                );
                Box::new(self.tables.tree.rev_range(txn, &range)?)
            }
        };
        Ok(Frame {
            dir: dir.to_string(),
            prefix_len: prefix.len(),
            entries,
        })
    }
}

/// The smallest key greater than every key that starts with `prefix` (which starts with a user
/// key, so it is never all 0xFF).
fn prefix_upper_bound(prefix: &[u8]) -> Vec<u8> {
    let mut upper = prefix.to_vec();
    while let Some(last) = upper.pop() {
        if last < u8::MAX {
            upper.push(last + 1);
            break;
        }
    }
    upper
}
