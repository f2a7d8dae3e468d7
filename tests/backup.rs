//! Backups with the real binary: `hearth backup` beside a `hearth serve` that is being written
//! to (another process, as in production), `hearth verify` on the copy, and a server started on
//! the copy serving a firehose that resumes from an id the backup holds.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hearth::config::Config;
use hearth::ids;
use hearth::server::Server;
use pubky_common::crypto::Keypair;
use reqwest::StatusCode;

const HEARTH: &str = env!("CARGO_BIN_EXE_hearth");

/// A `hearth serve` child; killed when dropped.
struct Serving {
    child: Child,
    url: String,
    key: String,
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(data_dir: &std::path::Path) -> Serving {
    let mut child = Command::new(HEARTH)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--no-sync",
            "--data-dir",
        ])
        .arg(data_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("hearth serve starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut url = None;
    let mut key = None;
    while url.is_none() || key.is_none() {
        let line = lines
            .next()
            .expect("the server says where it listens")
            .unwrap();
        if let Some(rest) = line.strip_prefix("hearth listening on ") {
            url = Some(rest.to_string());
        }
        if let Some(rest) = line.strip_prefix("server public key: ") {
            key = Some(rest.to_string());
        }
    }
    // Keep reading so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Serving {
        child,
        url: url.unwrap(),
        key: key.unwrap(),
    }
}

