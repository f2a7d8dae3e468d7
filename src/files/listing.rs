//! Directory listings: the paths under a directory, in key order, a page at a time.
//!
//! A file's key is `<user><path>`, so a directory is a key range. The cursor is a seek, not a
//! skip: a deep page costs what it returns.

use std::ops::Bound;

use super::tables::{decode, file_key, file_key_prefix, plain_path, FileMeta};
use super::Files;
use crate::store::StoreError;

/// What a directory listing asks for.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    pub limit: usize,
    /// List after this path (exclusive).
    pub cursor: Option<String>,
    pub reverse: bool,
    /// Only the directory's direct children; subdirectories once each, ending with `/`.
    pub shallow: bool,
}

type KeyValue<'t> = (&'t [u8], &'t [u8]);

impl Files {
    /// The paths under `dir` (which ends with `/`), in key order, as listing asks.
    pub fn list(
        &self,
        user: &str,
        dir: &str,
        options: &ListOptions,
    ) -> Result<Vec<String>, StoreError> {
        let txn = self.env.read_txn()?;
        let (prefix, cut) = file_key_prefix(user, dir);
        let upper = prefix_upper_bound(&prefix);
        let cursor_key = options.cursor.as_deref().map(|c| file_key(user, c));
        // A shallow page may end on a subdirectory (`.../sub/`): the next page starts after
        // everything below it, not inside it.
        let skip_dir = match (&cursor_key, &options.cursor) {
            (Some(key), Some(cursor)) if cursor.ends_with('/') => prefix_upper_bound(key),
            _ => None,
        };
        let lower_bound = match (&cursor_key, &skip_dir) {
            (Some(_), Some(after_dir)) if !options.reverse => Bound::Included(after_dir.as_slice()),
            (Some(cursor), None) if !options.reverse => Bound::Excluded(cursor.as_slice()),
            _ => Bound::Included(prefix.as_slice()),
        };
        let upper_bound = match (&cursor_key, &upper) {
            (Some(cursor), _) if options.reverse => Bound::Excluded(cursor.as_slice()),
            (_, Some(upper)) => Bound::Excluded(upper.as_slice()),
            (_, None) => Bound::Unbounded,
        };
        let range = (lower_bound, upper_bound);
        let iter: Box<dyn Iterator<Item = heed::Result<KeyValue<'_>>>> = if options.reverse {
            Box::new(self.tables.files.rev_range(&txn, &range)?)
        } else {
            Box::new(self.tables.files.range(&txn, &range)?)
        };
        let mut out: Vec<String> = Vec::new();
        let mut last_dir: Option<String> = None;
        for entry in iter {
            if out.len() >= options.limit {
                break;
            }
            let (key, value) = entry?;
            if !key.starts_with(&prefix) {
                break;
            }
            let path = match plain_path(key, user.len()) {
                Some(path) if !cut => path.to_string(),
                _ => decode::<FileMeta>(value)?.path,
            };
            if !path.starts_with(dir) {
                continue;
            }
            let entry = if options.shallow {
                match path[dir.len()..].find('/') {
                    Some(slash) => {
                        let sub = path[..dir.len() + slash + 1].to_string();
                        if last_dir.as_deref() == Some(sub.as_str()) {
                            continue;
                        }
                        last_dir = Some(sub.clone());
                        sub
                    }
                    None => path,
                }
            } else {
                path
            };
            out.push(entry);
        }
        Ok(out)
    }
}

/// The smallest key greater than every key that starts with `prefix`.
fn prefix_upper_bound(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut upper = prefix.to_vec();
    while let Some(last) = upper.pop() {
        if last < u8::MAX {
            upper.push(last + 1);
            return Some(upper);
        }
    }
    None
}
