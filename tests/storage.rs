//! Storage at its edges, against a real server: a full map, quotas on every path a write can
//! take, a group commit mixing refused and accepted writes, reads racing writes, and what an
//! aborted upload leaves behind.

mod common;

use std::sync::{Arc, Mutex};

use common::TestServer;
use futures_util::StreamExt;
use hearth::files::content::Spooled;
use hearth::files::{FileOp, Files, FilesError, SpentPop, Written};
use hearth::log::{CommitListener, EventLog, Op, WriteTxn, Writer};
use hearth::store::{Store, StoreError, StoreOptions};
use reqwest::StatusCode;

/// A GET that streams a file while it is overwritten ends with the old content whole, or with
/// an error: never a mix of the two versions.
#[tokio::test]
async fn a_read_racing_an_overwrite_never_mixes_versions() {
    let hs = TestServer::start().await;
    let alice = hs.signup().await;
    let size = 4 << 20;
    assert_eq!(alice.put("/pub/big", vec![b'a'; size]).await.status(), 201);
    let response = alice.get("/pub/big").await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.bytes_stream();
    let mut got = body
        .next()
        .await
        .expect("a first chunk")
        .expect("read")
        .to_vec();
    assert_eq!(alice.put("/pub/big", vec![b'b'; size]).await.status(), 201);
    let mut failed = false;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(bytes) => got.extend_from_slice(&bytes),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(
        got.iter().all(|&b| b == b'a'),
        "only the old version was sent"
    );
    assert!(
        failed || got.len() == size,
        "whole, or cut short with an error"
    );
    let now = alice.get("/pub/big").await.bytes().await.unwrap();
    assert_eq!(now.len(), size);
    assert!(now.iter().all(|&b| b == b'b'));
}

fn used_bytes(hs: &TestServer, user: &common::User) -> u64 {
    hs.server
        .files()
        .user(&user.z32)
        .unwrap()
        .unwrap()
        .used_bytes
}

/// A chunked body (no Content-Length): the early check cannot see its size, so the writer's
/// own check at commit is what refuses it.
fn chunked(bytes: Vec<u8>) -> reqwest::Body {
    let pieces: Vec<Result<Vec<u8>, std::io::Error>> =
        bytes.chunks(700).map(|c| Ok(c.to_vec())).collect();
    reqwest::Body::wrap_stream(futures_util::stream::iter(pieces))
}

/// The quota counts what a user stores now: an overwrite counts the new size instead of the
/// old, a delete gives its bytes back, and a chunked upload is held to it at commit.
#[tokio::test]
async fn quota_follows_overwrites_deletes_and_chunked_uploads() {
    let hs = TestServer::start_with(|c| c.quota_bytes = Some(1000)).await;
    let alice = hs.signup().await;
    let events = |hs: &TestServer| hs.events().len();
    assert_eq!(alice.put("/pub/a", vec![1u8; 600]).await.status(), 201);
    // Overwriting 600 with 900 needs 300 more, not 900.
    assert_eq!(alice.put("/pub/a", vec![2u8; 900]).await.status(), 201);
    assert_eq!(used_bytes(&hs, &alice), 900);
    let before = events(&hs);
    let over = alice.put("/pub/b", vec![3u8; 200]).await;
    assert_eq!(over.status(), StatusCode::INSUFFICIENT_STORAGE);
    assert!(!over.text().await.unwrap().is_empty());
    // Shrinking by overwrite makes room.
    assert_eq!(alice.put("/pub/a", vec![4u8; 700]).await.status(), 201);
    assert_eq!(alice.put("/pub/b", vec![5u8; 200]).await.status(), 201);
    assert_eq!(used_bytes(&hs, &alice), 900);
    // A delete gives its bytes back: exactly the quota fits again.
    assert_eq!(alice.delete("/pub/a").await.status(), 204);
    assert_eq!(used_bytes(&hs, &alice), 200);
    assert_eq!(alice.put("/pub/c", vec![6u8; 800]).await.status(), 201);
    assert_eq!(used_bytes(&hs, &alice), 1000);
    assert_eq!(events(&hs), before + 4, "the refused write emitted nothing");

    // Chunked: one byte over is refused at commit and changes nothing; an overwrite that
    // fits is accepted.
    let before = events(&hs);
    let refused = alice.put("/pub/d", chunked(vec![7u8; 1])).await;
    assert_eq!(refused.status(), StatusCode::INSUFFICIENT_STORAGE);
    let refused = alice.put("/pub/c", chunked(vec![8u8; 801])).await;
    assert_eq!(refused.status(), StatusCode::INSUFFICIENT_STORAGE);
    assert_eq!(used_bytes(&hs, &alice), 1000);
    assert_eq!(events(&hs), before);
    assert_eq!(alice.get("/pub/d").await.status(), 404);
    let fits = alice.put("/pub/c", chunked(vec![9u8; 2100 - 1300])).await;
    assert_eq!(fits.status(), 201);
    let got = alice.get("/pub/c").await.bytes().await.unwrap();
    assert_eq!(got.as_ref(), vec![9u8; 800].as_slice());
    assert_eq!(events(&hs), before + 1);
}

