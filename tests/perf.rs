//! What the performance work must not break: bodies in flight stay within their budget, a
//! writer that panics stops the process, and per-user replay serves exactly what a scan of the
//! whole log would.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{sign_token, TestServer};
use pubky_common::crypto::Keypair;
use reqwest::StatusCode;

/// How long a test waits for anything before it fails (not a timing assertion: a guard).
const GUARD: Duration = Duration::from_secs(60);

/// With a budget of two bodies' worth, many concurrent PUTs all land, whole, and no more than
/// the budget was ever held at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_in_flight_stay_within_their_budget() {
    const BUDGET: u64 = 2 << 20;
    const SIZE: usize = 700_000;
    let ts = TestServer::start_with(|config| {
        config.sync = false;
        config.max_body_bytes_in_flight = BUDGET;
    })
    .await;
    let user = ts.signup().await;
    let mut puts = Vec::new();
    for i in 0..12u8 {
        let user = user.clone();
        puts.push(tokio::spawn(async move {
            let body = vec![b'a' + i; SIZE];
            let status = user.put(&format!("/pub/big/{i}"), body).await.status();
            (i, status)
        }));
    }
    for put in puts {
        let (i, status) = tokio::time::timeout(GUARD, put)
            .await
            .expect("the PUTs finish")
            .expect("join");
        assert_eq!(status, StatusCode::CREATED, "PUT {i}");
    }
    for i in 0..12u8 {
        let body = user
            .get(&format!("/pub/big/{i}"))
            .await
            .bytes()
            .await
            .expect("body");
        assert_eq!(body.len(), SIZE);
        assert!(body.iter().all(|&b| b == b'a' + i), "file {i} is whole");
    }
    let peak = ts.server.body_bytes_peak();
    assert!(peak > 0, "bodies were counted");
    assert!(peak <= BUDGET, "at most {BUDGET} bytes at once, saw {peak}");
}

/// A panic in the writer thread is logged and stops the process with a non-zero status,
/// instead of leaving a server that answers 503 to every write for ever. (The debug build's
/// failpoint makes the writer panic on its first batch: here, a signup.)
#[tokio::test]
async fn a_writer_panic_stops_the_process() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_hearth"))
        .arg("serve")
        .arg("--data-dir")
        .arg(dir.path())
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--no-sync")
        .env("HEARTH_TEST_WRITER_PANIC", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the server");
    // Whatever happens, the process does not outlive the test.
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stderr_pipe = child.stderr.take();
    let mut child = Reap(child);
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    // Wait until it answers.
    let ready = async {
        loop {
            if http.get(format!("{url}/")).send().await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(GUARD, ready)
        .await
        .expect("the server starts");
    let keypair = Keypair::random();
    // The signup is the first write: the writer panics on it. Its answer (if any) is not a
    // success.
    let signup = http
        .post(format!("{url}/signup"))
        .body(sign_token(&keypair, "/pub/:rw"))
        .send()
        .await;
    assert!(
        signup.map_or(true, |r| !r.status().is_success()),
        "a write that never committed is not acknowledged"
    );
    let waited = async {
        loop {
            if let Some(status) = child.0.try_wait().expect("wait") {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let status = tokio::time::timeout(GUARD, waited)
        .await
        .expect("the process stops by itself");
    assert_eq!(status.code(), Some(hearth::log::EXIT_FATAL), "{status:?}");
    let mut stderr = String::new();
    if let Some(mut pipe) = stderr_pipe {
        use std::io::Read;
        pipe.read_to_string(&mut stderr).expect("stderr");
    }
    assert!(
        stderr.contains("the writer thread failed"),
        "the panic is reported: {stderr}"
    );
}
