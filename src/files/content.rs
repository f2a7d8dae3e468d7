//! File content on its way in and out.
//!
//! In: a request body is received, hashed and counted as it streams, into memory while small
//! and into a spool file under `<data>/tmp` once large, before the writer commits it. The LMDB
//! write transaction therefore never waits on the network.
//! Out: content is read back one chunk per read transaction, so a slow reader holds no
//! snapshot open and a large file never sits whole in memory.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::io::AsyncWriteExt;

use super::tables::{FileMeta, CHUNK_SIZE};
use super::{Files, FilesError};

type Result<T, E = FilesError> = std::result::Result<T, E>;

/// Bodies up to this size stay in memory; larger ones are spooled to disk.
pub const MEMORY_SPOOL_LIMIT: usize = 1 << 20;
/// How much of the start of a body is kept for content-type sniffing.
pub const HEAD_LEN: usize = 512;

/// A bound on the bytes of bodies held in memory at once. A PUT takes its share before it
/// reads its body (what the body can hold in memory: its declared length up to
/// `MEMORY_SPOOL_LIMIT`, beyond which it goes to a spool file) and gives it back once its
/// write is answered, so bodies queued for the writer never hold more than the budget.
#[derive(Debug, Clone)]
pub struct InFlight {
    /// One permit per KiB.
    permits: Arc<tokio::sync::Semaphore>,
    budget_kib: u32,
    /// The most KiB ever taken at once.
    peak_kib: Arc<AtomicU32>,
}

/// A share of the budget, given back when dropped.
#[derive(Debug)]
pub struct Share {
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl InFlight {
    pub fn new(budget_bytes: u64) -> InFlight {
        let budget_kib = u32::try_from(budget_bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .clamp(1, tokio::sync::Semaphore::MAX_PERMITS as u32);
        InFlight {
            permits: Arc::new(tokio::sync::Semaphore::new(budget_kib as usize)),
            budget_kib,
            peak_kib: Arc::new(AtomicU32::new(0)),
        }
    }

    /// What a body declared `length` (or none) holds in memory at most, in KiB, within the
    /// budget (a body alone larger than the whole budget takes all of it).
    fn share_of(&self, length: Option<u64>) -> u32 {
        let memory = length
            .unwrap_or(MEMORY_SPOOL_LIMIT as u64)
            .min(MEMORY_SPOOL_LIMIT as u64);
        (memory.div_ceil(1024).max(1) as u32).min(self.budget_kib)
    }

    /// Wait for the share of a body of `length`.
    pub async fn take(&self, length: Option<u64>) -> Share {
        let kib = self.share_of(length);
        // The semaphore is never closed, so this only waits.
        let permit = Arc::clone(&self.permits).acquire_many_owned(kib).await.ok();
        let taken = self.budget_kib - self.permits.available_permits() as u32;
        self.peak_kib.fetch_max(taken, Ordering::Relaxed);
        Share { _permit: permit }
    }

    /// The most bytes of bodies held at once so far (as shares of the budget).
    pub fn peak_bytes(&self) -> u64 {
        u64::from(self.peak_kib.load(Ordering::Relaxed)) * 1024
    }
}

/// A received body, waiting to be committed.
#[derive(Debug)]
pub enum Spooled {
    Memory(Bytes),
    File(tempfile::NamedTempFile),
}

/// A body received in full: where it is, and what it is.
#[derive(Debug)]
pub struct Received {
    pub body: Spooled,
    pub hash: [u8; 32],
    pub size: u64,
    /// The first bytes, for content-type detection.
    pub head: Vec<u8>,
}

/// Where spool files go; created on demand.
pub fn spool_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("tmp")
}

/// Receive a body of at most `max_size` bytes. A larger body is refused as soon as it crosses
/// the limit, without reading the rest.
pub async fn receive<S, E>(mut body: S, max_size: u64, spool_dir: &Path) -> Result<Received>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut hasher = blake3::Hasher::new();
    let mut size: u64 = 0;
    let mut memory: Vec<u8> = Vec::new();
    let mut head: Vec<u8> = Vec::new();
    let mut file: Option<(tempfile::NamedTempFile, tokio::fs::File)> = None;
    while let Some(frame) = body.next().await {
        let data =
            frame.map_err(|err| FilesError::Invalid(format!("reading the body failed: {err}")))?;
        size += data.len() as u64;
        if size > max_size {
            return Err(FilesError::TooLarge(format!(
                "the body is larger than the {max_size} bytes this server accepts"
            )));
        }
        hasher.update(&data);
        if head.len() < HEAD_LEN {
            let take = (HEAD_LEN - head.len()).min(data.len());
            head.extend_from_slice(&data[..take]);
        }
        match &mut file {
            Some((_, writer)) => writer.write_all(&data).await.map_err(FilesError::Spool)?,
            None if memory.len() + data.len() <= MEMORY_SPOOL_LIMIT => {
                memory.extend_from_slice(&data)
            }
            None => {
                let (named, writer) = spool_file(spool_dir, &memory, &data).await?;
                memory = Vec::new();
                file = Some((named, writer));
            }
        }
    }
    let body = match file {
        Some((named, mut writer)) => {
            writer.flush().await.map_err(FilesError::Spool)?;
            Spooled::File(named)
        }
        None => Spooled::Memory(Bytes::from(memory)),
    };
    Ok(Received {
        body,
        hash: *hasher.finalize().as_bytes(),
        size,
        head,
    })
}