/// A map too small for what is written: the write that does not fit is a 507 with a body and
/// changes nothing, reads go on, and after a restart with a larger map, writes succeed again.
#[tokio::test]
async fn a_full_map_is_507_and_a_larger_map_recovers() {
    let mut hs = TestServer::start_with(|c| c.map_size = 2 << 20).await;
    let mut alice = hs.signup().await;
    let mut written = Vec::new();
    let refusal = loop {
        let path = format!("/pub/fill/{}", written.len());
        let response = alice.put(&path, vec![7u8; 100 * 1024]).await;
        if response.status() != StatusCode::CREATED {
            break response;
        }
        written.push(path);
        assert!(written.len() < 100, "a 2 MiB map never filled");
    };
    assert_eq!(refusal.status(), StatusCode::INSUFFICIENT_STORAGE);
    let text = refusal.text().await.unwrap();
    assert!(text.contains("full"), "{text}");
    assert!(!written.is_empty());
    let events = hs.events();
    assert_eq!(
        events.len(),
        written.len(),
        "the refused write left no event"
    );
    let failed = format!("/pub/fill/{}", written.len());
    assert_eq!(alice.get(&failed).await.status(), 404);
    for path in &written {
        assert_eq!(
            alice.get(path).await.bytes().await.unwrap().len(),
            100 * 1024
        );
    }

    hs.config.map_size = 64 << 20;
    let hs = hs.restart().await;
    alice.base = hs.server.url();
    assert_eq!(
        alice.put(&failed, vec![8u8; 100 * 1024]).await.status(),
        201
    );
    assert_eq!(hs.events().len(), written.len() + 1);
    assert_eq!(
        alice.get(&failed).await.bytes().await.unwrap().len(),
        100 * 1024
    );
}

/// An op that holds the writer until released: what queues meanwhile is one batch.
struct Gate {
    entered: std::sync::Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    release: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
}

impl Op for Gate {
    type Output = ();
    type Error = StoreError;

    fn apply(&self, _: &mut WriteTxn<'_>) -> Result<(), StoreError> {
        if let Some(entered) = self.entered.lock().unwrap().take() {
            let _ = entered.send(());
        }
        let _ = self.release.lock().unwrap().recv();
        Ok(())
    }
}

/// One group commit of refused and accepted writes: each refused one changes nothing and
/// takes no sequence number, each accepted one lands whole, with sequences in queue order
/// and no gap, and the commit publishes exactly the accepted ones' events.
#[tokio::test]
async fn a_batch_mixing_refused_and_accepted_writes() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        map_size: 64 << 20,
        sync: false,
    };
    let store = Store::open(dir.path(), &options, hearth::migrations::ALL).unwrap();
    let log = EventLog::open(&store).unwrap();
    let files = Files::open(&store).unwrap();
    let published: Arc<Mutex<Vec<Vec<u64>>>> = Arc::default();
    let sink = Arc::clone(&published);
    let on_commit: CommitListener = Arc::new(move |events: Vec<Arc<hearth::log::Event>>| {
        sink.lock()
            .unwrap()
            .push(events.iter().map(|e| e.seq).collect());
    });
    let (writer, thread) = Writer::start(&store, log.clone(), on_commit).unwrap();

    let alice = pubky_common::crypto::Keypair::random().public_key().z32();
    let stranger = pubky_common::crypto::Keypair::random().public_key().z32();
    let signup = FileOp::GrantSignup {
        user: alice.clone(),
        pop: SpentPop {
            iat: hearth::clock::now_secs(),
            nonce: "nonce".into(),
        },
        signup_token: None,
    };
    writer.submit(files.write(signup)).await.unwrap();
    let put = |user: &str, path: &str, size: usize| FileOp::PutFile {
        user: user.to_string(),
        path: path.to_string(),
        body: Spooled::Memory(vec![1u8; size].into()),
        hash: [0; 32],
        size: size as u64,
        content_type: "application/octet-stream".into(),
        quota: Some(10_000),
    };
    writer
        .submit(files.write(put(&alice, "/pub/f", 1)))
        .await
        .unwrap();

    // Hold the writer, queue the mix behind it, then let it go.
    let (entered, is_in) = tokio::sync::oneshot::channel();
    let (release, released) = std::sync::mpsc::channel();
    let gate = Gate {
        entered: std::sync::Mutex::new(Some(entered)),
        release: std::sync::Mutex::new(released),
    };
    let held = tokio::spawn({
        let writer = writer.clone();
        async move { writer.submit(gate).await }
    });
    is_in.await.unwrap();
    let ops = vec![
        (put(&alice, "/pub/ok/1", 10), "ok"),
        (put(&alice, "/pub/f/under", 10), "409"),
        (put(&alice, "/pub/ok/2", 10), "ok"),
        (put(&stranger, "/pub/x", 10), "404"),
        (put(&alice, "/pub/big", 20_000), "507"),
        (
            FileOp::DeleteFile {
                user: alice.clone(),
                path: "/pub/none".into(),
            },
            "404",
        ),
        (put(&alice, "/pub/ok/3", 10), "ok"),
        (
            FileOp::DeleteFile {
                user: alice.clone(),
                path: "/pub/f".into(),
            },
            "ok",
        ),
        (put(&alice, "/pub/f/now", 10), "ok"),
    ];
    let expected: Vec<&str> = ops.iter().map(|(_, want)| *want).collect();
    let tasks: Vec<_> = ops
        .into_iter()
        .map(|(op, _)| {
            let (writer, write) = (writer.clone(), files.write(op));
            tokio::spawn(async move { writer.submit(write).await })
        })
        .collect();
    // On this single-threaded runtime, yielding runs each spawned submit up to its wait for
    // an answer: every op is queued before the gate opens.
    tokio::task::yield_now().await;
    release.send(()).unwrap();
    held.await.unwrap().unwrap();

    let mut seqs = Vec::new();
    for (task, want) in tasks.into_iter().zip(&expected) {
        let answer = task.await.unwrap();
        let got = match &answer {
            Ok(Written::Event(seq)) => {
                seqs.push(*seq);
                "ok"
            }
            Ok(Written::Done) => "done",
            Err(FilesError::Conflict(_)) => "409",
            Err(FilesError::NotFound(_)) => "404",
            Err(FilesError::QuotaExceeded(_)) => "507",
            Err(_) => "other",
        };
        assert_eq!(got, *want, "{answer:?}");
    }
    assert_eq!(seqs, vec![2, 3, 4, 5, 6], "gapless, in queue order");
    let batches = published.lock().unwrap().clone();
    assert_eq!(
        batches,
        [vec![1], seqs.clone()],
        "/pub/f's commit, then the mix's one"
    );
    let mut paths = Vec::new();
    log.scan(0, usize::MAX, |event| {
        paths.push((event.seq, event.path().to_string()));
        true
    })
    .unwrap();
    let want: Vec<(u64, String)> = [
        (1, "/pub/f"),
        (2, "/pub/ok/1"),
        (3, "/pub/ok/2"),
        (4, "/pub/ok/3"),
        (5, "/pub/f"),
        (6, "/pub/f/now"),
    ]
    .iter()
    .map(|(seq, path)| (*seq, path.to_string()))
    .collect();
    assert_eq!(paths, want);
    assert!(files.file(&alice, "/pub/big").unwrap().is_none());
    assert!(files.file(&alice, "/pub/f/under").unwrap().is_none());
    assert!(files.user(&stranger).unwrap().is_none());
    assert_eq!(files.user(&alice).unwrap().unwrap().used_bytes, 40);
    drop((writer, files, log));
    thread.join();
    store.close();
}

