//! The one writer: every change to the store goes through this thread.
//!
//! Requests queue on a channel. The writer takes what has queued up (one request or many),
//! applies each in a nested transaction of one write transaction, and commits once: one fsync
//! for the whole group. A request that fails rolls back its own nested transaction only, so
//! each still gets its own all-or-nothing answer. Sequence numbers are handed out in the order
//! requests are applied, inside the transaction that commits them, so sequence order is commit
//! order. Answers and firehose notifications go out only after the commit is durable.

use std::sync::Arc;
use std::thread::JoinHandle;

use heed::RwTxn;
use tokio::sync::{mpsc, oneshot};

use super::content::Spooled;
use super::schema::{
    chunk_key, decode, encode, file_key, file_key_prefix, meta_keys, now_ms, now_secs,
    BearerRecord, FileMeta, GrantRecord, SignupTokenRecord, Tables, UserRecord,
};
use super::{read_last_seq, Store};
use crate::error::{Error, Result};
use crate::events::{Content, Event, EventKind};

/// The most requests one commit takes: bounds the transaction's size and a batch's latency.
const MAX_BATCH: usize = 1024;
/// How many requests may wait for the writer before submitters wait too.
const QUEUE_DEPTH: usize = 4096;

/// A change to the store.
#[derive(Debug)]
pub enum WriteOp {
    /// Store a file (create or replace), record a PUT event.
    PutFile {
        user: String,
        path: String,
        body: Spooled,
        hash: [u8; 32],
        size: u64,
        content_type: String,
        /// The user's quota in bytes, if any.
        quota: Option<u64>,
    },
    /// Delete a file, record a DEL event.
    DeleteFile {
        user: String,
        path: String,
    },
    /// Create a user and its first session; consumes the auth token and the signup token.
    Signup {
        user: String,
        auth: UsedToken,
        signup_token: Option<String>,
        session_secret: String,
        session: Vec<u8>,
    },
    /// Create a session for an existing user; consumes the auth token.
    Signin {
        user: String,
        auth: UsedToken,
        session_secret: String,
        session: Vec<u8>,
    },
    DeleteSession {
        secret: String,
    },
    MintSignupToken {
        token: String,
    },
    /// Create a user from a signup grant; spends the proof of possession and the signup token.
    /// No grant is stored and no bearer minted: the client signs in next.
    GrantSignup {
        user: String,
        pop: SpentPop,
        signup_token: Option<String>,
    },
    /// Exchange a grant for a bearer: spend the proof, store the grant on its first exchange,
    /// and replace the grant's previous bearer with this one.
    GrantSession {
        grant_id: String,
        grant: GrantRecord,
        pop: SpentPop,
        /// The BLAKE3 of the new bearer token.
        bearer: [u8; 32],
        session: BearerRecord,
    },
    /// Revoke a grant and drop its bearer. Without a proof (signing out with the bearer) an
    /// unknown grant is nothing to do; with one, the grant must exist and be the prover's.
    RevokeGrant {
        grant_id: String,
        proof: Option<RevokeProof>,
    },
}

/// A proof of possession being spent: its `iat` and nonce identify it, as a signature and
/// timestamp identify an AuthToken. A replay carries both unchanged (they are signed).
#[derive(Debug, Clone)]
pub struct SpentPop {
    /// Unix seconds, as signed.
    pub iat: u64,
    pub nonce: String,
}

/// Who asks to revoke a grant by proof: the grant's user and client key must match.
#[derive(Debug, Clone)]
pub struct RevokeProof {
    pub pop: SpentPop,
    pub user: String,
    pub cnf: String,
}

/// An AuthToken being spent: its signature identifies it, its timestamp lets old entries expire.
#[derive(Debug, Clone)]
pub struct UsedToken {
    pub signature: [u8; 64],
    pub timestamp_us: u64,
}

/// What a successful write produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// The change was committed with this sequence number.
    Event(u64),
    Done,
}

/// Receives the events of each commit, in sequence order, after the commit is durable.
pub type CommitListener = Arc<dyn Fn(Vec<Arc<Event>>) + Send + Sync>;

