//! The file tree's keys: every file and every directory is an entry of its parent directory,
//! keyed `<user z32><dir id><name>`, where the dir id is the first 16 bytes of the BLAKE3 of
//! the parent's path (`/pub/a/`) and a directory's name ends with `/`.
//!
//! LMDB keys are at most 511 bytes and paths up to 4,096. A key made of the parent's id and one
//! name (at most 255 bytes) always fits, whatever the depth, and the entries of a directory
//! still sort by name, which is the order of their full paths: a subdirectory `a/` sorts where
//! its files would (`a.txt` < `a/...` < `a0`). So a shallow listing is one range of keys and a
//! deep one a depth-first walk of such ranges, both in path order at any path length.
//!
//! A directory entry holds the number of its direct entries (u64 big-endian): it is made with
//! its first entry and removed with its last, so a directory exists exactly while something is
//! stored below it. The root, `/pub/`, has no entry of its own.

use heed::types::Bytes;
use heed::{Database, RwTxn};

use crate::path::PUBLIC_ROOT;

/// Bytes of a directory's id in a key.
pub const DIR_ID_LEN: usize = 16;

/// `/pub/a/b.txt` -> (`/pub/a/`, `b.txt`); `/pub/a/` -> (`/pub/`, `a/`).
pub fn split(path: &str) -> (&str, &str) {
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    match trimmed.rfind('/') {
        Some(slash) => path.split_at(slash + 1),
        None => ("", path),
    }
}

/// Where the entries of `dir` (ending with `/`) start: `<user><dir id>`.
pub fn dir_prefix(user: &str, dir: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(user.len() + DIR_ID_LEN + 64);
    key.extend_from_slice(user.as_bytes());
    key.extend_from_slice(&blake3::hash(dir.as_bytes()).as_bytes()[..DIR_ID_LEN]);
    key
}

/// The key of the entry for `path`: a file, or a directory when `path` ends with `/`.
pub fn entry_key(user: &str, path: &str) -> Vec<u8> {
    let (dir, name) = split(path);
    let mut key = dir_prefix(user, dir);
    key.extend_from_slice(name.as_bytes());
    key
}

fn is_root(dir: &str) -> bool {
    dir.len() <= PUBLIC_ROOT.len()
}

fn count(bytes: &[u8]) -> heed::Result<u64> {
    let raw: [u8; 8] = bytes.try_into().map_err(|_| {
        heed::Error::Decoding(
            format!(
                "a directory entry holds 8 bytes (its entry count), not {}",
                bytes.len()
            )
            .into(),
        )
    })?;
    Ok(u64::from_be_bytes(raw))
}

/// Count a new file at `path` in its directory, making the directories that did not exist yet.
pub fn link(
    tree: &Database<Bytes, Bytes>,
    txn: &mut RwTxn,
    user: &str,
    path: &str,
) -> heed::Result<()> {
    recount(tree, txn, user, path, true)
}

/// Uncount the file at `path` (its entry already deleted), removing the directories it leaves
/// empty.
pub fn unlink(
    tree: &Database<Bytes, Bytes>,
    txn: &mut RwTxn,
    user: &str,
    path: &str,
) -> heed::Result<()> {
    recount(tree, txn, user, path, false)
}

/// One entry more (or fewer) in `path`'s directory. A directory that this makes (0 -> 1) or
/// empties (1 -> 0) is itself an entry added to (or removed from) its parent, and so on up.
fn recount(
    tree: &Database<Bytes, Bytes>,
    txn: &mut RwTxn,
    user: &str,
    path: &str,
    add: bool,
) -> heed::Result<()> {
    let mut dir = split(path).0;
    while !is_root(dir) {
        let key = entry_key(user, dir);
        let entries = tree.get(txn, &key)?.map(count).transpose()?.unwrap_or(0);
        let now = match (add, entries) {
            (true, n) => n + 1,
            (false, 0) => {
                return Err(heed::Error::Decoding(
                    format!("{path} was stored without an entry for its directory {dir}").into(),
                ))
            }
            (false, n) => n - 1,
        };
        if now == 0 {
            tree.delete(txn, &key)?;
        } else {
            tree.put(txn, &key, &now.to_be_bytes())?;
        }
        // The directory existed before and still does: its parent is unchanged.
        if entries > 0 && now > 0 {
            return Ok(());
        }
        dir = split(dir).0;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const USER: &str = "o1gg96ewuojmopcjbz8895478wdtxtzzuxnfjjz8o8e77csa1ngo";

    #[test]
    fn splits_into_parent_and_name() {
        assert_eq!(split("/pub/a/b.txt"), ("/pub/a/", "b.txt"));
        assert_eq!(split("/pub/a/"), ("/pub/", "a/"));
        assert_eq!(split("/pub/"), ("/", "pub/"));
        assert_eq!(split("x"), ("", "x"));
    }

    #[test]
    fn keys_fit_lmdb_at_any_depth_and_sort_like_paths() {
        let deep = format!("/pub/{}/{}/x.json", "a".repeat(255), "b".repeat(255));
        let mut path = String::from("/pub");
        while path.len() + 256 < crate::path::MAX_PATH_BYTES {
            path.push('/');
            path.push_str(&"c".repeat(255));
        }
        for p in [deep.as_str(), path.as_str(), &format!("{path}/")] {
            assert!(entry_key(USER, p).len() <= USER.len() + DIR_ID_LEN + 256);
        }
        // Within a directory: a file, a subdirectory and a sibling sort as their paths do.
        let keys = ["/pub/d/a.txt", "/pub/d/a/", "/pub/d/a0"].map(|p| entry_key(USER, p));
        assert!(keys[0] < keys[1] && keys[1] < keys[2]);
    }
}
