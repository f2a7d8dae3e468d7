//! The file ops: every change to the homeserver's state, as the store's writer runs it.
//!
//! A `FileOp` says what to change; `FileWrite` binds it to the tables and implements the
//! writer's `Op`. Each applies in its own nested transaction: a refused op (404, 409, quota,
//! a spent token) changes nothing, and a PUT or DELETE appends its event to the log in the
//! same transaction as the change (the PUT's chunks are stored under the event's sequence).

use heed::RwTxn;

use super::content::Spooled;
use super::quota::{QuotaPatch, UserQuota};
use super::tables::{
    chunk_key, decode, encode, BearerRecord, FileMeta, GrantRecord, SignupTokenRecord, Tables,
    UserRecord,
};
use super::tree::{self, entry_key};
use super::FilesError;
use crate::clock::{now_ms, now_secs};
use crate::log::{Event, EventKind};
use crate::log::{Op, WriteTxn};

type Result<T, E = FilesError> = std::result::Result<T, E>;

/// A change to the homeserver's state.
#[derive(Debug)]
pub enum FileOp {
    /// Store a file (create or replace), record a PUT event.
    PutFile {
        user: String,
        path: String,
        body: Spooled,
        hash: [u8; 32],
        size: u64,
        content_type: String,
        /// The server's default quota in bytes, if any; the user's own limit wins.
        quota: Option<u64>,
    },
    /// Delete a file, record a DEL event.
    DeleteFile {
        user: String,
        path: String,
    },
    /// The admin deletes a file: a DEL event like any delete, whatever the user's state.
    AdminDeleteFile {
        user: String,
        path: String,
    },
    /// The admin disables (or enables again) a user.
    SetUserDisabled {
        user: String,
        disabled: bool,
    },
    /// The admin changes a user's limits; the result must validate.
    PatchUserQuota {
        user: String,
        patch: QuotaPatch,
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
        /// The limits the user who signs up with it gets.
        quota: UserQuota,
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

/// A `FileOp` bound to the tables it changes: what the writer runs.
pub struct FileWrite {
    tables: Tables,
    op: FileOp,
}

impl FileWrite {
    pub(crate) fn new(tables: Tables, op: FileOp) -> Self {
        FileWrite { tables, op }
    }
}

impl Op for FileWrite {
    type Output = Written;
    type Error = FilesError;

    fn apply(&self, txn: &mut WriteTxn<'_>) -> Result<Written> {
        apply(&self.tables, txn, &self.op)
    }

    /// A file's content is what makes a batch big.
    fn weight(&self) -> u64 {
        match &self.op {
            FileOp::PutFile { size, .. } => *size,
            _ => 0,
        }
    }
}

fn apply(t: &Tables, txn: &mut WriteTxn<'_>, op: &FileOp) -> Result<Written> {
    let ts_ms = txn.ts_ms();
    match op {
        FileOp::PutFile {
            user,
            path,
            body,
            hash,
            size,
            content_type,
            quota,
        } => {
            let key = entry_key(user, path);
            let mut account = writable_user(t, txn, user, path)?;
            let old: Option<FileMeta> = t.tree.get(txn, &key)?.map(decode).transpose()?;
            if old.is_none() {
                check_no_collision(t, txn, user, path)?;
            }
            let old_size = old.as_ref().map_or(0, |m| m.size);
            let used = account.used_bytes.saturating_sub(old_size) + size;
            if let Some(quota) = &account.quota.storage_bytes(*quota) {
                if used > *quota {
                    return Err(FilesError::QuotaExceeded(format!(
                        "this write would bring {user} to {used} bytes, over the quota of {quota}"
                    )));
                }
            }
            if let Some(old) = &old {
                delete_chunks(t, txn, old)?;
            }
            let seq = txn.append(Event {
                seq: 0,
                kind: EventKind::Put,
                key: format!("{user}{path}"),
                ts_ms,
                hash: Some(*hash),
                size: Some(*size),
                origin: None,
            })?;
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
            t.tree.put(txn, &key, &encode(&meta)?)?;
            if old.is_none() {
                tree::link(&t.tree, txn, user, path)?;
            }
            account.used_bytes = used;
            t.users.put(txn, user, &encode(&account)?)?;
            Ok(Written::Event(seq))
        }
        FileOp::DeleteFile { user, path } => {
            writable_user(t, txn, user, path)?;
            delete_file(t, txn, user, path)
        }
        FileOp::AdminDeleteFile { user, path } => delete_file(t, txn, user, path),
        FileOp::SetUserDisabled { user, disabled } => {
            let mut account = existing_user(t, txn, user)?;
            account.disabled = *disabled;
            t.users.put(txn, user, &encode(&account)?)?;
            Ok(Written::Done)
        }
        FileOp::PatchUserQuota { user, patch } => {
            let mut account = existing_user(t, txn, user)?;
            let quota = account.quota.patched(patch);
            quota.validate().map_err(FilesError::Invalid)?;
            account.quota = quota;
            t.users.put(txn, user, &encode(&account)?)?;
            Ok(Written::Done)
        }
        FileOp::Signup {
            user,
            auth,
            signup_token,
            session_secret,
            session,
        } => {
            spend_auth_token(t, txn, auth)?;
            create_user(t, txn, user, signup_token.as_deref(), ts_ms)?;
            t.sessions.put(txn, session_secret, session)?;
            Ok(Written::Done)
        }
        FileOp::Signin {
            user,
            auth,
            session_secret,
            session,
        } => {
            match t.users.get(txn, user)? {
                None => {
                    return Err(FilesError::NotFound(format!(
                        "no user {user} on this server; sign up first"
                    )))
                }
                Some(bytes) if decode::<UserRecord>(bytes)?.disabled => {
                    return Err(FilesError::Forbidden(USER_DISABLED.into()))
                }
                Some(_) => {}
            }
            spend_auth_token(t, txn, auth)?;
            t.sessions.put(txn, session_secret, session)?;
            Ok(Written::Done)
        }
        FileOp::DeleteSession { secret } => {
            t.sessions.delete(txn, secret)?;
            Ok(Written::Done)
        }
        FileOp::MintSignupToken { token, quota } => {
            let record = SignupTokenRecord {
                created_ms: ts_ms,
                used_by: None,
                used_ms: None,
                quota: quota.clone(),
            };
            t.signup_tokens.put(txn, token, &encode(&record)?)?;
            Ok(Written::Done)
        }
        FileOp::GrantSignup {
            user,
            pop,
            signup_token,
        } => {
            spend_pop(t, txn, pop)?;
            create_user(t, txn, user, signup_token.as_deref(), ts_ms)?;
            Ok(Written::Done)
        }
        FileOp::GrantSession {
            grant_id,
            grant,
            pop,
            bearer,
            session,
        } => {
            let stored: Option<GrantRecord> =
                t.grants.get(txn, grant_id)?.map(decode).transpose()?;
            if stored.as_ref().is_some_and(|g| g.revoked_s.is_some()) {
                return Err(FilesError::Unauthorized("Grant has been revoked".into()));
            }
            spend_pop(t, txn, pop)?;
            match t.users.get(txn, &grant.user)? {
                None => {
                    return Err(FilesError::NotFound(format!(
                        "no user {} on this server; sign up first",
                        grant.user
                    )))
                }
                Some(bytes) if decode::<UserRecord>(bytes)?.disabled => {
                    return Err(FilesError::Forbidden(USER_DISABLED.into()))
                }
                Some(_) => {}
            }
            let mut record = match stored {
                None => grant.clone(),
                Some(stored) if stored.same_claims(grant) => stored,
                // A grant id names one grant: another grant reusing it must not take over the
                // first one's bearer (nor the first one's user and capabilities).
                Some(_) => {
                    return Err(FilesError::Unauthorized(format!(
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
            Ok(Written::Done)
        }
        FileOp::RevokeGrant { grant_id, proof } => {
            if let Some(proof) = proof {
                spend_pop(t, txn, &proof.pop)?;
            }
            let stored: Option<GrantRecord> =
                t.grants.get(txn, grant_id)?.map(decode).transpose()?;
            let mut record = match (stored, proof) {
                (Some(record), None) => record,
                (Some(record), Some(proof)) => {
                    if record.user != proof.user || record.cnf != proof.cnf {
                        return Err(FilesError::Forbidden(
                            "Grant does not belong to authenticated user".into(),
                        ));
                    }
                    record
                }
                (None, Some(_)) => {
                    return Err(FilesError::NotFound(format!(
                        "no grant {grant_id} on this server: it was never exchanged here"
                    )))
                }
                (None, None) => return Ok(Written::Done),
            };
            if let Some(bearer) = record.bearer.take() {
                t.bearer_sessions.delete(txn, &bearer)?;
            }
            record.revoked_s.get_or_insert_with(now_secs);
            t.grants.put(txn, grant_id, &encode(&record)?)?;
            Ok(Written::Done)
        }
    }
}

/// Delete a file and record its DEL event, in the op's transaction.
fn delete_file(t: &Tables, txn: &mut WriteTxn<'_>, user: &str, path: &str) -> Result<Written> {
    let ts_ms = txn.ts_ms();
    let key = entry_key(user, path);
    let Some(old) = t.tree.get(txn, &key)?.map(decode::<FileMeta>).transpose()? else {
        return Err(FilesError::NotFound(format!("no file at {path}")));
    };
    delete_chunks(t, txn, &old)?;
    t.tree.delete(txn, &key)?;
    tree::unlink(&t.tree, txn, user, path)?;
    if let Some(bytes) = t.users.get(txn, user)? {
        let mut account: UserRecord = decode(bytes)?;
        account.used_bytes = account.used_bytes.saturating_sub(old.size);
        t.users.put(txn, user, &encode(&account)?)?;
    }
    let seq = txn.append(Event {
        seq: 0,
        kind: EventKind::Del,
        key: format!("{user}{path}"),
        ts_ms,
        hash: None,
        size: None,
        origin: None,
    })?;
    Ok(Written::Event(seq))
}

/// The account of `user`, which must exist.
fn existing_user(t: &Tables, txn: &RwTxn, user: &str) -> Result<UserRecord> {
    match t.users.get(txn, user)? {
        Some(bytes) => Ok(decode(bytes)?),
        None => Err(FilesError::NotFound(format!(
            "no user {user} on this server"
        ))),
    }
}

/// The account of `user`, if it may write `path`: it exists, is not disabled, and its
/// `allowed_write_paths` cover the path.
fn writable_user(t: &Tables, txn: &RwTxn, user: &str, path: &str) -> Result<UserRecord> {
    let account = existing_user(t, txn, user)?;
    if account.disabled {
        return Err(FilesError::Forbidden(USER_DISABLED.into()));
    }
    if !account.quota.may_write(path) {
        return Err(FilesError::Forbidden(format!(
            "Write to this path is not allowed: {path} is outside the paths {user} may write"
        )));
    }
    Ok(account)
}

/// The refusal of everything a disabled user tries but reading, as Pubky words it.
pub const USER_DISABLED: &str = "User is disabled";

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
        return Err(FilesError::Conflict(format!("user {user} already exists")));
    }
    let mut quota = UserQuota::default();
    if let Some(token) = signup_token {
        let Some(bytes) = t.signup_tokens.get(txn, token)? else {
            return Err(FilesError::Unauthorized("unknown signup token".into()));
        };
        let mut record: SignupTokenRecord = decode(bytes)?;
        if record.used_by.is_some() {
            return Err(FilesError::Unauthorized(
                "this signup token was already used".into(),
            ));
        }
        record.used_by = Some(user.to_string());
        record.used_ms = Some(ts_ms);
        quota = record.quota.clone();
        t.signup_tokens.put(txn, token, &encode(&record)?)?;
    }
    let account = UserRecord {
        created_ms: ts_ms,
        used_bytes: 0,
        disabled: false,
        quota,
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
        return Err(FilesError::Unauthorized(
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
const SPENT_POP_MEMORY_SECS: u64 = 2 * 180;

/// Refuse a proof seen before, remember this one, and forget those past the window. Keys are
/// `<iat BE><nonce>`, so forgetting is one range delete from the front.
fn spend_pop(t: &Tables, txn: &mut RwTxn, pop: &SpentPop) -> Result<()> {
    let mut key = Vec::with_capacity(8 + pop.nonce.len());
    key.extend_from_slice(&pop.iat.to_be_bytes());
    key.extend_from_slice(pop.nonce.as_bytes());
    if t.pop_nonces.get(txn, &key)?.is_some() {
        return Err(FilesError::Unauthorized("PoP nonce already used".into()));
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
/// exists, nor `/pub/a/x` while the file `/pub/a` does. Listings stay unambiguous. For a path
/// not stored yet: its directory entry must not exist, and the nearest ancestor that is not a
/// directory must not be a file either (above a directory that exists, none can be).
fn check_no_collision(t: &Tables, txn: &RwTxn, user: &str, path: &str) -> Result<()> {
    let as_dir = format!("{path}/");
    if t.tree.get(txn, &entry_key(user, &as_dir))?.is_some() {
        return Err(FilesError::Conflict(format!(
            "{path} is a directory (files exist under {as_dir}); it cannot also be a file"
        )));
    }
    let mut dir = tree::split(path).0;
    while dir.len() > crate::path::PUBLIC_ROOT.len() {
        if t.tree.get(txn, &entry_key(user, dir))?.is_some() {
            break;
        }
        let ancestor = &dir[..dir.len() - 1];
        if t.tree.get(txn, &entry_key(user, ancestor))?.is_some() {
            return Err(FilesError::Conflict(format!(
                "{ancestor} is a file; it cannot also be a directory of {path}"
            )));
        }
        dir = tree::split(dir).0;
    }
    Ok(())
}

fn delete_chunks(t: &Tables, txn: &mut RwTxn, meta: &FileMeta) -> Result<()> {
    for index in 0..meta.chunk_count() {
        t.chunks.delete(txn, &chunk_key(meta.content_seq, index))?;
    }
    Ok(())
}
