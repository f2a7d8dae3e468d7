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
//! A directory's entry holds nothing: it is made with the directory's first entry and removed
//! when a delete leaves the directory's range of entries empty, so a directory exists exactly
//! while something is stored below it, and writing a file into an existing directory touches
//! only that file's entry. The root, `/pub/`, has no entry of its own.

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

/// What a directory's entry holds: nothing. The entry only says the directory exists.
const DIRECTORY: &[u8] = &[];

/// Make the directories of a new file at `path` that do not exist yet, from its parent up.
/// A file in an existing directory writes nothing here: one existence check, no count to
/// bump, so a PUT dirties no page of the tree but its own entry's.
pub fn link(
    tree: &Database<Bytes, Bytes>,
    txn: &mut RwTxn,
    user: &str,
    path: &str,
) -> heed::Result<()> {
    let mut dir = split(path).0;
    while !is_root(dir) {
        let key = entry_key(user, dir);
        if tree.get(txn, &key)?.is_some() {
            return Ok(());
        }
        tree.put(txn, &key, DIRECTORY)?;
        dir = split(dir).0;
    }
    Ok(())
}

/// After the entry of `path` was deleted: remove the directories it leaves empty, from its
/// parent up. Whether a directory is empty is one seek into its range of entries.
pub fn unlink(
    tree: &Database<Bytes, Bytes>,
    txn: &mut RwTxn,
    user: &str,
    path: &str,
) -> heed::Result<()> {
    let mut dir = split(path).0;
    while !is_root(dir) {
        let prefix = dir_prefix(user, dir);
        if tree
            .prefix_iter(txn, &prefix)?
            .next()
            .transpose()?
            .is_some()
        {
            return Ok(());
        }
        tree.delete(txn, &entry_key(user, dir))?;
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

    /// A directory exists while something is below it: made by its first entry, kept while
    /// any is left, removed (with the parents it empties) by the last delete.
    #[test]
    fn directories_live_exactly_as_long_as_their_entries() {
        let dir = tempfile::tempdir().expect("temp dir");
        // SAFETY: a fresh environment in a temp dir, opened once.
        let env = unsafe {
            heed::EnvOpenOptions::new()
                .map_size(1 << 20)
                .max_dbs(1)
                .open(dir.path())
        }
        .expect("env");
        let mut txn = env.write_txn().expect("txn");
        let tree: Database<Bytes, Bytes> = env.create_database(&mut txn, Some("t")).expect("db");
        let has =
            |txn: &RwTxn, path: &str| tree.get(txn, &entry_key(USER, path)).unwrap().is_some();
        for path in ["/pub/a/b/x", "/pub/a/b/y", "/pub/a/z"] {
            tree.put(&mut txn, &entry_key(USER, path), b"file").unwrap();
            link(&tree, &mut txn, USER, path).unwrap();
        }
        assert!(has(&txn, "/pub/a/") && has(&txn, "/pub/a/b/"));
        let remove = |txn: &mut RwTxn, path: &str| {
            assert!(tree.delete(txn, &entry_key(USER, path)).unwrap());
            unlink(&tree, txn, USER, path).unwrap();
        };
        remove(&mut txn, "/pub/a/b/x");
        assert!(has(&txn, "/pub/a/b/"), "y is still there");
        remove(&mut txn, "/pub/a/b/y");
        assert!(
            !has(&txn, "/pub/a/b/") && has(&txn, "/pub/a/"),
            "z is still in a/"
        );
        remove(&mut txn, "/pub/a/z");
        assert!(!has(&txn, "/pub/a/"));
        assert_eq!(tree.len(&txn).unwrap(), 0, "nothing is left");
    }
}
