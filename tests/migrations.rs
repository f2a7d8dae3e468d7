//! Schema versioning on a real LMDB: a store made by an older version is migrated in order, a
//! store from the future is refused, and migrating keeps what was stored.

use hearth::files::Files;
use hearth::log::{Event, EventKind, EventLog};
use hearth::migrations::{current_version, ALL};
use hearth::store::migrate::{migrate, Migration};
use hearth::store::{meta_keys, Store, StoreOptions};
use heed::types::{Bytes, Str};
use heed::{Env, RwTxn, WithoutTls};

fn options() -> StoreOptions {
    StoreOptions {
        map_size: 1 << 30,
        sync: true,
    }
}

fn last_seq(store: &Store) -> u64 {
    EventLog::open(store).unwrap().last_seq().unwrap()
}

fn schema_version(store: &Store) -> u32 {
    let bytes = store
        .meta(meta_keys::SCHEMA_VERSION)
        .unwrap()
        .expect("a version");
    u32::from_be_bytes(bytes.try_into().unwrap())
}

/// A later migration, written the way a real one would be: it creates a table and fills it
/// from what version 1 stored.
fn copy_last_seq(env: &Env<WithoutTls>, txn: &mut RwTxn) -> heed::Result<()> {
    let extra = env.create_database::<Str, Bytes>(txn, Some("extra"))?;
    let meta = env
        .open_database::<Str, Bytes>(txn, Some("meta"))?
        .expect("version 1 has a meta table");
    let seq = meta
        .get(txn, meta_keys::LAST_SEQ)?
        .map(<[u8]>::to_vec)
        .unwrap_or_default();
    extra.put(txn, "copied_last_seq", &seq)?;
    Ok(())
}

#[test]
fn a_new_store_is_at_the_current_version() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &options(), ALL).unwrap();
    assert_eq!(schema_version(&store), current_version());
    assert_eq!(current_version(), ALL.len() as u32);
}

#[test]
fn an_older_store_is_migrated_in_order_and_keeps_its_data() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), &options(), ALL).unwrap();
        store
            .put_meta(meta_keys::LAST_SEQ, &41u64.to_be_bytes())
            .unwrap();
        store.close();
    }
    let mut steps = all_steps();
    steps.push(Migration {
        version: current_version() + 1,
        name: "copy last_seq (test)",
        apply: copy_last_seq,
    });
    let store = Store::open(dir.path(), &options(), &steps).unwrap();
    assert_eq!(schema_version(&store), current_version() + 1);
    assert_eq!(last_seq(&store), 41, "migrating keeps the data");
    store.close();

    // The migrated store is read back by the code that knows the new version, unchanged.
    let store = Store::open(dir.path(), &options(), &steps).unwrap();
    assert_eq!(schema_version(&store), current_version() + 1);
    store.close();
}

#[test]
fn a_store_from_the_future_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), &options(), ALL).unwrap();
        store
            .put_meta(
                meta_keys::SCHEMA_VERSION,
                &(current_version() + 5).to_be_bytes(),
            )
            .unwrap();
        store.close();
    }
    let err = match Store::open(dir.path(), &options(), ALL) {
        Ok(_) => panic!("a store from the future must be refused"),
        Err(err) => err.to_string(),
    };
    assert!(err.contains("newer"), "{err}");
    assert!(err.contains(&(current_version() + 5).to_string()), "{err}");
}

#[test]
fn a_failing_migration_commits_nothing() {
    fn fails(env: &Env<WithoutTls>, txn: &mut RwTxn) -> heed::Result<()> {
        env.create_database::<Str, Bytes>(txn, Some("half_done"))?;
        Err(heed::Error::Io(std::io::Error::other(
            "migration failed on purpose",
        )))
    }
    let dir = tempfile::tempdir().unwrap();
    Store::open(dir.path(), &options(), ALL).unwrap().close();
    let mut steps = all_steps();
    steps.push(Migration {
        version: current_version() + 1,
        name: "fails",
        apply: fails,
    });
    assert!(Store::open(dir.path(), &options(), &steps).is_err());
    let store = Store::open(dir.path(), &options(), ALL).unwrap();
    assert_eq!(
        schema_version(&store),
        current_version(),
        "the failed step left the version alone"
    );
    store.close();
}

