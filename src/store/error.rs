//! What can go wrong below every layer: LMDB, the disk, a record that does not decode, a
//! writer that is gone. Each layer above wraps `StoreError` in its own error, and only `http/`
//! turns it into a status.

use std::io::ErrorKind;
use std::sync::Arc;

/// A failure of the store itself.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// LMDB refused (other than for space).
    #[error("storage failure: {0}")]
    Lmdb(heed::Error),
    /// The file system refused (other than for space).
    #[error("i/o failure: {0}")]
    Io(std::io::Error),
    /// No room: LMDB's map is full (`MDB_MAP_FULL`), or the disk is (`ENOSPC`, `EDQUOT`).
    #[error("the store is full: {0}")]
    Full(String),
    /// A stored record does not decode: the store is damaged or from an unknown version.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// A record refused before it was written (an event key without a user key).
    #[error("invalid record: {0}")]
    Invalid(String),
    /// The store's layout is not one this build can use (too new, a table missing).
    #[error("{0}")]
    Schema(String),
    /// The writer is gone (the server is stopping): nothing was written.
    #[error("{0}")]
    Unavailable(String),
    /// A group commit failed: every write of the batch gets this, and none of them landed.
    #[error("the write could not be committed: {0}")]
    Batch(Arc<StoreError>),
}

impl StoreError {
    /// Whether more room (a larger map, a disk with space) would have let this succeed.
    pub fn is_full(&self) -> bool {
        match self {
            StoreError::Full(_) => true,
            StoreError::Batch(inner) => inner.is_full(),
            _ => false,
        }
    }
}

/// Whether an I/O error says the disk (or the user's disk quota) is full.
pub fn is_disk_full(err: &std::io::Error) -> bool {
    matches!(
        err.kind(),
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded
    )
}

impl From<heed::Error> for StoreError {
    fn from(err: heed::Error) -> Self {
        match err {
            heed::Error::Mdb(heed::MdbError::MapFull) => StoreError::Full(err.to_string()),
            // LMDB passes system errors through as their errno.
            heed::Error::Mdb(heed::MdbError::Other(code))
                if is_disk_full(&std::io::Error::from_raw_os_error(code)) =>
            {
                StoreError::Full(err.to_string())
            }
            heed::Error::Io(io) => StoreError::from(io),
            heed::Error::Decoding(_) | heed::Error::Encoding(_) => {
                StoreError::Corrupt(err.to_string())
            }
            other => StoreError::Lmdb(other),
        }
    }
}

impl From<std::io::Error> for StoreError {
    fn from(err: std::io::Error) -> Self {
        if is_disk_full(&err) {
            StoreError::Full(err.to_string())
        } else {
            StoreError::Io(err)
        }
    }
}

impl From<postcard::Error> for StoreError {
    fn from(err: postcard::Error) -> Self {
        StoreError::Corrupt(err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENOSPC: i32 = 28;
    const EIO: i32 = 5;

    #[test]
    fn full_is_a_full_map_or_a_full_disk_and_nothing_else() {
        let map_full = StoreError::from(heed::Error::Mdb(heed::MdbError::MapFull));
        assert!(map_full.is_full(), "{map_full}");
        let enospc = StoreError::from(heed::Error::Mdb(heed::MdbError::Other(ENOSPC)));
        assert!(enospc.is_full(), "{enospc}");
        let io = StoreError::from(std::io::Error::from_raw_os_error(ENOSPC));
        assert!(io.is_full(), "{io}");
        let heed_io = StoreError::from(heed::Error::Io(std::io::Error::from_raw_os_error(ENOSPC)));
        assert!(heed_io.is_full(), "{heed_io}");
        assert!(StoreError::Batch(Arc::new(map_full)).is_full());

        let eio = StoreError::from(heed::Error::Mdb(heed::MdbError::Other(EIO)));
        assert!(!eio.is_full());
        assert!(!eio.to_string().contains("corrupt"), "{eio}");
        let io = StoreError::from(std::io::Error::from_raw_os_error(EIO));
        assert!(matches!(io, StoreError::Io(_)), "{io}");
    }
}