/// Files in the spool directory, waiting at most a few seconds for them to become `want`:
/// the server notices a dropped upload when it next reads from it.
async fn spool_files_become(hs: &TestServer, want: impl Fn(usize) -> bool) -> usize {
    let dir = hs.dir.path().join("tmp");
    let count = || std::fs::read_dir(&dir).map_or(0, |entries| entries.count());
    for _ in 0..200 {
        if want(count()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    count()
}

/// A body larger than memory keeps is spooled to disk; an upload cut off half way, and one
/// refused at commit, leave no spool file behind, and a refused one leaves nothing else.
#[tokio::test]
async fn spool_files_go_with_aborted_and_refused_uploads() {
    use tokio::io::AsyncWriteExt;
    let hs = TestServer::start_with(|c| c.quota_bytes = Some(3 << 20)).await;
    let alice = hs.signup().await;
    let mut socket = tokio::net::TcpStream::connect(hs.server.addr())
        .await
        .unwrap();
    let head = format!(
        "PUT /pub/cut HTTP/1.1\r\nHost: {}\r\npubky-host: {}\r\nCookie: {}\r\n\
         Content-Length: {}\r\n\r\n",
        hs.server.addr(),
        alice.z32,
        alice.cookie.as_deref().unwrap(),
        3 << 20
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(&vec![1u8; 2 << 20]).await.unwrap();
    assert_eq!(
        spool_files_become(&hs, |n| n == 1).await,
        1,
        "spooled past 1 MiB"
    );
    drop(socket);
    assert_eq!(
        spool_files_become(&hs, |n| n == 0).await,
        0,
        "gone with the upload"
    );
    assert_eq!(alice.get("/pub/cut").await.status(), 404);

    // Refused at commit (the quota, for a chunked body): spooled, then removed.
    let refused = alice.put("/pub/over", chunked(vec![2u8; 4 << 20])).await;
    assert_eq!(refused.status(), StatusCode::INSUFFICIENT_STORAGE);
    assert_eq!(spool_files_become(&hs, |n| n == 0).await, 0);
    // And a successful one keeps nothing in the spool either.
    assert_eq!(alice.put("/pub/ok", vec![3u8; 2 << 20]).await.status(), 201);
    assert_eq!(spool_files_become(&hs, |n| n == 0).await, 0);
    let paths: Vec<String> = hs.events().iter().map(|e| e.path().to_string()).collect();
    assert_eq!(paths, ["/pub/ok"]);
}