fn all_steps() -> Vec<Migration> {
    ALL.iter()
        .map(|m| Migration {
            version: m.version,
            name: m.name,
            apply: m.apply,
        })
        .collect()
}

/// Build a store at an older schema `version` with heed directly, as that version's code
/// would have, and `fill` it in one transaction.
fn build_older_store(
    dir: &std::path::Path,
    version: u32,
    fill: impl FnOnce(&Env<WithoutTls>, &mut RwTxn),
) {
    let lmdb = dir.join("lmdb");
    std::fs::create_dir_all(&lmdb).unwrap();
    let mut open = heed::EnvOpenOptions::new().read_txn_without_tls();
    open.map_size(1 << 30).max_dbs(16);
    // SAFETY: opened once here and closed before the store opens the same directory.
    let env = unsafe { open.open(&lmdb).unwrap() };
    assert_eq!(migrate(&env, &ALL[..version as usize]).unwrap(), version);
    let mut txn = env.write_txn().unwrap();
    fill(&env, &mut txn);
    txn.commit().unwrap();
    env.prepare_for_closing().wait();
}

/// A store written at version 1 (before the grant tables) opens under this build: migration 2
/// adds the grant tables and keeps what version 1 stored.
#[test]
fn a_version_1_store_gains_the_grant_tables() {
    let dir = tempfile::tempdir().unwrap();
    build_older_store(dir.path(), 1, |env, txn| {
        let meta = env
            .open_database::<Str, Bytes>(txn, Some("meta"))
            .unwrap()
            .unwrap();
        meta.put(txn, meta_keys::LAST_SEQ, &7u64.to_be_bytes())
            .unwrap();
    });
    let store = Store::open(dir.path(), &options(), ALL).unwrap();
    assert_eq!(schema_version(&store), current_version());
    assert_eq!(last_seq(&store), 7);
    let files = Files::open(&store).unwrap();
    assert_eq!(files.grant("no-such-grant").unwrap(), None);
    assert!(files.bearer_session(&[0; 32]).unwrap().is_none());
    drop(files);
    store.close();
}

/// An event as format 1 stored it (the sequence was the key): what m0003 re-encodes.
#[derive(serde::Serialize)]
struct EventV1 {
    kind: KindV1,
    key: String,
    ts_ms: u64,
    content: Option<ContentV1>,
}

#[derive(serde::Serialize)]
enum KindV1 {
    Put,
    Del,
}

#[derive(serde::Serialize)]
struct ContentV1 {
    hash: [u8; 32],
    size: u64,
    content_type: String,
}