struct Job {
    op: WriteOp,
    reply: oneshot::Sender<Result<Written>>,
}

/// The submitting side of the writer; clone freely.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
}

/// Owns the writer thread; dropping every `Writer` and then calling `join` stops it.
pub struct WriterThread {
    handle: JoinHandle<()>,
}

impl WriterThread {
    /// Wait for the writer to finish what is queued and exit.
    pub fn join(self) {
        if self.handle.join().is_err() {
            tracing::error!("the writer thread panicked");
        }
    }
}

impl Writer {
    /// Start the writer thread over `store`.
    pub fn start(store: Store, on_commit: CommitListener) -> Result<(Writer, WriterThread)> {
        let (jobs, queue) = mpsc::channel(QUEUE_DEPTH);
        let handle = std::thread::Builder::new()
            .name("hearth-writer".into())
            .spawn(move || run(store, queue, on_commit))?;
        Ok((Writer { jobs }, WriterThread { handle }))
    }

    /// Submit a change and wait until it is committed (or refused).
    pub async fn submit(&self, op: WriteOp) -> Result<Written> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { op, reply })
            .await
            .map_err(|_| Error::Unavailable("the server is shutting down".into()))?;
        answer
            .await
            .map_err(|_| Error::Unavailable("the writer stopped before answering".into()))?
    }
}

fn run(store: Store, mut queue: mpsc::Receiver<Job>, on_commit: CommitListener) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = queue.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let jobs = std::mem::take(&mut batch);
        let (results, events) = match commit_batch(&store, &jobs) {
            Ok(done) => done,
            Err(err) => {
                // Nothing of the batch is committed: every request gets the failure.
                let message = err.to_string();
                tracing::error!(error = %message, "group commit failed");
                let status = err.status();
                let results = jobs
                    .iter()
                    .map(|_| Err(same_error(status, &message)))
                    .collect();
                (results, Vec::new())
            }
        };
        if !events.is_empty() {
            on_commit(events);
        }
        for (job, result) in jobs.into_iter().zip(results) {
            // A requester that went away no longer needs its answer.
            let _ = job.reply.send(result);
        }
    }
}

/// Rebuild a batch failure for each request (errors are not `Clone`: they may hold I/O errors).
fn same_error(status: axum::http::StatusCode, message: &str) -> Error {
    if status == axum::http::StatusCode::INSUFFICIENT_STORAGE {
        Error::InsufficientStorage(format!("the store is full: {message}"))
    } else {
        Error::Corrupt(format!("the write could not be committed: {message}"))
    }
}

type BatchOutcome = (Vec<Result<Written>>, Vec<Arc<Event>>);

fn commit_batch(store: &Store, jobs: &[Job]) -> Result<BatchOutcome> {
    let env = store.env();
    let tables = store.tables();
    let mut txn = env.write_txn()?;
    let seq_at_start = read_last_seq(&tables, &txn)?;
    let mut next = seq_at_start;
    let last_seq = &mut next;
    let ts_ms = now_ms();
    let mut results = Vec::with_capacity(jobs.len());
    let mut events = Vec::new();
    for job in jobs {
        let mut nested = env.nested_write_txn(&mut txn)?;
        let seq_before = *last_seq;
        match apply(&tables, &mut nested, &job.op, last_seq, ts_ms) {
            Ok(outcome) => {
                nested.commit()?;
                if let Applied::Event(event) = outcome {
                    results.push(Ok(Written::Event(event.seq)));
                    events.push(Arc::new(event));
                } else {
                    results.push(Ok(Written::Done));
                }
            }
            Err(err) => {
                nested.abort();
                *last_seq = seq_before;
                results.push(Err(err));
            }
        }
    }
    if *last_seq != seq_at_start {
        tables
            .meta
            .put(&mut txn, meta_keys::LAST_SEQ, &last_seq.to_be_bytes())?;
    }
    txn.commit()?;
    Ok((results, events))
}

enum Applied {
    Event(Event),
    Done,
}