fn hearth(args: &[&std::ffi::OsStr]) -> (bool, String) {
    let output = Command::new(HEARTH)
        .args(args)
        .output()
        .expect("hearth runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

async fn signup(http: &reqwest::Client, url: &str) -> common::User {
    let keypair = Keypair::random();
    let response = http
        .post(format!("{url}/signup"))
        .body(common::sign_token(&keypair, "/pub/:rw"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    common::User {
        z32: keypair.public_key().z32(),
        cookie: common::session_cookie(response.headers()),
        keypair,
        base: url.to_string(),
        http: http.clone(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_write_load_restores_verifies_and_resumes() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let copy = root.path().join("copy");
    let server = serve(&data);
    let http = reqwest::Client::new();

    // Writers: PUTs, overwrites and DELETEs on a few users, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for w in 0..3 {
        let user = signup(&http, &server.url).await;
        let (stop, done) = (Arc::clone(&stop), Arc::clone(&done));
        writers.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let path = format!("/pub/load/{}.json", i % 7);
                let status = if i % 5 == 4 {
                    user.delete(&path).await.status()
                } else {
                    user.put(&path, format!("{{\"w\":{w},\"i\":{i}}}"))
                        .await
                        .status()
                };
                assert!(
                    status == StatusCode::CREATED
                        || status == StatusCode::NO_CONTENT
                        || status == StatusCode::NOT_FOUND,
                    "{status}"
                );
                done.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        }));
    }
    let wait_for = |n: u64| {
        let done = Arc::clone(&done);
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            while done.load(Ordering::Relaxed) < n {
                assert!(Instant::now() < deadline, "the writers stalled");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    wait_for(150).await;

    // The backup, while the writes go on, from another process.
    let (from, to) = (data.clone(), copy.clone());
    let (ok, text) = tokio::task::spawn_blocking(move || {
        hearth(&[
            "backup".as_ref(),
            "--data-dir".as_ref(),
            from.as_os_str(),
            "--out".as_ref(),
            to.as_os_str(),
        ])
    })
    .await
    .unwrap();
    assert!(ok, "backup failed: {text}");
    assert!(text.contains("ok: no problems found"), "{text}");
    let at_backup = done.load(Ordering::Relaxed);
    wait_for(at_backup + 100).await;
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.unwrap();
    }
    let original_key = server.key.clone();
    drop(server);

    // A second backup into the same place is refused; so is a directory that is no store.
    let (ok, text) = hearth(&[
        "backup".as_ref(),
        "--data-dir".as_ref(),
        data.as_os_str(),
        "--out".as_ref(),
        copy.as_os_str(),
    ]);
    assert!(!ok && text.contains("not empty"), "{text}");
    let (ok, text) = hearth(&[
        "verify".as_ref(),
        "--data-dir".as_ref(),
        root.path().as_os_str(),
    ]);
    assert!(!ok && text.contains("no store"), "{text}");

    // Both verify clean: the original after its writes (and a kill), the copy as taken.
    for dir in [&data, &copy] {
        let (ok, text) = hearth(&["verify".as_ref(), "--data-dir".as_ref(), dir.as_os_str()]);
        assert!(ok, "verify {}: {text}", dir.display());
        assert!(text.contains("ok: no problems found"), "{text}");
    }

    // Restore: serve the copy. Same key; its log ends where the backup was taken.
    let restored = Server::start(Config::ephemeral(&copy))
        .await
        .expect("serves the copy");
    assert_eq!(restored.public_key(), original_key);
    let last = restored.log().last_seq().unwrap();
    assert!(
        last >= 150,
        "the backup holds what was written before it: {last}"
    );
    let from = last / 2;
    let response = http
        .get(format!(
            "{}/firehose?lastSeq={}&live=false",
            restored.url(),
            ids::encode(from)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    let resumed: Vec<u64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .map(|id| ids::decode(id).unwrap())
        .collect();
    let expected: Vec<u64> = (from + 1..=last).collect();
    assert_eq!(
        resumed, expected,
        "resumes right after the id, through the backup's last"
    );
    restored.shutdown();
    restored.stopped().await.unwrap();
}

/// `verify` finds what is wrong: a file removed behind the log's back, and a user's bytes that
/// no longer add up, each named, with a failing exit.
#[tokio::test]
async fn verify_names_a_store_that_disagrees_with_its_log() {
    let server = common::TestServer::start().await;
    let user = server.signup().await;
    assert_eq!(
        user.put("/pub/a.json", "aaaa").await.status(),
        StatusCode::CREATED
    );
    assert_eq!(
        user.put("/pub/b.json", "bb").await.status(),
        StatusCode::CREATED
    );
    let dir = server.dir.path().to_path_buf();
    let common::TestServer {
        server, dir: keep, ..
    } = server;
    server.shutdown();
    server.stopped().await.unwrap();

    let (ok, text) = hearth(&["verify".as_ref(), "--data-dir".as_ref(), dir.as_os_str()]);
    assert!(ok, "a clean store verifies: {text}");

    // Damage it: drop a.json's record, as no op ever would.
    {
        let options = hearth::store::StoreOptions {
            map_size: 64 << 20,
            sync: true,
        };
        let store = hearth::store::Store::open(&dir, &options, hearth::migrations::ALL).unwrap();
        let mut txn = store.env().write_txn().unwrap();
        let tree = store
            .env()
            .open_database::<heed::types::Bytes, heed::types::Bytes>(&txn, Some("file_tree"))
            .unwrap()
            .unwrap();
        // The file tree's key of /pub/a.json: the user, the parent directory's id, the name.
        let mut key = user.z32.as_bytes().to_vec();
        key.extend_from_slice(&blake3::hash(b"/pub/").as_bytes()[..16]);
        key.extend_from_slice(b"a.json");
        assert!(tree.delete(&mut txn, &key).unwrap());
        txn.commit().unwrap();
        store.close();
    }
    let (ok, text) = hearth(&["verify".as_ref(), "--data-dir".as_ref(), dir.as_os_str()]);
    assert!(!ok, "a damaged store fails: {text}");
    assert!(
        text.contains("/pub/a.json: its newest event")
            && text.contains("is a PUT, but there is no file"),
        "{text}"
    );
    assert!(
        text.contains("used_bytes is 6, but their files hold 2"),
        "{text}"
    );
    assert!(
        text.contains("belong to no file"),
        "the orphaned content: {text}"
    );
    drop(keep);
}