/// A store written at version 2, with events of several users in the first record format,
/// is migrated: every event reads back as it was, and each user's index holds exactly that
/// user's events, in order.
#[test]
fn a_version_2_log_is_re_encoded_and_indexed_by_user() {
    let users: Vec<String> = (0..3)
        .map(|_| pubky_common::crypto::Keypair::random().public_key().z32())
        .collect();
    let mut expected = Vec::new();
    for seq in 1..=40u64 {
        let user = &users[(seq as usize * 7) % users.len()];
        let put = seq % 5 != 0;
        expected.push(Event {
            seq,
            kind: if put { EventKind::Put } else { EventKind::Del },
            key: format!("{user}/pub/app/{}.json", seq % 9),
            ts_ms: 1_763_812_345_000 + seq,
            hash: put.then_some([seq as u8; 32]),
            size: put.then_some(seq * 10),
            origin: None,
        });
    }
    let dir = tempfile::tempdir().unwrap();
    build_older_store(dir.path(), 2, |env, txn| {
        let events = env
            .open_database::<heed::types::U64<heed::byteorder::BigEndian>, Bytes>(
                txn,
                Some("events"),
            )
            .unwrap()
            .unwrap();
        for event in &expected {
            let v1 = EventV1 {
                kind: match event.kind {
                    EventKind::Put => KindV1::Put,
                    EventKind::Del => KindV1::Del,
                },
                key: event.key.clone(),
                ts_ms: event.ts_ms,
                content: event.hash.map(|hash| ContentV1 {
                    hash,
                    size: event.size.unwrap(),
                    content_type: "application/json".into(),
                }),
            };
            events
                .put(txn, &event.seq, &postcard::to_stdvec(&v1).unwrap())
                .unwrap();
        }
        let meta = env
            .open_database::<Str, Bytes>(txn, Some("meta"))
            .unwrap()
            .unwrap();
        meta.put(txn, meta_keys::LAST_SEQ, &40u64.to_be_bytes())
            .unwrap();
    });
    let store = Store::open(dir.path(), &options(), ALL).unwrap();
    assert_eq!(schema_version(&store), current_version());
    let log = EventLog::open(&store).unwrap();
    assert_eq!(log.last_seq().unwrap(), 40);
    let mut all = Vec::new();
    log.scan(0, usize::MAX, |event| {
        all.push(event);
        true
    })
    .unwrap();
    assert_eq!(all, expected, "every event reads back equal");
    for user in &users {
        let mut theirs = Vec::new();
        log.scan_user(user, 0, usize::MAX, |event| {
            theirs.push(event);
            true
        })
        .unwrap();
        let want: Vec<&Event> = expected.iter().filter(|e| e.user() == user).collect();
        assert!(!want.is_empty());
        assert_eq!(theirs.iter().collect::<Vec<_>>(), want, "{user}'s events");
        // Resuming after one of them, and a page of two.
        let after = want[0].seq;
        let mut page = Vec::new();
        log.scan_user(user, after, 2, |event| {
            page.push(event.seq);
            true
        })
        .unwrap();
        assert_eq!(page, want[1..3].iter().map(|e| e.seq).collect::<Vec<_>>());
    }
    let stranger = pubky_common::crypto::Keypair::random().public_key().z32();
    let mut none = 0;
    log.scan_user(&stranger, 0, usize::MAX, |_| {
        none += 1;
        true
    })
    .unwrap();
    assert_eq!(none, 0);
    drop(log);
    store.close();
}

/// A file key as versions 1 to 5 wrote it: `<user><path>`, cut and hashed past LMDB's limit.
fn file_key_v5(user: &str, path: &str) -> Vec<u8> {
    let mut key = format!("{user}{path}").into_bytes();
    if key.len() > 511 {
        let digest = blake3::hash(&key);
        key.truncate(494);
        key.push(0xFF);
        key.extend_from_slice(&digest.as_bytes()[..16]);
    }
    key
}