fn apply(
    t: &Tables,
    txn: &mut RwTxn,
    op: &WriteOp,
    last_seq: &mut u64,
    ts_ms: u64,
) -> Result<Applied> {
    match op {
        WriteOp::PutFile {
            user,
            path,
            body,
            hash,
            size,
            content_type,
            quota,
        } => {
            let key = file_key(user, path);
            let mut account: UserRecord = match t.users.get(txn, user)? {
                Some(bytes) => decode(bytes)?,
                None => return Err(Error::NotFound(format!("no user {user} on this server"))),
            };
            check_no_collision(t, txn, user, path)?;
            let old: Option<FileMeta> = t.files.get(txn, &key)?.map(decode).transpose()?;
            let old_size = old.as_ref().map_or(0, |m| m.size);
            let used = account.used_bytes.saturating_sub(old_size) + size;
            if let Some(quota) = quota {
                if used > *quota {
                    return Err(Error::InsufficientStorage(format!(
                        "this write would bring {user} to {used} bytes, over the quota of {quota}"
                    )));
                }
            }
            if let Some(old) = &old {
                delete_chunks(t, txn, old)?;
            }
            let seq = *last_seq + 1;
            body.for_each_chunk(|index, chunk| {
                t.chunks.put(txn, &chunk_key(seq, index), chunk)?;
                Ok(())
            })?;
            let meta = FileMeta {
                path: path.clone(),
                size: *size,
                hash: *hash,
                content_type: content_type.clone(),
                modified_ms: ts_ms,
                content_seq: seq,
            };
            t.files.put(txn, &key, &encode(&meta)?)?;
            account.used_bytes = used;
            t.users.put(txn, user, &encode(&account)?)?;
            let event = Event {
                seq,
                kind: EventKind::Put,
                key: format!("{user}{path}"),
                ts_ms,
                content: Some(Content {
                    hash: *hash,
                    size: *size,
                    content_type: content_type.clone(),
                }),
            };
            t.events.put(txn, &seq, &encode(&event)?)?;
            *last_seq = seq;
            Ok(Applied::Event(event))
        }
        WriteOp::DeleteFile { user, path } => {
            let key = file_key(user, path);
            let Some(old) = t
                .files
                .get(txn, &key)?
                .map(decode::<FileMeta>)
                .transpose()?
            else {
                return Err(Error::NotFound(format!("no file at {path}")));
            };
            delete_chunks(t, txn, &old)?;
            t.files.delete(txn, &key)?;
            if let Some(bytes) = t.users.get(txn, user)? {
                let mut account: UserRecord = decode(bytes)?;
                account.used_bytes = account.used_bytes.saturating_sub(old.size);
                t.users.put(txn, user, &encode(&account)?)?;
            }
            let seq = *last_seq + 1;
            let event = Event {
                seq,
                kind: EventKind::Del,
                key: format!("{user}{path}"),
                ts_ms,
                content: None,
            };
            t.events.put(txn, &seq, &encode(&event)?)?;
            *last_seq = seq;
            Ok(Applied::Event(event))
        }
        WriteOp::Signup {
            user,
            auth,
            signup_token,
            session_secret,
            session,
        } => {
            spend_auth_token(t, txn, auth)?;
            create_user(t, txn, user, signup_token.as_deref(), ts_ms)?;
            t.sessions.put(txn, session_secret, session)?;
            Ok(Applied::Done)
        }
        WriteOp::Signin {
            user,
            auth,
            session_secret,
            session,
        } => {
            if t.users.get(txn, user)?.is_none() {
                return Err(Error::NotFound(format!(
                    "no user {user} on this server; sign up first"
                )));
            }
            spend_auth_token(t, txn, auth)?;
            t.sessions.put(txn, session_secret, session)?;
            Ok(Applied::Done)
        }
        WriteOp::DeleteSession { secret } => {
            t.sessions.delete(txn, secret)?;
            Ok(Applied::Done)
        }
        WriteOp::MintSignupToken { token } => {
            let record = SignupTokenRecord {
                created_ms: ts_ms,
                used_by: None,
            };
            t.signup_tokens.put(txn, token, &encode(&record)?)?;
            Ok(Applied::Done)
        }
        WriteOp::GrantSignup {
            user,
            pop,
            signup_token,
        } => {
            spend_pop(t, txn, pop)?;
            create_user(t, txn, user, signup_token.as_deref(), ts_ms)?;
            Ok(Applied::Done)
        }
        WriteOp::GrantSession {
            grant_id,
            grant,
            pop,
            bearer,
            session,
        } => {
            let stored: Option<GrantRecord> =
                t.grants.get(txn, grant_id)?.map(decode).transpose()?;
            if stored.as_ref().is_some_and(|g| g.revoked_s.is_some()) {
                return Err(Error::Unauthorized("Grant has been revoked".into()));
            }
            spend_pop(t, txn, pop)?;
            if t.users.get(txn, &grant.user)?.is_none() {
                return Err(Error::NotFound(format!(
                    "no user {} on this server; sign up first",
                    grant.user
                )));
            }
            let mut record = match stored {
                None => grant.clone(),
                Some(stored) if stored.same_claims(grant) => stored,
                // A grant id names one grant: another grant reusing it must not take over the
                // first one's bearer (nor the first one's user and capabilities).
                Some(_) => {
                    return Err(Error::Unauthorized(format!(
                        "Invalid grant: the grant id {grant_id} already names another grant; \
                         sign a grant with a fresh jti"
                    )))
                }
            };
            if let Some(previous) = record.bearer.take() {
                t.bearer_sessions.delete(txn, &previous)?;
            }
            t.bearer_sessions.put(txn, bearer, &encode(session)?)?;
            record.bearer = Some(*bearer);
            t.grants.put(txn, grant_id, &encode(&record)?)?;
            Ok(Applied::Done)
        }
        WriteOp::RevokeGrant { grant_id, proof } => {
            if let Some(proof) = proof {
                spend_pop(t, txn, &proof.pop)?;
            }
            let stored: Option<GrantRecord> =
                t.grants.get(txn, grant_id)?.map(decode).transpose()?;
            let mut record = match (stored, proof) {
                (Some(record), None) => record,
                (Some(record), Some(proof)) => {
                    if record.user != proof.user || record.cnf != proof.cnf {
                        return Err(Error::Forbidden(
                            "Grant does not belong to authenticated user".into(),
                        ));
                    }
                    record
                }
                (None, Some(_)) => {
                    return Err(Error::NotFound(format!(
                        "no grant {grant_id} on this server: it was never exchanged here"
                    )))
                }
                (None, None) => return Ok(Applied::Done),
            };
            if let Some(bearer) = record.bearer.take() {
                t.bearer_sessions.delete(txn, &bearer)?;
            }
            record.revoked_s.get_or_insert_with(now_secs);
            t.grants.put(txn, grant_id, &encode(&record)?)?;
            Ok(Applied::Done)
        }
    }
}