/// Start a spool file under `dir` with what memory held and the piece that overflowed it.
async fn spool_file(
    dir: &Path,
    memory: &[u8],
    data: &[u8],
) -> Result<(tempfile::NamedTempFile, tokio::fs::File)> {
    let spool = async {
        tokio::fs::create_dir_all(dir).await?;
        let named = tempfile::NamedTempFile::new_in(dir)?;
        let mut writer = tokio::fs::File::from_std(named.as_file().try_clone()?);
        writer.write_all(memory).await?;
        writer.write_all(data).await?;
        Ok::<_, std::io::Error>((named, writer))
    };
    spool.await.map_err(|err| {
        FilesError::Spool(std::io::Error::new(
            err.kind(),
            format!("{}: {err}", dir.display()),
        ))
    })
}

impl Spooled {
    /// Hand the content to `put_chunk` in `CHUNK_SIZE` pieces, in order.
    pub(crate) fn for_each_chunk(
        &self,
        mut put_chunk: impl FnMut(u32, &[u8]) -> Result<()>,
    ) -> Result<()> {
        match self {
            Spooled::Memory(bytes) => {
                for (index, chunk) in bytes.chunks(CHUNK_SIZE).enumerate() {
                    put_chunk(index as u32, chunk)?;
                }
            }
            Spooled::File(named) => {
                let mut file = named.reopen().map_err(FilesError::Spool)?;
                let mut buf = vec![0u8; CHUNK_SIZE];
                let mut index = 0u32;
                loop {
                    let filled = read_full(&mut file, &mut buf).map_err(FilesError::Spool)?;
                    if filled == 0 {
                        break;
                    }
                    put_chunk(index, &buf[..filled])?;
                    index += 1;
                    if filled < CHUNK_SIZE {
                        break;
                    }
                }
            }
        }
        Ok(())
    }
}

fn read_full(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// The content of a file as a stream of chunks. If the file is replaced or deleted while it is
/// being read, the stream ends with an error rather than mixing two versions. Each chunk is
/// read on the blocking pool, in a read transaction of its own, so the runtime's workers never
/// wait on LMDB and a slow reader holds no snapshot open.
pub fn read_stream(files: Files, meta: FileMeta) -> impl Stream<Item = std::io::Result<Bytes>> {
    let content_seq = meta.content_seq;
    futures_util::stream::iter(0..meta.chunk_count()).then(move |index| {
        let files = files.clone();
        async move {
            let read = tokio::task::spawn_blocking(move || files.chunk(content_seq, index)).await;
            match read {
                Ok(Ok(Some(bytes))) => Ok(bytes),
                Ok(Ok(None)) => Err(std::io::Error::other(
                    "the file changed while it was being read",
                )),
                Ok(Err(err)) => Err(std::io::Error::other(err.to_string())),
                Err(err) => Err(std::io::Error::other(format!(
                    "reading the file failed: {err}"
                ))),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    #[tokio::test]
    async fn bodies_in_flight_stay_within_the_budget() {
        let budget = InFlight::new(3 << 20);
        // Two bodies of 1 MiB and one of unknown length (counted as 1 MiB) fit...
        let a = budget.take(Some(1 << 20)).await;
        let b = budget.take(Some(5 << 20)).await;
        let c = budget.take(None).await;
        // ...a fourth waits until one of them is answered.
        let mut d = Box::pin(budget.take(Some(10)));
        assert!((&mut d).now_or_never().is_none(), "over the budget: waits");
        drop(b);
        let d = d.now_or_never().expect("room again");
        assert_eq!(budget.peak_bytes(), 3 << 20);
        drop((a, c, d));
        // A budget smaller than one body still lets that body through, alone.
        let small = InFlight::new(1000);
        let only = small.take(Some(1 << 20)).await;
        assert!(Box::pin(small.take(Some(1))).now_or_never().is_none());
        drop(only);
        assert!(Box::pin(small.take(Some(1))).now_or_never().is_some());
    }
}