/// A store written at version 5, with short and hashed long keys, is migrated into the file
/// tree: every file reads back, its directories are made, and the listings (deep and shallow)
/// are in path order.
#[test]
fn a_version_5_store_moves_its_files_into_the_tree() {
    let user = pubky_common::crypto::Keypair::random().public_key().z32();
    let long = format!("/pub/{}/{}", "a".repeat(255), "b".repeat(200));
    let paths = [
        "/pub/app/x.json".to_string(),
        "/pub/app/sub/y.json".to_string(),
        "/pub/z".to_string(),
        format!("{long}/x.json"),
        format!("{long}/y.json"),
    ];
    let meta = |path: &str| hearth::files::FileMeta {
        path: path.to_string(),
        size: path.len() as u64,
        hash: *blake3::hash(path.as_bytes()).as_bytes(),
        content_type: "application/json".into(),
        modified_ms: 1_763_812_345_000,
        content_seq: 1,
    };
    let dir = tempfile::tempdir().unwrap();
    build_older_store(dir.path(), 5, |env, txn| {
        let files = env
            .open_database::<Bytes, Bytes>(txn, Some("files"))
            .unwrap()
            .unwrap();
        for path in &paths {
            let value = postcard::to_stdvec(&meta(path)).unwrap();
            files.put(txn, &file_key_v5(&user, path), &value).unwrap();
        }
    });
    let store = Store::open(dir.path(), &options(), ALL).unwrap();
    assert_eq!(schema_version(&store), current_version());
    let files = Files::open(&store).unwrap();
    for path in &paths {
        assert_eq!(files.file(&user, path).unwrap(), Some(meta(path)), "{path}");
    }
    let deep = hearth::files::ListOptions {
        limit: 100,
        ..Default::default()
    };
    let mut sorted = paths.to_vec();
    sorted.sort();
    assert_eq!(files.list(&user, "/pub/", &deep).unwrap(), sorted);
    let shallow = hearth::files::ListOptions {
        shallow: true,
        ..deep.clone()
    };
    assert_eq!(
        files.list(&user, &format!("{long}/"), &shallow).unwrap(),
        [format!("{long}/x.json"), format!("{long}/y.json")]
    );
    let mut top = vec![
        format!("/pub/{}/", "a".repeat(255)),
        "/pub/app/".to_string(),
        "/pub/z".to_string(),
    ];
    top.sort();
    assert_eq!(files.list(&user, "/pub/", &shallow).unwrap(), top);
    drop(files);
    store.close();
}

/// A user and a signup token as versions 1 to 4 wrote them.
#[derive(serde::Serialize)]
struct UserV1 {
    created_ms: u64,
    used_bytes: u64,
}

#[derive(serde::Serialize)]
struct SignupTokenV1 {
    created_ms: u64,
    used_by: Option<String>,
}

/// A store written at version 3 (before the admin's user fields) is migrated: users keep
/// their creation time and bytes used and start enabled with default limits; tokens keep who
/// used them.
#[test]
fn a_version_3_store_gains_the_admin_user_fields() {
    let alice = pubky_common::crypto::Keypair::random().public_key().z32();
    let dir = tempfile::tempdir().unwrap();
    build_older_store(dir.path(), 3, |env, txn| {
        let users = env
            .open_database::<Str, Bytes>(txn, Some("users"))
            .unwrap()
            .unwrap();
        let old = UserV1 {
            created_ms: 1_700_000_000_123,
            used_bytes: 42,
        };
        users
            .put(txn, &alice, &postcard::to_stdvec(&old).unwrap())
            .unwrap();
        let tokens = env
            .open_database::<Str, Bytes>(txn, Some("signup_tokens"))
            .unwrap()
            .unwrap();
        for (token, used_by) in [
            ("AAAA-BBBB-CCCC", Some(alice.clone())),
            ("DDDD-EEEE-FFFF", None),
        ] {
            let old = SignupTokenV1 {
                created_ms: 5,
                used_by,
            };
            tokens
                .put(txn, token, &postcard::to_stdvec(&old).unwrap())
                .unwrap();
        }
    });
    let store = Store::open(dir.path(), &options(), ALL).unwrap();
    assert_eq!(schema_version(&store), current_version());
    let files = Files::open(&store).unwrap();
    let user = files.user(&alice).unwrap().expect("the user is kept");
    assert_eq!(
        (user.created_ms, user.used_bytes, user.disabled),
        (1_700_000_000_123, 42, false)
    );
    assert_eq!(user.quota, hearth::files::quota::UserQuota::default());
    let page = files.signup_tokens_page(None, None, 10).unwrap();
    let used: Vec<(String, Option<String>)> = page
        .items
        .into_iter()
        .map(|(token, record)| (token, record.used_by))
        .collect();
    assert_eq!(
        used,
        vec![
            ("AAAA-BBBB-CCCC".to_string(), Some(alice.clone())),
            ("DDDD-EEEE-FFFF".to_string(), None)
        ]
    );
    drop(files);
    store.close();
}