/// Create an account, consuming the signup token when one is given (token signup mode).
/// Shared by the cookie and grant signups, so both refuse and consume alike.
fn create_user(
    t: &Tables,
    txn: &mut RwTxn,
    user: &str,
    signup_token: Option<&str>,
    ts_ms: u64,
) -> Result<()> {
    if t.users.get(txn, user)?.is_some() {
        return Err(Error::Conflict(format!("user {user} already exists")));
    }
    if let Some(token) = signup_token {
        let Some(bytes) = t.signup_tokens.get(txn, token)? else {
            return Err(Error::Unauthorized("unknown signup token".into()));
        };
        let mut record: SignupTokenRecord = decode(bytes)?;
        if record.used_by.is_some() {
            return Err(Error::Unauthorized(
                "this signup token was already used".into(),
            ));
        }
        record.used_by = Some(user.to_string());
        t.signup_tokens.put(txn, token, &encode(&record)?)?;
    }
    let account = UserRecord {
        created_ms: ts_ms,
        used_bytes: 0,
    };
    t.users.put(txn, user, &encode(&account)?)?;
    Ok(())
}

/// How long a spent AuthToken is remembered: twice the ±3 minute window AuthToken::verify
/// allows, so any token old enough to be forgotten is refused as expired anyway.
const SPENT_TOKEN_MEMORY_US: u64 = 2 * 180 * 1_000_000;

