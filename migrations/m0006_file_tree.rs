//! Version 6: files move into the file tree, keyed by their parent directory.
//!
//! Up to version 5 a file's key was `<user><path>`, and a key longer than LMDB's 511 bytes was
//! cut and hashed: past that cut, every key counted as "under" every directory, so long paths
//! got false 409s and interleaved listings. The tree (see `files::tree`) keys each entry by its
//! parent directory's id and its own name, which fits at any depth and sorts in path order.
//! Every file record moves over unchanged (it holds its full path), the directory entries are
//! made in the same pass, and the old `files` table is emptied, all in this migration's
//! one transaction.

use heed::types::Bytes;
use heed::RwTxn;

use crate::files::tables::{names, FileMeta};
use crate::files::tree;
use crate::keys::USER_KEY_LEN;
use crate::store::migrate::Migration;
use crate::store::Env;

pub const MIGRATION: Migration = Migration {
    version: 6,
    name: "file tree: files keyed by parent directory",
    apply,
};

/// Files moved per pass: bounds the memory a large store needs here.
const PASS: usize = 4096;

fn apply(env: &Env, txn: &mut RwTxn) -> heed::Result<()> {
    let file_tree = env.create_database::<Bytes, Bytes>(txn, Some(names::FILE_TREE))?;
    let Some(files) = env.open_database::<Bytes, Bytes>(txn, Some(names::FILES))? else {
        return Err(decoding("the store has no files table".into()));
    };
    let mut after: Option<Vec<u8>> = None;
    loop {
        let pass: Vec<(Vec<u8>, Vec<u8>)> = match &after {
            None => files
                .iter(txn)?
                .take(PASS)
                .map(owned)
                .collect::<heed::Result<_>>()?,
            Some(key) => {
                let range = (
                    std::ops::Bound::Excluded(key.as_slice()),
                    std::ops::Bound::Unbounded,
                );
                files
                    .range(txn, &range)?
                    .take(PASS)
                    .map(owned)
                    .collect::<heed::Result<_>>()?
            }
        };
        let Some((last, _)) = pass.last() else {
            break;
        };
        after = Some(last.clone());
        for (key, value) in pass {
            let user = key
                .get(..USER_KEY_LEN)
                .and_then(|user| std::str::from_utf8(user).ok())
                .ok_or_else(|| decoding(format!("a file key {key:?} has no user key")))?;
            let meta: FileMeta = postcard::from_bytes(&value)
                .map_err(|err| decoding(format!("the file record of {key:?}: {err}")))?;
            file_tree.put(txn, &tree::entry_key(user, &meta.path), &value)?;
            tree::link(&file_tree, txn, user, &meta.path)?;
        }
    }
    // Emptied rather than dropped: the heed our pkarr pins (0.22.0) cannot drop a database.
    // An empty table costs one entry in LMDB's catalogue and nothing else.
    files.clear(txn)
}

fn owned(entry: heed::Result<(&[u8], &[u8])>) -> heed::Result<(Vec<u8>, Vec<u8>)> {
    entry.map(|(key, value)| (key.to_vec(), value.to_vec()))
}

fn decoding(message: String) -> heed::Error {
    heed::Error::Decoding(message.into())
}