/// Refuse a token seen before, remember this one, and forget those past the window. Keys are
/// `<timestamp µs BE><signature>`, so forgetting is one range delete from the front.
fn spend_auth_token(t: &Tables, txn: &mut RwTxn, auth: &UsedToken) -> Result<()> {
    let mut key = [0u8; 72];
    key[..8].copy_from_slice(&auth.timestamp_us.to_be_bytes());
    key[8..].copy_from_slice(&auth.signature);
    if t.used_auth_tokens.get(txn, &key)?.is_some() {
        return Err(Error::Unauthorized(
            "this AuthToken was already used; sign a new one".into(),
        ));
    }
    let horizon = (now_ms() * 1000).saturating_sub(SPENT_TOKEN_MEMORY_US);
    let horizon_key = horizon.to_be_bytes();
    let expired: (std::ops::Bound<&[u8]>, std::ops::Bound<&[u8]>) = (
        std::ops::Bound::Unbounded,
        std::ops::Bound::Excluded(&horizon_key[..]),
    );
    t.used_auth_tokens.delete_range(txn, &expired)?;
    t.used_auth_tokens.put(txn, &key, &auth.timestamp_us)?;
    Ok(())
}

/// How long a spent PoP is remembered: twice the ±3 minute window a proof's `iat` must fall
/// in, so any proof old enough to be forgotten is refused as out of window anyway.
pub const SPENT_POP_MEMORY_SECS: u64 = 2 * 180;

/// Refuse a proof seen before, remember this one, and forget those past the window. Keys are
/// `<iat BE><nonce>`, so forgetting is one range delete from the front.
fn spend_pop(t: &Tables, txn: &mut RwTxn, pop: &SpentPop) -> Result<()> {
    let mut key = Vec::with_capacity(8 + pop.nonce.len());
    key.extend_from_slice(&pop.iat.to_be_bytes());
    key.extend_from_slice(pop.nonce.as_bytes());
    if t.pop_nonces.get(txn, &key)?.is_some() {
        return Err(Error::Unauthorized("PoP nonce already used".into()));
    }
    let horizon = now_secs()
        .saturating_sub(SPENT_POP_MEMORY_SECS)
        .to_be_bytes();
    let expired: (std::ops::Bound<&[u8]>, std::ops::Bound<&[u8]>) = (
        std::ops::Bound::Unbounded,
        std::ops::Bound::Excluded(&horizon[..]),
    );
    t.pop_nonces.delete_range(txn, &expired)?;
    t.pop_nonces.put(txn, &key, &pop.iat)?;
    Ok(())
}

/// A path is a file or a directory, never both: `/pub/a` cannot be written while `/pub/a/x`
/// exists, nor `/pub/a/x` while the file `/pub/a` does. Listings stay unambiguous.
fn check_no_collision(t: &Tables, txn: &RwTxn, user: &str, path: &str) -> Result<()> {
    let as_dir = format!("{path}/");
    let (prefix, _) = file_key_prefix(user, &as_dir);
    if t.files
        .prefix_iter(txn, &prefix)?
        .next()
        .transpose()?
        .is_some()
    {
        return Err(Error::Conflict(format!(
            "{path} is a directory (files exist under {as_dir}); it cannot also be a file"
        )));
    }
    for (slash, _) in path.match_indices('/').skip(2) {
        let ancestor = &path[..slash];
        if t.files.get(txn, &file_key(user, ancestor))?.is_some() {
            return Err(Error::Conflict(format!(
                "{ancestor} is a file; it cannot also be a directory of {path}"
            )));
        }
    }
    Ok(())
}

fn delete_chunks(t: &Tables, txn: &mut RwTxn, meta: &FileMeta) -> Result<()> {
    for index in 0..meta.chunk_count() {
        t.chunks.delete(txn, &chunk_key(meta.content_seq, index))?;
    }
    Ok(())
}
